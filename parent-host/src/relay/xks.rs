//! The relay of XKS proxy calls: the sealed principal that the request's access key id names
//! and the sealed key that its `{keyId}` names go to the enclave with the request, and the
//! enclave's answer (status and JSON body) comes back whole. Stale records are read again and
//! the call retried, as for KMS calls. The host decides nothing here.

use ekms_wire::{
    msg::{EnclaveResponse, Fault, HostRequest, HttpRequest, KmsCall, SealedBlob, XksOutcome},
    plan, xks,
};

use super::{ATTEMPTS, Relay, forget};
use crate::HostError;

/// The XKS answer for a failure inside the host or of the enclave's transport (spec: 500
/// `InternalException`; KMS retries it).
fn internal() -> (u16, Vec<u8>) {
    (
        500,
        br#"{"errorName":"InternalException","errorMessage":"An internal error occurred; retry the request."}"#
            .to_vec(),
    )
}

impl Relay {
    /// The sealed records of an XKS call: the principal of access key id `akid` and the key
    /// `key_id`, where the store has them (a `{keyId}` that is no key id fetches nothing, and
    /// the enclave answers `KeyNotFoundException`).
    fn xks_records(
        &self,
        akid: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<(Option<SealedBlob>, Vec<SealedBlob>), HostError> {
        let principal = match akid {
            Some(a) => self.principal(a)?.map(|(p, _)| p),
            None => None,
        };
        let mut keys = Vec::new();
        if let Some(id) = key_id.filter(|id| plan::key_id_bytes(id).is_some())
            && let Some(k) = self.key(id)?
        {
            keys.push(k);
        }
        Ok((principal, keys))
    }

    /// Runs an XKS proxy call for the HTTP edge: the HTTP status and JSON body to send.
    pub async fn xks(&self, http: HttpRequest) -> (u16, Vec<u8>) {
        let path = http.uri.split('?').next().unwrap_or_default();
        let key_id = xks::parse_path(path)
            .and_then(|p| p.key_id)
            .map(str::to_owned);
        let akid = http.access_key_id().map(str::to_owned);
        let mut call = KmsCall {
            http,
            ..KmsCall::default()
        };
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempt.min(7))).await;
            }
            match self.xks_records(akid.as_deref(), key_id.as_deref()) {
                Ok((principal, keys)) => {
                    call.principal = principal;
                    call.keys = keys;
                }
                Err(e) => {
                    tracing::error!(error = %e, "XKS call failed inside the host");
                    return internal();
                }
            }
            let request = HostRequest::Xks(Box::new(call));
            let reply = self.enclave.call(&request).await;
            let HostRequest::Xks(back) = request else {
                return internal();
            };
            call = *back;
            match reply {
                Ok(EnclaveResponse::Xks(XksOutcome { status, body })) => return (status, body),
                Ok(EnclaveResponse::Fault(Fault::StaleRecord)) => {
                    // Read the principal and the key from the store again (a stale cache, a
                    // write not yet committed).
                    if let Some(id) = &key_id {
                        self.invalidate(std::slice::from_ref(id), &[]);
                    }
                    if let Some(a) = &akid {
                        forget(&self.cache.principals, a);
                    }
                }
                Ok(EnclaveResponse::Fault(f)) => {
                    tracing::warn!(fault = ?f, "the enclave refused an XKS call");
                    return internal();
                }
                Ok(other) => {
                    tracing::error!(?other, "unexpected reply to an XKS call");
                    return internal();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "enclave unavailable");
                    return internal();
                }
            }
        }
        tracing::warn!("XKS call: the records stayed stale after {ATTEMPTS} attempts");
        internal()
    }
}
