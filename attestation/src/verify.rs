//! Verification of an attestation document: ES384 signature, certificate chain to a pinned root.
//!
//! The caller passes the trust root and the time; this module never reads a clock. PCR, nonce
//! and freshness checks are the [`crate::PcrPolicy`]'s job, on the [`VerifiedDoc`] returned here.

use std::ops::Deref;

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};

use crate::chain::verify_chain;
use crate::doc::{AttestationDoc, UnixMillis, decode};
use crate::error::{Error, Result};
use crate::root::{RootKind, TrustRoot};

/// The time at which certificate validity periods are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationTime {
    /// The document's own (signed) timestamp. Proves the chain was valid when the NSM signed;
    /// pair it with a [`crate::PcrPolicy`] maximum age against your own "now".
    DocumentTimestamp,
    /// An explicit time, usually the verifier's "now".
    At(UnixMillis),
}

impl From<UnixMillis> for ValidationTime {
    fn from(at: UnixMillis) -> Self {
        Self::At(at)
    }
}

/// A document whose signature and certificate chain have been verified.
///
/// Derefs to the [`AttestationDoc`]. Check [`VerifiedDoc::is_simulation`] and say so loudly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDoc {
    doc: AttestationDoc,
    root: RootKind,
    checked_at: UnixMillis,
}

impl VerifiedDoc {
    /// The verified payload.
    #[must_use]
    pub fn doc(&self) -> &AttestationDoc {
        &self.doc
    }

    /// The kind of root the chain ended in.
    #[must_use]
    pub fn root_kind(&self) -> RootKind {
        self.root
    }

    /// True if verified against a simulation root: the document proves nothing about hardware.
    #[must_use]
    pub fn is_simulation(&self) -> bool {
        self.root == RootKind::Simulation
    }

    /// The time the certificate validity periods were checked at.
    #[must_use]
    pub fn checked_at(&self) -> UnixMillis {
        self.checked_at
    }
}

impl Deref for VerifiedDoc {
    type Target = AttestationDoc;

    fn deref(&self) -> &AttestationDoc {
        &self.doc
    }
}

/// Verifies a Nitro attestation document (tagged or untagged COSE_Sign1).
///
/// Checks, in order: syntax and AWS's field limits; that `cabundle[0]` is byte-for-byte the
/// pinned `root`; each certificate's algorithm, critical extensions and validity at `at`; CA
/// constraints and signatures down to the leaf; then the ES384 signature over the original
/// protected header and payload.
pub fn verify(bytes: &[u8], root: &TrustRoot, at: ValidationTime) -> Result<VerifiedDoc> {
    let envelope = decode(bytes)?;
    let checked_at = match at {
        ValidationTime::DocumentTimestamp => envelope.doc.timestamp,
        ValidationTime::At(t) => t,
    };
    let leaf_key = verify_chain(
        root.der(),
        root.kind().label(),
        &envelope.doc.cabundle,
        &envelope.doc.certificate,
        checked_at,
    )?;
    envelope
        .sign1
        .verify_signature(b"", |signature, signed| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &leaf_key).verify(signed, signature)
        })
        .map_err(|_| Error::DocumentSignatureInvalid)?;
    Ok(VerifiedDoc {
        doc: envelope.doc,
        root: root.kind(),
        checked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::parse_rfc3339;
    use crate::testutil::{REAL_DOC, REAL_PCR0, REAL_TS, signed_custom, sim_ca};

    fn aws() -> TrustRoot {
        TrustRoot::aws_nitro().unwrap()
    }

    fn at(s: &str) -> ValidationTime {
        ValidationTime::At(parse_rfc3339(s).unwrap())
    }

    #[test]
    fn real_document_verifies_at_its_own_time_against_the_aws_root() {
        let v = verify(REAL_DOC, &aws(), ValidationTime::DocumentTimestamp).unwrap();
        assert_eq!(v.timestamp(), REAL_TS);
        assert_eq!(v.checked_at(), REAL_TS);
        assert_eq!(v.module_id(), "i-07e25f3bada361dec-enc0181d3dff86da785");
        assert_eq!(v.pcr(crate::PcrIndex::IMAGE).unwrap().to_hex(), REAL_PCR0);
        assert_eq!(v.pcrs().len(), 16);
        assert_eq!(v.cabundle().len(), 4);
        assert_eq!(v.nonce(), None);
        assert!(v.public_key().is_some());
        assert_eq!(v.user_data().map(<[u8]>::len), Some(32));
        assert_eq!(v.root_kind(), RootKind::AwsNitro);
        assert!(!v.is_simulation());
        assert!(!v.is_debug_mode());
    }

    #[test]
    fn real_document_verifies_at_an_explicit_time_inside_the_leaf_validity() {
        verify(REAL_DOC, &aws(), at("2022-07-06T14:18:22.484Z")).unwrap();
        verify(REAL_DOC, &aws(), at("2022-07-06T17:18:22Z")).unwrap();
    }

    #[test]
    fn tagged_form_is_accepted_too() {
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(REAL_DOC);
        let v = verify(&tagged, &aws(), ValidationTime::DocumentTimestamp).unwrap();
        assert_eq!(v.timestamp(), REAL_TS);
    }

    #[test]
    fn other_tags_are_refused() {
        let mut tagged = vec![0xd8, 0x62];
        tagged.extend_from_slice(REAL_DOC);
        let err = verify(&tagged, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(matches!(err, Error::UnexpectedTag(98)), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut doc = REAL_DOC.to_vec();
        doc.push(0);
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(
            matches!(err, Error::TrailingBytes { what: "document" }),
            "{err}"
        );
    }

    #[test]
    fn a_bit_flip_in_the_payload_breaks_the_signature() {
        let mut doc = REAL_DOC.to_vec();
        let pos = doc.windows(10).position(|w| w == b"i-07e25f3b").unwrap();
        doc[pos + 5] ^= 0x01;
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(matches!(err, Error::DocumentSignatureInvalid), "{err}");
    }

    #[test]
    fn a_bit_flip_in_the_signature_is_refused() {
        let mut doc = REAL_DOC.to_vec();
        let last = doc.len() - 1;
        doc[last] ^= 0x80;
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(matches!(err, Error::DocumentSignatureInvalid), "{err}");
    }

    #[test]
    fn a_bit_flip_in_a_certificate_signature_is_refused() {
        let mut doc = REAL_DOC.to_vec();
        // The leaf certificate's last byte is part of its ECDSA signature; find the leaf
        // (639 bytes, introduced by `59 02 7f`) and flip its final byte.
        let pos = doc
            .windows(3)
            .position(|w| w == [0x59, 0x02, 0x7f])
            .unwrap();
        doc[pos + 3 + 639 - 1] ^= 0x01;
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(
            matches!(
                err,
                Error::CertificateSignatureInvalid { position: 4 }
                    | Error::MalformedCertificate { position: 4, .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn expired_leaf_is_refused() {
        let err = verify(REAL_DOC, &aws(), at("2022-07-06T17:18:23Z")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate 4 expired at 2022-07-06T17:18:22Z; checked at 2022-07-06T17:18:23Z"
        );
        assert!(
            matches!(err, Error::CertificateExpired { position: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn not_yet_valid_time_is_refused() {
        let err = verify(REAL_DOC, &aws(), at("2022-07-06T14:18:18Z")).unwrap_err();
        assert!(
            matches!(err, Error::CertificateNotYetValid { position: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn another_root_with_the_same_name_is_refused() {
        // A different key under CN=aws.nitro-enclaves, pinned as the root.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Amazon");
        dn.push(rcgen::DnType::OrganizationalUnitName, "AWS");
        dn.push(rcgen::DnType::CommonName, "aws.nitro-enclaves");
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let fake = params.self_signed(&key).unwrap();
        let fake_root = TrustRoot::simulation_never_in_production(&fake.pem()).unwrap();
        let err = verify(REAL_DOC, &fake_root, ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(matches!(err, Error::RootMismatch { .. }), "{err}");

        // And a document whose bundle starts with the same-named fake root is refused by the
        // real pinned root.
        let ca = sim_ca();
        let doc = signed_custom(&ca, REAL_TS, |d| {
            d.cabundle[0] = fake.der().to_vec();
        });
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(matches!(err, Error::RootMismatch { .. }), "{err}");

        // Even with the genuine AWS root bytes in cabundle[0], a chain really issued by another
        // key fails at the first signature.
        let doc = signed_custom(&ca, REAL_TS, |d| {
            d.cabundle[0] = aws().der().to_vec();
        });
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(
            matches!(
                err,
                Error::IssuerMismatch { position: 1 }
                    | Error::CertificateSignatureInvalid { position: 1 }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_empty_and_random_inputs_are_refused() {
        for cut in [1, 10, 100, REAL_DOC.len() / 2, REAL_DOC.len() - 1] {
            let err =
                verify(&REAL_DOC[..cut], &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
            assert!(
                matches!(err, Error::MalformedCose { .. }),
                "cut {cut}: {err}"
            );
        }
        assert!(matches!(
            verify(&[], &aws(), ValidationTime::DocumentTimestamp),
            Err(Error::Empty)
        ));
        let random: Vec<u8> = (0..2000u32)
            .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[1])
            .collect();
        assert!(verify(&random, &aws(), ValidationTime::DocumentTimestamp).is_err());
        let huge = vec![0u8; crate::MAX_DOCUMENT_LEN + 1];
        assert!(matches!(
            verify(&huge, &aws(), ValidationTime::DocumentTimestamp),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn mock_documents_pass_with_the_simulation_root_and_fail_with_the_aws_root() {
        let ca = sim_ca();
        let root = ca.trust_root().unwrap();
        let doc = signed_custom(&ca, REAL_TS, |_| {});
        let v = verify(&doc, &root, ValidationTime::DocumentTimestamp).unwrap();
        assert!(v.is_simulation());
        assert_eq!(v.root_kind(), RootKind::Simulation);
        let err = verify(&doc, &aws(), ValidationTime::DocumentTimestamp).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RootMismatch {
                    expected: "AWS Nitro"
                }
            ),
            "{err}"
        );
    }
}
