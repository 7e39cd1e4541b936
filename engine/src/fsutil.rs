//! Crash-safe file writes: temporary file, fsync, rename, fsync of the
//! directory. A crash leaves the old content or the new, never half.
//!
//! Where an answer waits on the write (a create, a start, an exit), the
//! write is [`write_json_unsynced`]: atomic against a crash of the process
//! (temporary file and rename), made durable by [`sync`] once the answer
//! is out, so no client waits on the disk's journal.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    write_atomic(path, &json_bytes(value)?)
}

fn json_bytes(value: &impl serde::Serialize) -> std::io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replaces `path` atomically (temporary file, rename) without waiting for
/// the disk; [`sync`] makes it durable later.
pub fn write_json_unsynced(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json_bytes(value)?)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a file (or directory) and its name in its directory durable.
pub fn sync(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// [`sync`] of each path, in order, on a thread of its own; a path that is
/// gone by then (removed meanwhile) is skipped.
pub fn sync_later(paths: Vec<std::path::PathBuf>) {
    std::thread::spawn(move || {
        for path in paths {
            let _ = sync(&path);
        }
    });
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
