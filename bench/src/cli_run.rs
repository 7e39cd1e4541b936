//! Through the real `docker` CLI: `docker run --rm busybox:test true` and
//! `GET /containers/json` with 100 containers, moat's engine against
//! dockerd (vfs storage, no iptables or bridge, `--userns-remap=default`)
//! and Podman's API service (runc, vfs), each on its own Unix socket,
//! started here and stopped after.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Options;
use crate::stats::Row;

pub(crate) struct Daemon {
    name: &'static str,
    pub(crate) socket: PathBuf,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn docker(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", "/var/tmp/moat-bench-docker-config")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker CLI")
}

fn wait_ready(daemon: &Daemon) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if docker(&daemon.socket, &["version"]).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{} did not come up", daemon.name);
    false
}

pub(crate) fn start(
    name: &'static str,
    socket: PathBuf,
    mut cmd: Command,
    log: &Path,
) -> Option<Daemon> {
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::File::create(log).ok()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().ok()?)
        .stderr(log)
        .spawn()
        .map_err(|e| eprintln!("{name}: {e}"))
        .ok()?;
    let daemon = Daemon {
        name,
        socket,
        child,
    };
    wait_ready(&daemon).then_some(daemon)
}

/// How the dockerd peer is named in the tables.
pub(crate) const DOCKERD: &str = "dockerd 20.10 (vfs, userns-remap)";

/// dockerd configured as every scenario compares it: vfs storage, no
/// iptables or bridge, `--userns-remap=default`; its data under
/// `WORK/NAME`, its exec root (and containerd's sockets, which every
/// containerd-shim names) under `/run/moat-bench-NAME`, its socket
/// `/run/moat-bench-NAME.sock`.
pub(crate) fn dockerd(work: &Path, name: &str) -> Option<Daemon> {
    let socket = PathBuf::from(format!("/run/moat-bench-{name}.sock"));
    let mut cmd = Command::new("dockerd");
    cmd.arg("--data-root")
        .arg(work.join(name))
        .arg("--exec-root")
        .arg(format!("/run/moat-bench-{name}"))
        .arg("--pidfile")
        .arg(format!("/run/moat-bench-{name}.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--userns-remap=default",
        ]);
    start("dockerd", socket, cmd, &work.join(format!("{name}.log")))
}

/// Writes the busybox root the scenarios run, as a tar for `docker import`.
pub(crate) fn busybox_tar(work: &Path) -> PathBuf {
    let rootfs = work.join("rootfs");
    moat_engine::busybox::write_rootfs(&rootfs).expect("busybox rootfs");
    let tar = work.join("busybox.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    tar
}

pub(crate) fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run(options: &Options) -> Vec<Row> {
    let work = options.work.join("cli");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&options.work, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o711)).unwrap();

    let tar = busybox_tar(&work);

    let mut moat_cmd = Command::new(&options.moat);
    moat_cmd.arg("--state-root").arg(work.join("moat")).args([
        "engine",
        "--socket",
        "/run/moat-bench-engine.sock",
        "--run-root",
        "/run/moat-bench-e",
    ]);
    let moat = start(
        "moat",
        PathBuf::from("/run/moat-bench-engine.sock"),
        moat_cmd,
        &work.join("moat.log"),
    )
    .expect("moat engine");

    let mut peers = Vec::new();
    if which("dockerd") {
        if let Some(d) = dockerd(&work, "dockerd") {
            peers.push((DOCKERD, d));
        }
    } else {
        eprintln!("dockerd is not installed: no dockerd rows (bench/run.sh installs docker.io)");
    }
    if which("podman") {
        let mut cmd = Command::new("podman");
        cmd.arg("--root").arg(work.join("podman")).args([
            "--runroot",
            "/run/moat-bench-podman",
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            "runc",
            "system",
            "service",
            "--time=0",
            "unix:///run/moat-bench-podman.sock",
        ]);
        if let Some(d) = start(
            "podman",
            PathBuf::from("/run/moat-bench-podman.sock"),
            cmd,
            &work.join("podman.log"),
        ) {
            peers.push(("podman 4 API service (runc, vfs)", d));
        }
    } else {
        eprintln!("podman is not installed: no podman rows (bench/run.sh installs it)");
    }

    for socket in std::iter::once(&moat.socket).chain(peers.iter().map(|(_, d)| &d.socket)) {
        let out = docker(socket, &["import", tar.to_str().unwrap(), "busybox:test"]);
        assert!(
            out.status.success(),
            "import into {}: {}",
            socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every engine gets the same command. The ulimits are what this host
    // allows: Podman's defaults (nofile and nproc 1048576) make runc fail
    // here, and moat and dockerd leave them as they are.
    const RUN: [&str; 8] = [
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "busybox:test",
        "true",
    ];
    let run_once = |socket: &Path| -> Duration {
        let start = Instant::now();
        let out = docker(socket, &RUN);
        let elapsed = start.elapsed();
        assert!(
            out.status.success(),
            "docker run on {}: {}",
            socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    };
    // Warm up once each; a peer that cannot run a container here is
    // reported and left out, not benchmarked.
    run_once(&moat.socket);
    peers.retain(|(name, d)| {
        let out = docker(&d.socket, &RUN);
        if !out.status.success() {
            eprintln!(
                "{name} cannot run a container on this host, left out: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.status.success()
    });
    let mut rows = Vec::new();
    eprint!("docker run --rm true: {} runs ", options.runs);
    let mut results: Vec<(Vec<Duration>, Vec<Duration>)> =
        vec![(Vec::new(), Vec::new()); peers.len()];
    for _ in 0..options.runs {
        for (i, (_, d)) in peers.iter().enumerate() {
            results[i].0.push(run_once(&moat.socket));
            results[i].1.push(run_once(&d.socket));
        }
        eprint!(".");
    }
    eprintln!();
    for ((name, _), (m, p)) in peers.iter().zip(results) {
        rows.push(Row {
            scenario: "docker run".into(),
            peer: (*name).into(),
            moat: m,
            other: p,
        });
    }

    // `docker ps -a` with 100 containers: one raw request each time, so the
    // figure is the server's, not the CLI's start-up.
    eprint!("GET /containers/json with 100 containers: creating ");
    for socket in std::iter::once(&moat.socket).chain(peers.iter().map(|(_, d)| &d.socket)) {
        for _ in 0..100 {
            let out = docker(socket, &["create", "busybox:test", "true"]);
            assert!(
                out.status.success(),
                "create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprint!(".");
    }
    eprintln!();
    let list_once = |socket: &Path| -> Duration {
        let start = Instant::now();
        let body = get(socket, "/v1.41/containers/json?all=1");
        let elapsed = start.elapsed();
        assert!(
            body.matches("\"Id\"").count() >= 100,
            "list on {}",
            socket.display()
        );
        elapsed
    };
    for (name, d) in &peers {
        list_once(&moat.socket);
        list_once(&d.socket);
        let (mut m, mut p) = (Vec::new(), Vec::new());
        for _ in 0..options.runs {
            m.push(list_once(&moat.socket));
            p.push(list_once(&d.socket));
        }
        rows.push(Row {
            scenario: "ps 100".into(),
            peer: (*name).into(),
            moat: m,
            other: p,
        });
    }
    drop(peers);
    drop(moat);
    rows
}

/// One HTTP/1.1 GET over a Unix socket; the body as text.
fn get(socket: &Path, path: &str) -> String {
    let mut stream = UnixStream::connect(socket).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
