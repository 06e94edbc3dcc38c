//! Trust roots: the pinned AWS Nitro root, or a simulation root chosen explicitly.
//!
//! A simulation root is never picked up silently: it is only made by a constructor whose name
//! says "never in production", and every document verified against it is marked.

use x509_cert::der::pem;

use crate::chain::ParsedCert;
use crate::error::{Error, Result};

/// The AWS Nitro Enclaves root certificate (CN=aws.nitro-enclaves), PEM.
///
/// From <https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip>; SHA-256 of
/// its DER is `641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b`
/// (checked by a test).
pub const AWS_NITRO_ROOT_PEM: &str = include_str!("../testdata/aws-nitro-root-g1.pem");

/// Which kind of root a document was verified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootKind {
    /// The real AWS Nitro root: the document came from a Nitro Enclave's NSM.
    AwsNitro,
    /// A locally generated simulation root: the document proves nothing about real hardware.
    Simulation,
}

impl RootKind {
    /// A short name for reports and errors.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::AwsNitro => "AWS Nitro",
            Self::Simulation => "simulation (NEVER IN PRODUCTION)",
        }
    }
}

/// A pinned root certificate that attestation chains must start from.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    der: Vec<u8>,
    kind: RootKind,
}

impl TrustRoot {
    /// The built-in AWS Nitro root.
    pub fn aws_nitro() -> Result<Self> {
        Ok(Self {
            der: pem_to_der(AWS_NITRO_ROOT_PEM)?,
            kind: RootKind::AwsNitro,
        })
    }

    /// A simulation root (e.g. a [`crate::SimulationCa`]'s root). NEVER use in production:
    /// documents verified against it prove nothing about real enclave hardware.
    pub fn simulation_never_in_production(pem: &str) -> Result<Self> {
        let der = pem_to_der(pem)?;
        tracing::warn!("attestation: using a SIMULATION trust root; never in production");
        Ok(Self {
            der,
            kind: RootKind::Simulation,
        })
    }

    /// A root given by an operator: the AWS root if it is byte-for-byte the AWS root,
    /// otherwise a simulation root, which is refused unless `allow_simulation` is set.
    pub fn from_operator_pem(pem: &str, allow_simulation: bool) -> Result<Self> {
        let der = pem_to_der(pem)?;
        if der == Self::aws_nitro()?.der {
            return Self::aws_nitro();
        }
        if !allow_simulation {
            return Err(Error::SimulationRootNotAllowed);
        }
        Self::simulation_never_in_production(pem)
    }

    /// The root's DER.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether this is the AWS root or a simulation root.
    #[must_use]
    pub fn kind(&self) -> RootKind {
        self.kind
    }
}

/// Decodes a PEM certificate (keeping its exact DER) and checks it parses as X.509.
fn pem_to_der(text: &str) -> Result<Vec<u8>> {
    let (label, der) = pem::decode_vec(text.trim().as_bytes())
        .map_err(|e| Error::InvalidTrustRoot(e.to_string()))?;
    if label != "CERTIFICATE" {
        return Err(Error::InvalidTrustRoot(format!(
            "PEM label is {label:?}, expected \"CERTIFICATE\""
        )));
    }
    ParsedCert::parse(&der, 0).map_err(|e| Error::InvalidTrustRoot(e.to_string()))?;
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_root_is_the_published_aws_root() {
        let root = TrustRoot::aws_nitro().unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, root.der());
        assert_eq!(
            hex::encode(digest.as_ref()),
            "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
        );
        assert_eq!(root.kind(), RootKind::AwsNitro);
    }

    #[test]
    fn operator_roots_are_aws_only_if_identical_and_simulation_only_if_allowed() {
        let aws = TrustRoot::from_operator_pem(AWS_NITRO_ROOT_PEM, false).unwrap();
        assert_eq!(aws.kind(), RootKind::AwsNitro);
        let sim_pem = crate::testutil::sim_ca().root_pem().unwrap();
        assert!(matches!(
            TrustRoot::from_operator_pem(&sim_pem, false),
            Err(Error::SimulationRootNotAllowed)
        ));
        let sim = TrustRoot::from_operator_pem(&sim_pem, true).unwrap();
        assert_eq!(sim.kind(), RootKind::Simulation);
    }

    #[test]
    fn garbage_roots_are_refused() {
        for pem in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = TrustRoot::simulation_never_in_production(pem).unwrap_err();
            assert!(matches!(err, Error::InvalidTrustRoot(_)), "{pem:?}: {err}");
        }
    }
}
