//! PCRs recomputed independently from the Nitro definition: PCRn = SHA-384(0^48 || SHA-384(data)),
//! where PCR1's data is kernel || kernel cmdline || bootstrap ramdisk, PCR2's the application
//! ramdisk, PCR0's all of them, and PCR8's the signing certificate in DER.

mod common;

use common::{Fixture, tiny_static_elf};
use ekms_eif_build::{
    SigningFiles, application_ramdisk, bootstrap_ramdisk, build, default_cmd, measure,
};
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509, X509NameBuilder};
use sha2::{Digest, Sha384};

fn extend(data: &[u8]) -> String {
    let mut h = Sha384::new();
    h.update([0_u8; 48]);
    h.update(Sha384::digest(data));
    hex::encode(h.finalize())
}

#[test]
fn pcrs_match_an_independent_computation() {
    let f = Fixture::new();
    let m = f.build("x.eif").measurements;

    let kernel = b"STAND-IN KERNEL".to_vec();
    let cmdline = b"reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on".to_vec();
    let bootstrap = bootstrap_ramdisk(
        b"STAND-IN NITRO INIT (not executable)".to_vec(),
        b"STAND-IN NSM MODULE".to_vec(),
    )
    .to_cpio()
    .unwrap();
    let app = application_ramdisk(
        "ekms-enclave",
        tiny_static_elf(0),
        &default_cmd("ekms-enclave"),
        &[],
    )
    .to_cpio()
    .unwrap();

    assert_eq!(
        m.pcr1,
        extend(&[kernel.clone(), cmdline.clone(), bootstrap.clone()].concat())
    );
    assert_eq!(m.pcr2, extend(&app));
    assert_eq!(m.pcr0, extend(&[kernel, cmdline, bootstrap, app].concat()));
}

/// A self-signed EC P-384 certificate and key, as nitro-cli's signing documentation describes.
#[allow(clippy::unwrap_used, reason = "test fixture")]
fn signing_pair(dir: &std::path::Path) -> (SigningFiles, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "ekms-eif test signer")
        .unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha384()).unwrap();
    let cert = cert.build();
    let cert_path = dir.join("signer.pem");
    let key_path = dir.join("signer.key");
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (
        SigningFiles {
            certificate: cert_path,
            private_key: key_path,
        },
        cert.to_der().unwrap(),
    )
}

#[test]
fn signed_image_has_pcr8_of_the_certificate() {
    let f = Fixture::new();
    let unsigned = f.build("unsigned.eif").measurements;
    let (signing, der) = signing_pair(f.dir.path());
    let mut opts = f.options("signed.eif");
    opts.signing = Some(signing.clone());
    let signed = build(&opts).unwrap().measurements;

    assert_eq!(signed.pcr8.as_deref(), Some(extend(&der).as_str()));
    // Signing adds PCR8 and leaves PCR0-2 alone.
    assert_eq!(
        (&signed.pcr0, &signed.pcr1, &signed.pcr2),
        (&unsigned.pcr0, &unsigned.pcr1, &unsigned.pcr2)
    );
    assert_eq!(measure(&f.path("signed.eif")).unwrap(), signed);
    assert!(signed.to_json().unwrap().contains("\"PCR8\""));

    // ECDSA signatures are randomised, so a signed rebuild differs in bytes but not in PCRs.
    opts.output = f.path("signed2.eif");
    assert_eq!(build(&opts).unwrap().measurements, signed);
}

#[test]
fn mismatched_or_garbage_signing_input_is_refused() {
    let f = Fixture::new();
    let (signing, _) = signing_pair(f.dir.path());
    std::fs::write(&signing.private_key, b"-----BEGIN PRIVATE KEY-----\nnope\n").unwrap();
    let mut opts = f.options("x.eif");
    opts.signing = Some(signing);
    let err = build(&opts).unwrap_err();
    assert!(matches!(err, ekms_eif_build::EifError::Signing(_)), "{err}");
    assert!(!f.path("x.eif").exists());
}
