//! `moat gateway`: the network-facing process (mutual TLS, policy, audit),
//! forwarding to the engine's socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use moat_certs::tls::ServerOptions;
use moat_gateway::{Config, LimitOptions, Options, Timeouts};

use crate::state::StateRoot;

#[derive(Args)]
#[command(
    after_help = "Example:\n  moat gateway --listen 0.0.0.0:2376 --engine unix:///run/moat/engine.sock\n  \
    DOCKER_HOST=tcp://HOST:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=~/.moat docker ps"
)]
pub struct GatewayArgs {
    /// Address and port to accept mutual-TLS connections on
    #[arg(long, default_value = "0.0.0.0:2376", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The engine's socket
    #[arg(
        long,
        default_value = "unix:///run/moat/engine.sock",
        value_name = "unix://PATH"
    )]
    engine: String,
    /// PKI directory (CA, CRL, server certificate, audit key) [default: STATE/pki]
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
    /// Policy directory; created with the default policy if missing or empty [default: STATE/policy]
    #[arg(long, value_name = "DIR")]
    policy: Option<PathBuf>,
    /// Audit log directory [default: STATE/audit]
    #[arg(long, value_name = "DIR")]
    audit: Option<PathBuf>,
    /// Accept TLS 1.3 only
    #[arg(long)]
    no_tls12: bool,
    /// The largest JSON request body judged (bigger ones are refused with 413)
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    body_limit: usize,
    /// Record the (redacted) request body of this action at audit level
    /// "request" (repeatable; replaces the default: container.create,
    /// container.update, exec.create, moat.policy.put)
    #[arg(long = "audit-request", value_name = "ACTION")]
    audit_request: Vec<moat_api::Action>,
    /// Connections open at once; more are closed at once
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// Threads that accept and serve connections, each with its own
    /// event loop (0: one per core)
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Calls one user may have in flight
    #[arg(long, default_value_t = 64, value_name = "N")]
    user_concurrency: usize,
    /// Calls per second one user may make, sustained (0: no limit)
    #[arg(long, default_value_t = 200.0, value_name = "N")]
    user_rate: f64,
    /// Calls above the rate one user may make in a burst
    #[arg(long, default_value_t = 400.0, value_name = "N")]
    user_burst: f64,
    /// Seconds a client has to finish its TLS handshake
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    handshake_timeout: u64,
    /// Seconds a client has to send a request's headers
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    header_timeout: u64,
    /// Seconds a connection with no call open may stay silent
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    idle_timeout: u64,
    /// Seconds between checks of the PKI directory for a new CRL or certificate
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    reload_every: u64,
    /// A checkpoint (signed) after this many audit records...
    #[arg(long, default_value_t = 1000, value_name = "N")]
    audit_checkpoint_every: u64,
    /// ...or after this many seconds
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    audit_checkpoint_interval: u64,
    /// Also accept callers without a client certificate that send a bearer
    /// JWT signed by this public key (PEM: EC P-256, Ed25519 or RSA)
    #[arg(long, value_name = "PEM", requires = "jwt_issuer")]
    jwt_key: Option<PathBuf>,
    /// The issuer (`iss`) bearer tokens must name
    #[arg(long, value_name = "ISSUER")]
    jwt_issuer: Option<String>,
    /// The audience (`aud`) bearer tokens must name, if any
    #[arg(long, value_name = "AUDIENCE")]
    jwt_audience: Option<String>,
    /// Also serve enrollment (`moat login` with a one-time token) on this
    /// address, without client certificates; needs --signer
    #[arg(long, value_name = "ADDR:PORT", requires = "signer")]
    enroll_listen: Option<SocketAddr>,
    /// The enrollment signer's socket (`moat certs signer`), for enrollment
    /// and renewal
    #[arg(long, value_name = "unix://PATH")]
    signer: Option<String>,
    /// The account to run as after start-up, when started as root
    #[arg(long, default_value = moat_gateway::privilege::GATEWAY_USER, value_name = "USER")]
    user: String,
}

pub fn run(args: GatewayArgs, state: &StateRoot) -> Result<()> {
    let Some(engine_socket) = args.engine.strip_prefix("unix://") else {
        bail!("--engine must be unix://PATH (the engine never listens on TCP)");
    };
    let jwt = match &args.jwt_key {
        Some(path) => Some(moat_gateway::jwt::JwtConfig {
            key_pem: std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            issuer: args.jwt_issuer.clone().unwrap_or_default(),
            audience: args.jwt_audience.clone(),
        }),
        None => None,
    };
    let enroll = match (&args.enroll_listen, &args.signer) {
        (Some(listen), Some(signer)) => Some(moat_gateway::enroll::EnrollConfig {
            listen: *listen,
            signer: moat_gateway::enroll::unix_path(signer)
                .context("--signer must be unix://PATH")?
                .to_owned(),
        }),
        _ => None,
    };
    let config = Config {
        jwt,
        enroll,
        listen: args.listen,
        engine_socket: PathBuf::from(engine_socket),
        pki_dir: args.pki.unwrap_or_else(|| state.pki()),
        policy_dir: args.policy.unwrap_or_else(|| state.policy()),
        audit_dir: args.audit.unwrap_or_else(|| state.audit()),
        tls: ServerOptions {
            allow_tls12: !args.no_tls12,
            ..ServerOptions::default()
        },
        options: Options {
            body_limit: args.body_limit,
            request_level: if args.audit_request.is_empty() {
                Options::default().request_level
            } else {
                args.audit_request.clone()
            },
        },
        limits: LimitOptions {
            concurrent_per_user: args.user_concurrency,
            rate_per_user: args.user_rate,
            burst_per_user: args.user_burst,
        },
        audit: moat_audit::Options {
            checkpoint_every: args.audit_checkpoint_every,
            checkpoint_interval: Duration::from_secs(args.audit_checkpoint_interval),
            ..moat_audit::Options::default()
        },
        timeouts: Timeouts {
            handshake: Duration::from_secs(args.handshake_timeout),
            header_read: Duration::from_secs(args.header_timeout),
            idle: Duration::from_secs(args.idle_timeout),
        },
        max_connections: args.max_connections,
        threads: args.threads,
        reload_every: Duration::from_secs(args.reload_every.max(1)),
        run_as: Some(args.user),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        // Colours only on a terminal: `moat up` and service managers write
        // the log to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Connections are served on threads of their own (`--threads`); this
    // runtime only watches the PKI and policy and serves enrollment.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async move {
        moat_gateway::run(
            config,
            |address| {
                eprintln!("moat gateway: listening on {address} (mutual TLS), forwarding to unix://{engine_socket}");
            },
            async {
                crate::engine::shutdown_signal().await;
                eprintln!("moat gateway: stopping");
            },
        )
        .await
    })
}
