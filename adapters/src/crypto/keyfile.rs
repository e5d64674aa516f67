//! Private key files: created atomically with mode 0600, loaded only when no
//! group or other permission bit is set.
//!
//! Contract: [`read_private`] refuses a file readable, writable or executable
//! by group/other, a non-regular file, and a file over `max_len` bytes; the
//! bytes it returns are zeroized on drop. [`create_private`] never replaces an
//! existing file: it writes a uniquely named temporary file created with mode
//! 0600 (the mode is set by `open(2)`, so there is no window in which the
//! secret is readable by others), fsyncs it, links it into place and fsyncs
//! the directory. If another process created the file first, it reports
//! [`Created::AlreadyExisted`] and the caller loads that file instead.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Permission bits that must be clear on a private key file.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The operator left the file open to other users.
    #[error(
        "{path} is accessible by group or others (mode {mode:o}); \
         run `chmod 600 {path}` and try again"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is a directory, a device or another non-regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is far larger than any key file.
    #[error("{path} is {len} bytes, more than the {max} a key file may hold")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The file system failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a private key file, or `Ok(None)` if it does not exist.
pub(crate) fn read_private(
    path: &Path,
    max_len: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, KeyFileError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    // Check the opened file, not the path, so a swap between check and read
    // cannot slip a different file past the permission check.
    let metadata = file.metadata().map_err(io_error(path))?;
    if !metadata.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if metadata.len() > max_len {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
            len: metadata.len(),
            max: max_len,
        });
    }
    // Sized up front so the buffer never reallocates (which would leave a
    // copy of the secret in freed memory); `take` guards a file that grew.
    let capacity = usize::try_from(max_len)
        .unwrap_or(usize::MAX)
        .min(64 * 1024);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    Read::by_ref(&mut file)
        .take(max_len)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    Ok(Some(bytes))
}

/// What [`create_private`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    /// The file now holds the given bytes.
    Written,
    /// Another writer created the file first; it was left alone.
    AlreadyExisted,
}

/// Creates `path` holding `bytes` with mode 0600, unless it already exists.
pub(crate) fn create_private(path: &Path, bytes: &[u8]) -> Result<Created, KeyFileError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_error(&dir))?;
    let temp = temp_path(path);
    let outcome = write_and_link(&temp, path, bytes);
    // The temporary name is only a staging link; whatever happened, drop it.
    let _ = fs::remove_file(&temp);
    let created = outcome?;
    File::open(&dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(&dir))?;
    Ok(created)
}

fn write_and_link(temp: &Path, path: &Path, bytes: &[u8]) -> Result<Created, KeyFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io_error(temp))?;
    // The umask can only clear bits; set 0600 exactly in case it also cleared the owner's.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_error(temp))?;
    file.write_all(bytes).map_err(io_error(temp))?;
    file.sync_all().map_err(io_error(temp))?;
    drop(file);
    // A hard link fails if the target exists, so a concurrent creator is never overwritten.
    match fs::hard_link(temp, path) {
        Ok(()) => Ok(Created::Written),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(Created::AlreadyExisted),
        // File systems without hard links: an atomic rename is the next best thing.
        Err(_) => fs::rename(temp, path)
            .map(|()| Created::Written)
            .map_err(io_error(path)),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_has_mode_0600_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("key.json");
        assert_eq!(create_private(&path, b"first").unwrap(), Created::Written);
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            create_private(&path, b"second").unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(
            read_private(&path, 64).unwrap().unwrap().as_slice(),
            b"first"
        );
        // No staging files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn read_refuses_group_readable_file_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create_private(&path, b"secret").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = read_private(&path, 64).unwrap_err();
        let text = error.to_string();
        assert!(matches!(
            error,
            KeyFileError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
    }

    #[test]
    fn read_refuses_directories_and_oversized_files_and_reports_missing_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_private(&dir.path().join("absent"), 64)
                .unwrap()
                .is_none()
        );
        let sub = dir.path().join("sub");
        fs::DirBuilder::new().mode(0o700).create(&sub).unwrap();
        assert!(matches!(
            read_private(&sub, 64),
            Err(KeyFileError::NotAFile { .. })
        ));
        let big = dir.path().join("big");
        create_private(&big, &[b'x'; 100]).unwrap();
        assert!(matches!(
            read_private(&big, 64),
            Err(KeyFileError::TooLarge { len: 100, .. })
        ));
    }
}
