//! The custody ceremony end to end, as a user runs it: `ekms custodian keygen`, `ekms domain
//! init` with 3 custodians and threshold 2 (the CLI verifies the enclave's attestation and opens
//! the admin credential sealed to the first custodian), a restart (sealed), `ekms custodian unseal` by two
//! custodians (one share is not enough; a wrong policy is refused), old ciphertexts decrypt.
//! Then peer forwarding between two appliances on one store, refused for other PCRs, a domain
//! key rotation with background re-sealing, and an attacker on the network submitting garbage
//! and forged shares while two of three custodians unseal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_collect
)] // test code

mod common;

use std::{path::Path, process::Command, time::Duration};

use aws_sdk_kms::{Client, primitives::Blob};
use common::{client, ekms, keygen, policy_for, sim_root, text, unseal, unseal_args};
use ekms_tests::{Appliance, bin_dir, read_credentials, wait_until};

/// A client with the admin credential in `creds` (written by `ekms domain init`, or by the
/// development custodian in the data dir).
fn admin_of(app: &Appliance, creds: &Path) -> Client {
    let (a, s) = read_credentials(creds);
    client(app, &a, &s)
}

async fn sealed_error(kms: &Client) -> String {
    let e = kms
        .list_keys()
        .send()
        .await
        .expect_err("a sealed appliance refuses KMS calls");
    let e = e.into_service_error();
    assert_eq!(e.meta().code(), Some("KMSInternalException"), "{e:?}");
    e.meta().message().unwrap_or_default().to_owned()
}

fn custody(app: &Appliance) -> serde_json::Value {
    let o = ekms(&["domain", "status", "--endpoint", &app.endpoint]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_custodians_threshold_two_unseal_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut app = Appliance::start_with(&data, &["--no-dev-custodian"]);
    assert_eq!(custody(&app)["state"], "uninitialised");

    let people = ["alice", "bob", "carol"].map(|n| keygen(dir.path(), n));
    let shares = dir.path().join("shares");
    let policy = dir.path().join("pcrs.json");
    policy_for(&bin_dir().join("ekms-enclave"), &policy);
    let mut init = vec![
        "domain".to_owned(),
        "init".into(),
        "--endpoint".into(),
        app.endpoint.clone(),
        "--threshold".into(),
        "2".into(),
        "--out-dir".into(),
        shares.display().to_string(),
        "--root".into(),
        sim_root(&app),
        "--allow-simulation-root".into(),
        "--policy".into(),
        policy.display().to_string(),
    ];
    for p in &people {
        init.push("--custodian".into());
        init.push(format!("{}.pub", p.display()));
    }
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    let o = ekms(&init);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2-of-3"), "{}", text(&o));
    // The admin credential was encrypted to alice (the first custodian) and opened with
    // alice.key by the CLI, after it verified the enclave's attestation for it.
    assert!(text(&o).contains("verified: "), "{}", text(&o));
    let creds = shares.join("credentials");
    let config = std::fs::read_to_string(shares.join("config")).unwrap();
    assert!(
        config.contains(&format!("endpoint_url = {}", app.endpoint)),
        "{config}"
    );
    assert!(
        !data.join("credentials").exists(),
        "the host wrote a credential"
    );
    // A second init is refused (the outputs exist); so is one into a fresh directory.
    assert!(!ekms(&init).status.success());
    let again_dir = dir.path().join("again");
    let mut again = init.clone();
    again[7] = again_dir.to_str().unwrap();
    let o = ekms(&again);
    assert!(!o.status.success());
    assert!(text(&o).contains("already"), "{}", text(&o));
    let share = |name: &str| shares.join(format!("{name}.share.json"));
    for name in ["alice", "bob", "carol"] {
        let s = std::fs::read_to_string(share(name)).unwrap();
        assert!(s.contains("ekms-custodian-share"));
    }

    let kms = admin_of(&app, &creds);
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let blob = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"before the restart".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    assert!(app.terminate());
    let app = Appliance::start_with(&data, &["--no-dev-custodian"]);
    let kms = admin_of(&app, &creds);
    let msg = sealed_error(&kms).await;
    assert!(msg.contains("sealed"), "{msg}");
    let state = custody(&app);
    assert_eq!(
        (state["state"].as_str(), state["have"].as_u64()),
        (Some("sealed"), Some(0))
    );
    // `--domain` pins the domain: the right one passes, another is refused.
    let domain = state["domain"].as_str().unwrap().to_owned();
    let status = |id: &str| {
        ekms(&[
            "domain",
            "status",
            "--endpoint",
            &app.endpoint,
            "--domain",
            id,
        ])
    };
    assert!(status(&domain).status.success());
    let o = status("0123456789abcdef");
    assert!(!o.status.success());
    assert!(text(&o).contains("names domain"), "{}", text(&o));

    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, format!("{{\"PCR0\": \"{}\"}}", "ab".repeat(48))).unwrap();

    // A policy the enclave does not meet: refused before anything is decrypted or sent.
    let o = unseal(&app, &people[0], &share("alice"), &wrong);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("REFUSED") && text(&o).contains("PCR0"),
        "{}",
        text(&o)
    );
    assert_eq!(custody(&app)["have"], 0);
    // Someone else's share with my key: refused locally.
    let o = unseal(&app, &people[0], &share("bob"), &policy);
    assert!(!o.status.success(), "{}", text(&o));
    // A share pinned to another domain: refused locally.
    let mut pinned = unseal_args(&app, &people[0], &share("alice"), &policy);
    pinned.extend(["--domain".to_owned(), "0123456789abcdef".to_owned()]);
    let o = ekms(&pinned.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(text(&o).contains("names domain"), "{}", text(&o));
    assert_eq!(custody(&app)["have"], 0);

    // One share is not enough.
    let o = unseal(&app, &people[0], &share("alice"), &policy);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("verified:"), "{}", text(&o));
    assert!(text(&o).contains("1 of 2"), "{}", text(&o));
    let msg = sealed_error(&kms).await;
    assert!(msg.contains("1 of 2"), "{msg}");
    // The same share twice does not count twice.
    let o = unseal(&app, &people[0], &share("alice"), &policy);
    assert!(!o.status.success());
    assert!(text(&o).contains("already received"), "{}", text(&o));

    let o = unseal(&app, &people[2], &share("carol"), &policy);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("UNSEALED"), "{}", text(&o));

    let plain = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"before the restart");
    // An unsealed enclave tells a late custodian there is nothing to do.
    let o = unseal(&app, &people[1], &share("bob"), &policy);
    assert!(!o.status.success());
    assert!(text(&o).contains("not sealed"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_appliance_gets_the_domain_by_mutual_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Appliance::start_with(&data, &["--no-dev-custodian"]);
    let alice = keygen(dir.path(), "alice");
    let o = ekms(&[
        "domain",
        "init",
        "--endpoint",
        &first.endpoint,
        "--custodian",
        &format!("{}.pub", alice.display()),
        "--threshold",
        "1",
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--root",
        &sim_root(&first),
        "--allow-simulation-root",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let creds = dir.path().join("credentials");
    let kms = admin_of(&first, &creds);
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let blob = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"fleet".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    // Same store, its own enclave (another CID in the vsock mock); no human.
    let second = Appliance::start_with(
        &data,
        &[
            "--no-dev-custodian",
            "--sim-cid",
            "17",
            "--peer",
            &first.endpoint,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || custody(&second)["state"]
            == "unsealed"),
        "the peer did not forward the domain"
    );
    let plain = admin_of(&second, &creds)
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"fleet");

    // An enclave with other measurements (a patched binary) is refused, and stays sealed.
    let patched = dir.path().join("ekms-enclave");
    let mut exe = std::fs::read(bin_dir().join("ekms-enclave")).unwrap();
    exe.extend_from_slice(b"\0patched");
    std::fs::write(&patched, exe).unwrap();
    std::fs::set_permissions(
        &patched,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let third = Appliance::start_with(
        &data,
        &[
            "--no-dev-custodian",
            "--sim-cid",
            "18",
            "--peer",
            &first.endpoint,
            "--enclave-bin",
            patched.to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(custody(&third)["state"], "sealed");
    let msg = sealed_error(&admin_of(&third, &creds)).await;
    assert!(msg.contains("sealed"), "{msg}");
    // The running appliance says why when asked directly.
    let o = Command::new(bin_dir().join("ekms"))
        .args(["domain", "status", "--endpoint", &first.endpoint])
        .output()
        .unwrap();
    assert!(o.status.success());
}

async fn blobs_key(kms: &Client, alias: &str) -> String {
    kms.describe_key()
        .key_id(alias)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_reseals_every_record_and_old_ciphertexts_still_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let creds = dir.path().join("credentials");
    let kms = admin_of(&app, &creds);
    let mut blobs = Vec::new();
    for i in 0..5u8 {
        // A description per key: equal calls in the same second are one signed request.
        let key = kms
            .create_key()
            .description(format!("r{i}"))
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .key_id;
        kms.create_alias()
            .alias_name(format!("alias/r{i}"))
            .target_key_id(&key)
            .send()
            .await
            .unwrap();
        let blob = kms
            .encrypt()
            .key_id(format!("alias/r{i}"))
            .plaintext(Blob::new(vec![i; 8]))
            .send()
            .await
            .unwrap()
            .ciphertext_blob
            .unwrap();
        blobs.push(blob);
    }
    // A deleted alias leaves a tombstone, which is re-sealed like any record.
    kms.create_alias()
        .alias_name("alias/gone")
        .target_key_id(blobs_key(&kms, "alias/r0").await)
        .send()
        .await
        .unwrap();
    kms.delete_alias()
        .alias_name("alias/gone")
        .send()
        .await
        .unwrap();
    let before = custody(&app);
    let o = ekms(&["domain", "rotate", "--endpoint", &app.endpoint]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = custody(&app);
            s["keys"].as_array().map(Vec::len) == Some(1)
                && s["generation"] == 3
                && s["on_older_keys"] == 0
        }),
        "re-sealing did not finish: {}",
        custody(&app)
    );
    let after = custody(&app);
    assert_ne!(after["keys"][0], before["keys"][0]);
    assert_eq!(after["domain"], before["domain"]);
    // Every record in the store is now sealed under the new key.
    let db =
        rusqlite::Connection::open(dir.path().join(ekms_parent_host::store::STORE_FILE)).unwrap();
    let fp = after["keys"][0].as_str().unwrap().to_owned();
    for table in ["keys", "aliases", "principals", "tombstones"] {
        let rows: Vec<Vec<u8>> = db
            .prepare(&format!("SELECT sealed FROM {table}"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!rows.is_empty());
        for r in rows {
            let hex: String = r[6..14].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, fp, "{table}");
        }
    }
    // The same shares (here the development custodian's) still unseal after a restart.
    assert!(app.terminate());
    let app = Appliance::start(dir.path());
    let kms = admin_of(&app, &creds);
    for (i, blob) in blobs.into_iter().enumerate() {
        let plain = kms
            .decrypt()
            .ciphertext_blob(blob)
            .send()
            .await
            .unwrap()
            .plaintext
            .unwrap();
        assert_eq!(plain.as_ref(), vec![u8::try_from(i).unwrap(); 8].as_slice());
    }
}

/// What an attacker on the network sends to `/ekms/custody/share`; the answer's status and text.
async fn post_share(app: &Appliance, body: String) -> (u16, String) {
    let (status, bytes) = ekms_parent_host::http_client::request(
        &app.endpoint,
        http::Method::POST,
        "/ekms/custody/share",
        Some(body.into_bytes()),
    )
    .await
    .unwrap();
    (
        status.as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// A share of the attacker's own, sealed to the enclave's real attested identity key (from an
/// anonymous attestation request) and signed with a key of its own, or with `claim` named as
/// the signer.
async fn forged(
    app: &Appliance,
    domain: [u8; 8],
    index: u8,
    claim: Option<&ekms_custody::CustodianPublicKey>,
) -> String {
    let mut session = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut session).unwrap();
    let document = ekms_parent_host::fetch::fetch(&app.endpoint, &hex::encode(&session))
        .await
        .unwrap();
    let doc = ekms_attestation::AttestationDoc::parse_unverified(&document).unwrap();
    let identity = ekms_custody::P384PublicKey::from_sec1(doc.public_key().unwrap()).unwrap();
    let mallory = ekms_custody::CustodianKey::generate().unwrap();
    let share = ekms_custody::Share::new(index, 2, 3, [0x42; 32]).unwrap();
    let sub = ekms_custody::SubmittedShare::encrypt_for_enclave(
        &share, &mallory, &identity, domain, &session,
    )
    .unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&sub.to_json().unwrap()).unwrap();
    if let Some(claim) = claim {
        json["custodian_key"] = hex::encode(claim.key().sec1()).into();
    }
    serde_json::json!({ "session": hex::encode(&session), "share": json.to_string() }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attacker_submitting_garbage_and_forged_shares_cannot_stop_two_of_three_custodians() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut app = Appliance::start_with(&data, &["--no-dev-custodian"]);
    let people = ["alice", "bob", "carol"].map(|n| keygen(dir.path(), n));
    let shares = dir.path().join("shares");
    let policy = dir.path().join("pcrs.json");
    policy_for(&bin_dir().join("ekms-enclave"), &policy);
    let mut init = vec![
        "domain".to_owned(),
        "init".into(),
        "--endpoint".into(),
        app.endpoint.clone(),
        "--threshold".into(),
        "2".into(),
        "--out-dir".into(),
        shares.display().to_string(),
        "--root".into(),
        sim_root(&app),
        "--allow-simulation-root".into(),
    ];
    for p in &people {
        init.push("--custodian".into());
        init.push(format!("{}.pub", p.display()));
    }
    let o = ekms(&init.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let kms = admin_of(&app, &shares.join("credentials"));
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let blob = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"under attack".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    assert!(app.terminate());
    let app = std::sync::Arc::new(Appliance::start_with(&data, &["--no-dev-custodian"]));
    let state = custody(&app);
    assert_eq!(state["state"], "sealed");
    let mut domain = [0u8; 8];
    hex::decode_to_slice(state["domain"].as_str().unwrap(), &mut domain).unwrap();
    let share = |name: &str| shares.join(format!("{name}.share.json"));
    let alice_pub = ekms_custody::CustodianPublicKey::from_json(
        &std::fs::read_to_string(format!("{}.pub", people[0].display())).unwrap(),
    )
    .unwrap();

    // Before any custodian: a forged share for each position, one claiming alice's key, and
    // garbage. Every one refused, with its reason; no slot taken.
    for index in 1..=3u8 {
        let (status, body) = post_share(&app, forged(&app, domain, index, None).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains(&format!("share {index} belongs to custodian")),
            "{body}"
        );
    }
    let (status, body) = post_share(&app, forged(&app, domain, 1, Some(&alice_pub)).await).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("signature does not verify"), "{body}");
    let garbage = [
        "not json".to_owned(),
        "{}".to_owned(),
        serde_json::json!({"session": "00", "share": "{}"}).to_string(),
        serde_json::json!({"session": "00ff", "share": r#"{"kind":"ekms-submitted-share","version":1,"domain_id":"0011223344556677","index":1,"threshold":2,"total":3,"sealed_share":"AAAA"}"#}).to_string(),
    ];
    for g in &garbage {
        let (status, body) = post_share(&app, g.clone()).await;
        assert_eq!(status, 400, "{g}: {body}");
    }
    assert_eq!(custody(&app)["have"], 0);

    // One custodian.
    let o = unseal(&app, &people[0], &share("alice"), &policy);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("signed with your key"), "{}", text(&o));
    assert!(text(&o).contains("1 of 2"), "{}", text(&o));

    // The attacker keeps going (forgeries for every position, a replay of one, anonymous
    // attestation requests) while the second custodian unseals.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (app, stop) = (std::sync::Arc::clone(&app), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut round = 0u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || answers.len() < 12 {
                let f = forged(&app, domain, 1 + round % 3, None).await;
                answers.push(post_share(&app, f.clone()).await);
                answers.push(post_share(&app, f).await);
                for _ in 0..20 {
                    let nonce: String = format!("{round:02x}").repeat(16);
                    ekms_parent_host::fetch::fetch(&app.endpoint, &nonce)
                        .await
                        .unwrap();
                }
                round = round.wrapping_add(1);
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (carol, people2, policy2, app2) = (
        share("carol"),
        people.clone(),
        policy.clone(),
        std::sync::Arc::clone(&app),
    );
    let o = tokio::task::spawn_blocking(move || unseal(&app2, &people2[2], &carol, &policy2))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("UNSEALED"), "{}", text(&o));
    let answers = attacker.await.unwrap();
    assert!(answers.len() >= 12);
    for (status, body) in &answers {
        // Refused with a reason while sealed; once unsealed, told so and nothing more.
        let clear = body.contains("belongs to custodian")
            || body.contains("already used")
            || body.contains("\"unsealed\"");
        assert!(clear, "{status} {body}");
        assert!(
            *status == 400 || body.contains("\"unsealed\""),
            "{status} {body}"
        );
    }
    let plain = admin_of(&app, &shares.join("credentials"))
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"under attack");
}
