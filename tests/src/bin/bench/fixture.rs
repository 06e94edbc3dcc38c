//! The keys and request bodies of each benchmarked operation, made once before measuring.

use anyhow::{anyhow, bail};
use base64::Engine as _;
use std::sync::Arc;

use crate::{Target, call, connect, xks::XKS_OPS};

/// Operations the bench knows.
pub(crate) const OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "generate-data-key",
    "create-key",
    "sign-ecdsa",
    "verify-ecdsa",
    "sign-rsa",
    "decrypt-rsa",
    "generate-mac",
    "encrypt-context",
    "encrypt-grant",
];

/// The realistic key policy of `encrypt-grant`: the account delegates to identity policies, an
/// operator may read, and an application may encrypt with one encryption context.
const REALISTIC_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
 {"Sid":"operators","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/operator"},
  "Action":["kms:Describe*","kms:List*","kms:Get*"],"Resource":"*"},
 {"Sid":"app","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/app"},
  "Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*",
  "Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing"}}}]}"#;

/// The 32-byte message every signing and MAC operation uses.
const MESSAGE: [u8; 32] = [0x42; 32];

/// What the measured requests need.
#[derive(Default)]
pub(crate) struct Fixture {
    key_id: String,
    /// With `--keys N`: the N symmetric keys (`key_id` first) that Encrypt and GenerateDataKey
    /// go through in turn.
    keys: Vec<String>,
    blob: String,
    ecdsa_key: String,
    ecdsa_sig: String,
    rsa_key: String,
    /// `decrypt-rsa`: an RSA_2048 ENCRYPT_DECRYPT key and an OAEP-SHA-256 ciphertext of it.
    rsa_decrypt_key: String,
    rsa_blob: String,
    mac_key: String,
    /// `encrypt-grant`: the key with the realistic policy, and the grantee's credentials.
    grant_key: String,
    grantee: Option<aws_credential_types::Credentials>,
}

/// Refuses an operation the bench does not know.
pub(crate) fn check_ops(ops: &[String]) -> anyhow::Result<()> {
    let known = || OPS.iter().chain(XKS_OPS);
    if let Some(op) = ops.iter().find(|o| !known().any(|k| *k == o.as_str())) {
        let names: Vec<&str> = known().copied().collect();
        bail!("unknown operation {op}; known: {}", names.join(", "));
    }
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Fixture {
    /// Makes the keys `ops` need (the symmetric one is `key_id` when given).
    pub(crate) async fn setup(
        t: &Arc<Target>,
        key_id: Option<String>,
        keys: usize,
        ops: &[String],
    ) -> anyhow::Result<Self> {
        check_ops(ops)?;
        let wants = |names: &[&str]| ops.iter().any(|o| names.contains(&o.as_str()));
        let mut f = Self {
            key_id: match key_id {
                Some(k) => k,
                None => create(t, r#"{"Description":"ekms-bench"}"#).await?,
            },
            ..Self::default()
        };
        f.keys = vec![f.key_id.clone()];
        if keys > 1 {
            f.keys.extend(create_many(t, keys - 1).await?);
        }
        let (_, enc) = f.body_for("encrypt");
        f.blob = request(t, "Encrypt", &enc, "CiphertextBlob").await?;
        if wants(&["sign-ecdsa", "verify-ecdsa"]) {
            f.ecdsa_key =
                create(t, r#"{"KeySpec":"ECC_NIST_P256","KeyUsage":"SIGN_VERIFY"}"#).await?;
            let (_, sign) = f.body_for("sign-ecdsa");
            f.ecdsa_sig = request(t, "Sign", &sign, "Signature").await?;
        }
        if wants(&["sign-rsa"]) {
            f.rsa_key = create(t, r#"{"KeySpec":"RSA_2048","KeyUsage":"SIGN_VERIFY"}"#).await?;
        }
        if wants(&["decrypt-rsa"]) {
            f.rsa_decrypt_key =
                create(t, r#"{"KeySpec":"RSA_2048","KeyUsage":"ENCRYPT_DECRYPT"}"#).await?;
            let enc = serde_json::json!({
                "KeyId": f.rsa_decrypt_key, "Plaintext": b64(&MESSAGE),
                "EncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            });
            f.rsa_blob = request(t, "Encrypt", &enc.to_string(), "CiphertextBlob").await?;
        }
        if wants(&["generate-mac"]) {
            f.mac_key = create(
                t,
                r#"{"KeySpec":"HMAC_256","KeyUsage":"GENERATE_VERIFY_MAC"}"#,
            )
            .await?;
        }
        if wants(&["encrypt-grant"]) {
            let policy = serde_json::json!({ "Policy": REALISTIC_POLICY }).to_string();
            f.grant_key = create(t, &policy).await?;
            let name = format!("bench{}", std::process::id());
            let creds = principal(t, &name).await?;
            let grant = serde_json::json!({
                "KeyId": f.grant_key,
                "GranteePrincipal": format!("arn:aws:iam::111122223333:user/{name}"),
                "Operations": ["Encrypt", "Decrypt"],
            });
            request(t, "CreateGrant", &grant.to_string(), "GrantId").await?;
            f.grantee = Some(creds);
        }
        Ok(f)
    }

    /// The credentials a measured operation is signed with, when not the bench's own.
    pub(crate) fn credentials_for(&self, op: &str) -> Option<aws_credential_types::Credentials> {
        (op == "encrypt-grant")
            .then(|| self.grantee.clone())
            .flatten()
    }

    /// The symmetric key.
    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The operation name and bodies of a measured request: one per key of `--keys` for
    /// Encrypt and GenerateDataKey, which go through them in turn.
    pub(crate) fn bodies_for(&self, op: &str) -> (&'static str, Vec<String>) {
        let (name, body) = self.body_for(op);
        if !matches!(op, "encrypt" | "generate-data-key") || self.keys.len() < 2 {
            return (name, vec![body]);
        }
        let bodies = self
            .keys
            .iter()
            .map(|k| body.replace(&self.key_id, k))
            .collect();
        (name, bodies)
    }

    /// The operation name and body of a measured request.
    pub(crate) fn body_for(&self, op: &str) -> (&'static str, String) {
        let json = |v: serde_json::Value| v.to_string();
        match op {
            "decrypt" => (
                "Decrypt",
                json(serde_json::json!({ "CiphertextBlob": self.blob })),
            ),
            "generate-data-key" => (
                "GenerateDataKey",
                json(serde_json::json!({ "KeyId": self.key_id, "KeySpec": "AES_256" })),
            ),
            "create-key" => ("CreateKey", r#"{"Description":"ekms-bench"}"#.to_owned()),
            "sign-ecdsa" => (
                "Sign",
                json(serde_json::json!({
                    "KeyId": self.ecdsa_key, "Message": b64(&MESSAGE),
                    "SigningAlgorithm": "ECDSA_SHA_256",
                })),
            ),
            "verify-ecdsa" => (
                "Verify",
                json(serde_json::json!({
                    "KeyId": self.ecdsa_key, "Message": b64(&MESSAGE),
                    "Signature": self.ecdsa_sig, "SigningAlgorithm": "ECDSA_SHA_256",
                })),
            ),
            "sign-rsa" => (
                "Sign",
                json(serde_json::json!({
                    "KeyId": self.rsa_key, "Message": b64(&MESSAGE),
                    "SigningAlgorithm": "RSASSA_PSS_SHA_256",
                })),
            ),
            "decrypt-rsa" => (
                "Decrypt",
                json(serde_json::json!({
                    "KeyId": self.rsa_decrypt_key, "CiphertextBlob": self.rsa_blob,
                    "EncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                })),
            ),
            "generate-mac" => (
                "GenerateMac",
                json(serde_json::json!({
                    "KeyId": self.mac_key, "Message": b64(&MESSAGE), "MacAlgorithm": "HMAC_SHA_256",
                })),
            ),
            "encrypt-context" => (
                "Encrypt",
                json(serde_json::json!({
                    "KeyId": self.key_id, "Plaintext": b64(&MESSAGE),
                    "EncryptionContext": {"app": "billing"},
                })),
            ),
            "encrypt-grant" => (
                "Encrypt",
                json(serde_json::json!({
                    "KeyId": self.grant_key, "Plaintext": b64(&MESSAGE),
                    "EncryptionContext": {"app": "billing"},
                })),
            ),
            _ => (
                "Encrypt",
                json(serde_json::json!({ "KeyId": self.key_id, "Plaintext": b64(&MESSAGE) })),
            ),
        }
    }
}

/// Creates `n` symmetric keys over 32 connections; their ids.
async fn create_many(t: &Arc<Target>, n: usize) -> anyhow::Result<Vec<String>> {
    const CONNS: usize = 32;
    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNS.min(n) {
        let (t, next) = (Arc::clone(t), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&t).await?;
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(ids);
                }
                // Distinct bodies: the enclave refuses a replayed CreateKey.
                let body = format!(r#"{{"Description":"ekms-bench key {i}"}}"#);
                let (status, reply) = call(&t, &mut s, "CreateKey", &body).await?;
                if status != 200 {
                    bail!(
                        "CreateKey failed: HTTP {status}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
                let v: serde_json::Value = serde_json::from_slice(&reply)?;
                ids.push(
                    v.pointer("/KeyMetadata/KeyId")
                        .and_then(serde_json::Value::as_str)
                        .ok_or_else(|| anyhow!("no KeyId in CreateKey reply"))?
                        .to_owned(),
                );
            }
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for task in tasks {
        ids.extend(task.await??);
    }
    println!(
        "created {n} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Creates a key; its id.
async fn create(t: &Target, body: &str) -> anyhow::Result<String> {
    let v = request_json(t, "CreateKey", body).await?;
    v.pointer("/KeyMetadata/KeyId")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no KeyId in CreateKey reply"))
}

/// Sends one request; the string member `field` of its answer.
async fn request(t: &Target, op: &str, body: &str, field: &str) -> anyhow::Result<String> {
    request_json(t, op, body)
        .await?
        .get(field)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {field} in the {op} reply"))
}

async fn request_json(t: &Target, op: &str, body: &str) -> anyhow::Result<serde_json::Value> {
    let mut s = connect(t).await?;
    let (status, reply) = call(t, &mut s, op, body).await?;
    if status != 200 {
        bail!(
            "{op} failed: HTTP {status}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(serde_json::from_slice(&reply)?)
}

/// Makes principal `name` (no identity policy: only grants let it in) and opens its secret with
/// a one-off key. (The bench trusts the appliance it measures: it does not verify the
/// attestation document; `ekms principal create` does.)
async fn principal(t: &Target, name: &str) -> anyhow::Result<aws_credential_types::Credentials> {
    new_access_key(
        t,
        "EkmsCreatePrincipal",
        serde_json::json!({ "UserName": name }),
    )
    .await
}

/// Makes a credential of XKS key store `prefix` (the store too, if new) and opens its secret,
/// as [`principal`] does.
pub(crate) async fn xks_credential(
    t: &Target,
    prefix: &str,
) -> anyhow::Result<aws_credential_types::Credentials> {
    new_access_key(
        t,
        "EkmsCreateXksCredential",
        serde_json::json!({ "UriPrefix": prefix }),
    )
    .await
}

/// Makes an XKS key of store `prefix` that may encrypt and decrypt; its id.
pub(crate) async fn xks_key(t: &Target, prefix: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({ "UriPrefix": prefix, "KeyUsage": ["ENCRYPT", "DECRYPT"] });
    request(t, "EkmsCreateXksKey", &body.to_string(), "KeyId").await
}

/// Calls `op`, which makes an access key and delivers its secret sealed to a one-off key, with
/// `body` and the one-off key's public half; the opened credential.
async fn new_access_key(
    t: &Target,
    op: &str,
    mut body: serde_json::Value,
) -> anyhow::Result<aws_credential_types::Credentials> {
    let receiver = ekms_custody::CustodianKey::generate()?;
    let nonce = [9u8; 32];
    let o = body
        .as_object_mut()
        .ok_or_else(|| anyhow!("{op}: body is not an object"))?;
    o.insert(
        "RecipientPublicKey".into(),
        receiver.public_key().to_json()?.into(),
    );
    o.insert("Nonce".into(), b64(&nonce).into());
    let v = request_json(t, op, &body.to_string()).await?;
    let field = |p: &str| {
        v.pointer(p)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no {p} in the {op} reply"))
    };
    let akid = field("/AccessKey/AccessKeyId")?;
    let domain: [u8; 8] = hex::decode(field("/AccessKey/DomainId")?)?
        .try_into()
        .map_err(|_| anyhow!("bad domain id"))?;
    let sealed =
        base64::engine::general_purpose::STANDARD.decode(field("/AccessKey/SealedSecret")?)?;
    let secret = ekms_custody::Delivery::credential(domain, &akid, &nonce)?
        .open(receiver.agreement_key(), &sealed)?;
    let secret = String::from_utf8(secret.to_vec())?;
    Ok(aws_credential_types::Credentials::new(
        akid,
        secret,
        None,
        None,
        "ekms-bench",
    ))
}
