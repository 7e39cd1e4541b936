//! `moat up`, the README's run command: from an empty state root to a
//! `docker run` through the gateway and a teammate's `moat login`, a clean
//! stop on Ctrl-C, and a second run that reuses what the first made.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `moat up` until it says it is running; returns the child and what
/// it printed so far.
fn up(
    state: &std::path::Path,
    port: u16,
    socket: &std::path::Path,
    run_root: &str,
) -> (std::process::Child, String) {
    let mut child = Command::new(common::moat_bin())
        .arg("--state-root")
        .arg(state)
        .args([
            "up",
            "--no-context",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--socket",
        ])
        .arg(socket)
        .args(["--run-root", run_root])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&printed).contains("Ctrl-C stops") {
        assert!(
            Instant::now() < deadline,
            "moat up did not come up: {}",
            String::from_utf8_lossy(&printed)
        );
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "moat up ended: {:?}", child.wait_with_output());
        printed.extend_from_slice(&buf[..n]);
    }
    (child, String::from_utf8_lossy(&printed).into_owned())
}

fn interrupt_and_wait(child: std::process::Child) -> String {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn up_runs_moat_and_docker_works_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("engine.sock");
    let run_root = format!("/tmp/mu-{}", common::random_hex(4));
    let port = 20000 + (std::process::id() % 20000) as u16;

    let (child, printed) = up(&state, port, &socket, &run_root);
    // The lines it prints are the ones that work.
    let exports: Vec<(String, String)> = printed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(exports.len(), 3, "{printed}");
    let docker = |args: &[&str]| {
        Command::new("timeout")
            .args(["60", "docker"])
            .args(args)
            .envs(exports.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DOCKER_CONFIG", dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    };
    let out = docker(&["run", "--rm", "busybox:test", "echo", "hello"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // A teammate enrolls on the next port with a one-time token.
    let example = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("moat certs token "))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(example.contains(&format!(":{}", port + 1)), "{example}");
    let url = format!("https://127.0.0.1:{}", port + 1);
    let made: serde_json::Value = serde_json::from_str(&common::moat_ok(&[
        "--state-root",
        state.to_str().unwrap(),
        "certs",
        "token",
        "bob",
        "--group",
        "developer",
        "--enroll-url",
        &url,
        "--output",
        "json",
    ]))
    .unwrap();
    let bob = dir.path().join("bob");
    let bob_text = bob.to_str().unwrap();
    let login = common::moat(&[
        "login",
        &url,
        "--token",
        made["token"].as_str().unwrap(),
        "--ca-pin",
        made["ca_pin"].as_str().unwrap(),
        "--out",
        bob_text,
        "--no-context",
    ]);
    assert!(login.status.success(), "{login:?}");
    let whoami = common::moat_ok(&["whoami", "--bundle", bob_text, "--output", "json"]);
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["user"], "bob", "{whoami}");

    let stderr = interrupt_and_wait(child);
    assert!(
        !std::path::Path::new(&run_root).join("enroll.sock").exists(),
        "the signer did not stop"
    );
    assert!(stderr.contains("created the PKI"), "{stderr}");
    assert!(stderr.contains("imported busybox:test"), "{stderr}");
    assert!(!socket.exists(), "the engine did not stop");

    // Again: the same PKI, policy, bundle and image.
    let ca = std::fs::read(state.join("pki/ca.pem")).unwrap();
    let (child, _) = up(&state, port, &socket, &run_root);
    let out = docker(&["run", "--rm", "busybox:test", "echo", "again"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = interrupt_and_wait(child);
    assert!(!stderr.contains("created the PKI"), "{stderr}");
    assert!(!stderr.contains("imported"), "{stderr}");
    assert!(!stderr.contains("issued"), "{stderr}");
    assert_eq!(std::fs::read(state.join("pki/ca.pem")).unwrap(), ca);
    let _ = std::fs::remove_dir_all(&run_root);
}
