//! STS GetCallerIdentity: the principal whose secret verified the signature, in STS's XML.

use std::time::SystemTime;

use ekms_wire::msg::KmsErrorCode;
use serde_json::Value;

use super::{Env, OpError};
use crate::auth::tests::{AKID, SECRET, signed, signed_sts};

const GET: &str = "Action=GetCallerIdentity&Version=2011-06-15";

fn xml(r: Result<Value, OpError>) -> String {
    match r {
        Ok(Value::String(s)) => s,
        other => panic!("expected XML, got {other:?}"),
    }
}

fn code(r: Result<Value, OpError>) -> KmsErrorCode {
    match r {
        Err(OpError::Kms(e)) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn get_caller_identity_names_the_verified_principal() {
    let mut env = Env::new();
    let now = SystemTime::now();
    let out = xml(env.run(signed_sts(AKID, GET, SECRET, now), now));
    assert!(
        out.contains("<Arn>arn:aws:iam::111122223333:user/admin</Arn>"),
        "{out}"
    );
    assert!(out.contains("<UserId>AIDATEST</UserId>"), "{out}");
    assert!(out.contains("<Account>111122223333</Account>"), "{out}");
    assert!(out.starts_with(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    // The same request again is fine: it changes nothing.
    xml(env.run(signed_sts(AKID, GET, SECRET, now), now));
}

#[test]
fn other_actions_wrong_secrets_and_crossed_protocols_are_refused() {
    let mut env = Env::new();
    let now = SystemTime::now();
    let assume =
        "Action=AssumeRole&RoleArn=arn:aws:iam::1:role/x&RoleSessionName=s&Version=2011-06-15";
    assert_eq!(
        code(env.run(signed_sts(AKID, assume, SECRET, now), now)),
        KmsErrorCode::UnsupportedOperationException
    );
    assert_eq!(
        code(env.run(signed_sts(AKID, GET, &"x".repeat(40), now), now)),
        KmsErrorCode::InvalidSignatureException
    );
    // A KMS request whose X-Amz-Target the host strips is checked as an STS request: its
    // signature (scoped to `kms`) does not verify.
    let mut kms = signed("ListKeys", "{}", SECRET, now);
    kms.headers.retain(|(k, _)| k != "x-amz-target");
    assert_eq!(
        code(env.run(kms, now)),
        KmsErrorCode::InvalidSignatureException
    );
    // An STS request given an X-Amz-Target by the host is checked as KMS: the header is not
    // signed.
    let mut sts = signed_sts(AKID, GET, SECRET, now);
    sts.headers.push((
        "x-amz-target".into(),
        serde_bytes::ByteBuf::from(b"TrentService.CreateKey".to_vec()),
    ));
    assert!(env.run(sts, now).is_err());
}
