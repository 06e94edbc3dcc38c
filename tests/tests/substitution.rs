//! Domain substitution by a hostile host, with real custodians: it makes a domain of its own (its
//! own custodian, its own admin), writes that keyring and admin principal into the victim's store
//! and restarts. The real custodian's unseal refuses (another domain), a pinned `--domain`
//! refuses, the clients' credentials do not exist in the host's domain, and the victim's keys
//! and ciphertexts are of no use in it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::{path::Path, process::Output, time::Duration};

use aws_sdk_kms::{error::ProvideErrorMetadata, primitives::Blob};
use common::{client, ekms, keygen, policy_for, sim_root, text};
use ekms_tests::{Appliance, bin_dir, read_credentials, wait_until};

/// `ekms domain init` with one custodian (also the admin); returns the domain id.
fn init(app: &Appliance, custodian: &Path, out: &Path) -> String {
    let o = ekms(&[
        "domain",
        "init",
        "--endpoint",
        &app.endpoint,
        "--custodian",
        &format!("{}.pub", custodian.display()),
        "--threshold",
        "1",
        "--out-dir",
        out.to_str().unwrap(),
        "--root",
        &sim_root(app),
        "--allow-simulation-root",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    let at = t.find("created domain ").expect("domain id printed") + "created domain ".len();
    t[at..at + 16].to_owned()
}

/// `ekms custodian unseal` with the simulation policy of the built enclave.
fn unseal(app: &Appliance, custodian: &Path, share: &Path) -> Output {
    let policy = app.data_dir.join("pcrs.json");
    policy_for(&bin_dir().join("ekms-enclave"), &policy);
    common::unseal(app, custodian, share, &policy)
}

fn state(app: &Appliance, pin: Option<&str>) -> Output {
    let mut args = vec!["domain", "status", "--endpoint", app.endpoint.as_str()];
    if let Some(p) = pin {
        args.extend(["--domain", p]);
    }
    ekms(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_substituted_domain_gets_nothing_a_client_would_send_it() {
    let dir = tempfile::tempdir().unwrap();
    let (victim_dir, host_dir) = (dir.path().join("victim"), dir.path().join("host"));
    let (alice_out, mallory_out) = (dir.path().join("alice"), dir.path().join("mallory"));
    let alice = keygen(dir.path(), "alice");
    let mallory = keygen(dir.path(), "mallory");

    // The real domain: alice is its custodian and admin; a client encrypts something.
    let mut victim = Appliance::start_with(&victim_dir, &["--no-dev-custodian"]);
    let real = init(&victim, &alice, &alice_out);
    let (ak, sk) = read_credentials(&alice_out.join("credentials"));
    let kms = client(&victim, &ak, &sk);
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
        .plaintext(Blob::new(b"the client's secret".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    assert!(victim.terminate());

    // The host's own domain, made on a scratch appliance with its own custodian.
    let mut scratch = Appliance::start_with(&host_dir, &["--no-dev-custodian"]);
    let fake = init(&scratch, &mallory, &mallory_out);
    assert_ne!(fake, real);
    assert!(scratch.terminate());

    // Substitution: the host's keyring and admin principal go into the victim's store.
    {
        let from =
            rusqlite::Connection::open(host_dir.join(ekms_parent_host::store::STORE_FILE)).unwrap();
        let (generation, sealed): (i64, Vec<u8>) = from
            .query_row("SELECT generation, sealed FROM domain", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let (id, principal): (String, Vec<u8>) = from
            .query_row("SELECT id, sealed FROM principals", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let akid: String = from
            .query_row("SELECT access_key_id FROM access_keys", [], |r| r.get(0))
            .unwrap();
        let to = rusqlite::Connection::open(victim_dir.join(ekms_parent_host::store::STORE_FILE))
            .unwrap();
        to.execute(
            "UPDATE domain SET generation = ?1, sealed = ?2",
            rusqlite::params![generation, sealed],
        )
        .unwrap();
        // Both admins are named `admin`: the host's replaces the victim's.
        to.execute_batch("DELETE FROM principals; DELETE FROM access_keys;")
            .unwrap();
        to.execute(
            "INSERT INTO principals (id, generation, sealed, name) VALUES (?1, 0, ?2, ?1)",
            rusqlite::params![id, principal],
        )
        .unwrap();
        to.execute(
            "INSERT INTO access_keys (access_key_id, principal) VALUES (?1, ?2)",
            rusqlite::params![akid, id],
        )
        .unwrap();
    }
    let victim = Appliance::start_with(&victim_dir, &["--no-dev-custodian"]);

    // The real custodian refuses to unseal a domain that is not the one on her share.
    let o = unseal(&victim, &alice, &alice_out.join("alice.share.json"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("another domain"), "{}", text(&o));
    // An operator who pinned the real domain is told so.
    let o = state(&victim, Some(&real));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&fake), "{}", text(&o));

    // The host unseals its own domain with its own share: the appliance serves, but...
    let o = unseal(&victim, &mallory, &mallory_out.join("mallory.share.json"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(wait_until(Duration::from_secs(20), || {
        String::from_utf8_lossy(&state(&victim, Some(&fake)).stdout).contains("UNSEALED")
    }));
    // ...the client's credential does not exist in it,
    let kms = client(&victim, &ak, &sk);
    let e = kms
        .list_keys()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("UnrecognizedClientException"), "{e:?}");
    // and with the host's own admin credential, the client's keys and ciphertexts are useless.
    let (mak, msk) = read_credentials(&mallory_out.join("credentials"));
    let host_kms = client(&victim, &mak, &msk);
    let listed = host_kms.list_keys().send().await.unwrap();
    assert!(
        listed
            .keys()
            .iter()
            .all(|k| k.key_id() != Some(key.as_str())),
        "the real domain's key is not in the host's domain"
    );
    let e = host_kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(
            e.code(),
            Some("NotFoundException" | "KMSInvalidStateException" | "InvalidCiphertextException")
        ),
        "{e:?}"
    );
}
