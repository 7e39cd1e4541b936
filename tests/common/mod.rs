//! Shared helpers for the integration tests: the `moat` binary, temporary
//! state roots, and snapshots of directories.

#![allow(dead_code)]

pub mod engine;
pub mod gateway;
pub mod registry;
pub mod rootfs;
pub mod signer;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `moat` binary cargo built for this test run.
pub fn moat_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moat"))
}

/// Runs `moat ARGS...` and returns its output, whatever the exit status.
pub fn moat(args: &[&str]) -> Output {
    Command::new(moat_bin())
        .args(args)
        .env_remove("MOAT_STATE_ROOT")
        .output()
        .expect("start moat")
}

/// Runs `moat ARGS...` and panics with its stderr unless it succeeds.
pub fn moat_ok(args: &[&str]) -> String {
    let out = moat(args);
    assert!(
        out.status.success(),
        "moat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a program and returns (success, stdout + stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Every file below `dir`: relative path → (mode, contents).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::metadata(&d).unwrap();
        files.insert(
            d.strip_prefix(dir).unwrap().to_path_buf(),
            (meta.permissions().mode(), Vec::new()),
        );
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    (meta.permissions().mode(), std::fs::read(&path).unwrap()),
                );
            }
        }
    }
    files
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `n` random bytes as hex, for unique names.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
