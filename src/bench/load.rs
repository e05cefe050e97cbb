//! The load: N streams × M updates, each acknowledged by an upstream as
//! soon as it is forwarded, driven in-process (actix messages) or through
//! the gRPC service (tonic clients on their own runtime thread).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::oneshot;

use super::baseline::{new_histogram, record_micros};
use super::list::{list_all, ListFigures};
use super::{BenchError, BenchOptions};
use crate::error::AckError;
use crate::kind::Native;
use crate::messages::handle::{Reply, StreamHandle};
use crate::messages::{AckOutcome, Forward, GetHandle, Update};
use crate::proto::status_update_manager::v1::{Status, StatusUpdate};
use crate::store::layout::native_stream_path;
use crate::store::{Committer, FileCache, JOURNAL_FILE};
use crate::{ManagerConfig, StatusUpdateManager};

/// Default requests in flight at once from the producers.
pub const DEFAULT_CONCURRENCY: usize = 2048;
/// Opaque payload per update, so a record is about 200 bytes like an agent's.
pub const PAYLOAD_BYTES: usize = 96;

/// What one load run measured.
#[derive(Debug)]
pub struct LoadFigures {
    /// Until every update was answered.
    pub updates_elapsed: Duration,
    /// Until every update was acknowledged (`None` with `--no-ack`).
    pub acks_elapsed: Option<Duration>,
    /// Update latency, µs.
    pub latency: Histogram<u64>,
    /// RSS growth while the streams were live, bytes.
    pub rss_growth: u64,
    /// Most stream files open at once.
    pub open_files_peak: u64,
    /// The listing of every stream after the load (`--list`, in-process load only).
    pub listing: Option<ListFigures>,
}

/// A process-wide counter of status uuids for the load.
fn next_uuid() -> uuid::Uuid {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // `getpid` is a system call each time; the producer asks once.
    let pid = *PID.get_or_init(std::process::id);
    uuid::Builder::from_u128(u128::from(n) | (u128::from(pid) << 96)).into_uuid()
}

/// The update of stream `stream`, number `n`.
pub fn bench_update(stream: usize, n: usize) -> StatusUpdate {
    StatusUpdate {
        stream_id: format!("bench-{stream}"),
        framework_id: String::new(),
        status: Some(Status {
            // Unique and never nil; cheaper than a random v4 (no syscall), so
            // the producer costs the measurement as little as possible.
            uuid: next_uuid().as_bytes().to_vec(),
            state: if n == 0 {
                "STARTING".into()
            } else {
                "RUNNING".into()
            },
            terminal: false,
            message: String::new(),
            payload: vec![0x42; PAYLOAD_BYTES],
            timestamp_unix_micros: 1,
        }),
        latest_status: None,
    }
}

/// The in-process upstream: acknowledges every forward at once.
///
/// The replies to its acknowledgements are awaited together, by one task
/// ([`await_replies`]), not by a task each: a task per acknowledgement
/// (spawned, scheduled, freed) costs the thread the streams run on more than
/// the manager's handling of the acknowledgement. Futures spawned into the
/// acker's own context would be worse: all of them are polled whenever the
/// actor runs.
struct Acker {
    /// The manager holds the acker as its forward target, so this address
    /// back keeps both alive: the load takes it away when it ends
    /// (`Connect(None)`). A weak address would allocate a strong one for
    /// every acknowledgement.
    manager: Option<Addr<StatusUpdateManager<Native>>>,
    /// Acknowledge forwards (`false` with `--no-ack`: every update stays pending).
    ack: bool,
    replies: Rc<RefCell<Replies>>,
}

/// A reply to one acknowledgement.
type AckReply = Reply<Native, Result<AckOutcome, AckError>>;

/// The acknowledgements whose replies are awaited, shared by the acker and
/// the task that awaits them.
#[derive(Default)]
struct Replies {
    waiting: FuturesUnordered<AckReply>,
    /// The awaiting task, while it waits: woken when a reply is added (a
    /// `FuturesUnordered` polls an added future only when it is polled).
    waker: Option<Waker>,
}

/// Awaits every reply the acker adds to `replies` until `remaining` of them
/// succeeded, then tells `done`.
async fn await_replies(
    replies: Rc<RefCell<Replies>>,
    mut remaining: usize,
    done: oneshot::Sender<()>,
) {
    if remaining > 0 {
        std::future::poll_fn(|cx| {
            let mut replies = replies.borrow_mut();
            while let Poll::Ready(Some(reply)) = replies.waiting.poll_next_unpin(cx) {
                if reply.is_ok() {
                    remaining -= 1;
                    if remaining == 0 {
                        return Poll::Ready(());
                    }
                }
            }
            replies.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
    let _ = done.send(());
}

impl Actor for Acker {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Connect(Option<Addr<StatusUpdateManager<Native>>>);

impl Handler<Connect> for Acker {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.manager = msg.0;
    }
}

impl Handler<Forward<Native>> for Acker {
    type Result = ();

    fn handle(&mut self, forward: Forward<Native>, _: &mut Context<Self>) {
        if self.manager.is_none() || !self.ack {
            return;
        }
        // At the stream that sent it, as an upstream in the same process
        // can: no hop through the manager (`messages::handle`).
        let ack = forward.acknowledge();
        let mut replies = self.replies.borrow_mut();
        replies.waiting.push(ack);
        if let Some(waker) = replies.waker.take() {
            waker.wake();
        }
    }
}

/// Runs the load against a manager on this thread.
pub async fn in_process(
    dir: &Path,
    o: &BenchOptions,
    progress: &ProgressBar,
) -> Result<LoadFigures, BenchError> {
    let (streams, updates, sync, ack) = (o.streams, o.updates, o.sync, o.ack);
    let total = streams * updates;
    let (done_tx, done_rx) = oneshot::channel();
    let replies = Rc::new(RefCell::new(Replies::default()));
    // Unconstrained: under tokio's cooperative budget, a reply polled after
    // the task spent its budget reads as not ready and wakes the task again,
    // and the set of replies keeps polling such wake-ups: the task would spin
    // on the actors' thread while the acknowledgements drain.
    let awaiting = actix_rt::spawn(tokio::task::unconstrained(await_replies(
        replies.clone(),
        total,
        done_tx,
    )));
    let acker = Acker::create(|ctx| {
        ctx.set_mailbox_capacity(0);
        Acker {
            manager: None,
            ack,
            replies,
        }
    });
    let files = FileCache::new(o.max_open_files);
    // As the service runs it: a committer thread (batch rounds, and new
    // files created off the actor thread) whatever the policy.
    let (committer, _) = Committer::thread_with_journal(sync, &dir.join(JOURNAL_FILE))?;
    let committer_stopped = committer.stopped();
    let config = ManagerConfig {
        sync,
        committer: Some(committer),
        files: Some(files.clone()),
        max_pending_per_stream: updates.max(1),
        max_streams: streams.max(1),
        ..ManagerConfig::default()
    };
    let root = dir.to_path_buf();
    let paths = Arc::new(move |id: &String| native_stream_path(&root, id));
    let manager = StatusUpdateManager::<Native>::start(config, acker.clone().recipient(), paths);
    acker.send(Connect(Some(manager.clone()))).await?;

    let rss_before = super::rss_bytes();
    let started = Instant::now();
    let latency = Rc::new(RefCell::new(new_histogram()?));
    let next = Rc::new(RefCell::new(0usize));
    let answered = Rc::new(std::cell::Cell::new(0usize));
    let failure: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let handles: Rc<RefCell<Vec<Option<StreamHandle<Native>>>>> =
        Rc::new(RefCell::new(vec![None; streams]));
    let mut workers = Vec::new();
    for _ in 0..o.concurrency.clamp(1, total.max(1)) {
        let (manager, handles, latency, next, answered, failure, progress) = (
            manager.clone(),
            handles.clone(),
            latency.clone(),
            next.clone(),
            answered.clone(),
            failure.clone(),
            progress.clone(),
        );
        workers.push(actix_rt::spawn(async move {
            loop {
                let i = {
                    let mut next = next.borrow_mut();
                    let i = *next;
                    *next += 1;
                    i
                };
                if i >= total || failure.borrow().is_some() {
                    return;
                }
                let stream = i % streams;
                let update = bench_update(stream, i / streams);
                let sent = Instant::now();
                // A stream's first update creates it, through the manager;
                // the rest go through its handle, as an agent that keeps
                // one per stream sends them.
                let direct = handles.borrow()[stream].clone();
                let answer = match direct {
                    Some(handle) => handle.update(update, true).await,
                    None => match manager
                        .send(Update::<Native> {
                            update,
                            checkpoint: true,
                        })
                        .await
                    {
                        Ok(answer) => answer,
                        Err(err) => {
                            *failure.borrow_mut() = Some(err.to_string());
                            return;
                        }
                    },
                };
                if let Err(err) = answer {
                    *failure.borrow_mut() = Some(err.to_string());
                    return;
                }
                record_micros(&mut latency.borrow_mut(), sent.elapsed());
                answered.set(answered.get() + 1);
                if answered.get() % 1024 == 0 {
                    super::show_progress(&progress, answered.get(), started.elapsed());
                }
                // Only for a stream with updates still to come: with one
                // update per stream (P5) the handles would be all the load
                // keeps per stream besides the streams themselves.
                if i / streams + 1 < updates && handles.borrow()[stream].is_none() {
                    let id = format!("bench-{stream}");
                    match manager.send(GetHandle::<Native> { stream: id }).await {
                        Ok(handle) => handles.borrow_mut()[stream] = handle,
                        Err(err) => {
                            *failure.borrow_mut() = Some(err.to_string());
                            return;
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    // A handle keeps its stream's actor, and with it the committer thread
    // that the wind-down waits for: none may outlive the load.
    drop(handles);
    let failed = failure.borrow_mut().take();
    if let Some(err) = failed {
        wind_down(acker, manager, &files, committer_stopped).await;
        return Err(BenchError::Load(err));
    }
    let updates_elapsed = started.elapsed();
    super::show_progress(progress, total, updates_elapsed);
    let acks_elapsed = if ack && total > 0 {
        done_rx.await.map_err(|_| {
            BenchError::Load("the task awaiting the acknowledgements' replies stopped".into())
        })?;
        Some(started.elapsed())
    } else {
        None
    };
    // With `--no-ack` it waits for replies that never come.
    awaiting.abort();
    let rss_growth = super::rss_bytes().saturating_sub(rss_before);
    let listing = if o.list {
        progress.set_message("listing");
        list_all(&manager, streams).await.map(Some)
    } else {
        Ok(None)
    };
    wind_down(acker, manager, &files, committer_stopped).await;
    let listing = listing?;
    let latency = Rc::try_unwrap(latency)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone());
    Ok(LoadFigures {
        updates_elapsed,
        acks_elapsed,
        latency,
        rss_growth,
        open_files_peak: files.peak_open_files(),
        listing,
    })
}

/// Stops the load's manager (the acker's address of it is its last) and
/// waits until its streams closed their files and its committer thread ran
/// its final checkpoint (a `syncfs` of what the journal covered): that
/// belongs to the load, not to the recovery measured next, and must be done
/// before a failed run's files are removed.
async fn wind_down(
    acker: Addr<Acker>,
    manager: Addr<StatusUpdateManager<Native>>,
    files: &FileCache,
    committer: Option<crate::store::commit::Stopped>,
) {
    let _ = acker.send(Connect(None)).await;
    drop(manager);
    drop(acker);
    wait_closed(files).await;
    wait_stopped(committer.as_ref()).await;
}

/// Waits (at most a minute) until a committer thread whose handles are all
/// gone has stopped: its last round ran and its final checkpoint is done.
pub async fn wait_stopped(committer: Option<&crate::store::commit::Stopped>) {
    let Some(stopped) = committer else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stopped.is_stopped() && Instant::now() < deadline {
        settle_actors().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (at most a minute) until every stream actor of a stopped manager
/// closed its file, so that the next phase starts with all descriptors free.
pub async fn wait_closed(files: &FileCache) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while files.open_files() > 0 && Instant::now() < deadline {
        settle_actors().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Lets stopped actors finish (their files close) before the next phase.
pub async fn settle_actors() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}
