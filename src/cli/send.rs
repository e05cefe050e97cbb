//! `send` and `ack`: one `Update`, one `Acknowledge`.
//!
//! `send --stream ID --state S [--terminal] [--framework F] [--message M] [--payload TEXT]
//! [--memory-only] [--uuid UUID]` sends one status with a fresh v4 uuid (or `--uuid`, to
//! retry a send whose reply was lost) and prints the uuid on stdout, followed by
//! ` (duplicate)` when the server already had it: the uuid is always the first word of the
//! line. `ack --stream ID --uuid UUID` acknowledges a stream's head and prints whether that
//! ended the stream.

use clap::builder::NonEmptyStringValueParser;
use clap::Args;
use uuid::Uuid;

use super::client::{block_on, word, RpcError, ServerArg};
use crate::proto::status_update_manager::v1 as pb;

/// Arguments of `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The stream the status belongs to.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub stream: String,
    /// The state name, e.g. RUNNING.
    #[arg(long, value_name = "S", value_parser = NonEmptyStringValueParser::new())]
    pub state: String,
    /// Acknowledging this status ends the stream.
    #[arg(long)]
    pub terminal: bool,
    /// The owning framework (Cleanup works per framework); none by default.
    #[arg(long, value_name = "F")]
    pub framework: Option<String>,
    /// Human-readable text.
    #[arg(long, value_name = "M")]
    pub message: Option<String>,
    /// Opaque data for the upstream, sent as the UTF-8 bytes of TEXT.
    #[arg(long, value_name = "TEXT")]
    pub payload: Option<String>,
    /// Keep the update in memory only (not checkpointed).
    #[arg(long)]
    pub memory_only: bool,
    /// Use this status uuid instead of a fresh one (to retry a send).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<Uuid>,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl SendArgs {
    /// The request this command sends, with `uuid` as the status uuid.
    pub fn request(&self, uuid: Uuid) -> pb::UpdateRequest {
        pb::UpdateRequest {
            update: Some(pb::StatusUpdate {
                stream_id: self.stream.clone(),
                framework_id: self.framework.clone().unwrap_or_default(),
                status: Some(pb::Status {
                    uuid: uuid.as_bytes().to_vec(),
                    state: self.state.clone(),
                    terminal: self.terminal,
                    message: self.message.clone().unwrap_or_default(),
                    payload: self.payload.clone().unwrap_or_default().into_bytes(),
                    timestamp_unix_micros: 0,
                }),
                latest_status: None,
            }),
            memory_only: self.memory_only,
        }
    }

    /// Sends the update and prints its uuid.
    pub fn run(self) -> anyhow::Result<()> {
        let uuid = self.uuid.unwrap_or_else(Uuid::new_v4);
        let response = block_on(async {
            let mut client = self.server.connect().await?;
            let response = client.update(self.request(uuid)).await?;
            Ok::<_, RpcError>(response.into_inner())
        })??;
        if response.duplicate {
            println!("{uuid} (duplicate)");
        } else {
            println!("{uuid}");
        }
        Ok(())
    }
}

/// Arguments of `ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// The stream whose head is acknowledged.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub stream: String,
    /// The head's status uuid.
    #[arg(long, value_name = "UUID")]
    pub uuid: Uuid,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl AckArgs {
    /// Acknowledges and prints whether the stream ended.
    pub fn run(self) -> anyhow::Result<()> {
        let response = block_on(async {
            let mut client = self.server.connect().await?;
            let request = pb::AcknowledgeRequest {
                stream_id: self.stream.clone(),
                status_uuid: self.uuid.as_bytes().to_vec(),
            };
            let response = client.acknowledge(request).await?;
            Ok::<_, RpcError>(response.into_inner())
        })??;
        let outcome = if response.stream_terminated {
            "stream ended"
        } else {
            "stream still open"
        };
        println!(
            "acknowledged {} on stream {}: {outcome}",
            self.uuid,
            word(&self.stream)
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::DEFAULT_SERVER;
    use crate::cli::{parse_args as parse, Command, EXIT_USAGE};

    #[test]
    fn send_defaults() {
        let Ok(Command::Send(args)) = parse(&["send", "--stream", "s1", "--state", "RUNNING"])
        else {
            panic!("send did not parse");
        };
        assert_eq!(args.server.server, DEFAULT_SERVER);
        assert!(!args.terminal && !args.memory_only);
        assert_eq!(args.uuid, None);
        let uuid = Uuid::new_v4();
        let request = args.request(uuid);
        assert!(!request.memory_only);
        let update = request.update.expect("update");
        assert_eq!(
            (update.stream_id.as_str(), update.framework_id.as_str()),
            ("s1", "")
        );
        let status = update.status.expect("status");
        assert_eq!(status.uuid, uuid.as_bytes());
        assert_eq!(status.state, "RUNNING");
        assert!(status.message.is_empty() && status.payload.is_empty());
        assert_eq!(status.timestamp_unix_micros, 0, "the server fills it in");
        assert!(update.latest_status.is_none());
    }

    #[test]
    fn send_with_every_flag() {
        let uuid = "6f2d8c34-5f7a-4c1e-9a8b-0c1d2e3f4a5b";
        let Ok(Command::Send(args)) = parse(&[
            "send",
            "--stream",
            "s1",
            "--state",
            "FINISHED",
            "--terminal",
            "--framework",
            "fw",
            "--message",
            "done",
            "--payload",
            "{\"rc\":0}",
            "--memory-only",
            "--uuid",
            uuid,
            "--server",
            "http://10.0.0.1:7000",
        ]) else {
            panic!("send did not parse");
        };
        let request = args.request(args.uuid.expect("--uuid"));
        assert!(request.memory_only);
        let update = request.update.expect("update");
        assert_eq!(update.framework_id, "fw");
        let status = update.status.expect("status");
        assert!(status.terminal);
        assert_eq!(status.message, "done");
        assert_eq!(status.payload, b"{\"rc\":0}");
        assert_eq!(Uuid::from_slice(&status.uuid).unwrap().to_string(), uuid);
        assert_eq!(args.server.server, "http://10.0.0.1:7000");
    }

    #[test]
    fn ack_parses_the_uuid() {
        let Ok(Command::Ack(args)) = parse(&[
            "ack",
            "--stream",
            "s1",
            "--uuid",
            "6f2d8c34-5f7a-4c1e-9a8b-0c1d2e3f4a5b",
        ]) else {
            panic!("ack did not parse");
        };
        assert_eq!(args.server.server, DEFAULT_SERVER);
        assert_eq!(
            args.uuid.to_string(),
            "6f2d8c34-5f7a-4c1e-9a8b-0c1d2e3f4a5b"
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let cases: [&[&str]; 8] = [
            &["send", "--state", "RUNNING"],
            &["send", "--stream", "s1"],
            &["send", "--stream", "", "--state", "RUNNING"],
            &["send", "--stream", "s1", "--state", ""],
            &["send", "--stream", "s1", "--state", "R", "--uuid", "nope"],
            &[
                "send",
                "--stream",
                "s1",
                "--state",
                "R",
                "--server",
                "localhost:1",
            ],
            &["ack", "--stream", "s1"],
            &["ack", "--stream", "s1", "--uuid", "1234"],
        ];
        for (i, args) in cases.into_iter().enumerate() {
            match parse(args) {
                Ok(command) => panic!("case {i}: {args:?} parsed: {command:?}"),
                Err(err) => assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "case {i}"),
            }
        }
    }
}
