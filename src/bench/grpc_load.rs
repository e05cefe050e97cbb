//! The same load through the gRPC service: the service's actors run on
//! this actix thread (its gRPC server on a thread of its own), the agents
//! (producers) and the upstream (a subscriber that acknowledges each
//! forward) are gRPC clients on a thread of their own.
//!
//! The clients are the load generator, and on a small machine they compete
//! with the service for the same cores, so they are kept lean: one thread
//! (a current-thread runtime: no work stealing, no cross-thread wake-ups),
//! calling through [`GrpcCaller`] rather than tonic's client (that module
//! says why and what it costs). The RPCs on the wire are any client's. The
//! upstream has a connection of its own, as it would in a deployment (the
//! agents' connections carry only their updates).
//!
//! `--via grpc` sends each update and each ack as a unary call
//! (`Update`, `Acknowledge`); `--via grpc-stream` sends them on streaming
//! calls (`UpdateStream`, one per agents' connection, each carrying a share
//! of the streams; `AcknowledgeStream` on the upstream's connection), as a
//! busy agent would. Both keep `--concurrency` updates in flight.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::baseline::{new_histogram, record_micros};
use super::grpc_caller::{
    GrpcCaller, Messages, ACKNOWLEDGE, ACKNOWLEDGE_STREAM, SUBSCRIBE, UPDATE, UPDATE_STREAM,
};
use super::load::{bench_update, LoadFigures};
use super::{show_progress, BenchError, BenchOptions, Via};
use crate::proto::status_update_manager::v1::{
    acknowledge_stream_response, update_stream_response, AcknowledgeRequest, AcknowledgeResponse,
    AcknowledgeStreamResponse, ForwardedUpdate, SubscribeRequest, UpdateRequest, UpdateResponse,
    UpdateStreamResponse,
};
use crate::service::config::{Overrides, Settings};
use tonic::{Code, Status};

/// HTTP/2 connections the producers share (the upstream has one more).
const CONNECTIONS: usize = 4;

/// Runs the load through a service started on this actix System.
pub async fn through_grpc(
    dir: &Path,
    o: &BenchOptions,
    progress: &ProgressBar,
) -> Result<LoadFigures, BenchError> {
    let (streams, updates, sync) = (o.streams, o.updates, o.sync);
    let load = Load {
        streams,
        updates,
        ack: o.ack,
        concurrency: o.concurrency,
        streaming: o.via == Via::GrpcStream,
    };
    let overrides = Overrides {
        data_dir: Some(dir.to_path_buf()),
        listen: Some("127.0.0.1:0".into()),
        config_file: None,
    };
    let mut settings = Settings::load_with_env(&overrides, Some(Default::default()))?;
    settings.store.sync = sync.to_string();
    settings.store.remove_finished = false;
    settings.limits.max_pending_per_stream = updates.max(1);
    settings.limits.max_streams = streams.max(1);
    settings.limits.max_open_files = o.max_open_files;
    let config = settings.validate()?;
    let running = crate::service::start(config).await?;
    let addr = running.local_addr;
    let rss_before = super::rss_bytes();

    let (tx, rx) = tokio::sync::oneshot::channel();
    let client_progress = progress.clone();
    std::thread::Builder::new()
        .name("bench-clients".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(BenchError::from)
                .and_then(|rt| rt.block_on(clients(addr, load, client_progress)));
            let _ = tx.send(result);
        })?;
    let outcome = rx
        .await
        .map_err(|_| BenchError::Load("the client thread stopped".into()))?;
    let rss_growth = super::rss_bytes().saturating_sub(rss_before);
    let files = running.files.clone();
    let committer = running.committer.clone();
    let peak = files.peak_open_files();
    running.shutdown().await?;
    // The stream actors close their files as they stop, after the service
    // has: the recovery that comes next opens as many, under the same
    // `ulimit -n` (10 000 streams with every file open would exceed it).
    // Then the committer stops, after its final checkpoint (a `syncfs`):
    // that is the load's work, and would otherwise overlap the recovery
    // measured next, as the in-process load's does not.
    super::load::wait_closed(&files).await;
    super::load::wait_stopped(committer.as_ref()).await;
    let (updates_elapsed, acks_elapsed, latency) = outcome?;
    Ok(LoadFigures {
        updates_elapsed,
        acks_elapsed,
        latency,
        rss_growth,
        open_files_peak: peak,
        listing: None,
    })
}

type ClientOutcome = (Duration, Option<Duration>, Histogram<u64>);

/// The clients' load: what `bench` was asked for.
#[derive(Debug, Clone, Copy)]
struct Load {
    streams: usize,
    updates: usize,
    ack: bool,
    concurrency: usize,
    /// `UpdateStream` and `AcknowledgeStream` rather than a unary call each.
    streaming: bool,
}

async fn clients(
    addr: SocketAddr,
    load: Load,
    progress: ProgressBar,
) -> Result<ClientOutcome, BenchError> {
    let total = load.streams * load.updates;
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(GrpcCaller::connect(addr).await?);
    }
    let started = Instant::now();

    // The upstream: acknowledge every forward.
    let upstream = GrpcCaller::connect(addr).await?;
    let forwards = upstream
        .call(
            SUBSCRIBE,
            &SubscribeRequest {
                subscriber: "bench".into(),
            },
        )
        .await?;
    let acks = match (load.ack && total > 0, load.streaming) {
        (false, _) => None,
        (true, false) => Some(tokio::spawn(acknowledge_each(upstream, forwards, total))),
        (true, true) => Some(tokio::spawn(acknowledge_streaming(
            upstream, forwards, total,
        ))),
    };

    let agents = Arc::new(Agents {
        load,
        latency: Arc::new(Mutex::new(new_histogram()?)),
        answered: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        progress,
        started,
    });
    if load.streaming {
        agents.clone().streaming(&connections).await?;
    } else {
        agents.clone().unary(&connections).await?;
    }
    let updates_elapsed = started.elapsed();
    show_progress(&agents.progress, total, updates_elapsed);
    let acks_elapsed = match acks {
        Some(acks) => Some(
            acks.await
                .map_err(|e| BenchError::Load(e.to_string()))??
                .duration_since(started),
        ),
        None => None,
    };
    let latency = agents
        .latency
        .lock()
        .map(|h| h.clone())
        .map_err(|_| BenchError::Load("latency lock poisoned".into()))?;
    Ok((updates_elapsed, acks_elapsed, latency))
}

/// The agents: every update sent, each answer's latency recorded.
struct Agents {
    load: Load,
    latency: Arc<Mutex<Histogram<u64>>>,
    answered: Arc<std::sync::atomic::AtomicUsize>,
    progress: ProgressBar,
    started: Instant,
}

impl Agents {
    /// One update's answer came, `sent` ago.
    fn answered(&self, sent: Instant) {
        if let Ok(mut latency) = self.latency.lock() {
            record_micros(&mut latency, sent.elapsed());
        }
        let done = self
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if done.is_multiple_of(1024) {
            show_progress(&self.progress, done, self.started.elapsed());
        }
    }

    /// `concurrency` agents, each calling `Update` and awaiting its answer
    /// before the next; they share the connections.
    async fn unary(self: Arc<Self>, connections: &[GrpcCaller]) -> Result<(), BenchError> {
        let total = self.load.streams * self.load.updates;
        let this = self;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut producers = Vec::new();
        for w in 0..this.load.concurrency.clamp(1, total.max(1)) {
            let client = connections[w % CONNECTIONS].clone();
            let (this, next) = (this.clone(), next.clone());
            producers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, BenchError>(());
                    }
                    let request = UpdateRequest {
                        update: Some(bench_update(i % this.load.streams, i / this.load.streams)),
                        memory_only: false,
                    };
                    let sent = Instant::now();
                    client.unary::<_, UpdateResponse>(UPDATE, &request).await?;
                    this.answered(sent);
                }
            }));
        }
        for producer in producers {
            producer
                .await
                .map_err(|e| BenchError::Load(e.to_string()))??;
        }
        Ok(())
    }

    /// One `UpdateStream` call per connection, each carrying the updates of
    /// a share of the streams (a stream's updates in order on one call),
    /// with `concurrency` updates in flight over all of them.
    async fn streaming(self: Arc<Self>, connections: &[GrpcCaller]) -> Result<(), BenchError> {
        let Load {
            streams,
            updates,
            concurrency,
            ..
        } = self.load;
        let lanes = CONNECTIONS.min(concurrency.max(1)).min(streams.max(1));
        let this = self;
        let mut calls = Vec::new();
        for (lane, connection) in connections.iter().enumerate().take(lanes) {
            // The concurrency, shared out as evenly as it goes.
            let window = (concurrency / lanes + usize::from(lane < concurrency % lanes)).max(1);
            let (mut requests, mut answers) = connection.open(UPDATE_STREAM).await?;
            let this = this.clone();
            calls.push(tokio::spawn(async move {
                // This lane's updates: those of streams `lane`, `lane + lanes`, ...
                let mut next =
                    (0..updates).flat_map(|u| (lane..streams).step_by(lanes).map(move |s| (s, u)));
                let mut sent = std::collections::VecDeque::with_capacity(window);
                loop {
                    while sent.len() < window {
                        let Some((stream, u)) = next.next() else {
                            break;
                        };
                        requests.send(&UpdateRequest {
                            update: Some(bench_update(stream, u)),
                            memory_only: false,
                        })?;
                        sent.push_back(Instant::now());
                    }
                    let Some(at) = sent.pop_front() else {
                        break;
                    };
                    let answer = answers
                        .message::<UpdateStreamResponse>()
                        .await?
                        .ok_or_else(|| {
                            BenchError::Load("UpdateStream ended before every answer".into())
                        })?;
                    if let Some(update_stream_response::Outcome::Error(e)) = answer.outcome {
                        return Err(BenchError::Grpc(Status::new(
                            Code::from_i32(e.code),
                            format!("{UPDATE_STREAM}: {}", e.message),
                        )));
                    }
                    this.answered(at);
                }
                requests.end()?;
                match answers.message::<UpdateStreamResponse>().await? {
                    None => Ok::<_, BenchError>(()),
                    Some(_) => Err(BenchError::Load(
                        "UpdateStream answered more than it was sent".into(),
                    )),
                }
            }));
        }
        for call in calls {
            call.await.map_err(|e| BenchError::Load(e.to_string()))??;
        }
        Ok(())
    }
}

/// The upstream's acks, an `Acknowledge` call per forward (unanswered
/// ones at once); returns when `total` were accepted.
async fn acknowledge_each(
    acker: GrpcCaller,
    mut forwards: Messages,
    total: usize,
) -> Result<Instant, BenchError> {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut acked = 0usize;
    let mut inflight = 0usize;
    loop {
        tokio::select! {
            forward = forwards.message::<ForwardedUpdate>() => {
                let Some(ack) = ack_of(forward?)? else { continue };
                let acker = acker.clone();
                let done_tx = done_tx.clone();
                inflight += 1;
                tokio::spawn(async move {
                    let ok = acker.unary::<_, AcknowledgeResponse>(ACKNOWLEDGE, &ack).await.is_ok();
                    let _ = done_tx.send(ok);
                });
            }
            Some(ok) = done_rx.recv(), if inflight > 0 => {
                inflight -= 1;
                if ok {
                    acked += 1;
                    if acked == total {
                        return Ok(Instant::now());
                    }
                }
            }
        }
    }
}

/// The upstream's acks on one `AcknowledgeStream` call, sent as the
/// forwards come; returns when `total` were accepted.
async fn acknowledge_streaming(
    acker: GrpcCaller,
    mut forwards: Messages,
    total: usize,
) -> Result<Instant, BenchError> {
    let (mut requests, mut answers) = acker.open(ACKNOWLEDGE_STREAM).await?;
    let mut acked = 0usize;
    let mut inflight = 0usize;
    loop {
        tokio::select! {
            forward = forwards.message::<ForwardedUpdate>() => {
                let Some(ack) = ack_of(forward?)? else { continue };
                requests.send(&ack)?;
                inflight += 1;
            }
            answer = answers.message::<AcknowledgeStreamResponse>(), if inflight > 0 => {
                let answer = answer?.ok_or_else(|| {
                    BenchError::Load("AcknowledgeStream ended before every answer".into())
                })?;
                inflight -= 1;
                // A refused ack (a forward sent again and acked twice) is
                // not counted, as in `acknowledge_each`.
                if let Some(acknowledge_stream_response::Outcome::Ok(_)) = answer.outcome {
                    acked += 1;
                    if acked == total {
                        return Ok(Instant::now());
                    }
                }
            }
        }
    }
}

/// The ack of a forward; `None` for a forward without an update.
fn ack_of(forward: Option<ForwardedUpdate>) -> Result<Option<AcknowledgeRequest>, BenchError> {
    let forward = forward.ok_or_else(|| BenchError::Load("subscription ended".into()))?;
    Ok(forward.update.map(|update| AcknowledgeRequest {
        status_uuid: update.status.map(|s| s.uuid).unwrap_or_default(),
        stream_id: update.stream_id,
    }))
}
