//! Per-stream figures from the mailbox: a stream reports the messages
//! queued for its actor and not yet handled (`mailbox_backlog`), the
//! messages it handled, and how long the figures request waited behind the
//! backlog (`mailbox_oldest_wait`). The count is kept by every sender and by
//! the actor; these tests check it grows with a burst, drains back to 0, and
//! does not drift whichever way the messages came (the manager, a handle, a
//! forward's ack, pause and resume, the retry timer, the committer, a sync).
mod common;

use std::path::Path;
use std::time::Duration;

use actix::prelude::*;

use common::*;
use status_update_manager::kind::Native;
use status_update_manager::messages::{
    Acknowledge, Forward, GetHandle, GetStream, ListStreams, Pause, Resume, StreamStats, SyncAll,
    Update, UpdateOutcome,
};
use status_update_manager::StatusUpdateManager;

type Manager = Addr<StatusUpdateManager<Native>>;

fn boot(
    dir: &Path,
) -> (
    Manager,
    tokio::sync::mpsc::UnboundedReceiver<Forward<Native>>,
) {
    start::<Native>(inline_config(), native_paths(dir))
}

fn update(state: &str) -> Update<Native> {
    Update {
        update: native_update("s", state, false, "f"),
        checkpoint: true,
    }
}

/// The mailbox figures of `s`, for failure messages: (backlog, handled, wait).
fn mailbox(s: &StreamStats<Native>) -> (u64, u64, Duration) {
    (s.mailbox_backlog, s.messages_handled, s.mailbox_oldest_wait)
}

/// Stream `s`'s figures.
async fn stats(m: &Manager) -> StreamStats<Native> {
    m.send(GetStream::<Native> { stream: "s".into() })
        .await
        .expect("manager is running")
        .expect("the stream answers")
        .expect("stream s is in memory")
}

/// `n` updates handed to the manager in one go, then a `GetStream` behind
/// them: the manager routes them all in one turn, so the figures request
/// reaches the stream's mailbox behind the `n` updates, before the stream
/// handled any of them. Returns its figures once every update is accepted.
async fn burst(m: &Manager, n: usize) -> StreamStats<Native> {
    let updates: Vec<_> = (0..n).map(|i| m.send(update(&format!("S{i}")))).collect();
    let asked = m.send(GetStream::<Native> { stream: "s".into() });
    all_accepted(updates).await;
    asked
        .await
        .expect("manager is running")
        .expect("the stream answers")
        .expect("stream s is in memory")
}

#[actix::test]
async fn a_burst_queues_in_the_mailbox_and_the_backlog_drains_to_zero() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, _forwards) = boot(dir.path());
    let first = m.send(update("STARTING")).await.unwrap().unwrap();
    assert_eq!(first, UpdateOutcome::Accepted);

    let idle = stats(&m).await;
    assert_eq!(idle.mailbox_backlog, 0, "{:?}", mailbox(&idle));
    assert_eq!(
        idle.mailbox_oldest_wait,
        Duration::ZERO,
        "{:?}",
        mailbox(&idle)
    );
    // The update, its commit round's answer, and this request at least.
    assert!(idle.messages_handled >= 3, "{:?}", mailbox(&idle));

    let busy = burst(&m, 50).await;
    assert_eq!(busy.mailbox_backlog, 50, "{:?}", mailbox(&busy));
    assert!(
        busy.messages_handled >= idle.messages_handled + 51,
        "the 50 updates and this request were handled: {:?} after {:?}",
        mailbox(&busy),
        mailbox(&idle)
    );

    let after = stats(&m).await;
    assert_eq!(after.mailbox_backlog, 0, "drained: {:?}", mailbox(&after));
    assert!(
        after.messages_handled > busy.messages_handled,
        "{:?}",
        mailbox(&after)
    );

    // ListStreams reports the same figures.
    let listed = m.send(ListStreams::<Native>::all()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mailbox_backlog, 0, "{:?}", mailbox(&listed[0]));
    assert!(listed[0].messages_handled > after.messages_handled);
}

#[actix::test]
async fn the_count_does_not_drift_whichever_way_messages_come() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (m, mut forwards) = boot(dir.path());
    // Through the manager: an update, its forward acknowledged at the stream.
    let u1 = update("STARTING");
    m.send(u1.clone()).await.unwrap().unwrap();
    let f1 = recv_or_fail(&mut forwards, "the first update").await;
    f1.acknowledge().await.unwrap();
    // Through a handle: an update; then the manager's ack of it.
    let handle = m
        .send(GetHandle::<Native> { stream: "s".into() })
        .await
        .unwrap()
        .expect("a handle of s");
    let u2 = native_update("s", "RUNNING", false, "f");
    handle.update(u2.clone(), true).await.unwrap();
    let f2 = recv_or_fail(&mut forwards, "the second update").await;
    assert_eq!(f2.uuid(), native_uuid(&u2));
    // Pause and resume (broadcasts), a sync of every file.
    m.send(Pause).await.unwrap();
    m.send(Resume).await.unwrap();
    let resent = recv_or_fail(&mut forwards, "the head, re-sent on resume").await;
    assert_eq!(resent.uuid(), native_uuid(&u2));
    m.send(SyncAll).await.unwrap();
    // The retry timer's wake-up, which re-sends the head.
    advance(MIN + Duration::from_millis(1)).await;
    let retried = recv_or_fail(&mut forwards, "the retry").await;
    assert_eq!(retried.attempt, 2);
    let acked = m
        .send(Acknowledge::<Native> {
            stream: "s".into(),
            uuid: native_uuid(&u2),
        })
        .await
        .unwrap();
    assert!(!acked.unwrap().stream_terminated);
    settle().await;

    let settled = stats(&m).await;
    assert_eq!(settled.mailbox_backlog, 0, "{:?}", mailbox(&settled));
    // A sender that did not count (or counted twice) would show here: the
    // backlog of a burst is its size exactly.
    let busy = burst(&m, 20).await;
    assert_eq!(busy.mailbox_backlog, 20, "{:?}", mailbox(&busy));
    assert_eq!(stats(&m).await.mailbox_backlog, 0);
}

/// Real time: the stream takes real time to handle a burst, and the figures
/// request queued behind it says how long it waited.
#[actix::test]
async fn the_figures_request_waits_behind_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _forwards) = boot(dir.path());
    m.send(update("STARTING")).await.unwrap().unwrap();

    let busy = burst(&m, 500).await;
    assert_eq!(busy.mailbox_backlog, 500, "{:?}", mailbox(&busy));
    assert!(
        busy.mailbox_oldest_wait > Duration::ZERO,
        "it waited while 500 updates were handled: {:?}",
        mailbox(&busy)
    );
    assert!(busy.mailbox_oldest_wait < BOUND, "{:?}", mailbox(&busy));
}
