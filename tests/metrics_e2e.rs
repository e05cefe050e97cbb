//! `metrics.listen`: the service serves Prometheus metrics, fed by what the
//! stream actors did, a taken address fails the start, and a second start
//! in the process serves the same recorder. (One test per process: the
//! recorder is global.)
#![cfg(feature = "service")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::server::{settings, start_service};
use common::BOUND;
use pb::status_update_manager_client::StatusUpdateManagerClient;
use status_update_manager::proto::status_update_manager::v1 as pb;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics on a new connection (the listener is bound once `start`
/// returned).
fn scrape(port: u16) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

#[actix::test]
async fn metrics_are_served_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = settings(dir.path(), "127.0.0.1:0", &[]);
    first.metrics.listen = format!("127.0.0.1:{port}");
    let running = start_service(first).await;
    let url = format!("http://{}", running.local_addr);
    let mut client = StatusUpdateManagerClient::connect(url.clone())
        .await
        .unwrap();
    let mut sub = StatusUpdateManagerClient::connect(url)
        .await
        .unwrap()
        .subscribe(pb::SubscribeRequest {
            subscriber: "metrics".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let uuid = uuid::Uuid::new_v4();
    let update = pb::StatusUpdate {
        stream_id: "m1".into(),
        framework_id: String::new(),
        status: Some(pb::Status {
            uuid: uuid.as_bytes().to_vec(),
            state: "RUNNING".into(),
            ..Default::default()
        }),
        latest_status: None,
    };
    client
        .update(pb::UpdateRequest {
            update: Some(update.clone()),
            memory_only: false,
        })
        .await
        .unwrap();
    client
        .update(pb::UpdateRequest {
            update: Some(update),
            memory_only: false,
        })
        .await
        .unwrap();
    tokio::time::timeout(BOUND, sub.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let body = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    for expected in [
        "sum_updates_total{outcome=\"accepted\"} 1",
        "sum_updates_total{outcome=\"duplicate\"} 1",
        // Every outcome is served from the first stream on, at zero until
        // it happens (the streams' handles are taken then).
        "sum_updates_total{outcome=\"rejected\"} 0",
        "sum_acks_total{outcome=\"accepted\"} 0",
        "sum_retries_total 0",
        "sum_forwards_total 1",
        "sum_streams 1",
        "sum_pending_updates 1",
        "sum_subscribers 1",
        "sum_checkpoint_append_seconds_count",
        "sum_checkpoint_sync_seconds_count",
        // One stream: its rounds sync its own file, not the journal.
        "sum_commit_journal_bytes 0",
        // Tickets per round are counted in buckets of their own, not in
        // the seconds buckets of the other histograms.
        "sum_commit_round_tickets_bucket{le=\"1\"}",
        "sum_commit_round_tickets_bucket{le=\"4096\"}",
        // The streams' mailboxes: how long requests waited (1 µs to 10 s
        // buckets), and the largest backlog, with no per-stream label.
        "# HELP sum_stream_mailbox_wait_seconds ",
        "sum_stream_mailbox_wait_seconds_bucket{le=\"0.000001\"}",
        "sum_stream_mailbox_wait_seconds_bucket{le=\"10\"}",
        "# HELP sum_stream_mailbox_backlog_max ",
        "\nsum_stream_mailbox_backlog_max ",
    ] {
        assert!(
            body.contains(expected),
            "/metrics lacks {expected:?}:\n{body}"
        );
    }
    drop(sub);
    running.shutdown().await.unwrap();

    // A taken metrics.listen fails the start, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut taken_listen = settings(dir.path(), "127.0.0.1:0", &[]);
    taken_listen.metrics.listen = addr.to_string();
    let err = status_update_manager::service::start(taken_listen.validate().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, status_update_manager::service::ServeError::MetricsBind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    let said = err.to_string();
    assert!(
        said.contains(&addr.to_string()) && said.contains("metrics.listen"),
        "{said}"
    );

    // Started again in this process, the service serves the recorder it
    // installed the first time, with what was counted then.
    let port = free_port();
    let mut again = settings(dir.path(), "127.0.0.1:0", &[]);
    again.metrics.listen = format!("127.0.0.1:{port}");
    let running = status_update_manager::service::start(again.validate().unwrap())
        .await
        .expect("a second start with metrics.listen");
    let body = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    assert!(
        body.contains("sum_updates_total{outcome=\"accepted\"} 1"),
        "/metrics after a restart:\n{body}"
    );
    running.shutdown().await.unwrap();
}
