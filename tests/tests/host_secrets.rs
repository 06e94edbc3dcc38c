//! "The host knows no secret" for the genesis admin credential: a ceremony-mode appliance
//! (`--no-dev-custodian`), `ekms domain init --admin-key` with a separate admin key, the
//! resulting credential used with the SDK, and proof that the host never held the secret: no
//! file in its data dir, nothing it printed, and no byte of the `ekms serve` process's memory
//! contains it (after the init and after KMS calls). Also the saved-sealed path: without the
//! private key the CLI saves the sealed credential, and `ekms credential open` opens it later.
//!
//! The memory scan shows no copy lingers; it cannot show that a host which decrypted and then
//! wiped a secret never held it (the dev custodian's host, which zeroizes, also passes it). That
//! the enclave's answer to the host holds the secret in no form is the enclave's unit test
//! `the_admin_secret_leaves_only_sealed_to_the_admin_key_and_attested`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use aws_sdk_kms::primitives::Blob;
use common::{client, ekms, keygen, text};
use ekms_tests::{Appliance, read_credentials};

/// A raw `POST` with a JSON body; returns the status and the body.
fn post(endpoint: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    use std::io::Write as _;
    let hostport = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: {hostport}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let ty = entry.file_type().unwrap();
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file()
                && std::fs::read(entry.path()).is_ok_and(|b| contains(&b, needle))
            {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Scans every readable mapping of process `pid` for `needle`; returns the bytes scanned and
/// whether it was found. (Needs ptrace access: our own child, or root.)
fn memory_contains(pid: u32, needle: &[u8]) -> (usize, bool) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0;
    for line in maps.lines() {
        let mut words = line.split_whitespace();
        let (range, perms) = (words.next().unwrap(), words.next().unwrap());
        let name = line.split_whitespace().nth(5).unwrap_or_default();
        if !perms.starts_with('r') || name == "[vvar]" || name == "[vsyscall]" {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let Ok(len) = usize::try_from(end - start) else {
            continue;
        };
        let mut buf = vec![0u8; len];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scanned += len;
        if contains(&buf, needle) {
            return (scanned, true);
        }
    }
    (scanned, false)
}

fn assert_host_never_saw(app: &Appliance, akid: &str, secret: &str, when: &str) {
    let files = files_containing(&app.data_dir, secret.as_bytes());
    assert!(files.is_empty(), "{when}: the secret is in {files:?}");
    assert!(
        !contains(&app.output(), secret.as_bytes()),
        "{when}: the host printed the secret"
    );
    let pid = app.pid().unwrap();
    let (scanned, found) = memory_contains(pid, secret.as_bytes());
    assert!(scanned > 1 << 20, "{when}: scanned only {scanned} bytes");
    assert!(!found, "{when}: the secret is in the memory of ekms serve");
    // The scan does find what the host does hold (the access key id it stored).
    assert!(
        memory_contains(pid, akid.as_bytes()).1,
        "{when}: the scan does not even find the access key id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_genesis_secret_reaches_the_admin_and_never_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let app = Appliance::start_with(&data, &["--no-dev-custodian"]);
    assert!(!data.join("credentials").exists());
    let alice = keygen(dir.path(), "alice");
    let admin = keygen(dir.path(), "admin");
    let creds = out.join("admin.credentials");
    let root = data.join("simulation-root.pem");
    // The appliance refuses an init that names no admin key or nonce, or a bad one, and makes
    // no domain.
    let alice_pub = std::fs::read_to_string(format!("{}.pub", alice.display())).unwrap();
    for body in [
        serde_json::json!({ "custodians": [alice_pub], "threshold": 1 }),
        serde_json::json!({
            "custodians": [alice_pub], "threshold": 1, "admin_key": alice_pub, "nonce": ""
        }),
        serde_json::json!({
            "custodians": [alice_pub], "threshold": 1, "admin_key": "{}", "nonce": "00ff"
        }),
    ] {
        let (status, answer) = post(&app.endpoint, "/ekms/domain/init", &body);
        assert_eq!(status, 400, "{answer}");
    }
    let o = ekms(&["domain", "status", "--endpoint", &app.endpoint]);
    assert!(text(&o).contains("uninitialised"), "{}", text(&o));
    let o = ekms(&[
        "domain",
        "init",
        "--endpoint",
        &app.endpoint,
        "--custodian",
        &format!("{}.pub", alice.display()),
        "--threshold",
        "1",
        "--out-dir",
        out.to_str().unwrap(),
        "--admin-key",
        &format!("{}.pub", admin.display()),
        "--admin-key-private",
        &format!("{}.key", admin.display()),
        "--credentials-out",
        creds.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--allow-simulation-root",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("verified: "), "{}", text(&o));
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&creds).unwrap().permissions())
            & 0o777,
        0o600
    );
    let config = std::fs::read_to_string(out.join("admin.credentials.config")).unwrap();
    assert!(config.contains("region = us-east-1"), "{config}");
    let (akid, secret) = read_credentials(&creds);
    assert_eq!(secret.len(), 40);
    assert!(!text(&o).contains(&secret), "the CLI printed the secret");
    assert_host_never_saw(&app, &akid, &secret, "after domain init");

    let kms = client(&app, &akid, &secret);
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let blob = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"for the admin only".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"for the admin only");
    assert_host_never_saw(&app, &akid, &secret, "after KMS calls");
    // A wrong secret for the same access key id is refused: the enclave checks signatures.
    let wrong = client(&app, &akid, &"x".repeat(40));
    assert!(wrong.list_keys().send().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_private_key_the_credential_is_saved_sealed_and_opened_later() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let app = Appliance::start_with(&data, &["--no-dev-custodian"]);
    let alice = keygen(dir.path(), "alice");
    let admin = keygen(dir.path(), "admin");
    // The admin's public key alone, elsewhere: no .key beside it.
    let public = dir.path().join("elsewhere.pub");
    std::fs::copy(format!("{}.pub", admin.display()), &public).unwrap();
    let root = data.join("simulation-root.pem");
    let o = ekms(&[
        "domain",
        "init",
        "--endpoint",
        &app.endpoint,
        "--custodian",
        &format!("{}.pub", alice.display()),
        "--threshold",
        "1",
        "--out-dir",
        out.to_str().unwrap(),
        "--admin-key",
        public.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--allow-simulation-root",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let sealed = out.join("admin.credential.json");
    assert!(text(&o).contains("credential open"), "{}", text(&o));
    assert!(!out.join("credentials").exists());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sealed).unwrap()).unwrap();
    let domain = saved["domain"].as_str().unwrap().to_owned();

    let open = |key: &Path, extra: &[&str]| {
        let mut args = vec![
            "credential",
            "open",
            "--file",
            sealed.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--allow-simulation-root",
        ];
        args.extend_from_slice(extra);
        ekms(&args)
    };
    // Another key, another pinned domain, or the AWS root: refused, nothing written.
    let o = open(Path::new(&format!("{}.key", alice.display())), &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = open(
        Path::new(&format!("{}.key", admin.display())),
        &["--domain", "0123456789abcdef"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("pinned"), "{}", text(&o));
    let o = ekms(&[
        "credential",
        "open",
        "--file",
        sealed.to_str().unwrap(),
        "--key",
        &format!("{}.key", admin.display()),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!out.join("credentials").exists());
    // A tampered file: refused.
    let mut forged = saved.clone();
    let akid = saved["access_key_id"].as_str().unwrap();
    // Another last character (one that differs from the real one).
    let last = if akid.ends_with('X') { 'Y' } else { 'X' };
    forged["access_key_id"] = serde_json::json!(format!("{}{last}", &akid[..akid.len() - 1]));
    let forged_path = dir.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let o = ekms(&[
        "credential",
        "open",
        "--file",
        forged_path.to_str().unwrap(),
        "--key",
        &format!("{}.key", admin.display()),
        "--root",
        root.to_str().unwrap(),
        "--allow-simulation-root",
    ]);
    assert!(!o.status.success(), "{}", text(&o));

    let o = open(
        Path::new(&format!("{}.key", admin.display())),
        &["--domain", &domain],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (akid, secret) = read_credentials(&out.join("credentials"));
    let config = std::fs::read_to_string(out.join("config")).unwrap();
    assert!(
        config.contains(&format!("endpoint_url = {}", app.endpoint)),
        "{config}"
    );
    let kms = client(&app, &akid, &secret);
    kms.list_keys().send().await.unwrap();
    assert!(files_containing(&data, secret.as_bytes()).is_empty());
}
