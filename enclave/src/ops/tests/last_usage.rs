//! GetKeyLastUsage through the real entry point, and the usage write-back as a hostile host
//! would handle it: replaying an older usage record, hiding one, showing another key's, dropping
//! a flush or committing an older one late, withholding flushes altogether.

use std::time::Duration;

use ekms_wire::msg::{KmsErrorCode, SealedBlob, StoreWrite};
use serde_json::{Value, json};

use super::{Env, OpError};
use crate::{record, usage::Tracker};

impl Env {
    /// What the host's flush loop asks for: the usage writes and their token (not applied).
    fn flush_unapplied(&self) -> (Vec<StoreWrite>, u64) {
        let (writes, token, more) =
            crate::ops::last_usage::flush(&self.core, self.domain.keyring()).unwrap();
        assert!(!more);
        assert_eq!(writes.is_empty(), token == 0);
        (writes, token)
    }

    /// Applies usage writes to the in-memory store (a durable write) and commits `token`.
    fn apply_usage(&mut self, writes: Vec<StoreWrite>, token: u64) {
        if token != 0 {
            self.core.ledger().unwrap().commit(token).unwrap();
        }
        for w in writes {
            let StoreWrite::PutUsage { key_id, sealed, .. } = w else {
                panic!("a flush writes usage records only");
            };
            self.usage
                .retain(|u| record::peek(&u.0).unwrap().id != key_id);
            self.usage.push(sealed);
        }
    }

    /// A flush as an honest host makes it; the records written. The next flush (here at once,
    /// in `serve` ten seconds later) finds them durable and forgets them.
    fn flush(&mut self) -> usize {
        let (writes, token) = self.flush_unapplied();
        let n = writes.len();
        self.apply_usage(writes, token);
        let (again, _) = self.flush_unapplied();
        assert!(again.is_empty());
        n
    }

    fn last_usage(&mut self, key: &str) -> Result<Value, OpError> {
        self.call("GetKeyLastUsage", json!({ "KeyId": key }))
    }

    fn use_key(&mut self, key: &str) -> String {
        self.call("Encrypt", json!({"KeyId": key, "Plaintext": "AAAA"}))
            .unwrap()["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The current sealed usage record of `key` in the in-memory store.
    fn usage_record(&self, key: &str) -> SealedBlob {
        self.usage
            .iter()
            .find(|u| record::peek(&u.0).unwrap().id == key)
            .unwrap()
            .clone()
    }
}

fn operation(v: &Value) -> Option<&str> {
    v["KeyLastUsage"]["Operation"].as_str()
}

fn stale(r: Result<Value, OpError>) {
    assert!(
        matches!(r, Err(OpError::Stale)),
        "expected stale, got {r:?}"
    );
}

#[test]
fn a_use_is_reported_at_once_and_after_it_was_written_back() {
    let mut env = Env::new();
    let key = env.create();
    let fresh = env.last_usage(&key).unwrap();
    assert!(fresh.get("KeyLastUsage").is_none());
    assert_eq!(fresh["KeyId"], key.as_str());
    // A key made since tracking exists is tracked from its creation.
    assert_eq!(fresh["TrackingStartDate"], fresh["KeyCreationDate"]);
    // Describing a key is no cryptographic operation; writing back nothing writes nothing.
    env.call("DescribeKey", json!({ "KeyId": key })).unwrap();
    assert_eq!(env.flush(), 0);

    env.use_key(&key);
    let used = env.last_usage(&key).unwrap();
    assert_eq!(operation(&used), Some("Encrypt"));
    let ts = used["KeyLastUsage"]["Timestamp"].as_f64().unwrap();
    assert!(ts >= fresh["KeyCreationDate"].as_f64().unwrap());
    let request = used["KeyLastUsage"]["KmsRequestId"].as_str().unwrap();
    assert!(uuid::Uuid::try_parse(request).is_ok());
    // No CloudTrail in this appliance: the member is absent, not invented.
    assert!(used["KeyLastUsage"].get("CloudTrailEventId").is_none());

    assert_eq!(env.flush(), 1);
    assert!(env.core.usage.is_empty());
    // The next flush finds it durable and writes nothing.
    assert_eq!(env.flush(), 0);
    // Now answered from the sealed record, identically.
    assert_eq!(env.last_usage(&key).unwrap(), used);
}

#[test]
fn only_successful_cryptographic_operations_count_and_re_encrypt_counts_twice() {
    let mut env = Env::new();
    let a = env.create();
    let b = env.create();
    let blob = env.use_key(&a);
    env.flush();
    // Reads of metadata, a failed operation and a dry run are no use of the key.
    env.call("GetKeyRotationStatus", json!({ "KeyId": a }))
        .unwrap();
    env.call(
        "Encrypt",
        json!({"KeyId": a, "Plaintext": "AAAA", "DryRun": true}),
    )
    .unwrap_err();
    env.call(
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"x": "y"}}),
    )
    .unwrap_err();
    assert!(env.core.usage.is_empty());
    assert_eq!(operation(&env.last_usage(&a).unwrap()), Some("Encrypt"));
    // ReEncrypt uses both keys.
    env.call(
        "ReEncrypt",
        json!({"CiphertextBlob": blob, "DestinationKeyId": b}),
    )
    .unwrap();
    assert_eq!(operation(&env.last_usage(&a).unwrap()), Some("ReEncrypt"));
    assert_eq!(operation(&env.last_usage(&b).unwrap()), Some("ReEncrypt"));
    assert_eq!(env.flush(), 2);
}

#[test]
fn aliases_and_unknown_keys_are_not_found() {
    let mut env = Env::new();
    let key = env.create();
    env.call(
        "CreateAlias",
        json!({"AliasName": "alias/u", "TargetKeyId": key}),
    )
    .unwrap();
    let (code, msg) = env.err("GetKeyLastUsage", json!({"KeyId": "alias/u"}));
    assert_eq!(code, KmsErrorCode::NotFoundException);
    assert_eq!(msg, "Invalid keyId 'alias/u'");
    let (code, _) = env.err(
        "GetKeyLastUsage",
        json!({"KeyId": "arn:aws:kms:us-east-1:111122223333:alias/u"}),
    );
    assert_eq!(code, KmsErrorCode::NotFoundException);
    let (code, _) = env.err(
        "GetKeyLastUsage",
        json!({"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}),
    );
    assert_eq!(code, KmsErrorCode::NotFoundException);
    let (code, _) = env.err("GetKeyLastUsage", json!({}));
    assert_eq!(code, KmsErrorCode::ValidationException);
    // The key ARN works.
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key}");
    assert_eq!(env.last_usage(&arn).unwrap()["KeyId"], key.as_str());
}

#[test]
fn the_host_cannot_roll_back_hide_or_swap_usage_records() {
    let mut env = Env::new();
    let a = env.create();
    let b = env.create();
    let c = env.create();
    let blob = env.use_key(&a);
    env.flush();
    let older = env.usage_record(&a);
    env.call("Decrypt", json!({ "CiphertextBlob": blob }))
        .unwrap();
    env.use_key(&b);
    env.flush();
    let current = env.usage.clone();
    assert_eq!(operation(&env.last_usage(&a).unwrap()), Some("Decrypt"));

    // An older copy of a's record: refused as stale (the host re-reads; it has nothing better).
    env.usage = vec![older];
    stale(env.last_usage(&a));
    // Hiding a's record: refused too, not answered as "never used".
    env.usage = vec![];
    stale(env.last_usage(&a));
    // b's record shown for a: not a's, so a's is hidden.
    env.usage = vec![env_record(&current, &b)];
    stale(env.last_usage(&a));
    // b's record shown for c, which was never used: c still reports no use.
    assert!(env.last_usage(&c).unwrap().get("KeyLastUsage").is_none());
    // b's record relabelled with a's id: it does not open.
    let mut forged = env_record(&current, &b).0;
    let at = forged
        .windows(b.len())
        .position(|w| w == b.as_bytes())
        .unwrap();
    forged[at..at + a.len()].copy_from_slice(a.as_bytes());
    env.usage = vec![SealedBlob(forged)];
    assert!(matches!(env.last_usage(&a), Err(OpError::Kms(_))));

    env.usage = current;
    assert_eq!(operation(&env.last_usage(&a).unwrap()), Some("Decrypt"));
}

fn env_record(records: &[SealedBlob], key: &str) -> SealedBlob {
    records
        .iter()
        .find(|u| record::peek(&u.0).unwrap().id == key)
        .unwrap()
        .clone()
}

#[test]
fn a_dropped_flush_loses_nothing_and_a_late_older_commit_cannot_roll_back() {
    let mut env = Env::new();
    let key = env.create();
    let blob = env.use_key(&key);
    // The host drops the first flush's writes.
    let (first, first_token) = env.flush_unapplied();
    assert_eq!(first.len(), 1);
    env.call("Decrypt", json!({ "CiphertextBlob": blob }))
        .unwrap();
    // The enclave still knows the latest use.
    assert_eq!(operation(&env.last_usage(&key).unwrap()), Some("Decrypt"));
    let (second, second_token) = env.flush_unapplied();
    assert_eq!(second.len(), 1);
    // The host makes the older flush durable after all, then tries the newer one: the newer
    // one no longer applies to the view, so it is refused (as the store's condition refuses it).
    env.apply_usage(first, first_token);
    assert!(env.core.ledger().unwrap().commit(second_token).is_err());
    // The enclave does not take the older record for the latest: it is still due, and the next
    // flush writes the latest over it.
    assert_eq!(operation(&env.last_usage(&key).unwrap()), Some("Decrypt"));
    assert_eq!(env.flush(), 1);
    assert!(env.core.usage.is_empty());
    assert_eq!(operation(&env.last_usage(&key).unwrap()), Some("Decrypt"));
}

#[test]
fn withheld_flushes_stop_cryptographic_operations_until_usage_is_written() {
    let mut env = Env::new();
    env.core.usage = Tracker::new(0).with_max_unsaved(Duration::from_millis(50));
    let key = env.create();
    env.use_key(&key);
    std::thread::sleep(Duration::from_millis(120));
    let (code, msg) = env.err("Encrypt", json!({"KeyId": key, "Plaintext": "AAAA"}));
    assert_eq!(code, KmsErrorCode::KMSInternalException);
    assert!(msg.contains("usage"), "{msg}");
    // Everything else goes on, including reading the last use.
    env.call("DescribeKey", json!({ "KeyId": key })).unwrap();
    assert_eq!(operation(&env.last_usage(&key).unwrap()), Some("Encrypt"));
    // A flush that is made durable lets cryptography resume.
    assert_eq!(env.flush(), 1);
    env.use_key(&key);
}

#[test]
fn a_usage_record_is_indexed_as_its_keys_usage_and_survives_a_domain_key_rotation() {
    let mut env = Env::new();
    let key = env.create();
    env.use_key(&key);
    env.flush();
    let sealed = env.usage_record(&key);
    let i = record::index(env.domain.keyring(), &sealed.0).unwrap();
    let crate::ledger::RecordId::Key(u) = crate::ledger::RecordId::key(&key).unwrap() else {
        unreachable!()
    };
    assert_eq!(i.id, crate::ledger::RecordId::Usage(u, "".into()));
    // Re-sealing (what the host does for every record after a domain key rotation) writes a
    // new version the view accepts, and the old copy is refused from then on.
    let (write, change) =
        crate::ops::last_usage::reseal(&env.core, env.domain.keyring(), &key, &sealed.0).unwrap();
    let token = env.core.ledger().unwrap().prepare(vec![change]);
    env.apply_usage(vec![write], token);
    assert_eq!(operation(&env.last_usage(&key).unwrap()), Some("Encrypt"));
    env.usage = vec![sealed];
    stale(env.last_usage(&key));
}

#[test]
fn each_replica_of_a_multi_region_key_has_its_own_last_use() {
    const US: &str = "us-east-1";
    const EU: &str = "eu-west-1";
    const EU2: &str = "eu-west-2";
    let mut env = Env::new();
    let key = env
        .call_in(US, "CreateKey", json!({"MultiRegion": true}))
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    for region in [EU, EU2] {
        env.call_in(
            US,
            "ReplicateKey",
            json!({"KeyId": key, "ReplicaRegion": region}),
        )
        .unwrap();
    }
    let last_in = |env: &mut Env, region: &str| {
        env.call_in(region, "GetKeyLastUsage", json!({ "KeyId": key }))
    };
    let blob = env
        .call_in(EU, "Encrypt", json!({"KeyId": key, "Plaintext": "AAAA"}))
        .unwrap()["CiphertextBlob"]
        .clone();
    // Used in eu-west-1 only: the primary in us-east-1 has no use.
    assert_eq!(operation(&last_in(&mut env, EU).unwrap()), Some("Encrypt"));
    assert!(last_in(&mut env, US).unwrap().get("KeyLastUsage").is_none());
    env.call_in(
        US,
        "GenerateDataKey",
        json!({"KeyId": key, "NumberOfBytes": 32}),
    )
    .unwrap();
    // A replica decrypts what another made: a use of the replica that decrypted.
    env.call_in(
        EU2,
        "Decrypt",
        json!({"KeyId": key, "CiphertextBlob": blob}),
    )
    .unwrap();
    // Three records, one per region; the home region's keeps the key's plain name.
    assert_eq!(env.flush(), 3);
    let eu_record = env.usage_record(&format!("{EU}/{key}"));
    let us_record = env.usage_record(&key);
    let u = crate::ledger::RecordId::key(&key)
        .unwrap()
        .key_bits()
        .unwrap();
    assert_eq!(
        record::index(env.domain.keyring(), &eu_record.0)
            .unwrap()
            .id,
        crate::ledger::RecordId::Usage(u, EU.into())
    );
    assert_eq!(operation(&last_in(&mut env, EU).unwrap()), Some("Encrypt"));
    assert_eq!(operation(&last_in(&mut env, EU2).unwrap()), Some("Decrypt"));
    assert_eq!(
        operation(&last_in(&mut env, US).unwrap()),
        Some("GenerateDataKey")
    );
    let current = env.usage.clone();
    // The host shows one replica's record for another: the one asked for is hidden, refused.
    env.usage = vec![eu_record.clone()];
    stale(last_in(&mut env, US));
    env.usage = vec![us_record];
    stale(last_in(&mut env, EU));
    // eu-west-1's record relabelled as eu-west-2's: it does not open.
    let mut forged = eu_record.0;
    let at = forged
        .windows(EU.len())
        .position(|w| w == EU.as_bytes())
        .unwrap();
    forged[at..at + EU2.len()].copy_from_slice(EU2.as_bytes());
    env.usage = vec![SealedBlob(forged)];
    assert!(matches!(last_in(&mut env, EU2), Err(OpError::Kms(_))));
    env.usage = current;
    assert_eq!(operation(&last_in(&mut env, EU2).unwrap()), Some("Decrypt"));
}
