//! Group commit (`store.sync = batch` on the committer thread): nothing is
//! answered or forwarded before the sync that covers its write, and many
//! writes share one sync round.
//!
//! These tests use real time (the committer is a thread): waits are bounded
//! and poll for something that must happen; "not yet" is checked while the
//! committer is held at its sync, never after a sleep.
mod common;

use common::*;
use status_update_manager::kind::Native;
use status_update_manager::messages::{Acknowledge, Update, UpdateOutcome};
use status_update_manager::store::{Committer, FaultPlan};

#[actix::test]
async fn nothing_is_answered_or_forwarded_before_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::thread().unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) =
        start::<Native>(batch_config(&committer, &faults), native_paths(dir.path()));

    for (i, terminal) in [false, true].into_iter().enumerate() {
        // Hold every sync round after it reached the disk, before anyone is told.
        faults.hold_syncs();
        let u = native_update(&format!("s{i}"), "RUNNING", terminal, "");
        let reply = actix_rt::spawn(manager.send(Update {
            update: u.clone(),
            checkpoint: true,
        }));
        until_held("the round held at its sync", &faults, FaultPlan::syncs_held).await;
        assert!(
            !reply.is_finished(),
            "update {i} was answered before its sync"
        );
        assert!(
            rx.try_recv().is_err(),
            "update {i} was forwarded before its sync"
        );

        faults.release_syncs();
        let outcome = answer(reply).await;
        assert_eq!(outcome, UpdateOutcome::Accepted);
        let forward = tokio::time::timeout(BOUND, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(forward.update.status, u.status);

        // The same for the acknowledgement.
        faults.hold_syncs();
        let ack = Acknowledge::<Native> {
            stream: u.stream_id.clone(),
            uuid: native_uuid(&u),
        };
        let reply = actix_rt::spawn(manager.send(ack));
        until_held("the round held at its sync", &faults, FaultPlan::syncs_held).await;
        assert!(!reply.is_finished(), "ack {i} was answered before its sync");
        faults.release_syncs();
        let acked = answer(reply).await;
        assert_eq!(acked.stream_terminated, terminal);
    }
}

#[actix::test]
async fn many_writes_share_one_sync_round() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::thread().unwrap();
    let faults = FaultPlan::new();
    let (manager, _rx) =
        start::<Native>(batch_config(&committer, &faults), native_paths(dir.path()));
    const STREAMS: usize = 500;

    let before = committer.rounds();
    let replies: Vec<_> = (0..STREAMS)
        .map(|i| {
            let u = native_update(&format!("s{i}"), "RUNNING", false, "");
            manager.send(Update {
                update: u,
                checkpoint: true,
            })
        })
        .collect();
    all_accepted(replies).await;
    let rounds = committer.rounds() - before;
    assert!(rounds >= 1, "at least one sync");
    assert!(
        rounds * 10 <= STREAMS as u64,
        "{STREAMS} writes took {rounds} sync rounds"
    );
    // Every ticket was covered by a sync (the fault plan sees each one).
    assert_eq!(faults.syncs(), STREAMS as u64);
}

#[actix::test]
async fn a_file_that_cannot_be_created_fails_its_updates_and_leaves_no_stream() {
    let dir = tempfile::tempdir().unwrap();
    // The stream's directory would have to be created inside a regular file.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let paths: status_update_manager::StreamPaths<Native> =
        std::sync::Arc::new(move |id: &String| blocker.join(id));
    let committer = Committer::thread().unwrap();
    let (manager, mut rx) = start::<Native>(batch_config(&committer, &FaultPlan::new()), paths);
    for attempt in 0..2 {
        let u = native_update("s", "RUNNING", false, "");
        let reply = manager.send(Update {
            update: u,
            checkpoint: true,
        });
        let err = tokio::time::timeout(BOUND, reply)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, status_update_manager::UpdateError::CreateFailed { .. }),
            "attempt {attempt}: {err}"
        );
    }
    assert!(rx.try_recv().is_err(), "nothing forwarded");
    let streams = manager
        .send(status_update_manager::messages::ListStreams::<Native>::all())
        .await
        .unwrap();
    assert!(streams.is_empty(), "no stream stays behind: {streams:?}");
}
