//! Appliance operations for recovery (beyond AWS KMS's API, same protocol).

use ekms_wire::msg::KmsErrorCode;

use super::{Ctx, OpResult};
use crate::KmsError;

/// `EkmsAcceptUnwitnessedState`: a witnessed writer that cannot prove its loaded state (a
/// quorum of its witnesses was lost, or it restarted before a quorum was enrolled) serves that
/// state from now on, and enrols witnesses afresh. Only a principal's signed request does this,
/// never the host: it is the explicit decision to accept whatever the store holds, rollback
/// included (`docs/state.md`).
pub(super) fn accept_unwitnessed_state(ctx: &Ctx<'_>, _body: &[u8]) -> OpResult {
    match ctx.core.accept_unwitnessed_state() {
        Ok((records, counter)) => {
            tracing::warn!(
                records,
                counter,
                "a principal accepted the loaded state without witnesses; enrolling afresh"
            );
            let body = serde_json::json!({
                "Accepted": true,
                "Records": records,
                "Checkpoint": counter,
            });
            Ok((body.to_string().into_bytes(), Vec::new()))
        }
        Err(why) => Err(KmsError::new(KmsErrorCode::KMSInvalidStateException, why).into()),
    }
}
