//! Client authentication inside the enclave: the SigV4 signature of the exact request the host
//! relayed is verified (with `scratchstack-aws-signature`) against the principal's sealed secret,
//! the request date against AWS's 15-minute skew window, and `host` and `x-amz-target` must be
//! among the signed headers, so a host can neither alter a parameter nor replay a request as
//! another operation. It also returns the verified signature and request date, which name the
//! request for replay refusal ([`crate::replay`]).

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use ekms_wire::{
    msg::{HttpRequest, KmsErrorCode},
    region::Regions,
};
use scratchstack_aws_signature::{
    SignatureError, SignatureOptions, SliceSignedHeaderRequirements, canonical::CanonicalRequest,
};

use crate::{KmsError, record::PrincipalRecord};

/// AWS's `SigV4` clock skew allowance, each way: a request dated further from the enclave's
/// clock is refused as expired or not yet current.
pub const SKEW_MINUTES: i64 = 15;

/// Headers every KMS request must have signed: the operation and the endpoint.
const REQUIRED: &[Cow<'static, str>] = &[Cow::Borrowed("host"), Cow::Borrowed("x-amz-target")];
/// Headers an STS (AWS Query) request must have signed: the endpoint (its operation is in the
/// signed body).
const REQUIRED_STS: &[Cow<'static, str>] = &[Cow::Borrowed("host")];

/// AWS's message for a signature that does not verify.
pub const MSG_SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// AWS's message for an unknown access key.
pub const MSG_UNRECOGNIZED: &str = "The security token included in the request is invalid.";

/// A request whose signature verified.
#[derive(Debug)]
pub struct Verified {
    /// The operation from the signed `X-Amz-Target` (`TrentService.<Op>` → `<Op>`), or for an
    /// STS request (AWS Query protocol, no `X-Amz-Target`, signed for service `sts`) `sts:` and
    /// the signed body's `Action`.
    pub operation: String,
    /// The signed body.
    pub body: bytes::Bytes,
    /// The signature that verified: 64 lower-case hex digits (anything else does not verify), so
    /// one signed request has exactly one spelling of it.
    pub signature: String,
    /// The signed request date (`X-Amz-Date`), within [`SKEW_MINUTES`] of the verifier's clock.
    pub signed_at: DateTime<Utc>,
    /// The region the request is signed for (one that is served).
    pub region: String,
}

/// Verifies `http` with the signing keys of `keys` (the caller's principal) at `now` for service
/// `kms` (or `sts`, for a request without `X-Amz-Target`) and a region of `regions` (`home` stands in for a region that is not
/// served, so that the signature check refuses it with AWS's message about the credential
/// scope).
pub fn verify<K: SigningKeys + ?Sized>(
    http: &HttpRequest,
    keys: Option<&K>,
    (regions, home): (&Regions, &str),
    now: DateTime<Utc>,
) -> Result<Verified, KmsError> {
    let region = http
        .scope_region()
        .filter(|r| regions.allows(r))
        .unwrap_or(home)
        .to_owned();
    let sts = !http
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"));
    let (service, required) = if sts {
        ("sts", REQUIRED_STS)
    } else {
        ("kms", REQUIRED)
    };
    let checked = check_signature(
        http,
        keys,
        (&region, service),
        required,
        chrono::Duration::minutes(SKEW_MINUTES),
        now,
    )
    .map_err(|e| match e {
        CheckError::Malformed => KmsError::new(
            KmsErrorCode::IncompleteSignatureException,
            "The request is malformed.",
        ),
        CheckError::Signature(e) => map_error(e),
    })?;
    Ok(Verified {
        operation: operation(sts, &checked.headers, &checked.body)?,
        body: checked.body,
        signature: checked.signature,
        signed_at: checked.signed_at,
        region,
    })
}

/// A request whose signature verified, whatever its service.
pub(crate) struct Checked {
    /// Its headers.
    pub(crate) headers: http::HeaderMap,
    /// The signed body.
    pub(crate) body: bytes::Bytes,
    /// The signature (64 lower-case hex digits).
    pub(crate) signature: String,
    /// The signed request date.
    pub(crate) signed_at: DateTime<Utc>,
}

/// Why [`check_signature`] refused.
pub(crate) enum CheckError {
    /// Not an HTTP request at all (bad method, URI or header).
    Malformed,
    /// The signature library's verdict.
    Signature(SignatureError),
}

/// The relayed request as an `http::Request`, for the signature library.
fn as_http(http: &HttpRequest) -> Result<http::Request<bytes::Bytes>, CheckError> {
    let mut builder = http::Request::builder()
        .method(http.method.as_str())
        .uri(http.uri.as_str());
    for (name, value) in &http.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder
        .body(bytes::Bytes::from(http.body.clone()))
        .map_err(|_| CheckError::Malformed)
}

/// A `SigV4` signing key: derived from an access key's secret for one day, region and service.
pub type SigningKey = zeroize::Zeroizing<[u8; 32]>;

/// The credential scope a signing key is for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The request's UTC day.
    pub date: NaiveDate,
    /// The region signed for.
    pub region: &'a str,
    /// The service signed for (`kms`, `sts`, `kms-xks-proxy`).
    pub service: &'a str,
}

/// Where the signing key of a request comes from.
pub trait SigningKeys {
    /// The signing key of access key `akid` for `scope`; `None` for an access key it does not
    /// hold.
    fn signing_key(&self, akid: &str, scope: &Scope<'_>) -> Option<SigningKey>;
}

/// Derives the key from the principal's secret on every call (no secret need be IAM's 40
/// characters: an external key store's are 43 to 64).
impl SigningKeys for PrincipalRecord {
    fn signing_key(&self, akid: &str, scope: &Scope<'_>) -> Option<SigningKey> {
        self.secret_of(akid).map(|secret| derive(&secret.0, scope))
    }
}

/// `SigV4`'s signing key of `secret` for `scope`, by AWS's `aws-sigv4`.
#[must_use]
pub fn derive(secret: &str, scope: &Scope<'_>) -> SigningKey {
    let day = scope.date.and_time(chrono::NaiveTime::MIN).and_utc();
    let derived =
        aws_sigv4::sign::v4::generate_signing_key(secret, day.into(), scope.region, scope.service);
    let mut key = SigningKey::default();
    if let Some(bytes) = derived.as_ref().get(..32) {
        key.copy_from_slice(bytes);
    }
    key
}

/// Checks `http`'s `SigV4` signature for `service` in `region` with the signing keys of `keys`
/// (none: every access key is unknown), with `required` among the signed headers and the date
/// within `skew` of `now`. scratchstack parses the request, builds the string to sign and
/// checks the date and credential scope (the steps of its `sigv4_validate_request`, kept apart
/// so that the signature and date the replay cache records are the very ones this parse
/// verified); the expected signature is AWS's `aws-sigv4`'s, compared in constant time.
pub(crate) fn check_signature<K: SigningKeys + ?Sized>(
    http: &HttpRequest,
    keys: Option<&K>,
    (region, service): (&str, &str),
    required: &[Cow<'static, str>],
    skew: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Checked, CheckError> {
    let request = as_http(http)?;
    let (parts, body) = request.into_parts();
    let (canonical, parts, body) =
        CanonicalRequest::from_request_parts(parts, body, SignatureOptions::default())
            .map_err(CheckError::Signature)?;
    let required = SliceSignedHeaderRequirements::new(required, &[], &[]);
    let authenticator = canonical
        .get_authenticator(&required)
        .map_err(CheckError::Signature)?;
    authenticator
        .prevalidate(region, service, now, skew)
        .map_err(CheckError::Signature)?;
    let unknown = || {
        CheckError::Signature(SignatureError::InvalidClientTokenId(
            MSG_UNRECOGNIZED.into(),
        ))
    };
    let akid = authenticator
        .credential()
        .split('/')
        .next()
        .ok_or_else(unknown)?;
    let scope = Scope {
        date: authenticator.request_timestamp().date_naive(),
        region,
        service,
    };
    let key = keys
        .and_then(|k| k.signing_key(akid, &scope))
        .ok_or_else(unknown)?;
    let expected = zeroize::Zeroizing::new(aws_sigv4::sign::v4::calculate_signature(
        key.as_slice(),
        &authenticator.get_string_to_sign(),
    ));
    aws_lc_rs::constant_time::verify_slices_are_equal(
        expected.as_bytes(),
        authenticator.signature().as_bytes(),
    )
    .map_err(|_| {
        CheckError::Signature(SignatureError::SignatureDoesNotMatch(Some(
            MSG_SIGNATURE_MISMATCH.to_owned(),
        )))
    })?;
    Ok(Checked {
        headers: parts.headers,
        body,
        signature: authenticator.signature().to_owned(),
        signed_at: authenticator.request_timestamp(),
    })
}

/// The operation of a verified request: `X-Amz-Target`'s, or for STS the body's `Action`.
fn operation(
    sts: bool,
    headers: &http::HeaderMap,
    body: &bytes::Bytes,
) -> Result<String, KmsError> {
    if sts {
        return Ok(ekms_wire::sts::operation(body));
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    target
        .strip_prefix("TrentService.")
        .map(str::to_owned)
        .ok_or_else(|| {
            KmsError::new(
                KmsErrorCode::UnknownOperationException,
                format!("Unknown operation {target}"),
            )
        })
}

fn map_error(e: SignatureError) -> KmsError {
    match e {
        SignatureError::MissingAuthenticationToken(_) => KmsError::new(
            KmsErrorCode::MissingAuthenticationTokenException,
            "Missing Authentication Token",
        ),
        SignatureError::InvalidClientTokenId(_) | SignatureError::ExpiredToken(_) => {
            KmsError::new(KmsErrorCode::UnrecognizedClientException, MSG_UNRECOGNIZED)
        }
        SignatureError::SignatureDoesNotMatch(msg) => KmsError::new(
            KmsErrorCode::InvalidSignatureException,
            msg.unwrap_or_else(|| MSG_SIGNATURE_MISMATCH.to_owned()),
        ),
        SignatureError::IncompleteSignature(msg) => {
            KmsError::new(KmsErrorCode::IncompleteSignatureException, msg)
        }
        SignatureError::IO(_) | SignatureError::InternalServiceError(_) => KmsError::internal(),
        other => KmsError::new(
            KmsErrorCode::IncompleteSignatureException,
            other.to_string(),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::PrincipalSecret;
    use aws_credential_types::Credentials;
    use aws_sigv4::{
        http_request::{SignableBody, SignableRequest, SigningSettings, sign},
        sign::v4,
    };
    use std::time::SystemTime;

    pub(crate) const AKID: &str = "EKMSTESTACCESSKEY123";
    pub(crate) const SECRET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123";

    pub(crate) fn principal() -> PrincipalRecord {
        PrincipalRecord::new(
            "admin",
            "AIDATEST".into(),
            crate::record::AccessKey {
                id: AKID.into(),
                secret: PrincipalSecret(SECRET.into()),
                created_ms: 0,
            },
            None,
        )
    }

    /// Signs a KMS request the way the AWS SDKs do.
    pub(crate) fn signed(op: &str, body: &str, secret: &str, at: SystemTime) -> HttpRequest {
        signed_as(AKID, op, body, secret, at)
    }

    /// Signs an STS request (AWS Query, form body, service `sts`) with access key `akid`.
    pub(crate) fn signed_sts(akid: &str, body: &str, secret: &str, at: SystemTime) -> HttpRequest {
        let headers = [
            ("host", "127.0.0.1:8400"),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ];
        sign_request((akid, secret), ("sts", "us-east-1"), &headers, body, at)
    }

    /// Signs a KMS request with access key `akid`.
    pub(crate) fn signed_as(
        akid: &str,
        op: &str,
        body: &str,
        secret: &str,
        at: SystemTime,
    ) -> HttpRequest {
        signed_in("us-east-1", (akid, secret), op, body, at)
    }

    /// Signs a KMS request for `region` with access key `akid`.
    pub(crate) fn signed_in(
        region: &str,
        (akid, secret): (&str, &str),
        op: &str,
        body: &str,
        at: SystemTime,
    ) -> HttpRequest {
        let target = format!("TrentService.{op}");
        let headers = [
            ("host", "127.0.0.1:8400"),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        sign_request((akid, secret), ("kms", region), &headers, body, at)
    }

    /// Signs `POST /` with `headers` and `body` for `service` in `region`, as the AWS SDKs do.
    fn sign_request(
        (akid, secret): (&str, &str),
        (service, region): (&str, &str),
        headers: &[(&str, &str)],
        body: &str,
        at: SystemTime,
    ) -> HttpRequest {
        sign_request_to("/", (akid, secret), (service, region), headers, body, at)
    }

    /// Signs `POST path` with `headers` and `body` for `service` in `region`, as the AWS SDKs
    /// (and curl's `--aws-sigv4`) do.
    pub(crate) fn sign_request_to(
        path: &str,
        (akid, secret): (&str, &str),
        (service, region): (&str, &str),
        headers: &[(&str, &str)],
        body: &str,
        at: SystemTime,
    ) -> HttpRequest {
        let creds = Credentials::new(akid, secret, None, None, "test");
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("http://127.0.0.1:8400{path}");
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(path)
            .body(())
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        instructions.apply_to_request_http1x(&mut req);
        HttpRequest {
            method: "POST".into(),
            uri: path.into(),
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
            body: body.as_bytes().to_vec(),
        }
    }

    /// Served: any region, home us-east-1.
    const US_EAST_1: (&Regions, &str) = (&Regions::Any, "us-east-1");

    #[test]
    fn a_request_is_verified_for_a_served_region_only() {
        let now = SystemTime::now();
        let p = principal();
        let served = Regions::parse("us-east-1,eu-west-1").unwrap();
        let req = signed_in("eu-west-1", (AKID, SECRET), "Encrypt", "{}", now);
        let v = verify(&req, Some(&p), (&served, "us-east-1"), now.into()).unwrap();
        assert_eq!(v.region, "eu-west-1");
        let req = signed_in("ap-south-2", (AKID, SECRET), "Encrypt", "{}", now);
        let e = verify(&req, Some(&p), (&served, "us-east-1"), now.into()).unwrap_err();
        assert_eq!(e.code, KmsErrorCode::InvalidSignatureException);
        assert!(
            e.message
                .contains("Credential should be scoped to a valid region, not 'ap-south-2'"),
            "{}",
            e.message
        );
        // Any region: served, and named in the verified request.
        let v = verify(&req, Some(&p), (&Regions::Any, "us-east-1"), now.into()).unwrap();
        assert_eq!(v.region, "ap-south-2");
    }

    #[test]
    fn a_correctly_signed_request_verifies() {
        let now = SystemTime::now();
        let req = signed("Encrypt", "{}", SECRET, now);
        let v = verify(&req, Some(&principal()), US_EAST_1, now.into()).unwrap();
        assert_eq!(v.operation, "Encrypt");
        assert_eq!(&v.body[..], b"{}");
        assert_eq!(v.signature.len(), 64);
        assert!(
            v.signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let at: DateTime<Utc> = now.into();
        assert_eq!(v.signed_at.timestamp(), at.timestamp());
    }

    #[test]
    fn tampering_and_bad_credentials_get_aws_codes() {
        let now = SystemTime::now();
        let p = principal();
        let code = |req: &HttpRequest, p: Option<&PrincipalRecord>| {
            verify(req, p, US_EAST_1, now.into()).unwrap_err().code
        };
        // Wrong secret.
        let req = signed(
            "Encrypt",
            "{}",
            "Xbcdefghijklmnopqrstuvwxyz0123456789ABCD",
            now,
        );
        assert_eq!(
            code(&req, Some(&p)),
            KmsErrorCode::InvalidSignatureException
        );
        // Unknown access key.
        let req = signed("Encrypt", "{}", SECRET, now);
        assert_eq!(code(&req, None), KmsErrorCode::UnrecognizedClientException);
        // A host that alters the body.
        let mut req = signed("Encrypt", r#"{"KeyId":"a"}"#, SECRET, now);
        req.body = br#"{"KeyId":"b"}"#.to_vec();
        assert_eq!(
            code(&req, Some(&p)),
            KmsErrorCode::InvalidSignatureException
        );
        // A host that replays the request as another operation.
        let mut req = signed("Encrypt", "{}", SECRET, now);
        for (k, v) in &mut req.headers {
            if k == "x-amz-target" {
                *v = serde_bytes::ByteBuf::from(b"TrentService.ScheduleKeyDeletion".to_vec());
            }
        }
        assert_eq!(
            code(&req, Some(&p)),
            KmsErrorCode::InvalidSignatureException
        );
        // Unsigned.
        let mut req = signed("Encrypt", "{}", SECRET, now);
        req.headers.retain(|(k, _)| k != "authorization");
        assert_eq!(
            code(&req, Some(&p)),
            KmsErrorCode::MissingAuthenticationTokenException
        );
        // Outside the skew window.
        let old = now - std::time::Duration::from_mins(16);
        let req = signed("Encrypt", "{}", SECRET, old);
        let e = verify(&req, Some(&p), US_EAST_1, now.into()).unwrap_err();
        assert_eq!(e.code, KmsErrorCode::InvalidSignatureException);
        assert!(e.message.contains("Signature expired"), "{}", e.message);
    }
}
