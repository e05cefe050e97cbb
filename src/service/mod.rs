//! The service: `status-update-manager serve`.
//!
//! [`start`] runs the whole lifecycle up to listening: create the data
//! directory and lock it, so that a second process on it refuses to start
//! ([`crate::store::lock`]), start the [`SubscriberHub`] (admin-paused
//! when the directory holds an operator's pause, [`pause`]) and a paused
//! native-kind manager whose forwards go to the hub, discover every stream
//! under `store.data_dir` and recover them (strict per `recovery.strict`; a
//! strict failure is an error and nothing listens), then serve gRPC — the
//! `StatusUpdateManager` service of API.md, `grpc.health.v1.Health` and
//! server reflection — on `server.listen`, over TLS when
//! `server.tls_cert_file` is set, with the `StatusUpdateManager` service
//! behind a bearer token when `server.auth_token_file` is ([`auth`]).
//! [`RunningService::shutdown`] ends the subscriber's stream and the
//! streaming calls, stops accepting, lets in-flight requests finish (and
//! closes the connections of calls still open after
//! [`config::DRAIN_TIMEOUT`]), syncs every stream file and returns.
//! [`serve`] does both around SIGINT/SIGTERM.
//!
//! The actors run on the actix System of the calling thread. The gRPC
//! server runs on a thread of its own (`sum-grpc`, the one worker of a
//! tokio runtime; see `GrpcRuntime::build` for why that scheduler):
//! HTTP/2 framing and protobuf coding cost more than the actors spend on an
//! update, and on a runtime shared with the actors both would have one core
//! between them (see BENCHMARKS.md, Figures behind design choices). A
//! request reaches the manager as an actor message, from that thread.
//!
//! With `metrics.listen` set, [`scrape`] serves `/metrics` on the gRPC
//! thread too, from the start, from the Prometheus recorder [`recorder`]
//! installs. [`config`] is the service's configuration (layered loading,
//! validation into a [`ServiceConfig`]).
//!
//! The stream files and the agents' connections share `ulimit -n`:
//! [`start`] splits it between them
//! ([`crate::store::files::fit_to_descriptor_limit`]), and [`accept`] holds
//! the connections to their share. Whatever their number, the requests
//! being received hold a bounded number of bytes ([`inflight`]).

pub mod accept;
pub mod auth;
pub mod codec;
pub mod config;
pub mod grpc;
pub mod hub;
pub mod inflight;
pub mod jetstream;
pub mod pause;
pub mod recorder;
pub mod rpc_metrics;
pub mod scrape;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::error::RecoverError;
use crate::kind::Native;
use crate::messages::{ListStreams, Recover, SyncAll};
use crate::proto::status_update_manager::v1::status_update_manager_server::StatusUpdateManagerServer;
use crate::store::layout::{discover_native_streams, native_stream_path, LayoutError};
use crate::store::{Committer, DataDirLock, FileCache, JOURNAL_FILE};
use crate::StatusUpdateManager;
use auth::RequireToken;
use config::ServiceConfig;
use grpc::GrpcService;
use hub::{CloseSubscriber, SetManager, Stop, SubscriberHub};

/// Why the service could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create the data directory '{path}': {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No file can be created in the data directory (or its `streams`).
    #[error(
        "the data directory '{path}' is not writable (a file could not be created in it): {source}"
    )]
    NotWritable {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory is served by another process, or could not be
    /// locked.
    #[error(transparent)]
    Lock(#[from] crate::store::LockError),
    /// The operator's pause file could not be read: whether to start paused
    /// cannot be told.
    #[error("cannot read the pause file '{path}': {source}")]
    PauseFile {
        /// `<data_dir>/paused`.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The streams under the data directory could not be listed.
    #[error("cannot discover streams: {0}")]
    Discover(#[from] LayoutError),
    /// Strict recovery failed.
    #[error("recovery failed (recovery.strict = true): {0}")]
    Recovery(#[from] RecoverError),
    /// An actor stopped unexpectedly.
    #[error("the manager stopped during startup: {0}")]
    Mailbox(#[from] MailboxError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reflection could not be set up.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics recorder could not be installed (a recorder other than
    /// this crate's is the process's already).
    #[error("cannot install the metrics recorder (metrics.listen = {addr}): {source}")]
    Metrics {
        /// `metrics.listen`.
        addr: SocketAddr,
        /// Why.
        source: metrics_exporter_prometheus::BuildError,
    },
    /// `metrics.listen` could not be bound.
    #[error("cannot serve metrics on {addr} (metrics.listen): {source}")]
    MetricsBind {
        /// `metrics.listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The committer thread could not start, or its journal could not be replayed.
    #[error("cannot start the committer: {0}")]
    Committer(crate::store::StoreError),
    /// The TLS certificate or key was refused (not parseable, or they do not match).
    #[error("TLS (server.tls_cert_file, server.tls_key_file): {0}")]
    Tls(tonic::transport::Error),
    /// The gRPC server's thread or its runtime could not start.
    #[error("cannot start the gRPC thread: {0}")]
    GrpcThread(std::io::Error),
    /// The gRPC server's task panicked (what it said).
    #[error("the gRPC server's task ended abnormally: {0}")]
    GrpcTask(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A started service.
#[derive(Debug)]
pub struct RunningService {
    /// The address the gRPC server listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// The manager.
    pub manager: Addr<StatusUpdateManager<Native>>,
    /// The subscriber hub.
    pub hub: Addr<SubscriberHub>,
    /// The JetStream upstream, with `upstream.kind = "jetstream"`.
    pub jetstream: Option<Addr<jetstream::JetStreamUpstream>>,
    /// Streams recovered at startup.
    pub recovered: usize,
    /// The stream files' cache (for figures such as the open-file peak).
    pub files: FileCache,
    /// Tells when the committer thread has stopped: after the streams
    /// closed (they hold it), its last round ran and its final checkpoint
    /// was done. `None` when the committer runs inline.
    pub committer: Option<crate::store::Stopped>,
    /// Ends the streaming calls at a graceful stop.
    service: GrpcService,
    stop: oneshot::Sender<()>,
    /// Ends the server, and the connections still open, once a graceful
    /// stop waited [`drain_timeout`](ServiceConfig::drain_timeout).
    force: oneshot::Sender<()>,
    drain_timeout: Duration,
    server: oneshot::Receiver<Result<(), ServeError>>,
    health: tonic_health::server::HealthReporter,
    /// Released when this is dropped: at the end of
    /// [`shutdown`](Self::shutdown), once every stream file is synced.
    _lock: DataDirLock,
}

/// How many stream files (`asked`: `limits.max_open_files`, unless
/// `ulimit -n` leaves less room even once its soft limit is raised to the
/// hard one) and how many agents' connections the process keeps open at
/// once; said in the log.
fn descriptor_budget(asked: usize) -> (usize, usize) {
    use crate::store::files::{fit_to_descriptor_limit, RESERVED_DESCRIPTORS};
    match fit_to_descriptor_limit(asked) {
        Ok(budget) => {
            if let Some(from) = budget.raised_from {
                info!(
                    from,
                    to = budget.soft_limit,
                    "raised the soft descriptor limit (ulimit -n): the stream files \
                     (limits.max_open_files) and the agents' connections share it"
                );
            }
            if budget.granted < asked {
                warn!(
                    limits.max_open_files = asked,
                    kept = budget.granted,
                    ulimit_n = budget.soft_limit,
                    hard_limit = budget.hard_limit,
                    reserved = RESERVED_DESCRIPTORS,
                    connections = budget.connections,
                    "the descriptor limit leaves room for fewer stream files than limits.max_open_files; \
                     keeping that many open (the others are reopened on demand)"
                );
            }
            (budget.granted, budget.connections)
        }
        Err(err) => {
            warn!(cause = %err, limits.max_open_files = asked, "cannot read the descriptor limit (ulimit -n); keeping limits.max_open_files, and any number of connections");
            (asked, usize::MAX)
        }
    }
}

/// Connections the kernel queues for the gRPC listener before they are
/// accepted: `tokio::net::TcpListener::bind`'s, so that agents reconnecting
/// all at once are not refused (the standard library's bind queues 128).
const LISTEN_BACKLOG: u32 = 1024;

/// The runtime the gRPC server runs on, until [`spawn`](Self::spawn) hands
/// it to the thread that owns it. Built before the listener is bound, so
/// that a failure to build it fails the start. Dropped before that (a start
/// failing after it was built, inside the caller's runtime), it shuts down
/// in the background: a runtime dropped in async code would panic.
struct GrpcRuntime(Option<tokio::runtime::Runtime>);

impl GrpcRuntime {
    /// One worker thread ("sum-grpc") with I/O and timers, which takes the
    /// tasks woken from other threads before it goes back to the ones it
    /// woke itself.
    ///
    /// Each answer to an RPC comes from the actix thread and wakes that
    /// RPC's task here. A current-thread runtime wakes its thread for every
    /// such task (a `write` to its eventfd, made on the actix thread, one
    /// per RPC); a worker of the multi-thread scheduler is woken only when
    /// it is idle. Taking those tasks first (`global_queue_interval(1)`)
    /// lets more of the answers that arrived together be written together
    /// by their connection's task, in fewer `writev`s: less CPU per update,
    /// and more updates/s.
    fn build() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .global_queue_interval(1)
            .thread_name("sum-grpc")
            .enable_all()
            .build()?;
        Ok(GrpcRuntime(Some(runtime)))
    }

    fn runtime(&self) -> std::io::Result<&tokio::runtime::Runtime> {
        self.0
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the gRPC runtime was handed to its thread"))
    }

    /// A listener on `addr` registered with this runtime's reactor, which
    /// then drives the connections it accepts: with `SO_REUSEADDR` (a
    /// restart rebinds at once) and [`LISTEN_BACKLOG`], as tokio's own bind
    /// does.
    fn bind(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let _registering = self.runtime()?.enter();
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    }

    /// Runs the gRPC server on this runtime's worker until `serve`'s future
    /// ends, or until `force` is sent, and returns what it ended with.
    /// `serve` is given the accepted connections of `listener` (from
    /// [`bind`](Self::bind)), at most `connections` at once
    /// ([`accept::incoming`]). A thread of its own ("sum-grpc-owner", idle
    /// meanwhile) owns the runtime: it shuts it down once the server ended
    /// (which ends every connection still open), outside async code.
    fn spawn<F, S>(
        mut self,
        listener: tokio::net::TcpListener,
        connections: usize,
        force: oneshot::Receiver<()>,
        serve: S,
    ) -> std::io::Result<oneshot::Receiver<Result<(), ServeError>>>
    where
        S: FnOnce(accept::Incoming) -> F + Send + 'static,
        F: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        self.runtime()?;
        let (done, result) = oneshot::channel();
        // `self` moves into the thread: if the thread cannot start, it is
        // dropped here, in the background.
        std::thread::Builder::new()
            .name("sum-grpc-owner".into())
            .spawn(move || {
                let Some(runtime) = self.0.take() else { return };
                let accepted = accept::incoming(listener, connections, accept::Peers::Agents);
                let server = runtime.spawn(serve(accepted));
                let served = runtime.block_on(async {
                    tokio::select! {
                        served = server => match served {
                            Ok(served) => served.map_err(ServeError::from),
                            Err(ended) => Err(ServeError::GrpcTask(ended.to_string())),
                        },
                        // Only when sent: a dropped sender leaves the server be.
                        Ok(()) = force => Ok(()),
                    }
                });
                // Whatever the server left running ends before it is reported done.
                drop(runtime);
                let _ = done.send(served);
            })?;
        Ok(result)
    }
}

impl Drop for GrpcRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// RPCs one connection may carry at once (HTTP/2's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`): a client's further calls wait on
/// its side until one ends. tonic would advertise no limit, and one client
/// could then make the server hold any number of requests (each up to
/// 4 MiB) at once. The bench's producers run 512 per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves `/metrics` on `addr` from the gRPC thread's runtime
/// ([`scrape`]), from now on: a scrape during a long recovery sees it
/// progress. Bound first, so that a taken address fails the start with
/// [`ServeError::MetricsBind`] whether or not a recorder was installed; the
/// recorder is installed before the manager starts, since its streams take
/// their metric handles from the recorder installed then.
fn serve_metrics(grpc: &GrpcRuntime, addr: SocketAddr) -> Result<(), ServeError> {
    let bind = |source| ServeError::MetricsBind { addr, source };
    let listener = grpc.bind(addr).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    let handle = recorder::install().map_err(|source| ServeError::Metrics { addr, source })?;
    grpc.runtime()
        .map_err(ServeError::GrpcThread)?
        .spawn(scrape::serve(listener, handle));
    info!(
        %local_addr,
        max_connections = scrape::SCRAPE_CONNECTIONS,
        "serving Prometheus metrics at /metrics"
    );
    Ok(())
}

/// Checks that files can be created in `dir` and in its `streams` directory,
/// if there is one, by creating and removing one (the only sure check: it
/// holds for root and for read-only or immutable directories alike).
fn writable(dir: &Path) -> Result<(), ServeError> {
    let streams = dir.join(crate::store::layout::STREAMS_DIR);
    for dir in [dir, streams.as_path()] {
        if dir != streams || streams.is_dir() {
            let probe = dir.join(format!(".write-check-{}", std::process::id()));
            std::fs::File::create(&probe)
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|source| ServeError::NotWritable {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Starts the service on the current actix System; see the module docs.
pub async fn start(config: ServiceConfig) -> Result<RunningService, ServeError> {
    // A certificate or key rustls refuses stops the start before anything is touched.
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(config.http2_keepalive.interval))
        .http2_keepalive_timeout(Some(config.http2_keepalive.timeout));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(ServeError::Tls)?;
    }
    // Fail fast: the listeners are bound and the data directory is checked
    // writable before anything in it is read, written or locked, so that a
    // taken port or an unwritable directory stops the start at once and
    // leaves nothing behind. The gRPC listener accepts only once the streams
    // are recovered (agents that connect earlier wait in its backlog).
    // The gRPC thread's runtime drives every listener's connections.
    let grpc = GrpcRuntime::build().map_err(ServeError::GrpcThread)?;
    let bind = |source| ServeError::Bind {
        addr: config.listen,
        source,
    };
    let listener = grpc.bind(config.listen).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    if let Some(addr) = config.metrics_listen {
        serve_metrics(&grpc, addr)?;
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    writable(&data_dir)?;
    // Before anything in the directory is read or written (the journal's
    // replay first): a second process on it would corrupt both.
    let lock = DataDirLock::acquire(&data_dir)?;

    // An operator's pause outlives the process that was paused: the
    // service comes up paused until an operator resumes it.
    let pause_file = pause::PauseFile::in_dir(&data_dir);
    let paused_since = pause_file.read().map_err(|source| ServeError::PauseFile {
        path: pause_file.path().to_path_buf(),
        source,
    })?;
    if let Some(since) = paused_since {
        info!(
            file = %pause_file.path().display(),
            since = %humantime::format_rfc3339_seconds(since),
            "forwarding stays paused: an operator paused it; `resume` lifts the pause"
        );
    }
    let hub = SubscriberHub::start_with(Some(pause_file), paused_since);
    let paths_dir = data_dir.clone();
    let paths = Arc::new(move |id: &String| native_stream_path(&paths_dir, id));
    let mut manager_config = config.manager_config();
    // `sum_recovery_seconds`: the journal's replay, the discovery and the
    // streams' recovery.
    let recovery_started = std::time::Instant::now();
    // Group-commit rounds on their own thread: a sync never blocks the actors.
    // Its journal is replayed first (whatever the policy now: a `batch` run
    // may have left one), so recovery reads complete stream files.
    let (committer, replayed) = Committer::thread_with_journal_at(
        manager_config.sync,
        &data_dir.join(JOURNAL_FILE),
        config.journal_checkpoint_bytes,
    )
    .map_err(ServeError::Committer)?;
    if replayed.applied > 0 || replayed.skipped > 0 {
        info!(
            applied = replayed.applied,
            skipped = replayed.skipped,
            "commit journal replayed"
        );
    }
    let committer_stopped = committer.stopped();
    manager_config.committer = Some(committer);
    let (files_open, connections) = descriptor_budget(manager_config.max_open_files);
    manager_config.max_open_files = files_open;
    let files = FileCache::new(manager_config.max_open_files);
    manager_config.files = Some(files.clone());
    // The forwards' target: the hub's subscriber, or JetStream, whose
    // client runs on the gRPC thread's runtime.
    let (jetstream, forwards) = match &config.upstream {
        config::Upstream::Subscriber => (None, hub.clone().recipient()),
        config::Upstream::JetStream(js) => {
            let runtime = grpc
                .runtime()
                .map_err(ServeError::GrpcThread)?
                .handle()
                .clone();
            info!(servers = %js.servers.join(","), stream = %js.stream, node = %js.node,
                "upstream: NATS JetStream; forwarding is paused until it is reachable");
            let upstream = jetstream::JetStreamUpstream::start(js.clone(), hub.clone(), runtime);
            (Some(upstream.clone()), upstream.recipient())
        }
    };
    let manager = StatusUpdateManager::<Native>::start(manager_config, forwards, paths);
    hub.send(SetManager(manager.clone())).await?;

    let ids: Vec<String> = discover_native_streams(&data_dir)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    info!(streams = ids.len(), dir = %data_dir.display(), strict = config.strict_recovery, "recovering");
    let state = manager
        .send(Recover::<Native> {
            ids,
            strict: config.strict_recovery,
        })
        .await??;
    let recovered = state
        .streams
        .values()
        .filter(|s| s.as_ref().is_some_and(|s| !s.terminated))
        .count();
    for failure in &state.failures {
        warn!(cause = %failure, "recovery error");
    }
    info!(recovered, errors = state.errors, "recovery done");
    metrics::gauge!(crate::metrics::RECOVERY_SECONDS).set(recovery_started.elapsed().as_secs_f64());
    metrics::gauge!(crate::metrics::RECOVERED_STREAMS).set(recovered as f64);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<StatusUpdateManagerServer<GrpcService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let service = GrpcService::new(manager.clone(), hub.clone(), config.max_payload_bytes)
        .with_store(&data_dir, config.sync)
        .with_upstream(&config.upstream);
    let api = StatusUpdateManagerServer::new(service.clone())
        // Every message gRPC can carry (4 MiB) is decoded, so that a payload over
        // `server.max_payload_bytes` gets API.md's INVALID_ARGUMENT naming the
        // stream and uuid, not the transport's OUT_OF_RANGE.
        .max_decoding_message_size(config::MAX_PAYLOAD_LIMIT + 64 * 1024);

    if config.metrics_listen.is_some() {
        actix_rt::spawn(report_oldest_pending(manager.downgrade()));
    }

    let (stop, stopped) = oneshot::channel::<()>();
    let (force, forced) = oneshot::channel::<()>();
    let router = builder
        .layer(inflight::RequestBudget::new(config.request_bytes_in_flight))
        .add_service(health_service)
        .add_service(reflection);
    // Only the API requires the token: health checks and reflection stay
    // open. Without a token the API is served as it is: the interceptor
    // would only take each request apart and put it back together. Its
    // requests are counted with whatever status they get, the token's
    // refusals included ([`rpc_metrics`]; passed through without
    // `metrics.listen`).
    let router = match config.auth_token.clone() {
        Some(token) => router.add_service(rpc_metrics::Metered::new(
            tonic::service::interceptor::InterceptedService::new(
                api,
                RequireToken::new(Some(token)),
            ),
        )),
        None => router.add_service(rpc_metrics::Metered::new(api)),
    };
    let server = grpc
        .spawn(listener, connections, forced, move |incoming| {
            router.serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
        })
        .map_err(ServeError::GrpcThread)?;
    info!(
        %local_addr,
        tls = config.tls.is_some(),
        token = config.auth_token.is_some(),
        max_connections = connections,
        max_open_files = files_open,
        "listening"
    );
    Ok(RunningService {
        local_addr,
        manager,
        hub,
        recovered,
        files,
        committer: committer_stopped,
        service,
        stop,
        force,
        drain_timeout: config.drain_timeout,
        server,
        health,
        jetstream,
        _lock: lock,
    })
}

impl RunningService {
    /// Graceful stop: the subscriber's stream ends (UNAVAILABLE), so do the
    /// streaming calls once they answered what they took, the server
    /// stops accepting and finishes in-flight requests (closing the
    /// connections of calls still open after
    /// [`DRAIN_TIMEOUT`](config::DRAIN_TIMEOUT)), every stream file is
    /// synced, then the hub and the manager stop (the streams close their
    /// files, keeping them), so the same data directory can be served again
    /// in this process. The streams close their files as they stop, once
    /// this has returned and every address of the manager is gone:
    /// [`FileCache::open_files`] of [`files`](Self::files) then reaches 0,
    /// and the committer thread stops after them ([`committer`](Self::committer)).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        info!("shutting down");
        self.health
            .set_not_serving::<StatusUpdateManagerServer<GrpcService>>()
            .await;
        let _ = self.hub.send(CloseSubscriber).await;
        self.service.end_streaming_calls();
        let _ = self.stop.send(());
        let mut server = self.server;
        let ended = match tokio::time::timeout(self.drain_timeout, &mut server).await {
            Ok(ended) => ended,
            Err(_) => {
                warn!(
                    waited = ?self.drain_timeout,
                    "graceful stop: calls still open after the drain timeout (a client \
                     is not reading its answers); closing their connections (nothing \
                     taken is lost: a request sent again is a duplicate)"
                );
                let _ = self.force.send(());
                server.await
            }
        };
        let served = match ended {
            Ok(result) => result,
            Err(_) => {
                warn!("the gRPC thread ended without a result (it panicked)");
                Ok(())
            }
        };
        if let Err(err) = self.manager.send(SyncAll).await {
            warn!(cause = %err, "could not sync the stream files");
        }
        // Breaks the hub ↔ manager cycle: the manager stops once `self` is
        // dropped, and closes its streams.
        let _ = self.hub.send(Stop).await;
        if let Some(jetstream) = &self.jetstream {
            let _ = jetstream.send(jetstream::StopUpstream).await;
        }
        info!("stopped");
        served
    }
}

/// How often the oldest-pending-age gauge is refreshed from the streams' stats.
pub const OLDEST_PENDING_REFRESH: Duration = Duration::from_secs(5);

/// Refreshes the oldest-pending-age gauge from the stream actors' own stats
/// until the manager stops.
async fn report_oldest_pending(manager: actix::WeakAddr<StatusUpdateManager<Native>>) {
    let mut tick = tokio::time::interval(OLDEST_PENDING_REFRESH);
    loop {
        tick.tick().await;
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let Ok(streams) = manager.send(ListStreams::<Native>::all()).await else {
            return;
        };
        let oldest = streams
            .iter()
            .filter_map(|s| s.oldest_pending_age)
            .max()
            .unwrap_or_default();
        metrics::gauge!(crate::metrics::OLDEST_PENDING_AGE).set(oldest.as_secs_f64());
    }
}

/// Runs the service until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn serve(config: ServiceConfig) -> Result<(), ServeError> {
    let running = start(config).await?;
    println!("listening on {}", running.local_addr);
    wait_for_signal().await;
    running.shutdown().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(err) => {
                warn!(cause = %err, "cannot watch SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn the_server_accepts_on_its_own_thread_and_its_result_comes_back() {
        let runtime = GrpcRuntime::build().unwrap();
        let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = oneshot::channel();
        let done = runtime
            // A dropped `force` leaves the server be.
            .spawn(
                listener,
                1,
                oneshot::channel().1,
                move |mut incoming| async move {
                    let accepted = incoming.next().await.unwrap().unwrap();
                    let thread = std::thread::current().name().map(str::to_owned);
                    let _ = seen_tx.send((thread, accepted.get_ref().nodelay().unwrap()));
                    Ok(())
                },
            )
            .unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (thread, nodelay) = seen.await.unwrap();
        assert_eq!(thread.as_deref(), Some("sum-grpc"));
        assert!(nodelay, "accepted with Nagle's algorithm off");
        assert!(matches!(done.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn a_server_task_that_panics_is_reported_as_its_own_failure() {
        let runtime = GrpcRuntime::build().unwrap();
        let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let done = runtime
            .spawn(listener, 1, oneshot::channel().1, |_incoming| async {
                panic!("a bug in the server");
            })
            .unwrap();
        match done.await {
            Ok(Err(err @ ServeError::GrpcTask(_))) => {
                assert!(err.to_string().contains("ended abnormally"), "{err}")
            }
            other => panic!("expected the gRPC task's failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_forced_server_ends_and_so_does_what_it_left_running() {
        let runtime = GrpcRuntime::build().unwrap();
        let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (force, forced) = oneshot::channel();
        let (held_tx, held) = oneshot::channel::<()>();
        let (started_tx, started) = oneshot::channel();
        let done = runtime
            .spawn(listener, 1, forced, move |_incoming| async move {
                // A connection's task that would never end by itself.
                tokio::spawn(async move {
                    let _held = held_tx;
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await
                });
                std::future::pending().await
            })
            .unwrap();
        started.await.unwrap();
        force.send(()).unwrap();
        assert!(matches!(done.await, Ok(Ok(()))));
        assert!(held.await.is_err(), "the task it left running has ended");
    }

    #[tokio::test]
    async fn a_grpc_runtime_not_handed_to_its_thread_can_be_dropped_in_async_code() {
        // As when the start fails after building it (a taken address).
        let runtime = GrpcRuntime::build().unwrap();
        let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = listener.local_addr().unwrap();
        let err = runtime.bind(taken).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(runtime);
        drop(listener);
    }
}
