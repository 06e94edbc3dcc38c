//! PCR policies: what a verified document must also show to be accepted.
//!
//! Expected PCRs (0–4 and 8), nonce equality, maximum age against a caller-given "now", and
//! refusal of debug-mode documents unless explicitly allowed. Never reads a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::doc::{Pcr, PcrIndex, UnixMillis};
use crate::error::{Error, Result};
use crate::verify::VerifiedDoc;

/// PCRs a policy may pin: image (0), kernel+boot (1), application (2), IAM role (3),
/// parent instance (4), signing certificate (8). AWS Nitro Enclaves user guide, "Where to get
/// an enclave's measurements".
pub const POLICY_PCRS: [u8; 6] = [0, 1, 2, 3, 4, 8];

/// What a verified document must show besides a good signature and chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrPolicy {
    expected: BTreeMap<PcrIndex, Pcr>,
    nonce: Option<Vec<u8>>,
    max_age: Option<Duration>,
    allow_debug: bool,
}

impl PcrPolicy {
    /// An empty policy: no PCRs pinned, no nonce, no age limit, debug mode refused.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires PCR `index` (one of 0–4, 8) to equal `value`.
    pub fn expect_pcr(mut self, index: u8, value: &[u8]) -> Result<Self> {
        let pcr_index = PcrIndex::new(index)
            .filter(|_| POLICY_PCRS.contains(&index))
            .ok_or_else(|| {
                Error::InvalidPolicy(format!("PCR{index} cannot be pinned; use 0-4 or 8"))
            })?;
        let pcr = Pcr::new(value.to_vec())
            .map_err(|_| Error::InvalidPolicy(format!("PCR{index} must be 32, 48 or 64 bytes")))?;
        self.expected.insert(pcr_index, pcr);
        Ok(self)
    }

    /// Requires PCR `index` (one of 0–4, 8) to equal the hex `value`.
    pub fn expect_pcr_hex(self, index: u8, value: &str) -> Result<Self> {
        let bytes = hex::decode(value.trim())
            .map_err(|_| Error::InvalidPolicy(format!("PCR{index} is not valid hex")))?;
        self.expect_pcr(index, &bytes)
    }

    /// Requires the document's nonce to equal `nonce`.
    #[must_use]
    pub fn expect_nonce(mut self, nonce: &[u8]) -> Self {
        self.nonce = Some(nonce.to_vec());
        self
    }

    /// Refuses documents whose timestamp is further than `max_age` from the "now" given to
    /// [`PcrPolicy::check`] (in either direction).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Accepts documents from debug-mode enclaves (all-zero PCR0). NEVER in production: a
    /// debug enclave's memory can be read by its parent.
    #[must_use]
    pub fn allow_debug_never_in_production(mut self) -> Self {
        self.allow_debug = true;
        self
    }

    /// The pinned PCRs.
    #[must_use]
    pub fn expected_pcrs(&self) -> &BTreeMap<PcrIndex, Pcr> {
        &self.expected
    }

    /// Loads expected PCRs from the JSON nitro-cli (and ekms-eif) prints for an image,
    /// `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "hex", ...}}`, or from a
    /// flat `{"PCR0": "hex", ...}` map. Duplicate or unknown keys, and a policy with no PCR,
    /// are refused.
    pub fn from_json(json: &str) -> Result<Self> {
        let top = Entries::parse(json)?;
        let measurements = match top.0.iter().find(|(k, _)| k == "Measurements") {
            // nitro-cli describe-eif prints other top-level keys beside Measurements; only
            // Measurements matters for the policy.
            Some((_, raw)) => Entries::parse(raw.get())?,
            None => top,
        };
        let mut policy = Self::new();
        for (key, raw) in &measurements.0 {
            let value: Value = serde_json::from_str(raw.get())
                .map_err(|e| Error::InvalidPolicy(format!("{key}: {e}")))?;
            if key == "HashAlgorithm" {
                match value {
                    Value::String(s) if s.starts_with("Sha384") => continue,
                    _ => {
                        return Err(Error::InvalidPolicy(
                            "HashAlgorithm must be Sha384".to_owned(),
                        ));
                    }
                }
            }
            let index = key
                .strip_prefix("PCR")
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|n| *key == format!("PCR{n}"))
                .ok_or_else(|| Error::InvalidPolicy(format!("unknown key {key:?}")))?;
            let Value::String(hex) = value else {
                return Err(Error::InvalidPolicy(format!("{key} must be a hex string")));
            };
            policy = policy.expect_pcr_hex(index, &hex)?;
        }
        if policy.expected.is_empty() {
            return Err(Error::InvalidPolicy("no PCR values".to_owned()));
        }
        Ok(policy)
    }

    /// Checks a verified document against this policy, with `now` the verifier's time.
    pub fn check(&self, doc: &VerifiedDoc, now: UnixMillis) -> Result<()> {
        if doc.is_debug_mode() && !self.allow_debug {
            return Err(Error::DebugMode);
        }
        for (index, expected) in &self.expected {
            let actual = doc.pcr(*index).ok_or(Error::PcrMissing(*index))?;
            if actual != expected {
                return Err(Error::PcrMismatch {
                    index: *index,
                    expected: expected.to_hex(),
                    actual: actual.to_hex(),
                });
            }
        }
        if let Some(expected) = &self.nonce
            && doc.nonce() != Some(expected.as_slice())
        {
            return Err(Error::NonceMismatch {
                expected: hex::encode(expected),
                actual: doc.nonce().map_or_else(|| "none".to_owned(), hex::encode),
            });
        }
        if let Some(max_age) = self.max_age {
            let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
            let ts = doc.timestamp().as_millis();
            let now = now.as_millis();
            if ts > now {
                let ahead_ms = ts - now;
                if ahead_ms > max_age_ms {
                    return Err(Error::FromTheFuture { ahead_ms });
                }
            } else if now - ts > max_age_ms {
                return Err(Error::TooOld {
                    age_ms: now - ts,
                    max_age_ms,
                });
            }
        }
        Ok(())
    }
}

/// A JSON object's entries in order, duplicates kept (so they can be refused), values unparsed.
struct Entries(Vec<(String, Box<RawValue>)>);

impl Entries {
    /// Parses one JSON object, refusing duplicate keys.
    fn parse(json: &str) -> Result<Self> {
        let entries: Self = serde_json::from_str(json)
            .map_err(|e| Error::InvalidPolicy(format!("expected a JSON object: {e}")))?;
        for (i, (key, _)) in entries.0.iter().enumerate() {
            if entries.0.iter().skip(i + 1).any(|(k, _)| k == key) {
                return Err(Error::InvalidPolicy(format!("duplicate key {key:?}")));
            }
        }
        Ok(entries)
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{REAL_DOC, REAL_PCR0, REAL_TS, signed_custom, sim_ca};
    use crate::{TrustRoot, ValidationTime, verify};

    fn real() -> VerifiedDoc {
        verify(
            REAL_DOC,
            &TrustRoot::aws_nitro().unwrap(),
            ValidationTime::DocumentTimestamp,
        )
        .unwrap()
    }

    const REAL_PCR1: &str = "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f";

    #[test]
    fn matching_pcrs_nonce_and_age_pass() {
        let policy = PcrPolicy::new()
            .expect_pcr_hex(0, REAL_PCR0)
            .unwrap()
            .max_age(Duration::from_mins(1));
        policy.check(&real(), REAL_TS).unwrap();
    }

    #[test]
    fn wrong_pcr_is_refused_with_expected_and_actual() {
        let wrong = "00".repeat(47) + "01";
        let policy = PcrPolicy::new().expect_pcr_hex(0, &wrong).unwrap();
        let err = policy.check(&real(), REAL_TS).unwrap_err();
        match err {
            Error::PcrMismatch {
                index,
                expected,
                actual,
            } => {
                assert_eq!(index.get(), 0);
                assert_eq!(expected, wrong);
                assert_eq!(actual, REAL_PCR0);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn missing_pcr_is_refused() {
        let ca = sim_ca();
        let doc = signed_custom(&ca, REAL_TS, |d| d.pcrs.retain(|i, _| i.get() == 0));
        let v = verify(
            &doc,
            &ca.trust_root().unwrap(),
            ValidationTime::DocumentTimestamp,
        )
        .unwrap();
        let policy = PcrPolicy::new().expect_pcr(8, &[0; 48]).unwrap();
        assert!(matches!(policy.check(&v, REAL_TS), Err(Error::PcrMissing(i)) if i.get() == 8));
    }

    #[test]
    fn wrong_or_missing_nonce_is_refused() {
        let policy = PcrPolicy::new().expect_nonce(b"fresh");
        let err = policy.check(&real(), REAL_TS).unwrap_err();
        assert!(
            matches!(&err, Error::NonceMismatch { actual, .. } if actual == "none"),
            "{err}"
        );

        let ca = sim_ca();
        let doc = signed_custom(&ca, REAL_TS, |d| d.nonce = Some(b"stale".to_vec()));
        let v = verify(
            &doc,
            &ca.trust_root().unwrap(),
            ValidationTime::DocumentTimestamp,
        )
        .unwrap();
        let err = policy.check(&v, REAL_TS).unwrap_err();
        assert!(
            matches!(&err, Error::NonceMismatch { actual, .. } if actual == &hex::encode("stale")),
            "{err}"
        );
        PcrPolicy::new()
            .expect_nonce(b"stale")
            .check(&v, REAL_TS)
            .unwrap();
    }

    #[test]
    fn age_is_checked_against_the_given_now() {
        let policy = PcrPolicy::new().max_age(Duration::from_mins(5));
        let later = UnixMillis::new(REAL_TS.as_millis() + 301_000);
        assert!(matches!(
            policy.check(&real(), later),
            Err(Error::TooOld {
                age_ms: 301_000,
                max_age_ms: 300_000
            })
        ));
        let earlier = UnixMillis::new(REAL_TS.as_millis() - 301_000);
        assert!(matches!(
            policy.check(&real(), earlier),
            Err(Error::FromTheFuture { ahead_ms: 301_000 })
        ));
        policy
            .check(&real(), UnixMillis::new(REAL_TS.as_millis() + 300_000))
            .unwrap();
    }

    #[test]
    fn debug_mode_is_refused_unless_allowed() {
        let ca = sim_ca();
        let root = ca.trust_root().unwrap();
        let nsm = crate::MockNsm::debug_mode(ca);
        let doc = nsm.attestation_at(None, None, None, REAL_TS).unwrap();
        let v = verify(&doc, &root, ValidationTime::DocumentTimestamp).unwrap();
        assert!(v.is_debug_mode());
        assert!(matches!(
            PcrPolicy::new().check(&v, REAL_TS),
            Err(Error::DebugMode)
        ));
        PcrPolicy::new()
            .allow_debug_never_in_production()
            .check(&v, REAL_TS)
            .unwrap();
    }

    #[test]
    fn loads_nitro_cli_measurements_and_flat_maps() {
        let json = format!(
            r#"{{"Measurements": {{"HashAlgorithm": "Sha384 {{ ... }}", "PCR0": "{REAL_PCR0}", "PCR1": "{REAL_PCR1}", "PCR2": "{}"}}}}"#,
            "11".repeat(48)
        );
        let policy = PcrPolicy::from_json(&json).unwrap();
        assert_eq!(policy.expected_pcrs().len(), 3);
        let err = policy.check(&real(), REAL_TS).unwrap_err();
        assert!(
            matches!(err, Error::PcrMismatch { index, .. } if index.get() == 2),
            "{err}"
        );

        let flat = format!(
            r#"{{"PCR0": "{REAL_PCR0}", "PCR1": "{}"}}"#,
            REAL_PCR1.to_uppercase()
        );
        PcrPolicy::from_json(&flat)
            .unwrap()
            .check(&real(), REAL_TS)
            .unwrap();

        // describe-eif style: extra top-level keys beside Measurements are ignored.
        let described = format!(
            r#"{{"EifVersion": 4, "Measurements": {{"PCR0": "{REAL_PCR0}", "PCR8": "{}"}}}}"#,
            "00".repeat(48)
        );
        assert_eq!(
            PcrPolicy::from_json(&described)
                .unwrap()
                .expected_pcrs()
                .len(),
            2
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let pcr = "ab".repeat(48);
        for json in [
            String::new(),
            "[]".to_owned(),
            "{}".to_owned(),
            r#"{"Measurements": {}}"#.to_owned(),
            r#"{"Measurements": 5}"#.to_owned(),
            format!(r#"{{"PCR0": "{pcr}", "PCR0": "{pcr}"}}"#),
            format!(r#"{{"Measurements": {{"PCR0": "{pcr}", "PCR0": "{pcr}"}}}}"#),
            format!(
                r#"{{"Measurements": {{"PCR0": "{pcr}"}}, "Measurements": {{"PCR1": "{pcr}"}}}}"#
            ),
            format!(r#"{{"PCR5": "{pcr}"}}"#),
            format!(r#"{{"PCR32": "{pcr}"}}"#),
            format!(r#"{{"PCR00": "{pcr}"}}"#),
            format!(r#"{{"pcr0": "{pcr}"}}"#),
            r#"{"PCR0": "zz"}"#.to_owned(),
            r#"{"PCR0": "abcd"}"#.to_owned(),
            r#"{"PCR0": 5}"#.to_owned(),
            format!(r#"{{"Measurements": {{"HashAlgorithm": "Sha256 {{}}", "PCR0": "{pcr}"}}}}"#),
        ] {
            let err = PcrPolicy::from_json(&json).unwrap_err();
            assert!(matches!(err, Error::InvalidPolicy(_)), "{json}: {err}");
        }
    }
}
