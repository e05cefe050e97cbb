//! `cleanup --framework F`, `pause`, `resume`: the admin commands.
//!
//! `cleanup` closes every stream of a framework (retries stop) and prints how many it
//! closed. `pause` stops forwarding until `resume`, whether or not a subscriber is connected
//! and across restarts of the service (the server keeps the pause in its data directory);
//! `resume` lifts it and, with a subscriber connected, re-sends every stream's head at once.

use clap::builder::NonEmptyStringValueParser;
use clap::Args;

use super::client::{block_on, word, RpcError, ServerArg};
use crate::proto::status_update_manager::v1 as pb;

/// Arguments of `cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The framework whose streams are closed.
    #[arg(long, value_name = "F", value_parser = NonEmptyStringValueParser::new())]
    pub framework: String,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl CleanupArgs {
    /// Closes the framework's streams and prints how many.
    pub fn run(self) -> anyhow::Result<()> {
        let closed = block_on(async {
            let mut client = self.server.connect().await?;
            let request = pb::CleanupRequest {
                framework_id: self.framework.clone(),
            };
            let response = client.cleanup(request).await?;
            Ok::<_, RpcError>(response.into_inner().streams_closed)
        })??;
        let streams = if closed == 1 { "stream" } else { "streams" };
        println!(
            "closed {closed} {streams} of framework {}",
            word(&self.framework)
        );
        Ok(())
    }
}

/// Arguments of `pause` and `resume`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl AdminArgs {
    /// The admin `Pause`.
    pub fn pause(self) -> anyhow::Result<()> {
        block_on(async {
            let mut client = self.server.connect().await?;
            client.pause(pb::PauseRequest {}).await?;
            Ok::<_, RpcError>(())
        })??;
        println!("forwarding paused");
        Ok(())
    }

    /// The admin `Resume`.
    pub fn resume(self) -> anyhow::Result<()> {
        block_on(async {
            let mut client = self.server.connect().await?;
            client.resume(pb::ResumeRequest {}).await?;
            Ok::<_, RpcError>(())
        })??;
        println!("forwarding resumed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::client::DEFAULT_SERVER;
    use crate::cli::{parse_args as parse, Command, EXIT_USAGE};

    #[test]
    fn arguments() {
        let Ok(Command::Cleanup(args)) = parse(&["cleanup", "--framework", "fw"]) else {
            panic!("cleanup did not parse");
        };
        assert_eq!(args.framework, "fw");
        assert_eq!(args.server.server, DEFAULT_SERVER);
        for (i, command) in ["pause", "resume"].into_iter().enumerate() {
            match parse(&[command, "--server", "http://h:1"]) {
                Ok(Command::Pause(args) | Command::Resume(args)) => {
                    assert_eq!(args.server.server, "http://h:1", "case {i}");
                }
                other => panic!("case {i}: {other:?}"),
            }
        }
        let bad: [&[&str]; 3] = [
            &["cleanup"],
            &["cleanup", "--framework", ""],
            &["pause", "now"],
        ];
        for (i, args) in bad.into_iter().enumerate() {
            match parse(args) {
                Ok(command) => panic!("case {i}: {args:?} parsed: {command:?}"),
                Err(err) => assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "case {i}"),
            }
        }
    }
}
