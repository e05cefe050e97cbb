//! Write-behind (any `store.sync` on the committer thread): a stream stages
//! its records and the committer's round writes them, then (`batch`,
//! `always`) syncs, so the actor thread makes no `write` and waits for no
//! sync. Nothing is answered before the round that wrote (and synced) it; a stream that must sync on the spot (shutdown,
//! cleanup) writes the round in flight itself, and the committer then leaves
//! it alone; a write the committer fails restarts the stream from its file.
//!
//! These tests use real time (the committer is a thread): waits are bounded
//! and poll for something that must happen; "not yet" is checked while the
//! committer is held at its gate (before its write, or at its sync), never
//! after a sleep.
mod common;

use common::*;
use status_update_manager::error::UpdateError;
use status_update_manager::kind::Native;
use status_update_manager::messages::{GetStream, SyncAll, Update, UpdateOutcome};
use status_update_manager::store::layout::native_stream_path;
use status_update_manager::store::{Committer, Fault, FaultPlan, SyncPolicy};
use status_update_manager::ManagerConfig;

fn update(state: &str) -> Update<Native> {
    Update {
        update: native_update("s", state, false, ""),
        checkpoint: true,
    }
}

/// `batch_config` with `policy`.
fn config(policy: SyncPolicy, committer: &Committer, faults: &FaultPlan) -> ManagerConfig {
    ManagerConfig {
        sync: policy,
        ..batch_config(committer, faults)
    }
}

#[actix::test]
async fn a_batch_round_in_flight_is_written_by_the_stream_that_must_sync_now() {
    round_in_flight_written_by_the_stream(SyncPolicy::Batch).await;
}

#[actix::test]
async fn a_none_round_in_flight_is_written_by_the_stream_that_must_sync_now() {
    round_in_flight_written_by_the_stream(SyncPolicy::None).await;
}

async fn round_in_flight_written_by_the_stream(policy: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let path = native_stream_path(dir.path(), "s");
    let committer = Committer::thread_for(policy).unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) = start::<Native>(
        config(policy, &committer, &faults),
        native_paths(dir.path()),
    );

    // The committer holds its round before writing anything.
    faults.hold_committer_writes();
    let one = update("ONE");
    let reply = actix_rt::spawn(manager.send(one.clone()));
    until_held(
        "the round held before it writes",
        &faults,
        FaultPlan::committer_writes_held,
    )
    .await;
    assert!(!reply.is_finished(), "answered before its round wrote it");
    assert!(
        rx.try_recv().is_err(),
        "forwarded before its round wrote it"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "the stream's own thread wrote nothing"
    );

    // Shutdown syncs every stream on the spot: the stream takes its round
    // back from the held committer, writes and syncs it, and answers.
    tokio::time::timeout(BOUND, manager.send(SyncAll))
        .await
        .unwrap()
        .unwrap();
    let outcome = answer(reply).await;
    assert_eq!(outcome, UpdateOutcome::Accepted);
    let forward = recv_or_fail(&mut rx, "ONE forwarded once written").await;
    assert_eq!(forward.update.status, one.update.status);
    assert_eq!(file_states(dir.path(), "s"), (vec!["ONE".to_string()], 1));

    // The committer, released, finds its round written and leaves it; the
    // next record lands right after the first.
    faults.release_committer_writes();
    let two = tokio::time::timeout(BOUND, manager.send(update("TWO")))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(two, UpdateOutcome::Accepted);
    assert_eq!(
        file_states(dir.path(), "s"),
        (vec!["ONE".to_string(), "TWO".to_string()], 2)
    );
    assert_eq!(faults.writes(), 1, "the committer wrote TWO's round only");
}

#[actix::test]
async fn a_batch_write_the_committer_fails_restarts_the_stream_from_its_file() {
    failed_committer_write_restarts_the_stream(SyncPolicy::Batch).await;
}

#[actix::test]
async fn a_none_write_the_committer_fails_restarts_the_stream_from_its_file() {
    failed_committer_write_restarts_the_stream(SyncPolicy::None).await;
}

async fn failed_committer_write_restarts_the_stream(policy: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::thread_for(policy).unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) = start::<Native>(
        config(policy, &committer, &faults),
        native_paths(dir.path()),
    );
    let send = |u: Update<Native>| {
        let manager = manager.clone();
        async move {
            tokio::time::timeout(BOUND, manager.send(u))
                .await
                .unwrap()
                .unwrap()
        }
    };

    assert_eq!(send(update("ONE")).await.unwrap(), UpdateOutcome::Accepted);
    let first = recv_or_fail(&mut rx, "ONE forwarded").await;
    assert_eq!(first.attempt, 0);

    // The committer's next write fails half-way, as a full disk would.
    faults.fail_nth_write(1, Fault::Enospc);
    let err = send(update("TWO")).await.unwrap_err();
    assert!(
        matches!(&err, UpdateError::Storage { stream, .. } if stream == "s"),
        "{err}"
    );
    assert!(err.to_string().contains("No space left"), "{err}");

    // The restarted stream reloaded ONE (cutting off TWO's torn half) and
    // sends it again.
    let again = recv_or_fail(&mut rx, "ONE re-sent after the restart").await;
    assert_eq!(again.update, first.update);
    assert_eq!(again.attempt, 1);

    // It serves again, and its file holds ONE and THREE, no torn bytes.
    assert_eq!(
        send(update("THREE")).await.unwrap(),
        UpdateOutcome::Accepted
    );
    assert_eq!(
        file_states(dir.path(), "s"),
        (vec!["ONE".to_string(), "THREE".to_string()], 2)
    );
    if policy == SyncPolicy::None {
        assert_eq!(faults.syncs(), 0, "a `none` round writes and never syncs");
    }
}

#[actix::test]
async fn always_syncs_on_the_committer_and_its_stream_keeps_serving_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::thread().unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) = start::<Native>(
        config(SyncPolicy::Always, &committer, &faults),
        native_paths(dir.path()),
    );
    let one = update("ONE");

    // Every sync is held after it reached the disk.
    faults.hold_syncs();
    let reply = actix_rt::spawn(manager.send(one.clone()));
    until_held("the round held at its sync", &faults, FaultPlan::syncs_held).await;
    assert!(!reply.is_finished(), "answered before its sync");
    assert!(rx.try_recv().is_err(), "forwarded before its sync");
    // The stream's thread is not stuck in that sync: the stream answers.
    let stats = tokio::time::timeout(
        BOUND,
        manager.send(GetStream::<Native> { stream: "s".into() }),
    )
    .await
    .expect("the stream answers while its sync is held")
    .unwrap()
    .expect("the stream answers")
    .unwrap();
    assert_eq!(stats.pending, 1);

    faults.release_syncs();
    assert_eq!(answer(reply).await, UpdateOutcome::Accepted);
    let forward = recv_or_fail(&mut rx, "ONE forwarded once synced").await;
    assert_eq!(forward.update.status, one.update.status);
    assert_eq!(file_states(dir.path(), "s"), (vec!["ONE".to_string()], 1));
    assert_eq!(faults.syncs(), 1, "one fdatasync of the stream's own file");
}
