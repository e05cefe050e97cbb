//! `StreamActor<K>`: one actor per stream.
//!
//! **Owns** the stream's [`StreamState`] (pending queue, received and
//! acknowledged sets, terminated flag), its checkpoint file ([`StreamLog`],
//! absent for memory-only streams), its gate (`actors::gate`: effects held until their
//! records are durable), its [`Retry`] bookkeeping (the manager's shared
//! [`RetryTimers`] wakes it with [`Due`]) and the figures behind its stats.
//!
//! **Handles** from the manager: [`StreamUpdate`], [`StreamAck`],
//! [`SetPaused`], [`Close`], [`GetStats`], [`SyncNow`]; from the committer:
//! [`Durable`]; from the timer queue: [`Due`]. Requests carry the caller's
//! reply channel, and the stream answers the caller itself. `StreamUpdate`
//! and `StreamAck` also come straight from a
//! [`StreamHandle`](crate::messages::handle::StreamHandle) or a [`Forward`],
//! so the stream itself refuses them once it has ended.
//!
//! **Sends** [`Forward`] to the upstream recipient (each send of the head),
//! and [`StreamEnded`] to the manager once the stream is over (terminal ack,
//! or closed by a cleanup).
//!
//! **Checkpoint before effect.** Each record is staged before the state
//! changes, and every effect that must not precede durability waits in the
//! gate for the committer's round (see "Durability" in [`crate::store`]).
//! The stream hands its staged records over once the messages queued with
//! the one that wrote them are handled, so that an ack and the next update
//! that arrive together share a round. `Close` and `SyncNow` take the round
//! in flight back and write and sync it on the spot.
//!
//! **New files.** A new stream's file is created through the committer's
//! file work; the actor handles no message until it exists (`ctx.wait`),
//! and a failure answers every update and ends the stream.
//!
//! **Supervised.** A failed write or sync answers the affected callers with
//! the error and stops the actor; its supervisor restarts it at once and
//! [`Supervised::restarting`] reloads the stream from its file (truncating a
//! torn record), then it serves again and re-sends its head. If the reload
//! fails, requests get [`UpdateError::Unavailable`] (retryable) and each
//! new request tries the reload again.
//!
//! **Logs** ([`crate::logs`]) each storage failure once, at ERROR, with the
//! file's path and errno (a file not created: with the first update it
//! fails), every request it refuses itself at WARN (rate-limited), and a
//! duplicate at DEBUG.
//!
//! **Mailbox figures.** Every handler first counts the message it takes in
//! the stream's [`MailboxFigures`] (shared with the manager and whatever
//! else sends to the stream, which count what they enqueue): that count is
//! the stream's mailbox backlog and its messages handled. A request a caller
//! waits on carries the instant it was enqueued, and the handler records
//! its wait in `sum_stream_mailbox_wait_seconds`; a [`GetStats`]'s own wait
//! is the stream's `mailbox_oldest_wait`.
//!
//! **Memory.** A manager may run hundreds of thousands of idle streams, so
//! an idle stream is small: what its streams share sits behind one `Arc`
//! ([`StreamShared`]), the encode buffer is per thread, the gate and rare
//! faults are boxed only while they exist, and queued updates are record
//! bytes (a test holds the actor's size).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::OneshotSender;
use actix::prelude::*;
use actix::{WeakAddr, WeakRecipient};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::gate::Gate;
use super::timers::{Due, RetryTimers};
use crate::error::{AckError, StatsError, UpdateError};
use crate::kind::{encode_framed, RecordRef, StatusUuid, UpdateKind};
use crate::logs;
use crate::messages::forward::Forward;
use crate::messages::mailbox::MailboxFigures;
use crate::messages::manager::{AckOutcome, StreamEnded, StreamStats, UpdateOutcome};
use crate::messages::stream::{Close, GetStats, SetPaused, StreamAck, StreamUpdate, SyncNow};
use crate::metrics::StreamMetrics;
use crate::store::{
    CommitResult, Committer, FaultPlan, FileCache, StoreError, StreamLog, SyncPolicy, Ticket,
    TicketSync,
};
use crate::stream::recover::recover_file;
use crate::stream::retry::{FirstSend, OnDue, Retry, Woken};
use crate::stream::{RetryPolicy, StreamState, UpdateDecision};

thread_local! {
    /// The encode buffer of every stream on this thread (records are encoded
    /// and written one at a time), so idle streams hold no buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What every stream of a manager shares, behind one `Arc`.
#[derive(Debug)]
pub struct StreamShared<K: UpdateKind> {
    /// Settings.
    pub settings: StreamSettings,
    /// Where forwards go.
    pub forward: Recipient<Forward<K>>,
    /// Where the end of a stream is reported (weak: streams must not keep a
    /// dropped manager alive).
    pub manager: WeakRecipient<StreamEnded<K>>,
    /// The retry timers of every stream.
    pub timers: Arc<RetryTimers<StreamActor<K>>>,
    /// The metrics every stream records.
    pub metrics: StreamMetrics,
}

/// What every stream of a manager shares.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The retry schedule.
    pub retry: RetryPolicy,
    /// When an append is answered.
    pub sync: SyncPolicy,
    /// Most updates pending at once.
    pub max_pending: usize,
    /// Delete the file once the stream ends.
    pub remove_finished: bool,
    /// Storage faults to inject (tests only).
    pub faults: Option<FaultPlan>,
    /// Where a reload's non-strict recovery quarantines what it cannot use.
    pub quarantine_dir: Option<PathBuf>,
    /// Runs the group-commit rounds of `batch`.
    pub committer: Committer,
    /// The bounded cache of open stream files.
    pub files: FileCache,
}

impl StreamSettings {
    /// Puts a stream's log under the shared file bound (and injected
    /// faults), where the committer reaches it to write its records.
    pub fn attach(&self, log: &mut StreamLog) {
        log.set_faults(self.faults.clone());
        log.set_cache(&self.files);
    }

    /// [`attach`](Self::attach) for a recovered log: its file stays open
    /// only while the bound has room (see [`StreamLog::park_in`]).
    pub fn attach_recovered(&self, log: &mut StreamLog) {
        log.set_faults(self.faults.clone());
        log.park_in(&self.files);
    }
}

/// An effect that waits for the file's unsynced bytes to be synced.
#[derive(Debug)]
enum Effect {
    ReplyUpdate(
        Option<OneshotSender<Result<UpdateOutcome, UpdateError>>>,
        Result<UpdateOutcome, UpdateError>,
        StatusUuid,
    ),
    ReplyAck(
        Option<OneshotSender<Result<AckOutcome, AckError>>>,
        Result<AckOutcome, AckError>,
        StatusUuid,
    ),
    /// Forward the head.
    ForwardHead,
    End,
}

impl Effect {
    /// The status uuid of the request this effect answers, if it answers one.
    fn request(&self) -> Option<StatusUuid> {
        match self {
            Effect::ReplyUpdate(_, _, uuid) | Effect::ReplyAck(_, _, uuid) => Some(*uuid),
            Effect::ForwardHead | Effect::End => None,
        }
    }
}

/// The actor of one stream; see the module docs.
#[derive(Debug)]
pub struct StreamActor<K: UpdateKind> {
    state: StreamState<K>,
    log: Option<StreamLog>,
    path: Option<Arc<Path>>,
    /// What every stream of the manager shares (one allocation for all).
    shared: Arc<StreamShared<K>>,
    /// `Close` decides whether the file is removed, over the setting.
    remove_on_end: Option<bool>,
    paused: bool,
    retry: Retry,
    /// When the head last sent was first sent (`sum_ack_latency_seconds`);
    /// 4 bytes, so that the actor stays within its size budget.
    first_send: FirstSend,
    /// Effects held until the round that makes their records durable.
    gate: Gate<Effect>,
    /// Bumped by each restart, so a late commit result of a failed
    /// incarnation is ignored. 16 bits (wrapping) leave room for
    /// `first_send`: a round in flight never sees 65 536 restarts.
    incarnation: u16,
    /// Panics since a message was last handled without one: the backoff
    /// of the next restart grows with them.
    panics: u8,
    /// This stream's share of the pending gauge.
    reported_pending: u32,
    flush_scheduled: bool,
    /// Why the stream cannot serve, if it cannot (boxed: rare).
    fault: Option<Box<Fault>>,
    /// The file is still to be created (off this thread) when the actor starts.
    needs_file: bool,
    ended: bool,
    /// This actor's own address, weak: commit tickets and the retry timer
    /// carry a clone of it, which allocates nothing (a new strong address
    /// allocates twice) and keeps no stopped actor alive.
    me: WeakAddr<Self>,
    /// The count of this actor's mailbox (see the module docs).
    mailbox: Arc<MailboxFigures>,
}

/// Why a stream restarts (the `cause` of `sum_stream_restarts_total`).
#[derive(Debug, Clone, Copy)]
enum Restart {
    /// A write or sync failed.
    Storage,
    /// A handler panicked.
    Panic,
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Why a stream cannot serve.
#[derive(Debug)]
enum Fault {
    /// Reloading from the file after a storage fault failed; each new
    /// request tries again, and gets a retryable error meanwhile.
    Reload,
    /// The stream panicked again soon after a restart: it reloads from its
    /// file only once `until` has passed; requests get a retryable error
    /// meanwhile.
    Backoff {
        /// When the stream reloads.
        until: Instant,
        /// The panics in a row that led to it.
        panics: u8,
    },
    /// Creating the file failed: every update gets this, and the stream
    /// ends. `logged`: the failure was logged (with the first update's uuid).
    Create {
        /// What every update is answered.
        err: UpdateError,
        /// Logged already.
        logged: bool,
    },
}

/// Everything a stream actor starts from.
#[derive(Debug)]
pub struct StreamInit<K: UpdateKind> {
    /// The state (empty for a new stream, replayed for a recovered one).
    pub state: StreamState<K>,
    /// The open file, for a checkpointed stream.
    pub log: Option<StreamLog>,
    /// The file's path, for a checkpointed stream.
    pub path: Option<PathBuf>,
    /// What every stream of the manager shares.
    pub shared: Arc<StreamShared<K>>,
    /// Whether forwarding is paused.
    pub paused: bool,
    /// The count of the actor's mailbox, shared with whoever sends to it;
    /// its own to each actor, so it also tells this incarnation of the
    /// stream from another ([`StreamEnded`]).
    pub mailbox: Arc<MailboxFigures>,
}

impl<K: UpdateKind> StreamActor<K> {
    /// Starts the actor under a supervisor on the current arbiter, with an
    /// unbounded mailbox (so the manager's sends are enqueued in order).
    pub fn start(init: StreamInit<K>) -> Addr<Self> {
        actix::Supervisor::start(move |ctx: &mut Context<Self>| {
            ctx.set_mailbox_capacity(0);
            // A checkpointed stream handed no file creates it when it starts.
            let needs_file = init.log.is_none() && init.state.checkpointed() && init.path.is_some();
            // One allocation for the path, shared with the log.
            let path = init
                .log
                .as_ref()
                .map(StreamLog::path_arc)
                .or(init.path.map(Arc::from));
            StreamActor {
                state: init.state,
                log: init.log,
                path,
                shared: init.shared,
                remove_on_end: None,
                paused: init.paused,
                retry: Retry::default(),
                first_send: FirstSend::NONE,
                gate: Gate::default(),
                incarnation: 0,
                panics: 0,
                flush_scheduled: false,
                fault: None,
                needs_file,
                ended: false,
                reported_pending: 0,
                me: ctx.address().downgrade(),
                mailbox: init.mailbox,
            }
        })
    }

    /// The stream's tracing span (`debug` level: nearly free when not
    /// enabled), entered by every handler so that each event names the
    /// stream.
    fn span(&self) -> tracing::Span {
        tracing::debug_span!("stream", kind = K::KIND, id = %self.state.id())
    }

    fn name(&self) -> String {
        self.state.id().to_string()
    }

    /// Counts the message a handler takes from the mailbox: first thing in
    /// every handler.
    fn took(&self) {
        self.mailbox.took();
    }

    /// [`took`](Self::took), for a request enqueued at `sent_at`: records
    /// how long it waited in the mailbox, and returns when it was taken.
    fn took_request(&self, sent_at: Instant) -> Instant {
        self.mailbox.took();
        let now = Instant::now();
        self.shared
            .metrics
            .mailbox_wait_seconds
            .record(now.saturating_duration_since(sent_at));
        now
    }

    /// Encodes `record` and appends it to the file (a stream without a file
    /// appends nothing), then hands the encoded body to `then`. Under
    /// write-behind the record is only staged; otherwise it is written, and
    /// under `always` durable on return. Whatever is not durable yet gets a
    /// flush scheduled.
    fn append<T>(
        &mut self,
        record: RecordRef<'_, K::Update>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &[u8]) -> T,
    ) -> Result<T, StoreError> {
        let mut frame = SCRATCH.with(|scratch| std::mem::take(&mut *scratch.borrow_mut()));
        frame.clear();
        let result = self
            .append_frame(record, &mut frame, ctx)
            .map(|()| then(self, &frame[crate::store::framing::LENGTH_PREFIX_BYTES..]));
        SCRATCH.with(|scratch| *scratch.borrow_mut() = frame);
        result
    }

    fn append_frame(
        &mut self,
        record: RecordRef<'_, K::Update>,
        frame: &mut Vec<u8>,
        ctx: &mut Context<Self>,
    ) -> Result<(), StoreError> {
        if let Err(err) = encode_framed::<K>(record, frame) {
            return Err(StoreError::RecordTooLarge {
                path: self
                    .path
                    .as_deref()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                len: match err {
                    crate::kind::InvalidUpdate::TooLarge { len } => len,
                    _ => 0,
                },
            });
        }
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        log.stage(frame, self.gate.staged())?;
        // Flushed once the messages queued now are handled, so that an ack
        // and the next update that arrive together share one round.
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.spawn(actix::fut::ready(()).map(|(), act: &mut Self, ctx| {
                let _ = act.guarded("flush", ctx, |act, _| act.flush());
            }));
        }
        Ok(())
    }

    /// Runs `effect` now if the file holds nothing unsynced, else after the
    /// next flush.
    fn effect(&mut self, effect: Effect) {
        let unsynced = self.log.as_ref().is_some_and(StreamLog::needs_sync);
        if let Some(effect) = self.gate.hold(effect, unsynced) {
            self.run(effect);
        }
    }

    fn run(&mut self, effect: Effect) {
        match effect {
            Effect::ReplyUpdate(tx, result, _) => self.answer_update(tx, result),
            Effect::ReplyAck(tx, result, _) => self.answer_ack(tx, result),
            Effect::ForwardHead => {
                self.retry.fresh();
                self.send_head();
            }
            Effect::End => self.end(),
        }
    }

    /// Hands the unsynced bytes to the committer; what waited for them runs
    /// when its round is done ([`Durable`]). With a round already in flight,
    /// the next one is submitted when that one returns.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        if self.gate.in_flight().is_some() {
            return;
        }
        let (Some(log), Some(path)) = (self.log.as_mut(), self.path.as_ref()) else {
            return self.run_waiting();
        };
        if !log.take_unsynced() {
            return self.run_waiting();
        }
        let write = self
            .gate
            .begin_round(std::time::Instant::now(), |staged| log.hand_off(staged));
        let me = self.me.clone();
        let mailbox = self.mailbox.clone();
        let incarnation = self.incarnation;
        self.shared.settings.committer.submit(Ticket {
            path: path.clone(),
            device: log.device(),
            write,
            sync: TicketSync::for_policy(log.policy()),
            faults: log.faults().cloned(),
            home: None,
            done: Box::new(move |result| {
                // A stopped actor has nobody left to tell.
                if let Some(addr) = me.upgrade() {
                    mailbox.enqueued();
                    let sent = addr.try_send(Durable {
                        result,
                        incarnation,
                    });
                    if sent.is_err() {
                        mailbox.unsent();
                    }
                }
            }),
        });
    }

    fn run_waiting(&mut self) {
        for effect in self.gate.take_waiting() {
            self.run(effect);
        }
    }

    /// Syncs this stream's file on the spot and runs every waiting effect
    /// (cleanup and shutdown, where nothing may stay pending). Under
    /// write-behind it first writes whatever the committer has not: the
    /// round in flight (taken back from the committer) and the staged frames.
    fn sync_here(&mut self, ctx: &mut Context<Self>) {
        let synced = match self.log.as_mut() {
            Some(log) => {
                let (flight, staged) = self.gate.take_back();
                log.settle(flight.as_ref(), staged)
                    .and_then(|()| log.force_sync())
            }
            None => Ok(()),
        };
        match synced {
            Ok(()) => {
                // A late answer of the round taken back is not for us.
                self.incarnation = self.incarnation.wrapping_add(1);
                self.gate.all_covered();
                while let Some(effect) = self.gate.next_covered() {
                    self.run(effect);
                }
            }
            Err(err) => {
                self.storage_fault(
                    None,
                    Arc::new(err),
                    "checkpoint sync failed; restarting the stream",
                );
                // The file may end short of what the stream holds: reload it.
                self.restart(ctx, Restart::Storage);
            }
        }
    }

    /// Writing `uuid`'s record failed: `answer` tells its caller, everything
    /// waiting gets the error too, and the actor stops, so its supervisor
    /// restarts it from its file.
    fn write_failed(
        &mut self,
        uuid: StatusUuid,
        err: StoreError,
        ctx: &mut Context<Self>,
        answer: impl FnOnce(String, Arc<StoreError>),
    ) {
        let err = Arc::new(err);
        answer(self.name(), err.clone());
        self.storage_fault(
            Some(uuid),
            err,
            "checkpoint write failed; restarting the stream",
        );
        self.restart(ctx, Restart::Storage);
    }

    /// A write or sync failed: logs it, once, naming the first request it
    /// fails (`answered`, a request already answered with it, else the
    /// first one waiting), and answers everything that waited with it.
    fn storage_fault(&mut self, answered: Option<StatusUuid>, err: Arc<StoreError>, what: &str) {
        let effects = self.gate.take_all();
        let waiting = effects.iter().filter_map(Effect::request);
        let first = answered.or_else(|| waiting.clone().next());
        let requests = usize::from(answered.is_some()) + waiting.count();
        logs::storage_failed(
            &self.state.id(),
            first.as_ref().map(|u| u as &dyn std::fmt::Display),
            &err,
            requests,
            what,
        );
        self.answer_failed(effects, err);
    }

    /// Answers the replies among `effects` with `err`; drops the rest.
    fn answer_failed(&mut self, effects: Vec<Effect>, err: Arc<StoreError>) {
        self.answer_all(
            effects,
            |stream, uuid| UpdateError::Storage {
                stream,
                uuid,
                source: err.clone(),
            },
            |stream, uuid| AckError::Storage {
                stream,
                uuid,
                source: err.clone(),
            },
        );
    }

    /// Answers every reply among `effects` with the error `update` or `ack`
    /// makes from the stream and the uuid; drops the other effects.
    fn answer_all(
        &self,
        effects: Vec<Effect>,
        update: impl Fn(String, String) -> UpdateError,
        ack: impl Fn(String, String) -> AckError,
    ) {
        for effect in effects {
            match effect {
                Effect::ReplyUpdate(tx, _, uuid) => {
                    self.answer_update(tx, Err(update(self.name(), uuid.to_string())));
                }
                Effect::ReplyAck(tx, _, uuid) => {
                    self.answer_ack(tx, Err(ack(self.name(), uuid.to_string())));
                }
                Effect::ForwardHead | Effect::End => {}
            }
        }
    }

    /// Runs `handle`, the work of handling the message named `what`. A panic
    /// in it does not kill the actor: every request the stream holds is
    /// answered with an error, the stream restarts from its file (as after
    /// a storage fault), and the panic's message comes back as `Err` for
    /// the caller's own answer.
    fn guarded<R>(
        &mut self,
        what: &'static str,
        ctx: &mut Context<Self>,
        handle: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Result<R, String> {
        let (inject, kill) = self
            .shared
            .settings
            .faults
            .as_ref()
            .map_or((false, false), |f| (f.panics_now(what), f.kills_now(what)));
        if kill {
            panic!("injected panic that stops the stream's actor, in its {what} handler");
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if inject {
                panic!("injected panic in the stream's {what} handler");
            }
            handle(self, ctx)
        }));
        match ran {
            Ok(done) => {
                self.panics = 0;
                Ok(done)
            }
            Err(payload) => {
                let panic = panic_message(payload.as_ref());
                self.panics = self.panics.saturating_add(1);
                error!(stream = %self.name(), message = what, %panic, panics = self.panics,
                    "stream actor panicked; restarting the stream from its file");
                let held = self.gate.take_all();
                self.answer_all(
                    held,
                    |stream, uuid| UpdateError::Panicked {
                        stream,
                        uuid,
                        panic: panic.clone(),
                    },
                    |stream, uuid| AckError::Panicked {
                        stream,
                        uuid,
                        panic: panic.clone(),
                    },
                );
                self.restart(ctx, Restart::Panic);
                Err(panic)
            }
        }
    }

    /// Stops the actor, so that its supervisor restarts it and
    /// [`Supervised::restarting`] reloads the stream from its file.
    fn restart(&mut self, ctx: &mut Context<Self>, cause: Restart) {
        let metrics = &self.shared.metrics;
        match cause {
            Restart::Storage => {
                metrics.storage_errors.increment(1);
                metrics.restarts_storage.increment(1);
            }
            Restart::Panic => metrics.restarts_panic.increment(1),
        }
        ctx.stop();
    }

    /// Sends the head upstream and arms the retry timer for it.
    fn send_head(&mut self) {
        self.retry.cancel();
        if self.paused || self.ended {
            return;
        }
        let (uuid, update) = match self.state.forward_copy() {
            None => return,
            Some(Ok(head)) => head,
            Some(Err(err)) => {
                // The record was encoded by this process or decoded from the
                // file already; failing now means memory was corrupted.
                error!(stream = %self.name(), cause = %err, "the queued head no longer decodes; not forwarding it");
                return;
            }
        };
        let now = Instant::now();
        let sent = self
            .retry
            .send(uuid, now, &self.shared.settings.retry, fastrand::f64());
        let attempt = sent.attempt;
        if attempt == 0 {
            // This head's first send: its ack's latency counts from here.
            self.first_send = self
                .state
                .head()
                .map_or(FirstSend::NONE, |head| FirstSend::at(head.since, now));
        }
        if sent.left_budget {
            self.shared.metrics.over_retry_budget.decrement(1.0);
        }
        if sent.over_budget {
            let warn_after = self.shared.settings.retry.warn_after;
            warn!(stream = %self.name(), %uuid, attempt, warn_after,
                "update retried past retry.warn_after without an acknowledgement; still retrying");
            self.shared.metrics.retry_budget_exceeded.increment(1);
            self.shared.metrics.over_retry_budget.increment(1.0);
        }
        debug!(stream = %self.name(), %uuid, attempt, "forwarding");
        self.shared.metrics.forwards.increment(1);
        let msg = Forward::new(
            self.state.id().clone(),
            update,
            attempt,
            uuid,
            self.me.clone().into(),
            self.mailbox.clone(),
        );
        match self.shared.forward.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => self.shared.forward.do_send(msg),
            Err(SendError::Closed(_)) => {
                warn!(stream = %self.name(), %uuid, "upstream recipient is closed; will retry");
            }
        }
        if let Some(at) = sent.wake {
            self.shared
                .timers
                .wake_at(at, self.me.clone(), &self.mailbox);
        }
    }

    /// Arms the retry timer: `on_due` runs once `delay` has passed, unless
    /// the timer is cancelled or re-armed first.
    fn arm(&mut self, delay: Duration, on_due: OnDue) {
        if let Some(at) = self.retry.arm(Instant::now() + delay, on_due) {
            self.shared
                .timers
                .wake_at(at, self.me.clone(), &self.mailbox);
        }
    }

    /// Takes this stream out of the over-budget gauge (it ended).
    fn leave_budget_alarm(&mut self) {
        if self.retry.leave_budget() {
            self.shared.metrics.over_retry_budget.decrement(1.0);
        }
    }

    /// The retry timer went off: resend the head, unless it changed since it was sent.
    fn on_timer(&mut self) {
        if self.paused || self.ended {
            return;
        }
        let head = self.state.head().map(|h| h.uuid);
        if !self.retry.resend(head) {
            return;
        }
        if let Some(uuid) = head {
            info!(stream = %self.name(), %uuid, "resending unacknowledged update");
        }
        self.shared.metrics.retries.increment(1);
        self.send_head();
    }

    /// The stream is over: stop retrying, close (or remove) the file, tell
    /// the manager.
    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.retry.cancel();
        self.leave_budget_alarm();
        self.report_pending();
        if let Some(log) = self.log.take() {
            if self
                .remove_on_end
                .unwrap_or(self.shared.settings.remove_finished)
            {
                if let Err(err) = log.remove() {
                    warn!(stream = %self.name(), cause = %err, "could not remove the finished stream's file");
                }
            }
        }
        let ended = StreamEnded {
            stream: self.state.id().clone(),
            mailbox: self.mailbox.clone(),
        };
        let sent = self
            .shared
            .manager
            .upgrade()
            .is_some_and(|manager| manager.try_send(ended).is_ok());
        if !sent {
            debug!(stream = %self.name(), "manager gone before the stream ended");
        }
    }

    /// Creates the new stream's file on the committer's file thread; until it exists
    /// the actor handles no message (`ctx.wait`), so its first update waits
    /// for it. A failure answers every update and ends the stream.
    fn create_file(&mut self, path: Arc<Path>, ctx: &mut Context<Self>) {
        let settings = self.shared.settings.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: crate::store::Job = Box::new(move |syncs| {
            let created = StreamLog::create_unsynced(path, settings.sync);
            if let Ok(new) = &created {
                // One sync of the directory for every file the batch created.
                syncs.sync_later(new.dirs());
            }
            Box::new(move |synced| {
                // Into the file cache here, so that closing the file it
                // evicts is this thread's work, not the actor thread's.
                let _ = tx.send(created.and_then(|new| new.finish(synced)).map(|mut log| {
                    settings.attach(&mut log);
                    log
                }));
            })
        });
        if let Err(job) = self.shared.settings.committer.run_blocking(job) {
            // No file thread: create it here.
            crate::store::run_jobs(vec![job]);
        }
        let create = async move { rx.await.map_err(|_| "the file thread stopped") };
        ctx.wait(
            actix::fut::wrap_future(create).map(|created, act: &mut Self, ctx| {
                let _ = act.guarded("file created", ctx, |act, _| act.file_created(created));
            }),
        );
    }

    /// The new stream's file was created (or not): see [`create_file`](Self::create_file).
    fn file_created(&mut self, created: Result<Result<StreamLog, StoreError>, &'static str>) {
        let stream = self.name();
        let err = match created {
            Ok(Ok(log)) => {
                self.log = Some(log);
                return;
            }
            Ok(Err(StoreError::AlreadyExists { path })) => UpdateError::FileExists { stream, path },
            Ok(Err(err)) => UpdateError::CreateFailed {
                stream,
                source: Arc::new(err),
            },
            Err(gone) => {
                let err = StoreError::Create {
                    path: self
                        .path
                        .as_deref()
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    source: std::io::Error::other(gone),
                };
                UpdateError::CreateFailed {
                    stream,
                    source: Arc::new(err),
                }
            }
        };
        // Logged by the first update it answers, which names its uuid.
        self.fault = Some(Box::new(Fault::Create { err, logged: false }));
        // Nothing was written: the stream never existed.
        self.path = None;
        self.end();
    }

    /// Rebuilds the stream from its file after a storage fault.
    fn reload(&mut self) -> Result<(), String> {
        let Some(path) = self.path.clone() else {
            self.fault = None;
            return Ok(());
        };
        self.log = None;
        let id = self.state.id().clone();
        let framework = self.state.framework_id().map(str::to_string);
        let now = Instant::now();
        let result = recover_file::<K>(id.clone(), &path, false, self.shared.settings.sync, now, self.shared.settings.quarantine_dir.as_deref()).and_then(|found| {
            Ok(match found {
                Some(recovered) => {
                    if let Some(err) = recovered.error {
                        warn!(stream = %id, cause = %err, "truncated a corrupt record while reloading");
                    }
                    (recovered.replayed.state, recovered.log)
                }
                None => (StreamState::new(id.clone(), true, framework), StreamLog::create(&path, self.shared.settings.sync)?),
            })
        });
        match result {
            Ok((state, mut log)) => {
                self.shared.settings.attach(&mut log);
                info!(stream = %id, pending = state.pending().len(), "stream reloaded from its file");
                self.state = state;
                self.log = Some(log);
                self.fault = None;
                Ok(())
            }
            Err(err) => {
                let reason = format!("reloading from its file failed: {err}");
                error!(stream = %id, cause = %err, "stream reload failed; requests get a retryable error");
                self.fault = Some(Box::new(Fault::Reload));
                Err(reason)
            }
        }
    }

    /// `Err(reason)` while the stream cannot serve.
    fn healthy(&mut self) -> Result<(), String> {
        match self.fault.as_deref() {
            Some(Fault::Reload) => self.reload(),
            Some(Fault::Backoff { until, panics }) => {
                let left = until.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    return Err(format!(
                        "restarting after {panics} panics in a row; it reloads from its file in {left:?}"
                    ));
                }
                self.fault = Some(Box::new(Fault::Reload));
                self.reload()
            }
            Some(Fault::Create { .. }) | None => Ok(()),
        }
    }

    /// Moves the global pending gauge by this stream's change since the last report.
    fn report_pending(&mut self) {
        let now = if self.ended {
            0
        } else {
            self.state.pending().len()
        };
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        if now != self.reported_pending {
            self.shared.metrics.move_pending(self.reported_pending, now);
            self.reported_pending = now;
        }
    }

    /// [`StreamUpdate`], taken from the mailbox at `now`: everything but
    /// answering a panic. `reply` is taken once the update is answered (or
    /// its answer held in the gate).
    fn update(
        &mut self,
        msg: StreamUpdate<K>,
        now: Instant,
        reply: &mut Option<OneshotSender<Result<UpdateOutcome, UpdateError>>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(Fault::Create { err, logged }) = self.fault.as_deref_mut() {
            // One failure, logged once: the updates queued behind the first
            // get the same answer.
            if !std::mem::replace(logged, true) {
                match &*err {
                    UpdateError::CreateFailed { source, .. } => logs::storage_failed(
                        &self.state.id(),
                        Some(&msg.uuid),
                        source,
                        1,
                        "cannot create the new stream's checkpoint file; the stream is not created",
                    ),
                    other => logs::update_rejected(&self.state.id(), &msg.uuid, other),
                }
            }
            let err = err.clone();
            return self.answer_update(reply.take(), Err(err));
        }
        let StreamUpdate {
            update,
            uuid,
            checkpoint,
            reply: _,
            sent_at: _,
        } = msg;
        if self.ended {
            // Closed by a cleanup (or its manager stopped) and sent to
            // directly: its file is closed, nothing more is accepted.
            let err = UpdateError::StreamClosing {
                stream: self.name(),
                uuid: uuid.to_string(),
            };
            logs::update_rejected(&self.state.id(), &uuid, &err);
            return self.answer_update(reply.take(), Err(err));
        }
        if let Err(reason) = self.healthy() {
            return self.answer_update(
                reply.take(),
                Err(UpdateError::Unavailable {
                    stream: self.name(),
                    reason,
                }),
            );
        }
        let result = match self.state.check_update(&update, uuid, checkpoint) {
            Err(err) => Err(err),
            Ok(UpdateDecision::Duplicate(why)) => {
                debug!(stream = %self.name(), %uuid, ?why, "ignoring duplicate {}", K::LABEL);
                Ok(UpdateOutcome::Duplicate)
            }
            Ok(UpdateDecision::Accept)
                if self.state.pending().len() >= self.shared.settings.max_pending =>
            {
                Err(UpdateError::QueueFull {
                    stream: self.name(),
                    uuid: uuid.to_string(),
                    limit: self.shared.settings.max_pending,
                })
            }
            Ok(UpdateDecision::Accept) => {
                let applied = self.append(RecordRef::Update(&update), ctx, |act, body| {
                    act.state.apply_record(&update, body, uuid, now)
                });
                let effect = match applied {
                    Ok(effect) => effect,
                    Err(err) => {
                        self.shared.metrics.updates_rejected.increment(1);
                        return self.write_failed(uuid, err, ctx, |stream, source| {
                            send(
                                reply.take(),
                                Err(UpdateError::Storage {
                                    stream,
                                    uuid: uuid.to_string(),
                                    source,
                                }),
                            );
                        });
                    }
                };
                // Forwarded from this copy, now or once it is the head.
                self.state.keep_arrived(uuid, update);
                if effect.forward_head {
                    self.effect(Effect::ForwardHead);
                }
                Ok(UpdateOutcome::Accepted)
            }
        };
        if let Err(err) = &result {
            logs::update_rejected(&self.state.id(), &uuid, err);
        }
        self.report_pending();
        // Counted when answered (`answer_update`): an update whose sync
        // then fails is answered, and counted, as rejected.
        self.effect(Effect::ReplyUpdate(reply.take(), result, uuid));
    }

    /// Answers an update and counts it in `sum_updates_total` by the
    /// answer: every update a stream takes is counted here, once.
    fn answer_update(
        &self,
        tx: Option<OneshotSender<Result<UpdateOutcome, UpdateError>>>,
        result: Result<UpdateOutcome, UpdateError>,
    ) {
        let outcomes = &self.shared.metrics;
        match &result {
            Ok(UpdateOutcome::Accepted) => &outcomes.updates_accepted,
            Ok(UpdateOutcome::Duplicate) => &outcomes.updates_duplicate,
            Err(_) => &outcomes.updates_rejected,
        }
        .increment(1);
        send(tx, result);
    }

    /// [`answer_update`](Self::answer_update) for an ack (`sum_acks_total`).
    fn answer_ack(
        &self,
        tx: Option<OneshotSender<Result<AckOutcome, AckError>>>,
        result: Result<AckOutcome, AckError>,
    ) {
        let outcomes = &self.shared.metrics;
        if result.is_ok() {
            &outcomes.acks_accepted
        } else {
            &outcomes.acks_rejected
        }
        .increment(1);
        send(tx, result);
    }

    /// The head `uuid` is acknowledged at `now`: records the time since its
    /// first send in `sum_ack_latency_seconds` (nothing if it was never
    /// sent, or its stream restarted since), once.
    fn record_ack_latency(&mut self, uuid: StatusUuid, now: Instant) {
        let first = std::mem::take(&mut self.first_send);
        if self.retry.head() != Some(uuid) {
            return;
        }
        let Some(head) = self.state.head() else {
            return;
        };
        if let Some(latency) = first.elapsed(head.since, now) {
            self.shared.metrics.ack_latency_seconds.record(latency);
        }
    }

    /// [`StreamAck`] for `uuid`: everything but answering a panic, as
    /// [`update`](Self::update).
    fn acknowledge(
        &mut self,
        uuid: StatusUuid,
        now: Instant,
        reply: &mut Option<OneshotSender<Result<AckOutcome, AckError>>>,
        ctx: &mut Context<Self>,
    ) {
        if self.ended {
            // As the manager answers for a stream it forgot or is closing.
            let err = AckError::UnknownStream {
                stream: self.name(),
                uuid: uuid.to_string(),
            };
            logs::ack_rejected(&self.state.id(), &uuid, &err);
            return self.answer_ack(reply.take(), Err(err));
        }
        if let Err(reason) = self.healthy() {
            return self.answer_ack(
                reply.take(),
                Err(AckError::Unavailable {
                    stream: self.name(),
                    reason,
                }),
            );
        }
        let checked = match self.state.check_ack(uuid) {
            Err(AckError::NothingPending { stream, uuid }) if self.state.terminated() => {
                Err(AckError::UnknownStream { stream, uuid })
            }
            other => other,
        };
        let result = match checked {
            Err(err) => Err(err),
            Ok(()) => {
                if let Err(err) = self.append(RecordRef::Ack(uuid), ctx, |_, _| ()) {
                    self.shared.metrics.acks_rejected.increment(1);
                    return self.write_failed(uuid, err, ctx, |stream, source| {
                        send(
                            reply.take(),
                            Err(AckError::Storage {
                                stream,
                                uuid: uuid.to_string(),
                                source,
                            }),
                        );
                    });
                }
                self.retry.cancel();
                self.record_ack_latency(uuid, now);
                match self.state.apply_ack() {
                    Some(effect) => {
                        if effect.dropped > 0 {
                            warn!(stream = %self.name(), dropped = effect.dropped,
                                "acknowledged a terminal {} but updates are still pending; dropping them", K::LABEL);
                        }
                        if effect.terminated {
                            self.effect(Effect::End);
                        } else if effect.forward_head {
                            self.effect(Effect::ForwardHead);
                        }
                        Ok(AckOutcome {
                            stream_terminated: effect.terminated,
                        })
                    }
                    // check_ack saw a head; this cannot be reached.
                    None => Err(AckError::NothingPending {
                        stream: self.name(),
                        uuid: uuid.to_string(),
                    }),
                }
            }
        };
        if let Err(err) = &result {
            logs::ack_rejected(&self.state.id(), &uuid, err);
        }
        self.report_pending();
        // Counted when answered (`answer_ack`).
        self.effect(Effect::ReplyAck(reply.take(), result, uuid));
    }

    /// The figures `request` asks for; it waited `waited` in the mailbox.
    fn stats(&self, request: &GetStats<K>, waited: Duration) -> StreamStats<K> {
        let now = Instant::now();
        StreamStats {
            stream: self.state.id().clone(),
            framework_id: self.state.framework_id().map(str::to_string),
            checkpointed: self.state.checkpointed(),
            pending: self.state.pending().len(),
            received: self.state.received_count(),
            acknowledged: self.state.acknowledged_count(),
            terminated: self.state.terminated(),
            attempt: self.retry.attempt(),
            next_retry_in: self
                .retry
                .due()
                .map(|due| due.saturating_duration_since(now)),
            oldest_pending_age: self
                .state
                .head()
                .map(|h| now.saturating_duration_since(h.since)),
            checkpoint_bytes: self.log.as_ref().map_or(0, StreamLog::len),
            mailbox_backlog: request.queued_ahead,
            messages_handled: self.mailbox.handled(),
            mailbox_oldest_wait: waited,
            pending_updates: if request.with_pending {
                self.state
                    .pending()
                    .iter()
                    .filter_map(|p| p.update::<K>().ok())
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

fn send<T>(tx: Option<OneshotSender<T>>, value: T) {
    if let Some(tx) = tx {
        // The caller may have stopped waiting; nothing to do then.
        let _ = tx.send(value);
    }
}

impl<K: UpdateKind> Actor for StreamActor<K> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _ = self.guarded("start", ctx, Self::begin);
    }
}

impl<K: UpdateKind> StreamActor<K> {
    /// Starts serving: creates a new stream's file, or forwards the head of
    /// a recovered or restarted one.
    fn begin(&mut self, ctx: &mut Context<Self>) {
        if !ctx.connected() {
            // Nobody can reach this stream: its manager dropped it before it
            // ran (a strict recovery that failed after creating it). It
            // stops having done nothing.
            ctx.stop();
            return;
        }
        if std::mem::take(&mut self.needs_file) {
            if let Some(path) = self.path.clone() {
                return self.create_file(path, ctx);
            }
        }
        if matches!(self.fault.as_deref(), Some(Fault::Backoff { .. })) {
            // The head goes out once the backoff is over and the stream reloaded.
            return;
        }
        self.report_pending();
        if self.state.terminated() {
            self.end();
        } else if self.state.head().is_some() {
            self.effect(Effect::ForwardHead);
        }
    }
}

impl<K: UpdateKind> Supervised for StreamActor<K> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        // Everything that waited was answered before the stop; a round in
        // flight is abandoned.
        self.gate = Gate::default();
        self.incarnation = self.incarnation.wrapping_add(1);
        // The wake-up asked for stays valid: the address survives the restart.
        self.retry.cancel();
        // The reload queues the head again (a new `since`): the first send
        // stamped against the old one would tell a wrong latency.
        self.first_send = FirstSend::NONE;
        if self.ended {
            return;
        }
        if self.panics >= 2 {
            // Panicking again and again: not in a tight loop.
            let delay = crate::stream::backoff::restart_backoff(self.panics);
            let until = Instant::now() + delay;
            error!(stream = %self.name(), panics = self.panics, ?delay,
                "stream panicked again after a restart; it reloads from its file after a backoff");
            self.fault = Some(Box::new(Fault::Backoff {
                until,
                panics: self.panics,
            }));
            self.shared
                .timers
                .wake_at(until, self.me.clone(), &self.mailbox);
            return;
        }
        // On failure (or a panic) `fault` is set and the next request retries.
        let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reload()));
        if let Err(payload) = reloaded {
            let panic = panic_message(payload.as_ref());
            error!(stream = %self.name(), %panic, "reloading the stream panicked; requests get a retryable error and try again");
            self.fault = Some(Box::new(Fault::Reload));
        }
    }
}

impl<K: UpdateKind> Handler<StreamUpdate<K>> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, mut msg: StreamUpdate<K>, ctx: &mut Context<Self>) {
        let now = self.took_request(msg.sent_at);
        let _entered = self.span().entered();
        let mut reply = msg.reply.take();
        let uuid = msg.uuid;
        if let Err(panic) = self.guarded("update", ctx, |act, ctx| {
            act.update(msg, now, &mut reply, ctx)
        }) {
            // Still here: not answered (nor counted) before the panic.
            if reply.is_some() {
                self.answer_update(
                    reply,
                    Err(UpdateError::Panicked {
                        stream: self.name(),
                        uuid: uuid.to_string(),
                        panic,
                    }),
                );
            }
        }
    }
}

impl<K: UpdateKind> Handler<StreamAck> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, msg: StreamAck, ctx: &mut Context<Self>) {
        let StreamAck {
            uuid,
            reply,
            sent_at,
        } = msg;
        let now = self.took_request(sent_at);
        let _entered = self.span().entered();
        let mut reply = reply;
        if let Err(panic) = self.guarded("ack", ctx, |act, ctx| {
            act.acknowledge(uuid, now, &mut reply, ctx)
        }) {
            // Still here: not answered (nor counted) before the panic.
            if reply.is_some() {
                self.answer_ack(
                    reply,
                    Err(AckError::Panicked {
                        stream: self.name(),
                        uuid: uuid.to_string(),
                        panic,
                    }),
                );
            }
        }
    }
}

impl<K: UpdateKind> Handler<SetPaused> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, msg: SetPaused, ctx: &mut Context<Self>) {
        self.took();
        let _entered = self.span().entered();
        // Kept even if the rest panics: the restart must not forward while paused.
        self.paused = msg.paused;
        let _ = self.guarded("pause", ctx, |act, _| act.set_paused(msg));
    }
}

impl<K: UpdateKind> StreamActor<K> {
    fn set_paused(&mut self, msg: SetPaused) {
        self.paused = msg.paused;
        if msg.paused {
            self.retry.cancel();
            return;
        }
        if self.ended || self.state.head().is_none() {
            return;
        }
        let delay = self.shared.settings.retry.resume_delay(fastrand::f64());
        if delay.is_zero() {
            self.effect(Effect::ForwardHead);
        } else {
            self.arm(delay, OnDue::Forward);
        }
    }
}

impl<K: UpdateKind> Handler<Close> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        self.took();
        let _entered = self.span().entered();
        if self
            .guarded("close", ctx, |act, ctx| act.close(msg, ctx))
            .is_err()
        {
            // The stream was to close: it ends rather than restart (what it
            // held was answered with the error).
            self.remove_on_end = Some(msg.remove_file);
            self.end();
        }
    }
}

impl<K: UpdateKind> StreamActor<K> {
    fn close(&mut self, msg: Close, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        // Whatever waited for a sync is answered first.
        if self.flush_scheduled || !self.gate.is_idle() {
            self.sync_here(ctx);
        }
        self.remove_on_end = Some(msg.remove_file);
        info!(stream = %self.name(), "closing stream (framework cleaned up, or the manager stopped)");
        self.end();
    }
}

impl<K: UpdateKind> Handler<GetStats<K>> for StreamActor<K> {
    type Result = Result<Option<StreamStats<K>>, StatsError>;

    fn handle(&mut self, msg: GetStats<K>, ctx: &mut Context<Self>) -> Self::Result {
        let waited = self
            .took_request(msg.sent_at)
            .saturating_duration_since(msg.sent_at);
        let _entered = self.span().entered();
        self.guarded("stats", ctx, |act, _| {
            (!act.ended).then(|| act.stats(&msg, waited))
        })
        .map_err(|panic| StatsError {
            stream: self.name(),
            panic,
        })
    }
}

impl<K: UpdateKind> Handler<SyncNow> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, _msg: SyncNow, ctx: &mut Context<Self>) {
        self.took();
        let _entered = self.span().entered();
        let _ = self.guarded("sync", ctx, Self::sync_here);
    }
}

impl<K: UpdateKind> Handler<Due> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, msg: Due, ctx: &mut Context<Self>) {
        self.took();
        let _ = self.guarded("retry wake-up", ctx, |act, _| act.woken(msg));
    }
}

impl<K: UpdateKind> StreamActor<K> {
    fn woken(&mut self, msg: Due) {
        let now = Instant::now();
        if let Some(Fault::Backoff { until, .. }) = self.fault.as_deref() {
            if *until <= now {
                // The restart's backoff is over: reload, and forward the head.
                self.fault = Some(Box::new(Fault::Reload));
                if self.healthy().is_ok() && self.state.head().is_some() {
                    self.effect(Effect::ForwardHead);
                }
            }
        }
        match self.retry.woken(msg.at, now) {
            Woken::Nothing => {}
            Woken::AskAgain(at) => self
                .shared
                .timers
                .wake_at(at, self.me.clone(), &self.mailbox),
            Woken::Due(on_due) => {
                let _entered = self.span().entered();
                match on_due {
                    OnDue::Resend => self.on_timer(),
                    OnDue::Forward => self.effect(Effect::ForwardHead),
                }
            }
        }
    }
}

/// The commit round that covered this stream's writes is done (sent by the
/// committer through the ticket's callback).
#[derive(Debug)]
pub struct Durable {
    result: CommitResult,
    incarnation: u16,
}

impl Message for Durable {
    type Result = ();
}

impl<K: UpdateKind> Handler<Durable> for StreamActor<K> {
    type Result = ();

    fn handle(&mut self, msg: Durable, ctx: &mut Context<Self>) {
        self.took();
        let _entered = self.span().entered();
        let _ = self.guarded("durable", ctx, |act, ctx| act.durable(msg, ctx));
    }
}

impl<K: UpdateKind> StreamActor<K> {
    fn durable(&mut self, msg: Durable, ctx: &mut Context<Self>) {
        if msg.incarnation != self.incarnation {
            return;
        }
        let Some(submitted) = self.gate.round_done() else {
            return;
        };
        if self.shared.settings.sync.syncs() {
            self.shared.metrics.sync_seconds.record(submitted.elapsed());
        }
        match msg.result {
            Ok(()) => {
                while let Some(effect) = self.gate.next_covered() {
                    self.run(effect);
                }
                // Whatever was written meanwhile goes into the next round.
                self.flush();
            }
            Err(err) => {
                self.storage_fault(
                    None,
                    err,
                    "checkpoint write or sync failed; restarting the stream",
                );
                self.restart(ctx, Restart::Storage);
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Native;

    /// Each stream actor runs in a task of its own, whose allocation holds
    /// the actor: at 16 bytes more, that task moved into the allocator's
    /// next size class, 128 bytes more per stream (P5 measures 100,000 idle
    /// streams against 2 KiB each).
    #[test]
    fn a_stream_actor_stays_within_its_size_budget() {
        assert!(
            std::mem::size_of::<StreamActor<Native>>() <= 320,
            "StreamActor<Native> is {} bytes; keep it at most 320",
            std::mem::size_of::<StreamActor<Native>>()
        );
    }
}
