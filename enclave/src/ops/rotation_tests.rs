//! Rotation through the real entry point, as an attacker would try it: a host that replays the
//! record from before a rotation, asks to rotate keys that are not due, names keys twice;
//! ciphertexts under every earlier material; AWS's limits and messages.

use std::time::{Duration, SystemTime};

use ekms_wire::msg::{EnclaveResponse, HostRequest, KmsErrorCode, SealedBlob, StoreWrite};
use serde_json::{Value, json};

use super::{Env, b64e};
use crate::{
    clock::Clock,
    ops::{OpError, rotation},
    record::{self, KeyRecord, Kind},
};

const DAY: Duration = Duration::from_secs(86_400);

fn arn(id: &str) -> String {
    format!("arn:aws:kms:us-east-1:111122223333:key/{id}")
}

impl Env {
    /// The host's automatic rotation pass at `at` (the enclave's clock), over `candidates`;
    /// the writes are applied and committed. Returns how many keys rotated.
    fn rotate_due(&mut self, candidates: &[SealedBlob], at: SystemTime) -> usize {
        let (writes, token) =
            rotation::rotate_due(&self.core, self.domain.keyring(), candidates, at.into()).unwrap();
        self.apply_rotated(writes, token)
    }

    /// The host's `RotateDue` request as the enclave gets it: decided by the enclave's clock.
    fn rotate_due_now(&mut self, candidates: Vec<SealedBlob>) -> usize {
        let reply = self
            .core
            .handle(HostRequest::RotateDue { keys: candidates });
        let EnclaveResponse::RotatedDue { writes, token } = reply else {
            panic!("{reply:?}");
        };
        self.apply_rotated(writes, token)
    }

    fn apply_rotated(&mut self, writes: Vec<StoreWrite>, token: u64) -> usize {
        assert_eq!(writes.is_empty(), token == 0);
        if token != 0 {
            self.core.ledger().unwrap().commit(token).unwrap();
        }
        let n = writes.len();
        for w in writes {
            let StoreWrite::PutKey { key_id, sealed, .. } = w else {
                panic!("a rotation writes only key records");
            };
            self.keys
                .retain(|k| record::peek(&k.0).unwrap().id != key_id);
            self.keys.push(sealed);
        }
        n
    }

    fn sealed_key(&self, id: &str) -> SealedBlob {
        self.keys
            .iter()
            .find(|k| record::peek(&k.0).unwrap().id == id)
            .unwrap()
            .clone()
    }

    fn key_record(&self, id: &str) -> KeyRecord {
        record::open(
            self.domain.keyring(),
            Kind::Key,
            Some(id),
            &self.sealed_key(id).0,
        )
        .unwrap()
    }

    fn encrypt(&mut self, id: &str, plaintext: &[u8]) -> String {
        self.call(
            "Encrypt",
            json!({"KeyId": id, "Plaintext": b64e(plaintext), "EncryptionContext": {"k": "v"}}),
        )
        .unwrap()["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn decrypt(&mut self, blob: &str) -> Value {
        self.call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"k": "v"}}),
        )
        .unwrap()
    }

    fn current_material(&mut self, id: &str) -> String {
        self.call("DescribeKey", json!({"KeyId": id})).unwrap()["KeyMetadata"]
            ["CurrentKeyMaterialId"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn enable_status_disable_with_aws_validation() {
    let mut env = Env::new();
    let id = env.create();
    let status = env
        .call("GetKeyRotationStatus", json!({"KeyId": id}))
        .unwrap();
    assert_eq!(
        status,
        json!({"KeyId": arn(&id), "KeyRotationEnabled": false})
    );
    for (days, msg) in [
        (
            89,
            "1 validation error detected: Value '89' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value greater than or equal to 90",
        ),
        (
            2561,
            "1 validation error detected: Value '2561' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value less than or equal to 2560",
        ),
    ] {
        let (code, m) = env.err(
            "EnableKeyRotation",
            json!({"KeyId": id, "RotationPeriodInDays": days}),
        );
        assert_eq!(code, KmsErrorCode::ValidationException);
        assert_eq!(m, msg);
    }
    let before = chrono::Utc::now().timestamp();
    env.call("EnableKeyRotation", json!({"KeyId": id})).unwrap();
    let status = env
        .call("GetKeyRotationStatus", json!({"KeyId": arn(&id)}))
        .unwrap();
    assert_eq!(status["KeyRotationEnabled"], true);
    assert_eq!(status["RotationPeriodInDays"], 365);
    let next = status["NextRotationDate"].as_f64().unwrap();
    #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit f64 exactly
    let expected = (before + 365 * 86_400) as f64;
    // The call is signed (and run) a few seconds after `before`.
    assert!((expected..expected + 60.0).contains(&next), "{next}");
    // A new period on an enabled key runs from the same start.
    env.call(
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 90}),
    )
    .unwrap();
    let status = env
        .call("GetKeyRotationStatus", json!({"KeyId": id}))
        .unwrap();
    assert_eq!(status["RotationPeriodInDays"], 90);
    let next90 = status["NextRotationDate"].as_f64().unwrap();
    assert!((next - next90 - 275.0 * 86_400.0).abs() < 1.0);
    // The host's index gets the sealed schedule's date.
    let rec = env.key_record(&id);
    assert_eq!(rec.rotation.unwrap().period_days, 90);
    env.call("DisableKeyRotation", json!({"KeyId": id}))
        .unwrap();
    assert_eq!(
        env.call("GetKeyRotationStatus", json!({"KeyId": id}))
            .unwrap(),
        json!({"KeyId": arn(&id), "KeyRotationEnabled": false})
    );
    // Aliases name no key for these operations, as in AWS.
    env.call(
        "CreateAlias",
        json!({"AliasName": "alias/r", "TargetKeyId": id}),
    )
    .unwrap();
    assert_eq!(
        env.err("EnableKeyRotation", json!({"KeyId": "alias/r"})),
        (
            KmsErrorCode::NotFoundException,
            "Invalid keyId 'alias/r'".into()
        )
    );
}

#[test]
fn rotation_refuses_other_keys_and_states_with_aws_errors() {
    let mut env = Env::new();
    let ecc = env
        .call(
            "CreateKey",
            json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
        )
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let hmac = env
        .call(
            "CreateKey",
            json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}),
        )
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    for key in [&ecc, &hmac] {
        for op in [
            "EnableKeyRotation",
            "DisableKeyRotation",
            "GetKeyRotationStatus",
            "RotateKeyOnDemand",
            "ListKeyRotations",
        ] {
            assert_eq!(
                env.err(op, json!({"KeyId": key})),
                (KmsErrorCode::UnsupportedOperationException, String::new()),
                "{op}"
            );
        }
    }
    let id = env.create();
    env.call("DisableKey", json!({"KeyId": id})).unwrap();
    for op in [
        "EnableKeyRotation",
        "DisableKeyRotation",
        "RotateKeyOnDemand",
    ] {
        assert_eq!(
            env.err(op, json!({"KeyId": id})),
            (
                KmsErrorCode::DisabledException,
                format!("{} is disabled.", arn(&id))
            ),
            "{op}"
        );
    }
    env.call("EnableKey", json!({"KeyId": id})).unwrap();
    env.call("EnableKeyRotation", json!({"KeyId": id})).unwrap();
    env.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    for op in [
        "EnableKeyRotation",
        "DisableKeyRotation",
        "RotateKeyOnDemand",
    ] {
        assert_eq!(
            env.err(op, json!({"KeyId": id})),
            (
                KmsErrorCode::KMSInvalidStateException,
                format!("{} is pending deletion.", arn(&id))
            ),
            "{op}"
        );
    }
    // Pending deletion: rotation reads as off; cancelling brings it back.
    assert_eq!(
        env.call("GetKeyRotationStatus", json!({"KeyId": id}))
            .unwrap()["KeyRotationEnabled"],
        false
    );
    env.call("CancelKeyDeletion", json!({"KeyId": id})).unwrap();
    assert_eq!(
        env.call("GetKeyRotationStatus", json!({"KeyId": id}))
            .unwrap()["KeyRotationEnabled"],
        true
    );
    let missing = "11111111-2222-3333-4444-555555555555";
    assert_eq!(
        env.err("RotateKeyOnDemand", json!({"KeyId": missing})),
        (
            KmsErrorCode::NotFoundException,
            format!("Key '{}' does not exist", arn(missing))
        )
    );
    assert_eq!(
        env.err("GetKeyRotationStatus", json!({})).1,
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"
    );
}

#[test]
fn on_demand_rotations_keep_every_ciphertext_and_stop_at_25() {
    let mut env = Env::new();
    let id = env.create();
    env.call(
        "CreateAlias",
        json!({"AliasName": "alias/kept", "TargetKeyId": id}),
    )
    .unwrap();
    env.call(
        "TagResource",
        json!({"KeyId": id, "Tags": [{"TagKey": "team", "TagValue": "a"}]}),
    )
    .unwrap();
    let mut blobs = Vec::new();
    let mut materials = vec![env.current_material(&id)];
    blobs.push(env.encrypt(&id, b"before any rotation"));
    for i in 0..25 {
        let out = env.call("RotateKeyOnDemand", json!({"KeyId": id})).unwrap();
        assert_eq!(out, json!({"KeyId": arn(&id)}));
        let m = env.current_material(&id);
        assert!(!materials.contains(&m), "rotation {i} made a new material");
        materials.push(m);
        blobs.push(env.encrypt(&id, format!("after rotation {i}").as_bytes()));
    }
    let (code, msg) = env.err("RotateKeyOnDemand", json!({"KeyId": id}));
    assert_eq!(code, KmsErrorCode::LimitExceededException);
    assert_eq!(
        msg,
        format!(
            "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}",
            arn(&id)
        )
    );
    // Every ciphertext decrypts, under the material that made it (Decrypt says which).
    for (i, blob) in blobs.iter().enumerate() {
        let d = env.decrypt(blob);
        assert_eq!(d["KeyMaterialId"], materials[i], "blob {i}");
        assert_eq!(d["KeyId"], arn(&id));
    }
    // The GenerateDataKey family and ReEncrypt name the current material, Encrypt none.
    let gdk = env
        .call(
            "GenerateDataKey",
            json!({"KeyId": id, "KeySpec": "AES_256"}),
        )
        .unwrap();
    assert_eq!(gdk["KeyMaterialId"], materials[25]);
    let enc = env
        .call("Encrypt", json!({"KeyId": id, "Plaintext": b64e(b"x")}))
        .unwrap();
    assert!(enc.get("KeyMaterialId").is_none());
    let re = env
        .call(
            "ReEncrypt",
            json!({"CiphertextBlob": blobs[0], "SourceEncryptionContext": {"k": "v"}, "DestinationKeyId": id}),
        )
        .unwrap();
    assert_eq!(re["SourceKeyMaterialId"], materials[0]);
    assert_eq!(re["DestinationKeyMaterialId"], materials[25]);
    // The key keeps its id, alias, tags and policy.
    let via_alias = env.encrypt("alias/kept", b"by alias");
    assert_eq!(env.decrypt(&via_alias)["KeyMaterialId"], materials[25]);
    let tags = env.call("ListResourceTags", json!({"KeyId": id})).unwrap();
    assert_eq!(tags["Tags"][0]["TagKey"], "team");
    let policy = env
        .call(
            "GetKeyPolicy",
            json!({"KeyId": id, "PolicyName": "default"}),
        )
        .unwrap();
    assert!(policy["Policy"].as_str().unwrap().contains("kms:*"));
    // A blob naming a material version the key never had is no ciphertext.
    let mut forged = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        blobs[0].as_bytes(),
    )
    .unwrap();
    forged[17..21].copy_from_slice(&999u32.to_be_bytes());
    let (code, _) = env.err(
        "Decrypt",
        json!({"CiphertextBlob": b64e(&forged), "EncryptionContext": {"k": "v"}}),
    );
    assert_eq!(code, KmsErrorCode::InvalidCiphertextException);
}

#[test]
fn list_key_rotations_pages_and_honours_include_key_material() {
    let mut env = Env::new();
    let id = env.create();
    let first = env.current_material(&id);
    let empty = env.call("ListKeyRotations", json!({"KeyId": id})).unwrap();
    assert_eq!(empty, json!({"Rotations": [], "Truncated": false}));
    let all = env
        .call(
            "ListKeyRotations",
            json!({"KeyId": id, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
        )
        .unwrap();
    assert_eq!(
        all["Rotations"],
        json!([{"KeyId": id, "KeyMaterialId": first, "KeyMaterialState": "CURRENT"}])
    );
    for _ in 0..12 {
        env.call("RotateKeyOnDemand", json!({"KeyId": id})).unwrap();
    }
    let current = env.current_material(&id);
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut req = json!({"KeyId": id, "Limit": 5});
        if let Some(m) = &marker {
            req["Marker"] = json!(m);
        }
        let page = env.call("ListKeyRotations", req).unwrap();
        let rotations = page["Rotations"].as_array().unwrap();
        assert!(rotations.len() <= 5);
        for r in rotations {
            assert_eq!(r["RotationType"], "ON_DEMAND");
            assert!(r["RotationDate"].as_f64().unwrap() > 1.7e9);
            seen.push(r["KeyMaterialId"].as_str().unwrap().to_owned());
        }
        if page["Truncated"] == true {
            marker = Some(page["NextMarker"].as_str().unwrap().to_owned());
        } else {
            assert!(page.get("NextMarker").is_none());
            break;
        }
    }
    assert_eq!(seen.len(), 12, "the first material is no rotation");
    assert!(!seen.contains(&first));
    assert_eq!(seen.last(), Some(&current));
    let all = env
        .call(
            "ListKeyRotations",
            json!({"KeyId": id, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
        )
        .unwrap();
    let all = all["Rotations"].as_array().unwrap();
    assert_eq!(all.len(), 13);
    assert_eq!(all[0]["KeyMaterialId"], first);
    assert!(all[0].get("RotationDate").is_none());
    assert_eq!(all[0]["KeyMaterialState"], "NON_CURRENT");
    assert_eq!(all[12]["KeyMaterialState"], "CURRENT");
    assert_eq!(
        env.err(
            "ListKeyRotations",
            json!({"KeyId": id, "IncludeKeyMaterial": "SOME"})
        )
        .1,
        "1 validation error detected: Value 'SOME' at 'includeKeyMaterial' failed to satisfy constraint: Member must satisfy enum value set: [ALL_KEY_MATERIAL, ROTATIONS_ONLY]"
    );
    assert_eq!(
        env.err("ListKeyRotations", json!({"KeyId": id, "Limit": 0}))
            .0,
        KmsErrorCode::ValidationException
    );
    for bad in ["%%%", "bm90LWEtbnVtYmVy"] {
        assert_eq!(
            env.err("ListKeyRotations", json!({"KeyId": id, "Marker": bad})),
            (
                KmsErrorCode::InvalidMarkerException,
                "Marker is invalid".into()
            )
        );
    }
}

#[test]
fn the_enclave_rotates_by_its_own_clock_and_the_host_can_only_delay() {
    let mut env = Env::new();
    let id = env.create();
    let idle = env.create();
    let now = SystemTime::now();
    let blob = env.encrypt(&id, b"made before any rotation");
    // No schedule: never due, whatever the host says and however late.
    assert_eq!(env.rotate_due(&env.keys.clone(), now + 4000 * DAY), 0);
    env.call(
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 90}),
    )
    .unwrap();
    let first = env.current_material(&id);
    // A host that nominates keys early gets nothing rotated.
    let all = env.keys.clone();
    assert_eq!(env.rotate_due(&all, now + 89 * DAY), 0);
    assert_eq!(env.current_material(&id), first);
    // Due by the enclave's clock: rotated once, even if the host names it twice.
    let sealed = env.sealed_key(&id);
    let twice = vec![sealed.clone(), sealed.clone(), env.sealed_key(&idle)];
    assert_eq!(env.rotate_due(&twice, now + 91 * DAY), 1);
    let second = env.key_record(&id);
    assert_eq!(second.current, 2);
    assert_eq!(
        second.current_material().unwrap().rotated.unwrap().kind,
        crate::material::RotationType::Automatic
    );
    // The period runs again from the rotation.
    let status = env
        .call_at(
            "GetKeyRotationStatus",
            &json!({"KeyId": id}),
            now + 91 * DAY,
        )
        .unwrap();
    let next = status["NextRotationDate"].as_f64().unwrap();
    let at = (now + 181 * DAY)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((next - at).abs() < 60.0, "{next} vs {at}");
    // The host replays the record from before the rotation: refused (stale), nothing rotates,
    // and no operation runs on it.
    assert_eq!(
        env.rotate_due(std::slice::from_ref(&sealed), now + 400 * DAY),
        0
    );
    let current = env.keys.clone();
    env.keys = vec![sealed.clone()];
    assert!(matches!(
        env.call("Encrypt", json!({"KeyId": id, "Plaintext": b64e(b"x")})),
        Err(OpError::Stale)
    ));
    assert!(matches!(
        env.call("RotateKeyOnDemand", json!({"KeyId": id})),
        Err(OpError::Stale)
    ));
    env.keys = current;
    // A disabled key is not rotated; re-enabled after its date, it rotates at the next pass.
    env.call("DisableKey", json!({"KeyId": id})).unwrap();
    let all = env.keys.clone();
    assert_eq!(env.rotate_due(&all, now + 200 * DAY), 0);
    env.call("EnableKey", json!({"KeyId": id})).unwrap();
    let all = env.keys.clone();
    assert_eq!(env.rotate_due(&all, now + 200 * DAY), 1);
    assert_eq!(env.key_record(&id).current, 3);
    // After rotations the first ciphertext still decrypts under its own material.
    assert_eq!(env.decrypt(&blob)["KeyMaterialId"], first);
    // Automatic rotations do not count against the on-demand limit.
    env.call("RotateKeyOnDemand", json!({"KeyId": id})).unwrap();
    let listed = env.call("ListKeyRotations", json!({"KeyId": id})).unwrap();
    let types: Vec<&str> = listed["Rotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RotationType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["AUTOMATIC", "AUTOMATIC", "ON_DEMAND"]);
}

#[test]
fn the_host_index_carries_the_next_rotation_date() {
    let mut env = Env::new();
    let id = env.create();
    let at = SystemTime::now();
    let (body, writes, _) = {
        let http = crate::auth::tests::signed(
            "EnableKeyRotation",
            &json!({"KeyId": id, "RotationPeriodInDays": 100}).to_string(),
            crate::auth::tests::SECRET,
            at,
        );
        let call = ekms_wire::msg::KmsCall {
            http,
            principal: env.principals.first().cloned(),
            keys: env.keys.clone(),
            ..Default::default()
        };
        super::super::execute(&env.core, env.domain.keyring(), &call, at.into()).unwrap()
    };
    assert_eq!(body, b"{}");
    let [StoreWrite::PutKey { rotation_date, .. }] = writes.as_slice() else {
        panic!("one key write");
    };
    let expected = chrono::DateTime::<chrono::Utc>::from(at + 100 * DAY).timestamp();
    assert!(rotation_date.is_some_and(|d| (d - expected).abs() <= 1));
}

#[test]
fn rotation_is_authorized_by_the_key_policy_with_the_period_condition() {
    let mut env = Env::new();
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
        {"Effect":"Deny","Principal":"*","Action":"kms:EnableKeyRotation","Resource":"*",
         "Condition":{"NumericGreaterThan":{"kms:RotationPeriodInDays":"180"}}},
        {"Effect":"Deny","Principal":"*","Action":["kms:RotateKeyOnDemand","kms:ListKeyRotations"],"Resource":"*"}]}"#;
    let id = env.call("CreateKey", json!({"Policy": policy})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The default period (365) is over the limit too.
    for body in [
        json!({"KeyId": id}),
        json!({"KeyId": id, "RotationPeriodInDays": 181}),
    ] {
        let (code, msg) = env.err("EnableKeyRotation", body);
        assert_eq!(code, KmsErrorCode::AccessDeniedException);
        assert!(msg.contains("kms:EnableKeyRotation"), "{msg}");
    }
    env.call(
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 180}),
    )
    .unwrap();
    for op in ["RotateKeyOnDemand", "ListKeyRotations"] {
        assert_eq!(
            env.err(op, json!({"KeyId": id})).0,
            KmsErrorCode::AccessDeniedException
        );
    }
    env.call("GetKeyRotationStatus", json!({"KeyId": id}))
        .unwrap();
}

/// Record size and cost with a long history: prints the sealed size per material and the time
/// to open the record and decrypt under the oldest material (`--nocapture` to see them).
#[test]
fn a_key_with_hundreds_of_materials_stays_small_and_cheap() {
    let mut env = Env::new();
    let id = env.create();
    let blob = env.encrypt(&id, b"oldest");
    env.call(
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 90}),
    )
    .unwrap();
    let sealed0 = env.sealed_key(&id);
    let size0 = sealed0.0.len();
    let start = SystemTime::now();
    let n: u32 = 300;
    for i in 1..=n {
        let at = start + DAY * (91 * i);
        assert_eq!(env.rotate_due(&[env.sealed_key(&id)], at), 1);
    }
    let rec = env.key_record(&id);
    assert_eq!(rec.current, n + 1);
    assert_eq!(rec.retired.len(), n as usize);
    let size = env.sealed_key(&id).0.len();
    let per = f64::from(u32::try_from(size - size0).unwrap()) / f64::from(n);
    println!(
        "sealed key record: {size0} bytes with 1 material, {size} bytes with {} ({per:.1} bytes per material)",
        n + 1
    );
    assert!(per < 100.0, "{per} bytes per material");
    // Opening the record and finding the oldest material, against a record with one material.
    let sealed = env.sealed_key(&id);
    let time = |blob: &SealedBlob| {
        let t = std::time::Instant::now();
        for _ in 0..100 {
            let r: KeyRecord =
                record::open(env.domain.keyring(), Kind::Key, Some(&id), &blob.0).unwrap();
            assert!(r.find_material(1).is_some());
        }
        t.elapsed() / 100
    };
    println!(
        "open + find the oldest material: {:?} per call with 1 material, {:?} with {}",
        time(&sealed0),
        time(&sealed),
        n + 1
    );
    let later = start + DAY * (91 * n + 1);
    let d = env
        .call_at(
            "Decrypt",
            &json!({"CiphertextBlob": blob, "EncryptionContext": {"k": "v"}}),
            later,
        )
        .unwrap();
    assert_eq!(d["Plaintext"], b64e(b"oldest"));
}

/// `ekms serve --sim --sim-clock-offset-days 91`: requests signed by the machine's clock still
/// verify, while records are dated, and schedules decided, by the enclave's clock, so a key
/// enabled for 90 days is due when the host asks.
#[test]
fn a_simulation_clock_ahead_makes_a_schedule_due() {
    let mut env = Env::new();
    let id = env.create();
    env.call(
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 90}),
    )
    .unwrap();
    let first = env.current_material(&id);
    let blob = env.encrypt(&id, b"before");
    // By the machine's clock nothing is due.
    assert_eq!(env.rotate_due_now(vec![env.sealed_key(&id)]), 0);

    env.core.clock = Clock::simulation_ahead_by_days(91).unwrap();
    let ahead = chrono::Utc::now().timestamp() + 91 * 86_400;
    assert_eq!(env.rotate_due_now(vec![env.sealed_key(&id)]), 1);
    let second = env.current_material(&id);
    assert_ne!(first, second);
    let rotations = env.call("ListKeyRotations", json!({"KeyId": id})).unwrap();
    let entry = &rotations["Rotations"][0];
    assert_eq!(entry["RotationType"], "AUTOMATIC");
    assert_eq!(entry["KeyMaterialId"], second.as_str());
    let at = entry["RotationDate"].as_f64().unwrap();
    #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit f64 exactly
    let ahead_f = ahead as f64;
    assert!((at - ahead_f).abs() < 60.0, "{at} vs {ahead}");
    let status = env
        .call("GetKeyRotationStatus", json!({"KeyId": id}))
        .unwrap();
    let next = status["NextRotationDate"].as_f64().unwrap();
    assert!((next - at - 90.0 * 86_400.0).abs() < 1.0, "{next} vs {at}");
    // Not due again until its new date, whatever the host asks.
    assert_eq!(env.rotate_due_now(vec![env.sealed_key(&id)]), 0);
    assert_eq!(env.decrypt(&blob)["KeyMaterialId"], first.as_str());
    // New records carry the enclave's date too.
    let other = env.create();
    let created =
        env.call("DescribeKey", json!({"KeyId": other})).unwrap()["KeyMetadata"]["CreationDate"]
            .as_f64()
            .unwrap();
    assert!((created - ahead_f).abs() < 60.0, "{created} vs {ahead}");
}
