//! `status-update-manager inspect PATH... [--kind native|operation|task] [--json]`: decodes
//! checkpoint files offline and prints what recovery would find in each, as one JSON document
//! (`--json`, API.md §2) or as a table. The work is [`crate::inspect`]'s; this file parses
//! the arguments and renders the report. Files are never modified, and a data directory that
//! a `serve` holds is not locked, only named on stderr (its files change as they are read).
//!
//! The exit status tells whether recovery would go cleanly: 0 only when every file given
//! would recover cleanly; 1 when any stream file is missing, corrupt or fails (`outcome`
//! `missing` or `error`, or a corrupt tail), when the paths named nothing to inspect, or when
//! a directory cannot be listed or the output cannot be written. The report is printed
//! either way. A commit journal given by its path (`commit.journal`, `commit.journal.old`) is
//! summarized (entries, bytes, the stream files it names), not decoded as a stream file.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::inspect::{inspect_paths, InspectKind, Report, StreamReport};

/// Arguments of `inspect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every file given would recover cleanly; 1 when any \
    is missing, corrupt or fails recovery, when there was nothing to inspect, or on an error."
)]
pub struct InspectArgs {
    /// Checkpoint files, or data directories whose stream files are inspected.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Decode every file as this kind; by default a file's name or its first record decides.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Print one JSON document (`{"streams": [...]}`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The nearest directory at or above `path` for which `holds` is true, looking from the path
/// itself if it is a directory (a data directory, or one inside it), else from its parent (a
/// stream file); resolved first, so that its ancestors are the real ones.
fn nearest_dir(path: &Path, holds: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let start = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
    start
        .ancestors()
        .find(|dir| holds(dir))
        .map(Path::to_path_buf)
}

/// The data directories under `paths` that a `serve` holds right now, with its pid: for each
/// path, the nearest directory at or above it that has a lock file
/// ([`crate::store::lock`]), if its lock is held. Each directory once.
fn served_now(paths: &[PathBuf]) -> BTreeSet<(PathBuf, u32)> {
    paths
        .iter()
        .filter_map(|path| nearest_dir(path, |dir| dir.join(crate::store::LOCK_FILE).is_file()))
        .filter_map(|dir| crate::store::lock::holder(&dir).map(|pid| (dir, pid)))
        .collect()
}

/// The commit journals that hold records for the stream files under `paths`: for each path,
/// the nearest `commit.journal` (or `commit.journal.old`, one rotated for a checkpoint that
/// had not ended) in its own directory (a data directory) or in one of its ancestors (a
/// stream file, or a directory inside a data directory). Each journal once.
fn journals_with_records(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    use crate::store::journal::old_journal_path;
    paths
        .iter()
        .filter_map(|path| {
            nearest_dir(path, |dir| {
                let journal = dir.join(crate::store::JOURNAL_FILE);
                journal.is_file() || old_journal_path(&journal).is_file()
            })
        })
        .map(|dir| dir.join(crate::store::JOURNAL_FILE))
        .flat_map(|journal| [old_journal_path(&journal), journal])
        .filter(|journal| std::fs::metadata(journal).is_ok_and(|meta| meta.len() > 0))
        .collect()
}

/// Says on stderr that `journal` holds records: after a power loss they may be missing from
/// the stream files until `serve` replays them (files are never modified here).
fn warn_of_journal(journal: &Path) {
    let bytes = std::fs::metadata(journal).map_or(0, |meta| meta.len());
    eprintln!(
        "warning: '{}' holds {bytes} bytes of records that a crash may have kept out of the \
         stream files shown here; `serve` on this data directory replays them first",
        journal.display(),
    );
}

/// The values of `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// The service's own stream files.
    Native,
    /// Mesos operation status update files (`operation.updates`).
    Operation,
    /// Mesos task status update files (`task.updates`).
    Task,
}

impl From<KindArg> for InspectKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Native => InspectKind::Native,
            KindArg::Operation => InspectKind::Operation,
            KindArg::Task => InspectKind::Task,
        }
    }
}

impl InspectArgs {
    /// Inspects the paths and prints the report on stdout.
    pub fn run(self) -> anyhow::Result<()> {
        for (dir, pid) in served_now(&self.paths) {
            eprintln!(
                "warning: '{}' is being served right now (pid {pid}): its files change while \
                 they are read, and a record being written may show as a partial tail",
                dir.display(),
            );
        }
        for journal in journals_with_records(&self.paths) {
            warn_of_journal(&journal);
        }
        let report = inspect_paths(&self.paths, self.kind.map(InspectKind::from))?;
        let mut out = io::stdout().lock();
        let written = if self.json {
            write_json(&report, &mut out)
        } else {
            write_table(&report, &mut out)
        };
        match written.and_then(|()| out.flush()) {
            // The reader went away (`inspect … | head`): nothing left to tell it.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
            other => other.context("failed to write the report to stdout")?,
        }
        if report.is_empty() {
            anyhow::bail!("nothing to inspect: no stream files found under the paths given");
        }
        let unclean = report.unclean();
        if !unclean.is_empty() {
            anyhow::bail!(
                "{} of {} stream files would not recover cleanly: {}",
                unclean.len(),
                report.streams.len(),
                unclean.join(", ")
            );
        }
        Ok(())
    }
}

/// Writes `report` as one JSON document and a newline.
pub fn write_json(report: &Report, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// Writes `report` as a table: one row per stream, its updates indented below it.
pub fn write_table(report: &Report, out: &mut impl Write) -> io::Result<()> {
    let path_width = report
        .streams
        .iter()
        .map(|s| s.path.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    writeln!(
        out,
        "{:<path_width$}  {:<9}  {:<7}  {:<7}  {:>15}  {:>7}  TERMINATED",
        "PATH", "KIND", "OUTCOME", "TAIL", "VALID/FILE", "PENDING"
    )?;
    for stream in &report.streams {
        write_row(stream, path_width, out)?;
    }
    if report.streams.is_empty() {
        writeln!(out, "(no stream files found)")?;
    }
    for journal in &report.journals {
        writeln!(
            out,
            "commit journal {}: {} entries, {} record bytes in {} bytes{}",
            journal.path,
            journal.entries,
            journal.record_bytes,
            journal.file_bytes,
            if journal.torn_bytes > 0 {
                format!(
                    " ({} torn bytes at its end, ignored by replay)",
                    journal.torn_bytes
                )
            } else {
                String::new()
            },
        )?;
        for file in &journal.files {
            writeln!(out, "    {file}")?;
        }
    }
    Ok(())
}

fn write_row(stream: &StreamReport, path_width: usize, out: &mut impl Write) -> io::Result<()> {
    let bytes = format!("{}/{}", stream.valid_bytes, stream.file_bytes);
    writeln!(
        out,
        "{:<path_width$}  {:<9}  {:<7}  {:<7}  {:>15}  {:>7}  {}",
        stream.path,
        stream.kind.as_str(),
        stream.outcome.as_str(),
        stream.tail.as_str(),
        bytes,
        stream.pending,
        stream.terminated
    )?;
    if let Some(framework) = &stream.framework_id {
        writeln!(out, "    framework {framework}")?;
    }
    for update in &stream.updates {
        let acked = if update.acknowledged {
            "acknowledged"
        } else {
            "pending"
        };
        writeln!(out, "    {}  {:<12}  {}", update.uuid, acked, update.state)?;
    }
    if let Some(error) = &stream.error {
        writeln!(out, "    error: {error}")?;
    }
    if let Some(corrupt) = &stream.corrupt {
        writeln!(out, "    {corrupt}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{Outcome, TailState, UpdateReport};

    #[test]
    fn a_data_directory_held_by_a_server_is_found_from_a_file_or_a_directory_inside_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let data = tempfile::tempdir()?;
        let streams = data.path().join("streams");
        std::fs::create_dir_all(&streams)?;
        let file = streams.join("a.updates");
        std::fs::write(&file, b"")?;
        let paths = [data.path().to_path_buf(), streams.clone(), file];
        assert!(served_now(&paths).is_empty(), "no lock file");
        let lock = crate::store::DataDirLock::acquire(data.path())?;
        let found = served_now(&paths);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [(data.path().canonicalize()?, std::process::id())],
            "each directory once"
        );
        drop(lock);
        assert!(
            served_now(&paths).is_empty(),
            "a lock file left behind holds nothing"
        );
        Ok(())
    }

    #[test]
    fn table_lists_streams_and_their_updates() -> Result<(), Box<dyn std::error::Error>> {
        let report = Report {
            streams: vec![StreamReport {
                path: "d/op".into(),
                kind: InspectKind::Operation,
                outcome: Outcome::Ok,
                error: None,
                valid_bytes: 52,
                file_bytes: 60,
                tail: TailState::Partial,
                corrupt: None,
                framework_id: Some("fw".into()),
                terminated: false,
                updates: vec![UpdateReport {
                    uuid: uuid::Uuid::from_u128(0x1234_5678_90ab_4def_8000_0000_0000_0001),
                    state: "OPERATION_PENDING".into(),
                    acknowledged: false,
                }],
                pending: 1,
            }],
            journals: Vec::new(),
        };
        let mut out = Vec::new();
        write_table(&report, &mut out)?;
        let text = String::from_utf8(out)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("PATH"), "{text}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            ["d/op", "operation", "ok", "partial", "52/60", "1", "false"]
        );
        assert_eq!(lines[2].trim(), "framework fw");
        assert!(
            lines[3].starts_with("    12345678-90ab-4def-8000-000000000001")
                && lines[3].ends_with("OPERATION_PENDING"),
            "{text}"
        );
        Ok(())
    }
}
