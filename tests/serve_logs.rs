//! What `serve` logs (API.md, "Logs"), read from the log of the built binary run as a child
//! process with `log.format = "json"` (one JSON object per line on stderr): a storage failure
//! is one ERROR line naming the stream, the uuid, the path and the errno; a rejected update or
//! ack is a WARN line naming the stream, the uuid and the reason, logged once where it was
//! decided; a flood of rejections is a bounded number of lines and a count of the rest; a
//! duplicate is no warning; each pause and resume is one INFO line saying who caused it. A
//! failed write or sync, which a real process cannot be made to meet on demand, is checked in
//! this process with injected faults.
//!
//! A request's lines are written before it is answered, so once a later request's line is in
//! the log every line of the earlier ones is too: "nothing more" is checked that way, never
//! by sleeping. Every wait is bounded ([`PROCESS_BOUND`]) and waits for a condition.
#![cfg(feature = "service")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use status_update_manager::kind::Native;
use status_update_manager::messages::Update;
use status_update_manager::proto::status_update_manager::v1 as pb;
use status_update_manager::store::{Fault, FaultPlan, SyncPolicy};
use status_update_manager::ManagerConfig;
use tokio::task::JoinSet;
use tonic::Code;
use uuid::Uuid;

use common::process::{connect, Server};
use common::{checkpointed, native_paths, native_update, native_uuid, start, POLL, PROCESS_BOUND};

type Client =
    pb::status_update_manager_client::StatusUpdateManagerClient<tonic::transport::Channel>;

/// A temporary data directory and `serve` over it, logging JSON at the default level
/// (bound in this order, the server is killed before its directory is removed).
fn start_server() -> (tempfile::TempDir, Server) {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), &[("SUM__LOG__FORMAT", "json")]);
    (data, server)
}

/// The JSON lines of `text` (anything else is left out).
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn level(line: &Value) -> &str {
    line["level"].as_str().unwrap_or_default()
}

/// A field of a line as text (`""` if absent or not text).
fn text<'a>(line: &'a Value, key: &str) -> &'a str {
    line["fields"][key].as_str().unwrap_or_default()
}

/// The lines that mention `needle` anywhere.
fn mentioning<'a>(lines: &'a [Value], needle: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l.to_string().contains(needle))
        .collect()
}

/// Waits until the server's log satisfies `done`, and returns its lines then.
async fn log_until(server: &Server, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + PROCESS_BOUND;
    loop {
        let lines = json_lines(&server.stderr());
        if done(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the log within {PROCESS_BOUND:?}:\n{}",
            server.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Acknowledges a random uuid on the unknown stream `marker` (NOT_FOUND) and waits for its
/// WARN line: then every line of the requests answered before is in the log, which this
/// returns.
async fn mark(client: &mut Client, server: &Server, marker: &str) -> Vec<Value> {
    let err = client
        .acknowledge(pb::AcknowledgeRequest {
            stream_id: marker.into(),
            status_uuid: Uuid::new_v4().as_bytes().to_vec(),
        })
        .await
        .expect_err("an ack of an unknown stream");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    log_until(server, &format!("the line of marker {marker}"), |lines| {
        lines.iter().any(|l| text(l, "stream") == marker)
    })
    .await
}

/// `chattr +i` on a directory (no entry can be created in it, not even by root), undone
/// when dropped, also when the test fails.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let status = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .expect("run chattr");
        assert!(
            status.success(),
            "chattr +i {}: {status} (the test needs root and a file system with attributes, such as ext4)",
            dir.display()
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_file_that_cannot_be_created_is_one_error_line_naming_its_cause() {
    let (data, server) = start_server();
    let mut client = connect(&server.url()).await;
    // A first stream makes `streams/`; then no file can be created in it.
    client
        .update(checkpointed(native_update("first", "RUNNING", false, "")))
        .await
        .expect("the first update is accepted");
    let streams = data.path().join("streams");
    let immutable = Immutable::set(&streams);

    let blocked = native_update("blocked", "RUNNING", false, "");
    let uuid = native_uuid(&blocked);
    let err = client
        .update(checkpointed(blocked))
        .await
        .expect_err("no file can be created");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("Operation not permitted"), "{err:?}");
    let lines = mark(&mut client, &server, "marker").await;
    drop(immutable);

    let errors: Vec<&Value> = lines.iter().filter(|l| level(l) == "ERROR").collect();
    assert_eq!(errors.len(), 1, "one ERROR line: {errors:#?}");
    let error = errors[0];
    assert_eq!(text(error, "stream"), "blocked", "{error}");
    assert_eq!(text(error, "uuid"), uuid.to_string(), "{error}");
    assert_eq!(
        Path::new(text(error, "path")),
        streams.join("blocked.updates"),
        "{error}"
    );
    assert_eq!(error["fields"]["errno"], libc::EPERM, "{error}");
    assert_eq!(text(error, "errno_name"), "EPERM", "{error}");
    assert!(
        text(error, "cause").contains("Operation not permitted"),
        "{error}"
    );
    // Not logged again: as a rejection, by the manager or by the gRPC layer.
    assert_eq!(mentioning(&lines, &uuid.to_string()).len(), 1, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_updates_and_acks_are_warnings_naming_stream_uuid_and_reason_and_a_duplicate_is_not(
) {
    let (_data, server) = start_server();
    let mut client = connect(&server.url()).await;
    let first = native_update("s1", "RUNNING", false, "fw-1");
    client
        .update(checkpointed(first.clone()))
        .await
        .expect("accepted");
    let duplicate = client
        .update(checkpointed(first.clone()))
        .await
        .expect("a duplicate is answered OK")
        .into_inner();
    assert!(duplicate.duplicate);

    // Refused by the stream (framework mismatch; not the head's uuid) and by the manager
    // (invalid; unknown stream): each is one WARN line, from where it was decided.
    let mismatch = native_update("s1", "RUNNING", false, "fw-2");
    let invalid = native_update("s2", "", false, "");
    let not_head = Uuid::new_v4();
    let unknown = Uuid::new_v4();
    let mut expected = Vec::new();
    for (update, code) in [
        (mismatch, Code::FailedPrecondition),
        (invalid, Code::InvalidArgument),
    ] {
        let (stream, uuid) = (update.stream_id.clone(), native_uuid(&update));
        let err = client.update(checkpointed(update)).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        expected.push((stream, uuid, "update", err.message().to_string()));
    }
    for (stream, uuid, code) in [
        ("s1", not_head, Code::FailedPrecondition),
        ("nowhere", unknown, Code::NotFound),
    ] {
        let err = client
            .acknowledge(pb::AcknowledgeRequest {
                stream_id: stream.into(),
                status_uuid: uuid.as_bytes().to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        expected.push((stream.to_string(), uuid, "ack", err.message().to_string()));
    }
    let lines = mark(&mut client, &server, "marker").await;

    let warnings: Vec<&Value> = lines
        .iter()
        .filter(|l| level(l) == "WARN" && !text(l, "request").is_empty())
        .filter(|l| text(l, "stream") != "marker")
        .collect();
    assert_eq!(
        warnings.len(),
        expected.len(),
        "one WARN line per rejection, none for the duplicate: {warnings:#?}"
    );
    for (stream, uuid, request, reason) in &expected {
        let found: Vec<&&Value> = warnings
            .iter()
            .filter(|l| text(l, "uuid") == uuid.to_string())
            .collect();
        assert_eq!(found.len(), 1, "{stream} {uuid}: {warnings:#?}");
        let line = found[0];
        assert_eq!(text(line, "stream"), stream, "{line}");
        assert_eq!(text(line, "request"), *request, "{line}");
        assert_eq!(text(line, "reason"), reason, "{line}");
        assert!(!text(line, "kind").is_empty(), "{line}");
        // Logged once, where it was decided: no other line of any level names it.
        let about = mentioning(&lines, &uuid.to_string());
        assert_eq!(about.len(), 1, "{about:#?}");
    }
    // The duplicate is a DEBUG line, not written at the default level.
    let first_uuid = native_uuid(&first).to_string();
    let about_first: Vec<&Value> = lines
        .iter()
        .filter(|l| text(l, "uuid") == first_uuid || text(l, "message").contains("duplicate"))
        .collect();
    assert!(about_first.is_empty(), "{about_first:#?}");
}

/// The flood's rejections in `lines`: WARN lines, and the counts of the summary lines.
fn flood_counts(lines: &[Value]) -> (u64, u64) {
    let logged = lines
        .iter()
        .filter(|l| level(l) == "WARN" && text(l, "stream") == "flood")
        .count() as u64;
    let suppressed = lines
        .iter()
        .filter(|l| level(l) == "WARN" && text(l, "kind") == "unknown_stream")
        .filter_map(|l| l["fields"]["suppressed"].as_u64())
        .sum();
    (logged, suppressed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_rejections_is_a_bounded_number_of_lines_and_a_count_of_the_rest() {
    const FLOOD: u64 = 300;
    let (_data, server) = start_server();
    let client = connect(&server.url()).await;
    let started = Instant::now();
    let mut acks = JoinSet::new();
    for _ in 0..FLOOD {
        let mut client = client.clone();
        acks.spawn(async move {
            client
                .acknowledge(pb::AcknowledgeRequest {
                    stream_id: "flood".into(),
                    status_uuid: Uuid::new_v4().as_bytes().to_vec(),
                })
                .await
        });
    }
    while let Some(answer) = acks.join_next().await {
        let err = answer.expect("the ack's task").unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    let took = started.elapsed();

    // Each rejection is a line, or counted in its window's summary once that window ends.
    let lines = log_until(&server, "every rejection logged or counted", |lines| {
        let (logged, suppressed) = flood_counts(lines);
        logged + suppressed >= FLOOD
    })
    .await;
    let (logged, suppressed) = flood_counts(&lines);
    assert_eq!(logged + suppressed, FLOOD, "counted once each");
    // At most 10 lines per second; the flood spans at most this many windows.
    let windows = took.as_secs() + 2;
    assert!(
        (10..=10 * windows).contains(&logged),
        "{logged} lines for {FLOOD} rejections in {took:?}"
    );
    let summaries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["suppressed"].as_u64().is_some())
        .collect();
    assert!(!summaries.is_empty() && suppressed > 0, "{summaries:#?}");
    for summary in summaries {
        assert_eq!(text(summary, "request"), "ack", "{summary}");
        assert!(
            text(summary, "message")
                .contains("more ack rejections (unknown_stream) suppressed in the last second"),
            "{summary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pause_and_resume_is_one_info_line_saying_who_caused_it() {
    let (_data, server) = start_server();
    let mut client = connect(&server.url()).await;
    let subscription = client
        .subscribe(pb::SubscribeRequest {
            subscriber: "upstream-1".into(),
        })
        .await
        .expect("subscribed")
        .into_inner();
    client.pause(pb::PauseRequest {}).await.expect("paused");
    client.resume(pb::ResumeRequest {}).await.expect("resumed");
    // The subscriber goes away.
    drop(subscription);
    let lines = log_until(&server, "the subscriber gone", |lines| {
        lines.iter().any(|l| text(l, "cause") == "subscriber_gone")
    })
    .await;

    let caused: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| !text(l, "cause").is_empty())
        .map(|l| {
            assert_eq!(level(l), "INFO", "{l}");
            (text(l, "cause"), text(l, "message"))
        })
        .collect();
    let causes: Vec<&str> = caused.iter().map(|(cause, _)| *cause).collect();
    assert_eq!(
        causes,
        ["subscriber_back", "operator", "operator", "subscriber_gone"],
        "{caused:#?}"
    );
    assert!(caused[0].1.contains("forwarding resumed"), "{caused:#?}");
    assert!(caused[1].1.contains("paused"), "{caused:#?}");
    assert!(caused[2].1.contains("resumed"), "{caused:#?}");
    assert!(caused[3].1.contains("forwarding paused"), "{caused:#?}");
    assert_eq!(
        text(lines_with(&lines, "subscriber_back"), "subscriber"),
        "upstream-1"
    );
    assert_eq!(
        text(lines_with(&lines, "subscriber_gone"), "subscriber"),
        "upstream-1"
    );
}

/// The line whose cause is `cause`.
fn lines_with<'a>(lines: &'a [Value], cause: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| text(l, "cause") == cause)
        .unwrap_or_else(|| panic!("no line with cause {cause}"))
}

/// Collects the log lines of this thread's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix::test]
async fn a_failed_write_or_sync_is_one_error_line_with_its_cause() {
    tokio::time::pause();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cases = SyncPolicy::ALL
        .into_iter()
        .map(|sync| (sync, "write", Fault::Enospc, libc::ENOSPC, "ENOSPC"))
        .chain(
            [SyncPolicy::Always, SyncPolicy::Batch]
                .into_iter()
                .map(|sync| (sync, "sync", Fault::Eio, libc::EIO, "EIO")),
        );
    for (sync, what, fault, errno, errno_name) in cases {
        let case = format!("{what} under {sync}");
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultPlan::new();
        let config = ManagerConfig {
            sync,
            faults: Some(faults.clone()),
            ..common::inline_config()
        };
        let (manager, _forwards) = start::<Native>(config, native_paths(dir.path()));
        let send = |update| {
            manager.send(Update {
                update,
                checkpoint: true,
            })
        };
        send(native_update("s", "ONE", false, ""))
            .await
            .unwrap()
            .expect("accepted");
        captured.0.lock().unwrap().clear();
        match what {
            "write" => faults.fail_nth_write(1, fault),
            _ => faults.fail_nth_sync(1, fault),
        }
        let failing = native_update("s", "TWO", false, "");
        let uuid = native_uuid(&failing);
        let err = send(failing).await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains(&format!("os error {errno}")),
            "{case}: {err}"
        );

        let lines = json_lines(&String::from_utf8_lossy(&captured.0.lock().unwrap()));
        let errors: Vec<&Value> = lines.iter().filter(|l| level(l) == "ERROR").collect();
        assert_eq!(errors.len(), 1, "{case}: {lines:#?}");
        let error = errors[0];
        assert_eq!(text(error, "stream"), "s", "{case}: {error}");
        assert_eq!(text(error, "uuid"), uuid.to_string(), "{case}: {error}");
        assert_eq!(error["fields"]["errno"], errno, "{case}: {error}");
        assert_eq!(text(error, "errno_name"), errno_name, "{case}: {error}");
        assert_eq!(error["fields"]["requests"], 1, "{case}: {error}");
        let path = status_update_manager::store::layout::native_stream_path(dir.path(), "s");
        assert_eq!(Path::new(text(error, "path")), path, "{case}: {error}");
    }
}
