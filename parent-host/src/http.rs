//! The HTTP edge: AWS JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`), a body size
//! limit, and the one place where enclave error codes become AWS's `{"__type","message"}` with
//! the `X-Amzn-ErrorType` header.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{ConnectInfo, FromRef, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use ekms_wire::msg::{CustodyState, EnclaveResponse, HostRequest, HttpRequest, KmsErrorCode};
use tracing::Instrument as _;

use crate::{
    custody::{Custody, CustodyError},
    error::http_status,
    relay::{Answer, Relay},
};

/// Largest request body accepted: KMS's largest member, a `Recipient`'s attestation document of
/// up to 262,144 bytes (349,528 in base64), fits with room for the rest of the request.
pub const MAX_BODY: usize = 384 * 1024;
const JSON: &str = "application/x-amz-json-1.1";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The KMS relay.
    pub relay: Arc<Relay>,
    /// The custody driver.
    pub custody: Arc<Custody>,
}

impl FromRef<AppState> for Arc<Relay> {
    fn from_ref(s: &AppState) -> Self {
        Arc::clone(&s.relay)
    }
}

impl FromRef<AppState> for Arc<Custody> {
    fn from_ref(s: &AppState) -> Self {
        Arc::clone(&s.custody)
    }
}

/// The router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the domain
/// administration endpoints answer loopback callers only.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(kms))
        .route("/health", get(health))
        .route("/ekms/attestation", get(attestation))
        .route("/ekms/custody", get(custody_status))
        .route("/ekms/custody/share", post(custody_share))
        .route("/ekms/domain/init", post(domain_init))
        .route("/ekms/domain/rotate", post(domain_rotate))
        .route("/ekms/peer/challenge", post(peer_challenge))
        .route("/ekms/peer/grant", post(peer_grant))
        .route("/ekms/witness", post(witness))
        .route("/ekms/audit/head", get(audit_head))
        .fallback(fallback)
        .with_state(state)
}

/// Builds an AWS error response.
#[must_use]
pub fn error_response(code: KmsErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(http_status(code)).unwrap_or(StatusCode::BAD_REQUEST);
    named_error(status, code.name(), message)
}

/// An AWS error response with any `__type` (the edge's, which the enclave never answers).
fn named_error(status: StatusCode, name: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": name, "message": message }).to_string();
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert("x-amzn-errortype", v);
    }
    add_request_id(h);
    resp
}

/// How the edge words its refusals on this listener. Over the connection cap or the body
/// budget: 503 with `ThrottlingException`, the code AWS KMS gives a client that should back
/// off and retry, which every AWS SDK's retry strategy recognises as throttling (by code, and
/// by status 503 as transient), so it retries with backoff instead of failing at once.
#[must_use]
pub fn edge_shape() -> crate::edge::Shape {
    crate::edge::Shape {
        busy: || {
            named_error(
                StatusCode::SERVICE_UNAVAILABLE,
                KmsErrorCode::ThrottlingException.name(),
                "The appliance is at its connection or request memory limit; retry the request.",
            )
        },
        too_large: |max| {
            error_response(
                KmsErrorCode::ValidationException,
                &format!("Request body exceeds the limit of {max} bytes."),
            )
        },
        too_slow: |t| {
            named_error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                &format!(
                    "The request body did not arrive within {} s.",
                    t.as_secs_f64()
                ),
            )
        },
    }
}

fn add_request_id(h: &mut axum::http::HeaderMap) {
    set_request_id(h, &uuid::Uuid::from_u128(rand_u128()).to_string());
}

fn set_request_id(h: &mut axum::http::HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-amzn-requestid", v);
    }
}

/// The request id of a signed request (`plan::request_id`): the same id the enclave records as
/// `KmsRequestId` when the request uses a key, so a client can match `GetKeyLastUsage` to its
/// own logs. `None` without a well-formed `SigV4` signature (a random id is used then).
#[must_use]
pub fn request_id_of(authorization: &str) -> Option<String> {
    let sig = ekms_wire::plan::signature_of(authorization)?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sig.as_bytes());
    let mut id = [0u8; 16];
    for (dst, src) in id.iter_mut().zip(d.as_ref()) {
        *dst = *src;
    }
    Some(ekms_wire::plan::request_id(id))
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
    let _in_flight = crate::metrics::InFlight::start();
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    // The request id the client will get: from the signature when it is well formed (the
    // enclave's audit record names the same), else a fresh one. Every log line of the request
    // carries it.
    let request_id = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(request_id_of)
        .unwrap_or_else(|| uuid::Uuid::from_u128(rand_u128()).to_string());
    let span = tracing::info_span!("request", id = %request_id);
    let (response, op, error) = kms_answer(relay, parts, body, &request_id)
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::debug!(
            operation = op.as_deref().unwrap_or("Unknown"),
            outcome = error.map_or("ok", KmsErrorCode::name),
            micros = started.elapsed().as_micros(),
            "answered"
        );
    });
    crate::metrics::request_done(
        op.as_deref().unwrap_or("Unknown"),
        error.map_or("ok", KmsErrorCode::name),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The answer to a KMS request, with its operation (when known) and error code (when
/// refused), for the metrics.
async fn kms_answer(
    relay: Arc<Relay>,
    parts: axum::http::request::Parts,
    body: Body,
    request_id: &str,
) -> (Response, Option<String>, Option<KmsErrorCode>) {
    let sts = crate::sts::is_sts(&parts.headers);
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("TrentService."))
        .map(str::to_owned);
    let op = op.filter(|o| ekms_wire::plan::is_known(o));
    if op.is_none() && !sts {
        let code = KmsErrorCode::UnknownOperationException;
        return (error_response(code, ""), None, Some(code));
    }
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        let code = KmsErrorCode::ValidationException;
        return (
            error_response(
                code,
                &format!("Request body exceeds the limit of {MAX_BODY} bytes."),
            ),
            op,
            Some(code),
        );
    };
    let op = op.unwrap_or_else(|| ekms_wire::sts::operation(&body));
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
        // The edge's buffer, without a copy.
        body: Vec::from(body),
    };
    let answer = relay.kms(&op, http, akid.as_deref()).await;
    let error = match &answer {
        Answer::Err(code, _) => Some(*code),
        _ => None,
    };
    let response = match answer {
        Answer::Ok(body) if sts => crate::sts::ok_response(body, request_id),
        Answer::Err(code, message) if sts => crate::sts::error_response(code, &message, request_id),
        Answer::Ok(body) => {
            let mut resp = Response::new(Body::from(body));
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            set_request_id(h, request_id);
            resp
        }
        Answer::Err(code, message) => {
            let mut resp = error_response(code, &message);
            set_request_id(resp.headers_mut(), request_id);
            resp
        }
        Answer::Forwarded {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let h = resp.headers_mut();
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    h.insert(n, v);
                }
            }
            add_request_id(h);
            resp
        }
    };
    (response, Some(op), error)
}

async fn health(State(relay): State<Arc<Relay>>) -> Response {
    match relay.enclave().call(&HostRequest::Status).await {
        Ok(EnclaveResponse::Status(s)) => {
            let body = serde_json::json!({
                "status": "ok",
                "custody": custody_json(&s.custody),
                "simulation": s.simulation,
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

/// The public JSON of a custody state.
#[must_use]
pub fn custody_json(state: &CustodyState) -> serde_json::Value {
    match state {
        CustodyState::Uninitialised => serde_json::json!({ "state": "uninitialised" }),
        CustodyState::Sealed { domain, have, need } => serde_json::json!({
            "state": "sealed", "domain": domain, "have": have, "need": need,
        }),
        CustodyState::Unsealed {
            domain,
            threshold,
            total,
            generation,
            keys,
        } => serde_json::json!({
            "state": "unsealed", "domain": domain, "threshold": threshold, "total": total,
            "generation": generation, "keys": keys,
        }),
    }
}

fn custody_error(e: &CustodyError) -> Response {
    match e {
        CustodyError::Refused(why) => error_response(KmsErrorCode::KMSInvalidStateException, why),
        CustodyError::Host(e) => {
            tracing::warn!(error = %e, "custody request failed in the host");
            error_response(
                KmsErrorCode::KMSInternalException,
                "The key enclave is unavailable; retry the request.",
            )
        }
    }
}

fn json(v: &serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn bad_request(why: &str) -> Response {
    error_response(KmsErrorCode::ValidationException, why)
}

fn loopback_only(peer: SocketAddr) -> Option<Response> {
    (!peer.ip().is_loopback()).then(|| {
        error_response(
            KmsErrorCode::AccessDeniedException,
            "Domain administration is accepted from the parent host itself (loopback) only.",
        )
    })
}

/// `GET /ekms/custody`: the custody state, with re-sealing progress when unsealed.
async fn custody_status(State(custody): State<Arc<Custody>>) -> Response {
    match custody.state().await {
        Ok(state) => {
            let mut v = custody_json(&state);
            if let CustodyState::Unsealed { keys, .. } = &state
                && let Some(current) = keys.last()
            {
                let c = Arc::clone(&custody);
                let current = current.clone();
                let older = tokio::task::spawn_blocking(move || c.count_on_older_keys(&current))
                    .await
                    .ok()
                    .and_then(Result::ok);
                if let Some(o) = v.as_object_mut() {
                    o.insert("on_older_keys".into(), serde_json::json!(older));
                    o.insert(
                        "resealing".into(),
                        serde_json::json!(custody.is_resealing()),
                    );
                }
            }
            json(&v)
        }
        Err(e) => custody_error(&e),
    }
}

#[derive(serde::Deserialize)]
struct ShareBody {
    session: String,
    share: String,
}

/// `POST /ekms/custody/share`: a custodian's share, sealed to the attested enclave key.
async fn custody_share(State(custody): State<Arc<Custody>>, body: axum::body::Bytes) -> Response {
    let Ok(b) = serde_json::from_slice::<ShareBody>(&body) else {
        return bad_request("expected {\"session\": HEX, \"share\": SUBMITTED-SHARE-JSON}");
    };
    let Some(session) = hex::decode(&b.session)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return bad_request("session must be the hex nonce of your attestation document");
    };
    match custody.submit_share(session, b.share).await {
        Ok(state) => json(&custody_json(&state)),
        Err(e) => custody_error(&e),
    }
}

#[derive(serde::Deserialize)]
struct InitBody {
    custodians: Vec<String>,
    threshold: u8,
    admin_key: String,
    nonce: String,
    #[serde(default)]
    witnesses: u8,
}

/// `POST /ekms/domain/init` (loopback only): a new domain split among custodians. The answer
/// carries the admin credential sealed to `admin_key` and the attestation document over the
/// caller's `nonce` that vouches for it; the host never sees the secret.
async fn domain_init(
    State(custody): State<Arc<Custody>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    use base64::Engine as _;
    if let Some(r) = loopback_only(peer) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<InitBody>(&body) else {
        return bad_request(
            "expected {\"custodians\": [PUBLIC-KEY-JSON...], \"threshold\": N, \"admin_key\": \
             PUBLIC-KEY-JSON, \"nonce\": HEX}",
        );
    };
    let Some(nonce) = hex::decode(&b.nonce)
        .ok()
        .filter(|n| !n.is_empty() && n.len() <= 512)
    else {
        return bad_request("nonce must be 1 to 512 bytes of hex");
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    match custody
        .init(b.custodians, b.threshold, b.admin_key, nonce, b.witnesses)
        .await
    {
        Ok(c) => json(&serde_json::json!({
            "domain": c.domain,
            "region": custody.region(),
            "shares": c.shares,
            "access_key_id": c.access_key_id,
            "sealed_credential": b64.encode(&c.sealed_secret),
            "document": b64.encode(&c.document),
        })),
        Err(e) => custody_error(&e),
    }
}

/// `POST /ekms/domain/rotate` (loopback only): a new domain key; old records re-seal in the
/// background.
async fn domain_rotate(
    State(custody): State<Arc<Custody>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Some(r) = loopback_only(peer) {
        return r;
    }
    match custody.rotate().await {
        Ok(state) => {
            let mut v = custody_json(&state);
            if let CustodyState::Unsealed { keys, .. } = &state
                && let Some(current) = keys.last()
            {
                let older = custody.count_on_older_keys(current).ok();
                if let Some(o) = v.as_object_mut() {
                    o.insert("on_older_keys".into(), serde_json::json!(older));
                }
            }
            json(&v)
        }
        Err(e) => custody_error(&e),
    }
}

/// `POST /ekms/peer/challenge`: step 1 of forwarding the domain to a joining appliance.
async fn peer_challenge(State(custody): State<Arc<Custody>>) -> Response {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    match custody.peer_challenge().await {
        Ok((n, domain)) => json(&serde_json::json!({
            "challenge": b64.encode(n),
            "domain": domain.map(|d| b64.encode(d.0)),
        })),
        Err(e) => custody_error(&e),
    }
}

/// `POST /ekms/witness`: on a witness, a message from the domain's writer (relayed by its
/// host) for our enclave. Opaque here: the enclaves authenticate each other's messages.
async fn witness(State(custody): State<Arc<Custody>>, body: axum::body::Bytes) -> Response {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(message) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .and_then(|m| b64.decode(m).ok())
    else {
        return bad_request("expected {\"message\": BASE64}");
    };
    match custody.witness(message).await {
        Ok(reply) => json(&serde_json::json!({ "message": b64.encode(reply) })),
        Err(e) => custody_error(&e),
    }
}

#[derive(serde::Deserialize)]
struct GrantBody {
    document: String,
    challenge: String,
}

/// `POST /ekms/peer/grant`: step 2: our enclave verifies the joiner's attestation against the
/// domain's PCR policy and answers with its own attestation and the encrypted grant.
async fn peer_grant(State(custody): State<Arc<Custody>>, body: axum::body::Bytes) -> Response {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let parsed = serde_json::from_slice::<GrantBody>(&body)
        .ok()
        .and_then(|b| Some((b64.decode(b.document).ok()?, b64.decode(b.challenge).ok()?)));
    let Some((document, challenge)) = parsed else {
        return bad_request("expected {\"document\": BASE64, \"challenge\": BASE64}");
    };
    match custody.peer_grant(document, challenge).await {
        Ok((document, grant)) => json(&serde_json::json!({
            "document": b64.encode(document),
            "grant": b64.encode(grant),
        })),
        Err(e) => custody_error(&e),
    }
}

/// `GET /ekms/audit/head` (loopback only): the enclave's audit head, signed now (stored as a
/// checkpoint too), for `ekms audit verify --endpoint`.
async fn audit_head(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Some(r) = loopback_only(peer) {
        return r;
    }
    let Some(sink) = relay.audit() else {
        return bad_request("this appliance keeps no audit log");
    };
    match crate::audit::checkpoint_once(relay.enclave(), sink, true).await {
        Some(c) => {
            // Every record up to the signed head is with the enclave or already queued.
            sink.drain(&relay.enclave_arc()).await;
            sink.flush().await;
            json(&crate::cli_audit::checkpoint_json(&c))
        }
        None => bad_request("the enclave has written no audit record yet"),
    }
}

async fn fallback() -> Response {
    error_response(KmsErrorCode::UnknownOperationException, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_comes_from_the_signature_only_when_it_is_well_formed() {
        let sig = "a".repeat(64);
        let h = format!(
            "AWS4-HMAC-SHA256 Credential=EKMSABC/20261122/us-east-1/kms/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={sig}"
        );
        let id = request_id_of(&h).unwrap();
        assert_eq!(id, request_id_of(&h).unwrap());
        assert!(uuid::Uuid::try_parse(&id).is_ok());
        // SHA-256 of the signature's hex text, first 16 bytes: what the enclave records.
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sig.as_bytes());
        let mut want = [0u8; 16];
        want.copy_from_slice(&d.as_ref()[..16]);
        assert_eq!(id, uuid::Uuid::from_bytes(want).hyphenated().to_string());
        assert_ne!(
            id,
            request_id_of(&h.replace(&sig, &"b".repeat(64))).unwrap()
        );
        assert!(request_id_of(&h.replace(&sig, "00")).is_none());
        assert!(request_id_of(&h.replace(&sig, &"A".repeat(64))).is_none());
        assert!(request_id_of("AWS4-HMAC-SHA256 Credential=x").is_none());
    }

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
