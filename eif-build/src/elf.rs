//! Vets the enclave executable: the enclave's initramfs holds nothing but this one file, so it must
//! be a statically linked ELF executable for an architecture Nitro runs. Never executes the file.

use std::path::Path;

use goblin::elf::Elf;
use goblin::elf::header::{EM_AARCH64, EM_X86_64, ET_DYN, ET_EXEC, machine_to_str};

use crate::error::EifError;

/// The CPU architecture of an enclave image; it selects the kernel blob and the EIF header flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64: kernel blob `bzImage`, EIF header flags 0.
    X86_64,
    /// aarch64 (Graviton): kernel blob `Image`, EIF header flag `EIF_HDR_ARCH_ARM64`.
    Aarch64,
}

impl Arch {
    /// The kernel blob's file name, as nitro-cli ships it for this architecture.
    #[must_use]
    pub fn kernel_blob(self) -> &'static str {
        match self {
            Self::X86_64 => "bzImage",
            Self::Aarch64 => "Image",
        }
    }

    /// The EIF header flags for this architecture.
    #[must_use]
    pub fn eif_flags(self) -> u16 {
        match self {
            Self::X86_64 => 0,
            Self::Aarch64 => aws_nitro_enclaves_image_format::defs::EIF_HDR_ARCH_ARM64,
        }
    }
}

/// Parses `bytes` (the contents of `path`) and returns its architecture if it is a statically
/// linked executable.
///
/// Dynamic means a `PT_INTERP` program header (an ELF interpreter such as `ld-linux`) or any
/// `DT_NEEDED` entry. A static-PIE (`ET_DYN` without either, what `-C target-feature=+crt-static`
/// produces on glibc) is static.
pub fn check_static_executable(path: &Path, bytes: &[u8]) -> Result<Arch, EifError> {
    let elf = Elf::parse(bytes).map_err(|e| EifError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;

    let arch = match elf.header.e_machine {
        EM_X86_64 => Arch::X86_64,
        EM_AARCH64 => Arch::Aarch64,
        other => {
            return Err(EifError::UnsupportedArch {
                path: path.to_path_buf(),
                machine: machine_to_str(other).to_owned(),
            });
        }
    };
    if !elf.is_64 {
        return Err(EifError::UnsupportedArch {
            path: path.to_path_buf(),
            machine: format!("32-bit {}", machine_to_str(elf.header.e_machine)),
        });
    }
    if elf.header.e_type != ET_EXEC && elf.header.e_type != ET_DYN {
        return Err(EifError::NotExecutable {
            path: path.to_path_buf(),
            kind: goblin::elf::header::et_to_str(elf.header.e_type).to_owned(),
        });
    }
    // ET_DYN without an entry point is a shared library, not a (static-)PIE executable.
    if elf.header.e_type == ET_DYN && elf.entry == 0 {
        return Err(EifError::NotExecutable {
            path: path.to_path_buf(),
            kind: "DYN (shared library, no entry point)".to_owned(),
        });
    }

    let mut reasons = Vec::new();
    if let Some(interp) = elf.interpreter {
        reasons.push(format!("interpreter {interp}"));
    }
    if !elf.libraries.is_empty() {
        reasons.push(format!("needs {}", elf.libraries.join(", ")));
    }
    if reasons.is_empty() {
        Ok(arch)
    } else {
        Err(EifError::DynamicallyLinked {
            path: path.to_path_buf(),
            detail: reasons.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_true_is_refused_as_dynamic() {
        // /bin/true on a Debian host is dynamically linked against libc.
        let path = Path::new("/bin/true");
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("note: /bin/true not present; skipping");
            return;
        };
        let err = check_static_executable(path, &bytes).unwrap_err();
        assert!(matches!(err, EifError::DynamicallyLinked { .. }), "{err}");
        assert!(err.to_string().contains("libc.so"), "{err}");
    }

    #[test]
    fn non_elf_is_refused() {
        let err = check_static_executable(Path::new("x.sh"), b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(matches!(err, EifError::NotElf { .. }), "{err}");
    }

    #[test]
    fn arch_selects_kernel_and_flags() {
        assert_eq!(Arch::X86_64.kernel_blob(), "bzImage");
        assert_eq!(Arch::Aarch64.kernel_blob(), "Image");
        assert_eq!(Arch::X86_64.eif_flags(), 0);
        assert_ne!(Arch::Aarch64.eif_flags(), 0);
    }
}
