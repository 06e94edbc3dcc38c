//! The four operations of the XKS proxy API: `GetHealthStatus`, `GetKeyMetadata`, `Encrypt` and
//! `Decrypt`, with the specification's request validation, fields and errors.

use base64::Engine as _;
use ekms_wire::{msg::XksOutcome, xks::XksOp};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Refusal, Request, XksError, cipher};
use crate::{
    ledger::RecordId,
    ops::to_b64,
    record::{self, KeyRecord, KeyState, Kind},
};

/// Largest plaintext accepted (the specification requires at least 4,300 bytes).
pub(crate) const MAX_PLAINTEXT: usize = 8192;
/// Largest `additionalAuthenticatedData` accepted (the specification requires at least 8,192).
pub(crate) const MAX_AAD: usize = 16_384;

/// The specification's `requestMetadata`. Which members are required depends on the operation.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    aws_principal_arn: Option<String>,
    kms_key_arn: Option<String>,
    kms_operation: Option<String>,
    kms_request_id: Option<String>,
    kms_via_service: Option<String>,
    aws_source_vpc: Option<String>,
    aws_source_vpce: Option<String>,
}

impl Metadata {
    /// Checks the members `op` requires (an unknown `kmsOperation` is accepted, as the
    /// specification says: AWS KMS may add operations).
    fn check(&self, op: XksOp) -> Result<(), XksError> {
        let mut required: Vec<(&str, &Option<String>)> = vec![
            ("kmsOperation", &self.kms_operation),
            ("kmsRequestId", &self.kms_request_id),
        ];
        if op != XksOp::Health {
            required.push(("awsPrincipalArn", &self.aws_principal_arn));
        }
        if matches!(op, XksOp::Encrypt | XksOp::Decrypt) {
            required.push(("kmsKeyArn", &self.kms_key_arn));
        }
        for (name, value) in required {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(XksError::validation(format!(
                    "requestMetadata.{name} is required."
                )));
            }
        }
        for (name, value) in [
            ("kmsViaService", &self.kms_via_service),
            ("awsSourceVpc", &self.aws_source_vpc),
            ("awsSourceVpce", &self.aws_source_vpce),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > 2048) {
                return Err(XksError::validation(format!(
                    "requestMetadata.{name} is too long."
                )));
            }
        }
        Ok(())
    }
}

/// A request body: `requestMetadata` and the operation's members.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    request_metadata: Option<Metadata>,
    plaintext: Option<String>,
    ciphertext: Option<String>,
    encryption_algorithm: Option<String>,
    additional_authenticated_data: Option<String>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
    initialization_vector: Option<String>,
    authentication_tag: Option<String>,
    ciphertext_metadata: Option<String>,
}

fn b64(member: &str, value: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, XksError> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| XksError::validation(format!("{member} is not valid base64.")))
}

fn ok(body: &Value) -> XksOutcome {
    XksOutcome {
        status: 200,
        body: body.to_string().into_bytes(),
    }
}

/// Runs the operation of an authenticated request.
pub(super) fn dispatch(
    req: &Request<'_>,
    note: &mut crate::audit::Note,
) -> Result<XksOutcome, Refusal> {
    let body: Body = serde_json::from_slice(&req.body)
        .map_err(|_| XksError::validation("The request body is not the operation's JSON."))?;
    let metadata = body
        .request_metadata
        .as_ref()
        .ok_or_else(|| XksError::validation("requestMetadata is required."))?;
    // For the audit record: what AWS KMS says (signed with this key store's credential).
    note.principal_arn.clone_from(&metadata.aws_principal_arn);
    note.key_arn.clone_from(&metadata.kms_key_arn);
    note.request_id.clone_from(&metadata.kms_request_id);
    metadata.check(req.path.op)?;
    // The key store's secondary authorization (never for health).
    if req.path.op != XksOp::Health
        && let Some(rule) = &req.rule
        && !rule.allows(
            metadata.aws_principal_arn.as_deref(),
            metadata.kms_key_arn.as_deref(),
            metadata.kms_operation.as_deref(),
        )
    {
        return Err(XksError::access_denied(
            "The key store's secondary authorization does not allow this request.",
        )
        .into());
    }
    let result = match req.path.op {
        XksOp::Health => Ok(health(req.core, true)),
        XksOp::Metadata => key_metadata(req),
        XksOp::Encrypt => encrypt(req, &body),
        XksOp::Decrypt => decrypt(req, &body),
    };
    // The audit line: who (AWS's principal, through this key store's credential), which key,
    // what, and AWS's request id; never a byte of plaintext, AAD or ciphertext.
    tracing::info!(
        target: "ekms::audit",
        xks_operation = req.path.op.name(),
        key_store = req.path.prefix,
        key_id = req.path.key_id.unwrap_or_default(),
        access_key_id = %req.akid,
        aws_principal_arn = metadata.aws_principal_arn.as_deref().unwrap_or_default(),
        kms_key_arn = metadata.kms_key_arn.as_deref().unwrap_or_default(),
        kms_operation = metadata.kms_operation.as_deref().unwrap_or_default(),
        kms_request_id = metadata.kms_request_id.as_deref().unwrap_or_default(),
        outcome = match &result {
            Ok(_) => "ok",
            Err(Refusal::Xks(e)) => e.name,
            Err(Refusal::Stale) => "stale",
        },
        "xks call"
    );
    result
}

/// `GetHealthStatus`: this proxy is one enclave, whose domain is its key manager.
pub(crate) fn health(core: &crate::Core, serving: bool) -> XksOutcome {
    let model = if core.attestor.is_simulation() {
        "simulated enclave"
    } else {
        "AWS Nitro Enclave"
    };
    ok(&json!({
        "xksProxyFleetSize": 1,
        "xksProxyVendor": "Enclave KMS",
        "xksProxyModel": concat!("ekms ", env!("CARGO_PKG_VERSION")),
        "ekmVendor": "Enclave KMS",
        "ekmFleetDetails": [{
            "id": core.domain_hex(),
            "model": model,
            "healthStatus": if serving { "ACTIVE" } else { "UNAVAILABLE" },
        }],
    }))
}

/// The key the path names, if it is a key of this key store (current in the state view, bound
/// to this prefix, not past its deletion date).
fn store_key(req: &Request<'_>) -> Result<KeyRecord, Refusal> {
    let key_id = req.path.key_id.unwrap_or_default();
    let not_found = || XksError::key_not_found(key_id);
    let rid = RecordId::key(key_id).ok_or_else(not_found)?;
    let sealed =
        req.call.keys.iter().find(|b| {
            record::peek(&b.0).is_some_and(|h| h.kind == Kind::Key as u8 && h.id == key_id)
        });
    let Some(sealed) = sealed else {
        req.core.ledger()?.check_absent(&rid)?;
        return Err(not_found().into());
    };
    let rec = req.core.current_key(req.keys, key_id, &sealed.0)?;
    if rec.xks.as_ref().is_none_or(|b| b.prefix != req.path.prefix) {
        return Err(not_found().into());
    }
    if rec.state == KeyState::PendingDeletion && rec.deletion_ms.is_some_and(|d| d <= req.now_ms) {
        return Err(not_found().into());
    }
    Ok(rec)
}

fn key_metadata(req: &Request<'_>) -> Result<XksOutcome, Refusal> {
    let key = store_key(req)?;
    let binding = key.xks.as_ref().ok_or_else(|| XksError::internal(""))?;
    let status = match key.state {
        KeyState::Enabled => "ENABLED",
        KeyState::Disabled => "DISABLED",
        _ => {
            return Err(XksError::invalid_state(format!(
                "Key {} is {}.",
                req.path.key_id.unwrap_or_default(),
                key.state.as_str()
            ))
            .into());
        }
    };
    Ok(ok(&json!({
        "keySpec": "AES_256",
        "keyUsage": binding.usage(),
        "keyStatus": status,
    })))
}

/// The key, which must be enabled and allowed `usage` (`"ENCRYPT"` / `"DECRYPT"`).
fn usable_key(req: &Request<'_>, encrypt: bool) -> Result<KeyRecord, Refusal> {
    let key = store_key(req)?;
    let binding = key.xks.as_ref().ok_or_else(|| XksError::internal(""))?;
    let (allowed, what) = if encrypt {
        (binding.encrypt, "ENCRYPT")
    } else {
        (binding.decrypt, "DECRYPT")
    };
    if !allowed {
        return Err(XksError::invalid_key_usage(format!(
            "The key usage of key {} does not include {what}.",
            req.path.key_id.unwrap_or_default()
        ))
        .into());
    }
    if key.state != KeyState::Enabled {
        return Err(XksError::invalid_state(format!(
            "Key {} is {}.",
            req.path.key_id.unwrap_or_default(),
            key.state.as_str()
        ))
        .into());
    }
    Ok(key)
}

fn algorithm(body: &Body) -> Result<(), XksError> {
    match body.encryption_algorithm.as_deref() {
        Some("AES_GCM") => Ok(()),
        Some(_) => Err(XksError::unsupported(
            "encryptionAlgorithm must be AES_GCM.",
        )),
        None => Err(XksError::validation("encryptionAlgorithm is required.")),
    }
}

fn aad(body: &Body) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, XksError> {
    let Some(a) = body.additional_authenticated_data.as_deref() else {
        return Ok(None);
    };
    let a = b64("additionalAuthenticatedData", a)?;
    if a.len() > MAX_AAD {
        return Err(XksError::unsupported(format!(
            "additionalAuthenticatedData of {} bytes is longer than this proxy's {MAX_AAD}.",
            a.len()
        )));
    }
    Ok(Some(a))
}

fn encrypt(req: &Request<'_>, body: &Body) -> Result<XksOutcome, Refusal> {
    algorithm(body)?;
    let plaintext = b64(
        "plaintext",
        body.plaintext
            .as_deref()
            .ok_or_else(|| XksError::validation("plaintext is required."))?,
    )?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(XksError::unsupported(format!(
            "plaintext of {} bytes is longer than this proxy's {MAX_PLAINTEXT}.",
            plaintext.len()
        ))
        .into());
    }
    let aad = aad(body)?;
    let cdiv = match body.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some("SHA_256") => true,
        Some(_) => {
            return Err(XksError::validation(
                "ciphertextDataIntegrityValueAlgorithm must be SHA_256.",
            )
            .into());
        }
    };
    let key = usable_key(req, true)?;
    // The integrity value vouches that the ciphertext decrypts, so it is computed only for a
    // key that may decrypt, and checked by decrypting (as the specification asks).
    if cdiv && !key.xks.as_ref().is_some_and(|b| b.decrypt) {
        return Err(XksError::invalid_key_usage(format!(
            "A ciphertext integrity value needs DECRYPT in the key usage of key {}.",
            req.path.key_id.unwrap_or_default()
        ))
        .into());
    }
    let material = key
        .current_material()
        .ok_or_else(|| XksError::invalid_state("The key has no key material."))?;
    let metadata = cipher::metadata_for(material.version);
    let (iv, ciphertext, tag) = cipher::seal(
        material,
        aad.as_deref().map(Vec::as_slice),
        &metadata,
        &plaintext,
    )
    .ok_or_else(|| XksError::internal("Encryption failed."))?;
    let mut out = json!({
        "ciphertext": to_b64(&ciphertext),
        "initializationVector": to_b64(&iv),
        "authenticationTag": to_b64(&tag),
        "ciphertextMetadata": to_b64(&metadata),
    });
    if cdiv {
        // Computed first, then the ciphertext decrypted with what was returned: the value is
        // only given for a ciphertext that opens.
        let value = cipher::integrity_value(
            aad.as_deref().map(Vec::as_slice),
            &metadata,
            &iv,
            &ciphertext,
            &tag,
        );
        cipher::open(
            material,
            aad.as_deref().map(Vec::as_slice),
            &metadata,
            &iv,
            &ciphertext,
            &tag,
        )
        .filter(|p| p.as_slice() == plaintext.as_slice())
        .ok_or_else(|| XksError::internal("The ciphertext did not decrypt after encryption."))?;
        if let Some(o) = out.as_object_mut() {
            o.insert(
                "ciphertextDataIntegrityValue".into(),
                Value::String(to_b64(&value)),
            );
        }
    }
    Ok(ok(&out))
}

fn decrypt(req: &Request<'_>, body: &Body) -> Result<XksOutcome, Refusal> {
    algorithm(body)?;
    let field = |name: &str, v: &Option<String>| -> Result<zeroize::Zeroizing<Vec<u8>>, XksError> {
        b64(
            name,
            v.as_deref()
                .ok_or_else(|| XksError::validation(format!("{name} is required.")))?,
        )
    };
    let ciphertext = field("ciphertext", &body.ciphertext)?;
    let iv = field("initializationVector", &body.initialization_vector)?;
    let tag = field("authenticationTag", &body.authentication_tag)?;
    let metadata = match &body.ciphertext_metadata {
        Some(m) => b64("ciphertextMetadata", m)?,
        None => zeroize::Zeroizing::new(Vec::new()),
    };
    if metadata.len() > cipher::MAX_METADATA {
        return Err(XksError::validation("ciphertextMetadata is longer than 20 bytes.").into());
    }
    if iv.len() != cipher::IV_LEN || tag.len() != cipher::TAG_LEN {
        return Err(XksError::invalid_ciphertext(
            "The initialization vector must be 12 bytes and the tag 16.",
        )
        .into());
    }
    if ciphertext.len() > MAX_PLAINTEXT {
        return Err(XksError::invalid_ciphertext("The ciphertext is too long.").into());
    }
    let aad = aad(body)?;
    let key = usable_key(req, false)?;
    let bad = || XksError::invalid_ciphertext("The ciphertext does not decrypt with this key.");
    let version = cipher::version_of(&metadata).ok_or_else(bad)?;
    let material = key.find_material(version).ok_or_else(bad)?;
    let plaintext = cipher::open(
        &material,
        aad.as_deref().map(Vec::as_slice),
        &metadata,
        &iv,
        &ciphertext,
        &tag,
    )
    .ok_or_else(bad)?;
    let text = zeroize::Zeroizing::new(to_b64(&plaintext));
    Ok(XksOutcome {
        status: 200,
        body: format!("{{\"plaintext\":\"{}\"}}", text.as_str()).into_bytes(),
    })
}
