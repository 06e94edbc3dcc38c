//! Attested release through the real `aws-sdk-kms` and a running appliance, as an enclave-app
//! developer follows the README: a key made with `openssl`, a document from
//! `ekms attestation mock`, a key policy pinning the app's image, and every
//! `CiphertextForRecipient` opened with `openssl cms -decrypt`, with `ekms recipient decrypt`
//! and with the Rust CMS reader.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use aws_lc_rs::encoding::AsDer as _;
use aws_sdk_kms::{
    Client,
    error::ProvideErrorMetadata as _,
    primitives::Blob,
    types::{DataKeyPairSpec, DataKeySpec, KeyEncryptionMechanism, RecipientInfo},
};
use common::{admin, ekms, text};
use ekms_tests::{Appliance, have};
use p384::pkcs8::EncodePublicKey as _;

/// An enclave app: its key pair made by `openssl`, as the guide says.
struct App {
    key_pem: PathBuf,
    public_der: PathBuf,
    pkcs8_der: Vec<u8>,
}

fn openssl_available() -> bool {
    have("openssl", &["version"])
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    out.stdout
}

impl App {
    fn new(dir: &Path, name: &str) -> Self {
        let key_pem = dir.join(format!("{name}.pem"));
        let public_der = dir.join(format!("{name}.pub.der"));
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key_pem));
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key_pem)
            .arg("-out")
            .arg(&public_der));
        let pkcs8_der = run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key_pem));
        Self {
            key_pem,
            public_der,
            pkcs8_der,
        }
    }

    /// `ekms attestation mock` for this app's key with PCR0 `image`: the document's bytes.
    fn document(&self, app: &Appliance, image: &str) -> Vec<u8> {
        let out = self.public_der.with_extension("doc");
        let o = ekms(&[
            "attestation",
            "mock",
            "--data-dir",
            app.data_dir.to_str().unwrap(),
            "--public-key",
            self.public_der.to_str().unwrap(),
            "--image-sha384",
            image,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(out).unwrap()
    }

    /// Opens an envelope three ways (openssl, `ekms recipient decrypt`, the Rust reader), which
    /// must agree; the plaintext.
    fn open(&self, envelope: &Blob) -> Vec<u8> {
        let blob = self.public_der.with_extension("cms");
        std::fs::write(&blob, envelope.as_ref()).unwrap();
        let by_openssl = run(Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-in"])
            .arg(&blob)
            .arg("-inkey")
            .arg(&self.key_pem));
        let o = ekms(&[
            "recipient",
            "decrypt",
            "--key",
            self.key_pem.to_str().unwrap(),
            "--in",
            blob.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let by_rust =
            ekms_attestation::recipient::open(&self.pkcs8_der, envelope.as_ref()).unwrap();
        assert_eq!(by_openssl, o.stdout);
        assert_eq!(by_openssl, by_rust.as_slice());
        by_openssl
    }
}

fn recipient(doc: &[u8]) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(doc.to_vec()))
        .build()
}

const IMAGE: &str = "6e1c1fb8a4b5f1dd6b7d7b4b0b9a2c1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b";
const OTHER_IMAGE: &str = "0c1c1fb8a4b5f1dd6b7d7b4b0b9a2c1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b";

async fn key_pinned_to(kms: &Client, image: &str) -> String {
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "admin", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
         "Action": ["kms:Encrypt", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy",
                    "kms:GenerateDataKeyWithoutPlaintext"],
         "Resource": "*"},
        {"Sid": "release to the measured enclave only", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair"],
         "Resource": "*",
         "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": image}}}
    ]});
    kms.create_key()
        .policy(policy.to_string())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_key_is_released_only_to_the_measured_app_and_opens_everywhere() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let work = tempfile::tempdir().unwrap();
    let enclave_app = App::new(work.path(), "app");
    let doc = enclave_app.document(&app, IMAGE);
    let key = key_pinned_to(&kms, IMAGE).await;

    // Decrypt: what the envelope holds is what was encrypted; no Plaintext is sent.
    let blob = common::encrypt(&kms, &key, b"released to the enclave").await;
    let out = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .recipient(recipient(&doc))
        .send()
        .await
        .unwrap();
    assert!(out.plaintext().is_none());
    assert_eq!(
        enclave_app.open(out.ciphertext_for_recipient().unwrap()),
        b"released to the enclave"
    );

    // GenerateDataKey: the envelope's data key is the one CiphertextBlob holds (checked by a
    // GenerateDataKey with Recipient, then the same blob decrypted with Recipient).
    let out = kms
        .generate_data_key()
        .key_id(&key)
        .key_spec(DataKeySpec::Aes256)
        .recipient(recipient(&doc))
        .send()
        .await
        .unwrap();
    assert!(out.plaintext().is_none());
    let data_key = enclave_app.open(out.ciphertext_for_recipient().unwrap());
    assert_eq!(data_key.len(), 32);
    let again = kms
        .decrypt()
        .ciphertext_blob(out.ciphertext_blob().unwrap().clone())
        .recipient(recipient(&doc))
        .send()
        .await
        .unwrap();
    assert_eq!(
        enclave_app.open(again.ciphertext_for_recipient().unwrap()),
        data_key
    );

    // GenerateDataKeyPair: the envelope holds the private key of PublicKey.
    let out = kms
        .generate_data_key_pair()
        .key_id(&key)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .recipient(recipient(&doc))
        .send()
        .await
        .unwrap();
    assert!(out.private_key_plaintext().is_none());
    let private = enclave_app.open(out.ciphertext_for_recipient().unwrap());
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &private,
    )
    .unwrap();
    assert_eq!(
        aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_der()
            .unwrap()
            .as_ref(),
        out.public_key().unwrap().as_ref()
    );

    // GenerateRandom (no key: identity policies decide; the admin may).
    let out = kms
        .generate_random()
        .number_of_bytes(64)
        .recipient(recipient(&doc))
        .send()
        .await
        .unwrap();
    assert!(out.plaintext().is_none());
    assert_eq!(
        enclave_app
            .open(out.ciphertext_for_recipient().unwrap())
            .len(),
        64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pinned_key_refuses_every_other_caller() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let work = tempfile::tempdir().unwrap();
    let enclave_app = App::new(work.path(), "app");
    let doc = enclave_app.document(&app, IMAGE);
    let key = key_pinned_to(&kms, IMAGE).await;
    let blob = common::encrypt(&kms, &key, b"pinned").await;
    // No Recipient: the pinned key says no.
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    // Another image's valid document: no.
    let other = enclave_app.document(&app, OTHER_IMAGE);
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .recipient(recipient(&other))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    // A document from another appliance's simulation CA: refused before any policy.
    let dir2 = tempfile::tempdir().unwrap();
    let stranger = Appliance::start(dir2.path());
    let foreign = enclave_app.document(&stranger, IMAGE);
    drop(stranger);
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .recipient(recipient(&foreign))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"), "{e:?}");
    assert!(
        e.message().unwrap().contains("attestation document"),
        "{e:?}"
    );
    // A modified document: refused.
    let mut bad = doc.clone();
    let n = bad.len();
    bad[n - 40] ^= 1;
    let e = kms
        .decrypt()
        .ciphertext_blob(blob)
        .recipient(recipient(&bad))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn derive_shared_secret_releases_to_the_recipient() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let work = tempfile::tempdir().unwrap();
    let enclave_app = App::new(work.path(), "app");
    let doc = enclave_app.document(&app, IMAGE);
    let key = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP384)
        .key_usage(aws_sdk_kms::types::KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let peer = p384::SecretKey::random(&mut rand_core::OsRng);
    let peer_der = peer.public_key().to_public_key_der().unwrap();
    let derive = || {
        kms.derive_shared_secret()
            .key_id(&key)
            .key_agreement_algorithm(aws_sdk_kms::types::KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer_der.as_bytes().to_vec()))
    };
    let plain = derive().send().await.unwrap();
    let out = derive().recipient(recipient(&doc)).send().await.unwrap();
    assert!(out.shared_secret().is_none());
    assert_eq!(
        enclave_app.open(out.ciphertext_for_recipient().unwrap()),
        plain.shared_secret().unwrap().as_ref()
    );
}

/// The boto3 path, in Python as an enclave app's host-side tooling would write it.
#[test]
fn boto3_recipient() {
    if !openssl_available() || !have("python3", &["-c", "import boto3, cryptography"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/recipient.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&app.endpoint, &app.access_key, &app.secret_key])
        .arg(ekms_tests::bin_dir().join("ekms"))
        .arg(&app.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "recipient.py failed:\n{}", text(&out));
}

#[test]
fn the_mock_refuses_a_data_dir_that_is_not_a_simulation_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.der");
    std::fs::write(&key, b"not used").unwrap();
    let o = ekms(&[
        "attestation",
        "mock",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
        "--out",
        dir.path().join("doc").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("simulation"), "{}", text(&o));
    assert!(!dir.path().join("doc").exists());
}

/// The README's guide for enclave-app developers, run as written (bash, the aws CLI, openssl,
/// `ekms` on PATH) in a directory whose `./ekms-data` is a running appliance's: the data key
/// comes back only for the recipient, and the guide's refusal holds.
#[test]
fn the_readme_guide_for_enclave_apps_works_as_written() {
    if !openssl_available()
        || !have("aws", &["--version"])
        || !have("python3", &["-c", "import boto3"])
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let app = Appliance::start(&work.path().join("ekms-data"));
    let guide = common::sh_block("README.md", "## Enclave apps: attested release");
    let script = format!(
        "set -euo pipefail\n{}\necho \"GUIDE-KEY=$KEY\"\n",
        guide.replace("http://127.0.0.1:8400", &app.endpoint)
    );
    let path = format!(
        "{}:{}",
        ekms_tests::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            work.path().join("ekms-data/credentials"),
        )
        .env("AWS_CONFIG_FILE", work.path().join("ekms-data/config"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_KMS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "guide failed:\n{script}\n{}",
        text(&out)
    );
    let data_key = std::fs::read(work.path().join("data.key")).unwrap();
    assert_eq!(data_key.len(), 32);
    // The guide's last line: the same call without the document is refused.
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("GUIDE-KEY=").map(str::to_owned))
        .unwrap();
    let o = Command::new("aws")
        .args(["--endpoint-url", &app.endpoint, "--profile", "ekms", "kms"])
        .args([
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
        ])
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            work.path().join("ekms-data/credentials"),
        )
        .env("AWS_CONFIG_FILE", work.path().join("ekms-data/config"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("AccessDeniedException"), "{}", text(&o));
}
