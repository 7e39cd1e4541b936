//! Layer tars a build makes: the changes a `RUN` left in its container's
//! overlayfs upper directory (deletions become OCI whiteouts), and the
//! files `COPY` and `ADD` put in place. Owners are written as the
//! container sees them; the store shifts them again when it unpacks.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::BuildError;
use super::tree::{is_opaque, xattr};
use crate::userns::IdMap;

/// The owner, mode and time of an entry, as the container sees them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attrs {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    pub mtime: u64,
}

/// A layer tar being written to a file.
pub struct LayerTar {
    builder: tar::Builder<BufWriter<File>>,
    path: PathBuf,
    entries: u64,
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> BuildError + '_ {
    move |e| BuildError::Engine(format!("writing the layer {}: {e}", path.display()))
}

impl LayerTar {
    pub fn create(path: &Path) -> Result<LayerTar, BuildError> {
        let file = File::create(path).map_err(io_error(path))?;
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 16, file));
        builder.mode(tar::HeaderMode::Complete);
        Ok(LayerTar {
            builder,
            path: path.to_path_buf(),
            entries: 0,
        })
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn header(kind: tar::EntryType, attrs: Attrs, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_uid(attrs.uid.into());
        header.set_gid(attrs.gid.into());
        header.set_mode(attrs.mode & 0o7777);
        header.set_mtime(attrs.mtime);
        header.set_size(size);
        header
    }

    fn append(
        &mut self,
        mut header: tar::Header,
        name: &str,
        data: impl Read,
    ) -> Result<(), BuildError> {
        self.entries += 1;
        self.builder
            .append_data(&mut header, name, data)
            .map_err(io_error(&self.path))
    }

    pub fn dir(&mut self, name: &str, attrs: Attrs) -> Result<(), BuildError> {
        let header = LayerTar::header(tar::EntryType::Directory, attrs, 0);
        self.append(header, &format!("{name}/"), io::empty())
    }

    pub fn file(
        &mut self,
        name: &str,
        attrs: Attrs,
        size: u64,
        data: impl Read,
    ) -> Result<(), BuildError> {
        let header = LayerTar::header(tar::EntryType::Regular, attrs, size);
        // A file that changed size while read would corrupt the tar.
        let mut exact = data.take(size);
        let mut counted = Counted {
            inner: &mut exact,
            n: 0,
        };
        self.append(header, name, &mut counted)?;
        if counted.n != size {
            return Err(BuildError::Engine(format!(
                "{name} changed while it was read"
            )));
        }
        Ok(())
    }

    pub fn symlink(&mut self, name: &str, target: &str, attrs: Attrs) -> Result<(), BuildError> {
        self.entries += 1;
        let mut header = LayerTar::header(tar::EntryType::Symlink, attrs, 0);
        self.builder
            .append_link(&mut header, name, target)
            .map_err(io_error(&self.path))
    }

    pub fn hardlink(&mut self, name: &str, target: &str, attrs: Attrs) -> Result<(), BuildError> {
        self.entries += 1;
        let mut header = LayerTar::header(tar::EntryType::Link, attrs, 0);
        self.builder
            .append_link(&mut header, name, target)
            .map_err(io_error(&self.path))
    }

    pub fn fifo(&mut self, name: &str, attrs: Attrs) -> Result<(), BuildError> {
        let header = LayerTar::header(tar::EntryType::Fifo, attrs, 0);
        self.append(header, name, io::empty())
    }

    /// An OCI whiteout: `name` is deleted.
    pub fn whiteout(&mut self, name: &str) -> Result<(), BuildError> {
        let (parent, base) = match name.rsplit_once('/') {
            Some((p, b)) => (format!("{p}/"), b),
            None => (String::new(), name),
        };
        let attrs = Attrs {
            uid: 0,
            gid: 0,
            mode: 0o600,
            mtime: 0,
        };
        let header = LayerTar::header(tar::EntryType::Regular, attrs, 0);
        self.append(header, &format!("{parent}.wh.{base}"), io::empty())
    }

    /// An OCI opaque marker: nothing below `dir` in lower layers shows.
    pub fn opaque(&mut self, dir: &str) -> Result<(), BuildError> {
        let attrs = Attrs {
            uid: 0,
            gid: 0,
            mode: 0o600,
            mtime: 0,
        };
        let header = LayerTar::header(tar::EntryType::Regular, attrs, 0);
        self.append(header, &format!("{dir}/.wh..wh..opq"), io::empty())
    }

    pub fn finish(self) -> Result<PathBuf, BuildError> {
        let path = self.path.clone();
        let mut out = self.builder.into_inner().map_err(io_error(&path))?;
        out.flush().map_err(io_error(&path))?;
        Ok(path)
    }
}

struct Counted<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// What the runtime creates in a container's root filesystem as mount
/// points (Docker keeps these in a layer of its own that is never
/// committed): left out of a `RUN`'s layer while they are empty.
const MOUNT_POINT_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];
const MOUNT_POINT_DIRS: [&str; 3] = ["proc", "sys", "dev"];

/// Writes the changes in the overlayfs upper directory `upper` (owned by
/// `map`'s ids) to `out`. The container has exited: nothing changes the
/// directory while it is read.
pub fn diff_upper(upper: &Path, map: &IdMap, out: &mut LayerTar) -> Result<(), BuildError> {
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    diff_dir(upper, "", map, out, &mut links)
}

fn diff_dir(
    dir: &Path,
    rel: &str,
    map: &IdMap,
    out: &mut LayerTar,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<(), BuildError> {
    let read = |e: io::Error| BuildError::Engine(format!("reading {}: {e}", dir.display()));
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return Err(BuildError::Engine(format!(
                "{}: a file name that is not UTF-8",
                dir.display()
            )));
        };
        let path = dir.join(&name);
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(read)?;
        let kind = meta.file_type();
        if MOUNT_POINT_FILES.contains(&rel.as_str()) && meta.is_file() && meta.len() == 0 {
            continue;
        }
        if MOUNT_POINT_DIRS.contains(&rel.as_str())
            && meta.is_dir()
            && fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none())
        {
            continue;
        }
        for attribute in [c"trusted.overlay.redirect", c"trusted.overlay.metacopy"] {
            if xattr(&path, attribute).is_some() {
                return Err(BuildError::Engine(format!(
                    "{rel}: overlayfs redirect_dir or metacopy is on; builds need them off"
                )));
            }
        }
        let attrs = Attrs {
            uid: meta
                .uid()
                .checked_sub(map.uid)
                .filter(|u| *u < map.size)
                .unwrap_or(65534),
            gid: meta
                .gid()
                .checked_sub(map.gid)
                .filter(|g| *g < map.size)
                .unwrap_or(65534),
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime().max(0) as u64,
        };
        if kind.is_char_device() && meta.rdev() == 0 {
            out.whiteout(&rel)?;
        } else if kind.is_dir() {
            out.dir(&rel, attrs)?;
            if is_opaque(&path) {
                out.opaque(&rel)?;
            }
            diff_dir(&path, &rel, map, out, links)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    out.hardlink(&rel, first, attrs)?;
                    continue;
                }
                links.insert(key, rel.clone());
            }
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags_nofollow()
                .open(&path)
                .map_err(read)?;
            out.file(&rel, attrs, meta.len(), file)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(read)?;
            let target = target.to_str().ok_or_else(|| {
                BuildError::Engine(format!("{rel}: a link target that is not UTF-8"))
            })?;
            out.symlink(&rel, target, attrs)?;
        } else if kind.is_fifo() {
            out.fifo(&rel, attrs)?;
        } else if kind.is_socket() {
            // A socket left behind means nothing in an image.
        } else {
            return Err(BuildError::Engine(format!(
                "{rel}: device nodes cannot be part of an image built here"
            )));
        }
    }
    Ok(())
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_directories_become_layers_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("app/sub")).unwrap();
        fs::write(upper.join("app/sub/file"), b"hello").unwrap();
        fs::hard_link(upper.join("app/sub/file"), upper.join("app/link")).unwrap();
        std::os::unix::fs::symlink("sub/file", upper.join("app/sym")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hosts"), b"").unwrap();
        fs::create_dir_all(upper.join("proc")).unwrap();
        let c = std::ffi::CString::new(upper.join("gone").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; a 0/0 character device, as overlayfs makes.
        let whiteout = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) == 0 };
        let mut tar = LayerTar::create(&dir.path().join("layer.tar")).unwrap();
        diff_upper(&upper, &IdMap::HOST, &mut tar).unwrap();
        let path = tar.finish().unwrap();
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let kind = entry.header().entry_type();
            seen.push(format!("{} {:?}", entry.path().unwrap().display(), kind));
        }
        let mut want = vec![
            "app/ Directory",
            "app/link Regular",
            "app/sub/ Directory",
            "app/sub/file Link",
            "app/sym Symlink",
            "etc/ Directory",
        ];
        if whiteout {
            want.push(".wh.gone Regular");
        }
        let mut seen_sorted = seen.clone();
        seen_sorted.sort();
        want.sort();
        assert_eq!(seen_sorted, want, "{seen:?}");
    }
}
