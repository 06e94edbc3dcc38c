//! The NSM seam: the [`Nsm`] trait and its real implementation over `/dev/nsm`.
//!
//! [`NitroNsm`] only works inside a Nitro Enclave; elsewhere opening it fails with
//! [`Error::NsmUnavailable`]. The simulation stand-in is [`crate::MockNsm`].

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Largest nonce, user data or public key the NSM accepts (AWS "Verifying the root of trust").
pub const MAX_NSM_INPUT_LEN: usize = 1024;

/// Largest request for random bytes served in one [`Nsm::get_random`] call.
pub const MAX_RANDOM_LEN: usize = 64 * 1024;

/// A PCR as the NSM describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrState {
    /// True if the PCR is read-only.
    pub locked: bool,
    /// Its current value.
    pub value: Vec<u8>,
}

/// The operations Enclave KMS needs from a Nitro Secure Module.
pub trait Nsm: Send + Sync {
    /// Asks for a signed attestation document (untagged COSE_Sign1) over the enclave's PCRs and
    /// the given nonce, user data and public key.
    fn attestation(
        &self,
        nonce: Option<&[u8]>,
        user_data: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>>;

    /// Reads a PCR.
    fn describe_pcr(&self, index: u16) -> Result<PcrState>;

    /// Extends a PCR: new = SHA-384(old ‖ data). Returns the new value.
    fn extend_pcr(&self, index: u16, data: &[u8]) -> Result<Vec<u8>>;

    /// Locks a PCR against further extension.
    fn lock_pcr(&self, index: u16) -> Result<()>;

    /// Returns `len` bytes of entropy.
    fn get_random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>>;
}

/// Checks an optional NSM input against [`MAX_NSM_INPUT_LEN`].
pub(crate) fn check_input(what: &'static str, value: Option<&[u8]>) -> Result<()> {
    match value {
        Some(v) if v.len() > MAX_NSM_INPUT_LEN => Err(Error::NsmInputTooLarge {
            what,
            len: v.len(),
            max: MAX_NSM_INPUT_LEN,
        }),
        _ => Ok(()),
    }
}

/// The real NSM, through the `/dev/nsm` driver of `aws-nitro-enclaves-nsm-api`.
#[derive(Debug)]
pub struct NitroNsm {
    fd: i32,
}

impl NitroNsm {
    /// Opens `/dev/nsm`. Fails cleanly outside a Nitro Enclave.
    pub fn open() -> Result<Self> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(Error::NsmUnavailable(
                "cannot open /dev/nsm (not inside a Nitro Enclave?)".to_owned(),
            ));
        }
        Ok(Self { fd })
    }

    fn call(&self, request: Request, index: Option<u16>) -> Result<Response> {
        match driver::nsm_process_request(self.fd, request) {
            Response::Error(code) => Err(map_error(code, index)),
            other => Ok(other),
        }
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}

fn expect_document(response: Response) -> Result<Vec<u8>> {
    match response {
        Response::Attestation { document } => Ok(document),
        _ => Err(Error::NsmUnexpectedResponse("Attestation")),
    }
}

fn map_error(code: ErrorCode, index: Option<u16>) -> Error {
    match (code, index) {
        (ErrorCode::ReadOnlyIndex, Some(i)) => Error::PcrLocked(i),
        (ErrorCode::InvalidIndex, Some(i)) => Error::PcrIndexOutOfRange(i),
        (code, _) => Error::NsmFailed(format!("{code:?}")),
    }
}

impl Nsm for NitroNsm {
    fn attestation(
        &self,
        nonce: Option<&[u8]>,
        user_data: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        check_input("nonce", nonce)?;
        check_input("user_data", user_data)?;
        check_input("public_key", public_key)?;
        let request = Request::Attestation {
            nonce: nonce.map(|v| ByteBuf::from(v.to_vec())),
            user_data: user_data.map(|v| ByteBuf::from(v.to_vec())),
            public_key: public_key.map(|v| ByteBuf::from(v.to_vec())),
        };
        expect_document(self.call(request, None)?)
    }

    fn describe_pcr(&self, index: u16) -> Result<PcrState> {
        match self.call(Request::DescribePCR { index }, Some(index))? {
            Response::DescribePCR { lock, data } => Ok(PcrState {
                locked: lock,
                value: data,
            }),
            _ => Err(Error::NsmUnexpectedResponse("DescribePCR")),
        }
    }

    fn extend_pcr(&self, index: u16, data: &[u8]) -> Result<Vec<u8>> {
        let request = Request::ExtendPCR {
            index,
            data: data.to_vec(),
        };
        match self.call(request, Some(index))? {
            Response::ExtendPCR { data } => Ok(data),
            _ => Err(Error::NsmUnexpectedResponse("ExtendPCR")),
        }
    }

    fn lock_pcr(&self, index: u16) -> Result<()> {
        match self.call(Request::LockPCR { index }, Some(index))? {
            Response::LockPCR => Ok(()),
            _ => Err(Error::NsmUnexpectedResponse("LockPCR")),
        }
    }

    fn get_random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        if len > MAX_RANDOM_LEN {
            return Err(Error::NsmInputTooLarge {
                what: "random length",
                len,
                max: MAX_RANDOM_LEN,
            });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        while out.len() < len {
            let Response::GetRandom { random } = self.call(Request::GetRandom, None)? else {
                return Err(Error::NsmUnexpectedResponse("GetRandom"));
            };
            let random = Zeroizing::new(random);
            if random.is_empty() {
                return Err(Error::NsmFailed("GetRandom returned no bytes".to_owned()));
            }
            let take = random.len().min(len - out.len());
            out.extend_from_slice(random.get(..take).unwrap_or_default());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_dev_nsm_outside_an_enclave_fails_cleanly() {
        if std::path::Path::new("/dev/nsm").exists() {
            return; // inside a real enclave: nothing to assert here
        }
        let err = NitroNsm::open().unwrap_err();
        assert!(matches!(err, Error::NsmUnavailable(_)), "{err}");
    }

    #[test]
    fn nsm_error_codes_map_to_distinct_variants() {
        assert!(matches!(
            map_error(ErrorCode::ReadOnlyIndex, Some(3)),
            Error::PcrLocked(3)
        ));
        assert!(matches!(
            map_error(ErrorCode::InvalidIndex, Some(40)),
            Error::PcrIndexOutOfRange(40)
        ));
        assert!(matches!(
            map_error(ErrorCode::InternalError, None),
            Error::NsmFailed(_)
        ));
    }

    #[test]
    fn a_response_of_the_wrong_kind_is_refused() {
        assert!(matches!(
            expect_document(Response::LockPCR),
            Err(Error::NsmUnexpectedResponse("Attestation"))
        ));
        assert_eq!(
            expect_document(Response::Attestation {
                document: vec![1, 2]
            })
            .unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn oversized_inputs_are_refused_before_reaching_the_device() {
        let big = vec![0u8; MAX_NSM_INPUT_LEN + 1];
        assert!(matches!(
            check_input("nonce", Some(&big)),
            Err(Error::NsmInputTooLarge { what: "nonce", .. })
        ));
        assert!(check_input("nonce", Some(&big[..MAX_NSM_INPUT_LEN])).is_ok());
        assert!(check_input("nonce", None).is_ok());
    }
}
