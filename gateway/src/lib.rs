//! The gateway: moat's only network-facing process. It terminates mutual
//! TLS, knows who is calling from the client certificate, decides every
//! Docker API call (including what its body asks for) against the casbin
//! policy, writes a tamper-evident audit record, and only then forwards
//! the call to the engine's Unix socket.
//!
//! - [`server`]: accepting connections (limits, TLS handshake, timeouts).
//! - [`tls`]: the server configuration, reloaded when the PKI changes;
//!   the caller's identity.
//! - [`sessions`]: open connections, closable when a certificate is
//!   revoked.
//! - [`pipeline`]: one call, step by step (DESIGN.md §2).
//! - [`body`], [`ownership`], [`limits`], [`record`], [`hijack`],
//!   [`engine`], [`admin`]: the steps' parts.
//! - [`privilege`]: dropping root after start-up.

pub mod admin;
pub mod body;
pub mod engine;
pub mod enroll;
pub mod framing;
pub mod hijack;
pub mod jwt;
pub mod limits;
pub mod ownership;
pub mod pipeline;
pub mod privilege;
pub mod record;
pub mod server;
pub mod sessions;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use moat_certs::tls::ServerOptions;
use moat_policy::{Enforcer, Policy};

pub use limits::LimitOptions;
pub use pipeline::Options;
pub use server::Timeouts;

/// Everything `moat gateway` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub engine_socket: PathBuf,
    pub pki_dir: PathBuf,
    pub policy_dir: PathBuf,
    pub audit_dir: PathBuf,
    pub tls: ServerOptions,
    pub options: Options,
    pub limits: LimitOptions,
    pub audit: moat_audit::Options,
    pub timeouts: Timeouts,
    pub max_connections: usize,
    /// Threads that accept and serve connections, each with its own
    /// runtime; 0: one per core.
    pub threads: usize,
    /// How often the PKI directory is checked for a new CRL or certificate.
    pub reload_every: Duration,
    /// Bearer tokens for callers without a certificate; `None` (the
    /// default) requires a certificate at the handshake.
    pub jwt: Option<jwt::JwtConfig>,
    /// The enrollment listener and its signer; `None`: no enrollment.
    pub enroll: Option<enroll::EnrollConfig>,
    /// The account to become after start-up when started as root;
    /// `None` keeps the current one (only for tests run unprivileged).
    pub run_as: Option<String>,
}

/// Starts the gateway and serves until `shutdown` resolves. `ready` is
/// called with the bound address once it accepts connections.
pub async fn run(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Policy first: a directory that exists but does not load stops the
    // gateway with the reason; there is no allow-all fallback.
    let policy = Policy::init_dir(&config.policy_dir)
        .with_context(|| format!("loading the policy from {}", config.policy_dir.display()))?;
    let jwt = config
        .jwt
        .as_ref()
        .map(jwt::JwtVerifier::new)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("the JWT configuration")?;
    let mut tls_options = config.tls.clone();
    tls_options.client_cert_optional = jwt.is_some();
    let tls = Arc::new(
        tls::TlsState::load(&config.pki_dir, tls_options)
            .with_context(|| format!("loading TLS material from {}", config.pki_dir.display()))?,
    );
    let signer = moat_audit::Signer::load(&config.pki_dir.join(moat_certs::authority::AUDIT_KEY))
        .context("loading the audit signing key")?;
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let listeners = server::bind_listeners(config.listen, threads)
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listeners[0].local_addr()?;
    let enroll_listener = match &config.enroll {
        Some(enroll) => Some(
            tokio::net::TcpListener::bind(enroll.listen)
                .await
                .with_context(|| format!("binding the enrollment port {}", enroll.listen))?,
        ),
        None => None,
    };

    if nix::unistd::Uid::effective().is_root()
        && let Some(name) = &config.run_as
    {
        let user = if name == privilege::GATEWAY_USER {
            privilege::ensure_account()?
        } else {
            nix::unistd::User::from_name(name)?.with_context(|| format!("no user {name}"))?
        };
        privilege::give_dir(&config.audit_dir, &user, 0o700)?;
        for entry in std::fs::read_dir(&config.audit_dir)? {
            let path = entry?.path();
            nix::unistd::chown(&path, Some(user.uid), Some(user.gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        // setgid: files an admin writes there as root (0640) stay readable
        // by the gateway through the group.
        privilege::give_dir(&config.policy_dir, &user, 0o2750)?;
        for entry in std::fs::read_dir(&config.policy_dir)? {
            let path = entry?.path();
            nix::unistd::chown(&path, Some(user.uid), Some(user.gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        privilege::share_pki(&config.pki_dir, &user)?;
        privilege::drop_to(&user)?;
        tracing::info!("running as {name} (uid {}), no capabilities", user.uid);
    }

    let audit_options = moat_audit::Options {
        may_commit_here: server::may_wait_here,
        ..config.audit.clone()
    };
    let audit = moat_audit::AuditLog::open(&config.audit_dir, signer, audit_options)
        .with_context(|| format!("opening the audit log in {}", config.audit_dir.display()))?;
    let enforcer = Arc::new(Enforcer::new(policy)?);
    let sessions = sessions::Sessions::default();
    let admin = Arc::new(admin::Admin {
        policy_dir: config.policy_dir.clone(),
        enforcer: enforcer.clone(),
        dry_run: arc_swap::ArcSwapOption::empty(),
        audit: audit.clone(),
        sessions: sessions.clone(),
        signer: config
            .enroll
            .as_ref()
            .map(|e| enroll::Signer::new(e.signer.clone())),
    });
    tokio::spawn(admin.clone().watch(config.reload_every));
    let mut gateway = pipeline::Gateway::new(
        engine::Engine::new(config.engine_socket.clone()),
        enforcer,
        audit.clone(),
        limits::Limits::new(config.limits.clone()),
        admin,
        config.options.clone(),
    );
    if let Some(verifier) = jwt {
        gateway = gateway.with_bearer_tokens(verifier);
    }
    let gateway = Arc::new(gateway);
    tokio::spawn(
        tls.clone().watch(
            sessions.clone(),
            config
                .enroll
                .as_ref()
                .map(|e| enroll::Signer::new(e.signer.clone())),
            config.reload_every,
        ),
    );
    let server = Arc::new(server::Server::new(
        gateway,
        tls.clone(),
        sessions,
        config.timeouts.clone(),
        config.max_connections,
    ));
    if let (Some(enroll), Some(listener)) = (&config.enroll, enroll_listener) {
        let (enroll_tls, ca_pem) = tls.enrollment().context("the enrollment listener's TLS")?;
        let enrollment = Arc::new(enroll::Enrollment::new(
            enroll::Signer::new(enroll.signer.clone()),
            audit.clone(),
            ca_pem,
            address.port(),
        ));
        tracing::info!(
            "enrollment on {} (no client certificate; enrollment only)",
            listener.local_addr()?
        );
        tokio::spawn(enrollment.serve(listener, enroll_tls, std::future::pending()));
    }
    ready(address);
    server
        .serve_on_threads(listeners, shutdown)
        .await
        .context("serving connections")?;
    audit.close().await.context("closing the audit log")?;
    Ok(())
}
