//! `status-update-manager`: the command-line entry point.
//!
//! Parses the arguments ([`status_update_manager::cli::Cli`]) and runs the command, which
//! sets up its own tracing (to stderr). Exit status: 0 ok, 1 the command failed (`error: …`
//! on stderr), 2 usage error (clap's, or a configuration that does not validate).

use std::process::ExitCode;

use clap::Parser;
use status_update_manager::cli::{error_text, exit_status, Cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A configuration error has one line per bad key.
            for line in error_text(&err).lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(exit_status(&err))
        }
    }
}
