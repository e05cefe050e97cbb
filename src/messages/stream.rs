//! Messages handled by a [`crate::actors::stream::StreamActor`]; sent by
//! the manager, which routes each agent request to the stream's mailbox,
//! and for `StreamUpdate` and `StreamAck` also by a
//! [`StreamHandle`](crate::messages::handle::StreamHandle) or
//! [`Forward::acknowledge`](crate::messages::Forward::acknowledge), which
//! skip the manager. Requests carry the caller's reply channel, so the
//! stream answers the agent directly once its record is durable.

use std::marker::PhantomData;

use actix::dev::OneshotSender;
use actix::Message;

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
#[derive(Debug, Clone, Copy)]
pub struct GetStats<K: UpdateKind> {
    /// Include the pending updates.
    pub with_pending: bool,
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
