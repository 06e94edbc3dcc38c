//! Operation tests through the real entry point: signed requests, sealed records, writes.
#![allow(clippy::needless_pass_by_value)]

use std::time::SystemTime;

use ekms_wire::msg::{HttpRequest, KmsCall, KmsErrorCode, SealedBlob, StoreWrite};
use serde_json::{Value, json};

use super::{OpError, execute};
use crate::{
    Config, Core,
    auth::tests::{AKID, SECRET, principal, signed, signed_as},
    ledger::{Ledger, RecordId, Version, digest_of},
    record::{self, Kind},
};

pub(super) struct Env {
    pub(super) core: Core,
    domain: std::sync::Arc<crate::custody::Domain>,
    /// Every principal record, as the store holds them.
    pub(super) principals: Vec<SealedBlob>,
    pub(super) keys: Vec<SealedBlob>,
    aliases: Vec<SealedBlob>,
    /// Every grant record, as the store holds them.
    grants: Vec<SealedBlob>,
    /// Every last-usage record, as the store holds them.
    usage: Vec<SealedBlob>,
    /// Calls made: each is signed a second later than the one before, so that two equal
    /// state-changing calls are two requests, not a replay.
    calls: u64,
    /// The enclave's simulation CA (which client apps' documents may chain to, as with
    /// `ekms attestation mock`).
    ca: ekms_attestation::SimulationCa,
}

impl Env {
    pub(super) fn new() -> Self {
        let ca = ekms_attestation::SimulationCa::generate().unwrap();
        let core = Core::new(
            Config {
                region: "us-east-1".into(),
                regions: ekms_wire::region::Regions::Any,
                account: "111122223333".into(),
            },
            crate::core::test_attestor_for(&ca, b"test"),
        );
        let domain = core.open_test_domain();
        let p = principal();
        let sealed = record::seal(domain.keyring().current(), Kind::Principal, &p.id, &p).unwrap();
        let mut ledger = Ledger::new_ready();
        ledger.insert_own(
            RecordId::principal(&p.id),
            Version {
                seq: 0,
                digest: digest_of(&sealed),
            },
        );
        core.reset_ledger(ledger);
        Self {
            core,
            domain,
            principals: vec![SealedBlob(sealed)],
            keys: vec![],
            aliases: vec![],
            grants: vec![],
            usage: vec![],
            calls: 0,
            ca,
        }
    }

    /// Runs an operation like the host would, applying its writes to the in-memory store.
    fn call(&mut self, op: &str, body: Value) -> Result<Value, OpError> {
        self.calls += 1;
        let at = SystemTime::now() + std::time::Duration::from_secs(self.calls);
        self.call_at(op, &body, at)
    }

    fn call_at(&mut self, op: &str, body: &Value, at: SystemTime) -> Result<Value, OpError> {
        self.run(signed(op, &body.to_string(), SECRET, at), at)
    }

    /// Calls as the principal holding access key `who.0` with secret `who.1`.
    fn call_as(&mut self, who: (&str, &str), op: &str, body: Value) -> Result<Value, OpError> {
        self.calls += 1;
        let at = SystemTime::now() + std::time::Duration::from_secs(self.calls);
        self.run_as(
            who.0,
            signed_as(who.0, op, &body.to_string(), who.1, at),
            at,
        )
    }

    /// Calls as the administrator, signed for `region`.
    fn call_in(&mut self, region: &str, op: &str, body: Value) -> Result<Value, OpError> {
        self.calls += 1;
        let at = SystemTime::now() + std::time::Duration::from_secs(self.calls);
        let http = crate::auth::tests::signed_in(region, (AKID, SECRET), op, &body.to_string(), at);
        self.run(http, at)
    }

    /// The record of principal `name`, opened (tests hold the domain keys).
    fn principal_record(&self, name: &str) -> Option<crate::principal::PrincipalRecord> {
        self.principals
            .iter()
            .filter_map(|s| crate::principal::open(self.domain.keyring(), &s.0).ok())
            .find(|p| p.name == name)
    }

    /// Sends an already signed request at time `now`.
    fn run(&mut self, http: HttpRequest, now: SystemTime) -> Result<Value, OpError> {
        self.run_as(AKID, http, now)
    }

    /// Sends a request signed with access key `akid`, with the record the host finds for it.
    fn run_as(&mut self, akid: &str, http: HttpRequest, now: SystemTime) -> Result<Value, OpError> {
        let caller = self.principal_holding(akid);
        self.run_with(caller, http, now)
    }

    /// The sealed record of the principal holding access key `akid`, as the host finds it.
    fn principal_holding(&self, akid: &str) -> Option<SealedBlob> {
        self.principals
            .iter()
            .find(|s| {
                crate::principal::open(self.domain.keyring(), &s.0)
                    .is_ok_and(|p| p.secret_of(akid).is_some())
            })
            .cloned()
    }

    /// Sends a request with `caller` as the principal record the host supplies for it.
    fn run_with(
        &mut self,
        caller: Option<SealedBlob>,
        http: HttpRequest,
        now: SystemTime,
    ) -> Result<Value, OpError> {
        let call = KmsCall {
            http,
            principal: caller,
            keys: self.keys.clone(),
            aliases: self.aliases.clone(),
            principals: self.principals.clone(),
            grants: self.grants.clone(),
            next_marker: None,
            usage: self.usage.clone(),
        };
        let (out, writes, token) = execute(&self.core, self.domain.keyring(), &call, now.into())?;
        assert_eq!(writes.is_empty(), token == 0);
        if token != 0 {
            self.core.ledger().unwrap().commit(token).unwrap();
        }
        for w in writes {
            match w {
                StoreWrite::PutKey { key_id, sealed, .. } => {
                    self.keys
                        .retain(|k| record::peek(&k.0).unwrap().id != key_id);
                    self.keys.push(sealed);
                }
                StoreWrite::PutAlias { name, sealed, .. } => {
                    self.aliases
                        .retain(|k| record::peek(&k.0).unwrap().id != name);
                    self.aliases.push(sealed);
                }
                StoreWrite::DeleteAlias { name, .. } => {
                    self.aliases
                        .retain(|k| record::peek(&k.0).unwrap().id != name);
                }
                StoreWrite::DeleteKey { key_id, .. } => {
                    self.keys
                        .retain(|k| record::peek(&k.0).unwrap().id != key_id);
                }
                StoreWrite::PutPrincipal { id, sealed, .. } => {
                    self.principals
                        .retain(|k| record::peek(&k.0).unwrap().id != id);
                    self.principals.push(sealed);
                }
                StoreWrite::DeletePrincipal { id, .. } => {
                    self.principals
                        .retain(|k| record::peek(&k.0).unwrap().id != id);
                }
                StoreWrite::PutGrant {
                    key_id,
                    grant_id,
                    sealed,
                    ..
                } => {
                    let id = format!("{key_id}/{grant_id}");
                    self.grants.retain(|k| record::peek(&k.0).unwrap().id != id);
                    self.grants.push(sealed);
                }
                StoreWrite::DeleteGrant {
                    key_id, grant_id, ..
                } => {
                    let id = format!("{key_id}/{grant_id}");
                    self.grants.retain(|k| record::peek(&k.0).unwrap().id != id);
                }
                StoreWrite::PutTombstone { .. } => {
                    panic!("no operation re-seals tombstones")
                }
                StoreWrite::PutUsage { .. } => panic!("no operation writes usage"),
            }
        }
        // A body that is not JSON (STS's XML) comes back as a string.
        Ok(serde_json::from_slice(&out)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into_owned())))
    }

    fn err(&mut self, op: &str, body: Value) -> (KmsErrorCode, String) {
        match self.call(op, body) {
            Err(OpError::Kms(e)) => (e.code, e.message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub(super) fn create(&mut self) -> String {
        let out = self.call("CreateKey", json!({"Description": "t"})).unwrap();
        out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    }
}

#[test]
fn create_describe_encrypt_decrypt() {
    let mut env = Env::new();
    let id = env.create();
    let d = env.call("DescribeKey", json!({"KeyId": id})).unwrap();
    assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
    assert_eq!(
        d["KeyMetadata"]["Arn"],
        format!("arn:aws:kms:us-east-1:111122223333:key/{id}")
    );
    let e = env
        .call(
            "Encrypt",
            json!({"KeyId": id, "Plaintext": "aGVsbG8=", "EncryptionContext": {"a": "b"}}),
        )
        .unwrap();
    let blob = e["CiphertextBlob"].as_str().unwrap().to_owned();
    let d = env
        .call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "b"}}),
        )
        .unwrap();
    assert_eq!(d["Plaintext"], "aGVsbG8=");
    assert_eq!(d["KeyId"], e["KeyId"]);
    assert_eq!(
        env.err(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "c"}})
        )
        .0,
        KmsErrorCode::InvalidCiphertextException
    );
    assert_eq!(
        env.err("Decrypt", json!({"CiphertextBlob": "AAAA"})).0,
        KmsErrorCode::InvalidCiphertextException
    );
    let other = env.create();
    assert_eq!(
        env.err(
            "Decrypt",
            json!({"CiphertextBlob": blob, "KeyId": other, "EncryptionContext": {"a": "b"}})
        )
        .0,
        KmsErrorCode::IncorrectKeyException
    );
}

#[test]
fn state_is_enforced_from_the_sealed_record() {
    let mut env = Env::new();
    let id = env.create();
    env.call("DisableKey", json!({"KeyId": id})).unwrap();
    let (code, msg) = env.err("Encrypt", json!({"KeyId": id, "Plaintext": "aGk="}));
    assert_eq!(code, KmsErrorCode::DisabledException);
    assert!(msg.ends_with("is disabled."));
    env.call("EnableKey", json!({"KeyId": id})).unwrap();
    env.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    assert_eq!(
        env.err("Encrypt", json!({"KeyId": id, "Plaintext": "aGk="}))
            .0,
        KmsErrorCode::KMSInvalidStateException
    );
    assert_eq!(
        env.err(
            "ScheduleKeyDeletion",
            json!({"KeyId": id, "PendingWindowInDays": 6})
        )
        .1,
        "1 validation error detected: Value '6' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value greater than or equal to 7"
    );
    let c = env.call("CancelKeyDeletion", json!({"KeyId": id})).unwrap();
    assert!(c["KeyId"].as_str().unwrap().ends_with(&id));
    let d = env.call("DescribeKey", json!({"KeyId": id})).unwrap();
    assert_eq!(d["KeyMetadata"]["KeyState"], "Disabled");
}

#[test]
fn a_key_past_its_deletion_date_is_gone() {
    let mut env = Env::new();
    let id = env.create();
    env.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    let later = SystemTime::now() + std::time::Duration::from_hours(8 * 24);
    // The signature is made "now" at the later time; the record says the window has passed.
    match env.call_at("DescribeKey", &json!({"KeyId": id}), later) {
        Err(OpError::Kms(e)) => assert_eq!(e.code, KmsErrorCode::NotFoundException),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tampered_or_foreign_record_is_refused() {
    let mut env = Env::new();
    let id = env.create();
    let mut bytes = env.keys[0].0.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    env.keys[0] = SealedBlob(bytes);
    assert_eq!(
        env.err("DescribeKey", json!({"KeyId": id})).0,
        KmsErrorCode::KMSInvalidStateException
    );
    // A record sealed by another domain.
    let mut other = Env::new();
    let id2 = other.create();
    env.keys = other.keys.clone();
    assert_eq!(
        env.err("DescribeKey", json!({"KeyId": id2})).0,
        KmsErrorCode::KMSInvalidStateException
    );
}

#[test]
fn an_older_record_is_refused_as_stale() {
    let mut env = Env::new();
    let id = env.create();
    let old = env.keys.clone();
    // Used, so its opened copy is kept (`crate::opened`).
    env.call("Encrypt", json!({"KeyId": id, "Plaintext": "aGk="}))
        .unwrap();
    assert_eq!(env.core.opened.keys(), 1);
    env.call("DisableKey", json!({"KeyId": id})).unwrap();
    env.call("DescribeKey", json!({"KeyId": id})).unwrap();
    env.keys = old;
    assert!(matches!(
        env.call("Encrypt", json!({"KeyId": id, "Plaintext": "aGk="})),
        Err(OpError::Stale)
    ));
}

#[test]
fn a_kept_key_record_shown_for_another_key_is_refused() {
    let mut env = Env::new();
    let a = env.create();
    let b = env.create();
    env.call("Encrypt", json!({"KeyId": a, "Plaintext": "aGk="}))
        .unwrap();
    // The host supplies key a's (kept) record under b's id.
    let record_of = |id: &str| {
        env.keys
            .iter()
            .find(|k| record::peek(&k.0).unwrap().id == id)
            .cloned()
            .unwrap()
    };
    let (a_record, b_record) = (record_of(&a), record_of(&b));
    let rec = env.core.current_key(env.domain.keyring(), &b, &a_record.0);
    assert!(
        matches!(rec, Err(crate::EnclaveError::BadRecord)),
        "{rec:?}"
    );
    // And b's own record is b's.
    let rec = env
        .core
        .current_key(env.domain.keyring(), &b, &b_record.0)
        .unwrap();
    assert_eq!(rec.key_id, b);
    assert!(rec.opened.is_some());
}

#[test]
fn aliases_tags_and_lists() {
    let mut env = Env::new();
    let id = env.create();
    env.call(
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": id}),
    )
    .unwrap();
    assert_eq!(
        env.err(
            "CreateAlias",
            json!({"AliasName": "alias/app", "TargetKeyId": id})
        )
        .0,
        KmsErrorCode::AlreadyExistsException
    );
    assert_eq!(
        env.err(
            "CreateAlias",
            json!({"AliasName": "app", "TargetKeyId": id})
        )
        .1,
        "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
    );
    let e = env
        .call(
            "Encrypt",
            json!({"KeyId": "alias/app", "Plaintext": "aGk="}),
        )
        .unwrap();
    assert!(e["KeyId"].as_str().unwrap().ends_with(&id));
    let l = env.call("ListAliases", json!({})).unwrap();
    assert_eq!(l["Aliases"][0]["TargetKeyId"], id.as_str());
    env.call("DeleteAlias", json!({"AliasName": "alias/app"}))
        .unwrap();
    assert_eq!(
        env.err("DescribeKey", json!({"KeyId": "alias/app"})).0,
        KmsErrorCode::NotFoundException
    );

    env.call("TagResource", json!({"KeyId": id, "Tags": [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": "2"}]})).unwrap();
    env.call(
        "TagResource",
        json!({"KeyId": id, "Tags": [{"TagKey": "b", "TagValue": "3"}]}),
    )
    .unwrap();
    env.call("UntagResource", json!({"KeyId": id, "TagKeys": ["a"]}))
        .unwrap();
    let t = env.call("ListResourceTags", json!({"KeyId": id})).unwrap();
    assert_eq!(t["Tags"], json!([{"TagKey": "b", "TagValue": "3"}]));
    assert_eq!(
        env.err(
            "TagResource",
            json!({"KeyId": id, "Tags": [{"TagKey": "aws:x", "TagValue": "1"}]})
        ),
        (
            KmsErrorCode::TagException,
            "Tags beginning with aws: are reserved".into()
        )
    );
    assert_eq!(
        env.err("TagResource", json!({"KeyId": id, "Tags": [{"TagKey": "x", "TagValue": "1"}, {"TagKey": "x", "TagValue": "2"}]})),
        (KmsErrorCode::TagException, "Duplicate tag keys".into())
    );
    let keys = env.call("ListKeys", json!({})).unwrap();
    assert_eq!(keys["Keys"][0]["KeyId"], id.as_str());
}

#[test]
fn validation_messages_match_aws() {
    let mut env = Env::new();
    let id = env.create();
    assert_eq!(
        env.err("GenerateRandom", json!({})).1,
        "NumberOfBytes is required."
    );
    assert_eq!(
        env.err("GenerateRandom", json!({"NumberOfBytes": 1025})).1,
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"
    );
    let big = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![0u8; 4097]);
    assert_eq!(
        env.err("Encrypt", json!({"KeyId": id, "Plaintext": big})).1,
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"
    );
    assert_eq!(
        env.err("DescribeKey", json!({"KeyId": "fake-key-id"})).1,
        "Invalid keyId 'fake-key-id'"
    );
    let missing = "11111111-2222-3333-4444-555555555555";
    assert_eq!(
        env.err("DescribeKey", json!({"KeyId": missing})).1,
        format!("Key 'arn:aws:kms:us-east-1:111122223333:key/{missing}' does not exist")
    );
    assert_eq!(
        env.err(
            "GenerateDataKey",
            json!({"KeyId": id, "KeySpec": "AES_256", "DryRun": true})
        )
        .0,
        KmsErrorCode::DryRunOperationException
    );
    assert_eq!(
        env.err("CreateCustomKeyStore", json!({})).0,
        KmsErrorCode::UnsupportedOperationException
    );
    assert_eq!(
        env.err("Frobnicate", json!({})).0,
        KmsErrorCode::UnknownOperationException
    );
    assert_eq!(
        env.err("CreateKey", json!({"KeySpec": "NOPE"})).0,
        KmsErrorCode::ValidationException
    );
    let gdk = env
        .call("GenerateDataKey", json!({"KeyId": id, "NumberOfBytes": 32}))
        .unwrap();
    let pt = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        gdk["Plaintext"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(pt.len(), 32);
    let wp = env
        .call(
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": id, "KeySpec": "AES_128"}),
        )
        .unwrap();
    assert!(wp.get("Plaintext").is_none());
    let d = env
        .call("Decrypt", json!({"CiphertextBlob": wp["CiphertextBlob"]}))
        .unwrap();
    assert_eq!(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            d["Plaintext"].as_str().unwrap()
        )
        .unwrap()
        .len(),
        16
    );
}

#[test]
fn re_encrypt_moves_between_keys() {
    let mut env = Env::new();
    let a = env.create();
    let b = env.create();
    let e = env
        .call(
            "Encrypt",
            json!({"KeyId": a, "Plaintext": "aGk=", "EncryptionContext": {"x": "1"}}),
        )
        .unwrap();
    let r = env
        .call("ReEncrypt", json!({"CiphertextBlob": e["CiphertextBlob"], "SourceEncryptionContext": {"x": "1"}, "DestinationKeyId": b}))
        .unwrap();
    assert!(r["SourceKeyId"].as_str().unwrap().ends_with(&a));
    assert!(r["KeyId"].as_str().unwrap().ends_with(&b));
    let d = env
        .call("Decrypt", json!({"CiphertextBlob": r["CiphertextBlob"]}))
        .unwrap();
    assert_eq!(d["Plaintext"], "aGk=");
    assert_eq!(
        env.err("ReEncrypt", json!({"CiphertextBlob": e["CiphertextBlob"], "SourceKeyId": b, "SourceEncryptionContext": {"x": "1"}, "DestinationKeyId": b})).0,
        KmsErrorCode::IncorrectKeyException
    );
}

#[test]
fn the_enclave_decides_deletions_by_its_own_clock_and_leaves_tombstones() {
    let mut env = Env::new();
    let id = env.create();
    env.call(
        "CreateAlias",
        json!({"AliasName": "alias/doomed", "TargetKeyId": id}),
    )
    .unwrap();
    let key_record = env.keys[0].clone();
    let sweep = |env: &Env, days: i64| {
        let now = chrono::Utc::now() + chrono::Duration::days(days);
        env.core
            .sweep(env.domain.keyring(), &env.keys, now)
            .unwrap()
    };
    // Enabled: never deleted, whatever the host's columns say.
    assert!(sweep(&env, 365).0.is_empty());
    env.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    assert!(sweep(&env, 6).0.is_empty(), "not due yet");
    let (writes, token) = sweep(&env, 8);
    assert_eq!(writes.len(), 2, "the key and its alias");
    assert!(matches!(writes[0], StoreWrite::DeleteAlias { .. }));
    assert!(matches!(writes[1], StoreWrite::DeleteKey { .. }));
    env.core.ledger().unwrap().commit(token).unwrap();
    env.keys.clear();
    env.aliases.clear();
    assert_eq!(
        env.err("DescribeKey", json!({"KeyId": id})).0,
        KmsErrorCode::NotFoundException
    );
    // Its old record cannot bring it back.
    env.keys.push(key_record);
    assert!(matches!(
        env.call("DescribeKey", json!({"KeyId": id})),
        Err(OpError::Stale)
    ));
}

#[test]
fn a_hidden_key_is_refused_not_reported_missing() {
    let mut env = Env::new();
    let id = env.create();
    let saved = env.keys.clone();
    env.keys.clear();
    assert!(matches!(
        env.call("DescribeKey", json!({"KeyId": id})),
        Err(OpError::Stale)
    ));
    assert!(matches!(
        env.call("ListKeys", json!({})),
        Err(OpError::Stale)
    ));
    env.keys = saved;
    env.call("DescribeKey", json!({"KeyId": id})).unwrap();
}

#[test]
fn a_replayed_state_changing_request_is_refused_and_changes_nothing() {
    let mut env = Env::new();
    let id = env.create();
    let at = SystemTime::now();
    let disable = signed("DisableKey", &json!({"KeyId": id}).to_string(), SECRET, at);
    env.run(disable.clone(), at).unwrap();
    env.call("EnableKey", json!({"KeyId": id})).unwrap();
    let (keys, aliases) = (env.keys.clone(), env.aliases.clone());
    // The host sends the captured DisableKey again, a little later, within the skew window.
    match env.run(disable, at + std::time::Duration::from_secs(90)) {
        Err(OpError::Kms(e)) => {
            assert_eq!(e.code, KmsErrorCode::ThrottlingException);
            assert_eq!(e.message, crate::replay::MSG_REPLAYED);
        }
        other => panic!("a replay ran: {other:?}"),
    }
    assert_eq!((env.keys.clone(), env.aliases.clone()), (keys, aliases));
    let d = env.call("DescribeKey", json!({"KeyId": id})).unwrap();
    assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
    // A request that failed has still run: it is not run again either.
    let missing = json!({"KeyId": "11111111-2222-3333-4444-555555555555"}).to_string();
    let failed = signed("DisableKey", &missing, SECRET, at);
    assert!(
        matches!(env.run(failed.clone(), at), Err(OpError::Kms(e)) if e.code == KmsErrorCode::NotFoundException)
    );
    assert!(
        matches!(env.run(failed, at), Err(OpError::Kms(e)) if e.code == KmsErrorCode::ThrottlingException)
    );
}

#[test]
fn reads_may_be_repeated() {
    let mut env = Env::new();
    let id = env.create();
    let at = SystemTime::now();
    let encrypt = signed(
        "Encrypt",
        &json!({"KeyId": id, "Plaintext": "aGk="}).to_string(),
        SECRET,
        at,
    );
    let describe = signed("DescribeKey", &json!({"KeyId": id}).to_string(), SECRET, at);
    for _ in 0..2 {
        env.run(encrypt.clone(), at).unwrap();
        let d = env.run(describe.clone(), at).unwrap();
        assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
    }
    assert_eq!(env.core.replay.len(), 1, "only the CreateKey is remembered");
}

#[test]
fn a_request_refused_for_stale_records_may_be_sent_again() {
    let mut env = Env::new();
    let id = env.create();
    let old = env.keys.clone();
    env.call("DisableKey", json!({"KeyId": id})).unwrap();
    let current = std::mem::replace(&mut env.keys, old);
    let at = SystemTime::now();
    let tag = signed(
        "TagResource",
        &json!({"KeyId": id, "Tags": [{"TagKey": "a", "TagValue": "1"}]}).to_string(),
        SECRET,
        at,
    );
    // The host sent an older record: nothing ran, and it re-reads and resends.
    assert!(matches!(env.run(tag.clone(), at), Err(OpError::Stale)));
    env.keys = current;
    env.run(tag.clone(), at).unwrap();
    assert!(
        matches!(env.run(tag, at), Err(OpError::Kms(e)) if e.code == KmsErrorCode::ThrottlingException)
    );
}

#[test]
fn signing_keys_sign_and_verify_raw_and_digest_messages() {
    let mut env = Env::new();
    let (code, msg) = env.err("CreateKey", json!({"KeySpec": "ECC_NIST_P256"}));
    assert_eq!(code, KmsErrorCode::ValidationException);
    assert_eq!(
        msg,
        "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
    );
    assert_eq!(
        env.err(
            "CreateKey",
            json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "GENERATE_VERIFY_MAC"})
        )
        .1,
        "KeyUsage GENERATE_VERIFY_MAC is not compatible with KeySpec ECC_NIST_P256"
    );
    let meta = env
        .call(
            "CreateKey",
            json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
        )
        .unwrap()["KeyMetadata"]
        .clone();
    assert_eq!(meta["SigningAlgorithms"], json!(["ECDSA_SHA_256"]));
    assert!(meta.get("EncryptionAlgorithms").is_none());
    let id = meta["KeyId"].as_str().unwrap().to_owned();
    let msg = b64e(b"hello");
    let signed = env
        .call(
            "Sign",
            json!({"KeyId": id, "Message": msg, "SigningAlgorithm": "ECDSA_SHA_256"}),
        )
        .unwrap();
    assert_eq!(signed["SigningAlgorithm"], "ECDSA_SHA_256");
    assert!(
        signed["KeyId"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:kms:")
    );
    let sig = signed["Signature"].as_str().unwrap().to_owned();
    let ok = env
        .call(
            "Verify",
            json!({"KeyId": id, "Message": msg, "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"}),
        )
        .unwrap();
    assert_eq!(ok["SignatureValid"], true);
    // The same signature verifies as a signature of the digest: DIGEST is not hashed again.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"hello");
    let d = b64e(digest.as_ref());
    env.call(
        "Verify",
        json!({"KeyId": id, "Message": d, "MessageType": "DIGEST", "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"}),
    )
    .unwrap();
    let (code, _) = env.err(
        "Verify",
        json!({"KeyId": id, "Message": b64e(b"other"), "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(code, KmsErrorCode::KMSInvalidSignatureException);
    assert_eq!(
        env.err(
            "Sign",
            json!({"KeyId": id, "Message": b64e(&[1; 20]), "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}),
        )
        .1,
        "Digest is invalid length for algorithm ECDSA_SHA_256."
    );
    assert_eq!(
        env.err(
            "Sign",
            json!({"KeyId": id, "Message": msg, "SigningAlgorithm": "ECDSA_SHA_384"}),
        ),
        (
            KmsErrorCode::InvalidKeyUsageException,
            "Algorithm ECDSA_SHA_384 is incompatible with key spec ECC_NIST_P256.".into()
        )
    );
    assert_eq!(
        env.err("Encrypt", json!({"KeyId": id, "Plaintext": msg})).0,
        KmsErrorCode::InvalidKeyUsageException
    );
    let public = env.call("GetPublicKey", json!({"KeyId": id})).unwrap();
    assert_eq!(public["KeySpec"], "ECC_NIST_P256");
    assert_eq!(public["SigningAlgorithms"], json!(["ECDSA_SHA_256"]));
    let symmetric = env.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        env.err("GetPublicKey", json!({"KeyId": symmetric})).0,
        KmsErrorCode::UnsupportedOperationException
    );
    assert_eq!(
        env.err(
            "Sign",
            json!({"KeyId": symmetric, "Message": msg, "SigningAlgorithm": "ECDSA_SHA_256"}),
        )
        .0,
        KmsErrorCode::InvalidKeyUsageException
    );
}

#[test]
fn hmac_keys_generate_and_verify_macs_with_aws_messages() {
    let mut env = Env::new();
    let meta = env
        .call(
            "CreateKey",
            json!({"KeySpec": "HMAC_224", "KeyUsage": "GENERATE_VERIFY_MAC"}),
        )
        .unwrap()["KeyMetadata"]
        .clone();
    assert_eq!(meta["MacAlgorithms"], json!(["HMAC_SHA_224"]));
    let id = meta["KeyId"].as_str().unwrap().to_owned();
    let msg = b64e(b"some important message");
    assert_eq!(
        env.err(
            "GenerateMac",
            json!({"KeyId": id, "Message": msg, "MacAlgorithm": "HMAC_SHA_256"})
        ),
        (
            KmsErrorCode::InvalidKeyUsageException,
            "Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.".into()
        )
    );
    assert_eq!(
        env.err(
            "GenerateMac",
            json!({"KeyId": id, "Message": msg, "MacAlgorithm": "INVALID"})
        )
        .1,
        "1 validation error detected: Value 'INVALID' at 'macAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [HMAC_SHA_384, HMAC_SHA_256, HMAC_SHA_224, HMAC_SHA_512]"
    );
    let mac = env
        .call(
            "GenerateMac",
            json!({"KeyId": id, "Message": msg, "MacAlgorithm": "HMAC_SHA_224"}),
        )
        .unwrap()["Mac"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(mac.len(), 40); // 28 bytes in base64
    let ok = env
        .call(
            "VerifyMac",
            json!({"KeyId": id, "Message": msg, "Mac": mac, "MacAlgorithm": "HMAC_SHA_224"}),
        )
        .unwrap();
    assert_eq!(ok["MacValid"], true);
    assert_eq!(
        env.err(
            "VerifyMac",
            json!({"KeyId": id, "Message": b64e(b"some different important message"), "Mac": mac, "MacAlgorithm": "HMAC_SHA_224"}),
        ),
        (KmsErrorCode::KMSInvalidMacException, String::new())
    );
    assert_eq!(
        env.err("GetPublicKey", json!({"KeyId": id})).0,
        KmsErrorCode::UnsupportedOperationException
    );
}

fn b64e(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

#[test]
fn key_policies_are_checked_kept_verbatim_and_default_to_aws_default() {
    let mut env = Env::new();
    let id = env.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = env.call("GetKeyPolicy", json!({"KeyId": id})).unwrap();
    assert_eq!(got["PolicyName"], "default");
    assert!(
        got["Policy"]
            .as_str()
            .unwrap()
            .contains("\"AWS\" : \"arn:aws:iam::111122223333:root\"")
    );
    // Exactly the document that was set, whitespace and all.
    let doc = "{\"Version\": \"2012-10-17\",\n \"Statement\": [{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"arn:aws:iam::111122223333:root\"}, \"Action\": \"kms:*\", \"Resource\": \"*\"}]}";
    env.call(
        "PutKeyPolicy",
        json!({"KeyId": id, "Policy": doc, "PolicyName": "default"}),
    )
    .unwrap();
    assert_eq!(
        env.call("GetKeyPolicy", json!({"KeyId": id})).unwrap()["Policy"],
        doc
    );
    let (code, _) = env.err("PutKeyPolicy", json!({"KeyId": id, "Policy": "not json"}));
    assert_eq!(code, KmsErrorCode::MalformedPolicyDocumentException);
    let (code, _) = env.err("CreateKey", json!({"Policy": "{\"Statement\": []}"}));
    assert_eq!(code, KmsErrorCode::MalformedPolicyDocumentException);
    let (code, _) = env.err("GetKeyPolicy", json!({"KeyId": id, "PolicyName": "other"}));
    assert_eq!(code, KmsErrorCode::NotFoundException);
    let listed = env.call("ListKeyPolicies", json!({"KeyId": id})).unwrap();
    assert_eq!(listed["PolicyNames"], json!(["default"]));
    assert_eq!(listed["Truncated"], false);
}

#[test]
fn key_policies_decide_in_the_enclave_with_aws_rules() {
    let mut env = Env::new();
    let admin = "arn:aws:iam::111122223333:user/admin";
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Deny","Principal":{{"AWS":"{admin}"}},"Action":"kms:Decrypt","Resource":"*"}},
        {{"Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*",
          "Condition":{{"StringNotEquals":{{"kms:EncryptionContext:app":"billing"}}}}}}]}}"#
    );
    let id = env.call("CreateKey", json!({"Policy": policy})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let pt = b64e(b"data");
    // The context condition: no context (a negated operator matches a missing key) is denied.
    let (code, msg) = env.err("Encrypt", json!({"KeyId": id, "Plaintext": pt}));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    assert_eq!(
        msg,
        format!(
            "User: {admin} is not authorized to perform: kms:Encrypt on resource: arn:aws:kms:us-east-1:111122223333:key/{id} with an explicit deny in a policy"
        )
    );
    let blob = env
        .call(
            "Encrypt",
            json!({"KeyId": id, "Plaintext": pt, "EncryptionContext": {"app": "billing"}}),
        )
        .unwrap()["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    // The explicit Deny of Decrypt wins over the account's Allow (and the admin's own).
    let (code, _) = env.err(
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "billing"}}),
    );
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    // DryRun answers AccessDenied too when the call would not be allowed.
    let (code, _) = env.err(
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "billing"}, "DryRun": true}),
    );
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    // The lockout check: a policy that would stop the caller from putting a policy again.
    let locking = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/someone-else"},"Action":"kms:*","Resource":"*"}]}"#;
    let (code, msg) = env.err("PutKeyPolicy", json!({"KeyId": id, "Policy": locking}));
    assert_eq!(code, KmsErrorCode::MalformedPolicyDocumentException);
    assert_eq!(
        msg,
        "The new key policy will not allow you to update the key policy in the future."
    );
    let (code, _) = env.err("CreateKey", json!({"Policy": locking}));
    assert_eq!(code, KmsErrorCode::MalformedPolicyDocumentException);
    // Bypassed on purpose: the key is then beyond the caller, as in AWS.
    let locked = env
        .call(
            "CreateKey",
            json!({"Policy": locking, "BypassPolicyLockoutSafetyCheck": true}),
        )
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, msg) = env.err("Encrypt", json!({"KeyId": locked, "Plaintext": pt}));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    assert!(msg.ends_with("because no resource-based policy allows the kms:Encrypt action"));
}

#[test]
fn the_default_policy_fast_path_decides_as_the_evaluation_does() {
    // The administrator with AWS's default key policy: the fast path allows; the same request
    // through the full evaluation (an explicit copy of the default policy) allows too, and a
    // copy with one Deny added denies.
    let mut env = Env::new();
    let default = crate::policy::default_policy("111122223333");
    let implicit = env.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let explicit =
        env.call("CreateKey", json!({"Policy": default})).unwrap()["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_owned();
    for id in [&implicit, &explicit] {
        env.call("Encrypt", json!({"KeyId": id, "Plaintext": b64e(b"x")}))
            .unwrap();
    }
    let with_deny = default.replace(
        "} ]",
        "}, {\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:Encrypt\",\"Resource\":\"*\"} ]",
    );
    env.call(
        "PutKeyPolicy",
        json!({"KeyId": explicit, "Policy": with_deny}),
    )
    .unwrap();
    assert_eq!(
        env.err(
            "Encrypt",
            json!({"KeyId": explicit, "Plaintext": b64e(b"x")})
        )
        .0,
        KmsErrorCode::AccessDeniedException
    );
}

mod external_mu;
mod grants;
mod import;
mod last_usage;
mod principals;
mod recipient;
mod regions;
#[path = "rotation_tests.rs"]
mod rotation_tests;
mod sts;
mod xks;
