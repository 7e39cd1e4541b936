//! `moat engine`: the Docker-compatible engine on a Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use moat_engine::images::ImageStore;
use moat_engine::registry::RegistryConfig;
use moat_engine::runtime::{Runtime, RuntimeConfig};
use moat_engine::server::{Engine, serve};
use moat_engine::userns::IdMap;

use crate::state::StateRoot;

#[derive(Args)]
#[command(
    after_help = "Example:\n  moat engine --socket /run/moat/engine.sock\n  \
    docker -H unix:///run/moat/engine.sock run --rm busybox:test echo hello"
)]
pub struct EngineArgs {
    /// The Unix socket to serve the Docker API on (never TCP)
    #[arg(long, default_value = "/run/moat/engine.sock", value_name = "PATH")]
    socket: PathBuf,
    /// Runtime state (shim sockets); short, as socket paths must be
    #[arg(long, default_value = "/run/moat", value_name = "DIR")]
    run_root: PathBuf,
    /// The group given access to the socket (mode 0660)
    #[arg(long, default_value = "moat", value_name = "GROUP")]
    group: String,
    /// json-file log rotation: the size at which a container's log rotates (0: never)
    #[arg(long, default_value_t = 100 << 20, value_name = "BYTES")]
    log_max_size: u64,
    /// json-file log rotation: files kept per container
    #[arg(long, default_value_t = 3, value_name = "N")]
    log_max_files: u32,
    /// A registry reached without verified TLS (HTTPS unchecked, then plain
    /// HTTP), as dockerd's insecure-registries; repeatable. Loopback
    /// registries (127.0.0.0/8, localhost, ::1) always are
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Let `docker build --network host` run RUN steps in the host's
    /// network namespace (the gateway's policy also requires
    /// `host.network`); without it such builds are refused
    #[arg(long)]
    allow_build_host_network: bool,
}

pub fn run(args: EngineArgs, state: &StateRoot) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the engine runs as root (it creates namespaces, cgroups and mounts)");
    }
    let state_root = state.engine();
    // The state root is moat's own: make it passable (0711, as dockerd makes
    // /var/lib/docker) for the containers' remapped roots.
    std::fs::create_dir_all(state.root())
        .with_context(|| format!("creating {}", state.root().display()))?;
    let mode = std::fs::metadata(state.root())?.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(
            state.root(),
            std::fs::Permissions::from_mode((mode | 0o011) & 0o7777),
        )?;
    }
    let id_map = IdMap::for_remap_user().context("user namespaces")?;
    let images = ImageStore::open(&state_root).context("image store")?;
    let runtime = Runtime::open(RuntimeConfig {
        state_root: state_root.clone(),
        run_root: args.run_root.clone(),
        shim_binary: std::env::current_exe().context("finding the moat binary")?,
        id_map,
        cgroup_parent: "/moat".into(),
        log_max_size: args.log_max_size,
        log_max_files: args.log_max_files,
        remove_on_exit: false,
    })
    .context("engine state")?;
    for entry in &args.insecure_registries {
        if entry.is_empty() || entry.contains(['/', '@', ' ']) {
            bail!("--insecure-registry {entry:?}: expected HOST or HOST:PORT, without a scheme");
        }
    }
    let registries = RegistryConfig {
        insecure: args.insecure_registries.clone(),
    };
    let build = moat_engine::server::BuildConfig {
        allow_host_network: args.allow_build_host_network,
        ..Default::default()
    };
    let engine = Arc::new(
        Engine::new(runtime, images)
            .with_registry(registries)
            .with_build(build),
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async move {
        let listener = bind(&args.socket, &args.group)?;
        eprintln!(
            "moat engine: serving the Docker API on unix://{} (state {}, containers run as host uid {}+)",
            args.socket.display(),
            state_root.display(),
            id_map.uid
        );
        let socket = args.socket.clone();
        tokio::select! {
            result = serve(engine, listener) => result.context("serving")?,
            _ = shutdown_signal() => eprintln!("moat engine: stopping; containers keep running"),
        }
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
}

/// Binds the socket 0660 root:GROUP, replacing a stale one but never a live one.
fn bind(path: &Path, group: &str) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use: another engine is running", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let gid = nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid)
        .with_context(|| format!("no group {group:?} for the socket"))?;
    nix::unistd::chown(path, None, Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    Ok(listener)
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
