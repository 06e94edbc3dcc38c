//! Optional EIF signing for PCR8, with a local PEM private key and certificate only. A KMS key
//! (which the image-format crate would reach over the network) is never used: the key path is made
//! absolute, so it can never look like a KMS ARN to that crate.

use std::path::{Path, PathBuf};

use aws_nitro_enclaves_image_format::utils::{EifSigner, SignKeyData};

use crate::error::EifError;
use crate::input::require_file;

/// A signing certificate and private key, both PEM files on local disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningFiles {
    /// The X.509 certificate (PEM) whose DER hash becomes PCR8.
    pub certificate: PathBuf,
    /// The matching private key (PEM, EC P-384 as nitro-cli documents).
    pub private_key: PathBuf,
}

impl SigningFiles {
    /// Checks both files and proves the pair usable by signing a probe payload, so that the
    /// image-format crate (which `expect`s while signing) never sees a bad key or certificate.
    pub(crate) fn vet(&self) -> Result<(), EifError> {
        let signer = EifSigner::new(Some(self.key_data()?))
            .ok_or_else(|| EifError::Signing("no signer".to_owned()))?;
        signer.get_cert_der().map_err(EifError::Signing)?;
        signer
            .sign(b"ekms-eif signing probe")
            .map_err(EifError::Signing)?;
        Ok(())
    }

    /// The image-format crate's key data for this pair (local key only).
    pub(crate) fn key_data(&self) -> Result<SignKeyData, EifError> {
        require_file(&self.certificate, "signing certificate")?;
        require_file(&self.private_key, "signing private key")?;
        let key = absolute(&self.private_key)?;
        let key = key.to_str().ok_or_else(|| {
            EifError::Signing(format!("private key path {} is not UTF-8", key.display()))
        })?;
        SignKeyData::new(key, &self.certificate).map_err(EifError::Signing)
    }
}

/// `path` made absolute (it then starts with `/`, which no KMS ARN does).
fn absolute(path: &Path) -> Result<PathBuf, EifError> {
    std::path::absolute(path).map_err(|e| EifError::io("resolve", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_key_and_certificate_are_refused_without_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, b"not a certificate").unwrap();
        std::fs::write(&key, b"not a key").unwrap();
        let files = SigningFiles {
            certificate: cert,
            private_key: key,
        };
        assert!(matches!(files.vet(), Err(EifError::Signing(_))));
    }

    #[test]
    fn missing_key_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, b"x").unwrap();
        let files = SigningFiles {
            certificate: cert,
            private_key: dir.path().join("nope.pem"),
        };
        let err = files.vet().unwrap_err();
        assert!(
            err.to_string().contains("signing private key not found"),
            "{err}"
        );
    }
}
