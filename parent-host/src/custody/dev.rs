//! Simulation only: the development custodian, whose key lives in the data dir (NEVER IN
//! PRODUCTION). The host plays it: it creates a one-custodian domain, unseals it at every start
//! through the same attested path a real custodian uses, and opens the admin credential sealed to
//! the same key (the one announced exception to "the host knows no secret").

use std::path::{Path, PathBuf};

use ekms_custody::{CustodianKey, ShareFile};
use ekms_wire::msg::{CustodyState, EnclaveResponse, HostRequest};

use super::{Custody, CustodyError, Result, unexpected};
use crate::{
    HostError,
    attested_secret::{AttestedSecret, Freshness},
    credentials,
};

/// The simulation's development custodian, kept in the data dir. NEVER IN PRODUCTION.
#[derive(Debug, Clone)]
pub struct DevCustodian {
    /// Its private key.
    pub key: PathBuf,
    /// Its public key.
    pub public: PathBuf,
    /// Its share file.
    pub share: PathBuf,
    /// The simulation root the enclave's documents chain to.
    pub root: PathBuf,
    /// The enclave executable, whose SHA-384 is the expected PCR0.
    pub enclave: PathBuf,
}

impl DevCustodian {
    /// What the development custodian verifies documents against: the simulation root in the
    /// data dir and PCR0 = SHA-384 of the enclave executable.
    fn verification(&self) -> Result<(ekms_attestation::TrustRoot, ekms_attestation::PcrPolicy)> {
        let refused = |e: String| CustodyError::Refused(e);
        let pem = std::fs::read_to_string(&self.root)
            .map_err(|e| refused(format!("{}: {e}", self.root.display())))?;
        let root = ekms_attestation::TrustRoot::from_operator_pem(&pem, true)
            .map_err(|e| refused(e.to_string()))?;
        // Streamed: reading the whole executable took 65 MiB at every start.
        let pcr0 = match ekms_attestation::executable_pcr0(&self.enclave) {
            Ok(pcr0) => pcr0,
            Err(ekms_attestation::Error::Io { source, .. }) => {
                return Err(HostError::Io(source).into());
            }
            Err(e) => return Err(refused(e.to_string())),
        };
        let policy = ekms_attestation::PcrPolicy::new()
            .expect_pcr(0, &pcr0)
            .map_err(|e| refused(e.to_string()))?;
        Ok((root, policy))
    }

    /// The development custodian's files in `data_dir`.
    #[must_use]
    pub fn in_dir(data_dir: &Path, enclave: &Path) -> Self {
        Self {
            key: data_dir.join("SIMULATION-ONLY-dev-custodian.key"),
            public: data_dir.join("SIMULATION-ONLY-dev-custodian.pub"),
            share: data_dir.join("SIMULATION-ONLY-dev-custodian.share.json"),
            root: data_dir.join("simulation-root.pem"),
            enclave: enclave.to_owned(),
        }
    }
}

impl Custody {
    /// Simulation: a one-custodian domain whose custodian lives in the data dir. The development
    /// custodian's key is also the admin key, and the host, playing that custodian, verifies
    /// the document and opens the credential exactly as `ekms domain init` would, then writes it
    /// to the data dir: the one announced exception to "the host knows no secret".
    pub(super) async fn dev_init(&self, dev: &DevCustodian) -> Result<()> {
        let refused = |e: String| CustodyError::Refused(e);
        if !dev.key.exists() {
            crate::custodian::keygen(&dev.key.with_extension(""))
                .map_err(|e| refused(format!("{e:#}")))?;
        }
        let key =
            CustodianKey::from_pem(&std::fs::read_to_string(&dev.key).map_err(HostError::Io)?)
                .map_err(|e| refused(format!("{}: {e}", dev.key.display())))?;
        let public = key
            .public_key()
            .to_json()
            .map_err(|e| refused(e.to_string()))?;
        let nonce = crate::custodian::fresh_nonce().map_err(|e| refused(e.to_string()))?;
        let created = self
            .init(
                vec![public.clone()],
                1,
                public,
                nonce.clone(),
                self.witnesses,
            )
            .await?;
        let share = created
            .shares
            .first()
            .ok_or_else(|| refused("no share returned".into()))?;
        // Never over an existing share: that would lose the only way into its domain.
        credentials::write_new_private(&dev.share, share.as_bytes())?;
        let (root, policy) = dev.verification()?;
        let now = ekms_attestation::UnixMillis::from_system_time(std::time::SystemTime::now())
            .map_err(|e| refused(e.to_string()))?;
        let secret = AttestedSecret::credential(
            &created.domain,
            &created.access_key_id,
            &nonce,
            created.sealed_secret,
            created.document,
        )
        .and_then(|s| s.verify(&root, policy, Freshness::Now(now), None))
        .and_then(|v| Ok((v.open_text(key.agreement_key())?, v.summary)));
        let (secret, verified) = secret.map_err(|e| refused(format!("{e:#}")))?;
        let (creds, config) = credentials::paths(&self.data_dir);
        credentials::write(
            &creds,
            &config,
            &created.access_key_id,
            &secret,
            &self.region,
            None,
        )?;
        eprintln!(
            "ekms: SIMULATION: the development custodian's key opened the admin credential \
             (verified: {verified}); written in clear to {}",
            creds.display()
        );
        Ok(())
    }

    /// Simulation: the development custodian unseals, exactly as `ekms custodian unseal` would.
    pub(super) async fn dev_unseal(&self, dev: &DevCustodian) -> Result<CustodyState> {
        let refused = |e: String| CustodyError::Refused(e);
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| refused(format!("{}: {e}", p.display())))
        };
        let share = ShareFile::from_json(&read(&dev.share)?).map_err(|e| refused(e.to_string()))?;
        let key = CustodianKey::from_pem(&read(&dev.key)?).map_err(|e| refused(e.to_string()))?;
        let (root, policy) = dev.verification()?;
        let nonce = crate::custodian::fresh_nonce().map_err(|e| refused(e.to_string()))?;
        let document = match self
            .call(&HostRequest::Attest {
                nonce: nonce.clone(),
            })
            .await?
        {
            EnclaveResponse::Attestation { document } => document,
            other => return Err(unexpected(&other)),
        };
        let prepared = crate::custodian::prepare(&document, &nonce, &root, policy, &share, &key)
            .map_err(|e| refused(format!("{e:#}")))?;
        let state = self.submit_share(nonce, prepared.submission).await?;
        eprintln!(
            "ekms: SIMULATION: the development custodian unsealed domain {} (verified: {})",
            prepared.domain, prepared.verified
        );
        Ok(state)
    }
}
