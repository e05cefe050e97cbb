//! Messages handled by a [`crate::actors::stream::StreamActor`]; sent by
//! the manager, which routes each agent request to the stream's mailbox,
//! and for `StreamUpdate` and `StreamAck` also by a
//! [`StreamHandle`](crate::messages::handle::StreamHandle) or
//! [`Forward::acknowledge`](crate::messages::Forward::acknowledge), which
//! skip the manager. Requests carry the caller's reply channel, so the
//! stream answers the agent directly once its record is durable.
//!
//! The requests callers wait on ([`StreamUpdate`], [`StreamAck`],
//! [`GetStats`]) carry the instant they were enqueued (`sent_at`, tokio's
//! clock), from which the stream records how long they waited in its
//! mailbox (`sum_stream_mailbox_wait_seconds`).

use std::marker::PhantomData;

use actix::dev::OneshotSender;
use actix::Message;

use tokio::time::Instant;

use crate::error::{AckError, StatsError, UpdateError};
use crate::kind::{StatusUuid, UpdateKind};
use crate::messages::manager::{AckOutcome, StreamStats, UpdateOutcome};

/// A validated update for this stream. Replied through `reply`.
#[derive(Debug)]
pub struct StreamUpdate<K: UpdateKind> {
    /// The update.
    pub update: K::Update,
    /// Its status uuid.
    pub uuid: StatusUuid,
    /// The update's checkpoint flag.
    pub checkpoint: bool,
    /// Where the answer goes.
    pub reply: Option<OneshotSender<Result<UpdateOutcome, UpdateError>>>,
    /// When it was enqueued.
    pub sent_at: Instant,
}

impl<K: UpdateKind> Message for StreamUpdate<K> {
    type Result = ();
}

/// An acknowledgement for this stream. Replied through `reply`.
#[derive(Debug)]
pub struct StreamAck {
    /// The acknowledged status uuid.
    pub uuid: StatusUuid,
    /// Where the answer goes.
    pub reply: Option<OneshotSender<Result<AckOutcome, AckError>>>,
    /// When it was enqueued.
    pub sent_at: Instant,
}

impl Message for StreamAck {
    type Result = ();
}

/// Pause (`true`) or resume (`false`) forwarding. A resume always re-sends
/// the head with a fresh backoff.
#[derive(Debug, Clone, Copy)]
pub struct SetPaused {
    /// The new state.
    pub paused: bool,
}

impl Message for SetPaused {
    type Result = ();
}

/// The stream's framework was cleaned up, or its manager stopped: stop
/// retrying and close the file (removing it when `remove_file`), then tell
/// the manager it ended.
#[derive(Debug, Clone, Copy)]
pub struct Close {
    /// Delete the checkpoint file.
    pub remove_file: bool,
}

impl Message for Close {
    type Result = ();
}

/// Ask for the stream's figures; `None` once the stream has ended, an error
/// if the stream's actor panicked while it answered (it restarts).
///
/// Its own wait in the mailbox is the stream's `mailbox_oldest_wait`: when
/// the stream takes it, everything queued ahead of it has been handled, so
/// it is the oldest message queued and its wait the age of the oldest one.
#[derive(Debug, Clone, Copy)]
pub struct GetStats<K: UpdateKind> {
    /// Include the pending updates.
    pub with_pending: bool,
    /// Messages in the stream's mailbox when this one was enqueued: the
    /// backlog it waits behind (the stream's `mailbox_backlog`).
    pub queued_ahead: u64,
    /// When it was enqueued.
    pub sent_at: Instant,
    /// The kind answered for.
    pub kind: PhantomData<K>,
}

impl<K: UpdateKind> Message for GetStats<K> {
    type Result = Result<Option<StreamStats<K>>, StatsError>;
}

/// Sync the file now (see [`crate::messages::manager::SyncAll`]).
#[derive(Debug, Clone, Copy)]
pub struct SyncNow;

impl Message for SyncNow {
    type Result = ();
}
