//! Subscribers over gRPC (API.md §1): without a subscriber the manager is
//! paused and sends nothing; the first subscriber gets every head; losing it
//! pauses again and the next one resumes; a second subscriber replaces the
//! first, whose stream ends ABORTED; an admin Pause holds every forward,
//! across subscribers, until Resume. The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use tonic::Code;

use common::server::{assert_forward, next_forward, next_forwards, status, stream_error, Server};

#[actix::test]
async fn nothing_is_forwarded_before_the_first_subscriber_which_gets_every_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let a1 = status("RUNNING", false);
    let a2 = status("FINISHED", true);
    let b1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    server.update(common::status_update("a", "", &a2)).await;
    server.update(common::status_update("b", "fw", &b1)).await;
    for s in ["a", "b"] {
        let info = server.info(s).await;
        assert_eq!(
            (info.attempt, info.next_retry_in_millis),
            (0, -1),
            "{s}: paused without a subscriber, no retry armed: {info:?}"
        );
    }

    let mut sub = server.subscribe("first").await;
    let got = next_forwards(&mut sub, 2, "the heads, to the first subscriber").await;
    // attempt 0: nothing was sent (or counted) while no subscriber was connected.
    assert_forward(&got["a"], "a", &a1, &a2, 0, "head of a");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "head of b");

    server.shutdown().await;
}

#[actix::test]
async fn a_subscriber_disconnect_pauses_and_the_next_subscriber_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut first = server.subscribe("first").await;
    let a1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    let f = next_forward(&mut first, "a1 to the first subscriber").await;
    assert_forward(&f, "a", &a1, &a1, 0, "a1");
    assert!(
        server.info("a").await.next_retry_in_millis >= 0,
        "a retry is armed"
    );

    drop(first);
    server.wait_paused("a").await;

    // While nobody listens, a new update is queued, not sent.
    let b1 = status("RUNNING", false);
    let a2 = status("RUNNING", false);
    server.update(common::status_update("b", "", &b1)).await;
    server.update(common::status_update("a", "", &a2)).await;
    let info = server.info("b").await;
    assert_eq!(
        (info.attempt, info.next_retry_in_millis),
        (0, -1),
        "{info:?}"
    );

    let mut second = server.subscribe("second").await;
    let got = next_forwards(&mut second, 2, "the heads on resume").await;
    assert_forward(&got["a"], "a", &a1, &a2, 1, "a1 again, its second send");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1, never sent before");

    server.shutdown().await;
}

#[actix::test]
async fn a_second_subscriber_replaces_the_first_which_ends_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut first = server.subscribe("first").await;
    let a1 = status("RUNNING", false);
    let b1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    server.update(common::status_update("b", "fw", &b1)).await;
    let got = next_forwards(&mut first, 2, "the first sends").await;
    assert_forward(&got["a"], "a", &a1, &a1, 0, "a1 to the first");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1 to the first");

    let mut second = server.subscribe("second").await;
    let end = stream_error(&mut first, "the replaced subscriber").await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert!(
        end.message().contains("second"),
        "names the new subscriber: {end:?}"
    );

    let got = next_forwards(&mut second, 2, "every head to the new subscriber").await;
    assert_forward(&got["a"], "a", &a1, &a1, 1, "a1 resent to the second");
    assert_forward(&got["b"], "b", &b1, &b1, 1, "b1 resent to the second");

    // The second one is the subscriber now.
    let c1 = status("RUNNING", false);
    server.update(common::status_update("c", "", &c1)).await;
    let f = next_forward(&mut second, "c1 to the second").await;
    assert_forward(&f, "c", &c1, &c1, 0, "c1");

    server.shutdown().await;
}

#[actix::test]
async fn admin_pause_holds_forwards_until_resume_even_across_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut first = server.subscribe("first").await;
    let a1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    let f = next_forward(&mut first, "a1 before the pause").await;
    assert_forward(&f, "a", &a1, &a1, 0, "a1");

    server.pause().await;
    let b1 = status("RUNNING", false);
    server.update(common::status_update("b", "", &b1)).await;
    // A stream arms its retry when it sends: none is armed, nothing was sent.
    for s in ["a", "b"] {
        let info = server.info(s).await;
        assert_eq!(
            info.next_retry_in_millis, -1,
            "{s}: no retry while paused: {info:?}"
        );
    }

    let mut second = server.subscribe("second").await;
    // The first subscriber's stream holds its end and nothing before it:
    // admin-paused, with a subscriber, nothing was forwarded to it.
    let end = stream_error(&mut first, "admin-paused, the replaced subscriber").await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    // The hub took the second subscriber in (and ended the first) in one
    // turn of the actix thread this test runs on: a resume it sent then
    // reaches every stream before these requests, and would arm a retry.
    for s in ["a", "b"] {
        let info = server.info(s).await;
        assert_eq!(
            info.next_retry_in_millis, -1,
            "{s}: a new subscriber does not lift the admin pause: {info:?}"
        );
    }

    server.resume().await;
    let got = next_forwards(&mut second, 2, "every head on Resume").await;
    assert_forward(&got["a"], "a", &a1, &a1, 1, "a1 resent on Resume");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1, first sent on Resume");
    assert!(
        server.info("a").await.next_retry_in_millis >= 0,
        "a retry is armed again"
    );

    // Resume without a subscriber sends nothing; the next subscriber gets the heads.
    drop(second);
    server.wait_paused("a").await;
    server.pause().await;
    server.resume().await;
    assert_eq!(
        server.info("a").await.next_retry_in_millis,
        -1,
        "Resume with no subscriber does not forward"
    );
    let mut third = server.subscribe("third").await;
    let got = next_forwards(&mut third, 2, "every head to the third").await;
    assert_forward(&got["a"], "a", &a1, &a1, 2, "a1 to the third");
    assert_forward(&got["b"], "b", &b1, &b1, 1, "b1 to the third");

    server.shutdown().await;
}
