//! A panic in a stream actor, seen through gRPC: the request that panicked
//! is answered INTERNAL naming the stream (never UNAVAILABLE from a closed
//! mailbox, never a hang); the stream restarts from its file and forwards
//! its head to the subscriber again; the next requests succeed; a restarted
//! service recovers the same state. Panics are injected through the fault
//! plan, under `store.sync` `none` and `batch`. The harness is
//! `common::server`.
#![cfg(feature = "service")]

mod common;

use std::io::{Read, Write};

use tonic::Code;

use common::server::{assert_forward, next_forward, status, Server};
use status_update_manager::store::{Fault, FaultPlan, SyncPolicy};

/// The value of the sample `name` in the service's `/metrics` at `port`.
fn sample(port: u16, name: &str) -> f64 {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(common::BOUND)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in /metrics:\n{body}"))
}

#[actix::test]
async fn a_panicking_update_ack_or_get_stream_is_internal_and_the_stream_serves_again() {
    for (round, sync) in [SyncPolicy::None, SyncPolicy::Batch]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultPlan::new();
        let plan = faults.clone();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Server::start_with(
            dir.path(),
            |settings| settings.metrics.listen = format!("127.0.0.1:{port}"),
            |config| {
                config.sync = sync;
                config.faults = Some(plan);
            },
        )
        .await;
        let mut sub = server.subscribe("upstream").await;
        let s = "task-1";
        let (u1, u2) = (status("STARTING", false), status("RUNNING", false));
        server.update(common::status_update(s, "fw", &u1)).await;
        let f = next_forward(&mut sub, "u1").await;
        assert_forward(&f, s, &u1, &u1, 0, &format!("{sync}: u1"));

        faults.panic_in("update", 1);
        let err = server
            .send(common::checkpointed(common::status_update(s, "fw", &u2)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{sync}: {err}");
        assert!(
            err.message().contains("stream task-1") && err.message().contains("panic"),
            "{sync}: {err}"
        );
        // Restarted from its file, the stream sends its head again.
        let again = next_forward(&mut sub, "u1 after the restart").await;
        assert_forward(&again, s, &u1, &u1, 1, &format!("{sync}: u1 again"));

        faults.panic_in("ack", 1);
        let err = server.ack(s, &u1).await.unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{sync}: {err}");
        assert!(err.message().contains("stream task-1"), "{sync}: {err}");
        let again = next_forward(&mut sub, "u1 after the second restart").await;
        assert_forward(&again, s, &u1, &u1, 2, &format!("{sync}: u1 again"));

        faults.panic_in("stats", 1);
        let err = server.get(s).await.unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{sync}: {err}");
        assert!(err.message().contains("stream task-1"), "{sync}: {err}");
        next_forward(&mut sub, "u1 after the third restart").await;

        // A storage fault restarts the stream too, counted apart.
        faults.fail_nth_write(1, Fault::Eio);
        let err = server
            .send(common::checkpointed(common::status_update(s, "fw", &u2)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{sync}: {err}");
        next_forward(&mut sub, "u1 after the storage restart").await;
        let rounds = (round + 1) as f64;
        assert_eq!(
            sample(port, r#"sum_stream_restarts_total{cause="panic"}"#),
            3.0 * rounds,
            "{sync}"
        );
        assert_eq!(
            sample(port, r#"sum_stream_restarts_total{cause="storage"}"#),
            rounds,
            "{sync}"
        );

        // It serves again: u2 is accepted, u1's ack goes through, u2 follows.
        server.update(common::status_update(s, "fw", &u2)).await;
        assert!(!server.ack_ok(s, &u1).await, "{sync}");
        let f = next_forward(&mut sub, "u2").await;
        assert_forward(&f, s, &u2, &u2, 0, &format!("{sync}: u2"));
        drop(sub);
        server.shutdown().await;

        // A restarted service recovers the same state: u2 pending.
        let server = Server::start(dir.path(), |_| {}).await;
        let mut sub = server.subscribe("upstream").await;
        let f = next_forward(&mut sub, "u2 after the restart of the service").await;
        assert_forward(&f, s, &u2, &u2, 0, &format!("{sync}: u2 recovered"));
        assert_eq!(server.info(s).await.pending, 1, "{sync}");
        drop(sub);
        server.shutdown().await;
    }
}
