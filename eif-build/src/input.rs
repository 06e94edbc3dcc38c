//! Up-front checks on every input file. The image-format crate `expect`s on I/O errors, so nothing
//! reaches it that has not been opened and read here first.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use crate::error::EifError;

/// Checks that `path` is an existing, readable regular file and returns its size in bytes.
///
/// `what` names the file in the error message ("enclave executable", "Nitro blob `init`").
pub(crate) fn require_file(path: &Path, what: &str) -> Result<u64, EifError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EifError::Missing {
                what: what.to_owned(),
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(EifError::io("inspect", path, e)),
    };
    if !meta.is_file() {
        return Err(EifError::NotAFile {
            what: what.to_owned(),
            path: path.to_path_buf(),
        });
    }
    // Opening and reading one byte catches permission problems now rather than inside the
    // image-format crate, where they would be a panic.
    let mut file = File::open(path).map_err(|e| EifError::io("open", path, e))?;
    let mut probe = [0_u8; 1];
    file.read(&mut probe)
        .map_err(|e| EifError::io("read", path, e))?;
    Ok(meta.len())
}

/// Reads a whole input file after [`require_file`] has vetted it.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, EifError> {
    require_file(path, what)?;
    fs::read(path).map_err(|e| EifError::io("read", path, e))
}

/// Checks that `path` is an existing directory.
pub(crate) fn require_dir(path: &Path, what: &str) -> Result<(), EifError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(EifError::NotADirectory {
            what: what.to_owned(),
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(EifError::Missing {
            what: what.to_owned(),
            path: path.to_path_buf(),
        }),
        Err(e) => Err(EifError::io("inspect", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_reported_with_its_role() {
        let err = require_file(Path::new("/nonexistent/ekms/x"), "Nitro blob `init`").unwrap_err();
        assert!(matches!(err, EifError::Missing { .. }));
        assert!(err.to_string().contains("Nitro blob `init` not found"));
    }

    #[test]
    fn directory_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = require_file(dir.path(), "enclave executable").unwrap_err();
        assert!(matches!(err, EifError::NotAFile { .. }));
    }

    #[test]
    fn file_is_not_a_directory() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = require_dir(file.path(), "blobs directory").unwrap_err();
        assert!(matches!(err, EifError::NotADirectory { .. }));
        let err = require_dir(Path::new("/nonexistent/ekms"), "blobs directory").unwrap_err();
        assert!(matches!(err, EifError::Missing { .. }));
    }

    #[test]
    fn unusable_path_is_an_io_error() {
        // A NUL inside a path is refused by the OS layer (InvalidInput), not "not found".
        let err = require_file(Path::new("bad\0path"), "x").unwrap_err();
        assert!(
            matches!(
                err,
                EifError::Io {
                    action: "inspect",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn readable_file_reports_its_size() {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), b"abc").unwrap();
        assert_eq!(require_file(file.path(), "x").unwrap(), 3);
        assert_eq!(read_file(file.path(), "x").unwrap(), b"abc");
    }
}
