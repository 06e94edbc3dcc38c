//! Signed calls from the operator CLI to the appliance's KMS endpoint: AWS JSON 1.1, signed
//! with `SigV4` by `aws-sigv4`, with the caller's AWS credentials from the environment or a
//! profile (`aws-config`'s providers). The enclave verifies the signature; the host in between
//! learns nothing it could sign with.

use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use aws_credential_types::{Credentials, provider::ProvideCredentials as _};
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};

/// The caller's credentials: the environment's (`AWS_ACCESS_KEY_ID`, ...) unless `profile` is
/// given, else those of the profile (`AWS_PROFILE` or `default` when `None`) in the shared
/// files.
pub async fn credentials(profile: Option<&str>) -> anyhow::Result<Credentials> {
    if profile.is_none()
        && let Ok(c) = aws_config::environment::EnvironmentVariableCredentialsProvider::new()
            .provide_credentials()
            .await
    {
        return Ok(c);
    }
    let mut builder = aws_config::profile::ProfileFileCredentialsProvider::builder();
    if let Some(p) = profile {
        builder = builder.profile_name(p);
    }
    builder
        .build()
        .provide_credentials()
        .await
        .map_err(|e| anyhow!("no AWS credentials (environment or profile): {e}"))
}

/// Calls `op` (`TrentService.<op>`) on the appliance at `endpoint` with `body`, signed for
/// `region`; the JSON answer, or the appliance's error (`Type: message`).
pub async fn call(
    endpoint: &str,
    region: &str,
    op: &str,
    body: &serde_json::Value,
    creds: Credentials,
) -> anyhow::Result<serde_json::Value> {
    let host = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// endpoints are supported (got {endpoint})"))?
        .trim_end_matches('/')
        .to_owned();
    let body = body.to_string();
    let target = format!("TrentService.{op}");
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .context("signing parameters")?
        .into();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let signable = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .context("signing the request")?;
    let (instructions, _) = sign(signable, &params)
        .context("signing the request")?
        .into_parts();
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/")
        .body(body.into_bytes())?;
    for (k, v) in headers {
        req.headers_mut().insert(k, v.parse()?);
    }
    instructions.apply_to_request_http1x(&mut req);
    let (status, bytes) = crate::http_client::send(&format!("http://{host}"), req).await?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        return Err(anyhow!("{}: {}", field("__type"), field("message")));
    }
    serde_json::from_slice(&bytes).context("the appliance's answer is not JSON")
}

/// Runs an operator command's future on a current-thread runtime: exit 0, or its error after
/// `label` on stderr and exit 1.
pub fn run_command(
    label: &str,
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{label}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
