//! STS on the KMS endpoint, at the HTTP edge: an AWS Query request (`POST /`, form body, no
//! `X-Amz-Target`) goes to the enclave like a KMS call, which verifies it for service `sts` and
//! answers `GetCallerIdentity` in STS's XML; here its errors become STS's XML error shape.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use ekms_wire::{
    msg::KmsErrorCode,
    sts::{NS, escape},
};

/// Whether a request to `/` is an STS (AWS Query) request rather than a KMS one.
#[must_use]
pub fn is_sts(headers: &HeaderMap) -> bool {
    !headers.contains_key("x-amz-target")
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

/// STS's code, HTTP status and error type for an enclave error code.
fn sts_code(code: KmsErrorCode) -> (&'static str, u16, &'static str) {
    match code {
        KmsErrorCode::UnrecognizedClientException => ("InvalidClientTokenId", 403, "Sender"),
        KmsErrorCode::InvalidSignatureException => ("SignatureDoesNotMatch", 403, "Sender"),
        KmsErrorCode::IncompleteSignatureException => ("IncompleteSignature", 400, "Sender"),
        KmsErrorCode::MissingAuthenticationTokenException => {
            ("MissingAuthenticationToken", 403, "Sender")
        }
        KmsErrorCode::UnsupportedOperationException | KmsErrorCode::UnknownOperationException => {
            ("InvalidAction", 400, "Sender")
        }
        KmsErrorCode::AccessDeniedException => ("AccessDenied", 403, "Sender"),
        KmsErrorCode::ThrottlingException => ("Throttling", 400, "Sender"),
        KmsErrorCode::ValidationException | KmsErrorCode::SerializationException => {
            ("ValidationError", 400, "Sender")
        }
        _ => ("InternalFailure", 500, "Receiver"),
    }
}

fn xml(status: StatusCode, body: impl Into<axum::body::Body>, request_id: &str) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// STS's XML error response.
#[must_use]
pub fn error_response(code: KmsErrorCode, message: &str, request_id: &str) -> Response {
    let (code, status, kind) = sts_code(code);
    let body = format!(
        "<ErrorResponse xmlns=\"{NS}\">\n  <Error>\n    <Type>{kind}</Type>\n    \
         <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
         <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        escape(message)
    );
    xml(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body,
        request_id,
    )
}

/// STS's XML answer (made by the enclave).
#[must_use]
pub fn ok_response(body: Vec<u8>, request_id: &str) -> Response {
    xml(StatusCode::OK, body, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_requests_are_told_from_kms_ones_and_errors_take_stss_shape() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert!(is_sts(&h));
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.ListKeys"),
        );
        assert!(!is_sts(&h));
        let r = error_response(KmsErrorCode::UnrecognizedClientException, "a<b", "rid");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/xml");
    }
}
