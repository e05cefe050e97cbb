//! Messages handled by [`crate::StatusUpdateManager`]; sent by the agent
//! that embeds it (or by the gRPC service on an agent's behalf).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;

use crate::error::{AckError, RecoverError, StatsError, UpdateError};
use crate::kind::{StatusUuid, UpdateKind};
use crate::messages::mailbox::MailboxFigures;
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

/// The manager's figures at a glance: [`ManagerSummary`]. Answered by the
/// manager alone, without asking any stream, so it costs the same with a
/// million streams as with one (the service's `GetStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetSummary;

impl Message for GetSummary {
    type Result = ManagerSummary;
}

/// The reply to [`GetSummary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerSummary {
    /// Streams in memory (the `sum_streams` gauge), closing ones included.
    pub streams: usize,
    /// Updates awaiting acknowledgement over every stream (the
    /// `sum_pending_updates` gauge, for this manager's streams).
    pub pending_updates: u64,
    /// Forwarding is paused ([`Pause`], or `start_paused` and no [`Resume`] yet).
    pub paused: bool,
}

/// List the streams in memory (optionally of one framework), from the
/// stream actors themselves, in stream id order: one page of at most
/// `limit` streams whose ids come after `after`.
///
/// A page ends at an id, not at a position: the next page is asked with
/// `after` = [`StreamPage::next_after`], so a stream created or ended
/// between two pages never makes a page repeat or skip another stream.
/// Building a page looks at every stream in memory once (no sort of them
/// all) and asks only the page's streams for their figures.
///
/// ```
/// # use status_update_manager::kind::Native;
/// # use status_update_manager::messages::ListStreams;
/// let first = ListStreams::<Native>::all().limit(1000);
/// let next = ListStreams::<Native>::of_framework("fw-1").after("task-9".to_string()).limit(1000);
/// # let _ = (first, next);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListStreams<K: UpdateKind> {
    /// Only streams of this framework; `None` = all.
    pub framework_id: Option<String>,
    /// Only streams whose id comes after this one; `None` = from the first.
    pub after: Option<K::StreamId>,
    /// At most this many streams (`0` is taken as 1); [`all`](Self::all)
    /// and [`of_framework`](Self::of_framework) start with no limit.
    pub limit: usize,
}

impl<K: UpdateKind> ListStreams<K> {
    /// Every stream, in one page.
    pub fn all() -> Self {
        ListStreams {
            framework_id: None,
            after: None,
            limit: usize::MAX,
        }
    }

    /// The streams of one framework, in one page.
    pub fn of_framework(framework_id: impl Into<String>) -> Self {
        ListStreams {
            framework_id: Some(framework_id.into()),
            ..Self::all()
        }
    }

    /// Only the streams whose id comes after `id` (`None`: from the first).
    pub fn after(mut self, id: impl Into<Option<K::StreamId>>) -> Self {
        self.after = id.into();
        self
    }

    /// At most `limit` streams in the page (`0` is taken as 1).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

impl<K: UpdateKind> Message for ListStreams<K> {
    type Result = StreamPage<K>;
}

/// One page of [`ListStreams`]. It reads as the slice of its streams
/// (`page.len()`, `page.iter()`, `for stats in page`).
#[derive(Debug, Clone)]
pub struct StreamPage<K: UpdateKind> {
    /// The streams' figures in stream id order, without pending updates. A
    /// stream whose actor panicked while it answered is left out (it
    /// restarts from its file).
    pub streams: Vec<StreamStats<K>>,
    /// `Some(id)`: more streams follow; ask for them with `after(id)`
    /// (`id` is the last one this page covered, listed or left out).
    /// `None`: this is the last page.
    pub next_after: Option<K::StreamId>,
}

impl<K: UpdateKind> std::ops::Deref for StreamPage<K> {
    type Target = [StreamStats<K>];

    fn deref(&self) -> &Self::Target {
        &self.streams
    }
}

impl<K: UpdateKind> IntoIterator for StreamPage<K> {
    type Item = StreamStats<K>;
    type IntoIter = std::vec::IntoIter<StreamStats<K>>;

    fn into_iter(self) -> Self::IntoIter {
        self.streams.into_iter()
    }
}

impl<'a, K: UpdateKind> IntoIterator for &'a StreamPage<K> {
    type Item = &'a StreamStats<K>;
    type IntoIter = std::slice::Iter<'a, StreamStats<K>>;

    fn into_iter(self) -> Self::IntoIter {
        self.streams.iter()
    }
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
    /// Messages in the stream actor's mailbox, not handled yet, when the
    /// request for these figures was enqueued: the backlog it waited
    /// behind (updates, acks and the stream's own wake-ups alike).
    pub mailbox_backlog: u64,
    /// Messages the stream's actor has handled since it started (created,
    /// recovered, or started again by the manager; a restart after a
    /// storage fault or a panic keeps counting), this request included.
    pub messages_handled: u64,
    /// How long the request for these figures waited in the stream's
    /// mailbox. When the stream took it, everything queued ahead of it had
    /// been handled: it was the oldest message queued, so this is the age
    /// of the oldest queued message then, the wait a request met at the
    /// head of the line. About zero for a stream that keeps up.
    pub mailbox_oldest_wait: Duration,
    /// The pending updates, head first (filled by `GetStream` only).
    pub pending_updates: Vec<K::Update>,
}

/// Sent by a stream actor to the manager once its stream is over (terminal
/// ack, or closed by a cleanup), so the manager forgets it. `mailbox` tells
/// this incarnation of the stream from a newer one with the same id: each
/// stream actor the manager starts has a mailbox count of its own.
#[derive(Debug, Clone)]
pub struct StreamEnded<K: UpdateKind> {
    /// The stream.
    pub stream: K::StreamId,
    /// The mailbox count of the actor that ended (held, so that no newer
    /// actor's count can take its place meanwhile).
    pub mailbox: Arc<MailboxFigures>,
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
