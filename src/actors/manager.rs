//! `StatusUpdateManager<K>`: the actor an agent talks to.
//!
//! **Owns** only the routing tables: stream id → the stream actor's address
//! (with its framework, and whether it is closing), framework id → its
//! streams (for `Cleanup`), and the paused flag. Everything about a stream
//! lives in its [`StreamActor`].
//!
//! **Handles** [`Update`], [`Acknowledge`], [`Recover`], [`Cleanup`],
//! [`Pause`], [`Resume`], [`ListStreams`], [`GetStream`], [`GetSummary`],
//! [`GetHandle`], [`SyncAll`] from the agent, and [`StreamEnded`] from its stream actors.
//! A caller holding a stream's handle ([`GetHandle`]), and an upstream
//! acknowledging a forward ([`Forward::acknowledge`]), reach the stream
//! without this actor ([`crate::messages::handle`]).
//!
//! **Sends** each `Update`/`Acknowledge` on to the stream's mailbox
//! together with the caller's reply channel (so the stream answers the
//! caller directly, and per-stream order is mailbox order); `SetPaused`,
//! `Close` and `SyncNow` to its streams. It validates an update *before*
//! creating its stream, so a rejected update leaves nothing in memory or on
//! disk. What it refuses itself it logs ([`crate::logs`]); what a stream
//! refuses, the stream logs.
//!
//! **Supervises** its stream actors: each runs under an actix `Supervisor`,
//! so a stream whose write or sync failed restarts and reloads its file.
//!
//! **Recovers** many streams at once on every core
//! ([`recover_files`]): worker threads read and replay the files while this
//! actor takes the outcomes, in the order asked, and creates each stream's
//! actor meanwhile. The actors run only once every file is in (this actor's
//! thread is busy until then), so a strict failure abandons them before
//! any has served, forwarded or counted anything.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use actix::dev::{MessageResponse, OneshotSender, ToEnvelope};
use actix::prelude::*;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::actors::stream::{StreamActor, StreamInit, StreamSettings, StreamShared};
use crate::error::{AckError, RecoverError, StatsError, UpdateError};
use crate::kind::{validate_update, StatusUuid, UpdateKind};
use crate::logs;
use crate::messages::forward::Forward;
use crate::messages::handle::{
    ack_unavailable, deliver, invalid_update, update_unavailable, GetHandle, StreamHandle,
};
use crate::messages::mailbox::MailboxFigures;
use crate::messages::manager::{
    AckOutcome, Acknowledge, Cleanup, GetStream, GetSummary, ListStreams, ManagerSummary, Pause,
    Recover, RecoveredStream, RecoveryState, Resume, StreamEnded, StreamPage, StreamStats, SyncAll,
    Update, UpdateOutcome,
};
use crate::messages::stream::{Close, GetStats, SetPaused, StreamAck, StreamUpdate, SyncNow};
use crate::metrics::StreamMetrics;
use crate::store::{Committer, FaultPlan, FileCache, StreamLog, SyncPolicy};
use crate::stream::recover::{recover_file, recover_files};
use crate::stream::{RetryPolicy, StreamState};

/// Where a stream's checkpoint file lives (Mesos's `getPath`).
pub type StreamPaths<K> = Arc<dyn Fn(&<K as UpdateKind>::StreamId) -> PathBuf + Send + Sync>;

/// How a manager runs; see `config/default.toml` for the service's values.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// When an update or ack is answered (`store.sync`).
    pub sync: SyncPolicy,
    /// The retry schedule (`retry.*`).
    pub retry: RetryPolicy,
    /// Most pending updates per stream (`limits.max_pending_per_stream`).
    pub max_pending_per_stream: usize,
    /// Most streams in memory (`limits.max_streams`).
    pub max_streams: usize,
    /// Delete a stream's file once it ends: terminal ack, cleanup, or
    /// recovered terminated (`store.remove_finished`). Off by default for a
    /// library caller, who decides for itself as in Mesos.
    pub remove_finished: bool,
    /// Start paused (forward nothing until `Resume`), as the Mesos agent does.
    pub start_paused: bool,
    /// Most stream files open at once (`limits.max_open_files`); the
    /// others are reopened on demand.
    pub max_open_files: usize,
    /// Use this file cache instead of a new one of `max_open_files` (to
    /// share it, or to read its figures such as the open-file peak).
    pub files: Option<FileCache>,
    /// Storage faults to inject into every stream file (tests only).
    pub faults: Option<FaultPlan>,
    /// Where non-strict recovery moves what it cannot use (a file corrupt
    /// before its first update, the bytes cut at a corrupt record) instead
    /// of deleting it; `None`: beside the file (see
    /// [`crate::stream::recover`]). The service's is `<data_dir>/quarantine`.
    pub quarantine_dir: Option<PathBuf>,
    /// The committer that writes and syncs the streams' records (see
    /// [`crate::store`], "Durability"). `None` (the default): the manager
    /// starts a committer thread of its own ([`Committer::thread_for`]), so
    /// no write or sync ever runs on the agent's arbiter. Give one to share
    /// it, to add a commit journal ([`Committer::thread_with_journal`]), or
    /// to run the same rounds on the arbiter ([`Committer::inline`]: for
    /// tests under paused tokio time).
    pub committer: Option<Committer>,
}

/// Default `limits.max_pending_per_stream`.
pub const DEFAULT_MAX_PENDING_PER_STREAM: usize = 10_000;
/// Default `limits.max_open_files`.
pub const DEFAULT_MAX_OPEN_FILES: usize = 4096;
/// Default `limits.max_streams`.
pub const DEFAULT_MAX_STREAMS: usize = 1_000_000;

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            sync: SyncPolicy::default(),
            retry: RetryPolicy::default(),
            max_pending_per_stream: DEFAULT_MAX_PENDING_PER_STREAM,
            max_streams: DEFAULT_MAX_STREAMS,
            remove_finished: false,
            start_paused: false,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            files: None,
            faults: None,
            quarantine_dir: None,
            committer: None,
        }
    }
}

/// A stream's actor and the count of its mailbox: one allocation per
/// stream, shared by the manager's entry and each request routed to the
/// stream (a clone of an actix address allocates twice). Whatever the
/// manager enqueues on a stream goes through it, counted.
#[derive(Debug)]
pub struct StreamRoute<K: UpdateKind> {
    actor: Addr<StreamActor<K>>,
    mailbox: Arc<MailboxFigures>,
}

impl<K: UpdateKind> StreamRoute<K> {
    fn connected(&self) -> bool {
        self.actor.connected()
    }

    /// Enqueues `msg`, counted; `Err` (not counted) if the actor's mailbox
    /// is closed.
    fn try_send<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        StreamActor<K>: Handler<M>,
        <StreamActor<K> as Actor>::Context: ToEnvelope<StreamActor<K>, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.mailbox.enqueued();
        let sent = self.actor.try_send(msg);
        if sent.is_err() {
            self.mailbox.unsent();
        }
        sent
    }

    /// Enqueues `msg` now, counted, and gives the future of its answer
    /// (which takes the count back if the actor stopped without handling it).
    fn send<M>(&self, msg: M) -> impl Future<Output = Result<M::Result, MailboxError>> + 'static
    where
        StreamActor<K>: Handler<M>,
        <StreamActor<K> as Actor>::Context: ToEnvelope<StreamActor<K>, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.mailbox.enqueued();
        let answer = self.actor.send(msg);
        let mailbox = self.mailbox.clone();
        async move {
            let answer = answer.await;
            if answer.is_err() {
                mailbox.unsent();
            }
            answer
        }
    }

    /// Asks the stream for its figures: enqueued now, with the backlog it
    /// finds there and the instant, and answered in the stream's turn.
    fn stats(
        &self,
        with_pending: bool,
    ) -> impl Future<Output = Result<Result<Option<StreamStats<K>>, StatsError>, MailboxError>> + 'static
    {
        self.send(GetStats {
            with_pending,
            queued_ahead: self.mailbox.backlog(),
            sent_at: Instant::now(),
            kind: PhantomData,
        })
    }
}

/// How often at most the manager takes the largest mailbox backlog of its
/// streams (`sum_stream_mailbox_backlog_max`): each look reads every
/// stream's count, and a paged listing must not read them all per page.
const BACKLOG_MAX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
struct Entry<K: UpdateKind> {
    /// The stream's actor and mailbox count; shared, not cloned, to route
    /// a request.
    addr: Rc<StreamRoute<K>>,
    framework: Option<String>,
    /// Cleaned up; waiting for the stream actor to confirm it closed.
    closing: bool,
    /// Its records are checkpointed (so a stopped actor can be revived
    /// from its file).
    checkpointed: bool,
}

/// The status update manager actor; see the module docs.
pub struct StatusUpdateManager<K: UpdateKind> {
    config: ManagerConfig,
    forward: Recipient<Forward<K>>,
    paths: StreamPaths<K>,
    streams: HashMap<K::StreamId, Entry<K>>,
    frameworks: HashMap<String, HashSet<K::StreamId>>,
    paused: bool,
    /// Every stream file's handle, at most `max_open_files` open.
    files: FileCache,
    /// Runs the streams' commit rounds (`config.committer`, or this
    /// manager's own thread).
    committer: Committer,
    shared: Option<Arc<StreamShared<K>>>,
    /// When `sum_stream_mailbox_backlog_max` was last taken.
    backlog_max_at: Option<Instant>,
}

impl<K: UpdateKind> std::fmt::Debug for StatusUpdateManager<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusUpdateManager")
            .field("kind", &K::KIND)
            .field("config", &self.config)
            .field("streams", &self.streams.len())
            .field("paused", &self.paused)
            .finish()
    }
}

impl<K: UpdateKind> StatusUpdateManager<K> {
    /// Starts a manager on the current arbiter. Forwards go to `forward`;
    /// stream `id`'s file is `paths(id)`.
    pub fn start(
        config: ManagerConfig,
        forward: Recipient<Forward<K>>,
        paths: StreamPaths<K>,
    ) -> Addr<Self> {
        let committer = config.committer.clone().unwrap_or_else(|| {
            Committer::thread_for(config.sync).unwrap_or_else(|err| {
                error!(cause = %err, "cannot start a committer thread; commit rounds run on the manager's arbiter");
                Committer::inline()
            })
        });
        StatusUpdateManager::create(move |ctx| {
            // Unbounded, so that an agent's sends are enqueued in send order.
            ctx.set_mailbox_capacity(0);
            StatusUpdateManager {
                committer,
                paused: config.start_paused,
                files: config
                    .files
                    .clone()
                    .unwrap_or_else(|| FileCache::new(config.max_open_files)),
                shared: None,
                backlog_max_at: None,
                config,
                forward,
                paths,
                streams: HashMap::new(),
                frameworks: HashMap::new(),
            }
        })
    }

    fn settings(&self) -> StreamSettings {
        StreamSettings {
            retry: self.config.retry,
            sync: self.config.sync,
            max_pending: self.config.max_pending_per_stream,
            remove_finished: self.config.remove_finished,
            faults: self.config.faults.clone(),
            quarantine_dir: self.config.quarantine_dir.clone(),
            committer: self.committer.clone(),
            files: self.files.clone(),
        }
    }

    /// The shared file cache (for figures such as the open-file peak).
    pub fn file_cache(&self) -> &FileCache {
        &self.files
    }

    /// The `Arc` every stream actor shares (built once).
    fn shared(&mut self, ctx: &mut Context<Self>) -> Arc<StreamShared<K>> {
        if self.shared.is_none() {
            self.shared = Some(Arc::new(StreamShared {
                settings: self.settings(),
                forward: self.forward.clone(),
                manager: ctx.address().downgrade().recipient(),
                timers: Arc::default(),
                metrics: StreamMetrics::register(),
            }));
        }
        match &self.shared {
            Some(shared) => shared.clone(),
            None => unreachable!("set just above"),
        }
    }

    fn spawn_stream(
        &mut self,
        state: StreamState<K>,
        log: Option<StreamLog>,
        path: Option<PathBuf>,
        ctx: &mut Context<Self>,
    ) -> Rc<StreamRoute<K>> {
        let id = state.id().clone();
        let framework = state.framework_id().map(str::to_string);
        let checkpointed = state.checkpointed();
        let mailbox = Arc::new(MailboxFigures::default());
        let actor = StreamActor::start(StreamInit {
            state,
            log,
            path,
            shared: self.shared(ctx),
            paused: self.paused,
            mailbox: mailbox.clone(),
        });
        let addr = Rc::new(StreamRoute { actor, mailbox });
        if let Some(framework) = &framework {
            self.frameworks
                .entry(framework.clone())
                .or_default()
                .insert(id.clone());
        }
        metrics::gauge!(crate::metrics::STREAMS).increment(1.0);
        self.streams.insert(
            id,
            Entry {
                addr: addr.clone(),
                framework,
                closing: false,
                checkpointed,
            },
        );
        addr
    }

    /// Starts again, from its file, every stream whose actor stopped while
    /// this manager still routes to it. A stream actor restarts itself after
    /// a storage fault or a panic in its handlers; this catches any other
    /// stop, so that no stream with pending updates stays silently dead.
    fn revive_stopped(&mut self, ctx: &mut Context<Self>) {
        let stopped: Vec<(K::StreamId, bool)> = self
            .streams
            .iter()
            .filter(|(_, e)| !e.addr.connected())
            .map(|(id, e)| (id.clone(), e.closing))
            .collect();
        for (id, closing) in stopped {
            if closing {
                // It was closing anyway: nothing is left to serve.
                self.forget(&id);
            } else {
                self.revive(&id, ctx);
            }
        }
    }

    /// Sets `sum_stream_mailbox_backlog_max` to the largest backlog of any
    /// stream, unless it was taken less than [`BACKLOG_MAX_EVERY`] ago.
    fn report_backlog_max(&mut self) {
        let now = Instant::now();
        if self
            .backlog_max_at
            .is_some_and(|at| now.saturating_duration_since(at) < BACKLOG_MAX_EVERY)
        {
            return;
        }
        // No stream was ever started: no figure to give yet.
        let Some(shared) = &self.shared else {
            return;
        };
        self.backlog_max_at = Some(now);
        let max = self
            .streams
            .values()
            .map(|e| e.addr.mailbox.backlog())
            .max()
            .unwrap_or(0);
        shared.metrics.mailbox_backlog_max.set(max as f64);
    }

    /// Starts stream `id` again from its file, if its actor stopped.
    fn revive(&mut self, id: &K::StreamId, ctx: &mut Context<Self>) {
        let Some(entry) = self.streams.get(id) else {
            return;
        };
        if entry.closing || entry.addr.connected() {
            return;
        }
        let checkpointed = entry.checkpointed;
        self.forget(id);
        metrics::counter!(crate::metrics::STREAM_RESTARTS, "cause" => "stopped").increment(1);
        if !checkpointed {
            error!(stream = %id, "the actor of a stream that is not checkpointed stopped; its pending updates are lost");
            return;
        }
        let path = (self.paths)(id);
        let quarantine = self.config.quarantine_dir.as_deref();
        match recover_file::<K>(
            id.clone(),
            &path,
            false,
            self.config.sync,
            Instant::now(),
            quarantine,
        ) {
            Ok(Some(recovered)) if !recovered.replayed.state.terminated() => {
                let mut log = recovered.log;
                self.settings().attach_recovered(&mut log);
                let pending = recovered.replayed.state.pending().len();
                error!(stream = %id, pending, path = %path.display(),
                    "a stream actor had stopped; started it again from its file");
                self.spawn_stream(recovered.replayed.state, Some(log), Some(path), ctx);
            }
            Ok(_) => {
                error!(stream = %id, path = %path.display(),
                    "a stream actor had stopped; its file holds nothing pending, so the stream is gone");
            }
            Err(err) => {
                error!(stream = %id, path = %path.display(), cause = %err,
                    "a stream actor had stopped and its file cannot be recovered; recover it to serve it again");
            }
        }
    }

    fn forget(&mut self, id: &K::StreamId) {
        if let Some(entry) = self.streams.remove(id) {
            metrics::gauge!(crate::metrics::STREAMS).decrement(1.0);
            if let Some(framework) = entry.framework {
                if let Some(ids) = self.frameworks.get_mut(&framework) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.frameworks.remove(&framework);
                    }
                }
            }
        }
    }

    /// Creates a new stream for a valid update: its file first (if
    /// checkpointed), then its actor.
    fn open_stream(
        &mut self,
        id: &K::StreamId,
        update: &K::Update,
        checkpoint: bool,
        ctx: &mut Context<Self>,
    ) -> Result<Rc<StreamRoute<K>>, UpdateError> {
        if self.streams.len() >= self.config.max_streams {
            return Err(UpdateError::TooManyStreams {
                stream: id.to_string(),
                limit: self.config.max_streams,
            });
        }
        let file_exists = |path: PathBuf| UpdateError::FileExists {
            stream: id.to_string(),
            path,
        };
        let path = if checkpoint {
            // Created by the stream actor through the committer's file work
            // (creating a file can be slow, and new files share their
            // directory's sync): this thread keeps routing, and the stream's
            // first requests wait for the file. An existing file is still
            // refused here, at once.
            let path = (self.paths)(id);
            if path.exists() {
                return Err(file_exists(path));
            }
            Some(path)
        } else {
            None
        };
        let framework = K::framework_id(update).map(str::to_string);
        let state = StreamState::new(id.clone(), checkpoint, framework);
        Ok(self.spawn_stream(state, None, path, ctx))
    }
}

impl<K: UpdateKind> Actor for StatusUpdateManager<K> {
    type Context = Context<Self>;

    /// Looks for stopped stream actors once per `retry.min`
    /// (`revive_stopped`), and takes the largest mailbox backlog then, from
    /// a task that holds only a weak address: a manager whose callers
    /// dropped it still stops.
    fn started(&mut self, ctx: &mut Context<Self>) {
        report_paused(self.paused);
        let every = self.config.retry.min.max(std::time::Duration::from_secs(1));
        let me = ctx.address().downgrade();
        actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let sent = me
                    .upgrade()
                    .is_some_and(|m| m.try_send(ReviveStopped).is_ok());
                if !sent {
                    break;
                }
            }
        });
    }

    /// The manager is gone (its callers dropped it, or the system stops):
    /// its streams stop too, as Mesos's timers die with its actor. A stream
    /// with an armed retry timer would otherwise outlive its last address and
    /// keep forwarding. Files are kept: the streams did not finish.
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let close = Close { remove_file: false };
        for entry in self.streams.values().filter(|e| !e.closing) {
            // A stream that already stopped has nothing left to close.
            let _ = entry.addr.try_send(close);
        }
    }
}

/// Time to look for stopped stream actors (sent by the manager's own
/// periodic task).
#[derive(Debug)]
struct ReviveStopped;

impl Message for ReviveStopped {
    type Result = ();
}

impl<K: UpdateKind> Handler<ReviveStopped> for StatusUpdateManager<K> {
    type Result = ();

    fn handle(&mut self, _msg: ReviveStopped, ctx: &mut Context<Self>) {
        self.revive_stopped(ctx);
        self.report_backlog_max();
    }
}

/// A reply that is either ready now or comes from a stream actor, which
/// gets the caller's reply channel so that it answers the caller itself
/// (no future is spawned per request).
pub enum Routed<K: UpdateKind, Req, Res> {
    /// Answered by the manager.
    Ready(Res),
    /// Hand `request` to the stream (an `Unavailable` error answers if its
    /// mailbox closed).
    Stream {
        /// The stream actor and its mailbox count.
        addr: Rc<StreamRoute<K>>,
        /// The request, missing only its reply channel.
        request: Req,
        /// The stream, to name it if the actor is gone.
        stream: K::StreamId,
    },
}

impl<K: UpdateKind, Req, Res> std::fmt::Debug for Routed<K, Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routed::Ready(_) => f.write_str("Routed::Ready"),
            Routed::Stream { .. } => f.write_str("Routed::Stream"),
        }
    }
}

/// The data of a routed `Update`: the update, its status uuid, its checkpoint flag.
type UpdateRequest<K> = (<K as UpdateKind>::Update, StatusUuid, bool);
type UpdateReply = Result<UpdateOutcome, UpdateError>;
type AckReply = Result<AckOutcome, AckError>;

impl<K: UpdateKind> MessageResponse<StatusUpdateManager<K>, Update<K>>
    for Routed<K, UpdateRequest<K>, UpdateReply>
{
    fn handle(
        self,
        ctx: &mut Context<StatusUpdateManager<K>>,
        tx: Option<OneshotSender<UpdateReply>>,
    ) {
        match self {
            Routed::Ready(result) => {
                // Refused before reaching a stream (invalid, closing, too
                // many streams, file exists): counted here, once.
                if result.is_err() {
                    crate::metrics::count_rejected_update();
                }
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            Routed::Stream {
                addr,
                request: (update, uuid, checkpoint),
                stream,
            } => {
                let msg = StreamUpdate {
                    update,
                    uuid,
                    checkpoint,
                    reply: tx,
                    sent_at: Instant::now(),
                };
                let unavailable = || update_unavailable(&stream);
                deliver(
                    &addr.actor,
                    &addr.mailbox,
                    msg,
                    unavailable,
                    |m: StreamUpdate<K>| m.reply,
                );
                if !addr.connected() {
                    ctx.run_later(std::time::Duration::ZERO, move |act, ctx| {
                        act.revive(&stream, ctx);
                    });
                }
            }
        }
    }
}

impl<K: UpdateKind> MessageResponse<StatusUpdateManager<K>, Acknowledge<K>>
    for Routed<K, StatusUuid, AckReply>
{
    fn handle(
        self,
        ctx: &mut Context<StatusUpdateManager<K>>,
        tx: Option<OneshotSender<AckReply>>,
    ) {
        match self {
            Routed::Ready(result) => {
                // Refused before reaching a stream (nil uuid, unknown or
                // closing stream): counted here, once.
                if result.is_err() {
                    crate::metrics::count_rejected_ack();
                }
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            Routed::Stream {
                addr,
                request: uuid,
                stream,
            } => {
                let unavailable = || ack_unavailable(&stream);
                deliver(
                    &addr.actor,
                    &addr.mailbox,
                    StreamAck {
                        uuid,
                        reply: tx,
                        sent_at: Instant::now(),
                    },
                    unavailable,
                    |m: StreamAck| m.reply,
                );
                if !addr.connected() {
                    ctx.run_later(std::time::Duration::ZERO, move |act, ctx| {
                        act.revive(&stream, ctx);
                    });
                }
            }
        }
    }
}

impl<K: UpdateKind> Handler<Update<K>> for StatusUpdateManager<K> {
    type Result = Routed<K, UpdateRequest<K>, UpdateReply>;

    fn handle(&mut self, msg: Update<K>, ctx: &mut Context<Self>) -> Self::Result {
        let Update { update, checkpoint } = msg;
        let key = match validate_update::<K>(&update) {
            Ok(key) => key,
            Err(reason) => return Routed::Ready(Err(invalid_update::<K>(&update, reason))),
        };
        let addr = match self.streams.get(&key.stream) {
            Some(entry) if entry.closing => {
                let err = UpdateError::StreamClosing {
                    stream: key.stream.to_string(),
                    uuid: key.uuid.to_string(),
                };
                logs::update_rejected(&key.stream, &key.uuid, &err);
                return Routed::Ready(Err(err));
            }
            Some(entry) => entry.addr.clone(),
            None => match self.open_stream(&key.stream, &update, checkpoint, ctx) {
                Ok(addr) => addr,
                Err(err) => {
                    logs::update_rejected(&key.stream, &key.uuid, &err);
                    return Routed::Ready(Err(err));
                }
            },
        };
        Routed::Stream {
            addr,
            request: (update, key.uuid, checkpoint),
            stream: key.stream,
        }
    }
}

impl<K: UpdateKind> Handler<Acknowledge<K>> for StatusUpdateManager<K> {
    type Result = Routed<K, StatusUuid, AckReply>;

    fn handle(&mut self, msg: Acknowledge<K>, _ctx: &mut Context<Self>) -> Self::Result {
        let Acknowledge { stream, uuid } = msg;
        if uuid.is_nil() {
            let err = AckError::Invalid {
                stream: stream.to_string(),
                reason: crate::kind::InvalidUpdate::NilUuid,
            };
            logs::ack_rejected(&stream, &uuid, &err);
            return Routed::Ready(Err(err));
        }
        match self.streams.get(&stream) {
            Some(entry) if !entry.closing => Routed::Stream {
                addr: entry.addr.clone(),
                request: uuid,
                stream,
            },
            _ => {
                let err = AckError::UnknownStream {
                    stream: stream.to_string(),
                    uuid: uuid.to_string(),
                };
                logs::ack_rejected(&stream, &uuid, &err);
                Routed::Ready(Err(err))
            }
        }
    }
}

impl<K: UpdateKind> Handler<GetHandle<K>> for StatusUpdateManager<K> {
    type Result = Option<StreamHandle<K>>;

    fn handle(&mut self, msg: GetHandle<K>, _ctx: &mut Context<Self>) -> Self::Result {
        let entry = self.streams.get(&msg.stream).filter(|e| !e.closing)?;
        Some(StreamHandle::new(
            msg.stream,
            entry.addr.actor.clone().recipient(),
            entry.addr.actor.clone().recipient(),
            entry.addr.mailbox.clone(),
        ))
    }
}

impl<K: UpdateKind> Handler<StreamEnded<K>> for StatusUpdateManager<K> {
    type Result = ();

    fn handle(&mut self, msg: StreamEnded<K>, _ctx: &mut Context<Self>) {
        if self
            .streams
            .get(&msg.stream)
            // This actor's, not a newer one's of the same id.
            .is_some_and(|e| Arc::ptr_eq(&e.addr.mailbox, &msg.mailbox))
        {
            debug!(stream = %msg.stream, "stream ended");
            self.forget(&msg.stream);
        }
    }
}

impl<K: UpdateKind> Handler<Cleanup> for StatusUpdateManager<K> {
    type Result = usize;

    fn handle(&mut self, msg: Cleanup, _ctx: &mut Context<Self>) -> usize {
        let Some(ids) = self.frameworks.remove(&msg.framework_id) else {
            return 0;
        };
        info!(framework = %msg.framework_id, streams = ids.len(), "closing {} streams of framework", K::LABEL);
        let close = Close {
            remove_file: self.config.remove_finished,
        };
        let mut closed = 0;
        for id in ids {
            let Some(entry) = self.streams.get_mut(&id) else {
                continue;
            };
            if entry.closing {
                continue;
            }
            closed += 1;
            entry.framework = None;
            entry.closing = true;
            if entry.addr.try_send(close).is_err() {
                // The actor is gone already: nothing left to close.
                self.forget(&id);
            }
        }
        closed
    }
}

impl<K: UpdateKind> StatusUpdateManager<K> {
    fn broadcast(&mut self, paused: bool) {
        self.paused = paused;
        report_paused(paused);
        for entry in self.streams.values().filter(|e| !e.closing) {
            if entry.addr.try_send(SetPaused { paused }).is_err() {
                warn!(
                    "a stream actor stopped before it could be {}",
                    if paused { "paused" } else { "resumed" }
                );
            }
        }
    }
}

/// Sets `sum_paused`: wherever the manager's paused flag changes (its
/// start, `Pause`, `Resume`), so it tells every cause of a pause.
fn report_paused(paused: bool) {
    metrics::gauge!(crate::metrics::PAUSED).set(if paused { 1.0 } else { 0.0 });
}

impl<K: UpdateKind> Handler<Pause> for StatusUpdateManager<K> {
    type Result = ();

    fn handle(&mut self, _msg: Pause, _ctx: &mut Context<Self>) {
        // The caller knows why (the service's hub logs it, with its cause).
        debug!("pausing {} manager", K::LABEL);
        self.broadcast(true);
    }
}

impl<K: UpdateKind> Handler<Resume> for StatusUpdateManager<K> {
    type Result = ();

    fn handle(&mut self, _msg: Resume, _ctx: &mut Context<Self>) {
        debug!("resuming {} manager", K::LABEL);
        self.broadcast(false);
    }
}

impl<K: UpdateKind> Handler<GetSummary> for StatusUpdateManager<K> {
    type Result = MessageResult<GetSummary>;

    fn handle(&mut self, _msg: GetSummary, _ctx: &mut Context<Self>) -> Self::Result {
        // The streams keep the total as they report to the pending gauge;
        // before the first stream there is none.
        let pending_updates = self.shared.as_ref().map_or(0, |shared| {
            shared
                .metrics
                .pending_total
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        MessageResult(ManagerSummary {
            streams: self.streams.len(),
            pending_updates,
            paused: self.paused,
        })
    }
}

impl<K: UpdateKind> Handler<Recover<K>> for StatusUpdateManager<K> {
    type Result = Result<RecoveryState<K>, RecoverError>;

    fn handle(&mut self, msg: Recover<K>, ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        // Each id once, and none already in memory.
        let new: Vec<bool> = {
            let mut asked = HashSet::with_capacity(msg.ids.len());
            msg.ids
                .iter()
                .map(|id| !self.streams.contains_key(id) && asked.insert(id))
                .collect()
        };
        let mut files = Vec::with_capacity(msg.ids.len());
        for (id, new) in msg.ids.into_iter().zip(new) {
            if !new {
                debug!(stream = %id, "already in memory or asked twice; not recovered again");
                continue;
            }
            let path = (self.paths)(&id);
            files.push((id, path));
        }
        // Read and replay the files on every core; take what recovered, in
        // the order asked, meanwhile.
        let settings = self.settings();
        let remove_finished = self.config.remove_finished;
        let quarantine = self.config.quarantine_dir.clone();
        let mut state = RecoveryState {
            streams: HashMap::with_capacity(files.len()),
            errors: 0,
            failures: Vec::new(),
        };
        // Each stream's actor is created as its file comes in, while later
        // files are still read: this thread's share of the work overlaps the
        // readers'. The actors run once this handler returns; a strict
        // failure drops them before that, and an actor nobody can reach
        // stops as it starts, having done nothing.
        let mut started = 0;
        let mut failed = None;
        let mut ids = files.iter();
        // One allocation of the table, not one each time it doubles.
        self.streams.reserve(files.len());
        recover_files::<K>(
            &files,
            msg.strict,
            self.config.sync,
            now,
            quarantine.as_deref(),
            || std::thread::available_parallelism().map_or(1, usize::from),
            |log| settings.attach_recovered(log),
            |outcome| {
                let Some((id, _)) = ids.next() else {
                    return ControlFlow::Break(());
                };
                match outcome {
                    Err(source) => {
                        let err = RecoverError {
                            stream: id.to_string(),
                            source,
                        };
                        if msg.strict {
                            failed = Some(err);
                            return ControlFlow::Break(());
                        }
                        warn!(stream = %id, cause = %err, "stream not recovered");
                        state.errors += 1;
                        state.failures.push(err);
                    }
                    Ok(None) => {
                        state.streams.insert(id.clone(), None);
                    }
                    Ok(Some(recovered)) => {
                        if let Some(source) = recovered.error {
                            warn!(stream = %id, cause = %source, "recovered up to a corrupt record");
                            state.errors += 1;
                            state.failures.push(RecoverError {
                                stream: id.to_string(),
                                source,
                            });
                        }
                        let replayed = recovered.replayed;
                        let terminated = replayed.state.terminated();
                        state.streams.insert(
                            id.clone(),
                            Some(RecoveredStream {
                                updates: recovered.updates,
                                terminated,
                            }),
                        );
                        if !terminated {
                            // No path: the actor takes the log's.
                            self.spawn_stream(replayed.state, Some(recovered.log), None, ctx);
                            started += 1;
                        } else if remove_finished {
                            if let Err(err) = recovered.log.remove() {
                                warn!(stream = %id, cause = %err, "could not remove a terminated stream's file");
                            }
                        }
                    }
                }
                ControlFlow::Continue(())
            },
        );
        if let Some(err) = failed {
            // Nothing recovered by this call serves, forwards or is counted.
            for id in state.streams.keys() {
                self.forget(id);
            }
            return Err(err);
        }
        info!(
            recovered = started,
            errors = state.errors,
            "recovered {} streams",
            K::LABEL
        );
        Ok(state)
    }
}

/// `GetStats` requests in flight at once while a page is listed.
const LIST_IN_FLIGHT: usize = 1024;

impl<K: UpdateKind> StatusUpdateManager<K> {
    /// The addresses of the streams of the page `msg` asks for, in id
    /// order, and the id the next page starts after (`None`: this page is
    /// the last).
    ///
    /// Linear in the streams in memory: the ids after `msg.after` are
    /// gathered, the `limit` smallest picked (`select_nth_unstable`) and
    /// only those sorted.
    fn page(&self, msg: &ListStreams<K>) -> (Vec<Rc<StreamRoute<K>>>, Option<K::StreamId>) {
        let wanted = |id: &K::StreamId, e: &Entry<K>| {
            !e.closing
                && (msg.framework_id.is_none() || e.framework == msg.framework_id)
                && msg.after.as_ref().is_none_or(|after| id > after)
        };
        let mut ids: Vec<(&K::StreamId, &Entry<K>)> = match &msg.framework_id {
            // Only that framework's streams are looked at.
            Some(framework) => self
                .frameworks
                .get(framework)
                .into_iter()
                .flatten()
                .filter_map(|id| self.streams.get_key_value(id))
                .filter(|(id, e)| wanted(id, e))
                .collect(),
            None => self
                .streams
                .iter()
                .filter(|(id, e)| wanted(id, e))
                .collect(),
        };
        let limit = msg.limit.max(1);
        let more = ids.len() > limit;
        if more {
            ids.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(b.0));
            ids.truncate(limit);
        }
        ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let next_after = if more {
            ids.last().map(|(id, _)| (*id).clone())
        } else {
            None
        };
        let addrs = ids.into_iter().map(|(_, e)| e.addr.clone()).collect();
        (addrs, next_after)
    }
}

impl<K: UpdateKind> Handler<ListStreams<K>> for StatusUpdateManager<K> {
    type Result = ResponseFuture<StreamPage<K>>;

    fn handle(&mut self, msg: ListStreams<K>, _ctx: &mut Context<Self>) -> Self::Result {
        self.report_backlog_max();
        let (addrs, next_after) = self.page(&msg);
        Box::pin(async move {
            let mut streams = Vec::with_capacity(addrs.len());
            // A window of streams is asked at once (each answers in its own
            // turn), the answers read in page order.
            for window in addrs.chunks(LIST_IN_FLIGHT) {
                let asked: Vec<_> = window.iter().map(|addr| addr.stats(false)).collect();
                for answer in asked {
                    // A stream that panicked while it answered (it restarts,
                    // and says so in its log) is left out of this listing.
                    if let Ok(Ok(Some(stats))) = answer.await {
                        streams.push(stats);
                    }
                }
            }
            StreamPage {
                streams,
                next_after,
            }
        })
    }
}

impl<K: UpdateKind> Handler<GetStream<K>> for StatusUpdateManager<K> {
    type Result = ResponseFuture<Result<Option<StreamStats<K>>, StatsError>>;

    fn handle(&mut self, msg: GetStream<K>, _ctx: &mut Context<Self>) -> Self::Result {
        self.report_backlog_max();
        // Asked now, behind whatever the stream's mailbox holds already.
        let asked = self
            .streams
            .get(&msg.stream)
            .filter(|e| !e.closing)
            .map(|e| e.addr.stats(true));
        Box::pin(async move {
            match asked {
                // A stream actor found stopped has no figures to give.
                Some(answer) => answer.await.unwrap_or(Ok(None)),
                None => Ok(None),
            }
        })
    }
}

impl<K: UpdateKind> Handler<SyncAll> for StatusUpdateManager<K> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: SyncAll, _ctx: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<_> = self.streams.values().map(|e| e.addr.clone()).collect();
        Box::pin(async move {
            for addr in addrs {
                // A stream that stopped has nothing left to sync.
                let _ = addr.send(SyncNow).await;
            }
        })
    }
}
