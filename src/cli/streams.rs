//! `streams [--framework F]` and `stream ID`: what the stream actors report (ListStreams,
//! GetStream).
//!
//! `streams` prints a table, one row per stream sorted by id: pending updates, distinct
//! updates received and acknowledged, resends of the head so far (`ATTEMPT`), when the next
//! resend is due (`-`: none armed, e.g. paused), how long the oldest pending update has
//! waited, the checkpoint file's size and whether the stream ended. `stream ID` prints the
//! same figures for one stream, one per line, followed by its pending statuses in queue
//! order (head first).

use std::io::{self, Write};

use clap::builder::NonEmptyStringValueParser;
use clap::Args;

use super::client::{block_on, format_uuid, word, RpcError, ServerArg};
use crate::proto::status_update_manager::v1 as pb;

/// Arguments of `streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only the streams of this framework.
    #[arg(long, value_name = "F", value_parser = NonEmptyStringValueParser::new())]
    pub framework: Option<String>,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl StreamsArgs {
    /// Lists the streams and prints the table.
    pub fn run(self) -> anyhow::Result<()> {
        let mut streams = block_on(async {
            let mut client = self.server.connect().await?;
            let request = pb::ListStreamsRequest {
                framework_id: self.framework.clone().unwrap_or_default(),
            };
            let response = client.list_streams(request).await?;
            Ok::<_, RpcError>(response.into_inner().streams)
        })??;
        streams.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        write_table(&streams, &mut io::stdout().lock())?;
        Ok(())
    }
}

/// Arguments of `stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The stream's id.
    #[arg(value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub stream: String,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl StreamArgs {
    /// Fetches the stream and prints it.
    pub fn run(self) -> anyhow::Result<()> {
        let info = block_on(async {
            let mut client = self.server.connect().await?;
            let request = pb::GetStreamRequest {
                stream_id: self.stream.clone(),
            };
            let response = client.get_stream(request).await?;
            Ok::<_, RpcError>(response.into_inner())
        })??;
        write_stream(&info, &mut io::stdout().lock())?;
        Ok(())
    }
}

const HEADERS: [&str; 10] = [
    "STREAM",
    "FRAMEWORK",
    "PENDING",
    "RECEIVED",
    "ACKED",
    "ATTEMPT",
    "NEXT-RETRY",
    "OLDEST-PENDING",
    "CHECKPOINT-BYTES",
    "TERMINATED",
];

fn row(info: &pb::StreamInfo) -> [String; 10] {
    [
        word(&info.stream_id),
        framework(&info.framework_id),
        info.pending.to_string(),
        info.received.to_string(),
        info.acknowledged.to_string(),
        info.attempt.to_string(),
        millis(info.next_retry_in_millis, info.next_retry_in_millis >= 0),
        millis(info.oldest_pending_age_millis, info.pending > 0),
        info.checkpoint_bytes.to_string(),
        info.terminated.to_string(),
    ]
}

/// Writes the `streams` table: a header and one row per stream, columns aligned.
pub fn write_table(streams: &[pb::StreamInfo], out: &mut impl Write) -> io::Result<()> {
    let rows: Vec<[String; 10]> = streams.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            match i {
                0 | 1 => text.push_str(&format!("{cell:<width$}  ")),
                _ => text.push_str(&format!("{cell:>width$}  ")),
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&HEADERS)?;
    for row in &rows {
        line(&row.each_ref().map(String::as_str))?;
    }
    if rows.is_empty() {
        writeln!(out, "(no streams)")?;
    }
    Ok(())
}

/// Writes one stream: its figures, one per line, then its pending statuses.
pub fn write_stream(info: &pb::StreamInfo, out: &mut impl Write) -> io::Result<()> {
    let figures = [
        ("stream", word(&info.stream_id)),
        ("framework", framework(&info.framework_id)),
        ("checkpointed", info.checkpointed.to_string()),
        ("pending", info.pending.to_string()),
        ("received", info.received.to_string()),
        ("acknowledged", info.acknowledged.to_string()),
        ("attempt", info.attempt.to_string()),
        (
            "next retry in",
            millis(info.next_retry_in_millis, info.next_retry_in_millis >= 0),
        ),
        (
            "oldest pending age",
            millis(info.oldest_pending_age_millis, info.pending > 0),
        ),
        ("checkpoint bytes", info.checkpoint_bytes.to_string()),
        ("terminated", info.terminated.to_string()),
    ];
    for (name, value) in figures {
        writeln!(out, "{name:<18}  {value}")?;
    }
    writeln!(out, "pending statuses (head first):")?;
    for status in &info.pending_statuses {
        write!(
            out,
            "  {}  {}  terminal={}",
            format_uuid(&status.uuid),
            word(&status.state),
            status.terminal
        )?;
        if !status.message.is_empty() {
            write!(out, "  {}", word(&status.message))?;
        }
        writeln!(out)?;
    }
    if info.pending_statuses.is_empty() {
        writeln!(out, "  (none)")?;
    }
    Ok(())
}

fn framework(id: &str) -> String {
    if id.is_empty() {
        "-".to_string()
    } else {
        word(id)
    }
}

/// A duration in milliseconds for a reader (`850ms`, `9.9s`, `4m05s`); `-` when not `shown`.
fn millis(ms: i64, shown: bool) -> String {
    match ms {
        _ if !shown || ms < 0 => "-".to_string(),
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::DEFAULT_SERVER;
    use crate::cli::{parse_args as parse, Command, EXIT_USAGE};

    #[test]
    fn arguments() {
        let Ok(Command::Streams(args)) = parse(&["streams"]) else {
            panic!("streams did not parse");
        };
        assert_eq!(
            (args.framework, args.server.server.as_str()),
            (None, DEFAULT_SERVER)
        );
        let Ok(Command::Streams(args)) = parse(&["streams", "--framework", "fw"]) else {
            panic!("streams --framework did not parse");
        };
        assert_eq!(args.framework.as_deref(), Some("fw"));
        let Ok(Command::Stream(args)) = parse(&["stream", "s1"]) else {
            panic!("stream did not parse");
        };
        assert_eq!(
            (args.stream.as_str(), args.server.server.as_str()),
            ("s1", DEFAULT_SERVER)
        );
        let bad: [&[&str]; 4] = [
            &["stream"],
            &["stream", ""],
            &["stream", "a", "b"],
            &["streams", "--framework", ""],
        ];
        for (i, args) in bad.into_iter().enumerate() {
            match parse(args) {
                Ok(command) => panic!("case {i}: {args:?} parsed: {command:?}"),
                Err(err) => assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "case {i}"),
            }
        }
    }

    #[test]
    fn durations_for_readers() {
        let cases = [
            (-1, true, "-"),
            (5, false, "-"),
            (0, true, "0ms"),
            (850, true, "850ms"),
            (9_940, true, "9.9s"),
            (245_000, true, "4m05s"),
        ];
        for (i, (ms, shown, text)) in cases.into_iter().enumerate() {
            assert_eq!(millis(ms, shown), text, "case {i}");
        }
    }

    fn info() -> pb::StreamInfo {
        pb::StreamInfo {
            stream_id: "s1".into(),
            framework_id: "fw".into(),
            checkpointed: true,
            pending: 1,
            received: 3,
            acknowledged: 2,
            attempt: 1,
            next_retry_in_millis: -1,
            oldest_pending_age_millis: 1_500,
            checkpoint_bytes: 321,
            terminated: false,
            pending_statuses: vec![pb::Status {
                uuid: vec![0x22; 16],
                state: "RUNNING".into(),
                message: "half way".into(),
                ..pb::Status::default()
            }],
        }
    }

    #[test]
    fn table_rows_split_into_columns() -> Result<(), Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        write_table(&[info()], &mut out)?;
        let text = String::from_utf8(out)?;
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], HEADERS, "{text}");
        assert_eq!(
            lines[1],
            ["s1", "fw", "1", "3", "2", "1", "-", "1.5s", "321", "false"],
            "{text}"
        );
        let mut out = Vec::new();
        write_table(&[], &mut out)?;
        assert!(String::from_utf8(out)?.ends_with("(no streams)\n"));
        Ok(())
    }

    #[test]
    fn one_stream_with_its_pending_statuses() -> Result<(), Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        write_stream(&info(), &mut out)?;
        let text = String::from_utf8(out)?;
        assert!(text.starts_with("stream              s1\n"), "{text}");
        assert!(text.contains("\npending             1\n"), "{text}");
        assert!(
            text.ends_with(
                "  22222222-2222-2222-2222-222222222222  RUNNING  terminal=false  \"half way\"\n"
            ),
            "{text}"
        );
        Ok(())
    }
}
