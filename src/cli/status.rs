//! `status [--json]`: the service at a glance (GetStatus).
//!
//! Prints one `key: value` line each: whether forwarding is paused and why (an operator's
//! pause, no subscriber, or both), since when the operator's pause holds, the subscriber and
//! since when, the streams in memory and the updates pending over them, the data directory,
//! the sync policy and the server's version. Times are RFC 3339, UTC, to the second; `-`
//! stands for none. `--json` prints the same as one JSON document with `GetStatusResponse`'s
//! field names (times as unix seconds, `null` for none).

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use serde_json::json;

use super::client::{block_on, word, RpcError, ServerArg};
use crate::proto::status_update_manager::v1 as pb;

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as one JSON document instead of `key: value` lines.
    #[arg(long)]
    pub json: bool,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl StatusArgs {
    /// Fetches the status and prints it.
    pub fn run(self) -> anyhow::Result<()> {
        let status = block_on(async {
            let mut client = self.server.connect().await?;
            let response = client.get_status(pb::GetStatusRequest {}).await?;
            Ok::<_, RpcError>(response.into_inner())
        })??;
        let mut out = io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&to_json(&status))?)?;
        } else {
            write_status(&status, &mut out)?;
        }
        Ok(())
    }
}

/// Why nothing is forwarded: `operator pause`, `no subscriber`, both (comma-separated),
/// `upstream unavailable` (an upstream other than a subscriber is not connected), or `-`
/// while forwarding.
pub fn cause(status: &pb::GetStatusResponse) -> &'static str {
    match (status.paused, status.operator_paused, status.subscribed) {
        (false, _, _) => "-",
        (true, true, false) => "operator pause, no subscriber",
        (true, true, true) => "operator pause",
        (true, false, false) => "no subscriber",
        (true, false, true) => "upstream unavailable",
    }
}

/// Unix seconds as RFC 3339 (UTC, seconds), or `-` for `present == false`.
fn time(unix_seconds: i64, present: bool) -> String {
    if !present {
        return "-".into();
    }
    let secs = u64::try_from(unix_seconds).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Writes the `key: value` lines of `status`.
pub fn write_status(status: &pb::GetStatusResponse, out: &mut impl Write) -> io::Result<()> {
    let subscriber = if status.subscribed {
        word(&status.subscriber)
    } else {
        "-".into()
    };
    let lines = [
        ("paused", status.paused.to_string()),
        ("cause", cause(status).to_string()),
        (
            "operator pause since",
            time(
                status.operator_paused_since_unix_seconds,
                status.operator_paused,
            ),
        ),
        ("subscriber", subscriber),
        (
            "subscribed since",
            time(status.subscribed_since_unix_seconds, status.subscribed),
        ),
        ("streams", status.streams.to_string()),
        ("pending updates", status.pending_updates.to_string()),
        ("data dir", word(&status.data_dir)),
        ("sync", status.sync.clone()),
        ("version", status.version.clone()),
    ];
    for (key, value) in lines {
        writeln!(out, "{key}: {value}")?;
    }
    Ok(())
}

/// `status --json`: the response's fields, with `null` for a time, or a subscriber, that
/// is not there.
pub fn to_json(status: &pb::GetStatusResponse) -> serde_json::Value {
    let some = |present: bool, value: i64| present.then_some(value);
    json!({
        "paused": status.paused,
        "operator_paused": status.operator_paused,
        "operator_paused_since_unix_seconds":
            some(status.operator_paused, status.operator_paused_since_unix_seconds),
        "subscribed": status.subscribed,
        "subscriber": status.subscribed.then_some(&status.subscriber),
        "subscribed_since_unix_seconds":
            some(status.subscribed, status.subscribed_since_unix_seconds),
        "streams": status.streams,
        "pending_updates": status.pending_updates,
        "data_dir": status.data_dir,
        "sync": status.sync,
        "version": status.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_args as parse, Command};

    fn paused_by_an_operator() -> pb::GetStatusResponse {
        pb::GetStatusResponse {
            paused: true,
            operator_paused: true,
            operator_paused_since_unix_seconds: 1_764_000_000,
            subscribed: false,
            subscriber: String::new(),
            subscribed_since_unix_seconds: 0,
            streams: 2,
            pending_updates: 3,
            data_dir: "/var/lib/sum".into(),
            sync: "batch".into(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn the_lines_say_whether_it_is_paused_and_why() {
        let mut out = Vec::new();
        write_status(&paused_by_an_operator(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "paused: true\n\
             cause: operator pause, no subscriber\n\
             operator pause since: 2025-11-24T16:00:00Z\n\
             subscriber: -\n\
             subscribed since: -\n\
             streams: 2\n\
             pending updates: 3\n\
             data dir: /var/lib/sum\n\
             sync: batch\n\
             version: 0.1.0\n"
        );

        let forwarding = pb::GetStatusResponse {
            paused: false,
            operator_paused: false,
            operator_paused_since_unix_seconds: 0,
            subscribed: true,
            subscriber: "status-update-manager watch".into(),
            subscribed_since_unix_seconds: 1_764_000_060,
            ..paused_by_an_operator()
        };
        let mut out = Vec::new();
        write_status(&forwarding, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("paused: false\ncause: -\n"), "{out}");
        assert!(
            out.contains(
                "\nsubscriber: \"status-update-manager watch\"\n\
                 subscribed since: 2025-11-24T16:01:00Z\n"
            ),
            "{out}"
        );
        let subscribed_but_paused = pb::GetStatusResponse {
            paused: true,
            operator_paused: true,
            ..forwarding.clone()
        };
        assert_eq!(cause(&subscribed_but_paused), "operator pause");
        let nobody = pb::GetStatusResponse {
            paused: true,
            subscribed: false,
            ..forwarding.clone()
        };
        assert_eq!(cause(&nobody), "no subscriber");
        let upstream_down = pb::GetStatusResponse {
            paused: true,
            ..forwarding
        };
        assert_eq!(cause(&upstream_down), "upstream unavailable");
    }

    #[test]
    fn the_json_has_the_response_field_names_and_null_for_what_is_not_there() {
        let json = to_json(&paused_by_an_operator());
        assert_eq!(json["paused"], true);
        assert_eq!(json["operator_paused_since_unix_seconds"], 1_764_000_000);
        assert!(json["subscriber"].is_null() && json["subscribed_since_unix_seconds"].is_null());
        assert_eq!(json["pending_updates"], 3);
        assert_eq!(json["data_dir"], "/var/lib/sum");
    }

    #[test]
    fn arguments() {
        match parse(&["status", "--json", "--server", "http://h:1"]) {
            Ok(Command::Status(args)) => {
                assert!(args.json);
                assert_eq!(args.server.server, "http://h:1");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["status", "now"]).is_err());
    }
}
