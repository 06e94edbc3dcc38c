//! What one call costs the enclave, measured where nothing else runs: the frame decoded, the
//! call handled (signature, records, state view, operation, audit record) and the reply
//! encoded, as `crate::server` does for every request. Ignored by default; `ekms-bench`
//! measures the appliance as a whole. Run it (release, or under callgrind for exact
//! instruction counts) with:
//!
//! ```sh
//! cargo test --release -p ekms-enclave --lib cost_of_an_encrypt -- --ignored --nocapture
//! ```

use std::time::{Instant, SystemTime};

use ekms_wire::{
    frame,
    msg::{EnclaveResponse, HostRequest, KmsCall, KmsOutcome},
};
use serde_json::json;

use super::tests::Env;
use crate::auth::tests::{SECRET, signed};

/// Calls measured (`EKMS_COST_CALLS` to change).
const CALLS: usize = 20_000;

#[test]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
fn cost_of_an_encrypt() {
    let calls = std::env::var("EKMS_COST_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CALLS);
    let mut env = Env::new();
    let key = env.create();
    let body = json!({"KeyId": key, "Plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="});
    let http = signed("Encrypt", &body.to_string(), SECRET, SystemTime::now());
    let request = HostRequest::Kms(Box::new(KmsCall {
        http,
        principal: env.principals.first().cloned(),
        keys: env.keys.clone(),
        ..KmsCall::default()
    }));
    let framed = frame::encode(7, &request).unwrap();
    let mut reply_bytes = 0;
    let started = Instant::now();
    for i in 0..calls {
        let env_ = frame::decode::<HostRequest>(framed.get(4..).unwrap()).unwrap();
        let response = env.core.handle(env_.msg);
        assert!(
            matches!(response, EnclaveResponse::Kms(KmsOutcome::Ok { .. })),
            "{response:?}"
        );
        reply_bytes += frame::encode(env_.id, &response).unwrap().len();
        // The host collects audit records every few tens of milliseconds.
        if i % 256 == 255 {
            env.core.handle(HostRequest::AuditDrain);
        }
    }
    let elapsed = started.elapsed();
    let per_call = elapsed.as_secs_f64() * 1e6 / f64::from(u32::try_from(calls).unwrap());
    println!(
        "{calls} Encrypts in {:.3} s: {per_call:.2} µs each (request frame {} bytes, reply {} bytes)",
        elapsed.as_secs_f64(),
        framed.len(),
        reply_bytes / calls.max(1)
    );
}
