//! The message the manager sends upstream.

use actix::Message;

use crate::kind::UpdateKind;

/// Sent by the manager to the upstream's `Recipient<Forward<K>>` for every
/// send of a stream's head: the first one, each retry, and each re-send on
/// resume or recovery. The upstream acknowledges it with
/// [`crate::messages::Acknowledge`] naming the update's status uuid.
///
/// Delivery is best effort: if the recipient is gone or its mailbox closed,
/// the retry timer sends it again later.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward<K: UpdateKind> {
    /// The stream the update belongs to.
    pub stream: K::StreamId,
    /// The head update, with `latest_status` set to the status of the newest
    /// update queued on the stream.
    pub update: K::Update,
    /// 0 for the first send of this update by this process; each later send
    /// (retry, resume, recovery, restart) adds one.
    pub attempt: u32,
}

impl<K: UpdateKind> Message for Forward<K> {
    type Result = ();
}
