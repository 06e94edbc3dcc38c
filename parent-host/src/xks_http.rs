//! The XKS proxy API's HTTP edge (AWS KMS External Key Store, XKS Proxy API spec v1.0): the
//! answers the host may give without a secret (404 for a path of another shape, by the parser
//! the enclave uses too, `ekms_wire::xks::parse_path`; 405 for another method; 400 for an
//! oversized body). Everything else
//! goes to the enclave, whose answer (status and JSON body) is sent back as it is.
//!
//! It must never decide who may call or what a key may do, and never logs a body (an encrypt
//! request and a decrypt answer hold plaintext).

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::Response,
};
use ekms_wire::msg::HttpRequest;

use crate::relay::Relay;

/// Largest XKS request body accepted. The spec's largest request, a 4,300-byte plaintext in
/// base64 with an encryption context and metadata, is far below it.
pub const MAX_XKS_BODY: usize = 64 * 1024;

const JSON: &str = "application/json";

/// The router of the XKS listener: every request goes to [`xks`].
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new().fallback(xks).with_state(relay)
}

/// An answer in the spec's error shape, `{"errorName", "errorMessage"}`.
#[must_use]
pub fn error_response(status: StatusCode, name: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorName": name, "errorMessage": message }).to_string();
    json_response(status, body.into_bytes())
}

/// How the edge words its refusals on the XKS listener (the spec's error shape). Over the
/// connection cap or the body budget: 503 with `ThrottlingException`, the spec's name for
/// "slow down" (the spec gives it status 429; every listener's cap answers 503, the status that
/// says the server, not this caller's rate, is the limit, and that clients retry).
#[must_use]
pub fn edge_shape() -> crate::edge::Shape {
    crate::edge::Shape {
        busy: || {
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ThrottlingException",
                "The proxy is at its connection or request memory limit; retry the request.",
            )
        },
        too_large: |max| {
            error_response(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("The request body exceeds the limit of {max} bytes."),
            )
        },
        too_slow: |t| {
            error_response(
                StatusCode::REQUEST_TIMEOUT,
                "ValidationException",
                &format!(
                    "The request body did not arrive within {} s.",
                    t.as_secs_f64()
                ),
            )
        },
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

#[tracing::instrument(skip_all)]
async fn xks(State(relay): State<Arc<Relay>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if ekms_wire::xks::parse_path(parts.uri.path()).is_none() {
        return error_response(
            StatusCode::NOT_FOUND,
            "InvalidUriPathException",
            "The request path is not /{prefix}/kms/xks/v1/health or \
             /{prefix}/kms/xks/v1/keys/{keyId}/{metadata|encrypt|decrypt}.",
        );
    }
    if parts.method != Method::POST {
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedOperationException",
            "The XKS proxy API accepts POST only.",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let Ok(body) = to_bytes(body, MAX_XKS_BODY).await else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            &format!("The request body exceeds the limit of {MAX_XKS_BODY} bytes."),
        );
    };
    let http = HttpRequest {
        method: parts.method.as_str().to_owned(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
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
        // The edge's buffer, without a copy.
        body: Vec::from(body),
    };
    let (status, body) = relay.xks(http).await;
    if let Ok(status) = StatusCode::from_u16(status) {
        json_response(status, body)
    } else {
        tracing::error!(
            status,
            "the enclave answered an XKS call with no HTTP status"
        );
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalException",
            "An internal error occurred; retry the request.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_have_the_spec_shape() {
        let r = error_response(StatusCode::NOT_FOUND, "InvalidUriPathException", "no");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[header::CONTENT_TYPE], JSON);
        let body = to_bytes(r.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errorName": "InvalidUriPathException", "errorMessage": "no"})
        );
    }
}
