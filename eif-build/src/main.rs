//! `ekms-eif`: builds the Enclave KMS enclave image (EIF) reproducibly and prints its measurements
//! as nitro-cli's JSON, or measures an existing EIF. Parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ekms_eif_build::{
    BuildOptions, DEFAULT_BLOBS_DIR, EifError, SigningFiles, build, measure, parse_cmd,
};

/// Build or measure the Enclave KMS enclave image file (EIF).
#[derive(Debug, Parser)]
#[command(name = "ekms-eif", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an EIF from a statically linked enclave executable and the Nitro blobs, and print
    /// its measurements (PCR0, PCR1, PCR2[, PCR8]) as JSON.
    Build {
        /// The statically linked enclave executable (e.g. the output of `cargo enclave-static`).
        #[arg(long, value_name = "PATH")]
        enclave_bin: PathBuf,
        /// Directory of the Nitro blobs: bzImage (or Image), bzImage.config, cmdline, init, nsm.ko.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_BLOBS_DIR)]
        blobs: PathBuf,
        /// Where to write the EIF.
        #[arg(long, value_name = "FILE.eif")]
        output: PathBuf,
        /// The enclave command line: words separated by spaces, or a JSON array of strings.
        /// Must start with /<executable file name>. [default: /<name> --vsock-port 5000]
        #[arg(long, value_name = "CMD")]
        cmd: Option<String>,
        /// An environment variable for the enclave process; repeatable. Sorted by key.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// PEM certificate to sign the image with (sets PCR8); needs --private-key.
        #[arg(long, value_name = "PEM", requires = "private_key")]
        signing_cert: Option<PathBuf>,
        /// PEM private key (local file only) matching --signing-cert.
        #[arg(long, value_name = "PEM", requires = "signing_cert")]
        private_key: Option<PathBuf>,
    },
    /// Read an EIF, check its structure and CRC, and print its measurements as JSON.
    Measure {
        /// The EIF to measure.
        #[arg(value_name = "FILE.eif")]
        eif: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(json) => {
            print!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ekms-eif: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<String, EifError> {
    match command {
        Command::Build {
            enclave_bin,
            blobs,
            output,
            cmd,
            env,
            signing_cert,
            private_key,
        } => {
            let cmd = cmd.as_deref().map(parse_cmd).transpose()?;
            let signing = match (signing_cert, private_key) {
                (Some(certificate), Some(private_key)) => Some(SigningFiles {
                    certificate,
                    private_key,
                }),
                _ => None,
            };
            let options = BuildOptions {
                enclave_bin,
                blobs_dir: blobs,
                output: output.clone(),
                cmd,
                env,
                signing,
                build_time: source_date_epoch()?,
            };
            let outcome = build(&options)?;
            eprintln!(
                "ekms-eif: wrote {} (enclave runs: {})",
                output.display(),
                outcome.cmd.join(" ")
            );
            outcome.measurements.to_json()
        }
        Command::Measure { eif } => measure(&eif)?.to_json(),
    }
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org) for the metadata's BuildTime, else 0.
fn source_date_epoch() -> Result<i64, EifError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse::<i64>()
            .map_err(|_| EifError::InvalidSourceDateEpoch(value)),
        Err(_) => Ok(0),
    }
}
