//! A read-only view of a file tree made of layer directories, top first,
//! as overlayfs would merge them (a 0/0 character device hides a name
//! below it, a `trusted.overlay.opaque` directory hides what is below it,
//! a non-directory hides a directory's contents), without mounting
//! anything. The build context is a tree of one layer.
//!
//! Paths resolve inside the tree: a symlink is read and resolved by this
//! code against the tree's root, never followed by the kernel, so an
//! image's `/etc -> /host/etc` cannot lead outside. The layer directories
//! are root's and do not change while read.

use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::userns::IdMap;

/// How many symlinks one resolution may go through (Linux's limit).
const MAX_LINKS: usize = 40;

/// An entry of the tree: where it is on the host, and its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    pub host: PathBuf,
    pub meta: Metadata,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }

    pub fn is_symlink(&self) -> bool {
        self.meta.file_type().is_symlink()
    }

    /// Opens a regular file for reading, never through a symlink.
    pub fn open(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.host)
    }
}

/// What a name is in one layer.
enum Hit {
    /// Absent here; `opaque` when a directory above it in this layer hides
    /// the layers below.
    Missing {
        opaque: bool,
    },
    /// Deleted here (and so in the merged view).
    Hidden,
    Found(Entry),
}

/// Layer directories, top first, and the ids their files are owned by.
#[derive(Debug, Clone)]
pub struct Tree {
    layers: Vec<PathBuf>,
    map: IdMap,
}

impl Tree {
    pub fn new(layers: Vec<PathBuf>, map: IdMap) -> Tree {
        Tree { layers, map }
    }

    /// The container's uid and gid of an entry.
    pub fn ids(&self, entry: &Entry) -> (u32, u32) {
        let uid = entry
            .meta
            .uid()
            .checked_sub(self.map.uid)
            .filter(|u| *u < self.map.size);
        let gid = entry
            .meta
            .gid()
            .checked_sub(self.map.gid)
            .filter(|g| *g < self.map.size);
        (uid.unwrap_or(65534), gid.unwrap_or(65534))
    }

    fn in_layer(layer: &Path, parts: &[String]) -> Hit {
        let mut path = layer.to_path_buf();
        let mut opaque = false;
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                return Hit::Missing { opaque };
            };
            if is_whiteout(&meta) {
                return Hit::Hidden;
            }
            if i + 1 == parts.len() {
                return Hit::Found(Entry { host: path, meta });
            }
            if !meta.is_dir() {
                // A file where a directory was: nothing below it shows.
                return Hit::Hidden;
            }
            opaque |= is_opaque(&path);
        }
        Hit::Missing { opaque }
    }

    /// The entry at exactly `parts` (no symlink resolved), if any.
    pub fn lookup(&self, parts: &[String]) -> Option<Entry> {
        if parts.is_empty() {
            let layer = self.layers.first()?;
            return fs::symlink_metadata(layer).ok().map(|meta| Entry {
                host: layer.clone(),
                meta,
            });
        }
        for layer in &self.layers {
            match Tree::in_layer(layer, parts) {
                Hit::Found(entry) => return Some(entry),
                Hit::Hidden | Hit::Missing { opaque: true } => return None,
                Hit::Missing { opaque: false } => {}
            }
        }
        None
    }

    /// Resolves `path` (absolute in the tree, or relative to its root)
    /// through symlinks, the last one too when `follow` is set. Returns the
    /// real components; a missing component ends the resolution and the
    /// rest is kept as written. A non-directory in the middle is an error.
    pub fn resolve(&self, path: &str, follow: bool) -> Result<Vec<String>, String> {
        let mut todo: Vec<String> = split(path).into_iter().rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            done.push(part);
            let last = todo.is_empty();
            let Some(entry) = self.lookup(&done) else {
                // Missing: the rest cannot go through symlinks here.
                done.extend(todo.drain(..).rev().filter(|p| p != ".."));
                return Ok(done);
            };
            if entry.is_symlink() && (!last || follow) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("{path}: too many levels of symbolic links"));
                }
                let target = fs::read_link(&entry.host).map_err(|e| format!("{path}: {e}"))?;
                let target = target.as_os_str().as_bytes();
                let target = String::from_utf8_lossy(target).into_owned();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(split(&target).into_iter().rev());
            } else if !last && !entry.is_dir() {
                return Err(format!("{path}: /{} is not a directory", done.join("/")));
            }
        }
        Ok(done)
    }

    /// The entries of the directory at exactly `parts`, merged across the
    /// layers, sorted by name.
    pub fn read_dir(&self, parts: &[String]) -> Vec<(String, Entry)> {
        let mut seen: std::collections::BTreeMap<String, Option<Entry>> = Default::default();
        for layer in &self.layers {
            let (dir, stop) = if parts.is_empty() {
                (layer.clone(), false)
            } else {
                match Tree::in_layer(layer, parts) {
                    Hit::Found(entry) if entry.is_dir() => {
                        let opaque = is_opaque(&entry.host) || ancestors_opaque(layer, parts);
                        (entry.host, opaque)
                    }
                    Hit::Found(_) | Hit::Hidden | Hit::Missing { opaque: true } => break,
                    Hit::Missing { opaque: false } => continue,
                }
            };
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    if seen.contains_key(&name) {
                        continue;
                    }
                    let host = entry.path();
                    let value = fs::symlink_metadata(&host)
                        .ok()
                        .filter(|m| !is_whiteout(m))
                        .map(|meta| Entry { host, meta });
                    seen.insert(name, value);
                }
            }
            if stop {
                break;
            }
        }
        seen.into_iter()
            .filter_map(|(name, entry)| entry.map(|e| (name, e)))
            .collect()
    }

    /// Every entry below the directory `parts`, parents first, with its
    /// path relative to it.
    pub fn walk(&self, parts: &[String]) -> Vec<(Vec<String>, Entry)> {
        let mut out = Vec::new();
        let mut dirs = vec![Vec::<String>::new()];
        while let Some(rel) = dirs.pop() {
            let mut full = parts.to_vec();
            full.extend(rel.iter().cloned());
            for (name, entry) in self.read_dir(&full) {
                let mut child = rel.clone();
                child.push(name);
                if entry.is_dir() {
                    dirs.push(child.clone());
                }
                out.push((child, entry));
            }
        }
        // Components compare so that a directory comes before its contents.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A small regular file's content (`/etc/passwd`), resolved in the tree.
    pub fn read_file(&self, path: &str, max: u64) -> Option<Vec<u8>> {
        let parts = self.resolve(path, true).ok()?;
        let entry = self.lookup(&parts)?;
        if !entry.meta.is_file() || entry.meta.len() > max {
            return None;
        }
        let mut bytes = Vec::new();
        entry.open().ok()?.take(max).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }
}

/// `a//b/./c` → `["a", "b", "c"]` (`..` kept for the resolver).
pub fn split(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect()
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn ancestors_opaque(layer: &Path, parts: &[String]) -> bool {
    let mut path = layer.to_path_buf();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(part);
        if is_opaque(&path) {
            return true;
        }
    }
    false
}

/// Whether overlayfs marked the directory opaque.
pub fn is_opaque(path: &Path) -> bool {
    xattr(path, c"trusted.overlay.opaque").is_some_and(|v| v == b"y")
}

/// An extended attribute of `path` itself (never a symlink's target).
pub fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated; buf is valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn whiteout(path: &Path) -> bool {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; a 0/0 character device, as overlayfs makes.
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) == 0 }
    }

    fn names(tree: &Tree, path: &str) -> Vec<String> {
        tree.read_dir(&split(path))
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn merges_layers_like_overlayfs() {
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        write(&bottom.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
        write(&bottom.join("etc/gone"), "x");
        write(&bottom.join("data/old"), "x");
        write(&bottom.join("file-then-dir"), "x");
        write(&top.join("etc/new"), "x");
        write(&top.join("file-then-dir/inside"), "x");
        fs::create_dir_all(top.join("data")).unwrap();
        fs::create_dir_all(bottom.join("usr/lib")).unwrap();
        symlink("usr/lib", bottom.join("lib")).unwrap();
        symlink("/etc", bottom.join("usr/lib/etc-link")).unwrap();
        symlink("../../../../etc", bottom.join("usr/deep")).unwrap();
        write(&bottom.join("usr/lib/libc.so"), "elf");
        let can_whiteout = whiteout(&top.join("etc/gone"));
        let tree = Tree::new(vec![top.clone(), bottom.clone()], IdMap::HOST);
        assert_eq!(
            tree.read_file("/lib/etc-link/passwd", 100).unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(tree.read_file("usr/deep/passwd", 100).unwrap().len(), 26);
        assert_eq!(
            tree.resolve("/lib/libc.so", true).unwrap(),
            ["usr", "lib", "libc.so"]
        );
        assert_eq!(tree.resolve("/lib", false).unwrap(), ["lib"]);
        assert_eq!(
            tree.resolve("/lib/missing/x", true).unwrap(),
            ["usr", "lib", "missing", "x"]
        );
        assert!(tree.resolve("/etc/passwd/x", true).is_err());
        assert_eq!(names(&tree, "/file-then-dir"), ["inside"]);
        if can_whiteout {
            assert_eq!(names(&tree, "/etc"), ["new", "passwd"]);
            assert!(tree.lookup(&split("etc/gone")).is_none());
        }
        assert_eq!(names(&tree, "/data"), ["old"]);
        let walked: Vec<String> = tree
            .walk(&split("/usr"))
            .into_iter()
            .map(|(p, _)| p.join("/"))
            .collect();
        assert_eq!(walked, ["deep", "lib", "lib/etc-link", "lib/libc.so"]);
    }
}
