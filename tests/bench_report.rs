//! `status-update-manager bench` end to end, at a size that runs in a
//! moment, in process and through gRPC: the report accounts for every
//! stream and update, the open-file bound holds, recovery finds every stream
//! the load left, and the run leaves nothing behind. (Its figures are rates;
//! no test asserts a rate.) And the gRPC load's client against a real
//! service: responses, the forwards' stream, and errors with their codes.
#![cfg(feature = "service")]

mod common;

use common::process::{command_under_ulimit, Finished, Proc};
use status_update_manager::bench::grpc_caller::{
    GrpcCaller, ACKNOWLEDGE, SUBSCRIBE, UPDATE, UPDATE_STREAM,
};
use status_update_manager::bench::load::bench_update;
use status_update_manager::bench::{run, BenchError, BenchOptions, BenchReport, Via};
use status_update_manager::proto::status_update_manager::v1::{
    AcknowledgeRequest, AcknowledgeResponse, ForwardedUpdate, SubscribeRequest, UpdateRequest,
    UpdateResponse,
};
use status_update_manager::store::SyncPolicy;
use tonic::Code;

const STREAMS: usize = 40;
const UPDATES: usize = 3;
/// Fewer than the streams, so files are evicted and reopened on demand.
const MAX_OPEN_FILES: usize = 8;

fn bench(dir: &std::path::Path, sync: SyncPolicy, ack: bool) -> BenchReport {
    bench_via(dir, sync, ack, Via::InProcess)
}

fn bench_via(dir: &std::path::Path, sync: SyncPolicy, ack: bool, via: Via) -> BenchReport {
    run(BenchOptions {
        streams: STREAMS,
        updates: UPDATES,
        sync,
        via,
        ack,
        data_dir: dir.to_path_buf(),
        max_open_files: MAX_OPEN_FILES,
        concurrency: 16,
        progress: false,
        list: false,
    })
    .expect("the benchmark runs")
}

fn assert_accounts_for_the_load(report: &BenchReport) {
    assert_eq!((report.streams, report.updates), (STREAMS, UPDATES));
    assert!(report.updates_per_sec.is_finite() && report.updates_per_sec > 0.0);
    assert!(report.baseline_appends_per_sec.is_finite() && report.baseline_appends_per_sec > 0.0);
    assert!(report.ratio_to_baseline.is_finite() && report.ratio_to_baseline > 0.0);
    let latency = &report.update_latency_micros;
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert!(
        (1..=MAX_OPEN_FILES as u64).contains(&report.open_files_peak),
        "open files peaked at {}, bound {MAX_OPEN_FILES}",
        report.open_files_peak
    );
    let recovery = &report.recovery;
    assert_eq!(recovery.streams, STREAMS, "every stream recovered");
    assert!(recovery.bytes > 0);
    assert_eq!(
        recovery.rounds,
        status_update_manager::bench::RECOVERY_ROUNDS
    );
    assert!(recovery.seconds > 0.0 && recovery.first_seconds > 0.0);
    assert!(recovery.mb_per_sec.is_finite() && recovery.baseline_mb_per_sec.is_finite());
    // A file per stream, the commit journal and, from the service, its lock file.
    assert!(
        (STREAMS as u64..=STREAMS as u64 + 2).contains(&recovery.files),
        "{} files for {STREAMS} streams",
        recovery.files
    );
    assert!(
        recovery.disk_bytes >= recovery.bytes,
        "{} bytes on disk hold {} bytes of stream files",
        recovery.disk_bytes,
        recovery.bytes
    );
}

#[test]
fn an_acknowledged_load_is_reported_whole_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    for sync in [SyncPolicy::Batch, SyncPolicy::None] {
        let report = bench(dir.path(), sync, true);
        assert_accounts_for_the_load(&report);
        let acks = report.acks_per_sec.expect("every update was acknowledged");
        assert!(acks.is_finite() && acks > 0.0 && acks <= report.updates_per_sec * 1.000_001);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the run's own directory is removed ({sync:?})"
        );
    }
}

#[test]
fn a_load_without_acks_ends_with_every_update_pending_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let acked = bench(dir.path(), SyncPolicy::Batch, true);
    let pending = bench(dir.path(), SyncPolicy::Batch, false);
    assert_accounts_for_the_load(&pending);
    assert!(pending.acks_per_sec.is_none());
    // The same updates without their ACK records.
    assert!(
        pending.recovery.bytes < acked.recovery.bytes,
        "{} bytes pending, {} acknowledged",
        pending.recovery.bytes,
        acked.recovery.bytes
    );
}

#[test]
fn a_listed_load_reports_the_first_page_and_the_whole_listing() {
    let dir = tempfile::tempdir().unwrap();
    // More streams than one page of 1000 holds.
    let report = run(BenchOptions {
        streams: 1100,
        updates: 1,
        sync: SyncPolicy::None,
        via: Via::InProcess,
        ack: false,
        data_dir: dir.path().to_path_buf(),
        max_open_files: MAX_OPEN_FILES,
        concurrency: 16,
        progress: false,
        list: true,
    })
    .expect("the benchmark runs and lists every stream");
    let first = report.list_first_page_ms.expect("the first page's time");
    let all = report.list_all_seconds.expect("the whole listing's time");
    assert!(first > 0.0 && first <= all * 1000.0, "{first} ms, {all} s");
    let unlisted = bench(dir.path(), SyncPolicy::None, false);
    assert!(unlisted.list_first_page_ms.is_none() && unlisted.list_all_seconds.is_none());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_load_through_grpc_is_reported_whole_beside_the_in_process_one() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_via(dir.path(), SyncPolicy::Batch, true, Via::Grpc);
    assert_accounts_for_the_load(&report);
    assert_eq!(report.via, Via::Grpc);
    let acks = report.acks_per_sec.expect("every update was acknowledged");
    assert!(acks.is_finite() && acks > 0.0);
    let in_process = report
        .in_process_updates_per_sec
        .expect("the in-process load ran too");
    assert!(in_process.is_finite() && in_process > 0.0);
    let ratio = report
        .ratio_to_in_process
        .expect("and the two are compared");
    assert!((ratio - report.updates_per_sec / in_process).abs() <= 1e-9 * ratio.max(1.0));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_load_on_streaming_calls_is_reported_whole_beside_the_in_process_one() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_via(dir.path(), SyncPolicy::Batch, true, Via::GrpcStream);
    assert_accounts_for_the_load(&report);
    assert_eq!(report.via, Via::GrpcStream);
    assert!(report
        .acks_per_sec
        .is_some_and(|a| a.is_finite() && a > 0.0));
    assert!(report
        .ratio_to_in_process
        .is_some_and(|r| r.is_finite() && r > 0.0));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Starts the service over `dir` on the current actix System.
async fn service(dir: &std::path::Path) -> status_update_manager::service::RunningService {
    common::server::start_service(common::server::settings(dir, "127.0.0.1:0", &[])).await
}

fn grpc_code(result: Result<AcknowledgeResponse, BenchError>) -> (Code, String) {
    match result {
        Err(BenchError::Grpc(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

#[actix::test]
async fn the_grpc_loads_client_gets_responses_forwards_and_coded_errors() {
    let dir = tempfile::tempdir().unwrap();
    let running = service(dir.path()).await;
    let caller = GrpcCaller::connect(running.local_addr).await.unwrap();
    let mut forwards = caller
        .call(
            SUBSCRIBE,
            &SubscribeRequest {
                subscriber: "test".into(),
            },
        )
        .await
        .unwrap();

    let update = bench_update(7, 0);
    let request = UpdateRequest {
        update: Some(update.clone()),
        memory_only: false,
    };
    let first: UpdateResponse = caller.unary(UPDATE, &request).await.unwrap();
    assert!(!first.duplicate);
    let again: UpdateResponse = caller.unary(UPDATE, &request).await.unwrap();
    assert!(again.duplicate, "the same uuid again is a duplicate");

    let forward: ForwardedUpdate = forwards.message().await.unwrap().expect("a forward");
    let forwarded = forward.update.expect("the forward carries the update");
    assert_eq!(
        (&forwarded.stream_id, &forwarded.status),
        (&update.stream_id, &update.status)
    );

    let uuid = update.status.as_ref().unwrap().uuid.clone();
    let unknown = AcknowledgeRequest {
        stream_id: "nobody".into(),
        status_uuid: uuid.clone(),
    };
    let (code, message) = grpc_code(caller.unary(ACKNOWLEDGE, &unknown).await);
    assert_eq!(code, Code::NotFound);
    assert!(
        message.contains("nobody"),
        "the message names the stream: {message}"
    );
    let wrong = AcknowledgeRequest {
        stream_id: update.stream_id.clone(),
        status_uuid: vec![1; 16],
    };
    let (code, message) = grpc_code(caller.unary(ACKNOWLEDGE, &wrong).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains(&update.stream_id), "{message}");

    let right = AcknowledgeRequest {
        stream_id: update.stream_id.clone(),
        status_uuid: uuid,
    };
    caller
        .unary::<_, AcknowledgeResponse>(ACKNOWLEDGE, &right)
        .await
        .expect("the head's uuid is acknowledged");
    let (code, _) = grpc_code(caller.unary(ACKNOWLEDGE, &right).await);
    assert_eq!(code, Code::AlreadyExists, "and only once");
    running.shutdown().await.unwrap();
}

#[actix::test]
async fn the_grpc_loads_client_streams_requests_and_reads_each_answer() {
    use status_update_manager::proto::status_update_manager::v1::{
        update_stream_response::Outcome, UpdateStreamResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let running = service(dir.path()).await;
    let caller = GrpcCaller::connect(running.local_addr).await.unwrap();
    let (mut requests, mut answers) = caller.open(UPDATE_STREAM).await.unwrap();
    let request = UpdateRequest {
        update: Some(bench_update(3, 0)),
        memory_only: false,
    };
    requests.send(&request).unwrap();
    requests.send(&request).unwrap();
    requests
        .send(&UpdateRequest {
            update: None,
            memory_only: false,
        })
        .unwrap();
    requests.end().unwrap();
    let mut outcomes = Vec::new();
    while let Some(answer) = answers.message::<UpdateStreamResponse>().await.unwrap() {
        outcomes.push(answer.outcome.expect("an outcome"));
    }
    match &outcomes[..] {
        [Outcome::Ok(first), Outcome::Ok(again), Outcome::Error(missing)] => {
            assert!(!first.duplicate);
            assert!(again.duplicate, "the same uuid again is a duplicate");
            assert_eq!(Code::from_i32(missing.code), Code::InvalidArgument);
        }
        other => panic!("expected accepted, duplicate, refused; got {other:?}"),
    }
    running.shutdown().await.unwrap();
}

#[test]
fn the_text_report_states_the_run_and_reads_in_plain_units() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let args = [
        "bench",
        "--data-dir",
        data_dir,
        "--streams",
        "20",
        "--updates",
        "2",
    ];
    let output = Proc::start("bench", &args, &[]).finish();
    let (stdout, stderr) = (&output.stdout, &output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    let lines: Vec<&str> = stdout.lines().collect();
    // The default concurrency (2048) is more than the 40 updates: it says so.
    assert_eq!(
        lines[0],
        "20 streams × 2 updates at concurrency 40 (every update at once; 2048 asked), \
         sync batch, via in-process",
        "{stdout}"
    );
    let value = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("  {name:<28} ")))
            .unwrap_or_else(|| panic!("no {name:?} line in\n{stdout}"))
    };
    for rate in ["updates/s", "acks/s", "baseline appends/s"] {
        value(rate)
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{rate}: {e}\n{stdout}"));
    }
    let latency = value("update latency p50/p99/max");
    let figures: Vec<f64> = latency
        .strip_suffix(" ms")
        .unwrap_or_else(|| panic!("in ms: {latency}"))
        .split(" / ")
        .map(|f| f.parse().unwrap())
        .collect();
    assert!(
        figures.len() == 3 && figures[0] <= figures[1] && figures[1] <= figures[2],
        "{latency}"
    );
    assert!(value("raw fdatasync p99").ends_with(" ms"), "{stdout}");
    let recovery = value("recovery");
    assert!(
        recovery.starts_with("20 streams, ")
            && recovery.contains(" KiB in ")
            && recovery.contains(" MiB/s (median of 3; the first took "),
        "{recovery}"
    );
    assert_eq!(
        value("files on disk").split(" files, ").next(),
        Some("21"),
        "a file per stream and the commit journal: {stdout}"
    );
    assert!(
        value("files on disk").ends_with(" KiB allocated"),
        "{stdout}"
    );
    assert!(value("raw read+decode").ends_with(" MiB/s"), "{stdout}");
    assert!(value("peak RSS").ends_with(" MiB"), "{stdout}");
    value("RSS per stream");
    for unwanted in ["µs", "InProcess", "MB/s"] {
        assert!(!stdout.contains(unwanted), "{unwanted}: {stdout}");
    }
    assert_eq!(lines.len(), 13, "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `bench` as a user runs it, under a `ulimit -n` of `nofile`: its exit
/// status, its stdout and its stderr (waits at most `PROCESS_BOUND`).
fn bench_binary_under_ulimit(nofile: u32, args: &[&str]) -> Finished {
    let args = [&["bench"], args].concat();
    let limit = format!("-n {nofile}");
    let command = command_under_ulimit(&limit, &args, &[]);
    Proc::spawn(&format!("{} under ulimit {limit}", args.join(" ")), command).finish()
}

/// Every stream file open at once, in each phase: 300 of them (and the
/// process's other descriptors) fit under 512, twice as many do not.
const OPEN_AT_ONCE: &str = "300";

/// The arguments of a small run in `data_dir` with every stream file open
/// at once.
fn small_run(data_dir: &str) -> [&str; 8] {
    [
        "--data-dir",
        data_dir,
        "--streams",
        OPEN_AT_ONCE,
        "--updates",
        "2",
        "--max-open-files",
        OPEN_AT_ONCE,
    ]
}

#[test]
fn the_recovery_after_a_grpc_load_waits_for_the_service_to_close_its_files() {
    // The recovery used to start while the stopped service's streams still
    // held their files, and failed with EMFILE past half the limit.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let output = bench_binary_under_ulimit(
        512,
        &[small_run(data_dir).as_slice(), &["--json", "--via", "grpc"]].concat(),
    );
    let stderr = &output.stderr;
    assert!(output.status.success(), "{}: {stderr}", output.status);
    let report: serde_json::Value =
        serde_json::from_str(&output.stdout).expect("a JSON report on stdout");
    assert_eq!(report["recovery"]["streams"], 300, "{report}");
    assert_eq!(report["open_files_peak"], 300, "{report}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_open_file_bound_no_process_can_hold_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // It used to panic reserving room for that many handles.
    for bound in ["0", "99999999999999999"] {
        let output =
            bench_binary_under_ulimit(512, &["--data-dir", data_dir, "--max-open-files", bound]);
        let stderr = &output.stderr;
        assert_eq!(output.status.code(), Some(2), "{bound}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "invalid value '{bound}' for '--max-open-files <N>'"
            )) && stderr.contains("is not in 1..=1048576"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_run_that_fails_says_why_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let output = bench_binary_under_ulimit(150, &small_run(data_dir));
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: ") && stderr.contains("Too many open files"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no report");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
