//! Offline inspection of checkpoint files: what recovery would find in them, without
//! touching them (the `inspect` command, API.md §2).
//!
//! A file is read with [`std::fs::read`] and nothing else: it is never opened for writing,
//! truncated or removed, so inspecting a live data directory is safe. Its bytes go through
//! the same [`replay`] that recovery uses, and the result is a [`StreamReport`], whose JSON
//! form is the API's:
//!
//! | field | meaning |
//! |---|---|
//! | `outcome` | what non-strict recovery would conclude: `ok`; `empty` (no valid UPDATE record: the file would be removed); `missing` (no such file); `error` (an ACK record with nothing pending, or the file cannot be read) |
//! | `error` | only for `outcome = error`: why |
//! | `valid_bytes`, `file_bytes` | the valid prefix and the whole file; recovery truncates to `valid_bytes` |
//! | `tail` | `clean`, `partial` (a torn record: truncated silently) or `corrupt` (strict recovery fails) |
//! | `updates` | every UPDATE record of the valid prefix, in file order, with its status uuid, state name and whether it was acknowledged |
//!
//! For an ACK record with nothing pending, recovery leaves the file as it is and fails; the
//! report then describes the records before that ACK record, with `tail = corrupt` and
//! `valid_bytes` at the ACK record's start.
//!
//! # Which kind a file is
//!
//! The kind given by the caller (`--kind`) always wins. Otherwise [`detect_kind`] decides:
//!
//! 1. a file named `operation.updates` is of the operation kind, one named `task.updates` of
//!    the task kind (Mesos's file names);
//! 2. otherwise the first kind, in the order native, operation, task, whose
//!    [`UpdateKind::decode_record`] accepts the file's first record;
//! 3. otherwise (empty, missing or unreadable file, first record torn or corrupt for every
//!    kind) the native kind, the service's own.
//!
//! # Which files a directory holds
//!
//! A directory argument is a data directory ([`expand`]):
//!
//! - native kind: the stream files [`discover_native_streams`] finds under `<dir>/streams`;
//! - operation kind: every file below `<dir>`, at any depth, named `operation.updates` (the
//!   Mesos agent's `…/operations/<uuid>/operation.updates`) or named by a canonical lowercase
//!   uuid (the `<root>/<uuid>` layout of Mesos's unit tests);
//! - task kind: every file below `<dir>`, at any depth, named `task.updates` (the Mesos
//!   agent's `…/tasks/<task id>/task.updates`);
//! - no kind given: all three, each file once (a native stream file wins).
//!
//! Symbolic links inside a directory are not followed.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ReplayError;
use crate::kind::{status_uuid, Native, Operation, Task, TaskStreamId, UpdateKind};
use crate::store::framing::{FrameReader, Next};
use crate::store::layout::{discover_native_streams, LayoutError, OPERATION_FILE};
use crate::stream::replay::{decode_update, replay, Replayed, Tail};

/// File name of a Mesos task stream (`…/tasks/<task id>/task.updates`).
pub const TASK_FILE: &str = "task.updates";

/// The kind of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InspectKind {
    /// The service's own records ([`Native`]).
    Native,
    /// Mesos's `UpdateOperationStatusRecord` ([`Operation`]).
    Operation,
    /// Mesos's `StatusUpdateRecord` ([`Task`]).
    Task,
}

impl InspectKind {
    /// Every kind, in the order [`detect_kind`] tries them.
    pub const ALL: [InspectKind; 3] = [
        InspectKind::Native,
        InspectKind::Operation,
        InspectKind::Task,
    ];

    /// The kind's name: `native`, `operation` or `task` ([`UpdateKind::KIND`]).
    pub fn as_str(self) -> &'static str {
        match self {
            InspectKind::Native => Native::KIND,
            InspectKind::Operation => Operation::KIND,
            InspectKind::Task => Task::KIND,
        }
    }

    /// Whether `body` (one record, without its length prefix) decodes as this kind.
    pub fn decodes(self, body: &[u8]) -> bool {
        match self {
            InspectKind::Native => Native::decode_record(body).is_ok(),
            InspectKind::Operation => Operation::decode_record(body).is_ok(),
            InspectKind::Task => Task::decode_record(body).is_ok(),
        }
    }
}

impl fmt::Display for InspectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`InspectKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind '{value}' (expected one of: native, operation, task)")]
pub struct ParseKindError {
    /// The rejected input.
    pub value: String,
}

impl FromStr for InspectKind {
    type Err = ParseKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InspectKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseKindError {
                value: s.to_owned(),
            })
    }
}

/// What non-strict recovery would conclude about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A stream with at least one update.
    Ok,
    /// No valid UPDATE record: recovery returns nothing and removes the file.
    Empty,
    /// No such file: recovery returns nothing.
    Missing,
    /// Recovery fails for this stream (see [`StreamReport::error`]).
    Error,
}

impl Outcome {
    /// The name `inspect` prints: `ok`, `empty`, `missing` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Empty => "empty",
            Outcome::Missing => "missing",
            Outcome::Error => "error",
        }
    }
}

/// How a file's valid prefix ends ([`Tail`] without its details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TailState {
    /// At the end of the file.
    Clean,
    /// At a torn record, which any recovery truncates silently.
    Partial,
    /// At a corrupt record, which strict recovery rejects.
    Corrupt,
}

impl TailState {
    /// The name `inspect` prints: `clean`, `partial` or `corrupt`.
    pub fn as_str(self) -> &'static str {
        match self {
            TailState::Clean => "clean",
            TailState::Partial => "partial",
            TailState::Corrupt => "corrupt",
        }
    }
}

/// One UPDATE record of a file. (40 bytes: smaller than any record, so a report of a large
/// file never needs an allocation larger than the file.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    /// The status uuid; serialized hyphenated (8-4-4-4-12).
    #[serde(serialize_with = "hyphenated")]
    pub uuid: Uuid,
    /// The state: the enum name for the Mesos kinds, the state string for the native kind.
    pub state: Box<str>,
    /// Whether an ACK record of the valid prefix acknowledged it.
    pub acknowledged: bool,
}

/// What one file holds; serializes to one entry of `inspect --json`'s `streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// The file, as given or found.
    pub path: String,
    /// The kind its records were decoded as.
    pub kind: InspectKind,
    /// What non-strict recovery would conclude.
    pub outcome: Outcome,
    /// Why recovery would fail; set only when `outcome` is [`Outcome::Error`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Length of the valid prefix, which recovery truncates the file to.
    pub valid_bytes: u64,
    /// Length of the file.
    pub file_bytes: u64,
    /// How the valid prefix ends.
    pub tail: TailState,
    /// Where and why the corrupt record fails to decode (`tail = corrupt` only). Not part of
    /// the JSON output; the table shows it.
    #[serde(skip)]
    pub corrupt: Option<String>,
    /// The stream's framework, if an update names one.
    pub framework_id: Option<String>,
    /// Whether a terminal update was acknowledged.
    pub terminated: bool,
    /// Every UPDATE record of the valid prefix, in file order.
    pub updates: Vec<UpdateReport>,
    /// Updates not acknowledged (nor dropped by a terminal acknowledgement).
    pub pending: usize,
}

impl StreamReport {
    fn blank(path: &Path, kind: InspectKind, outcome: Outcome) -> Self {
        StreamReport {
            path: path.display().to_string(),
            kind,
            outcome,
            error: None,
            valid_bytes: 0,
            file_bytes: 0,
            tail: TailState::Clean,
            corrupt: None,
            framework_id: None,
            terminated: false,
            updates: Vec::new(),
            pending: 0,
        }
    }
}

/// The output of `inspect --json`: one entry per stream file, and one per commit journal
/// given by its path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The streams, in the order their paths were given (a directory's in the order of
    /// [`expand`]).
    pub streams: Vec<StreamReport>,
    /// The commit journals given (`commit.journal`, `commit.journal.old`): summarized, not
    /// decoded as stream files. Absent from the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journals: Vec<JournalReport>,
}

impl Report {
    /// The paths that would not recover cleanly: a stream file whose outcome is `missing`
    /// or `error`, or whose tail is corrupt. Empty means every file given is clean.
    pub fn unclean(&self) -> Vec<&str> {
        self.streams
            .iter()
            .filter(|s| {
                matches!(s.outcome, Outcome::Missing | Outcome::Error)
                    || s.tail == TailState::Corrupt
            })
            .map(|s| s.path.as_str())
            .collect()
    }

    /// Whether the paths named nothing to inspect.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.journals.is_empty()
    }
}

/// A commit journal (`store::journal`), as replay would read it at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalReport {
    /// The path as given.
    pub path: String,
    /// Its size.
    pub file_bytes: u64,
    /// Complete entries (runs of records a round wrote into one stream file).
    pub entries: usize,
    /// Bytes of records the entries carry.
    pub record_bytes: u64,
    /// Bytes after the last complete entry (a round torn by a crash; replay ignores them).
    pub torn_bytes: u64,
    /// The stream files the entries name, relative to the journal's directory.
    pub files: Vec<String>,
}

/// Whether `path` names a commit journal, current or rotated.
fn is_journal(path: &Path) -> bool {
    let journal = crate::store::JOURNAL_FILE;
    path.file_name().is_some_and(|name| {
        name == journal || crate::store::journal::old_journal_path(Path::new(journal)) == name
    })
}

/// Summarizes the journal at `path`; `None` if it cannot be read (then it is reported as a
/// missing or unreadable file, as any other path).
fn inspect_journal(path: &Path) -> Option<JournalReport> {
    let contents = fs::read(path).ok()?;
    let summary = crate::store::journal::summarize(&contents);
    Some(JournalReport {
        path: path.display().to_string(),
        file_bytes: u64::try_from(contents.len()).unwrap_or(u64::MAX),
        entries: summary.entries,
        record_bytes: summary.record_bytes,
        torn_bytes: summary.torn_bytes,
        files: summary
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
    })
}

/// Why paths could not be expanded into stream files.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Listing the native stream files of a data directory failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Listing a directory failed.
    #[error("failed to list directory '{}': {source}", .path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Inspects every stream file `paths` name: a file is one stream (of `kind`, or of the kind
/// [`detect_kind`] finds), a directory holds the streams [`expand`] finds.
pub fn inspect_paths(paths: &[PathBuf], kind: Option<InspectKind>) -> Result<Report, InspectError> {
    let mut report = Report::default();
    for path in paths {
        if is_journal(path) {
            if let Some(journal) = inspect_journal(path) {
                report.journals.push(journal);
                continue;
            }
        }
        for (file, file_kind) in expand(path, kind)? {
            report.streams.push(inspect_file(&file, file_kind));
        }
    }
    Ok(report)
}

/// The stream files `path` names, each with its kind if known: `path` itself (with `kind`)
/// unless it is a directory; for a directory, the files of the module doc's rules.
///
/// A path that does not exist is returned as it is, so that it is reported as missing.
pub fn expand(
    path: &Path,
    kind: Option<InspectKind>,
) -> Result<Vec<(PathBuf, Option<InspectKind>)>, InspectError> {
    if !fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Ok(vec![(path.to_path_buf(), kind)]);
    }
    let mut found = Vec::new();
    let mut native = HashSet::new();
    if matches!(kind, None | Some(InspectKind::Native)) {
        for (_, file) in discover_native_streams(path)? {
            native.insert(file.clone());
            found.push((file, Some(InspectKind::Native)));
        }
    }
    if kind == Some(InspectKind::Native) {
        return Ok(found);
    }
    let mut mesos = mesos_files(path)?;
    mesos.retain(|(file, k)| kind.is_none_or(|want| want == *k) && !native.contains(file));
    found.extend(mesos.into_iter().map(|(file, k)| (file, Some(k))));
    Ok(found)
}

/// Every file below `dir` that the Mesos layouts name (see the module doc), sorted by kind
/// then path. Does not follow symbolic links.
fn mesos_files(dir: &Path) -> Result<Vec<(PathBuf, InspectKind)>, InspectError> {
    let mut found = Vec::new();
    // An explicit stack: a deep tree cannot exhaust the call stack.
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let read_err = |source| InspectError::ReadDir {
            path: dir.clone(),
            source,
        };
        for entry in fs::read_dir(&dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let file_type = entry.file_type().map_err(read_err)?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                if let Some(kind) = mesos_kind_of_name(&entry.file_name().to_string_lossy()) {
                    found.push((entry.path(), kind));
                }
            }
        }
    }
    found.sort_by(|(pa, ka), (pb, kb)| (*ka as u8, pa).cmp(&(*kb as u8, pb)));
    Ok(found)
}

/// The Mesos kind a file name implies inside a data directory.
fn mesos_kind_of_name(name: &str) -> Option<InspectKind> {
    if name == OPERATION_FILE {
        Some(InspectKind::Operation)
    } else if name == TASK_FILE {
        Some(InspectKind::Task)
    } else if Uuid::try_parse(name).is_ok_and(|u| u.hyphenated().to_string() == name) {
        Some(InspectKind::Operation)
    } else {
        None
    }
}

/// The kind of the file at `path` with these contents; see the module doc for the rules.
pub fn detect_kind(path: &Path, contents: &[u8]) -> InspectKind {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(OPERATION_FILE) => return InspectKind::Operation,
        Some(TASK_FILE) => return InspectKind::Task,
        _ => {}
    }
    match FrameReader::new(contents).next_frame() {
        Next::Record { body, .. } => InspectKind::ALL
            .into_iter()
            .find(|kind| kind.decodes(body))
            .unwrap_or(InspectKind::Native),
        Next::End | Next::Partial { .. } | Next::ZeroLength { .. } => InspectKind::Native,
    }
}

/// Inspects one file, read once with [`std::fs::read`] and never modified. `kind: None`
/// detects it ([`detect_kind`]).
pub fn inspect_file(path: &Path, kind: Option<InspectKind>) -> StreamReport {
    match fs::read(path) {
        Ok(contents) => {
            let kind = kind.unwrap_or_else(|| detect_kind(path, &contents));
            inspect_bytes(path, kind, &contents)
        }
        Err(err) => {
            let kind = kind.unwrap_or_else(|| detect_kind(path, &[]));
            if err.kind() == io::ErrorKind::NotFound {
                StreamReport::blank(path, kind, Outcome::Missing)
            } else {
                let mut report = StreamReport::blank(path, kind, Outcome::Error);
                report.error = Some(format!(
                    "failed to read checkpoint file '{}': {err}",
                    path.display()
                ));
                report
            }
        }
    }
}

/// Inspects the `contents` of the file at `path` as records of `kind`. No I/O.
pub fn inspect_bytes(path: &Path, kind: InspectKind, contents: &[u8]) -> StreamReport {
    // Replay needs a stream id; it only appears in messages, which name the path anyway.
    match kind {
        InspectKind::Native => inspect_as::<Native>(path, kind, String::new(), contents),
        InspectKind::Operation => inspect_as::<Operation>(path, kind, Uuid::nil(), contents),
        InspectKind::Task => {
            let id = TaskStreamId {
                framework_id: String::new(),
                task_id: String::new(),
            };
            inspect_as::<Task>(path, kind, id, contents)
        }
    }
}

fn inspect_as<K: UpdateKind>(
    path: &Path,
    kind: InspectKind,
    id: K::StreamId,
    contents: &[u8],
) -> StreamReport {
    let now = Instant::now();
    let file_bytes = contents.len() as u64;
    match replay::<K>(id.clone(), path, contents, now) {
        Ok(replayed) => report_of(path, kind, &replayed, contents),
        Err(err) => {
            // Describe what comes before the ACK record recovery stops at.
            let prefix = match &err {
                ReplayError::AckWithNothingPending { offset, .. } => usize::try_from(*offset)
                    .ok()
                    .and_then(|end| contents.get(..end))
                    .and_then(|prefix| replay::<K>(id, path, prefix, now).ok()),
                ReplayError::Store(_) | ReplayError::Corrupt { .. } => None,
            };
            let mut report = match prefix {
                Some(replayed) => report_of(path, kind, &replayed, contents),
                None => StreamReport::blank(path, kind, Outcome::Error),
            };
            report.outcome = Outcome::Error;
            report.error = Some(err.to_string());
            report.tail = TailState::Corrupt;
            report.file_bytes = file_bytes;
            report
        }
    }
}

fn report_of<K: UpdateKind>(
    path: &Path,
    kind: InspectKind,
    replayed: &Replayed<K>,
    contents: &[u8],
) -> StreamReport {
    let state = &replayed.state;
    // Sized once: one report per record, so the list never outgrows the file.
    let mut updates = Vec::with_capacity(replayed.updates.len());
    updates.extend(
        replayed
            .updates
            .iter()
            .filter_map(|span| decode_update::<K>(contents, span))
            .map(|update| {
                // Replay only keeps updates whose status uuid is valid.
                let uuid = status_uuid::<K>(&update).ok();
                UpdateReport {
                    // Replay only lists updates whose uuid decoded; nil never does.
                    uuid: uuid.unwrap_or_default(),
                    state: K::state_name(&update).into_boxed_str(),
                    acknowledged: uuid.is_some_and(|u| state.is_acknowledged(u)),
                }
            }),
    );
    let (tail, corrupt) = match &replayed.tail {
        Tail::Clean => (TailState::Clean, None),
        Tail::Partial => (TailState::Partial, None),
        Tail::Corrupt { offset, reason } => (
            TailState::Corrupt,
            Some(format!("corrupt record at byte {offset}: {reason}")),
        ),
    };
    StreamReport {
        path: path.display().to_string(),
        kind,
        outcome: if updates.is_empty() {
            Outcome::Empty
        } else {
            Outcome::Ok
        },
        error: None,
        valid_bytes: replayed.valid_bytes,
        file_bytes: replayed.file_bytes,
        tail,
        corrupt,
        framework_id: state.framework_id().map(str::to_string),
        terminated: state.terminated(),
        updates,
        pending: state.pending().len(),
    }
}

fn hyphenated<S: serde::Serializer>(uuid: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&uuid.hyphenated())
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
