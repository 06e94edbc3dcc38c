//! Freshness across restarts with witnesses: a writer and three witness appliances (each its
//! own `ekms serve` process, data dir and enclave, joined to the writer's domain by attestation),
//! driven by the real SDK. The writer is killed and restarted; its store is rolled back while it
//! is down; witnesses are lost and restarted. A rolled-back store is refused; every honest
//! restart serves the latest state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aws_sdk_kms::{error::ProvideErrorMetadata as _, primitives::Blob};
use common::{admin, decrypt, encrypt};
use ekms_tests::{Appliance, free_port, wait_until};

const SIM_CA: &str = "SIMULATION-ONLY-attestation-ca.secret";

struct Fleet {
    _dirs: Vec<tempfile::TempDir>,
    writer_dir: PathBuf,
    writer_listen: String,
    witness_args: Vec<String>,
    witnesses: Vec<Option<Appliance>>,
    witness_dirs: Vec<PathBuf>,
    witness_listen: Vec<String>,
}

impl Fleet {
    /// Starts the writer (a new domain that needs 3 witnesses) and its three witnesses.
    fn start() -> (Self, Appliance) {
        let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let writer_listen = format!("127.0.0.1:{}", free_port());
        let witness_listen: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut witness_args = Vec::new();
        for l in &witness_listen {
            witness_args.push("--witness".to_owned());
            witness_args.push(format!("http://{l}"));
        }
        let mut fleet = Self {
            writer_dir: dirs[0].path().to_path_buf(),
            witness_dirs: dirs[1..].iter().map(|d| d.path().to_path_buf()).collect(),
            _dirs: dirs,
            writer_listen,
            witness_args,
            witnesses: vec![None, None, None],
            witness_listen,
        };
        let writer = fleet.writer();
        for i in 0..3 {
            fleet.start_witness(i);
        }
        (fleet, writer)
    }

    fn writer(&self) -> Appliance {
        let args: Vec<&str> = self.witness_args.iter().map(String::as_str).collect();
        Appliance::start_at(&self.writer_dir, &self.writer_listen, &args)
    }

    /// Starts witness `i` on a fresh data dir: it gets the domain from the writer.
    fn start_witness(&mut self, i: usize) {
        let dir = &self.witness_dirs[i];
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        // Simulation only: every appliance must trust the same simulated attestation root.
        std::fs::copy(self.writer_dir.join(SIM_CA), dir.join(SIM_CA)).unwrap();
        let peer = format!("http://{}", self.writer_listen);
        self.witnesses[i] = Some(Appliance::start_at(
            dir,
            &self.witness_listen[i],
            &["--no-dev-custodian", "--peer", &peer],
        ));
    }

    fn stop_witness(&mut self, i: usize) {
        if let Some(mut w) = self.witnesses[i].take() {
            w.kill_hard();
        }
    }
}

fn output(app: &Appliance) -> String {
    String::from_utf8_lossy(&app.output()).into_owned()
}

/// Waits until the appliance printed `text`.
fn says(app: &Appliance, text: &str) {
    assert!(
        wait_until(Duration::from_secs(30), || output(app).contains(text)),
        "{}",
        output(app)
    );
}

/// Creates keys until one succeeds (the writer commits only once a quorum of witnesses is
/// enrolled).
async fn create_key_when_ready(kms: &aws_sdk_kms::Client) -> String {
    for _ in 0..240 {
        if let Ok(r) = kms.create_key().send().await {
            return r.key_metadata.unwrap().key_id;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the writer never committed a write");
}

/// A consistent copy of the writer's store.
fn snapshot(dir: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    let db = rusqlite::Connection::open(dir.join(ekms_parent_host::store::STORE_FILE)).unwrap();
    db.execute("VACUUM INTO ?1", [to.display().to_string()])
        .unwrap();
}

/// Puts a copy back as the writer's store (the writer is down).
fn restore(dir: &Path, from: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("ekms.sqlite3{suffix}")));
    }
    std::fs::copy(from, dir.join(ekms_parent_host::store::STORE_FILE)).unwrap();
}

async fn encrypts(kms: &aws_sdk_kms::Client, key: &str) -> Result<(), String> {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let e = e.into_service_error();
            format!("{:?}: {:?}", e.code(), e.message())
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_rolled_back_while_the_writer_was_down_is_refused_and_the_latest_serves() {
    let (fleet, mut writer) = Fleet::start();
    assert!(
        output(&writer).contains("the domain has 3 witnesses"),
        "{}",
        output(&writer)
    );
    let kms = admin(&writer);
    let key = create_key_when_ready(&kms).await;
    let blob = encrypt(&kms, &key, b"witnessed").await;
    let scratch = tempfile::tempdir().unwrap();
    let enabled = scratch.path().join("enabled.sqlite3");
    snapshot(&fleet.writer_dir, &enabled);
    kms.disable_key().key_id(&key).send().await.unwrap();
    let latest = scratch.path().join("latest.sqlite3");
    snapshot(&fleet.writer_dir, &latest);

    // Kill and restore: the writer comes back on its own store and serves the latest state.
    writer.kill_hard();
    let writer = fleet.writer();
    let kms = admin(&writer);
    says(&writer, "the enclave serves");
    let e = encrypts(&kms, &key).await.unwrap_err();
    assert!(e.contains("DisabledException"), "{e}");

    // Roll the store back to the Enabled copy while the writer is down.
    drop(writer);
    restore(&fleet.writer_dir, &enabled);
    let writer = fleet.writer();
    let kms = admin(&writer);
    says(&writer, "rolled back");
    let e = encrypts(&kms, &key).await.unwrap_err();
    assert!(e.contains("witnesses"), "{e}");
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("KMSInternalException"));
    assert!(!output(&writer).contains("the enclave serves"));

    // The operator puts the latest store back: it serves, with the key still disabled.
    drop(writer);
    restore(&fleet.writer_dir, &latest);
    let writer = fleet.writer();
    let kms = admin(&writer);
    says(&writer, "the enclave serves");
    let e = encrypts(&kms, &key).await.unwrap_err();
    assert!(e.contains("DisabledException"), "{e}");
    kms.enable_key().key_id(&key).send().await.unwrap();
    assert_eq!(decrypt(&kms, blob).await, b"witnessed");
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_witnesses_restarting_them_and_accepting_the_state_when_a_quorum_is_lost() {
    let (mut fleet, mut writer) = Fleet::start();
    let kms = admin(&writer);
    let first = create_key_when_ready(&kms).await;
    // One witness lost: writes go on with the other two.
    fleet.stop_witness(2);
    let second = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    // The writer restarts with one witness down: two of three still prove its state.
    writer.kill_hard();
    let writer = fleet.writer();
    let kms = admin(&writer);
    says(&writer, "the enclave serves");
    encrypts(&kms, &first).await.unwrap();
    encrypts(&kms, &second).await.unwrap();
    // The lost witness comes back as a new one (it knows nothing) and is enrolled in its place.
    let rounds = |app: &Appliance| output(app).matches("enrolling witnesses").count();
    let before = rounds(&writer);
    fleet.start_witness(2);
    assert!(
        wait_until(Duration::from_secs(30), || rounds(&writer) > before),
        "{}",
        output(&writer)
    );
    let third = create_key_when_ready(&kms).await;
    // Now the first witness is lost and the writer restarts: the re-enrolled one makes the
    // quorum.
    fleet.stop_witness(0);
    drop(writer);
    let writer = fleet.writer();
    let kms = admin(&writer);
    says(&writer, "the enclave serves");
    for k in [&first, &second, &third] {
        encrypts(&kms, k).await.unwrap();
    }
    // With two of three witnesses gone, nothing commits (and nothing is lost).
    fleet.stop_witness(1);
    let keys = |kms: aws_sdk_kms::Client| async move {
        kms.list_keys().send().await.unwrap().keys.unwrap().len()
    };
    let before = keys(kms.clone()).await;
    let e = kms
        .create_key()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    // The SDK retries the retryable error; a retry signed in the same second is the same
    // signed request, which the enclave refuses as a replay (README, "Replays").
    assert!(
        matches!(
            e.code(),
            Some("KMSInternalException" | "ThrottlingException")
        ),
        "{e:?}"
    );
    assert_eq!(keys(kms.clone()).await, before);
    encrypts(&kms, &first).await.unwrap();

    // The writer restarts now: one witness cannot prove its state, so it does not serve...
    drop(writer);
    let writer = fleet.writer();
    let kms = admin(&writer);
    says(&writer, "1 of the 2 witnesses needed");
    let e = encrypts(&kms, &first).await.unwrap_err();
    assert!(e.contains("witnesses"), "{e}");
    // ...until a principal (never the host) accepts the state the store holds.
    let refused = accept_state(&writer, &writer.access_key, "not-the-secret", true);
    assert!(!refused.status.success());
    let unconfirmed = accept_state(&writer, &writer.access_key, &writer.secret_key, false);
    assert!(!unconfirmed.status.success());
    let accepted = accept_state(&writer, &writer.access_key, &writer.secret_key, true);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(String::from_utf8_lossy(&accepted.stdout).contains("\"Accepted\":true"));
    encrypts(&kms, &first).await.unwrap();
    encrypts(&kms, &third).await.unwrap();
    // A second acceptance is refused: the writer serves already. (A second later: the same
    // request signed in the same second would be refused as a replay.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = accept_state(&writer, &writer.access_key, &writer.secret_key, true);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("KMSInvalidStateException"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Writes wait for a quorum of witnesses enrolled afresh; new ones come up and they commit.
    fleet.start_witness(0);
    fleet.start_witness(1);
    create_key_when_ready(&kms).await;
}

fn accept_state(
    writer: &Appliance,
    access: &str,
    secret: &str,
    confirm: bool,
) -> std::process::Output {
    let mut args = vec!["domain", "accept-state", "--endpoint", &writer.endpoint];
    if confirm {
        args.push("--i-accept-rollback");
    }
    std::process::Command::new(ekms_tests::bin_dir().join("ekms"))
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}
