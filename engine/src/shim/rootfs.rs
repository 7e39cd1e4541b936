//! The container's root filesystem, made inside the shim's private mount
//! namespace so that it disappears with the shim: no mount is ever left on
//! the host, whatever happens to the engine.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;

/// Read-only image layers (top first) under a writable upper directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layers {
    /// Top-most layer first, as overlayfs' `lowerdir` lists them.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Leaves the host's mount namespace for a private one.
pub fn private_mount_namespace() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))
}

/// Mounts the layers at `target`: overlayfs, or a bind of a copy where
/// overlayfs is not available.
pub fn mount_layers(layers: &Layers, target: &Path) -> Result<(), String> {
    let mut options = OsString::from("lowerdir=");
    for (i, dir) in layers.lower.iter().enumerate() {
        if i > 0 {
            options.push(":");
        }
        options.push(escape_overlay_path(dir));
    }
    options.push(",upperdir=");
    options.push(escape_overlay_path(&layers.upper));
    options.push(",workdir=");
    options.push(escape_overlay_path(&layers.work));
    match mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_os_str()),
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ENODEV) | Err(nix::errno::Errno::EINVAL) => {
            copy_fallback(layers, target)
        }
        Err(e) => Err(format!("mounting overlay at {}: {e}", target.display())),
    }
}

/// Without overlayfs: the layers are copied (bottom first) into the upper
/// directory once, and that directory is bound at `target`.
fn copy_fallback(layers: &Layers, target: &Path) -> Result<(), String> {
    let marker = layers.upper.join(".moat-copied");
    if !marker.exists() {
        for dir in layers.lower.iter().rev() {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", dir.display()))
                .arg(&layers.upper)
                .status()
                .map_err(|e| format!("copying {}: {e}", dir.display()))?;
            if !status.success() {
                return Err(format!("copying {} failed ({status})", dir.display()));
            }
        }
        File::create(&marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    mount(
        Some(&layers.upper),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "binding {} at {}: {e}",
            layers.upper.display(),
            target.display()
        )
    })
}

/// overlayfs splits its options on `,` and `:`; a path may not contain them raw.
fn escape_overlay_path(path: &Path) -> OsString {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b',' | b':' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    std::ffi::OsStr::from_bytes(&out).to_owned()
}

/// Reads a file of the container's filesystem, resolving every symlink
/// inside `root`: an image's `/etc/passwd -> /etc/shadow` stays in the image.
pub fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let dir = File::open(root).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(std::os::fd::AsRawFd::as_raw_fd(&dir), path, how).ok()?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// A process's identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves Docker's `User` (`name`, `uid`, `name:group`, `uid:gid`) against
/// the container's `/etc/passwd` and `/etc/group`, as dockerd does.
pub fn resolve_user(root: &Path, user: &str) -> Result<ProcessUser, String> {
    let passwd = read_in_root(root, "/etc/passwd").unwrap_or_default();
    let group = read_in_root(root, "/etc/group").unwrap_or_default();
    resolve_user_from(&passwd, &group, user)
}

fn resolve_user_from(passwd: &str, group: &str, user: &str) -> Result<ProcessUser, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    };
    let users = entries(passwd);
    let groups = entries(group);
    let found = users
        .iter()
        .find(|u| u.len() >= 4 && (u[0] == user_part || u[2] == user_part));
    let (uid, mut gid, name) = match (found, user_part.parse::<u32>()) {
        (Some(u), _) => (
            u[2].parse()
                .map_err(|_| format!("bad uid in /etc/passwd for {}", u[0]))?,
            u[3].parse()
                .map_err(|_| format!("bad gid in /etc/passwd for {}", u[0]))?,
            Some(u[0].clone()),
        ),
        (None, Ok(uid)) => (uid, uid, None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ));
        }
    };
    if let Some(g) = group_part {
        gid = match groups
            .iter()
            .find(|e| e.len() >= 3 && (e[0] == g || e[2] == g))
        {
            Some(e) => e[2]
                .parse()
                .map_err(|_| format!("bad gid in /etc/group for {}", e[0]))?,
            None => g.parse().map_err(|_| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    // As containerd gives Docker: the primary group, then every group
    // that lists the user as a member.
    let mut additional_gids = vec![gid];
    if let Some(name) = &name {
        for e in groups
            .iter()
            .filter(|e| e.len() >= 4 && e[3].split(',').any(|m| m == name))
        {
            if let Ok(g) = e[2].parse()
                && !additional_gids.contains(&g)
            {
                additional_gids.push(g);
            }
        }
    }
    Ok(ProcessUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:www,root\nnogroup:x:65534:\n";

    #[test]
    fn resolves_names_and_numbers() {
        let u = resolve_user_from(PASSWD, GROUP, "www").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (33, 33, vec![33, 50])
        );
        let u = resolve_user_from(PASSWD, GROUP, "1234:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1234, 50));
        let u = resolve_user_from(PASSWD, GROUP, "").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        let u = resolve_user_from(PASSWD, GROUP, "nobody:65534").unwrap();
        assert_eq!((u.uid, u.gid), (65534, 65534));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(
            resolve_user_from(PASSWD, GROUP, "ghost")
                .unwrap_err()
                .contains("unable to find user ghost")
        );
        assert!(
            resolve_user_from(PASSWD, GROUP, "root:ghosts")
                .unwrap_err()
                .contains("unable to find group")
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname-of-host", root.path().join("etc/passwd"))
            .unwrap();
        std::fs::write(root.path().join("etc/hostname-of-host"), "inside").unwrap();
        assert_eq!(
            read_in_root(root.path(), "/etc/passwd").as_deref(),
            Some("inside")
        );
        std::os::unix::fs::symlink("../../../../etc/os-release", root.path().join("etc/escape"))
            .unwrap();
        assert_eq!(read_in_root(root.path(), "/etc/escape"), None);
    }
}
