//! Requests that go to a stream's actor without the manager's hop.
//!
//! A request through the manager ([`Update`](crate::messages::Update),
//! [`Acknowledge`](crate::messages::Acknowledge)) is routed twice: into the
//! manager's mailbox, where the stream is looked up by id, then into the
//! stream's. A caller that already knows the stream's actor can skip the
//! first:
//!
//! - [`StreamHandle`]: the stream's actor, from
//!   [`GetHandle`]. Its updates are validated
//!   as the manager validates them and must name its stream.
//! - [`Forward::acknowledge`](crate::messages::Forward::acknowledge): the
//!   upstream acknowledges the update it was just forwarded, at the stream
//!   that forwarded it.
//!
//! Both give the answers the manager's route gives. A stream that has
//! ended (its framework was cleaned up, its terminal update acknowledged,
//! or its manager stopped) answers as the manager does for it:
//! `StreamClosing` for an update, `UnknownStream` for an ack. A cleanup's
//! `Close` reaches the stream's mailbox before anything sent after the
//! cleanup returned, so nothing sent after it is accepted. An ack through
//! a forward whose stream's actor is gone gets `UnknownStream`; a request
//! that finds the actor's mailbox closed gets `Unavailable`, as through
//! the manager. What is refused here (an invalid request, a stream that is
//! gone) is logged here, as the manager logs its refusals ([`crate::logs`]).
//!
//! **Order.** Requests sent through one stream's handle (or its forwards)
//! reach the stream in the order they were sent, as through the manager. A
//! request sent through the manager and one sent directly are ordered only
//! if the first was answered before the second was sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};

use actix::dev::{OneshotSender, ToEnvelope};
use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{AckError, UpdateError};
use crate::kind::{describe_update, validate_update, InvalidUpdate, StatusUuid, UpdateKind};
use crate::logs;
use crate::messages::mailbox::MailboxFigures;
use crate::messages::manager::{AckOutcome, UpdateOutcome};
use crate::messages::stream::{StreamAck, StreamUpdate};

/// Why a request could not reach its stream actor.
const STREAM_STOPPED: &str = "the stream actor stopped";

/// The refusal of a malformed `update` (`reason`), logged once: the
/// manager's route and a handle's refuse it alike.
pub(crate) fn invalid_update<K: UpdateKind>(
    update: &K::Update,
    reason: InvalidUpdate,
) -> UpdateError {
    let (stream, uuid) = describe_update::<K>(update);
    let err = UpdateError::Invalid {
        stream: stream.clone(),
        uuid: uuid.clone(),
        reason,
    };
    logs::update_rejected(&stream, &uuid, &err);
    err
}

/// Where a request to a stream is enqueued: its actor's address (the
/// manager's route) or a recipient of that actor (a handle, a forward).
pub(crate) trait Mailbox<S: Message> {
    /// Enqueues `msg` if the mailbox has room.
    fn try_send(&self, msg: S) -> Result<(), SendError<S>>;
    /// Enqueues `msg` whatever the mailbox holds.
    fn do_send(&self, msg: S);
}

impl<A, S> Mailbox<S> for Addr<A>
where
    A: Handler<S>,
    A::Context: ToEnvelope<A, S>,
    S: Message + Send + 'static,
    S::Result: Send,
{
    fn try_send(&self, msg: S) -> Result<(), SendError<S>> {
        Addr::try_send(self, msg)
    }
    fn do_send(&self, msg: S) {
        Addr::do_send(self, msg);
    }
}

impl<S> Mailbox<S> for Recipient<S>
where
    S: Message + Send + 'static,
    S::Result: Send,
{
    fn try_send(&self, msg: S) -> Result<(), SendError<S>> {
        Recipient::try_send(self, msg)
    }
    fn do_send(&self, msg: S) {
        Recipient::do_send(self, msg);
    }
}

/// Enqueues `msg` on the stream's mailbox, counted in `figures`; if the
/// actor is gone, answers the reply channel `msg` carries with
/// `unavailable()`.
pub(crate) fn deliver<S, Res>(
    mailbox: &impl Mailbox<S>,
    figures: &MailboxFigures,
    msg: S,
    unavailable: impl FnOnce() -> Res,
    take_reply: fn(S) -> Option<OneshotSender<Res>>,
) where
    S: Message<Result = ()> + Send + 'static,
{
    figures.enqueued();
    match mailbox.try_send(msg) {
        Ok(()) => {}
        // Past the mailbox's capacity the message still queues: a request
        // is never dropped.
        Err(SendError::Full(msg)) => mailbox.do_send(msg),
        Err(SendError::Closed(msg)) => {
            figures.unsent();
            if let Some(tx) = take_reply(msg) {
                let _ = tx.send(unavailable());
            }
        }
    }
}

/// The answer to a request sent straight to a stream's actor: an update's
/// ([`StreamHandle::update`]) or an ack's ([`StreamHandle::acknowledge`],
/// [`Forward::acknowledge`](crate::messages::Forward::acknowledge)).
///
/// The request was enqueued when it was made; awaiting this only waits
/// for the answer, and dropping it does not withdraw the request.
#[must_use = "the request is sent already; the reply says whether it was accepted"]
pub struct Reply<K: UpdateKind, T> {
    state: ReplyState<K, T>,
}

enum ReplyState<K: UpdateKind, T> {
    /// Answered without reaching the stream (invalid, or the actor is gone).
    Ready(Option<T>),
    /// Waiting for the stream's answer; if the stream drops the channel
    /// unanswered (its actor stopped), `gone(stream)` answers.
    Waiting {
        rx: oneshot::Receiver<T>,
        stream: K::StreamId,
        gone: fn(&K::StreamId) -> T,
    },
}

impl<K: UpdateKind, T> Reply<K, T> {
    fn ready(value: T) -> Self {
        Reply {
            state: ReplyState::Ready(Some(value)),
        }
    }
}

impl<K: UpdateKind, T> std::fmt::Debug for Reply<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            ReplyState::Ready(_) => "Reply::Ready",
            ReplyState::Waiting { .. } => "Reply::Waiting",
        })
    }
}

// Nothing in a `Reply` is pinned: the receiver is `Unpin`.
impl<K: UpdateKind, T> Unpin for Reply<K, T> {}

impl<K: UpdateKind, T> Future for Reply<K, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        let this = self.get_mut();
        match &mut this.state {
            ReplyState::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                None => panic!("a Reply was polled after it completed"),
            },
            ReplyState::Waiting { rx, stream, gone } => {
                let answer = ready!(Pin::new(rx).poll(cx));
                Poll::Ready(answer.unwrap_or_else(|_| gone(stream)))
            }
        }
    }
}

type UpdateResult = Result<UpdateOutcome, UpdateError>;
type AckResult = Result<AckOutcome, AckError>;

/// The answer to an update whose stream actor stopped before it got it
/// (counted as rejected: the stream never answered it).
pub(crate) fn update_unavailable<S: ToString>(stream: &S) -> UpdateResult {
    crate::metrics::count_rejected_update();
    Err(UpdateError::Unavailable {
        stream: stream.to_string(),
        reason: STREAM_STOPPED.into(),
    })
}

/// The answer to an ack whose stream actor stopped before it got it
/// (counted as rejected: the stream never answered it).
pub(crate) fn ack_unavailable<S: ToString>(stream: &S) -> AckResult {
    crate::metrics::count_rejected_ack();
    Err(AckError::Unavailable {
        stream: stream.to_string(),
        reason: STREAM_STOPPED.into(),
    })
}

/// Sends an ack for `uuid` to the stream actor at `addr` (`None`: gone),
/// whose mailbox `figures` counts.
pub(crate) fn acknowledge<K: UpdateKind>(
    addr: Option<&Recipient<StreamAck>>,
    figures: &MailboxFigures,
    stream: &K::StreamId,
    uuid: StatusUuid,
) -> Reply<K, AckResult> {
    if uuid.is_nil() {
        let err = AckError::Invalid {
            stream: stream.to_string(),
            reason: InvalidUpdate::NilUuid,
        };
        logs::ack_rejected(stream, &uuid, &err);
        crate::metrics::count_rejected_ack();
        return Reply::ready(Err(err));
    }
    let Some(addr) = addr else {
        // The manager forgot the stream (it ended) or stopped.
        let err = AckError::UnknownStream {
            stream: stream.to_string(),
            uuid: uuid.to_string(),
        };
        logs::ack_rejected(stream, &uuid, &err);
        crate::metrics::count_rejected_ack();
        return Reply::ready(Err(err));
    };
    let (tx, rx) = oneshot::channel();
    deliver(
        addr,
        figures,
        StreamAck {
            uuid,
            reply: Some(tx),
            sent_at: Instant::now(),
        },
        || ack_unavailable(stream),
        |m: StreamAck| m.reply,
    );
    Reply {
        state: ReplyState::Waiting {
            rx,
            stream: stream.clone(),
            gone: ack_unavailable::<K::StreamId>,
        },
    }
}

/// A direct line to one stream's actor, for a caller that sends it many
/// updates (see the module docs). Cheap to clone; `Send`, so a clone may
/// move to another thread, though requests from the manager's own arbiter
/// thread are the cheap ones.
///
/// A handle keeps its stream's actor alive, not the stream: once the
/// stream ends (terminal ack, cleanup) or its manager stops, its updates
/// are refused, and a new stream of the same id (created through the
/// manager) needs a new handle. The actor holds what the manager's
/// streams share, the committer thread among them, so a committer thread
/// stops only once its manager's handles are dropped too.
pub struct StreamHandle<K: UpdateKind> {
    inner: Arc<Inner<K>>,
}

struct Inner<K: UpdateKind> {
    stream: K::StreamId,
    updates: Recipient<StreamUpdate<K>>,
    acks: Recipient<StreamAck>,
    mailbox: Arc<MailboxFigures>,
}

impl<K: UpdateKind> Clone for StreamHandle<K> {
    fn clone(&self) -> Self {
        StreamHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<K: UpdateKind> std::fmt::Debug for StreamHandle<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("stream", &self.inner.stream)
            .finish_non_exhaustive()
    }
}

impl<K: UpdateKind> StreamHandle<K> {
    pub(crate) fn new(
        stream: K::StreamId,
        updates: Recipient<StreamUpdate<K>>,
        acks: Recipient<StreamAck>,
        mailbox: Arc<MailboxFigures>,
    ) -> Self {
        StreamHandle {
            inner: Arc::new(Inner {
                stream,
                updates,
                acks,
                mailbox,
            }),
        }
    }

    /// The stream this handle sends to.
    pub fn stream(&self) -> &K::StreamId {
        &self.inner.stream
    }

    /// Hands the stream one status update, as
    /// [`Update`](crate::messages::Update) does through the manager, with
    /// the same checks and answers. The update must name this handle's
    /// stream (else `Invalid`, and nothing is sent).
    pub fn update(&self, update: K::Update, checkpoint: bool) -> Reply<K, UpdateResult> {
        let key = match validate_update::<K>(&update) {
            Ok(key) => key,
            Err(reason) => {
                crate::metrics::count_rejected_update();
                return Reply::ready(Err(invalid_update::<K>(&update, reason)));
            }
        };
        let stream = &self.inner.stream;
        if key.stream != *stream {
            let err = UpdateError::Invalid {
                stream: key.stream.to_string(),
                uuid: key.uuid.to_string(),
                reason: InvalidUpdate::StreamId(format!(
                    "the update is for stream {} but was sent through the handle of stream {stream}",
                    key.stream
                )),
            };
            logs::update_rejected(&key.stream, &key.uuid, &err);
            crate::metrics::count_rejected_update();
            return Reply::ready(Err(err));
        }
        let (tx, rx) = oneshot::channel();
        deliver(
            &self.inner.updates,
            &self.inner.mailbox,
            StreamUpdate {
                update,
                uuid: key.uuid,
                checkpoint,
                reply: Some(tx),
                sent_at: Instant::now(),
            },
            || update_unavailable(stream),
            |m: StreamUpdate<K>| m.reply,
        );
        Reply {
            state: ReplyState::Waiting {
                rx,
                stream: key.stream,
                gone: update_unavailable::<K::StreamId>,
            },
        }
    }

    /// Acknowledges the stream's head by its status uuid, as
    /// [`Acknowledge`](crate::messages::Acknowledge) does through the
    /// manager.
    pub fn acknowledge(&self, uuid: StatusUuid) -> Reply<K, AckResult> {
        acknowledge(
            Some(&self.inner.acks),
            &self.inner.mailbox,
            &self.inner.stream,
            uuid,
        )
    }
}

/// A handle to one stream's actor, for sending it updates and acks without
/// the manager's hop (see the module docs). `None` if the stream is not in
/// memory or is being cleaned up. Handled by the manager.
#[derive(Debug, Clone)]
pub struct GetHandle<K: UpdateKind> {
    /// The stream.
    pub stream: K::StreamId,
}

impl<K: UpdateKind> Message for GetHandle<K> {
    type Result = Option<StreamHandle<K>>;
}
