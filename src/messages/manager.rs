//! Messages handled by [`crate::StatusUpdateManager`]; sent by the agent
//! that embeds it (or by the gRPC service on an agent's behalf).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use actix::Message;

use crate::error::{AckError, RecoverError, StatsError, UpdateError};
use crate::kind::{StatusUuid, UpdateKind};
use crate::stream::UpdateRecords;

/// Hand the manager one status update.
///
/// The reply comes once the update is checkpointed under the configured sync
/// policy (or at once when `checkpoint` is false): `Ok(Accepted)` means it
/// will be forwarded, in order, until acknowledged; `Ok(Duplicate)` means its
/// status uuid was already received or acknowledged and nothing happened.
/// An error means nothing was written or queued for it.
#[derive(Debug, Clone)]
pub struct Update<K: UpdateKind> {
    /// The update; `latest_status` must be unset.
    pub update: K::Update,
    /// Whether the update is checkpointed to the stream's file. Every update
    /// of a stream must agree with the first one.
    pub checkpoint: bool,
}

impl<K: UpdateKind> Message for Update<K> {
    type Result = Result<UpdateOutcome, UpdateError>;
}

/// What happened to an accepted `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Checkpointed and queued.
    Accepted,
    /// Its status uuid was already received or acknowledged: ignored.
    Duplicate,
}

/// Acknowledge the head update of a stream, by its status uuid.
///
/// The reply comes once the ACK record is checkpointed under the sync
/// policy, so an `Ok` is never undone by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledge<K: UpdateKind> {
    /// The stream.
    pub stream: K::StreamId,
    /// The status uuid of the stream's head update.
    pub uuid: StatusUuid,
}

impl<K: UpdateKind> Message for Acknowledge<K> {
    type Result = Result<AckOutcome, AckError>;
}

/// What an accepted acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOutcome {
    /// The acknowledged update was terminal: the stream ended and is gone
    /// from memory (Mesos's `false`).
    pub stream_terminated: bool,
}

/// Recover streams from their checkpoint files (after a restart).
///
/// Each id is recovered per the table of [`crate::stream::recover`]. Ids
/// already in memory are left as they are and get no entry. Non-terminated
/// streams are kept and their heads forwarded at once unless paused.
/// With `strict`, the first failure fails the whole call and none of the
/// streams it recovered stay in memory (nothing was forwarded yet).
#[derive(Debug, Clone)]
pub struct Recover<K: UpdateKind> {
    /// The streams to recover, in order.
    pub ids: Vec<K::StreamId>,
    /// Fail on the first corrupt or unreadable file instead of counting it.
    pub strict: bool,
}

impl<K: UpdateKind> Message for Recover<K> {
    type Result = Result<RecoveryState<K>, RecoverError>;
}

/// The result of a `Recover`.
#[derive(Debug, Clone)]
pub struct RecoveryState<K: UpdateKind> {
    /// Per id: `None` when there was nothing to recover (no file, or no valid
    /// update in it), otherwise what the file held. Ids that failed in
    /// non-strict mode, and ids already in memory, have no entry.
    pub streams: HashMap<K::StreamId, Option<RecoveredStream<K>>>,
    /// Failed streams plus streams recovered past a corrupt record.
    pub errors: usize,
    /// The failures counted in `errors`, for logs.
    pub failures: Vec<RecoverError>,
}

/// One recovered stream.
#[derive(Debug, Clone)]
pub struct RecoveredStream<K: UpdateKind> {
    /// Every update of the file, in order, acknowledged or not (kept as the
    /// file's bytes, decoded when read).
    pub updates: UpdateRecords<K>,
    /// Whether a terminal update was acknowledged (such a stream is not kept).
    pub terminated: bool,
}

/// Close every stream of a framework: retries stop, later acks for them
/// fail with `UnknownStream`. Streams without a framework are untouched; an
/// unknown framework is a no-op. Replies with the number of streams closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// The framework.
    pub framework_id: String,
}

impl Message for Cleanup {
    type Result = usize;
}

/// Stop forwarding: updates and acks still checkpoint and change state;
/// retry timers are cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pause;

impl Message for Pause {
    type Result = ();
}

/// Start forwarding again: every stream's head is sent at once (spread over
/// `retry.jitter × retry.min` when jitter is set) with a fresh backoff.
/// Like Mesos, every call re-sends, paused or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume;

impl Message for Resume {
    type Result = ();
}

/// List the streams in memory (optionally of one framework), from the
/// stream actors themselves, sorted by stream id.
#[derive(Debug, Clone)]
pub struct ListStreams<K: UpdateKind> {
    /// Only streams of this framework; `None` = all.
    pub framework_id: Option<String>,
    _kind: PhantomData<K>,
}

impl<K: UpdateKind> ListStreams<K> {
    /// Every stream.
    pub fn all() -> Self {
        ListStreams {
            framework_id: None,
            _kind: PhantomData,
        }
    }

    /// The streams of one framework.
    pub fn of_framework(framework_id: impl Into<String>) -> Self {
        ListStreams {
            framework_id: Some(framework_id.into()),
            _kind: PhantomData,
        }
    }
}

impl<K: UpdateKind> Message for ListStreams<K> {
    type Result = Vec<StreamStats<K>>;
}

/// One stream's figures, including its pending updates: `None` if the
/// stream is not in memory, an error if its actor panicked while it
/// answered (the stream restarts from its file).
#[derive(Debug, Clone)]
pub struct GetStream<K: UpdateKind> {
    /// The stream.
    pub stream: K::StreamId,
}

impl<K: UpdateKind> Message for GetStream<K> {
    type Result = Result<Option<StreamStats<K>>, StatsError>;
}

/// A stream's figures (its metrics).
#[derive(Debug, Clone)]
pub struct StreamStats<K: UpdateKind> {
    /// The stream.
    pub stream: K::StreamId,
    /// Its framework.
    pub framework_id: Option<String>,
    /// Whether it has a checkpoint file.
    pub checkpointed: bool,
    /// Unacknowledged updates queued.
    pub pending: usize,
    /// Distinct status uuids ever accepted.
    pub received: usize,
    /// Status uuids acknowledged.
    pub acknowledged: usize,
    /// Whether its terminal update was acknowledged.
    pub terminated: bool,
    /// Resends of the current head so far.
    pub attempt: u32,
    /// Time until the armed retry; `None` when none is armed.
    pub next_retry_in: Option<Duration>,
    /// Age of the oldest pending update.
    pub oldest_pending_age: Option<Duration>,
    /// Size of the checkpoint file.
    pub checkpoint_bytes: u64,
    /// The pending updates, head first (filled by `GetStream` only).
    pub pending_updates: Vec<K::Update>,
}

/// Sent by a stream actor to the manager once its stream is over (terminal
/// ack, or closed by a cleanup), so the manager forgets it. `generation`
/// tells this incarnation of the stream from a newer one with the same id.
#[derive(Debug, Clone)]
pub struct StreamEnded<K: UpdateKind> {
    /// The stream.
    pub stream: K::StreamId,
    /// The incarnation that ended.
    pub generation: u64,
}

impl<K: UpdateKind> Message for StreamEnded<K> {
    type Result = ();
}

/// Sync every stream file now, whatever the sync policy (used at shutdown,
/// so that even `store.sync = none` leaves nothing in the page cache).
/// Replies once every stream has synced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncAll;

impl Message for SyncAll {
    type Result = ();
}
