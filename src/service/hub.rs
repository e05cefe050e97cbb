//! `SubscriberHub`: the service's upstream, the manager's forward target.
//!
//! **Owns** the one current subscriber (the sending side of its gRPC
//! `Subscribe` stream) and the admin pause flag.
//!
//! **Handles** [`Forward`] from the manager (passed to the subscriber),
//! [`Subscribe`] (a new subscriber replaces the previous one, whose stream
//! ends with `ABORTED`), [`Detach`] (a subscriber's transport closed),
//! [`AdminPause`] / [`AdminResume`], [`CloseSubscriber`] and [`Stop`]
//! (shutdown).
//!
//! **Sends** `Pause` / `Resume` to the manager so that it forwards exactly
//! while a subscriber is connected and no admin pause is in effect: a new
//! subscriber triggers a resume (every stream's head is sent to it at once),
//! losing the last one pauses the manager. A forward the subscriber cannot
//! take right now (its buffer is full) is dropped: the stream's retry timer
//! sends it again, so nothing is lost.

use actix::prelude::*;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use crate::kind::Native;
use crate::messages::{Forward, Pause, Resume};
use crate::proto::status_update_manager::v1::ForwardedUpdate;
use crate::StatusUpdateManager;

/// Forwards buffered per subscriber before new ones are dropped (and retried later).
pub const SUBSCRIBER_BUFFER: usize = 65_536;

/// What a subscriber's stream yields.
pub type SubscriberItem = Result<ForwardedUpdate, Status>;

struct Current {
    id: u64,
    name: String,
    tx: mpsc::Sender<SubscriberItem>,
}

/// The service's forward target; see the module docs.
pub struct SubscriberHub {
    manager: Option<Addr<StatusUpdateManager<Native>>>,
    current: Option<Current>,
    admin_paused: bool,
    next_id: u64,
    dropped: u64,
}

impl std::fmt::Debug for SubscriberHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberHub")
            .field("subscriber", &self.current.as_ref().map(|c| &c.name))
            .field("admin_paused", &self.admin_paused)
            .finish()
    }
}

impl SubscriberHub {
    /// Starts a hub with no subscriber (the manager must start paused).
    pub fn start() -> Addr<Self> {
        SubscriberHub::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            SubscriberHub {
                manager: None,
                current: None,
                admin_paused: false,
                next_id: 0,
                dropped: 0,
            }
        })
    }

    fn forwarding(&self) -> bool {
        self.current.is_some() && !self.admin_paused
    }

    fn tell_manager(&self, resume: bool) {
        let Some(manager) = &self.manager else { return };
        let failed = if resume {
            manager.try_send(Resume).is_err()
        } else {
            manager.try_send(Pause).is_err()
        };
        if failed {
            warn!(
                "the manager is gone; cannot {}",
                if resume { "resume" } else { "pause" }
            );
        }
    }
}

impl Actor for SubscriberHub {
    type Context = Context<Self>;
}

/// Connects the hub to the manager it pauses and resumes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetManager(pub Addr<StatusUpdateManager<Native>>);

impl Handler<SetManager> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, msg: SetManager, _: &mut Context<Self>) {
        self.manager = Some(msg.0);
    }
}

impl Handler<Forward<Native>> for SubscriberHub {
    type Result = ();

    fn handle(&mut self, forward: Forward<Native>, _: &mut Context<Self>) {
        let Some(current) = &self.current else { return };
        let item = ForwardedUpdate {
            update: Some(forward.update),
            attempt: forward.attempt,
        };
        match current.tx.try_send(Ok(item)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    warn!(subscriber = %current.name, dropped = self.dropped,
                        "subscriber is not keeping up; forwards dropped (they are retried)");
                }
            }
            // The watcher's Detach follows.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A new subscriber; replies with the receiving side of its stream.
#[derive(Debug)]
pub struct Subscribe {
    /// Free-form name for logs.
    pub name: String,
}

impl Message for Subscribe {
    type Result = mpsc::Receiver<SubscriberItem>;
}

impl Handler<Subscribe> for SubscriberHub {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.next_id += 1;
        let id = self.next_id;
        if let Some(previous) = self.current.take() {
            info!(previous = %previous.name, next = %msg.name, "subscriber replaced");
            let reason = format!("replaced by a new subscriber '{}'", msg.name);
            // The old stream ends with ABORTED; if its buffer is full it ends when dropped.
            let _ = previous.tx.try_send(Err(Status::aborted(reason)));
        } else {
            info!(subscriber = %msg.name, "subscriber connected");
        }
        metrics::gauge!(crate::metrics::SUBSCRIBERS).set(1.0);
        // Notice the transport closing: the receiver is dropped with the stream.
        let watch = tx.clone();
        ctx.spawn(
            async move { watch.closed().await }
                .into_actor(self)
                .map(move |(), _, ctx| ctx.notify(Detach { id })),
        );
        self.current = Some(Current {
            id,
            name: msg.name,
            tx,
        });
        if self.forwarding() {
            self.tell_manager(true);
        }
        MessageResult(rx)
    }
}

/// A subscriber's stream closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Detach {
    id: u64,
}

impl Handler<Detach> for SubscriberHub {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Context<Self>) {
        if self.current.as_ref().is_some_and(|c| c.id == msg.id) {
            if let Some(gone) = self.current.take() {
                info!(subscriber = %gone.name, "subscriber disconnected; pausing");
            }
            metrics::gauge!(crate::metrics::SUBSCRIBERS).set(0.0);
            if !self.admin_paused {
                self.tell_manager(false);
            }
        }
    }
}

/// The admin `Pause`: forwarding stops until [`AdminResume`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AdminPause;

impl Handler<AdminPause> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, _: AdminPause, _: &mut Context<Self>) {
        self.admin_paused = true;
        self.tell_manager(false);
    }
}

/// The admin `Resume`: lifts an admin pause; with a subscriber connected,
/// every head is re-sent at once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AdminResume;

impl Handler<AdminResume> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, _: AdminResume, _: &mut Context<Self>) {
        self.admin_paused = false;
        if self.forwarding() {
            self.tell_manager(true);
        }
    }
}

/// Shutdown: the subscriber's stream ends with UNAVAILABLE.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseSubscriber;

impl Handler<CloseSubscriber> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, _: CloseSubscriber, _: &mut Context<Self>) {
        if let Some(current) = self.current.take() {
            let _ = current
                .tx
                .try_send(Err(Status::unavailable("the server is shutting down")));
            metrics::gauge!(crate::metrics::SUBSCRIBERS).set(0.0);
        }
        self.tell_manager(false);
    }
}

/// Shutdown, last step: the hub lets go of the manager and stops. The hub
/// and the manager hold each other's address (the manager's streams forward
/// to the hub); without this neither would ever stop, and the streams would
/// keep their files open after the service is gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.current = None;
        self.manager = None;
        ctx.stop();
    }
}
