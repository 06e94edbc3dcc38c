//! KMS operations. [`execute`] authenticates the call, then dispatches on the signed operation
//! name. Every operation reads the sealed records the host supplied, checks key state from the
//! sealed metadata, and returns its JSON body and the store writes to make durable.

mod agree;
mod aliases;
mod authz;
mod crypto;
mod data_key_pair;
mod grants;
mod import;
mod key_policy;
pub(crate) mod keys;
pub(crate) mod last_usage;
mod mac;
mod multi_region;
mod principals;
mod public_key;
pub(crate) mod recipient;
mod recovery;
pub(crate) mod rotation;
mod sign;
mod sts;
mod tags;
mod xks_admin;

use std::{cell::RefCell, sync::Arc};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ekms_wire::{
    msg::{KmsCall, KmsErrorCode, SealedBlob, StoreWrite},
    plan::{self, AWS_KMS_OPERATIONS, KeyRef, parse_key_ref},
};
use serde::{Deserialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use crate::{
    Core, EnclaveError, KmsError, auth,
    domain::Keyring,
    ledger::{Change, Digest, LedgerError, RecordId, Version, digest_of},
    opened::Keyed,
    record::{self, AliasRecord, KeyRecord, KeyState, Kind, PrincipalRecord, TombstoneRecord},
    replay::RequestId,
};

/// Why an operation did not produce a response body.
#[derive(Debug)]
pub enum OpError {
    /// An AWS error for the client.
    Kms(KmsError),
    /// A record was older than one already seen: the host must re-read and retry.
    Stale,
}

impl From<KmsError> for OpError {
    fn from(e: KmsError) -> Self {
        Self::Kms(e)
    }
}

impl From<LedgerError> for OpError {
    fn from(_: LedgerError) -> Self {
        // Not current, hidden, or not loaded: the host must re-read its store and retry.
        Self::Stale
    }
}

impl From<EnclaveError> for OpError {
    fn from(e: EnclaveError) -> Self {
        match e {
            EnclaveError::StaleRecord => Self::Stale,
            other => Self::Kms(other.into()),
        }
    }
}

/// Body and writes of a successful operation.
pub type Reply = (Vec<u8>, Vec<StoreWrite>);
type OpResult = Result<Reply, OpError>;

/// Authenticates and runs a KMS call received when the machine's clock read `now`: the signature
/// and replay windows are checked against it, the operation runs at the enclave's time for it
/// ([`Clock::at`](crate::clock::Clock::at)). Returns the body, the writes, and the token that
/// commits them to the state view once the host made them durable (0: no writes).
pub fn execute(
    core: &Core,
    keys: &Keyring,
    call: &KmsCall,
    now: DateTime<Utc>,
) -> Result<(Vec<u8>, Vec<StoreWrite>, u64), OpError> {
    execute_noted(core, keys, call, now, &mut crate::audit::Note::default())
}

/// [`execute`], noting in `note` what the call's audit record needs as it is learnt (the
/// caller only once its signature verified).
pub fn execute_noted(
    core: &Core,
    keys: &Keyring,
    call: &KmsCall,
    now: DateTime<Utc>,
    note: &mut crate::audit::Note,
) -> Result<(Vec<u8>, Vec<StoreWrite>, u64), OpError> {
    let principal = match &call.principal {
        Some(sealed) => Some(caller(core, keys, &sealed.0)?),
        None => None,
    };
    let keyed = principal.as_ref().map(|(record, digest)| Keyed {
        record,
        digest: *digest,
        opened: &core.opened,
    });
    let verified = auth::verify(
        &call.http,
        keyed.as_ref(),
        (&core.config.regions, &core.config.region),
        now,
    )?;
    let principal = principal.map(|(record, _)| record);
    note.operation = Some(verified.operation.clone());
    note.region = Some(verified.region.clone());
    note.principal_arn = principal.as_ref().map(|p| p.arn(&core.config.account));
    authz::check_grant_tokens(&verified.body)?;
    // A state-changing request runs at most once (see `replay`); one that then fails (say
    // NotFound) has still run. Only stale records, which change nothing and make the host
    // re-read and resend the same request, give it back.
    let admitted = if plan::changes_state(&verified.operation) {
        let id = RequestId::of_signature(&verified.signature);
        core.replay
            .admit(id, verified.signed_at, now)
            .map_err(KmsError::from)?;
        Some(id)
    } else {
        None
    };
    let tracked = last_usage::tracked(&verified.operation);
    if tracked.is_some() && core.usage.overdue() {
        // The host has not written the last uses back for too long: serving on would let a
        // crash lose more than the promised window (docs/formats.md).
        return Err(KmsError::new(
            KmsErrorCode::KMSInternalException,
            "The key enclave cannot make key usage durable (the host has not written it back); \
             retry the request.",
        )
        .into());
    }
    let ctx = Ctx {
        core,
        keys,
        call,
        now_ms: core.clock.at(now).timestamp_millis(),
        region: verified.region,
        tracked,
        used: RefCell::new(Vec::new()),
        changes: RefCell::new(Vec::new()),
        audited_key: RefCell::new(None),
        authz: authz::Authz {
            principal,
            action: format!("kms:{}", verified.operation),
            ..authz::Authz::default()
        },
    };
    let result = ctx.dispatch(&verified.operation, &verified.body);
    note.key_arn = ctx.audited_key.take();
    note.ec_keys = ctx.authz.ec.borrow().keys().cloned().collect();
    if let (Some(id), Err(OpError::Stale)) = (admitted, &result) {
        core.replay.release(id, verified.signed_at);
    }
    let (body, writes) = result?;
    if let Some(op) = tracked {
        let request = RequestId::of_signature(&verified.signature).bytes();
        for (key, since_ms) in ctx.used.take() {
            core.usage.record(
                key,
                crate::usage::Last {
                    op,
                    ms: ctx.now_ms,
                    request,
                    since_ms,
                },
            );
        }
    }
    let changes = ctx.changes.into_inner();
    let token = if changes.is_empty() {
        0
    } else {
        core.ledger()?.prepare(changes)
    };
    Ok((body, writes, token))
}

/// The caller's principal, from the sealed record the host supplied: opened now or kept from an
/// earlier call (`crate::opened`), and in either case only if the state view says these bytes
/// are its current version; with the digest of those bytes, under which its signing keys are
/// kept.
fn caller(
    core: &Core,
    keys: &Keyring,
    sealed: &[u8],
) -> Result<(Arc<PrincipalRecord>, Digest), OpError> {
    let unrecognized = || {
        KmsError::new(
            KmsErrorCode::UnrecognizedClientException,
            auth::MSG_UNRECOGNIZED,
        )
    };
    let digest = digest_of(sealed);
    let p = core
        .opened
        .principal(digest, || crate::principal::open(keys, sealed))
        .map_err(|_| unrecognized())?;
    // An old copy of a principal (a retired key, a changed policy) is refused.
    core.check_current_version(
        &RecordId::principal(&p.id),
        Version {
            seq: p.generation,
            digest,
        },
    )?;
    // An external key store's credential signs that store's XKS calls, no KMS call.
    if p.xks_prefix.is_some() {
        return Err(unrecognized().into());
    }
    Ok((p, digest))
}

/// What an operation sees.
pub(crate) struct Ctx<'a> {
    pub(crate) core: &'a Core,
    /// The domain keys: the current one seals, any opens.
    pub(crate) keys: &'a Keyring,
    pub(crate) call: &'a KmsCall,
    pub(crate) now_ms: i64,
    /// The region the request is signed for: it sees only this region's keys and aliases.
    pub(crate) region: String,
    /// The operation's index among those `GetKeyLastUsage` tracks, if it is one.
    tracked: Option<u8>,
    /// Keys the operation was authorized to use (and their tracking start), recorded as used if
    /// it succeeds.
    used: RefCell<Vec<(crate::usage::UsageKey, i64)>>,
    /// State-view changes of the writes made so far, prepared together at the end.
    changes: RefCell<Vec<Change>>,
    /// Who calls, and what the policies need to know about the request.
    pub(crate) authz: authz::Authz,
    /// The ARN of the first key the call was authorized against, for its audit record.
    pub(crate) audited_key: RefCell<Option<String>>,
}

impl Ctx<'_> {
    fn dispatch(&self, op: &str, body: &[u8]) -> OpResult {
        // Operations that name no key are decided by the caller's identity policies alone
        // (ListAliases with a KeyId is decided again when the key is resolved; CreateKey
        // decides once it has read the request's tags).
        // (GenerateRandom decides once it has verified a Recipient's attestation.)
        if matches!(op, "ListKeys" | "ListAliases") {
            self.authorize_account()?;
        }
        match op {
            "CreateKey" => keys::create_key(self, body),
            "DescribeKey" => keys::describe_key(self, body),
            "ReplicateKey" => multi_region::replicate_key(self, body),
            "UpdatePrimaryRegion" => multi_region::update_primary_region(self, body),
            "ListKeys" => keys::list_keys(self, body),
            "EnableKey" => keys::enable_key(self, body),
            "DisableKey" => keys::disable_key(self, body),
            "ScheduleKeyDeletion" => keys::schedule_key_deletion(self, body),
            "CancelKeyDeletion" => keys::cancel_key_deletion(self, body),
            "UpdateKeyDescription" => keys::update_key_description(self, body),
            "CreateAlias" => aliases::create_alias(self, body),
            "UpdateAlias" => aliases::update_alias(self, body),
            "DeleteAlias" => aliases::delete_alias(self, body),
            "ListAliases" => aliases::list_aliases(self, body),
            "TagResource" => tags::tag_resource(self, body),
            "UntagResource" => tags::untag_resource(self, body),
            "ListResourceTags" => tags::list_resource_tags(self, body),
            "Encrypt" => crypto::encrypt(self, body),
            "Decrypt" => crypto::decrypt(self, body),
            "ReEncrypt" => crypto::re_encrypt(self, body),
            "GenerateDataKey" => crypto::generate_data_key(self, body, true),
            "GenerateDataKeyWithoutPlaintext" => crypto::generate_data_key(self, body, false),
            "GenerateRandom" => crypto::generate_random(self, body),
            "Sign" => sign::sign(self, body),
            "Verify" => sign::verify(self, body),
            "GenerateMac" => mac::generate_mac(self, body),
            "VerifyMac" => mac::verify_mac(self, body),
            "GetPublicKey" => public_key::get_public_key(self, body),
            "CreateGrant" => grants::create_grant(self, body),
            "ListGrants" => grants::list_grants(self, body),
            "ListRetirableGrants" => grants::list_retirable_grants(self, body),
            "RetireGrant" => grants::retire_grant(self, body),
            "RevokeGrant" => grants::revoke_grant(self, body),
            "GetKeyPolicy" => key_policy::get_key_policy(self, body),
            "PutKeyPolicy" => key_policy::put_key_policy(self, body),
            "ListKeyPolicies" => key_policy::list_key_policies(self, body),
            "DeriveSharedSecret" => agree::derive_shared_secret(self, body),
            "GenerateDataKeyPair" => data_key_pair::generate_data_key_pair(self, body, true),
            "GenerateDataKeyPairWithoutPlaintext" => {
                data_key_pair::generate_data_key_pair(self, body, false)
            }
            "EnableKeyRotation" => rotation::enable_key_rotation(self, body),
            "DisableKeyRotation" => rotation::disable_key_rotation(self, body),
            "GetKeyRotationStatus" => rotation::get_key_rotation_status(self, body),
            "RotateKeyOnDemand" => rotation::rotate_key_on_demand(self, body),
            "ListKeyRotations" => rotation::list_key_rotations(self, body),
            "GetKeyLastUsage" => last_usage::get_key_last_usage(self, body),
            "GetParametersForImport" => import::get_parameters_for_import(self, body),
            "ImportKeyMaterial" => import::import_key_material(self, body),
            "DeleteImportedKeyMaterial" => import::delete_imported_key_material(self, body),
            "EkmsAcceptUnwitnessedState" => {
                self.with_action("ekms:AcceptUnwitnessedState", || self.authorize_account())?;
                recovery::accept_unwitnessed_state(self, body)
            }
            sts if sts.starts_with(ekms_wire::sts::PREFIX) => {
                sts::call(self, sts.trim_start_matches(ekms_wire::sts::PREFIX))
            }
            "EkmsCreatePrincipal" => principals::create_principal(self, body),
            "EkmsListPrincipals" => principals::list_principals(self, body),
            "EkmsDeletePrincipal" => principals::delete_principal(self, body),
            "EkmsCreateAccessKey" => principals::create_access_key(self, body),
            "EkmsDeleteAccessKey" => principals::delete_access_key(self, body),
            "EkmsPutPrincipalPolicy" => principals::put_principal_policy(self, body),
            "EkmsCreateXksCredential" => xks_admin::create_credential(self, body),
            "EkmsListXksCredentials" => xks_admin::list_credentials(self, body),
            "EkmsDeleteXksCredential" => xks_admin::delete_credential(self, body),
            "EkmsCreateXksKey" => xks_admin::create_key(self, body),
            "EkmsPutXksAccessRule" => xks_admin::put_rule(self, body),
            other if AWS_KMS_OPERATIONS.contains(&other) => Err(KmsError::new(
                KmsErrorCode::UnsupportedOperationException,
                format!("{other} is not supported by this appliance yet."),
            )
            .into()),
            other => Err(KmsError::new(
                KmsErrorCode::UnknownOperationException,
                format!("Unknown operation {other}"),
            )
            .into()),
        }
    }

    pub(crate) fn key_arn(&self, key_id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{key_id}",
            self.region, self.core.config.account
        )
    }

    pub(crate) fn alias_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:{name}",
            self.region, self.core.config.account
        )
    }

    /// The store's name of alias `name` in the request's region.
    pub(crate) fn alias_record_name(&self, name: &str) -> String {
        ekms_wire::region::alias_record(&self.core.config.region, &self.region, name)
    }

    /// Opens the supplied key record with id `key_id`, which must be the current one; `None`
    /// when the host supplied none and the state view agrees that there is none.
    pub(crate) fn key_by_id(&self, key_id: &str) -> Result<Option<KeyRecord>, OpError> {
        let Some(rid) = RecordId::key(key_id) else {
            return Ok(None);
        };
        let Some(sealed) = find(&self.call.keys, Kind::Key, key_id) else {
            self.core.ledger()?.check_absent(&rid)?;
            return Ok(None);
        };
        let mut rec = self.core.current_key(self.keys, key_id, &sealed.0)?;
        // Keys are regional: a key of another region does not exist in this one (a
        // multi-Region key is seen as its replica here, if it has one).
        if !rec.view_from(&self.region) {
            return Ok(None);
        }
        // Imported material past its ValidTo is gone, by this enclave's clock.
        crate::imported::expire(&mut rec, self.now_ms);
        // A key whose deletion date has passed is gone, whether or not the host has swept it.
        if rec.state == KeyState::PendingDeletion
            && rec.deletion_ms.is_some_and(|d| d <= self.now_ms)
        {
            return Ok(None);
        }
        Ok(Some(rec))
    }

    /// Opens the supplied record of alias `name` (`alias/...`) of the request's region, which
    /// must be the current one; `None` when the host supplied none and the state view agrees.
    pub(crate) fn alias(&self, name: &str) -> Result<Option<AliasRecord>, OpError> {
        self.alias_record(&self.alias_record_name(name))
    }

    /// As [`Ctx::alias`], by the store's name of the alias (see `ekms_wire::region`).
    fn alias_record(&self, record_name: &str) -> Result<Option<AliasRecord>, OpError> {
        let rid = RecordId::alias(record_name);
        let Some(sealed) = find(&self.call.aliases, Kind::Alias, record_name) else {
            self.core.ledger()?.check_absent(&rid)?;
            return Ok(None);
        };
        let mut rec: AliasRecord =
            record::open(self.keys, Kind::Alias, Some(record_name), &sealed.0)?;
        rec.opened = Some(self.core.ledger()?.check(&rid, rec.generation, &sealed.0)?);
        Ok(Some(rec))
    }

    /// The supplied current record of the alias the store names `record_name`, which the state
    /// view says is live.
    pub(crate) fn listed_alias(&self, record_name: &str) -> Result<AliasRecord, OpError> {
        self.alias_record(record_name)?.ok_or(OpError::Stale)
    }

    /// Notes that the operation may use `key`: a use, if the operation is tracked and succeeds.
    pub(crate) fn note_use(&self, key: &KeyRecord) {
        if self.tracked.is_some()
            && let Some(uk) = last_usage::usage_key(self.core, &key.key_id, &self.region)
        {
            self.used
                .borrow_mut()
                .push((uk, last_usage::tracking_start(self.core, key)));
        }
    }

    /// Records the state-view change of a write made by this operation.
    fn record_change(&self, change: Change) {
        self.changes.borrow_mut().push(change);
    }

    /// Resolves a `KeyId` field (id, ARN, alias, alias ARN) to a key record.
    /// Resolves a `KeyId`-style field to its key record, and authorizes the caller's operation
    /// on it.
    pub(crate) fn resolve(&self, key_id: &str) -> Result<KeyRecord, OpError> {
        let key = match parse_key_ref(key_id) {
            None => return Err(not_found_invalid(key_id).into()),
            Some(KeyRef::Id(id)) => self
                .key_by_id(&id)?
                .ok_or_else(|| self.key_not_found(&id))?,
            Some(KeyRef::Alias(name)) => {
                let alias = self.alias(&name)?.ok_or_else(|| {
                    KmsError::new(
                        KmsErrorCode::NotFoundException,
                        format!("Alias {} is not found.", self.alias_arn(&name)),
                    )
                })?;
                self.condition("kms:RequestAlias", vec![name.clone()]);
                self.key_by_id(&alias.target)?
                    .ok_or_else(|| self.key_not_found(&alias.target))?
            }
        };
        self.authorize(&key)?;
        Ok(key)
    }

    /// Resolves a field that must name a key directly (no alias).
    pub(crate) fn resolve_key_only(&self, key_id: &str) -> Result<KeyRecord, OpError> {
        match parse_key_ref(key_id) {
            Some(KeyRef::Id(_)) => self.resolve(key_id),
            _ => Err(not_found_invalid(key_id).into()),
        }
    }

    pub(crate) fn key_not_found(&self, id: &str) -> KmsError {
        KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("Key '{}' does not exist", self.key_arn(id)),
        )
    }

    /// Seals a changed (or new: never opened) key record into a store write.
    pub(crate) fn put_key(&self, rec: &mut KeyRecord) -> Result<StoreWrite, OpError> {
        let (write, change) = key_write(self.core, self.keys, rec)?;
        self.record_change(change);
        Ok(write)
    }

    /// Seals a changed (or new) alias record into a store write.
    pub(crate) fn put_alias(&self, rec: &mut AliasRecord) -> Result<StoreWrite, OpError> {
        let (write, change) = alias_write(self.core, self.keys, rec)?;
        self.record_change(change);
        Ok(write)
    }

    /// Replaces the opened alias `rec` by a tombstone.
    pub(crate) fn delete_alias(&self, rec: &AliasRecord) -> Result<StoreWrite, OpError> {
        let opened = rec.opened.ok_or(OpError::Stale)?;
        let (write, change) = tombstone_write(
            self.core,
            self.keys,
            Kind::Alias,
            &rec.name,
            opened,
            self.now_ms,
        )?;
        self.record_change(change);
        Ok(write)
    }
}

/// Seals the next version of a key record (a fresh domain-wide generation) under the current
/// domain key: the store write, conditional on the version it was opened from (none for a new
/// key), and the state-view change.
pub(crate) fn key_write(
    core: &Core,
    keys: &Keyring,
    rec: &mut KeyRecord,
) -> Result<(StoreWrite, Change), EnclaveError> {
    let id = RecordId::key(&rec.key_id).ok_or(EnclaveError::BadRecord)?;
    let expected = rec.opened;
    rec.generation = core.ledger()?.next_seq();
    let sealed = record::seal(keys.current(), Kind::Key, &rec.key_id, rec)?;
    let change = Change {
        id,
        expected,
        new: Version {
            seq: rec.generation,
            digest: digest_of(&sealed),
        },
        live: true,
        target: None,
    };
    rec.opened = Some(change.new);
    let write = StoreWrite::PutKey {
        key_id: rec.key_id.clone(),
        generation: rec.generation,
        expected: expected.map(|v| v.seq),
        sealed: SealedBlob(sealed),
        state: rec.state.as_str().to_owned(),
        deletion_date: rec.earliest_deletion_ms().map(|ms| ms / 1000),
        rotation_date: rec.rotation.map(|s| s.next_ms() / 1000),
    };
    Ok((write, change))
}

/// Seals the next version of an alias record, like [`key_write`].
pub(crate) fn alias_write(
    core: &Core,
    keys: &Keyring,
    rec: &mut AliasRecord,
) -> Result<(StoreWrite, Change), EnclaveError> {
    let target = RecordId::key(&rec.target).and_then(|t| t.key_bits());
    let expected = rec.opened;
    rec.generation = core.ledger()?.next_seq();
    let sealed = record::seal(keys.current(), Kind::Alias, &rec.name, rec)?;
    let change = Change {
        id: RecordId::alias(&rec.name),
        expected,
        new: Version {
            seq: rec.generation,
            digest: digest_of(&sealed),
        },
        live: true,
        target,
    };
    rec.opened = Some(change.new);
    let write = StoreWrite::PutAlias {
        name: rec.name.clone(),
        key_id: rec.target.clone(),
        generation: rec.generation,
        expected: expected.map(|v| v.seq),
        sealed: SealedBlob(sealed),
    };
    Ok((write, change))
}

/// Seals the next version of a principal record, like [`key_write`].
pub(crate) fn principal_write(
    core: &Core,
    keys: &Keyring,
    rec: &mut PrincipalRecord,
) -> Result<(StoreWrite, Change), EnclaveError> {
    let expected = rec.opened;
    rec.generation = core.ledger()?.next_seq();
    let sealed = record::seal(keys.current(), Kind::Principal, &rec.id, rec)?;
    let change = Change {
        id: RecordId::principal(&rec.id),
        expected,
        new: Version {
            seq: rec.generation,
            digest: digest_of(&sealed),
        },
        live: true,
        target: None,
    };
    rec.opened = Some(change.new);
    let write = StoreWrite::PutPrincipal {
        id: rec.id.clone(),
        generation: rec.generation,
        expected: expected.map(|v| v.seq),
        sealed: SealedBlob(sealed),
        access_key_ids: rec.key_ids(),
    };
    Ok((write, change))
}

/// Seals the tombstone that replaces the current version `opened` of key or alias `id`.
pub(crate) fn tombstone_write(
    core: &Core,
    keys: &Keyring,
    kind: Kind,
    id: &str,
    opened: Version,
    now_ms: i64,
) -> Result<(StoreWrite, Change), EnclaveError> {
    let rid = match kind {
        Kind::Key => RecordId::key(id).ok_or(EnclaveError::BadRecord)?,
        Kind::Alias => RecordId::alias(id),
        Kind::Principal => RecordId::principal(id),
        Kind::Grant => record::grant_id(id)?,
        Kind::Tombstone | Kind::ImportToken | Kind::Usage => return Err(EnclaveError::BadRecord),
    };
    let tomb = TombstoneRecord {
        kind: kind as u8,
        id: id.to_owned(),
        generation: core.ledger()?.next_seq(),
        deleted_ms: now_ms,
    };
    let sealed = record::seal(
        keys.current(),
        Kind::Tombstone,
        &TombstoneRecord::sealed_id(kind, id),
        &tomb,
    )?;
    let change = Change {
        id: rid,
        expected: Some(opened),
        new: Version {
            seq: tomb.generation,
            digest: digest_of(&sealed),
        },
        live: false,
        target: None,
    };
    let write = match kind {
        Kind::Key => StoreWrite::DeleteKey {
            key_id: id.to_owned(),
            expected: opened.seq,
            generation: tomb.generation,
            tombstone: SealedBlob(sealed),
        },
        Kind::Grant => {
            let (key_id, grant_id) = id.split_once('/').ok_or(EnclaveError::BadRecord)?;
            StoreWrite::DeleteGrant {
                key_id: key_id.to_owned(),
                grant_id: grant_id.to_owned(),
                expected: opened.seq,
                generation: tomb.generation,
                tombstone: SealedBlob(sealed),
            }
        }
        Kind::Principal => StoreWrite::DeletePrincipal {
            id: id.to_owned(),
            expected: opened.seq,
            generation: tomb.generation,
            tombstone: SealedBlob(sealed),
        },
        _ => StoreWrite::DeleteAlias {
            name: id.to_owned(),
            expected: opened.seq,
            generation: tomb.generation,
            tombstone: SealedBlob(sealed),
        },
    };
    Ok((write, change))
}

fn find<'a>(blobs: &'a [SealedBlob], kind: Kind, id: &str) -> Option<&'a SealedBlob> {
    blobs
        .iter()
        .find(|b| record::peek(&b.0).is_some_and(|h| h.kind == kind as u8 && h.id == id))
}

fn not_found_invalid(key_id: &str) -> KmsError {
    KmsError::new(
        KmsErrorCode::NotFoundException,
        format!("Invalid keyId '{key_id}'"),
    )
}

/// Parses a JSON request body into an operation's input.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        KmsError::new(
            KmsErrorCode::SerializationException,
            format!("Could not parse the request body: {}", e.classify_message()),
        )
    })
}

trait ClassifyMessage {
    fn classify_message(&self) -> &'static str;
}

impl ClassifyMessage for serde_json::Error {
    // The parser's own text may echo request bytes (plaintext): give only its category.
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Data => "a member has the wrong type",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}

/// Sets a member of a JSON object (no-op on anything else).
pub(crate) fn set(v: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

/// Serializes a response body.
pub(crate) fn reply<T: serde::Serialize>(value: &T, writes: Vec<StoreWrite>) -> OpResult {
    let body = serde_json::to_vec(value).map_err(|_| KmsError::internal())?;
    Ok((body, writes))
}

/// Decodes a base64 blob member straight into wiped memory.
pub(crate) fn b64(member: &str, s: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| {
            KmsError::new(
                KmsErrorCode::SerializationException,
                format!("Value of '{member}' is not valid base64."),
            )
        })
}

/// Base64 of bytes, for responses.
pub(crate) fn to_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// AWS-style length validation error.
pub(crate) fn too_long(value: &str, member: &str, max: usize) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}"
    ))
}

/// AWS-style range validation error.
pub(crate) fn out_of_range(value: i64, member: &str, min: i64, max: i64) -> KmsError {
    let (cmp, bound) = if value < min {
        ("greater than or equal to", min)
    } else {
        ("less than or equal to", max)
    };
    KmsError::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must have value {cmp} {bound}"
    ))
}

/// Plaintext in a response: base64 written straight into the JSON, never kept in a `String`.
pub(crate) struct SecretB64<'a>(pub(crate) &'a [u8]);

impl serde::Serialize for SecretB64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(to_b64(self.0));
        s.serialize_str(&text)
    }
}

/// AWS's error for a value outside an enum.
pub(crate) fn enum_error(value: &str, member: &str, set: &[&str]) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        set.join(", ")
    ))
}

/// AWS's error for a blob member of `len` bytes outside 1..=`max`.
pub(crate) fn length_error(member: &str, len: usize, max: usize) -> KmsError {
    let (cmp, bound) = if len == 0 {
        ("greater than or equal to", 1)
    } else {
        ("less than or equal to", max)
    };
    KmsError::validation(format!(
        "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must have length {cmp} {bound}"
    ))
}

/// Largest `Message` of Sign, Verify, GenerateMac and VerifyMac.
pub(crate) const MAX_MESSAGE: usize = 4096;

/// A required base64 blob member (`Member`, 1 to `max` bytes), decoded into wiped memory.
pub(crate) fn blob_input(
    member: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let lower = member
        .get(..1)
        .map(|f| f.to_ascii_lowercase() + member.get(1..).unwrap_or_default())
        .unwrap_or_default();
    let bytes = b64(member, value.ok_or_else(|| KmsError::required(&lower))?)?;
    if bytes.is_empty() || bytes.len() > max {
        return Err(length_error(&lower, bytes.len(), max));
    }
    Ok(bytes)
}

/// The decoded `Message` member (required, 1 to 4096 bytes).
pub(crate) fn message_input(message: Option<&str>) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    blob_input("Message", message, MAX_MESSAGE)
}

/// `InvalidKeyUsageException` unless the key's usage is `usage`.
pub(crate) fn require_usage(
    ctx: &Ctx<'_>,
    key: &KeyRecord,
    usage: &str,
    op: &str,
) -> Result<(), KmsError> {
    if key.usage != usage {
        return Err(KmsError::new(
            KmsErrorCode::InvalidKeyUsageException,
            format!(
                "{} key usage is {} which is not valid for {op}.",
                ctx.key_arn(&key.key_id),
                key.usage
            ),
        ));
    }
    Ok(())
}

/// `DryRunOperationException` when `DryRun` is set (after every other check passed).
pub(crate) fn dry_run(dry: Option<bool>) -> Result<(), KmsError> {
    if dry == Some(true) {
        return Err(KmsError::new(
            KmsErrorCode::DryRunOperationException,
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

/// Checks that a key may be used for cryptography.
pub(crate) fn require_enabled(ctx: &Ctx<'_>, rec: &KeyRecord) -> Result<(), KmsError> {
    match rec.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(KmsError::new(
            KmsErrorCode::DisabledException,
            format!("{} is disabled.", ctx.key_arn(&rec.key_id)),
        )),
        KeyState::PendingDeletion => Err(pending_deletion(ctx, rec)),
        KeyState::PendingImport => Err(import::pending_import(ctx, rec)),
    }
}

/// `KMSInvalidStateException` for a key pending deletion.
pub(crate) fn pending_deletion(ctx: &Ctx<'_>, rec: &KeyRecord) -> KmsError {
    KmsError::new(
        KmsErrorCode::KMSInvalidStateException,
        format!("{} is pending deletion.", ctx.key_arn(&rec.key_id)),
    )
}

/// Refuses a key pending deletion.
pub(crate) fn require_not_pending(ctx: &Ctx<'_>, rec: &KeyRecord) -> Result<(), KmsError> {
    if rec.state == KeyState::PendingDeletion {
        return Err(pending_deletion(ctx, rec));
    }
    Ok(())
}

/// Input with only a `KeyId`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyIdInput {
    pub(crate) key_id: Option<String>,
}

impl KeyIdInput {
    pub(crate) fn key_id(&self) -> Result<&str, KmsError> {
        self.key_id
            .as_deref()
            .ok_or_else(|| KmsError::required("keyId"))
    }
}

#[cfg(test)]
mod cost_tests;
#[cfg(test)]
pub(crate) mod tests;
