//! The HTTP edge with raw requests: AWS error shape and headers, unsigned requests, unknown
//! operations, oversized and malformed bodies, and a tampering host that alters a signed body;
//! and under attack: slowloris, half-sent bodies and an idle flood, each met by the edge's
//! timeouts, body budget and connection cap while a real client is served.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_push_string
)] // test code

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use ekms_tests::Appliance;

struct Resp {
    status: u16,
    headers: String,
    body: serde_json::Value,
}

fn send(endpoint: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
    let hostport = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(hostport).unwrap();
    let mut req = format!(
        "POST / HTTP/1.1\r\nhost: {hostport}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer before reading an oversized body; ignore a reset while writing.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Resp {
        status,
        headers: head.to_lowercase(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

fn signed_headers(app: &Appliance, op: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let hostport = app.endpoint.trim_start_matches("http://").to_owned();
    let identity = Credentials::new(&app.access_key, &app.secret_key, None, None, "t").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let target = format!("TrentService.{op}");
    let base = [
        ("host", hostport.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let signable = SignableRequest::new(
        "POST",
        format!("{}/", app.endpoint),
        base.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut out: Vec<(&'static str, String)> = vec![
        ("content-type", "application/x-amz-json-1.1".into()),
        ("x-amz-target", target.clone()),
    ];
    for (k, v) in instructions.headers() {
        let k: &'static str = match k {
            "authorization" => "authorization",
            "x-amz-date" => "x-amz-date",
            _ => continue,
        };
        out.push((k, v.to_owned()));
    }
    out
}

#[test]
fn raw_requests_get_aws_shaped_errors() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    // Its log goes to a pipe here, not a terminal: plain text, no colour codes (serve.log).
    assert!(
        !app.output().contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&app.output())
    );
    let json = |op: &str| {
        vec![
            ("content-type", "application/x-amz-json-1.1".to_owned()),
            ("x-amz-target", format!("TrentService.{op}")),
        ]
    };

    // Unsigned.
    let r = send(&app.endpoint, &json("ListKeys"), b"{}");
    assert_eq!(r.status, 400);
    assert_eq!(r.body["__type"], "MissingAuthenticationTokenException");
    assert!(
        r.headers
            .contains("x-amzn-errortype: missingauthenticationtokenexception")
    );
    assert!(
        r.headers
            .contains("content-type: application/x-amz-json-1.1")
    );

    // Unknown operation, no target.
    assert_eq!(
        send(&app.endpoint, &json("Frobnicate"), b"{}").body["__type"],
        "UnknownOperationException"
    );
    assert_eq!(
        send(&app.endpoint, &[], b"{}").body["__type"],
        "UnknownOperationException"
    );

    // Oversized body (over the 384 KiB cap, which fits AWS's largest request): refused before
    // it reaches the enclave.
    let big = vec![b'a'; 400 * 1024];
    let r = send(&app.endpoint, &json("Encrypt"), &big);
    assert_eq!(r.status, 400);
    assert_eq!(r.body["__type"], "ValidationException");

    // Signed but malformed JSON: SerializationException, and the message does not echo the body.
    let body = br#"{"KeyId": "x", "Plaintext": "c2VjcmV0"#;
    let r = send(&app.endpoint, &signed_headers(&app, "Encrypt", body), body);
    assert_eq!(r.body["__type"], "SerializationException");
    assert!(!r.body["message"].as_str().unwrap().contains("c2VjcmV0"));

    // A signed request works; the same signature over an altered body does not.
    let body = br#"{"NumberOfBytes": 16}"#;
    let headers = signed_headers(&app, "GenerateRandom", body);
    let r = send(&app.endpoint, &headers, body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.headers.contains("x-amzn-requestid"));
    let r = send(&app.endpoint, &headers, br#"{"NumberOfBytes": 17}"#);
    assert_eq!(r.body["__type"], "InvalidSignatureException");

    // Replayed as another operation (the host rewrites X-Amz-Target): refused.
    let body = b"{}";
    let mut headers = signed_headers(&app, "ListKeys", body);
    for (k, v) in &mut headers {
        if *k == "x-amz-target" {
            *v = "TrentService.CreateKey".into();
        }
    }
    let r = send(&app.endpoint, &headers, body);
    assert_eq!(r.body["__type"], "InvalidSignatureException");
}

// ---- The edge under attack: timeouts, caps and the body budget (`ekms serve` edge flags). ----

/// The `ekms serve` process's resident memory (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A real client (aws-sdk-kms, retries off: every call must succeed at its first try) calling
/// Encrypt and Decrypt until `stop`; how many round trips it made. Panics on any failure.
fn real_client(
    app: &Appliance,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<usize, String>> {
    let kms = aws_sdk_kms::Client::from_conf(
        common::admin(app)
            .config()
            .to_builder()
            .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
            .build(),
    );
    tokio::spawn(async move {
        let key = common::new_key(&kms).await;
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let blob = kms
                .encrypt()
                .key_id(&key)
                .plaintext(aws_sdk_kms::primitives::Blob::new(b"served".to_vec()))
                .send()
                .await
                .map_err(|e| format!("Encrypt failed during the attack: {e:?}"))?
                .ciphertext_blob
                .unwrap();
            let plain = kms
                .decrypt()
                .ciphertext_blob(blob)
                .send()
                .await
                .map_err(|e| format!("Decrypt failed during the attack: {e:?}"))?;
            assert_eq!(plain.plaintext.unwrap().as_ref(), b"served");
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(n)
    })
}

/// How a hostile connection ended: when the server closed it (from its start) and the status
/// of an answer it got first, if any.
#[derive(Debug)]
struct Ended {
    after: Duration,
    status: Option<u16>,
}

/// Reads `stream` until the server closes it (or `limit` passes: `None`).
async fn until_closed(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    start: Instant,
    limit: Duration,
) -> Option<Ended> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), reader.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|s| s.parse().ok());
    Some(Ended {
        after: start.elapsed(),
        status,
    })
}

fn hostport(app: &Appliance) -> String {
    app.endpoint.trim_start_matches("http://").to_owned()
}

/// Slowloris: connections that trickle a request head, a byte every 200 ms, are closed by the
/// header timeout (1 s here; nothing closed them before), while a real client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start_with(dir.path(), &["--header-timeout", "1s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let client = real_client(&app, Arc::clone(&stop));
    let mut attack = Vec::new();
    for _ in 0..300 {
        let s = tokio::net::TcpStream::connect(hostport(&app))
            .await
            .unwrap();
        let start = Instant::now();
        let (reader, mut writer) = s.into_split();
        tokio::spawn(async move {
            let _ = writer
                .write_all(b"POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: T")
                .await;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if writer.write_all(b"r").await.is_err() {
                    return;
                }
            }
        });
        attack.push(tokio::spawn(until_closed(
            reader,
            start,
            Duration::from_secs(10),
        )));
    }
    let mut ended = Vec::new();
    for a in attack {
        ended.push(
            a.await
                .unwrap()
                .expect("a trickling connection was never closed"),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let served = client.await.unwrap().unwrap();
    let longest = ended.iter().map(|e| e.after).max().unwrap();
    let shortest = ended.iter().map(|e| e.after).min().unwrap();
    eprintln!(
        "slowloris: 300 connections closed after {shortest:?}..{longest:?}; {served} round trips served"
    );
    // Cut by the header timeout: not before it, and not long after it.
    assert!(shortest >= Duration::from_millis(900), "{shortest:?}");
    assert!(longest < Duration::from_secs(5), "{longest:?}");
    assert!(served > 0);
}

/// 400 bodies sent to 250 of 256 KiB and stopped: a body budget of 16 MiB refuses those past
/// it at once (503), the rest are cut by the body timeout (408), the host's memory stays within
/// a stated bound during the flood and comes back after it, and a real client is served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_bodies_are_cut_and_their_memory_is_bounded_and_returned() {
    use tokio::io::AsyncWriteExt as _;
    const BUDGET_MIB: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start_with(
        dir.path(),
        &["--body-timeout", "3s", "--max-body-memory", "16MiB"],
    );
    let pid = app.pid().unwrap();
    // Warm up (allocator arenas, the enclave pool, the SDK's connections) before the baseline.
    let stop = Arc::new(AtomicBool::new(false));
    let client = real_client(&app, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = rss_kib(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampling = {
        let (peak, stop) = (Arc::clone(&peak), Arc::new(AtomicBool::new(false)));
        let s = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        (task, stop)
    };
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amz-target: TrentService.Encrypt\r\ncontent-length: {}\r\n\r\n",
        hostport(&app),
        256 * 1024
    );
    let body = vec![b'a'; 250 * 1024];
    let mut attack = Vec::new();
    for _ in 0..400 {
        let s = tokio::net::TcpStream::connect(hostport(&app))
            .await
            .unwrap();
        let start = Instant::now();
        let (reader, mut writer) = s.into_split();
        let (head, body) = (head.clone(), body.clone());
        tokio::spawn(async move {
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(&body).await;
            // Then nothing: hold the connection open.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(writer);
        });
        attack.push(tokio::spawn(until_closed(
            reader,
            start,
            Duration::from_secs(15),
        )));
    }
    let mut ended = Vec::new();
    for a in attack {
        ended.push(a.await.unwrap().expect("a half-sent body was never cut"));
    }
    let during = peak.load(Ordering::Relaxed);
    // After the flood: memory comes back (within jemalloc's decay time, 10 s).
    let mut after = rss_kib(pid);
    for _ in 0..400 {
        if after < baseline + 8 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss_kib(pid);
    }
    sampling.1.store(true, Ordering::Relaxed);
    sampling.0.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let served = client.await.unwrap().unwrap();
    let timed_out: Vec<_> = ended.iter().filter(|e| e.status == Some(408)).collect();
    let refused = ended.iter().filter(|e| e.status == Some(503)).count();
    eprintln!(
        "half-sent bodies: RSS {} MiB before, {} MiB at most during, {} MiB after; {} cut by \
         the body timeout (408), {refused} refused (503), {served} round trips served",
        baseline / 1024,
        during / 1024,
        after / 1024,
        timed_out.len()
    );
    // The bodies that fit the budget were read, then cut at the body timeout (3 s).
    assert!(!timed_out.is_empty());
    for e in &timed_out {
        assert!(
            e.after >= Duration::from_millis(2900) && e.after < Duration::from_secs(10),
            "{e:?}"
        );
    }
    // The stated bound (README, "Memory bound"): 1.25 x the budget + 96 KiB per connection,
    // here 20 + 37.5 MiB. Without the edge the same flood held 107 MiB, for good.
    let bound = BUDGET_MIB * 1024 * 5 / 4 + 400 * 96;
    assert!(
        during - baseline < bound,
        "RSS grew by {} KiB during the flood (bound {bound} KiB)",
        during - baseline
    );
    assert!(
        after < baseline + 8 * 1024,
        "RSS stayed {} KiB above its baseline after the flood",
        after - baseline
    );
    assert!(served > 0);
}

/// An idle flood up to the connection cap: the next connection gets a 503 at once (AWS shape,
/// ThrottlingException) and is closed; the idle ones are closed after the idle timeout, and
/// then a new client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_meets_the_cap_with_a_503_and_times_out() {
    use tokio::io::AsyncWriteExt as _;
    const CAP: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start_with(
        dir.path(),
        &["--max-connections", "40", "--idle-timeout", "2s"],
    );
    let mut idle = Vec::new();
    for _ in 0..CAP {
        let s = tokio::net::TcpStream::connect(hostport(&app))
            .await
            .unwrap();
        let (mut reader, mut writer) = s.into_split();
        writer
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Its answer, then the connection stays open, idle (keep-alive).
        let mut buf = [0u8; 1024];
        let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
            .await
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        idle.push((reader, writer, Instant::now()));
    }
    // One more: a 503 at once, in the AWS shape, and the connection closes.
    let start = Instant::now();
    let r = tokio::task::spawn_blocking({
        let ep = app.endpoint.clone();
        move || {
            send(
                &ep,
                &[("x-amz-target", "TrentService.ListKeys".into())],
                b"{}",
            )
        }
    })
    .await
    .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.body["__type"], "ThrottlingException");
    assert!(
        r.headers.contains("x-amzn-errortype: throttlingexception"),
        "{}",
        r.headers
    );
    assert!(r.headers.contains("connection: close"), "{}", r.headers);
    // The idle connections are closed after the idle timeout (2 s).
    let mut closes = Vec::new();
    for (reader, writer, since) in idle {
        let ended = until_closed(reader, since, Duration::from_secs(10))
            .await
            .expect("an idle connection was never closed");
        drop(writer);
        closes.push(ended.after);
    }
    let (min, max) = (closes.iter().min().unwrap(), closes.iter().max().unwrap());
    eprintln!("idle flood: {CAP} idle connections closed after {min:?}..{max:?}");
    assert!(*min >= Duration::from_millis(1900), "{min:?}");
    assert!(*max < Duration::from_secs(6), "{max:?}");
    // A new client is served.
    let kms = common::admin(&app);
    assert!(kms.list_keys().send().await.is_ok());
}

/// `ekms serve --config FILE`: the file's flags apply, the command line's win, and a bad file
/// stops the start with an error that names the key.
#[test]
fn serve_takes_its_flags_from_a_config_file_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ekms.toml");
    // `listen` is overridden by the harness's --listen 127.0.0.1:0 (port 1 could not be bound),
    // `max-connections` by the flag below; `header-timeout` applies.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nheader-timeout = \"1s\"\nmax-connections = 1\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let app = Appliance::start_with(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--max-connections",
            "3",
        ],
    );
    assert!(!app.endpoint.ends_with(":1"), "{}", app.endpoint);
    // Two connections held open and a third served: the cap is 3, not the file's 1.
    let start = Instant::now();
    let held: Vec<_> = (0..2)
        .map(|_| TcpStream::connect(hostport(&app)).unwrap())
        .collect();
    let r = send(
        &app.endpoint,
        &[("x-amz-target", "TrentService.ListKeys".into())],
        b"{}",
    );
    assert_eq!(r.body["__type"], "MissingAuthenticationTokenException");
    // The file's header timeout (1 s) closes the two that sent nothing.
    for mut s in held {
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    }
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "{after:?}"
    );
    // A bad value: no start, and the error names the file's key.
    std::fs::write(&config, "max-connections = \"many\"\n").unwrap();
    let out = std::process::Command::new(ekms_tests::bin_dir().join("ekms"))
        .args(["serve", "--sim", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key 'max-connections'") && err.contains("many"),
        "{err}"
    );
}
