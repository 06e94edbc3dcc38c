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
