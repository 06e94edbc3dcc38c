//! The logic behind `ekms attestation verify`: argument parsing, verification, and the JSON
//! report. The CLI file stays thin; everything here is unit-tested.
//!
//! Reports carry public document fields only.

use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::doc::{MAX_DOCUMENT_LEN, UnixMillis};
use crate::error::{Error, Result};
use crate::policy::PcrPolicy;
use crate::root::{RootKind, TrustRoot};
use crate::verify::{ValidationTime, VerifiedDoc, verify};

/// Largest root PEM or policy JSON file read.
const MAX_TEXT_FILE_LEN: u64 = 64 * 1024;

/// When to check certificate validity and document freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtArg {
    /// The verifier's current time (the caller reads the clock and passes it).
    Now,
    /// The document's own timestamp (`--at document`).
    Document,
    /// An explicit RFC 3339 time.
    Time(UnixMillis),
}

/// Parses `--at`: `document`, or an RFC 3339 time such as `2022-07-06T14:18:22.484Z`.
pub fn parse_at(s: &str) -> Result<AtArg> {
    if s.eq_ignore_ascii_case("document") {
        return Ok(AtArg::Document);
    }
    parse_rfc3339(s).map(AtArg::Time)
}

/// Parses an RFC 3339 time to milliseconds since the epoch; refuses times before 1970.
pub fn parse_rfc3339(s: &str) -> Result<UnixMillis> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map_err(|e| Error::InvalidTime(format!("not an RFC 3339 time: {e}")))?;
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(millis)
        .map(UnixMillis::new)
        .map_err(|_| Error::InvalidTime("before 1970".to_owned()))
}

/// Formats a time as RFC 3339 (UTC), with milliseconds when not whole seconds.
#[must_use]
pub fn format_rfc3339(t: UnixMillis) -> String {
    i128::from(t.as_millis())
        .checked_mul(1_000_000)
        .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok())
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{} ms since 1970", t.as_millis()))
}

/// Decodes hex (upper or lower case, optional `0x`), naming `what` on failure.
pub fn parse_hex(what: &'static str, s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|_| Error::InvalidHex { what })
}

/// Parses a `--pcr N=HEX` argument.
pub fn parse_pcr_arg(s: &str) -> Result<(u8, Vec<u8>)> {
    let (index, value) = s
        .split_once('=')
        .ok_or_else(|| Error::InvalidPolicy(format!("--pcr wants N=HEX, got {s:?}")))?;
    let index = index
        .trim()
        .trim_start_matches("PCR")
        .parse::<u8>()
        .map_err(|_| Error::InvalidPolicy(format!("bad PCR index in {s:?}")))?;
    Ok((index, parse_hex("--pcr", value)?))
}

/// Everything `ekms attestation verify` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// The document file (raw COSE_Sign1 bytes).
    pub doc: PathBuf,
    /// A root certificate PEM file instead of the built-in AWS root.
    pub root: Option<PathBuf>,
    /// `--at`, unparsed.
    pub at: Option<String>,
    /// `--pcr N=HEX` arguments, unparsed.
    pub pcrs: Vec<String>,
    /// A policy JSON file (nitro-cli measurements or a flat PCR map).
    pub policy: Option<PathBuf>,
    /// `--nonce`, hex.
    pub nonce: Option<String>,
    /// Accept debug-mode (all-zero PCR0) documents.
    pub allow_debug: bool,
    /// Accept a root other than the AWS root.
    pub allow_simulation_root: bool,
}

/// The JSON printed on success: public document fields and which root vouched for them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Always true (failures print an error instead).
    pub verified: bool,
    /// "AWS Nitro" or "simulation (NEVER IN PRODUCTION)".
    pub root: &'static str,
    /// True when verified against a simulation root.
    pub simulation: bool,
    /// Present, and loud, for simulation roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
    /// The NSM module id.
    pub module_id: String,
    /// Document timestamp, RFC 3339.
    pub timestamp: String,
    /// Document timestamp, ms since the epoch.
    pub timestamp_ms: u64,
    /// The time validity was checked at, RFC 3339.
    pub checked_at: String,
    /// Always "SHA384".
    pub digest: &'static str,
    /// PCR index → hex, in index order.
    pub pcrs: std::collections::BTreeMap<u8, String>,
    /// True if PCR0 is all zeros (debug mode).
    pub debug_mode: bool,
    /// Hex, or null.
    pub public_key: Option<String>,
    /// Hex, or null.
    pub user_data: Option<String>,
    /// Hex, or null.
    pub nonce: Option<String>,
    /// Number of certificates from root to leaf.
    pub chain_length: usize,
}

impl Report {
    /// Builds the report for a verified document.
    #[must_use]
    pub fn new(doc: &VerifiedDoc) -> Self {
        let simulation = doc.is_simulation();
        Self {
            verified: true,
            root: doc.root_kind().label(),
            simulation,
            warning: simulation.then_some(
                "verified against a SIMULATION root: this proves nothing about real enclave hardware",
            ),
            module_id: doc.module_id().to_owned(),
            timestamp: format_rfc3339(doc.timestamp()),
            timestamp_ms: doc.timestamp().as_millis(),
            checked_at: format_rfc3339(doc.checked_at()),
            digest: "SHA384",
            pcrs: doc
                .pcrs()
                .iter()
                .map(|(i, p)| (i.get(), p.to_hex()))
                .collect(),
            debug_mode: doc.is_debug_mode(),
            public_key: doc.public_key().map(hex::encode),
            user_data: doc.user_data().map(hex::encode),
            nonce: doc.nonce().map(hex::encode),
            chain_length: doc.cabundle().len() + 1,
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::MalformedPayload {
            reason: format!("cannot render report: {e}"),
        })
    }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io)?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > max {
        return Err(Error::TooLarge {
            len: out.len(),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        });
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_capped(path, MAX_TEXT_FILE_LEN)?).map_err(|_| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })
}

/// Builds the policy from `--policy`, `--pcr`, `--nonce` and `--allow-debug`.
pub fn build_policy(req: &VerifyRequest) -> Result<PcrPolicy> {
    let mut policy = match &req.policy {
        Some(path) => PcrPolicy::from_json(&read_text(path)?)?,
        None => PcrPolicy::new(),
    };
    for arg in &req.pcrs {
        let (index, value) = parse_pcr_arg(arg)?;
        policy = policy.expect_pcr(index, &value)?;
    }
    if let Some(nonce) = &req.nonce {
        policy = policy.expect_nonce(&parse_hex("--nonce", nonce)?);
    }
    if req.allow_debug {
        policy = policy.allow_debug_never_in_production();
    }
    Ok(policy)
}

/// Runs `ekms attestation verify`: reads the files, verifies the document against the root at
/// the requested time (`now` is the caller's clock, used when `--at` is absent), applies the
/// policy, and returns the report.
pub fn run_verify(req: &VerifyRequest, now: UnixMillis) -> Result<Report> {
    let root = match &req.root {
        Some(path) => TrustRoot::from_operator_pem(&read_text(path)?, req.allow_simulation_root)?,
        None => TrustRoot::aws_nitro()?,
    };
    let at = match req.at.as_deref() {
        Some(s) => parse_at(s)?,
        None => AtArg::Now,
    };
    let policy = build_policy(req)?;
    let bytes = read_capped(
        &req.doc,
        u64::try_from(MAX_DOCUMENT_LEN).unwrap_or(u64::MAX),
    )?;
    let validation = match at {
        AtArg::Now => ValidationTime::At(now),
        AtArg::Document => ValidationTime::DocumentTimestamp,
        AtArg::Time(t) => ValidationTime::At(t),
    };
    let verified = verify(&bytes, &root, validation)?;
    policy.check(&verified, verified.checked_at())?;
    if verified.root_kind() == RootKind::Simulation {
        tracing::warn!("attestation document verified against a SIMULATION root");
    }
    Ok(Report::new(&verified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockNsm;
    use crate::testutil::{REAL_DOC, REAL_PCR0, REAL_TS, sim_ca};

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn parses_times_hex_and_pcr_args() {
        assert_eq!(parse_rfc3339("2022-07-06T14:18:22.484Z").unwrap(), REAL_TS);
        assert_eq!(
            parse_rfc3339("2022-07-06T16:18:22.484+02:00").unwrap(),
            REAL_TS
        );
        assert_eq!(format_rfc3339(REAL_TS), "2022-07-06T14:18:22.484Z");
        for bad in ["", "yesterday", "2022-07-06", "1969-12-31T23:59:59Z"] {
            assert!(
                matches!(parse_rfc3339(bad), Err(Error::InvalidTime(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_at("document").unwrap(), AtArg::Document);
        assert_eq!(parse_hex("x", "0xABcd").unwrap(), vec![0xab, 0xcd]);
        assert!(matches!(
            parse_hex("--nonce", "abc"),
            Err(Error::InvalidHex { what: "--nonce" })
        ));
        assert_eq!(parse_pcr_arg("0=ab").unwrap(), (0, vec![0xab]));
        assert_eq!(parse_pcr_arg("PCR8=00").unwrap(), (8, vec![0]));
        assert!(matches!(parse_pcr_arg("0"), Err(Error::InvalidPolicy(_))));
        assert!(matches!(
            parse_pcr_arg("x=00"),
            Err(Error::InvalidPolicy(_))
        ));
        assert!(matches!(
            parse_pcr_arg("0=zz"),
            Err(Error::InvalidHex { .. })
        ));
    }

    #[test]
    fn reports_the_real_document() {
        let dir = tempfile::tempdir().unwrap();
        let req = VerifyRequest {
            doc: write(dir.path(), "doc.cose", REAL_DOC),
            at: Some("2022-07-06T14:30:00Z".to_owned()),
            pcrs: vec![format!("0={REAL_PCR0}")],
            ..VerifyRequest::default()
        };
        let report = run_verify(&req, UnixMillis::new(0)).unwrap();
        assert_eq!(report.root, "AWS Nitro");
        assert!(!report.simulation);
        assert_eq!(report.timestamp, "2022-07-06T14:18:22.484Z");
        assert_eq!(report.checked_at, "2022-07-06T14:30:00Z");
        assert_eq!(report.pcrs.get(&0).unwrap(), REAL_PCR0);
        assert_eq!(report.chain_length, 5);
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["module_id"], "i-07e25f3bada361dec-enc0181d3dff86da785");
        assert_eq!(json["nonce"], serde_json::Value::Null);
        assert_eq!(json["pcrs"]["0"], REAL_PCR0);
        // PCRs print in index order (2 before 10), not string order.
        let text = report.to_json().unwrap();
        assert!(text.find("\"2\":").unwrap() < text.find("\"10\":").unwrap());
        assert!(json.get("warning").is_none());

        // Default time is the caller's "now": today the leaf has long expired.
        let now_req = VerifyRequest {
            at: None,
            ..req.clone()
        };
        let now = UnixMillis::new(1_800_000_000_000);
        assert!(matches!(
            run_verify(&now_req, now),
            Err(Error::CertificateExpired { .. })
        ));
        let doc_time = VerifyRequest {
            at: Some("document".to_owned()),
            ..req.clone()
        };
        run_verify(&doc_time, now).unwrap();

        let wrong_nonce = VerifyRequest {
            nonce: Some("00".to_owned()),
            ..req.clone()
        };
        assert!(matches!(
            run_verify(&wrong_nonce, now),
            Err(Error::NonceMismatch { .. })
        ));
        let wrong_pcr = VerifyRequest {
            pcrs: vec![format!("1={REAL_PCR0}")],
            ..req.clone()
        };
        assert!(matches!(
            run_verify(&wrong_pcr, now),
            Err(Error::PcrMismatch { .. })
        ));
        let policy = write(
            dir.path(),
            "p.json",
            format!(r#"{{"PCR0":"{REAL_PCR0}"}}"#).as_bytes(),
        );
        let with_policy = VerifyRequest {
            policy: Some(policy),
            ..req.clone()
        };
        run_verify(&with_policy, now).unwrap();
        let missing = VerifyRequest {
            doc: dir.path().join("nope"),
            ..req
        };
        assert!(matches!(run_verify(&missing, now), Err(Error::Io { .. })));
    }

    #[test]
    fn simulation_roots_need_the_flag_and_are_reported_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let ca = sim_ca();
        let root = write(dir.path(), "root.pem", ca.root_pem().unwrap().as_bytes());
        let nsm = MockNsm::debug_mode(ca);
        let doc = write(
            dir.path(),
            "doc",
            &nsm.attestation_at(None, None, None, REAL_TS).unwrap(),
        );
        let req = VerifyRequest {
            doc,
            root: Some(root),
            at: Some("document".to_owned()),
            ..VerifyRequest::default()
        };
        let now = UnixMillis::new(0);
        assert!(matches!(
            run_verify(&req, now),
            Err(Error::SimulationRootNotAllowed)
        ));
        let allowed = VerifyRequest {
            allow_simulation_root: true,
            ..req.clone()
        };
        assert!(matches!(run_verify(&allowed, now), Err(Error::DebugMode)));
        let both = VerifyRequest {
            allow_debug: true,
            ..allowed
        };
        let report = run_verify(&both, now).unwrap();
        assert!(report.simulation);
        assert!(report.debug_mode);
        assert!(report.warning.unwrap().contains("SIMULATION"));

        let garbage_root = write(dir.path(), "bad.pem", b"hello");
        let bad = VerifyRequest {
            root: Some(garbage_root),
            ..req.clone()
        };
        assert!(matches!(
            run_verify(&bad, now),
            Err(Error::InvalidTrustRoot(_))
        ));
        let huge = write(dir.path(), "huge", &vec![0u8; MAX_DOCUMENT_LEN + 10]);
        let big = VerifyRequest {
            doc: huge,
            root: None,
            ..req
        };
        assert!(matches!(run_verify(&big, now), Err(Error::TooLarge { .. })));
    }
}
