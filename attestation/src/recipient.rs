//! `CiphertextForRecipient`: what AWS KMS returns to an attested enclave instead of a plaintext.
//!
//! A CMS `EnvelopedData` (RFC 5652) in a `ContentInfo`, DER: one `KeyTransRecipientInfo`
//! (version 2, `subjectKeyIdentifier`) whose key is wrapped with RSAES-OAEP (SHA-256, MGF1
//! SHA-256; RFC 4055 parameters) to the RSA public key of the recipient's attestation document,
//! and the content encrypted with AES-256-CBC (PKCS #7 padding, random IV). That is the shape the
//! AWS Nitro Enclaves SDK's CMS reader expects (`EnvelopedData` and recipient version 2, OAEP
//! SHA-256, AES-256-CBC) and `openssl cms -decrypt -inkey KEY` opens.
//!
//! The ASN.1 types are RustCrypto's `cms` crate's; every cryptographic step is aws-lc-rs's.

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey,
};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode as _, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The smallest RSA key a recipient may have (AWS: "RSA2048" at least).
pub const MIN_RECIPIENT_RSA_BITS: usize = 2048;

/// `id-envelopedData` (RFC 5652).
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// `id-data` (RFC 5652).
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-RSAES-OAEP` (RFC 4055).
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// `id-mgf1` (RFC 4055).
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// `id-sha256` (RFC 4055 / NIST).
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `id-aes256-CBC` (RFC 3565).
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// AES-256 key and CBC IV lengths.
const CEK_LEN: usize = 32;
const IV_LEN: usize = 16;

/// `RSAES-OAEP-params` (RFC 4055 §4.1) with SHA-256 and MGF1-SHA-256 (the label is the default,
/// empty, so `pSourceFunc` is absent).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct RsaesOaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen: AlgorithmIdentifierOwned,
}

fn err(reason: &'static str) -> Error {
    Error::Recipient(reason)
}

fn sha256_id() -> AlgorithmIdentifierOwned {
    // RFC 4055 §2.1: SHA-2 parameters absent (receivers accept absent or NULL).
    AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: None,
    }
}

fn oaep_sha256_id() -> Result<AlgorithmIdentifierOwned> {
    let params = RsaesOaepParams {
        hash: sha256_id(),
        mask_gen: AlgorithmIdentifierOwned {
            oid: ID_MGF1,
            parameters: Some(Any::encode_from(&sha256_id()).map_err(|_| err("encoding"))?),
        },
    };
    Ok(AlgorithmIdentifierOwned {
        oid: ID_RSAES_OAEP,
        parameters: Some(Any::encode_from(&params).map_err(|_| err("encoding"))?),
    })
}

/// The RSA public key of a recipient (DER `SubjectPublicKeyInfo`, as an attestation document
/// carries it), if it is one AWS KMS would encrypt to: RSA, at least 2048 bits.
///
/// # Errors
/// [`Error::Recipient`] naming what is wrong (public text).
pub fn recipient_key(spki_der: &[u8]) -> Result<PublicEncryptingKey> {
    // aws-lc-rs itself refuses RSA keys under 2048 bits, so one message covers every refusal.
    const NOT_USABLE: &str =
        "its public key is not an RSA key of 2048 bits or more as a DER SubjectPublicKeyInfo";
    let key = PublicEncryptingKey::from_der(spki_der).map_err(|_| err(NOT_USABLE))?;
    if key.key_size_bits() < MIN_RECIPIENT_RSA_BITS {
        return Err(err(NOT_USABLE));
    }
    Ok(key)
}

/// The subject key identifier this module puts in the recipient info: the leftmost 160 bits of
/// the SHA-256 of the `subjectPublicKey` bits (RFC 7093 §2, method 1).
fn key_identifier(spki_der: &[u8]) -> Result<OctetString> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|_| err("bad public key"))?;
    let bits = spki.subject_public_key.raw_bytes();
    let d = digest(&SHA256, bits);
    OctetString::new(d.as_ref().get(..20).unwrap_or_default()).map_err(|_| err("encoding"))
}

/// Encrypts `plaintext` to the recipient's RSA public key (DER `SubjectPublicKeyInfo`): the DER
/// bytes of a CMS `ContentInfo` holding an `EnvelopedData`.
///
/// # Errors
/// [`Error::Recipient`] if the key is not an acceptable RSA key; [`Error::Crypto`] if a
/// cryptographic step fails.
pub fn seal(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let public = OaepPublicEncryptingKey::new(recipient_key(spki_der)?)
        .map_err(|_| Error::Crypto("RSA-OAEP key"))?;
    let mut cek = Zeroizing::new([0u8; CEK_LEN]);
    rng.fill(cek.as_mut_slice())
        .map_err(|_| Error::Crypto("random"))?;
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv).map_err(|_| Error::Crypto("random"))?;
    let content_key = PaddedBlockEncryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, cek.as_slice()).map_err(|_| Error::Crypto("AES key"))?,
    )
    .map_err(|_| Error::Crypto("AES-CBC"))?;
    // Room for the padding up front: the buffer never moves, so no copy of the plaintext is
    // left behind in freed memory (it is encrypted in place).
    let mut content = Vec::with_capacity(plaintext.len() + IV_LEN);
    content.extend_from_slice(plaintext);
    content_key
        .less_safe_encrypt(
            &mut content,
            aws_lc_rs::cipher::EncryptionContext::Iv128(iv.into()),
        )
        .map_err(|_| Error::Crypto("AES-CBC"))?;
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped_len = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, cek.as_slice(), &mut wrapped, None)
        .map_err(|_| Error::Crypto("RSA-OAEP"))?
        .len();
    wrapped.truncate(wrapped_len);

    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V2,
        rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(key_identifier(
            spki_der,
        )?)),
        key_enc_alg: oaep_sha256_id()?,
        enc_key: OctetString::new(wrapped).map_err(|_| err("encoding"))?,
    };
    let recipients =
        RecipientInfos::try_from(vec![RecipientInfo::Ktri(ktri)]).map_err(|_| err("encoding"))?;
    let content_alg = AlgorithmIdentifierOwned {
        oid: ID_AES256_CBC,
        parameters: Some(
            Any::encode_from(&OctetString::new(iv).map_err(|_| err("encoding"))?)
                .map_err(|_| err("encoding"))?,
        ),
    };
    let content = der::asn1::ContextSpecific {
        tag_number: der::TagNumber(0),
        tag_mode: der::TagMode::Implicit,
        value: OctetString::new(content).map_err(|_| err("encoding"))?,
    };
    // The shape AWS KMS returns and the Nitro Enclaves SDK's reader requires: ContentInfo, its
    // [0], EnvelopedData and EncryptedContentInfo in BER's indefinite-length form (that reader
    // steps into each by reading only its header, so a definite length, as DER has, makes it
    // skip the whole element); every part inside them is DER.
    Ok(indefinite(
        SEQUENCE,
        &[
            &der_of(&ID_ENVELOPED_DATA)?,
            &indefinite(
                CONTEXT_0,
                &[&indefinite(
                    SEQUENCE,
                    &[
                        &der_of(&CmsVersion::V2)?,
                        &der_of(&recipients)?,
                        &indefinite(
                            SEQUENCE,
                            &[
                                &der_of(&ID_DATA)?,
                                &der_of(&content_alg)?,
                                &der_of(&content)?,
                            ],
                        ),
                    ],
                )],
            ),
        ],
    ))
}

/// The DER encoding of `v`.
fn der_of(v: &impl der::Encode) -> Result<Vec<u8>> {
    v.to_der().map_err(|_| err("encoding"))
}

/// Identifier octets of a constructed SEQUENCE and of a constructed `[0]` (X.690 §8.1.2).
const SEQUENCE: u8 = 0x30;
const CONTEXT_0: u8 = 0xa0;

/// A constructed BER element of `identifier` holding `parts` (each a complete encoding) in the
/// indefinite-length form (X.690 §8.1.3.6): length octet 0x80, the contents, then the
/// end-of-contents octets 00 00. The one BER production this module writes; no crate in the
/// tree writes BER (der writes DER only).
fn indefinite(identifier: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&[identifier, 0x80]);
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Opens a `CiphertextForRecipient` with the recipient's RSA private key (PKCS #8 DER): the
/// plaintext. Accepts what [`seal`] makes and any DER `EnvelopedData` of the same algorithms
/// (RSAES-OAEP SHA-256 key transport, AES-256-CBC content).
///
/// # Errors
/// [`Error::Recipient`] naming what is wrong (public text; never a byte of key or content).
pub fn open(private_key_pkcs8: &[u8], envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let private = PrivateDecryptingKey::from_pkcs8(private_key_pkcs8)
        .map_err(|_| err("the private key is not a PKCS #8 RSA private key"))?;
    let private = OaepPrivateDecryptingKey::new(private).map_err(|_| err("unusable RSA key"))?;
    // BER, as AWS KMS and `seal` write it (indefinite lengths outside), or DER.
    let info = ContentInfo::from_ber(envelope).map_err(|_| err("not a CMS ContentInfo"))?;
    if info.content_type != ID_ENVELOPED_DATA {
        return Err(err("the CMS content is not EnvelopedData"));
    }
    let enveloped: EnvelopedData = info
        .content
        .decode_as_encoding(der::EncodingRules::Ber)
        .map_err(|_| err("malformed EnvelopedData"))?;
    let content = &enveloped.encrypted_content;
    if content.content_type != ID_DATA || content.content_enc_alg.oid != ID_AES256_CBC {
        return Err(err("the content is not AES-256-CBC encrypted data"));
    }
    let iv: OctetString = content
        .content_enc_alg
        .parameters
        .as_ref()
        .ok_or_else(|| err("AES-256-CBC without an IV"))?
        .decode_as()
        .map_err(|_| err("malformed IV"))?;
    let iv: [u8; IV_LEN] = iv
        .as_bytes()
        .try_into()
        .map_err(|_| err("the IV is not 16 bytes"))?;
    let oaep = oaep_sha256_id()?;
    let mut cek = Zeroizing::new(vec![0u8; private.min_output_size()]);
    let mut unwrapped = None;
    for recipient in enveloped.recip_infos.0.iter() {
        let RecipientInfo::Ktri(ktri) = recipient else {
            continue;
        };
        if ktri.key_enc_alg.oid != ID_RSAES_OAEP || !same_oaep_params(&ktri.key_enc_alg, &oaep) {
            continue;
        }
        if let Ok(k) = private.decrypt(
            &OAEP_SHA256_MGF1SHA256,
            ktri.enc_key.as_bytes(),
            &mut cek,
            None,
        ) {
            unwrapped = Some(k.len());
            break;
        }
    }
    let cek_len = unwrapped.ok_or_else(|| err("no recipient info opens with this key"))?;
    let cek = cek
        .get(..cek_len)
        .filter(|k| k.len() == CEK_LEN)
        .ok_or_else(|| err("the content key is not 32 bytes"))?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, cek).map_err(|_| Error::Crypto("AES key"))?,
    )
    .map_err(|_| Error::Crypto("AES-CBC"))?;
    let mut data = Zeroizing::new(
        content
            .encrypted_content
            .as_ref()
            .ok_or_else(|| err("no encrypted content"))?
            .as_bytes()
            .to_vec(),
    );
    let len = key
        .decrypt(&mut data, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| err("the content does not decrypt"))?
        .len();
    data.truncate(len);
    Ok(data)
}

/// Whether `alg`'s OAEP parameters are SHA-256 with MGF1-SHA-256 (SHA-256 parameters absent or
/// NULL, as RFC 4055 requires receivers to accept).
fn same_oaep_params(alg: &AlgorithmIdentifierOwned, want: &AlgorithmIdentifierOwned) -> bool {
    let Some(params) = alg.parameters.as_ref() else {
        return false;
    };
    let Ok(p) = params.decode_as::<RsaesOaepParams>() else {
        return false;
    };
    let is_sha256 = |a: &AlgorithmIdentifierOwned| {
        a.oid == ID_SHA256
            && a.parameters
                .as_ref()
                .is_none_or(|p| p.decode_as::<der::asn1::Null>().is_ok())
    };
    let mgf_sha256 = p.mask_gen.oid == ID_MGF1
        && p.mask_gen
            .parameters
            .as_ref()
            .and_then(|a| a.decode_as::<AlgorithmIdentifierOwned>().ok())
            .is_some_and(|a| is_sha256(&a));
    // `want` documents the one parameter set accepted.
    want.oid == alg.oid && is_sha256(&p.hash) && mgf_sha256
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::KeySize;
    use der::Encode as _;

    fn key_pair(size: KeySize) -> (Vec<u8>, Vec<u8>) {
        let private = PrivateDecryptingKey::generate(size).unwrap();
        let public = private.public_key().as_der().unwrap().as_ref().to_vec();
        let pkcs8 = private.as_der().unwrap().as_ref().to_vec();
        (pkcs8, public)
    }

    #[test]
    fn sealed_content_opens_with_the_private_key_only() {
        let (private, public) = key_pair(KeySize::Rsa2048);
        for len in [0usize, 1, 15, 16, 17, 32, 4096] {
            let plaintext: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let blob = seal(&public, &plaintext).unwrap();
            assert_eq!(
                open(&private, &blob).unwrap().as_slice(),
                plaintext.as_slice()
            );
        }
        let (other, _) = key_pair(KeySize::Rsa2048);
        let blob = seal(&public, b"secret").unwrap();
        assert!(matches!(open(&other, &blob), Err(Error::Recipient(_))));
        // Any single-byte change: an error or some plaintext, never a panic. (CMS EnvelopedData
        // is not authenticated: the recipient identifier is not bound, and CBC is malleable.
        // What is bound is who can open it.)
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let _ = open(&private, &bad);
        }
        assert!(open(&private, &blob[..blob.len() - 1]).is_err());
        assert!(open(&private, b"").is_err());
    }

    #[test]
    fn the_envelope_has_the_shape_aws_enclave_tooling_reads() {
        let (_, public) = key_pair(KeySize::Rsa2048);
        let blob = seal(&public, b"x").unwrap();
        // The bytes the Nitro Enclaves SDK's reader steps through: indefinite-length
        // ContentInfo, [0] and EnvelopedData headers, the DER OID and version between them, ...
        let oid = ID_ENVELOPED_DATA.to_der().unwrap();
        assert_eq!(&blob[..2], [0x30, 0x80]);
        assert_eq!(&blob[2..2 + oid.len()], oid.as_slice());
        let rest = &blob[2 + oid.len()..];
        assert_eq!(&rest[..7], [0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x02]);
        assert_eq!(rest[7], 0x31, "recipientInfos SET");
        // ... and, after the recipient infos, an indefinite-length EncryptedContentInfo whose
        // [0] content is primitive; then four end-of-contents.
        assert!(blob.ends_with(&[0; 8]));
        let data = ID_DATA.to_der().unwrap();
        let at = blob
            .windows(2 + data.len())
            .position(|w| w[..2] == [0x30, 0x80] && w[2..] == data[..])
            .unwrap();
        assert!(at > 2 + oid.len() + 7);
        let info = ContentInfo::from_ber(&blob).unwrap();
        assert_eq!(info.content_type, ID_ENVELOPED_DATA);
        let env: EnvelopedData = info
            .content
            .decode_as_encoding(der::EncodingRules::Ber)
            .unwrap();
        assert_eq!(env.version, CmsVersion::V2);
        assert_eq!(env.recip_infos.0.len(), 1);
        let Some(RecipientInfo::Ktri(k)) = env.recip_infos.0.iter().next() else {
            panic!("not a KeyTransRecipientInfo")
        };
        assert_eq!(k.version, CmsVersion::V2);
        assert!(matches!(
            k.rid,
            RecipientIdentifier::SubjectKeyIdentifier(_)
        ));
        assert_eq!(k.key_enc_alg.oid, ID_RSAES_OAEP);
        assert_eq!(k.enc_key.as_bytes().len(), 256);
        assert_eq!(env.encrypted_content.content_enc_alg.oid, ID_AES256_CBC);
        assert_eq!(
            env.encrypted_content
                .encrypted_content
                .as_ref()
                .unwrap()
                .as_bytes()
                .len(),
            16
        );
    }

    #[test]
    fn short_or_non_rsa_keys_are_refused() {
        let (_, public) = key_pair(KeySize::Rsa2048);
        assert!(recipient_key(&public).is_ok());
        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let ec_spki = aws_lc_rs::signature::KeyPair::public_key(&ec)
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec();
        assert!(matches!(seal(&ec_spki, b"x"), Err(Error::Recipient(_))));
        assert!(matches!(seal(b"junk", b"x"), Err(Error::Recipient(_))));
    }
}
