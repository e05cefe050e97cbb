//! The service's life over gRPC (API.md §1): health says SERVING, a
//! shutdown ends the subscriber UNAVAILABLE, closes every file and stops the
//! committer; a second service refuses a data directory in use; after a
//! restart every unacknowledged head is forwarded again from attempt 0 and
//! nothing acknowledged comes back; a client that stops reading cannot hold
//! a shutdown past its drain timeout. The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use std::path::Path;

use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use common::server::{
    assert_forward, assert_rejected, files_closed, memory_only, next_forward, next_forwards,
    open_files_under, settings, status, stream_error, uuid_of, Client, Server,
};
use common::{eventually, BOUND};
use status_update_manager::proto::status_update_manager::v1::{Status, SubscribeRequest};
use status_update_manager::service;

#[actix::test]
async fn health_is_serving_and_shutdown_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let addr = server.running.local_addr;
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect for health");
    let mut health = HealthClient::new(channel);
    for name in ["", "status_update_manager.v1.StatusUpdateManager"] {
        let reply = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of '{name}' failed: {s}"))
            .into_inner();
        assert_eq!(
            reply.status,
            ServingStatus::Serving as i32,
            "health of '{name}': {reply:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_rejected(unknown, Code::NotFound, &[], "health of an unknown service");

    let mut sub = server.subscribe("upstream").await;
    let pending = status("RUNNING", false);
    server
        .update(common::status_update("s", "", &pending))
        .await;
    next_forward(&mut sub, "the pending update").await;
    let path = server.path("s");
    if Path::new("/proc/self/fd").exists() {
        let mut open = open_files_under(dir.path());
        open.sort();
        let journal = dir.path().join(status_update_manager::store::JOURNAL_FILE);
        let lock = dir.path().join(status_update_manager::store::LOCK_FILE);
        assert_eq!(
            open,
            [
                journal.canonicalize().unwrap(),
                lock.canonicalize().unwrap(),
                path.canonicalize().unwrap()
            ],
            "the commit journal, the data directory's lock and the stream's file are open while serving"
        );
    }
    let url = server.url.clone();
    server.shutdown().await;
    let end = stream_error(&mut sub, "the subscriber at shutdown").await;
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    // The service lets go of its streams, its journal and its lock: their
    // files are closed, and kept.
    files_closed(dir.path()).await;
    assert!(path.exists(), "an unfinished stream's file is kept");

    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens on {addr} after shutdown"
    );
    assert!(
        Client::connect(url).await.is_err(),
        "a new client cannot connect after shutdown"
    );
}

#[actix::test]
async fn after_a_shutdown_the_streams_close_their_files_and_the_committer_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    server
        .update(common::status_update("s", "", &status("RUNNING", false)))
        .await;
    let files = server.running.files.clone();
    let committer = server
        .running
        .committer
        .clone()
        .expect("the service's committer runs on a thread");
    assert_eq!(files.open_files(), 1, "the stream's file is open");
    assert!(!committer.is_stopped(), "the streams hold the committer");

    server.shutdown().await;
    eventually("every stream file is closed", || async {
        files.open_files() == 0
    })
    .await;
    eventually("the committer thread stopped", || async {
        committer.is_stopped()
    })
    .await;
}

#[actix::test]
async fn a_shutdown_closes_the_connection_of_a_subscriber_that_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        |_| {},
        |config| config.drain_timeout = std::time::Duration::from_millis(500),
    )
    .await;
    // A subscriber that takes one forward and reads no more, with HTTP/2
    // windows of 64 KiB: the 63 forwards of about 4 KiB after it do not fit,
    // so its stream cannot end until the client reads again.
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut forwards = Client::new(channel)
        .subscribe(SubscribeRequest {
            subscriber: "stuck".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let streams = 64;
    for i in 0..streams {
        let pending = Status {
            payload: vec![7; 4000],
            ..status("RUNNING", false)
        };
        server
            .update(common::status_update(&format!("s{i}"), "", &pending))
            .await;
    }
    next_forward(&mut forwards, "the first forward").await;

    tokio::time::timeout(BOUND, server.running.shutdown())
        .await
        .expect("the shutdown does not wait for a client that stopped reading")
        .expect("a clean shutdown");
    // Its connection was closed: reading again, it gets what was sent
    // before, then the end.
    tokio::time::timeout(BOUND, async {
        while let Ok(Some(_)) = forwards.message().await {}
    })
    .await
    .expect("the stuck subscriber's stream ends");
    files_closed(dir.path()).await;

    // Nothing was lost: every stream is back with its pending update.
    let server = Server::start(dir.path(), |_| {}).await;
    assert_eq!(server.running.recovered, streams);
    for info in server.list("").await {
        assert_eq!(info.pending, 1, "{}", info.stream_id);
    }
    server.shutdown().await;
}

#[actix::test]
async fn a_second_service_on_a_data_directory_in_use_refuses_to_start_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let pending = status("RUNNING", false);
    server
        .update(common::status_update("s", "", &pending))
        .await;
    let before = common::snapshot(dir.path());
    let settings = settings(dir.path(), "127.0.0.1:0", &[]);
    let err = service::start(settings.validate().unwrap())
        .await
        .expect_err("the data directory is the running server's");
    match &err {
        service::ServeError::Lock(status_update_manager::store::LockError::InUse {
            dir: locked,
            holder,
            ..
        }) => {
            assert_eq!(locked, dir.path());
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("not a data directory in use: {other:?}"),
    }
    assert!(
        // The running server is in this test's process, and the message says so.
        err.to_string().contains("in use by this process"),
        "{err}"
    );
    // Neither its journal nor its stream files were read into a second
    // manager and written back: the running server's files are as they were.
    assert_eq!(common::snapshot(dir.path()), before);
    server
        .update(common::status_update("s", "", &status("FINISHED", true)))
        .await;
    server.shutdown().await;
    files_closed(dir.path()).await;

    // Released by the shutdown: the next start takes the directory over.
    let server = Server::start(dir.path(), |_| {}).await;
    assert_eq!(server.running.recovered, 1);
    assert_eq!(server.list("").await[0].pending, 2);
    server.shutdown().await;
}

#[actix::test]
async fn after_a_restart_unacked_updates_are_forwarded_again_from_attempt_0() {
    let dir = tempfile::tempdir().unwrap();
    let u1 = status("STARTING", false);
    let u2 = status("RUNNING", false);
    let v1 = status("RUNNING", false);
    let w1 = status("RUNNING", false);
    let m1 = status("RUNNING", false);
    {
        let server = Server::start(dir.path(), |_| {}).await;
        let mut sub = server.subscribe("before").await;
        server.update(common::status_update("s1", "", &u1)).await;
        server.update(common::status_update("s1", "", &u2)).await;
        server.update(common::status_update("s2", "F", &v1)).await;
        server.update(common::status_update("s3", "", &w1)).await;
        let r = server
            .send(memory_only(common::status_update("s4", "", &m1)))
            .await
            .unwrap();
        assert!(!r.duplicate);
        next_forwards(&mut sub, 4, "the first sends before the restart").await;
        assert!(!server.ack_ok("s1", &u1).await);
        next_forward(&mut sub, "u2 after the ack of u1").await;
        assert!(!server.ack_ok("s3", &w1).await);
        server.shutdown().await;
        files_closed(dir.path()).await;
    }

    let server = Server::start(dir.path(), |_| {}).await;
    assert_eq!(server.running.recovered, 3, "s1, s2, s3 recovered");
    let list = server.list("").await;
    let ids: Vec<&str> = list.iter().map(|i| i.stream_id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2", "s3"], "the memory_only s4 is gone");
    let figures: Vec<_> = list
        .iter()
        .map(|i| {
            (
                i.pending,
                i.received,
                i.acknowledged,
                i.attempt,
                i.next_retry_in_millis,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [(1, 2, 1, 0, -1), (1, 1, 0, 0, -1), (0, 1, 1, 0, -1)],
        "recovered figures, paused until a subscriber connects"
    );
    assert_eq!(list[1].framework_id, "F");

    let mut sub = server.subscribe("after").await;
    let got = next_forwards(&mut sub, 2, "the recovered heads").await;
    assert_forward(&got["s1"], "s1", &u2, &u2, 0, "u2, not the acked u1");
    assert_forward(&got["s2"], "s2", &v1, &v1, 0, "v1");
    server
        .assert_nothing_forwarded(&mut sub, "nothing acked is forwarded again")
        .await;

    // What was recorded before the restart still holds.
    assert_rejected(
        server.ack("s1", &u1).await,
        Code::AlreadyExists,
        &["s1", &uuid_of(&u1)],
        "u1 was acked before the restart",
    );
    let dup = server
        .send(common::checkpointed(common::status_update("s1", "", &u1)))
        .await
        .unwrap();
    assert!(dup.duplicate, "dedup survives the restart");
    assert!(!server.ack_ok("s1", &u2).await);
    assert_rejected(
        server.get("s4").await,
        Code::NotFound,
        &["s4"],
        "memory_only s4",
    );

    server.shutdown().await;
}
