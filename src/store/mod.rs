//! Checkpoint storage: one append-only file per stream, in the Mesos record format.
//!
//! # On-disk format
//!
//! A checkpoint file is a plain concatenation of records. There is no header, magic number or
//! version, so files written by a Mesos agent and by this crate are interchangeable (for the
//! operation and task kinds). Each record is, byte by byte:
//!
//! | bytes | content |
//! |---|---|
//! | 0..4 | `L`, the body length, as a little-endian `u32` (Mesos copies the host-order integer, which is little-endian on x86-64 and aarch64; this crate always writes little-endian) |
//! | 4..4+L | the body: one protobuf (proto2 wire format) record, whose message depends on the kind |
//!
//! The next record starts right after the body; the file ends after the last body. For
//! example, an operation-kind ACK record for status uuid `S` takes 26 bytes:
//!
//! ```text
//! 16 00 00 00                  L = 22
//! 08 01                        field 1 (type) = ACK (proto2: always written, also when 0)
//! 1a 12 0a 10 <S: 16 bytes>    field 3 (uuid) = UUID { value: S }
//! ```
//!
//! The body message is `mesos.internal.UpdateOperationStatusRecord` for the operation kind,
//! `mesos.internal.StatusUpdateRecord` for the task kind, and for the native (service) kind the
//! crate's own `NativeRecord` followed by a 4-byte little-endian CRC32C of it, so that a flipped
//! bit in a native file is corruption, not data. This module only moves frames; the kinds encode
//! and decode bodies (and check proto2 required fields, which prost does not).
//!
//! # Recovery rules
//!
//! A whole file is read into memory (the buffer is sized from the file length, so a corrupt
//! length can never make us allocate more than the file holds) and walked with
//! [`FrameReader`]. Reading stops at the first position that is not a complete, decodable
//! record, and the file is truncated to the end of the last good record:
//!
//! * **End** — no bytes left: a clean end.
//! * **Partial** — 1 to 3 bytes of a length prefix, or a declared length larger than the bytes
//!   left (including absurd ones such as `0xFFFF_FFFF`). This is a torn tail, the normal trace of
//!   a crash during an append: it is truncated **silently** and counts as a clean end.
//! * **Corrupt** — a zero-length record ([`Next::ZeroLength`]) or a body the kind fails to
//!   decode. The file is truncated at the corrupt record's start and the corruption is
//!   **reported**: strict recovery fails, non-strict recovery counts one error and keeps the
//!   records before it. Everything after a corrupt record is lost, as in Mesos.
//!
//! Which stream outcomes follow (missing file, missing directory, empty file, terminated
//! stream, ...) is decided by the stream layer; see the recovery table in
//! `spec/mesos-reference.md` §2.8.
//!
//! # Durability
//!
//! This is the one place that says how a record becomes durable; the other modules say only
//! their part.
//!
//! ```text
//!  stream actor (actix arbiter)                committer thread               disk
//!  ────────────────────────────                ────────────────               ────
//!  Update/Ack ─► encode, StreamLog::stage ─┐
//!               hold reply/forward/end     │  (once the mailbox is drained)
//!               in its Gate                ├─► Ticket ─► round: every ticket that came
//!                                          │             meanwhile
//!                                          │             1. write each stream's frames ─► stream files
//!                                          │             2. sync, by policy:
//!                                          │                none:   nothing
//!                                          │                always: fdatasync each file ─► stream files
//!                                          │                batch:  one file: fdatasync it
//!                                          │                        many: append them to the
//!                                          │                        commit journal, fdatasync it ─► journal
//!                                          │                        (no journal: syncfs)
//!  Durable ◄───────────────────────────────┴─── 3. call each ticket back, on the
//!                                                 arbiter that submitted it: one
//!                                                 hand-off per round and arbiter
//!                                                 (`none`: one per 256 written)
//!  run what the Gate held (answer, forward, end), or on an error answer it with the error
//!  and restart the stream from its file
//! ```
//!
//! **Checkpoint before effect.** A stream never writes or syncs on the actors' thread: it
//! stages each record's frame ([`StreamLog::stage`], at the log's known end offset) and holds
//! every effect of it (the reply, a forward, the end of the stream) in its gate. Once its
//! mailbox is drained it hands the staged frames to the [`Committer`] in a [`Ticket`]. The
//! committer takes every ticket that arrived while it was busy as one **round**, writes each
//! stream's frames with one positioned write, makes the round durable with the cheapest call
//! that covers all of it, and calls each ticket back (`none` tickets as they are written, a few
//! hundred at a time: [`commit::NONE_ANSWERS_PER_HAND_OFF`]); only then does the stream run
//! what it held. A failed write or sync fails every ticket the round covered: each of those streams
//! answers its held requests with the error and restarts from its file. One round per stream
//! is in flight at a time, so its frames land in order.
//!
//! **Why this path.** A sync on the actors' thread would stall every stream for its length;
//! on the committer thread the next round fills meanwhile, so one sync is shared by every
//! record that arrived during the last one. A `syncfs` (or an `fdatasync` per file) writes back
//! one scattered page per file, at the disk's random-write rate; the journal is one
//! sequential write, replayed into the stream files when the committer starts (so the stream
//! files stay the format) and emptied by a checkpoint (one `syncfs`) every
//! [`journal::CHECKPOINT_BYTES`]; see [`journal`]. The figures behind this path, and
//! behind each of its choices, are in BENCHMARKS.md ("Figures behind design choices", first
//! "The durability path").
//!
//! | policy | answered after | a crash can lose |
//! |---|---|---|
//! | `none` | its `write` in the round returned (page cache) | on power loss, whatever the OS had not flushed; nothing on a process crash |
//! | `always` | an `fdatasync` of that file, in the round, returned | nothing |
//! | `batch` | the round's sync that covers the write returned; one sync is shared by many writes | nothing: the same guarantee as `always` |
//!
//! **Who runs the rounds.** A [`Committer`] thread, for the service and, by default, for a
//! library manager too ([`crate::ManagerConfig::committer`]), so an agent's arbiter never
//! writes or syncs. The round's callbacks go back to each submitting arbiter in one message
//! ([`commit::Home`]), where each tells its stream: the arbiter is woken once per round, not
//! once per stream. [`Committer::inline`] runs the same rounds as a task on the arbiter, after
//! the actors that are ready: deterministic under paused tokio time, for tests.
//!
//! **New files.** A new stream's file is created by the committer's file work
//! ([`commit::run_jobs`]): files created together share one sync of their directory (under
//! `always` and `batch`, and of the parents of directories it had to create: `dirs`), so the
//! file itself survives power loss, which Mesos does not guarantee. The stream handles no
//! message until its file exists. Removing a file does not sync its directory: a removed file
//! that reappears after a power loss only holds records that were already answered.
//!
//! # Layout
//!
//! [`layout`] maps stream ids to file paths: operation streams use the Mesos layout
//! (`<root>/<operation uuid>/operation.updates`); native stream ids are arbitrary strings,
//! percent-encoded so that their path can never escape the data directory. One process at a
//! time serves a data directory: `serve` holds [`lock`]'s lock on it (`<data_dir>/serve.lock`).

pub mod commit;
mod dirs;
pub mod faults;
pub mod files;
pub mod framing;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod log;
pub mod sys;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use commit::{
    run_jobs, CommitResult, Committer, Completion, DirSyncs, Job, Stopped, Ticket, TicketSync,
};
pub use faults::{Fault, FaultPlan};
pub use files::FileCache;
pub use framing::{encode_frame, FrameReader, FrameTooLarge, Next, LENGTH_PREFIX_BYTES};
pub use journal::{Journal, Replayed, JOURNAL_FILE};
pub use layout::{
    discover_native_streams, native_stream_id, native_stream_path, operation_stream_path,
    LayoutError, NameProblem,
};
pub use lock::{DataDirLock, LockError, LOCK_FILE};
pub use log::{remove_file, NewLog, Opened, Staged, StagedWrite, StreamLog, Wrote};

/// When an append counts as durable; see the module documentation for the guarantees.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Never sync: an append is done when `write` returned.
    None,
    /// `fdatasync` the file after every append.
    Always,
    /// Group commit: appends mark the file dirty, one later sync covers many of them.
    #[default]
    Batch,
}

impl SyncPolicy {
    /// Every policy, in the order they are listed in messages.
    pub const ALL: [SyncPolicy; 3] = [SyncPolicy::None, SyncPolicy::Always, SyncPolicy::Batch];

    /// Whether this policy syncs data (and new directory entries) at all: false only for `none`.
    pub fn syncs(&self) -> bool {
        !matches!(self, SyncPolicy::None)
    }

    /// The lowercase name used in configuration files and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncPolicy::None => "none",
            SyncPolicy::Always => "always",
            SyncPolicy::Batch => "batch",
        }
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`SyncPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sync policy '{value}' (expected one of: none, always, batch)")]
pub struct ParseSyncPolicyError {
    /// The rejected input.
    pub value: String,
}

impl FromStr for SyncPolicy {
    type Err = ParseSyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SyncPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParseSyncPolicyError {
                value: s.to_owned(),
            })
    }
}

/// A checkpoint file operation that failed. Every variant names the file (or directory) and
/// what was being done to it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file recovery could not use could not be moved (or its cut bytes
    /// copied) into the quarantine; nothing was deleted.
    #[error("cannot quarantine into '{path}': {source}")]
    Quarantine {
        /// The quarantine path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Creating a new checkpoint file failed.
    #[error("failed to create checkpoint file '{}': {source}", .path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A new stream's checkpoint file is already there (Mesos's U1 rule).
    #[error("checkpoint file '{}' already exists", .path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// Opening an existing checkpoint file failed (also when its directory is missing).
    #[error("failed to open checkpoint file '{}': {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a record failed; the file was cut back to its previous length if possible.
    #[error("failed to write to checkpoint file '{}': {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Syncing a checkpoint file's data failed.
    #[error("failed to sync checkpoint file '{}': {source}", .path.display())]
    Sync {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Syncing a directory (after creating an entry in it) failed.
    #[error("failed to sync checkpoint directory '{}': {source}", .path.display())]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading a checkpoint file (or its length) failed.
    #[error("failed to read checkpoint file '{}': {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Truncating a checkpoint file failed.
    #[error("failed to truncate checkpoint file '{}': {source}", .path.display())]
    Truncate {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A truncation was asked to grow the file, which would append zero bytes (corruption).
    #[error(
        "refusing to truncate checkpoint file '{}' to {len} bytes: it is only {current} bytes long",
        .path.display()
    )]
    TruncateBeyondEnd {
        /// The file.
        path: PathBuf,
        /// The requested length.
        len: u64,
        /// The current length.
        current: u64,
    },
    /// Removing a checkpoint file failed.
    #[error("failed to remove checkpoint file '{}': {source}", .path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Creating the directories of a checkpoint file failed.
    #[error("failed to create checkpoint directory '{}': {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The commit journal (or a stream file it replays into) could not be read, written or
    /// synced.
    #[error("commit journal: failed to {action} '{}': {source}", .path.display())]
    Journal {
        /// The journal, or the stream file being replayed into.
        path: PathBuf,
        /// What failed (`"write"`, `"sync"`, `"replay into"`, …).
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A record does not fit the format's 32-bit length prefix (or the file's 64-bit length).
    #[error("record of {len} bytes is too large for checkpoint file '{}'", .path.display())]
    RecordTooLarge {
        /// The file.
        path: PathBuf,
        /// Length of the rejected record, in bytes.
        len: usize,
    },
}

impl StoreError {
    /// The file or directory the failed operation was about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Create { path, .. }
            | StoreError::AlreadyExists { path }
            | StoreError::Open { path, .. }
            | StoreError::Write { path, .. }
            | StoreError::Sync { path, .. }
            | StoreError::SyncDir { path, .. }
            | StoreError::Read { path, .. }
            | StoreError::Truncate { path, .. }
            | StoreError::TruncateBeyondEnd { path, .. }
            | StoreError::Remove { path, .. }
            | StoreError::CreateDir { path, .. }
            | StoreError::Journal { path, .. }
            | StoreError::Quarantine { path, .. }
            | StoreError::RecordTooLarge { path, .. } => path,
        }
    }

    /// The underlying OS error, if the failure came from one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StoreError::Create { source, .. }
            | StoreError::Open { source, .. }
            | StoreError::Write { source, .. }
            | StoreError::Sync { source, .. }
            | StoreError::SyncDir { source, .. }
            | StoreError::Read { source, .. }
            | StoreError::Truncate { source, .. }
            | StoreError::Remove { source, .. }
            | StoreError::CreateDir { source, .. }
            | StoreError::Journal { source, .. }
            | StoreError::Quarantine { source, .. } => Some(source),
            StoreError::AlreadyExists { .. }
            | StoreError::TruncateBeyondEnd { .. }
            | StoreError::RecordTooLarge { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policy_parses_and_displays() {
        let cases = [
            ("none", SyncPolicy::None, false),
            ("always", SyncPolicy::Always, true),
            ("batch", SyncPolicy::Batch, true),
        ];
        for (text, policy, syncs) in cases {
            assert_eq!(text.parse::<SyncPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), text);
            assert_eq!(policy.syncs(), syncs, "{text}");
        }
        assert_eq!(SyncPolicy::default(), SyncPolicy::Batch);
    }

    #[test]
    fn sync_policy_rejects_unknown_names_listing_the_allowed_ones() {
        for bad in ["", "Batch", "ALWAYS", "fsync", " none"] {
            let err = bad.parse::<SyncPolicy>().err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                msg.contains("none, always, batch") && msg.contains(&format!("'{bad}'")),
                "{bad:?}: {msg}"
            );
        }
    }

    #[test]
    fn sync_policy_serde_is_lowercase() {
        for policy in SyncPolicy::ALL {
            let json = serde_json::to_string(&policy).unwrap_or_default();
            assert_eq!(json, format!("\"{policy}\""));
            let back: Result<SyncPolicy, _> = serde_json::from_str(&json);
            assert_eq!(back.ok(), Some(policy));
        }
    }

    #[test]
    fn store_errors_name_path_and_operation() {
        let path = PathBuf::from("/data/streams/a.updates");
        let io = || io::Error::other("boom");
        let cases = [
            (
                StoreError::Create {
                    path: path.clone(),
                    source: io(),
                },
                "failed to create",
            ),
            (
                StoreError::AlreadyExists { path: path.clone() },
                "already exists",
            ),
            (
                StoreError::Write {
                    path: path.clone(),
                    source: io(),
                },
                "failed to write",
            ),
            (
                StoreError::Sync {
                    path: path.clone(),
                    source: io(),
                },
                "failed to sync",
            ),
            (
                StoreError::RecordTooLarge {
                    path: path.clone(),
                    len: 7,
                },
                "too large",
            ),
        ];
        for (err, op) in cases {
            let msg = err.to_string();
            assert!(
                msg.contains(op) && msg.contains("'/data/streams/a.updates'"),
                "{msg}"
            );
            assert_eq!(err.path(), path.as_path());
        }
    }
}
