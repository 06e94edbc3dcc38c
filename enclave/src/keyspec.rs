//! What AWS KMS allows for each key spec: its key usages and the algorithms of each usage. The
//! one table of this knowledge; operations and `DescribeKey` read it.

/// A key spec and what it allows.
#[derive(Debug)]
pub struct Spec {
    /// AWS's name (`ECC_NIST_P256`).
    pub name: &'static str,
    /// The kind of key.
    pub family: Family,
    /// Key usages AWS accepts for it (only `SYMMETRIC_DEFAULT` has a default,
    /// `ENCRYPT_DECRYPT`).
    pub usages: &'static [&'static str],
    /// `SigningAlgorithms` of a `SIGN_VERIFY` key.
    pub signing: &'static [&'static str],
    /// `EncryptionAlgorithms` of an `ENCRYPT_DECRYPT` key.
    pub encryption: &'static [&'static str],
    /// `MacAlgorithms` of a `GENERATE_VERIFY_MAC` key.
    pub mac: &'static [&'static str],
    /// `KeyAgreementAlgorithms` of a `KEY_AGREEMENT` key.
    pub agreement: &'static [&'static str],
    /// The usages this appliance makes keys for so far (others get
    /// `UnsupportedOperationException`).
    pub supported_usages: &'static [&'static str],
}

/// The kind of key behind a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// AES-256-GCM.
    Symmetric,
    /// RSA of this many bits.
    Rsa(u32),
    /// An elliptic curve (ECDSA, ECDH).
    Ecc(Curve),
    /// Ed25519.
    Ed25519,
    /// ML-DSA of this parameter set (44, 65, 87).
    MlDsa(u16),
    /// HMAC with a key of this many bytes.
    Hmac(usize),
    /// SM2 (China Regions only).
    Sm2,
}

/// An elliptic curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// NIST P-521.
    P521,
    /// secp256k1.
    K256,
}

const RSA_SIGNING: &[&str] = &[
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
];
const RSA_ENCRYPTION: &[&str] = &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"];
const SIGN: &[&str] = &["SIGN_VERIFY"];
const NONE: &[&str] = &[];

/// Every key spec AWS KMS has, in the order of its validation messages (the recorded order for
/// the older specs, the newer ones after them).
pub static SPECS: &[Spec] = &[
    Spec {
        name: "RSA_2048",
        family: Family::Rsa(2048),
        usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        signing: RSA_SIGNING,
        encryption: RSA_ENCRYPTION,
        mac: NONE,
        agreement: NONE,
        supported_usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
    },
    ecc("ECC_NIST_P384", Curve::P384, true),
    ecc("ECC_NIST_P256", Curve::P256, true),
    ecc("ECC_NIST_P521", Curve::P521, true),
    hmac("HMAC_384", 48),
    Spec {
        name: "RSA_3072",
        family: Family::Rsa(3072),
        usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        signing: RSA_SIGNING,
        encryption: RSA_ENCRYPTION,
        mac: NONE,
        agreement: NONE,
        supported_usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
    },
    ecc("ECC_SECG_P256K1", Curve::K256, false),
    Spec {
        name: "RSA_4096",
        family: Family::Rsa(4096),
        usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        signing: RSA_SIGNING,
        encryption: RSA_ENCRYPTION,
        mac: NONE,
        agreement: NONE,
        supported_usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
    },
    Spec {
        name: "SYMMETRIC_DEFAULT",
        family: Family::Symmetric,
        usages: &["ENCRYPT_DECRYPT"],
        signing: NONE,
        encryption: &["SYMMETRIC_DEFAULT"],
        mac: NONE,
        agreement: NONE,
        supported_usages: &["ENCRYPT_DECRYPT"],
    },
    hmac("HMAC_256", 32),
    hmac("HMAC_224", 28),
    hmac("HMAC_512", 64),
    Spec {
        name: "ECC_NIST_EDWARDS25519",
        family: Family::Ed25519,
        usages: SIGN,
        signing: &["ED25519_SHA_512", "ED25519_PH_SHA_512"],
        encryption: NONE,
        mac: NONE,
        agreement: NONE,
        supported_usages: SIGN,
    },
    ml_dsa("ML_DSA_44", 44),
    ml_dsa("ML_DSA_65", 65),
    ml_dsa("ML_DSA_87", 87),
    Spec {
        name: "SM2",
        family: Family::Sm2,
        usages: &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "KEY_AGREEMENT"],
        signing: &["SM2DSA"],
        encryption: &["SM2PKE"],
        mac: NONE,
        agreement: &["ECDH"],
        supported_usages: NONE,
    },
];

const fn ecc(name: &'static str, curve: Curve, agreement: bool) -> Spec {
    Spec {
        name,
        family: Family::Ecc(curve),
        usages: if agreement {
            &["SIGN_VERIFY", "KEY_AGREEMENT"]
        } else {
            SIGN
        },
        signing: match curve {
            Curve::P256 | Curve::K256 => &["ECDSA_SHA_256"],
            Curve::P384 => &["ECDSA_SHA_384"],
            Curve::P521 => &["ECDSA_SHA_512"],
        },
        encryption: NONE,
        mac: NONE,
        agreement: if agreement { &["ECDH"] } else { NONE },
        supported_usages: if agreement {
            &["SIGN_VERIFY", "KEY_AGREEMENT"]
        } else {
            SIGN
        },
    }
}

const fn hmac(name: &'static str, bytes: usize) -> Spec {
    Spec {
        name,
        family: Family::Hmac(bytes),
        usages: &["GENERATE_VERIFY_MAC"],
        signing: NONE,
        encryption: NONE,
        mac: match bytes {
            28 => &["HMAC_SHA_224"],
            32 => &["HMAC_SHA_256"],
            48 => &["HMAC_SHA_384"],
            _ => &["HMAC_SHA_512"],
        },
        agreement: NONE,
        supported_usages: &["GENERATE_VERIFY_MAC"],
    }
}

const fn ml_dsa(name: &'static str, level: u16) -> Spec {
    Spec {
        name,
        family: Family::MlDsa(level),
        usages: SIGN,
        signing: &["ML_DSA_SHAKE_256"],
        encryption: NONE,
        mac: NONE,
        agreement: NONE,
        supported_usages: SIGN,
    }
}

impl Spec {
    /// The algorithms of `usage` (for `DescribeKey`'s lists).
    #[must_use]
    pub fn algorithms(&self, usage: &str) -> &'static [&'static str] {
        match usage {
            "SIGN_VERIFY" => self.signing,
            "ENCRYPT_DECRYPT" => self.encryption,
            "GENERATE_VERIFY_MAC" => self.mac,
            "KEY_AGREEMENT" => self.agreement,
            _ => NONE,
        }
    }
}

/// The spec named `name`.
#[must_use]
pub fn find(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Every spec name, in message order.
#[must_use]
pub fn names() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.name).collect()
}

/// Every signing algorithm AWS has, in message order.
pub const SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];

/// Every MAC algorithm, in AWS's message order.
pub const MAC_ALGORITHMS: &[&str] = &[
    "HMAC_SHA_384",
    "HMAC_SHA_256",
    "HMAC_SHA_224",
    "HMAC_SHA_512",
];

/// Digest length in bytes of a signing algorithm's hash (for `MessageType` `DIGEST`).
#[must_use]
pub fn digest_len(algorithm: &str) -> Option<usize> {
    match algorithm {
        a if a.ends_with("_256") => Some(32),
        a if a.ends_with("_384") => Some(48),
        a if a.ends_with("_512") => Some(64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_is_listed_once_and_its_algorithms_fit_its_usages() {
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SPECS.len());
        for s in SPECS {
            for u in s.supported_usages {
                assert!(s.usages.contains(u), "{} {u}", s.name);
            }
            for a in s.signing {
                assert!(SIGNING_ALGORITHMS.contains(a), "{a}");
            }
            for a in s.mac {
                assert!(MAC_ALGORITHMS.contains(a), "{a}");
            }
            assert!(!s.usages.is_empty());
        }
        assert_eq!(find("HMAC_224").unwrap().family, Family::Hmac(28));
        assert_eq!(find("ECC_NIST_P521").unwrap().signing, &["ECDSA_SHA_512"]);
        assert!(find("ECC_SECG_P256K1").unwrap().agreement.is_empty());
        assert_eq!(digest_len("ECDSA_SHA_384"), Some(48));
    }
}
