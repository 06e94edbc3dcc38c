//! The relay: plan a call, fetch its sealed records (cache, then store), send it to the enclave,
//! make the enclave's writes durable, and only then release the response. Stale records are
//! retried with fresh records; a state-changing request whose write lost a race is answered
//! with a retryable error (the enclave would refuse the same signed request again).

use std::sync::{
    Arc, OnceLock, RwLock,
    atomic::{AtomicBool, Ordering},
};

use ekms_wire::{
    msg::{
        EnclaveResponse, Fault, HostRequest, HttpRequest, KmsCall, KmsErrorCode, KmsOutcome,
        MSG_REPLAYED, SealedBlob, StoreWrite,
    },
    plan::{self, KeyRef, Listing},
    region,
};

use crate::{HostError, client::EnclaveClient, store::Store};

mod cache;
mod xks;

pub use cache::DEFAULT_BYTES as RECORD_CACHE_BYTES;
use cache::{Cache, forget, forget_grants, read_through, remember};

/// Attempts per request when records turn out stale or a write loses a race (with a growing
/// pause between attempts: a concurrent write may not be committed yet).
const ATTEMPTS: u32 = 10;

/// What the HTTP edge turns into a response.
#[derive(Debug)]
pub enum Answer {
    /// 200 with this JSON body.
    Ok(Vec<u8>),
    /// An AWS error.
    Err(KmsErrorCode, String),
    /// The answer of the domain's writer, to which a follower forwarded the call.
    Forwarded {
        /// HTTP status.
        status: u16,
        /// `Content-Type` and `X-Amzn-ErrorType`, when present.
        headers: Vec<(String, Vec<u8>)>,
        /// Body.
        body: Vec<u8>,
    },
}

/// The relay between the HTTP edge, the store and the enclave.
pub struct Relay {
    store: Arc<dyn Store>,
    enclave: Arc<EnclaveClient>,
    cache: Cache,
    /// The domain's writer, when this appliance's enclave follows it.
    writer: Option<String>,
    /// Witnessed rounds, when the domain has witnesses.
    committer: OnceLock<crate::witness::Committer>,
    /// Whether the domain has witnesses (its writes commit through rounds).
    witnessed: AtomicBool,
    /// The account in ARNs (a caller's grants are found by its ARN).
    account: String,
    /// Keys that have (or had) grants: only their calls look grants up.
    grant_keys: RwLock<std::collections::HashSet<String>>,
    /// The home region (its aliases keep their plain names in the store).
    home_region: String,
    /// Where the enclave's audit records go (none in tests that do not keep them).
    audit: OnceLock<crate::audit::AuditSink>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay({:?})", self.enclave)
    }
}

impl Relay {
    /// A relay over `store` and `enclave`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, enclave: Arc<EnclaveClient>) -> Self {
        let grant_keys = store
            .keys_with_grants()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read which keys have grants");
                Vec::new()
            })
            .into_iter()
            .collect();
        Self {
            store,
            enclave,
            cache: Cache::default(),
            writer: None,
            committer: OnceLock::new(),
            witnessed: AtomicBool::new(false),
            account: String::new(),
            grant_keys: RwLock::new(grant_keys),
            home_region: "us-east-1".into(),
            audit: OnceLock::new(),
        }
    }

    /// A cache of sealed records of `bytes` in all (default [`RECORD_CACHE_BYTES`]).
    #[must_use]
    pub fn with_record_cache(mut self, bytes: u64) -> Self {
        self.cache = Cache::with_bytes(bytes);
        self
    }

    /// The home region (see `ekms_wire::region`).
    #[must_use]
    pub fn with_home_region(mut self, region: &str) -> Self {
        region.clone_into(&mut self.home_region);
        self
    }

    /// The account in ARNs.
    #[must_use]
    pub fn with_account(mut self, account: &str) -> Self {
        account.clone_into(&mut self.account);
        self
    }

    /// A relay that forwards KMS calls to `writer` (an appliance URL) when its own enclave
    /// follows that one.
    #[must_use]
    pub fn with_writer(mut self, writer: Option<String>) -> Self {
        self.writer = writer;
        self
    }

    /// The enclave client.
    #[must_use]
    pub fn enclave(&self) -> &EnclaveClient {
        &self.enclave
    }

    /// The enclave client, shared.
    #[must_use]
    pub fn enclave_arc(&self) -> Arc<EnclaveClient> {
        Arc::clone(&self.enclave)
    }

    /// Commits through `committer` from now on (set once).
    pub fn set_committer(&self, committer: crate::witness::Committer) {
        let _ = self.committer.set(committer);
    }

    /// Stores the enclave's audit records through `sink` from now on.
    pub fn set_audit(&self, sink: crate::audit::AuditSink) {
        let _ = self.audit.set(sink);
    }

    /// The audit sink, once set.
    pub fn audit(&self) -> Option<&crate::audit::AuditSink> {
        self.audit.get()
    }

    /// Records whether the domain has witnesses (from the enclave's status).
    pub fn set_witnessed(&self, witnessed: bool) {
        self.witnessed.store(witnessed, Ordering::Relaxed);
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn key(&self, id: &str) -> Result<Option<SealedBlob>, HostError> {
        read_through(&self.cache.keys, id, || self.store.key(id))
    }

    fn alias(&self, name: &str) -> Result<Option<(SealedBlob, String)>, HostError> {
        read_through(&self.cache.aliases, name, || self.store.alias(name))
    }

    fn principal(&self, akid: &str) -> Result<Option<(SealedBlob, String)>, HostError> {
        read_through(&self.cache.principals, akid, || self.store.principal(akid))
    }

    /// The grant records a call needs: the caller's grants on the keys it names (only keys
    /// that have grants are looked up), and those the grant operations name or list.
    fn grants_of(
        &self,
        plan: &plan::Plan,
        keys: &[SealedBlob],
        caller: Option<&str>,
        next_marker: &mut Option<String>,
    ) -> Result<Vec<SealedBlob>, HostError> {
        let mut out = Vec::new();
        if let Some(name) = caller {
            let arn = format!("arn:aws:iam::{}:user/{name}", self.account);
            let with_grants: Vec<String> = {
                let set = self
                    .grant_keys
                    .read()
                    .map_err(|_| HostError::Startup("lock poisoned".into()))?;
                keys.iter()
                    .filter_map(|k| ekms_wire::sealed::peek(&k.0).map(|h| h.id.to_owned()))
                    .filter(|id| set.contains(id))
                    .collect()
            };
            for key in with_grants {
                let found = read_through(&self.cache.grants, &format!("{key}\n{arn}"), || {
                    self.store.grants_for(&key, &arn).map(Some)
                })?;
                out.extend(found.unwrap_or_default());
            }
        }
        for (key, grant) in &plan.grants {
            out.extend(self.store.grant(key, grant)?);
        }
        if let Some((key, name)) = &plan.grant_name {
            out.extend(self.store.grants_named(key, name)?);
        }
        if let Some((key, grantee)) = &plan.grantee {
            out.extend(self.store.grants_for(key, grantee)?);
        }
        let page = match &plan.listing {
            Some(Listing::Grants {
                key_id,
                limit,
                marker,
            }) => {
                let after = marker.as_deref().and_then(plan::decode_marker);
                Some(self.store.list_grants(key_id, after.as_deref(), *limit)?)
            }
            Some(Listing::Retirable {
                retiring,
                limit,
                marker,
            }) => {
                let after = marker.as_deref().and_then(plan::decode_marker);
                Some(
                    self.store
                        .retirable_grants(retiring, after.as_deref(), *limit)?,
                )
            }
            _ => None,
        };
        if let Some(page) = page {
            out.extend(page.records);
            *next_marker = page.more_after.as_deref().map(plan::encode_marker);
        }
        Ok(out)
    }

    /// Drops cached records that were just swept from the store.
    pub fn forget_keys(&self, ids: &[String]) {
        for id in ids {
            forget(&self.cache.keys, id);
        }
        self.cache
            .aliases
            .retain(|_, (_, target)| !ids.contains(target));
    }

    fn build_call(
        &self,
        op: &str,
        http: &HttpRequest,
        akid: Option<&str>,
    ) -> Result<KmsCall, HostError> {
        let plan = plan::plan(op, &http.body);
        // The region the request is signed for names its aliases in the store (the enclave
        // checks the signature, and asks for the records again if this guess was wrong).
        let region = http.scope_region().unwrap_or(&self.home_region);
        let alias_name = |a: &str| region::alias_record(&self.home_region, region, a);
        let mut keys = Vec::new();
        let mut aliases = Vec::new();
        let mut principals = Vec::new();
        let mut next_marker = None;
        for name in &plan.principals {
            principals.extend(self.store.principal_named(name)?);
        }
        for r in &plan.keys {
            if let KeyRef::Id(id) = r
                && let Some(k) = self.key(id)?
            {
                keys.push(k);
            }
        }
        for name in &plan.aliases {
            if let Some((a, target)) = self.alias(&alias_name(name))? {
                aliases.push(a);
                if let Some(k) = self.key(&target)? {
                    keys.push(k);
                }
            }
        }
        match &plan.listing {
            Some(Listing::Keys { limit, marker }) => {
                let after = marker.as_deref().and_then(plan::decode_marker);
                let page = self.store.list_keys(after.as_deref(), *limit)?;
                keys.extend(page.records);
                next_marker = page.more_after.as_deref().map(plan::encode_marker);
            }
            Some(Listing::Aliases { limit, marker }) => {
                let after = marker
                    .as_deref()
                    .and_then(plan::decode_marker)
                    .map(|a| alias_name(&a));
                let filter = plan.keys.iter().find_map(|k| match k {
                    KeyRef::Id(id) => Some(id.as_str()),
                    KeyRef::Alias(_) => None,
                });
                let prefix = region::alias_prefix(&self.home_region, region);
                let page = self
                    .store
                    .list_aliases(&prefix, after.as_deref(), *limit, filter)?;
                aliases.extend(page.records);
                next_marker = page.more_after.as_deref().map(plan::encode_marker);
            }
            Some(Listing::Principals { limit, marker }) => {
                let after = marker.as_deref().and_then(plan::decode_marker);
                let page = self.store.list_principals(after.as_deref(), *limit)?;
                principals.extend(page.records);
                next_marker = page.more_after.as_deref().map(plan::encode_marker);
            }
            Some(Listing::Grants { .. } | Listing::Retirable { .. }) | None => {}
        }
        for (key, _) in &plan.grants {
            if !keys
                .iter()
                .any(|k| ekms_wire::sealed::peek(&k.0).is_some_and(|h| h.id == key))
                && let Some(k) = self.key(key)?
            {
                keys.push(k);
            }
        }
        let (principal, name) = match akid {
            Some(a) => self
                .principal(a)?
                .map_or((None, None), |(p, n)| (Some(p), Some(n))),
            None => (None, None),
        };
        let grants = self.grants_of(&plan, &keys, name.as_deref(), &mut next_marker)?;
        let mut usage = Vec::new();
        if op == "GetKeyLastUsage" {
            for r in &plan.keys {
                if let KeyRef::Id(id) = r {
                    let part = region::usage_region(&self.home_region, region, id);
                    usage.extend(self.store.usage(&region::usage_record(part, id))?);
                }
            }
        }
        Ok(KmsCall {
            http: http.clone(),
            principal,
            keys,
            aliases,
            principals,
            grants,
            next_marker,
            usage,
        })
    }

    /// Drops these records from the cache, so the next attempt reads the store.
    fn invalidate(&self, keys: &[String], aliases: &[String]) {
        for id in keys {
            forget(&self.cache.keys, id);
            forget_grants(&self.cache, id);
        }
        for name in aliases {
            forget(&self.cache.aliases, name);
        }
    }

    /// Runs a KMS operation for the HTTP edge.
    pub async fn kms(&self, op: &str, http: HttpRequest, akid: Option<&str>) -> Answer {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempt.min(7))).await;
            }
            let call = match self.build_call(op, &http, akid) {
                Ok(c) => c,
                Err(e) => return internal(&e),
            };
            let ids = |blobs: &[SealedBlob]| -> Vec<String> {
                blobs
                    .iter()
                    .filter_map(|b| ekms_wire::sealed::peek(&b.0).map(|h| h.id.to_owned()))
                    .collect()
            };
            let (key_ids, alias_ids) = (ids(&call.keys), ids(&call.aliases));
            let reply = self.enclave.call(&HostRequest::Kms(Box::new(call))).await;
            match reply {
                Ok(EnclaveResponse::Kms(KmsOutcome::Ok {
                    body,
                    writes,
                    token,
                })) => {
                    if writes.is_empty() {
                        return Answer::Ok(body);
                    }
                    match self.persist(writes, token).await {
                        Ok(()) => return Answer::Ok(body),
                        Err(HostError::Conflict) => {
                            self.invalidate(&key_ids, &alias_ids);
                            // The enclave runs a state-changing request once: sent again, it
                            // would be refused as a replay. The client re-signs and retries.
                            if plan::changes_state(op) {
                                tracing::warn!(op, "a state-changing request lost a write race");
                                return lost_race();
                            }
                        }
                        Err(HostError::Witness(why)) => return unwitnessed(&why),
                        Err(HostError::Fault(Fault::NotFresh)) => return not_fresh(),
                        Err(e) => return internal(&e),
                    }
                }
                Ok(EnclaveResponse::Kms(KmsOutcome::Err { code, message })) => {
                    if code == KmsErrorCode::ThrottlingException && message == MSG_REPLAYED {
                        // Two identical state-changing requests signed in the same second have
                        // one signature, and the enclave runs it once. The SDKs retry a
                        // ThrottlingException re-signed: answering only once the signing second
                        // is over makes that retry a new request (a new X-Amz-Date) instead of
                        // the same one again, so identical calls go through as on AWS.
                        wait_out_signing_second(&http).await;
                    }
                    return Answer::Err(code, message);
                }
                Ok(EnclaveResponse::Fault(Fault::StaleRecord)) => {
                    // A record was not the current one (a stale cache, a write not yet
                    // committed) or was missing: read the store again. Listing pages and
                    // records the store did not have are not cached, so forgetting what was
                    // sent (and the principal) is enough.
                    self.invalidate(&key_ids, &alias_ids);
                    if let Some(a) = akid {
                        forget(&self.cache.principals, a);
                    }
                }
                Ok(EnclaveResponse::Fault(Fault::NotWriter)) => {
                    let forwarded = http
                        .headers
                        .iter()
                        .any(|(k, _)| k == crate::http_client::FORWARDED);
                    return match &self.writer {
                        Some(w) if !forwarded => forward(w, &http).await,
                        _ => Answer::Err(
                            KmsErrorCode::KMSInternalException,
                            "This appliance's enclave follows another enclave of its domain and \
                             serves no KMS calls (and does not forward a forwarded call again); \
                             send them to the domain's writer."
                                .into(),
                        ),
                    };
                }
                Ok(EnclaveResponse::Fault(Fault::NotFresh)) => return not_fresh(),
                Ok(EnclaveResponse::Fault(Fault::NotLoaded)) => {
                    return Answer::Err(
                        KmsErrorCode::KMSInternalException,
                        "The key enclave is loading its view of the stored records after an \
                         unseal; retry the request."
                            .into(),
                    );
                }
                Ok(other) => {
                    tracing::error!(?other, "unexpected reply from the enclave");
                    return internal(&HostError::Fault(Fault::Internal));
                }
                Err(e) => return unavailable(&e),
            }
        }
        internal(&HostError::Conflict)
    }

    /// Makes `writes` durable, tells the enclave (`token` commits them to its state view), then
    /// updates the cache.
    pub async fn persist(&self, writes: Vec<StoreWrite>, token: u64) -> Result<(), HostError> {
        if self.witnessed.load(Ordering::Relaxed) {
            let Some(committer) = self.committer.get() else {
                return Err(HostError::Witness(
                    "this domain has witnesses and this appliance was started without --witness"
                        .into(),
                ));
            };
            committer.commit(writes.clone(), token).await?;
            self.remember_writes(&writes);
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        let writes = Arc::new(writes);
        let w = Arc::clone(&writes);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = store.apply(&w);
            crate::metrics::store_write(started.elapsed().as_secs_f64());
            r
        })
        .await
        .map_err(|e| HostError::Startup(e.to_string()))??;
        if token != 0 {
            match self
                .enclave
                .call(&HostRequest::Commit {
                    tokens: vec![token],
                })
                .await?
            {
                EnclaveResponse::Committed => {}
                EnclaveResponse::Fault(f) => return Err(HostError::Fault(f)),
                other => {
                    tracing::error!(?other, "unexpected reply to a commit");
                    return Err(HostError::Fault(Fault::Internal));
                }
            }
        }
        self.remember_writes(&writes);
        Ok(())
    }

    /// Updates the cache with writes that were committed.
    fn remember_writes(&self, writes: &[StoreWrite]) {
        for w in writes {
            match w {
                StoreWrite::PutKey { key_id, sealed, .. } => {
                    remember(&self.cache.keys, key_id, sealed.clone());
                }
                StoreWrite::PutAlias {
                    name,
                    key_id,
                    sealed,
                    ..
                } => {
                    remember(&self.cache.aliases, name, (sealed.clone(), key_id.clone()));
                }
                StoreWrite::DeleteAlias { name, .. } => forget(&self.cache.aliases, name),
                // Usage records are read only by GetKeyLastUsage, from the store.
                StoreWrite::PutTombstone { .. } | StoreWrite::PutUsage { .. } => {}
                StoreWrite::DeleteKey { key_id, .. } => {
                    self.forget_keys(std::slice::from_ref(key_id));
                }
                // Principals change rarely, and a change may retire an access key: the next
                // request of each principal reads the store again.
                StoreWrite::PutGrant { key_id, .. } => {
                    if let Ok(mut set) = self.grant_keys.write() {
                        set.insert(key_id.clone());
                    }
                    forget_grants(&self.cache, key_id);
                }
                StoreWrite::DeleteGrant { key_id, .. } => forget_grants(&self.cache, key_id),
                StoreWrite::PutPrincipal { .. } | StoreWrite::DeletePrincipal { .. } => {
                    self.cache.principals.clear();
                }
            }
        }
    }
}

/// Sends the client's request, exactly as signed, to the domain's writer and returns its answer.
async fn forward(writer: &str, http: &HttpRequest) -> Answer {
    match crate::http_client::forward(writer, http).await {
        Ok((status, headers, body)) => Answer::Forwarded {
            status,
            headers,
            body,
        },
        Err(e) => {
            tracing::warn!(error = %e, "the domain's writer is unreachable");
            Answer::Err(
                KmsErrorCode::KMSInternalException,
                "The domain's writer is unreachable; retry the request.".into(),
            )
        }
    }
}

fn internal(e: &HostError) -> Answer {
    tracing::error!(error = %e, "request failed inside the host");
    Answer::Err(
        KmsErrorCode::KMSInternalException,
        "An internal error occurred; retry the request.".into(),
    )
}

fn not_fresh() -> Answer {
    Answer::Err(
        KmsErrorCode::KMSInternalException,
        "The key enclave restarted and waits for a quorum of its witnesses to confirm that it \
         holds the latest state; retry the request."
            .into(),
    )
}

fn unwitnessed(why: &str) -> Answer {
    tracing::warn!(%why, "a write was not committed");
    Answer::Err(
        KmsErrorCode::KMSInternalException,
        format!(
            "The write could not be confirmed by a quorum of the domain's witnesses ({why}); \
             retry the request."
        ),
    )
}

/// Sleeps until the second after the request's `X-Amz-Date` (at most 1.1 s; not at all when
/// the date is missing, malformed or already past).
async fn wait_out_signing_second(http: &HttpRequest) {
    let signed = http
        .header("x-amz-date")
        .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, "%Y%m%dT%H%M%SZ").ok())
        .map(|t| t.and_utc());
    let Some(signed) = signed else { return };
    let next = signed + chrono::TimeDelta::seconds(1);
    let wait = (next - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        .min(std::time::Duration::from_millis(1100));
    tokio::time::sleep(wait).await;
}

fn lost_race() -> Answer {
    Answer::Err(
        KmsErrorCode::KMSInternalException,
        "Another request changed the same record at the same moment; this one changed nothing. \
         Retry the request."
            .into(),
    )
}

fn unavailable(e: &HostError) -> Answer {
    tracing::warn!(error = %e, "enclave unavailable");
    Answer::Err(
        KmsErrorCode::KMSInternalException,
        "The key enclave is unavailable; retry the request.".into(),
    )
}
