//! Layers: checking a layer tar on the way in, and unpacking it into the
//! directory a container's overlayfs uses as one of its lowerdirs.
//!
//! A layer is untrusted input that root writes to the host's disk, so the
//! extractor never joins strings into paths and never follows a link: each
//! parent directory is opened component by component with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and each entry is created
//! relative to its parent's descriptor with `O_NOFOLLOW` / `O_EXCL`. Owners
//! are shifted into the container's id range; devices are refused; OCI
//! whiteouts become overlayfs' (each layer is its own lowerdir, so overlayfs
//! itself must see them).

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::error::{ImageError, Result};
use super::layout::{Compression, Digest, HashingReader, Layout, decompressed};
use crate::userns::IdMap;

/// How big a layer may be, uncompressed, and how many entries it may have:
/// a small gzip stream can expand to fill the disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What the store knows of a layer blob.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub compression: Compression,
    /// sha256 of the uncompressed tar: the name of its unpacked directory.
    pub diff_id: Digest,
}

const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// Reads a whole layer blob: tells its compression, checks that it is a
/// tar within the limits, and computes its diff id.
pub(crate) fn inspect(blob: impl Read, what: &str, limits: &Limits) -> Result<Layer> {
    let (compression, stream) = decompressed(what, BufReader::with_capacity(1 << 16, blob))?;
    let mut hashing = HashingReader::with_limit(stream, limits.max_bytes);
    let counted = (|| -> io::Result<u64> {
        let mut archive = tar::Archive::new(&mut hashing);
        let mut entries = 0u64;
        for entry in archive.entries()? {
            entry?;
            entries += 1;
            if entries > limits.max_entries {
                break;
            }
        }
        Ok(entries)
    })();
    if hashing.exceeded() {
        return Err(too_large(what, limits));
    }
    let entries =
        counted.map_err(|e| ImageError::bad_input(what, format!("not a tar archive: {e}")))?;
    if entries > limits.max_entries {
        return Err(too_many(what, limits));
    }
    // What follows the end-of-archive blocks counts for the digest too.
    let (diff_id, _) = hashing.finish().map_err(|e| read_error(what, limits, e))?;
    Ok(Layer {
        compression,
        diff_id,
    })
}

fn read_error(what: &str, limits: &Limits, e: io::Error) -> ImageError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        too_large(what, limits)
    } else {
        ImageError::bad_input(what, format!("reading the layer: {e}"))
    }
}

fn too_many(what: &str, limits: &Limits) -> ImageError {
    ImageError::LayerTooLarge {
        layer: what.to_owned(),
        reason: format!("more than {} entries", limits.max_entries),
    }
}

fn too_large(what: &str, limits: &Limits) -> ImageError {
    ImageError::LayerTooLarge {
        layer: what.to_owned(),
        reason: format!("more than {} bytes uncompressed", limits.max_bytes),
    }
}

/// The unpacked directory of a layer for `map`, unpacking it first when
/// missing. One `flock` per remap root serializes unpacking, so two
/// callers never unpack the same layer at once; the work happens in
/// `.tmp-<hex>` and is renamed into place only when whole and verified.
pub(crate) fn unpacked(
    layout: &Layout,
    layers_root: &Path,
    blob: &Digest,
    diff_id: &Digest,
    map: &IdMap,
    limits: &Limits,
) -> Result<PathBuf> {
    let map_dir = layers_root.join(map.dir_name());
    let target = map_dir.join(diff_id.hex());
    if target.is_dir() {
        return Ok(target);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&map_dir)
        .map_err(ImageError::io(&map_dir))?;
    let _lock = lock_layers(&map_dir)?;
    if target.is_dir() {
        return Ok(target);
    }
    let tmp = map_dir.join(format!(".tmp-{}", diff_id.hex()));
    remove_if_present(&tmp)?;
    let result = unpack_into(layout, &tmp, blob, diff_id, map, limits);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &target).map_err(ImageError::io(&target))?;
    File::open(&map_dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io(&map_dir))?;
    Ok(target)
}

/// Takes the lock of a remap root's layers (`layers/<map>/.lock`).
pub(crate) fn lock_layers(map_dir: &Path) -> Result<File> {
    let path = map_dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(ImageError::io(&path))?;
    file.lock().map_err(ImageError::io(&path))?;
    Ok(file)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ImageError::io(path)(e)),
        _ => Ok(()),
    }
}

fn unpack_into(
    layout: &Layout,
    tmp: &Path,
    blob: &Digest,
    diff_id: &Digest,
    map: &IdMap,
    limits: &Limits,
) -> Result<()> {
    let what = diff_id.to_string();
    fs::DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .map_err(ImageError::io(tmp))?;
    let root = File::open(tmp).map_err(ImageError::io(tmp))?;
    // The layer's root, unless the tar has a `./` entry: the container's
    // root owns it, as Docker's does.
    let (uid, gid) = root_ids(map, &what)?;
    nix::unistd::fchown(root.as_raw_fd(), Some(uid), Some(gid))
        .and_then(|()| nix::sys::stat::fchmod(root.as_raw_fd(), Mode::from_bits_truncate(0o755)))
        .map_err(|e| ImageError::io(tmp)(e.into()))?;

    let file = layout.open_blob(blob)?;
    let (_, stream) = decompressed(&what, BufReader::with_capacity(1 << 16, file))?;
    let mut hashing = HashingReader::with_limit(stream, limits.max_bytes);
    let extracted = Extractor::new(OwnedFd::from(root), &what, map, limits).extract(&mut hashing);
    if hashing.exceeded() {
        return Err(too_large(&what, limits));
    }
    extracted?;
    let (actual, _) = hashing.finish().map_err(|e| read_error(&what, limits, e))?;
    if &actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {blob}"),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    // One syncfs instead of an fsync per file: the rename that publishes
    // the layer must not reach the disk before its content.
    let dir = File::open(tmp).map_err(ImageError::io(tmp))?;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| ImageError::io(tmp)(e.into()))
}

fn root_ids(map: &IdMap, what: &str) -> Result<(Uid, Gid)> {
    match (map.host_uid(0), map.host_gid(0)) {
        (Some(uid), Some(gid)) => Ok((Uid::from_raw(uid), Gid::from_raw(gid))),
        _ => Err(ImageError::bad_input(what, "the id map has no root")),
    }
}

/// Splits an archive path into its components: one or more leading `/`
/// and `.` components are dropped (as Docker does), `..` is refused.
pub(crate) fn clean_path(raw: &[u8]) -> std::result::Result<Vec<Vec<u8>>, &'static str> {
    if raw.contains(&0) {
        return Err("the path contains a NUL byte");
    }
    let mut components = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("the path contains '..'"),
            name => components.push(name.to_vec()),
        }
    }
    Ok(components)
}

fn display(components: &[Vec<u8>]) -> String {
    let joined: Vec<u8> = components.join(&b'/');
    String::from_utf8_lossy(&joined).into_owned()
}

/// One entry's metadata, read from its header and PAX records.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Extractor<'a> {
    root: OwnedFd,
    layer: &'a str,
    map: &'a IdMap,
    limits: &'a Limits,
    entries: u64,
    /// The last parent directory opened: most entries share their parent
    /// with the one before.
    cached: Option<(Vec<Vec<u8>>, OwnedFd)>,
    /// Directory times are set last: creating entries inside a directory
    /// changes its mtime.
    dir_times: Vec<(Vec<Vec<u8>>, TimeSpec)>,
}

impl<'a> Extractor<'a> {
    fn new(root: OwnedFd, layer: &'a str, map: &'a IdMap, limits: &'a Limits) -> Self {
        Extractor {
            root,
            layer,
            map,
            limits,
            entries: 0,
            cached: None,
            dir_times: Vec::new(),
        }
    }

    fn extract(mut self, stream: &mut dyn Read) -> Result<()> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .map_err(|e| ImageError::bad_input(self.layer, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::bad_input(self.layer, e))?;
            self.entry(&mut entry)?;
        }
        for (components, time) in std::mem::take(&mut self.dir_times).iter().rev() {
            // A directory replaced later in the layer is simply gone.
            if let Ok(dir) = self.walk(components, false) {
                let _ = nix::sys::stat::futimens(dir.as_raw_fd(), time, time);
            }
        }
        Ok(())
    }

    fn bad(&self, path: &str, reason: impl ToString) -> ImageError {
        ImageError::bad_input(format!("layer {}: {path}", self.layer), reason)
    }

    fn sys(&self, path: &str, errno: Errno) -> ImageError {
        ImageError::Io {
            path: PathBuf::from(format!("layer {}: {path}", self.layer)),
            source: errno.into(),
        }
    }

    fn entry(&mut self, entry: &mut tar::Entry<'_, &mut dyn Read>) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(too_many(self.layer, self.limits));
        }
        let components = clean_path(&raw).map_err(|reason| self.bad(&shown, reason))?;
        let meta = self.meta(entry, &shown)?;

        if let Some(name) = components.last()
            && name.starts_with(WHITEOUT_PREFIX)
        {
            return self.whiteout(&components, &shown, &meta);
        }
        let Some((name, parent)) = components.split_last() else {
            // `./`: the layer's root directory itself.
            if !kind.is_dir() {
                return Err(self.bad(&shown, "the layer root must be a directory"));
            }
            let root = self.root.as_raw_fd();
            self.apply_fd(root, &meta, &shown)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let parent_fd = self.enter(parent, &shown)?;
                if !self.clear(parent_fd, parent, name, true, &shown)? {
                    nix::sys::stat::mkdirat(Some(parent_fd), name.as_slice(), Mode::S_IRWXU)
                        .map_err(|e| self.sys(&shown, e))?;
                }
                let dir = open_beneath(parent_fd, name).map_err(|e| self.sys(&shown, e))?;
                self.apply_fd(dir.as_raw_fd(), &meta, &shown)?;
                self.dir_times.push((components.clone(), meta.mtime));
            }
            T::Regular | T::Continuous => {
                let parent_fd = self.enter(parent, &shown)?;
                self.clear(parent_fd, parent, name, false, &shown)?;
                let fd = nix::fcntl::openat(
                    Some(parent_fd),
                    name.as_slice(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                )
                .map_err(|e| self.sys(&shown, e))?;
                // SAFETY: openat returned a new descriptor that nothing else owns.
                let mut file = unsafe { File::from_raw_fd(fd) };
                io::copy(entry, &mut file).map_err(|e| self.bad(&shown, e))?;
                self.apply_fd(file.as_raw_fd(), &meta, &shown)?;
                nix::sys::stat::futimens(file.as_raw_fd(), &meta.mtime, &meta.mtime)
                    .map_err(|e| self.sys(&shown, e))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.bad(&shown, "a symlink without a target"))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(self.bad(&shown, "the link target contains a NUL byte"));
                }
                let parent_fd = self.enter(parent, &shown)?;
                self.clear(parent_fd, parent, name, false, &shown)?;
                // The target is stored, never followed: it may point anywhere.
                nix::unistd::symlinkat(target.as_slice(), Some(parent_fd), name.as_slice())
                    .map_err(|e| self.sys(&shown, e))?;
                self.apply_at(parent_fd, name, &meta, false, &shown)?;
            }
            T::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(&shown, "a hardlink without a target"))?
                    .into_owned();
                let target = clean_path(&raw_target)
                    .map_err(|reason| self.bad(&shown, format!("hardlink target: {reason}")))?;
                let Some((target_name, target_parent)) = target.split_last() else {
                    return Err(self.bad(&shown, "a hardlink to the layer root"));
                };
                let target_dir = self.walk(target_parent, false).map_err(|e| {
                    self.bad(
                        &shown,
                        format!("hardlink target {}: {}", display(&target), e.reason()),
                    )
                })?;
                let stat = nix::sys::stat::fstatat(
                    Some(target_dir.as_raw_fd()),
                    target_name.as_slice(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|_| {
                    self.bad(
                        &shown,
                        format!(
                            "hardlink target {} does not exist in the layer",
                            display(&target)
                        ),
                    )
                })?;
                if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Err(self.bad(&shown, "a hardlink to a directory"));
                }
                let parent_fd = self.enter(parent, &shown)?;
                if target == components {
                    return Ok(());
                }
                self.clear(parent_fd, parent, name, false, &shown)?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                nix::unistd::linkat(
                    Some(target_dir.as_raw_fd()),
                    target_name.as_slice(),
                    Some(parent_fd),
                    name.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(|e| self.sys(&shown, e))?;
            }
            T::Fifo => {
                let parent_fd = self.enter(parent, &shown)?;
                self.clear(parent_fd, parent, name, false, &shown)?;
                nix::sys::stat::mknodat(
                    Some(parent_fd),
                    name.as_slice(),
                    SFlag::S_IFIFO,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                    0,
                )
                .map_err(|e| self.sys(&shown, e))?;
                self.apply_at(parent_fd, name, &meta, true, &shown)?;
            }
            T::Char | T::Block => {
                return Err(self.bad(
                    &shown,
                    "device nodes are refused: a container in a user namespace cannot use them",
                ));
            }
            T::GNUSparse => return Err(self.bad(&shown, "sparse files are not supported")),
            other => {
                return Err(self.bad(&shown, format!("unsupported entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// OCI whiteouts in overlayfs' form: `.wh.NAME` becomes a 0/0
    /// character device `NAME`; `.wh..wh..opq` marks its directory opaque.
    fn whiteout(&mut self, components: &[Vec<u8>], shown: &str, meta: &Meta) -> Result<()> {
        let (name, parent) = components.split_last().expect("whiteouts have a name");
        let parent_fd = self.enter(parent, shown)?;
        if name.as_slice() == OPAQUE_WHITEOUT {
            return set_xattr(parent_fd, c"trusted.overlay.opaque", b"y")
                .map_err(|e| self.sys(shown, e));
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            // aufs' own bookkeeping (`.wh..wh.plnk`, ...): nothing for overlayfs.
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.bad(shown, "a whiteout without a name"));
        }
        let hidden = hidden.to_vec();
        self.clear(parent_fd, parent, &hidden, false, shown)?;
        nix::sys::stat::mknodat(
            Some(parent_fd),
            hidden.as_slice(),
            SFlag::S_IFCHR,
            Mode::empty(),
            libc::makedev(0, 0),
        )
        .map_err(|e| self.sys(shown, e))?;
        nix::unistd::fchownat(
            Some(parent_fd),
            hidden.as_slice(),
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.sys(shown, e))
    }

    fn meta(&self, entry: &mut tar::Entry<'_, &mut dyn Read>, shown: &str) -> Result<Meta> {
        let header = entry.header();
        let bad_header = |e: io::Error| self.bad(shown, format!("bad header: {e}"));
        // The tar crate has already applied PAX `uid`/`gid` records.
        let uid = header.uid().map_err(bad_header)?;
        let gid = header.gid().map_err(bad_header)?;
        let mode = header.mode().map_err(bad_header)? & 0o7777;
        let mtime = header.mtime().map_err(bad_header)?;
        let host_uid = u32::try_from(uid)
            .ok()
            .and_then(|uid| self.map.host_uid(uid))
            .ok_or_else(|| {
                self.bad(
                    shown,
                    format!("uid {uid} is outside the container's {} ids", self.map.size),
                )
            })?;
        let host_gid = u32::try_from(gid)
            .ok()
            .and_then(|gid| self.map.host_gid(gid))
            .ok_or_else(|| {
                self.bad(
                    shown,
                    format!("gid {gid} is outside the container's {} ids", self.map.size),
                )
            })?;
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(bad_header)? {
            for extension in extensions {
                let extension = extension.map_err(bad_header)?;
                // Only `user.` attributes: `trusted.` ones would forge
                // overlayfs metadata and `security.capability` would give
                // a file capabilities on the host.
                if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.")
                    && name.starts_with(b"user.")
                    && let Ok(name) = CString::new(name)
                {
                    xattrs.push((name, extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            uid: Uid::from_raw(host_uid),
            gid: Gid::from_raw(host_gid),
            mode: Mode::from_bits_truncate(mode as libc::mode_t),
            mtime: TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0),
            xattrs,
        })
    }

    /// Owner, then mode (chown clears set-id bits), then extended attributes.
    fn apply_fd(&self, fd: RawFd, meta: &Meta, shown: &str) -> Result<()> {
        nix::unistd::fchown(fd, Some(meta.uid), Some(meta.gid))
            .and_then(|()| nix::sys::stat::fchmod(fd, meta.mode))
            .map_err(|e| self.sys(shown, e))?;
        for (name, value) in &meta.xattrs {
            set_xattr(fd, name, value).map_err(|e| self.sys(shown, e))?;
        }
        Ok(())
    }

    /// For what cannot be opened (symlinks, fifos): by name in its parent,
    /// never following a link.
    fn apply_at(
        &self,
        parent: RawFd,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
        shown: &str,
    ) -> Result<()> {
        nix::unistd::fchownat(
            Some(parent),
            name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.sys(shown, e))?;
        if chmod {
            // Only for entries just created here (not symlinks), in a
            // directory nothing else writes to.
            nix::sys::stat::fchmodat(Some(parent), name, meta.mode, FchmodatFlags::FollowSymlink)
                .map_err(|e| self.sys(shown, e))?;
        }
        nix::sys::stat::utimensat(
            Some(parent),
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.sys(shown, e))
    }

    /// Makes room for `name` in `parent`: an existing directory is kept
    /// when a directory is wanted (returns true), anything else is removed,
    /// as Docker does when a layer names a path twice.
    fn clear(
        &mut self,
        parent: RawFd,
        parent_path: &[Vec<u8>],
        name: &[u8],
        keep_dir: bool,
        shown: &str,
    ) -> Result<bool> {
        let stat = match nix::sys::stat::fstatat(Some(parent), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(self.sys(shown, e)),
            Ok(stat) => stat,
        };
        let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if is_dir {
            // Whatever was opened below it is stale now.
            let mut removed = parent_path.to_vec();
            removed.push(name.to_vec());
            if self
                .cached
                .as_ref()
                .is_some_and(|(path, _)| path.starts_with(&removed))
            {
                self.cached = None;
            }
            // std's remove_dir_all works with openat/unlinkat and never
            // follows a symlink below the directory it is given.
            let path = Path::new(&format!("/proc/self/fd/{parent}")).join(OsStr::from_bytes(name));
            fs::remove_dir_all(&path).map_err(ImageError::io(shown))?;
        } else {
            nix::unistd::unlinkat(Some(parent), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.sys(shown, e))?;
        }
        Ok(false)
    }

    /// The descriptor of the directory `components`, creating missing ones
    /// (0755, owned by the container's root, as Docker does); cached.
    fn enter(&mut self, components: &[Vec<u8>], shown: &str) -> Result<RawFd> {
        if components.is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some((path, fd)) = &self.cached
            && path.as_slice() == components
        {
            return Ok(fd.as_raw_fd());
        }
        let fd = self.walk(components, true).map_err(|e| match e {
            WalkError::Sys(errno) => self.sys(shown, errno),
            other => self.bad(shown, other.reason()),
        })?;
        let raw = fd.as_raw_fd();
        self.cached = Some((components.to_vec(), fd));
        Ok(raw)
    }

    fn walk(
        &self,
        components: &[Vec<u8>],
        create: bool,
    ) -> std::result::Result<OwnedFd, WalkError> {
        let mut current = self
            .root
            .try_clone()
            .map_err(|_| WalkError::Sys(Errno::EMFILE))?;
        for (depth, component) in components.iter().enumerate() {
            let next = match open_beneath(current.as_raw_fd(), component) {
                Err(Errno::ENOENT) if create => {
                    let (uid, gid) = root_ids(self.map, self.layer)
                        .map_err(|_| WalkError::Sys(Errno::EINVAL))?;
                    match nix::sys::stat::mkdirat(
                        Some(current.as_raw_fd()),
                        component.as_slice(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(WalkError::Sys(e)),
                    }
                    let dir = open_beneath(current.as_raw_fd(), component)
                        .map_err(|e| WalkError::from_errno(e, &components[..=depth]))?;
                    nix::unistd::fchown(dir.as_raw_fd(), Some(uid), Some(gid))
                        .and_then(|()| {
                            nix::sys::stat::fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(0o755))
                        })
                        .map_err(WalkError::Sys)?;
                    dir
                }
                Err(e) => return Err(WalkError::from_errno(e, &components[..=depth])),
                Ok(dir) => dir,
            };
            current = next;
        }
        Ok(current)
    }
}

/// Why a directory could not be reached.
enum WalkError {
    Symlink(String),
    NotDir(String),
    Missing(String),
    Escapes(String),
    Sys(Errno),
}

impl WalkError {
    fn from_errno(errno: Errno, path: &[Vec<u8>]) -> WalkError {
        let path = display(path);
        match errno {
            Errno::ELOOP => WalkError::Symlink(path),
            Errno::ENOTDIR => WalkError::NotDir(path),
            Errno::ENOENT => WalkError::Missing(path),
            Errno::EXDEV => WalkError::Escapes(path),
            other => WalkError::Sys(other),
        }
    }

    fn reason(&self) -> String {
        match self {
            WalkError::Symlink(p) => {
                format!("{p} is a symlink: refusing to resolve a path through it")
            }
            WalkError::NotDir(p) => format!("{p} is not a directory"),
            WalkError::Missing(p) => format!("{p} does not exist"),
            WalkError::Escapes(p) => format!("{p} escapes the layer"),
            WalkError::Sys(e) => e.to_string(),
        }
    }
}

/// Opens one directory below `dir`, refusing symlinks and anything that
/// resolves outside it.
fn open_beneath(dir: RawFd, name: &[u8]) -> std::result::Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        // RESOLVE_NO_SYMLINKS refuses a trailing symlink too (ELOOP);
        // O_NOFOLLOW would turn that into an ambiguous ENOTDIR.
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = nix::fcntl::openat2(dir, name, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_xattr(fd: RawFd, name: &std::ffi::CStr, value: &[u8]) -> std::result::Result<(), Errno> {
    // SAFETY: name is NUL-terminated and value is a valid buffer of its length.
    let res = unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    Errno::result(res).map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::super::testutil::{self, MTIME, dir, file, hardlink, special, symlink, tar};
    use super::*;

    const MAP: IdMap = IdMap {
        uid: 100_000,
        gid: 200_000,
        size: 65536,
    };
    const LIMITS: Limits = Limits {
        max_bytes: 1 << 30,
        max_entries: 1000,
    };

    struct Unpacked {
        root: tempfile::TempDir,
        result: Result<PathBuf>,
    }

    impl Unpacked {
        fn dir(&self) -> &Path {
            self.result.as_ref().expect("unpacked")
        }

        fn err(&self) -> String {
            match &self.result {
                Ok(_) => panic!("unpacked, but should have failed"),
                Err(e) => e.to_string(),
            }
        }

        /// Nothing half-written stays behind a failure.
        fn assert_nothing_left(&self) {
            let map_dir = self.root.path().join("layers").join(MAP.dir_name());
            let left: Vec<_> = fs::read_dir(&map_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock")
                .collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        }
    }

    fn unpack_with(blob: &[u8], tar_bytes: &[u8], map: &IdMap, limits: &Limits) -> Unpacked {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::open(root.path()).unwrap();
        let digest = layout.write_blob(blob, &layout.lock().unwrap()).unwrap();
        let diff_id = Digest::from_hex(&testutil::sha256_hex(tar_bytes)).unwrap();
        let result = unpacked(
            &layout,
            &root.path().join("layers"),
            &digest,
            &diff_id,
            map,
            limits,
        );
        Unpacked { root, result }
    }

    fn unpack(entries: &[testutil::Entry]) -> Unpacked {
        let bytes = tar(entries);
        unpack_with(&bytes, &bytes, &MAP, &LIMITS)
    }

    fn meta(path: &Path) -> fs::Metadata {
        fs::symlink_metadata(path).unwrap()
    }

    #[test]
    fn extracts_every_kind_with_shifted_owners_modes_and_times() {
        if !testutil::is_root() {
            return;
        }
        let u = unpack(&[
            dir("./").mode(0o751),
            dir("etc").mode(0o750).owner(0, 42),
            file("etc/passwd", b"root:x:0:0::/:/bin/sh\n").mode(0o640),
            file("usr/bin/tool", b"#!/bin/sh\n").mode(0o4755),
            dir("home/user").owner(1000, 1000).mode(0o700),
            file("home/user/notes", b"x").owner(1000, 1001).mode(0o600),
            symlink("bin/sh", "/usr/bin/tool").owner(0, 0),
            symlink("etc/rel", "../usr/bin/tool"),
            hardlink("etc/passwd-", "etc/passwd"),
            special(tar::EntryType::Fifo, "run/fifo")
                .mode(0o620)
                .owner(5, 5),
            file("with-xattr", b"x")
                .pax("SCHILY.xattr.user.note", b"kept")
                .pax("SCHILY.xattr.trusted.overlay.opaque", b"y")
                .pax("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            file("./dotted/./file", b"d"),
            file("/absolute/file", b"a"),
        ]);
        let root = u.dir();
        assert!(root.ends_with(format!(
            "layers/100000.200000/{}",
            root.file_name().unwrap().to_string_lossy()
        )));
        let m = meta(root);
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (100_000, 200_000, 0o751)
        );
        let m = meta(&root.join("etc"));
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (100_000, 200_042, 0o750)
        );
        assert_eq!(m.mtime(), MTIME as i64, "directory times are set last");
        let m = meta(&root.join("etc/passwd"));
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (100_000, 200_000, 0o640)
        );
        assert_eq!(m.mtime(), MTIME as i64);
        assert_eq!(
            fs::read(root.join("etc/passwd")).unwrap(),
            b"root:x:0:0::/:/bin/sh\n"
        );
        let m = meta(&root.join("usr/bin/tool"));
        assert_eq!(m.mode() & 0o7777, 0o4755, "set-id bits survive the chown");
        let m = meta(&root.join("usr"));
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (100_000, 200_000, 0o755),
            "implicit parents belong to the container's root"
        );
        let m = meta(&root.join("home/user/notes"));
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (101_000, 201_001, 0o600)
        );
        let m = meta(&root.join("bin/sh"));
        assert!(m.file_type().is_symlink());
        assert_eq!((m.uid(), m.gid()), (100_000, 200_000));
        assert_eq!(m.mtime(), MTIME as i64);
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/usr/bin/tool")
        );
        assert_eq!(
            fs::read_link(root.join("etc/rel")).unwrap(),
            Path::new("../usr/bin/tool")
        );
        assert_eq!(
            meta(&root.join("etc/passwd-")).ino(),
            meta(&root.join("etc/passwd")).ino()
        );
        let m = meta(&root.join("run/fifo"));
        assert!(m.file_type().is_fifo());
        assert_eq!((m.uid(), m.mode() & 0o7777), (100_005, 0o620));
        let xattrs = |name: &str| {
            let mut buf = [0u8; 64];
            let path = CString::new(root.join("with-xattr").as_os_str().as_bytes()).unwrap();
            let name = CString::new(name).unwrap();
            // SAFETY: valid C strings and buffer.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            (n >= 0).then(|| buf[..n as usize].to_vec())
        };
        assert_eq!(xattrs("user.note").as_deref(), Some(&b"kept"[..]));
        assert_eq!(
            xattrs("trusted.overlay.opaque"),
            None,
            "trusted.* is never applied"
        );
        assert_eq!(
            xattrs("security.capability"),
            None,
            "file capabilities are not applied"
        );
        assert_eq!(fs::read(root.join("dotted/file")).unwrap(), b"d");
        assert_eq!(fs::read(root.join("absolute/file")).unwrap(), b"a");
    }

    #[test]
    fn host_map_keeps_owners() {
        if !testutil::is_root() {
            return;
        }
        let bytes = tar(&[file("f", b"x").owner(1000, 1000)]);
        let u = unpack_with(&bytes, &bytes, &IdMap::HOST, &LIMITS);
        assert!(u.dir().to_string_lossy().contains("/layers/0.0/"));
        let m = meta(&u.dir().join("f"));
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
    }

    #[test]
    fn dot_dot_is_refused_and_nothing_is_left() {
        if !testutil::is_root() {
            return;
        }
        for path in ["../evil", "a/../../evil", "a/.."] {
            let u = unpack(&[file("ok", b"x"), file(path, b"x")]);
            let err = u.err();
            assert!(err.contains(path) && err.contains("'..'"), "{err}");
            u.assert_nothing_left();
        }
    }

    #[test]
    fn paths_through_symlinks_are_refused() {
        if !testutil::is_root() {
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap();
        for entries in [
            vec![symlink("evil", target), file("evil/owned", b"x")],
            vec![symlink("evil", target), dir("evil/sub")],
            vec![symlink("evil", target), symlink("evil/link", "/")],
            vec![symlink("evil", "."), file("evil/evil/x", b"x")],
            vec![dir("a"), symlink("a/b", target), file("a/b/c/d", b"x")],
            vec![symlink("evil", target), file("evil/.wh.victim", b"")],
        ] {
            let u = unpack(&entries);
            let err = u.err();
            assert!(err.contains("symlink"), "{err}");
            u.assert_nothing_left();
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn hardlinks_must_stay_inside_the_layer() {
        if !testutil::is_root() {
            return;
        }
        let cases: Vec<(Vec<testutil::Entry>, &str)> = vec![
            (vec![hardlink("h", "../etc/passwd")], "'..'"),
            (vec![hardlink("h", "/etc/passwd")], "does not exist"),
            (
                vec![hardlink("h", "missing")],
                "does not exist in the layer",
            ),
            (
                vec![symlink("s", "/etc"), hardlink("h", "s/passwd")],
                "symlink",
            ),
            (
                vec![dir("d"), hardlink("h", "d")],
                "a hardlink to a directory",
            ),
            (vec![hardlink("h", "./")], "layer root"),
            (vec![hardlink("h", "")], "without a target"),
        ];
        for (entries, expected) in cases {
            let u = unpack(&entries);
            let err = u.err();
            assert!(
                err.contains(expected) && err.contains(": h:"),
                "{expected}: {err}"
            );
            u.assert_nothing_left();
        }
        // A hardlink to a symlink links the symlink, not what it points at.
        let u = unpack(&[symlink("s", "/etc/passwd"), hardlink("h", "s")]);
        assert!(meta(&u.dir().join("h")).file_type().is_symlink());
    }

    #[test]
    fn devices_are_refused() {
        if !testutil::is_root() {
            return;
        }
        for kind in [tar::EntryType::Char, tar::EntryType::Block] {
            let u = unpack(&[file("ok", b""), special(kind, "dev/sda")]);
            let err = u.err();
            assert!(
                err.contains("dev/sda") && err.contains("user namespace"),
                "{err}"
            );
            u.assert_nothing_left();
        }
    }

    #[test]
    fn ids_outside_the_range_are_refused() {
        if !testutil::is_root() {
            return;
        }
        let u = unpack(&[file("ok", b""), file("high", b"").owner(65536, 0)]);
        let err = u.err();
        assert!(err.contains("high") && err.contains("uid 65536"), "{err}");
        u.assert_nothing_left();
        let u = unpack(&[file("high-gid", b"").owner(0, 1 << 40)]);
        assert!(u.err().contains("gid"), "{}", u.err());
        u.assert_nothing_left();
    }

    #[test]
    fn size_and_entry_limits() {
        if !testutil::is_root() {
            return;
        }
        // A gzip bomb: a small blob that expands past the limit.
        let bytes = tar(&[file("zeros", &vec![0u8; 1 << 20])]);
        let gz = testutil::gzip(&bytes);
        assert!(gz.len() < 8192);
        let small = Limits {
            max_bytes: 64 * 1024,
            max_entries: 1000,
        };
        let u = unpack_with(&gz, &bytes, &MAP, &small);
        let err = u.err();
        assert!(err.contains("layer too large"), "{err}");
        assert!(matches!(u.result, Err(ImageError::LayerTooLarge { .. })));
        u.assert_nothing_left();

        let many: Vec<_> = (0..5).map(|i| file(&format!("f{i}"), b"")).collect();
        let bytes = tar(&many);
        let few = Limits {
            max_bytes: 1 << 30,
            max_entries: 3,
        };
        let u = unpack_with(&bytes, &bytes, &MAP, &few);
        assert!(u.err().contains("more than 3 entries"), "{}", u.err());
        u.assert_nothing_left();

        assert!(matches!(
            inspect(&gz[..], "x", &small),
            Err(ImageError::LayerTooLarge { .. })
        ));
        assert!(matches!(
            inspect(&bytes[..], "x", &few),
            Err(ImageError::LayerTooLarge { .. })
        ));
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        if !testutil::is_root() {
            return;
        }
        let bytes = tar(&[file("a", b"1")]);
        let other = tar(&[file("a", b"2")]);
        let u = unpack_with(&bytes, &other, &MAP, &LIMITS);
        assert!(u.err().contains("digest mismatch"), "{}", u.err());
        u.assert_nothing_left();
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        if !testutil::is_root() {
            return;
        }
        let u = unpack(&[
            file("x", b"file"),
            dir("x"),
            file("x/inner", b"in"),
            dir("y"),
            file("y/old", b""),
            file("y", b"now a file"),
            symlink("z", "/nowhere"),
            file("z", b"not through the link"),
        ]);
        let root = u.dir();
        assert_eq!(fs::read(root.join("x/inner")).unwrap(), b"in");
        assert_eq!(fs::read(root.join("y")).unwrap(), b"now a file");
        assert!(meta(&root.join("z")).is_file());
    }

    #[test]
    fn whiteouts_become_overlayfs_whiteouts() {
        if !testutil::is_root() {
            return;
        }
        let u = unpack(&[
            dir("etc"),
            file("etc/.wh.gone", b"").owner(0, 0),
            file("etc/.wh..wh..opq", b""),
            file(".wh..wh.plnk", b""),
            file(".wh.top", b""),
        ]);
        let root = u.dir();
        let m = meta(&root.join("etc/gone"));
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert_eq!(m.uid(), 100_000);
        assert!(meta(&root.join("top")).file_type().is_char_device());
        assert!(!root.join(".wh..wh.plnk").exists());
        assert!(!root.join("plnk").exists());
        let path = CString::new(root.join("etc").as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 4];
        // SAFETY: valid C strings and buffer.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(&buf[..n.max(0) as usize], b"y");
        for name in [".wh.", ".wh..", ".wh.."] {
            let u = unpack(&[file(name, b"")]);
            assert!(u.err().contains("whiteout"), "{name}: {}", u.err());
        }
    }

    #[test]
    fn concurrent_callers_unpack_once() {
        if !testutil::is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::open(root.path()).unwrap();
        let entries: Vec<_> = (0..200).map(|i| file(&format!("f{i}"), b"x")).collect();
        let bytes = tar(&entries);
        let blob = layout.write_blob(&bytes, &layout.lock().unwrap()).unwrap();
        let diff_id = Digest::from_hex(&testutil::sha256_hex(&bytes)).unwrap();
        let layers = root.path().join("layers");
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| unpacked(&layout, &layers, &blob, &diff_id, &MAP, &LIMITS).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read_dir(&dirs[0]).unwrap().count(), 200);
        let names: Vec<_> = fs::read_dir(layers.join(MAP.dir_name()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "the layer and the lock: {names:?}");
    }

    #[test]
    fn clean_path_rules() {
        let clean = |p: &str| clean_path(p.as_bytes()).map(|c| display(&c));
        assert_eq!(clean("./a/b/").unwrap(), "a/b");
        assert_eq!(clean("//a//./b").unwrap(), "a/b");
        assert_eq!(clean("./").unwrap(), "");
        assert!(clean("a/../b").is_err());
        assert!(clean_path(b"a\0b").is_err());
    }

    #[test]
    fn inspect_tells_compression_and_diff_id() {
        let bytes = tar(&[file("a", b"1")]);
        let plain = inspect(&bytes[..], "x", &LIMITS).unwrap();
        let gz = inspect(&testutil::gzip(&bytes)[..], "x", &LIMITS).unwrap();
        assert_eq!(plain.compression, Compression::None);
        assert_eq!(gz.compression, Compression::Gzip);
        assert_eq!(plain.diff_id.hex(), testutil::sha256_hex(&bytes));
        assert_eq!(gz.diff_id, plain.diff_id);
        let err = inspect(
            &b"this is not a tar archive, just some text that goes on"[..],
            "x",
            &LIMITS,
        )
        .unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
    }

    #[test]
    fn overlayfs_honours_the_whiteouts() {
        if !testutil::is_root() {
            return;
        }
        let lower = unpack(&[
            file("gone", b"lower"),
            file("keep", b"lower"),
            dir("opaque"),
            file("opaque/old", b"lower"),
            dir("merged"),
            file("merged/old", b"lower"),
        ]);
        let upper = unpack(&[
            file(".wh.gone", b""),
            dir("opaque"),
            file("opaque/.wh..wh..opq", b""),
            file("opaque/new", b"upper"),
            dir("merged"),
            file("merged/new", b"upper"),
        ]);
        let target = tempfile::tempdir().unwrap();
        let options = format!(
            "lowerdir={}:{}",
            upper.dir().display(),
            lower.dir().display()
        );
        if let Err(e) = nix::mount::mount(
            Some("overlay"),
            target.path(),
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(options.as_str()),
        ) {
            eprintln!("skipped: cannot mount overlayfs here: {e}");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _unmount = Unmount(target.path());
        let t = target.path();
        assert!(!t.join("gone").exists(), "a whited-out file is gone");
        assert_eq!(fs::read(t.join("keep")).unwrap(), b"lower");
        assert!(
            !t.join("opaque/old").exists(),
            "an opaque directory hides the lower one"
        );
        assert_eq!(fs::read(t.join("opaque/new")).unwrap(), b"upper");
        assert_eq!(fs::read(t.join("merged/old")).unwrap(), b"lower");
        assert_eq!(fs::read(t.join("merged/new")).unwrap(), b"upper");
        let mut names: Vec<_> = fs::read_dir(t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keep", "merged", "opaque"]);
        let _ = PermissionsExt::mode(&fs::metadata(t).unwrap().permissions());
    }
}
