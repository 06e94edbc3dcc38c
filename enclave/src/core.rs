//! The enclave's state and its request handler: the domain key, the one-time genesis
//! credential, and the record generations seen in this life (rollback refusal).

use std::{collections::HashMap, sync::Mutex};

use aws_lc_rs::rand;
use ekms_wire::msg::{
    EnclaveResponse, Fault, Genesis, HostRequest, KmsCall, KmsOutcome, SealedBlob, Secret,
    StatusInfo,
};

use crate::{
    EnclaveError,
    attest::Attestor,
    domain::DomainKey,
    ops,
    record::{self, Kind, PrincipalRecord, PrincipalSecret},
};

/// Settings of the enclave.
#[derive(Debug, Clone)]
pub struct Config {
    /// Region in ARNs and in the SigV4 credential scope.
    pub region: String,
    /// Account id in ARNs.
    pub account: String,
}

/// The enclave.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) domain: DomainKey,
    attestor: Attestor,
    dev_custody: bool,
    genesis: Mutex<Option<Genesis>>,
    /// Highest generation opened per record, so an older copy is refused within this life.
    seen: Mutex<HashMap<(u8, String), u64>>,
}

impl Core {
    /// Builds the core around a domain key. With `new_domain`, the domain was just created and
    /// the administrator credential is made now, to be handed to the host exactly once.
    pub fn new(
        config: Config,
        domain: DomainKey,
        new_domain: bool,
        dev_custody: bool,
        attestor: Attestor,
    ) -> Result<Self, EnclaveError> {
        let genesis = if new_domain {
            Some(make_admin(&domain)?)
        } else {
            None
        };
        Ok(Self {
            config,
            domain,
            attestor,
            dev_custody,
            genesis: Mutex::new(genesis),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Handles one host request.
    pub async fn handle(&self, req: HostRequest) -> EnclaveResponse {
        match req {
            HostRequest::Status => EnclaveResponse::Status(StatusInfo {
                region: self.config.region.clone(),
                account: self.config.account.clone(),
                domain_fingerprint: self.domain.fingerprint_hex(),
                dev_custody: self.dev_custody,
                genesis: self.genesis.lock().ok().and_then(|mut g| g.take()),
            }),
            HostRequest::Kms(call) => self.kms(&call).await,
            HostRequest::Attest { nonce } => {
                let user_data = format!("ekms/v1 domain={}", self.domain.fingerprint_hex());
                match self.attestor.document(&nonce, user_data.as_bytes()) {
                    Ok(document) => EnclaveResponse::Attestation { document },
                    Err(EnclaveError::BadInput) => EnclaveResponse::Fault(Fault::BadInput),
                    Err(_) => EnclaveResponse::Fault(Fault::Internal),
                }
            }
            HostRequest::Open { sealed } => match self.open_any(&sealed) {
                Ok((kind, id)) => EnclaveResponse::Opened { kind, id },
                Err(_) => EnclaveResponse::Fault(Fault::BadRecord),
            },
        }
    }

    async fn kms(&self, call: &KmsCall) -> EnclaveResponse {
        let now = chrono::Utc::now();
        match ops::execute(self, call, now).await {
            Ok((body, writes)) => EnclaveResponse::Kms(KmsOutcome::Ok { body, writes }),
            Err(ops::OpError::Kms(e)) => EnclaveResponse::Kms(KmsOutcome::Err {
                code: e.code,
                message: e.message,
            }),
            Err(ops::OpError::Stale) => EnclaveResponse::Fault(Fault::StaleRecord),
        }
    }

    fn open_any(&self, sealed: &SealedBlob) -> Result<(String, String), EnclaveError> {
        let h = record::peek(&sealed.0).ok_or(EnclaveError::BadRecord)?;
        let id = h.id.to_owned();
        let kind = match h.kind {
            1 => {
                record::open::<record::KeyRecord>(&self.domain, Kind::Key, None, &sealed.0)?;
                "key"
            }
            2 => {
                record::open::<record::AliasRecord>(&self.domain, Kind::Alias, None, &sealed.0)?;
                "alias"
            }
            3 => {
                record::open::<PrincipalRecord>(&self.domain, Kind::Principal, None, &sealed.0)?;
                "principal"
            }
            _ => return Err(EnclaveError::BadRecord),
        };
        Ok((kind.to_owned(), id))
    }

    /// Records that `generation` of a record was opened; refuses a lower one than seen before.
    pub(crate) fn observe(
        &self,
        kind: Kind,
        id: &str,
        generation: u64,
    ) -> Result<(), EnclaveError> {
        let mut seen = self.seen.lock().map_err(|_| EnclaveError::Crypto)?;
        let entry = seen
            .entry((kind as u8, id.to_owned()))
            .or_insert(generation);
        if generation < *entry {
            return Err(EnclaveError::StaleRecord);
        }
        *entry = generation;
        Ok(())
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(alphabet: &[u8], len: usize) -> Result<String, EnclaveError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 1];
    // Rejection sampling keeps the distribution uniform.
    let limit = 256 - (256 % alphabet.len());
    while out.len() < len {
        rand::fill(&mut buf)?;
        let b = usize::from(buf[0]);
        if b < limit
            && let Some(&c) = alphabet.get(b % alphabet.len())
        {
            out.push(char::from(c));
        }
    }
    Ok(out)
}

fn make_admin(domain: &DomainKey) -> Result<Genesis, EnclaveError> {
    let access_key_id = format!("EKMS{}", random_string(BASE32, 16)?);
    let secret = random_string(ALNUM, 40)?;
    let record = PrincipalRecord {
        access_key_id: access_key_id.clone(),
        secret: PrincipalSecret(secret.clone()),
        name: "admin".into(),
    };
    let sealed = record::seal(domain, Kind::Principal, &access_key_id, &record)?;
    Ok(Genesis {
        principal: SealedBlob(sealed),
        access_key_id,
        secret_access_key: Secret::new(secret),
    })
}

/// An attestor over a mock NSM with a fresh simulation CA, for tests.
#[cfg(test)]
pub(crate) fn test_attestor() -> Attestor {
    let ca = ekms_attestation::SimulationCa::generate().unwrap();
    Attestor::new(
        Box::new(ekms_attestation::MockNsm::from_executable_bytes(
            ca, b"test",
        )),
        true,
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn core() -> Core {
        Core::new(
            Config {
                region: "us-east-1".into(),
                account: "111122223333".into(),
            },
            DomainKey::generate().unwrap(),
            true,
            false,
            test_attestor(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn genesis_is_handed_out_exactly_once() {
        let c = core();
        let EnclaveResponse::Status(s) = c.handle(HostRequest::Status).await else {
            panic!()
        };
        let g = s.genesis.unwrap();
        assert!(g.access_key_id.starts_with("EKMS") && g.access_key_id.len() == 20);
        assert_eq!(g.secret_access_key.expose().len(), 40);
        assert!(!format!("{g:?}").contains(g.secret_access_key.expose()));
        let EnclaveResponse::Opened { kind, id } = c
            .handle(HostRequest::Open {
                sealed: g.principal,
            })
            .await
        else {
            panic!()
        };
        assert_eq!((kind.as_str(), id), ("principal", g.access_key_id));
        let EnclaveResponse::Status(s) = c.handle(HostRequest::Status).await else {
            panic!()
        };
        assert!(s.genesis.is_none());
    }

    #[test]
    fn older_generations_are_refused() {
        let c = core();
        c.observe(Kind::Key, "k", 2).unwrap();
        c.observe(Kind::Key, "k", 3).unwrap();
        assert!(matches!(
            c.observe(Kind::Key, "k", 2),
            Err(EnclaveError::StaleRecord)
        ));
        c.observe(Kind::Alias, "k", 1).unwrap();
    }
}
