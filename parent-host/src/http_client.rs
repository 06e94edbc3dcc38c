//! The operator CLI's HTTP client (plain HTTP/1.1 over hyper): the appliance's `/ekms/...`
//! endpoints for attestation, custody and peer forwarding.

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

/// Largest answer read (attestation documents are about 5 KiB; share lists far less).
const MAX_RESPONSE: usize = 1024 * 1024;

/// An HTTP/1.1 connection to `endpoint` (`http://HOST:PORT`), and its `HOST:PORT`.
async fn connect(
    endpoint: &str,
) -> anyhow::Result<(&str, hyper::client::conn::http1::SendRequest<Full<Bytes>>)> {
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// endpoints are supported (got {endpoint})"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(hostport)
        .await
        .with_context(|| format!("connecting to {hostport}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok((hostport, sender))
}

/// Sends a request and returns the status and body.
pub async fn request(
    endpoint: &str,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let (hostport, mut sender) = connect(endpoint).await?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", hostport);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Sends a prepared request (its headers as given, a `host` header included) and returns the
/// status and body.
pub async fn send(
    endpoint: &str,
    req: http::Request<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let (_, mut sender) = connect(endpoint).await?;
    let (parts, body) = req.into_parts();
    let resp = sender
        .send_request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ))
        .await?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Posts JSON and returns the JSON answer; an error answer (`{"__type","message"}`) becomes an
/// error carrying its message.
pub async fn post_json(
    endpoint: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let (status, bytes) = request(
        endpoint,
        http::Method::POST,
        path,
        Some(body.to_string().into_bytes()),
    )
    .await?;
    json_answer(status, &bytes)
}

/// Gets JSON.
pub async fn get_json(endpoint: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, bytes) = request(endpoint, http::Method::GET, path, None).await?;
    json_answer(status, &bytes)
}

/// The JSON of an answer; an error answer (`{"__type","message"}`) becomes an error carrying
/// its type and message.
pub fn json_answer(status: http::StatusCode, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    let value: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    if !status.is_success() {
        let msg = value
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(serde_json::Value::as_str)
            .map_or_else(
                || String::from_utf8_lossy(bytes).into_owned(),
                str::to_owned,
            );
        bail!("{status}: {msg}");
    }
    value.ok_or_else(|| anyhow!("the appliance's answer is not JSON"))
}

/// Marks a request one appliance forwarded to another (the domain's writer).
pub const FORWARDED: &str = "x-ekms-forwarded";

/// Headers of a hop, not of the request: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
];

/// Forwards a client's KMS request, exactly as signed (its own `host` header included), to
/// the appliance at `endpoint`; returns the status, the `content-type` and `x-amzn-errortype`
/// headers, and the body.
pub async fn forward(
    endpoint: &str,
    req: &ekms_wire::msg::HttpRequest,
) -> anyhow::Result<(u16, Vec<(String, Vec<u8>)>, Vec<u8>)> {
    let (_, mut sender) = connect(endpoint).await?;
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(req.uri.as_str());
    for (name, value) in &req.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name.as_str(), value.as_slice());
        }
    }
    // Unsigned, so the signature still verifies; it stops a forwarding loop between two
    // followers that each think the other is the writer.
    builder = builder.header(FORWARDED, "1");
    let request = builder.body(Full::new(Bytes::from(req.body.clone())))?;
    let resp = sender.send_request(request).await?;
    let status = resp.status().as_u16();
    let headers = ["content-type", "x-amzn-errortype"]
        .iter()
        .filter_map(|h| {
            resp.headers()
                .get(*h)
                .map(|v| ((*h).to_owned(), v.as_bytes().to_vec()))
        })
        .collect();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, headers, body))
}
