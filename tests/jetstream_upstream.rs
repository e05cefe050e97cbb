//! The JetStream upstream (`upstream.kind = "jetstream"`) against a real
//! `nats-server` with JetStream ([`common::nats`]): the service in the
//! test's process publishes each stream's head, JetStream's PubAck
//! acknowledges it.
//!
//! - per stream, the JetStream stream holds the updates in acceptance order,
//!   each with its headers and its `ForwardedUpdate` payload, and the ACK
//!   records are in the stream files once the PubAcks came;
//! - a head re-sent because its PubAck did not come in time (the server
//!   stopped with SIGSTOP) has the same `Nats-Msg-Id`: JetStream keeps one
//!   copy, and the PubAck of the copy (a duplicate) acknowledges it;
//! - while the server is down the service is paused (nothing is forwarded,
//!   no retry armed; `Acknowledge` still works), and when it is back every
//!   head is published at once;
//! - `Subscribe` is refused with FAILED_PRECONDITION naming the kind.
//!
//! Every wait is bounded and polls a condition.
#![cfg(feature = "service")]

mod common;

use async_nats::jetstream;
use tonic::Code;

use common::nats::{self, NatsServer};
use common::server::{status, uuid_of, Server, SHORT_RETRY};
use common::{eventually, file_states, status_update, BOUND, PROCESS_BOUND};
use status_update_manager::proto::status_update_manager::v1::{
    AcknowledgeRequest, SubscribeRequest,
};
use status_update_manager::service::jetstream::{subject, IsReady};

/// A service over `data` publishing into the server at `url` as `node`,
/// with `extra` settings on top.
async fn start(data: &std::path::Path, url: &str, node: &str, extra: &[(&str, &str)]) -> Server {
    let url = url.to_string();
    let node = node.to_string();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Server::start(data, move |settings| {
        let mut env = vec![
            ("SUM__UPSTREAM__KIND".to_string(), "jetstream".to_string()),
            ("SUM__UPSTREAM__JETSTREAM__SERVERS".to_string(), url),
            ("SUM__UPSTREAM__JETSTREAM__NODE".to_string(), node),
        ];
        env.extend(extra);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        *settings =
            common::server::settings(&settings.store.data_dir, &settings.server.listen, &pairs);
    })
    .await
}

async fn ready(server: &Server) -> bool {
    let upstream = server
        .running
        .jetstream
        .as_ref()
        .expect("a JetStream upstream");
    upstream.send(IsReady).await.unwrap_or(false)
}

#[actix::test]
async fn each_stream_is_published_in_order_with_its_headers_and_each_puback_is_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let data = dir.path().join("data");
    let server = start(&data, &nats.url(), "node.1", &[]).await;
    eventually("JetStream is usable", || ready(&server)).await;

    // Two streams, one with an id that is no subject token as it is.
    let streams = [("task/1 é", "fw-1"), ("plain", "")];
    let mut sent: Vec<(String, Vec<_>)> = Vec::new();
    for (stream, framework) in streams {
        let statuses: Vec<_> = (0..5).map(|i| status(&format!("S{i}"), false)).collect();
        sent.push((stream.to_string(), statuses.clone()));
        for s in &statuses {
            server.update(status_update(stream, framework, s)).await;
        }
    }

    let client = nats::client(&nats.url()).await;
    let js = jetstream::new(client);
    let read = nats::read_stream(&js, "SUM", 10, BOUND).await;
    assert_eq!(read.len(), 10, "one message per update: {read:#?}");
    for (stream, statuses) in &sent {
        let framework = if stream == "plain" { "" } else { "fw-1" };
        let subject = subject("sum", "node.1", stream);
        let got: Vec<_> = read.iter().filter(|m| m.subject == subject).collect();
        let uuids: Vec<String> = got.iter().map(|m| m.msg_id().to_string()).collect();
        let expected: Vec<String> = statuses.iter().map(uuid_of).collect();
        assert_eq!(uuids, expected, "{stream}: in acceptance order, once each");
        for (message, status) in got.iter().zip(statuses) {
            assert_eq!(message.headers["Sum-Stream-Id"], *stream);
            assert_eq!(
                message.headers.get("Sum-Framework-Id").map(String::as_str),
                (!framework.is_empty()).then_some(framework)
            );
            assert_eq!(message.headers["Sum-Attempt"], "0");
            let update = message.forwarded.update.as_ref().expect("the update");
            assert_eq!(message.forwarded.attempt, 0);
            assert_eq!(update.stream_id, *stream);
            assert_eq!(update.framework_id, framework);
            assert_eq!(update.status.as_ref(), Some(status));
            assert!(update.latest_status.is_some(), "latest_status filled in");
        }
    }
    assert!(
        read.iter().all(|m| m.subject.starts_with("sum.node%2E1.")),
        "the node is one token"
    );

    // Each PubAck was recorded as an ACK record, as the Acknowledge RPC writes it.
    for (stream, statuses) in &sent {
        let stream = stream.clone();
        eventually("every update acknowledged", || {
            let stream = stream.clone();
            let server = &server;
            async move {
                let info = server.info(&stream).await;
                info.acknowledged == 5 && info.pending == 0
            }
        })
        .await;
        let (states, pending) = file_states(&data, &stream);
        assert_eq!(states.len(), statuses.len());
        assert_eq!(
            pending, 0,
            "{stream}: the file holds an ACK for each update"
        );
    }
    server.shutdown().await;
}

#[actix::test]
async fn a_head_resent_for_want_of_a_puback_is_dropped_by_jetstream_and_its_duplicate_puback_acks_it(
) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let data = dir.path().join("data");
    let server = start(
        &data,
        &nats.url(),
        "n",
        &[
            ("SUM__RETRY__MIN", SHORT_RETRY),
            ("SUM__RETRY__MAX", SHORT_RETRY),
            ("SUM__UPSTREAM__JETSTREAM__PUBLISH_TIMEOUT", "200ms"),
        ],
    )
    .await;
    eventually("JetStream is usable", || ready(&server)).await;
    let client = nats::client(&nats.url()).await;
    let js = jetstream::new(client);
    // The stream exists once the upstream is usable.
    assert_eq!(nats::stream_messages(&js, "SUM").await, 0);

    // The server takes the publishes into its socket but answers none.
    nats.signal("-STOP");
    let first = status("RUNNING", false);
    server.update(status_update("s", "", &first)).await;
    eventually("the head was sent again for want of a PubAck", || async {
        server.info("s").await.attempt >= 2
    })
    .await;
    nats.signal("-CONT");
    eventually("the head acknowledged", || async {
        server.info("s").await.acknowledged == 1
    })
    .await;
    let second = status("FINISHED", false);
    server.update(status_update("s", "", &second)).await;
    let read = nats::read_stream(&js, "SUM", 2, BOUND).await;
    let ids: Vec<&str> = read.iter().map(|m| m.msg_id()).collect();
    assert_eq!(
        ids,
        [uuid_of(&first), uuid_of(&second)],
        "one copy of the resent head, then the next"
    );
    assert_eq!(
        read[0].headers["Sum-Attempt"], "0",
        "the first send is the one kept"
    );
    server.shutdown().await;
}

#[actix::test]
async fn the_service_pauses_while_jetstream_is_down_and_publishes_every_head_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path());
    let data = dir.path().join("data");
    let server = start(&data, &nats.url(), "n", &[("SUM__RETRY__MIN", SHORT_RETRY)]).await;
    eventually("JetStream is usable", || ready(&server)).await;

    // Subscribe names the kind; there is no subscriber to be.
    let refused = server
        .client()
        .subscribe(SubscribeRequest {
            subscriber: "w".into(),
        })
        .await
        .expect_err("Subscribe is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("upstream.kind = \"jetstream\""),
        "{refused:?}"
    );

    let before = status("STAGING", false);
    server.update(status_update("a", "", &before)).await;
    eventually("acknowledged by a PubAck", || async {
        server.info("a").await.acknowledged == 1
    })
    .await;

    nats.kill();
    eventually("paused once the server is gone", || async {
        !ready(&server).await
    })
    .await;
    let during: Vec<_> = ["b", "c"]
        .iter()
        .map(|stream| (stream.to_string(), status("RUNNING", false)))
        .collect();
    for (stream, s) in &during {
        server.update(status_update(stream, "", s)).await;
    }
    let manual = status("RUNNING", false);
    server.update(status_update("d", "", &manual)).await;
    for (stream, _) in &during {
        let info = server.info(stream).await;
        assert_eq!(info.pending, 1);
        assert_eq!(
            info.next_retry_in_millis, -1,
            "{stream}: paused, no retry armed"
        );
    }
    // The Acknowledge RPC still works, by hand.
    let acked = server
        .client()
        .acknowledge(AcknowledgeRequest {
            stream_id: "d".into(),
            status_uuid: manual.uuid.clone(),
        })
        .await
        .expect("Acknowledge works while paused");
    assert!(!acked.into_inner().stream_terminated);

    nats.restart();
    eventually("usable again", || ready(&server)).await;
    for (stream, _) in &during {
        let stream = stream.clone();
        eventually("published and acknowledged on resume", || {
            let stream = stream.clone();
            let server = &server;
            async move { server.info(&stream).await.acknowledged == 1 }
        })
        .await;
    }
    let client = nats::client(&nats.url()).await;
    let js = jetstream::new(client);
    let read = nats::read_stream(&js, "SUM", 3, PROCESS_BOUND).await;
    let mut ids: Vec<String> = read.iter().map(|m| m.msg_id().to_string()).collect();
    ids.sort();
    let mut expected: Vec<String> = [&before, &during[0].1, &during[1].1]
        .iter()
        .map(|s| uuid_of(s))
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "what was published before the kill is kept, each head once; the update acknowledged by hand is not published"
    );
    server.shutdown().await;
}
