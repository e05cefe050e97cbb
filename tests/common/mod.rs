//! Shared test harness: a probe actor as the forward target, paused-time
//! helpers, and update builders for the three kinds; the bounds of real-time
//! waits ([`BOUND`], [`PROCESS_BOUND`], [`POLL`]); and, with the `service`
//! feature, the gRPC service in the test's process ([`server`]) and the built
//! binary as a child process ([`process`]).
#![allow(dead_code, unreachable_pub, missing_docs)]

#[cfg(feature = "service")]
pub mod nats;
#[cfg(feature = "service")]
pub mod process;
#[cfg(feature = "service")]
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

use status_update_manager::kind::{Native, Operation, UpdateKind};
use status_update_manager::messages::Forward;
use status_update_manager::proto::mesos;
use status_update_manager::proto::mesos::internal::UpdateOperationStatusMessage;
use status_update_manager::proto::status_update_manager::v1 as native;
use status_update_manager::{ManagerConfig, StatusUpdateManager, StreamPaths};

/// The forward target: every `Forward` lands in a channel the test reads.
pub struct Probe<K: UpdateKind> {
    tx: UnboundedSender<Forward<K>>,
}

impl<K: UpdateKind> Actor for Probe<K> {
    type Context = Context<Self>;
}

impl<K: UpdateKind> Handler<Forward<K>> for Probe<K> {
    type Result = ();
    fn handle(&mut self, msg: Forward<K>, _: &mut Context<Self>) {
        let _ = self.tx.send(msg);
    }
}

/// A probe recipient and the channel its forwards arrive on.
pub fn probe<K: UpdateKind>() -> (Recipient<Forward<K>>, UnboundedReceiver<Forward<K>>) {
    let (tx, rx) = unbounded_channel();
    let addr = Probe::create(|ctx| {
        ctx.set_mailbox_capacity(0);
        Probe { tx }
    });
    (addr.recipient(), rx)
}

/// Lets every ready actor and task run without moving time.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Moves paused time forward by `d` and lets due timers and messages run.
pub async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
}

/// The next forward, which must already be on its way (no time passes).
pub async fn recv_or_fail<K: UpdateKind>(
    rx: &mut UnboundedReceiver<Forward<K>>,
    what: &str,
) -> Forward<K> {
    settle().await;
    match rx.try_recv() {
        Ok(forward) => forward,
        Err(err) => panic!("expected a forward ({what}), got none: {err:?}"),
    }
}

/// Fails if any forward is waiting.
pub async fn assert_no_forward<K: UpdateKind>(rx: &mut UnboundedReceiver<Forward<K>>, what: &str) {
    settle().await;
    if let Ok(forward) = rx.try_recv() {
        panic!("expected no forward ({what}), got {forward:?}");
    }
}

/// Mesos's unit-test layout: `<dir>/streams/<operation uuid>`.
pub fn operation_paths(dir: &Path) -> StreamPaths<Operation> {
    let root = dir.join("streams");
    Arc::new(move |id: &Uuid| root.join(id.to_string()))
}

/// The path `operation_paths` gives.
pub fn operation_path(dir: &Path, id: &Uuid) -> PathBuf {
    dir.join("streams").join(id.to_string())
}

/// The service's layout for native streams.
pub fn native_paths(dir: &Path) -> StreamPaths<Native> {
    let dir = dir.to_path_buf();
    Arc::new(move |id: &String| status_update_manager::store::layout::native_stream_path(&dir, id))
}

/// The manager's defaults, with its commit rounds run on the test's own
/// arbiter ([`Committer::inline`](status_update_manager::store::Committer::inline)):
/// the same rounds the committer thread runs, deterministic under paused
/// tokio time.
pub fn inline_config() -> ManagerConfig {
    ManagerConfig {
        committer: Some(status_update_manager::store::Committer::inline()),
        ..ManagerConfig::default()
    }
}

/// A manager of `K` over `paths`, unpaused, with the defaults (10 s / 10 min retry).
pub fn start<K: UpdateKind>(
    config: ManagerConfig,
    paths: StreamPaths<K>,
) -> (Addr<StatusUpdateManager<K>>, UnboundedReceiver<Forward<K>>) {
    let (recipient, rx) = probe::<K>();
    (StatusUpdateManager::start(config, recipient, paths), rx)
}

/// Mesos's unit-test update: operation uuid, state, a random v4 status uuid,
/// and an optional framework id, nothing else.
pub fn op_update(
    operation: Uuid,
    state: mesos::OperationState,
    framework: Option<&str>,
) -> UpdateOperationStatusMessage {
    UpdateOperationStatusMessage {
        framework_id: framework.map(|f| mesos::FrameworkId {
            value: f.to_string(),
        }),
        slave_id: None,
        status: Some(mesos::OperationStatus {
            state: state as i32,
            uuid: Some(mesos::Uuid {
                value: Uuid::new_v4().as_bytes().to_vec(),
            }),
            ..Default::default()
        }),
        latest_status: None,
        operation_uuid: Some(mesos::Uuid {
            value: operation.as_bytes().to_vec(),
        }),
    }
}

/// The status uuid of an operation update.
pub fn op_status_uuid(update: &UpdateOperationStatusMessage) -> Uuid {
    let bytes = &update.status.as_ref().unwrap().uuid.as_ref().unwrap().value;
    Uuid::from_slice(bytes).unwrap()
}

/// What Mesos's tests expect to be forwarded: the update with
/// `latest_status` = its own status.
pub fn expected_forward(update: &UpdateOperationStatusMessage) -> UpdateOperationStatusMessage {
    let mut forward = update.clone();
    forward.latest_status = update.status.clone();
    forward
}

/// A native update with a random status uuid.
pub fn native_update(
    stream: &str,
    state: &str,
    terminal: bool,
    framework: &str,
) -> native::StatusUpdate {
    native::StatusUpdate {
        stream_id: stream.to_string(),
        framework_id: framework.to_string(),
        status: Some(native::Status {
            uuid: Uuid::new_v4().as_bytes().to_vec(),
            state: state.to_string(),
            terminal,
            ..Default::default()
        }),
        latest_status: None,
    }
}

/// The status uuid of a native update.
pub fn native_uuid(update: &native::StatusUpdate) -> Uuid {
    Uuid::from_slice(&update.status.as_ref().unwrap().uuid).unwrap()
}

pub const MIN: Duration = Duration::from_secs(10);

/// The Mesos agent's layout for task streams, under `dir`:
/// `<dir>/frameworks/<framework>/tasks/<task>/task.updates`.
pub fn task_paths(dir: &Path) -> StreamPaths<status_update_manager::kind::Task> {
    let dir = dir.to_path_buf();
    Arc::new(move |id: &status_update_manager::kind::TaskStreamId| task_path(&dir, id))
}

/// The path `task_paths` gives.
pub fn task_path(dir: &Path, id: &status_update_manager::kind::TaskStreamId) -> PathBuf {
    dir.join("frameworks")
        .join(&id.framework_id)
        .join("tasks")
        .join(&id.task_id)
        .join("task.updates")
}

/// Every stream id of `K` maps to the one file `path` (recovering a copied fixture).
pub fn single_file_paths<K: UpdateKind>(path: &Path) -> StreamPaths<K> {
    let path = path.to_path_buf();
    Arc::new(move |_: &K::StreamId| path.clone())
}

/// A task status update as a Mesos agent checkpoints it: framework, executor, agent, task
/// id, state, timestamps, and a random status uuid both at the top level and in the status.
pub fn task_update(
    framework: &str,
    task: &str,
    state: mesos::TaskState,
) -> mesos::internal::StatusUpdate {
    let uuid = Uuid::new_v4().as_bytes().to_vec();
    mesos::internal::StatusUpdate {
        framework_id: Some(mesos::FrameworkId {
            value: framework.to_string(),
        }),
        executor_id: Some(mesos::ExecutorId {
            value: "executor-1".to_string(),
        }),
        slave_id: Some(mesos::SlaveId {
            value: "agent-1".to_string(),
        }),
        status: Some(mesos::TaskStatus {
            task_id: Some(mesos::TaskId {
                value: task.to_string(),
            }),
            state: state as i32,
            timestamp: Some(1_700_000_000.0),
            uuid: Some(uuid.clone()),
            ..Default::default()
        }),
        timestamp: 1_700_000_000.0,
        uuid: Some(uuid),
        latest_state: None,
    }
}

/// The status uuid of a task update (its top-level `uuid`).
pub fn task_uuid(update: &mesos::internal::StatusUpdate) -> Uuid {
    Uuid::from_slice(update.uuid.as_deref().unwrap()).unwrap()
}

/// The Mesos-format fixtures shared with the other implementations.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

/// Every file and directory under `dir`, with the files' contents.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).expect("read the data dir") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                out.insert(path.clone(), None);
                walk(&path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read a data file");
                out.insert(path, Some(bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// A gRPC `StatusUpdate` of `stream` (and `framework`, empty for none) carrying `status`.
pub fn status_update(
    stream: &str,
    framework: &str,
    status: &native::Status,
) -> native::StatusUpdate {
    native::StatusUpdate {
        stream_id: stream.into(),
        framework_id: framework.into(),
        status: Some(status.clone()),
        latest_status: None,
    }
}

/// An `UpdateRequest` for `update`, checkpointed.
pub fn checkpointed(update: native::StatusUpdate) -> native::UpdateRequest {
    native::UpdateRequest {
        update: Some(update),
        memory_only: false,
    }
}

/// The states of the UPDATE records in native stream `stream`'s file under
/// `dir`, and how many are pending; asserts the file holds no torn or
/// corrupt bytes.
pub fn file_states(dir: &Path, stream: &str) -> (Vec<String>, usize) {
    let path = status_update_manager::store::layout::native_stream_path(dir, stream);
    let bytes = std::fs::read(&path).expect("stream file");
    let replayed = status_update_manager::stream::replay::<Native>(
        stream.to_string(),
        &path,
        &bytes,
        tokio::time::Instant::now(),
    )
    .expect("replay");
    assert_eq!(
        replayed.valid_bytes, replayed.file_bytes,
        "no torn or corrupt bytes left behind"
    );
    let pending = replayed.state.pending().len();
    let states =
        status_update_manager::stream::UpdateRecords::<Native>::new(bytes, replayed.updates)
            .iter()
            .map(|u| u.status.as_ref().unwrap().state.clone())
            .collect();
    (states, pending)
}

/// The longest a real-time test waits for something that must happen.
pub const BOUND: Duration = Duration::from_secs(10);
/// The longest a test waits on a child process of the built binary (to
/// print a line, to exit, to recover its data directory): a debug build
/// started while other test binaries load the machine needs far longer than
/// a server in the test's own process.
pub const PROCESS_BOUND: Duration = Duration::from_secs(20);
/// The gap between two looks at a condition in a bounded real-time wait.
pub const POLL: Duration = Duration::from_millis(10);

/// Waits until `check` holds, looking every [`POLL`]; fails the test naming
/// `what` if it does not within [`BOUND`]. For what the test cannot be told
/// of (a transport closed, a file removed by another thread).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not the case within {BOUND:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the committer thread is held at `faults`' gate (`held`
/// counts the threads held there), then lets every ready task on this
/// thread run: from then on nothing that round covers can be answered, so
/// a reply or forward seen now came before its write or sync.
pub async fn until_held(
    what: &str,
    faults: &status_update_manager::store::FaultPlan,
    held: fn(&status_update_manager::store::FaultPlan) -> usize,
) {
    eventually(what, || async { held(faults) > 0 }).await;
    settle().await;
}

/// `store.sync = batch` on `committer`, with `faults` injected.
pub fn batch_config(
    committer: &status_update_manager::store::Committer,
    faults: &status_update_manager::store::FaultPlan,
) -> ManagerConfig {
    ManagerConfig {
        sync: status_update_manager::store::SyncPolicy::Batch,
        committer: Some(committer.clone()),
        faults: Some(faults.clone()),
        ..ManagerConfig::default()
    }
}

/// What a request spawned as `actix_rt::spawn(addr.send(..))` was answered,
/// within [`BOUND`]; panics on a timeout, a closed mailbox or an error answer.
pub async fn answer<T, E: std::fmt::Debug>(
    reply: tokio::task::JoinHandle<Result<Result<T, E>, actix::MailboxError>>,
) -> T {
    tokio::time::timeout(BOUND, reply)
        .await
        .expect("answered in time")
        .expect("the request task")
        .expect("the manager's mailbox")
        .expect("an OK answer")
}

/// Waits for each of `replies` (requests to a manager), within [`BOUND`]
/// each, and checks that every one was accepted.
pub async fn all_accepted<R>(replies: Vec<R>)
where
    R: std::future::Future<
        Output = Result<
            Result<
                status_update_manager::messages::UpdateOutcome,
                status_update_manager::UpdateError,
            >,
            actix::MailboxError,
        >,
    >,
{
    for reply in replies {
        let outcome = tokio::time::timeout(BOUND, reply)
            .await
            .expect("answered in time")
            .expect("the manager's mailbox")
            .expect("an OK answer");
        assert_eq!(
            outcome,
            status_update_manager::messages::UpdateOutcome::Accepted
        );
    }
}
