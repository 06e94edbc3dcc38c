//! The Nitro kernel blobs as nitro-cli ships them (`/usr/share/nitro_enclaves/blobs`): the kernel,
//! its config, its command line, the init and the NSM driver. Read and checked here, never altered.

use std::path::{Path, PathBuf};

use crate::elf::Arch;
use crate::error::EifError;
use crate::input::{read_file, require_dir, require_file};

/// Where nitro-cli's packages install the blobs.
pub const DEFAULT_BLOBS_DIR: &str = "/usr/share/nitro_enclaves/blobs";

/// The OS and kernel version written into the EIF metadata when the kernel config has no
/// recognisable header line (the image-format crate's placeholder).
const UNKNOWN: &str = "Unknown";

/// The vetted contents of a blobs directory for one architecture.
#[derive(Clone)]
pub struct NitroBlobs {
    /// Path of the kernel image (`bzImage` or `Image`); the image-format crate reads it itself.
    pub kernel: PathBuf,
    /// The kernel command line, trimmed of surrounding whitespace as nitro-cli does.
    pub cmdline: String,
    /// The Nitro init executable.
    pub init: Vec<u8>,
    /// The NSM kernel module.
    pub nsm_ko: Vec<u8>,
    /// Operating system named by the kernel config (e.g. `Linux`), for the EIF metadata.
    pub os: String,
    /// Kernel version named by the kernel config (e.g. `4.14.256`), for the EIF metadata.
    pub kernel_version: String,
}

impl std::fmt::Debug for NitroBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NitroBlobs")
            .field("kernel", &self.kernel)
            .field("cmdline", &self.cmdline)
            .field("init_len", &self.init.len())
            .field("nsm_ko_len", &self.nsm_ko.len())
            .field("os", &self.os)
            .field("kernel_version", &self.kernel_version)
            .finish()
    }
}

impl NitroBlobs {
    /// Loads and checks the blobs for `arch` from `dir`: every file must exist and be readable.
    pub fn load(dir: &Path, arch: Arch) -> Result<Self, EifError> {
        require_dir(dir, "Nitro blobs directory")?;
        let kernel_name = arch.kernel_blob();
        let kernel = dir.join(kernel_name);
        require_file(&kernel, &format!("Nitro kernel blob `{kernel_name}`"))?;
        let config_name = format!("{kernel_name}.config");
        let config = read_file(
            &dir.join(&config_name),
            &format!("Nitro blob `{config_name}`"),
        )?;
        let cmdline_path = dir.join("cmdline");
        let cmdline = read_file(&cmdline_path, "Nitro blob `cmdline`")?;
        let init = read_file(&dir.join("init"), "Nitro blob `init`")?;
        let nsm_ko = read_file(&dir.join("nsm.ko"), "Nitro blob `nsm.ko`")?;

        let cmdline = String::from_utf8(cmdline).map_err(|_| EifError::InvalidKernelCmdline {
            path: cmdline_path.clone(),
            reason: "not UTF-8",
        })?;
        let cmdline = cmdline.trim().to_owned();
        // The image-format crate turns the command line into a C string and panics on NUL.
        if cmdline.contains('\0') {
            return Err(EifError::InvalidKernelCmdline {
                path: cmdline_path,
                reason: "contains a NUL byte",
            });
        }
        let (os, kernel_version) = kernel_identity(&config);
        Ok(Self {
            kernel,
            cmdline,
            init,
            nsm_ko,
            os,
            kernel_version,
        })
    }
}

/// OS and kernel version from a kernel `.config`, whose third line reads
/// `# Linux/x86_64 4.14.256-209.484.amzn2.x86_64 Kernel Configuration`. Split on ' ', '/' and
/// '-' as the image-format crate's `generate_build_info` does (which panics on a short file,
/// hence this copy of the rule): word 1 is the OS, word 3 the version.
fn kernel_identity(config: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(config);
    let line = text.lines().nth(2).unwrap_or_default();
    let words: Vec<&str> = line.split([' ', '/', '-']).collect();
    let pick = |i: usize| {
        words
            .get(i)
            .filter(|w| !w.is_empty())
            .map_or_else(|| UNKNOWN.to_owned(), |w| (*w).to_owned())
    };
    (pick(1), pick(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_identity_from_nitro_config_header() {
        let config = b"#\n# Automatically generated file; DO NOT EDIT.\n\
                       # Linux/x86_64 4.14.256-209.484.amzn2.x86_64 Kernel Configuration\n#\n";
        assert_eq!(
            kernel_identity(config),
            ("Linux".to_owned(), "4.14.256".to_owned())
        );
        assert_eq!(
            kernel_identity(b"short"),
            ("Unknown".to_owned(), "Unknown".to_owned())
        );
    }

    fn stand_in_blobs(dir: &Path) {
        for (name, data) in [
            ("bzImage", &b"kernel"[..]),
            (
                "bzImage.config",
                b"#\n#\n# Linux/x86_64 6.6.79 Kernel Configuration\n",
            ),
            ("cmdline", b"console=ttyS0 reboot=k\n"),
            ("init", b"init"),
            ("nsm.ko", b"nsm"),
        ] {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    #[test]
    fn loads_and_trims_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        stand_in_blobs(dir.path());
        let blobs = NitroBlobs::load(dir.path(), Arch::X86_64).unwrap();
        assert_eq!(blobs.cmdline, "console=ttyS0 reboot=k");
        assert_eq!(blobs.kernel_version, "6.6.79");
        assert_eq!(blobs.init, b"init");
    }

    #[test]
    fn each_missing_blob_is_named() {
        for name in ["bzImage", "bzImage.config", "cmdline", "init", "nsm.ko"] {
            let dir = tempfile::tempdir().unwrap();
            stand_in_blobs(dir.path());
            std::fs::remove_file(dir.path().join(name)).unwrap();
            let err = NitroBlobs::load(dir.path(), Arch::X86_64).unwrap_err();
            assert!(matches!(err, EifError::Missing { .. }), "{err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn aarch64_wants_image_not_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        stand_in_blobs(dir.path());
        let err = NitroBlobs::load(dir.path(), Arch::Aarch64).unwrap_err();
        assert!(err.to_string().contains("`Image`"), "{err}");
    }

    #[test]
    fn cmdline_with_nul_or_bad_utf8_is_refused() {
        for bad in [&b"a\0b"[..], b"\xff\xfe"] {
            let dir = tempfile::tempdir().unwrap();
            stand_in_blobs(dir.path());
            std::fs::write(dir.path().join("cmdline"), bad).unwrap();
            let err = NitroBlobs::load(dir.path(), Arch::X86_64).unwrap_err();
            assert!(
                matches!(err, EifError::InvalidKernelCmdline { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_directory_is_reported() {
        let err = NitroBlobs::load(Path::new("/nonexistent/blobs"), Arch::X86_64).unwrap_err();
        assert!(
            err.to_string().contains("Nitro blobs directory not found"),
            "{err}"
        );
    }
}
