//! `SubscriberHub`: the service's upstream, the manager's forward target.
//!
//! **Owns** the one current subscriber (the sending side of its gRPC
//! `Subscribe` stream, its name and since when) and the admin pause flag,
//! kept in `<data_dir>/paused` by the service ([`PauseFile`]): an operator's
//! pause survives a restart.
//!
//! **Handles** [`Forward`] from the manager (passed to the subscriber),
//! [`Subscribe`] (a new subscriber replaces the previous one, whose stream
//! ends with `ABORTED`), [`Detach`] (a subscriber's transport closed),
//! [`AdminPause`] / [`AdminResume`], [`GetHubStatus`], [`CloseSubscriber`]
//! and [`Stop`] (shutdown).
//!
//! **Sends** `Pause` / `Resume` to the manager so that it forwards exactly
//! while a subscriber is connected and no admin pause is in effect: a new
//! subscriber triggers a resume (every stream's head is sent to it at once),
//! losing the last one pauses the manager. A forward the subscriber cannot
//! take right now (its buffer is full) is dropped: the stream's retry timer
//! sends it again, so nothing is lost.
//!
//! **Logs** each pause and resume as one INFO line whose `cause` says who
//! caused it: `operator` (the `Pause` / `Resume` RPCs), `subscriber_gone`,
//! `subscriber_back`, `subscriber_replaced` (API.md, "Logs").

use std::time::SystemTime;

use actix::prelude::*;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::pause::PauseFile;
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
    since: SystemTime,
    tx: mpsc::Sender<SubscriberItem>,
}

/// The service's forward target; see the module docs.
pub struct SubscriberHub {
    manager: Option<Addr<StatusUpdateManager<Native>>>,
    current: Option<Current>,
    admin_paused: bool,
    /// When the admin pause in effect began.
    admin_paused_since: Option<SystemTime>,
    /// Where the admin pause is kept; `None`: not kept.
    pause_file: Option<PauseFile>,
    next_id: u64,
    dropped: u64,
    /// With an upstream other than the subscriber ([`UpstreamLink`]):
    /// whether it is usable now. `None`: the upstream is the subscriber.
    link: Option<bool>,
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
    /// Starts a hub with no subscriber (the manager must start paused),
    /// not admin-paused, keeping an admin pause nowhere.
    pub fn start() -> Addr<Self> {
        Self::start_with(None, None)
    }

    /// Starts a hub with no subscriber (the manager must start paused) that
    /// keeps an admin pause in `pause_file`; `paused_since`: an admin pause
    /// is in effect already (read from that file), made at that time.
    pub fn start_with(
        pause_file: Option<PauseFile>,
        paused_since: Option<SystemTime>,
    ) -> Addr<Self> {
        SubscriberHub::create(move |ctx| {
            ctx.set_mailbox_capacity(0);
            SubscriberHub {
                manager: None,
                current: None,
                admin_paused: paused_since.is_some(),
                admin_paused_since: paused_since,
                pause_file,
                next_id: 0,
                dropped: 0,
                link: None,
            }
        })
    }

    fn forwarding(&self) -> bool {
        self.link.unwrap_or(self.current.is_some()) && !self.admin_paused
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

/// An upstream other than the subscriber (JetStream,
/// [`super::jetstream`]) became usable (`true`) or not: the hub then
/// forwards exactly while it is usable and no admin pause is in effect,
/// and a subscriber no longer counts. A change to usable resumes the
/// manager (every head is sent at once); a change to unusable pauses it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpstreamLink(pub bool);

impl Handler<UpstreamLink> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, UpstreamLink(up): UpstreamLink, _: &mut Context<Self>) {
        let was = self.link.replace(up);
        if was == Some(up) {
            return;
        }
        if up {
            if self.forwarding() {
                self.tell_manager(true);
            }
        } else if !self.admin_paused {
            self.tell_manager(false);
        }
    }
}

/// Connects the hub to the manager it pauses and resumes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetManager(pub Addr<StatusUpdateManager<Native>>);

impl Handler<SetManager> for SubscriberHub {
    type Result = ();
    fn handle(&mut self, msg: SetManager, _: &mut Context<Self>) {
        self.manager = Some(msg.0);
        // An upstream that became usable before the manager was known.
        if self.forwarding() {
            self.tell_manager(true);
        }
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
        let previous = self.current.take().map(|previous| {
            let reason = format!("replaced by a new subscriber '{}'", msg.name);
            // The old stream ends with ABORTED; if its buffer is full it ends when dropped.
            let _ = previous.tx.try_send(Err(Status::aborted(reason)));
            previous.name
        });
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
            name: msg.name.clone(),
            since: SystemTime::now(),
            tx,
        });
        // One line, saying what caused the resume (or why there is none).
        let forwarding = self.forwarding();
        match (previous, forwarding) {
            (Some(previous), _) => info!(cause = "subscriber_replaced", %previous,
                subscriber = %msg.name, forwarding, "subscriber replaced"),
            (None, true) => info!(cause = "subscriber_back", subscriber = %msg.name,
                "subscriber connected; forwarding resumed"),
            (None, false) => info!(cause = "subscriber_back", subscriber = %msg.name,
                "subscriber connected; forwarding stays paused (operator pause)"),
        }
        if forwarding {
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
                if self.admin_paused {
                    info!(cause = "subscriber_gone", subscriber = %gone.name,
                        "subscriber disconnected; forwarding was paused by the operator already");
                } else {
                    info!(cause = "subscriber_gone", subscriber = %gone.name,
                        "subscriber disconnected; forwarding paused");
                }
            }
            metrics::gauge!(crate::metrics::SUBSCRIBERS).set(0.0);
            if !self.admin_paused {
                self.tell_manager(false);
            }
        }
    }
}

/// The admin `Pause`: forwarding stops until [`AdminResume`], also across
/// a restart when the hub keeps its pause in a file.
///
/// Forwarding stops at once; then the pause is saved (a pause already in
/// effect keeps its time). The error: it could not be saved, and would not
/// survive a restart (forwarding is paused all the same; a new `Pause`
/// tries again). The file is written on the actix thread: a `Pause` is rare.
#[derive(Debug, Message)]
#[rtype(result = "std::io::Result<()>")]
pub struct AdminPause;

impl Handler<AdminPause> for SubscriberHub {
    type Result = std::io::Result<()>;
    fn handle(&mut self, _: AdminPause, _: &mut Context<Self>) -> Self::Result {
        let since = *self.admin_paused_since.get_or_insert_with(SystemTime::now);
        self.admin_paused = true;
        self.tell_manager(false);
        info!(
            cause = "operator",
            "forwarding paused by the operator (Pause)"
        );
        match &self.pause_file {
            Some(file) => file.save(since),
            None => Ok(()),
        }
    }
}

/// The admin `Resume`: lifts an admin pause; with a subscriber connected,
/// every head is re-sent at once.
///
/// The kept pause is removed first: if it cannot be, the error is the
/// answer and nothing changes (still paused), so that a restart never
/// brings back a pause the operator was told had been lifted.
#[derive(Debug, Message)]
#[rtype(result = "std::io::Result<()>")]
pub struct AdminResume;

impl Handler<AdminResume> for SubscriberHub {
    type Result = std::io::Result<()>;
    fn handle(&mut self, _: AdminResume, _: &mut Context<Self>) -> Self::Result {
        if let Some(file) = &self.pause_file {
            file.clear()?;
        }
        self.admin_paused = false;
        self.admin_paused_since = None;
        if self.forwarding() {
            self.tell_manager(true);
            info!(
                cause = "operator",
                "forwarding resumed by the operator (Resume)"
            );
        } else {
            info!(
                cause = "operator",
                "operator pause lifted (Resume); forwarding waits for the upstream to connect"
            );
        }
        Ok(())
    }
}

/// What the hub knows for `GetStatus`: [`HubStatus`].
#[derive(Debug, Message)]
#[rtype(result = "HubStatus")]
pub struct GetHubStatus;

/// The reply to [`GetHubStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubStatus {
    /// Nothing is forwarded now: no upstream (the subscriber, or the
    /// [`UpstreamLink`] when there is one), an admin pause, or both.
    pub paused: bool,
    /// The current subscriber's name and when it subscribed.
    pub subscriber: Option<(String, SystemTime)>,
    /// When the admin pause in effect began; `None`: no admin pause.
    pub admin_paused_since: Option<SystemTime>,
}

impl Handler<GetHubStatus> for SubscriberHub {
    type Result = MessageResult<GetHubStatus>;
    fn handle(&mut self, _: GetHubStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(HubStatus {
            paused: !self.forwarding(),
            subscriber: self.current.as_ref().map(|c| (c.name.clone(), c.since)),
            admin_paused_since: self.admin_paused_since.filter(|_| self.admin_paused),
        })
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
