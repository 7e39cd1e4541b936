//! User namespaces: which host ids a container's ids map to.
//!
//! As dockerd does with `--userns-remap=default` and its `dockremap` user,
//! the engine runs containers as a subordinate id range of the `moat` user
//! from `/etc/subuid` and `/etc/subgid`, creating the user and a
//! 65536-wide range when missing. Container uid 0 is then the first id of
//! that range: an unprivileged uid on the host.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use crate::error::{EngineError, Result};

pub const REMAP_USER: &str = "moat";
pub const RANGE_SIZE: u32 = 65536;
const FIRST_RANGE_START: u32 = 100_000;

/// Container ids `0..size` are host ids `uid..uid+size` (and likewise gids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl IdMap {
    /// The identity map, for containers that share the host's user namespace.
    pub const HOST: IdMap = IdMap {
        uid: 0,
        gid: 0,
        size: u32::MAX,
    };

    /// Docker's name for a remap root's directory: `100000.100000`.
    pub fn dir_name(&self) -> String {
        format!("{}.{}", self.uid, self.gid)
    }

    pub fn host_uid(&self, container_uid: u32) -> Option<u32> {
        (container_uid < self.size).then(|| self.uid + container_uid)
    }

    pub fn host_gid(&self, container_gid: u32) -> Option<u32> {
        (container_gid < self.size).then(|| self.gid + container_gid)
    }

    /// The `moat` user's subordinate ranges, creating the user and ranges
    /// (as root) when they are missing.
    pub fn for_remap_user() -> Result<IdMap> {
        Self::from_files(Path::new("/etc/subuid"), Path::new("/etc/subgid"), true)
    }

    /// Reads the ranges of [`REMAP_USER`] from the given files, allocating
    /// them when `allocate` is set and they are missing.
    pub fn from_files(subuid: &Path, subgid: &Path, allocate: bool) -> Result<IdMap> {
        let uid = range_of(subuid)?;
        let gid = range_of(subgid)?;
        match (uid, gid) {
            (Some((uid, usize)), Some((gid, gsize))) => Ok(IdMap {
                uid,
                gid,
                size: usize.min(gsize),
            }),
            _ if allocate => {
                // Two engines (or test processes) starting at once must not
                // both append a range.
                let lock_path = std::env::temp_dir().join("moat-userns.lock");
                let lock = fs::File::create(&lock_path).map_err(EngineError::io(&lock_path))?;
                lock.lock().map_err(EngineError::io(&lock_path))?;
                ensure_user()?;
                let uid = match range_of(subuid)? {
                    Some((start, _)) => start,
                    None => append_range(subuid)?,
                };
                let gid = match range_of(subgid)? {
                    Some((start, _)) => start,
                    None => append_range(subgid)?,
                };
                Ok(IdMap {
                    uid,
                    gid,
                    size: RANGE_SIZE,
                })
            }
            _ => Err(EngineError::UserNamespace(format!(
                "no subordinate ids for user {REMAP_USER} in {} and {}",
                subuid.display(),
                subgid.display()
            ))),
        }
    }
}

/// The first range of at least [`RANGE_SIZE`] ids for the remap user.
fn range_of(file: &Path) -> Result<Option<(u32, u32)>> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(EngineError::io(file)(e)),
    };
    let uid = nix::unistd::User::from_name(REMAP_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.to_string());
    Ok(parse_ranges(&text)
        .into_iter()
        .find(|(name, _, size)| {
            (name == REMAP_USER || Some(name) == uid.as_ref()) && *size >= RANGE_SIZE
        })
        .map(|(_, start, size)| (start, size)))
}

fn parse_ranges(text: &str) -> Vec<(String, u32, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let name = parts.next()?.to_owned();
            let start = parts.next()?.parse().ok()?;
            let size = parts.next()?.parse().ok()?;
            Some((name, start, size))
        })
        .collect()
}

/// Appends a range after every existing one, as `useradd` would.
fn append_range(file: &Path) -> Result<u32> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let start = parse_ranges(&text)
        .iter()
        .map(|(_, start, size)| start.saturating_add(*size))
        .max()
        .unwrap_or(FIRST_RANGE_START)
        .max(FIRST_RANGE_START);
    let mut out = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(file)
        .map_err(EngineError::io(file))?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    writeln!(out, "{sep}{REMAP_USER}:{start}:{RANGE_SIZE}").map_err(EngineError::io(file))?;
    out.sync_all().map_err(EngineError::io(file))?;
    Ok(start)
}

fn ensure_user() -> Result<()> {
    if nix::unistd::User::from_name(REMAP_USER)
        .ok()
        .flatten()
        .is_some()
    {
        return Ok(());
    }
    let mut useradd = Command::new("useradd");
    useradd.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
    ]);
    // The group may exist already (the gateway creates it for the socket
    // when it starts first): join it rather than fail on it.
    if nix::unistd::Group::from_name(REMAP_USER)
        .ok()
        .flatten()
        .is_some()
    {
        useradd.args(["--gid", REMAP_USER]);
    }
    let status = useradd
        .arg(REMAP_USER)
        .status()
        .map_err(|e| EngineError::UserNamespace(format!("running useradd: {e}")))?;
    if !status.success() {
        return Err(EngineError::UserNamespace(format!(
            "useradd {REMAP_USER} failed ({status})"
        )));
    }
    Ok(())
}

/// Gives every file below `root` to the remapped owner of its current
/// owner: what a layer needs before a user-namespaced container can use it.
pub fn shift_ownership(root: &Path, map: &IdMap) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(EngineError::io(&path))?;
        let (uid, gid) = match (map.host_uid(meta.uid()), map.host_gid(meta.gid())) {
            (Some(uid), Some(gid)) => (uid, gid),
            _ => {
                return Err(EngineError::UserNamespace(format!(
                    "{}: owner {}:{} cannot be mapped into a range of {}",
                    path.display(),
                    meta.uid(),
                    meta.gid(),
                    map.size
                )));
            }
        };
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(EngineError::io(&path))?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(EngineError::io(&path))? {
                stack.push(entry.map_err(EngineError::io(&path))?.path());
            }
        } else if meta.is_file() && meta.mode() & 0o6000 != 0 {
            // chown clears set-id bits; keep them as the image had them.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(EngineError::io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_remap_users_range() {
        let dir = tempfile::tempdir().unwrap();
        let subuid = dir.path().join("subuid");
        let subgid = dir.path().join("subgid");
        fs::write(&subuid, "alice:100000:65536\nmoat:165536:65536\n").unwrap();
        fs::write(&subgid, "moat:200000:65536\n").unwrap();
        let map = IdMap::from_files(&subuid, &subgid, false).unwrap();
        assert_eq!(
            map,
            IdMap {
                uid: 165536,
                gid: 200000,
                size: 65536
            }
        );
        assert_eq!(map.dir_name(), "165536.200000");
        assert_eq!(map.host_uid(0), Some(165536));
        assert_eq!(map.host_uid(65536), None);
    }

    #[test]
    fn missing_ranges_are_an_error_without_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            IdMap::from_files(&dir.path().join("a"), &dir.path().join("b"), false).unwrap_err();
        assert!(err.to_string().contains("no subordinate ids"), "{err}");
    }

    #[test]
    fn appended_ranges_follow_the_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subuid");
        fs::write(&file, "alice:100000:65536").unwrap();
        assert_eq!(append_range(&file).unwrap(), 165536);
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(text, "alice:100000:65536\nmoat:165536:65536\n");
    }
}
