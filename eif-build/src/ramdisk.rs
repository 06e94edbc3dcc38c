//! The two initramfs ramdisks of an EIF, as deterministic newc cpio archives, laid out the way
//! nitro-cli lays them out and the Nitro init (aws-nitro-enclaves-sdk-bootstrap `init.c`) expects.
//! Nothing host-dependent (owners, times, inode numbers, directory order) may reach the bytes.
//!
//! The cpio encoding is the `cpio` crate's newc `Builder`: every header field is set explicitly
//! here (it defaults nothing from the host), and entries are written in our sorted order.

use std::collections::BTreeMap;
use std::io::Write;

use crate::error::EifError;

/// Every entry's modification time: the epoch. A fixed value, not `SOURCE_DATE_EPOCH`, so that
/// PCRs never depend on the build environment.
const MTIME: u32 = 0;
/// `S_IFDIR` (linux `include/uapi/linux/stat.h`).
const S_IFDIR: u32 = 0o040_000;
/// `S_IFREG` (linux `include/uapi/linux/stat.h`).
const S_IFREG: u32 = 0o100_000;

/// The directories the Nitro init mounts over after it `chroot`s into `/rootfs` (`/dev`, `/proc`,
/// `/run`, `/sys`, `/tmp`), plus `/var`: the list nitro-cli's `yaml_generator.rs` puts in every
/// application ramdisk. They must exist, mode 0755.
pub const ROOTFS_DIRS: [&str; 6] = ["dev", "proc", "run", "sys", "tmp", "var"];

/// One entry of a ramdisk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    /// A directory with its permission bits.
    Dir(u32),
    /// A regular file with its permission bits and contents.
    File(u32, Vec<u8>),
}

/// A ramdisk under construction: paths (relative, `/`-separated, no leading slash) to entries.
///
/// A `BTreeMap` keeps entries in byte order of their paths, which also puts every directory
/// before its contents (a parent's path is a prefix of its children's).
#[derive(Clone, Debug, Default)]
pub struct Ramdisk {
    entries: BTreeMap<String, Node>,
}

impl Ramdisk {
    /// An empty ramdisk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory with permission bits `mode` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entries
            .insert(path.to_owned(), Node::Dir(mode & 0o7777));
        self
    }

    /// Adds a regular file with permission bits `mode` and `contents`.
    pub fn file(&mut self, path: &str, mode: u32, contents: Vec<u8>) -> &mut Self {
        self.entries
            .insert(path.to_owned(), Node::File(mode & 0o7777, contents));
        self
    }

    /// The entry paths in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Encodes the ramdisk as a newc cpio archive, terminated by `TRAILER!!!`.
    ///
    /// Inode numbers count from 1 in archive order; owners are 0:0; times are [`MTIME`];
    /// directories have 2 links and files 1 (the kernel's unpacker only links files with
    /// `nlink >= 2`, so distinct files never alias).
    pub fn to_cpio(&self) -> Result<Vec<u8>, EifError> {
        let mut out = Vec::new();
        for (index, (path, node)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(index)
                .ok()
                .and_then(|i| i.checked_add(1))
                .ok_or_else(|| EifError::Image("too many ramdisk entries".to_owned()))?;
            let (mode, nlink, contents): (u32, u32, &[u8]) = match node {
                Node::Dir(perm) => (S_IFDIR | perm, 2, &[]),
                Node::File(perm, data) => (S_IFREG | perm, 1, data.as_slice()),
            };
            let size = u32::try_from(contents.len()).map_err(|_| EifError::TooLarge {
                path: path.into(),
                size: u64::try_from(contents.len()).unwrap_or(u64::MAX),
            })?;
            let builder = cpio::NewcBuilder::new(path)
                .ino(ino)
                .mode(mode)
                .uid(0)
                .gid(0)
                .nlink(nlink)
                .mtime(MTIME)
                .dev_major(0)
                .dev_minor(0)
                .rdev_major(0)
                .rdev_minor(0);
            let mut writer = builder.write(&mut out, size);
            writer
                .write_all(contents)
                .and_then(|()| writer.finish().map(|_| ()))
                .map_err(|e| EifError::Image(format!("cpio entry {path}: {e}")))?;
        }
        cpio::newc::trailer(&mut out).map_err(|e| EifError::Image(format!("cpio trailer: {e}")))?;
        Ok(out)
    }
}

/// The bootstrap ramdisk (measured into PCR1 with the kernel and its command line): `dev/`,
/// `init` and `nsm.ko` at the root, as nitro-cli builds it. All modes 0755, as nitro-cli's.
#[must_use]
pub fn bootstrap(init: Vec<u8>, nsm_ko: Vec<u8>) -> Ramdisk {
    let mut ramdisk = Ramdisk::new();
    ramdisk
        .dir("dev", 0o755)
        .file("init", 0o755, init)
        .file("nsm.ko", 0o755, nsm_ko);
    ramdisk
}

/// The application ramdisk (measured into PCR2): the root file system under `rootfs/` with the
/// enclave executable at `rootfs/<name>` (mode 0755), the mount-point directories of
/// [`ROOTFS_DIRS`], and the init's `cmd` and `env` files (mode 0644) at the archive root.
///
/// `cmd` and `env` hold one argument / one `KEY=value` per line, each line ending in `\n`: the
/// init reads them with `getline`, strips the newline, and `execvpe`s `cmd` with `env`.
/// The caller has checked that no line contains a newline or NUL.
#[must_use]
pub fn application(exe_name: &str, exe: Vec<u8>, cmd: &[String], env: &[String]) -> Ramdisk {
    let mut ramdisk = Ramdisk::new();
    ramdisk.dir("rootfs", 0o755);
    for dir in ROOTFS_DIRS {
        ramdisk.dir(&format!("rootfs/{dir}"), 0o755);
    }
    ramdisk
        .file(&format!("rootfs/{exe_name}"), 0o755, exe)
        .file("cmd", 0o644, lines(cmd))
        .file("env", 0o644, lines(env));
    ramdisk
}

/// `items` as `\n`-terminated lines.
fn lines(items: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(item.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an archive back with the `cpio` crate's reader: (name, mode, uid, gid, nlink,
    /// mtime, ino, contents) per entry, trailer excluded.
    #[allow(clippy::type_complexity)]
    fn read_back(archive: &[u8]) -> Vec<(String, u32, u32, u32, u32, u32, u32, Vec<u8>)> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                let tail = reader.finish().unwrap();
                assert!(tail.is_empty(), "bytes after trailer");
                break;
            }
            let e = reader.entry().clone();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            out.push((
                e.name().to_owned(),
                e.mode(),
                e.uid(),
                e.gid(),
                e.nlink(),
                e.mtime(),
                e.ino(),
                data,
            ));
            rest = reader.finish().unwrap();
        }
        out
    }

    #[test]
    fn bootstrap_layout_matches_nitro_cli() {
        let archive = bootstrap(b"INIT".to_vec(), b"NSM".to_vec())
            .to_cpio()
            .unwrap();
        let entries = read_back(&archive);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "init", "nsm.ko"]);
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(entries[1].1, 0o100_755);
        assert_eq!(entries[1].7, b"INIT");
        assert_eq!(entries[2].1, 0o100_755);
        assert_eq!(entries[2].7, b"NSM");
        assert_eq!(archive.len() % 4, 0);
    }

    #[test]
    fn application_layout_has_rootfs_cmd_env() {
        let cmd = vec![
            "/ekms-enclave".to_owned(),
            "--vsock-port".to_owned(),
            "5000".to_owned(),
        ];
        let env = vec!["RUST_LOG=info".to_owned()];
        let archive = application("ekms-enclave", b"\x7fELF".to_vec(), &cmd, &env)
            .to_cpio()
            .unwrap();
        let entries = read_back(&archive);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "cmd",
                "env",
                "rootfs",
                "rootfs/dev",
                "rootfs/ekms-enclave",
                "rootfs/proc",
                "rootfs/run",
                "rootfs/sys",
                "rootfs/tmp",
                "rootfs/var"
            ]
        );
        let by_name = |n: &str| entries.iter().find(|e| e.0 == n).unwrap().clone();
        assert_eq!(by_name("cmd").7, b"/ekms-enclave\n--vsock-port\n5000\n");
        assert_eq!(by_name("cmd").1, 0o100_644);
        assert_eq!(by_name("env").7, b"RUST_LOG=info\n");
        assert_eq!(by_name("rootfs/ekms-enclave").1, 0o100_755);
        assert_eq!(by_name("rootfs/ekms-enclave").7, b"\x7fELF");
        assert_eq!(by_name("rootfs/tmp").1, 0o040_755);
        // Fixed owners, times, link counts and sequential inodes: nothing from the host.
        for (i, e) in entries.iter().enumerate() {
            assert_eq!((e.2, e.3, e.5), (0, 0, 0), "{}", e.0);
            assert_eq!(e.6, u32::try_from(i).unwrap() + 1);
            assert_eq!(e.4, if e.1 & S_IFDIR == S_IFDIR { 2 } else { 1 });
        }
    }

    #[test]
    fn encoding_is_independent_of_insertion_order() {
        let mut a = Ramdisk::new();
        a.file("b", 0o644, b"1".to_vec())
            .dir("a", 0o755)
            .file("a/x", 0o600, b"22".to_vec());
        let mut b = Ramdisk::new();
        b.file("a/x", 0o600, b"22".to_vec())
            .file("b", 0o644, b"1".to_vec())
            .dir("a", 0o755);
        assert_eq!(a.to_cpio().unwrap(), b.to_cpio().unwrap());
        assert_eq!(a.paths().collect::<Vec<_>>(), ["a", "a/x", "b"]);
    }

    #[test]
    fn newc_header_bytes_are_exact() {
        // One file "f" with "hi": a hand-checked newc header (magic 070701, 13 hex fields).
        let mut r = Ramdisk::new();
        r.file("f", 0o644, b"hi".to_vec());
        let archive = r.to_cpio().unwrap();
        let expected_header = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
            "00000002", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
            "f\0"
        );
        assert_eq!(
            &archive[..expected_header.len()],
            expected_header.as_bytes()
        );
        // 110-byte header + "f\0" = 112, already aligned; then "hi" + 2 bytes of padding.
        assert_eq!(&archive[112..116], b"hi\0\0");
        assert!(archive[116..].starts_with(b"070701"));
        assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    proptest::proptest! {
        /// Any set of files and directories encodes to an archive that the `cpio` crate's reader
        /// gives back entry for entry, in sorted order, whatever the insertion order.
        #[test]
        fn cpio_round_trip(
            entries in proptest::collection::btree_map(
                "[a-z]{1,8}(/[a-z]{1,8}){0,2}",
                proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                1..12,
            ),
            perm in 0_u32..0o7777,
        ) {
            let mut forward = Ramdisk::new();
            let mut backward = Ramdisk::new();
            for (path, data) in &entries {
                match data {
                    Some(d) => { forward.file(path, perm, d.clone()); }
                    None => { forward.dir(path, perm); }
                }
            }
            for (path, data) in entries.iter().rev() {
                match data {
                    Some(d) => { backward.file(path, perm, d.clone()); }
                    None => { backward.dir(path, perm); }
                }
            }
            let archive = forward.to_cpio().unwrap();
            proptest::prop_assert_eq!(&archive, &backward.to_cpio().unwrap());
            proptest::prop_assert_eq!(archive.len() % 4, 0);
            let read = read_back(&archive);
            proptest::prop_assert_eq!(read.len(), entries.len());
            for ((name, mode, .., data), (path, expected)) in read.iter().zip(&entries) {
                proptest::prop_assert_eq!(name, path);
                let (want_mode, want_data) = expected
                    .as_ref()
                    .map_or((S_IFDIR | perm, &[][..]), |d| (S_IFREG | perm, d.as_slice()));
                proptest::prop_assert_eq!(*mode, want_mode);
                proptest::prop_assert_eq!(data.as_slice(), want_data);
            }
        }
    }
}
