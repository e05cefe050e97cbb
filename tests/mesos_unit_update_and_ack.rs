//! Smoke: Mesos's UpdateAndAck.
mod common;

use common::*;
use status_update_manager::kind::Operation;
use status_update_manager::messages::{Acknowledge, Update, UpdateOutcome};
use status_update_manager::proto::mesos::OperationState;
use status_update_manager::ManagerConfig;
use uuid::Uuid;

#[actix::test]
async fn update_and_ack() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) =
        start::<Operation>(ManagerConfig::default(), operation_paths(dir.path()));
    let op = Uuid::new_v4();
    let update = op_update(op, OperationState::OperationFinished, None);
    let outcome = manager
        .send(Update {
            update: update.clone(),
            checkpoint: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, UpdateOutcome::Accepted);
    let forward = recv_or_fail(&mut rx, "first forward").await;
    assert_eq!(forward.update, expected_forward(&update));
    assert_eq!(forward.attempt, 0);
    let ack = manager
        .send(Acknowledge::<Operation> {
            stream: op,
            uuid: op_status_uuid(&update),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(ack.stream_terminated);
    advance(MIN).await;
    assert_no_forward(&mut rx, "no retry after the ack").await;
}

#[actix::test]
async fn resend_unacknowledged() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) =
        start::<Operation>(ManagerConfig::default(), operation_paths(dir.path()));
    let op = Uuid::new_v4();
    let update = op_update(op, OperationState::OperationFinished, None);
    manager
        .send(Update {
            update: update.clone(),
            checkpoint: true,
        })
        .await
        .unwrap()
        .unwrap();
    let first = recv_or_fail(&mut rx, "first forward").await;
    advance(MIN - std::time::Duration::from_millis(100)).await;
    assert_no_forward(&mut rx, "before MIN").await;
    advance(std::time::Duration::from_millis(200)).await;
    let second = recv_or_fail(&mut rx, "retry after MIN").await;
    assert_eq!(first.update, second.update);
    assert_eq!(second.attempt, 1);
    let ack = manager
        .send(Acknowledge::<Operation> {
            stream: op,
            uuid: op_status_uuid(&update),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(ack.stream_terminated);
    advance(MIN * 4).await;
    assert_no_forward(&mut rx, "no retry after the ack").await;
}
