//! The logic behind `ekms attestation mock`: a Nitro-format attestation document for a *client*
//! enclave app under development, signed by a simulation data dir's CA, to send as `Recipient`
//! to a simulated appliance. The CLI file stays thin; everything here is unit-tested.
//!
//! NEVER IN PRODUCTION: the documents verify only against that data dir's simulation root. This
//! module reads the CA and never creates one.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ekms_attestation::{MockNsm, PcrIndex, SimulationCa, UnixMillis, recipient, simulated_pcr};

use crate::serve::SIM_CA_FILE;

/// Largest `--nonce` or `--user-data` accepted, in bytes: this command's limit, within the
/// document format's 1024 (MockNsm's own limit, which still applies to the public key).
pub const MAX_NONCE_LEN: usize = 512;

/// Length of a Nitro PCR (SHA-384).
pub const PCR_LEN: usize = 48;

/// Largest public key file read (a PEM of an 8192-bit key is under 2 KiB).
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// Largest simulation CA file read (two certificates and a P-384 key: about 2 KiB).
const MAX_CA_FILE_LEN: u64 = 64 * 1024;

/// Everything `ekms attestation mock` was asked to do, unparsed.
#[derive(Debug, Clone, Default)]
pub struct MockRequest {
    /// The simulation data dir whose CA signs.
    pub data_dir: PathBuf,
    /// The app's RSA public key (DER SubjectPublicKeyInfo or PEM `PUBLIC KEY`).
    pub public_key: PathBuf,
    /// `--pcr N=HEX` arguments.
    pub pcrs: Vec<String>,
    /// `--image-sha384 HEX` (PCR0).
    pub image_sha384: Option<String>,
    /// `--nonce HEX`.
    pub nonce: Option<String>,
    /// `--user-data HEX`.
    pub user_data: Option<String>,
}

/// A document made by [`mock_document`].
#[derive(Debug, Clone)]
pub struct MockedDoc {
    /// The raw COSE_Sign1 bytes, as an NSM returns them.
    pub bytes: Vec<u8>,
    /// The PCR0 it carries.
    pub pcr0: [u8; PCR_LEN],
}

/// Decodes hex (optional `0x`), naming the argument on failure.
pub fn parse_hex(what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|_| anyhow::anyhow!("{what}: not hex"))
}

/// A 48-byte PCR value from hex.
fn pcr_value(what: &str, s: &str) -> anyhow::Result<[u8; PCR_LEN]> {
    let bytes = parse_hex(what, s)?;
    <[u8; PCR_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow::anyhow!(
            "{what}: a PCR is {PCR_LEN} bytes (96 hex digits), got {}",
            bytes.len()
        )
    })
}

/// Parses a `--pcr N=HEX` argument: N in 0..=31 (`PCR` prefix allowed), HEX 48 bytes.
pub fn parse_pcr_arg(s: &str) -> anyhow::Result<(PcrIndex, [u8; PCR_LEN])> {
    let Some((index, value)) = s.split_once('=') else {
        bail!("--pcr wants N=HEX, got {s:?}");
    };
    let index = index.trim();
    let index = index
        .strip_prefix("PCR")
        .unwrap_or(index)
        .parse::<u8>()
        .ok()
        .and_then(PcrIndex::new)
        .with_context(|| format!("--pcr {index:?}: the index must be 0..=31"))?;
    Ok((index, pcr_value(&format!("--pcr {index}"), value)?))
}

/// The PCRs given on the command line. Refuses a PCR given twice, `--image-sha384` together with
/// `--pcr 0=`, and an all-zero PCR0 (a debug-mode enclave, which the appliance refuses).
pub fn pcr_values(
    pcrs: &[String],
    image_sha384: Option<&str>,
) -> anyhow::Result<BTreeMap<PcrIndex, [u8; PCR_LEN]>> {
    let mut out = BTreeMap::new();
    for arg in pcrs {
        let (index, value) = parse_pcr_arg(arg)?;
        if out.insert(index, value).is_some() {
            bail!("PCR{index} is given twice");
        }
    }
    if let Some(image) = image_sha384 {
        let value = pcr_value("--image-sha384", image)?;
        if out.insert(PcrIndex::IMAGE, value).is_some() {
            bail!("--image-sha384 is PCR0: give it or --pcr 0=, not both");
        }
    }
    if out
        .get(&PcrIndex::IMAGE)
        .is_some_and(|v| v.iter().all(|b| *b == 0))
    {
        bail!(
            "an all-zero PCR0 is a debug-mode enclave's, which the appliance refuses; give the \
             image's SHA-384 or leave PCR0 to its default"
        );
    }
    Ok(out)
}

/// A `--nonce`/`--user-data` value: hex, at most [`MAX_NONCE_LEN`] bytes.
pub fn parse_small_hex(what: &str, s: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(s) = s else { return Ok(None) };
    let bytes = parse_hex(what, s)?;
    if bytes.len() > MAX_NONCE_LEN {
        bail!("{what}: {} bytes, more than {MAX_NONCE_LEN}", bytes.len());
    }
    Ok(Some(bytes))
}

/// The app's public key as DER SubjectPublicKeyInfo, from a DER or PEM (`PUBLIC KEY`) file's
/// bytes. Refuses what the appliance would refuse as a recipient: a non-RSA key or one under
/// 2048 bits.
pub fn public_key_der(file: &[u8]) -> anyhow::Result<Vec<u8>> {
    let der = if file.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, der) = der::pem::decode_vec(file)
            .map_err(|e| anyhow::anyhow!("the public key file is not a valid PEM file ({e})"))?;
        if label != "PUBLIC KEY" {
            bail!(
                "the public key PEM is {label:?}; a SubjectPublicKeyInfo \"PUBLIC KEY\" is needed \
                 (`openssl pkey -pubout` makes one)"
            );
        }
        der
    } else {
        file.to_vec()
    };
    if recipient::recipient_key(&der).is_err() {
        bail!(
            "the public key cannot be a recipient ({}); the appliance encrypts only to RSA keys \
             of {} bits or more",
            key_refusal(&der),
            recipient::MIN_RECIPIENT_RSA_BITS
        );
    }
    Ok(der)
}

/// `RSAPublicKey` (RFC 8017 §A.1.1), the `subjectPublicKey` of an RSA SubjectPublicKeyInfo.
#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: der::asn1::UintRef<'a>,
    public_exponent: der::asn1::UintRef<'a>,
}

/// `rsaEncryption` (RFC 8017 §A.1).
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a key that `recipient_key` refused is unusable, in public words (aws-lc-rs refuses to
/// parse short RSA keys at all, so its error cannot tell "short" from "not RSA").
fn key_refusal(der: &[u8]) -> String {
    use der::Decode as _;
    let Ok(spki) = spki::SubjectPublicKeyInfoRef::from_der(der) else {
        return "not a DER SubjectPublicKeyInfo".to_owned();
    };
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return format!("not an RSA key: algorithm {}", spki.algorithm.oid);
    }
    let Some(rsa) = spki
        .subject_public_key
        .as_bytes()
        .and_then(|b| RsaPublicKey::from_der(b).ok())
    else {
        return "a malformed RSA key".to_owned();
    };
    let modulus = rsa.modulus.as_bytes();
    let bits = modulus.first().map_or(0, |top| {
        modulus.len().saturating_mul(8) - usize::try_from(top.leading_zeros()).unwrap_or(0)
    });
    if bits < recipient::MIN_RECIPIENT_RSA_BITS {
        format!("an RSA key of {bits} bits")
    } else {
        "an RSA key aws-lc-rs refuses".to_owned()
    }
}

/// Reads a file of at most `max` bytes.
pub(crate) fn read_capped(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{what}: opening {}", path.display()))?;
    let mut out = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .with_context(|| format!("{what}: reading {}", path.display()))?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > max {
        bail!("{what}: {} is larger than {max} bytes", path.display());
    }
    Ok(out)
}

/// Loads the simulation CA of `data_dir`; refuses a data dir that has none (this never makes one).
pub fn load_sim_ca(data_dir: &Path) -> anyhow::Result<SimulationCa> {
    let path = data_dir.join(SIM_CA_FILE);
    if !path.is_file() {
        bail!(
            "{} is not a simulation data dir (no {SIM_CA_FILE}); run `ekms serve --sim --data-dir \
             {}` once first",
            data_dir.display(),
            data_dir.display()
        );
    }
    let bytes = zeroize::Zeroizing::new(read_capped(&path, MAX_CA_FILE_LEN, "simulation CA")?);
    SimulationCa::from_bytes(&bytes).with_context(|| path.display().to_string())
}

/// Makes the document `req` asks for, dated `at`. Reads the key and CA files; writes nothing.
pub fn mock_document(req: &MockRequest, at: UnixMillis) -> anyhow::Result<MockedDoc> {
    let ca = load_sim_ca(&req.data_dir)?;
    let values = pcr_values(&req.pcrs, req.image_sha384.as_deref())?;
    let nonce = parse_small_hex("--nonce", req.nonce.as_deref())?;
    let user_data = parse_small_hex("--user-data", req.user_data.as_deref())?;
    let key_file = read_capped(&req.public_key, MAX_KEY_FILE_LEN, "--public-key")?;
    let spki = public_key_der(&key_file)
        .with_context(|| format!("--public-key {}", req.public_key.display()))?;
    let pcr0 = values
        .get(&PcrIndex::IMAGE)
        .copied()
        .unwrap_or_else(|| simulated_pcr(PcrIndex::IMAGE));
    let nsm = MockNsm::from_pcr_values(ca, &values);
    let bytes = nsm.attestation_at(nonce.as_deref(), user_data.as_deref(), Some(&spki), at)?;
    Ok(MockedDoc { bytes, pcr0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    use ekms_attestation::{ValidationTime, verify};

    fn hex48(b: u8) -> String {
        hex::encode([b; PCR_LEN])
    }

    fn msg<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn pcr_arguments_parse_strictly() {
        let (i, v) = parse_pcr_arg(&format!("8={}", hex48(1))).unwrap();
        assert_eq!((i.get(), v), (8, [1; PCR_LEN]));
        let (i, _) = parse_pcr_arg(&format!("PCR31=0x{}", hex48(2))).unwrap();
        assert_eq!(i.get(), 31);
        assert!(msg(parse_pcr_arg(&format!("32={}", hex48(1)))).contains("0..=31"));
        assert!(msg(parse_pcr_arg(&format!("x={}", hex48(1)))).contains("0..=31"));
        assert!(msg(parse_pcr_arg("1")).contains("N=HEX"));
        assert!(msg(parse_pcr_arg("1=zz")).contains("not hex"));
        assert!(msg(parse_pcr_arg("1=abcd")).contains("48 bytes"));
    }

    #[test]
    fn pcr_sets_refuse_conflicts_and_debug_mode() {
        let img = hex48(0xab);
        let v = pcr_values(&[format!("20={}", hex48(2))], Some(&img)).unwrap();
        assert_eq!(v.get(&PcrIndex::IMAGE), Some(&[0xab; PCR_LEN]));
        assert_eq!(v.len(), 2);
        assert!(msg(pcr_values(&[format!("0={img}")], Some(&img))).contains("not both"));
        let twice = [format!("3={img}"), format!("3={img}")];
        assert!(msg(pcr_values(&twice, None)).contains("twice"));
        assert!(msg(pcr_values(&[format!("0={}", hex48(0))], None)).contains("debug-mode"));
        assert!(msg(pcr_values(&[], Some(&hex48(0)))).contains("debug-mode"));
        // A zero PCR other than 0 is the user's business.
        assert!(pcr_values(&[format!("1={}", hex48(0))], None).is_ok());
    }

    #[test]
    fn nonce_and_user_data_are_hex_up_to_512_bytes() {
        assert_eq!(parse_small_hex("--nonce", None).unwrap(), None);
        assert_eq!(
            parse_small_hex("--nonce", Some("0a0B")).unwrap(),
            Some(vec![10, 11])
        );
        assert!(parse_small_hex("--nonce", Some(&"00".repeat(512))).is_ok());
        assert!(msg(parse_small_hex("--nonce", Some(&"00".repeat(513)))).contains("512"));
        assert!(msg(parse_small_hex("--user-data", Some("0g"))).contains("--user-data"));
    }

    fn rsa_key(size: KeySize) -> (PrivateDecryptingKey, Vec<u8>) {
        let key = PrivateDecryptingKey::generate(size).unwrap();
        let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
        (key, spki)
    }

    #[test]
    fn public_keys_are_der_or_pem_rsa_of_2048_bits_or_more() {
        let (_, spki) = rsa_key(KeySize::Rsa2048);
        assert_eq!(public_key_der(&spki).unwrap(), spki);
        let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &spki).unwrap();
        assert_eq!(public_key_der(pem.as_bytes()).unwrap(), spki);
        let cert = pem.replace("PUBLIC KEY", "CERTIFICATE");
        assert!(msg(public_key_der(cert.as_bytes())).contains("\"CERTIFICATE\""));
        assert!(msg(public_key_der(b"-----BEGIN PUBLIC KEY-----\nnot base64")).contains("PEM"));
        assert!(msg(public_key_der(b"junk")).contains("not a DER SubjectPublicKeyInfo"));

        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let ec_spki = aws_lc_rs::signature::KeyPair::public_key(&ec)
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec();
        assert!(msg(public_key_der(&ec_spki)).contains("not an RSA key"));
        // A 1024-bit RSA key (aws-lc-rs will not generate one): openssl's, fixed.
        let short = hex::decode(RSA1024_SPKI).unwrap();
        let e = msg(public_key_der(&short));
        assert!(
            e.contains("an RSA key of 1024 bits") && e.contains("2048"),
            "{e}"
        );
    }

    /// `openssl genrsa 1024 | openssl pkey -pubout -outform DER | xxd -p`.
    const RSA1024_SPKI: &str = "30819f300d06092a864886f70d010101050003818d0030818902818100cfe5258ca8c6cea706545dd2a5a032f3e82aebb087ef83aa31d8fc779ecafff33a3d07c5705fe0675e577d4fb3efa04c804157473e9de9b6255e8652c6c109037c56192a7973e9f1528a726b85e48d1c0a79595ef1126158d9c871b8b124e4e3fcefe492ca806ac15669e88d3c20e9d66a7fc8e36d2d2124c965b5a75af0e3e10203010001";

    #[test]
    fn a_data_dir_without_a_simulation_ca_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let e = msg(load_sim_ca(dir.path()));
        assert!(e.contains("not a simulation data dir"), "{e}");
        assert!(e.contains("ekms serve --sim --data-dir"), "{e}");
        assert!(!dir.path().join(SIM_CA_FILE).exists());
        std::fs::write(dir.path().join(SIM_CA_FILE), b"garbage").unwrap();
        assert!(msg(load_sim_ca(dir.path())).contains("malformed"));
    }

    /// Writes a simulation data dir (its CA file only); returns the CA.
    fn sim_data_dir(dir: &Path) -> SimulationCa {
        let ca = SimulationCa::generate().unwrap();
        std::fs::write(dir.join(SIM_CA_FILE), ca.to_bytes().unwrap().as_slice()).unwrap();
        ca
    }

    #[test]
    fn a_mock_document_verifies_against_the_data_dirs_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = sim_data_dir(dir.path());
        let (_, spki) = rsa_key(KeySize::Rsa2048);
        let key_path = dir.path().join("app.pub.der");
        std::fs::write(&key_path, &spki).unwrap();
        let now = UnixMillis::from_system_time(std::time::SystemTime::now()).unwrap();
        let req = MockRequest {
            data_dir: dir.path().to_owned(),
            public_key: key_path,
            pcrs: vec![format!("4={}", hex48(4)), format!("16={}", hex48(16))],
            image_sha384: None,
            nonce: Some("0102".into()),
            user_data: Some("ff".into()),
        };
        let doc = mock_document(&req, now).unwrap();
        assert_eq!(doc.pcr0, simulated_pcr(PcrIndex::IMAGE));
        let v = verify(
            &doc.bytes,
            &ca.trust_root().unwrap(),
            ValidationTime::At(now),
        )
        .unwrap();
        assert!(v.is_simulation());
        assert_eq!(v.public_key(), Some(spki.as_slice()));
        assert_eq!(v.nonce(), Some(&[1u8, 2][..]));
        assert_eq!(v.user_data(), Some(&[0xffu8][..]));
        assert_eq!(v.pcrs().len(), 17);
        let pcr = |n| {
            v.pcr(PcrIndex::new(n).unwrap())
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        assert_eq!(pcr(4), vec![4; PCR_LEN]);
        assert_eq!(pcr(16), vec![16; PCR_LEN]);
        assert_eq!(pcr(5), simulated_pcr(PcrIndex::new(5).unwrap()).to_vec());

        let other = tempfile::tempdir().unwrap();
        let e = msg(mock_document(
            &MockRequest {
                data_dir: other.path().to_owned(),
                ..req
            },
            now,
        ));
        assert!(e.contains("not a simulation data dir"), "{e}");
    }
}
