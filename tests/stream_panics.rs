//! A panic in a stream actor restarts the stream, never kills it: a panic
//! injected (through the fault plan) into each of the actor's handlers
//! answers the request that panicked, and every request the stream held,
//! with a typed error naming the stream; the stream reloads from its file,
//! forwards its head again, and then serves; nothing accepted is lost, and a
//! new manager over the same directory recovers the same state. A stream
//! that panics again and again waits longer each time; an actor that stops
//! for good (a panic it could not catch) is started again by the manager.
//!
//! Paused tokio time, with the commit rounds on the test's arbiter.
mod common;

use std::time::Duration;

use actix::Addr;
use common::*;
use status_update_manager::error::{AckError, UpdateError};
use status_update_manager::kind::Native;
use status_update_manager::messages::{
    Acknowledge, Cleanup, GetStream, Pause, Recover, Resume, Update, UpdateOutcome,
};
use status_update_manager::proto::status_update_manager::v1::StatusUpdate;
use status_update_manager::store::{FaultPlan, SyncPolicy};
use status_update_manager::{ManagerConfig, StatusUpdateManager};

type Manager = Addr<StatusUpdateManager<Native>>;

fn config(sync: SyncPolicy, faults: &FaultPlan) -> ManagerConfig {
    ManagerConfig {
        sync,
        faults: Some(faults.clone()),
        ..inline_config()
    }
}

async fn send(manager: &Manager, update: &StatusUpdate) -> Result<UpdateOutcome, UpdateError> {
    manager
        .send(Update {
            update: update.clone(),
            checkpoint: true,
        })
        .await
        .expect("manager mailbox")
}

async fn ack(manager: &Manager, update: &StatusUpdate) -> Result<bool, AckError> {
    manager
        .send(Acknowledge::<Native> {
            stream: update.stream_id.clone(),
            uuid: native_uuid(update),
        })
        .await
        .expect("manager mailbox")
        .map(|a| a.stream_terminated)
}

/// The handlers a panic is injected into, by the names the stream gives them.
const HANDLERS: [&str; 9] = [
    "update",
    "ack",
    "retry wake-up",
    "durable",
    "flush",
    "stats",
    "pause",
    "sync",
    "close",
];

#[actix::test]
async fn a_panic_in_any_handler_restarts_the_stream_from_its_file_and_loses_nothing() {
    tokio::time::pause();
    for sync in [SyncPolicy::None, SyncPolicy::Batch] {
        for handler in HANDLERS {
            let what = format!("{handler} under {sync}");
            let dir = tempfile::tempdir().unwrap();
            let faults = FaultPlan::new();
            let (manager, mut rx) =
                start::<Native>(config(sync, &faults), native_paths(dir.path()));
            let u1 = native_update("s", "ONE", false, "fw");
            let u2 = native_update("s", "TWO", false, "fw");
            assert_eq!(send(&manager, &u1).await.unwrap(), UpdateOutcome::Accepted);
            let first = recv_or_fail(&mut rx, "u1 forwarded").await;
            assert_eq!(first.attempt, 0, "{what}");

            faults.panic_in(handler, 1);
            // What the panic leaves: whether u2 must be sent again, and whether
            // the stream ended (a cleanup that panicked still closes it).
            let mut resend_u2 = true;
            match handler {
                "update" => {
                    let err = send(&manager, &u2).await.unwrap_err();
                    assert!(
                        matches!(&err, UpdateError::Panicked { stream, .. } if stream == "s"),
                        "{what}: {err}"
                    );
                }
                "ack" => {
                    let err = ack(&manager, &u1).await.unwrap_err();
                    assert!(
                        matches!(&err, AckError::Panicked { stream, .. } if stream == "s"),
                        "{what}: {err}"
                    );
                    resend_u2 = false;
                }
                "durable" | "flush" => {
                    // The round that carries u2 panics: u2's answer was held,
                    // and is the panic's error.
                    let err = send(&manager, &u2).await.unwrap_err();
                    assert!(
                        matches!(&err, UpdateError::Panicked { stream, .. } if stream == "s"),
                        "{what}: {err}"
                    );
                }
                "retry wake-up" => advance(MIN + Duration::from_millis(1)).await,
                "stats" => {
                    let err = manager
                        .send(GetStream::<Native> { stream: "s".into() })
                        .await
                        .expect("manager mailbox")
                        .unwrap_err();
                    assert_eq!(err.stream, "s", "{what}: {err}");
                    assert!(err.to_string().contains("injected panic"), "{what}: {err}");
                }
                "pause" => {
                    manager.send(Pause).await.unwrap();
                    settle().await;
                    // Paused, the restarted stream forwards nothing until resumed.
                    assert_no_forward(&mut rx, &what).await;
                    manager.send(Resume).await.unwrap();
                }
                "sync" => {
                    manager
                        .send(status_update_manager::messages::SyncAll)
                        .await
                        .unwrap();
                }
                "close" => {
                    let closed = manager
                        .send(Cleanup {
                            framework_id: "fw".into(),
                        })
                        .await;
                    assert_eq!(closed.unwrap(), 1, "{what}");
                    settle().await;
                    // A cleanup that panicked still ends the stream.
                    let gone = manager
                        .send(GetStream::<Native> { stream: "s".into() })
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(gone.is_none(), "{what}: the stream is closed");
                    assert_no_forward(&mut rx, &what).await;
                    continue;
                }
                other => unreachable!("{other}"),
            }

            // The restarted stream reloaded its file and sends its head again.
            let again = recv_or_fail(&mut rx, &format!("{what}: u1 re-sent")).await;
            assert_eq!(again.update.status, u1.status, "{what}");
            assert!(again.attempt >= 1, "{what}: attempt {}", again.attempt);

            // It serves again; whatever the panic's caller was told, sending
            // again is safe (a duplicate if it had reached the file).
            if resend_u2 {
                let outcome = send(&manager, &u2).await.unwrap();
                assert!(
                    matches!(outcome, UpdateOutcome::Accepted | UpdateOutcome::Duplicate),
                    "{what}: {outcome:?}"
                );
            } else {
                assert_eq!(send(&manager, &u2).await.unwrap(), UpdateOutcome::Accepted);
            }
            assert!(!ack(&manager, &u1).await.unwrap(), "{what}");
            let next = recv_or_fail(&mut rx, &format!("{what}: u2 after u1's ack")).await;
            assert_eq!(next.update.status, u2.status, "{what}");

            // A new manager over the same directory recovers the same state:
            // u1 acknowledged, u2 pending, and forwards u2.
            drop(manager);
            settle().await;
            let (again, mut rx2) =
                start::<Native>(config(sync, &FaultPlan::new()), native_paths(dir.path()));
            let state = again
                .send(Recover::<Native> {
                    ids: vec!["s".into()],
                    strict: true,
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(state.errors, 0, "{what}");
            let head = recv_or_fail(&mut rx2, &format!("{what}: u2 after recovery")).await;
            assert_eq!(head.update.status, u2.status, "{what}");
            let (states, pending) = file_states(dir.path(), "s");
            assert_eq!(states, ["ONE", "TWO"], "{what}");
            assert_eq!(pending, 1, "{what}");
        }
    }
}

#[actix::test]
async fn a_stream_that_panics_again_and_again_waits_longer_each_time() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) =
        start::<Native>(config(SyncPolicy::Batch, &faults), native_paths(dir.path()));
    let u1 = native_update("s", "ONE", false, "");
    assert_eq!(send(&manager, &u1).await.unwrap(), UpdateOutcome::Accepted);
    recv_or_fail(&mut rx, "u1 forwarded").await;

    // An update panics, then each start after a restart panics twice more:
    // the second and third restarts wait 1 s, then 2 s.
    faults.panic_in("start", 2);
    faults.panic_in("update", 1);
    let u2 = native_update("s", "TWO", false, "");
    assert!(matches!(
        send(&manager, &u2).await,
        Err(UpdateError::Panicked { .. })
    ));
    settle().await;
    let err = send(&manager, &u2).await.unwrap_err();
    assert!(
        matches!(&err, UpdateError::Unavailable { reason, .. } if reason.contains("3 panics in a row")),
        "{err}"
    );
    assert_no_forward(&mut rx, "nothing while it waits").await;
    advance(Duration::from_millis(1_500)).await;
    assert!(
        matches!(
            send(&manager, &u2).await,
            Err(UpdateError::Unavailable { .. })
        ),
        "still waiting after 1.5 s"
    );
    advance(Duration::from_millis(600)).await;
    let again = recv_or_fail(&mut rx, "u1 once the backoff is over").await;
    assert_eq!(again.update.status, u1.status);
    assert_eq!(send(&manager, &u2).await.unwrap(), UpdateOutcome::Accepted);
}

#[actix::test]
async fn a_stream_actor_that_stops_for_good_is_started_again_by_the_manager() {
    tokio::time::pause();
    for sync in [SyncPolicy::None, SyncPolicy::Batch] {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultPlan::new();
        let (manager, mut rx) = start::<Native>(config(sync, &faults), native_paths(dir.path()));
        let u1 = native_update("s", "ONE", false, "");
        assert_eq!(send(&manager, &u1).await.unwrap(), UpdateOutcome::Accepted);
        recv_or_fail(&mut rx, "u1 forwarded").await;

        // A panic the stream does not catch: its actor is gone, and the
        // request it was handling gets no answer from it.
        faults.kill_in("retry wake-up", 1);
        advance(MIN + Duration::from_millis(1)).await;
        // The manager looks for stopped stream actors once per `retry.min`
        // and starts this one again from its file: u1 is forwarded again.
        advance(MIN + Duration::from_millis(5)).await;
        let again = recv_or_fail(&mut rx, &format!("{sync}: u1 after the revival")).await;
        assert_eq!(again.update.status, u1.status, "{sync}");
        let u2 = native_update("s", "TWO", false, "");
        assert_eq!(send(&manager, &u2).await.unwrap(), UpdateOutcome::Accepted);
        assert!(!ack(&manager, &u1).await.unwrap(), "{sync}");
        let next = recv_or_fail(&mut rx, "u2").await;
        assert_eq!(next.update.status, u2.status, "{sync}");
    }
}
