//! The policy-evaluation table: each case cites the documented rule it checks ("KMS" is the
//! AWS KMS developer guide, "IAM" the IAM user guide).

use super::{
    condition::Context,
    eval::{Decision, Request, decide},
};
use Decision::{Allow, ExplicitDeny as Deny, ImplicitDeny as Implicit};

const ACCT: &str = "111122223333";
const ROOT: &str = "arn:aws:iam::111122223333:root";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const OUTSIDER: &str = "arn:aws:iam::444455556666:user/eve";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab";

/// A policy of the given statements.
fn p(statements: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
}

/// A key-policy statement.
fn st(effect: &str, principal: &str, action: &str, extra: &str) -> String {
    format!(
        r#"{{"Effect":"{effect}","Principal":{principal},"Action":{action},"Resource":"*"{extra}}}"#
    )
}

/// An identity-policy statement.
fn id(effect: &str, action: &str, resource: &str, extra: &str) -> String {
    format!(r#"{{"Effect":"{effect}","Action":{action},"Resource":{resource}{extra}}}"#)
}

struct Case {
    rule: &'static str,
    key: String,
    identity: Vec<String>,
    grant: bool,
    principal: &'static str,
    action: &'static str,
    resource: &'static str,
    ctx: Vec<(&'static str, Vec<&'static str>)>,
    expect: Decision,
}

fn case(rule: &'static str, key: String, expect: Decision) -> Case {
    Case {
        rule,
        key,
        identity: Vec::new(),
        grant: false,
        principal: ALICE,
        action: "kms:Decrypt",
        resource: KEY,
        ctx: Vec::new(),
        expect,
    }
}

impl Case {
    fn identity(mut self, doc: String) -> Self {
        self.identity.push(doc);
        self
    }
    fn grant(mut self) -> Self {
        self.grant = true;
        self
    }
    fn by(mut self, principal: &'static str) -> Self {
        self.principal = principal;
        self
    }
    fn action(mut self, action: &'static str) -> Self {
        self.action = action;
        self
    }
    fn on(mut self, resource: &'static str) -> Self {
        self.resource = resource;
        self
    }
    fn ctx(mut self, key: &'static str, values: &[&'static str]) -> Self {
        self.ctx.push((key, values.to_vec()));
        self
    }
}

fn root_delegation() -> String {
    p(&st(
        "Allow",
        &format!(r#"{{"AWS":"{ROOT}"}}"#),
        r#""kms:*""#,
        "",
    ))
}

fn alice_may(action: &str, extra: &str) -> String {
    p(&st(
        "Allow",
        &format!(r#"{{"AWS":"{ALICE}"}}"#),
        action,
        extra,
    ))
}

fn iam_allow(action: &str) -> String {
    p(&id("Allow", action, r#""*""#, ""))
}

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    let alice = format!(r#"{{"AWS":"{ALICE}"}}"#);
    let ec = r#""Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing"}}"#;
    vec![
        // Key policy alone.
        case("KMS: the key policy can allow a principal directly", alice_may(r#""kms:Decrypt""#, ""), Allow),
        case("IAM: without an Allow the request is implicitly denied", alice_may(r#""kms:Encrypt""#, ""), Implicit),
        case("KMS: a principal the key policy does not name gets nothing", alice_may(r#""kms:Decrypt""#, ""), Implicit).by(BOB),
        case("IAM: Principal \"*\" is everyone", p(&st("Allow", r#""*""#, r#""kms:Decrypt""#, "")), Allow).by(BOB),
        case("IAM: {\"AWS\":\"*\"} is everyone", p(&st("Allow", r#"{"AWS":"*"}"#, r#""kms:Decrypt""#, "")), Allow).by(OUTSIDER),
        case("IAM: a list of principals matches any of them", p(&st("Allow", &format!(r#"{{"AWS":["{BOB}","{ALICE}"]}}"#), r#""kms:Decrypt""#, "")), Allow),
        case("IAM: Service principals are not IAM users", p(&st("Allow", r#"{"Service":"ec2.amazonaws.com"}"#, r#""kms:Decrypt""#, "")), Implicit),
        // Delegation to IAM through the account.
        case("KMS: the default policy alone allows no user; IAM policies must", root_delegation(), Implicit),
        case("KMS: the default policy plus an IAM Allow allows", root_delegation(), Allow).identity(iam_allow(r#""kms:Decrypt""#)),
        case("KMS: the account id is the same as its root", p(&st("Allow", &format!(r#"{{"AWS":"{ACCT}"}}"#), r#""kms:*""#, "")), Allow).identity(iam_allow(r#""kms:*""#)),
        case("KMS: the root user itself is allowed by the root statement", root_delegation(), Allow).by(ROOT),
        case("KMS: an IAM Allow without the key policy's delegation allows nothing", alice_may(r#""kms:Encrypt""#, ""), Implicit).identity(iam_allow(r#""kms:Decrypt""#)),
        case("KMS: delegation is per account: another account's principal gets nothing", root_delegation(), Implicit).by(OUTSIDER).identity(iam_allow(r#""kms:Decrypt""#)),
        case("KMS: the IAM Allow must cover the action", root_delegation(), Implicit).identity(iam_allow(r#""kms:Encrypt""#)),
        case("KMS: the key policy's delegation must cover the action", p(&st("Allow", &format!(r#"{{"AWS":"{ROOT}"}}"#), r#""kms:Encrypt""#, "")), Implicit).identity(iam_allow(r#""kms:*""#)),
        case("IAM: the identity policy's Resource must match the key", root_delegation(), Implicit).identity(p(&id("Allow", r#""kms:*""#, &format!(r#""{OTHER_KEY}""#), ""))),
        case("IAM: an identity policy may name the key ARN", root_delegation(), Allow).identity(p(&id("Allow", r#""kms:*""#, &format!(r#""{KEY}""#), ""))),
        case("IAM: Resource wildcards match key ARNs", root_delegation(), Allow).identity(p(&id("Allow", r#""kms:*""#, r#""arn:aws:kms:*:111122223333:key/*""#, ""))),
        case("IAM: Resource wildcards do not cross accounts", root_delegation(), Implicit).identity(p(&id("Allow", r#""kms:*""#, r#""arn:aws:kms:*:999999999999:key/*""#, ""))),
        case("IAM: any one of several identity policies may allow", root_delegation(), Allow).identity(iam_allow(r#""kms:Encrypt""#)).identity(iam_allow(r#""kms:Decrypt""#)),
        // Explicit deny.
        case("IAM: an explicit Deny in the key policy beats its Allow", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", &alice, r#""kms:Decrypt""#, ""))), Deny),
        case("IAM: an explicit Deny in an identity policy beats the key policy's Allow", alice_may(r#""kms:*""#, ""), Deny).identity(p(&id("Deny", r#""kms:Decrypt""#, r#""*""#, ""))),
        case("IAM: a Deny in the key policy beats an identity Allow", p(&format!("{},{}", st("Allow", &format!(r#"{{"AWS":"{ROOT}"}}"#), r#""kms:*""#, ""), st("Deny", &alice, r#""kms:Decrypt""#, ""))), Deny).identity(iam_allow(r#""kms:*""#)),
        case("KMS: a Deny naming the account applies to every identity in it", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", &format!(r#"{{"AWS":"{ACCT}"}}"#), r#""kms:Decrypt""#, ""))), Deny),
        case("KMS: a grant does not override an explicit Deny", p(&st("Deny", r#""*""#, r#""kms:Decrypt""#, "")), Deny).grant(),
        case("IAM: a Deny for another action does not deny this one", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", &alice, r#""kms:Encrypt""#, ""))), Allow),
        case("IAM: a Deny for another principal does not apply", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", &format!(r#"{{"AWS":"{BOB}"}}"#), r#""kms:*""#, ""))), Allow),
        case("IAM: a Deny whose condition does not match does not apply", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", &alice, r#""kms:*""#, r#","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}"#))), Allow).ctx("aws:MultiFactorAuthPresent", &["true"]),
        // Grants.
        case("KMS: a grant alone allows its operations", p(&st("Allow", &format!(r#"{{"AWS":"{BOB}"}}"#), r#""kms:*""#, "")), Allow).grant(),
        case("KMS: a grant allows even when the key policy names nobody", p(&st("Allow", &format!(r#"{{"AWS":"{ROOT}"}}"#), r#""kms:Encrypt""#, "")), Allow).grant(),
        // NotPrincipal.
        case("IAM: NotPrincipal with Deny denies everyone not named", p(&format!("{},{}", st("Allow", r#""*""#, r#""kms:*""#, ""), r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#)), Deny),
        case("IAM: NotPrincipal with Deny spares those named", p(&format!("{},{}", st("Allow", r#""*""#, r#""kms:*""#, ""), r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#)), Allow).by(BOB),
        case("IAM: NotPrincipal with Allow allows everyone not named", p(r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#), Allow),
        case("IAM: NotPrincipal with Allow excludes those named", p(r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#), Implicit).by(BOB),
        // Actions.
        case("IAM: kms:* matches every KMS action", alice_may(r#""kms:*""#, ""), Allow).action("kms:ReEncryptFrom"),
        case("IAM: * matches every action", alice_may(r#""*""#, ""), Allow).action("kms:Sign"),
        case("IAM: a prefix wildcard matches", alice_may(r#""kms:GenerateDataKey*""#, ""), Allow).action("kms:GenerateDataKeyWithoutPlaintext"),
        case("IAM: a prefix wildcard does not match other actions", alice_may(r#""kms:GenerateDataKey*""#, ""), Implicit).action("kms:Encrypt"),
        case("IAM: ? matches one character", alice_may(r#""kms:?ncrypt""#, ""), Allow).action("kms:Encrypt"),
        case("IAM: ? does not match two", alice_may(r#""kms:?ecrypt""#, ""), Implicit).action("kms:ReEncrypt"),
        case("IAM: action names are not case sensitive", alice_may(r#""KMS:decrypt""#, ""), Allow),
        case("IAM: a list of actions matches any", alice_may(r#"["kms:Encrypt","kms:Decrypt"]"#, ""), Allow),
        case("IAM: another service's actions do not match", alice_may(r#""s3:*""#, ""), Implicit),
        case("IAM: NotAction allows every action but those listed", p(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":"kms:ScheduleKeyDeletion","Resource":"*"}"#), Allow),
        case("IAM: NotAction does not allow the listed action", p(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":"kms:ScheduleKeyDeletion","Resource":"*"}"#), Implicit).action("kms:ScheduleKeyDeletion"),
        case("IAM: NotAction with wildcards", p(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":"kms:*Key*","Resource":"*"}"#), Implicit).action("kms:DisableKey"),
        case("IAM: Deny with NotAction denies the rest", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), r#"{"Effect":"Deny","Principal":"*","NotAction":["kms:Encrypt"],"Resource":"*"}"#)), Deny),
        case("IAM: Deny with NotAction spares the listed action", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), r#"{"Effect":"Deny","Principal":"*","NotAction":["kms:Encrypt"],"Resource":"*"}"#)), Allow).action("kms:Encrypt"),
        // Resources in key policies.
        case("KMS: in a key policy, Resource \"*\" is this key", alice_may(r#""kms:Decrypt""#, ""), Allow),
        case("IAM: NotResource excludes the listed resources", p(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","NotResource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#), Allow),
        case("IAM: NotResource does not cover the listed resource", p(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","NotResource":"arn:aws:kms:us-east-1:111122223333:key/*"}"#), Implicit),
        case("IAM: a statement for another key does not apply", root_delegation(), Implicit).identity(p(&id("Allow", r#""kms:*""#, &format!(r#""{KEY}""#), ""))).on(OTHER_KEY),
        // Encryption context conditions.
        case("KMS: kms:EncryptionContext:<key> StringEquals matches the pair", alice_may(r#""kms:Decrypt""#, &format!(",{ec}")), Allow).ctx("kms:encryptioncontext:app", &["billing"]),
        case("KMS: kms:EncryptionContext:<key> StringEquals refuses another value", alice_may(r#""kms:Decrypt""#, &format!(",{ec}")), Implicit).ctx("kms:encryptioncontext:app", &["payroll"]),
        case("KMS: kms:EncryptionContext:<key> refuses a missing pair", alice_may(r#""kms:Decrypt""#, &format!(",{ec}")), Implicit),
        case("IAM: condition key names are not case sensitive", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEquals":{"KMS:ENCRYPTIONCONTEXT:app":"billing"}}"#), Allow).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: condition values are case sensitive for StringEquals", alice_may(r#""kms:Decrypt""#, &format!(",{ec}")), Implicit).ctx("kms:encryptioncontext:app", &["Billing"]),
        case("IAM: StringEqualsIgnoreCase ignores case", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEqualsIgnoreCase":{"kms:EncryptionContext:app":"BILLING"}}"#), Allow).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: several values of one key are ORed", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:app":["billing","payroll"]}}"#), Allow).ctx("kms:encryptioncontext:app", &["payroll"]),
        case("IAM: several keys of one operator are ANDed", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing","kms:EncryptionContext:env":"prod"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: several keys all present match", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing","kms:EncryptionContext:env":"prod"}}"#), Allow).ctx("kms:encryptioncontext:app", &["billing"]).ctx("kms:encryptioncontext:env", &["prod"]),
        case("IAM: several operators are ANDed", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing"},"StringLike":{"kms:EncryptionContext:env":"pr*"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["billing"]).ctx("kms:encryptioncontext:env", &["dev"]),
        case("IAM: StringLike with * matches", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringLike":{"kms:EncryptionContext:app":"bill*"}}"#), Allow).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: StringLike with ? matches one character", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringLike":{"kms:EncryptionContext:app":"bil?ing"}}"#), Allow).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: StringLike refuses a mismatch", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringLike":{"kms:EncryptionContext:app":"pay*"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: StringNotEquals matches another value", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringNotEquals":{"kms:EncryptionContext:app":"payroll"}}"#), Allow).ctx("kms:encryptioncontext:app", &["billing"]),
        case("IAM: StringNotEquals refuses the value", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringNotEquals":{"kms:EncryptionContext:app":"payroll"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["payroll"]),
        case("IAM: a negated operator matches a missing key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringNotEquals":{"kms:EncryptionContext:app":"payroll"}}"#), Allow),
        case("IAM: StringNotLike refuses a match", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringNotLike":{"kms:EncryptionContext:app":"pay*"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["payroll"]),
        case("IAM: StringNotEqualsIgnoreCase refuses the value in any case", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:app":"PAYROLL"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["payroll"]),
        // IfExists and Null.
        case("IAM: ...IfExists is true when the key is missing", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEqualsIfExists":{"kms:EncryptionContext:app":"billing"}}"#), Allow),
        case("IAM: ...IfExists applies the operator when present", alice_may(r#""kms:Decrypt""#, r#","Condition":{"StringEqualsIfExists":{"kms:EncryptionContext:app":"billing"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["payroll"]),
        case("IAM: Null true matches a missing key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"Null":{"kms:EncryptionContext:app":"true"}}"#), Allow),
        case("IAM: Null true refuses a present key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"Null":{"kms:EncryptionContext:app":"true"}}"#), Implicit).ctx("kms:encryptioncontext:app", &["x"]),
        case("IAM: Null false requires the key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"Null":{"kms:EncryptionContextKeys":"false"}}"#), Implicit),
        case("IAM: Null false matches a present key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"Null":{"kms:EncryptionContextKeys":"false"}}"#), Allow).ctx("kms:encryptioncontextkeys", &["app"]),
        case("KMS: Deny when no encryption context (Null) denies", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", r#""*""#, r#""kms:Decrypt""#, r#","Condition":{"Null":{"kms:EncryptionContextKeys":"true"}}"#))), Deny),
        case("KMS: Deny when no encryption context spares calls with one", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", r#""*""#, r#""kms:Decrypt""#, r#","Condition":{"Null":{"kms:EncryptionContextKeys":"true"}}"#))), Allow).ctx("kms:encryptioncontextkeys", &["app"]),
        // Multivalued keys.
        case("IAM: ForAnyValue matches when one value matches", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["app","env"]}}"#), Allow).ctx("kms:encryptioncontextkeys", &["env", "tenant"]),
        case("IAM: ForAnyValue refuses when none matches", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["app"]}}"#), Implicit).ctx("kms:encryptioncontextkeys", &["env"]),
        case("IAM: ForAnyValue refuses a missing key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["app"]}}"#), Implicit),
        case("IAM: ForAllValues matches when every value is listed", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app","env"]}}"#), Allow).ctx("kms:encryptioncontextkeys", &["app", "env"]),
        case("IAM: ForAllValues refuses an unlisted value", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app"]}}"#), Implicit).ctx("kms:encryptioncontextkeys", &["app", "tenant"]),
        case("IAM: ForAllValues is true for a missing key", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app"]}}"#), Allow),
        case("IAM: ForAllValues with StringLike", alice_may(r#""kms:Decrypt""#, r#","Condition":{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["app*"]}}"#), Allow).ctx("kms:encryptioncontextkeys", &["app", "application"]),
        // Other operators and keys.
        case("IAM: Bool true matches", alice_may(r#""kms:Decrypt""#, r#","Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}"#), Allow).ctx("kms:grantisforawsresource", &["true"]),
        case("IAM: Bool refuses the other value", alice_may(r#""kms:Decrypt""#, r#","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}"#), Implicit).ctx("kms:grantisforawsresource", &["false"]),
        case("IAM: NumericLessThanEquals matches", alice_may(r#""kms:EnableKeyRotation""#, r#","Condition":{"NumericLessThanEquals":{"kms:RotationPeriodInDays":"180"}}"#), Allow).action("kms:EnableKeyRotation").ctx("kms:rotationperiodindays", &["90"]),
        case("IAM: NumericLessThanEquals refuses a larger value", alice_may(r#""kms:EnableKeyRotation""#, r#","Condition":{"NumericLessThanEquals":{"kms:RotationPeriodInDays":180}}"#), Implicit).action("kms:EnableKeyRotation").ctx("kms:rotationperiodindays", &["365"]),
        case("IAM: NumericGreaterThan matches", alice_may(r#""kms:*""#, r#","Condition":{"NumericGreaterThan":{"kms:RotationPeriodInDays":"90"}}"#), Allow).ctx("kms:rotationperiodindays", &["91"]),
        case("IAM: NumericEquals refuses a non-number", alice_may(r#""kms:*""#, r#","Condition":{"NumericEquals":{"kms:RotationPeriodInDays":"90"}}"#), Implicit).ctx("kms:rotationperiodindays", &["ninety"]),
        case("IAM: NumericNotEquals matches another number", alice_may(r#""kms:*""#, r#","Condition":{"NumericNotEquals":{"kms:RotationPeriodInDays":"90"}}"#), Allow).ctx("kms:rotationperiodindays", &["91"]),
        case("IAM: DateLessThan on aws:CurrentTime (ISO 8601)", alice_may(r#""kms:*""#, r#","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#), Allow).ctx("aws:currenttime", &["2026-11-30T12:00:00Z"]),
        case("IAM: DateLessThan refuses a later time", alice_may(r#""kms:*""#, r#","Condition":{"DateLessThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}"#), Implicit).ctx("aws:currenttime", &["2026-11-30T12:00:00Z"]),
        case("IAM: DateGreaterThanEquals with epoch seconds", alice_may(r#""kms:*""#, r#","Condition":{"DateGreaterThanEquals":{"aws:CurrentTime":"1700000000"}}"#), Allow).ctx("aws:currenttime", &["2026-11-30T12:00:00Z"]),
        case("IAM: ArnEquals on aws:PrincipalArn", p(&st("Allow", r#""*""#, r#""kms:*""#, &format!(r#","Condition":{{"ArnEquals":{{"aws:PrincipalArn":"{ALICE}"}}}}"#))), Allow).ctx("aws:principalarn", &[ALICE]),
        case("IAM: ArnLike with a wildcard", p(&st("Allow", r#""*""#, r#""kms:*""#, r#","Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/*"}}"#)), Allow).ctx("aws:principalarn", &[ALICE]),
        case("IAM: ArnNotLike refuses a match", p(&st("Allow", r#""*""#, r#""kms:*""#, r#","Condition":{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/*"}}"#)), Implicit).ctx("aws:principalarn", &[ALICE]),
        case("KMS: kms:CallerAccount restricts to an account", p(&st("Allow", r#""*""#, r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#)), Allow).ctx("kms:calleraccount", &[ACCT]),
        case("KMS: kms:CallerAccount refuses another account", p(&st("Allow", r#""*""#, r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#)), Implicit).by(OUTSIDER).ctx("kms:calleraccount", &["444455556666"]),
        case("KMS: kms:EncryptionAlgorithm", alice_may(r#""kms:Encrypt""#, r#","Condition":{"StringEquals":{"kms:EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#), Allow).action("kms:Encrypt").ctx("kms:encryptionalgorithm", &["SYMMETRIC_DEFAULT"]),
        case("KMS: kms:SigningAlgorithm refuses another algorithm", alice_may(r#""kms:Sign""#, r#","Condition":{"StringEquals":{"kms:SigningAlgorithm":"ECDSA_SHA_256"}}"#), Implicit).action("kms:Sign").ctx("kms:signingalgorithm", &["ECDSA_SHA_384"]),
        case("KMS: kms:MessageType DIGEST denied", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", r#""*""#, r#""kms:Sign""#, r#","Condition":{"StringEquals":{"kms:MessageType":"DIGEST"}}"#))), Deny).action("kms:Sign").ctx("kms:messagetype", &["DIGEST"]),
        case("KMS: kms:KeySpec conditions", alice_may(r#""kms:*""#, r#","Condition":{"StringLike":{"kms:KeySpec":"ECC_*"}}"#), Allow).action("kms:Sign").ctx("kms:keyspec", &["ECC_NIST_P256"]),
        case("KMS: kms:ViaService is never present here", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}"#), Implicit),
        case("KMS: aws:ResourceTag conditions", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"aws:ResourceTag/team":"billing"}}"#), Allow).ctx("aws:resourcetag/team", &["billing"]),
        case("KMS: kms:RequestAlias", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:RequestAlias":"alias/app"}}"#), Allow).ctx("kms:requestalias", &["alias/app"]),
        case("KMS: kms:ResourceAliases (multivalued)", alice_may(r#""kms:*""#, r#","Condition":{"ForAnyValue:StringEquals":{"kms:ResourceAliases":"alias/app"}}"#), Allow).ctx("kms:resourcealiases", &["alias/other", "alias/app"]),
        case("KMS: kms:GrantOperations ForAllValues", alice_may(r#""kms:CreateGrant""#, r#","Condition":{"ForAllValues:StringEquals":{"kms:GrantOperations":["Encrypt","Decrypt"]}}"#), Implicit).action("kms:CreateGrant").ctx("kms:grantoperations", &["Decrypt", "ReEncryptFrom"]),
        case("IAM: an unknown condition operator never matches", alice_may(r#""kms:*""#, r#","Condition":{"StringSometimes":{"kms:KeySpec":"x"}}"#), Implicit).ctx("kms:keyspec", &["x"]),
        case("IAM: a Deny with an unknown operator does not apply", p(&format!("{},{}", st("Allow", &alice, r#""kms:*""#, ""), st("Deny", r#""*""#, r#""kms:*""#, r#","Condition":{"StringSometimes":{"kms:KeySpec":"x"}}"#))), Allow).ctx("kms:keyspec", &["x"]),
        // Policy variables (IAM: "IAM policy elements: Variables and tags").
        case("IAM: ${aws:username} in a condition is the caller's name", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#), Allow).ctx("aws:username", &["alice"]).ctx("kms:encryptioncontext:owner", &["alice"]),
        case("IAM: ${aws:username} of another caller does not match", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#), Implicit).ctx("aws:username", &["alice"]).ctx("kms:encryptioncontext:owner", &["bob"]),
        case("IAM: a variable's value is literal: its * is no wildcard", alice_may(r#""kms:*""#, r#","Condition":{"StringLike":{"kms:EncryptionContext:path":"${kms:EncryptionContext:team}/x"}}"#), Implicit).ctx("kms:encryptioncontext:team", &["*"]).ctx("kms:encryptioncontext:path", &["billing/x"]),
        case("IAM: a variable naming an absent key matches nothing", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#), Implicit).ctx("kms:encryptioncontext:owner", &["alice"]),
        case("IAM: a variable's default applies when the key is absent", alice_may(r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username, 'nobody'}"}}"#), Allow).ctx("kms:encryptioncontext:owner", &["nobody"]),
        case("IAM: ${*} is a literal asterisk", alice_may(r#""kms:*""#, r#","Condition":{"StringLike":{"kms:EncryptionContext:a":"x${*}"}}"#), Implicit).ctx("kms:encryptioncontext:a", &["xyz"]),
        case("IAM: in version 2008-10-17 ${...} is literal text", format!(r#"{{"Version":"2008-10-17","Statement":[{}]}}"#, st("Allow", &alice, r#""kms:*""#, r#","Condition":{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#)), Allow).ctx("aws:username", &["alice"]).ctx("kms:encryptioncontext:owner", &["${aws:username}"]),
        case("IAM: variables in an identity policy's Resource", root_delegation(), Allow).identity(p(&id("Allow", r#""kms:*""#, r#""arn:aws:kms:us-east-1:111122223333:key/${kms:EncryptionContext:keyid}""#, ""))).ctx("kms:encryptioncontext:keyid", &["1234abcd-12ab-34cd-56ef-1234567890ab"]),
        // Robustness.
        case("KMS: a key policy that does not parse allows nothing", "not json".to_owned(), Implicit).action("kms:Encrypt").by(BOB).on(KEY),
        case("KMS: an identity policy that does not parse allows nothing", root_delegation(), Implicit).identity("{".to_owned()),
        case("IAM: a single Statement object (not a list) is read", format!(r#"{{"Version":"2012-10-17","Statement":{}}}"#, st("Allow", &alice, r#""kms:Decrypt""#, "")), Allow),
        case("IAM: an Effect other than Allow or Deny does nothing", p(&st("Permit", &alice, r#""kms:Decrypt""#, "")), Implicit),
    ]
}

#[test]
fn the_policy_evaluation_table() {
    let all = cases();
    assert!(all.len() >= 100, "{} cases", all.len());
    for c in &all {
        let ctx: Context = c
            .ctx
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        let account = c.principal.split(':').nth(4).unwrap_or_default();
        let req = Request {
            principal: c.principal,
            account,
            action: c.action,
            resource: c.resource,
            context: &ctx,
        };
        let identity: Vec<&str> = c.identity.iter().map(String::as_str).collect();
        let got = decide(&c.key, &identity, c.grant, &req);
        assert_eq!(got, c.expect, "{}", c.rule);
    }
}

#[test]
fn globs_follow_aws() {
    use super::condition::glob;
    for (p, t, ok) in [
        ("*", "", true),
        ("*", "anything", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbbd", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("**", "x", true),
        (
            "arn:aws:kms:*:1:key/*",
            "arn:aws:kms:us-east-1:1:key/k",
            true,
        ),
        ("abc", "abcd", false),
        ("", "", true),
        ("", "a", false),
    ] {
        assert_eq!(glob(p, t), ok, "{p} {t}");
    }
}
