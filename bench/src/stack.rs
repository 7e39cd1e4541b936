//! The processes the gateway scenarios measure, started the way the
//! integration tests start them and stopped after: a `moat engine` on a
//! Unix socket, a PKI made by `moat certs`, `moat gateway` in front of the
//! engine (on loopback, as root so it drops to `moat-gateway` as in
//! production), and nginx terminating the same mutual TLS (same CA,
//! server certificate and CRL) in front of the same socket, with no policy
//! and no audit.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_certs::authority::{AUDIT_PUB, CA_CERT, CRL, SERVER_CERT, SERVER_KEY};
use rustls::ClientConfig;

use crate::Options;
use crate::cli_run;
use crate::mtls;

/// A process started here; SIGTERM and a wait when dropped.
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon {
            name,
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// SIGTERM, then up to 15 s for it to finish (the gateway writes a
    /// last checkpoint), then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killed", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User plus system CPU time of a process, all its threads, from
/// `/proc/PID/stat`; zero once it is gone.
pub fn cpu_time(pid: i32) -> Duration {
    proc_stat(pid).map_or(Duration::ZERO, |s| s.cpu)
}

/// The CPU time of a process and of its children (nginx's master and its
/// workers).
pub fn tree_cpu_time(pid: i32) -> Duration {
    let mut total = cpu_time(pid);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(stat) = proc_stat(child).filter(|s| s.parent == pid) {
            total += stat.cpu;
        }
    }
    total
}

struct ProcStat {
    parent: i32,
    cpu: Duration,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and ')':
    // state, ppid, ..., utime (14th field of the line), stime (15th).
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some(ProcStat {
        parent: fields.get(1)?.parse().ok()?,
        cpu: Duration::from_millis(ticks * 1000 / hz),
    })
}

/// `docker run` of a container that runs until removed, with the ulimits
/// every side can take (Podman's defaults make runc fail on these hosts).
pub const LONG_RUNNING: [&str; 9] = [
    "run",
    "-d",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "busybox:test",
    "sleep",
    "100000",
];

/// An engine, a PKI, a gateway in front of the engine, a client
/// certificate for `bench` in the group `admin`, and optionally nginx.
pub struct Stack {
    moat: PathBuf,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub engine_socket: PathBuf,
    pub gateway_addr: SocketAddr,
    /// The client bundle (`ca.pem`, `cert.pem`, `key.pem`).
    pub bundle: PathBuf,
    containers: Vec<String>,
    // Stopped in this order when dropped: the proxies, then the engine.
    pub nginx: Option<Nginx>,
    pub gateway: Daemon,
    pub engine: Daemon,
}

impl Stack {
    /// Starts everything under `WORK/name` with the gateway flags given
    /// (the scenarios pass `--user-rate 0`: the rate limit is not what
    /// they measure).
    pub fn start(options: &Options, name: &str, gateway_flags: &[&str]) -> Stack {
        let dir = options.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        // The gateway drops to moat-gateway: it must be able to pass
        // through every parent of its state and of the engine socket.
        for d in [&options.work, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .expect("chmod work dir");
        }
        let state = dir.join("state");
        let engine_socket = dir.join("engine.sock");
        let run_root = PathBuf::from(format!("/run/moat-bench-{name}"));
        let mut engine_cmd = Command::new(&options.moat);
        engine_cmd
            .arg("--state-root")
            .arg(&state)
            .arg("engine")
            .arg("--socket")
            .arg(&engine_socket)
            .arg("--run-root")
            .arg(&run_root);
        let engine = Daemon::spawn("moat engine", engine_cmd, dir.join("engine.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mtls::unix(&engine_socket).is_ok_and(|mut c| c.get("/_ping").is_ok()) {
            assert!(
                Instant::now() < deadline,
                "the engine did not answer:\n{}",
                std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let moat = |args: &[&str]| {
            let out = Command::new(&options.moat)
                .arg("--state-root")
                .arg(&state)
                .args(args)
                .output()
                .expect("moat");
            assert!(
                out.status.success(),
                "moat {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        moat(&["certs", "init", "--ip", "127.0.0.1"]);
        let bundle = dir.join("client");
        moat(&[
            "certs",
            "issue",
            "bench",
            "--group",
            "admin",
            "--out",
            bundle.to_str().expect("utf-8 path"),
        ]);

        let mut gateway_cmd = Command::new(&options.moat);
        gateway_cmd
            .arg("--state-root")
            .arg(&state)
            .arg("gateway")
            .args(["--listen", "127.0.0.1:0", "--engine"])
            .arg(format!("unix://{}", engine_socket.display()))
            .args(gateway_flags);
        let mut gateway = Daemon::spawn("moat gateway", gateway_cmd, dir.join("gateway.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let gateway_addr = loop {
            let log = gateway.log_text();
            if let Some(rest) = log.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("the gateway's address");
            }
            assert!(
                Instant::now() < deadline && !gateway.exited(),
                "the gateway did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(25));
        };
        Stack {
            moat: options.moat.clone(),
            dir,
            state,
            engine_socket,
            gateway_addr,
            bundle,
            containers: Vec::new(),
            nginx: None,
            gateway,
            engine,
        }
    }

    pub fn pki(&self) -> PathBuf {
        self.state.join("pki")
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.state.join("audit")
    }

    /// The client configuration for the bench user (see
    /// [`mtls::client_config`]).
    pub fn client(&self, resume: bool) -> Arc<ClientConfig> {
        mtls::client_config(&self.bundle, resume)
    }

    /// `moat --state-root STATE ARGS...`.
    pub fn moat(&self, args: &[&str]) -> Output {
        Command::new(&self.moat)
            .arg("--state-root")
            .arg(&self.state)
            .args(args)
            .output()
            .expect("moat")
    }

    /// Imports `busybox:test` and starts `count` containers that sleep, so
    /// `GET /containers/json` lists `count` of them. They are removed
    /// when the stack is dropped.
    pub fn run_containers(&mut self, count: usize) {
        let tar = cli_run::busybox_tar(&self.dir);
        cli_run::docker_ok(
            &self.engine_socket,
            &["import", tar.to_str().expect("utf-8 path"), "busybox:test"],
        );
        for _ in 0..count {
            let id = cli_run::docker_ok(&self.engine_socket, &LONG_RUNNING);
            self.containers.push(id);
        }
    }

    /// Starts nginx in front of the engine socket; `None` (with the reason
    /// on stderr) when nginx is not installed or does not start.
    pub fn start_nginx(&mut self) -> Option<&Nginx> {
        match Nginx::start(&self.dir.join("nginx"), &self.pki(), &self.engine_socket) {
            Ok(nginx) => self.nginx = Some(nginx),
            Err(reason) => eprintln!("nginx: {reason}; no nginx rows (bench/run.sh installs it)"),
        }
        self.nginx.as_ref()
    }

    /// Checks the audit log's chain and checkpoints with `moat audit
    /// verify`; the reason when it does not verify.
    pub fn verify_audit(&self) -> Result<(), String> {
        let dir = self.audit_dir();
        let key = self.pki().join(AUDIT_PUB);
        let out = self.moat(&[
            "audit",
            "verify",
            "--dir",
            dir.to_str().expect("utf-8 path"),
            "--key",
            key.to_str().expect("utf-8 path"),
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Every record of the audit log as JSON, in file order.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.audit_dir())
            .expect("audit dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .expect("audit file")
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.containers.iter().map(String::as_str));
            let out = cli_run::docker(&self.engine_socket, &args);
            if !out.status.success() {
                eprintln!(
                    "removing the bench containers: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// A port on 127.0.0.1 the kernel just handed out, for a server started
/// right after to listen on.
pub fn loopback_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// nginx terminating mutual TLS on loopback and proxying to the engine's
/// socket over kept-alive HTTP/1.1: what a team would put in front of a
/// Docker socket without moat.
pub struct Nginx {
    pub addr: SocketAddr,
    pub daemon: Daemon,
}

impl Nginx {
    fn start(dir: &Path, pki: &Path, socket: &Path) -> Result<Nginx, String> {
        let which = Command::new("sh")
            .args(["-c", "command -v nginx"])
            .output()
            .map_err(|e| e.to_string())?;
        if !which.status.success() {
            return Err("not installed".into());
        }
        let binary = String::from_utf8_lossy(&which.stdout).trim().to_owned();
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        let addr = loopback_addr();
        let conf = dir.join("nginx.conf");
        std::fs::File::create(&conf)
            .and_then(|mut f| f.write_all(config(dir, pki, socket, addr).as_bytes()))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-p").arg(dir).arg("-c").arg(&conf);
        let mut daemon = Daemon::spawn("nginx", cmd, dir.join("stderr.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || daemon.exited() {
                let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(format!("did not start: {}{errors}", daemon.log_text()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(Nginx { addr, daemon })
    }
}

/// nginx's configuration: as many workers as cores (the gateway's runtime
/// has as many threads), TLS 1.2 and 1.3 as the gateway offers, client
/// certificates required and checked against the CA and the CRL, no
/// access log (the gateway's own log is its audit), upstream connections
/// kept alive. Workers run as root so they can reach the engine socket.
fn config(dir: &Path, pki: &Path, socket: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    let p = |name: &str| pki.join(name).display().to_string();
    format!(
        "daemon off;
master_process on;
worker_processes auto;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream engine {{
        server unix:{socket};
        keepalive 64;
    }}
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_crl {crl};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
        socket = socket.display(),
        cert = p(SERVER_CERT),
        key = p(SERVER_KEY),
        ca = p(CA_CERT),
        crl = p(CRL),
    )
}
