//! `status-update-manager`: the command-line entry point.
//!
//! Parses the arguments ([`status_update_manager::cli::Cli`]), sets up tracing to stderr
//! (`RUST_LOG` overrides the command's default filter) and runs the command. Exit status: 0
//! ok, 1 the command failed (the message on stderr), 2 usage error (clap).

use std::process::ExitCode;

use clap::Parser;
use status_update_manager::cli::{Cli, EXIT_FAILURE};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
