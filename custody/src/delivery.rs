//! A secret the enclave delivers to a receiver's P-384 key (an admin or principal credential):
//! its label, the AAD that binds it to a domain, an id and the receiver's nonce, and the user
//! data of the attestation document that vouches for it. Shared by the enclave (which seals) and
//! the receiver's tool (which verifies the document, then opens). Pure: no I/O, no clock.
//!
//! Format (see docs/custody.md, "Delivered secret"): a [`crate::seal_to`] blob with the kind's
//! label; the host that relays it learns nothing but its length.

use aws_lc_rs::{agreement, digest};
use zeroize::Zeroizing;

use crate::{
    error::{CustodyError, Result},
    seal::{P384PublicKey, open_with, seal_to},
};

/// HKDF info and AAD prefix of a delivered SigV4 credential secret.
pub const LABEL_CREDENTIAL: &[u8] = b"ekms/v1/credential";
/// Version byte inside the AAD.
pub const DELIVERY_VERSION: u8 = 1;
/// Longest id (an access key id) a delivery names.
pub const MAX_DELIVERY_ID_LEN: usize = 128;
/// Longest receiver nonce (an attestation document holds at most 512 bytes of ours).
pub const MAX_DELIVERY_NONCE_LEN: usize = 512;

/// What kind of secret is delivered: it picks the label and the words of the user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretKind {
    /// A SigV4 secret access key; the id is its access key id.
    Credential,
}

impl SecretKind {
    /// HKDF info and AAD prefix.
    #[must_use]
    pub fn label(self) -> &'static [u8] {
        match self {
            Self::Credential => LABEL_CREDENTIAL,
        }
    }

    /// The word naming the kind in the attested user data.
    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            Self::Credential => "credential",
        }
    }

    /// The name of the id in the attested user data.
    #[must_use]
    pub fn id_field(self) -> &'static str {
        match self {
            Self::Credential => "akid",
        }
    }
}

/// What one delivered secret is bound to: kind, domain, id and the receiver's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    kind: SecretKind,
    domain: [u8; 8],
    id: String,
    nonce: Vec<u8>,
}

impl Delivery {
    /// A delivery of `kind` for `domain` (its 8-byte id), naming `id` (1 to 128 ASCII letters and
    /// digits), answering the receiver's `nonce` (1 to 512 bytes).
    pub fn new(kind: SecretKind, domain: [u8; 8], id: &str, nonce: &[u8]) -> Result<Self> {
        if id.is_empty()
            || id.len() > MAX_DELIVERY_ID_LEN
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(CustodyError::Malformed("delivery id"));
        }
        if nonce.is_empty() || nonce.len() > MAX_DELIVERY_NONCE_LEN {
            return Err(CustodyError::Malformed("delivery nonce"));
        }
        Ok(Self {
            kind,
            domain,
            id: id.to_owned(),
            nonce: nonce.to_vec(),
        })
    }

    /// A credential delivery: `akid`'s secret for `domain`, answering `nonce`.
    pub fn credential(domain: [u8; 8], akid: &str, nonce: &[u8]) -> Result<Self> {
        Self::new(SecretKind::Credential, domain, akid, nonce)
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The domain id.
    #[must_use]
    pub fn domain(&self) -> [u8; 8] {
        self.domain
    }

    /// The id (access key id).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The receiver's nonce.
    #[must_use]
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    /// label ‖ version ‖ domain (8) ‖ id length (1) ‖ id ‖ nonce length (2, big endian) ‖ nonce.
    #[must_use]
    pub fn aad(&self) -> Vec<u8> {
        let label = self.kind.label();
        let mut aad = Vec::with_capacity(label.len() + 12 + self.id.len() + self.nonce.len());
        aad.extend_from_slice(label);
        aad.push(DELIVERY_VERSION);
        aad.extend_from_slice(&self.domain);
        // Both lengths were bounded in `new` (≤ 128 and ≤ 512).
        aad.push(u8::try_from(self.id.len()).unwrap_or(u8::MAX));
        aad.extend_from_slice(self.id.as_bytes());
        aad.extend_from_slice(
            &u16::try_from(self.nonce.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        aad.extend_from_slice(&self.nonce);
        aad
    }

    /// Encrypts `secret` to `recipient`, bound to this delivery.
    pub fn seal(&self, recipient: &P384PublicKey, secret: &[u8]) -> Result<Vec<u8>> {
        seal_to(recipient, self.kind.label(), &self.aad(), secret)
    }

    /// Opens a blob made by [`Delivery::seal`] for the same delivery. Every failure is the opaque
    /// [`CustodyError::DecryptFailed`] (or an unknown version).
    pub fn open(
        &self,
        private_key: &agreement::PrivateKey,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        open_with(private_key, self.kind.label(), &self.aad(), sealed)
    }

    /// The user data of the attestation document that vouches for `sealed`:
    /// `ekms/v1 credential domain=<16 hex> akid=<AKID> digest=<SHA-256 of sealed, hex>`.
    #[must_use]
    pub fn user_data(&self, sealed: &[u8]) -> String {
        format!(
            "ekms/v1 {} domain={} {}={} digest={}",
            self.kind.word(),
            hex::encode(self.domain),
            self.kind.id_field(),
            self.id,
            sealed_digest_hex(sealed)
        )
    }

    /// Checks that a verified document's user data vouches for exactly `sealed` under this
    /// delivery (kind, domain, id, digest).
    pub fn check_user_data(&self, sealed: &[u8], user_data: Option<&[u8]>) -> Result<()> {
        let expected = self.user_data(sealed);
        if user_data == Some(expected.as_bytes()) {
            return Ok(());
        }
        Err(CustodyError::NotAttested {
            expected,
            actual: user_data.map_or_else(
                || "none".to_owned(),
                |u| String::from_utf8_lossy(u).into_owned(),
            ),
        })
    }
}

/// SHA-256 of a sealed secret, lower-case hex: what the attested user data names.
#[must_use]
pub fn sealed_digest_hex(sealed: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CustodianKey;

    fn delivery() -> Delivery {
        Delivery::credential([7; 8], "EKMSABCDEFGHIJKLMNOP", &[1; 32]).unwrap()
    }

    #[test]
    fn opens_only_with_the_right_key_and_binding() {
        let k = CustodianKey::generate().unwrap();
        let other = CustodianKey::generate().unwrap();
        let d = delivery();
        let sealed = d.seal(k.public_key().key(), b"s3cr3t").unwrap();
        assert_eq!(&d.open(k.agreement_key(), &sealed).unwrap()[..], b"s3cr3t");
        let refused = |r: Result<Zeroizing<Vec<u8>>>| matches!(r, Err(CustodyError::DecryptFailed));
        assert!(refused(d.open(other.agreement_key(), &sealed)));
        for wrong in [
            Delivery::credential([8; 8], "EKMSABCDEFGHIJKLMNOP", &[1; 32]).unwrap(),
            Delivery::credential([7; 8], "EKMSABCDEFGHIJKLMNOQ", &[1; 32]).unwrap(),
            Delivery::credential([7; 8], "EKMSABCDEFGHIJKLMNOP", &[2; 32]).unwrap(),
        ] {
            assert!(refused(wrong.open(k.agreement_key(), &sealed)), "{wrong:?}");
        }
        // Another use of the same key (a share's label) does not open it either.
        assert!(refused(open_with(
            k.agreement_key(),
            crate::LABEL_SHARE_TO_CUSTODIAN,
            &d.aad(),
            &sealed
        )));
    }

    #[test]
    fn aad_layout() {
        let d = delivery();
        let aad = d.aad();
        assert_eq!(&aad[..18], LABEL_CREDENTIAL);
        assert_eq!(aad[18], DELIVERY_VERSION);
        assert_eq!(&aad[19..27], &[7; 8]);
        assert_eq!(aad[27], 20);
        assert_eq!(&aad[28..48], b"EKMSABCDEFGHIJKLMNOP");
        assert_eq!(&aad[48..50], &[0, 32]);
        assert_eq!(&aad[50..], &[1; 32]);
    }

    #[test]
    fn user_data_names_domain_id_and_digest() {
        let d = delivery();
        let ud = d.user_data(b"blob");
        assert_eq!(
            ud,
            format!(
                "ekms/v1 credential domain=0707070707070707 akid=EKMSABCDEFGHIJKLMNOP digest={}",
                sealed_digest_hex(b"blob")
            )
        );
        d.check_user_data(b"blob", Some(ud.as_bytes())).unwrap();
        assert!(matches!(
            d.check_user_data(b"blob2", Some(ud.as_bytes())),
            Err(CustodyError::NotAttested { .. })
        ));
        assert!(matches!(
            d.check_user_data(b"blob", None),
            Err(CustodyError::NotAttested { .. })
        ));
    }

    #[test]
    fn ids_and_nonces_are_bounded() {
        for id in ["", "EKMS ABC", "EKMS/ABC", &"A".repeat(129)] {
            assert!(matches!(
                Delivery::credential([0; 8], id, &[1]),
                Err(CustodyError::Malformed("delivery id"))
            ));
        }
        for nonce in [&[][..], &[0; 513][..]] {
            assert!(matches!(
                Delivery::credential([0; 8], "A", nonce),
                Err(CustodyError::Malformed("delivery nonce"))
            ));
        }
        Delivery::credential([0; 8], &"A".repeat(128), &[0; 512]).unwrap();
    }
}
