//! Requests sent straight to a stream's actor (`messages::handle`): through a
//! `StreamHandle` from `GetHandle`, and acknowledgements through
//! `Forward::acknowledge`. They must give the answers the manager's route
//! gives, keep the stream's order and file, and be refused once the stream
//! is closing or gone. Paused tokio time throughout.
mod common;

use std::path::Path;

use actix::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;

use common::*;
use status_update_manager::error::{AckError, UpdateError};
use status_update_manager::kind::{InvalidUpdate, Native};
use status_update_manager::messages::handle::StreamHandle;
use status_update_manager::messages::{
    Acknowledge, Cleanup, Forward, GetHandle, GetStream, Recover, StreamStats, Update,
    UpdateOutcome,
};
use status_update_manager::proto::status_update_manager::v1 as native;
use status_update_manager::store::layout::native_stream_path;
use status_update_manager::StatusUpdateManager;

type Manager = Addr<StatusUpdateManager<Native>>;
type Forwards = UnboundedReceiver<Forward<Native>>;

fn boot(dir: &Path) -> (Manager, Forwards) {
    start::<Native>(inline_config(), native_paths(dir))
}

/// Creates stream `id` (framework `f`) through the manager with one
/// `STARTING` update and returns its handle and that update's forward.
async fn open(m: &Manager, rx: &mut Forwards, id: &str) -> (StreamHandle<Native>, Forward<Native>) {
    let first = native_update(id, "STARTING", false, "f");
    let outcome = m
        .send(Update::<Native> {
            update: first.clone(),
            checkpoint: true,
        })
        .await
        .expect("manager is running");
    assert_eq!(outcome.unwrap(), UpdateOutcome::Accepted);
    let handle = handle_of(m, id).await.expect("the stream is in memory");
    assert_eq!(handle.stream(), id);
    let forward = recv_or_fail(rx, "the first update").await;
    assert_eq!(forward.uuid(), native_uuid(&first));
    (handle, forward)
}

/// A `RUNNING` update of stream `s` in framework `f`.
fn running() -> native::StatusUpdate {
    native_update("s", "RUNNING", false, "f")
}

/// The manager's handle of stream `id`, if it gives one.
async fn handle_of(m: &Manager, id: &str) -> Option<StreamHandle<Native>> {
    m.send(GetHandle::<Native> { stream: id.into() })
        .await
        .expect("manager is running")
}

/// Stream `id`'s figures, if it is in memory.
async fn stats_of(m: &Manager, id: &str) -> Option<StreamStats<Native>> {
    m.send(GetStream::<Native> { stream: id.into() })
        .await
        .expect("manager is running")
        .expect("the stream answers")
}

fn file_len(dir: &Path, id: &str) -> u64 {
    std::fs::metadata(native_stream_path(dir, id))
        .expect("the stream's file exists")
        .len()
}

#[actix::test]
async fn updates_through_a_handle_are_checkpointed_forwarded_in_order_and_acked_at_the_stream() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (handle, first) = open(&m, &mut rx, "s").await;
    let rest: Vec<_> = (0..3).map(|_| running()).collect();
    // Sent before any is awaited: order is the order of the calls.
    let replies: Vec<_> = rest
        .iter()
        .map(|u| handle.update(u.clone(), true))
        .collect();
    for reply in replies {
        assert_eq!(reply.await.unwrap(), UpdateOutcome::Accepted);
    }
    // A duplicate is told as through the manager.
    assert_eq!(
        handle.update(rest[0].clone(), true).await.unwrap(),
        UpdateOutcome::Duplicate
    );
    let stats = stats_of(&m, "s").await.expect("the stream is in memory");
    assert_eq!((stats.pending, stats.received), (4, 4));

    // Each ack goes to the stream that forwarded it, and the next head follows.
    let outcome = first.acknowledge().await.unwrap();
    assert!(!outcome.stream_terminated);
    for expected in &rest {
        let forward = recv_or_fail(&mut rx, "the next head").await;
        assert_eq!(forward.uuid(), native_uuid(expected));
        assert_eq!(forward.attempt, 0);
        forward.acknowledge().await.unwrap();
    }
    assert_no_forward(&mut rx, "everything acknowledged").await;

    // What the stream answered is in its file: a new manager recovers it
    // with nothing pending and every uuid known.
    drop((m, rx, handle));
    settle().await;
    let (m, mut rx) = boot(dir.path());
    let recovered = m
        .send(Recover::<Native> {
            ids: vec!["s".into()],
            strict: true,
        })
        .await
        .unwrap()
        .unwrap();
    let updates = recovered.streams["s"].as_ref().unwrap();
    assert_eq!(updates.updates.len(), 4);
    assert!(!updates.terminated);
    let stats = stats_of(&m, "s").await.expect("the stream is in memory");
    assert_eq!(
        (stats.pending, stats.received, stats.acknowledged),
        (0, 4, 4)
    );
    assert_no_forward(&mut rx, "nothing pending after recovery").await;
}

#[actix::test]
async fn a_handle_refuses_an_update_of_another_stream_or_an_invalid_one_and_sends_nothing() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (handle, _) = open(&m, &mut rx, "s").await;
    let len = file_len(dir.path(), "s");

    let other = native_update("t", "RUNNING", false, "f");
    match handle.update(other, true).await {
        Err(UpdateError::Invalid {
            stream,
            reason: InvalidUpdate::StreamId(why),
            ..
        }) => {
            assert_eq!(stream, "t");
            assert!(why.contains("handle of stream s"), "{why}");
        }
        other => panic!("expected Invalid for another stream's update, got {other:?}"),
    }
    let mut nil = running();
    nil.status.as_mut().unwrap().uuid = vec![0; 16];
    assert!(matches!(
        handle.update(nil, true).await,
        Err(UpdateError::Invalid {
            reason: InvalidUpdate::NilUuid,
            ..
        })
    ));
    let mut with_latest = running();
    with_latest.latest_status = with_latest.status.clone();
    assert!(matches!(
        handle.update(with_latest, true).await,
        Err(UpdateError::Invalid {
            reason: InvalidUpdate::LatestStatusSet,
            ..
        })
    ));
    // The stream's own checks apply as through the manager.
    assert!(matches!(
        handle.update(running(), false).await,
        Err(UpdateError::CheckpointMismatch { .. })
    ));
    assert!(matches!(
        handle
            .update(native_update("s", "RUNNING", false, "g"), true)
            .await,
        Err(UpdateError::FrameworkMismatch { .. })
    ));
    assert!(matches!(
        handle.acknowledge(uuid::Uuid::nil()).await,
        Err(AckError::Invalid {
            reason: InvalidUpdate::NilUuid,
            ..
        })
    ));
    assert!(matches!(
        handle.acknowledge(uuid::Uuid::new_v4()).await,
        Err(AckError::UnexpectedAck { .. })
    ));
    settle().await;
    assert_eq!(file_len(dir.path(), "s"), len, "nothing was written");
    assert!(stats_of(&m, "t").await.is_none());
    assert!(handle_of(&m, "t").await.is_none());
}

#[actix::test]
async fn after_a_cleanup_direct_requests_are_refused_as_the_manager_refuses_them() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (handle, forward) = open(&m, &mut rx, "s").await;
    let len = file_len(dir.path(), "s");
    assert_eq!(
        m.send(Cleanup {
            framework_id: "f".into()
        })
        .await
        .unwrap(),
        1
    );

    // Sent after the cleanup returned: the stream's `Close` is ahead of them.
    let late = running();
    assert!(matches!(
        handle.update(late, true).await,
        Err(UpdateError::StreamClosing { .. })
    ));
    assert!(matches!(
        forward.acknowledge().await,
        Err(AckError::UnknownStream { .. })
    ));
    assert!(matches!(
        handle.acknowledge(forward.uuid()).await,
        Err(AckError::UnknownStream { .. })
    ));
    // The manager answers the same.
    assert!(matches!(
        m.send(Acknowledge::<Native> {
            stream: "s".into(),
            uuid: forward.uuid(),
        })
        .await
        .unwrap(),
        Err(AckError::UnknownStream { .. })
    ));
    settle().await;
    assert_eq!(
        file_len(dir.path(), "s"),
        len,
        "nothing was written after the cleanup"
    );
    assert!(handle_of(&m, "s").await.is_none());
    advance(MIN * 2).await;
    assert_no_forward(&mut rx, "a closed stream does not retry").await;
}

#[actix::test]
async fn a_terminal_ack_through_a_forward_ends_the_stream_and_its_handle() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (handle, first) = open(&m, &mut rx, "s").await;
    let last = native_update("s", "FINISHED", true, "f");
    assert_eq!(
        handle.update(last.clone(), true).await.unwrap(),
        UpdateOutcome::Accepted
    );
    assert!(!first.acknowledge().await.unwrap().stream_terminated);
    let terminal = recv_or_fail(&mut rx, "the terminal update").await;
    assert_eq!(terminal.uuid(), native_uuid(&last));
    assert!(terminal.acknowledge().await.unwrap().stream_terminated);
    settle().await;

    assert!(matches!(
        handle.update(running(), true).await,
        Err(UpdateError::StreamClosing { .. })
    ));
    assert!(matches!(
        terminal.acknowledge().await,
        Err(AckError::UnknownStream { .. })
    ));
    assert!(handle_of(&m, "s").await.is_none());
}

#[actix::test]
async fn a_retried_forward_is_acknowledged_at_the_stream_and_retries_stop() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (_handle, first) = open(&m, &mut rx, "s").await;
    advance(MIN + std::time::Duration::from_millis(1)).await;
    let resent = recv_or_fail(&mut rx, "the retry").await;
    assert_eq!((resent.uuid(), resent.attempt), (first.uuid(), 1));
    assert_eq!(resent, Forward::clone(&resent));
    resent.acknowledge().await.unwrap();
    // The first send names the same update, acknowledged now.
    assert!(matches!(
        first.acknowledge().await,
        Err(AckError::DuplicateAck { .. })
    ));
    advance(MIN * 4).await;
    assert_no_forward(&mut rx, "acknowledged").await;
}

#[actix::test]
async fn once_the_manager_is_gone_direct_requests_get_errors_not_silence() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut rx) = boot(dir.path());
    let (handle, forward) = open(&m, &mut rx, "s").await;
    let len = file_len(dir.path(), "s");
    drop(m);
    settle().await;
    // The handle keeps the actor, which the manager closed as it stopped.
    assert!(matches!(
        handle.update(running(), true).await,
        Err(UpdateError::StreamClosing { .. })
    ));
    drop(handle);
    settle().await;
    // Nothing keeps the actor now: the forward finds it gone.
    assert!(matches!(
        forward.acknowledge().await,
        Err(AckError::UnknownStream { .. })
    ));
    assert_eq!(
        file_len(dir.path(), "s"),
        len,
        "the file is kept, unchanged"
    );
}
