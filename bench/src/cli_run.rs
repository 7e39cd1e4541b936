//! Through the real `docker` CLI: `docker run --rm busybox:test true` and
//! `GET /containers/json` with 100 containers, moat's engine against
//! dockerd (vfs storage, no iptables or bridge, `--userns-remap=default`)
//! and Podman's API service (runc, vfs), each on its own Unix socket; and
//! the same `docker run` over mutual TLS on loopback, moat through `moat
//! gateway` (the engine and PKI of [`Stack`]) against dockerd's own
//! `--tlsverify` listener with the same CA, server certificate and client
//! bundle. Everything is started here and stopped after.

use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use moat_certs::authority::{CA_CERT, SERVER_CERT, SERVER_KEY};

use crate::Options;
use crate::stack::{self, Stack};
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

/// Where the docker CLI reaches an engine.
#[derive(Clone, Copy)]
pub(crate) enum Host<'a> {
    Unix(&'a Path),
    /// Mutual TLS on loopback: the address and the client bundle
    /// (`ca.pem`, `cert.pem`, `key.pem`, as `moat certs issue` writes it).
    Tls(SocketAddr, &'a Path),
}

impl<'a> From<&'a Path> for Host<'a> {
    fn from(socket: &'a Path) -> Self {
        Host::Unix(socket)
    }
}

impl<'a> From<&'a PathBuf> for Host<'a> {
    fn from(socket: &'a PathBuf) -> Self {
        Host::Unix(socket)
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(socket) => write!(f, "unix://{}", socket.display()),
            Host::Tls(addr, _) => write!(f, "tcp://{addr}"),
        }
    }
}

/// The docker CLI with `args`, against `host` (`DOCKER_HOST`, and for
/// TLS `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH`).
pub(crate) fn docker<'a>(host: impl Into<Host<'a>>, args: &[&str]) -> Output {
    let host = host.into();
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", host.to_string())
        .env("DOCKER_CONFIG", "/var/tmp/moat-bench-docker-config");
    if let Host::Tls(_, bundle) = host {
        cmd.env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", bundle);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker CLI")
}

/// [`docker`] that must succeed; its stdout, trimmed.
pub(crate) fn docker_ok<'a>(host: impl Into<Host<'a>>, args: &[&str]) -> String {
    let host = host.into();
    let out = docker(host, args);
    assert!(
        out.status.success(),
        "docker {} on {host}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
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
/// The same dockerd, reached on its `--tlsverify` listener.
pub(crate) const DOCKERD_TLS: &str = "dockerd 20.10 --tlsverify (vfs, userns-remap)";
/// How the Podman peer is named in the tables.
pub(crate) const PODMAN: &str = "podman 4 API service (runc, vfs)";

/// dockerd configured as every scenario compares it: vfs storage, no
/// iptables or bridge, `--userns-remap=default`; its data under
/// `WORK/NAME`, its exec root (and containerd's sockets, which every
/// containerd-shim names) under `/run/moat-bench-NAME`, its socket
/// `/run/moat-bench-NAME.sock`.
pub(crate) fn dockerd(work: &Path, name: &str) -> Option<Daemon> {
    dockerd_with(work, name, &[])
}

/// [`dockerd`] with more flags; `None` (with the reason on stderr) when
/// dockerd is not installed or does not start.
pub(crate) fn dockerd_with(work: &Path, name: &str, flags: &[String]) -> Option<Daemon> {
    if !which("dockerd") {
        eprintln!("dockerd is not installed: no dockerd rows (bench/run.sh installs docker.io)");
        return None;
    }
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
        ])
        .args(flags);
    start("dockerd", socket, cmd, &work.join(format!("{name}.log")))
}

/// [`dockerd`] also listening on 127.0.0.1 with mutual TLS, as Docker's
/// documentation sets it up (`--tlsverify`): the CA, server certificate
/// and key of the PKI at `pki` (`moat certs init --ip 127.0.0.1`), so the
/// gateway's client bundles work against it too. The daemon and the TLS
/// address.
pub(crate) fn dockerd_tls(work: &Path, name: &str, pki: &Path) -> Option<(Daemon, SocketAddr)> {
    let addr = stack::loopback_addr();
    let pem = |name: &str| pki.join(name).display().to_string();
    let flags = [
        "-H".into(),
        format!("tcp://{addr}"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        pem(CA_CERT),
        "--tlscert".into(),
        pem(SERVER_CERT),
        "--tlskey".into(),
        pem(SERVER_KEY),
    ];
    let daemon = dockerd_with(work, name, &flags)?;
    Some((daemon, addr))
}

/// The `TMPDIR` of [`podman`]'s service: its API spools uploads (`docker
/// load` and `import`) there and leaves some behind.
pub(crate) fn podman_tmp(work: &Path, name: &str) -> PathBuf {
    work.join(format!("{name}-tmp"))
}

/// Podman's Docker-compatible API service (runc, vfs, cgroupfs) on
/// `/run/moat-bench-NAME.sock`, its storage under `WORK/NAME`; `None` (with
/// the reason on stderr) when Podman is not installed or does not start.
/// Its temporary files go to [`podman_tmp`].
pub(crate) fn podman(work: &Path, name: &str) -> Option<Daemon> {
    if !which("podman") {
        eprintln!("podman is not installed: no podman rows (bench/run.sh installs it)");
        return None;
    }
    let tmp = podman_tmp(work, name);
    std::fs::create_dir_all(&tmp).ok()?;
    let socket = PathBuf::from(format!("/run/moat-bench-{name}.sock"));
    let mut cmd = Command::new("podman");
    cmd.env("TMPDIR", &tmp)
        .arg("--root")
        .arg(work.join(name))
        .arg("--runroot")
        .arg(format!("/run/moat-bench-{name}"))
        .args([
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
        ])
        .arg(format!("unix://{}", socket.display()));
    start("podman", socket, cmd, &work.join(format!("{name}.log")))
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

/// One comparison, measured pairwise: what the table calls it, and where
/// each side is reached.
pub(crate) struct Pair<'a> {
    pub scenario: String,
    pub peer: &'static str,
    pub moat: Host<'a>,
    pub other: Host<'a>,
}

/// One untimed warm-up of each side of every pair, then `runs` rounds of
/// every pair, moat then the peer back to back (A B A B); a row per pair.
/// `measure` times one run on a host and checks it did what it should.
pub(crate) fn interleave(
    what: &str,
    runs: usize,
    pairs: Vec<Pair>,
    measure: impl Fn(Host) -> Duration,
) -> Vec<Row> {
    for pair in &pairs {
        measure(pair.moat);
        measure(pair.other);
    }
    eprint!("{what}: {runs} runs ");
    let mut rows: Vec<Row> = pairs
        .iter()
        .map(|pair| Row {
            scenario: pair.scenario.clone(),
            peer: pair.peer.into(),
            moat: Vec::new(),
            other: Vec::new(),
        })
        .collect();
    for _ in 0..runs {
        for (pair, row) in pairs.iter().zip(&mut rows) {
            row.moat.push(measure(pair.moat));
            row.other.push(measure(pair.other));
        }
        eprint!(".");
    }
    eprintln!();
    rows
}

pub fn run(options: &Options) -> Vec<Row> {
    // The engine on its Unix socket, and the gateway in front of it.
    let stack = Stack::start(options, "cli", &["--user-rate", "0"]);
    let work = &stack.dir;
    let tar = busybox_tar(work);

    // (name, daemon, its TLS address when it has one)
    let mut peers = Vec::new();
    if let Some((d, addr)) = dockerd_tls(work, "dockerd", &stack.pki()) {
        peers.push((DOCKERD, d, Some(addr)));
    }
    peers.extend(podman(work, "podman").map(|d| (PODMAN, d, None)));

    let engine = Host::Unix(&stack.engine_socket);
    for host in std::iter::once(engine).chain(peers.iter().map(|(_, d, _)| Host::Unix(&d.socket))) {
        docker_ok(host, &["import", tar.to_str().unwrap(), "busybox:test"]);
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
    let run_once = |host: Host| -> Duration {
        let start = Instant::now();
        let out = docker(host, &RUN);
        let elapsed = start.elapsed();
        assert!(
            out.status.success(),
            "docker run on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    };
    // A peer that cannot run a container here is reported and left out,
    // not benchmarked.
    peers.retain(|(name, d, _)| {
        let out = docker(&d.socket, &RUN);
        if !out.status.success() {
            eprintln!(
                "{name} cannot run a container on this host, left out: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.status.success()
    });
    let mut pairs: Vec<Pair> = peers
        .iter()
        .map(|(name, d, _)| Pair {
            scenario: "docker run".into(),
            peer: name,
            moat: engine,
            other: Host::Unix(&d.socket),
        })
        .collect();
    pairs.extend(peers.iter().filter_map(|(_, _, tls)| {
        Some(Pair {
            scenario: "docker run (gateway mTLS)".into(),
            peer: DOCKERD_TLS,
            moat: Host::Tls(stack.gateway_addr, &stack.bundle),
            other: Host::Tls((*tls)?, &stack.bundle),
        })
    }));
    let mut rows = interleave("docker run --rm true", options.runs, pairs, run_once);

    // `docker ps -a` with 100 containers: one raw request each time, so the
    // figure is the server's, not the CLI's start-up.
    eprint!("GET /containers/json with 100 containers: creating ");
    for socket in
        std::iter::once(&stack.engine_socket).chain(peers.iter().map(|(_, d, _)| &d.socket))
    {
        for _ in 0..100 {
            docker_ok(socket, &["create", "busybox:test", "true"]);
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
    for (name, d, _) in &peers {
        list_once(&stack.engine_socket);
        list_once(&d.socket);
        let (mut m, mut p) = (Vec::new(), Vec::new());
        for _ in 0..options.runs {
            m.push(list_once(&stack.engine_socket));
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
    drop(stack);
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
