//! The host's requests about the state view: commit prepared writes, load the stored records
//! after an unseal, decide deletions, re-seal a record under the current domain key.

use super::{
    AliasRecord, Core, EnclaveError, EnclaveResponse, Fault, KeyRecord, Keyring, Kind, LedgerError,
    RecordId, SealedBlob, StoreWrite, TombstoneRecord, Version, digest_of, ops, record,
};

impl Core {
    /// Applies prepared writes the host made durable.
    pub(super) fn commit(&self, tokens: &[u64]) -> EnclaveResponse {
        let Ok(mut ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let mut refused = 0usize;
        for t in tokens {
            if ledger.commit(*t).is_err() {
                refused += 1;
            }
        }
        drop(ledger);
        if refused > 0 {
            tracing::warn!(
                refused,
                "commits that do not apply to the current state were refused"
            );
            return EnclaveResponse::Fault(Fault::StaleRecord);
        }
        EnclaveResponse::Committed
    }

    /// Builds the state view from the stored records after an unseal.
    pub(super) fn load_records(&self, records: &[SealedBlob], done: bool) -> EnclaveResponse {
        let Some(d) = self.domain() else {
            return EnclaveResponse::Fault(Fault::Sealed);
        };
        let Ok(mut ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        if ledger.is_ready() {
            return EnclaveResponse::Loaded {
                records: ledger.len() as u64,
                ready: true,
            };
        }
        for sealed in records {
            // A record that does not open is not part of the state: it is refused when shown.
            if let Ok(i) = record::index(d.keyring(), &sealed.0) {
                ledger.ingest(
                    i.id,
                    Version {
                        seq: i.generation,
                        digest: digest_of(&sealed.0),
                    },
                    i.live,
                    i.target,
                );
            } else {
                tracing::warn!("a stored record does not open; it is left out");
            }
        }
        if done {
            ledger.finish_load();
            if d.witnesses() > 0 {
                tracing::info!(
                    records = ledger.len(),
                    seq = ledger.seq(),
                    "state view loaded from the host's store; serving once a quorum of witnesses \
                     confirms it is the latest"
                );
            } else {
                tracing::info!(
                    records = ledger.len(),
                    seq = ledger.seq(),
                    "state view loaded from the host's store (unchecked: no witnesses); serving"
                );
            }
        }
        EnclaveResponse::Loaded {
            records: ledger.len() as u64,
            ready: ledger.is_ready(),
        }
    }

    /// The deletions due among `keys` by this enclave's clock: each key and its aliases become
    /// tombstones. Keys not due, not current, or not this domain's are left alone.
    pub(crate) fn sweep(
        &self,
        keys: &Keyring,
        candidates: &[SealedBlob],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Vec<StoreWrite>, u64), EnclaveError> {
        let now_ms = now.timestamp_millis();
        let mut writes = Vec::new();
        let mut changes = Vec::new();
        for sealed in candidates {
            let Ok(rec) = record::open::<KeyRecord>(keys, Kind::Key, None, &sealed.0) else {
                continue;
            };
            let Some(id) = RecordId::key(&rec.key_id) else {
                continue;
            };
            let Ok(version) = self.ledger()?.check(&id, rec.generation, &sealed.0) else {
                continue;
            };
            // Every region of a multi-Region key has its own deletion date.
            let due = rec.regions_due_for_deletion(now_ms);
            if due.is_empty() {
                continue;
            }
            let Some(target) = id.key_bits() else {
                continue;
            };
            let whole = due.len() == rec.regions().len();
            let home = &self.config.region;
            let aliases = {
                let l = self.ledger()?;
                let (names, _) = l.aliases_of(target, None, usize::MAX);
                names
                    .into_iter()
                    .filter(|n| {
                        whole
                            || due
                                .iter()
                                .any(|r| n.starts_with(&ekms_wire::region::alias_prefix(home, r)))
                    })
                    .filter_map(|n| l.current(&RecordId::Alias(n.clone())).map(|v| (n, v)))
                    .collect::<Vec<_>>()
            };
            for (name, v) in aliases {
                let (w, c) = ops::tombstone_write(self, keys, Kind::Alias, &name, v, now_ms)?;
                writes.push(w);
                changes.push(c);
            }
            if whole {
                let (w, c) =
                    ops::tombstone_write(self, keys, Kind::Key, &rec.key_id, version, now_ms)?;
                writes.push(w);
                changes.push(c);
            } else {
                // Only some replicas are due: the set lives on without them.
                let mut rec = rec;
                for region in &due {
                    if rec.view_from(region) {
                        rec.remove_viewed_replica();
                    }
                }
                rec.opened = Some(version);
                let (w, c) = ops::key_write(self, keys, &mut rec)?;
                writes.push(w);
                changes.push(c);
            }
        }
        if changes.is_empty() {
            return Ok((writes, 0));
        }
        let token = self.ledger()?.prepare(changes);
        Ok((writes, token))
    }

    /// The write that re-seals `sealed` under the current domain key, if another key sealed it.
    pub(super) fn reseal(
        &self,
        keys: &Keyring,
        sealed: &SealedBlob,
    ) -> Result<Option<(StoreWrite, u64)>, EnclaveError> {
        let h = record::peek(&sealed.0).ok_or(EnclaveError::BadRecord)?;
        let current = keys.current();
        if h.domain == current.fingerprint() {
            return Ok(None);
        }
        let id = h.id.to_owned();
        let (write, change) = match h.kind {
            1 => {
                let mut rec: KeyRecord = record::open(keys, Kind::Key, Some(&id), &sealed.0)?;
                let rid = RecordId::key(&id).ok_or(EnclaveError::BadRecord)?;
                rec.opened = Some(self.check_current(&rid, rec.generation, &sealed.0)?);
                ops::key_write(self, keys, &mut rec)?
            }
            2 => {
                let mut rec: AliasRecord = record::open(keys, Kind::Alias, Some(&id), &sealed.0)?;
                rec.opened =
                    Some(self.check_current(&RecordId::alias(&id), rec.generation, &sealed.0)?);
                ops::alias_write(self, keys, &mut rec)?
            }
            3 => {
                let mut rec = crate::principal::open(keys, &sealed.0)?;
                rec.opened = Some(self.check_current(
                    &RecordId::principal(&rec.id),
                    rec.generation,
                    &sealed.0,
                )?);
                ops::principal_write(self, keys, &mut rec)?
            }
            5 => {
                let mut g = crate::grant::open(keys, &sealed.0)?;
                let rid = record::grant_id(&id)?;
                let opened = self.check_current(&rid, g.generation, &sealed.0)?;
                g.generation = self.ledger()?.next_seq();
                let resealed = record::seal(current, Kind::Grant, &id, &g)?;
                let change = crate::ledger::Change {
                    id: rid,
                    expected: Some(opened),
                    new: Version {
                        seq: g.generation,
                        digest: digest_of(&resealed),
                    },
                    live: true,
                    target: None,
                };
                (
                    StoreWrite::PutGrant {
                        key_id: g.key_id.clone(),
                        grant_id: g.grant_id.clone(),
                        generation: g.generation,
                        expected: Some(opened.seq),
                        sealed: SealedBlob(resealed),
                        grantee: g.grantee.clone(),
                        retiring: g.retiring.clone(),
                        name: g.name.clone(),
                    },
                    change,
                )
            }
            7 => ops::last_usage::reseal(self, keys, &id, &sealed.0)?,
            4 => {
                let mut t: TombstoneRecord =
                    record::open(keys, Kind::Tombstone, Some(&id), &sealed.0)?;
                let (_, rid) = t.of()?;
                let opened = self
                    .ledger()?
                    .check_tombstone(&rid, t.generation, &sealed.0)
                    .map_err(|_: LedgerError| EnclaveError::StaleRecord)?;
                t.generation = self.ledger()?.next_seq();
                let resealed = record::seal(current, Kind::Tombstone, &id, &t)?;
                let change = crate::ledger::Change {
                    id: rid,
                    expected: None,
                    new: Version {
                        seq: t.generation,
                        digest: digest_of(&resealed),
                    },
                    live: false,
                    target: None,
                };
                (
                    StoreWrite::PutTombstone {
                        id,
                        generation: t.generation,
                        expected: opened.seq,
                        sealed: SealedBlob(resealed),
                    },
                    change,
                )
            }
            _ => return Err(EnclaveError::BadRecord),
        };
        let token = self.ledger()?.prepare(vec![change]);
        Ok(Some((write, token)))
    }

    /// Key `key_id`'s record as the host supplied it (`sealed`): opened now or kept from an
    /// earlier call (`crate::opened`), and in either case only once the state view confirms
    /// these bytes are its current version, which the returned copy holds in `opened`.
    pub(crate) fn current_key(
        &self,
        keys: &Keyring,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<KeyRecord, EnclaveError> {
        let rid = RecordId::key(key_id).ok_or(EnclaveError::BadRecord)?;
        let digest = digest_of(sealed);
        let kept = self.opened.key(digest, || {
            record::open::<KeyRecord>(keys, Kind::Key, Some(key_id), sealed)
        })?;
        // Bytes once opened as another key's record are that key's (the id is sealed in them).
        if kept.key_id != key_id {
            return Err(EnclaveError::BadRecord);
        }
        let version = self.check_current_version(
            &rid,
            Version {
                seq: kept.generation,
                digest,
            },
        )?;
        let mut rec = KeyRecord::clone(&kept);
        rec.opened = Some(version);
        Ok(rec)
    }

    /// Checks that `version` (a generation and the digest of the sealed bytes shown) is the
    /// current version of `id` in the state view.
    pub(crate) fn check_current_version(
        &self,
        id: &RecordId,
        version: Version,
    ) -> Result<Version, EnclaveError> {
        self.ledger()?
            .check_version(id, version)
            .map_err(|_: LedgerError| EnclaveError::StaleRecord)
    }

    /// Checks that `sealed` is the current copy of `id` in the state view.
    pub(crate) fn check_current(
        &self,
        id: &RecordId,
        generation: u64,
        sealed: &[u8],
    ) -> Result<Version, EnclaveError> {
        self.check_current_version(
            id,
            Version {
                seq: generation,
                digest: digest_of(sealed),
            },
        )
    }
}

pub(super) fn open_any(
    keys: &Keyring,
    sealed: &SealedBlob,
) -> Result<(String, String), EnclaveError> {
    let h = record::peek(&sealed.0).ok_or(EnclaveError::BadRecord)?;
    let id = h.id.to_owned();
    let kind = match h.kind {
        1 => {
            record::open::<KeyRecord>(keys, Kind::Key, None, &sealed.0)?;
            "key"
        }
        2 => {
            record::open::<AliasRecord>(keys, Kind::Alias, None, &sealed.0)?;
            "alias"
        }
        3 => {
            crate::principal::open(keys, &sealed.0)?;
            "principal"
        }
        5 => {
            crate::grant::open(keys, &sealed.0)?;
            "grant"
        }
        7 => {
            record::open::<crate::usage::UsageRecord>(keys, Kind::Usage, Some(&id), &sealed.0)?
                .checked(&id)?;
            "usage"
        }
        _ => return Err(EnclaveError::BadRecord),
    };
    Ok((kind.to_owned(), id))
}
