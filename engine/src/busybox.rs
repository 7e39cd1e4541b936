//! A tiny root filesystem made from the host's `busybox-static`: what
//! `moat up` offers as an image that works without a registry, and what the
//! tests and benchmarks run.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{EngineError, Result};

/// Where Debian's `busybox-static` puts the binary.
pub fn find_binary() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Writes a busybox root filesystem into `dir`: the binary, a link for
/// each applet, `/etc/passwd` and `/etc/group` with root, nobody and an
/// unprivileged `app` user, and the usual empty directories.
pub fn write_rootfs(dir: &Path) -> Result<()> {
    let busybox = find_binary().ok_or_else(|| EngineError::Io {
        path: PathBuf::from("/bin/busybox"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "busybox-static is not installed (apt-get install busybox-static)",
        ),
    })?;
    let io = |path: &Path| EngineError::io(path.to_path_buf());
    for sub in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "mnt", "usr/bin", "sbin", "var",
    ] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
    }
    let tmp = dir.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(io(&tmp))?;
    let target = dir.join("bin/busybox");
    std::fs::copy(&busybox, &target).map_err(io(&target))?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(io(&busybox))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", &link).map_err(io(&link))?;
        }
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
             app:x:1000:1000:app:/tmp:/bin/sh\n",
        ),
        (
            "etc/group",
            "root:x:0:\ntty:x:5:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n",
        ),
    ];
    for (file, content) in files {
        let path = dir.join(file);
        std::fs::write(&path, content).map_err(io(&path))?;
    }
    Ok(())
}
