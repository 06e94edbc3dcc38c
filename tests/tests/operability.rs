//! What an operator sees: Prometheus metrics on their own listener (requests by operation and
//! outcome, latency, enclave round trips, in-flight requests, store writes, custody state, audit
//! lag), and JSON log lines that carry the request id the client got.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use aws_sdk_kms::{error::ProvideErrorMetadata as _, operation::RequestId as _};
use ekms_tests::{bin_dir, read_credentials};

/// The value of the sample `name{labels}` (labels as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_json_logs_with_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(bin_dir().join("ekms"))
        .args([
            "serve",
            "--sim",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "ekms_parent_host=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut endpoint = None;
    let mut metrics = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(m) = line.strip_prefix("ekms: metrics on ") {
            metrics = Some(m.to_owned());
        }
        if let Some(e) = line.strip_prefix("ekms: listening on ") {
            endpoint = Some(e.to_owned());
        }
        if endpoint.is_some() && metrics.is_some() {
            break;
        }
    }
    let (endpoint, metrics) = (endpoint.unwrap(), metrics.unwrap());
    let (access, secret) = read_credentials(&dir.path().join("data/credentials"));
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                access, secret, None, None, "test",
            ))
            .build(),
    );
    let key = common::new_key(&kms).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = kms
            .encrypt()
            .key_id(&key)
            .plaintext(aws_sdk_kms::primitives::Blob::new(b"m".to_vec()))
            .send()
            .await
            .unwrap();
        ids.push(out.request_id().unwrap().to_owned());
    }
    let err = kms
        .describe_key()
        .key_id("alias/none")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NotFoundException"));

    let text = reqwest_get(&metrics).await;
    assert_eq!(
        sample(
            &text,
            "ekms_requests_total{operation=\"Encrypt\",outcome=\"ok\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "ekms_requests_total{operation=\"DescribeKey\",outcome=\"NotFoundException\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "ekms_request_duration_seconds_count{operation=\"Encrypt\"}"
        ),
        Some(3.0)
    );
    assert!(sample(&text, "ekms_enclave_round_trip_seconds_count").unwrap() >= 5.0);
    assert!(sample(&text, "ekms_store_write_seconds_count").unwrap() >= 1.0);
    assert_eq!(sample(&text, "ekms_requests_in_flight"), Some(0.0));
    assert_eq!(
        sample(&text, "ekms_custody_state{state=\"unsealed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ekms_custody_state{state=\"sealed\"}"),
        Some(0.0)
    );
    assert!(sample(&text, "ekms_audit_lag_records").is_some(), "{text}");

    // Every log line is a JSON object; the request's line carries its id.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    let mut answered = Vec::new();
    for line in logged.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["fields"]["message"] == "answered" {
            answered.push(v["span"]["id"].as_str().unwrap().to_owned());
        }
    }
    for id in &ids {
        assert!(answered.contains(id), "{id} not in {answered:?}");
    }
    assert!(
        !logged.contains("\u{1b}["),
        "no colour codes in a redirected log"
    );
}

/// GET `url` with a plain HTTP/1.1 request (no client dependency for one call).
async fn reqwest_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}
