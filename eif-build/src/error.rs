//! The one error type of the EIF builder. Every input problem is reported here, before the
//! image-format crate (which panics on I/O errors) is handed anything.

use std::path::PathBuf;

/// Why an image could not be built or measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EifError {
    /// A required input file does not exist.
    #[error("{what} not found: {path}")]
    Missing {
        /// What the file is for (e.g. "Nitro kernel blob `bzImage`").
        what: String,
        /// The path that was looked at.
        path: PathBuf,
    },
    /// An input exists but is not a regular file (a directory, a socket, ...).
    #[error("{what} is not a regular file: {path}")]
    NotAFile {
        /// What the file is for.
        what: String,
        /// The offending path.
        path: PathBuf,
    },
    /// An input directory does not exist or is not a directory.
    #[error("{what} is not a directory: {path}")]
    NotADirectory {
        /// What the directory is for.
        what: String,
        /// The offending path.
        path: PathBuf,
    },
    /// Reading, writing or inspecting a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The enclave executable is not an ELF file this tool understands.
    #[error("enclave executable {path} is not a valid ELF file: {reason}")]
    NotElf {
        /// The executable's path.
        path: PathBuf,
        /// What the ELF parser reported.
        reason: String,
    },
    /// The enclave executable is dynamically linked; the enclave's initramfs has no loader or libc.
    #[error(
        "enclave executable {path} is dynamically linked ({detail}); the enclave has no dynamic \
         loader or shared libraries. Build it statically: `cargo enclave-static` (see eif-build/README.md)"
    )]
    DynamicallyLinked {
        /// The executable's path.
        path: PathBuf,
        /// The interpreter and/or needed libraries that were found.
        detail: String,
    },
    /// The enclave executable is for a CPU architecture Nitro Enclaves do not run.
    #[error(
        "enclave executable {path} is for an unsupported architecture ({machine}); Nitro Enclaves run x86_64 or aarch64"
    )]
    UnsupportedArch {
        /// The executable's path.
        path: PathBuf,
        /// The ELF `e_machine` name.
        machine: String,
    },
    /// The enclave executable is not an executable (e.g. a shared library or object file).
    #[error("{path} is not an ELF executable (type {kind})")]
    NotExecutable {
        /// The file's path.
        path: PathBuf,
        /// The ELF `e_type` name.
        kind: String,
    },
    /// A file is too large for the newc cpio format (32-bit sizes).
    #[error("{path} is {size} bytes; a newc cpio entry holds at most 4 GiB")]
    TooLarge {
        /// The file's path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The enclave command line is empty or not representable in the init's `cmd` file.
    #[error("invalid enclave command: {0}")]
    InvalidCommand(String),
    /// An environment entry is malformed or not representable in the init's `env` file.
    #[error("invalid enclave environment entry {entry:?}: {reason}")]
    InvalidEnv {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The kernel command line blob is not valid for an EIF (not UTF-8, or contains NUL).
    #[error("kernel command line {path} is invalid: {reason}")]
    InvalidKernelCmdline {
        /// The `cmdline` blob's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `SOURCE_DATE_EPOCH` (or the given build time) is out of range.
    #[error("build time {0} is not a valid Unix timestamp")]
    InvalidBuildTime(i64),
    /// `SOURCE_DATE_EPOCH` is set but is not an integer.
    #[error("SOURCE_DATE_EPOCH={0:?} is not an integer number of seconds")]
    InvalidSourceDateEpoch(String),
    /// The signing certificate or private key could not be used.
    #[error("signing: {0}")]
    Signing(String),
    /// The image-format crate reported an error while writing or reading an EIF.
    #[error("EIF: {0}")]
    Image(String),
    /// An EIF's stored CRC does not match its contents.
    #[error("EIF {path} is corrupt: CRC32 in header {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// The EIF's path.
        path: PathBuf,
        /// The CRC the header claims.
        stored: u32,
        /// The CRC of the bytes on disk.
        computed: u32,
    },
    /// An EIF's header or section table is inconsistent with the file.
    #[error("EIF {path} is malformed: {reason}")]
    MalformedEif {
        /// The EIF's path.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
    /// The measurement JSON could not be produced or parsed.
    #[error("measurement JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl EifError {
    /// An [`EifError::Io`] for `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
