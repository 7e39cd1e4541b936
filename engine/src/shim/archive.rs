//! `docker cp` and `docker export`: reading and writing a container's files
//! without ever resolving a path on the host.
//!
//! The engine runs this as a separate, single-threaded process
//! (`moat shim-archive`). It enters a mount namespace where the container's
//! root filesystem is mounted — the shim's, while the container runs; a
//! private one with the overlay mounted afresh, when it does not — chroots
//! into that root, and becomes the container's root user as the host sees
//! it (the remapped uid, no capabilities). Every path, and every symlink in
//! it, then resolves inside the container, and files written belong to the
//! container's root: a container cannot use a symlink to make `docker cp`
//! read or write a host file.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use super::rootfs;
use super::{SHIM_CONFIG, ShimConfig};
use crate::fsutil;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Print the path's stat as JSON.
    Stat,
    /// Write a tar of the path to stdout.
    Get,
    /// Extract a tar from stdin into the directory at the path.
    Put,
}

/// What `docker cp` shows of a path (the `X-Docker-Container-Path-Stat`
/// header), with Go's `os.FileMode` bits for the mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;

/// `moat shim-archive MODE STATE_DIR PATH [SHIM_PID]`; the exit code says
/// whether it worked, stderr says why not.
pub fn main(mode: Mode, state_dir: &Path, path: &str, shim_pid: Option<i32>) -> i32 {
    match run(mode, state_dir, path, shim_pid) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

fn run(mode: Mode, state_dir: &Path, path: &str, shim_pid: Option<i32>) -> Result<(), String> {
    let config: ShimConfig = fsutil::read_json(&state_dir.join(SHIM_CONFIG))
        .map_err(|e| format!("{}: {e}", state_dir.join(SHIM_CONFIG).display()))?;
    let spec = oci_spec::runtime::Spec::load(state_dir.join(super::OCI_SPEC))
        .map_err(|e| e.to_string())?;
    let (uid, gid) = spec
        .linux()
        .as_ref()
        .and_then(|l| {
            Some((
                l.uid_mappings().as_ref()?.first()?.host_id(),
                l.gid_mappings().as_ref()?.first()?.host_id(),
            ))
        })
        .unwrap_or((0, 0));

    match shim_pid {
        Some(pid) => {
            let ns = format!("/proc/{pid}/ns/mnt");
            let file = File::open(&ns).map_err(|e| format!("{ns}: {e}"))?;
            setns(file.as_fd(), CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("entering the container's mounts: {e}"))?;
        }
        None => {
            rootfs::private_mount_namespace()?;
            rootfs::mount_layers(&config.layers, &config.rootfs)?;
        }
    }
    nix::unistd::chroot(&config.rootfs).map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
    let (gid, uid) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid: {e}"))?;

    let target = clean(path)?;
    match mode {
        Mode::Stat => {
            let stat = stat(&target)?;
            println!(
                "{}",
                serde_json::to_string(&stat).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Mode::Get => get(&target),
        Mode::Put => put(&target),
    }
}

/// An absolute path inside the container; `..` cannot climb above `/`
/// anyway once chrooted, but a clean path keeps the tar names clean.
fn clean(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("no path given".into());
    }
    let mut out = PathBuf::from("/");
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    Ok(out)
}

fn stat(path: &Path) -> Result<PathStat, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        format!(
            "Could not find the file {} in container: {e}",
            path.display()
        )
    })?;
    let mut mode = meta.mode() & 0o777;
    let mut link_target = String::new();
    if meta.is_dir() {
        mode |= GO_MODE_DIR;
    } else if meta.file_type().is_symlink() {
        mode |= GO_MODE_SYMLINK;
        link_target = std::fs::read_link(path)
            .map(|l| l.display().to_string())
            .unwrap_or_default();
    }
    let mtime = time::OffsetDateTime::from_unix_timestamp(meta.mtime())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(PathStat {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        size: meta.size() as i64,
        mode,
        mtime,
        link_target,
    })
}

/// A tar of `path` named by its last component, as dockerd writes it.
fn get(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        format!(
            "Could not find the file {} in container: {e}",
            path.display()
        )
    })?;
    let stdout = std::io::stdout();
    let mut builder = tar::Builder::new(stdout.lock());
    builder.follow_symlinks(false);
    let result = match path.file_name() {
        // The whole filesystem (`docker export`): its entries at the top.
        None => std::fs::read_dir(path).and_then(|entries| {
            for entry in entries {
                let entry = entry?;
                let name = PathBuf::from(entry.file_name());
                if entry.file_type()?.is_dir() {
                    builder.append_dir_all(&name, entry.path())?;
                } else {
                    builder.append_path_with_name(entry.path(), &name)?;
                }
            }
            Ok(())
        }),
        Some(name) if meta.is_dir() => builder.append_dir_all(name, path),
        Some(name) => builder.append_path_with_name(path, name),
    };
    result.map_err(|e| format!("archiving {}: {e}", path.display()))?;
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| e.to_string())
}

/// Extracts the tar on stdin into the directory `path`.
fn put(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "Could not find the file {} in container: {e}",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let mut archive = tar::Archive::new(std::io::stdin().lock());
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    archive
        .unpack(path)
        .map_err(|e| format!("extracting into {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_to_absolute() {
        assert_eq!(
            clean("etc/hostname").unwrap(),
            PathBuf::from("/etc/hostname")
        );
        assert_eq!(clean("/../../etc/./x").unwrap(), PathBuf::from("/etc/x"));
        assert_eq!(clean("/").unwrap(), PathBuf::from("/"));
        assert!(clean("").is_err());
    }
}
