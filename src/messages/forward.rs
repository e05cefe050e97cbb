//! The message the manager sends upstream.

use std::sync::Arc;

use actix::{Message, WeakRecipient};

use crate::error::AckError;
use crate::kind::{StatusUuid, UpdateKind};
use crate::messages::handle::{self, Reply};
use crate::messages::mailbox::MailboxFigures;
use crate::messages::manager::AckOutcome;
use crate::messages::stream::StreamAck;

/// Sent by the manager to the upstream's `Recipient<Forward<K>>` for every
/// send of a stream's head: the first one, each retry, and each re-send on
/// resume or recovery. The upstream acknowledges it with
/// [`crate::messages::Acknowledge`] naming the update's status uuid, or
/// with [`acknowledge`](Self::acknowledge), which goes to the stream that
/// sent it without the manager's hop.
///
/// Delivery is best effort: if the recipient is gone or its mailbox closed,
/// the retry timer sends it again later.
///
/// Only the manager's streams make forwards. Two are equal when their
/// stream, update and attempt are.
#[derive(Clone)]
pub struct Forward<K: UpdateKind> {
    /// The stream the update belongs to.
    pub stream: K::StreamId,
    /// The head update, with `latest_status` set to the status of the newest
    /// update queued on the stream.
    pub update: K::Update,
    /// 0 for the first send of this update by this process; each later send
    /// (retry, resume, recovery, restart) adds one.
    pub attempt: u32,
    /// The update's status uuid.
    uuid: StatusUuid,
    /// Where the stream's actor takes acks, weak: a forward kept by the
    /// upstream must not keep a stream that ended alive.
    from: WeakRecipient<StreamAck>,
    /// The count of that actor's mailbox, which the ack goes into.
    mailbox: Arc<MailboxFigures>,
}

impl<K: UpdateKind> Forward<K> {
    pub(crate) fn new(
        stream: K::StreamId,
        update: K::Update,
        attempt: u32,
        uuid: StatusUuid,
        from: WeakRecipient<StreamAck>,
        mailbox: Arc<MailboxFigures>,
    ) -> Self {
        Forward {
            stream,
            update,
            attempt,
            uuid,
            from,
            mailbox,
        }
    }

    /// The forwarded update's status uuid (what an acknowledgement names).
    pub fn uuid(&self) -> StatusUuid {
        self.uuid
    }

    /// Acknowledges this update at the stream that forwarded it, as
    /// [`crate::messages::Acknowledge`] does through the manager, with the
    /// same answers (`UnknownStream` once the stream has ended or its
    /// manager stopped). See [`crate::messages::handle`].
    pub fn acknowledge(&self) -> Reply<K, Result<AckOutcome, AckError>> {
        handle::acknowledge(
            self.from.upgrade().as_ref(),
            &self.mailbox,
            &self.stream,
            self.uuid,
        )
    }
}

impl<K: UpdateKind> std::fmt::Debug for Forward<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("stream", &self.stream)
            .field("update", &self.update)
            .field("attempt", &self.attempt)
            .field("uuid", &self.uuid)
            .finish_non_exhaustive()
    }
}

impl<K: UpdateKind> PartialEq for Forward<K> {
    fn eq(&self, other: &Self) -> bool {
        self.stream == other.stream && self.update == other.update && self.attempt == other.attempt
    }
}

impl<K: UpdateKind> Message for Forward<K> {
    type Result = ();
}
