//! C1: a write or sync failure fails that request; the stream restarts,
//! reloads its file, and serves again; nothing acknowledged is forwarded
//! again and nothing accepted is lost.
mod common;

use actix::Addr;
use common::*;
use status_update_manager::error::{AckError, UpdateError};
use status_update_manager::kind::Native;
use status_update_manager::messages::{Acknowledge, GetStream, Update, UpdateOutcome};
use status_update_manager::proto::status_update_manager::v1::StatusUpdate;
use status_update_manager::store::{Fault, FaultPlan, SyncPolicy};
use status_update_manager::{ManagerConfig, StatusUpdateManager};

fn config(sync: SyncPolicy, faults: &FaultPlan) -> ManagerConfig {
    ManagerConfig {
        sync,
        faults: Some(faults.clone()),
        ..inline_config()
    }
}

async fn send(
    manager: &Addr<StatusUpdateManager<Native>>,
    update: &StatusUpdate,
) -> Result<UpdateOutcome, UpdateError> {
    manager
        .send(Update {
            update: update.clone(),
            checkpoint: true,
        })
        .await
        .expect("manager mailbox")
}

async fn ack(
    manager: &Addr<StatusUpdateManager<Native>>,
    update: &StatusUpdate,
) -> Result<bool, AckError> {
    let msg = Acknowledge::<Native> {
        stream: update.stream_id.clone(),
        uuid: native_uuid(update),
    };
    manager
        .send(msg)
        .await
        .expect("manager mailbox")
        .map(|a| a.stream_terminated)
}

#[actix::test]
async fn c1_failed_write_restarts_and_reloads_the_stream() {
    tokio::time::pause();
    for sync in SyncPolicy::ALL {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultPlan::new();
        let (manager, mut rx) = start::<Native>(config(sync, &faults), native_paths(dir.path()));

        let u1 = native_update("s", "ONE", false, "");
        assert_eq!(
            send(&manager, &u1).await.unwrap(),
            UpdateOutcome::Accepted,
            "{sync}"
        );
        let first = recv_or_fail(&mut rx, "u1 forwarded").await;
        assert_eq!(first.attempt, 0);

        // The next write fails half-way, as a full disk would.
        faults.fail_nth_write(1, Fault::Enospc);
        let u2 = native_update("s", "TWO", false, "");
        let err = send(&manager, &u2).await.unwrap_err();
        assert!(
            matches!(&err, UpdateError::Storage { stream, .. } if stream == "s"),
            "{sync}: {err}"
        );
        assert!(err.to_string().contains("No space left"), "{sync}: {err}");

        // The restarted stream reloaded u1 from its file and sends it again.
        let again = recv_or_fail(&mut rx, "u1 re-sent after the restart").await;
        assert_eq!(again.update, first.update, "{sync}");
        assert_eq!(again.attempt, 1, "{sync}");

        // It serves again: the next update and the ack succeed.
        let u3 = native_update("s", "THREE", false, "");
        assert_eq!(
            send(&manager, &u3).await.unwrap(),
            UpdateOutcome::Accepted,
            "{sync}"
        );
        assert!(!ack(&manager, &u1).await.unwrap(), "{sync}");
        let next = recv_or_fail(&mut rx, "u3 after u1's ack").await;
        assert_eq!(next.update.status, u3.status, "{sync}");

        // u1 was acknowledged: it is never forwarded again; only u3 is retried.
        advance(MIN + std::time::Duration::from_millis(1)).await;
        let retry = recv_or_fail(&mut rx, "retry of u3").await;
        assert_eq!(retry.update.status, u3.status, "{sync}");
        assert_no_forward(&mut rx, "nothing else").await;

        // The file holds u1 and u3, no trace of the failed u2, no torn bytes.
        let (states, pending) = file_states(dir.path(), "s");
        assert_eq!(states, ["ONE", "THREE"], "{sync}");
        assert_eq!(pending, 1, "{sync}");
    }
}

#[actix::test]
async fn c1_failed_sync_answers_an_error_and_loses_nothing() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) =
        start::<Native>(config(SyncPolicy::Batch, &faults), native_paths(dir.path()));

    faults.fail_nth_sync(1, Fault::Eio);
    let u1 = native_update("s", "ONE", false, "");
    let err = send(&manager, &u1).await.unwrap_err();
    assert!(matches!(err, UpdateError::Storage { .. }), "{err}");
    // Nothing was forwarded before the failed sync; the write itself reached
    // the file, so the reloaded stream holds u1 and sends it for the first
    // time. The caller retries and learns it is a duplicate: no loss, no
    // double entry.
    let forwarded = recv_or_fail(&mut rx, "u1 after the reload").await;
    assert_eq!(forwarded.update.status, u1.status);
    assert_eq!(
        forwarded.attempt, 0,
        "the failed sync sent nothing before the reload"
    );
    assert_no_forward(&mut rx, "one send only").await;
    assert_eq!(send(&manager, &u1).await.unwrap(), UpdateOutcome::Duplicate);

    let u2 = native_update("s", "TWO", false, "");
    assert_eq!(send(&manager, &u2).await.unwrap(), UpdateOutcome::Accepted);
    assert!(!ack(&manager, &u1).await.unwrap());
    let next = recv_or_fail(&mut rx, "u2 after u1's ack").await;
    assert_eq!(next.update.status, u2.status);
    assert_eq!(
        file_states(dir.path(), "s"),
        (vec!["ONE".to_string(), "TWO".to_string()], 1)
    );
}

#[actix::test]
async fn c1_failed_ack_write_is_retried_and_acknowledges_once() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) = start::<Native>(
        config(SyncPolicy::Always, &faults),
        native_paths(dir.path()),
    );
    let u1 = native_update("s", "ONE", false, "");
    let u2 = native_update("s", "TWO", false, "");
    send(&manager, &u1).await.unwrap();
    send(&manager, &u2).await.unwrap();
    recv_or_fail(&mut rx, "u1").await;

    faults.fail_nth_write(1, Fault::Eio);
    let err = ack(&manager, &u1).await.unwrap_err();
    assert!(matches!(err, AckError::Storage { .. }), "{err}");
    // Not acknowledged: the reloaded stream still has u1 at its head.
    let resent = recv_or_fail(&mut rx, "u1 again after the reload").await;
    assert_eq!(resent.update.status, u1.status);

    assert!(!ack(&manager, &u1).await.unwrap());
    assert!(matches!(
        ack(&manager, &u1).await,
        Err(AckError::DuplicateAck { .. })
    ));
    let next = recv_or_fail(&mut rx, "u2").await;
    assert_eq!(next.update.status, u2.status);
    let stats = manager
        .send(GetStream::<Native> { stream: "s".into() })
        .await
        .unwrap()
        .expect("the stream answers")
        .unwrap();
    assert_eq!(
        (stats.pending, stats.received, stats.acknowledged),
        (1, 2, 1)
    );
}

#[actix::test]
async fn c1_full_disk_then_space_back() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) =
        start::<Native>(config(SyncPolicy::Batch, &faults), native_paths(dir.path()));
    let u1 = native_update("s", "ONE", false, "");
    send(&manager, &u1).await.unwrap();
    recv_or_fail(&mut rx, "u1").await;

    faults.set_disk_full(true);
    for i in 0..3 {
        let u = native_update("s", &format!("FULL{i}"), false, "");
        let err = send(&manager, &u).await.unwrap_err();
        assert!(
            matches!(err, UpdateError::Storage { .. }),
            "attempt {i}: {err}"
        );
    }
    // A new stream cannot be checkpointed either, and leaves nothing behind.
    let other = native_update("t", "X", false, "");
    assert!(send(&manager, &other).await.is_err());

    faults.set_disk_full(false);
    let u2 = native_update("s", "TWO", false, "");
    assert_eq!(send(&manager, &u2).await.unwrap(), UpdateOutcome::Accepted);
    assert!(!ack(&manager, &u1).await.unwrap());
    // Every restart re-sent u1; drain those, then u2 follows u1's ack.
    let mut last = recv_or_fail(&mut rx, "forwards after the disk came back").await;
    while let Ok(f) = rx.try_recv() {
        last = f;
    }
    assert_eq!(last.update.status, u2.status);
    assert_eq!(
        file_states(dir.path(), "s"),
        (vec!["ONE".to_string(), "TWO".to_string()], 1)
    );
}
