//! The 24 derived cases of mesos-reference §4.4, one test each, adjusted
//! where SEMANTICS.md "Changed on purpose" changes the behaviour (6, 10-11,
//! 13, 21). Operation kind over Mesos's unit-test layout
//! (`<dir>/streams/<operation uuid>`), paused tokio time, a probe channel as
//! the forward target.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::Addr;
use prost::Message as _;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use common::*;
use status_update_manager::error::{AckError, RecoverError, ReplayError, UpdateError};
use status_update_manager::kind::{encode_framed, InvalidUpdate, Operation, RecordRef};
use status_update_manager::messages::{
    AckOutcome, Acknowledge, Cleanup, Forward, GetStream, ListStreams, Pause, Recover,
    RecoveryState, Resume, StreamStats, Update, UpdateOutcome,
};
use status_update_manager::proto::mesos::internal::UpdateOperationStatusMessage as OpUpdate;
use status_update_manager::proto::mesos::OperationState;
use status_update_manager::StatusUpdateManager;

type Manager = Addr<StatusUpdateManager<Operation>>;
type Forwards = UnboundedReceiver<Forward<Operation>>;

const PENDING: OperationState = OperationState::OperationPending;
const FINISHED: OperationState = OperationState::OperationFinished;
const FAILED: OperationState = OperationState::OperationFailed;
/// Paused timers fire on whole milliseconds: a deadline is rounded up by < 1 ms.
const TICK: Duration = Duration::from_millis(1);

fn boot(dir: &Path) -> (Manager, Forwards) {
    start::<Operation>(inline_config(), operation_paths(dir))
}

/// "Reset": drop every handle on the old manager and its probe, then start a
/// fresh manager over the same directory.
async fn restart(manager: Manager, rx: Forwards, dir: &Path) -> (Manager, Forwards) {
    drop(manager);
    drop(rx);
    settle().await;
    boot(dir)
}

async fn send_update(
    m: &Manager,
    u: &OpUpdate,
    checkpoint: bool,
) -> Result<UpdateOutcome, UpdateError> {
    m.send(Update::<Operation> {
        update: u.clone(),
        checkpoint,
    })
    .await
    .expect("manager is running")
}

async fn update(m: &Manager, u: &OpUpdate) -> Result<UpdateOutcome, UpdateError> {
    send_update(m, u, true).await
}

async fn ack_uuid(m: &Manager, op: Uuid, uuid: Uuid) -> Result<AckOutcome, AckError> {
    m.send(Acknowledge::<Operation> { stream: op, uuid })
        .await
        .expect("manager is running")
}

/// Acknowledges `u` on its own stream.
async fn ack(m: &Manager, u: &OpUpdate) -> Result<AckOutcome, AckError> {
    ack_uuid(m, op_of(u), op_status_uuid(u)).await
}

async fn recover(
    m: &Manager,
    ids: &[Uuid],
    strict: bool,
) -> Result<RecoveryState<Operation>, RecoverError> {
    m.send(Recover::<Operation> {
        ids: ids.to_vec(),
        strict,
    })
    .await
    .expect("manager is running")
}

async fn stream(m: &Manager, op: Uuid) -> Option<StreamStats<Operation>> {
    m.send(GetStream::<Operation> { stream: op })
        .await
        .expect("manager is running")
        .expect("the stream answers")
}

async fn listed(m: &Manager) -> Vec<Uuid> {
    let all = m.send(ListStreams::<Operation>::all()).await;
    all.expect("manager is running")
        .into_iter()
        .map(|s| s.stream)
        .collect()
}

fn op_of(u: &OpUpdate) -> Uuid {
    Uuid::from_slice(&u.operation_uuid.as_ref().expect("operation uuid").value).expect("16 bytes")
}

/// What is forwarded for head `head` while `newest` is the newest queued update.
fn forward_of(head: &OpUpdate, newest: &OpUpdate) -> OpUpdate {
    let mut forward = head.clone();
    forward.latest_status = newest.status.clone();
    forward
}

/// The framed bytes of one record, as the manager writes them.
fn framed(record: RecordRef<'_, OpUpdate>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_framed::<Operation>(record, &mut out).expect("record fits");
    out
}

fn framed_update(u: &OpUpdate) -> Vec<u8> {
    framed(RecordRef::Update(u))
}

fn framed_ack(u: &OpUpdate) -> Vec<u8> {
    framed(RecordRef::Ack(op_status_uuid(u)))
}

/// Mesos's corruption of tests 14/15: a framed *message* (not a record).
fn framed_message(u: &OpUpdate) -> Vec<u8> {
    let body = u.encode_to_vec();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn contents(dir: &Path, op: Uuid) -> Vec<u8> {
    std::fs::read(operation_path(dir, &op)).expect("stream file readable")
}

fn append(dir: &Path, op: Uuid, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(operation_path(dir, &op))
        .expect("stream file exists");
    file.write_all(bytes).expect("append");
}

fn write_file(dir: &Path, op: Uuid, bytes: &[u8]) {
    let path = operation_path(dir, &op);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
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

/// Every forward already on its way (no time passes).
async fn drain(rx: &mut Forwards) -> Vec<Forward<Operation>> {
    settle().await;
    let mut out = Vec::new();
    while let Ok(forward) = rx.try_recv() {
        out.push(forward);
    }
    out
}

/// `(stream, attempt)` of each forward, sorted.
fn sends(forwards: &[Forward<Operation>]) -> Vec<(Uuid, u32)> {
    let mut out: Vec<_> = forwards.iter().map(|f| (f.stream, f.attempt)).collect();
    out.sort();
    out
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

/// One send of each stream, as `attempt`, in the order of `sends`.
fn each(ids: &[Uuid], attempt: u32) -> Vec<(Uuid, u32)> {
    sorted(ids.to_vec())
        .into_iter()
        .map(|op| (op, attempt))
        .collect()
}

/// Asserts the head's next resend comes exactly `gap` after the last send
/// (not a tick earlier), as attempt `attempt`.
async fn expect_resend_after(rx: &mut Forwards, gap: Duration, attempt: u32) -> Forward<Operation> {
    advance(gap - TICK).await;
    assert_no_forward(rx, &format!("resend #{attempt} before {gap:?}")).await;
    advance(2 * TICK).await;
    let forward = recv_or_fail(rx, &format!("resend #{attempt} at {gap:?}")).await;
    assert_eq!(forward.attempt, attempt, "attempt of resend at {gap:?}");
    assert_no_forward(rx, &format!("a single resend #{attempt}")).await;
    forward
}

#[actix::test]
async fn derived_01_backoff_schedule() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, PENDING, None);
    assert_eq!(update(&m, &u).await.unwrap(), UpdateOutcome::Accepted);
    let first = recv_or_fail(&mut rx, "first send").await;
    assert_eq!((first.attempt, &first.update), (0, &expected_forward(&u)));

    for (i, secs) in [10, 20, 40, 80, 160, 320, 600, 600].into_iter().enumerate() {
        let resend = expect_resend_after(&mut rx, Duration::from_secs(secs), i as u32 + 1).await;
        assert_eq!(resend.update, first.update, "resend #{}", i + 1);
    }
    let stats = stream(&m, op).await.unwrap();
    assert_eq!(stats.attempt, 8);
    assert_eq!(stats.next_retry_in, Some(Duration::from_secs(600)));
}

#[actix::test]
async fn derived_02_backoff_resets_after_ack() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u1 = op_update(op, PENDING, None);
    let u2 = op_update(op, PENDING, None);
    update(&m, &u1).await.unwrap();
    update(&m, &u2).await.unwrap();
    assert_eq!(recv_or_fail(&mut rx, "u1").await.attempt, 0);
    assert_no_forward(&mut rx, "u2 waits behind u1").await;
    // u1 backs off to an 80 s gap.
    for (attempt, secs) in [(1, 10), (2, 20), (3, 40)] {
        let resend = expect_resend_after(&mut rx, Duration::from_secs(secs), attempt).await;
        assert_eq!(resend.update, forward_of(&u1, &u2));
    }

    assert!(!ack(&m, &u1).await.unwrap().stream_terminated);
    let next = recv_or_fail(&mut rx, "u2 once u1 is acked").await;
    assert_eq!((next.attempt, &next.update), (0, &expected_forward(&u2)));
    // u2 starts over at 10 s, then 20 s; u1's 80 s timer is gone.
    expect_resend_after(&mut rx, Duration::from_secs(10), 1).await;
    expect_resend_after(&mut rx, Duration::from_secs(20), 2).await;

    // Likewise the first update of an empty queue after an ack.
    assert!(!ack(&m, &u2).await.unwrap().stream_terminated);
    assert_no_forward(&mut rx, "nothing left after acking u2").await;
    let u3 = op_update(op, FINISHED, None);
    update(&m, &u3).await.unwrap();
    let third = recv_or_fail(&mut rx, "u3").await;
    assert_eq!((third.attempt, &third.update), (0, &expected_forward(&u3)));
    expect_resend_after(&mut rx, Duration::from_secs(10), 1).await;
}

#[actix::test]
async fn derived_03_pause_holds_updates_until_resume() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    m.send(Pause).await.unwrap();
    let op = Uuid::new_v4();
    let u = op_update(op, PENDING, None);
    assert_eq!(update(&m, &u).await.unwrap(), UpdateOutcome::Accepted);
    advance(MIN).await;
    assert_no_forward(&mut rx, "paused: no first send").await;
    advance(Duration::from_secs(3600)).await;
    assert_no_forward(&mut rx, "paused: nothing an hour later").await;
    let stats = stream(&m, op).await.unwrap();
    assert_eq!((stats.pending, stats.next_retry_in), (1, None));

    m.send(Resume).await.unwrap();
    let first = recv_or_fail(&mut rx, "resume sends at once").await;
    assert_eq!((first.attempt, &first.update), (0, &expected_forward(&u)));
    expect_resend_after(&mut rx, MIN, 1).await;
}

#[actix::test]
async fn derived_04_paused_manager_checkpoints_and_terminal_ack_ends_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    m.send(Pause).await.unwrap();
    let op = Uuid::new_v4();
    let u1 = op_update(op, PENDING, None);
    let u2 = op_update(op, FINISHED, None);
    update(&m, &u1).await.unwrap();
    update(&m, &u2).await.unwrap();
    assert_eq!(
        contents(dir.path(), op),
        [framed_update(&u1), framed_update(&u2)].concat()
    );

    assert!(!ack(&m, &u1).await.unwrap().stream_terminated);
    assert_no_forward(&mut rx, "paused: u2 not sent after acking u1").await;
    let stats = stream(&m, op).await.unwrap();
    assert_eq!((stats.pending, stats.acknowledged), (1, 1));

    // Mesos's `false`: the terminal ack ends the stream, paused or not.
    assert!(ack(&m, &u2).await.unwrap().stream_terminated);
    let expected_file = [
        framed_update(&u1),
        framed_update(&u2),
        framed_ack(&u1),
        framed_ack(&u2),
    ]
    .concat();
    assert_eq!(contents(dir.path(), op), expected_file);
    assert!(stream(&m, op).await.is_none());
    assert!(listed(&m).await.is_empty());
    m.send(Resume).await.unwrap();
    advance(MIN).await;
    assert_no_forward(&mut rx, "the ended stream has nothing to resume").await;
    assert!(matches!(
        ack(&m, &u2).await,
        Err(AckError::UnknownStream { .. })
    ));

    // The checkpoint is complete: recovery sees a terminated stream.
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let state = recover(&m, &[op], true).await.unwrap();
    let recovered = state.streams[&op].clone().expect("some");
    assert!(recovered.terminated);
    assert_eq!(recovered.updates, vec![u1, u2]);
    assert!(stream(&m, op).await.is_none());
    assert_no_forward(&mut rx, "a terminated stream is not forwarded").await;
}

#[actix::test]
async fn derived_05_resume_resends_every_head_each_time() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let ops: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for op in &ops {
        update(&m, &op_update(*op, PENDING, None)).await.unwrap();
    }
    let at = |attempt| each(&ops, attempt);
    assert_eq!(sends(&drain(&mut rx).await), at(0));

    // Not paused, and still every call re-sends every head.
    m.send(Resume).await.unwrap();
    assert_eq!(sends(&drain(&mut rx).await), at(1), "first resume");
    m.send(Resume).await.unwrap();
    assert_eq!(sends(&drain(&mut rx).await), at(2), "second resume");

    // Each resume restarted the backoff at MIN.
    advance(MIN - TICK).await;
    assert_no_forward(&mut rx, "no retry before MIN after the resume").await;
    advance(2 * TICK).await;
    assert_eq!(sends(&drain(&mut rx).await), at(3), "retries after MIN");
}

#[actix::test]
async fn derived_06_latest_status_rejected_leaves_nothing() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let mut bad = op_update(op, FINISHED, None);
    bad.latest_status = bad.status.clone();
    let err = update(&m, &bad).await.unwrap_err();
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
    // Changed on purpose: validated before the stream exists.
    assert!(stream(&m, op).await.is_none());
    assert!(listed(&m).await.is_empty());
    assert!(!operation_path(dir.path(), &op).exists());
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    assert_no_forward(&mut rx, "rejected update").await;

    // So the same stream can start normally (no U1 from a leftover file).
    let good = op_update(op, FINISHED, None);
    assert_eq!(update(&m, &good).await.unwrap(), UpdateOutcome::Accepted);
    assert_eq!(
        recv_or_fail(&mut rx, "valid update").await.update,
        expected_forward(&good)
    );
}

#[actix::test]
async fn derived_07_checkpoint_flag_mismatch() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());

    let durable = Uuid::new_v4();
    let u1 = op_update(durable, PENDING, None);
    update(&m, &u1).await.unwrap();
    let err = send_update(&m, &op_update(durable, PENDING, None), false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::CheckpointMismatch {
                expected: true,
                actual: false,
                ..
            }
        ),
        "{err:?}"
    );

    let memory = Uuid::new_v4();
    let u3 = op_update(memory, PENDING, None);
    send_update(&m, &u3, false).await.unwrap();
    let err = update(&m, &op_update(memory, PENDING, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::CheckpointMismatch {
                expected: false,
                actual: true,
                ..
            }
        ),
        "{err:?}"
    );

    // Nothing changed: one update each, one file, one send each.
    for op in [durable, memory] {
        let stats = stream(&m, op).await.unwrap();
        assert_eq!((stats.pending, stats.received), (1, 1), "{op}");
    }
    assert_eq!(contents(dir.path(), durable), framed_update(&u1));
    assert!(!operation_path(dir.path(), &memory).exists());
    assert_eq!(sends(&drain(&mut rx).await), each(&[durable, memory], 0));
}

#[actix::test]
async fn derived_08_framework_id_mismatch() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let owned = Uuid::new_v4();
    let u1 = op_update(owned, PENDING, Some("f1"));
    update(&m, &u1).await.unwrap();
    let orphan = Uuid::new_v4();
    let u2 = op_update(orphan, PENDING, None);
    update(&m, &u2).await.unwrap();
    assert_eq!(drain(&mut rx).await.len(), 2);

    let f1 = || Some("f1".to_string());
    // U6: one side has no framework id.
    let err = update(&m, &op_update(owned, PENDING, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpdateError::FrameworkMismatch { expected, actual: None, .. } if *expected == f1()),
        "{err:?}"
    );
    let err = update(&m, &op_update(orphan, PENDING, Some("f1")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpdateError::FrameworkMismatch { expected: None, actual, .. } if *actual == f1()),
        "{err:?}"
    );
    // U7: both set, different values.
    let err = update(&m, &op_update(owned, PENDING, Some("f2")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpdateError::FrameworkMismatch { expected, actual: Some(f2), .. } if *expected == f1() && f2 == "f2"),
        "{err:?}"
    );

    for (op, u) in [(owned, &u1), (orphan, &u2)] {
        let stats = stream(&m, op).await.unwrap();
        assert_eq!((stats.pending, stats.received), (1, 1), "{op}");
        assert_eq!(contents(dir.path(), op), framed_update(u));
    }
    assert_no_forward(&mut rx, "rejected updates").await;
}

#[actix::test]
async fn derived_09_missing_status_uuid() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let with_uuid = |op, uuid: Option<Vec<u8>>| {
        let mut u = op_update(op, PENDING, None);
        u.status.as_mut().unwrap().uuid =
            uuid.map(|value| status_update_manager::proto::mesos::Uuid { value });
        u
    };

    let fresh = Uuid::new_v4();
    let err = update(&m, &with_uuid(fresh, None)).await.unwrap_err();
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
    // Changed on purpose: a malformed uuid is a typed error, not an abort.
    let err = update(&m, &with_uuid(fresh, Some(vec![7; 15])))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Invalid {
                reason: InvalidUpdate::UuidLength { len: 15 },
                ..
            }
        ),
        "{err:?}"
    );
    let err = update(&m, &with_uuid(fresh, Some(vec![0; 16])))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Invalid {
                reason: InvalidUpdate::NilUuid,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(stream(&m, fresh).await.is_none());
    assert!(!operation_path(dir.path(), &fresh).exists());

    // On an existing stream too, and it stays as it was.
    let op = Uuid::new_v4();
    let u = op_update(op, PENDING, None);
    update(&m, &u).await.unwrap();
    recv_or_fail(&mut rx, "valid update").await;
    let err = update(&m, &with_uuid(op, None)).await.unwrap_err();
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
    assert_eq!(stream(&m, op).await.unwrap().pending, 1);
    assert_eq!(contents(dir.path(), op), framed_update(&u));
    assert_eq!(
        files_under(dir.path()),
        vec![operation_path(dir.path(), &op)]
    );
    assert_no_forward(&mut rx, "rejected updates").await;
}

#[actix::test]
async fn derived_10_update_after_terminal_ack_hits_existing_file() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u1 = op_update(op, FINISHED, None);
    update(&m, &u1).await.unwrap();
    recv_or_fail(&mut rx, "u1").await;
    assert!(ack(&m, &u1).await.unwrap().stream_terminated);
    // remove_finished = false (the default): the file stays, as in Mesos.
    let path = operation_path(dir.path(), &op);
    assert_eq!(
        contents(dir.path(), op),
        [framed_update(&u1), framed_ack(&u1)].concat()
    );

    // U1 for a late update, new or a duplicate of the acked one.
    for (what, late) in [
        ("new", op_update(op, PENDING, None)),
        ("duplicate", u1.clone()),
    ] {
        let err = update(&m, &late).await.unwrap_err();
        assert!(
            matches!(&err, UpdateError::FileExists { path: p, .. } if *p == path),
            "{what}: {err:?}"
        );
    }
    assert!(stream(&m, op).await.is_none());
    assert_eq!(
        contents(dir.path(), op),
        [framed_update(&u1), framed_ack(&u1)].concat()
    );
    advance(MIN).await;
    assert_no_forward(&mut rx, "late updates rejected").await;
}

#[actix::test]
async fn derived_11_update_before_recovery_hits_existing_file() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u1 = op_update(op, PENDING, None);
    update(&m, &u1).await.unwrap();
    recv_or_fail(&mut rx, "u1").await;

    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let u2 = op_update(op, FINISHED, None);
    let err = update(&m, &u2).await.unwrap_err();
    assert!(
        matches!(&err, UpdateError::FileExists { path, .. } if *path == operation_path(dir.path(), &op)),
        "{err:?}"
    );
    assert!(stream(&m, op).await.is_none());
    assert_eq!(contents(dir.path(), op), framed_update(&u1));
    assert_no_forward(&mut rx, "rejected update").await;

    // Once recovered, the stream takes it.
    let state = recover(&m, &[op], true).await.unwrap();
    assert_eq!(
        state.streams[&op].as_ref().unwrap().updates,
        vec![u1.clone()]
    );
    assert_eq!(
        recv_or_fail(&mut rx, "recovered head").await.update,
        expected_forward(&u1)
    );
    assert_eq!(update(&m, &u2).await.unwrap(), UpdateOutcome::Accepted);
    assert_eq!(
        contents(dir.path(), op),
        [framed_update(&u1), framed_update(&u2)].concat()
    );
}

#[actix::test]
async fn derived_12_memory_only_stream_recreated_after_terminal_ack() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, FINISHED, None);
    send_update(&m, &u, false).await.unwrap();
    assert_eq!(recv_or_fail(&mut rx, "first life").await.attempt, 0);
    assert!(ack(&m, &u).await.unwrap().stream_terminated);
    assert!(stream(&m, op).await.is_none());

    // Dedup history went with the stream: the same update starts a new one.
    assert_eq!(
        send_update(&m, &u, false).await.unwrap(),
        UpdateOutcome::Accepted
    );
    let again = recv_or_fail(&mut rx, "second life").await;
    assert_eq!((again.attempt, &again.update), (0, &expected_forward(&u)));
    let stats = stream(&m, op).await.unwrap();
    assert_eq!(
        (stats.pending, stats.received, stats.acknowledged),
        (1, 1, 0)
    );
    assert!(!stats.checkpointed);
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
}

#[actix::test]
async fn derived_13_ack_of_other_uuid_is_unexpected() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, PENDING, None);
    update(&m, &u).await.unwrap();
    recv_or_fail(&mut rx, "u").await;

    let other = Uuid::new_v4();
    let err = ack_uuid(&m, op, other).await.unwrap_err();
    let head = op_status_uuid(&u).to_string();
    assert!(
        matches!(&err, AckError::UnexpectedAck { expected, got, .. } if *expected == head && *got == other.to_string()),
        "{err:?}"
    );
    // Nothing changed: still pending, nothing written, retry on schedule.
    let stats = stream(&m, op).await.unwrap();
    assert_eq!((stats.pending, stats.acknowledged), (1, 0));
    assert_eq!(contents(dir.path(), op), framed_update(&u));
    expect_resend_after(&mut rx, MIN, 1).await;
    assert!(!ack(&m, &u).await.unwrap().stream_terminated);
}

#[actix::test]
async fn derived_14_ack_for_unknown_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let err = ack_uuid(&m, op, Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(&err, AckError::UnknownStream { stream, .. } if *stream == op.to_string()),
        "{err:?}"
    );
    assert!(listed(&m).await.is_empty());
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    assert_no_forward(&mut rx, "nothing to forward").await;
}

#[actix::test]
async fn derived_15_terminal_ack_drops_queued_updates() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u1 = op_update(op, FINISHED, None);
    let u2 = op_update(op, PENDING, None);
    let u3 = op_update(op, FAILED, None);
    for u in [&u1, &u2, &u3] {
        update(&m, u).await.unwrap();
    }
    // u1 went out alone when it arrived; u2 and u3 wait behind it.
    let first = drain(&mut rx).await;
    assert_eq!(
        first.iter().map(|f| &f.update).collect::<Vec<_>>(),
        [&expected_forward(&u1)]
    );
    let resend = expect_resend_after(&mut rx, MIN, 1).await;
    assert_eq!(
        resend.update,
        forward_of(&u1, &u3),
        "u3 is the newest queued"
    );

    assert!(ack(&m, &u1).await.unwrap().stream_terminated);
    assert!(stream(&m, op).await.is_none());
    // Past u1's next retry (20 s) too.
    advance(2 * MIN).await;
    assert_no_forward(&mut rx, "u2 and u3 are dropped, never sent").await;
    assert!(matches!(
        ack(&m, &u2).await,
        Err(AckError::UnknownStream { .. })
    ));

    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let state = recover(&m, &[op], true).await.unwrap();
    let recovered = state.streams[&op].clone().unwrap();
    assert!(recovered.terminated);
    assert_eq!(recovered.updates, vec![u1, u2, u3]);
    assert!(stream(&m, op).await.is_none());
    assert_no_forward(&mut rx, "a terminated stream is not resumed").await;
}

/// Writes one update per tail on its own stream, restarts, appends each
/// tail, and checks strict recovery truncates it silently.
async fn recover_with_tails(tails: &[(&str, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let mut streams = Vec::new();
    for _ in tails {
        let op = Uuid::new_v4();
        let u = op_update(op, PENDING, None);
        update(&m, &u).await.unwrap();
        streams.push((op, u));
    }
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    for ((_, tail), (op, _)) in tails.iter().zip(&streams) {
        append(dir.path(), *op, tail);
    }

    let ids: Vec<Uuid> = streams.iter().map(|(op, _)| *op).collect();
    let state = recover(&m, &ids, true).await.unwrap();
    assert_eq!(state.errors, 0);
    for ((what, _), (op, u)) in tails.iter().zip(&streams) {
        let recovered = state.streams[op]
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: None"));
        assert_eq!(recovered.updates, vec![u.clone()], "{what}");
        assert_eq!(
            contents(dir.path(), *op),
            framed_update(u),
            "{what}: truncated"
        );
    }
    assert_eq!(sends(&drain(&mut rx).await), each(&ids, 0));
    // New records land at the truncation point.
    for ((what, _), (op, u)) in tails.iter().zip(&streams) {
        let next = op_update(*op, FINISHED, None);
        update(&m, &next).await.unwrap();
        assert_eq!(
            contents(dir.path(), *op),
            [framed_update(u), framed_update(&next)].concat(),
            "{what}"
        );
    }
}

#[actix::test]
async fn derived_16_partial_tail_is_truncated_silently() {
    tokio::time::pause();
    let record = framed_update(&op_update(Uuid::new_v4(), FINISHED, None));
    let n = record.len();
    let cut = |len: usize| record[..len].to_vec();
    recover_with_tails(&[
        ("1 byte of length", cut(1)),
        ("2 bytes of length", cut(2)),
        ("3 bytes of length", cut(3)),
        ("length only", cut(4)),
        ("1 byte of body", cut(5)),
        ("half the body", cut(4 + (n - 4) / 2)),
        ("all but the last byte", cut(n - 1)),
    ])
    .await;
}

#[actix::test]
async fn derived_17_huge_length_is_partial() {
    tokio::time::pause();
    let body = framed_update(&op_update(Uuid::new_v4(), FINISHED, None))[4..].to_vec();
    let with_len = |len: u32| [len.to_le_bytes().as_slice(), &body].concat();
    recover_with_tails(&[
        ("u32::MAX", with_len(u32::MAX)),
        ("2 GiB", with_len(1 << 31)),
        ("one byte past the end", with_len(body.len() as u32 + 1)),
    ])
    .await;
}

#[actix::test]
async fn derived_18_zero_length_record_is_corrupt() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let (strict, lenient) = (Uuid::new_v4(), Uuid::new_v4());
    let us = [
        op_update(strict, PENDING, None),
        op_update(lenient, PENDING, None),
    ];
    for u in &us {
        update(&m, u).await.unwrap();
    }
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    // A zero-length record, then a valid one that is lost with it.
    for (op, u) in [strict, lenient].into_iter().zip(&us) {
        let tail = [vec![0; 4], framed_update(&op_update(op, FINISHED, None))].concat();
        append(dir.path(), op, &tail);
        assert_eq!(
            contents(dir.path(), op).len(),
            framed_update(u).len() + tail.len()
        );
    }
    let valid = framed_update(&us[0]).len() as u64;

    let err = recover(&m, &[strict], true).await.unwrap_err();
    assert_eq!(err.stream, strict.to_string());
    assert!(
        matches!(err.source, ReplayError::Corrupt { offset, .. } if offset == valid),
        "{err:?}"
    );
    assert_eq!(
        contents(dir.path(), strict),
        framed_update(&us[0]),
        "truncated at the corrupt record"
    );
    assert!(stream(&m, strict).await.is_none());
    assert_no_forward(&mut rx, "strict failure").await;

    let state = recover(&m, &[lenient], false).await.unwrap();
    assert_eq!(state.errors, 1);
    assert!(
        matches!(state.failures[..], [RecoverError { source: ReplayError::Corrupt { offset, .. }, .. }] if offset == valid)
    );
    assert_eq!(
        state.streams[&lenient].as_ref().unwrap().updates,
        vec![us[1].clone()]
    );
    assert_eq!(contents(dir.path(), lenient), framed_update(&us[1]));
    assert_eq!(
        recv_or_fail(&mut rx, "non-strict head").await.update,
        expected_forward(&us[1])
    );
}

#[actix::test]
async fn derived_19_corrupt_first_record_non_strict_is_none() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // A framed message instead of a record; a zero-length record before a
    // valid one; the same again for the strict run.
    write_file(
        dir.path(),
        a,
        &framed_message(&op_update(a, FINISHED, None)),
    );
    let zero_first = |op| [vec![0; 4], framed_update(&op_update(op, FINISHED, None))].concat();
    write_file(dir.path(), b, &zero_first(b));
    write_file(dir.path(), c, &zero_first(c));

    let state = recover(&m, &[a, b], false).await.unwrap();
    assert_eq!(state.errors, 0);
    assert!(
        state.streams[&a].is_none() && state.streams[&b].is_none(),
        "{:?}",
        state.streams
    );
    assert!(!operation_path(dir.path(), &a).exists());
    assert!(!operation_path(dir.path(), &b).exists());
    assert!(dir.path().join("streams").is_dir(), "the directory stays");
    assert!(listed(&m).await.is_empty());

    // Strict: a failure, and the file is truncated to nothing but kept.
    let err = recover(&m, &[c], true).await.unwrap_err();
    assert!(
        matches!(err.source, ReplayError::Corrupt { offset: 0, .. }),
        "{err:?}"
    );
    assert_eq!(contents(dir.path(), c), Vec::<u8>::new());
    assert_no_forward(&mut rx, "nothing recovered").await;
}

#[actix::test]
async fn derived_20_ack_record_with_nothing_pending() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (lone, extra) = (Uuid::new_v4(), Uuid::new_v4());
    let lone_file = framed_ack(&op_update(lone, PENDING, None));
    let u = op_update(extra, PENDING, None);
    let extra_file = [framed_update(&u), framed_ack(&u), framed_ack(&u)].concat();
    write_file(dir.path(), lone, &lone_file);
    write_file(dir.path(), extra, &extra_file);

    let err = recover(&m, &[lone], true).await.unwrap_err();
    assert!(
        matches!(
            err.source,
            ReplayError::AckWithNothingPending { offset: 0, .. }
        ),
        "{err:?}"
    );

    let state = recover(&m, &[lone, extra], false).await.unwrap();
    assert_eq!(state.errors, 2);
    assert!(state.streams.is_empty(), "no entry: {:?}", state.streams);
    let extra_offset = (framed_update(&u).len() + framed_ack(&u).len()) as u64;
    assert!(
        matches!(&state.failures[..], [
            RecoverError { source: ReplayError::AckWithNothingPending { offset: 0, .. }, .. },
            RecoverError { source: ReplayError::AckWithNothingPending { offset, .. }, .. },
        ] if *offset == extra_offset),
        "{:?}",
        state.failures
    );
    // Files untouched; no stream; so a later update hits U1.
    assert_eq!(contents(dir.path(), lone), lone_file);
    assert_eq!(contents(dir.path(), extra), extra_file);
    assert!(listed(&m).await.is_empty());
    let err = update(&m, &op_update(extra, PENDING, None))
        .await
        .unwrap_err();
    assert!(matches!(err, UpdateError::FileExists { .. }), "{err:?}");
    assert_no_forward(&mut rx, "nothing recovered").await;
}

#[actix::test]
async fn derived_21_strict_failure_drops_only_that_calls_streams() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ua = op_update(a, PENDING, None);
    let ub = op_update(b, PENDING, None);
    update(&m, &ua).await.unwrap();
    update(&m, &ub).await.unwrap();
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    append(dir.path(), b, &framed_message(&ub));

    // A stream created by an update before the recovery.
    let c = Uuid::new_v4();
    let uc = op_update(c, PENDING, None);
    update(&m, &uc).await.unwrap();
    assert_eq!(
        recv_or_fail(&mut rx, "c").await.update,
        expected_forward(&uc)
    );

    let err = recover(&m, &[a, b], true).await.unwrap_err();
    assert_eq!(err.stream, b.to_string());
    assert!(matches!(err.source, ReplayError::Corrupt { .. }), "{err:?}");
    // a (recovered by the failed call) is gone and was never sent; c stays.
    assert!(stream(&m, a).await.is_none());
    assert_no_forward(&mut rx, "a is not forwarded").await;
    assert_eq!(listed(&m).await, vec![c]);
    assert_eq!(stream(&m, c).await.unwrap().pending, 1);
    assert!(!ack(&m, &uc).await.unwrap().stream_terminated);
    assert!(matches!(
        ack(&m, &ua).await,
        Err(AckError::UnknownStream { .. })
    ));

    // Nothing of a was lost: it recovers on its own.
    let state = recover(&m, &[a], true).await.unwrap();
    assert_eq!(
        state.streams[&a].as_ref().unwrap().updates,
        vec![ua.clone()]
    );
    assert_eq!(
        recv_or_fail(&mut rx, "a recovered").await.update,
        expected_forward(&ua)
    );
}

#[actix::test]
async fn derived_22_strict_failure_truncates_so_retry_succeeds() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u1 = op_update(op, PENDING, None);
    update(&m, &u1).await.unwrap();
    let (m, mut rx) = restart(m, rx, dir.path()).await;
    let u2 = op_update(op, FINISHED, None);
    append(
        dir.path(),
        op,
        &[framed_message(&u2), framed_update(&u2)].concat(),
    );

    let err = recover(&m, &[op], true).await.unwrap_err();
    assert!(matches!(err.source, ReplayError::Corrupt { .. }), "{err:?}");
    assert_eq!(contents(dir.path(), op), framed_update(&u1));
    assert_no_forward(&mut rx, "strict failure").await;

    let state = recover(&m, &[op], true).await.unwrap();
    assert_eq!(state.errors, 0);
    let recovered = state.streams[&op].clone().unwrap();
    assert_eq!(
        (recovered.updates.to_vec(), recovered.terminated),
        (vec![u1.clone()], false)
    );
    assert_eq!(
        recv_or_fail(&mut rx, "recovered head").await.update,
        expected_forward(&u1)
    );
}

#[actix::test]
async fn derived_23_recovery_while_paused_forwards_on_resume() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, rx) = boot(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, PENDING, None);
    update(&m, &u).await.unwrap();
    let (m, mut rx) = restart(m, rx, dir.path()).await;

    m.send(Pause).await.unwrap();
    let state = recover(&m, &[op], true).await.unwrap();
    assert_eq!(
        state.streams[&op].as_ref().unwrap().updates,
        vec![u.clone()]
    );
    assert_no_forward(&mut rx, "paused recovery").await;
    advance(MIN).await;
    assert_no_forward(&mut rx, "paused: no retry either").await;
    let stats = stream(&m, op).await.unwrap();
    assert_eq!(
        (stats.pending, stats.attempt, stats.next_retry_in),
        (1, 0, None)
    );

    m.send(Resume).await.unwrap();
    let head = recv_or_fail(&mut rx, "resume sends the recovered head").await;
    assert_eq!((head.attempt, &head.update), (0, &expected_forward(&u)));
    expect_resend_after(&mut rx, MIN, 1).await;
}

#[actix::test]
async fn derived_24_cleanup_leaves_streams_without_framework() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let ua = op_update(a, PENDING, Some("f1"));
    let ub = op_update(b, PENDING, None);
    let uc = op_update(c, PENDING, Some("f2"));
    for u in [&ua, &ub, &uc] {
        update(&m, u).await.unwrap();
    }
    assert_eq!(drain(&mut rx).await.len(), 3);

    assert_eq!(
        m.send(Cleanup {
            framework_id: "unknown".into()
        })
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        m.send(Cleanup {
            framework_id: "f1".into()
        })
        .await
        .unwrap(),
        1
    );
    settle().await;
    assert_eq!(listed(&m).await, sorted(vec![b, c]));
    advance(MIN + TICK).await;
    assert_eq!(sends(&drain(&mut rx).await), each(&[b, c], 1));
    assert!(matches!(
        ack(&m, &ua).await,
        Err(AckError::UnknownStream { .. })
    ));
    assert!(!ack(&m, &ub).await.unwrap().stream_terminated);
    assert!(!ack(&m, &uc).await.unwrap().stream_terminated);
    // remove_finished = false: the closed stream's file stays.
    assert_eq!(contents(dir.path(), a), framed_update(&ua));
}
