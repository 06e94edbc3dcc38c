//! Regions: a request sees the keys and aliases of the region it is signed for, and ARNs carry
//! that region. The host supplies every record (as the in-memory store of [`Env`] does); the
//! enclave decides what belongs to the region from the sealed records.

use ekms_wire::msg::KmsErrorCode;
use serde_json::{Value, json};

use super::{Env, OpError};

const EU: &str = "eu-west-1";
const US: &str = "us-east-1";

fn code(r: Result<Value, OpError>) -> (KmsErrorCode, String) {
    match r {
        Err(OpError::Kms(e)) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn create(env: &mut Env, region: &str) -> (String, String) {
    let out = env.call_in(region, "CreateKey", json!({})).unwrap();
    let m = &out["KeyMetadata"];
    (
        m["KeyId"].as_str().unwrap().to_owned(),
        m["Arn"].as_str().unwrap().to_owned(),
    )
}

fn listed_keys(env: &mut Env, region: &str) -> Vec<String> {
    let out = env.call_in(region, "ListKeys", json!({})).unwrap();
    out["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["KeyArn"].as_str().unwrap().to_owned())
        .collect()
}

fn listed_aliases(env: &mut Env, region: &str) -> Vec<(String, String, String)> {
    let out = env.call_in(region, "ListAliases", json!({})).unwrap();
    out["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AliasName"].as_str().unwrap().to_owned(),
                a["AliasArn"].as_str().unwrap().to_owned(),
                a["TargetKeyId"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn keys_belong_to_the_region_they_were_created_in() {
    let mut env = Env::new();
    let (us, us_arn) = create(&mut env, US);
    let (eu, eu_arn) = create(&mut env, EU);
    assert_eq!(
        us_arn,
        format!("arn:aws:kms:us-east-1:111122223333:key/{us}")
    );
    assert_eq!(
        eu_arn,
        format!("arn:aws:kms:eu-west-1:111122223333:key/{eu}")
    );
    assert_eq!(listed_keys(&mut env, US), vec![us_arn.clone()]);
    assert_eq!(listed_keys(&mut env, EU), vec![eu_arn.clone()]);
    assert!(listed_keys(&mut env, "ap-south-2").is_empty());
    // Another region's key does not exist here, by id or by ARN.
    let (c, m) = code(env.call_in(EU, "DescribeKey", json!({"KeyId": us})));
    assert_eq!(c, KmsErrorCode::NotFoundException);
    assert_eq!(
        m,
        format!("Key 'arn:aws:kms:eu-west-1:111122223333:key/{us}' does not exist")
    );
    let (c, _) = code(env.call_in(EU, "Encrypt", json!({"KeyId": us_arn, "Plaintext": "AA=="})));
    assert_eq!(c, KmsErrorCode::NotFoundException);
    // A ciphertext of a us-east-1 key does not decrypt in eu-west-1.
    let blob = env
        .call_in(US, "Encrypt", json!({"KeyId": us, "Plaintext": "AAEC"}))
        .unwrap()["CiphertextBlob"]
        .clone();
    let (c, _) = code(env.call_in(EU, "Decrypt", json!({"CiphertextBlob": blob})));
    assert_eq!(c, KmsErrorCode::InvalidCiphertextException);
    let out = env
        .call_in(US, "Decrypt", json!({"CiphertextBlob": blob}))
        .unwrap();
    assert_eq!(out["Plaintext"], "AAEC");
    assert_eq!(out["KeyId"], us_arn.as_str());
}

#[test]
fn alias_names_are_per_region() {
    let mut env = Env::new();
    let (us, _) = create(&mut env, US);
    let (eu, _) = create(&mut env, EU);
    env.call_in(
        US,
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": us}),
    )
    .unwrap();
    // The same name in another region is another alias.
    env.call_in(
        EU,
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": eu}),
    )
    .unwrap();
    // An alias must point at a key of its own region.
    let (c, _) = code(env.call_in(
        EU,
        "CreateAlias",
        json!({"AliasName": "alias/other", "TargetKeyId": us}),
    ));
    assert_eq!(c, KmsErrorCode::NotFoundException);
    for (region, key) in [(US, &us), (EU, &eu)] {
        let out = env
            .call_in(region, "DescribeKey", json!({"KeyId": "alias/app"}))
            .unwrap();
        assert_eq!(out["KeyMetadata"]["KeyId"], key.as_str());
        assert_eq!(
            listed_aliases(&mut env, region),
            vec![(
                "alias/app".to_owned(),
                format!("arn:aws:kms:{region}:111122223333:alias/app"),
                key.clone()
            )]
        );
        let by_key = env
            .call_in(region, "ListAliases", json!({"KeyId": key}))
            .unwrap();
        assert_eq!(by_key["Aliases"][0]["AliasName"], "alias/app");
    }
    // Deleting one region's alias leaves the other's.
    env.call_in(EU, "DeleteAlias", json!({"AliasName": "alias/app"}))
        .unwrap();
    assert!(listed_aliases(&mut env, EU).is_empty());
    assert_eq!(listed_aliases(&mut env, US).len(), 1);
    let (c, m) = code(env.call_in(EU, "DescribeKey", json!({"KeyId": "alias/app"})));
    assert_eq!(c, KmsErrorCode::NotFoundException);
    assert!(
        m.contains("arn:aws:kms:eu-west-1:111122223333:alias/app"),
        "{m}"
    );
}

#[test]
fn alias_pages_stay_in_their_region() {
    let mut env = Env::new();
    let (us, _) = create(&mut env, US);
    let (eu, _) = create(&mut env, EU);
    for i in 0..3 {
        let name = format!("alias/a{i}");
        env.call_in(
            US,
            "CreateAlias",
            json!({"AliasName": name, "TargetKeyId": us}),
        )
        .unwrap();
        env.call_in(
            EU,
            "CreateAlias",
            json!({"AliasName": name, "TargetKeyId": eu}),
        )
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut body = json!({"Limit": 2});
        if let Some(m) = &marker {
            body["Marker"] = json!(m);
        }
        let out = env.call_in(EU, "ListAliases", body).unwrap();
        for a in out["Aliases"].as_array().unwrap() {
            assert_eq!(a["TargetKeyId"], eu.as_str());
            seen.push(a["AliasName"].as_str().unwrap().to_owned());
        }
        if out["Truncated"] == json!(false) {
            break;
        }
        marker = Some(out["NextMarker"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, vec!["alias/a0", "alias/a1", "alias/a2"]);
}

#[test]
fn a_host_that_hides_a_regions_alias_or_key_is_refused() {
    let mut env = Env::new();
    let (eu, _) = create(&mut env, EU);
    env.call_in(
        EU,
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": eu}),
    )
    .unwrap();
    // The host leaves out the eu-west-1 alias: the state view says it exists.
    let aliases = std::mem::take(&mut env.aliases);
    assert!(matches!(
        env.call_in(EU, "DescribeKey", json!({"KeyId": "alias/app"})),
        Err(OpError::Stale)
    ));
    assert!(matches!(
        env.call_in(EU, "ListAliases", json!({})),
        Err(OpError::Stale)
    ));
    env.aliases = aliases;
    // The host leaves out a key of another region from a key listing: refused, though the key
    // would not be shown (the listing's completeness is checked over every region).
    let (_us, _) = create(&mut env, US);
    let keys = env.keys.clone();
    env.keys.retain(|k| {
        crate::record::open::<crate::record::KeyRecord>(
            env.domain.keyring(),
            crate::record::Kind::Key,
            None,
            &k.0,
        )
        .unwrap()
        .region
            == EU
    });
    assert!(matches!(
        env.call_in(EU, "ListKeys", json!({})),
        Err(OpError::Stale)
    ));
    env.keys = keys;
    assert_eq!(listed_keys(&mut env, EU).len(), 1);
}

/// A new multi-Region key, primary in us-east-1; its id.
fn new_mrk(env: &mut Env) -> String {
    env.call_in(US, "CreateKey", json!({"MultiRegion": true}))
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn describe(env: &mut Env, region: &str, key: &str) -> Value {
    env.call_in(region, "DescribeKey", json!({"KeyId": key}))
        .unwrap()["KeyMetadata"]
        .clone()
}

#[test]
#[allow(clippy::too_many_lines)] // one story: create, replicate, use, rotate, move, delete
fn a_multi_region_key_shares_its_material_and_keeps_each_regions_own_state() {
    let mut env = Env::new();
    let out = env
        .call_in(
            US,
            "CreateKey",
            json!({"MultiRegion": true, "Description": "p"}),
        )
        .unwrap();
    let id = out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("mrk-") && id.len() == 36, "{id}");
    let m = &out["KeyMetadata"];
    assert_eq!(m["MultiRegion"], true);
    assert_eq!(
        m["MultiRegionConfiguration"]["MultiRegionKeyType"],
        "PRIMARY"
    );
    assert_eq!(m["MultiRegionConfiguration"]["PrimaryKey"]["Region"], US);
    assert_eq!(m["MultiRegionConfiguration"]["ReplicaKeys"], json!([]));
    // Not in eu-west-1 until replicated.
    let (c, _) = code(env.call_in(EU, "DescribeKey", json!({"KeyId": id})));
    assert_eq!(c, KmsErrorCode::NotFoundException);
    let out = env
        .call_in(
            US,
            "ReplicateKey",
            json!({"KeyId": id, "ReplicaRegion": EU, "Description": "r",
                   "Tags": [{"TagKey": "t", "TagValue": "v"}]}),
        )
        .unwrap();
    let r = &out["ReplicaKeyMetadata"];
    assert_eq!(
        r["Arn"],
        format!("arn:aws:kms:eu-west-1:111122223333:key/{id}")
    );
    assert_eq!(r["Description"], "r");
    assert_eq!(
        r["MultiRegionConfiguration"]["MultiRegionKeyType"],
        "REPLICA"
    );
    assert_eq!(
        out["ReplicaTags"],
        json!([{"TagKey": "t", "TagValue": "v"}])
    );
    assert!(out["ReplicaPolicy"].as_str().unwrap().contains("kms:*"));
    let p = describe(&mut env, US, &id);
    assert_eq!(p["Description"], "p");
    assert_eq!(
        p["MultiRegionConfiguration"]["ReplicaKeys"],
        json!([{"Arn": format!("arn:aws:kms:eu-west-1:111122223333:key/{id}"), "Region": EU}])
    );
    // One material: what one region encrypts, the other decrypts.
    let blob = env
        .call_in(US, "Encrypt", json!({"KeyId": id, "Plaintext": "AAEC"}))
        .unwrap()["CiphertextBlob"]
        .clone();
    let out = env
        .call_in(EU, "Decrypt", json!({"CiphertextBlob": blob}))
        .unwrap();
    assert_eq!(out["Plaintext"], "AAEC");
    assert_eq!(
        out["KeyId"],
        format!("arn:aws:kms:eu-west-1:111122223333:key/{id}")
    );
    // Rotation is the set's, from the primary; a replica refuses to manage it.
    env.call_in(US, "RotateKeyOnDemand", json!({"KeyId": id}))
        .unwrap();
    let (c, m) = code(env.call_in(EU, "EnableKeyRotation", json!({"KeyId": id})));
    assert_eq!(c, KmsErrorCode::UnsupportedOperationException);
    assert!(m.ends_with("is not a multi-region primary key."), "{m}");
    let blob2 = env
        .call_in(US, "Encrypt", json!({"KeyId": id, "Plaintext": "AAEC"}))
        .unwrap()["CiphertextBlob"]
        .clone();
    for b in [&blob, &blob2] {
        env.call_in(EU, "Decrypt", json!({"CiphertextBlob": b}))
            .unwrap();
    }
    // State is each region's own.
    env.call_in(EU, "DisableKey", json!({"KeyId": id})).unwrap();
    let (c, _) = code(env.call_in(EU, "Encrypt", json!({"KeyId": id, "Plaintext": "AA=="})));
    assert_eq!(c, KmsErrorCode::DisabledException);
    env.call_in(US, "Encrypt", json!({"KeyId": id, "Plaintext": "AA=="}))
        .unwrap();
    env.call_in(EU, "EnableKey", json!({"KeyId": id})).unwrap();
    // Only the primary replicates, and once per region.
    let (c, m) = code(env.call_in(
        EU,
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": "ap-south-2"}),
    ));
    assert_eq!(c, KmsErrorCode::UnsupportedOperationException);
    assert_eq!(
        m,
        format!("arn:aws:kms:eu-west-1:111122223333:key/{id} is not a multi-region primary key.")
    );
    let (c, _) = code(env.call_in(
        US,
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": EU}),
    ));
    assert_eq!(c, KmsErrorCode::AlreadyExistsException);
    // The key appears in each region's listing, with that region's ARN.
    assert!(
        listed_keys(&mut env, EU).contains(&format!("arn:aws:kms:eu-west-1:111122223333:key/{id}"))
    );
    // The primary moves.
    env.call_in(
        US,
        "UpdatePrimaryRegion",
        json!({"KeyId": id, "PrimaryRegion": EU}),
    )
    .unwrap();
    assert_eq!(
        describe(&mut env, EU, &id)["MultiRegionConfiguration"]["MultiRegionKeyType"],
        "PRIMARY"
    );
    assert_eq!(
        describe(&mut env, US, &id)["MultiRegionConfiguration"]["MultiRegionKeyType"],
        "REPLICA"
    );
    // The primary with replicas is not deleted first; a replica's deletion is its own.
    let (c, _) = code(env.call_in(
        EU,
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    ));
    assert_eq!(c, KmsErrorCode::UnsupportedOperationException);
    env.call_in(
        US,
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    assert_eq!(describe(&mut env, US, &id)["KeyState"], "PendingDeletion");
    assert_eq!(describe(&mut env, EU, &id)["KeyState"], "Enabled");
    // When the window has passed, the sweep removes that replica only: the set lives on.
    env.call_in(
        US,
        "CreateAlias",
        json!({"AliasName": "alias/us", "TargetKeyId": id}),
    )
    .unwrap_err();
    let now = chrono::Utc::now() + chrono::Duration::days(8);
    let (writes, token) = env
        .core
        .sweep(env.domain.keyring(), &env.keys, now)
        .unwrap();
    assert_eq!(writes.len(), 1);
    let ekms_wire::msg::StoreWrite::PutKey { sealed, .. } = &writes[0] else {
        panic!("expected the key set to be rewritten, got {writes:?}");
    };
    env.core.ledger().unwrap().commit(token).unwrap();
    env.keys = vec![sealed.clone()];
    let (c, _) = code(env.call_in(US, "DescribeKey", json!({"KeyId": id})));
    assert_eq!(c, KmsErrorCode::NotFoundException);
    let eu = describe(&mut env, EU, &id);
    assert_eq!(eu["KeyState"], "Enabled");
    assert_eq!(eu["MultiRegionConfiguration"]["ReplicaKeys"], json!([]));
    env.call_in(EU, "Decrypt", json!({"CiphertextBlob": blob}))
        .unwrap();
}

#[test]
fn a_primary_is_deleted_after_its_replicas() {
    let mut env = Env::new();
    let id = new_mrk(&mut env);
    env.call_in(
        US,
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": EU}),
    )
    .unwrap();
    let schedule = |env: &mut Env, region: &str, days: i64| {
        env.call_in(
            region,
            "ScheduleKeyDeletion",
            json!({"KeyId": id, "PendingWindowInDays": days}),
        )
    };
    // Not before its replicas are on their way out (as Terraform destroys: replicas first).
    let (c, _) = code(schedule(&mut env, US, 7));
    assert_eq!(c, KmsErrorCode::UnsupportedOperationException);
    let eu = schedule(&mut env, EU, 30).unwrap()["DeletionDate"]
        .as_f64()
        .unwrap();
    let us = schedule(&mut env, US, 7).unwrap()["DeletionDate"]
        .as_f64()
        .unwrap();
    assert!(
        us >= eu,
        "the primary goes no earlier than its replica: {us} < {eu}"
    );
    // When both are due, the whole set goes.
    let now = chrono::Utc::now() + chrono::Duration::days(31);
    let (writes, _) = env
        .core
        .sweep(env.domain.keyring(), &env.keys, now)
        .unwrap();
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, ekms_wire::msg::StoreWrite::DeleteKey { .. })),
        "{writes:?}"
    );
}

#[test]
fn a_multi_region_replicas_grants_are_its_own() {
    let mut env = Env::new();
    let id = new_mrk(&mut env);
    env.call_in(
        US,
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": EU}),
    )
    .unwrap();
    env.call_in(
        US,
        "CreateGrant",
        json!({"KeyId": id, "GranteePrincipal": "arn:aws:iam::111122223333:user/bob",
               "RetiringPrincipal": "arn:aws:iam::111122223333:user/rita",
               "Operations": ["Encrypt"]}),
    )
    .unwrap();
    let grants = |env: &mut Env, region: &str| {
        env.call_in(region, "ListGrants", json!({"KeyId": id}))
            .unwrap()["Grants"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(grants(&mut env, US), 1);
    assert_eq!(grants(&mut env, EU), 0);
    // A single-Region key of eu-west-1 with a grant for the same retiring principal.
    let (eu_key, eu_arn) = create(&mut env, EU);
    env.call_in(
        EU,
        "CreateGrant",
        json!({"KeyId": eu_key, "GranteePrincipal": "arn:aws:iam::111122223333:user/bob",
               "RetiringPrincipal": "arn:aws:iam::111122223333:user/rita",
               "Operations": ["Decrypt"]}),
    )
    .unwrap();
    // ListRetirableGrants lists the grants of the request's region, with that region's ARNs.
    let retirable = |env: &mut Env, region: &str| -> Vec<String> {
        env.call_in(
            region,
            "ListRetirableGrants",
            json!({"RetiringPrincipal": "arn:aws:iam::111122223333:user/rita"}),
        )
        .unwrap()["Grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["KeyId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        retirable(&mut env, US),
        vec![format!("arn:aws:kms:us-east-1:111122223333:key/{id}")]
    );
    assert_eq!(retirable(&mut env, EU), vec![eu_arn]);
    assert!(retirable(&mut env, "ap-south-2").is_empty());
}

#[test]
fn replicating_needs_create_key_as_well() {
    let mut env = Env::new();
    let id = new_mrk(&mut env);
    let only_replicate = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:ReplicateKey", "Resource": "*"}]});
    let (akid, secret) = super::principals::make(&mut env, "carol", Some(only_replicate));
    let (c, m) = code(env.call_as(
        (&akid, &secret),
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": EU}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    assert!(m.contains("kms:CreateKey"), "{m}");
    let both = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:ReplicateKey", "kms:CreateKey"], "Resource": "*"}]});
    let (akid, secret) = super::principals::make(&mut env, "dave", Some(both));
    env.call_as(
        (&akid, &secret),
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": EU}),
    )
    .unwrap();
}
