//! The commit journal (`store.sync = batch` on a committer thread with a
//! journal, as the service runs): a round over several stream files is made
//! durable by one sync of the journal; nothing is answered before it; and
//! what was answered survives the loss of every stream file byte the kernel
//! had not written back, because starting the committer again replays the
//! journal into the files before any stream is recovered.
//!
//! Power loss is simulated by cutting the stream files back to empty while
//! keeping the journal as it was when its last round was answered (it was
//! synced; the stream files were not). These tests use real time (the
//! committer is a thread): waits are bounded and poll for something that
//! must happen; "not yet" is checked while the committer is held at its
//! sync ([`FaultPlan::hold_syncs`]), never after a sleep.
mod common;

use common::*;
use status_update_manager::kind::Native;
use status_update_manager::messages::{Acknowledge, Recover, Update, UpdateOutcome};
use status_update_manager::store::layout::native_stream_path;
use status_update_manager::store::{Committer, FaultPlan, SyncPolicy, JOURNAL_FILE};
use status_update_manager::ManagerConfig;

const STREAMS: usize = 3;

fn update(stream: usize, state: &str) -> Update<Native> {
    Update {
        update: native_update(&format!("s{stream}"), state, false, ""),
        checkpoint: true,
    }
}

/// Sends one update to every stream at once (so that rounds hold several
/// files), and waits for every answer.
async fn send_round(
    manager: &actix::Addr<status_update_manager::StatusUpdateManager<Native>>,
    state: &str,
) -> Vec<Update<Native>> {
    let updates: Vec<_> = (0..STREAMS).map(|i| update(i, state)).collect();
    all_accepted(updates.iter().map(|u| manager.send(u.clone())).collect()).await;
    updates
}

#[actix::test]
async fn answered_records_survive_losing_every_unsynced_stream_file_byte() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let (committer, replayed) =
        Committer::thread_with_journal(SyncPolicy::Batch, &journal).unwrap();
    assert_eq!(replayed.applied, 0, "a new journal holds nothing");
    let config = ManagerConfig {
        sync: SyncPolicy::Batch,
        committer: Some(committer.clone()),
        ..ManagerConfig::default()
    };
    let (manager, mut rx) = start::<Native>(config, native_paths(dir.path()));

    // ONE creates the files (its round may sync them one by one).
    let first = send_round(&manager, "ONE").await;
    for _ in 0..STREAMS {
        recv_or_fail(&mut rx, "each head forwarded").await;
    }
    let paths: Vec<_> = (0..STREAMS)
        .map(|i| native_stream_path(dir.path(), &format!("s{i}")))
        .collect();
    let durable: Vec<u64> = paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();

    // Then, all at once (one round over every file): s0's ONE is
    // acknowledged, and TWO goes to every stream.
    let ack = actix_rt::spawn(manager.send(Acknowledge::<Native> {
        stream: "s0".into(),
        uuid: native_uuid(&first[0].update),
    }));
    send_round(&manager, "TWO").await;
    assert!(!answer(ack).await.stream_terminated);
    let synced = std::fs::read(&journal).unwrap();
    assert!(
        !synced.is_empty(),
        "a round over several files went to the journal"
    );

    // The streams stop (their files close); the committer stays up, idle.
    drop(manager);
    settle().await;
    // Power loss: the journal is as synced; the stream files lost every
    // byte written after ONE was made durable.
    std::fs::write(&journal, &synced).unwrap();
    for (path, len) in paths.iter().zip(&durable) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(*len)
            .unwrap();
    }

    // Starting again replays the journal before anything reads the files.
    let (again, replayed) = Committer::thread_with_journal(SyncPolicy::Batch, &journal).unwrap();
    assert!(
        replayed.applied > 0 && replayed.skipped == 0,
        "{replayed:?}"
    );
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        0,
        "emptied once replayed"
    );
    for i in 0..STREAMS {
        let want = if i == 0 { 1 } else { 2 };
        let (states, pending) = file_states(dir.path(), &format!("s{i}"));
        assert_eq!(states, ["ONE", "TWO"], "s{i}");
        assert_eq!(pending, want, "s{i}: its acknowledgement is back too");
    }
    let config = ManagerConfig {
        sync: SyncPolicy::Batch,
        committer: Some(again),
        ..ManagerConfig::default()
    };
    let (recovered, _rx) = start::<Native>(config, native_paths(dir.path()));
    let state = tokio::time::timeout(
        BOUND,
        recovered.send(Recover::<Native> {
            ids: (0..STREAMS).map(|i| format!("s{i}")).collect(),
            strict: true,
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(state.failures.is_empty(), "{:?}", state.failures);
    assert_eq!(state.streams.len(), STREAMS);
    drop(committer);
}

#[actix::test]
async fn nothing_is_answered_before_the_journal_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let (committer, _) = Committer::thread_with_journal(SyncPolicy::Batch, &journal).unwrap();
    let faults = FaultPlan::new();
    let (manager, mut rx) =
        start::<Native>(batch_config(&committer, &faults), native_paths(dir.path()));
    // The files exist first, so that the next round holds only the writes.
    send_round(&manager, "ONE").await;
    for _ in 0..STREAMS {
        recv_or_fail(&mut rx, "each head forwarded").await;
    }

    faults.hold_syncs();
    let replies: Vec<_> = (0..STREAMS)
        .map(|i| actix_rt::spawn(manager.send(update(i, "TWO"))))
        .collect();
    until_held("the round held at its sync", &faults, FaultPlan::syncs_held).await;
    for (i, reply) in replies.iter().enumerate() {
        assert!(
            !reply.is_finished(),
            "s{i} answered before its round was synced"
        );
    }
    faults.release_syncs();
    for reply in replies {
        assert_eq!(answer(reply).await, UpdateOutcome::Accepted);
    }
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "the rounds were synced through the journal"
    );
}

#[actix::test]
async fn files_outside_the_journals_directory_are_synced_by_their_round_not_journaled() {
    // A library's layout: the journal in one directory, the stream files in
    // another. The journal cannot name them relative to its own directory,
    // and a replay would skip an entry for a file outside it: such a round
    // syncs the files themselves.
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal").join(JOURNAL_FILE);
    let streams = dir.path().join("streams");
    let (committer, _) = Committer::thread_with_journal(SyncPolicy::Batch, &journal).unwrap();
    let (manager, _rx) = start::<Native>(
        batch_config(&committer, &FaultPlan::new()),
        native_paths(&streams),
    );
    let states = ["ONE", "TWO", "THREE"];
    for state in states {
        send_round(&manager, state).await;
    }
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        0,
        "no entry for a file the journal cannot name"
    );
    for i in 0..STREAMS {
        let (found, pending) = file_states(&streams, &format!("s{i}"));
        assert_eq!(
            (found, pending),
            (states.map(String::from).to_vec(), 3),
            "s{i}"
        );
    }
}

#[actix::test]
async fn a_round_of_one_file_syncs_that_file_and_leaves_the_journal_empty() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let (committer, _) = Committer::thread_with_journal(SyncPolicy::Batch, &journal).unwrap();
    let (manager, _rx) = start::<Native>(
        batch_config(&committer, &FaultPlan::new()),
        native_paths(dir.path()),
    );
    for state in ["ONE", "TWO"] {
        let outcome = tokio::time::timeout(BOUND, manager.send(update(0, state)))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(outcome, UpdateOutcome::Accepted);
    }
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    assert_eq!(
        file_states(dir.path(), "s0"),
        (vec!["ONE".to_string(), "TWO".to_string()], 2)
    );
}

#[actix::test]
async fn checkpoints_after_every_round_lose_nothing_and_leave_one_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let old = status_update_manager::store::journal::old_journal_path(&journal);
    // Past one byte the journal wants a checkpoint: every round over several
    // files rotates it, or waits for the checkpoint before it to end.
    let (committer, _) = Committer::thread_with_journal_at(SyncPolicy::Batch, &journal, 1).unwrap();
    let stopped = committer.stopped().expect("a committer thread");
    let (manager, _rx) = start::<Native>(
        batch_config(&committer, &FaultPlan::new()),
        native_paths(dir.path()),
    );
    const ROUNDS: usize = 40;
    let states: Vec<String> = (0..ROUNDS).map(|n| format!("R{n}")).collect();
    for state in &states {
        send_round(&manager, state).await;
    }

    // Every handle gone: the committer ends its last checkpoint in place.
    drop(manager);
    drop(committer);
    let deadline = std::time::Instant::now() + BOUND;
    while !stopped.is_stopped() {
        assert!(
            std::time::Instant::now() < deadline,
            "the committer thread did not stop"
        );
        settle().await;
        std::thread::yield_now();
    }
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0, "emptied");
    assert!(!old.exists(), "no rotated journal left");
    for i in 0..STREAMS {
        assert_eq!(
            file_states(dir.path(), &format!("s{i}")),
            (states.clone(), ROUNDS),
            "s{i}: every update, in order"
        );
    }
}
