//! Forwarding over gRPC (API.md §1): updates reach the subscriber in order,
//! one at a time, each after the ack of the one before; a terminal ack ends
//! the stream; an unacknowledged head is retried with growing attempts; a
//! duplicate is answered as one and forwarded once. The harness is
//! `common::server`.
#![cfg(feature = "service")]

mod common;

use tonic::Code;

use common::server::{
    assert_forward, assert_rejected, file_len, next_forward, status, uuid_of, Server, SHORT_RETRY,
};

#[actix::test]
async fn updates_are_forwarded_in_order_acked_and_a_terminal_ack_ends_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut sub = server.subscribe("upstream").await;
    let s = "task-1";
    let u1 = status("STARTING", false);
    let u2 = status("RUNNING", false);
    let u3 = status("FINISHED", true);

    server.update(common::status_update(s, "fw", &u1)).await;
    let f = next_forward(&mut sub, "first forward of u1").await;
    assert_forward(&f, s, &u1, &u1, 0, "u1 alone in the queue");
    assert_eq!(f.update.as_ref().unwrap().framework_id, "fw");

    // Queued behind the head: not forwarded yet, but latest_status follows.
    server.update(common::status_update(s, "fw", &u2)).await;
    server.update(common::status_update(s, "fw", &u3)).await;
    server
        .assert_nothing_forwarded(&mut sub, "u2 and u3 wait behind the unacked u1")
        .await;
    assert!(
        file_len(&server.path(s)) > 0,
        "the stream's file holds the updates"
    );

    assert!(
        !server.ack_ok(s, &u1).await,
        "a non-terminal ack does not end the stream"
    );
    let f = next_forward(&mut sub, "u2 after the ack of u1").await;
    assert_forward(&f, s, &u2, &u3, 0, "u2 with u3 newest");

    assert!(!server.ack_ok(s, &u2).await, "u2 is not terminal");
    let f = next_forward(&mut sub, "u3 after the ack of u2").await;
    assert_forward(&f, s, &u3, &u3, 0, "u3, the last one");

    assert!(
        server.ack_ok(s, &u3).await,
        "the terminal ack ends the stream"
    );
    assert_rejected(
        server.get(s).await,
        Code::NotFound,
        &[s],
        "GetStream of an ended stream",
    );
    assert!(
        !server.path(s).exists(),
        "store.remove_finished = true: the ended stream's file is removed"
    );
    // A retried terminal ack: NOT_FOUND, which the caller takes as success.
    assert_rejected(
        server.ack(s, &u3).await,
        Code::NotFound,
        &[s, &uuid_of(&u3)],
        "ack after the terminal ack",
    );
    server
        .assert_nothing_forwarded(&mut sub, "nothing after the end of the stream")
        .await;

    // The server fills in a missing producer timestamp.
    let mut u4 = status("STAGING", false);
    u4.timestamp_unix_micros = 0;
    server
        .update(common::status_update("task-2", "", &u4))
        .await;
    let f = next_forward(&mut sub, "u4 without a timestamp").await;
    let forwarded = f.update.unwrap().status.unwrap();
    assert!(
        forwarded.timestamp_unix_micros > 0,
        "timestamp filled in: {forwarded:?}"
    );
    assert_eq!(forwarded.uuid, u4.uuid);

    server.shutdown().await;
}

#[actix::test]
async fn an_unacked_update_is_retried_to_the_subscriber_with_growing_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.retry.min = SHORT_RETRY.into()).await;
    let s = "retried";
    let u1 = status("RUNNING", false);
    let u2 = status("FINISHED", true);

    // Both queued before anyone listens: every send of u1 carries u2 as latest_status.
    server.update(common::status_update(s, "", &u1)).await;
    server.update(common::status_update(s, "", &u2)).await;
    let mut sub = server.subscribe("upstream").await;
    for attempt in 0..3 {
        let what = format!("send {attempt} of u1");
        let f = next_forward(&mut sub, &what).await;
        assert_forward(&f, s, &u1, &u2, attempt, &what);
    }
    let info = server.info(s).await;
    assert_eq!(info.attempt, 2, "GetStream counts the resends: {info:?}");
    assert!(info.next_retry_in_millis >= 0, "a retry is armed: {info:?}");

    // The ack stops u1's retries: the next forward is u2, fresh.
    assert!(!server.ack_ok(s, &u1).await);
    let f = next_forward(&mut sub, "u2 after the ack of u1").await;
    assert_forward(&f, s, &u2, &u2, 0, "u2 after u1's ack, not u1 again");
    let f = next_forward(&mut sub, "first retry of u2").await;
    assert_forward(&f, s, &u2, &u2, 1, "first retry of u2");
    assert!(server.ack_ok(s, &u2).await);

    server.shutdown().await;
}

#[actix::test]
async fn a_duplicate_update_is_answered_duplicate_and_forwarded_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut sub = server.subscribe("upstream").await;
    let s = "dedup";
    let u1 = status("RUNNING", false);

    let first = server
        .send(common::checkpointed(common::status_update(s, "", &u1)))
        .await
        .unwrap();
    assert!(!first.duplicate, "the first send is new");
    let f = next_forward(&mut sub, "the one forward of u1").await;
    assert_forward(&f, s, &u1, &u1, 0, "u1");

    let before = common::snapshot(dir.path());
    let second = server
        .send(common::checkpointed(common::status_update(s, "", &u1)))
        .await
        .unwrap();
    assert!(second.duplicate, "the same update again is a duplicate");
    // Dedup is by status uuid: another state under the same uuid is the same status.
    let mut same_uuid = status("LOST", false);
    same_uuid.uuid = u1.uuid.clone();
    let third = server
        .send(common::checkpointed(common::status_update(
            s, "", &same_uuid,
        )))
        .await
        .unwrap();
    assert!(
        third.duplicate,
        "a known uuid is a duplicate whatever the state"
    );
    assert_eq!(
        common::snapshot(dir.path()),
        before,
        "a duplicate writes nothing"
    );
    server
        .assert_nothing_forwarded(&mut sub, "a duplicate is not forwarded")
        .await;
    let info = server.info(s).await;
    assert_eq!((info.pending, info.received), (1, 1), "{info:?}");

    // Still a duplicate once acknowledged.
    assert!(!server.ack_ok(s, &u1).await);
    let again = server
        .send(common::checkpointed(common::status_update(s, "", &u1)))
        .await
        .unwrap();
    assert!(again.duplicate, "an acknowledged uuid is a duplicate");
    server
        .assert_nothing_forwarded(&mut sub, "an acknowledged duplicate is not forwarded")
        .await;
    let info = server.info(s).await;
    assert_eq!(
        (info.pending, info.received, info.acknowledged),
        (0, 1, 1),
        "{info:?}"
    );

    server.shutdown().await;
}
