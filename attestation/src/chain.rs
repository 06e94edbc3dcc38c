//! X.509 chain building from a pinned root through `cabundle` to the leaf certificate.
//!
//! Every signature, validity period and CA constraint is checked at a time the caller passes;
//! there is no hidden clock. The document's own `cabundle[0]` is never trusted as a root.

use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
use x509_cert::Certificate;
use x509_cert::der::asn1::{AnyRef, ObjectIdentifier};
use x509_cert::der::oid::db::rfc5280::{ID_CE_BASIC_CONSTRAINTS, ID_CE_KEY_USAGE};
use x509_cert::der::oid::db::rfc5912::{ECDSA_WITH_SHA_384, ID_EC_PUBLIC_KEY, SECP_384_R_1};
use x509_cert::der::{Decode as _, Reader as _};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use crate::UnixMillis;
use crate::error::{Error, Result};

/// A parsed certificate with the exact bytes its signature covers.
pub(crate) struct ParsedCert<'a> {
    /// The original to-be-signed bytes, as they appear in the input.
    tbs: &'a [u8],
    pub(crate) cert: Certificate,
}

impl<'a> ParsedCert<'a> {
    /// Parses one DER certificate, `position` naming it in errors.
    pub(crate) fn parse(der: &'a [u8], position: usize) -> Result<Self> {
        let malformed = |e: x509_cert::der::Error| Error::MalformedCertificate {
            position,
            reason: e.to_string(),
        };
        let cert = Certificate::from_der(der).map_err(malformed)?;
        // The signature covers the TBSCertificate bytes as received; take them from the
        // input rather than re-encoding the parsed structure.
        let tbs = AnyRef::from_der(der).map_err(malformed)?.sequence(|r| {
            let tbs = r.tlv_bytes()?;
            r.tlv_bytes()?;
            r.tlv_bytes()?;
            Ok::<_, x509_cert::der::Error>(tbs)
        });
        Ok(Self {
            tbs: tbs.map_err(malformed)?,
            cert,
        })
    }

    /// The uncompressed P-384 point of the subject key, refusing any other key type.
    pub(crate) fn p384_public_key(&self, position: usize) -> Result<&[u8]> {
        let spki = self.cert.tbs_certificate().subject_public_key_info();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP_384_R_1) {
            return Err(Error::UnsupportedCertificateAlgorithm {
                position,
                what: "subject key must be EC P-384",
            });
        }
        spki.subject_public_key
            .as_bytes()
            .ok_or(Error::UnsupportedCertificateAlgorithm {
                position,
                what: "subject key bit string has unused bits",
            })
    }

    fn basic_constraints(&self, position: usize) -> Result<Option<BasicConstraints>> {
        self.cert
            .tbs_certificate()
            .get_extension::<BasicConstraints>()
            .map(|o| o.map(|(_, bc)| bc))
            .map_err(|e| Error::MalformedCertificate {
                position,
                reason: format!("basicConstraints: {e}"),
            })
    }

    fn key_usage(&self, position: usize) -> Result<Option<KeyUsage>> {
        self.cert
            .tbs_certificate()
            .get_extension::<KeyUsage>()
            .map(|o| o.map(|(_, ku)| ku))
            .map_err(|e| Error::MalformedCertificate {
                position,
                reason: format!("keyUsage: {e}"),
            })
    }

    fn check_algorithms(&self, position: usize) -> Result<()> {
        let outer = self.cert.signature_algorithm();
        let inner = self.cert.tbs_certificate().signature();
        if outer.oid != ECDSA_WITH_SHA_384 || outer.parameters.is_some() || outer != inner {
            return Err(Error::UnsupportedCertificateAlgorithm {
                position,
                what: "signature must be ecdsa-with-SHA384",
            });
        }
        Ok(())
    }

    fn check_validity(&self, position: usize, at: UnixMillis) -> Result<()> {
        let validity = self.cert.tbs_certificate().validity();
        let not_before = validity.not_before.to_unix_duration().as_secs();
        let not_after = validity.not_after.to_unix_duration().as_secs();
        let at_unix = at.as_secs();
        if at_unix < not_before {
            return Err(Error::CertificateNotYetValid {
                position,
                not_before_unix: not_before,
                at_unix,
            });
        }
        if at_unix > not_after {
            return Err(Error::CertificateExpired {
                position,
                not_after_unix: not_after,
                at_unix,
            });
        }
        Ok(())
    }

    fn check_critical_extensions(&self, position: usize) -> Result<()> {
        let known = [ID_CE_BASIC_CONSTRAINTS, ID_CE_KEY_USAGE];
        for ext in self
            .cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
        {
            if ext.critical && !known.contains(&ext.extn_id) {
                return Err(Error::UnknownCriticalExtension {
                    position,
                    oid: ext.extn_id.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Checks that `self` (at `position`) may issue certificates, with `below` intermediate
    /// CAs under it before the leaf.
    fn check_issuer(&self, position: usize, below: usize) -> Result<()> {
        let bc = self.basic_constraints(position)?;
        let Some(bc) = bc.filter(|bc| bc.ca) else {
            return Err(Error::NotCa { position });
        };
        if let Some(max) = bc.path_len_constraint
            && below > usize::from(max)
        {
            return Err(Error::PathLenExceeded { position });
        }
        if let Some(ku) = self.key_usage(position)?
            && !ku.key_cert_sign()
        {
            return Err(Error::KeyUsageMissing {
                position,
                usage: "keyCertSign",
            });
        }
        Ok(())
    }

    /// Checks that `issuer` signed `self`.
    fn check_signed_by(&self, position: usize, issuer: &Self) -> Result<()> {
        if self.cert.tbs_certificate().issuer() != issuer.cert.tbs_certificate().subject() {
            return Err(Error::IssuerMismatch { position });
        }
        let key = issuer.p384_public_key(position.saturating_sub(1))?;
        let signature = self
            .cert
            .signature()
            .as_bytes()
            .ok_or(Error::CertificateSignatureInvalid { position })?;
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, key)
            .verify(self.tbs, signature)
            .map_err(|_| Error::CertificateSignatureInvalid { position })
    }
}

/// Verifies `pinned_root` → `bundle[1..]` → `leaf` and returns the leaf's P-384 public key.
///
/// `bundle[0]` must be byte-for-byte the pinned root: comparing the whole DER (not only name
/// and key) means a root with the same name but another key, extensions or validity is refused,
/// and there is no second parser whose view of "same" could differ from ours.
pub(crate) fn verify_chain(
    pinned_root: &[u8],
    root_label: &'static str,
    bundle: &[Vec<u8>],
    leaf: &[u8],
    at: UnixMillis,
) -> Result<Vec<u8>> {
    match bundle.first() {
        Some(first) if first.as_slice() == pinned_root => {}
        _ => {
            return Err(Error::RootMismatch {
                expected: root_label,
            });
        }
    }
    let ders: Vec<&[u8]> = bundle
        .iter()
        .map(Vec::as_slice)
        .chain(std::iter::once(leaf))
        .collect();
    let certs = ders
        .iter()
        .enumerate()
        .map(|(position, der)| ParsedCert::parse(der, position))
        .collect::<Result<Vec<_>>>()?;
    let leaf_position = certs.len().saturating_sub(1);
    for (position, cert) in certs.iter().enumerate() {
        cert.check_algorithms(position)?;
        cert.check_critical_extensions(position)?;
        cert.check_validity(position, at)?;
    }
    for (position, pair) in certs.windows(2).enumerate() {
        let [issuer, subject] = pair else {
            continue;
        };
        // Intermediate CAs strictly between the issuer and the leaf.
        let below = leaf_position.saturating_sub(position).saturating_sub(2);
        issuer.check_issuer(position, below)?;
        subject.check_signed_by(position + 1, issuer)?;
    }
    let leaf_cert = certs.last().ok_or(Error::MissingField("certificate"))?;
    if let Some(ku) = leaf_cert.key_usage(leaf_position)?
        && !ku.digital_signature()
    {
        return Err(Error::KeyUsageMissing {
            position: leaf_position,
            usage: "digitalSignature",
        });
    }
    leaf_cert.p384_public_key(leaf_position).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simca::P384Signer;
    use rcgen::{
        BasicConstraints as Bc, CertificateParams, CustomExtension, DistinguishedName, DnType,
        IsCa, Issuer, KeyPair, KeyUsagePurpose as Ku, PKCS_ECDSA_P256_SHA256,
    };

    const AT: UnixMillis = UnixMillis::new(1_700_000_000_000);

    #[derive(Clone, Copy)]
    enum Role {
        Ca,
        CaPathLen(u8),
        Leaf,
    }
    use Role::{Ca, CaPathLen, Leaf};

    fn params(cn: &str, role: Role, ku: Vec<Ku>) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = match role {
            Ca => IsCa::Ca(Bc::Unconstrained),
            CaPathLen(n) => IsCa::Ca(Bc::Constrained(n)),
            Leaf => IsCa::ExplicitNoCa,
        };
        p.key_usages = ku;
        p.not_before = time::OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        p
    }

    fn ca_ku() -> Vec<Ku> {
        vec![Ku::KeyCertSign, Ku::CrlSign]
    }

    /// Builds root → intermediates... → leaf from (params) with fresh P-384 keys.
    fn chain(mut specs: Vec<CertificateParams>) -> (Vec<Vec<u8>>, Vec<u8>) {
        let root_params = specs.remove(0);
        let root_key = P384Signer::generate().unwrap().0;
        let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let mut bundle = vec![root];
        let mut issuer_params = root_params;
        let mut issuer_key = root_key;
        let n = specs.len();
        for (i, p) in specs.into_iter().enumerate() {
            let key = P384Signer::generate().unwrap().0;
            let cert = p
                .signed_by(&key, &Issuer::from_params(&issuer_params, &issuer_key))
                .unwrap()
                .der()
                .to_vec();
            if i + 1 == n {
                return (bundle, cert);
            }
            bundle.push(cert);
            issuer_params = p;
            issuer_key = key;
        }
        unreachable!()
    }

    fn run(bundle: &[Vec<u8>], leaf: &[u8]) -> Result<Vec<u8>> {
        verify_chain(&bundle[0], "test", bundle, leaf, AT)
    }

    #[test]
    fn a_well_formed_chain_verifies() {
        let (bundle, leaf) = chain(vec![
            params("root", Ca, ca_ku()),
            params("int", CaPathLen(0), ca_ku()),
            params("leaf", Leaf, vec![Ku::DigitalSignature]),
        ]);
        assert_eq!(run(&bundle, &leaf).unwrap().len(), 97);
    }

    #[test]
    fn issuer_without_ca_flag_is_refused() {
        let (bundle, leaf) = chain(vec![
            params("root", Ca, ca_ku()),
            params("int", Leaf, ca_ku()),
            params("leaf", Leaf, vec![]),
        ]);
        assert!(matches!(
            run(&bundle, &leaf),
            Err(Error::NotCa { position: 1 })
        ));
    }

    #[test]
    fn path_length_is_enforced() {
        let (bundle, leaf) = chain(vec![
            params("root", CaPathLen(0), ca_ku()),
            params("int1", Ca, ca_ku()),
            params("int2", Ca, ca_ku()),
            params("leaf", Leaf, vec![]),
        ]);
        assert!(matches!(
            run(&bundle, &leaf),
            Err(Error::PathLenExceeded { position: 0 })
        ));
    }

    #[test]
    fn key_usage_is_enforced_for_issuers_and_the_leaf() {
        let (bundle, leaf) = chain(vec![
            params("root", Ca, ca_ku()),
            params("int", Ca, vec![Ku::DigitalSignature]),
            params("leaf", Leaf, vec![]),
        ]);
        assert!(matches!(
            run(&bundle, &leaf),
            Err(Error::KeyUsageMissing {
                position: 1,
                usage: "keyCertSign"
            })
        ));
        let (bundle, leaf) = chain(vec![
            params("root", Ca, ca_ku()),
            params("leaf", Leaf, vec![Ku::KeyEncipherment]),
        ]);
        assert!(matches!(
            run(&bundle, &leaf),
            Err(Error::KeyUsageMissing {
                position: 1,
                usage: "digitalSignature"
            })
        ));
    }

    #[test]
    fn unknown_critical_extensions_are_refused() {
        let mut leaf = params("leaf", Leaf, vec![]);
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        ext.set_criticality(true);
        leaf.custom_extensions.push(ext);
        let (bundle, leaf) = chain(vec![params("root", Ca, ca_ku()), leaf]);
        assert!(matches!(
            run(&bundle, &leaf),
            Err(Error::UnknownCriticalExtension { position: 1, .. })
        ));
    }

    #[test]
    fn issuer_name_mismatch_and_wrong_signer_are_refused() {
        let root_params = params("root", Ca, ca_ku());
        let root_key = P384Signer::generate().unwrap().0;
        let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let leaf_key = P384Signer::generate().unwrap().0;
        // Issuer name says "other", signed by the root key.
        let other = params("other", Ca, ca_ku());
        let leaf = params("leaf", Leaf, vec![])
            .signed_by(&leaf_key, &Issuer::from_params(&other, &root_key))
            .unwrap();
        assert!(matches!(
            run(std::slice::from_ref(&root), leaf.der()),
            Err(Error::IssuerMismatch { position: 1 })
        ));
        // Right name, wrong key.
        let impostor = P384Signer::generate().unwrap().0;
        let leaf = params("leaf", Leaf, vec![])
            .signed_by(&leaf_key, &Issuer::from_params(&root_params, &impostor))
            .unwrap();
        assert!(matches!(
            run(&[root], leaf.der()),
            Err(Error::CertificateSignatureInvalid { position: 1 })
        ));
    }

    #[test]
    fn non_p384_algorithms_are_refused() {
        let root_params = params("root", Ca, ca_ku());
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let leaf_key = P384Signer::generate().unwrap().0;
        let leaf = params("leaf", Leaf, vec![])
            .signed_by(&leaf_key, &Issuer::from_params(&root_params, &root_key))
            .unwrap();
        assert!(matches!(
            run(&[root], leaf.der()),
            Err(Error::UnsupportedCertificateAlgorithm { position: 0, .. })
        ));
    }

    #[test]
    fn garbage_certificates_are_refused() {
        let (bundle, _) = chain(vec![
            params("root", Ca, ca_ku()),
            params("leaf", Leaf, vec![]),
        ]);
        assert!(matches!(
            run(&bundle, &[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(Error::MalformedCertificate { position: 1, .. })
        ));
    }

    #[test]
    fn validity_is_checked_at_the_given_time() {
        let (bundle, leaf) = chain(vec![
            params("root", Ca, ca_ku()),
            params("leaf", Leaf, vec![]),
        ]);
        let early = verify_chain(
            &bundle[0],
            "t",
            &bundle,
            &leaf,
            UnixMillis::new(1_500_000_000_000),
        );
        assert!(matches!(
            early,
            Err(Error::CertificateNotYetValid { position: 0, .. })
        ));
        let late = verify_chain(
            &bundle[0],
            "t",
            &bundle,
            &leaf,
            UnixMillis::new(1_800_000_001_000),
        );
        assert!(matches!(
            late,
            Err(Error::CertificateExpired { position: 0, .. })
        ));
        // notAfter is inclusive to the second.
        assert!(
            verify_chain(
                &bundle[0],
                "t",
                &bundle,
                &leaf,
                UnixMillis::new(1_800_000_000_999)
            )
            .is_ok()
        );
    }
}
