//! Imported key material (Origin EXTERNAL) through the three real clients, at once against one
//! appliance: the aws CLI running the README's and docs/importing.md's walkthroughs exactly as
//! written (openssl wraps), boto3 (`tests/py/import_material.py`), and `aws-sdk-kms` with the
//! material wrapped by RustCrypto's RSA-OAEP and aws-lc-rs's AES key wrap with padding. What the
//! appliance computes with the material is checked by openssl, Python and aws-lc-rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

mod common;

use std::{path::Path, process::Command, time::SystemTime};

use aws_sdk_kms::{
    Client,
    error::ProvideErrorMetadata as _,
    primitives::{Blob, DateTime},
    types::{
        AlgorithmSpec, ExpirationModelType, KeySpec, KeyState, KeyUsageType, MacAlgorithmSpec,
        OriginType, WrappingKeySpec,
    },
};
use common::{admin, decrypt, encrypt, sh_block};
use ekms_tests::{Appliance, have};

/// The address the walkthroughs are written for (`ekms serve --sim`'s default).
const DOC_ENDPOINT: &str = "http://127.0.0.1:8400";

#[tokio::test(flavor = "multi_thread")]
async fn import_through_the_aws_cli_boto3_and_aws_sdk_kms() {
    let dir = tempfile::tempdir().unwrap();
    // The walkthroughs run from the directory holding `ekms-data`.
    let app = Appliance::start(&dir.path().join("ekms-data"));
    let (endpoint, access, secret) = (
        app.endpoint.clone(),
        app.access_key.clone(),
        app.secret_key.clone(),
    );
    let work = dir.path().to_path_buf();
    let cli = std::thread::spawn(move || cli_walkthroughs(&work, &endpoint));
    let (endpoint, access_py) = (app.endpoint.clone(), access.clone());
    let boto3 = std::thread::spawn(move || boto3_script(&endpoint, &access_py, &secret));
    sdk_imports(&admin(&app)).await;
    cli.join().unwrap();
    boto3.join().unwrap();
}

/// Runs a walkthrough as a user would (bash, stopping at the first failing command), in `work`
/// against `endpoint`; what it printed.
fn run_walkthrough(work: &Path, endpoint: &str, script: &str) -> String {
    assert_eq!(
        script.matches(DOC_ENDPOINT).count(),
        1,
        "the walkthrough names the appliance once:\n{script}"
    );
    let script = format!(
        "set -euo pipefail\n{}\necho \"WALKTHROUGH-KEY=$KEY\"\n",
        script.replace(DOC_ENDPOINT, endpoint)
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_REGION")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_KMS")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "walkthrough failed:\n{script}\n{text}"
    );
    text
}

/// The key id a walkthrough left in `$KEY`.
fn walkthrough_key(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix("WALKTHROUGH-KEY="))
        .unwrap()
        .to_owned()
}

/// The aws CLI with the data dir's `ekms` profile; its JSON output.
fn aws(work: &Path, endpoint: &str, args: &[&str]) -> serde_json::Value {
    let data = work.join("ekms-data");
    let out = Command::new("aws")
        .args(["--endpoint-url", endpoint, "--output", "json", "kms"])
        .args(args)
        .env("AWS_SHARED_CREDENTIALS_FILE", data.join("credentials"))
        .env("AWS_CONFIG_FILE", data.join("config"))
        .env("AWS_PROFILE", "ekms")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws kms {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn cli_walkthroughs(work: &Path, endpoint: &str) {
    if !have("aws", &["--version"]) || !have("openssl", &["version"]) || !have("jq", &["--version"])
    {
        return;
    }
    // The README's: symmetric material, RSAES_OAEP_SHA_256 with openssl pkeyutl.
    let out = run_walkthrough(
        work,
        endpoint,
        &sh_block("README.md", "**Imported key material**"),
    );
    assert!(out.lines().any(|l| l == "Enabled"), "{out}");
    let key = walkthrough_key(&out);
    let d = aws(work, endpoint, &["describe-key", "--key-id", &key]);
    assert_eq!(d["KeyMetadata"]["Origin"], "EXTERNAL");
    assert_eq!(
        d["KeyMetadata"]["ExpirationModel"],
        "KEY_MATERIAL_DOES_NOT_EXPIRE"
    );
    let plain = work.join("plain.bin");
    std::fs::write(&plain, b"under imported material").unwrap();
    let blob = aws(
        work,
        endpoint,
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &format!("fileb://{}", plain.display()),
            "--query",
            "CiphertextBlob",
        ],
    );
    let ct = work.join("ct.bin");
    std::fs::write(&ct, b64d(blob.as_str().unwrap())).unwrap();
    // The material is the walkthrough's: deleted, then only that file imports again.
    aws(
        work,
        endpoint,
        &["delete-imported-key-material", "--key-id", &key],
    );
    let state = aws(
        work,
        endpoint,
        &[
            "describe-key",
            "--key-id",
            &key,
            "--query",
            "KeyMetadata.KeyState",
        ],
    );
    assert_eq!(state, "PendingImport");
    let again = sh_block("README.md", "**Imported key material**");
    let again = again
        .lines()
        .filter(|l| !l.starts_with("KEY=") && !l.starts_with("openssl rand"))
        .collect::<Vec<_>>()
        .join("\n");
    run_walkthrough(work, endpoint, &format!("KEY={key}\n{again}"));
    let dec = aws(
        work,
        endpoint,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", ct.display()),
            "--query",
            "Plaintext",
        ],
    );
    assert_eq!(b64d(dec.as_str().unwrap()), b"under imported material");

    // docs/importing.md's: an openssl P-256 key by RSA_AES_KEY_WRAP_SHA_256 (openssl enc
    // -id-aes256-wrap-pad); its last command, openssl's verification of a KMS signature, passes.
    let out = run_walkthrough(
        work,
        endpoint,
        &sh_block("docs/importing.md", "RSA_AES_KEY_WRAP_SHA_256"),
    );
    assert!(out.contains("Verified OK"), "{out}");
    let key = walkthrough_key(&out);
    let d = aws(work, endpoint, &["describe-key", "--key-id", &key]);
    assert_eq!(d["KeyMetadata"]["KeySpec"], "ECC_NIST_P256");
    assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
}

fn boto3_script(endpoint: &str, access: &str, secret: &str) {
    if !have("python3", &["-c", "import boto3, cryptography"]) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join("import_material.py");
    let out = Command::new("python3")
        .arg(script)
        .args([endpoint, access, secret])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import_material.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// RSAES-OAEP with SHA-256 (and MGF1 with SHA-256) under the DER wrapping public key, by
/// RustCrypto's `rsa`: not the library the enclave unwraps with.
fn oaep_sha256(public_der: &[u8], plain: &[u8]) -> Vec<u8> {
    use rsa::pkcs8::DecodePublicKey as _;
    let public = rsa::RsaPublicKey::from_public_key_der(public_der).unwrap();
    public
        .encrypt(
            &mut rand_core::OsRng,
            rsa::Oaep::new::<sha2::Sha256>(),
            plain,
        )
        .unwrap()
}

/// RSA_AES_KEY_WRAP_SHA_256: a fresh AES-256 key by RSAES-OAEP-SHA-256, then the material by
/// AES key wrap with padding (RFC 5649).
fn rsa_aes_key_wrap_sha256(public_der: &[u8], material: &[u8]) -> Vec<u8> {
    use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded as _};
    let mut aes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut aes).unwrap();
    let mut out = oaep_sha256(public_der, &aes);
    let mut wrapped = vec![0u8; material.len() + 16];
    let kek = AesKek::new(&AES_256, &aes).unwrap();
    out.extend_from_slice(kek.wrap_with_padding(material, &mut wrapped).unwrap());
    out
}

/// GetParametersForImport then ImportKeyMaterial of `material`, wrapped by `wrap`.
async fn import(
    kms: &Client,
    key: &str,
    algorithm: AlgorithmSpec,
    spec: WrappingKeySpec,
    material: &[u8],
    valid_to: Option<DateTime>,
) -> aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput {
    let wrap = if algorithm == AlgorithmSpec::RsaesOaepSha256 {
        oaep_sha256
    } else {
        rsa_aes_key_wrap_sha256
    };
    let params = kms
        .get_parameters_for_import()
        .key_id(key)
        .wrapping_algorithm(algorithm)
        .wrapping_key_spec(spec)
        .send()
        .await
        .unwrap();
    // Valid for 24 hours, as AWS documents.
    let valid = params.parameters_valid_to.unwrap().secs() - unix_now();
    assert!((86_400 - 120..=86_400 + 120).contains(&valid), "{valid}");
    let wrapped = wrap(params.public_key.unwrap().as_ref(), material);
    let req = kms
        .import_key_material()
        .key_id(key)
        .import_token(params.import_token.unwrap())
        .encrypted_key_material(Blob::new(wrapped));
    let req = match valid_to {
        Some(t) => req
            .expiration_model(ExpirationModelType::KeyMaterialExpires)
            .valid_to(t),
        None => req.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire),
    };
    req.send().await.unwrap()
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

async fn external_key(kms: &Client, spec: KeySpec, usage: KeyUsageType) -> String {
    let meta = kms
        .create_key()
        .origin(OriginType::External)
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state, Some(KeyState::PendingImport));
    meta.key_id
}

async fn sdk_imports(kms: &Client) {
    // Symmetric, RSAES_OAEP_SHA_256 under an RSA_3072 wrapping key, expiring in 30 days: the
    // expiry reads back as set.
    let key = external_key(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let valid_to = unix_now() + 30 * 86_400;
    let mut material = [0u8; 32];
    aws_lc_rs::rand::fill(&mut material).unwrap();
    let out = import(
        kms,
        &key,
        AlgorithmSpec::RsaesOaepSha256,
        WrappingKeySpec::Rsa3072,
        &material,
        Some(DateTime::from_secs(valid_to)),
    )
    .await;
    assert_eq!(out.key_material_id.as_deref().map(str::len), Some(64));
    let meta = kms
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state, Some(KeyState::Enabled));
    assert_eq!(meta.origin, Some(OriginType::External));
    assert_eq!(
        meta.expiration_model,
        Some(ExpirationModelType::KeyMaterialExpires)
    );
    assert_eq!(meta.valid_to.unwrap().secs(), valid_to);
    let blob = encrypt(kms, &key, b"sdk").await;
    assert_eq!(decrypt(kms, blob).await, b"sdk");

    // HMAC_384 with 48 bytes by RSA_AES_KEY_WRAP_SHA_256: GenerateMac equals aws-lc-rs's HMAC
    // under the same material.
    let mac_key = external_key(kms, KeySpec::Hmac384, KeyUsageType::GenerateVerifyMac).await;
    let mut mac_material = [0u8; 48];
    aws_lc_rs::rand::fill(&mut mac_material).unwrap();
    import(
        kms,
        &mac_key,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        WrappingKeySpec::Rsa2048,
        &mac_material,
        None,
    )
    .await;
    let mac = kms
        .generate_mac()
        .key_id(&mac_key)
        .mac_algorithm(MacAlgorithmSpec::HmacSha384)
        .message(Blob::new(b"message".to_vec()))
        .send()
        .await
        .unwrap()
        .mac
        .unwrap();
    let expected = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA384, &mac_material),
        b"message",
    );
    assert_eq!(mac.as_ref(), expected.as_ref());

    // An import token works only for the key it was issued for.
    let params = kms
        .get_parameters_for_import()
        .key_id(&mac_key)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let other = external_key(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let e = kms
        .import_key_material()
        .key_id(&other)
        .import_token(params.import_token.unwrap())
        .encrypted_key_material(Blob::new(oaep_sha256(
            params.public_key.unwrap().as_ref(),
            &material,
        )))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidImportTokenException"), "{e:?}");
}
