//! Test images built from the host's `busybox-static`, and small static
//! probes compiled with the host's gcc.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use moat_engine::userns::IdMap;

/// A busybox root filesystem in `dir`, owned by `map`'s root.
pub fn busybox_layer(dir: &Path, map: &IdMap) -> PathBuf {
    moat_engine::busybox::write_rootfs(dir).unwrap();
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
