//! `streams [--framework F]` and `stream ID`: what the stream actors report (ListStreams,
//! GetStream).
//!
//! `streams` prints a table, one row per stream sorted by id: pending updates, distinct
//! updates received and acknowledged, resends of the head so far (`ATTEMPT`), when the next
//! resend is due (`-`: none armed, e.g. paused), how long the oldest pending update has
//! waited, the checkpoint file's size, whether the stream ended and its mailbox backlog
//! (`BACKLOG`: messages queued for the stream's actor, not yet handled). It reads ListStreams a
//! page at a time ([`PAGE_SIZE`] streams) and prints each page's rows as the page arrives
//! ([`TableWriter`]), up to `--limit N` streams. `stream ID` prints the
//! same figures for one stream, one per line, with the messages its actor handled and how
//! long the request waited in its mailbox, followed by its pending statuses in queue
//! order (head first).

use std::io::{self, Write};

use clap::builder::NonEmptyStringValueParser;
use clap::Args;

use super::client::{block_on, format_uuid, word, RpcError, ServerArg};
use crate::proto::status_update_manager::v1 as pb;

/// Streams asked for per ListStreams call (the server's default page size).
pub const PAGE_SIZE: u64 = 1000;

/// Arguments of `streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only the streams of this framework.
    #[arg(long, value_name = "F", value_parser = NonEmptyStringValueParser::new())]
    pub framework: Option<String>,
    /// Stop after the first N streams (in stream id order); without it every stream is
    /// listed, read 1000 at a time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Where the service is.
    #[command(flatten)]
    pub server: ServerArg,
}

impl StreamsArgs {
    /// Lists the streams and prints the table, a page at a time.
    pub fn run(self) -> anyhow::Result<()> {
        block_on(self.list(io::stdout().lock()))?
    }

    /// Reads ListStreams page after page, writing each page's rows to `out` as it arrives,
    /// until the last page, `--limit` streams, or the reader of `out` goes away
    /// (`streams | head`: not an error).
    async fn list(&self, out: impl Write) -> anyhow::Result<()> {
        let mut client = self.server.connect().await?;
        let mut table = TableWriter::new(io::BufWriter::new(out));
        let mut left = self.limit;
        let mut page_token = String::new();
        loop {
            let page_size = left.map_or(PAGE_SIZE, |left| left.min(PAGE_SIZE));
            let request = pb::ListStreamsRequest {
                framework_id: self.framework.clone().unwrap_or_default(),
                page_size: u32::try_from(page_size).unwrap_or(u32::MAX),
                page_token,
            };
            let page = client
                .list_streams(request)
                .await
                .map_err(RpcError::from)?
                .into_inner();
            let mut streams = page.streams;
            if let Some(left) = left.as_mut() {
                streams.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= streams.len() as u64;
            }
            if reader_gone(table.page(&streams))? {
                return Ok(());
            }
            if page.next_page_token.is_empty() || left == Some(0) {
                break;
            }
            page_token = page.next_page_token;
        }
        reader_gone(table.finish())?;
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

const HEADERS: [&str; 11] = [
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
    "BACKLOG",
];

fn row(info: &pb::StreamInfo) -> [String; 11] {
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
        info.mailbox_backlog.to_string(),
    ]
}

/// Whether a write failed because the reader of stdout went away; any other failure is
/// the error.
fn reader_gone(written: io::Result<()>) -> io::Result<bool> {
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        other => other.map(|()| false),
    }
}

/// Writes the `streams` table: a header and one row per stream, columns aligned.
pub fn write_table(streams: &[pb::StreamInfo], out: &mut impl Write) -> io::Result<()> {
    let mut table = TableWriter::new(out);
    table.page(streams)?;
    table.finish()
}

/// Writes the `streams` table a page at a time: the header with the first page, then each
/// page's rows as soon as it is given, flushed. A column is as wide as its header and its
/// widest cell so far, so a later page with wider cells shifts only its own rows (every line
/// still splits on whitespace).
#[derive(Debug)]
pub struct TableWriter<W: Write> {
    out: W,
    /// The column widths so far; `None` until the header is written.
    widths: Option<Vec<usize>>,
    rows: u64,
}

impl<W: Write> TableWriter<W> {
    /// A table that writes to `out`.
    pub fn new(out: W) -> Self {
        TableWriter {
            out,
            widths: None,
            rows: 0,
        }
    }

    /// Writes the rows of `streams` (and the header, the first time).
    pub fn page(&mut self, streams: &[pb::StreamInfo]) -> io::Result<()> {
        let rows: Vec<_> = streams.iter().map(row).collect();
        let header = self.widths.is_none();
        let widths = self
            .widths
            .get_or_insert_with(|| HEADERS.iter().map(|h| h.len()).collect());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if header {
            write_line(&mut self.out, widths, &HEADERS[..])?;
        }
        for row in &rows {
            write_line(&mut self.out, widths, &row[..])?;
        }
        self.rows += rows.len() as u64;
        self.out.flush()
    }

    /// Ends the table: the header if no page came, `(no streams)` if no row did.
    pub fn finish(mut self) -> io::Result<()> {
        if self.widths.is_none() {
            self.page(&[])?;
        }
        if self.rows == 0 {
            writeln!(self.out, "(no streams)")?;
        }
        self.out.flush()
    }
}

/// One line of the table: the first two columns left-aligned, the others right-aligned, two
/// spaces between them.
fn write_line(out: &mut impl Write, widths: &[usize], cells: &[impl AsRef<str>]) -> io::Result<()> {
    let mut text = String::new();
    for (i, (cell, &width)) in cells.iter().zip(widths).enumerate() {
        let cell = cell.as_ref();
        match i {
            0 | 1 => text.push_str(&format!("{cell:<width$}  ")),
            _ => text.push_str(&format!("{cell:>width$}  ")),
        }
    }
    writeln!(out, "{}", text.trim_end())
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
        ("mailbox backlog", info.mailbox_backlog.to_string()),
        ("messages handled", info.messages_handled.to_string()),
        (
            "mailbox wait",
            millis(
                i64::try_from(info.mailbox_oldest_wait_millis).unwrap_or(i64::MAX),
                true,
            ),
        ),
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
        assert_eq!(args.limit, None);
        let Ok(Command::Streams(args)) = parse(&["streams", "--limit", "5"]) else {
            panic!("streams --limit did not parse");
        };
        assert_eq!(args.limit, Some(5));
        let Ok(Command::Stream(args)) = parse(&["stream", "s1"]) else {
            panic!("stream did not parse");
        };
        assert_eq!(
            (args.stream.as_str(), args.server.server.as_str()),
            ("s1", DEFAULT_SERVER)
        );
        let bad: [&[&str]; 6] = [
            &["stream"],
            &["stream", ""],
            &["stream", "a", "b"],
            &["streams", "--framework", ""],
            &["streams", "--limit", "0"],
            &["streams", "--limit", "many"],
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
            mailbox_backlog: 4,
            messages_handled: 57,
            mailbox_oldest_wait_millis: 12,
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
            ["s1", "fw", "1", "3", "2", "1", "-", "1.5s", "321", "false", "4"],
            "{text}"
        );
        let mut out = Vec::new();
        write_table(&[], &mut out)?;
        assert!(String::from_utf8(out)?.ends_with("(no streams)\n"));
        Ok(())
    }

    #[test]
    fn pages_print_one_header_and_every_row() -> Result<(), Box<dyn std::error::Error>> {
        let named = |id: &str| pb::StreamInfo {
            stream_id: id.into(),
            ..info()
        };
        let mut out = Vec::new();
        let mut table = TableWriter::new(&mut out);
        table.page(&[named("a"), named("b")])?;
        table.page(&[])?;
        table.page(&[named("a-much-longer-stream-id")])?;
        table.finish()?;
        let text = String::from_utf8(out)?;
        let first: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            first,
            ["STREAM", "a", "b", "a-much-longer-stream-id"],
            "{text}"
        );
        let mut out = Vec::new();
        TableWriter::new(&mut out).finish()?;
        let text = String::from_utf8(out)?;
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with("STREAM  "), "{text}");
        assert!(text.ends_with("\n(no streams)\n"), "{text}");
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
            text.contains(
                "\nterminated          false\n\
                 mailbox backlog     4\n\
                 messages handled    57\n\
                 mailbox wait        12ms\n\
                 pending statuses (head first):\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "  22222222-2222-2222-2222-222222222222  RUNNING  terminal=false  \"half way\"\n"
            ),
            "{text}"
        );
        Ok(())
    }
}
