//! `ekms principal`: make, list, delete and rotate principals, and put their identity policies.
//! Every call is a SigV4-signed request with the caller's AWS credentials, verified and
//! authorized in the enclave (`iam:CreateUser`, …). A new secret comes back encrypted to a
//! one-off key this tool made for the call, with an attestation document over this tool's
//! nonce; it is verified here before the secret is opened, so the host never sees it.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, anyhow, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use ekms_attestation::{PcrPolicy, TrustRoot, UnixMillis};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::{
    attested_secret::{AttestedSecret, Freshness, one_off_key},
    cli_domain::root_and_policy,
    signed_client,
};

/// Where and as whom to call, and what to trust.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
    /// AWS profile whose credential signs the request; default: the environment's credential,
    /// else the default profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Region the appliance serves.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// A simulated appliance's data dir: trust its simulation root (never in production).
    #[arg(long, value_name = "DIR", conflicts_with = "root")]
    pub data_dir: Option<PathBuf>,
    /// Root certificate PEM instead of the built-in AWS Nitro root (a simulation root also needs
    /// --allow-simulation-root).
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Accept a simulation root. Never in production.
    #[arg(long)]
    pub allow_simulation_root: bool,
    /// The PCRs the enclave must show (`ekms-eif measure` / nitro-cli JSON).
    #[arg(long, value_name = "PCRS.json")]
    pub pcrs: Option<PathBuf>,
    /// Refuse a secret from any domain but this one (16 hex).
    #[arg(long, value_name = "ID")]
    pub domain: Option<String>,
}

/// `ekms principal` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PrincipalCommand {
    /// Make a principal; prints its access key as JSON (AccessKeyId, SecretAccessKey, Arn).
    Create(CreateArgs),
    /// List the principals.
    List(ListArgs),
    /// Delete a principal: its access keys stop working at once.
    Delete(NameArgs),
    /// Make a second access key (the first still works), or with --retire retire one.
    RotateKey(RotateArgs),
    /// Replace a principal's identity policy (like an IAM inline policy).
    PutPolicy(PutPolicyArgs),
}

/// Arguments of `ekms principal create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The principal's name (IAM user name rules).
    pub name: String,
    /// Its identity policy (JSON); without one it may do nothing.
    #[arg(long, value_name = "FILE.json")]
    pub policy: Option<PathBuf>,
    /// Also add a profile `[NAME]` with the new key to this shared-credentials file (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `ekms principal list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments naming one principal.
#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The principal's name.
    pub name: String,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `ekms principal rotate-key`.
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The principal's name.
    pub name: String,
    /// Retire this access key (after the new one is in use) instead of making a new one.
    #[arg(long, value_name = "ACCESS_KEY_ID")]
    pub retire: Option<String>,
    /// Put the new key in profile `[NAME]` of this shared-credentials file (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `ekms principal put-policy`.
#[derive(clap::Args, Debug)]
pub struct PutPolicyArgs {
    /// The principal's name.
    pub name: String,
    /// The identity policy (JSON).
    pub file: PathBuf,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// One subcommand's work.
type Job<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// `body` with member `k` set to `v`.
fn with(mut body: Value, k: &str, v: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.insert(k.to_owned(), v);
    }
    body
}

/// Runs `ekms principal …`.
pub fn run(cmd: &PrincipalCommand) -> ExitCode {
    let (name, f): (&str, Job<'_>) = match cmd {
        PrincipalCommand::Create(a) => ("create", Box::pin(create(a))),
        PrincipalCommand::List(a) => ("list", Box::pin(list(a))),
        PrincipalCommand::Delete(a) => ("delete", Box::pin(delete(a))),
        PrincipalCommand::RotateKey(a) => ("rotate-key", Box::pin(rotate(a))),
        PrincipalCommand::PutPolicy(a) => ("put-policy", Box::pin(put_policy(a))),
    };
    crate::signed_client::run_command(&format!("ekms principal {name}"), f)
}

impl Target {
    /// Calls KMS-API operation `op` with `body`, signed with the caller's credential.
    pub(crate) async fn call(&self, op: &str, body: &Value) -> anyhow::Result<Value> {
        let creds = signed_client::credentials(self.profile.as_deref()).await?;
        signed_client::call(&self.endpoint, &self.region, op, body, creds).await
    }

    fn trust(&self) -> anyhow::Result<(TrustRoot, PcrPolicy)> {
        match &self.data_dir {
            Some(dir) => root_and_policy(
                Some(&dir.join("simulation-root.pem")),
                true,
                self.pcrs.as_deref(),
            ),
            None => root_and_policy(
                self.root.as_deref(),
                self.allow_simulation_root,
                self.pcrs.as_deref(),
            ),
        }
    }

    /// Calls `op`, which makes an access key, with a one-off key and a fresh nonce; verifies
    /// the attested answer and opens the secret.
    pub(crate) async fn new_key(&self, op: &str, body: Value) -> anyhow::Result<(Value, NewKey)> {
        let trust = self.trust()?;
        let receiver = one_off_key()?;
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow!("no randomness"))?;
        let body = with(
            body,
            "RecipientPublicKey",
            json!(receiver.public_key().to_json()?),
        );
        let body = with(body, "Nonce", json!(STANDARD.encode(nonce)));
        let answer = self.call(op, &body).await?;
        let field = |k: &str| {
            answer
                .get("AccessKey")
                .and_then(|key| key.get(k))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("the appliance's answer has no AccessKey.{k}"))
        };
        let akid = field("AccessKeyId")?.to_owned();
        let decode = |k: &str| -> anyhow::Result<Vec<u8>> {
            STANDARD
                .decode(field(k)?)
                .with_context(|| format!("AccessKey.{k} is not base64"))
        };
        let secret = AttestedSecret::credential(
            field("DomainId")?,
            &akid,
            &nonce,
            decode("SealedSecret")?,
            decode("AttestationDocument")?,
        )?;
        let now = UnixMillis::from_system_time(std::time::SystemTime::now())?;
        let verified = secret.verify(
            &trust.0,
            trust.1,
            Freshness::Now(now),
            self.domain.as_deref(),
        )?;
        eprintln!("ekms: verified {}", verified.summary);
        if verified.simulation {
            eprintln!(
                "ekms: WARNING: the attestation chains to a SIMULATION root: it proves nothing \
                 about real enclave hardware"
            );
        }
        let secret = verified.open_text(receiver.agreement_key())?;
        let arn = answer
            .pointer("/User/Arn")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((answer, NewKey { akid, secret, arn }))
    }
}

/// A new access key, opened.
pub(crate) struct NewKey {
    /// Access key id.
    pub(crate) akid: String,
    /// The secret access key.
    pub(crate) secret: Zeroizing<String>,
    arn: String,
}

impl NewKey {
    #[cfg(test)]
    pub(crate) fn for_test(akid: &str, secret: &str) -> Self {
        Self {
            akid: akid.into(),
            secret: Zeroizing::new(secret.into()),
            arn: String::new(),
        }
    }

    fn print(&self) -> anyhow::Result<()> {
        let out = Zeroizing::new(serde_json::to_string_pretty(&json!({
            "AccessKeyId": self.akid,
            "SecretAccessKey": self.secret.as_str(),
            "Arn": self.arn,
        }))?);
        println!("{}", out.as_str());
        Ok(())
    }
}

async fn create(args: &CreateArgs) -> anyhow::Result<()> {
    let mut body = json!({ "UserName": args.name });
    if let Some(p) = &args.policy {
        body = with(body, "PolicyDocument", json!(read_policy(p)?));
    }
    if let Some(f) = &args.credentials_file
        && profile_exists(f, &args.name)?
    {
        bail!(
            "{} already has a profile [{}]; not making a principal",
            f.display(),
            args.name
        );
    }
    let (_, key) = args.target.new_key("EkmsCreatePrincipal", body).await?;
    key.print()?;
    if let Some(f) = &args.credentials_file {
        put_profile(f, &args.name, &key)?;
        eprintln!("ekms: profile [{}] added to {}", args.name, f.display());
    }
    Ok(())
}

async fn list(args: &ListArgs) -> anyhow::Result<()> {
    let mut users = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let body = marker
            .as_ref()
            .map_or_else(|| json!({}), |m| json!({ "Marker": m }));
        let page = args.target.call("EkmsListPrincipals", &body).await?;
        users.extend(
            page.get("Users")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        let truncated = page.get("Truncated") == Some(&json!(true));
        match page.get("NextMarker").and_then(Value::as_str) {
            Some(m) if truncated => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "Users": users }))?
    );
    Ok(())
}

async fn delete(args: &NameArgs) -> anyhow::Result<()> {
    args.target
        .call("EkmsDeletePrincipal", &json!({ "UserName": args.name }))
        .await?;
    eprintln!("ekms: principal {} deleted", args.name);
    Ok(())
}

async fn rotate(args: &RotateArgs) -> anyhow::Result<()> {
    if let Some(old) = &args.retire {
        let out = args
            .target
            .call(
                "EkmsDeleteAccessKey",
                &json!({ "UserName": args.name, "AccessKeyId": old }),
            )
            .await?;
        eprintln!("ekms: access key {old} of {} retired", args.name);
        println!(
            "{}",
            serde_json::to_string_pretty(out.get("User").unwrap_or(&Value::Null))?
        );
        return Ok(());
    }
    let (_, key) = args
        .target
        .new_key("EkmsCreateAccessKey", json!({ "UserName": args.name }))
        .await?;
    key.print()?;
    if let Some(f) = &args.credentials_file {
        put_profile(f, &args.name, &key)?;
        eprintln!(
            "ekms: profile [{}] of {} now holds the new key; retire the old one with \
             --retire once nothing uses it",
            args.name,
            f.display()
        );
    }
    Ok(())
}

async fn put_policy(args: &PutPolicyArgs) -> anyhow::Result<()> {
    args.target
        .call(
            "EkmsPutPrincipalPolicy",
            &json!({ "UserName": args.name, "PolicyDocument": read_policy(&args.file)? }),
        )
        .await?;
    eprintln!("ekms: identity policy of {} replaced", args.name);
    Ok(())
}

fn read_policy(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The lines of a shared-credentials file without profile `[name]`, and whether it had one.
fn without_profile(text: &str, name: &str) -> (String, bool) {
    let header = format!("[{name}]");
    let mut out = String::with_capacity(text.len());
    let (mut skipping, mut found) = (false, false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = t == header;
            found |= skipping;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, found)
}

fn profile_exists(path: &Path, name: &str) -> anyhow::Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(without_profile(&text, name).1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes profile `[name]` with `key` into the shared-credentials file `path` (mode 0600),
/// replacing an older `[name]`.
fn put_profile(path: &Path, name: &str, key: &NewKey) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(String::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (mut text, _) = without_profile(&old, name);
    let mut text = Zeroizing::new(std::mem::take(&mut text));
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    for line in [
        format!("[{name}]\n"),
        format!("aws_access_key_id = {}\n", key.akid),
    ] {
        text.push_str(&line);
    }
    text.push_str("aws_secret_access_key = ");
    text.push_str(key.secret.as_str());
    text.push('\n');
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_added_or_replaced_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "[ekms]\naws_access_key_id = A\naws_secret_access_key = a\n",
        )
        .unwrap();
        let key = |id: &str| NewKey {
            akid: id.into(),
            secret: Zeroizing::new(format!("{id}-secret")),
            arn: String::new(),
        };
        assert!(!profile_exists(&f, "alice").unwrap());
        put_profile(&f, "alice", &key("B")).unwrap();
        assert!(profile_exists(&f, "alice").unwrap());
        put_profile(&f, "alice", &key("C")).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(
            text,
            "[ekms]\naws_access_key_id = A\naws_secret_access_key = a\n\n\
             [alice]\naws_access_key_id = C\naws_secret_access_key = C-secret\n"
        );
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!profile_exists(&dir.path().join("none"), "x").unwrap());
    }
}
