//! Errors of the manager and its streams: every rejection of SEMANTICS.md is
//! its own variant, and every message names the stream, the status uuid and
//! what was expected. A benign duplicate is not an error but an outcome
//! ([`crate::messages::UpdateOutcome::Duplicate`]).
//!
//! Errors of lower layers live with them: [`crate::store::StoreError`],
//! [`crate::kind::InvalidUpdate`], [`crate::kind::RecordError`]; the
//! service's (`service` feature) with it, such as `service::config::ConfigError`.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::kind::{InvalidUpdate, RecordError};
use crate::store::StoreError;

/// Why an `Update` was not accepted. Nothing was written or queued for it.
#[derive(Debug, Clone, Error)]
pub enum UpdateError {
    /// The update itself is malformed (uuid, stream id, state, `latest_status`, ...).
    #[error("rejected update for stream {stream} (status uuid {uuid}): {reason}")]
    Invalid {
        /// The stream, as far as it could be read.
        stream: String,
        /// The status uuid, as far as it could be read.
        uuid: String,
        /// What was wrong.
        reason: InvalidUpdate,
    },
    /// A checkpointed stream not in memory already has a file (Mesos's U1):
    /// recover it first, or remove the file.
    #[error("checkpoint file '{path}' of stream {stream} already exists; expected no file for a stream that is not in memory (recover it first)")]
    FileExists {
        /// The stream.
        stream: String,
        /// Its checkpoint file.
        path: PathBuf,
    },
    /// The update's checkpoint flag differs from the stream's.
    #[error("mismatched checkpoint value for update {uuid} of stream {stream} (expected checkpoint={expected} actual checkpoint={actual})")]
    CheckpointMismatch {
        /// The stream.
        stream: String,
        /// The update's status uuid.
        uuid: String,
        /// The stream's flag.
        expected: bool,
        /// The update's flag.
        actual: bool,
    },
    /// The update's framework id differs from the stream's.
    #[error("mismatched framework id for update {uuid} of stream {stream} (expected {} got {})", fmt_framework(.expected), fmt_framework(.actual))]
    FrameworkMismatch {
        /// The stream.
        stream: String,
        /// The update's status uuid.
        uuid: String,
        /// The stream's framework.
        expected: Option<String>,
        /// The update's framework.
        actual: Option<String>,
    },
    /// The stream is closing: its terminal update was just acknowledged,
    /// its framework was cleaned up, or (for a request sent straight to the
    /// stream) its manager stopped.
    #[error("stream {stream} is closing (its terminal update was acknowledged, its framework was cleaned up, or its manager stopped); update {uuid} was not accepted")]
    StreamClosing {
        /// The stream.
        stream: String,
        /// The update's status uuid.
        uuid: String,
    },
    /// The stream's pending queue is full.
    #[error("stream {stream} already has {limit} pending updates (limits.max_pending_per_stream); update {uuid} was not accepted")]
    QueueFull {
        /// The stream.
        stream: String,
        /// The update's status uuid.
        uuid: String,
        /// The limit.
        limit: usize,
    },
    /// The manager holds as many streams as it may.
    #[error("cannot open stream {stream}: {limit} streams are open (limits.max_streams)")]
    TooManyStreams {
        /// The stream.
        stream: String,
        /// The limit.
        limit: usize,
    },
    /// The stream cannot answer now (restarting after a storage fault, or
    /// the manager is stopping); retrying is safe.
    #[error("stream {stream} is unavailable: {reason}; retry")]
    Unavailable {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// A new stream's checkpoint file could not be created; no stream was
    /// created.
    #[error("cannot create the checkpoint file of stream {stream}: {source}")]
    CreateFailed {
        /// The stream.
        stream: String,
        /// The storage error.
        source: Arc<StoreError>,
    },
    /// The checkpoint could not be written or synced; the update is not
    /// accepted and the stream reloads from its file.
    #[error("failed to checkpoint update {uuid} of stream {stream}: {source}")]
    Storage {
        /// The stream.
        stream: String,
        /// The update's status uuid.
        uuid: String,
        /// The storage error.
        source: Arc<StoreError>,
    },
    /// The stream's actor panicked (a bug) while it held this update; the
    /// stream restarts from its file. The update counts as not accepted:
    /// send it again (if its record had reached the file, it is then a
    /// duplicate).
    #[error("stream {stream} failed while handling update {uuid} (panic: {panic}); it restarts from its file, send the update again")]
    Panicked {
        /// The stream.
        stream: String,
        /// The update's status uuid.
        uuid: String,
        /// The panic's message.
        panic: String,
    },
}

impl UpdateError {
    /// The variant's name in `snake_case` (`queue_full`, `framework_mismatch`, …): the
    /// `kind` field of a rejection's log line, and what its rate limit counts by
    /// ([`crate::logs`]).
    pub fn kind(&self) -> &'static str {
        match self {
            UpdateError::Invalid { .. } => "invalid",
            UpdateError::FileExists { .. } => "file_exists",
            UpdateError::CheckpointMismatch { .. } => "checkpoint_mismatch",
            UpdateError::FrameworkMismatch { .. } => "framework_mismatch",
            UpdateError::StreamClosing { .. } => "stream_closing",
            UpdateError::QueueFull { .. } => "queue_full",
            UpdateError::TooManyStreams { .. } => "too_many_streams",
            UpdateError::Unavailable { .. } => "unavailable",
            UpdateError::CreateFailed { .. } => "create_failed",
            UpdateError::Storage { .. } => "storage",
            UpdateError::Panicked { .. } => "panicked",
        }
    }
}

/// Why an `Acknowledge` failed. Nothing changed.
#[derive(Debug, Clone, Error)]
pub enum AckError {
    /// No such stream in memory (Mesos's A1): never created, cleaned up, or
    /// ended by a terminal ack.
    #[error("cannot find stream {stream} to acknowledge {uuid}")]
    UnknownStream {
        /// The stream.
        stream: String,
        /// The acknowledged uuid.
        uuid: String,
    },
    /// The acknowledged uuid is malformed.
    #[error("rejected acknowledgement for stream {stream}: {reason}")]
    Invalid {
        /// The stream.
        stream: String,
        /// What was wrong.
        reason: InvalidUpdate,
    },
    /// That uuid was already acknowledged: a retried ack whose first reply was lost.
    #[error("duplicate acknowledgement of {uuid} for stream {stream}: already acknowledged")]
    DuplicateAck {
        /// The stream.
        stream: String,
        /// The acknowledged uuid.
        uuid: String,
    },
    /// Nothing is pending on the stream (Mesos's A2).
    #[error("unexpected acknowledgement of {uuid} for stream {stream}: nothing is pending")]
    NothingPending {
        /// The stream.
        stream: String,
        /// The acknowledged uuid.
        uuid: String,
    },
    /// The uuid is not the head's.
    #[error(
        "unexpected acknowledgement for stream {stream}: got {got}, expected the head {expected}"
    )]
    UnexpectedAck {
        /// The stream.
        stream: String,
        /// The head's uuid.
        expected: String,
        /// The acknowledged uuid.
        got: String,
    },
    /// The stream cannot answer now; retrying is safe.
    #[error("stream {stream} is unavailable: {reason}; retry")]
    Unavailable {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// The ACK record could not be written or synced; nothing was acknowledged.
    #[error("failed to checkpoint acknowledgement {uuid} of stream {stream}: {source}")]
    Storage {
        /// The stream.
        stream: String,
        /// The acknowledged uuid.
        uuid: String,
        /// The storage error.
        source: Arc<StoreError>,
    },
    /// The stream's actor panicked (a bug) while it held this ack; the
    /// stream restarts from its file. Send the ack again (if its record
    /// had reached the file, it is then a duplicate ack).
    #[error("stream {stream} failed while handling the acknowledgement of {uuid} (panic: {panic}); it restarts from its file, send the acknowledgement again")]
    Panicked {
        /// The stream.
        stream: String,
        /// The acknowledged uuid.
        uuid: String,
        /// The panic's message.
        panic: String,
    },
}

impl AckError {
    /// The variant's name in `snake_case` (`unknown_stream`, `duplicate_ack`, …), as
    /// [`UpdateError::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            AckError::UnknownStream { .. } => "unknown_stream",
            AckError::Invalid { .. } => "invalid",
            AckError::DuplicateAck { .. } => "duplicate_ack",
            AckError::NothingPending { .. } => "nothing_pending",
            AckError::UnexpectedAck { .. } => "unexpected_ack",
            AckError::Unavailable { .. } => "unavailable",
            AckError::Storage { .. } => "storage",
            AckError::Panicked { .. } => "panicked",
        }
    }
}

/// A stream's actor panicked (a bug) while it reported its figures; it
/// restarts from its file.
#[derive(Debug, Clone, Error)]
#[error("stream {stream} failed while reporting its figures (panic: {panic}); it restarts from its file")]
pub struct StatsError {
    /// The stream.
    pub stream: String,
    /// The panic's message.
    pub panic: String,
}

/// Why one stream's file could not be recovered.
#[derive(Debug, Clone, Error)]
pub enum ReplayError {
    /// The file could not be opened, read, truncated or removed.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// A record is corrupt; the file was truncated at its start.
    #[error("corrupt record at byte {offset} of '{path}': {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the corrupt record starts.
        offset: u64,
        /// Why it does not decode.
        reason: RecordError,
    },
    /// An ACK record with nothing pending (Mesos's R2); the file is left as is.
    #[error("unexpected acknowledgement {uuid} at byte {offset} of '{path}': nothing is pending")]
    AckWithNothingPending {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The uuid the record carries.
        uuid: String,
    },
}

impl From<StoreError> for ReplayError {
    fn from(err: StoreError) -> Self {
        ReplayError::Store(Arc::new(err))
    }
}

/// A strict `Recover` failed: nothing of that call stays in memory.
#[derive(Debug, Clone, Error)]
#[error("failed to recover stream {stream}: {source}")]
pub struct RecoverError {
    /// The stream that failed.
    pub stream: String,
    /// Why.
    #[source]
    pub source: ReplayError,
}

fn fmt_framework(framework: &Option<String>) -> String {
    match framework {
        Some(id) => format!("'{id}'"),
        None => "no framework id".to_string(),
    }
}
