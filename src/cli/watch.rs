//! `watch [--auto-ack] [--name NAME]`: subscribes and prints every forward as one line.
//!
//! A line is `key=value` words (a value with spaces or quotes is quoted), always in this
//! order:
//!
//! ```text
//! stream=s1 state=RUNNING uuid=6f2d8c34-… attempt=0 latest=RUNNING framework=fw terminal=false
//! ```
//!
//! `attempt` is the server's count of earlier sends of that update (0 = first send by this
//! server process), `latest` the state of the newest update queued on the stream. With
//! `--auto-ack` each forward is acknowledged before its line is printed, and the line ends
//! with the outcome: `ack=ok`, `ack=ended` (that ack ended the stream), `ack=already` (the
//! server had recorded this ack: ALREADY_EXISTS) or `ack=gone` (NOT_FOUND for a terminal
//! status: the stream already ended). These four are success, as API.md says for retried
//! acks; an UNAVAILABLE ack is retried a few times. Any other failure prints `ack=failed`
//! and a warning on stderr, and watching goes on: the server forwards the update again.
//!
//! The command runs until Ctrl-C (exit 0) or until the subscription ends: replaced by
//! another subscriber (ABORTED), the server shutting down (UNAVAILABLE) or the connection
//! lost; then it prints `error: CODE: why` on stderr and exits 1.

use std::time::Duration;

use clap::Args;
use tonic::Code;

use super::client::{block_on, format_uuid, word, Client, RpcError, ServerArg};
use crate::proto::status_update_manager::v1 as pb;

/// How many times an ack answered UNAVAILABLE is sent again.
pub const ACK_RETRIES: u32 = 3;
/// The wait before the first such retry; it doubles for each next one.
pub const ACK_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Acknowledge each forward as it arrives.
    #[arg(long)]
    pub auto_ack: bool,
    /// This subscriber's name in the server's logs.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "status-update-manager watch"
    )]
    pub name: String,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

/// How an `--auto-ack` acknowledgement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded; the stream goes on.
    Acked,
    /// Recorded; it ended the stream.
    Ended,
    /// ALREADY_EXISTS: this ack had been recorded before.
    AlreadyAcked,
    /// NOT_FOUND for a terminal status: the stream had already ended.
    Gone,
    /// Not recorded (the warning on stderr says why).
    Failed,
}

impl AckOutcome {
    /// The value of the line's `ack=` word.
    pub fn as_str(self) -> &'static str {
        match self {
            AckOutcome::Acked => "ok",
            AckOutcome::Ended => "ended",
            AckOutcome::AlreadyAcked => "already",
            AckOutcome::Gone => "gone",
            AckOutcome::Failed => "failed",
        }
    }

    /// The outcome of an ack of a status (terminal or not) answered with `code`, when that
    /// counts as success.
    pub fn of_error(code: Code, terminal: bool) -> Option<AckOutcome> {
        match code {
            Code::AlreadyExists => Some(AckOutcome::AlreadyAcked),
            Code::NotFound if terminal => Some(AckOutcome::Gone),
            _ => None,
        }
    }
}

impl WatchArgs {
    /// Subscribes and prints forwards until Ctrl-C or the end of the subscription.
    pub fn run(self) -> anyhow::Result<()> {
        block_on(self.watch())??;
        Ok(())
    }

    async fn watch(self) -> Result<(), RpcError> {
        let mut client = self.server.connect().await?;
        let request = pb::SubscribeRequest {
            subscriber: self.name.clone(),
        };
        let mut forwards = client.subscribe(request).await?.into_inner();
        eprintln!(
            "watching {} as {:?}{}; Ctrl-C to stop",
            self.server.server,
            self.name,
            if self.auto_ack {
                ", acknowledging each forward"
            } else {
                ""
            }
        );
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            let next = tokio::select! {
                next = forwards.message() => next,
                _ = &mut ctrl_c => return Ok(()),
            };
            let forward = match next {
                Ok(Some(forward)) => forward,
                Ok(None) => {
                    return Err(RpcError {
                        code: Code::Unavailable,
                        message: "the server ended the subscription".to_string(),
                    })
                }
                Err(status) => return Err(status.into()),
            };
            let mut line = forward_line(&forward);
            if self.auto_ack {
                if let Some(update) = &forward.update {
                    let outcome = acknowledge(&mut client, update).await;
                    line.push_str(" ack=");
                    line.push_str(outcome.as_str());
                }
            }
            println!("{line}");
        }
    }
}

/// One forward as a line of `key=value` words (see the module docs).
pub fn forward_line(forward: &pb::ForwardedUpdate) -> String {
    let update = forward.update.clone().unwrap_or_default();
    let status = update.status.unwrap_or_default();
    let latest = update
        .latest_status
        .map_or_else(|| "-".to_string(), |s| word(&s.state));
    format!(
        "stream={} state={} uuid={} attempt={} latest={} framework={} terminal={}",
        word(&update.stream_id),
        word(&status.state),
        format_uuid(&status.uuid),
        forward.attempt,
        latest,
        word(&update.framework_id),
        status.terminal
    )
}

/// Acknowledges `update`'s status; a failure is reported on stderr.
async fn acknowledge(client: &mut Client, update: &pb::StatusUpdate) -> AckOutcome {
    let status = update.status.clone().unwrap_or_default();
    let request = pb::AcknowledgeRequest {
        stream_id: update.stream_id.clone(),
        status_uuid: status.uuid.clone(),
    };
    let mut delay = ACK_RETRY_DELAY;
    let mut retries = 0;
    loop {
        let error = match client.acknowledge(request.clone()).await {
            Ok(response) if response.get_ref().stream_terminated => return AckOutcome::Ended,
            Ok(_) => return AckOutcome::Acked,
            Err(error) => error,
        };
        if let Some(outcome) = AckOutcome::of_error(error.code(), status.terminal) {
            return outcome;
        }
        if error.code() == Code::Unavailable && retries < ACK_RETRIES {
            retries += 1;
            tokio::time::sleep(delay).await;
            delay *= 2;
            continue;
        }
        eprintln!(
            "warning: cannot acknowledge {} on stream {}: {}; the server will forward it again",
            format_uuid(&status.uuid),
            word(&update.stream_id),
            RpcError::from(error)
        );
        return AckOutcome::Failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::DEFAULT_SERVER;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn watch_defaults_and_flags() {
        let cases: [(&[&str], bool, &str); 3] = [
            (&["watch"], false, DEFAULT_SERVER),
            (&["watch", "--auto-ack"], true, DEFAULT_SERVER),
            (
                &["watch", "--server", "http://h:1", "--auto-ack"],
                true,
                "http://h:1",
            ),
        ];
        for (i, (args, auto_ack, server)) in cases.into_iter().enumerate() {
            let argv = ["status-update-manager"].iter().chain(args);
            let Ok(Cli {
                command: Command::Watch(watch),
            }) = Cli::try_parse_from(argv)
            else {
                panic!("case {i}: {args:?} did not parse");
            };
            assert_eq!(watch.auto_ack, auto_ack, "case {i}");
            assert_eq!(watch.server.server, server, "case {i}");
            assert_eq!(watch.name, "status-update-manager watch", "case {i}");
        }
    }

    #[test]
    fn a_forward_is_one_line_of_words() {
        let status = |state: &str, terminal| pb::Status {
            uuid: vec![0x11; 16],
            state: state.into(),
            terminal,
            ..pb::Status::default()
        };
        let forward = pb::ForwardedUpdate {
            update: Some(pb::StatusUpdate {
                stream_id: "task 7".into(),
                framework_id: String::new(),
                status: Some(status("RUNNING", false)),
                latest_status: Some(status("FINISHED", true)),
            }),
            attempt: 2,
        };
        assert_eq!(
            forward_line(&forward),
            "stream=\"task 7\" state=RUNNING uuid=11111111-1111-1111-1111-111111111111 \
             attempt=2 latest=FINISHED framework=\"\" terminal=false"
        );
    }

    #[test]
    fn retried_ack_errors_that_mean_success() {
        let cases = [
            (Code::AlreadyExists, false, Some(AckOutcome::AlreadyAcked)),
            (Code::AlreadyExists, true, Some(AckOutcome::AlreadyAcked)),
            (Code::NotFound, true, Some(AckOutcome::Gone)),
            (Code::NotFound, false, None),
            (Code::FailedPrecondition, true, None),
            (Code::Unavailable, false, None),
        ];
        for (i, (code, terminal, outcome)) in cases.into_iter().enumerate() {
            assert_eq!(AckOutcome::of_error(code, terminal), outcome, "case {i}");
        }
    }
}
