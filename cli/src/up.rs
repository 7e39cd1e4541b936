//! `moat up`: the one command that runs moat on a fresh machine. It sets up
//! what is missing under the state root (PKI, default policy, an admin
//! client bundle), starts the engine, the enrollment signer and the gateway
//! as separate processes (the engine and the signer as root, the gateway
//! dropping to its own unprivileged account), makes `busybox:test`
//! available offline, prints how to point `docker` at it and how teammates
//! enroll, and stops all three on Ctrl-C. Run again, it reuses the state.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use moat_certs::{Bundle, CertSummary, Pki, PkiConfig, Subject};
use time::OffsetDateTime;

use crate::state::StateRoot;

#[derive(Args)]
#[command(after_help = "Example:\n  sudo moat up\n  \
    docker --context moat run --rm busybox:test echo hello")]
pub struct UpArgs {
    /// Where the gateway accepts mutual-TLS connections; enrollment
    /// (`moat login` with a token) is served on the next port
    #[arg(long, default_value = "0.0.0.0:2376", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// DNS names clients reach the gateway by, for its certificate on first run
    /// [default: localhost and this machine's hostname]
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// IP addresses clients reach the gateway by, on first run [default: 127.0.0.1]
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<IpAddr>,
    /// The engine's socket
    #[arg(long, default_value = "/run/moat/engine.sock", value_name = "PATH")]
    socket: PathBuf,
    /// The engine's runtime directory; the signer's socket is enroll.sock in it
    #[arg(long, default_value = "/run/moat", value_name = "DIR")]
    run_root: PathBuf,
    /// The admin whose client bundle is written to STATE/clients/NAME
    /// [default: $SUDO_USER, else admin]
    #[arg(long, value_name = "NAME")]
    admin: Option<String>,
    /// A registry the engine may reach without verified TLS (repeatable; the
    /// engine's --insecure-registry)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Do not create or update the `moat` docker context
    #[arg(long)]
    no_context: bool,
}

/// The image made available offline.
const IMAGE: &str = "busybox:test";

pub fn run(args: UpArgs, state: &StateRoot) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("moat up runs as root: it starts the engine (namespaces, cgroups, mounts)");
    }
    let moat = std::env::current_exe().context("finding the moat binary")?;
    std::fs::create_dir_all(state.root())
        .with_context(|| format!("creating {}", state.root().display()))?;
    let logs = state.root().join("logs");
    std::fs::create_dir_all(&logs)?;

    let pki = open_or_init_pki(&state.pki(), &args)?;
    moat_policy::Policy::init_dir(&state.policy())
        .with_context(|| format!("the policy in {}", state.policy().display()))?;
    let admin = args
        .admin
        .clone()
        .or_else(|| {
            std::env::var("SUDO_USER")
                .ok()
                .filter(|u| !u.is_empty() && u != "root")
        })
        .unwrap_or_else(|| "admin".to_owned());
    let bundle = state.root().join("clients").join(&admin);
    ensure_admin_bundle(&pki, &admin, &bundle)?;

    let mut children = Children::default();
    let engine_log = logs.join("engine.log");
    children.engine = Some(spawn(
        Command::new(&moat)
            .arg("--state-root")
            .arg(state.root())
            .arg("engine")
            .arg("--socket")
            .arg(&args.socket)
            .arg("--run-root")
            .arg(&args.run_root)
            .args(
                args.insecure_registries
                    .iter()
                    .flat_map(|r| ["--insecure-registry", r.as_str()]),
            ),
        &engine_log,
    )?);
    wait_until(
        "the engine",
        &engine_log,
        Duration::from_secs(30),
        &mut children,
        || ping(&args.socket),
    )?;
    eprintln!(
        "moat up: engine on unix://{} (log {})",
        args.socket.display(),
        engine_log.display()
    );
    if ensure_image(&args.socket)? {
        eprintln!(
            "moat up: imported {IMAGE} (a busybox built from the host's busybox-static, no registry needed)"
        );
    }

    let Some(enroll_port) = args.listen.port().checked_add(1) else {
        bail!(
            "--listen {}: the enrollment port is the next one, and there is none",
            args.listen
        );
    };
    let enroll_listen = SocketAddr::new(args.listen.ip(), enroll_port);
    let signer_socket = args.run_root.join("enroll.sock");
    let signer_log = logs.join("signer.log");
    let signer_start = log_len(&signer_log);
    children.signer = Some(spawn(
        Command::new(&moat)
            .arg("--state-root")
            .arg(state.root())
            .args(["certs", "signer", "--socket"])
            .arg(&signer_socket),
        &signer_log,
    )?);
    wait_until(
        "the signer",
        &signer_log,
        Duration::from_secs(30),
        &mut children,
        || logged_since(&signer_log, signer_start, "listening on"),
    )?;
    eprintln!(
        "moat up: enrollment signer on unix://{} (log {})",
        signer_socket.display(),
        signer_log.display()
    );

    let gateway_log = logs.join("gateway.log");
    let log_start = log_len(&gateway_log);
    children.gateway = Some(spawn(
        Command::new(&moat)
            .arg("--state-root")
            .arg(state.root())
            .arg("gateway")
            .arg("--listen")
            .arg(args.listen.to_string())
            .arg("--engine")
            .arg(format!("unix://{}", args.socket.display()))
            .arg("--enroll-listen")
            .arg(enroll_listen.to_string())
            .arg("--signer")
            .arg(format!("unix://{}", signer_socket.display())),
        &gateway_log,
    )?);
    wait_until(
        "the gateway",
        &gateway_log,
        Duration::from_secs(30),
        &mut children,
        || logged_since(&gateway_log, log_start, "listening on"),
    )?;
    let connect = match args.listen.ip() {
        ip if ip.is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), args.listen.port()),
        _ => args.listen,
    };
    eprintln!(
        "moat up: gateway on {}, enrollment on {} (log {})",
        args.listen,
        enroll_listen,
        gateway_log.display()
    );
    let context = !args.no_context && docker_context(&connect, &bundle);
    println!();
    println!("moat is running. Point docker at the gateway as {admin} (group admin):");
    println!();
    println!("  export DOCKER_HOST=tcp://{connect}");
    println!("  export DOCKER_TLS_VERIFY=1");
    println!("  export DOCKER_CERT_PATH={}", bundle.display());
    println!("  docker run --rm {IMAGE} echo hello");
    if context {
        println!();
        println!("or use the docker context made for it:");
        println!();
        println!("  docker --context moat run --rm {IMAGE} echo hello");
    }
    println!();
    println!("Teammates enroll on port {enroll_port}: make each a one-time token with");
    println!();
    println!(
        "  moat certs token NAME --group developer --enroll-url https://{}:{enroll_port}",
        teammate_host(pki.config())
    );
    println!();
    println!("and send them the `moat login ...` line it prints.");
    println!("Ctrl-C stops the gateway, the signer and the engine; containers keep running.");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ended = runtime.block_on(async {
        tokio::select! {
            _ = crate::engine::shutdown_signal() => None,
            which = children.first_exit() => Some(which),
        }
    });
    children.stop();
    match ended {
        None => {
            eprintln!("moat up: stopped");
            Ok(())
        }
        Some(which) => bail!("{which} exited; its log is in {}", logs.display()),
    }
}

fn open_or_init_pki(dir: &Path, args: &UpArgs) -> Result<Pki> {
    if Pki::exists(dir) {
        let pki = Pki::open(dir)?;
        // A CRL that expires refuses everyone (fail closed): keep it fresh.
        let crl = pki.crl_pem()?;
        let fresh = moat_certs::inspect::crl_next_update(&crl)
            .is_ok_and(|next| next - OffsetDateTime::now_utc() > time::Duration::days(7));
        if !fresh {
            pki.resign_crl()?;
            eprintln!("moat up: re-signed the CRL");
        }
        return Ok(pki);
    }
    let mut hosts = args.hosts.clone();
    if hosts.is_empty() {
        hosts.push("localhost".into());
        if let Ok(name) = nix::unistd::gethostname()
            && let Some(name) = name.to_str()
            && !name.is_empty()
            && name != "localhost"
        {
            hosts.push(name.to_owned());
        }
    }
    let mut ips = args.ips.clone();
    if ips.is_empty() {
        ips.push([127, 0, 0, 1].into());
    }
    let pki = Pki::init(
        dir,
        PkiConfig {
            server_hosts: hosts,
            server_ips: ips,
            ..PkiConfig::default()
        },
    )?;
    eprintln!("moat up: created the PKI in {}", dir.display());
    Ok(pki)
}

/// Issues the admin's bundle unless a valid one with an hour left exists.
fn ensure_admin_bundle(pki: &Pki, admin: &str, dir: &Path) -> Result<()> {
    let current = std::fs::read_to_string(dir.join("cert.pem"))
        .ok()
        .and_then(|text| pem::parse(text).ok())
        .and_then(|block| CertSummary::from_der(block.contents()).ok());
    let good = current.is_some_and(|cert| {
        cert.common_name == admin
            && cert.not_after - OffsetDateTime::now_utc() > time::Duration::hours(1)
    });
    if good {
        return Ok(());
    }
    let subject = Subject::new(admin, &["admin".to_owned()])?;
    let issued = pki.issue(&subject, pki.client_validity(None)?)?;
    Bundle::write(dir, &issued)?;
    eprintln!(
        "moat up: issued a client certificate for {admin} (group admin) in {}",
        dir.display()
    );
    Ok(())
}

/// The name a teammate on another machine reaches this one by: the first
/// of the gateway certificate's names that is not loopback.
fn teammate_host(config: &PkiConfig) -> String {
    let ips = || config.server_ips.iter();
    config
        .server_hosts
        .iter()
        .find(|h| *h != "localhost")
        .cloned()
        .or_else(|| ips().find(|ip| !ip.is_loopback()).map(bracketed))
        .or_else(|| config.server_hosts.first().cloned())
        .or_else(|| ips().next().map(bracketed))
        .unwrap_or_else(|| "localhost".to_owned())
}

fn bracketed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    }
}

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Whether `log` says `what` after its first `start` bytes.
fn logged_since(log: &Path, start: u64, what: &str) -> bool {
    std::fs::read(log)
        .map(|log| String::from_utf8_lossy(&log[(start as usize).min(log.len())..]).contains(what))
        .unwrap_or(false)
}

fn spawn(command: &mut Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {command:?}"))
}

fn wait_until(
    what: &str,
    log: &Path,
    limit: Duration,
    children: &mut Children,
    ready: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if let Some(which) = children.exited() {
            children.stop();
            bail!("{which} exited while starting:\n{}", tail(log));
        }
        if Instant::now() > deadline {
            children.stop();
            bail!("{what} did not come up within {limit:?}:\n{}", tail(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One HTTP/1.1 request on the engine's socket; the status and body.
fn engine_call(
    socket: &Path,
    method: &str,
    target: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: moat\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

fn ping(socket: &Path) -> bool {
    engine_call(socket, "GET", "/_ping", b"").is_ok_and(|(status, _)| status == 200)
}

/// Imports `busybox:test` unless the engine has it; true if it did.
fn ensure_image(socket: &Path) -> Result<bool> {
    let (status, _) = engine_call(socket, "GET", "/images/busybox:test/json", b"")?;
    if status == 200 {
        return Ok(false);
    }
    let rootfs = tempfile_dir()?;
    moat_engine::busybox::write_rootfs(&rootfs)?;
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .output()
        .context("running tar")?;
    let _ = std::fs::remove_dir_all(&rootfs);
    if !tar.status.success() {
        bail!("tar of the busybox root filesystem failed");
    }
    let (status, body) = engine_call(
        socket,
        "POST",
        "/images/create?fromSrc=-&repo=busybox&tag=test",
        &tar.stdout,
    )?;
    if status != 200 {
        bail!(
            "importing {IMAGE}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(true)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("moat-up-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

/// Creates (or replaces) the docker context `moat` for this bundle; false
/// when there is no docker CLI or it refused.
fn docker_context(connect: &SocketAddr, bundle: &Path) -> bool {
    let _ = Command::new("docker")
        .args(["context", "rm", "-f", "moat"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let docker = format!(
        "host=tcp://{connect},ca={0}/ca.pem,cert={0}/cert.pem,key={0}/key.pem",
        bundle.display()
    );
    Command::new("docker")
        .args([
            "context",
            "create",
            "moat",
            "--description",
            "moat gateway (mutual TLS)",
            "--docker",
        ])
        .arg(docker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[derive(Default)]
struct Children {
    engine: Option<Child>,
    signer: Option<Child>,
    gateway: Option<Child>,
}

impl Children {
    fn exited(&mut self) -> Option<&'static str> {
        for (name, child) in [
            ("the engine", &mut self.engine),
            ("the signer", &mut self.signer),
            ("the gateway", &mut self.gateway),
        ] {
            if let Some(child) = child
                && child.try_wait().ok().flatten().is_some()
            {
                return Some(name);
            }
        }
        None
    }

    async fn first_exit(&mut self) -> &'static str {
        loop {
            if let Some(which) = self.exited() {
                return which;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM to the gateway, then the signer, then the engine; SIGKILL
    /// after 10 s.
    fn stop(&mut self) {
        for child in [self.gateway.take(), self.signer.take(), self.engine.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}
