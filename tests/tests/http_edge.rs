//! The HTTP edge with raw requests: AWS error shape and headers, unsigned requests, unknown
//! operations, oversized and malformed bodies, and a tampering host that alters a signed body.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_push_string
)] // test code

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::SystemTime,
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
