//! STS `GetCallerIdentity` on the KMS endpoint (AWS Query protocol, signed for service `sts`),
//! answered from the sealed principal record whose secret verified the signature: Terraform,
//! the CDK and many scripts call it first. Every other STS action is refused in STS's shape
//! (the host maps the code to STS's XML error).

use ekms_wire::msg::KmsErrorCode;

use ekms_wire::sts::{NS, escape};

use super::{Ctx, OpResult};
use crate::KmsError;

/// `sts:<Action>`: `GetCallerIdentity`, or STS's `InvalidAction` (mapped at the host).
pub(super) fn call(ctx: &Ctx<'_>, action: &str) -> OpResult {
    if action != "GetCallerIdentity" {
        return Err(KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            if action.is_empty() {
                "The request names no Action; this appliance serves STS GetCallerIdentity only."
                    .to_owned()
            } else {
                format!(
                    "Could not find operation {} for version 2011-06-15: this appliance serves \
                     STS GetCallerIdentity only.",
                    escape(action)
                )
            },
        )
        .into());
    }
    let p = ctx
        .authz
        .principal
        .as_ref()
        .ok_or_else(KmsError::internal)?;
    let account = &ctx.core.config.account;
    // Records made before principals had user ids: an id derived from the access key id.
    let user_id = if p.user_id.is_empty() {
        format!("AIDA{}", p.id.trim_start_matches("EKMS"))
    } else {
        p.user_id.clone()
    };
    let mut request_id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut request_id).map_err(|_| KmsError::internal())?;
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"{NS}\">\n  <GetCallerIdentityResult>\n    \
         <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n  \
         </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  \
         </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
        escape(&p.arn(account)),
        escape(&user_id),
        escape(account),
        uuid::Uuid::from_bytes(request_id).hyphenated()
    );
    Ok((body.into_bytes(), Vec::new()))
}
