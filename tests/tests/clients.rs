//! The unchanged AWS tools: the aws CLI (the README's session) and boto3. In CI they must be
//! installed (`.ci/run` does it); elsewhere a missing tool skips its test with a note.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_push_string
)] // test code

mod common;

use std::{path::Path, process::Command};

use ekms_tests::{Appliance, have};

fn aws(app: &Appliance, args: &[&str]) -> std::process::Output {
    Command::new("aws")
        .arg("--endpoint-url")
        .arg(&app.endpoint)
        .args(["--profile", "ekms", "--output", "json"])
        .args(args)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            app.data_dir.join("credentials"),
        )
        .env("AWS_CONFIG_FILE", app.data_dir.join("config"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "aws failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `aws kms create-key` with `args`: the new key's id and its `KeyMetadata`.
fn create_key(app: &Appliance, args: &[&str]) -> (String, serde_json::Value) {
    let mut all = vec!["kms", "create-key"];
    all.extend_from_slice(args);
    let meta = json(&aws(app, &all))["KeyMetadata"].clone();
    let id = meta["KeyId"].as_str().unwrap().to_owned();
    (id, meta)
}

#[test]
fn the_readme_session_works_with_the_aws_cli() {
    if !have("aws", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let (id, _) = create_key(&app, &["--description", "cli key"]);
    json(&aws(
        &app,
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/app",
            "--target-key-id",
            &id,
        ],
    ));
    let secret = dir.path().join("secret.bin");
    std::fs::write(&secret, b"the secret").unwrap();
    let enc = json(&aws(
        &app,
        &[
            "kms",
            "encrypt",
            "--key-id",
            "alias/app",
            "--plaintext",
            &format!("fileb://{}", secret.display()),
        ],
    ));
    let blob = base64_decode(enc["CiphertextBlob"].as_str().unwrap());
    let ct = dir.path().join("ct.bin");
    std::fs::write(&ct, blob).unwrap();
    let dec = json(&aws(
        &app,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", ct.display()),
        ],
    ));
    assert_eq!(
        base64_decode(dec["Plaintext"].as_str().unwrap()),
        b"the secret"
    );
    let listed = json(&aws(&app, &["kms", "list-aliases"]));
    assert_eq!(listed["Aliases"][0]["AliasName"], "alias/app");
    let d = json(&aws(
        &app,
        &["kms", "describe-key", "--key-id", "alias/app"],
    ));
    assert_eq!(d["KeyMetadata"]["Description"], "cli key");
    json(&aws(&app, &["kms", "disable-key", "--key-id", &id]));
    let out = aws(
        &app,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &id,
            "--plaintext",
            &format!("fileb://{}", secret.display()),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DisabledException"));
    let out = aws(&app, &["kms", "describe-key", "--key-id", "alias/missing"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFoundException"));
    let s = json(&aws(
        &app,
        &[
            "kms",
            "schedule-key-deletion",
            "--key-id",
            &id,
            "--pending-window-in-days",
            "7",
        ],
    ));
    assert_eq!(s["KeyState"], "PendingDeletion");
}

#[test]
fn boto3_session() {
    if !have("python3", &["-c", "import boto3"]) {
        return;
    }
    run_python("boto3_session.py");
}

/// A signing key with the aws CLI, the signature checked by `openssl dgst -verify` against the
/// public key `get-public-key` downloaded.
#[test]
fn aws_cli_signatures_verify_with_openssl() {
    if !have("aws", &["--version"]) || !have("openssl", &["version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let (id, meta) = create_key(
        &app,
        &["--key-spec", "ECC_NIST_P384", "--key-usage", "SIGN_VERIFY"],
    );
    assert_eq!(
        meta["SigningAlgorithms"],
        serde_json::json!(["ECDSA_SHA_384"])
    );
    let msg = dir.path().join("release.txt");
    std::fs::write(&msg, b"release 1.2.3").unwrap();
    let signed = json(&aws(
        &app,
        &[
            "kms",
            "sign",
            "--key-id",
            &id,
            "--signing-algorithm",
            "ECDSA_SHA_384",
            "--message",
            &format!("fileb://{}", msg.display()),
        ],
    ));
    let sig = dir.path().join("release.sig");
    std::fs::write(&sig, base64_decode(signed["Signature"].as_str().unwrap())).unwrap();
    let public = json(&aws(&app, &["kms", "get-public-key", "--key-id", &id]));
    let der = dir.path().join("pub.der");
    std::fs::write(&der, base64_decode(public["PublicKey"].as_str().unwrap())).unwrap();
    let pem = dir.path().join("pub.pem");
    let conv = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(conv.status.success());
    let verify = |file: &Path| {
        Command::new("openssl")
            .args(["dgst", "-sha384", "-verify"])
            .arg(&pem)
            .arg("-signature")
            .arg(&sig)
            .arg(file)
            .output()
            .unwrap()
    };
    let ok = verify(&msg);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let other = dir.path().join("other.txt");
    std::fs::write(&other, b"release 1.2.4").unwrap();
    assert!(!verify(&other).status.success());
    // And the appliance verifies it too.
    let v = json(&aws(
        &app,
        &[
            "kms",
            "verify",
            "--key-id",
            &id,
            "--signing-algorithm",
            "ECDSA_SHA_384",
            "--message",
            &format!("fileb://{}", msg.display()),
            "--signature",
            &format!("fileb://{}", sig.display()),
        ],
    ));
    assert_eq!(v["SignatureValid"], true);
}

/// An ML-DSA key with the aws CLI: a message signed as its external mu (`--message-type
/// EXTERNAL_MU`, mu computed here) verifies over the message itself with RustCrypto's `ml-dsa`.
#[test]
fn aws_cli_signs_an_ml_dsa_external_mu() {
    use ml_dsa::{MlDsa44, VerifyingKey, pkcs8::spki::DecodePublicKey as _};
    if !have("aws", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let (id, _) = create_key(
        &app,
        &["--key-spec", "ML_DSA_44", "--key-usage", "SIGN_VERIFY"],
    );
    let public = json(&aws(&app, &["kms", "get-public-key", "--key-id", &id]));
    let vk = VerifyingKey::<MlDsa44>::from_public_key_der(&base64_decode(
        public["PublicKey"].as_str().unwrap(),
    ))
    .unwrap();
    let message = b"release 2.0.0";
    let mu = dir.path().join("release.mu");
    std::fs::write(&mu, common::ml_dsa_mu(vk.encode().as_slice(), message)).unwrap();
    let signed = json(&aws(
        &app,
        &[
            "kms",
            "sign",
            "--key-id",
            &id,
            "--signing-algorithm",
            "ML_DSA_SHAKE_256",
            "--message-type",
            "EXTERNAL_MU",
            "--message",
            &format!("fileb://{}", mu.display()),
        ],
    ));
    let sig = base64_decode(signed["Signature"].as_str().unwrap());
    let sig = ml_dsa::Signature::<MlDsa44>::try_from(sig.as_slice()).unwrap();
    assert!(vk.verify_with_context(message, b"", &sig));
    assert!(!vk.verify_with_context(b"release 2.0.1", b"", &sig));
}

/// Every key type through boto3, each result checked with Python's `cryptography`.
#[test]
fn boto3_key_types_checked_with_cryptography() {
    if !have("python3", &["-c", "import boto3, cryptography"]) {
        return;
    }
    run_python("key_types.py");
}

/// Rotation through boto3: enable and read back, on demand to the limit, list, decrypt old.
#[test]
fn boto3_rotation() {
    if !have("python3", &["-c", "import boto3"]) {
        return;
    }
    run_python("rotation.py");
}

/// GetKeyLastUsage through boto3: each tracked operation, with boto3's own request id.
#[test]
fn boto3_last_usage() {
    if !have("python3", &["-c", "import boto3"]) {
        return;
    }
    run_python("last_usage.py");
}

/// Runs `tests/py/SCRIPT ENDPOINT ACCESS_KEY SECRET_KEY` against a fresh appliance.
fn run_python(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args([&app.endpoint, &app.access_key, &app.secret_key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Identical state-changing calls from boto3 in the same second: the replay answer is a
/// throttling error, so boto3 re-signs and every call goes through.
#[test]
fn boto3_identical_calls_go_through_by_retrying() {
    if !have("python3", &["-c", "import boto3"]) {
        return;
    }
    run_python("identical_calls.py");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Runs `program args` with only the data dir's profile files: no endpoint flag, no endpoint
/// variable, unless `extra_env` sets one.
fn with_profile_only(
    app: &Appliance,
    config: &Path,
    program: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            app.data_dir.join("credentials"),
        )
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_PROFILE", "ekms");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn the_generated_profile_names_the_endpoint_and_aws_endpoint_url_kms_works_too() {
    if !have("aws", &["--version"]) || !have("python3", &["-c", "import boto3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let config = app.data_dir.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("endpoint_url = {}", app.endpoint)),
        "{text}"
    );
    // The profile alone: the aws CLI and boto3 find the appliance.
    let out = with_profile_only(&app, &config, "aws", &["kms", "list-keys"], &[]);
    json(&out);
    let script = "import boto3; print(len(boto3.client('kms').list_keys()['Keys']))";
    let out = with_profile_only(&app, &config, "python3", &["-c", script], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A profile without endpoint_url, and AWS_ENDPOINT_URL_KMS instead.
    let bare = dir.path().join("bare-config");
    std::fs::write(&bare, "[profile ekms]\nregion = us-east-1\n").unwrap();
    let env = [("AWS_ENDPOINT_URL_KMS", app.endpoint.as_str())];
    json(&with_profile_only(
        &app,
        &bare,
        "aws",
        &["kms", "list-keys"],
        &env,
    ));
    let out = with_profile_only(&app, &bare, "python3", &["-c", script], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
