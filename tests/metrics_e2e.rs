//! `metrics.listen`: the service serves Prometheus metrics, fed by what the
//! stream actors did, a taken address fails the start, and a second start
//! in the process serves the same recorder. (One test per process: the
//! recorder is global.)
//!
//! Every family docs/API.md's metrics table lists is served from the first
//! scrape, right after the start, before any traffic. When `promtool` is on
//! PATH (Debian's `prometheus` package), the first scrape and one after
//! traffic must pass `promtool check metrics` with nothing to say; without
//! it that check is skipped (said on stderr) and the rest still runs.
#![cfg(feature = "service")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

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

/// [`scrape`], from async code: the text served, without the HTTP head.
async fn scraped(port: u16) -> String {
    let response = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("no body in {response}"),
    }
}

/// The metric families of docs/API.md's metrics table (the first column's
/// names, in backquotes).
fn documented_families() -> Vec<String> {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md"))
        .expect("docs/API.md");
    let metrics = api
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|section| section.split("\n## ").next())
        .expect("docs/API.md has a Metrics section");
    let families: Vec<String> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    assert!(families.len() > 30, "too few families read: {families:?}");
    families
}

/// Pipes `body` through `promtool check metrics`, which must exit 0 and
/// say nothing; if promtool is not on PATH, says so on stderr and checks
/// nothing.
fn promtool_check(body: &str, what: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool is not on PATH: {what} is not linted (apt-get install prometheus)");
            return;
        }
        Err(err) => panic!("cannot run promtool: {err}"),
    };
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(body.as_bytes())
        .expect("the scrape written to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on {what}: {}\n{said}\n--- the scrape:\n{body}",
        out.status
    );
}

#[actix::test]
async fn metrics_are_served_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = settings(dir.path(), "127.0.0.1:0", &[]);
    first.metrics.listen = format!("127.0.0.1:{port}");
    let running = start_service(first).await;

    // Right after the start, before any request: every documented family.
    let body = scraped(port).await;
    for family in documented_families() {
        assert!(
            body.contains(&format!("\n# TYPE {family} "))
                || body.starts_with(&format!("# TYPE {family} ")),
            "the first scrape lacks {family}:\n{body}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    for expected in [
        format!("sum_build_info{{version=\"{version}\"}} 1"),
        // No subscriber yet.
        "\nsum_paused 1".to_string(),
        "\nsum_recovered_streams 0".into(),
        "sum_updates_total{outcome=\"rejected\"} 0".into(),
        "sum_stream_restarts_total{cause=\"stopped\"} 0".into(),
        "sum_grpc_requests_total{method=\"Update\",code=\"OK\"} 0".into(),
        "sum_grpc_requests_total{method=\"Acknowledge\",code=\"NOT_FOUND\"} 0".into(),
        "sum_grpc_request_seconds_count{method=\"Subscribe\"} 0".into(),
        "sum_ack_latency_seconds_bucket{le=\"3600\"} 0".into(),
        "\nsum_recovery_seconds ".into(),
        "\nprocess_open_fds ".into(),
        "\nprocess_start_time_seconds ".into(),
    ] {
        assert!(
            body.contains(&expected),
            "the first scrape lacks {expected:?}:\n{body}"
        );
    }
    promtool_check(&body, "the first scrape");

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
    let forwarded = tokio::time::timeout(BOUND, sub.message())
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
        // A subscriber is connected: forwarding goes on.
        "\nsum_paused 0",
    ] {
        assert!(
            body.contains(expected),
            "/metrics lacks {expected:?}:\n{body}"
        );
    }

    // Rejections are counted wherever they are decided, once each: before
    // the manager (no status), by the manager (a stream not in memory),
    // by the gRPC front (an all-zero uuid), by a stream (not the head's uuid).
    let rejected = client
        .update(pb::UpdateRequest {
            update: Some(pb::StatusUpdate {
                stream_id: "m2".into(),
                ..Default::default()
            }),
            memory_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), tonic::Code::InvalidArgument, "{rejected}");
    for (stream, uuid, code) in [
        ("nowhere", uuid::Uuid::new_v4(), tonic::Code::NotFound),
        ("m1", uuid::Uuid::nil(), tonic::Code::InvalidArgument),
        ("m1", uuid::Uuid::new_v4(), tonic::Code::FailedPrecondition),
    ] {
        let refused = client
            .acknowledge(pb::AcknowledgeRequest {
                stream_id: stream.into(),
                status_uuid: uuid.as_bytes().to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{refused}");
    }
    // The forward acknowledged: its latency is timed.
    let acked = forwarded.update.unwrap().status.unwrap().uuid;
    client
        .acknowledge(pb::AcknowledgeRequest {
            stream_id: "m1".into(),
            status_uuid: acked,
        })
        .await
        .unwrap();
    let body = scraped(port).await;
    for expected in [
        "sum_updates_total{outcome=\"rejected\"} 1",
        "sum_acks_total{outcome=\"rejected\"} 3",
        "sum_acks_total{outcome=\"accepted\"} 1",
        "sum_ack_latency_seconds_count 1",
        "sum_ack_latency_seconds_bucket{le=\"+Inf\"} 1",
        "sum_grpc_requests_total{method=\"Update\",code=\"OK\"} 2",
        "sum_grpc_requests_total{method=\"Update\",code=\"INVALID_ARGUMENT\"} 1",
        "sum_grpc_requests_total{method=\"Acknowledge\",code=\"OK\"} 1",
        "sum_grpc_requests_total{method=\"Acknowledge\",code=\"NOT_FOUND\"} 1",
        "sum_grpc_requests_total{method=\"Acknowledge\",code=\"INVALID_ARGUMENT\"} 1",
        "sum_grpc_requests_total{method=\"Acknowledge\",code=\"FAILED_PRECONDITION\"} 1",
        "sum_grpc_request_seconds_count{method=\"Update\"} 3",
        "\nsum_pending_updates 0",
    ] {
        assert!(
            body.contains(expected),
            "/metrics after rejections and an ack lacks {expected:?}:\n{body}"
        );
    }
    promtool_check(&body, "a scrape after traffic");
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
