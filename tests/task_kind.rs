//! The task kind behaves as this project's generic manager does, not as
//! Mesos's older `TaskStatusUpdateManager` (mesos-reference §5,
//! `src/slave/task_status_update_manager.cpp`): one test per difference,
//! named for it; each says what the old manager did. Why: Mesos meant its
//! task manager to move onto the generic process (MESOS-8296); here every
//! kind runs on that one. The differences are listed in docs/API.md,
//! "The task kind and Mesos's task status update manager".
//!
//! Mesos's agent layout (`<dir>/frameworks/<fw>/tasks/<task>/task.updates`),
//! paused tokio time, a probe channel as the forward target.
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use uuid::Uuid;

use common::*;
use status_update_manager::error::{AckError, RecoverError, UpdateError};
use status_update_manager::kind::{
    encode_framed, InvalidUpdate, Record, RecordRef, Task, TaskStreamId, UpdateKind,
};
use status_update_manager::messages::{
    AckOutcome, Acknowledge, Forward, GetStream, Pause, Recover, RecoveryState, Resume,
    StreamStats, Update, UpdateOutcome,
};
use status_update_manager::proto::mesos::internal::StatusUpdate;
use status_update_manager::proto::mesos::TaskState;
use status_update_manager::store::{Fault, FaultPlan, FrameReader, Next};
use status_update_manager::{ManagerConfig, StatusUpdateManager, StreamPaths};

type Manager = Addr<StatusUpdateManager<Task>>;
type Forwards = UnboundedReceiver<Forward<Task>>;

const RUNNING: TaskState = TaskState::TaskRunning;
const FINISHED: TaskState = TaskState::TaskFinished;
const FW: &str = "fw-1";
/// Paused timers fire on whole milliseconds: a deadline is rounded up by < 1 ms.
const TICK: Duration = Duration::from_millis(1);

fn boot(dir: &Path) -> (Manager, Forwards) {
    start::<Task>(inline_config(), task_paths(dir))
}

/// An agent restart: the old manager and its probe go, a fresh manager
/// starts over the same directory.
async fn restart(manager: Manager, rx: Forwards, dir: &Path) -> (Manager, Forwards) {
    drop(manager);
    drop(rx);
    settle().await;
    boot(dir)
}

fn id(task: &str) -> TaskStreamId {
    TaskStreamId {
        framework_id: FW.into(),
        task_id: task.into(),
    }
}

fn id_of(u: &StatusUpdate) -> TaskStreamId {
    Task::stream_id(u).expect("a task update names its stream")
}

async fn update(m: &Manager, u: &StatusUpdate) -> Result<UpdateOutcome, UpdateError> {
    m.send(Update::<Task> {
        update: u.clone(),
        checkpoint: true,
    })
    .await
    .expect("manager is running")
}

async fn ack_uuid(m: &Manager, stream: TaskStreamId, uuid: Uuid) -> Result<AckOutcome, AckError> {
    m.send(Acknowledge::<Task> { stream, uuid })
        .await
        .expect("manager is running")
}

async fn ack(m: &Manager, u: &StatusUpdate) -> Result<AckOutcome, AckError> {
    ack_uuid(m, id_of(u), task_uuid(u)).await
}

async fn recover(
    m: &Manager,
    ids: &[TaskStreamId],
    strict: bool,
) -> Result<RecoveryState<Task>, RecoverError> {
    m.send(Recover::<Task> {
        ids: ids.to_vec(),
        strict,
    })
    .await
    .expect("manager is running")
}

async fn stream(m: &Manager, id: TaskStreamId) -> Option<StreamStats<Task>> {
    m.send(GetStream::<Task> { stream: id })
        .await
        .expect("manager is running")
        .expect("the stream answers")
}

/// The framed bytes of one record, as the manager writes them.
fn framed(record: RecordRef<'_, StatusUpdate>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_framed::<Task>(record, &mut out).expect("record fits");
    out
}

/// The records of a task file, which must end cleanly.
fn records(path: &Path) -> Vec<Record<StatusUpdate>> {
    let bytes = std::fs::read(path).expect("stream file");
    let mut reader = FrameReader::new(&bytes);
    let mut out = Vec::new();
    loop {
        match reader.next_frame() {
            Next::Record { body, .. } => out.push(Task::decode_record(body).expect("a record")),
            Next::End => return out,
            other => panic!("not a clean file: {other:?}"),
        }
    }
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every forward already on its way, as `(task, attempt)`, sorted.
async fn sends(rx: &mut Forwards) -> Vec<(String, u32)> {
    settle().await;
    let mut out = Vec::new();
    while let Ok(forward) = rx.try_recv() {
        out.push((forward.stream.task_id, forward.attempt));
    }
    out.sort();
    out
}

fn send(task: &str, attempt: u32) -> (String, u32) {
    (task.to_string(), attempt)
}

/// Old: the new stream's file is opened `O_CREAT | O_APPEND`, so an existing
/// file is appended to. Here (Mesos's generic rule U1) it is refused: the
/// file is left as it is and no stream is created; recover it first.
#[actix::test]
async fn existing_file_of_a_new_stream_is_refused_not_appended_to() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let u1 = task_update(FW, "t", RUNNING);
    update(&m, &u1).await.unwrap();
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let path = task_path(dir.path(), &id("t"));
    let before = std::fs::read(&path).unwrap();

    let u2 = task_update(FW, "t", FINISHED);
    let err = update(&m, &u2).await.unwrap_err();
    assert!(
        matches!(&err, UpdateError::FileExists { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing appended");
    assert!(stream(&m, id("t")).await.is_none());
    assert_no_forward(&mut rx, "refused update").await;

    // Recovered first, the stream takes it, after what the file held.
    recover(&m, &[id("t")], true).await.unwrap();
    assert_eq!(
        recv_or_fail(&mut rx, "recovered head").await.uuid(),
        task_uuid(&u1)
    );
    assert_eq!(update(&m, &u2).await.unwrap(), UpdateOutcome::Accepted);
    assert_eq!(records(&path), vec![Record::Update(u1), Record::Update(u2)]);
}

/// Old: a stream whose file cannot be created is registered anyway with a
/// sticky error, and every update and ack of it fails. Here the update
/// fails with `CreateFailed`, no stream is registered, and the next update
/// tries again.
#[actix::test]
async fn failed_file_creation_registers_no_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    // A regular file where the layout needs a directory.
    let blocker = dir.path().join("frameworks");
    std::fs::write(&blocker, b"not a directory").unwrap();

    let u = task_update(FW, "t", RUNNING);
    let err = update(&m, &u).await.unwrap_err();
    assert!(matches!(err, UpdateError::CreateFailed { .. }), "{err:?}");
    settle().await;
    assert!(stream(&m, id("t")).await.is_none());
    assert_no_forward(&mut rx, "nothing was created").await;

    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(update(&m, &u).await.unwrap(), UpdateOutcome::Accepted);
    let forward = recv_or_fail(&mut rx, "the update, once its file could be made").await;
    assert_eq!((forward.attempt, forward.uuid()), (0, task_uuid(&u)));
    assert_eq!(
        records(&task_path(dir.path(), &id("t"))),
        vec![Record::Update(u)]
    );
}

/// Old: the file is opened without `O_SYNC` and never synced ("the page
/// cache is enough"). Here an update is answered only once a sync covers
/// its record (`sync = batch` by default): a failing sync fails the update.
#[actix::test]
async fn update_is_answered_only_after_its_sync() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultPlan::new();
    let config = ManagerConfig {
        faults: Some(faults.clone()),
        ..inline_config()
    };
    let (m, mut rx) = start::<Task>(config, task_paths(dir.path()));
    let u1 = task_update(FW, "t", RUNNING);
    update(&m, &u1).await.unwrap();
    recv_or_fail(&mut rx, "u1").await;

    let before = faults.syncs();
    let u2 = task_update(FW, "t", RUNNING);
    assert_eq!(update(&m, &u2).await.unwrap(), UpdateOutcome::Accepted);
    assert!(faults.syncs() > before, "answered before any sync");

    faults.fail_nth_sync(1, Fault::Eio);
    let u3 = task_update(FW, "t", FINISHED);
    let err = update(&m, &u3).await.unwrap_err();
    assert!(matches!(err, UpdateError::Storage { .. }), "{err:?}");
}

/// Old: a failed write leaves the stream with a sticky error; it refuses
/// every update and ack from then on. Here the update fails, the stream
/// reloads from its file and serves again.
#[actix::test]
async fn write_failure_restarts_the_stream_instead_of_a_sticky_error() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultPlan::new();
    let config = ManagerConfig {
        faults: Some(faults.clone()),
        ..inline_config()
    };
    let (m, mut rx) = start::<Task>(config, task_paths(dir.path()));
    let u1 = task_update(FW, "t", RUNNING);
    update(&m, &u1).await.unwrap();
    recv_or_fail(&mut rx, "u1").await;

    faults.fail_nth_write(1, Fault::Eio);
    let u2 = task_update(FW, "t", RUNNING);
    let err = update(&m, &u2).await.unwrap_err();
    assert!(matches!(err, UpdateError::Storage { .. }), "{err:?}");
    let resent = recv_or_fail(&mut rx, "u1 again from the reloaded stream").await;
    assert_eq!(resent.uuid(), task_uuid(&u1));

    let u3 = task_update(FW, "t", FINISHED);
    assert_eq!(update(&m, &u3).await.unwrap(), UpdateOutcome::Accepted);
    assert!(!ack(&m, &u1).await.unwrap().stream_terminated);
    let next = recv_or_fail(&mut rx, "u3 after u1's ack").await;
    assert_eq!(next.uuid(), task_uuid(&u3));
    assert!(ack(&m, &u3).await.unwrap().stream_terminated);
}

/// Old: the top-level `uuid` is required ("Task status update is missing
/// 'uuid'"). Here it falls back to `status.uuid`, live and in the file.
#[actix::test]
async fn status_uuid_falls_back_to_status_uuid() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let mut u = task_update(FW, "t", RUNNING);
    let uuid = task_uuid(&u);
    u.uuid = None;

    assert_eq!(update(&m, &u).await.unwrap(), UpdateOutcome::Accepted);
    assert_eq!(recv_or_fail(&mut rx, "u").await.uuid(), uuid);
    assert_eq!(update(&m, &u).await.unwrap(), UpdateOutcome::Duplicate);

    // The record reads back with the same key.
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let state = recover(&m, &[id("t")], true).await.unwrap();
    assert_eq!(state.streams[&id("t")].as_ref().unwrap().updates, vec![u]);
    assert_eq!(recv_or_fail(&mut rx, "recovered").await.uuid(), uuid);
    assert!(!ack_uuid(&m, id("t"), uuid).await.unwrap().stream_terminated);
}

/// Old: the stream (and its empty file) is created before the uuid is
/// checked, so a rejected update leaves both behind. Here nothing is created.
#[actix::test]
async fn update_without_a_uuid_leaves_no_stream_or_file() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let mut u = task_update(FW, "t", RUNNING);
    u.uuid = None;
    u.status.as_mut().unwrap().uuid = None;

    let err = update(&m, &u).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Invalid {
                reason: InvalidUpdate::MissingUuid,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(stream(&m, id("t")).await.is_none());
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    assert!(!dir.path().join("frameworks").exists());
    assert_no_forward(&mut rx, "rejected").await;
}

/// Old: a uuid that is not 16 bytes aborts the agent
/// (`UUID::fromBytes(..).get()`). Here it is a typed error and nothing is
/// created.
#[actix::test]
async fn malformed_uuid_is_a_typed_error_not_an_abort() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let mut u = task_update(FW, "t", RUNNING);
    u.uuid = Some(vec![1, 2, 3]);

    let err = update(&m, &u).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Invalid {
                reason: InvalidUpdate::UuidLength { len: 3 },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(stream(&m, id("t")).await.is_none());
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    assert_no_forward(&mut rx, "rejected").await;
}

/// Old: `latest_state` on an update is not looked at. Here (as the generic
/// manager rejects `latest_status`) such an update is refused, and nothing
/// is created for it.
#[actix::test]
async fn update_carrying_latest_state_is_refused() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let mut u = task_update(FW, "t", RUNNING);
    u.latest_state = Some(RUNNING as i32);

    let err = update(&m, &u).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Invalid {
                reason: InvalidUpdate::LatestStatusSet,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(stream(&m, id("t")).await.is_none());
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    assert_no_forward(&mut rx, "rejected").await;
}

/// Old: the manager forwards the update as queued; the agent's
/// `Slave::forward` sets `latest_state` to the task's state in the agent.
/// Here every forward carries the state of the newest queued update, and
/// the file's records never carry it.
#[actix::test]
async fn forward_carries_latest_state_of_the_newest_update() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let u1 = task_update(FW, "t", RUNNING);
    let u2 = task_update(FW, "t", FINISHED);

    update(&m, &u1).await.unwrap();
    let first = recv_or_fail(&mut rx, "u1").await;
    assert_eq!(first.update.latest_state, Some(RUNNING as i32));
    assert_eq!(first.update.status, u1.status);

    update(&m, &u2).await.unwrap();
    advance(MIN + TICK).await;
    let retry = recv_or_fail(&mut rx, "u1's retry").await;
    assert_eq!(retry.attempt, 1);
    assert_eq!(retry.update.status, u1.status, "still the head");
    assert_eq!(retry.update.latest_state, Some(FINISHED as i32));

    assert_eq!(
        records(&task_path(dir.path(), &id("t"))),
        vec![Record::Update(u1), Record::Update(u2)],
        "stored without latest_state"
    );
}

/// Old: an ack naming another uuid than the head's is reported as
/// "Duplicate task status acknowledgement". Here it is `UnexpectedAck`,
/// naming both uuids; nothing changes.
#[actix::test]
async fn ack_of_another_uuid_is_unexpected_not_duplicate() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let u = task_update(FW, "t", RUNNING);
    update(&m, &u).await.unwrap();
    recv_or_fail(&mut rx, "u").await;

    let other = Uuid::new_v4();
    let err = ack_uuid(&m, id("t"), other).await.unwrap_err();
    let head = task_uuid(&u).to_string();
    assert!(
        matches!(&err, AckError::UnexpectedAck { expected, got, .. } if *expected == head && *got == other.to_string()),
        "{err:?}"
    );
    let stats = stream(&m, id("t")).await.unwrap();
    assert_eq!((stats.pending, stats.acknowledged), (1, 0));
    assert!(!ack(&m, &u).await.unwrap().stream_terminated);
}

/// Old: with nothing pending an ack fails as "Unexpected task status update
/// acknowledgment", checked before anything else, even for the uuid just
/// acknowledged. Here a uuid already acknowledged is `DuplicateAck` (checked
/// first: a retried ack whose reply was lost can tell it succeeded); another
/// one is `NothingPending`.
#[actix::test]
async fn repeated_ack_with_nothing_pending_is_duplicate() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let u = task_update(FW, "t", RUNNING);
    update(&m, &u).await.unwrap();
    recv_or_fail(&mut rx, "u").await;
    assert!(!ack(&m, &u).await.unwrap().stream_terminated);
    assert_eq!(stream(&m, id("t")).await.unwrap().pending, 0);

    let err = ack(&m, &u).await.unwrap_err();
    assert!(matches!(err, AckError::DuplicateAck { .. }), "{err:?}");
    let err = ack_uuid(&m, id("t"), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, AckError::NothingPending { .. }), "{err:?}");
}

/// Old: one `timeout(duration)` handler; whichever timer fires re-sends
/// every head whose deadline passed with the gap of *that* timer doubled,
/// so of two streams due at once one takes the other's gap. Here each
/// stream doubles its own gap: `a` (10, 20, 40 s so far) and `b` (just
/// started) are both due at 70 s and go on at 80 s and 20 s gaps.
#[actix::test]
async fn each_stream_backs_off_on_its_own_schedule() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let t0 = Instant::now();
    // Paused time moves only by `advance`: each check lands a little after
    // the due times, a resend is made at the check's instant and its next
    // gap counts from there.
    async fn until(t0: Instant, millis: u64) {
        let when = t0 + Duration::from_millis(millis);
        advance(when.saturating_duration_since(Instant::now())).await;
    }

    update(&m, &task_update(FW, "a", RUNNING)).await.unwrap();
    assert_eq!(sends(&mut rx).await, vec![send("a", 0)]);
    until(t0, 10_050).await; // a due at 10 s
    assert_eq!(sends(&mut rx).await, vec![send("a", 1)]);
    until(t0, 30_100).await; // a due at 30.05 s
    assert_eq!(sends(&mut rx).await, vec![send("a", 2)]);
    until(t0, 60_000).await;
    update(&m, &task_update(FW, "b", RUNNING)).await.unwrap();
    assert_eq!(sends(&mut rx).await, vec![send("b", 0)]);

    until(t0, 70_150).await; // a due at 70.1 s, b at 70 s
    assert_eq!(sends(&mut rx).await, vec![send("a", 3), send("b", 1)]);
    until(t0, 90_200).await; // b due at 90.15 s (a 20 s gap)
    assert_eq!(sends(&mut rx).await, vec![send("b", 2)]);
    until(t0, 130_250).await; // b due at 130.2 s
    assert_eq!(sends(&mut rx).await, vec![send("b", 3)]);
    until(t0, 150_300).await; // a due at 150.15 s (an 80 s gap)
    assert_eq!(sends(&mut rx).await, vec![send("a", 4)]);
}

/// Old: the manager reads no file (the agent's `state.cpp` does) and its
/// `recover` answers only success or failure. Here `Recover` reads each
/// asked stream's file and reports it: its updates, whether it ended.
#[actix::test]
async fn recovery_reads_the_files_and_reports_each_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let ua = task_update(FW, "a", RUNNING);
    let ub = task_update(FW, "b", FINISHED);
    update(&m, &ua).await.unwrap();
    update(&m, &ub).await.unwrap();
    assert_eq!(sends(&mut rx).await.len(), 2);
    assert!(ack(&m, &ub).await.unwrap().stream_terminated);
    // `c` has its directory but no file.
    std::fs::create_dir_all(task_path(dir.path(), &id("c")).parent().unwrap()).unwrap();

    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let state = recover(&m, &[id("a"), id("b"), id("c")], true)
        .await
        .unwrap();
    assert_eq!(state.errors, 0);
    let a = state.streams[&id("a")].as_ref().unwrap();
    assert_eq!(
        (a.updates.to_vec(), a.terminated),
        (vec![ua.clone()], false)
    );
    let b = state.streams[&id("b")].as_ref().unwrap();
    assert_eq!((b.updates.to_vec(), b.terminated), (vec![ub], true));
    assert!(state.streams[&id("c")].is_none());
    assert!(stream(&m, id("a")).await.is_some());
    assert!(
        stream(&m, id("b")).await.is_none(),
        "an ended stream is not kept"
    );
    assert_eq!(
        recv_or_fail(&mut rx, "a's head").await.uuid(),
        task_uuid(&ua)
    );
    assert_no_forward(&mut rx, "only a is pending").await;
}

/// Old: replay marks an update acknowledged if the file holds an ACK with
/// its uuid anywhere (and pops the queue's front for it). Here, as in the
/// generic manager, each ACK record acknowledges the head of the queue,
/// whatever uuid it carries. For files written in order (each ACK names
/// the head, as both managers write them) the two agree; for this file
/// they do not: the old manager would take FINISHED as acknowledged and
/// drop the stream; here RUNNING is acknowledged and FINISHED is pending.
#[actix::test]
async fn recovered_acks_match_by_position_not_uuid() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let u1 = task_update(FW, "t", RUNNING);
    let u2 = task_update(FW, "t", FINISHED);
    let path = task_path(dir.path(), &id("t"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = [
        framed(RecordRef::Update(&u1)),
        framed(RecordRef::Update(&u2)),
        framed(RecordRef::Ack(task_uuid(&u2))),
    ]
    .concat();
    std::fs::write(&path, &file).unwrap();

    let state = recover(&m, &[id("t")], true).await.unwrap();
    let t = state.streams[&id("t")].as_ref().unwrap();
    assert_eq!(
        (t.updates.to_vec(), t.terminated),
        (vec![u1, u2.clone()], false)
    );
    let stats = stream(&m, id("t")).await.unwrap();
    assert_eq!((stats.pending, stats.acknowledged), (1, 1));
    let head = recv_or_fail(&mut rx, "the head after the ACK").await;
    assert_eq!((head.attempt, head.uuid()), (0, task_uuid(&u2)));
    assert_eq!(std::fs::read(&path).unwrap(), file, "file untouched");
    assert!(ack(&m, &u2).await.unwrap().stream_terminated);
}

/// Old: nothing is forwarded during recovery; pending updates go out on the
/// next `resume`. Here a recovered head is forwarded at once, unless the
/// manager is paused (then on `Resume`, as before).
#[actix::test]
async fn recovery_forwards_the_head_at_once_unless_paused() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let u = task_update(FW, "t", RUNNING);
    update(&m, &u).await.unwrap();

    let (m, mut rx) = restart(m, rx, dir.path()).await;
    recover(&m, &[id("t")], true).await.unwrap();
    let head = recv_or_fail(&mut rx, "recovered head, no resume").await;
    assert_eq!((head.attempt, head.uuid()), (0, task_uuid(&u)));

    let (m, mut rx) = restart(m, rx, dir.path()).await;
    m.send(Pause).await.unwrap();
    recover(&m, &[id("t")], true).await.unwrap();
    assert_no_forward(&mut rx, "paused recovery").await;
    advance(MIN + TICK).await;
    assert_no_forward(&mut rx, "paused: no retry").await;
    m.send(Resume).await.unwrap();
    let head = recv_or_fail(&mut rx, "resume").await;
    assert_eq!((head.attempt, head.uuid()), (0, task_uuid(&u)));
}

/// Old: the manager builds the path itself from the agent's work directory,
/// agent, framework, executor, container and task, so a checkpointed update
/// needs an executor and a container id. Here the path is whatever the
/// `StreamPaths` function given to `start` says for (framework, task).
#[actix::test]
async fn file_path_comes_from_the_paths_function() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let paths: StreamPaths<Task> = Arc::new(move |id: &TaskStreamId| {
        root.join(format!("{}--{}.log", id.framework_id, id.task_id))
    });
    let (m, mut rx) = start::<Task>(inline_config(), paths);
    let mut u = task_update(FW, "t", RUNNING);
    u.executor_id = None;

    assert_eq!(update(&m, &u).await.unwrap(), UpdateOutcome::Accepted);
    recv_or_fail(&mut rx, "u").await;
    let path = dir.path().join("fw-1--t.log");
    assert_eq!(files_under(dir.path()), vec![path.clone()]);
    assert_eq!(records(&path), vec![Record::Update(u)]);
}
