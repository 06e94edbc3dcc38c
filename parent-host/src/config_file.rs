//! `ekms serve --config FILE`: the flags of `serve` from a TOML file. Each key is a flag's long
//! name (`listen`, `max-connections`, `xks-tls-cert`); a switch takes `true` or `false`, a flag
//! given several times (`witness`) an array. A flag on the command line overrides the file.
//!
//! The file becomes flags, checked by the same parsers as the command line: an unknown key or
//! a bad value is an error that names the file and the key. It must never hold a secret (no
//! flag of `serve` is one).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{ArgAction, Command, parser::ValueSource};

/// `argv` with the flags of `serve --config FILE` appended: those the command line does not
/// give. `argv` comes back unchanged when it is not `serve --config`, or does not parse (the
/// caller's own parse then reports what is wrong).
pub fn apply(cli: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut cli = cli.clone();
    cli.build();
    let Ok(matches) = cli.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some(("serve", given)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(path) = given.get_one::<PathBuf>("config") else {
        return Ok(argv);
    };
    let Some(serve) = cli.find_subcommand("serve") else {
        return Ok(argv);
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
    let mut argv = argv;
    for (key, value) in &table {
        let arg = flag(serve, key).ok_or_else(|| unknown(path, serve, key))?;
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        argv.extend(tokens(path, serve, arg, key, value)?);
    }
    Ok(argv)
}

/// The flag of `serve` whose long name is `key` (not `--config` itself, nor `--help`).
fn flag<'a>(serve: &'a Command, key: &str) -> Option<&'a clap::Arg> {
    serve
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .find(|a| a.get_long() == Some(key))
}

fn unknown(path: &Path, serve: &Command, key: &str) -> String {
    let kebab = key.replace('_', "-");
    let hint = if kebab != key && flag(serve, &kebab).is_some() {
        format!(" (did you mean '{kebab}'? keys are the flags' long names)")
    } else {
        String::new()
    };
    format!(
        "config {}: unknown key '{key}'{hint}: not a flag of `ekms serve`",
        path.display()
    )
}

/// The command-line tokens for `key = value`, each value checked by the flag's own parser.
fn tokens(
    path: &Path,
    serve: &Command,
    arg: &clap::Arg,
    key: &str,
    value: &toml::Value,
) -> Result<Vec<OsString>, String> {
    let bad = |why: &str| format!("config {}: key '{key}': {why}", path.display());
    match arg.get_action() {
        ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{key}").into()]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err(bad("expected true or false")),
        },
        ArgAction::Append => {
            let items = match value {
                toml::Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            items
                .into_iter()
                .map(|v| checked(serve, key, v).map_err(|e| bad(&e)))
                .collect()
        }
        _ => checked(serve, key, value)
            .map(|t| vec![t])
            .map_err(|e| bad(&e)),
    }
}

/// `--key=value` for one scalar, after the flag's parser accepted it (alone: what it requires
/// or conflicts with is checked when the whole line is parsed).
fn checked(serve: &Command, key: &str, value: &toml::Value) -> Result<OsString, String> {
    use clap::error::ErrorKind;
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        _ => return Err("expected a string or a number".to_owned()),
    };
    let token = format!("--{key}={text}");
    match serve
        .clone()
        .try_get_matches_from(["serve", token.as_str()])
    {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_owned())
        }
        _ => Ok(token.into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Args as _;

    use super::*;
    use crate::cli_serve::ServeArgs;

    fn cli() -> Command {
        Command::new("ekms").subcommand(ServeArgs::augment_args(Command::new("serve")))
    }

    fn run(file: &str, args: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ekms.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["ekms".into(), "serve".into(), "--config".into()];
        argv.push(path.into_os_string());
        argv.extend(args.iter().map(OsString::from));
        let out = apply(&cli(), argv)?;
        Ok(out
            .into_iter()
            .skip(4)
            .map(|s| s.into_string().unwrap())
            .collect())
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let file = r#"
            sim = true
            no-dev-custodian = false
            listen = "127.0.0.1:9400"
            max-connections = 64
            header-timeout = "2s"
            body-timeout = 5
            witness = ["http://a:8400", "http://b:8400"]
        "#;
        let out = run(file, &["--listen", "127.0.0.1:9500"]).unwrap();
        assert_eq!(
            out,
            [
                "--listen",
                "127.0.0.1:9500",
                "--body-timeout=5",
                "--header-timeout=2s",
                "--max-connections=64",
                "--sim",
                "--witness=http://a:8400",
                "--witness=http://b:8400",
            ]
        );
        // The whole line parses as serve's flags.
        let mut argv = vec!["ekms", "serve", "--config", "x"];
        argv.extend(out.iter().map(String::as_str));
        let m = cli().try_get_matches_from(argv).unwrap();
        let (_, s) = m.subcommand().unwrap();
        assert_eq!(
            s.get_one::<std::net::SocketAddr>("listen").unwrap().port(),
            9500
        );
        assert_eq!(s.get_many::<String>("witnesses").unwrap().count(), 2);
        // A list on the command line replaces the file's.
        let out = run(file, &["--witness", "http://c:8400"]).unwrap();
        assert!(!out.iter().any(|t| t.contains("http://a")), "{out:?}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = run("lisen = \"x\"", &[]).unwrap_err();
        assert!(e.contains("unknown key 'lisen'"), "{e}");
        let e = run("data_dir = \"/tmp\"", &[]).unwrap_err();
        assert!(e.contains("did you mean 'data-dir'"), "{e}");
        let e = run("config = \"other.toml\"", &[]).unwrap_err();
        assert!(e.contains("unknown key 'config'"), "{e}");
        let e = run("listen = \"not an address\"", &[]).unwrap_err();
        assert!(
            e.contains("key 'listen'") && e.contains("not an address"),
            "{e}"
        );
        let e = run("max-connections = 0", &[]).unwrap_err();
        assert!(e.contains("key 'max-connections'"), "{e}");
        let e = run("header-timeout = \"soon\"", &[]).unwrap_err();
        assert!(e.contains("key 'header-timeout'"), "{e}");
        let e = run("sim = \"yes\"", &[]).unwrap_err();
        assert!(
            e.contains("key 'sim'") && e.contains("true or false"),
            "{e}"
        );
        let e = run("listen = [1, 2]", &[]).unwrap_err();
        assert!(e.contains("key 'listen'"), "{e}");
        let e = run("listen = ", &[]).unwrap_err();
        assert!(e.contains("ekms.toml"), "{e}");
        // A bad value is an error even when the command line overrides it? No: the command
        // line wins and the file's value is not used.
        assert!(run("listen = \"nope\"", &["--listen", "127.0.0.1:1"]).is_ok());
    }

    #[test]
    fn without_config_the_arguments_are_untouched() {
        let argv: Vec<OsString> = ["ekms", "serve", "--sim"].iter().map(Into::into).collect();
        assert_eq!(apply(&cli(), argv.clone()).unwrap(), argv);
        let bad: Vec<OsString> = ["ekms", "serve", "--nope"].iter().map(Into::into).collect();
        assert_eq!(apply(&cli(), bad.clone()).unwrap(), bad);
    }
}
