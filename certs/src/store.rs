//! Crash-safe writes and permission checks for the PKI directory.
//!
//! Every file is written to a temporary name in the same directory, fsync'd,
//! renamed over the target, and the directory fsync'd: a crash leaves either
//! the old file or the new one, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::PkiError;

/// Mode for private keys and the directory that holds them.
pub const KEY_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;
/// Mode for public material (certificates, CRL, index).
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `contents` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(PkiError::io(path))
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    if !dir.exists() {
        // Parents (the state root) can be passed through but not listed by
        // others: the engine's remapped container roots need that.
        if let Some(parent) = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(PkiError::io(parent))?;
        }
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(dir)
            .map_err(PkiError::io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(PkiError::io(dir))?;
    }
    Ok(())
}

/// A key directory must not be writable by group or others, nor readable by
/// others: anyone who can replace a file there can mint certificates.
pub fn check_private_dir(dir: &Path) -> Result<(), PkiError> {
    let mode = mode_of(dir)?;
    if mode & 0o027 != 0 {
        return Err(PkiError::BadPermissions {
            path: dir.to_path_buf(),
            mode,
            expected: "expected 0700 (no access for others, no write for the group)",
        });
    }
    Ok(())
}

/// A private key must be readable by its owner only.
pub fn check_key_file(path: &Path) -> Result<(), PkiError> {
    let mode = mode_of(path)?;
    if mode & 0o077 != 0 {
        return Err(PkiError::BadPermissions {
            path: path.to_path_buf(),
            mode,
            expected: "expected 0600 for a private key",
        });
    }
    Ok(())
}

fn mode_of(path: &Path) -> Result<u32, PkiError> {
    let meta = fs::metadata(path).map_err(PkiError::io(path))?;
    Ok(meta.permissions().mode() & 0o7777)
}

pub fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(PkiError::io(path))
}

/// An exclusive lock on the PKI directory, held for the length of one
/// command so that two admins cannot interleave changes to the index.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, PkiError> {
        let path: PathBuf = dir.join(".lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(KEY_MODE)
            .open(&path)
            .map_err(PkiError::io(&path))?;
        file.lock().map_err(PkiError::io(&path))?;
        Ok(DirLock { _file: file })
    }
}
