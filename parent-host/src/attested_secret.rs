//! The receiver's side of a secret the enclave delivers (an admin or principal credential): it
//! arrives encrypted to a key the receiver made, with an attestation document over the
//! receiver's nonce. This verifies the document (chain to the root, PCR policy, nonce, age) and
//! that its user data names exactly this domain, id and sealed bytes, and only then decrypts.
//!
//! Two ways to hold the key: a key file made beforehand (`ekms custodian keygen`, as for the
//! genesis admin), or a one-off key made for one call ([`one_off_key`]) whose public half goes
//! with the request. This runs in the operator's tool; the host only relays, and must never
//! call [`Verified::open`] except as the simulation's development custodian.

use std::fmt;

use anyhow::{Context as _, anyhow, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use ekms_attestation::{PcrPolicy, TrustRoot, UnixMillis, ValidationTime, verify};
use ekms_custody::{CustodianKey, Delivery};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Oldest document accepted when the secret has just arrived.
pub const MAX_DOC_AGE: std::time::Duration = std::time::Duration::from_mins(5);
/// `kind` of a saved sealed credential file.
pub const SEALED_CREDENTIAL_KIND: &str = "ekms-sealed-credential";
/// Version of the saved sealed credential file.
pub const SEALED_CREDENTIAL_VERSION: u8 = 1;
/// Largest saved sealed credential file read.
pub const MAX_SEALED_CREDENTIAL_LEN: usize = 64 * 1024;

/// A secret as the enclave delivered it, not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestedSecret {
    delivery: Delivery,
    sealed: Vec<u8>,
    document: Vec<u8>,
}

impl fmt::Debug for AttestedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AttestedSecret({} {} of domain {}, {} sealed bytes)",
            self.delivery.kind().word(),
            self.delivery.id(),
            hex::encode(self.delivery.domain()),
            self.sealed.len()
        )
    }
}

/// When the document must have been made.
#[derive(Debug, Clone, Copy)]
pub enum Freshness {
    /// Just received: certificates valid and the document at most [`MAX_DOC_AGE`] old at this
    /// time (the verifier's clock).
    Now(UnixMillis),
    /// Saved earlier by this tool, which checked freshness when it arrived: certificates valid
    /// at the document's own time; the nonce is still checked.
    AsReceived,
}

/// A verified delivery, ready to open.
#[derive(Debug)]
pub struct Verified {
    secret: AttestedSecret,
    /// One line saying what was verified.
    pub summary: String,
    /// Whether the root was a simulation root.
    pub simulation: bool,
}

/// Parses a domain id (16 hex digits).
pub fn parse_domain(hex_id: &str) -> anyhow::Result<[u8; 8]> {
    hex::decode(hex_id.trim())
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| anyhow!("a domain id is 16 hex digits, not {hex_id:?}"))
}

impl AttestedSecret {
    /// A credential for `access_key_id` in `domain` (hex), answering our `nonce`, as the
    /// appliance returned it.
    pub fn credential(
        domain: &str,
        access_key_id: &str,
        nonce: &[u8],
        sealed: Vec<u8>,
        document: Vec<u8>,
    ) -> anyhow::Result<Self> {
        let delivery = Delivery::credential(parse_domain(domain)?, access_key_id, nonce)
            .context("the appliance's answer")?;
        Ok(Self {
            delivery,
            sealed,
            document,
        })
    }

    /// The domain id (hex).
    #[must_use]
    pub fn domain(&self) -> String {
        hex::encode(self.delivery.domain())
    }

    /// The id (access key id).
    #[must_use]
    pub fn id(&self) -> &str {
        self.delivery.id()
    }

    /// Verifies the document against `root` and `policy` (PCRs; nonce and age are added here),
    /// that it answers our nonce, that the delivery's domain is `pinned` when given, and that
    /// its user data names this domain, id and the digest of the sealed bytes.
    pub fn verify(
        self,
        root: &TrustRoot,
        policy: PcrPolicy,
        freshness: Freshness,
        pinned: Option<&str>,
    ) -> anyhow::Result<Verified> {
        if let Some(pin) = pinned
            && parse_domain(pin)? != self.delivery.domain()
        {
            bail!(
                "the credential is for domain {}, not the domain {pin} you pinned",
                self.domain()
            );
        }
        let (at, policy) = match freshness {
            Freshness::Now(now) => (ValidationTime::At(now), policy.max_age(MAX_DOC_AGE)),
            Freshness::AsReceived => (ValidationTime::DocumentTimestamp, policy),
        };
        let verified = verify(&self.document, root, at)
            .context("the enclave's attestation document did not verify")?;
        let pinned_pcrs: Vec<String> = policy
            .expected_pcrs()
            .keys()
            .map(|i| format!("PCR{i}"))
            .collect();
        policy
            .expect_nonce(self.delivery.nonce())
            .check(&verified, verified.checked_at())
            .context("the enclave's attestation does not satisfy the policy")?;
        self.delivery
            .check_user_data(&self.sealed, verified.doc().user_data())
            .context("the document does not vouch for this credential")?;
        let root_note = if verified.is_simulation() {
            "a SIMULATION root (never in production)"
        } else {
            "the AWS Nitro root"
        };
        let pcrs = if pinned_pcrs.is_empty() {
            "no PCRs pinned (give --policy to pin them)".to_owned()
        } else {
            format!("{} match the policy", pinned_pcrs.join(", "))
        };
        let summary = format!(
            "signature and certificate chain to {root_note}; {pcrs}; your nonce; the document \
             names domain {}, {} {} and the digest of the sealed secret",
            self.domain(),
            self.delivery.kind().id_field(),
            self.delivery.id()
        );
        Ok(Verified {
            simulation: verified.is_simulation(),
            secret: self,
            summary,
        })
    }
}

impl Verified {
    /// Decrypts the secret with the receiver's private key.
    pub fn open(
        &self,
        key: &aws_lc_rs::agreement::PrivateKey,
    ) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        self.secret
            .delivery
            .open(key, &self.secret.sealed)
            .map_err(|_| anyhow!("the key does not open this credential (not the admin key?)"))
    }

    /// Decrypts a SigV4 secret (ASCII text) with the receiver's private key.
    pub fn open_text(
        &self,
        key: &aws_lc_rs::agreement::PrivateKey,
    ) -> anyhow::Result<Zeroizing<String>> {
        let bytes = self.open(key)?;
        let text = std::str::from_utf8(&bytes)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| anyhow!("the decrypted secret is not a SigV4 secret key"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    /// The delivery that was verified.
    #[must_use]
    pub fn secret(&self) -> &AttestedSecret {
        &self.secret
    }
}

/// A key pair for one call: the receiver sends its public half (custodian key JSON) with the
/// request and opens the answer with it. It lives in memory only and is dropped after.
pub fn one_off_key() -> anyhow::Result<CustodianKey> {
    CustodianKey::generate().context("making a one-off P-384 key")
}

/// The saved form of a sealed credential (JSON, mode 0600), when the admin's private key is not
/// at hand; `ekms credential open` verifies and opens it later. See docs/custody.md.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedCredentialFile {
    /// [`SEALED_CREDENTIAL_KIND`].
    pub kind: String,
    /// [`SEALED_CREDENTIAL_VERSION`].
    pub version: u8,
    /// Domain id, 16 hex.
    pub domain: String,
    /// Access key id.
    pub access_key_id: String,
    /// Our nonce, hex.
    pub nonce: String,
    /// The sealed secret, base64.
    pub sealed_secret: String,
    /// The attestation document, base64.
    pub document: String,
    /// Region for the config file.
    pub region: String,
    /// Endpoint for the config file.
    pub endpoint: String,
}

impl fmt::Debug for SealedCredentialFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedCredentialFile({} of domain {})",
            self.access_key_id, self.domain
        )
    }
}

impl SealedCredentialFile {
    /// The file for `secret` (a credential).
    #[must_use]
    pub fn new(secret: &AttestedSecret, region: &str, endpoint: &str) -> Self {
        Self {
            kind: SEALED_CREDENTIAL_KIND.to_owned(),
            version: SEALED_CREDENTIAL_VERSION,
            domain: secret.domain(),
            access_key_id: secret.id().to_owned(),
            nonce: hex::encode(secret.delivery.nonce()),
            sealed_secret: STANDARD.encode(&secret.sealed),
            document: STANDARD.encode(&secret.document),
            region: region.to_owned(),
            endpoint: endpoint.to_owned(),
        }
    }

    /// Parses a saved file (size-capped, unknown fields refused).
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        if text.len() > MAX_SEALED_CREDENTIAL_LEN {
            bail!("a sealed credential file is at most {MAX_SEALED_CREDENTIAL_LEN} bytes");
        }
        let f: Self = serde_json::from_str(text).context("not a sealed credential file")?;
        if f.kind != SEALED_CREDENTIAL_KIND || f.version != SEALED_CREDENTIAL_VERSION {
            bail!(
                "not a sealed credential file ({} version {})",
                f.kind,
                f.version
            );
        }
        Ok(f)
    }

    /// The JSON text.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The delivery it holds, unverified.
    pub fn secret(&self) -> anyhow::Result<AttestedSecret> {
        let nonce = hex::decode(&self.nonce).context("the file's nonce")?;
        let sealed = STANDARD
            .decode(&self.sealed_secret)
            .context("the file's sealed secret")?;
        let document = STANDARD
            .decode(&self.document)
            .context("the file's document")?;
        AttestedSecret::credential(&self.domain, &self.access_key_id, &nonce, sealed, document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_attestation::{MockNsm, Nsm as _, SimulationCa};

    const DOMAIN: &str = "0102030405060708";
    const AKID: &str = "EKMSAAAABBBBCCCCDDDD";

    struct Enclave {
        nsm: MockNsm,
        root: TrustRoot,
    }

    fn enclave() -> Enclave {
        let ca = SimulationCa::generate().unwrap();
        let root = ca.trust_root().unwrap();
        Enclave {
            nsm: MockNsm::from_executable_bytes(ca, b"enclave"),
            root,
        }
    }

    /// What the enclave does (enclave/src/delivery.rs), with the parts a test may vary.
    fn deliver(
        e: &Enclave,
        to: &CustodianKey,
        nonce: &[u8],
        doc_nonce: &[u8],
        doc_domain: [u8; 8],
    ) -> (Vec<u8>, Vec<u8>) {
        let d = Delivery::credential([1, 2, 3, 4, 5, 6, 7, 8], AKID, nonce).unwrap();
        let sealed = d.seal(to.public_key().key(), b"s3cr3t-access-key").unwrap();
        let for_doc = Delivery::credential(doc_domain, AKID, nonce).unwrap();
        let doc = e
            .nsm
            .attestation(
                Some(doc_nonce),
                Some(for_doc.user_data(&sealed).as_bytes()),
                None,
            )
            .unwrap();
        (sealed, doc)
    }

    fn now() -> Freshness {
        Freshness::Now(UnixMillis::from_system_time(std::time::SystemTime::now()).unwrap())
    }

    fn check(
        e: &Enclave,
        nonce: &[u8],
        sealed: Vec<u8>,
        doc: Vec<u8>,
        pinned: Option<&str>,
    ) -> anyhow::Result<Verified> {
        AttestedSecret::credential(DOMAIN, AKID, nonce, sealed, doc)?.verify(
            &e.root,
            PcrPolicy::new(),
            now(),
            pinned,
        )
    }

    #[test]
    fn a_genuine_delivery_verifies_and_opens_with_the_key_only() {
        let e = enclave();
        let key = one_off_key().unwrap();
        let (sealed, doc) = deliver(&e, &key, &[9; 32], &[9; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let v = check(&e, &[9; 32], sealed, doc, Some(DOMAIN)).unwrap();
        assert!(v.simulation);
        assert!(v.summary.contains(DOMAIN), "{}", v.summary);
        assert_eq!(
            &v.open_text(key.agreement_key()).unwrap()[..],
            "s3cr3t-access-key"
        );
        let other = one_off_key().unwrap();
        assert!(v.open(other.agreement_key()).is_err());
        assert!(!format!("{v:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_document_over_another_nonce_is_refused() {
        let e = enclave();
        let key = one_off_key().unwrap();
        let (sealed, doc) = deliver(&e, &key, &[9; 32], &[8; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let err = check(&e, &[9; 32], sealed, doc, None).unwrap_err();
        assert!(format!("{err:#}").contains("nonce"), "{err:#}");
    }

    #[test]
    fn a_document_for_another_domain_is_refused() {
        let e = enclave();
        let key = one_off_key().unwrap();
        let (sealed, doc) = deliver(&e, &key, &[9; 32], &[9; 32], [9; 8]);
        let err = check(&e, &[9; 32], sealed, doc, None).unwrap_err();
        assert!(format!("{err:#}").contains("does not vouch"), "{err:#}");
        // And a genuine delivery of another domain than the pinned one.
        let (sealed, doc) = deliver(&e, &key, &[9; 32], &[9; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let err = check(&e, &[9; 32], sealed, doc, Some("0000000000000000")).unwrap_err();
        assert!(format!("{err:#}").contains("pinned"), "{err:#}");
    }

    #[test]
    fn a_tampered_or_substituted_credential_is_refused_before_decryption() {
        let e = enclave();
        let key = one_off_key().unwrap();
        let (mut sealed, doc) = deliver(&e, &key, &[9; 32], &[9; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        sealed[100] ^= 1;
        let err = check(&e, &[9; 32], sealed, doc.clone(), None).unwrap_err();
        assert!(format!("{err:#}").contains("does not vouch"), "{err:#}");
        // A host that seals its own secret to the admin key cannot get it attested: the digest
        // in the document names the enclave's bytes.
        let forged = Delivery::credential([1, 2, 3, 4, 5, 6, 7, 8], AKID, &[9; 32])
            .unwrap()
            .seal(key.public_key().key(), b"chosen-by-the-host")
            .unwrap();
        let err = check(&e, &[9; 32], forged, doc, None).unwrap_err();
        assert!(format!("{err:#}").contains("digest"), "{err:#}");
    }

    #[test]
    fn a_document_naming_another_digest_or_id_is_refused() {
        let e = enclave();
        let key = one_off_key().unwrap();
        let d = Delivery::credential([1, 2, 3, 4, 5, 6, 7, 8], AKID, &[9; 32]).unwrap();
        let sealed = d.seal(key.public_key().key(), b"x").unwrap();
        let wrong_digest = d.user_data(b"something else");
        let other_id = Delivery::credential([1, 2, 3, 4, 5, 6, 7, 8], "EKMSOTHER", &[9; 32])
            .unwrap()
            .user_data(&sealed);
        for ud in [wrong_digest, other_id] {
            let doc = e
                .nsm
                .attestation(Some(&[9; 32]), Some(ud.as_bytes()), None)
                .unwrap();
            assert!(check(&e, &[9; 32], sealed.clone(), doc, None).is_err());
        }
        // A document from another root is refused.
        let (sealed, doc) = deliver(&e, &key, &[9; 32], &[9; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let stranger = enclave();
        assert!(check(&stranger, &[9; 32], sealed, doc, None).is_err());
    }

    #[test]
    fn the_saved_file_round_trips_and_opens_later() {
        let e = enclave();
        let key = one_off_key().unwrap();
        let (sealed, doc) = deliver(&e, &key, &[9; 32], &[9; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let secret = AttestedSecret::credential(DOMAIN, AKID, &[9; 32], sealed, doc).unwrap();
        let file = SealedCredentialFile::new(&secret, "us-east-1", "http://127.0.0.1:1");
        let text = file.to_json().unwrap();
        assert!(!text.contains("s3cr3t"));
        let back = SealedCredentialFile::from_json(&text).unwrap();
        assert_eq!(back.secret().unwrap(), secret);
        let v = back
            .secret()
            .unwrap()
            .verify(&e.root, PcrPolicy::new(), Freshness::AsReceived, None)
            .unwrap();
        assert_eq!(
            &v.open_text(key.agreement_key()).unwrap()[..],
            "s3cr3t-access-key"
        );
        assert!(SealedCredentialFile::from_json(&text.replace("ekms-sealed", "x")).is_err());
        assert!(SealedCredentialFile::from_json("{}").is_err());
    }
}
