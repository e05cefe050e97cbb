//! `status-update-manager serve [--config FILE] [--data-dir DIR] [--listen ADDR]`: runs the
//! service until SIGINT or SIGTERM.
//!
//! Loads the configuration (API.md §3: embedded defaults, `--config`, `SUM__SECTION__KEY`,
//! then these flags), sets up tracing to stderr per `log.level` and `log.format`, and runs
//! [`crate::service::serve`] on an actix System; it prints `listening on ADDR` on stdout once
//! the port is bound. Exit status: 0 after a graceful stop, [`EXIT_USAGE`](super::EXIT_USAGE)
//! for a configuration that does not validate (every bad key on its own line), 1 when the
//! service cannot start (strict recovery failed, the port is taken, …) or fails.

use std::path::PathBuf;

use clap::Args;

use super::{init_tracing, UsageError};
use crate::service;
use crate::service::config::{Overrides, ServiceConfig};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file layered over the embedded defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where stream files live (store.data_dir); overrides the file and the environment.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The gRPC listen address (server.listen), e.g. 127.0.0.1:50051; port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

impl ServeArgs {
    /// The configuration layers' overrides these flags give.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
        }
    }

    /// Loads the configuration and runs the service until a signal stops it.
    pub fn run(self) -> anyhow::Result<()> {
        let config = ServiceConfig::load(&self.overrides()).map_err(UsageError::from)?;
        init_tracing(&config.log_level, config.log_format);
        actix_rt::System::new().block_on(service::serve(config))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["status-update-manager", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Serve(args),
            }) => args,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn no_flags_leave_the_configuration_alone() {
        let overrides = serve_args(&[]).overrides();
        assert!(overrides.config_file.is_none());
        assert!(overrides.data_dir.is_none());
        assert!(overrides.listen.is_none());
    }

    #[test]
    fn flags_become_overrides() {
        let overrides = serve_args(&[
            "--config",
            "sum.toml",
            "--data-dir",
            "/var/lib/sum",
            "--listen",
            "127.0.0.1:0",
        ])
        .overrides();
        assert_eq!(overrides.config_file, Some(PathBuf::from("sum.toml")));
        assert_eq!(overrides.data_dir, Some(PathBuf::from("/var/lib/sum")));
        assert_eq!(overrides.listen.as_deref(), Some("127.0.0.1:0"));
    }
}
