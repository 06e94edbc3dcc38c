//! Test fixtures: stand-in Nitro blobs and tiny static ELF executables, made by the tests
//! themselves. These machines have no Nitro blobs and nothing is downloaded: the "kernel",
//! "init" and "nsm.ko" below are placeholder bytes, good for measuring, not for booting.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test fixtures shared by several test crates; a failure here is a test failure"
)]

use std::path::{Path, PathBuf};

use ekms_eif_build::{BuildOptions, BuildOutcome};

/// Writes stand-in blobs (`bzImage`, `bzImage.config`, `cmdline`, `init`, `nsm.ko`) into `dir`.
/// `kernel` lets a test vary the kernel.
pub fn stand_in_blobs(dir: &Path, kernel: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let files: [(&str, &[u8]); 5] = [
        ("bzImage", kernel),
        (
            "bzImage.config",
            b"#\n# Automatically generated file; DO NOT EDIT.\n\
              # Linux/x86_64 6.6.79 Kernel Configuration\n#\n",
        ),
        (
            "cmdline",
            b"reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on\n",
        ),
        ("init", b"STAND-IN NITRO INIT (not executable)"),
        ("nsm.ko", b"STAND-IN NSM MODULE"),
    ];
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// A minimal statically linked x86_64 ELF executable: ELF header, one `PT_LOAD` program header,
/// and `mov edi, exit_code; mov eax, 60 (exit); syscall`. No `PT_INTERP`, no dynamic section.
/// Layout from the System V gABI (ELF-64 header 64 bytes, program header 56 bytes).
pub fn tiny_static_elf(exit_code: u8) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    let code = [
        0xbf, exit_code, 0, 0, 0, // mov edi, exit_code
        0xb8, 60, 0, 0, 0, // mov eax, 60 (SYS_exit)
        0x0f, 0x05, // syscall
    ];
    let total = 64 + 56 + code.len() as u64;
    let mut elf = Vec::new();
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2_u16.to_le_bytes()); // e_type = ET_EXEC
    elf.extend_from_slice(&62_u16.to_le_bytes()); // e_machine = EM_X86_64
    elf.extend_from_slice(&1_u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + 64 + 56).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64_u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0_u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0_u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64_u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56_u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1_u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64_u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0_u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0_u16.to_le_bytes()); // e_shstrndx
    assert_eq!(elf.len(), 64);
    elf.extend_from_slice(&1_u32.to_le_bytes()); // p_type = PT_LOAD
    elf.extend_from_slice(&5_u32.to_le_bytes()); // p_flags = R|X
    elf.extend_from_slice(&0_u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&total.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&total.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000_u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&code);
    elf
}

/// A scratch directory with stand-in blobs in `blobs/` and a tiny static `ekms-enclave`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        stand_in_blobs(&dir.path().join("blobs"), b"STAND-IN KERNEL");
        let fixture = Self { dir };
        fixture.write_enclave(&tiny_static_elf(0));
        fixture
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn blobs(&self) -> PathBuf {
        self.path("blobs")
    }

    pub fn enclave(&self) -> PathBuf {
        self.path("ekms-enclave")
    }

    pub fn write_enclave(&self, bytes: &[u8]) {
        std::fs::write(self.enclave(), bytes).unwrap();
    }

    pub fn options(&self, output: &str) -> BuildOptions {
        BuildOptions {
            enclave_bin: self.enclave(),
            blobs_dir: self.blobs(),
            output: self.path(output),
            cmd: None,
            env: Vec::new(),
            signing: None,
            build_time: 0,
        }
    }

    pub fn build(&self, output: &str) -> BuildOutcome {
        ekms_eif_build::build(&self.options(output)).unwrap()
    }
}
