//! Attested delivery of a secret to a receiver: the enclave encrypts the secret to a public key
//! that the receiver made (an admin's key, or a one-off key of the receiver's tool) and returns it
//! with an attestation document over the receiver's nonce whose user data names the domain, the
//! id and the digest of the sealed bytes. The host relays both and learns nothing; the receiver
//! verifies the document before it decrypts (DESIGN.md, "The host knows no secret").
//!
//! Never returns or logs the plaintext secret.

use ekms_custody::{CustodianPublicKey, Delivery, P384PublicKey, SecretKind};

use crate::{EnclaveError, attest::Attestor};

/// A sealed secret and the document that vouches for it.
pub struct Delivered {
    /// The secret, encrypted to the receiver's key (a `seal_to` blob, see docs/custody.md).
    pub sealed: Vec<u8>,
    /// The attestation document (untagged COSE_Sign1).
    pub document: Vec<u8>,
}

impl std::fmt::Debug for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Delivered({} sealed bytes, {} document bytes)",
            self.sealed.len(),
            self.document.len()
        )
    }
}

/// Parses a receiver's public key file (the custodian key JSON format, which a one-off key of a
/// receiver's tool also uses).
pub fn recipient(public_key_json: &str) -> Result<P384PublicKey, EnclaveError> {
    CustodianPublicKey::from_json(public_key_json)
        .map(|k| k.key().clone())
        .map_err(|_| EnclaveError::BadInput)
}

/// Encrypts `secret` of `kind` named `id` in `domain` to `recipient`, bound to the receiver's
/// `nonce`, and attests to it: the document's nonce is the receiver's, its user data is
/// [`Delivery::user_data`] of the sealed bytes.
pub fn seal_secret_for(
    attestor: &Attestor,
    recipient: &P384PublicKey,
    nonce: &[u8],
    domain: [u8; 8],
    what: (SecretKind, &str),
    secret: &[u8],
) -> Result<Delivered, EnclaveError> {
    let (kind, id) = what;
    let delivery = Delivery::new(kind, domain, id, nonce).map_err(|_| EnclaveError::BadInput)?;
    let sealed = delivery
        .seal(recipient, secret)
        .map_err(|_| EnclaveError::Crypto)?;
    let document = attestor.document(nonce, delivery.user_data(&sealed).as_bytes())?;
    Ok(Delivered { sealed, document })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_attestation::{SimulationCa, ValidationTime, verify};
    use ekms_custody::CustodianKey;

    #[test]
    fn the_receiver_opens_what_the_document_vouches_for() {
        let ca = SimulationCa::generate().unwrap();
        let root = ca.trust_root().unwrap();
        let attestor = crate::core::test_attestor_for(&ca, b"enclave");
        let admin = CustodianKey::generate().unwrap();
        let other = CustodianKey::generate().unwrap();
        let to = recipient(&admin.public_key().to_json().unwrap()).unwrap();
        let nonce = [5u8; 32];
        let d = seal_secret_for(
            &attestor,
            &to,
            &nonce,
            [1; 8],
            (SecretKind::Credential, "EKMSAKID"),
            b"the secret",
        )
        .unwrap();
        assert!(!format!("{d:?}").contains("secret"));
        let v = verify(&d.document, &root, ValidationTime::DocumentTimestamp).unwrap();
        assert_eq!(v.doc().nonce(), Some(&nonce[..]));
        let delivery = Delivery::credential([1; 8], "EKMSAKID", &nonce).unwrap();
        let ud = std::str::from_utf8(v.doc().user_data().unwrap()).unwrap();
        assert_eq!(
            ud,
            format!(
                "ekms/v1 credential domain=0101010101010101 akid=EKMSAKID digest={}",
                ekms_custody::sealed_digest_hex(&d.sealed)
            )
        );
        delivery
            .check_user_data(&d.sealed, v.doc().user_data())
            .unwrap();
        assert_eq!(
            &delivery.open(admin.agreement_key(), &d.sealed).unwrap()[..],
            b"the secret"
        );
        // Only the admin key opens it, and only under this domain, id and nonce.
        assert!(delivery.open(other.agreement_key(), &d.sealed).is_err());
        for wrong in [
            Delivery::credential([2; 8], "EKMSAKID", &nonce).unwrap(),
            Delivery::credential([1; 8], "EKMSOTHER", &nonce).unwrap(),
            Delivery::credential([1; 8], "EKMSAKID", &[6; 32]).unwrap(),
        ] {
            assert!(wrong.open(admin.agreement_key(), &d.sealed).is_err());
        }
    }

    #[test]
    fn bad_inputs_are_refused_before_anything_is_sealed() {
        let attestor = crate::core::test_attestor();
        let admin = CustodianKey::generate().unwrap();
        assert!(matches!(
            recipient("{\"kind\":\"nope\"}"),
            Err(EnclaveError::BadInput)
        ));
        let to = admin.public_key().key().clone();
        for (nonce, id) in [(&[][..], "A"), (&[0; 513][..], "A"), (&[1][..], "a b")] {
            assert!(matches!(
                seal_secret_for(
                    &attestor,
                    &to,
                    nonce,
                    [0; 8],
                    (SecretKind::Credential, id),
                    b"x"
                ),
                Err(EnclaveError::BadInput)
            ));
        }
    }
}
