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

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::baseline::{new_histogram, record_micros};
use super::grpc_caller::{GrpcCaller, ACKNOWLEDGE, SUBSCRIBE, UPDATE};
use super::load::{bench_update, LoadFigures};
use super::{BenchError, BenchOptions};
use crate::proto::status_update_manager::v1::{
    AcknowledgeRequest, AcknowledgeResponse, ForwardedUpdate, SubscribeRequest, UpdateRequest,
    UpdateResponse,
};
use crate::service::config::{Overrides, Settings};

/// HTTP/2 connections the producers share (the upstream has one more).
const CONNECTIONS: usize = 4;

/// Runs the load through a service started on this actix System.
pub async fn through_grpc(
    dir: &Path,
    o: &BenchOptions,
    progress: &ProgressBar,
) -> Result<LoadFigures, BenchError> {
    let (streams, updates, sync, ack, concurrency) =
        (o.streams, o.updates, o.sync, o.ack, o.concurrency);
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
                .and_then(|rt| {
                    rt.block_on(clients(
                        addr,
                        streams,
                        updates,
                        ack,
                        concurrency,
                        client_progress,
                    ))
                });
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

async fn clients(
    addr: SocketAddr,
    streams: usize,
    updates: usize,
    ack: bool,
    concurrency: usize,
    progress: ProgressBar,
) -> Result<ClientOutcome, BenchError> {
    let total = streams * updates;
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(GrpcCaller::connect(addr).await?);
    }
    let started = Instant::now();

    // The upstream: acknowledge every forward.
    let upstream = GrpcCaller::connect(addr).await?;
    let mut forwards = upstream
        .call(
            SUBSCRIBE,
            &SubscribeRequest {
                subscriber: "bench".into(),
            },
        )
        .await?;
    let acker = upstream.clone();
    let acks = tokio::spawn(async move {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let mut acked = 0usize;
        let mut inflight = 0usize;
        if !ack || total == 0 {
            return Ok::<_, BenchError>(None);
        }
        loop {
            tokio::select! {
                forward = forwards.message::<ForwardedUpdate>() => {
                    let Some(forward) = forward? else { return Err(BenchError::Load("subscription ended".into())) };
                    let Some(update) = forward.update else { continue };
                    let status_uuid = update.status.map(|s| s.uuid).unwrap_or_default();
                    let acker = acker.clone();
                    let done_tx = done_tx.clone();
                    inflight += 1;
                    tokio::spawn(async move {
                        let ack = AcknowledgeRequest { stream_id: update.stream_id, status_uuid };
                        let ok = acker.unary::<_, AcknowledgeResponse>(ACKNOWLEDGE, &ack).await.is_ok();
                        let _ = done_tx.send(ok);
                    });
                }
                Some(ok) = done_rx.recv(), if inflight > 0 => {
                    inflight -= 1;
                    if ok {
                        acked += 1;
                        if acked == total {
                            return Ok(Some(started.elapsed()));
                        }
                    }
                }
            }
        }
    });

    // The agents.
    let latency = Arc::new(Mutex::new(new_histogram()?));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut producers = Vec::new();
    for w in 0..concurrency.clamp(1, total.max(1)) {
        let client = connections[w % CONNECTIONS].clone();
        let (latency, next, answered, progress) = (
            latency.clone(),
            next.clone(),
            answered.clone(),
            progress.clone(),
        );
        producers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, BenchError>(());
                }
                let update = bench_update(i % streams, i / streams);
                let sent = Instant::now();
                let request = UpdateRequest {
                    update: Some(update),
                    memory_only: false,
                };
                client.unary::<_, UpdateResponse>(UPDATE, &request).await?;
                if let Ok(mut latency) = latency.lock() {
                    record_micros(&mut latency, sent.elapsed());
                }
                let done = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if done % 1024 == 0 {
                    super::show_progress(&progress, done, started.elapsed());
                }
            }
        }));
    }
    for producer in producers {
        producer
            .await
            .map_err(|e| BenchError::Load(e.to_string()))??;
    }
    let updates_elapsed = started.elapsed();
    super::show_progress(&progress, total, updates_elapsed);
    let acks_elapsed = acks.await.map_err(|e| BenchError::Load(e.to_string()))??;
    let latency = latency
        .lock()
        .map(|h| h.clone())
        .map_err(|_| BenchError::Load("latency lock poisoned".into()))?;
    Ok((updates_elapsed, acks_elapsed, latency))
}
