//! The host's side of custody. The host is untrusted here too: it only carries sealed keyrings,
//! attestation documents and encrypted shares between the enclave, the store, custodians and
//! peers. It loads the stored domain into a fresh enclave, stores a new domain's records, drives
//! rotation and the background re-sealing, joins a peer appliance, and in simulation plays the
//! development custodian.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use ekms_wire::{
    msg::{CustodyState, EnclaveResponse, Fault, HostRequest, SealedBlob},
    sealed::{peek, peek_domain},
};

use crate::{
    HostError,
    relay::Relay,
    store::{Store, Table},
};

mod dev;

pub use dev::DevCustodian;

/// Why a custody action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// The enclave (or the host's own checks) refused; the text says why.
    #[error("{0}")]
    Refused(String),
    /// Host trouble (enclave unreachable, store failure); retryable.
    #[error(transparent)]
    Host(#[from] HostError),
}

type Result<T> = std::result::Result<T, CustodyError>;

/// What `domain init` made. The admin credential's secret is only in `sealed_secret`,
/// encrypted to the admin key: the host never holds it.
#[derive(Debug)]
pub struct Created {
    /// Domain id (hex).
    pub domain: String,
    /// One share file (JSON) per custodian, in the order given.
    pub shares: Vec<String>,
    /// The admin's access key id.
    pub access_key_id: String,
    /// The admin's secret, sealed to the admin key.
    pub sealed_secret: Vec<u8>,
    /// The attestation document that vouches for `sealed_secret`.
    pub document: Vec<u8>,
}

/// Custody driver of one appliance.
#[derive(Debug)]
pub struct Custody {
    relay: Arc<Relay>,
    data_dir: PathBuf,
    region: String,
    dev: Option<DevCustodian>,
    peer: Option<String>,
    resealing: AtomicBool,
    /// Witnesses a domain created here needs (the number of `--witness` URLs).
    witnesses: u8,
}

fn unexpected(r: &EnclaveResponse) -> CustodyError {
    match r {
        EnclaveResponse::Refused(why) => CustodyError::Refused(why.clone()),
        EnclaveResponse::Fault(f) => CustodyError::Host(HostError::Fault(*f)),
        other => {
            tracing::error!(?other, "unexpected reply from the enclave");
            CustodyError::Host(HostError::Fault(Fault::Internal))
        }
    }
}

impl Custody {
    /// A driver over `relay` for the appliance whose data dir is `data_dir`.
    #[must_use]
    pub fn new(
        relay: Arc<Relay>,
        data_dir: PathBuf,
        region: String,
        dev: Option<DevCustodian>,
        peer: Option<String>,
    ) -> Self {
        Self {
            relay,
            data_dir,
            region,
            dev,
            peer,
            resealing: AtomicBool::new(false),
            witnesses: 0,
        }
    }

    /// A domain this appliance creates needs `n` witnesses.
    #[must_use]
    pub fn with_witnesses(mut self, n: u8) -> Self {
        self.witnesses = n;
        self
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.relay.store()
    }

    async fn call(&self, req: &HostRequest) -> Result<EnclaveResponse> {
        Ok(self.relay.enclave().call(req).await?)
    }

    /// The enclave's custody state.
    pub async fn state(&self) -> Result<CustodyState> {
        match self.call(&HostRequest::Status).await? {
            EnclaveResponse::Status(s) => Ok(s.custody),
            other => Err(unexpected(&other)),
        }
    }

    /// Gives the enclave the stored domain record, if there is one. Returns its state.
    pub async fn load(&self) -> Result<CustodyState> {
        let store = Arc::clone(self.store());
        let domain = tokio::task::spawn_blocking(move || store.domain())
            .await
            .map_err(|e| HostError::Startup(e.to_string()))??;
        match domain {
            Some(domain) => {
                // A restarted enclave's first audit chain names the newest stored record.
                crate::audit::resume(self.relay.enclave(), &self.data_dir).await;
                self.load_blob(domain).await
            }
            None => self.state().await,
        }
    }

    async fn load_blob(&self, domain: SealedBlob) -> Result<CustodyState> {
        match self.call(&HostRequest::LoadDomain { domain }).await? {
            EnclaveResponse::Custody(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// The region this appliance serves.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Creates a domain on an empty enclave: stores its keyring and administrator principal, and
    /// returns the custodians' share files and the admin credential sealed to `admin_key` with
    /// a document over the operator's `nonce`. Writes no credential.
    pub async fn init(
        &self,
        custodians: Vec<String>,
        threshold: u8,
        admin_key: String,
        nonce: Vec<u8>,
        witnesses: u8,
    ) -> Result<Created> {
        if self.store().domain()?.is_some() {
            return Err(CustodyError::Refused(
                "this appliance's store already holds a domain".into(),
            ));
        }
        crate::credentials::refuse_existing(&self.data_dir)?;
        let reply = self
            .call(&HostRequest::InitDomain {
                custodians,
                threshold,
                admin_key,
                nonce,
                witnesses,
            })
            .await?;
        let EnclaveResponse::DomainCreated(created) = reply else {
            return Err(unexpected(&reply));
        };
        let Some(h) = peek_domain(&created.domain.0) else {
            return Err(CustodyError::Refused(
                "the enclave returned a malformed keyring".into(),
            ));
        };
        let (domain, generation) = (hex::encode(h.domain), h.generation);
        let store = self.store();
        store.put_domain(&created.domain, generation, None)?;
        let ekms_wire::msg::DomainCreated {
            shares, genesis, ..
        } = *created;
        store.put_principal(
            &genesis.principal,
            std::slice::from_ref(&genesis.access_key_id),
        )?;
        eprintln!(
            "ekms: created domain {domain}; admin credential {} sent to the operator, encrypted \
             to the admin key",
            genesis.access_key_id
        );
        Ok(Created {
            domain,
            shares,
            access_key_id: genesis.access_key_id,
            sealed_secret: genesis.sealed_secret,
            document: genesis.document,
        })
    }

    /// Passes a custodian's submitted share to the enclave.
    pub async fn submit_share(&self, session: Vec<u8>, share: String) -> Result<CustodyState> {
        match self
            .call(&HostRequest::SubmitShare { session, share })
            .await?
        {
            EnclaveResponse::Custody(s) => {
                if matches!(s, CustodyState::Unsealed { .. }) {
                    self.load_records().await?;
                }
                Ok(s)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Rotates the domain key: the enclave stages a new keyring, the host stores it over the
    /// current generation, the enclave adopts it; then old records are re-sealed in the
    /// background and the old keys retired.
    pub async fn rotate(self: &Arc<Self>) -> Result<CustodyState> {
        let state = self.stage_and_store(HostRequest::RotateDomain).await?;
        self.spawn_reseal();
        Ok(state)
    }

    async fn stage_and_store(&self, req: HostRequest) -> Result<CustodyState> {
        let CustodyState::Unsealed { generation, .. } = self.state().await? else {
            return Err(CustodyError::Refused(
                "the domain is not unsealed on this appliance".into(),
            ));
        };
        let reply = self.call(&req).await?;
        let EnclaveResponse::DomainStaged { domain } = reply else {
            return Err(unexpected(&reply));
        };
        let next = peek_domain(&domain.0)
            .map(|h| h.generation)
            .ok_or_else(|| CustodyError::Refused("malformed staged keyring".into()))?;
        match self.store().put_domain(&domain, next, Some(generation)) {
            Ok(()) => {}
            Err(HostError::Conflict) => {
                return Err(CustodyError::Refused(
                    "the domain record changed meanwhile (another rotation?); try again".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.load_blob(domain).await
    }

    /// Starts the background re-sealing unless it is running.
    pub fn spawn_reseal(self: &Arc<Self>) {
        if self.resealing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match me.reseal_pass().await {
                    Ok(0) => break,
                    Ok(n) => {
                        tracing::info!(resealed = n, "re-sealed records under the new domain key");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "re-sealing paused; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            // A clean pass: nothing is sealed under an older key any more.
            match me.stage_and_store(HostRequest::RetireDomainKeys).await {
                Ok(_) => eprintln!("ekms: re-sealing done; older domain keys retired"),
                Err(e) => tracing::warn!(error = %e, "could not retire older domain keys"),
            }
            me.resealing.store(false, Ordering::Release);
        });
    }

    /// Whether the background re-sealing is running.
    pub fn is_resealing(&self) -> bool {
        self.resealing.load(Ordering::Acquire)
    }

    /// One page of a table's records not sealed under `current` (a domain-key fingerprint),
    /// and where the next page starts.
    fn older_page(
        &self,
        table: Table,
        after: Option<&str>,
        current: &str,
    ) -> Result<(Vec<SealedBlob>, Option<String>)> {
        let page = self.store().scan(table, after, 500)?;
        let older = page
            .records
            .into_iter()
            .filter(|r| peek(&r.0).is_some_and(|h| hex::encode(h.domain) != current))
            .collect();
        Ok((older, page.more_after))
    }

    /// Records not sealed under `current` (a domain-key fingerprint).
    pub fn count_on_older_keys(&self, current: &str) -> Result<usize> {
        let mut n = 0;
        for table in crate::store::RECORD_TABLES {
            let mut after: Option<String> = None;
            loop {
                let (older, next) = self.older_page(table, after.as_deref(), current)?;
                n += older.len();
                match next {
                    Some(a) => after = Some(a),
                    None => break,
                }
            }
        }
        Ok(n)
    }

    /// One pass over every record; re-seals those under older keys. Returns how many it wrote.
    async fn reseal_pass(&self) -> Result<usize> {
        let CustodyState::Unsealed { keys, .. } = self.state().await? else {
            return Err(CustodyError::Refused("the domain is sealed".into()));
        };
        let Some(current) = keys.last().cloned() else {
            return Ok(0);
        };
        let mut written = 0;
        for table in crate::store::RECORD_TABLES {
            let mut after: Option<String> = None;
            loop {
                let (older, next) = self.older_page(table, after.as_deref(), &current)?;
                for sealed in older {
                    written += self.reseal_one(sealed).await?;
                }
                match next {
                    Some(a) => after = Some(a),
                    None => break,
                }
            }
        }
        Ok(written)
    }

    async fn reseal_one(&self, sealed: SealedBlob) -> Result<usize> {
        match self.call(&HostRequest::Reseal { sealed }).await? {
            // Stale or forged records are left for the operator; they never block the rest.
            EnclaveResponse::Resealed(None)
            | EnclaveResponse::Fault(Fault::StaleRecord | Fault::BadRecord) => Ok(0),
            EnclaveResponse::Resealed(Some((write, token))) => {
                match self.relay.persist(vec![write], token).await {
                    // A client changed the record meanwhile: the next pass sees the new one.
                    Ok(()) | Err(HostError::Conflict) => Ok(1),
                    Err(e) => Err(e.into()),
                }
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Keeps the enclave's custody in step with the store: loads the stored domain into a fresh
    /// (or restarted) enclave, adopts newer keyrings, and unseals through the peer or the
    /// development custodian when configured. Runs for the life of the appliance.
    pub async fn watch(self: Arc<Self>) {
        let mut announced = String::new();
        loop {
            let state = self.step().await;
            let line = match &state {
                Ok(CustodyState::Uninitialised) => Some(
                    "ekms: no key domain yet: create one with `ekms domain init --endpoint URL \
                     --custodian A.pub ... --threshold M --admin-key ADMIN.pub` (KMS calls fail \
                     until then)"
                        .to_owned(),
                ),
                Ok(CustodyState::Sealed { domain, have, need }) => Some(format!(
                    "ekms: domain {domain} is SEALED ({have} of {} shares): custodians run \
                     `ekms custodian unseal`{}",
                    need.map_or_else(|| "the needed".into(), |n| n.to_string()),
                    if self.peer.is_some() {
                        ", or the peer forwards it"
                    } else {
                        ""
                    }
                )),
                Ok(CustodyState::Unsealed { domain, .. }) => {
                    Some(format!("ekms: domain {domain} is unsealed and serving"))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "custody watch");
                    None
                }
            };
            if let Some(line) = line
                && line != announced
            {
                eprintln!("{line}");
                announced = line;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One custody step (see [`Custody::watch`]).
    pub async fn step(&self) -> Result<CustodyState> {
        let state = self.load().await?;
        match &state {
            CustodyState::Uninitialised => {
                if let Some(peer) = &self.peer {
                    // A follower (a witness) on another machine: its store has no domain; the
                    // writer's host hands over the sealed keyring with its challenge.
                    return self.join_logged(peer).await;
                }
                if let Some(dev) = &self.dev {
                    let found = crate::data_guard::survey(&self.data_dir, dev, &**self.store())?;
                    if !found.is_empty() {
                        let why = crate::data_guard::refusal(&self.data_dir, &found);
                        return Err(CustodyError::Refused(why));
                    }
                    self.dev_init(dev).await?;
                    return self.state().await;
                }
            }
            CustodyState::Sealed { .. } => {
                if let Some(peer) = &self.peer {
                    return self.join_logged(peer).await;
                } else if let Some(dev) = &self.dev
                    && dev.share.exists()
                {
                    return self.dev_unseal(dev).await;
                }
            }
            CustodyState::Unsealed { keys, .. } => {
                if keys.len() > 1 && !self.is_resealing() {
                    // A rotation whose re-sealing did not finish (a restart, or another host).
                    tracing::debug!("older domain keys in use");
                }
                self.load_records().await?;
                self.upgrade_version_1().await?;
            }
        }
        Ok(state)
    }

    /// A domain record written before custodians signed their shares (version 1) names no
    /// custodians in its header, so a sealed enclave cannot tell theirs from a stranger's. Once
    /// the domain is open here, the writer stores the next generation in version 2; until then
    /// (and on a follower) nothing changes.
    async fn upgrade_version_1(&self) -> Result<()> {
        let store = Arc::clone(self.store());
        let stored = tokio::task::spawn_blocking(move || store.domain())
            .await
            .map_err(|e| HostError::Startup(e.to_string()))??;
        if stored
            .as_ref()
            .and_then(|d| peek_domain(&d.0))
            .is_none_or(|h| h.version != ekms_wire::sealed::DOMAIN_VERSION_1)
        {
            return Ok(());
        }
        let EnclaveResponse::Status(status) = self.call(&HostRequest::Status).await? else {
            return Err(CustodyError::Host(HostError::Fault(Fault::Internal)));
        };
        if status.follower {
            return Ok(());
        }
        self.stage_and_store(HostRequest::UpgradeDomain).await?;
        eprintln!(
            "ekms: upgraded the stored domain record to version 2: its header now lists the \
             custodians, so a sealed enclave takes shares only from them"
        );
        Ok(())
    }

    async fn join_logged(&self, peer: &str) -> Result<CustodyState> {
        match self.join(peer).await {
            Ok(s) => Ok(s),
            Err(e) => {
                eprintln!("ekms: peer forwarding from {peer} failed: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.state().await
            }
        }
    }

    /// After an unseal, gives the enclave every stored record so it can build its view of the
    /// latest state; until then it serves no KMS call. A follower (peer-forwarded) enclave needs
    /// none: it serves no KMS call at all.
    pub async fn load_records(&self) -> Result<()> {
        const BATCH: usize = 1000;
        let EnclaveResponse::Status(status) = self.call(&HostRequest::Status).await? else {
            return Err(CustodyError::Host(HostError::Fault(Fault::Internal)));
        };
        self.relay
            .set_witnessed(status.witnesses > 0 && !status.follower);
        if status.ledger_ready || status.follower {
            return Ok(());
        }
        let mut loaded = 0u64;
        for table in crate::store::RECORD_TABLES {
            let mut after: Option<String> = None;
            loop {
                let store = Arc::clone(self.store());
                let a = after.clone();
                let page =
                    tokio::task::spawn_blocking(move || store.scan(table, a.as_deref(), BATCH))
                        .await
                        .map_err(|e| HostError::Startup(e.to_string()))??;
                let records = page.records;
                if !records.is_empty() {
                    match self
                        .call(&HostRequest::LoadRecords {
                            records,
                            done: false,
                        })
                        .await?
                    {
                        EnclaveResponse::Loaded { records, .. } => loaded = records,
                        other => return Err(unexpected(&other)),
                    }
                }
                match page.more_after {
                    Some(a) => after = Some(a),
                    None => break,
                }
            }
        }
        match self
            .call(&HostRequest::LoadRecords {
                records: vec![],
                done: true,
            })
            .await?
        {
            EnclaveResponse::Loaded { ready: true, .. } => {
                if status.witnesses > 0 {
                    eprintln!(
                        "ekms: the enclave loaded its view of {loaded} stored records; it serves \
                         once a quorum of its witnesses confirms they are the latest"
                    );
                } else {
                    eprintln!(
                        "ekms: the enclave loaded its view of {loaded} stored records and serves"
                    );
                }
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Joining side of peer forwarding: our enclave and the running appliance's attest to each
    /// other; the domain's custody secret arrives encrypted to our enclave's attested key.
    pub async fn join(&self, peer: &str) -> Result<CustodyState> {
        let challenge =
            crate::http_client::post_json(peer, "/ekms/peer/challenge", &serde_json::json!({}))
                .await
                .map_err(|e| CustodyError::Refused(format!("{e:#}")))?;
        if matches!(self.state().await?, CustodyState::Uninitialised) {
            let domain = b64_field(&challenge, "domain")?;
            self.load_blob(SealedBlob(domain)).await?;
        }
        let challenge = b64_field(&challenge, "challenge")?;
        let reply = self.call(&HostRequest::PeerHello { challenge }).await?;
        let EnclaveResponse::PeerHello {
            document,
            challenge,
        } = reply
        else {
            return Err(unexpected(&reply));
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let granted = crate::http_client::post_json(
            peer,
            "/ekms/peer/grant",
            &serde_json::json!({
                "document": b64.encode(&document),
                "challenge": b64.encode(&challenge),
            }),
        )
        .await
        .map_err(|e| CustodyError::Refused(format!("{e:#}")))?;
        let document = b64_field(&granted, "document")?;
        let grant = b64_field(&granted, "grant")?;
        match self
            .call(&HostRequest::PeerAccept { document, grant })
            .await?
        {
            EnclaveResponse::Custody(s) => {
                eprintln!("ekms: the peer at {peer} forwarded the domain after mutual attestation");
                Ok(s)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Running side of peer forwarding, step 1: a challenge from our enclave, and the stored
    /// keyring (sealed) for a joiner whose store has none.
    pub async fn peer_challenge(&self) -> Result<(Vec<u8>, Option<SealedBlob>)> {
        match self.call(&HostRequest::PeerChallenge).await? {
            EnclaveResponse::Challenge { nonce } => Ok((nonce, self.store().domain()?)),
            other => Err(unexpected(&other)),
        }
    }

    /// On a witness: a message from the domain's writer for our enclave; its reply.
    pub async fn witness(&self, message: Vec<u8>) -> Result<Vec<u8>> {
        match self.call(&HostRequest::Witness { message }).await? {
            EnclaveResponse::Witnessed { message } => Ok(message),
            other => Err(unexpected(&other)),
        }
    }

    /// Running side of peer forwarding, step 2: our enclave verifies the joining one and grants.
    pub async fn peer_grant(
        &self,
        document: Vec<u8>,
        challenge: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        match self
            .call(&HostRequest::PeerGrant {
                document,
                challenge,
            })
            .await?
        {
            EnclaveResponse::PeerGranted { document, grant } => Ok((document, grant)),
            other => Err(unexpected(&other)),
        }
    }
}

fn b64_field(v: &serde_json::Value, name: &str) -> Result<Vec<u8>> {
    v.get(name)
        .and_then(serde_json::Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| CustodyError::Refused(format!("the peer's answer has no valid {name}")))
}
