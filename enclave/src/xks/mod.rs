//! The External Key Store (XKS) proxy API, answered inside the enclave: AWS KMS calls
//! `POST /{prefix}/kms/xks/v1/...` with SigV4 for service `kms-xks-proxy`, and the enclave
//! authenticates the request against the URI prefix's sealed credentials, checks every record
//! against its state view, and encrypts or decrypts with keys of the domain bound to that prefix
//! (`docs/xks.md`). The host only relays bytes: it learns no secret, and it cannot move a key to
//! another key store, revive a deleted credential or answer for the enclave.

mod cipher;
mod ops;

use ekms_wire::{
    msg::{EnclaveResponse, Fault, KmsCall, XksOutcome},
    xks::{self, XksOp, XksPath},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    Core, EnclaveError, auth,
    ledger::{RecordId, Version, digest_of},
    opened::Keyed,
    principal,
};

/// Clock skew allowed for an XKS request's signature (the specification's five minutes).
pub(crate) const SKEW_MINUTES: i64 = 5;
/// The SigV4 service name of the XKS proxy API.
pub(crate) const SERVICE: &str = "kms-xks-proxy";

/// How a key of the domain serves an external key store: the URI prefix that sees it and what
/// it may do there (the specification's `keyUsage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksBinding {
    /// The URI prefix (the logical key store).
    pub prefix: String,
    /// Whether XKS `Encrypt` may use it.
    pub encrypt: bool,
    /// Whether XKS `Decrypt` may use it.
    pub decrypt: bool,
}

impl XksBinding {
    /// The specification's `keyUsage` list.
    #[must_use]
    pub fn usage(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.encrypt {
            out.push("ENCRYPT");
        }
        if self.decrypt {
            out.push("DECRYPT");
        }
        out
    }
}

/// A key store's secondary authorization: which AWS callers, KMS keys and KMS operations its
/// `requestMetadata` may name (each list empty: any). Checked for every call but health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksRule {
    /// `awsPrincipalArn` patterns (`*` and `?` wildcards, as in IAM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principal_arns: Vec<String>,
    /// `kmsKeyArn` patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_arns: Vec<String>,
    /// `kmsOperation` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
}

impl XksRule {
    /// Whether the rule allows a call whose metadata names these (a pattern list that is not
    /// empty needs the member present and matching).
    #[must_use]
    pub fn allows(
        &self,
        principal: Option<&str>,
        key: Option<&str>,
        operation: Option<&str>,
    ) -> bool {
        let matches = |patterns: &[String], value: Option<&str>| {
            patterns.is_empty()
                || value.is_some_and(|v| {
                    patterns
                        .iter()
                        .any(|p| crate::policy::condition::glob(p, v))
                })
        };
        matches(&self.principal_arns, principal)
            && matches(&self.key_arns, key)
            && (self.operations.is_empty()
                || operation.is_some_and(|o| self.operations.iter().any(|x| x == o)))
    }
}

/// An XKS error: the specification's `errorName`, its HTTP status, and a message of public
/// values only.
#[derive(Debug)]
pub(crate) struct XksError {
    name: &'static str,
    message: String,
}

impl XksError {
    fn new(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
        }
    }
    pub(crate) fn validation(m: impl Into<String>) -> Self {
        Self::new("ValidationException", m)
    }
    pub(crate) fn invalid_state(m: impl Into<String>) -> Self {
        Self::new("InvalidStateException", m)
    }
    pub(crate) fn invalid_ciphertext(m: impl Into<String>) -> Self {
        Self::new("InvalidCiphertextException", m)
    }
    pub(crate) fn access_denied(m: impl Into<String>) -> Self {
        Self::new("AccessDeniedException", m)
    }
    pub(crate) fn invalid_key_usage(m: impl Into<String>) -> Self {
        Self::new("InvalidKeyUsageException", m)
    }
    fn authentication() -> Self {
        Self::new(
            "AuthenticationFailedException",
            "The request signature does not verify with a credential of this key store.",
        )
    }
    pub(crate) fn key_not_found(key_id: &str) -> Self {
        Self::new(
            "KeyNotFoundException",
            format!("Key {key_id} is not a key of this key store."),
        )
    }
    fn invalid_uri_path() -> Self {
        Self::new(
            "InvalidUriPathException",
            "The URI path is not that of a key store of this proxy.",
        )
    }
    pub(crate) fn unsupported(m: impl Into<String>) -> Self {
        Self::new("UnsupportedOperationException", m)
    }
    pub(crate) fn internal(m: impl Into<String>) -> Self {
        Self::new("InternalException", m)
    }
    /// The audit backlog is full (the same name and status as the edge's connection cap).
    fn throttled() -> Self {
        Self::new("ThrottlingException", crate::core::AUDIT_BACKLOG)
    }

    /// The HTTP status the specification gives this error.
    fn status(&self) -> u16 {
        match self.name {
            "AuthenticationFailedException" => 401,
            "AccessDeniedException" => 403,
            "KeyNotFoundException" | "InvalidUriPathException" => 404,
            "UnsupportedOperationException" => 501,
            "DependencyTimeoutException" | "ThrottlingException" => 503,
            "InternalException" => 500,
            _ => 400,
        }
    }

    fn outcome(&self) -> XksOutcome {
        XksOutcome {
            status: self.status(),
            body: json!({"errorName": self.name, "errorMessage": self.message})
                .to_string()
                .into_bytes(),
        }
    }
}

/// Why an XKS call was not answered with its result.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The specification's error.
    Xks(XksError),
    /// A record the host showed is not the current one: it must read its store again.
    Stale,
}

impl From<XksError> for Refusal {
    fn from(e: XksError) -> Self {
        Self::Xks(e)
    }
}

impl From<EnclaveError> for Refusal {
    fn from(e: EnclaveError) -> Self {
        match e {
            EnclaveError::StaleRecord => Self::Stale,
            _ => Self::Xks(XksError::internal("The request could not be processed.")),
        }
    }
}

impl From<crate::ledger::LedgerError> for Refusal {
    fn from(_: crate::ledger::LedgerError) -> Self {
        Self::Stale
    }
}

/// An authenticated XKS request, as the operations see it.
pub(crate) struct Request<'a> {
    pub(crate) core: &'a Core,
    pub(crate) keys: &'a crate::domain::Keyring,
    pub(crate) call: &'a KmsCall,
    pub(crate) path: XksPath<'a>,
    /// The verified body.
    pub(crate) body: bytes::Bytes,
    /// The caller's access key id, for the audit line.
    pub(crate) akid: String,
    /// The key store's secondary authorization rule, if any.
    pub(crate) rule: Option<XksRule>,
    /// The enclave's time, Unix ms.
    pub(crate) now_ms: i64,
}

/// Answers one XKS call.
pub(crate) fn call(core: &Core, call: &KmsCall) -> EnclaveResponse {
    if !core.audit.has_room() {
        return EnclaveResponse::Xks(XksError::throttled().outcome());
    }
    let mut note = crate::audit::Note {
        xks: true,
        ..crate::audit::Note::default()
    };
    let (outcome, error) = match answer(core, call, &mut note) {
        Ok(o) => (o, None),
        Err(Refusal::Xks(e)) => (e.outcome(), Some(e.name)),
        Err(Refusal::Stale) => return EnclaveResponse::Fault(Fault::StaleRecord),
    };
    // Recorded in the domain's chain like a KMS call (nothing while sealed: no audit key).
    if let Some(domain) = core.domain() {
        core.audit.append(
            &domain,
            &core.config.account,
            call,
            &note,
            error.map_or(crate::audit::Outcome::Success, crate::audit::Outcome::Error),
            core.clock.at(chrono::Utc::now()).timestamp_millis(),
        );
    }
    EnclaveResponse::Xks(outcome)
}

fn answer(
    core: &Core,
    call: &KmsCall,
    note: &mut crate::audit::Note,
) -> Result<XksOutcome, Refusal> {
    let uri = call.http.uri.as_str();
    let path = uri.split_once('?').map_or(uri, |(p, _)| p);
    let path = xks::parse_path(path).ok_or_else(XksError::invalid_uri_path)?;
    note.operation = Some(format!("Xks{}", path.op.name()));
    if !call.http.method.eq_ignore_ascii_case("POST") {
        return Err(XksError::new(
            "UnsupportedOperationException",
            "The XKS proxy API takes POST requests only.",
        )
        .into());
    }
    let Some(domain) = core.domain() else {
        // Sealed: no credential can be checked. Health says so (the host knows it anyway);
        // everything else fails and AWS KMS retries.
        if path.op == XksOp::Health {
            return Ok(ops::health(core, false));
        }
        return Err(XksError::internal(
            "The key domain is sealed: this appliance waits for its custodians.",
        )
        .into());
    };
    if !core.ledger().is_ok_and(|l| l.is_ready()) || !core.is_fresh(&domain) {
        return Err(XksError::internal("The appliance is not serving yet; retry.").into());
    }
    // The key store exists when the state view holds its credential record.
    let record = xks::credential_record(path.prefix);
    let rid = RecordId::principal(&record);
    if core.ledger()?.current(&rid).is_none() {
        return Err(XksError::invalid_uri_path().into());
    }
    let (credential, digest) = match &call.principal {
        Some(sealed) => {
            // Opened now or kept from an earlier call (`crate::opened`), and used only if the
            // state view says these very bytes are the credential's current version.
            let digest = digest_of(&sealed.0);
            let p = core
                .opened
                .principal(digest, || principal::open(domain.keyring(), &sealed.0))
                .map_err(|_| XksError::authentication())?;
            // Another key store's credential, or a KMS principal: not this store's.
            if p.id != record || p.xks_prefix.as_deref() != Some(path.prefix) {
                return Err(XksError::authentication().into());
            }
            core.check_current_version(
                &rid,
                Version {
                    seq: p.generation,
                    digest,
                },
            )?;
            (p, digest)
        }
        None => return Err(XksError::authentication().into()),
    };
    let now = chrono::Utc::now();
    let keyed = Keyed {
        record: &credential,
        digest,
        opened: &core.opened,
    };
    let checked = verify(&call.http, &keyed, now)?;
    let request = Request {
        core,
        keys: domain.keyring(),
        call,
        path,
        body: checked.1,
        akid: checked.0,
        rule: credential.xks_rule.clone(),
        now_ms: core.clock.at(now).timestamp_millis(),
    };
    ops::dispatch(&request, note)
}

/// Checks the request's signature (service `kms-xks-proxy`, the region it names, five minutes
/// of skew) against the key store's credentials: the access key id used, and the signed body.
fn verify(
    http: &ekms_wire::msg::HttpRequest,
    credential: &Keyed<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, bytes::Bytes), XksError> {
    let region = http
        .scope_region()
        .filter(|r| ekms_wire::region::is_region_name(r))
        .ok_or_else(XksError::authentication)?
        .to_owned();
    let required = [std::borrow::Cow::Borrowed("host")];
    let checked = auth::check_signature(
        http,
        Some(credential),
        (&region, SERVICE),
        &required,
        chrono::Duration::minutes(SKEW_MINUTES),
        now,
    )
    .map_err(|_| XksError::authentication())?;
    // The signature verified with this access key's secret, so the header names it truly.
    let akid = http.access_key_id().unwrap_or_default().to_owned();
    Ok((akid, checked.body))
}
