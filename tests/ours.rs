//! SEMANTICS.md "Ours" cases C3 (hostile stream ids), C5 (forward recipient
//! gone) and C7 (jitter), on paused tokio time.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

use common::*;
use status_update_manager::error::{AckError, RecoverError, UpdateError};
use status_update_manager::kind::{InvalidUpdate, Native, Operation, UpdateKind};
use status_update_manager::messages::{
    AckOutcome, Acknowledge, Forward, GetStream, ListStreams, Pause, Recover, RecoveryState,
    Resume, StreamStats, Update, UpdateOutcome,
};
use status_update_manager::proto::mesos::OperationState;
use status_update_manager::store::layout::{discover_native_streams, native_stream_path};
use status_update_manager::stream::RetryPolicy;
use status_update_manager::{ManagerConfig, StatusUpdateManager};

type Manager<K> = Addr<StatusUpdateManager<K>>;

const TICK: Duration = Duration::from_millis(1);
const PENDING: OperationState = OperationState::OperationPending;

async fn update<K: UpdateKind>(
    m: &Manager<K>,
    u: &K::Update,
) -> Result<UpdateOutcome, UpdateError> {
    m.send(Update::<K> {
        update: u.clone(),
        checkpoint: true,
    })
    .await
    .expect("manager is running")
}

async fn ack<K: UpdateKind>(
    m: &Manager<K>,
    stream: K::StreamId,
    uuid: Uuid,
) -> Result<AckOutcome, AckError> {
    m.send(Acknowledge::<K> { stream, uuid })
        .await
        .expect("manager is running")
}

async fn recover<K: UpdateKind>(
    m: &Manager<K>,
    ids: Vec<K::StreamId>,
) -> Result<RecoveryState<K>, RecoverError> {
    m.send(Recover::<K> { ids, strict: true })
        .await
        .expect("manager is running")
}

async fn stats<K: UpdateKind>(m: &Manager<K>, stream: K::StreamId) -> StreamStats<K> {
    let found = m.send(GetStream::<K> { stream }).await;
    found
        .expect("manager is running")
        .expect("the stream answers")
        .expect("stream in memory")
}

/// Every forward already on its way (no time passes).
async fn drain<K: UpdateKind>(rx: &mut UnboundedReceiver<Forward<K>>) -> Vec<Forward<K>> {
    settle().await;
    let mut out = Vec::new();
    while let Ok(forward) = rx.try_recv() {
        out.push(forward);
    }
    out
}

/// Every regular file below `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let entry = entry.expect("dir entry");
            if entry.file_type().expect("file type").is_dir() {
                todo.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[actix::test]
async fn c3_hostile_stream_ids_stay_under_data_dir() {
    tokio::time::pause();
    // The data dir sits in a sandbox of our own, so an escape would show.
    let sandbox = tempfile::tempdir().unwrap();
    let dir = sandbox.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let (m, mut rx) = start::<Native>(inline_config(), native_paths(&dir));

    let mut ids: Vec<String> = [
        "..",
        ".",
        "a/b",
        "/abs",
        "%",
        "a%2Fb",
        "%2F",
        "日本語/..",
        "../../escape",
        "streams",
        ".updates",
    ]
    .map(String::from)
    .to_vec();
    ids.push("x".repeat(256));
    ids.push("é".repeat(128)); // 256 bytes, 768 once encoded: several path pieces
    let mut updates = BTreeMap::new();
    for id in &ids {
        let u = native_update(id, "RUNNING", false, "");
        assert_eq!(
            update(&m, &u).await.unwrap(),
            UpdateOutcome::Accepted,
            "{id:?}"
        );
        updates.insert(id.clone(), u);
    }
    let forwarded: BTreeSet<(String, u32)> = drain(&mut rx)
        .await
        .into_iter()
        .map(|f| (f.stream, f.attempt))
        .collect();
    let want: BTreeSet<(String, u32)> = ids.iter().map(|id| (id.clone(), 0)).collect();
    assert_eq!(forwarded, want);

    // Each file is where the layout says, strictly below data_dir/streams,
    // and nothing else exists anywhere in the sandbox.
    let mut expected: Vec<(String, PathBuf)> = ids
        .iter()
        .map(|id| (id.clone(), native_stream_path(&dir, id)))
        .collect();
    expected.sort();
    for (id, path) in &expected {
        assert!(path.is_file(), "{id:?}: {path:?}");
        let below = path
            .strip_prefix(dir.join("streams"))
            .expect("under streams/");
        assert!(
            below
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{id:?}: {path:?}"
        );
    }
    let mut expected_files: Vec<PathBuf> = expected.iter().map(|(_, p)| p.clone()).collect();
    expected_files.sort();
    assert_eq!(files_under(sandbox.path()), expected_files);
    assert_eq!(
        names_in(sandbox.path()),
        ["data"],
        "the parent of the data dir got nothing"
    );
    assert_eq!(names_in(&dir), ["streams"]);
    assert_eq!(discover_native_streams(&dir).unwrap(), expected);

    // Rejected ids write nothing.
    for bad in ["a\0b".to_string(), String::new(), "x".repeat(257)] {
        let err = update(&m, &native_update(&bad, "RUNNING", false, ""))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpdateError::Invalid {
                    reason: InvalidUpdate::StreamId(_),
                    ..
                }
            ),
            "{} bytes: {err:?}",
            bad.len()
        );
    }
    assert_eq!(files_under(sandbox.path()), expected_files);
    assert_eq!(
        m.send(ListStreams::<Native>::all()).await.unwrap().len(),
        ids.len()
    );
    assert_no_forward(&mut rx, "rejected ids").await;

    // Round trip: a restarted manager recovers exactly the discovered ids.
    drop(m);
    drop(rx);
    settle().await;
    let (m, mut rx) = start::<Native>(inline_config(), native_paths(&dir));
    let discovered: Vec<String> = discover_native_streams(&dir)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let state = recover(&m, discovered).await.unwrap();
    assert_eq!(state.errors, 0);
    assert_eq!(state.streams.len(), ids.len());
    for (id, u) in &updates {
        let recovered = state.streams[id]
            .as_ref()
            .unwrap_or_else(|| panic!("{id:?}: None"));
        assert_eq!(recovered.updates, vec![u.clone()], "{id:?}");
    }
    let heads: BTreeSet<(String, u32)> = drain(&mut rx)
        .await
        .into_iter()
        .map(|f| (f.stream, f.attempt))
        .collect();
    assert_eq!(heads, want);
    assert_eq!(files_under(sandbox.path()), expected_files);
}

/// An upstream that can go away: forwards land in a channel until `GoAway`
/// stops the actor (its mailbox closes and its channel is dropped).
struct Upstream {
    tx: UnboundedSender<Forward<Operation>>,
}

impl Actor for Upstream {
    type Context = Context<Self>;
}

impl Handler<Forward<Operation>> for Upstream {
    type Result = ();
    fn handle(&mut self, msg: Forward<Operation>, _: &mut Context<Self>) {
        let _ = self.tx.send(msg);
    }
}

struct GoAway;

impl Message for GoAway {
    type Result = ();
}

impl Handler<GoAway> for Upstream {
    type Result = ();
    fn handle(&mut self, _: GoAway, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[actix::test]
async fn c5_forward_recipient_gone_keeps_retrying() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = unbounded_channel();
    let upstream = Upstream { tx }.start();
    let m = StatusUpdateManager::<Operation>::start(
        inline_config(),
        upstream.clone().recipient(),
        operation_paths(dir.path()),
    );
    let op = Uuid::new_v4();
    let u1 = op_update(op, PENDING, None);
    update(&m, &u1).await.unwrap();
    assert_eq!(recv_or_fail(&mut rx, "first send").await.attempt, 0);

    upstream.send(GoAway).await.unwrap();
    settle().await;
    assert!(!upstream.connected(), "the upstream actor stopped");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));

    // Resends go nowhere, but on schedule: attempt grows at 10, 30, 70, ... s.
    let mut gap = MIN;
    for attempt in 1..=6 {
        advance(gap - TICK).await;
        assert_eq!(
            stats(&m, op).await.attempt,
            attempt - 1,
            "before resend #{attempt}"
        );
        advance(2 * TICK).await;
        let next = (gap * 2).min(Duration::from_secs(600));
        let s = stats(&m, op).await;
        assert_eq!(
            (s.attempt, s.next_retry_in),
            (attempt, Some(next)),
            "resend #{attempt}"
        );
        gap = next;
    }

    // The stream still works: queue, ack, and the next head starts over.
    let u2 = op_update(op, PENDING, None);
    assert_eq!(update(&m, &u2).await.unwrap(), UpdateOutcome::Accepted);
    assert!(
        !ack(&m, op, op_status_uuid(&u1))
            .await
            .unwrap()
            .stream_terminated
    );
    let s = stats(&m, op).await;
    assert_eq!((s.pending, s.attempt, s.next_retry_in), (1, 0, Some(MIN)));
    advance(MIN + TICK).await;
    assert_eq!(stats(&m, op).await.attempt, 1);
    assert!(
        !ack(&m, op, op_status_uuid(&u2))
            .await
            .unwrap()
            .stream_terminated
    );
    let s = stats(&m, op).await;
    assert_eq!((s.pending, s.acknowledged, s.next_retry_in), (0, 2, None));
}

/// Waits for resend `attempt` of a head last sent `gap` ago (nominal),
/// asserting it lands in `[0.75, 1.25] × gap`; returns when it came.
async fn jittered_resend(
    rx: &mut UnboundedReceiver<Forward<Operation>>,
    gap: Duration,
    attempt: u32,
) -> Duration {
    let low = gap.mul_f64(0.75) - TICK;
    let high = gap.mul_f64(1.25) + 2 * TICK;
    advance(low).await;
    assert_no_forward(rx, &format!("resend #{attempt} before 0.75 × {gap:?}")).await;
    let step = gap / 200;
    let mut elapsed = low;
    while elapsed < high {
        let d = step.min(high - elapsed);
        advance(d).await;
        elapsed += d;
        if let Ok(forward) = rx.try_recv() {
            assert_eq!(forward.attempt, attempt);
            assert_no_forward(rx, "one resend at a time").await;
            return elapsed;
        }
    }
    panic!("resend #{attempt} did not come within 1.25 × {gap:?}");
}

#[actix::test]
async fn c7_jitter_bounds() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        retry: RetryPolicy {
            jitter: 0.25,
            ..RetryPolicy::default()
        },
        ..inline_config()
    };
    let (m, mut rx) = start::<Operation>(config, operation_paths(dir.path()));

    // Every resend within [0.75, 1.25] × the nominal gap, over a few streams
    // in turn (one at a time, so each gap is measured from its own send).
    let mut factors = Vec::new();
    for _ in 0..3 {
        let op = Uuid::new_v4();
        let u = op_update(op, PENDING, None);
        update(&m, &u).await.unwrap();
        assert_eq!(
            recv_or_fail(&mut rx, "first send, not delayed")
                .await
                .attempt,
            0
        );
        let mut gap = MIN;
        for attempt in 1..=8 {
            let came = jittered_resend(&mut rx, gap, attempt).await;
            factors.push(came.as_secs_f64() / gap.as_secs_f64());
            gap = (gap * 2).min(Duration::from_secs(600));
        }
        ack(&m, op, op_status_uuid(&u)).await.unwrap();
    }
    let spread = factors.iter().cloned().fold(f64::MIN, f64::max)
        - factors.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 0.1, "the gaps are jittered: {factors:?}");

    // Resume spreads the heads over [0, 0.25 × MIN] instead of t = 0.
    let ops: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for op in &ops {
        update(&m, &op_update(*op, PENDING, None)).await.unwrap();
    }
    assert_eq!(drain(&mut rx).await.len(), ops.len());
    m.send(Pause).await.unwrap();
    advance(Duration::from_secs(1)).await;
    m.send(Resume).await.unwrap();
    let spread_end = MIN.mul_f64(0.25) + 2 * TICK;
    let step = Duration::from_millis(10);
    let mut arrivals: BTreeMap<Uuid, Duration> = BTreeMap::new();
    let mut elapsed = Duration::ZERO;
    loop {
        for forward in drain(&mut rx).await {
            assert_eq!(forward.attempt, 1, "{}", forward.stream);
            let first = arrivals.insert(forward.stream, elapsed);
            assert!(first.is_none(), "{} sent twice", forward.stream);
        }
        if elapsed >= spread_end {
            break;
        }
        let d = step.min(spread_end - elapsed);
        advance(d).await;
        elapsed += d;
    }
    assert_eq!(
        arrivals.len(),
        ops.len(),
        "every head by 2.5 s: {arrivals:?}"
    );
    let instants: BTreeSet<Duration> = arrivals.values().copied().collect();
    assert!(instants.len() > 1, "not all at once: {arrivals:?}");
    // Their retries come no sooner than 0.75 × MIN after them.
    advance(MIN.mul_f64(0.75) - spread_end - TICK).await;
    assert_no_forward(&mut rx, "no head later than 2.5 s, no retry yet").await;
}
