//! The command line of `status-update-manager` (API.md §2), parsed with clap's derive API.
//!
//! [`Cli`] holds one [`Command`]; each command (or small group of them) has its own file with
//! an `Args` struct that parses and runs it:
//!
//! - [`serve`]: `serve`, the service (config, tracing, an actix System around
//!   [`crate::service::serve`]).
//! - [`send`]: `send` and `ack`.
//! - [`watch`]: `watch`, a subscriber printing (and with `--auto-ack` acknowledging) forwards.
//! - [`streams`]: `streams` and `stream`, the introspection tables.
//! - [`admin`]: `cleanup`, `pause`, `resume`.
//! - [`status`]: `status`, the service at a glance (paused and why, subscriber, figures).
//! - [`inspect`]: `inspect`, offline decoding of checkpoint files.
//! - [`bench`](mod@bench): `bench`, the built-in load benchmark.
//! - [`client`]: what the client commands share: `--server`, connecting, the runtime and
//!   [`client::RpcError`].
//!
//! Adding a command means: an `Args` struct with a `run`, a variant of [`Command`], and its
//! arms in [`Command::run`] and [`Command::default_log_filter`]. `run` is synchronous; a
//! command that needs an async runtime starts its own (client commands a tokio
//! current-thread runtime, `serve` an actix System).
//!
//! Tracing goes to stderr. `serve` sets it up from its configuration (`log.level`,
//! `log.format`); every other command from `RUST_LOG`, or its default filter.
//!
//! Exit status (set by `src/main.rs` from [`exit_status`]): 0 when the command succeeded,
//! [`EXIT_FAILURE`] when it returned an error (printed on stderr; a failed RPC as
//! `CODE: message`), [`EXIT_USAGE`] for a usage error: clap's own, or a [`UsageError`] such
//! as a configuration that does not validate. This module and `main` are the only places
//! that use `anyhow`.

pub mod admin;
pub mod bench;
pub mod client;
pub mod inspect;
pub mod send;
pub mod serve;
pub mod status;
pub mod streams;
pub mod watch;

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};
use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::service::config::{ConfigError, LogFormat};

/// Exit status of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (the code clap exits with).
pub const EXIT_USAGE: u8 = 2;

/// A usage error found after parsing: the configuration `serve` was given does not validate.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct UsageError(#[from] pub ConfigError);

/// The exit status for a command's error: [`EXIT_USAGE`] for a [`UsageError`], otherwise
/// [`EXIT_FAILURE`].
pub fn exit_status(err: &anyhow::Error) -> u8 {
    if err.is::<UsageError>() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// The text `main` prints for a command's error: the error and its causes joined with `: `,
/// leaving out a cause whose text is already part of the message (many errors repeat their
/// source in their own message).
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Sends tracing output to stderr, filtered by `filter` (a `tracing` filter such as `info`).
/// Does nothing if a subscriber is already set.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

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
    /// Run the service until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Send one status update and print its uuid.
    Send(send::SendArgs),
    /// Acknowledge a stream's head update.
    Ack(send::AckArgs),
    /// Subscribe and print each forwarded update as one line.
    Watch(watch::WatchArgs),
    /// List the streams in a table.
    Streams(streams::StreamsArgs),
    /// Show one stream and its pending statuses.
    Stream(streams::StreamArgs),
    /// Close every stream of a framework.
    Cleanup(admin::CleanupArgs),
    /// Stop forwarding until `resume`, also across restarts of the service.
    Pause(admin::AdminArgs),
    /// Resume forwarding after `pause`.
    Resume(admin::AdminArgs),
    /// Show whether forwarding is paused and why, the subscriber, streams and pending updates.
    Status(status::StatusArgs),
    /// Decode checkpoint files offline and print what recovery would find.
    ///
    /// Each PATH is a checkpoint file or a data directory (every stream file under it).
    /// Files are never modified.
    Inspect(inspect::InspectArgs),
    /// Run the built-in load benchmark and report throughput, latency, memory and recovery.
    Bench(bench::BenchArgs),
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<()> {
        self.command.run()
    }
}

impl Command {
    /// Sets up tracing (except for `serve`, which does once its configuration is loaded) and
    /// runs the command; an error means exit status [`exit_status`].
    pub fn run(self) -> anyhow::Result<()> {
        if !matches!(self, Command::Serve(_)) {
            let filter = std::env::var("RUST_LOG")
                .ok()
                .filter(|filter| EnvFilter::try_new(filter).is_ok())
                .unwrap_or_else(|| self.default_log_filter().to_string());
            init_tracing(&filter, LogFormat::Text);
        }
        match self {
            Command::Serve(args) => args.run(),
            Command::Send(args) => args.run(),
            Command::Ack(args) => args.run(),
            Command::Watch(args) => args.run(),
            Command::Streams(args) => args.run(),
            Command::Stream(args) => args.run(),
            Command::Cleanup(args) => args.run(),
            Command::Pause(args) => args.pause(),
            Command::Resume(args) => args.resume(),
            Command::Status(args) => args.run(),
            Command::Inspect(args) => args.run(),
            Command::Bench(args) => args.run(),
        }
    }

    /// The tracing filter used when `RUST_LOG` is not set (`serve`: `log.level` decides).
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info",
            // Their output is on stdout; stderr only carries warnings.
            Command::Send(_)
            | Command::Ack(_)
            | Command::Watch(_)
            | Command::Streams(_)
            | Command::Stream(_)
            | Command::Cleanup(_)
            | Command::Pause(_)
            | Command::Resume(_)
            | Command::Status(_)
            | Command::Inspect(_)
            | Command::Bench(_) => "warn",
        }
    }
}

/// Parses `status-update-manager ARGS…` into its command (for the commands' unit tests).
#[cfg(test)]
pub(crate) fn parse_args(args: &[&str]) -> Result<Command, clap::Error> {
    let argv = ["status-update-manager"].iter().chain(args);
    Cli::try_parse_from(argv).map(|cli| cli.command)
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
        let cases: [&[&str]; 7] = [
            &["status-update-manager"],
            &["status-update-manager", "inspect"],
            &["status-update-manager", "inspect", "--kind", "bogus", "f"],
            &["status-update-manager", "nope"],
            &["status-update-manager", "serve", "--bogus"],
            &["status-update-manager", "serve", "--listen"],
            &["status-update-manager", "watch", "--server", "nowhere"],
        ];
        for (i, args) in cases.into_iter().enumerate() {
            match Cli::try_parse_from(args) {
                Ok(cli) => panic!("case {i}: {args:?} parsed: {cli:?}"),
                Err(err) => assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "case {i}"),
            }
        }
    }

    #[test]
    fn every_command_has_a_one_line_description() {
        for command in Cli::command().get_subcommands() {
            let about = command.get_about().map(ToString::to_string);
            let about = about.unwrap_or_default();
            assert!(
                !about.is_empty() && !about.contains('\n'),
                "{}: {about:?}",
                command.get_name()
            );
        }
    }

    #[test]
    fn a_bad_configuration_is_a_usage_error() {
        let invalid = ConfigError::Invalid(Vec::new());
        assert_eq!(exit_status(&UsageError(invalid).into()), EXIT_USAGE);
        assert_eq!(exit_status(&anyhow::anyhow!("no")), EXIT_FAILURE);
        let rpc = client::RpcError {
            code: tonic::Code::NotFound,
            message: "gone".into(),
        };
        assert_eq!(exit_status(&rpc.into()), EXIT_FAILURE);
    }

    #[test]
    fn error_text_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = anyhow::Error::new(crate::service::ServeError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io,
        });
        assert_eq!(
            error_text(&err),
            "cannot listen on 127.0.0.1:1: address in use"
        );
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&err), "outer: inner");
    }
}
