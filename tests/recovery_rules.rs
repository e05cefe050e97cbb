//! Two rules of `Recover` that neither Mesos's unit tests nor the derived
//! cases exercise (SEMANTICS.md; mesos-reference §2.8 and §7.19):
//!
//! - recovering a stream already in memory leaves it as it is (Mesos
//!   replaced it and forwarded its head again);
//! - non-strict recovery of a stream whose directory is missing counts an
//!   error for it, and the other streams of the call still recover.
//!
//! Operation kind, paused tokio time, a probe channel as the forward target.
mod common;

use std::path::Path;
use std::sync::Arc;

use actix::Addr;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use common::*;
use status_update_manager::error::{RecoverError, ReplayError};
use status_update_manager::kind::Operation;
use status_update_manager::messages::{
    Forward, GetStream, Recover, RecoveryState, StreamStats, Update, UpdateOutcome,
};
use status_update_manager::proto::mesos::internal::UpdateOperationStatusMessage as OpUpdate;
use status_update_manager::proto::mesos::OperationState;
use status_update_manager::store::layout::operation_stream_path;
use status_update_manager::store::StoreError;
use status_update_manager::{StatusUpdateManager, StreamPaths};

type Manager = Addr<StatusUpdateManager<Operation>>;
type Forwards = UnboundedReceiver<Forward<Operation>>;

const PENDING: OperationState = OperationState::OperationPending;

/// Mesos's agent layout: `<root>/<operation uuid>/operation.updates`.
fn agent_paths(root: &Path) -> StreamPaths<Operation> {
    let root = root.to_path_buf();
    Arc::new(move |id: &Uuid| operation_stream_path(&root, id))
}

fn boot(root: &Path) -> (Manager, Forwards) {
    start::<Operation>(inline_config(), agent_paths(root))
}

async fn restart(manager: Manager, rx: Forwards, root: &Path) -> (Manager, Forwards) {
    drop(manager);
    drop(rx);
    settle().await;
    boot(root)
}

async fn update(m: &Manager, u: &OpUpdate) {
    let outcome = m
        .send(Update::<Operation> {
            update: u.clone(),
            checkpoint: true,
        })
        .await
        .expect("manager is running")
        .expect("update accepted");
    assert_eq!(outcome, UpdateOutcome::Accepted);
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

/// `(pending, received, acknowledged, attempt, next_retry_in)` of a stream in memory.
async fn figures(m: &Manager, op: Uuid) -> (usize, usize, usize, u32, Option<std::time::Duration>) {
    let s = stream(m, op).await.expect("in memory");
    (
        s.pending,
        s.received,
        s.acknowledged,
        s.attempt,
        s.next_retry_in,
    )
}

/// SEMANTICS.md, "Changed on purpose": recovering a stream already in
/// memory leaves it as it is. `live` was created by an update after the
/// restart, `recovered` by an earlier `Recover`; asking for both again
/// (and one of them twice in one call) changes neither: same figures, same
/// file, no forward, no entry in the result. Only `fresh`, on disk and not
/// in memory, is recovered.
#[actix::test]
async fn recovering_a_stream_in_memory_leaves_it_as_it_is() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (m, rx) = boot(root);
    let (recovered, fresh, live) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let u_recovered = op_update(recovered, PENDING, None);
    let u_fresh = op_update(fresh, PENDING, None);
    update(&m, &u_recovered).await;
    update(&m, &u_fresh).await;

    let (m, mut rx) = restart(m, rx, root).await;
    let first = recover(&m, &[recovered], true).await.unwrap();
    assert!(first.streams[&recovered].is_some());
    assert_eq!(recv_or_fail(&mut rx, "recovered head").await.attempt, 0);
    let u_live = op_update(live, PENDING, None);
    update(&m, &u_live).await;
    let u_live2 = op_update(live, PENDING, None);
    update(&m, &u_live2).await;
    assert_eq!(recv_or_fail(&mut rx, "live head").await.stream, live);
    // Both retried once, so their figures are not a fresh stream's.
    advance(MIN + std::time::Duration::from_millis(1)).await;
    assert_eq!(recv_or_fail(&mut rx, "a retry").await.attempt, 1);
    assert_eq!(recv_or_fail(&mut rx, "a retry").await.attempt, 1);
    assert_no_forward(&mut rx, "two retries").await;

    let files_before = snapshot(root);
    let live_before = figures(&m, live).await;
    let recovered_before = figures(&m, recovered).await;
    assert_eq!(live_before.0, 2);

    let state = recover(&m, &[live, recovered, fresh, recovered], true)
        .await
        .unwrap();
    assert_eq!(state.errors, 0);
    assert_eq!(
        state.streams.keys().copied().collect::<Vec<_>>(),
        vec![fresh],
        "only the stream not in memory is reported"
    );
    assert_eq!(
        state.streams[&fresh].as_ref().unwrap().updates,
        vec![u_fresh.clone()]
    );
    let head = recv_or_fail(&mut rx, "fresh's head").await;
    assert_eq!((head.stream, head.attempt), (fresh, 0));
    assert_no_forward(&mut rx, "no head forwarded again").await;
    assert_eq!(figures(&m, live).await, live_before);
    assert_eq!(figures(&m, recovered).await, recovered_before);
    assert_eq!(snapshot(root), files_before, "no file touched");

    // Their retry schedules go on as before: the second gap is 20 s.
    advance(MIN + std::time::Duration::from_millis(1)).await;
    let retry = recv_or_fail(&mut rx, "fresh's first retry").await;
    assert_eq!((retry.stream, retry.attempt), (fresh, 1));
    assert_no_forward(&mut rx, "the others wait for their 20 s gap").await;
    advance(MIN).await;
    let mut retried: Vec<_> = [
        recv_or_fail(&mut rx, "second retry").await,
        recv_or_fail(&mut rx, "second retry").await,
    ]
    .iter()
    .map(|f| (f.stream, f.attempt))
    .collect();
    retried.sort();
    let mut expected = vec![(live, 2), (recovered, 2)];
    expected.sort();
    assert_eq!(retried, expected);
}

/// mesos-reference §2.8: a missing parent directory is an error (a missing
/// file with its directory is `None`). Operation streams in Mesos's agent
/// layout, `<root>/<uuid>/operation.updates`, with `<root>/<gone>` absent.
/// Strict: the call fails for `gone` and keeps nothing of it. Non-strict:
/// `gone` counts one error (`StoreError::Open` naming its file) and has no
/// entry; `kept` recovers and is forwarded, `empty` (directory, no file) is
/// `None`; no directory is created for `gone`, and a later update of it
/// starts the stream anew.
#[actix::test]
async fn non_strict_recovery_with_a_missing_directory() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (m, rx) = boot(root);
    let (kept, empty, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let u_kept = op_update(kept, PENDING, None);
    update(&m, &u_kept).await;
    std::fs::create_dir_all(root.join(empty.to_string())).unwrap();
    let gone_path = operation_stream_path(root, &gone);
    assert!(!gone_path.parent().unwrap().exists());

    let (m, mut rx) = restart(m, rx, root).await;
    let is_open_of_gone = |err: &RecoverError| {
        err.stream == gone.to_string()
            && matches!(&err.source, ReplayError::Store(store)
                if matches!(&**store, StoreError::Open { path, .. } if *path == gone_path))
    };

    let err = recover(&m, &[kept, gone, empty], true).await.unwrap_err();
    assert!(is_open_of_gone(&err), "{err:?}");
    assert!(
        stream(&m, kept).await.is_none(),
        "strict: nothing of the call kept"
    );
    assert_no_forward(&mut rx, "strict failure").await;

    let state = recover(&m, &[kept, gone, empty], false).await.unwrap();
    assert_eq!(state.errors, 1);
    assert!(
        matches!(&state.failures[..], [err] if is_open_of_gone(err)),
        "{:?}",
        state.failures
    );
    assert!(!state.streams.contains_key(&gone), "{:?}", state.streams);
    assert_eq!(
        state.streams[&kept].as_ref().unwrap().updates,
        vec![u_kept.clone()]
    );
    assert!(state.streams[&empty].is_none());
    let head = recv_or_fail(&mut rx, "kept's head").await;
    assert_eq!((head.stream, head.attempt), (kept, 0));
    assert_no_forward(&mut rx, "only kept is pending").await;
    assert!(stream(&m, gone).await.is_none());
    assert!(stream(&m, empty).await.is_none());
    assert!(!gone_path.parent().unwrap().exists(), "nothing created");

    let u_gone = op_update(gone, PENDING, None);
    update(&m, &u_gone).await;
    let head = recv_or_fail(&mut rx, "gone, started anew").await;
    assert_eq!((head.stream, head.attempt), (gone, 0));
    assert!(gone_path.exists());
}
