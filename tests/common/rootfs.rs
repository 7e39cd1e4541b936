//! Test images built from the host's `busybox-static`, and small static
//! probes compiled with the host's gcc.

#![allow(dead_code)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use moat_engine::userns::IdMap;

/// A busybox root filesystem in `dir`, owned by `map`'s root.
pub fn busybox_layer(dir: &Path, map: &IdMap) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (scripts/deps.sh)");
    for sub in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "mnt", "data", "usr/bin", "sbin",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
         app:x:1000:1000:app:/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    moat_engine::userns::shift_ownership(dir, map).unwrap();
    dir.to_path_buf()
}

/// Compiles a static C program (for syscalls busybox has no applet for).
pub fn static_probe(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let status = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "compiling {name}");
    out
}
