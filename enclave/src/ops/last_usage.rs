//! GetKeyLastUsage, and the write-back of the last uses the enclave keeps in memory
//! ([`flush`], when the host asks). The answer comes from this enclave's memory when the key was
//! used since its last durable usage record, else from that sealed record, which must be the
//! current one in the state view: a host cannot invent a use, show an older one, or show
//! another key's.

use ekms_wire::{
    msg::{SealedBlob, StoreWrite},
    plan::{self, LAST_USAGE_OPERATIONS},
};
use serde_json::json;

use super::{Ctx, KeyIdInput, OpError, OpResult, find, parse, reply};
use crate::{
    Core, EnclaveError,
    domain::Keyring,
    ledger::{Change, RecordId, Version, digest_of},
    ops::keys::seconds,
    record::{self, KeyRecord, Kind},
    usage::{Last, MAX_PER_FLUSH, UsageKey, UsageRecord},
};

/// The index of `op` among the tracked operations, if a success of it counts as a use.
pub(crate) fn tracked(op: &str) -> Option<u8> {
    LAST_USAGE_OPERATIONS
        .iter()
        .position(|o| *o == op)
        .and_then(|i| u8::try_from(i).ok())
}

/// The tracking start of `key`: its creation if the enclave tracked it since, else this
/// enclave's start (uses before it may have gone unrecorded).
pub(crate) fn tracking_start(core: &Core, key: &KeyRecord) -> i64 {
    if key.usage_tracked {
        key.created_ms
    } else {
        core.usage.started_ms().max(key.created_ms)
    }
}

/// The usage record of key `key_id` as used by a request signed for `region` (a multi-Region
/// key's replicas are tracked apart, as AWS does).
pub(crate) fn usage_key(core: &Core, key_id: &str, region: &str) -> Option<UsageKey> {
    let u = RecordId::key(key_id)?.key_bits()?;
    let part = ekms_wire::region::usage_region(&core.config.region, region, key_id);
    Some((u, part.into()))
}

fn record_id((u, region): &UsageKey) -> RecordId {
    RecordId::Usage(*u, region.clone())
}

pub(crate) fn get_key_last_usage(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    // Key id or key ARN only: an alias is `NotFoundException` (AWS: aliases are not supported).
    let key = ctx.resolve_key_only(input.key_id()?)?;
    let uk = usage_key(ctx.core, &key.key_id, &ctx.region).ok_or(OpError::Stale)?;
    let last = match ctx.core.usage.latest(&uk) {
        Some(l) => Some(l),
        None => stored(ctx, &uk)?,
    };
    let mut out = json!({
        "KeyId": key.key_id,
        "KeyCreationDate": seconds(key.created_ms),
        "TrackingStartDate": seconds(last.map_or_else(|| tracking_start(ctx.core, &key), |l| l.since_ms)),
    });
    if let Some(l) = last {
        let operation = LAST_USAGE_OPERATIONS
            .get(usize::from(l.op))
            .copied()
            .unwrap_or_default();
        // No CloudTrail here: `CloudTrailEventId` is left out (AWS marks it optional).
        super::set(
            &mut out,
            "KeyLastUsage",
            json!({
                "Operation": operation,
                "Timestamp": seconds(l.ms),
                "KmsRequestId": plan::request_id(l.request),
            }),
        );
    }
    reply(&out, vec![])
}

/// The key's durable usage record as the host showed it, which must be the current one (or
/// absent when the view has none).
fn stored(ctx: &Ctx<'_>, uk: &UsageKey) -> Result<Option<Last>, OpError> {
    let rid = record_id(uk);
    let name = rid.name();
    let Some(sealed) = find(&ctx.call.usage, Kind::Usage, &name) else {
        ctx.core.ledger()?.check_absent(&rid)?;
        return Ok(None);
    };
    let rec: UsageRecord =
        record::open::<UsageRecord>(ctx.keys, Kind::Usage, Some(&name), &sealed.0)?
            .checked(&name)?;
    ctx.core.ledger()?.check(&rid, rec.generation, &sealed.0)?;
    let op = tracked(&rec.operation).ok_or(EnclaveError::BadRecord)?;
    let request = uuid::Uuid::try_parse(&rec.request_id)
        .map_err(|_| EnclaveError::BadRecord)?
        .into_bytes();
    Ok(Some(Last {
        op,
        ms: rec.ms,
        request,
        since_ms: rec.since_ms,
    }))
}

/// Seals the last use of every key used since its last durable record (at most
/// [`MAX_PER_FLUSH`]): the writes, the token that commits them, and whether more keys wait.
pub(crate) fn flush(
    core: &Core,
    keys: &Keyring,
) -> Result<(Vec<StoreWrite>, u64, bool), EnclaveError> {
    let (due, more) = {
        let ledger = core.ledger()?;
        if !ledger.is_ready() {
            return Ok((Vec::new(), 0, false));
        }
        core.usage
            .due(|uk| ledger.current(&record_id(uk)), MAX_PER_FLUSH)
    };
    let mut writes = Vec::with_capacity(due.len());
    let mut changes = Vec::with_capacity(due.len());
    for d in due {
        let rid = record_id(&d.key);
        let name = rid.name();
        let operation = LAST_USAGE_OPERATIONS
            .get(usize::from(d.last.op))
            .ok_or(EnclaveError::Encoding)?;
        let rec = UsageRecord {
            key_id: crate::ledger::key_name(d.key.0),
            region: d.key.1.to_string(),
            operation: (*operation).to_owned(),
            ms: d.last.ms,
            request_id: plan::request_id(d.last.request),
            since_ms: d.last.since_ms,
            generation: core.ledger()?.next_seq(),
        };
        let sealed = record::seal(keys.current(), Kind::Usage, &name, &rec)?;
        let new = Version {
            seq: rec.generation,
            digest: digest_of(&sealed),
        };
        changes.push(Change {
            id: rid,
            expected: d.expected,
            new,
            live: true,
            target: None,
        });
        writes.push(StoreWrite::PutUsage {
            key_id: name,
            generation: rec.generation,
            expected: d.expected.map(|v| v.seq),
            sealed: SealedBlob(sealed),
        });
        core.usage.sealed(&d.key, d.stamp, new);
    }
    if changes.is_empty() {
        return Ok((writes, 0, more));
    }
    let token = core.ledger()?.prepare(changes);
    Ok((writes, token, more))
}

/// The write that re-seals a usage record under the current domain key (domain key rotation),
/// and its state-view change.
pub(crate) fn reseal(
    core: &Core,
    keys: &Keyring,
    id: &str,
    sealed: &[u8],
) -> Result<(StoreWrite, Change), EnclaveError> {
    let mut rec = record::open::<UsageRecord>(keys, Kind::Usage, Some(id), sealed)?.checked(id)?;
    let rid = RecordId::usage_named(id).ok_or(EnclaveError::BadRecord)?;
    let opened = core.check_current(&rid, rec.generation, sealed)?;
    rec.generation = core.ledger()?.next_seq();
    let resealed = record::seal(keys.current(), Kind::Usage, id, &rec)?;
    let change = Change {
        id: rid,
        expected: Some(opened),
        new: Version {
            seq: rec.generation,
            digest: digest_of(&resealed),
        },
        live: true,
        target: None,
    };
    let write = StoreWrite::PutUsage {
        key_id: id.to_owned(),
        generation: rec.generation,
        expected: Some(opened.seq),
        sealed: SealedBlob(resealed),
    };
    Ok((write, change))
}
