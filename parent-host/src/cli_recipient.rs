//! `ekms recipient decrypt`: opens a `CiphertextForRecipient` (what KMS answers to a request
//! carrying a `Recipient` attestation document) with the enclave app's RSA private key, so that
//! app developers can check what a simulated appliance sent them.
//!
//! It must never print key material or plaintext in an error, and never panic on any file
//! content. The cryptography is `ekms_attestation::recipient::open`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use aws_lc_rs::encoding::AsDer as _;
use base64::Engine as _;
use ekms_attestation::recipient;
use zeroize::Zeroizing;

use crate::sim_attestation::read_capped;

/// Largest private key file read (a PEM of an 8192-bit key is about 6.5 KiB).
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// Largest `CiphertextForRecipient` file read, DER or base64. KMS's are a few KiB (a 4096-byte
/// plaintext plus the wrapped key); this leaves room without reading an arbitrary file whole.
const MAX_BLOB_FILE_LEN: u64 = 1024 * 1024;

/// `ekms recipient` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RecipientCommand {
    /// Open a CiphertextForRecipient (CMS EnvelopedData) with the enclave app's RSA private key.
    Decrypt(DecryptArgs),
}

/// Arguments of `ekms recipient decrypt`.
#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// The app's RSA private key: PKCS #8 ("PRIVATE KEY") PEM or DER, or PKCS #1
    /// ("RSA PRIVATE KEY") PEM or DER. Encrypted keys are refused.
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// The CiphertextForRecipient: raw DER bytes, or the base64 text the AWS CLI and the JSON
    /// response show.
    #[arg(long = "in", value_name = "BLOB")]
    pub input: PathBuf,
    /// Write the plaintext here (created with mode 0600; an existing file is never overwritten)
    /// instead of to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs an `ekms recipient` subcommand.
#[must_use]
pub fn run(cmd: &RecipientCommand) -> ExitCode {
    match cmd {
        RecipientCommand::Decrypt(args) => run_decrypt(args),
    }
}

/// Runs `ekms recipient decrypt`.
#[must_use]
pub fn run_decrypt(args: &DecryptArgs) -> ExitCode {
    match decrypt_files(&args.key, &args.input, args.out.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "ekms recipient decrypt: REFUSED: {e:#}"
            );
            ExitCode::FAILURE
        }
    }
}

/// Reads the key and blob files, opens the blob, writes the plaintext to `out` or stdout.
pub fn decrypt_files(key: &Path, input: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    // Refuse an existing --out before anything is decrypted.
    if let Some(out) = out
        && std::fs::symlink_metadata(out).is_ok()
    {
        bail!(
            "{} exists; plaintext is never written over a file",
            out.display()
        );
    }
    let key_file = Zeroizing::new(read_capped(key, MAX_KEY_FILE_LEN, "--key")?);
    let blob_file = read_capped(input, MAX_BLOB_FILE_LEN, "--in")?;
    let plaintext = decrypt(&key_file, &blob_file)?;
    if let Some(path) = out {
        return write_private(path, &plaintext);
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&plaintext)
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Opens a `CiphertextForRecipient` given the contents of the key file and of the blob file.
pub fn decrypt(key_file: &[u8], blob_file: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let pkcs8 = private_key_pkcs8(key_file)?;
    let envelope = envelope_bytes(blob_file);
    recipient::open(&pkcs8, &envelope).context("the CiphertextForRecipient does not open")
}

/// The private key as PKCS #8 DER, from a key file's bytes: PEM `PRIVATE KEY` or
/// `RSA PRIVATE KEY` (PKCS #1, converted by aws-lc-rs), or the same as DER. Errors name the
/// format only, never a byte of the key.
pub fn private_key_pkcs8(file: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if file.trim_ascii_start().starts_with(b"-----BEGIN") {
        let label = der::pem::decode_label(file)
            .map_err(|_| anyhow::anyhow!("the key file is not a valid PEM file"))?;
        let pkcs1 = match label {
            "PRIVATE KEY" => false,
            "RSA PRIVATE KEY" => true,
            "ENCRYPTED PRIVATE KEY" => bail!(
                "the key is encrypted; decrypt it first: `openssl pkcs8 -topk8 -nocrypt -in KEY \
                 -out KEY.pkcs8.pem`"
            ),
            other => bail!(
                "the key PEM is {other:?}; an RSA \"PRIVATE KEY\" (PKCS #8) is needed (`openssl \
                 pkcs8 -topk8 -nocrypt` converts one)"
            ),
        };
        // Decoded into a buffer that is zeroed on drop, so no copy of the key is left behind.
        let mut buf = Zeroizing::new(vec![0u8; file.len()]);
        let (_, der) = der::pem::decode(file, &mut buf)
            .map_err(|_| anyhow::anyhow!("the key file is not a valid PEM file"))?;
        return if pkcs1 {
            pkcs1_to_pkcs8(der)
        } else {
            Ok(Zeroizing::new(der.to_vec()))
        };
    }
    if aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(file).is_ok() {
        return Ok(Zeroizing::new(file.to_vec()));
    }
    pkcs1_to_pkcs8(file).map_err(|_| {
        anyhow::anyhow!(
            "the key file is neither PEM nor a DER RSA private key (PKCS #8 or PKCS #1)"
        )
    })
}

/// A PKCS #1 `RSAPrivateKey` (DER) re-encoded as PKCS #8.
fn pkcs1_to_pkcs8(der: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let refused = || {
        anyhow::anyhow!(
            "the \"RSA PRIVATE KEY\" does not decode as an RSA key of 2048 to 8192 bits; convert \
             it with `openssl pkcs8 -topk8 -nocrypt`"
        )
    };
    let pair = aws_lc_rs::signature::RsaKeyPair::from_der(der).map_err(|_| refused())?;
    let pkcs8 = pair.as_der().map_err(|_| refused())?;
    Ok(Zeroizing::new(pkcs8.as_ref().to_vec()))
}

/// The envelope's DER bytes from the blob file's bytes: if the file is base64 text (standard
/// alphabet, padded; whitespace anywhere and one pair of surrounding double quotes, as in JSON,
/// are ignored) that decodes to a DER SEQUENCE (0x30 first), the decoded bytes; otherwise the
/// file itself. (DER `ContentInfo` of any realistic size has a non-ASCII length byte, so it is
/// never mistaken for base64.)
pub fn envelope_bytes(file: &[u8]) -> Vec<u8> {
    let text = file.trim_ascii();
    let text = text
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(text);
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(decoded) if decoded.first() == Some(&0x30) => decoded,
        _ => file.to_vec(),
    }
}

/// Writes `bytes` to a new file `path` with mode 0600; refuses an existing file.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (plaintext is never written over a file)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    use der::pem::{LineEnding, encode_string};
    use ekms_attestation::{PcrIndex, SimulationCa, UnixMillis, ValidationTime, verify};

    use crate::serve::SIM_CA_FILE;
    use crate::sim_attestation::{MockRequest, mock_document};

    struct App {
        pkcs8: Vec<u8>,
        spki: Vec<u8>,
    }

    fn app_key() -> App {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        App {
            pkcs8: key.as_der().unwrap().as_ref().to_vec(),
            spki: key.public_key().as_der().unwrap().as_ref().to_vec(),
        }
    }

    fn msg<T>(r: anyhow::Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// `openssl genrsa 2048` output is PKCS #1 in OpenSSL 1.x; here: openssl's `-traditional`.
    fn pkcs1_pem(key_pkcs8: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let p8 = dir.path().join("k8.pem");
        std::fs::write(
            &p8,
            encode_string("PRIVATE KEY", LineEnding::LF, key_pkcs8).unwrap(),
        )
        .unwrap();
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&p8)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn private_keys_in_pem_or_der_pkcs8_or_pkcs1() {
        let app = app_key();
        let blob = recipient::seal(&app.spki, b"hello").unwrap();
        let pem = encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap();
        assert_eq!(*private_key_pkcs8(pem.as_bytes()).unwrap(), app.pkcs8);
        assert_eq!(*private_key_pkcs8(&app.pkcs8).unwrap(), app.pkcs8);
        assert_eq!(decrypt(pem.as_bytes(), &blob).unwrap().as_slice(), b"hello");
        match pkcs1_pem(&app.pkcs8) {
            Some(pkcs1) => {
                assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
                assert_eq!(
                    decrypt(pkcs1.as_bytes(), &blob).unwrap().as_slice(),
                    b"hello"
                );
                let (_, der) = der::pem::decode_vec(pkcs1.as_bytes()).unwrap();
                assert_eq!(decrypt(&der, &blob).unwrap().as_slice(), b"hello");
            }
            None => println!("note: openssl missing; PKCS #1 conversion not tested"),
        }
    }

    #[test]
    fn unusable_keys_are_refused_without_showing_them() {
        let app = app_key();
        let pem = encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap();
        let enc = pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        assert!(msg(private_key_pkcs8(enc.as_bytes())).contains("openssl pkcs8 -topk8 -nocrypt"));
        let ec = pem.replace("PRIVATE KEY", "EC PRIVATE KEY");
        assert!(msg(private_key_pkcs8(ec.as_bytes())).contains("\"EC PRIVATE KEY\""));
        let bad_pkcs1 =
            encode_string("RSA PRIVATE KEY", LineEnding::LF, b"\x30\x03\x02\x01\x00").unwrap();
        assert!(msg(private_key_pkcs8(bad_pkcs1.as_bytes())).contains("openssl pkcs8"));
        assert!(msg(private_key_pkcs8(b"-----BEGIN PRIVATE KEY-----\n!!")).contains("PEM"));
        let e = msg(private_key_pkcs8(b"\x00junk"));
        assert!(e.contains("neither PEM nor"), "{e}");
        // A PKCS #8 key of another type passes here and is refused by `open`.
        let ec_key = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let ec8 = ec_key.to_pkcs8v1().unwrap();
        let blob = recipient::seal(&app.spki, b"x").unwrap();
        let ec8_pem = encode_string("PRIVATE KEY", LineEnding::LF, ec8.as_ref()).unwrap();
        let e = msg(decrypt(ec8_pem.as_bytes(), &blob));
        assert!(e.contains("PKCS #8 RSA"), "{e}");
        assert!(msg(decrypt(ec8.as_ref(), &blob)).contains("neither PEM nor"));
        // No error text carries the key's base64 or hex.
        let b64 = pem.lines().nth(1).unwrap();
        let wrong = app_key();
        let e = msg(decrypt(
            encode_string("PRIVATE KEY", LineEnding::LF, &wrong.pkcs8)
                .unwrap()
                .as_bytes(),
            &blob,
        ));
        assert!(
            !e.contains(b64) && !e.contains(&hex::encode(&app.pkcs8[..16])),
            "{e}"
        );
    }

    #[test]
    fn blobs_are_der_or_base64_text() {
        let app = app_key();
        let blob = recipient::seal(&app.spki, b"data key").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
        assert_eq!(envelope_bytes(&blob), blob);
        assert_eq!(envelope_bytes(b64.as_bytes()), blob);
        assert_eq!(envelope_bytes(format!("  {b64}\n").as_bytes()), blob);
        assert_eq!(envelope_bytes(format!("\"{b64}\"\n").as_bytes()), blob);
        let wrapped = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(envelope_bytes(wrapped.as_bytes()), blob);
        // Base64 of something that is not DER is taken as the bytes themselves (and then refused).
        assert_eq!(envelope_bytes(b"aGVsbG8="), b"aGVsbG8=");
        assert_eq!(envelope_bytes(b""), b"");
        let pem = encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap();
        assert_eq!(
            decrypt(pem.as_bytes(), b64.as_bytes()).unwrap().as_slice(),
            b"data key"
        );
        for junk in [&b""[..], b"aGVsbG8=", b"\x30\x80\x00", b"\xff\xfe"] {
            assert!(msg(decrypt(pem.as_bytes(), junk)).contains("does not open"));
        }
    }

    #[test]
    fn no_file_content_panics() {
        let app = app_key();
        let pem = encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap();
        let blob = recipient::seal(&app.spki, b"x").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
        for cut in (0..pem.len()).step_by(7) {
            assert!(decrypt(&pem.as_bytes()[..cut], &blob).is_err());
            let mut flipped = pem.clone().into_bytes();
            flipped[cut] ^= 0x20;
            let _ = decrypt(&flipped, &blob);
        }
        for cut in 0..b64.len() {
            let _ = decrypt(pem.as_bytes(), &b64.as_bytes()[..cut]);
        }
        for cut in 0..app.pkcs8.len() {
            let _ = private_key_pkcs8(&app.pkcs8[..cut]);
        }
    }

    #[test]
    fn out_files_are_new_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let app = app_key();
        let key = dir.path().join("app.pem");
        std::fs::write(
            &key,
            encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap(),
        )
        .unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, recipient::seal(&app.spki, b"pt").unwrap()).unwrap();
        let out = dir.path().join("pt");
        decrypt_files(&key, &blob, Some(&out)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"pt");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(msg(decrypt_files(&key, &blob, Some(&out))).contains("never written over"));
        assert!(msg(decrypt_files(&key, &dir.path().join("missing"), None)).contains("--in"));
        std::fs::write(&blob, vec![0u8; 2 * 1024 * 1024]).unwrap();
        assert!(msg(decrypt_files(&key, &blob, None)).contains("larger than"));
    }

    /// The whole developer path: a mock document for the app's key from a simulation data dir,
    /// verified against that dir's root; a blob sealed to the key in the document, opened by
    /// `recipient decrypt`.
    #[test]
    fn mock_document_then_sealed_blob_opens_with_recipient_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        let ca = SimulationCa::generate().unwrap();
        std::fs::write(
            dir.path().join(SIM_CA_FILE),
            ca.to_bytes().unwrap().as_slice(),
        )
        .unwrap();
        let app = app_key();
        let public = dir.path().join("app.pub.pem");
        std::fs::write(
            &public,
            encode_string("PUBLIC KEY", LineEnding::LF, &app.spki).unwrap(),
        )
        .unwrap();
        let image = [0x5a; 48];
        let now = UnixMillis::from_system_time(std::time::SystemTime::now()).unwrap();
        let doc = mock_document(
            &MockRequest {
                data_dir: dir.path().to_owned(),
                public_key: public,
                image_sha384: Some(hex::encode(image)),
                nonce: Some("00112233".into()),
                ..MockRequest::default()
            },
            now,
        )
        .unwrap();
        assert_eq!(doc.pcr0, image);
        let v = verify(
            &doc.bytes,
            &ca.trust_root().unwrap(),
            ValidationTime::At(now),
        )
        .unwrap();
        assert_eq!(v.pcr(PcrIndex::IMAGE).unwrap().as_bytes(), &image);
        let spki = v.public_key().unwrap();

        let blob = recipient::seal(spki, b"the data key").unwrap();
        let key = dir.path().join("app.pem");
        std::fs::write(
            &key,
            encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap(),
        )
        .unwrap();
        let blob_path = dir.path().join("blob.b64");
        std::fs::write(
            &blob_path,
            base64::engine::general_purpose::STANDARD.encode(&blob),
        )
        .unwrap();
        let out = dir.path().join("plaintext");
        decrypt_files(&key, &blob_path, Some(&out)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"the data key");
    }

    /// Interop: what `recipient::seal` makes, `openssl cms -decrypt` opens.
    #[test]
    fn openssl_cms_opens_sealed_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_key();
        let key = dir.path().join("app.pem");
        std::fs::write(
            &key,
            encode_string("PRIVATE KEY", LineEnding::LF, &app.pkcs8).unwrap(),
        )
        .unwrap();
        let blob = dir.path().join("blob.der");
        let plaintext: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        std::fs::write(&blob, recipient::seal(&app.spki, &plaintext).unwrap()).unwrap();
        let out = match std::process::Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-inkey"])
            .arg(&key)
            .arg("-in")
            .arg(&blob)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                println!("note: openssl not runnable ({e}); CMS interop not tested");
                return;
            }
        };
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, plaintext);
    }
}
