//! The mock NSM: real, verifiable attestation documents signed by a [`SimulationCa`].
//!
//! NEVER IN PRODUCTION. It measures nothing but the executable bytes it is handed, and its
//! documents verify only against the simulation root, never against the AWS root.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use aws_lc_rs::digest::{Context, SHA384, SHA384_OUTPUT_LEN, digest};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use coset::{CborSerializable as _, CoseSign1Builder, HeaderBuilder, iana};
use zeroize::Zeroizing;

use crate::doc::{AttestationDoc, Pcr, PcrIndex, UnixMillis};
use crate::error::{Error, Result};
use crate::nsm::{MAX_RANDOM_LEN, Nsm, PcrState, check_input};
use crate::simca::{P384Signer, SimulationCa};

/// PCRs in the bank (indices 0..32), as on a real NSM.
const PCR_BANK: usize = 32;
/// PCRs 0..16 are set at boot and locked; 16..32 are for the enclave (NSM semantics).
const BOOT_PCRS: u16 = 16;
/// Largest data accepted by `extend_pcr` (the NSM request limit is 4 KiB).
const MAX_EXTEND_LEN: usize = 4096;

/// What [`simulated_pcr`] hashes, followed by the PCR's index in decimal.
pub const SIMULATED_PCR_PREFIX: &str = "ekms simulated PCR";

/// The value a simulated client enclave's PCR `index` has when none is given (see
/// [`MockNsm::from_pcr_values`]): SHA-384 of the ASCII text `ekms simulated PCR<index>`, e.g.
/// `ekms simulated PCR0`. Fixed and documented so that policies can name it, and never zero, so
/// that a document made with defaults is not mistaken for a debug-mode enclave's.
/// NEVER IN PRODUCTION: no real image measures to these values.
#[must_use]
pub fn simulated_pcr(index: PcrIndex) -> [u8; SHA384_OUTPUT_LEN] {
    let mut out = [0u8; SHA384_OUTPUT_LEN];
    out.copy_from_slice(
        digest(
            &SHA384,
            format!("{SIMULATED_PCR_PREFIX}{}", index.get()).as_bytes(),
        )
        .as_ref(),
    );
    out
}

#[derive(Clone)]
struct Slot {
    value: [u8; SHA384_OUTPUT_LEN],
    locked: bool,
    /// Whether the enclave touched this user PCR (then it appears in documents).
    touched: bool,
}

/// A mock Nitro Secure Module. NEVER IN PRODUCTION.
///
/// PCR0 is the SHA-384 of the enclave executable; PCRs 1–15 are zero unless set with
/// [`MockNsm::with_boot_pcr`]; all 16 are locked. PCRs 16–31 start at zero and follow NSM
/// semantics (extend = SHA-384(old ‖ data); lock prevents extend). Documents list PCRs 0–15
/// plus any user PCR that was extended or locked.
pub struct MockNsm {
    ca: SimulationCa,
    module_id: String,
    pcrs: Mutex<Vec<Slot>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for MockNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockNsm")
            .field("module_id", &self.module_id)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// PCR0 of a simulated enclave: the SHA-384 of its executable, read in 64 KiB pieces (the
/// executable is tens of MiB; the host and the mock NSM both compute it at every start).
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read.
pub fn executable_pcr0(path: &Path) -> Result<[u8; SHA384_OUTPUT_LEN]> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut ctx = Context::new(&SHA384);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
    }
    let mut pcr0 = [0u8; SHA384_OUTPUT_LEN];
    pcr0.copy_from_slice(ctx.finish().as_ref());
    Ok(pcr0)
}

impl MockNsm {
    /// A mock NSM whose PCR0 is the SHA-384 of `executable`. NEVER IN PRODUCTION.
    #[must_use]
    pub fn from_executable_bytes(ca: SimulationCa, executable: &[u8]) -> Self {
        let mut pcr0 = [0u8; SHA384_OUTPUT_LEN];
        pcr0.copy_from_slice(digest(&SHA384, executable).as_ref());
        Self::with_pcr0(ca, pcr0)
    }

    /// A mock NSM whose PCR0 is the SHA-384 of the file at `path`. NEVER IN PRODUCTION.
    pub fn from_executable_path(ca: SimulationCa, path: &Path) -> Result<Self> {
        Ok(Self::with_pcr0(ca, executable_pcr0(path)?))
    }

    /// A mock NSM in debug mode: every boot PCR is zero, as the NSM reports for an enclave
    /// started with `--debug-mode`. NEVER IN PRODUCTION; for testing refusals.
    #[must_use]
    pub fn debug_mode(ca: SimulationCa) -> Self {
        Self::with_pcr0(ca, [0u8; SHA384_OUTPUT_LEN])
    }

    fn with_pcr0(ca: SimulationCa, pcr0: [u8; SHA384_OUTPUT_LEN]) -> Self {
        tracing::warn!(
            "MockNsm constructed: attestation documents are signed by a SIMULATION CA; never in production"
        );
        let mut bank = vec![
            Slot {
                value: [0u8; SHA384_OUTPUT_LEN],
                locked: false,
                touched: false,
            };
            PCR_BANK
        ];
        for (i, slot) in bank.iter_mut().enumerate() {
            slot.locked = i < usize::from(BOOT_PCRS);
            if i == 0 {
                slot.value = pcr0;
            }
        }
        let mut id = [0u8; 8];
        let rng = SystemRandom::new();
        // A random id is cosmetic; fall back to zeros if the RNG fails.
        let _ = rng.fill(&mut id);
        Self {
            ca,
            module_id: {
                let (instance, enclave) = id.split_at(4);
                format!("i-sim{}-enc{}", hex::encode(instance), hex::encode(enclave))
            },
            pcrs: Mutex::new(bank),
            rng,
        }
    }

    /// A mock NSM standing in for a *client* enclave app's NSM, with explicit PCR values.
    /// NEVER IN PRODUCTION.
    ///
    /// Boot PCRs 0–15 take the given value, or else [`simulated_pcr`] (non-zero), and are
    /// locked. A user PCR 16–31 that is given takes that value, stays unlocked (it can still be
    /// extended) and appears in every document, as if the app had extended it; the others start
    /// at zero and follow NSM semantics. A zero PCR0 (debug mode) is taken as given: refusing it
    /// is the caller's choice.
    #[must_use]
    pub fn from_pcr_values(
        ca: SimulationCa,
        values: &BTreeMap<PcrIndex, [u8; SHA384_OUTPUT_LEN]>,
    ) -> Self {
        let pcr0 = values
            .get(&PcrIndex::IMAGE)
            .copied()
            .unwrap_or_else(|| simulated_pcr(PcrIndex::IMAGE));
        let nsm = Self::with_pcr0(ca, pcr0);
        {
            let mut bank = nsm.bank();
            for (i, slot) in bank.iter_mut().enumerate() {
                let Some(index) = u8::try_from(i).ok().and_then(PcrIndex::new) else {
                    continue;
                };
                if let Some(value) = values.get(&index) {
                    slot.value = *value;
                    slot.touched = i >= usize::from(BOOT_PCRS);
                } else if i < usize::from(BOOT_PCRS) {
                    slot.value = simulated_pcr(index);
                }
            }
        }
        nsm
    }

    /// Sets a boot PCR (1–15), e.g. PCR8 for a signed image, before the enclave runs.
    pub fn with_boot_pcr(self, index: u16, value: [u8; SHA384_OUTPUT_LEN]) -> Result<Self> {
        if index == 0 || index >= BOOT_PCRS {
            return Err(Error::PcrIndexOutOfRange(index));
        }
        self.bank()
            .get_mut(usize::from(index))
            .ok_or(Error::PcrIndexOutOfRange(index))?
            .value = value;
        Ok(self)
    }

    /// The module id this mock puts in its documents.
    #[must_use]
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    fn bank(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // Every critical section leaves the bank consistent, so a poisoned lock is usable.
        self.pcrs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Like [`Nsm::attestation`], with the document's timestamp given explicitly.
    pub fn attestation_at(
        &self,
        nonce: Option<&[u8]>,
        user_data: Option<&[u8]>,
        public_key: Option<&[u8]>,
        at: UnixMillis,
    ) -> Result<Vec<u8>> {
        check_input("nonce", nonce)?;
        check_input("user_data", user_data)?;
        check_input("public_key", public_key)?;
        if public_key.is_some_and(<[u8]>::is_empty) {
            return Err(Error::InvalidField {
                field: "public_key",
                reason: "length must be 1..=1024 bytes",
            });
        }
        let pcrs = self
            .bank()
            .iter()
            .enumerate()
            .filter(|(i, slot)| *i < usize::from(BOOT_PCRS) || slot.touched)
            .map(|(i, slot)| {
                let index = u8::try_from(i)
                    .ok()
                    .and_then(PcrIndex::new)
                    .ok_or(Error::PcrIndexOutOfRange(u16::MAX))?;
                Ok((index, Pcr::new(slot.value.to_vec())?))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        // A fresh leaf key per document; the intermediate key signs only certificates.
        let (leaf_key, _leaf_pkcs8) = P384Signer::generate()?;
        let cn = format!("{}.simulation.ekms", self.module_id);
        let certificate = self.ca.issue_leaf(leaf_key.public_point(), &cn, at)?;
        let doc = AttestationDoc {
            module_id: self.module_id.clone(),
            timestamp: at,
            pcrs,
            certificate,
            cabundle: vec![
                self.ca.root_der().to_vec(),
                self.ca.intermediate_der().to_vec(),
            ],
            public_key: public_key.map(<[u8]>::to_vec),
            user_data: user_data.map(<[u8]>::to_vec),
            nonce: nonce.map(<[u8]>::to_vec),
        };
        let payload = doc.to_payload_cbor()?;
        sign_document(&leaf_key, payload)
    }
}

/// Wraps `payload` in an untagged COSE_Sign1 signed ES384 by `key`, as real NSMs do.
pub(crate) fn sign_document(key: &P384Signer, payload: Vec<u8>) -> Result<Vec<u8>> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .try_create_signature(b"", |tbs| key.sign_fixed(tbs))?
        .build();
    sign1.to_vec().map_err(|e| Error::MalformedCose {
        reason: e.to_string(),
    })
}

fn check_index(index: u16) -> Result<usize> {
    let i = usize::from(index);
    if i < PCR_BANK {
        Ok(i)
    } else {
        Err(Error::PcrIndexOutOfRange(index))
    }
}

impl Nsm for MockNsm {
    fn attestation(
        &self,
        nonce: Option<&[u8]>,
        user_data: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let now = UnixMillis::from_system_time(SystemTime::now())?;
        self.attestation_at(nonce, user_data, public_key, now)
    }

    fn describe_pcr(&self, index: u16) -> Result<PcrState> {
        let i = check_index(index)?;
        let bank = self.bank();
        let slot = bank.get(i).ok_or(Error::PcrIndexOutOfRange(index))?;
        Ok(PcrState {
            locked: slot.locked,
            value: slot.value.to_vec(),
        })
    }

    fn extend_pcr(&self, index: u16, data: &[u8]) -> Result<Vec<u8>> {
        let i = check_index(index)?;
        if data.len() > MAX_EXTEND_LEN {
            return Err(Error::NsmInputTooLarge {
                what: "extend data",
                len: data.len(),
                max: MAX_EXTEND_LEN,
            });
        }
        let mut bank = self.bank();
        let slot = bank.get_mut(i).ok_or(Error::PcrIndexOutOfRange(index))?;
        if slot.locked {
            return Err(Error::PcrLocked(index));
        }
        let mut ctx = Context::new(&SHA384);
        ctx.update(&slot.value);
        ctx.update(data);
        slot.value.copy_from_slice(ctx.finish().as_ref());
        slot.touched = true;
        Ok(slot.value.to_vec())
    }

    fn lock_pcr(&self, index: u16) -> Result<()> {
        let i = check_index(index)?;
        let mut bank = self.bank();
        let slot = bank.get_mut(i).ok_or(Error::PcrIndexOutOfRange(index))?;
        slot.locked = true;
        slot.touched = true;
        Ok(())
    }

    fn get_random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        if len > MAX_RANDOM_LEN {
            return Err(Error::NsmInputTooLarge {
                what: "random length",
                len,
                max: MAX_RANDOM_LEN,
            });
        }
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.rng
            .fill(&mut out)
            .map_err(|_| Error::Crypto("OS random number generator"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{REAL_TS, sim_ca};
    use crate::{PcrPolicy, TrustRoot, ValidationTime, verify};

    fn sha384(parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = Context::new(&SHA384);
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    #[test]
    fn documents_verify_with_the_simulation_root_only() {
        let ca = sim_ca();
        let root = ca.trust_root().unwrap();
        let nsm = MockNsm::from_executable_bytes(ca, b"enclave binary");
        let doc = nsm
            .attestation_at(Some(b"nonce"), Some(b"user"), Some(b"pubkey"), REAL_TS)
            .unwrap();
        assert_eq!(doc[0], 0x84, "untagged COSE_Sign1, like real NSMs");
        let v = verify(&doc, &root, ValidationTime::DocumentTimestamp).unwrap();
        assert!(v.is_simulation());
        assert_eq!(v.module_id(), nsm.module_id());
        assert_eq!(v.nonce(), Some(&b"nonce"[..]));
        assert_eq!(v.user_data(), Some(&b"user"[..]));
        assert_eq!(v.public_key(), Some(&b"pubkey"[..]));
        assert_eq!(v.pcrs().len(), 16);
        let pcr0 = v.pcr(PcrIndex::IMAGE).unwrap();
        assert_eq!(pcr0.as_bytes(), sha384(&[b"enclave binary"]).as_slice());
        PcrPolicy::new()
            .expect_pcr(0, pcr0.as_bytes())
            .unwrap()
            .expect_nonce(b"nonce")
            .check(&v, REAL_TS)
            .unwrap();
        let aws = TrustRoot::aws_nitro().unwrap();
        assert!(matches!(
            verify(&doc, &aws, ValidationTime::DocumentTimestamp),
            Err(Error::RootMismatch { .. })
        ));
        // Leaves live three hours, like real ones.
        let later = UnixMillis::new(REAL_TS.as_millis() + 3 * 3600 * 1000 + 60_000);
        assert!(matches!(
            verify(&doc, &root, ValidationTime::At(later)),
            Err(Error::CertificateExpired { position: 2, .. })
        ));
    }

    #[test]
    fn trait_attestation_uses_the_current_time() {
        let ca = sim_ca();
        let root = ca.trust_root().unwrap();
        let nsm: Box<dyn Nsm> = Box::new(MockNsm::from_executable_bytes(ca, b"x"));
        let doc = nsm.attestation(None, None, None).unwrap();
        let now = UnixMillis::from_system_time(SystemTime::now()).unwrap();
        verify(&doc, &root, ValidationTime::At(now)).unwrap();
    }

    #[test]
    fn pcr0_from_path_equals_pcr0_from_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enclave");
        let exe: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251).to_be_bytes()[3])
            .collect();
        std::fs::write(&path, &exe).unwrap();
        let a = MockNsm::from_executable_path(sim_ca(), &path).unwrap();
        let b = MockNsm::from_executable_bytes(sim_ca(), &exe);
        assert_eq!(a.describe_pcr(0).unwrap(), b.describe_pcr(0).unwrap());
        assert!(matches!(
            MockNsm::from_executable_path(sim_ca(), &dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn pcrs_follow_nsm_semantics() {
        let nsm = MockNsm::from_executable_bytes(sim_ca(), b"x");
        let zero = [0u8; 48];
        let once = nsm.extend_pcr(16, b"a").unwrap();
        assert_eq!(once, sha384(&[&zero, b"a"]));
        let twice = nsm.extend_pcr(16, b"b").unwrap();
        assert_eq!(twice, sha384(&[&once, b"b"]));
        assert_eq!(
            nsm.describe_pcr(16).unwrap(),
            PcrState {
                locked: false,
                value: twice.clone()
            }
        );
        nsm.lock_pcr(16).unwrap();
        assert!(matches!(
            nsm.extend_pcr(16, b"c"),
            Err(Error::PcrLocked(16))
        ));
        assert!(nsm.describe_pcr(16).unwrap().locked);
        assert!(matches!(nsm.extend_pcr(0, b"c"), Err(Error::PcrLocked(0))));
        assert!(matches!(
            nsm.extend_pcr(32, b"c"),
            Err(Error::PcrIndexOutOfRange(32))
        ));
        assert!(matches!(
            nsm.describe_pcr(99),
            Err(Error::PcrIndexOutOfRange(99))
        ));
        assert!(matches!(
            nsm.lock_pcr(32),
            Err(Error::PcrIndexOutOfRange(32))
        ));
        assert!(matches!(
            nsm.extend_pcr(17, &[0; MAX_EXTEND_LEN + 1]),
            Err(Error::NsmInputTooLarge { .. })
        ));
        // Extended user PCRs appear in documents.
        let doc = crate::AttestationDoc::parse_unverified(
            &nsm.attestation_at(None, None, None, REAL_TS).unwrap(),
        )
        .unwrap();
        assert_eq!(
            doc.pcr(PcrIndex::new(16).unwrap()).unwrap().as_bytes(),
            twice.as_slice()
        );
        assert!(doc.pcr(PcrIndex::new(17).unwrap()).is_none());
    }

    #[test]
    fn boot_pcrs_can_be_set_before_use_only_for_1_to_15() {
        let nsm = MockNsm::from_executable_bytes(sim_ca(), b"x")
            .with_boot_pcr(8, [8; 48])
            .unwrap();
        assert_eq!(nsm.describe_pcr(8).unwrap().value, vec![8; 48]);
        assert!(nsm.describe_pcr(8).unwrap().locked);
        assert!(matches!(
            MockNsm::from_executable_bytes(sim_ca(), b"x").with_boot_pcr(0, [1; 48]),
            Err(Error::PcrIndexOutOfRange(0))
        ));
        assert!(matches!(
            MockNsm::from_executable_bytes(sim_ca(), b"x").with_boot_pcr(16, [1; 48]),
            Err(Error::PcrIndexOutOfRange(16))
        ));
    }

    #[test]
    fn simulated_pcrs_are_the_documented_nonzero_hashes() {
        let pcr = |n| simulated_pcr(PcrIndex::new(n).unwrap());
        assert_eq!(
            pcr(0).as_slice(),
            sha384(&[b"ekms simulated PCR0"]).as_slice()
        );
        assert_eq!(
            pcr(15).as_slice(),
            sha384(&[b"ekms simulated PCR15"]).as_slice()
        );
        // Pinned (`printf 'ekms simulated PCR0' | openssl dgst -sha384`): users' policies name it.
        assert_eq!(
            hex::encode(pcr(0)),
            "2b1a40e18def05955398795432ebb09cee3f5d9c84c1f326e60f34581fac249fc1d768a36ff8f7430712e0898bca9bef"
        );
        assert_ne!(pcr(0), [0u8; 48]);
        assert_ne!(pcr(0), pcr(1));
    }

    #[test]
    fn client_documents_carry_the_given_and_default_pcrs() {
        let ca = sim_ca();
        let root = ca.trust_root().unwrap();
        let idx = |n| PcrIndex::new(n).unwrap();
        let values = BTreeMap::from([(idx(0), [0xa0; 48]), (idx(8), [8; 48]), (idx(20), [20; 48])]);
        let nsm = MockNsm::from_pcr_values(ca, &values);
        let doc = nsm
            .attestation_at(Some(b"n"), Some(b"u"), Some(b"spki"), REAL_TS)
            .unwrap();
        let v = verify(&doc, &root, ValidationTime::DocumentTimestamp).unwrap();
        assert_eq!(v.nonce(), Some(&b"n"[..]));
        assert_eq!(v.user_data(), Some(&b"u"[..]));
        assert_eq!(v.public_key(), Some(&b"spki"[..]));
        assert!(!v.is_debug_mode());
        let shown: Vec<u8> = v.pcrs().keys().map(|i| i.get()).collect();
        assert_eq!(shown, (0..16).chain([20]).collect::<Vec<u8>>());
        for (i, pcr) in v.pcrs() {
            let want = values.get(i).copied().unwrap_or_else(|| simulated_pcr(*i));
            assert_eq!(pcr.as_bytes(), want.as_slice(), "PCR{i}");
        }
        // Boot PCRs are locked; a given user PCR can still be extended, others start at zero.
        assert!(matches!(nsm.extend_pcr(8, b"x"), Err(Error::PcrLocked(8))));
        assert_eq!(
            nsm.extend_pcr(20, b"x").unwrap(),
            sha384(&[&[20; 48], b"x"])
        );
        assert_eq!(nsm.describe_pcr(21).unwrap().value, vec![0; 48]);

        // Nothing given: every boot PCR is the documented default, PCR0 included.
        let plain = MockNsm::from_pcr_values(sim_ca(), &BTreeMap::new());
        let doc = AttestationDoc::parse_unverified(
            &plain.attestation_at(None, None, None, REAL_TS).unwrap(),
        )
        .unwrap();
        assert_eq!(doc.pcrs().len(), 16);
        assert_eq!(
            doc.pcr(PcrIndex::IMAGE).unwrap().as_bytes(),
            simulated_pcr(PcrIndex::IMAGE).as_slice()
        );
    }

    #[test]
    fn random_and_input_limits() {
        let nsm = MockNsm::from_executable_bytes(sim_ca(), b"x");
        let a = nsm.get_random(64).unwrap();
        let b = nsm.get_random(64).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(*a, *b);
        assert!(matches!(
            nsm.get_random(MAX_RANDOM_LEN + 1),
            Err(Error::NsmInputTooLarge { .. })
        ));
        assert!(matches!(
            nsm.attestation_at(Some(&[0; 1025]), None, None, REAL_TS),
            Err(Error::NsmInputTooLarge { what: "nonce", .. })
        ));
        assert!(matches!(
            nsm.attestation_at(None, None, Some(&[]), REAL_TS),
            Err(Error::InvalidField {
                field: "public_key",
                ..
            })
        ));
        let shown = format!("{nsm:?}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
