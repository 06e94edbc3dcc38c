//! The simulation CA: a locally generated P-384 root and intermediate that sign mock NSM leaves.
//!
//! NEVER IN PRODUCTION. Its root proves nothing about hardware; verifiers accept it only via
//! [`TrustRoot::simulation_never_in_production`]. The intermediate's private key is secret: it
//! is zeroized on drop, never printed, and only written by [`SimulationCa::to_bytes`] /
//! [`SimulationCa::to_pem_files`].

use std::fmt;
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384, PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};
use x509_cert::der::pem::{self, LineEnding};
use zeroize::Zeroizing;

use crate::chain::{ParsedCert, verify_chain};
use crate::doc::UnixMillis;
use crate::error::{Error, Result};
use crate::root::TrustRoot;

/// Magic and version of [`SimulationCa::to_bytes`] (see docs/attestation.md).
const MAGIC: &[u8; 12] = b"EKMS-SIMCA\x00\x01";

/// Largest certificate or key accepted by [`SimulationCa::from_bytes`].
const MAX_PART_LEN: usize = 8192;

/// Root lifetime: 30 years, like the AWS root.
const ROOT_LIFETIME_SECS: u64 = 30 * 365 * 24 * 3600;
/// Intermediate lifetime: 10 years (a persisted dev CA should outlive the laptop).
const INTERMEDIATE_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;
/// Leaf lifetime: 3 hours, like real NSM signing certificates.
pub(crate) const LEAF_LIFETIME_SECS: u64 = 3 * 3600;
/// Backdating of notBefore to tolerate clock skew.
const BACKDATE_SECS: u64 = 3600;

const ORG: &str = "Enclave KMS simulation - NEVER IN PRODUCTION";
const ROOT_CN: &str = "ekms-simulation-root.nitro-enclaves";
const INTERMEDIATE_CN: &str = "ekms-simulation-intermediate.nitro-enclaves";

/// A P-384 key used to sign certificates (rcgen) and documents (COSE), held by aws-lc-rs.
pub(crate) struct P384Signer {
    asn1: EcdsaKeyPair,
    fixed: EcdsaKeyPair,
    rng: SystemRandom,
}

impl P384Signer {
    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let bad = |_| Error::MalformedSimulationCa("private key is not a P-384 PKCS#8 key");
        Ok(Self {
            asn1: EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8).map_err(bad)?,
            fixed: EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8)
                .map_err(bad)?,
            rng: SystemRandom::new(),
        })
    }

    /// Generates a key and returns it with its PKCS#8 encoding (secret).
    pub(crate) fn generate() -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
            .map_err(|_| Error::Crypto("P-384 key generation"))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let signer = Self::from_pkcs8(&pkcs8).map_err(|_| Error::Crypto("P-384 key import"))?;
        Ok((signer, pkcs8))
    }

    /// Raw r‖s ES384 signature, as COSE wants.
    pub(crate) fn sign_fixed(&self, msg: &[u8]) -> Result<Vec<u8>> {
        self.fixed
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Crypto("ES384 signing"))
    }

    pub(crate) fn public_point(&self) -> &[u8] {
        self.asn1.public_key().as_ref()
    }
}

impl fmt::Debug for P384Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P384Signer { private key: <redacted> }")
    }
}

impl PublicKeyData for P384Signer {
    fn der_bytes(&self) -> &[u8] {
        self.public_point()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P384_SHA384
    }
}

impl SigningKey for P384Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.asn1
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

fn to_offset(secs: u64) -> Result<time::OffsetDateTime> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::InvalidTime("certificate time out of range".to_owned()))
}

fn random_serial() -> Result<SerialNumber> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| Error::Crypto("random serial"))?;
    // Positive and non-zero (RFC 5280 §4.1.2.2).
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&serial))
}

fn ca_params(
    cn: &str,
    path_len: Option<u8>,
    from: u64,
    lifetime: u64,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(path_len.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = to_offset(from.saturating_sub(BACKDATE_SECS))?;
    params.not_after = to_offset(from.saturating_add(lifetime))?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, ORG);
    dn.push(DnType::CommonName, cn);
    dn
}

/// A public key to certify, as a raw uncompressed P-384 point.
struct P384Public<'a>(&'a [u8]);

impl PublicKeyData for P384Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P384_SHA384
    }
}

fn rcgen_err(e: &rcgen::Error) -> Error {
    Error::SimulationCa(e.to_string())
}

/// A simulation CA: root certificate, intermediate certificate, and the intermediate's key.
///
/// NEVER IN PRODUCTION. The root's private key is discarded once the intermediate is signed
/// (as with an offline root); to rotate, generate a new CA and redistribute its root.
pub struct SimulationCa {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate_key: Zeroizing<Vec<u8>>,
    signer: P384Signer,
}

impl fmt::Debug for SimulationCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulationCa")
            .field("root", &ROOT_CN)
            .field("intermediate", &INTERMEDIATE_CN)
            .field("intermediate_key", &"<redacted>")
            .finish()
    }
}

impl SimulationCa {
    /// Generates a new simulation CA valid from an hour ago (30-year root, 10-year
    /// intermediate). Persist it with [`SimulationCa::to_bytes`] and reuse it.
    pub fn generate() -> Result<Self> {
        Self::generate_at(UnixMillis::from_system_time(std::time::SystemTime::now())?)
    }

    /// Generates a new simulation CA valid from one hour before `now`.
    pub fn generate_at(now: UnixMillis) -> Result<Self> {
        let from = now.as_secs();
        let (root_key, _root_pkcs8) = P384Signer::generate()?;
        let root_params = ca_params(ROOT_CN, None, from, ROOT_LIFETIME_SECS)?;
        let root = root_params
            .self_signed(&root_key)
            .map_err(|e| rcgen_err(&e))?;
        let (int_key, int_pkcs8) = P384Signer::generate()?;
        let int_params = ca_params(INTERMEDIATE_CN, Some(0), from, INTERMEDIATE_LIFETIME_SECS)?;
        let issuer = Issuer::from_params(&root_params, &root_key);
        let intermediate = int_params
            .signed_by(&int_key, &issuer)
            .map_err(|e| rcgen_err(&e))?;
        tracing::warn!("generated a SIMULATION attestation CA; never in production");
        Ok(Self {
            root_der: root.der().to_vec(),
            intermediate_der: intermediate.der().to_vec(),
            intermediate_key: int_pkcs8,
            signer: int_key,
        })
    }

    /// The root certificate, DER.
    #[must_use]
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The intermediate certificate, DER.
    #[must_use]
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// The root certificate, PEM, for verifiers.
    pub fn root_pem(&self) -> Result<String> {
        pem::encode_string("CERTIFICATE", LineEnding::LF, &self.root_der)
            .map_err(|e| Error::SimulationCa(e.to_string()))
    }

    /// The root as a [`TrustRoot`] (a simulation root: NEVER IN PRODUCTION).
    pub fn trust_root(&self) -> Result<TrustRoot> {
        TrustRoot::simulation_never_in_production(&self.root_pem()?)
    }

    /// Serializes the CA, private key included (secret: store it like a key).
    /// Format: docs/attestation.md, "Simulation CA file".
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let parts = [
            self.root_der.as_slice(),
            self.intermediate_der.as_slice(),
            self.intermediate_key.as_slice(),
        ];
        let mut out = Zeroizing::new(Vec::with_capacity(
            MAGIC.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>(),
        ));
        out.extend_from_slice(MAGIC);
        for part in parts {
            let len = u32::try_from(part.len())
                .map_err(|_| Error::SimulationCa("part too long".to_owned()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Loads a CA written by [`SimulationCa::to_bytes`], checking that the key matches the
    /// intermediate and that the intermediate chains to the root.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(Error::MalformedSimulationCa("bad magic or version"))?;
        let (root_der, rest) = take_part(rest)?;
        let (intermediate_der, rest) = take_part(rest)?;
        let (key, rest) = take_part(rest)?;
        if !rest.is_empty() {
            return Err(Error::MalformedSimulationCa("trailing bytes"));
        }
        Self::from_parts(
            root_der.to_vec(),
            intermediate_der.to_vec(),
            Zeroizing::new(key.to_vec()),
        )
    }

    fn from_parts(
        root_der: Vec<u8>,
        intermediate_der: Vec<u8>,
        intermediate_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self> {
        let signer = P384Signer::from_pkcs8(&intermediate_key)?;
        let at = {
            let intermediate = ParsedCert::parse(&intermediate_der, 1)
                .map_err(|_| Error::MalformedSimulationCa("intermediate is not a certificate"))?;
            if intermediate.p384_public_key(1).ok() != Some(signer.public_point()) {
                return Err(Error::MalformedSimulationCa(
                    "private key does not match the intermediate certificate",
                ));
            }
            // Self-test time: just after the intermediate's (backdated) start.
            let validity = intermediate.cert.tbs_certificate().validity();
            UnixMillis::new(
                validity
                    .not_before
                    .to_unix_duration()
                    .as_secs()
                    .saturating_add(BACKDATE_SECS + 1)
                    .saturating_mul(1000),
            )
        };
        let ca = Self {
            root_der,
            intermediate_der,
            intermediate_key,
            signer,
        };
        let (leaf_key, _) = P384Signer::generate()?;
        let leaf = ca.issue_leaf(leaf_key.public_point(), "self-test", at)?;
        verify_chain(
            &ca.root_der,
            "simulation",
            &[ca.root_der.clone(), ca.intermediate_der.clone()],
            &leaf,
            at,
        )
        .map_err(|_| Error::MalformedSimulationCa("intermediate does not chain to the root"))?;
        Ok(ca)
    }

    /// Writes `root.pem` (public, for verifiers), `intermediate.pem`, and
    /// `intermediate.key.pem` (secret, mode 0600) into `dir`.
    pub fn to_pem_files(&self, dir: &Path) -> Result<()> {
        let cert = |der: &[u8]| {
            pem::encode_string("CERTIFICATE", LineEnding::LF, der)
                .map_err(|e| Error::SimulationCa(e.to_string()))
        };
        let key = Zeroizing::new(
            pem::encode_string("PRIVATE KEY", LineEnding::LF, &self.intermediate_key)
                .map_err(|e| Error::SimulationCa(e.to_string()))?,
        );
        write_file(
            &dir.join("root.pem"),
            cert(&self.root_der)?.as_bytes(),
            0o644,
        )?;
        write_file(
            &dir.join("intermediate.pem"),
            cert(&self.intermediate_der)?.as_bytes(),
            0o644,
        )?;
        write_file(&dir.join("intermediate.key.pem"), key.as_bytes(), 0o600)
    }

    /// Loads a CA written by [`SimulationCa::to_pem_files`].
    pub fn from_pem_files(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let decode = |text: &[u8], label: &str| {
            let (got, der) =
                pem::decode_vec(text).map_err(|_| Error::MalformedSimulationCa("bad PEM file"))?;
            if got == label {
                Ok(der)
            } else {
                Err(Error::MalformedSimulationCa("unexpected PEM label"))
            }
        };
        let root = decode(&read("root.pem")?, "CERTIFICATE")?;
        let intermediate = decode(&read("intermediate.pem")?, "CERTIFICATE")?;
        let key_text = Zeroizing::new(read("intermediate.key.pem")?);
        let key = Zeroizing::new(decode(&key_text, "PRIVATE KEY")?);
        Self::from_parts(root, intermediate, key)
    }

    /// Issues a 3-hour leaf certificate for `public_point` (uncompressed P-384), valid from
    /// a few seconds before `at`, shaped like a real NSM leaf.
    pub(crate) fn issue_leaf(
        &self,
        public_point: &[u8],
        cn: &str,
        at: UnixMillis,
    ) -> Result<Vec<u8>> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        let from = at.as_secs().saturating_sub(3);
        params.not_before = to_offset(from)?;
        params.not_after = to_offset(from.saturating_add(LEAF_LIFETIME_SECS))?;
        params.serial_number = Some(random_serial()?);
        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = name(INTERMEDIATE_CN);
        issuer_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let issuer = Issuer::new(issuer_params, &self.signer);
        params
            .signed_by(&P384Public(public_point), &issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| rcgen_err(&e))
    }
}

fn take_part(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(Error::MalformedSimulationCa("truncated length"))?;
    let len = usize::try_from(u32::from_be_bytes(*len))
        .map_err(|_| Error::MalformedSimulationCa("length out of range"))?;
    if len == 0 || len > MAX_PART_LEN {
        return Err(Error::MalformedSimulationCa("part length out of range"));
    }
    rest.split_at_checked(len)
        .ok_or(Error::MalformedSimulationCa("truncated part"))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{REAL_TS, sim_ca};
    use crate::{MockNsm, ValidationTime, verify};

    #[test]
    fn round_trips_through_bytes_and_keeps_signing() {
        let ca = sim_ca();
        let root = ca.trust_root().unwrap();
        let bytes = ca.to_bytes().unwrap();
        let restored = SimulationCa::from_bytes(&bytes).unwrap();
        assert_eq!(restored.root_der(), ca.root_der());
        let doc = MockNsm::from_executable_bytes(restored, b"exe")
            .attestation_at(None, None, None, REAL_TS)
            .unwrap();
        verify(&doc, &root, ValidationTime::DocumentTimestamp).unwrap();
    }

    #[test]
    fn round_trips_through_pem_files() {
        let ca = sim_ca();
        let dir = tempfile::tempdir().unwrap();
        ca.to_pem_files(dir.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("intermediate.key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let root_pem = std::fs::read_to_string(dir.path().join("root.pem")).unwrap();
        assert_eq!(root_pem, ca.root_pem().unwrap());
        let restored = SimulationCa::from_pem_files(dir.path()).unwrap();
        assert_eq!(restored.intermediate_der(), ca.intermediate_der());
        assert!(matches!(
            SimulationCa::from_pem_files(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
        std::fs::write(dir.path().join("root.pem"), "junk").unwrap();
        assert!(matches!(
            SimulationCa::from_pem_files(dir.path()),
            Err(Error::MalformedSimulationCa(_))
        ));
    }

    #[test]
    fn malformed_or_mismatched_persisted_cas_are_refused() {
        let ca = sim_ca();
        let good = ca.to_bytes().unwrap();
        let mut trailing = good.to_vec();
        trailing.push(0);
        let mut bad_magic = good.to_vec();
        bad_magic[0] ^= 1;
        let other_ca = sim_ca();
        let other = other_ca.to_bytes().unwrap();
        // Our root and intermediate with the other CA's key.
        let key_start = good.len() - ca.intermediate_key.len();
        let other_key_start = other.len() - other_ca.intermediate_key.len();
        let mut swapped = good[..key_start - 4].to_vec();
        swapped.extend_from_slice(&other[other_key_start - 4..]);
        for bytes in [
            Vec::new(),
            bad_magic,
            good[..good.len() - 1].to_vec(),
            trailing,
            swapped,
        ] {
            let err = SimulationCa::from_bytes(&bytes).unwrap_err();
            assert!(matches!(err, Error::MalformedSimulationCa(_)), "{err}");
        }
    }

    #[test]
    fn debug_output_redacts_the_private_key() {
        let ca = sim_ca();
        let shown = format!("{ca:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex::encode(&ca.intermediate_key[..16])));
        assert!(!shown.contains(&format!("{:?}", &ca.intermediate_key[..8])));
    }

    #[test]
    fn the_simulation_root_is_not_named_like_the_aws_root() {
        let pem = sim_ca().root_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let ca = sim_ca();
        let parsed = ParsedCert::parse(ca.root_der(), 0).unwrap();
        let subject = parsed.cert.tbs_certificate().subject().to_string();
        assert!(subject.contains("NEVER IN PRODUCTION"), "{subject}");
        assert!(!subject.contains("CN=aws.nitro-enclaves"), "{subject}");
    }
}
