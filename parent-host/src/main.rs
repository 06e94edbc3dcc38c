//! `ekms`: the Enclave KMS operator binary. `ekms serve` runs the appliance.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use ekms_parent_host::{
    cli_attestation, cli_audit, cli_credential, cli_domain, cli_principal, cli_recipient,
    cli_serve, cli_xks, config_file, custodian, fetch,
};

/// jemalloc, not glibc's malloc, so that memory a flood held comes back. Measured (release,
/// 400 bodies stopped at 250 of 256 KiB, cut by the body timeout): glibc kept 30 of the 97 MiB
/// the flood took, for good (fragmented arenas; only `malloc_trim`, an unsafe call, would give
/// it back); mimalloc started at 76 MiB idle instead of 15 and kept more; jemalloc with its
/// background thread gives it back within its 10 s decay (README, "Memory bound").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "ekms",
    about = "Enclave KMS: an AWS-KMS-compatible key service whose keys live in an enclave",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance: HTTP front end, store, and the enclave (simulated or Nitro).
    Serve(Box<cli_serve::ServeArgs>),
    /// Attestation documents.
    #[command(subcommand)]
    Attestation(AttestationCommand),
    /// Custodian tools for the M-of-N custody ceremony.
    #[command(subcommand)]
    Custodian(CustodianCommand),
    /// The key domain: create it, see its custody state, rotate its key.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Credentials the enclave delivered sealed to your key.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Principals (users with access keys and an identity policy), made and changed by signed
    /// requests that the enclave authorizes.
    #[command(subcommand)]
    Principal(cli_principal::PrincipalCommand),
    /// CiphertextForRecipient: what KMS returns to an enclave app that sent an attestation
    /// document as `Recipient`.
    #[command(subcommand)]
    Recipient(cli_recipient::RecipientCommand),
    /// The XKS proxy API (AWS KMS external key store): its credentials and external keys.
    #[command(subcommand)]
    Xks(cli_xks::XksCommand),
    /// The enclave's signed audit log: verify, tail, export.
    #[command(subcommand)]
    Audit(cli_audit::AuditCommand),
}

#[derive(Subcommand, Debug)]
enum CredentialCommand {
    /// Verify a saved sealed credential's attestation, then decrypt it with your key.
    Open(cli_credential::OpenArgs),
}

#[derive(Subcommand, Debug)]
enum CustodianCommand {
    /// Make a custodian key pair (NAME.key, mode 0600, and NAME.pub).
    Keygen(custodian::KeygenArgs),
    /// Verify the enclave's attestation, then submit your share encrypted to its attested key.
    Unseal(custodian::UnsealArgs),
}

#[derive(Subcommand, Debug)]
enum DomainCommand {
    /// Create the key domain in the enclave and split it among custodians (M of N).
    Init(cli_domain::InitArgs),
    /// Show the custody state (sealed with k of M shares, or unsealed) and re-sealing progress.
    Status(cli_domain::StatusArgs),
    /// Make a new domain key for new records; older records are re-sealed in the background.
    Rotate(cli_domain::EndpointArgs),
    /// Disaster recovery of a witnessed domain whose witnesses are lost: make the writer serve
    /// the state its store holds (signed by a principal of the domain, never by the host).
    AcceptState(cli_domain::AcceptStateArgs),
}

#[derive(Subcommand, Debug)]
enum AttestationCommand {
    /// Verify a Nitro attestation document and print it as JSON.
    Verify(cli_attestation::VerifyArgs),
    /// Fetch a fresh attestation document, bound to your nonce, from an appliance.
    Fetch(fetch::FetchArgs),
    /// SIMULATION ONLY: make an attestation document for your own enclave app, signed by a
    /// simulation data dir's CA, to send as `Recipient` to that simulated appliance.
    Mock(cli_attestation::MockArgs),
}

fn main() -> ExitCode {
    // Freed memory goes back to the OS over jemalloc's decay time (10 s) even while the
    // process is idle.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    // `serve --config FILE`: the file's flags join the command line's (which win).
    let argv = match config_file::apply(&Cli::command(), std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("ekms: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    cli_serve::init_logs(match &cli.command {
        Command::Serve(a) => a.log_format,
        _ => cli_serve::LogFormat::Text,
    });
    match cli.command {
        Command::Serve(args) => cli_serve::run(*args),
        Command::Attestation(AttestationCommand::Verify(args)) => {
            cli_attestation::run_verify(&args)
        }
        Command::Attestation(AttestationCommand::Fetch(args)) => fetch::run_fetch(&args),
        Command::Attestation(AttestationCommand::Mock(args)) => cli_attestation::run_mock(&args),
        Command::Custodian(CustodianCommand::Keygen(args)) => custodian::run_keygen(&args),
        Command::Custodian(CustodianCommand::Unseal(args)) => custodian::run_unseal(&args),
        Command::Domain(DomainCommand::Init(args)) => cli_domain::run_init(&args),
        Command::Domain(DomainCommand::Status(args)) => cli_domain::run_status(&args),
        Command::Domain(DomainCommand::Rotate(args)) => cli_domain::run_rotate(&args),
        Command::Domain(DomainCommand::AcceptState(args)) => cli_domain::run_accept_state(&args),
        Command::Credential(CredentialCommand::Open(args)) => cli_credential::run_open(&args),
        Command::Principal(cmd) => cli_principal::run(&cmd),
        Command::Recipient(cmd) => cli_recipient::run(&cmd),
        Command::Xks(cmd) => cli_xks::run(&cmd),
        Command::Audit(cmd) => cli_audit::run(&cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xks_commands_parse() {
        let cli = Cli::try_parse_from([
            "ekms",
            "xks",
            "key",
            "create",
            "--prefix",
            "a/b",
            "--usage",
            "decrypt",
            "--endpoint",
            "http://127.0.0.1:8400",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Xks(cli_xks::XksCommand::Key(_))
        ));
        for bad in [
            // A store's credentials are listed by its prefix.
            &["ekms", "xks", "credential", "list", "--endpoint", "x"],
            &[
                "ekms",
                "xks",
                "key",
                "create",
                "--prefix",
                "/a",
                "--endpoint",
                "x",
            ][..],
            &[
                "ekms",
                "xks",
                "key",
                "create",
                "--prefix",
                "a",
                "--usage",
                "sign",
                "--endpoint",
                "x",
            ],
            &["ekms", "xks", "credential", "create", "--endpoint", "x"],
            &[
                "ekms",
                "xks",
                "credential",
                "delete",
                "--prefix",
                "a",
                "--endpoint",
                "x",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        for ok in [
            &[
                "ekms",
                "xks",
                "credential",
                "create",
                "--prefix",
                "a",
                "--endpoint",
                "x",
            ][..],
            &[
                "ekms",
                "xks",
                "credential",
                "list",
                "--prefix",
                "a",
                "--endpoint",
                "x",
            ],
            &[
                "ekms",
                "xks",
                "credential",
                "delete",
                "--prefix",
                "a",
                "--access-key-id",
                "AK1",
                "--endpoint",
                "x",
                "--data-dir",
                "/tmp/d",
            ],
        ] {
            assert!(Cli::try_parse_from(ok).is_ok(), "{ok:?}");
        }
    }
}
