//! Attested custody of the domain.
//!
//! A domain is a 32-byte **custody secret** and the **keyring** of domain keys it protects. The
//! custody secret is what the ceremony shares (Shamir, M of N, one share file per custodian) and
//! what peers forward to each other; the keyring is sealed under a key derived from it and stored
//! by the host like any record. So rotating a domain key changes the keyring only, and the
//! custodians' shares keep covering every domain key in use.
//!
//! Sealed keyring (the host's "domain record"), byte layout also in `docs/formats.md`:
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 4 | magic `EKMD` |
//! | 4 | 1 | version (2; version 1 is read, and lacks the custodian list) |
//! | 5 | 8 | domain id: fingerprint of the custody secret |
//! | 13 | 8 | generation, big endian |
//! | 21 | 1 | threshold |
//! | 22 | 1 | total (custodians), `n` |
//! | 23 | 16·n | custodian fingerprints in share-index order (version 2 only) |
//! | h = 23+16·n | 12 | nonce |
//! | h+12 | m | AES-256-GCM ciphertext of the CBOR keyring |
//! | h+12+m | 16 | tag |
//!
//! The AAD is the whole header. Opening it is the strong check that a reconstructed secret is
//! the domain's (a 128-bit tag, where the 64-bit fingerprint alone would be a weak commitment),
//! and it authenticates the custodian list the sealed enclave already relied on to decide whose
//! signed shares to accept: a host that lists its own keys there gets its shares taken, but no
//! secret made from them opens a keyring whose AAD it changed.

use std::collections::BTreeMap;

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf, hmac, rand,
};
use ekms_custody::{CustodianPublicKey, DomainSecret, ShareFile};
use ekms_wire::{
    msg::CustodyState,
    sealed::{
        CUSTODIAN_FINGERPRINT_LEN, DOMAIN_HEADER_LEN, DOMAIN_MAGIC, DOMAIN_VERSION, peek_domain,
    },
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    EnclaveError,
    domain::{DomainKey, DomainKeyBytes, Keyring, hex},
};

const KEYRING_INFO: &[u8] = b"ekms/v1/keyring";
const WITNESS_INFO: &[u8] = b"ekms/v1/witness";
const STATE_INFO: &[u8] = b"ekms/v1/state-accumulator";
/// Most witnesses a domain can name.
pub const MAX_WITNESSES: u8 = 9;

/// PCR values a peer enclave of this domain must show (those of the enclave that created it).
pub type PcrValues = BTreeMap<u8, Vec<u8>>;

/// The keyring's plaintext (CBOR inside the sealed keyring).
#[derive(Serialize, Deserialize)]
struct KeyringPlain {
    /// Domain keys, oldest first; the last seals new records.
    keys: Vec<serde_bytes::ByteBuf>,
    threshold: u8,
    total: u8,
    /// Custodian fingerprints (hex), in share-index order.
    custodians: Vec<String>,
    /// The domain's PCR policy for peers.
    policy: BTreeMap<u8, serde_bytes::ByteBuf>,
    /// Witnesses the domain needs (0: none). Set at creation and carried by every keyring, so
    /// no older or newer keyring the host shows lacks it.
    #[serde(default)]
    witnesses: u8,
}

impl Drop for KeyringPlain {
    fn drop(&mut self) {
        for k in &mut self.keys {
            k.zeroize();
        }
    }
}

/// An unsealed domain: its custody secret, keyring and public parameters.
pub struct Domain {
    secret: DomainSecret,
    id: [u8; 8],
    generation: u64,
    keyring: Keyring,
    threshold: u8,
    total: u8,
    custodians: Vec<String>,
    policy: PcrValues,
    witnesses: u8,
    /// MAC key of witness messages and of the state accumulator (derived from the custody
    /// secret, so every enclave of the domain has it and no host does).
    witness_key: hmac::Key,
    state_key: hmac::Key,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Domain({}, generation {}, {} keys)",
            hex(&self.id),
            self.generation,
            self.keyring.keys().count()
        )
    }
}

/// Why a custody request was refused; public text.
pub type Refusal = String;

impl Domain {
    /// A new domain with one domain key, its custody secret split `threshold`-of-N among the
    /// custodians (public key files, JSON). Returns the domain and one share file per custodian.
    pub fn create(
        custodians: &[String],
        threshold: u8,
        policy: PcrValues,
        witnesses: u8,
    ) -> Result<(Self, Vec<String>), Refusal> {
        if witnesses > MAX_WITNESSES {
            return Err(format!(
                "a domain names at most {MAX_WITNESSES} witnesses (got {witnesses})"
            ));
        }
        let total = u8::try_from(custodians.len())
            .ok()
            .filter(|n| (1..=ekms_custody::MAX_SHARES).contains(n))
            .ok_or_else(|| {
                format!(
                    "give 1 to {} custodians (got {})",
                    ekms_custody::MAX_SHARES,
                    custodians.len()
                )
            })?;
        let keys = custodians
            .iter()
            .enumerate()
            .map(|(i, json)| {
                CustodianPublicKey::from_json(json).map_err(|e| format!("custodian {}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut fps: Vec<String> = keys
            .iter()
            .map(CustodianPublicKey::fingerprint_hex)
            .collect();
        fps.sort();
        fps.dedup();
        if fps.len() != keys.len() {
            return Err(
                "each custodian must have their own key (two files are the same key)".into(),
            );
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::fill(raw.as_mut()).map_err(|_| "the random generator failed".to_owned())?;
        let secret = DomainSecret::new(*raw);
        let id = secret.fingerprint();
        let shares = ekms_custody::split(&secret, threshold, total).map_err(|e| format!("{e}"))?;
        let files = shares
            .iter()
            .zip(&keys)
            .map(|(share, key)| {
                ShareFile::encrypt_for_custodian(share, key, id)
                    .and_then(|f| f.to_json())
                    .map_err(|e| format!("sealing a share: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (witness_key, state_key) =
            mac_keys(&secret).map_err(|_| "deriving keys failed".to_owned())?;
        let domain = Self {
            witness_key,
            state_key,
            witnesses,
            secret,
            id,
            generation: 1,
            keyring: Keyring::single(
                DomainKey::generate().map_err(|_| "the random generator failed".to_owned())?,
            ),
            threshold,
            total,
            custodians: keys
                .iter()
                .map(CustodianPublicKey::fingerprint_hex)
                .collect(),
            policy,
        };
        Ok((domain, files))
    }

    /// Opens a sealed keyring with a custody secret (reconstructed or granted by a peer).
    pub fn open(secret: DomainSecret, sealed: &[u8]) -> Result<Self, EnclaveError> {
        let h = peek_domain(sealed).ok_or(EnclaveError::BadRecord)?;
        if h.domain != secret.fingerprint() {
            return Err(EnclaveError::BadRecord);
        }
        let (nonce, ct) = h
            .body
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(EnclaveError::BadRecord)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = keyring_key(&secret)?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(h.aad),
                &mut buf,
            )
            .map_err(|_| EnclaveError::BadRecord)?
            .len();
        buf.truncate(len);
        let plain: KeyringPlain =
            serde_cbor::from_slice(&buf).map_err(|_| EnclaveError::BadRecord)?;
        // The list in the header (version 2) is the one sealed inside: the enclave wrote both.
        if let Some(listed) = &h.custodians
            && (listed.len() != plain.custodians.len()
                || listed
                    .iter()
                    .zip(&plain.custodians)
                    .any(|(fp, hex_fp)| hex(fp) != *hex_fp))
        {
            return Err(EnclaveError::BadRecord);
        }
        let mut keys = Vec::with_capacity(plain.keys.len());
        for k in &plain.keys {
            let mut bytes = [0u8; 32];
            if k.len() != bytes.len() {
                return Err(EnclaveError::BadRecord);
            }
            bytes.copy_from_slice(k);
            keys.push(DomainKey::from_bytes(DomainKeyBytes::new(bytes))?);
            bytes.zeroize();
        }
        let (witness_key, state_key) = mac_keys(&secret)?;
        Ok(Self {
            witness_key,
            state_key,
            witnesses: plain.witnesses,
            id: h.domain,
            generation: h.generation,
            keyring: Keyring::new(keys).ok_or(EnclaveError::BadRecord)?,
            threshold: plain.threshold,
            total: plain.total,
            custodians: plain.custodians.clone(),
            policy: plain.policy.iter().map(|(i, v)| (*i, v.to_vec())).collect(),
            secret,
        })
    }

    /// The sealed keyring at this generation, for the host to store.
    pub fn seal(&self) -> Result<Vec<u8>, EnclaveError> {
        self.seal_as(DOMAIN_VERSION)
    }

    /// The sealed keyring in format `version` (2; 1 only in tests, to check old records open).
    fn seal_as(&self, version: u8) -> Result<Vec<u8>, EnclaveError> {
        let plain = KeyringPlain {
            keys: self
                .keyring
                .keys()
                .map(|k| serde_bytes::ByteBuf::from(k.bytes().expose().to_vec()))
                .collect(),
            threshold: self.threshold,
            total: self.total,
            custodians: self.custodians.clone(),
            policy: self
                .policy
                .iter()
                .map(|(i, v)| (*i, serde_bytes::ByteBuf::from(v.clone())))
                .collect(),
            witnesses: self.witnesses,
        };
        let mut buf =
            Zeroizing::new(serde_cbor::to_vec(&plain).map_err(|_| EnclaveError::Encoding)?);
        let fingerprints = self
            .custodians
            .iter()
            .map(|h| {
                let mut fp = [0u8; CUSTODIAN_FINGERPRINT_LEN];
                hex::decode_to_slice(h, &mut fp).map_err(|_| EnclaveError::Encoding)?;
                Ok(fp)
            })
            .collect::<Result<Vec<_>, EnclaveError>>()?;
        if fingerprints.len() != usize::from(self.total) {
            return Err(EnclaveError::Encoding);
        }
        let mut out = Vec::with_capacity(
            DOMAIN_HEADER_LEN
                + fingerprints.len() * CUSTODIAN_FINGERPRINT_LEN
                + NONCE_LEN
                + buf.len()
                + 16,
        );
        out.extend_from_slice(DOMAIN_MAGIC);
        out.push(version);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&[self.threshold, self.total]);
        if version >= DOMAIN_VERSION {
            for fp in &fingerprints {
                out.extend_from_slice(fp);
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce)?;
        let tag = keyring_key(&self.secret)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&out[..]),
                buf.as_mut_slice(),
            )
            .map_err(|_| EnclaveError::Crypto)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The next generation with a new domain key that seals new records; the old keys stay to
    /// open older records.
    pub fn rotated(&self) -> Result<Self, EnclaveError> {
        let mut keys = self.copy_keys()?;
        keys.push(DomainKey::generate()?);
        self.next(keys)
    }

    /// The next generation with the same keys: how a version 1 record (no custodian list in its
    /// header) becomes a version 2 one once it opened.
    pub fn upgraded(&self) -> Result<Self, EnclaveError> {
        self.next(self.copy_keys()?)
    }

    /// The next generation with only the current domain key.
    pub fn retired(&self) -> Result<Self, EnclaveError> {
        let current = copy_key(self.keyring.current())?;
        self.next(vec![current])
    }

    fn copy_keys(&self) -> Result<Vec<DomainKey>, EnclaveError> {
        self.keyring.keys().map(copy_key).collect()
    }

    fn next(&self, keys: Vec<DomainKey>) -> Result<Self, EnclaveError> {
        let (witness_key, state_key) = mac_keys(&self.secret)?;
        Ok(Self {
            witness_key,
            state_key,
            witnesses: self.witnesses,
            secret: DomainSecret::new(*self.secret.expose()),
            id: self.id,
            generation: self.generation + 1,
            keyring: Keyring::new(keys).ok_or(EnclaveError::Crypto)?,
            threshold: self.threshold,
            total: self.total,
            custodians: self.custodians.clone(),
            policy: self.policy.clone(),
        })
    }

    /// The custody secret, for forwarding to an attested peer only.
    #[must_use]
    pub fn secret(&self) -> &DomainSecret {
        &self.secret
    }

    /// Domain id.
    #[must_use]
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// Keyring generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The domain keys.
    #[must_use]
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Witnesses the domain needs (0: none).
    #[must_use]
    pub fn witnesses(&self) -> u8 {
        self.witnesses
    }

    /// Witness acknowledgements needed: a majority of the domain's witnesses.
    #[must_use]
    pub fn quorum(&self) -> usize {
        usize::from(self.witnesses) / 2 + 1
    }

    /// MAC key of witness messages.
    #[must_use]
    pub fn witness_key(&self) -> &hmac::Key {
        &self.witness_key
    }

    /// MAC key of the state accumulator.
    #[must_use]
    pub fn state_key(&self) -> &hmac::Key {
        &self.state_key
    }

    /// PCR values a peer must show.
    #[must_use]
    pub fn policy(&self) -> &PcrValues {
        &self.policy
    }

    /// The public state.
    #[must_use]
    pub fn state(&self) -> CustodyState {
        CustodyState::Unsealed {
            domain: hex(&self.id),
            threshold: self.threshold,
            total: self.total,
            generation: self.generation,
            keys: self
                .keyring
                .keys()
                .map(DomainKey::fingerprint_hex)
                .collect(),
        }
    }
}

/// HMAC keys derived from the custody secret: witness messages, state accumulator.
fn mac_keys(secret: &DomainSecret) -> Result<(hmac::Key, hmac::Key), EnclaveError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret.expose());
    let derive = |info: &[u8]| -> Result<hmac::Key, EnclaveError> {
        let info = [info];
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| EnclaveError::Crypto)?;
        Ok(hmac::Key::from(okm))
    };
    Ok((derive(WITNESS_INFO)?, derive(STATE_INFO)?))
}

fn copy_key(k: &DomainKey) -> Result<DomainKey, EnclaveError> {
    DomainKey::from_bytes(DomainKeyBytes::new(*k.bytes().expose()))
}

fn keyring_key(secret: &DomainSecret) -> Result<LessSafeKey, EnclaveError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret.expose());
    let okm = prk.expand(&[KEYRING_INFO], &AES_256_GCM)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `sealed` (a version 2 record of a 1-of-1 domain whose share value is `secret`) as earlier
    /// versions wrote it: version 1, no custodian list in the header.
    pub(crate) fn as_version_1(secret: &[u8; 32], sealed: &[u8]) -> Vec<u8> {
        let d = Domain::open(DomainSecret::new(*secret), sealed).unwrap();
        let v1 = d.seal_as(ekms_wire::sealed::DOMAIN_VERSION_1).unwrap();
        assert_eq!(peek_domain(&v1).unwrap().version, 1);
        v1
    }

    #[test]
    fn the_header_lists_the_custodians_and_an_edited_list_does_not_open() {
        let (keys, pubs) = custodians(3);
        let (d, _) = Domain::create(&pubs, 2, PcrValues::new(), 0).unwrap();
        let sealed = d.seal().unwrap();
        let h = peek_domain(&sealed).unwrap();
        assert_eq!(h.version, 2);
        for (i, k) in keys.iter().enumerate() {
            let index = u8::try_from(i + 1).unwrap();
            assert_eq!(h.custodian(index), Some(k.public_key().fingerprint()));
        }
        let secret = || DomainSecret::new(*d.secret().expose());
        // Swapping two custodians, or listing another key, changes the AAD.
        let mut swapped = sealed.clone();
        let at = DOMAIN_HEADER_LEN;
        swapped.copy_within(at..at + 16, at + 16 * 2);
        assert!(Domain::open(secret(), &swapped).is_err());
        let mut other = sealed.clone();
        other[at + 5] ^= 1;
        assert!(Domain::open(secret(), &other).is_err());
        // A version 1 record of the same keyring opens, and re-seals as version 2.
        let mut one = [0u8; 32];
        one.copy_from_slice(d.secret().expose());
        let v1 = d.seal_as(ekms_wire::sealed::DOMAIN_VERSION_1).unwrap();
        let opened = Domain::open(secret(), &v1).unwrap();
        let up = opened.upgraded().unwrap();
        let h = peek_domain(&up.seal().unwrap()).unwrap().custodians;
        assert_eq!(h.map(|l| l.len()), Some(3));
        assert_eq!(up.generation(), d.generation() + 1);
    }
    use ekms_custody::{CustodianKey, SubmittedShare, combine_checked};

    fn custodians(n: usize) -> (Vec<CustodianKey>, Vec<String>) {
        let keys: Vec<CustodianKey> = (0..n).map(|_| CustodianKey::generate().unwrap()).collect();
        let pubs = keys
            .iter()
            .map(|k| k.public_key().to_json().unwrap())
            .collect();
        (keys, pubs)
    }

    #[test]
    fn shares_reconstruct_the_secret_that_opens_the_keyring() {
        let (keys, pubs) = custodians(3);
        let (d, files) = Domain::create(&pubs, 2, PcrValues::new(), 0).unwrap();
        let sealed = d.seal().unwrap();
        let shares: Vec<_> = files
            .iter()
            .zip(&keys)
            .skip(1)
            .map(|(f, k)| ShareFile::from_json(f).unwrap().decrypt(k).unwrap())
            .collect();
        let secret = combine_checked(&shares, d.id()).unwrap();
        let opened = Domain::open(secret, &sealed).unwrap();
        assert_eq!(
            opened.keyring().current().fingerprint(),
            d.keyring().current().fingerprint()
        );
        assert_eq!(
            (opened.generation(), opened.threshold, opened.total),
            (1, 2, 3)
        );
        // A different secret with the same id prefix cannot exist cheaply; a different one fails.
        assert!(Domain::open(DomainSecret::new([1; 32]), &sealed).is_err());
        let _ = SubmittedShare::from_json; // the enclave's half, exercised in core's tests
    }

    #[test]
    fn rotation_keeps_old_keys_and_retirement_drops_them() {
        let (_, pubs) = custodians(1);
        let (d, _) = Domain::create(&pubs, 1, PcrValues::new(), 0).unwrap();
        let r = d.rotated().unwrap();
        assert_eq!((r.generation(), r.keyring().keys().count()), (2, 2));
        assert!(
            r.keyring()
                .get(d.keyring().current().fingerprint())
                .is_some()
        );
        let sealed = r.seal().unwrap();
        let reopened = Domain::open(DomainSecret::new(*r.secret().expose()), &sealed).unwrap();
        assert_eq!(reopened.keyring().keys().count(), 2);
        let t = r.retired().unwrap();
        assert_eq!((t.generation(), t.keyring().keys().count()), (3, 1));
        assert_eq!(
            t.keyring().current().fingerprint(),
            r.keyring().current().fingerprint()
        );
    }

    #[test]
    fn tampered_keyrings_and_bad_custodian_lists_are_refused() {
        let (_, pubs) = custodians(2);
        let (d, _) = Domain::create(&pubs, 2, PcrValues::new(), 0).unwrap();
        let sealed = d.seal().unwrap();
        for i in [5, 13, 21, 22, 27, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(Domain::open(DomainSecret::new(*d.secret().expose()), &bad).is_err());
        }
        assert!(Domain::create(&[], 1, PcrValues::new(), 0).is_err());
        assert!(
            Domain::create(&[pubs[0].clone(), pubs[0].clone()], 2, PcrValues::new(), 0).is_err()
        );
        assert!(Domain::create(&pubs, 3, PcrValues::new(), 0).is_err());
        assert!(Domain::create(&["{}".into()], 1, PcrValues::new(), 0).is_err());
    }
}
