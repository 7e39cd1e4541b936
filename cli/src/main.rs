//! The one `moat` binary: the PKI tool today; the engine, the gateway, the
//! policy and audit tools join it as subcommands.

mod audit;
mod certs;
mod engine;
mod gateway;
mod https;
mod login;
mod policy;
mod signer;
mod state;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "moat",
    version,
    about = "A container engine that is safe to expose to a team over the network",
    propagate_version = true
)]
struct Cli {
    /// Where moat keeps its state (PKI, policy, audit, engine).
    #[arg(long, global = true, env = "MOAT_STATE_ROOT", value_name = "DIR")]
    state_root: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

// Parsed once per run; boxing the larger argument structs buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run moat: PKI, policy and an admin bundle if missing, then the engine and the gateway
    Up(up::UpArgs),
    /// Certificates: the CA, the gateway's certificate, users' client certificates
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// The audit log: verify it, search it, follow it, count it, export it
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The Docker-compatible engine, on a Unix socket
    Engine(engine::EngineArgs),
    /// The mutual-TLS gateway: identity, policy and audit in front of the engine
    Gateway(gateway::GatewayArgs),
    /// Who may do what: roles, bindings, locks, checks, dry runs
    Policy(policy::PolicyArgs),
    /// Get a certificate with a one-time token from your admin, or renew the one you have
    Login(login::LoginArgs),
    /// Who the gateway says you are: user, groups, roles, certificate expiry
    #[command(after_help = "Example:\n  moat whoami\n  moat whoami --output json")]
    Whoami {
        #[command(flatten)]
        bundle: login::BundleArgs,
        #[command(flatten)]
        output: certs::OutputArg,
    },
    /// Print the DOCKER_* exports for the bundle `moat login` saved
    #[command(after_help = "Example:\n  eval \"$(moat env)\" && docker ps")]
    Env(login::BundleArgs),
    /// Write a busybox root filesystem (from the host's busybox-static) into DIR
    #[command(
        after_help = "Example:\n  moat busybox-rootfs /tmp/rootfs && tar -C /tmp/rootfs -c . | docker import - busybox:test"
    )]
    BusyboxRootfs {
        /// The directory to fill (created if missing)
        dir: std::path::PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "Example:\n  moat completions bash > /etc/bash_completion.d/moat")]
    Completions { shell: clap_complete::Shell },
    /// (internal) the per-container shim the engine starts
    #[command(hide = true)]
    Shim {
        /// The container's state directory
        state_dir: std::path::PathBuf,
    },
    /// (internal) reads or writes a container's files for `docker cp`
    #[command(hide = true)]
    ShimArchive {
        #[arg(value_parser = ["stat", "get", "put"])]
        mode: String,
        state_dir: std::path::PathBuf,
        path: String,
        shim_pid: Option<i32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Shim { state_dir } = &cli.command {
        // Before anything else: the shim must stay single-threaded.
        return ExitCode::from(moat_engine::shim::main(state_dir) as u8);
    }
    if let Command::ShimArchive {
        mode,
        state_dir,
        path,
        shim_pid,
    } = &cli.command
    {
        // Single-threaded too: it enters a mount namespace.
        use moat_engine::shim::archive::{Mode, main};
        let mode = match mode.as_str() {
            "stat" => Mode::Stat,
            "get" => Mode::Get,
            _ => Mode::Put,
        };
        return ExitCode::from(main(mode, state_dir, path, *shim_pid) as u8);
    }
    let state = state::StateRoot::new(cli.state_root);
    let result = match cli.command {
        Command::Up(args) => up::run(args, &state),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "moat", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(())
        }
        Command::Certs(cmd) => certs::run(cmd, &state),
        Command::Audit(cmd) => audit::run(cmd, &state),
        Command::Engine(args) => engine::run(args, &state),
        Command::Gateway(args) => gateway::run(args, &state),
        Command::Policy(args) => policy::run(args, &state),
        Command::Login(args) => login::login(args),
        Command::Whoami { bundle, output } => login::whoami(bundle, output.output),
        Command::Env(args) => login::env(args),
        Command::BusyboxRootfs { dir } => {
            moat_engine::busybox::write_rootfs(&dir).map_err(anyhow::Error::from)
        }
        Command::Shim { .. } | Command::ShimArchive { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat: {err:#}");
            ExitCode::FAILURE
        }
    }
}
