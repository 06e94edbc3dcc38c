//! `ekms xks`: the credentials and keys of the XKS proxy API (an AWS KMS external key store),
//! made by signed KMS-API calls that the enclave authorizes, as `ekms principal` does. A new
//! credential's secret comes back encrypted to a one-off key made here, with an attestation
//! document over this tool's nonce, and is opened only after that document verified: the host
//! never sees it.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use ekms_wire::xks;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli_principal::{NewKey, Target};

/// `ekms xks` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum XksCommand {
    /// The SigV4 credentials AWS KMS signs XKS calls with (one URI path prefix each).
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// External keys: keys of this appliance that AWS KMS uses through the XKS proxy API.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// `ekms xks credential` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CredentialCommand {
    /// Make a credential for a URI path prefix; prints {"AccessKeyId", "SecretAccessKey"}.
    Create(PrefixArgs),
    /// List the credentials (of one prefix, with --prefix).
    List(ListArgs),
    /// Delete a credential: AWS KMS's calls signed with it stop working at once.
    Delete(DeleteArgs),
}

/// `ekms xks key` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Make an external key for a URI path prefix; prints its key id.
    Create(KeyCreateArgs),
}

/// Arguments naming a prefix.
#[derive(clap::Args, Debug)]
pub struct PrefixArgs {
    /// The URI path prefix, e.g. `example/prefix` (AWS KMS's `XksProxyUriPath` without
    /// `/kms/xks/v1`).
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: String,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `ekms xks credential list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The key store's URI path prefix.
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: String,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `ekms xks credential delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// The URI path prefix of the credential.
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: String,
    /// The credential's access key id.
    #[arg(long, value_parser = parse_access_key_id)]
    pub access_key_id: String,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `ekms xks key create`.
#[derive(clap::Args, Debug)]
pub struct KeyCreateArgs {
    /// The URI path prefix whose callers may use the key.
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: String,
    /// What the key may do: `encrypt,decrypt`, `encrypt`, `decrypt` or `none`.
    #[arg(long, value_parser = parse_usage, default_value = "encrypt,decrypt")]
    pub usage: KeyUsage,
    /// Where and as whom to call.
    #[command(flatten)]
    pub target: Target,
}

/// An external key's usage: `ENCRYPT` and `DECRYPT`, in that order, each at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage(Vec<&'static str>);

/// Parses `--prefix` as the enclave does (`ekms_wire::xks::valid_prefix`): one or more
/// segments of `A-Z a-z 0-9 - . _ ~` joined by single slashes, no leading or trailing slash, at
/// most [`xks::MAX_PREFIX`] characters.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    if xks::valid_prefix(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "a prefix is one or more segments of A-Z a-z 0-9 - . _ ~ joined by single slashes, \
             without a leading or trailing slash, at most {} characters",
            xks::MAX_PREFIX
        ))
    }
}

/// Parses `--access-key-id`: 1 to 128 ASCII letters and digits.
pub fn parse_access_key_id(s: &str) -> Result<String, String> {
    if (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(s.to_owned())
    } else {
        Err("an access key id is 1 to 128 letters and digits".into())
    }
}

/// Parses `--usage`: `none`, or `encrypt` and/or `decrypt` separated by a comma.
pub fn parse_usage(s: &str) -> Result<KeyUsage, String> {
    if s == "none" {
        return Ok(KeyUsage(Vec::new()));
    }
    let (mut encrypt, mut decrypt) = (false, false);
    for part in s.split(',') {
        let seen = match part {
            "encrypt" => &mut encrypt,
            "decrypt" => &mut decrypt,
            _ => {
                return Err(format!(
                    "'{}' is no usage: encrypt,decrypt | encrypt | decrypt | none",
                    part.escape_default()
                ));
            }
        };
        if std::mem::replace(seen, true) {
            return Err(format!("'{part}' is given twice"));
        }
    }
    let mut usage = Vec::new();
    if encrypt {
        usage.push("ENCRYPT");
    }
    if decrypt {
        usage.push("DECRYPT");
    }
    Ok(KeyUsage(usage))
}

/// `EkmsCreateXksCredential`'s body, before `RecipientPublicKey` and `Nonce` are added.
fn create_credential_body(prefix: &str) -> Value {
    json!({ "UriPrefix": prefix })
}

/// `EkmsListXksCredentials`'s body.
fn list_body(prefix: &str) -> Value {
    json!({ "UriPrefix": prefix })
}

/// `EkmsDeleteXksCredential`'s body.
fn delete_body(prefix: &str, access_key_id: &str) -> Value {
    json!({ "UriPrefix": prefix, "AccessKeyId": access_key_id })
}

/// `EkmsCreateXksKey`'s body.
fn create_key_body(prefix: &str, usage: &KeyUsage) -> Value {
    json!({ "UriPrefix": prefix, "KeyUsage": usage.0 })
}

/// What `credential create` prints: the opened credential (the secret: stdout only).
fn credential_json(key: &NewKey) -> anyhow::Result<Zeroizing<String>> {
    Ok(Zeroizing::new(serde_json::to_string_pretty(&json!({
        "AccessKeyId": key.akid,
        "SecretAccessKey": key.secret.as_str(),
    }))?))
}

/// Checks `EkmsCreateXksCredential`'s answer names the prefix asked for.
fn check_prefix(answer: &Value, prefix: &str) -> anyhow::Result<()> {
    match answer.get("UriPrefix").and_then(Value::as_str) {
        Some(p) if p == prefix => Ok(()),
        Some(p) => bail!("the appliance made a credential for prefix {p:?}, not {prefix:?}"),
        None => bail!("the appliance's answer has no UriPrefix"),
    }
}

/// `EkmsListXksCredentials`'s answer, checked and reduced to what is printed.
fn credentials_of(answer: &Value) -> anyhow::Result<Value> {
    let list = answer
        .get("Credentials")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the appliance's answer has no Credentials list"))?;
    for c in list {
        for k in ["UriPrefix", "AccessKeyId", "CreateDate"] {
            if c.get(k).is_none() {
                bail!("a credential in the appliance's answer has no {k}");
            }
        }
    }
    Ok(json!({ "Credentials": list }))
}

/// `EkmsCreateXksKey`'s answer: the new key's id.
fn key_id_of(answer: &Value) -> anyhow::Result<&str> {
    let id = answer
        .get("KeyId")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the appliance's answer has no KeyId"))?;
    if ekms_wire::plan::key_id_bytes(id).is_none() {
        bail!(
            "the appliance's KeyId {:?} is no key id",
            id.escape_default().to_string()
        );
    }
    Ok(id)
}

/// One subcommand's work.
type Job<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Runs `ekms xks …`.
pub fn run(cmd: &XksCommand) -> ExitCode {
    let (name, f): (&str, Job<'_>) = match cmd {
        XksCommand::Credential(CredentialCommand::Create(a)) => {
            ("credential create", Box::pin(create_credential(a)))
        }
        XksCommand::Credential(CredentialCommand::List(a)) => {
            ("credential list", Box::pin(list_credentials(a)))
        }
        XksCommand::Credential(CredentialCommand::Delete(a)) => {
            ("credential delete", Box::pin(delete_credential(a)))
        }
        XksCommand::Key(KeyCommand::Create(a)) => ("key create", Box::pin(create_key(a))),
    };
    crate::signed_client::run_command(&format!("ekms xks {name}"), f)
}

async fn create_credential(args: &PrefixArgs) -> anyhow::Result<()> {
    let (answer, key) = args
        .target
        .new_key(
            "EkmsCreateXksCredential",
            create_credential_body(&args.prefix),
        )
        .await?;
    check_prefix(&answer, &args.prefix)?;
    println!("{}", credential_json(&key)?.as_str());
    Ok(())
}

async fn list_credentials(args: &ListArgs) -> anyhow::Result<()> {
    let answer = args
        .target
        .call("EkmsListXksCredentials", &list_body(&args.prefix))
        .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&credentials_of(&answer)?)?
    );
    Ok(())
}

async fn delete_credential(args: &DeleteArgs) -> anyhow::Result<()> {
    args.target
        .call(
            "EkmsDeleteXksCredential",
            &delete_body(&args.prefix, &args.access_key_id),
        )
        .await?;
    eprintln!(
        "ekms: XKS credential {} of prefix {} deleted",
        args.access_key_id, args.prefix
    );
    Ok(())
}

async fn create_key(args: &KeyCreateArgs) -> anyhow::Result<()> {
    let answer = args
        .target
        .call(
            "EkmsCreateXksKey",
            &create_key_body(&args.prefix, &args.usage),
        )
        .await?;
    println!("{}", key_id_of(&answer)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_segments_of_unreserved_characters() {
        for ok in [
            "p",
            "example/uri/path/prefix",
            "a.b_c~d-e/0",
            &"x".repeat(xks::MAX_PREFIX),
        ] {
            assert_eq!(parse_prefix(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "",
            "/p",
            "p/",
            "a//b",
            "/",
            "a b",
            "a?b",
            "a%2Fb",
            "é",
            "a\\b",
            &"x".repeat(xks::MAX_PREFIX + 1),
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usages_are_a_subset_of_encrypt_and_decrypt() {
        let u = |s: &str| parse_usage(s).map(|k| k.0);
        assert_eq!(u("encrypt,decrypt"), Ok(vec!["ENCRYPT", "DECRYPT"]));
        assert_eq!(u("decrypt,encrypt"), Ok(vec!["ENCRYPT", "DECRYPT"]));
        assert_eq!(u("encrypt"), Ok(vec!["ENCRYPT"]));
        assert_eq!(u("decrypt"), Ok(vec!["DECRYPT"]));
        assert_eq!(u("none"), Ok(vec![]));
        for bad in [
            "",
            "sign",
            "encrypt,",
            "encrypt,encrypt",
            "none,encrypt",
            "ENCRYPT",
        ] {
            assert!(u(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_key_ids_are_letters_and_digits() {
        assert!(parse_access_key_id("EKMSXKS0123").is_ok());
        assert!(parse_access_key_id("").is_err());
        assert!(parse_access_key_id("A/B").is_err());
        assert!(parse_access_key_id(&"A".repeat(129)).is_err());
    }

    #[test]
    fn request_bodies_have_the_operations_shapes() {
        assert_eq!(create_credential_body("a/b"), json!({"UriPrefix": "a/b"}));
        assert_eq!(list_body("p"), json!({"UriPrefix": "p"}));
        assert_eq!(
            delete_body("p", "AK1"),
            json!({"UriPrefix": "p", "AccessKeyId": "AK1"})
        );
        let usage = parse_usage("encrypt,decrypt").unwrap();
        assert_eq!(
            create_key_body("p", &usage),
            json!({"UriPrefix": "p", "KeyUsage": ["ENCRYPT", "DECRYPT"]})
        );
        let none = parse_usage("none").unwrap();
        assert_eq!(
            create_key_body("p", &none),
            json!({"UriPrefix": "p", "KeyUsage": []})
        );
    }

    #[test]
    fn answers_are_read_and_checked() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            key_id_of(&json!({"KeyId": id, "KeyUsage": []})).unwrap(),
            id
        );
        assert!(key_id_of(&json!({})).is_err());
        assert!(key_id_of(&json!({"KeyId": "alias/x"})).is_err());
        assert!(key_id_of(&json!({"KeyId": 7})).is_err());

        let c = json!({"UriPrefix": "p", "AccessKeyId": "AK1", "CreateDate": 1_764_547_200});
        let listed = json!({"Credentials": [c], "Other": 1});
        assert_eq!(
            credentials_of(&listed).unwrap(),
            json!({"Credentials": [c]})
        );
        assert_eq!(
            credentials_of(&json!({"Credentials": []})).unwrap(),
            json!({"Credentials": []})
        );
        assert!(credentials_of(&json!({})).is_err());
        assert!(credentials_of(&json!({"Credentials": [{"UriPrefix": "p"}]})).is_err());

        assert!(check_prefix(&json!({"UriPrefix": "p"}), "p").is_ok());
        assert!(check_prefix(&json!({"UriPrefix": "q"}), "p").is_err());
        assert!(check_prefix(&json!({}), "p").is_err());
    }

    #[test]
    fn a_created_credential_prints_its_id_and_secret_only() {
        let key = NewKey::for_test("AKXKS1", "s3cret");
        let out = credential_json(&key).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"AccessKeyId": "AKXKS1", "SecretAccessKey": "s3cret"})
        );
    }
}
