//! The real `docker` CLI against a real `moat engine` on a Unix socket:
//! the everyday commands, as they work against dockerd.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::engine::EngineProcess;

fn engine_with_busybox() -> EngineProcess {
    let engine = EngineProcess::start();
    engine.import_busybox();
    engine
}

#[test]
fn version_info_import_and_run() {
    let engine = engine_with_busybox();
    let version = engine.docker_ok(&["version"]);
    assert!(
        version.contains("API version:") && version.contains("1.41"),
        "{version}"
    );
    let info = engine.docker_ok(&["info"]);
    assert!(info.contains("Server Version:"), "{info}");
    let images = engine.docker_ok(&["images"]);
    assert!(
        images.contains("busybox") && images.contains("test"),
        "{images}"
    );

    let out = engine.docker_ok(&["run", "--rm", "busybox:test", "echo", "hello"]);
    assert_eq!(out, "hello\n");
    let out = engine.docker(&["run", "--rm", "busybox:test", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    // --rm removed them.
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn a_detached_container_through_its_life() {
    let engine = engine_with_busybox();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox:test",
        "sh",
        "-c",
        "echo started; exec sleep 300",
    ]);
    let ps = engine.docker_ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(engine.docker_ok(&["logs", "web"]), "started\n");
    assert_eq!(engine.docker_ok(&["exec", "web", "echo", "hi"]), "hi\n");

    let mut child = engine
        .docker_cmd()
        .args(["exec", "-i", "web", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");

    let top = engine.docker_ok(&["top", "web"]);
    assert!(top.contains("sleep 300"), "{top}");
    let running = engine.docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{json .Config.Cmd}}",
        "web",
    ]);
    assert_eq!(
        running.trim(),
        r#"true ["sh","-c","echo started; exec sleep 300"]"#
    );

    engine.docker_ok(&["stop", "-t", "1", "web"]);
    assert_eq!(engine.docker_ok(&["wait", "web"]).trim(), "137");
    let ps = engine.docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("web Exited (137)"), "{ps}");
    engine.docker_ok(&["rm", "web"]);
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn an_interactive_tty_answers_typed_commands() {
    let engine = engine_with_busybox();
    // `script` gives the docker CLI a pty, as a person's terminal would.
    let command = format!(
        "DOCKER_HOST={} DOCKER_CONFIG={} docker run -it --rm busybox:test sh",
        engine.host(),
        engine.path("docker-config").display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stdin.write_all(b"echo typed-$((40+2))\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(b"exit 5\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed-42"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}

#[test]
fn tag_remove_save_and_load() {
    let engine = engine_with_busybox();
    engine.docker_ok(&["tag", "busybox:test", "other:1"]);
    let images = engine.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.contains("other:1") && images.contains("busybox:test"),
        "{images}"
    );
    let out = engine.docker_ok(&["rmi", "other:1"]);
    assert!(out.contains("Untagged: other:1"), "{out}");

    let archive = engine.path("saved.tar");
    engine.docker_ok(&["save", "-o", archive.to_str().unwrap(), "busybox:test"]);
    let out = engine.docker_ok(&["rmi", "busybox:test"]);
    assert!(out.contains("Deleted:"), "{out}");
    assert!(
        !engine
            .docker(&["image", "inspect", "busybox:test"])
            .status
            .success()
    );
    let out = engine.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:test"), "{out}");
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "busybox:test", "echo", "back"]),
        "back\n"
    );
}

#[test]
fn limits_and_a_read_only_root() {
    let engine = engine_with_busybox();
    let out = engine.docker(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "busybox:test",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(out.status.code(), Some(137));
    assert_eq!(
        engine
            .docker_ok(&["inspect", "-f", "{{.State.OOMKilled}}", "hog"])
            .trim(),
        "true"
    );
    let out = engine.docker(&["run", "--rm", "--read-only", "busybox:test", "touch", "/x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
}

#[test]
fn bad_input_gets_dockers_errors_and_the_engine_keeps_serving() {
    let engine = engine_with_busybox();
    let fails_with = |args: &[&str], expected: &str| {
        let out = engine.docker(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    };
    fails_with(
        &["create", "--name", "bad name", "busybox:test", "true"],
        "Invalid container name",
    );
    engine.docker_ok(&["create", "--name", "taken", "busybox:test", "true"]);
    fails_with(
        &["create", "--name", "taken", "busybox:test", "true"],
        "is already in use",
    );
    fails_with(&["create", "no/such:image", "true"], "Unable to find image");
    fails_with(
        &["create", "UPPER:case", "true"],
        "invalid reference format",
    );
    fails_with(&["exec", "taken", "true"], "is not running");
    engine.docker_ok(&["rm", "taken"]);
    fails_with(&["start", "taken"], "No such container");
    fails_with(
        &["run", "--rm", "busybox:test", "no-such-command"],
        "executable file not found",
    );
    fails_with(
        &["run", "--rm", "--memory", "1k", "busybox:test", "true"],
        "minimum memory limit allowed is 6MB",
    );

    // Raw requests the CLI would never send.
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&engine.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{not json",
            "http://x/containers/create"
        ]),
        "400"
    );
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"Image":"busybox:test","HostConfig":{"Memory":"lots"}}"#,
            "http://x/containers/create"
        ]),
        "400"
    );
    assert_eq!(
        curl(&["http://x/v1.41/containers/../containers/json"]),
        "400"
    );
    assert_eq!(curl(&["http://x/no/such/route"]), "404");
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "busybox:test", "echo", "still"]),
        "still\n"
    );
}

#[test]
fn containers_keep_running_when_the_engine_is_killed() {
    let mut engine = engine_with_busybox();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "busybox:test",
        "sh",
        "-c",
        "trap 'exit 7' TERM; while true; do sleep 0.1; done",
    ]);
    engine.kill_and_restart();
    assert_eq!(
        engine
            .docker_ok(&["inspect", "-f", "{{.State.Status}}", "survivor"])
            .trim(),
        "running"
    );
    engine.docker_ok(&["stop", "survivor"]);
    assert_eq!(engine.docker_ok(&["wait", "survivor"]).trim(), "7");
}

#[test]
fn docker_cp_both_ways_stays_inside_the_container() {
    let engine = engine_with_busybox();
    engine.docker_ok(&["run", "-d", "--name", "box", "busybox:test", "sleep", "300"]);
    let local = engine.path("to-container.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    engine.docker_ok(&["cp", local.to_str().unwrap(), "box:/tmp/"]);
    assert_eq!(
        engine.docker_ok(&["exec", "box", "cat", "/tmp/to-container.txt"]),
        "from the host\n"
    );
    let out_dir = engine.path("from-container");
    std::fs::create_dir_all(&out_dir).unwrap();
    engine.docker_ok(&["cp", "box:/etc/passwd", out_dir.to_str().unwrap()]);
    assert!(
        std::fs::read_to_string(out_dir.join("passwd"))
            .unwrap()
            .contains("root:x:0:0")
    );

    // A symlink in the container to a host path resolves inside the container.
    std::fs::write(engine.path("host-secret"), "host only\n").unwrap();
    let secret = engine.path("host-secret");
    engine.docker_ok(&[
        "exec",
        "box",
        "ln",
        "-s",
        secret.to_str().unwrap(),
        "/tmp/escape",
    ]);
    let out = engine.docker(&["cp", "box:/tmp/escape/.", out_dir.to_str().unwrap()]);
    assert!(
        !out.status.success()
            || !std::fs::read_dir(&out_dir)
                .unwrap()
                .any(|e| e.unwrap().file_name() == "host-secret")
    );
    let out = engine.docker_ok(&["exec", "box", "ls", "-la", "/tmp"]);
    assert!(out.contains("escape"), "{out}");
    let _ = engine.docker(&[
        "cp",
        "-L",
        "box:/tmp/escape",
        out_dir.join("copied").to_str().unwrap(),
    ]);
    let copied = std::fs::read_to_string(out_dir.join("copied")).unwrap_or_default();
    assert_ne!(
        copied, "host only\n",
        "docker cp followed a container symlink onto the host"
    );
}

/// Open descriptors and threads of a process.
fn fds_and_tasks(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

#[test]
fn clients_that_hang_up_mid_stream_leak_nothing() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let engine = engine_with_busybox();
    let id = engine
        .docker_ok(&[
            "run",
            "-d",
            "busybox:test",
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.05; done",
        ])
        .trim()
        .to_owned();
    let shim_state = engine
        .path("state/engine/containers")
        .join(&id)
        .join("shim.json");
    let shim: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shim_state).unwrap()).unwrap();
    let shim_pid = shim["shim_pid"].as_u64().unwrap() as u32;

    let hang_up = |request: &str| {
        let mut stream = UnixStream::connect(&engine.socket).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        // Dropped here, mid-stream.
    };
    let logs =
        format!("GET /v1.41/containers/{id}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: moat\r\n\r\n");
    let attach = format!(
        "POST /v1.41/containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: moat\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    );
    // Long enough for tokio's idle blocking threads (kept 10 s) to go too.
    let settle = || std::thread::sleep(std::time::Duration::from_secs(12));

    for _ in 0..20 {
        hang_up(&logs);
        hang_up(&attach);
    }
    settle();
    let (engine_fds, engine_tasks) = fds_and_tasks(engine.pid());
    let (shim_fds, _) = fds_and_tasks(shim_pid);
    for _ in 0..500 {
        hang_up(&logs);
        hang_up(&attach);
    }
    settle();
    let (engine_fds_after, engine_tasks_after) = fds_and_tasks(engine.pid());
    let (shim_fds_after, _) = fds_and_tasks(shim_pid);
    let targets = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", engine.pid()))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|t| t.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        engine_fds_after <= engine_fds + 8,
        "engine fds {engine_fds} -> {engine_fds_after}: {:?}",
        targets().iter().take(20).collect::<Vec<_>>()
    );
    assert!(
        engine_tasks_after <= engine_tasks + 8,
        "engine tasks {engine_tasks} -> {engine_tasks_after}"
    );
    assert!(
        shim_fds_after <= shim_fds + 4,
        "shim fds {shim_fds} -> {shim_fds_after}"
    );
    assert_eq!(engine.docker_ok(&["exec", &id, "echo", "alive"]), "alive\n");
}
