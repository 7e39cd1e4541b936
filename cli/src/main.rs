//! The one `moat` binary: the PKI tool today; the engine, the gateway, the
//! policy and audit tools join it as subcommands.

mod certs;
mod state;

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

#[derive(Subcommand)]
enum Command {
    /// Certificates: the CA, the gateway's certificate, users' client certificates
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// (internal) the per-container shim the engine starts
    #[command(hide = true)]
    Shim {
        /// The container's state directory
        state_dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Shim { state_dir } = &cli.command {
        // Before anything else: the shim must stay single-threaded.
        return ExitCode::from(moat_engine::shim::main(state_dir) as u8);
    }
    let state = state::StateRoot::new(cli.state_root);
    let result = match cli.command {
        Command::Certs(cmd) => certs::run(cmd, &state),
        Command::Shim { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat: {err:#}");
            ExitCode::FAILURE
        }
    }
}
