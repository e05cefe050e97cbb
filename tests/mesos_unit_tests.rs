//! Acceptance A: the 16 unit tests of Mesos's
//! `operation_status_update_manager_tests.cpp` (mesos-reference §4.2), one
//! test each, same scenario and same assertions, on the operation kind and
//! Mesos's harness layout (`<dir>/streams/<operation uuid>`).
//!
//! Mesos's implicit assertion (gmock fails on any forward it did not expect)
//! is made explicit: "no retry" = advance just past `retry.min`
//! ([`PAST_MIN`]), then `assert_no_forward`. "Reset" stands in for an agent restart: the old
//! manager and its stream actors stop, and a fresh, unpaused manager starts
//! over the same directory (see [`reset`]).
//!
//! Where we differ from Mesos on purpose (SEMANTICS.md, "Changed on
//! purpose"), the test asserts our behaviour and says so.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use actix::Addr;
use prost::Message as _;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use common::*;
use status_update_manager::error::{AckError, RecoverError, ReplayError, UpdateError};
use status_update_manager::kind::Operation;
use status_update_manager::messages::{
    AckOutcome, Acknowledge, Cleanup, Forward, GetStream, Recover, RecoveryState, Update,
    UpdateOutcome,
};
use status_update_manager::proto::mesos::internal::UpdateOperationStatusMessage;
use status_update_manager::proto::mesos::OperationState;
use status_update_manager::store::StoreError;
use status_update_manager::StatusUpdateManager;

type Manager = Addr<StatusUpdateManager<Operation>>;
type Forwards = UnboundedReceiver<Forward<Operation>>;

/// Mesos's `Clock::advance(MIN)`. A paused tokio sleep rounds its first
/// deadline up by up to a millisecond, so advancing by exactly `MIN` would
/// stop just short of a retry due at `MIN` and every "no retry" check would
/// pass vacuously; advance a little further.
const PAST_MIN: Duration = MIN.saturating_add(Duration::from_millis(100));

/// Mesos's fixture: an unpaused manager, forwards to a probe, files under
/// `<dir>/streams/`.
fn start_manager(dir: &Path) -> (Manager, Forwards) {
    start::<Operation>(inline_config(), operation_paths(dir))
}

/// Mesos's "reset": destroy the manager (its timers go with it) and start a
/// fresh, unpaused one with the same callbacks over the same directory.
///
/// Every address of the old manager, and its probe receiver, is dropped. The
/// old probe stops, closing its channel, only once nothing holds its
/// recipient any more, i.e. once the old manager and every one of its stream
/// actors are gone: then no old retry timer can forward again, and the new
/// probe channel is the only one left to watch.
async fn reset(manager: Manager, mut forwards: Forwards, dir: &Path) -> (Manager, Forwards) {
    drop(manager);
    settle().await;
    match forwards.try_recv() {
        Err(TryRecvError::Disconnected) => {}
        Err(TryRecvError::Empty) => panic!(
            "reset: the old manager or one of its stream actors is still running \
             (it could still forward from a retry timer)"
        ),
        Ok(forward) => panic!("reset: unexpected forward from the old manager: {forward:?}"),
    }
    drop(forwards);
    start_manager(dir)
}

async fn update(
    manager: &Manager,
    update: &UpdateOperationStatusMessage,
    checkpoint: bool,
) -> Result<UpdateOutcome, UpdateError> {
    manager
        .send(Update {
            update: update.clone(),
            checkpoint,
        })
        .await
        .expect("the manager answers Update")
}

async fn ack(
    manager: &Manager,
    update: &UpdateOperationStatusMessage,
) -> Result<AckOutcome, AckError> {
    manager
        .send(Acknowledge::<Operation> {
            stream: operation_uuid(update),
            uuid: op_status_uuid(update),
        })
        .await
        .expect("the manager answers Acknowledge")
}

async fn recover(
    manager: &Manager,
    ids: Vec<Uuid>,
    strict: bool,
) -> Result<RecoveryState<Operation>, RecoverError> {
    manager
        .send(Recover::<Operation> { ids, strict })
        .await
        .expect("the manager answers Recover")
}

/// Whether the manager holds the stream in memory.
async fn in_memory(manager: &Manager, stream: Uuid) -> bool {
    manager
        .send(GetStream::<Operation> { stream })
        .await
        .expect("the manager answers GetStream")
        .expect("the stream answers")
        .is_some()
}

fn operation_uuid(update: &UpdateOperationStatusMessage) -> Uuid {
    Uuid::from_slice(&update.operation_uuid.as_ref().unwrap().value).unwrap()
}

/// Mesos's corruption in tests 14 and 15: a framed `UpdateOperationStatusMessage`
/// (not a record) appended to the stream's file. Read as a record, its
/// `status` (field 3) lands on the record's `uuid` and the required `type`
/// is missing, so it does not parse.
fn append_framed_message(path: &Path, message: &UpdateOperationStatusMessage) {
    let body = message.encode_to_vec();
    let mut frame = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(&frame).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// 1. UpdateAndAck.
#[actix::test]
async fn update_and_ack() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    assert_eq!(
        update(&manager, &u, true).await.unwrap(),
        UpdateOutcome::Accepted
    );
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.stream, op);
    assert_eq!(forward.update, expected_forward(&u));

    let acked = ack(&manager, &u).await.unwrap();
    assert!(
        acked.stream_terminated,
        "a terminal ack returns false in Mesos"
    );

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "no retry after the ack").await;
}

/// 2. UpdateAndAckNonTerminalUpdate.
#[actix::test]
async fn update_and_ack_non_terminal_update() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationPending, None);

    assert_eq!(
        update(&manager, &u, true).await.unwrap(),
        UpdateOutcome::Accepted
    );
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));

    let acked = ack(&manager, &u).await.unwrap();
    assert!(
        !acked.stream_terminated,
        "a non-terminal ack returns true in Mesos"
    );

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "no retry after the ack").await;
}

/// 3. ResendUnacknowledged.
#[actix::test]
async fn resend_unacknowledged() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    let first = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(first.update, expected_forward(&u));
    assert_eq!(first.attempt, 0);
    assert_no_forward(&mut rx, "no second forward before time passes").await;

    // The first paused sleep rounds up by about a millisecond: assert a range.
    advance(MIN - Duration::from_millis(100)).await;
    assert_no_forward(&mut rx, "no resend before MIN").await;
    advance(Duration::from_millis(200)).await;
    let second = recv_or_fail(&mut rx, "the resend after MIN").await;
    assert_eq!(second.update, first.update, "the resend is identical");
    assert_eq!(second.attempt, 1);
    assert_no_forward(&mut rx, "exactly one resend").await;

    let acked = ack(&manager, &u).await.unwrap();
    assert!(acked.stream_terminated);

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "no resend after the ack").await;
}

/// 4. Cleanup.
#[actix::test]
async fn cleanup() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, Some("frameworkId"));

    update(&manager, &u, true).await.unwrap();
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));

    let closed = manager
        .send(Cleanup {
            framework_id: "frameworkId".into(),
        })
        .await
        .unwrap();
    assert_eq!(closed, 1, "the framework's one stream is closed");

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "no retry after the cleanup").await;
}

/// 5. RecoverCheckpointedStream.
#[actix::test]
async fn recover_checkpointed_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "the new manager has no streams yet").await;

    let state = recover(&manager, vec![op], true).await.unwrap();
    assert_eq!(state.errors, 0);
    let stream = state.streams.get(&op).expect("an entry for the stream");
    let stream = stream.as_ref().expect("the stream was recovered");
    assert_eq!(
        stream.updates.first().as_ref(),
        Some(&u),
        "as checkpointed, no latest_status"
    );
    assert!(!stream.terminated);

    let forward = recv_or_fail(&mut rx, "the head re-forwarded on recovery").await;
    assert_eq!(forward.update, expected_forward(&u));
}

/// 6. RecoverNotCheckpointedStream.
#[actix::test]
async fn recover_not_checkpointed_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, false).await.unwrap();
    let forward = recv_or_fail(&mut rx, "the one forward").await;
    assert_eq!(forward.update, expected_forward(&u));

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    let path = operation_path(dir.path(), &op);
    assert!(
        !path.exists(),
        "no file for a stream that is not checkpointed"
    );
    assert!(!dir.path().join("streams").exists());

    // Strict recovery fails because the parent directory `streams/` never
    // existed, so opening the file fails: as in Mesos, but as a typed
    // `StoreError::Open` rather than Mesos's R1 text.
    let err = recover(&manager, vec![op], true).await.unwrap_err();
    match &err.source {
        ReplayError::Store(store) => assert!(
            matches!(&**store, StoreError::Open { .. }),
            "expected an open failure, got {err:?}"
        ),
        other => panic!("expected an open failure, got {other:?}"),
    }
    assert_no_forward(&mut rx, "nothing recovered, nothing forwarded").await;
}

/// 7. RecoverEmptyFile.
#[actix::test]
async fn recover_empty_file() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    recv_or_fail(&mut rx, "first forward").await;

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "the new manager has no streams yet").await;

    let path = operation_path(dir.path(), &op);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();

    let state = recover(&manager, vec![op], false).await.unwrap();
    assert_eq!(state.errors, 0);
    assert!(
        matches!(state.streams.get(&op), Some(None)),
        "expected a None entry, got {:?}",
        state.streams.get(&op)
    );
    assert!(
        !path.exists(),
        "the empty file is removed (mesos-reference §2.8 E)"
    );
    assert_no_forward(&mut rx, "nothing recovered, nothing forwarded").await;
}

/// 8. RecoverEmptyDirectory.
#[actix::test]
async fn recover_empty_directory() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    recv_or_fail(&mut rx, "first forward").await;

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "the new manager has no streams yet").await;

    let path = operation_path(dir.path(), &op);
    std::fs::remove_file(&path).unwrap();
    assert!(path.parent().unwrap().is_dir(), "the directory stays");

    let state = recover(&manager, vec![op], false).await.unwrap();
    assert_eq!(state.errors, 0);
    assert!(
        matches!(state.streams.get(&op), Some(None)),
        "expected a None entry, got {:?}",
        state.streams.get(&op)
    );
    assert_no_forward(&mut rx, "nothing recovered, nothing forwarded").await;
}

/// 9. RecoverTerminatedStream.
#[actix::test]
async fn recover_terminated_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    recv_or_fail(&mut rx, "first forward").await;
    assert!(ack(&manager, &u).await.unwrap().stream_terminated);

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    let state = recover(&manager, vec![op], true).await.unwrap();
    assert_eq!(state.errors, 0);
    let stream = state.streams.get(&op).expect("an entry for the stream");
    let stream = stream.as_ref().expect("the stream was recovered");
    assert!(stream.terminated);
    assert_eq!(stream.updates.first().as_ref(), Some(&u));
    assert!(
        !in_memory(&manager, op).await,
        "a terminated stream is not kept"
    );

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "a terminated stream is not re-forwarded").await;
}

/// 10. IgnoreDuplicateUpdate.
#[actix::test]
async fn ignore_duplicate_update() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationPending, None);

    update(&manager, &u, true).await.unwrap();
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));
    assert!(!ack(&manager, &u).await.unwrap().stream_terminated);

    // Mesos returns success and does nothing; we report it as a duplicate.
    assert_eq!(
        update(&manager, &u, true).await.unwrap(),
        UpdateOutcome::Duplicate
    );

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "the duplicate is not forwarded").await;
}

/// 11. IgnoreDuplicateUpdateAfterRecover.
#[actix::test]
async fn ignore_duplicate_update_after_recover() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationPending, None);

    update(&manager, &u, true).await.unwrap();
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));
    assert!(!ack(&manager, &u).await.unwrap().stream_terminated);

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    let state = recover(&manager, vec![op], true).await.unwrap();
    assert_eq!(state.errors, 0);
    let stream = state.streams.get(&op).expect("an entry for the stream");
    let stream = stream.as_ref().expect("the stream was recovered");
    assert!(!stream.terminated);

    // Dedup survives the restart: the sets are rebuilt from the file.
    assert_eq!(
        update(&manager, &u, true).await.unwrap(),
        UpdateOutcome::Duplicate
    );

    advance(PAST_MIN).await;
    assert_no_forward(
        &mut rx,
        "nothing pending: recovery and the duplicate forward nothing",
    )
    .await;
}

/// 12. RejectDuplicateAck.
#[actix::test]
async fn reject_duplicate_ack() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationPending, None);

    update(&manager, &u, true).await.unwrap();
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));
    assert!(!ack(&manager, &u).await.unwrap().stream_terminated);

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "no retry after the ack").await;

    // Changed on purpose: Mesos fails this with A2 "Unexpected
    // acknowledgment" (the queue is empty, checked first); an already
    // acknowledged uuid is always `DuplicateAck` here, so a client retrying
    // an ack whose reply was lost can tell it succeeded.
    let err = ack(&manager, &u).await.unwrap_err();
    assert!(
        matches!(err, AckError::DuplicateAck { .. }),
        "expected DuplicateAck, got {err:?}"
    );
    assert_no_forward(&mut rx, "the rejected ack forwards nothing").await;
}

/// 13. RejectDuplicateAckAfterRecover.
#[actix::test]
async fn reject_duplicate_ack_after_recover() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationPending, None);

    update(&manager, &u, true).await.unwrap();
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&u));
    assert!(!ack(&manager, &u).await.unwrap().stream_terminated);

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    let state = recover(&manager, vec![op], true).await.unwrap();
    assert_eq!(state.errors, 0);
    assert!(matches!(state.streams.get(&op), Some(Some(_))));

    // Changed on purpose (see reject_duplicate_ack): `DuplicateAck`, not A2;
    // the acknowledged set is rebuilt from the file.
    let err = ack(&manager, &u).await.unwrap_err();
    assert!(
        matches!(err, AckError::DuplicateAck { .. }),
        "expected DuplicateAck, got {err:?}"
    );

    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "nothing pending, nothing forwarded").await;
}

/// 14. NonStrictRecoveryCorruptedFile.
#[actix::test]
async fn non_strict_recovery_corrupted_file() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    recv_or_fail(&mut rx, "first forward").await;

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "the new manager has no streams yet").await;

    let path = operation_path(dir.path(), &op);
    let valid = file_len(&path);
    append_framed_message(&path, &u);
    assert!(file_len(&path) > valid);

    let state = recover(&manager, vec![op], false).await.unwrap();
    assert_eq!(state.errors, 1, "the corrupt record is counted");
    assert!(
        matches!(
            state.failures.as_slice(),
            [RecoverError {
                source: ReplayError::Corrupt { .. },
                ..
            }]
        ),
        "expected one corrupt-record failure, got {:?}",
        state.failures
    );
    let stream = state.streams.get(&op).expect("an entry for the stream");
    let stream = stream.as_ref().expect("the stream was recovered");
    assert_eq!(stream.updates.first().as_ref(), Some(&u));
    assert_eq!(
        file_len(&path),
        valid,
        "truncated before the corrupt record"
    );

    let forward = recv_or_fail(&mut rx, "the head re-forwarded on recovery").await;
    assert_eq!(forward.update, expected_forward(&u));
}

/// 15. StrictRecoveryCorruptedFile.
#[actix::test]
async fn strict_recovery_corrupted_file() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u = op_update(op, OperationState::OperationFinished, None);

    update(&manager, &u, true).await.unwrap();
    recv_or_fail(&mut rx, "first forward").await;

    let (manager, mut rx) = reset(manager, rx, dir.path()).await;
    advance(PAST_MIN).await;
    assert_no_forward(&mut rx, "the new manager has no streams yet").await;

    let path = operation_path(dir.path(), &op);
    let valid = file_len(&path);
    append_framed_message(&path, &u);

    let err = recover(&manager, vec![op], true).await.unwrap_err();
    assert!(
        matches!(err.source, ReplayError::Corrupt { .. }),
        "expected a corrupt-record failure, got {err:?}"
    );
    assert_eq!(
        file_len(&path),
        valid,
        "truncated at the corrupt record, in strict mode too"
    );
    assert!(!in_memory(&manager, op).await);
    assert_no_forward(&mut rx, "a failed strict recovery forwards nothing").await;
}

/// 16. UpdateLatestWhenResending.
#[actix::test]
async fn update_latest_when_resending() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start_manager(dir.path());
    let op = Uuid::new_v4();
    let u1 = op_update(op, OperationState::OperationPending, None);
    let u2 = op_update(op, OperationState::OperationPending, None);

    update(&manager, &u1, true).await.unwrap();
    let first = recv_or_fail(&mut rx, "u1 forwarded").await;
    assert_eq!(first.update, expected_forward(&u1));

    assert_eq!(
        update(&manager, &u2, true).await.unwrap(),
        UpdateOutcome::Accepted
    );
    assert_no_forward(&mut rx, "u2 waits behind u1").await;

    advance(PAST_MIN).await;
    let retry = recv_or_fail(&mut rx, "retry of u1").await;
    let mut expected = u1.clone();
    expected.latest_status = u2.status.clone();
    assert_eq!(
        retry.update, expected,
        "the retry carries u2's status as latest"
    );

    assert!(!ack(&manager, &u1).await.unwrap().stream_terminated);
    let next = recv_or_fail(&mut rx, "u2 forwarded after the ack of u1").await;
    assert_eq!(next.update, expected_forward(&u2));
    assert_no_forward(&mut rx, "exactly three forwards").await;
}
