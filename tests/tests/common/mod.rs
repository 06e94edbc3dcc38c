//! What the end-to-end test files share: an `aws-sdk-kms` client for a running appliance.
#![allow(dead_code)] // each test file uses a part of it

use aws_sdk_kms::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use ekms_tests::{Appliance, bin_dir};

/// An SDK client for `app` with the given credentials.
pub(crate) fn client(app: &Appliance, access: &str, secret: &str) -> Client {
    client_in(app, "us-east-1", (access, secret))
}

/// An SDK client for `app` in `region` with the given credentials.
pub(crate) fn client_in(app: &Appliance, region: &str, (access, secret): (&str, &str)) -> Client {
    Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(&app.endpoint)
            .credentials_provider(Credentials::new(access, secret, None, None, "test"))
            .build(),
    )
}

/// An SDK client with the appliance's admin credential.
pub(crate) fn admin(app: &Appliance) -> Client {
    client(app, &app.access_key, &app.secret_key)
}

/// Creates a symmetric encryption key; its id.
pub(crate) async fn new_key(kms: &Client) -> String {
    kms.create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

/// Encrypts `plain` under `key`; the ciphertext blob.
pub(crate) async fn encrypt(
    kms: &Client,
    key: &str,
    plain: &[u8],
) -> aws_sdk_kms::primitives::Blob {
    kms.encrypt()
        .key_id(key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(plain.to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
}

/// Decrypts `blob`; the plaintext.
pub(crate) async fn decrypt(kms: &Client, blob: aws_sdk_kms::primitives::Blob) -> Vec<u8> {
    kms.decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap()
        .into_inner()
}

/// The enclave of `app` reached directly on the vsock mock, as a hostile host can.
pub(crate) fn enclave_of(app: &Appliance, cid: u32) -> ekms_parent_host::client::EnclaveClient {
    ekms_parent_host::client::EnclaveClient::new(
        ekms_wire::SocketAddress::Mock {
            dir: app.data_dir.join("run"),
            cid,
            port: ekms_wire::transport::DEFAULT_ENCLAVE_PORT,
        },
        1,
    )
}

/// A KMS request signed the way the SDKs sign it, as the host relays it to the enclave.
pub(crate) fn signed(
    app: &Appliance,
    op: &str,
    body: &serde_json::Value,
) -> ekms_wire::msg::HttpRequest {
    use aws_sigv4::{
        http_request::{SignableBody, SignableRequest, SigningSettings, sign},
        sign::v4,
    };
    let creds = Credentials::new(&app.access_key, &app.secret_key, None, None, "test");
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = app.endpoint.trim_start_matches("http://").to_owned();
    let target = format!("TrentService.{op}");
    let body = body.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let signable = SignableRequest::new(
        "POST",
        format!("{}/", app.endpoint),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/")
        .body(())
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    instructions.apply_to_request_http1x(&mut req);
    ekms_wire::msg::HttpRequest {
        method: "POST".into(),
        uri: "/".into(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    serde_bytes::ByteBuf::from(v.as_bytes().to_vec()),
                )
            })
            .collect(),
        body: body.into_bytes(),
    }
}

/// Runs the `ekms` operator binary.
pub(crate) fn ekms(args: &[&str]) -> Output {
    Command::new(bin_dir().join("ekms"))
        .args(args)
        .output()
        .expect("run ekms")
}

/// What a command printed, stdout then stderr.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ekms custodian keygen --out DIR/NAME`; returns the base path (NAME.key, NAME.pub).
pub(crate) fn keygen(dir: &Path, name: &str) -> PathBuf {
    let base = dir.join(name);
    let o = ekms(&["custodian", "keygen", "--out", base.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    base
}

/// The simulation policy a custodian pins: PCR0 = SHA-384 of the enclave executable.
pub(crate) fn policy_for(exe: &Path, out: &Path) {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &std::fs::read(exe).unwrap());
    let hex = digest.as_ref().iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    std::fs::write(out, format!("{{\"PCR0\": \"{hex}\"}}")).unwrap();
}

/// The appliance's simulation root certificate.
pub(crate) fn sim_root(app: &Appliance) -> String {
    app.data_dir
        .join("simulation-root.pem")
        .display()
        .to_string()
}

/// The arguments of `ekms custodian unseal` against a simulated appliance.
pub(crate) fn unseal_args(
    app: &Appliance,
    base: &Path,
    share: &Path,
    policy: &Path,
) -> Vec<String> {
    vec![
        "custodian".into(),
        "unseal".into(),
        "--share".into(),
        share.display().to_string(),
        "--key".into(),
        format!("{}.key", base.display()),
        "--policy".into(),
        policy.display().to_string(),
        "--endpoint".into(),
        app.endpoint.clone(),
        "--root".into(),
        sim_root(app),
        "--allow-simulation-root".into(),
    ]
}

/// `ekms custodian unseal` with custodian `base`'s share and key.
pub(crate) fn unseal(app: &Appliance, base: &Path, share: &Path, policy: &Path) -> Output {
    let args = unseal_args(app, base, share, policy);
    ekms(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs `ekms principal ARGS…` against `app` as its admin (the data dir's `ekms` profile).
pub(crate) fn principal(app: &Appliance, args: &[&str]) -> Output {
    let mut all = vec!["principal"];
    all.extend_from_slice(args);
    ekms_admin(app, &all)
}

/// Runs `ekms ARGS…` (a command that signs calls: `principal`, `xks`) against `app` as its
/// admin (the data dir's `ekms` profile).
pub(crate) fn ekms_admin(app: &Appliance, args: &[&str]) -> Output {
    Command::new(bin_dir().join("ekms"))
        .args(args)
        .args(["--endpoint", &app.endpoint])
        .arg("--data-dir")
        .arg(&app.data_dir)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            app.data_dir.join("credentials"),
        )
        .env("AWS_CONFIG_FILE", app.data_dir.join("config"))
        .env("AWS_PROFILE", "ekms")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap()
}

/// The first ```sh block after `after` in the repository file `file`.
pub(crate) fn sh_block(file: &str, after: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {file}"));
    let rest = &text[from..];
    let start = rest.find("```sh\n").unwrap() + "```sh\n".len();
    let len = rest[start..].find("```").unwrap();
    rest[start..start + len].to_owned()
}

/// ML-DSA's message representative for AWS's `EXTERNAL_MU`, computed independently of the
/// appliance: mu = SHAKE256(SHAKE256(pk, 64) || 0x00 || 0x00 || message, 64) for the raw public
/// key `pk` and an empty context (FIPS 204 Algorithms 2 and 7).
pub(crate) fn ml_dsa_mu(pk: &[u8], message: &[u8]) -> [u8; 64] {
    use shake::{ExtendableOutput as _, Update as _};
    let mut tr = [0u8; 64];
    shake::Shake256::default()
        .chain(pk)
        .finalize_xof_into(&mut tr);
    let mut mu = [0u8; 64];
    shake::Shake256::default()
        .chain(tr)
        .chain([0, 0])
        .chain(message)
        .finalize_xof_into(&mut mu);
    mu
}
