//! The HTTP edge: AWS JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`), a body size
//! limit, and the one place where enclave error codes become AWS's `{"__type","message"}` with
//! the `X-Amzn-ErrorType` header.

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use ekms_wire::{
    msg::{EnclaveResponse, HostRequest, HttpRequest, KmsErrorCode},
    plan::AWS_KMS_OPERATIONS,
};

use crate::{
    error::http_status,
    relay::{Answer, Relay},
};

/// Largest request body accepted (KMS's largest members, a 32 KiB policy or a 6 KiB
/// ciphertext, fit with room to spare).
pub const MAX_BODY: usize = 256 * 1024;
const JSON: &str = "application/x-amz-json-1.1";

/// The router.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/", post(kms))
        .route("/health", get(health))
        .route("/ekms/attestation", get(attestation))
        .fallback(fallback)
        .with_state(relay)
}

/// Builds an AWS error response.
#[must_use]
pub fn error_response(code: KmsErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(http_status(code)).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({ "__type": code.name(), "message": message }).to_string();
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    if let Ok(v) = HeaderValue::from_str(code.name()) {
        h.insert("x-amzn-errortype", v);
    }
    add_request_id(h);
    resp
}

fn add_request_id(h: &mut axum::http::HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::from_u128(rand_u128()).to_string()) {
        h.insert("x-amzn-requestid", v);
    }
}

fn rand_u128() -> u128 {
    // A request id needs uniqueness, not secrecy: time and a counter suffice.
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    t ^ (u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 64)
}

/// The access key id named in a SigV4 `Authorization` header, for fetching its sealed record.
/// (The enclave verifies everything; this is only a lookup key.)
#[must_use]
pub fn access_key_id(authorization: &str) -> Option<&str> {
    let rest = authorization.split("Credential=").nth(1)?;
    rest.split('/')
        .next()
        .filter(|s| !s.is_empty() && s.len() <= 128)
}

#[tracing::instrument(skip_all)]
async fn kms(State(relay): State<Arc<Relay>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("TrentService."))
        .map(str::to_owned);
    let Some(op) = op.filter(|o| AWS_KMS_OPERATIONS.contains(&o.as_str())) else {
        return error_response(KmsErrorCode::UnknownOperationException, "");
    };
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return error_response(
            KmsErrorCode::ValidationException,
            &format!("Request body exceeds the limit of {MAX_BODY} bytes."),
        );
    };
    let akid = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(access_key_id)
        .map(str::to_owned);
    let http = HttpRequest {
        method: parts.method.as_str().to_owned(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    serde_bytes::ByteBuf::from(v.as_bytes().to_vec()),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    match relay.kms(&op, http, akid.as_deref()).await {
        Answer::Ok(body) => {
            let mut resp = Response::new(Body::from(body));
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            add_request_id(h);
            resp
        }
        Answer::Err(code, message) => error_response(code, &message),
    }
}

async fn health(State(relay): State<Arc<Relay>>) -> Response {
    match relay.enclave().call(&HostRequest::Status).await {
        Ok(EnclaveResponse::Status(s)) => {
            if s.genesis.is_some() {
                tracing::error!(
                    "the enclave offered a new genesis credential outside startup; ignored"
                );
            }
            let body = serde_json::json!({
                "status": "ok",
                "domain_fingerprint": s.domain_fingerprint,
                "dev_custody": s.dev_custody,
            });
            (StatusCode::OK, body.to_string()).into_response()
        }
        _ => error_response(
            KmsErrorCode::KMSInternalException,
            "The key enclave is unavailable; retry the request.",
        ),
    }
}

/// `GET /ekms/attestation?nonce=HEX`: a fresh attestation document from the enclave, bound to
/// the caller's nonce (raw COSE_Sign1 bytes, `application/cbor`). Public: it proves, it grants
/// nothing.
async fn attestation(State(relay): State<Arc<Relay>>, req: Request) -> Response {
    let nonce = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("nonce="))
        .and_then(|h| hex::decode(h).ok());
    let Some(nonce) = nonce.filter(|n| !n.is_empty() && n.len() <= 512) else {
        return error_response(
            KmsErrorCode::ValidationException,
            "nonce must be 1 to 512 bytes of hex",
        );
    };
    match relay.enclave().call(&HostRequest::Attest { nonce }).await {
        Ok(EnclaveResponse::Attestation { document }) => {
            let mut resp = Response::new(Body::from(document));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/cbor"),
            );
            resp
        }
        Ok(EnclaveResponse::Fault(ekms_wire::msg::Fault::BadInput)) => error_response(
            KmsErrorCode::ValidationException,
            "nonce must be 1 to 512 bytes of hex",
        ),
        _ => error_response(
            KmsErrorCode::KMSInternalException,
            "The key enclave is unavailable; retry the request.",
        ),
    }
}

async fn fallback() -> Response {
    error_response(KmsErrorCode::UnknownOperationException, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_is_read_from_the_credential_scope() {
        let h = "AWS4-HMAC-SHA256 Credential=EKMSABC/20261122/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(access_key_id(h), Some("EKMSABC"));
        assert_eq!(access_key_id("Bearer x"), None);
        assert_eq!(access_key_id("Credential=/x"), None);
    }

    #[test]
    fn errors_have_the_aws_shape() {
        let r = error_response(KmsErrorCode::NotFoundException, "nope");
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["x-amzn-errortype"], "NotFoundException");
        assert_eq!(r.headers()[header::CONTENT_TYPE], JSON);
        let r = error_response(KmsErrorCode::KMSInternalException, "retry");
        assert_eq!(r.status(), 500);
    }
}
