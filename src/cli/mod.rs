//! The command line of `status-update-manager` (API.md §2), parsed with clap's derive API.
//!
//! [`Cli`] holds one [`Command`]; each command is a variant with its own argument struct in
//! its own file (`inspect` → [`inspect`]), which parses and runs it. Adding a command (`serve`,
//! `send`, `ack`, `watch`, `streams`, …) means: a file here with an `Args` struct and a
//! `run`, a variant of [`Command`], and its arms in [`Command::run`] and
//! [`Command::default_log_filter`]. `run` is synchronous; a command that needs an async
//! runtime starts its own.
//!
//! Exit status (set by `src/main.rs`): 0 when the command succeeded, [`EXIT_FAILURE`] when it
//! returned an error (printed on stderr), [`EXIT_USAGE`] for a usage error (clap's own code).
//! This module and `main` are the only places that use `anyhow`.

pub mod inspect;

use clap::{Parser, Subcommand};

/// Exit status of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (the code clap exits with).
pub const EXIT_USAGE: u8 = 2;

/// `status-update-manager`: checkpoint status updates, forward them in order, retry until
/// acknowledged, recover after crashes.
#[derive(Debug, Parser)]
#[command(
    name = "status-update-manager",
    version,
    about,
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offline: decode checkpoint files (or every stream under a data directory) and print
    /// each stream's replayed state. Never modifies files.
    Inspect(inspect::InspectArgs),
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<()> {
        self.command.run()
    }
}

impl Command {
    /// Runs the command; an error means exit status [`EXIT_FAILURE`].
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Inspect(args) => args.run(),
        }
    }

    /// The tracing filter used when `RUST_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            // Its output is the report on stdout; stderr only carries warnings.
            Command::Inspect(_) => "warn",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_use_exit_code_2() {
        let cases: [&[&str]; 4] = [
            &["status-update-manager"],
            &["status-update-manager", "inspect"],
            &["status-update-manager", "inspect", "--kind", "bogus", "f"],
            &["status-update-manager", "nope"],
        ];
        for (i, args) in cases.into_iter().enumerate() {
            match Cli::try_parse_from(args) {
                Ok(cli) => panic!("case {i}: {args:?} parsed: {cli:?}"),
                Err(err) => assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "case {i}"),
            }
        }
    }
}
