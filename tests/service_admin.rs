//! The operator's RPCs over gRPC (API.md §1): Cleanup closes a framework's
//! streams (files removed, retries stopped) and leaves the others alone;
//! ListStreams and GetStream report what was received, acknowledged, sent
//! and armed. The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use tonic::Code;

use common::eventually;
use common::server::{
    assert_forward, assert_rejected, file_len, memory_only, next_forward, next_forwards, status,
    stream_of, Server, SHORT_RETRY,
};

#[actix::test]
async fn cleanup_closes_the_frameworks_streams_and_stops_their_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.retry.min = SHORT_RETRY.into()).await;
    let f1 = status("RUNNING", false);
    let f2 = status("RUNNING", false);
    let g1 = status("RUNNING", false);
    let n1 = status("RUNNING", false);
    server.update(common::status_update("f-1", "F", &f1)).await;
    server.update(common::status_update("f-2", "F", &f2)).await;
    let r = server
        .send(memory_only(common::status_update("f-mem", "F", &f1)))
        .await
        .unwrap();
    assert!(!r.duplicate);
    server.update(common::status_update("g-1", "G", &g1)).await;
    server.update(common::status_update("n-1", "", &n1)).await;
    // Every head is sent at once to the first subscriber: one retry schedule for all.
    let mut sub = server.subscribe("upstream").await;
    let first = next_forwards(&mut sub, 5, "the first sends").await;
    assert!(first.values().all(|f| f.attempt == 0), "{first:?}");

    assert_eq!(server.cleanup("F").await.unwrap(), 3, "F's three streams");
    assert_eq!(server.cleanup("F").await.unwrap(), 0, "nothing left of F");
    assert_eq!(
        server.cleanup("nobody").await.unwrap(),
        0,
        "unknown framework"
    );
    // Forwards of F emitted before the Cleanup took effect may still be on
    // their way; everything after this fresh update's forward is later.
    let fence = status("RUNNING", false);
    server
        .update(common::status_update("fence", "", &fence))
        .await;

    for s in ["f-1", "f-2", "f-mem"] {
        assert_rejected(
            server.ack(s, &f1).await,
            Code::NotFound,
            &[s],
            &format!("ack on {s} after Cleanup"),
        );
        assert_rejected(
            server.get(s).await,
            Code::NotFound,
            &[s],
            "GetStream after Cleanup",
        );
    }
    assert!(server.list("F").await.is_empty(), "F has no stream left");
    let left: Vec<String> = server
        .list("")
        .await
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert_eq!(
        left,
        ["fence", "g-1", "n-1"],
        "the other streams are untouched"
    );
    for s in ["f-1", "f-2"] {
        let path = server.path(s);
        eventually(&format!("the file of {s} is removed"), || {
            let gone = !path.exists();
            async move { gone }
        })
        .await;
    }
    assert!(server.path("g-1").exists() && server.path("n-1").exists());

    // F's retries stop while the others' go on: had F's timers survived, a
    // resend of F would come before g-1's second resend after the fence.
    let is_f = |s: &str| s.starts_with("f-");
    loop {
        let f = next_forward(&mut sub, "the fence's forward").await;
        if stream_of(&f) == "fence" {
            assert_forward(&f, "fence", &fence, &fence, 0, "the fence");
            break;
        }
    }
    let mut g_resends = 0;
    while g_resends < 2 {
        let f = next_forward(&mut sub, "resends of g-1 after the Cleanup").await;
        let stream = stream_of(&f).to_string();
        assert!(!is_f(&stream), "a cleaned-up stream was forwarded: {f:?}");
        if stream == "g-1" {
            g_resends += 1;
            assert_eq!(f.update.unwrap().status.as_ref(), Some(&g1));
        }
    }
    assert!(!server.ack_ok("g-1", &g1).await);
    assert!(!server.ack_ok("n-1", &n1).await);
    assert!(!server.ack_ok("fence", &fence).await);

    server.shutdown().await;
}

#[actix::test]
async fn list_and_get_stream_report_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let a = [
        status("STARTING", false),
        status("RUNNING", false),
        status("FINISHED", true),
    ];
    let b1 = status("RUNNING", false);
    let c1 = status("RUNNING", false);
    for st in &a {
        server.update(common::status_update("a", "F", st)).await;
    }
    let r = server
        .send(memory_only(common::status_update("b", "", &b1)))
        .await
        .unwrap();
    assert!(!r.duplicate);
    server.update(common::status_update("c", "G", &c1)).await;

    // No subscriber yet: paused, nothing sent.
    let all = server.list("").await;
    let ids: Vec<&str> = all.iter().map(|i| i.stream_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let (ia, ib, ic) = (&all[0], &all[1], &all[2]);
    assert_eq!(ia.framework_id, "F");
    assert!(ia.checkpointed && !ia.terminated, "{ia:?}");
    assert_eq!(
        (ia.pending, ia.received, ia.acknowledged),
        (3, 3, 0),
        "{ia:?}"
    );
    assert_eq!((ia.attempt, ia.next_retry_in_millis), (0, -1), "{ia:?}");
    assert!(ia.oldest_pending_age_millis >= 0, "{ia:?}");
    assert_eq!(ia.checkpoint_bytes, file_len(&server.path("a")), "{ia:?}");
    assert!(ia.checkpoint_bytes > 0);
    assert!(
        ia.pending_statuses.is_empty(),
        "ListStreams leaves pending_statuses empty"
    );
    assert_eq!(ib.framework_id, "");
    assert!(!ib.checkpointed, "{ib:?}");
    assert_eq!(
        (ib.pending, ib.checkpoint_bytes, ib.next_retry_in_millis),
        (1, 0, -1)
    );
    assert!(!server.path("b").exists());
    assert_eq!((ic.framework_id.as_str(), ic.pending), ("G", 1));
    // The mailbox figures: the streams keep up, so the figures request met
    // no backlog (but for the service's own periodic one, at most) and did
    // not wait; `a` handled its three updates, their commit rounds' answers
    // and the request, `b` (memory-only) one update and the request.
    for info in &all {
        assert!(info.mailbox_backlog <= 1, "{info:?}");
        assert!(info.mailbox_oldest_wait_millis < 1_000, "{info:?}");
    }
    assert!(ia.messages_handled >= 5, "{ia:?}");
    assert!(
        (2..ia.messages_handled).contains(&ib.messages_handled),
        "{ib:?}"
    );

    let only_f: Vec<String> = server
        .list("F")
        .await
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert_eq!(only_f, ["a"], "framework filter");
    let only_g: Vec<String> = server
        .list("G")
        .await
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert_eq!(only_g, ["c"], "framework filter");
    assert!(server.list("nobody").await.is_empty());

    let ga = server.info("a").await;
    assert_eq!(
        ga.pending_statuses,
        a.to_vec(),
        "GetStream fills pending_statuses"
    );
    // GetStream gives the mailbox figures too; the listing's request counts.
    assert!(ga.mailbox_backlog <= 1, "{ga:?}");
    assert!(ga.messages_handled > ia.messages_handled, "{ga:?}");
    assert_eq!(server.info("b").await.pending_statuses, vec![b1]);

    // Subscribed: every head sent once, a retry armed.
    let mut first = server.subscribe("first").await;
    next_forwards(&mut first, 3, "the heads").await;
    let ga = server.info("a").await;
    assert_eq!(ga.attempt, 0, "{ga:?}");
    assert!((0..=10_000).contains(&ga.next_retry_in_millis), "{ga:?}");

    let bytes_before = ga.checkpoint_bytes;
    assert!(!server.ack_ok("a", &a[0]).await);
    let f = next_forward(&mut first, "a's second update").await;
    assert_forward(&f, "a", &a[1], &a[2], 0, "a[1]");
    let ga = server.info("a").await;
    assert_eq!(
        (ga.pending, ga.received, ga.acknowledged, ga.attempt),
        (2, 3, 1, 0),
        "{ga:?}"
    );
    assert_eq!(ga.pending_statuses, a[1..].to_vec());
    assert!(
        ga.checkpoint_bytes > bytes_before,
        "the ACK record was appended: {ga:?}"
    );
    assert_eq!(ga.checkpoint_bytes, file_len(&server.path("a")));

    assert!(!server.ack_ok("c", &c1).await);
    let gc = server.info("c").await;
    assert_eq!(
        (
            gc.pending,
            gc.received,
            gc.acknowledged,
            gc.next_retry_in_millis
        ),
        (0, 1, 1, -1),
        "nothing pending, no retry: {gc:?}"
    );
    assert!(gc.pending_statuses.is_empty());

    // A new subscriber resends the heads: attempt 1.
    let mut second = server.subscribe("second").await;
    next_forwards(&mut second, 2, "the heads to the second").await;
    assert_eq!(server.info("a").await.attempt, 1);
    assert_eq!(server.info("b").await.attempt, 1);

    server.pause().await;
    for s in ["a", "b", "c"] {
        let info = server.info(s).await;
        assert_eq!(info.next_retry_in_millis, -1, "{s} admin-paused: {info:?}");
    }
    server.resume().await;
    next_forwards(&mut second, 2, "the heads on Resume").await;
    let ga = server.info("a").await;
    assert_eq!(ga.attempt, 2, "{ga:?}");
    assert!(ga.next_retry_in_millis >= 0, "{ga:?}");
    drop(first);

    server.shutdown().await;
}
