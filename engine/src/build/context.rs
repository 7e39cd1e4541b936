//! The build context: the tar the client sends (plain or gzip), unpacked
//! into a directory of the build's own, and `.dockerignore` applied.
//!
//! The tar is the client's and root writes it, so nothing in it is
//! trusted: paths are cleaned and `..` refused, every parent directory is
//! checked with `lstat` before use (nothing but this code writes to the
//! directory, so a check stays true), a symlink is created but never
//! followed, device nodes are skipped, and the total size and the number
//! of entries are capped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::BuildError;
use super::pattern::{self, IgnoreList};

/// How much a context may hold.
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    /// Bytes, uncompressed (file contents and tar headers).
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for ContextLimits {
    fn default() -> ContextLimits {
        ContextLimits {
            max_bytes: 4 << 30,
            max_entries: 500_000,
        }
    }
}

/// The largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 4 << 20;

/// A context unpacked on disk.
#[derive(Debug)]
pub struct Context {
    pub dir: PathBuf,
    /// The Dockerfile's text (read before `.dockerignore` could drop it).
    pub dockerfile: String,
}

/// Unpacks `stream` into `dir` (which must exist and be empty), reads the
/// Dockerfile `dockerfile` (a path relative to the context) and removes
/// what `.dockerignore` excludes.
pub fn unpack(
    stream: impl Read,
    dir: &Path,
    dockerfile: &str,
    limits: ContextLimits,
) -> Result<Context, BuildError> {
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let head = reader
        .fill_buf()
        .map_err(|e| BuildError::context(format!("reading the context: {e}")))?;
    let decoded: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(BuildError::context(
            "the context is compressed with bzip2 or xz: send it as a plain or gzip tar",
        ));
    } else {
        Box::new(reader)
    };
    let mut counted = Capped {
        inner: decoded,
        left: limits.max_bytes,
        exceeded: false,
    };
    let result = extract(&mut counted, dir, limits);
    if counted.exceeded {
        return Err(BuildError::context(format!(
            "the context is larger than {} bytes",
            limits.max_bytes
        )));
    }
    result?;
    let name = pattern::clean(dockerfile);
    let text = read_dockerfile(dir, &name)?;
    let ignore = match read_small(dir, ".dockerignore", MAX_DOCKERFILE) {
        Ok(Some(text)) => IgnoreList::parse(&text)
            .map_err(|e| BuildError::context(format!(".dockerignore: {e}")))?,
        Ok(None) => IgnoreList::default(),
        Err(e) => return Err(e),
    };
    if !ignore.is_empty() {
        apply_ignore(dir, "", &ignore)?;
    }
    Ok(Context {
        dir: dir.to_path_buf(),
        dockerfile: text,
    })
}

fn read_dockerfile(dir: &Path, name: &str) -> Result<String, BuildError> {
    match read_small(dir, name, MAX_DOCKERFILE)? {
        Some(text) => Ok(text),
        None => Err(BuildError::context(format!(
            "Cannot locate specified Dockerfile: {name}"
        ))),
    }
}

/// A regular file of the context by its clean relative path, never
/// through a symlink; `None` when missing.
fn read_small(dir: &Path, name: &str, max: u64) -> Result<Option<String>, BuildError> {
    let Ok(path) = checked_path(dir, name, false) else {
        return Ok(None);
    };
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(_) => return Ok(None),
    };
    if !meta.is_file() {
        return Err(BuildError::context(format!("{name} is not a regular file")));
    }
    if meta.len() > max {
        return Err(BuildError::context(format!(
            "{name} is larger than {max} bytes"
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| BuildError::context(format!("{name}: {e}")))?;
    let mut text = String::new();
    file.take(max)
        .read_to_string(&mut text)
        .map_err(|e| BuildError::context(format!("{name}: {e}")))?;
    Ok(Some(text))
}

/// A reader that stops (and says so) past a number of bytes.
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "the context is too large",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The components of a tar path, cleaned; `..` is refused.
fn components(raw: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "a path that is not UTF-8".to_owned())?;
    let mut out = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{text}: a path with '..'")),
            p if p.contains('\0') => return Err(format!("{text}: a NUL byte")),
            p => out.push(p.to_owned()),
        }
    }
    Ok(out)
}

/// `dir/name` once every parent directory of it below `dir` is known to be
/// a real directory (created when `create`).
fn checked_path(dir: &Path, name: &str, create: bool) -> Result<PathBuf, String> {
    let parts = components(name.as_bytes())?;
    let Some((last, parents)) = parts.split_last() else {
        return Ok(dir.to_path_buf());
    };
    let mut path = dir.to_path_buf();
    for part in parents {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{name}: {} is not a directory", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    path.push(last);
    Ok(path)
}

fn extract(stream: &mut dyn Read, dir: &Path, limits: ContextLimits) -> Result<(), BuildError> {
    let bad = |e: String| BuildError::context(e);
    let mut archive = tar::Archive::new(stream);
    let mut count = 0u64;
    let mut dir_times = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("the context is not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("the context is not a tar archive: {e}")))?;
        count += 1;
        if count > limits.max_entries {
            return Err(bad(format!(
                "the context has more than {} entries",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let parts = components(&raw).map_err(bad)?;
        if parts.is_empty() {
            continue;
        }
        let rel = parts.join("/");
        let path = checked_path(dir, &rel, true).map_err(bad)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0) as i64;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => remove(&path)?,
                    Err(_) => {}
                }
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(|e| bad(format!("{name}: {e}")))?;
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                dir_times.push((path, mtime));
            }
            T::Regular | T::Continuous => {
                remove_any(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                io::copy(&mut entry, &mut file).map_err(|e| {
                    if e.kind() == io::ErrorKind::FileTooLarge {
                        bad("the context is too large".to_owned())
                    } else {
                        bad(format!("{name}: {e}"))
                    }
                })?;
                file.flush().map_err(|e| bad(format!("{name}: {e}")))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                set_mtime(&file, mtime);
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(format!("{name}: a symlink without a target")))?
                    .into_owned();
                remove_any(&path)?;
                std::os::unix::fs::symlink(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&target),
                    &path,
                )
                .map_err(|e| bad(format!("{name}: {e}")))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(format!("{name}: a hard link without a target")))?
                    .into_owned();
                let target_rel = components(&target).map_err(bad)?.join("/");
                let target_path = checked_path(dir, &target_rel, false).map_err(bad)?;
                let meta = fs::symlink_metadata(&target_path)
                    .map_err(|_| bad(format!("{name}: hard link to a missing {target_rel}")))?;
                if !meta.is_file() {
                    return Err(bad(format!(
                        "{name}: hard link to {target_rel}, which is not a file"
                    )));
                }
                remove_any(&path)?;
                fs::hard_link(&target_path, &path).map_err(|e| bad(format!("{name}: {e}")))?;
            }
            // Devices, fifos and the like have no place in an image built
            // from a context.
            _ => {}
        }
    }
    for (path, mtime) in dir_times.into_iter().rev() {
        if let Ok(file) = File::open(&path) {
            set_mtime(&file, mtime);
        }
    }
    Ok(())
}

fn set_mtime(file: &File, mtime: i64) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    let _ = file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time));
}

fn remove(path: &Path) -> Result<(), BuildError> {
    fs::remove_file(path).map_err(|e| BuildError::context(format!("{}: {e}", path.display())))
}

/// Makes room for a new entry at `path`.
fn remove_any(path: &Path) -> Result<(), BuildError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)
            .map_err(|e| BuildError::context(format!("{}: {e}", path.display()))),
        Ok(_) => remove(path),
        Err(_) => Ok(()),
    }
}

/// Removes what `.dockerignore` excludes below `rel` (depth first, so an
/// exception can keep a file inside an excluded directory).
fn apply_ignore(dir: &Path, rel: &str, ignore: &IgnoreList) -> Result<(), BuildError> {
    let here = if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    let entries =
        fs::read_dir(&here).map_err(|e| BuildError::context(format!("{}: {e}", here.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| BuildError::context(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let excluded = ignore.excludes(&child);
        if is_dir && (!excluded || ignore.has_exceptions()) {
            apply_ignore(dir, &child, ignore)?;
            let empty = fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
            if excluded && empty {
                let _ = fs::remove_dir(entry.path());
            }
        } else if excluded {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            header.set_mtime(1_600_000_000);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            // Raw names, `..` included: what a hostile client could send.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const F: tar::EntryType = tar::EntryType::Regular;
    const D: tar::EntryType = tar::EntryType::Directory;
    const L: tar::EntryType = tar::EntryType::Symlink;

    #[test]
    fn unpacks_and_applies_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("Dockerfile", F, b"FROM scratch\n", ""),
            (".dockerignore", F, b"secret*\n*.log\n!keep.log\n", ""),
            ("./src/", D, b"", ""),
            ("src/main.c", F, b"int main;", ""),
            ("secret.txt", F, b"s", ""),
            ("a.log", F, b"l", ""),
            ("keep.log", F, b"k", ""),
            ("link", L, b"", "/etc/passwd"),
        ]);
        let ctx = unpack(&tar[..], dir.path(), "Dockerfile", ContextLimits::default()).unwrap();
        assert_eq!(ctx.dockerfile, "FROM scratch\n");
        assert!(dir.path().join("src/main.c").is_file());
        assert!(!dir.path().join("secret.txt").exists());
        assert!(!dir.path().join("a.log").exists());
        assert!(dir.path().join("keep.log").exists());
        assert!(dir.path().join("link").is_symlink());
    }

    #[test]
    fn gzip_contexts_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("sub/Dockerfile.dev", F, b"FROM x\n", "")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let ctx = unpack(
            &gz.finish().unwrap()[..],
            dir.path(),
            "./sub/Dockerfile.dev",
            ContextLimits::default(),
        )
        .unwrap();
        assert_eq!(ctx.dockerfile, "FROM x\n");
    }

    #[test]
    fn hostile_contexts_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        let cases: Vec<Vec<u8>> = vec![
            tar_of(&[("../escape", F, b"x", "")]),
            tar_of(&[("a/../../escape", F, b"x", "")]),
            // A symlink to a directory outside, then a file through it.
            tar_of(&[("out", L, b"", &target), ("out/file", F, b"x", "")]),
            tar_of(&[("hard", tar::EntryType::Link, b"", "../x")]),
        ];
        for tar in cases {
            let dir = tempfile::tempdir().unwrap();
            let err =
                unpack(&tar[..], dir.path(), "Dockerfile", ContextLimits::default()).unwrap_err();
            assert!(matches!(err, BuildError::Context(_)), "{err}");
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn limits_and_missing_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("big", F, &[0u8; 4096], "")]);
        let limits = ContextLimits {
            max_bytes: 2048,
            max_entries: 10,
        };
        let err = unpack(&tar[..], dir.path(), "Dockerfile", limits).unwrap_err();
        assert!(err.to_string().contains("larger than 2048"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("a", F, b"", ""), ("b", F, b"", "")]);
        let limits = ContextLimits {
            max_bytes: 1 << 20,
            max_entries: 1,
        };
        let err = unpack(&tar[..], dir.path(), "Dockerfile", limits).unwrap_err();
        assert!(err.to_string().contains("more than 1 entries"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("a", F, b"", "")]);
        let err = unpack(&tar[..], dir.path(), "Dockerfile", ContextLimits::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("Cannot locate specified Dockerfile"),
            "{err}"
        );
    }
}
