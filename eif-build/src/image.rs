//! Builds an EIF from the enclave executable and the Nitro blobs with the official
//! `aws-nitro-enclaves-image-format` `EifBuilder`, reproducibly: the same inputs give the same
//! bytes and PCRs. Every input is vetted before the builder (which panics on I/O errors) runs.

use std::fs;
use std::path::{Path, PathBuf};

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use sha2::{Digest, Sha384};

use crate::blobs::NitroBlobs;
use crate::elf::check_static_executable;
use crate::error::EifError;
use crate::input::{read_file, require_dir, require_file};
use crate::measurements::Measurements;
use crate::ramdisk::{self, ROOTFS_DIRS};
use crate::signing::SigningFiles;

/// The vsock port the enclave listens on by default (`ekms-enclave --vsock-port`).
pub const DEFAULT_VSOCK_PORT: u16 = 5000;
/// The `BuildTool` written into the EIF metadata.
const BUILD_TOOL: &str = "ekms-eif";

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The statically linked enclave executable.
    pub enclave_bin: PathBuf,
    /// The Nitro blobs directory.
    pub blobs_dir: PathBuf,
    /// Where to write the EIF (replaced atomically).
    pub output: PathBuf,
    /// The enclave command line; `None` means `/<executable name> --vsock-port 5000`.
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` environment entries for the enclave process.
    pub env: Vec<String>,
    /// Sign the image (PCR8) with this certificate and key.
    pub signing: Option<SigningFiles>,
    /// Unix time written as `BuildTime` in the (unmeasured) metadata section: pass
    /// `SOURCE_DATE_EPOCH`, or 0. Never the clock, so that rebuilds are byte-identical.
    pub build_time: i64,
}

/// What a build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The image's measurements.
    pub measurements: Measurements,
    /// The command line the enclave's init will run.
    pub cmd: Vec<String>,
    /// The environment it will run with (sorted by key).
    pub env: Vec<String>,
}

/// Builds the EIF described by `options` and returns its measurements.
pub fn build(options: &BuildOptions) -> Result<BuildOutcome, EifError> {
    // 1. The enclave executable: static, supported architecture, fits a cpio entry.
    let exe_path = &options.enclave_bin;
    let exe_size = require_file(exe_path, "enclave executable")?;
    if u32::try_from(exe_size).is_err() {
        return Err(EifError::TooLarge {
            path: exe_path.clone(),
            size: exe_size,
        });
    }
    let exe = read_file(exe_path, "enclave executable")?;
    let arch = check_static_executable(exe_path, &exe)?;
    let exe_name = executable_name(exe_path)?;

    // 2. The init's cmd and env files.
    let cmd = match &options.cmd {
        Some(cmd) => cmd.clone(),
        None => default_cmd(&exe_name),
    };
    check_cmd(&cmd, &exe_name)?;
    let env = normalise_env(&options.env)?;

    // 3. The blobs, the signing pair and the output directory, before anything is written.
    let blobs = NitroBlobs::load(&options.blobs_dir, arch)?;
    if let Some(signing) = &options.signing {
        signing.vet()?;
    }
    let out_dir = match options.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    require_dir(&out_dir, "output directory")?;
    let build_time = chrono::DateTime::from_timestamp(options.build_time, 0)
        .ok_or(EifError::InvalidBuildTime(options.build_time))?;

    // 4. The ramdisks, as files (EifBuilder reads ramdisks from paths).
    let exe_digest = hex::encode(Sha384::digest(&exe));
    let bootstrap = ramdisk::bootstrap(blobs.init.clone(), blobs.nsm_ko.clone()).to_cpio()?;
    let application = ramdisk::application(&exe_name, exe, &cmd, &env).to_cpio()?;
    let scratch =
        tempfile::tempdir().map_err(|e| EifError::io("create", std::env::temp_dir(), e))?;
    let bootstrap_path = scratch.path().join("bootstrap-initrd.img");
    let application_path = scratch.path().join("application-initrd.img");
    fs::write(&bootstrap_path, &bootstrap)
        .map_err(|e| EifError::io("write", &bootstrap_path, e))?;
    fs::write(&application_path, &application)
        .map_err(|e| EifError::io("write", &application_path, e))?;

    // 5. Deterministic metadata: no host name, no clock; the version is the executable's digest.
    let identity = EifIdentityInfo {
        img_name: exe_name.clone(),
        img_version: format!("sha384:{exe_digest}"),
        build_info: EifBuildInfo {
            build_time: build_time.to_rfc3339(),
            build_tool: BUILD_TOOL.to_owned(),
            build_tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            img_os: blobs.os.clone(),
            img_kernel: blobs.kernel_version.clone(),
        },
        docker_info: serde_json::Value::Null,
        custom_info: serde_json::Value::Null,
    };

    // 6. Write to a temporary file beside the output, then rename: no half-written EIF.
    let sign_info = options
        .signing
        .as_ref()
        .map(SigningFiles::key_data)
        .transpose()?;
    let mut builder = EifBuilder::new(
        &blobs.kernel,
        blobs.cmdline.clone(),
        sign_info,
        Sha384::new(),
        arch.eif_flags(),
        identity,
    );
    builder.add_ramdisk(&bootstrap_path);
    builder.add_ramdisk(&application_path);
    let mut partial = tempfile::Builder::new()
        .prefix(".ekms-eif-")
        .suffix(".partial")
        .tempfile_in(&out_dir)
        .map_err(|e| EifError::io("create a file in", &out_dir, e))?;
    let map = builder.write_to(partial.as_file_mut());
    partial
        .as_file()
        .sync_all()
        .map_err(|e| EifError::io("sync", partial.path(), e))?;
    set_mode_644(partial.path())?;
    partial
        .persist(&options.output)
        .map_err(|e| EifError::io("write", &options.output, e.error))?;

    Ok(BuildOutcome {
        measurements: Measurements::from_crate_map(map)?,
        cmd,
        env,
    })
}

/// `/<name> --vsock-port 5000`.
#[must_use]
pub fn default_cmd(exe_name: &str) -> Vec<String> {
    vec![
        format!("/{exe_name}"),
        "--vsock-port".to_owned(),
        DEFAULT_VSOCK_PORT.to_string(),
    ]
}

/// Parses a `--cmd` value: a JSON array of strings (Docker's exec form, for arguments with
/// spaces) or else words separated by whitespace (no quoting).
pub fn parse_cmd(text: &str) -> Result<Vec<String>, EifError> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)
            .map_err(|e| EifError::InvalidCommand(format!("not a JSON array of strings: {e}")))
    } else {
        Ok(trimmed.split_whitespace().map(str::to_owned).collect())
    }
}

/// The executable's file name, which becomes `/<name>` in the enclave.
fn executable_name(path: &Path) -> Result<String, EifError> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        EifError::InvalidCommand(format!("{} has no UTF-8 file name", path.display()))
    })?;
    let clashes = ROOTFS_DIRS.contains(&name);
    let printable = name.chars().all(|c| c.is_ascii_graphic());
    if clashes || !printable || name.starts_with('.') {
        return Err(EifError::InvalidCommand(format!(
            "the executable's file name {name:?} cannot be used as /{name} in the enclave"
        )));
    }
    Ok(name.to_owned())
}

/// The command must be representable as `\n`-separated lines and must start the one executable
/// the image holds (the init `execvpe`s `cmd[0]` inside the new root).
fn check_cmd(cmd: &[String], exe_name: &str) -> Result<(), EifError> {
    let Some(first) = cmd.first() else {
        return Err(EifError::InvalidCommand("the command is empty".to_owned()));
    };
    if let Some(bad) = cmd.iter().find(|a| a.contains(['\n', '\0'])) {
        return Err(EifError::InvalidCommand(format!(
            "argument {bad:?} contains a newline or NUL, which the init's cmd file cannot hold"
        )));
    }
    let expected = format!("/{exe_name}");
    if *first != expected {
        return Err(EifError::InvalidCommand(format!(
            "the command must start with {expected}, the only executable in the image (got {first:?})"
        )));
    }
    Ok(())
}

/// Checks `KEY=value` entries and sorts them by key, so the order of `--env` flags does not
/// change PCR2. A key given twice is an error.
fn normalise_env(env: &[String]) -> Result<Vec<String>, EifError> {
    let mut seen = std::collections::BTreeMap::new();
    for entry in env {
        let bad = |reason| EifError::InvalidEnv {
            entry: entry.clone(),
            reason,
        };
        let Some((key, _value)) = entry.split_once('=') else {
            return Err(bad("expected KEY=value"));
        };
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        if entry.contains(['\n', '\0']) {
            return Err(bad(
                "contains a newline or NUL, which the init's env file cannot hold",
            ));
        }
        if seen.insert(key.to_owned(), entry.clone()).is_some() {
            return Err(bad("key given more than once"));
        }
    }
    Ok(seen.into_values().collect())
}

/// Gives the EIF the usual `rw-r--r--` regardless of the temporary file's 0600.
fn set_mode_644(path: &Path) -> Result<(), EifError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| EifError::io("set permissions on", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cmd_parsing_forms() {
        assert_eq!(
            parse_cmd(" /ekms-enclave  --vsock-port 5000 ").unwrap(),
            strings(&["/ekms-enclave", "--vsock-port", "5000"])
        );
        assert_eq!(
            parse_cmd(r#"["/ekms-enclave", "--name", "a b"]"#).unwrap(),
            strings(&["/ekms-enclave", "--name", "a b"])
        );
        assert!(matches!(
            parse_cmd("[1, 2]"),
            Err(EifError::InvalidCommand(_))
        ));
    }

    #[test]
    fn cmd_must_run_the_executable() {
        assert!(check_cmd(&default_cmd("ekms-enclave"), "ekms-enclave").is_ok());
        assert!(check_cmd(&strings(&["/bin/sh"]), "ekms-enclave").is_err());
        assert!(check_cmd(&[], "ekms-enclave").is_err());
        assert!(check_cmd(&strings(&["/ekms-enclave", "a\nb"]), "ekms-enclave").is_err());
    }

    #[test]
    fn env_is_sorted_and_checked() {
        assert_eq!(
            normalise_env(&strings(&["B=2", "A=1=x"])).unwrap(),
            strings(&["A=1=x", "B=2"])
        );
        for bad in ["NOEQUALS", "=v", "A=1\n", "A=\0"] {
            assert!(
                matches!(
                    normalise_env(&strings(&[bad])),
                    Err(EifError::InvalidEnv { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(normalise_env(&strings(&["A=1", "A=2"])).is_err());
    }

    #[test]
    fn executable_names_that_clash_are_refused() {
        assert_eq!(
            executable_name(Path::new("/x/ekms-enclave")).unwrap(),
            "ekms-enclave"
        );
        for bad in ["/x/dev", "/x/.hidden", "/x/a b"] {
            assert!(executable_name(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
