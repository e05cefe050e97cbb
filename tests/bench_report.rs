//! `status-update-manager bench` end to end, at a size that runs in a
//! moment: the report accounts for every stream and update, the open-file
//! bound holds, recovery finds every stream the load left, and the run
//! leaves nothing behind. (Its figures are rates; no test asserts a rate.)

use status_update_manager::bench::{run, BenchOptions, BenchReport, Via};
use status_update_manager::store::SyncPolicy;

const STREAMS: usize = 40;
const UPDATES: usize = 3;
/// Fewer than the streams, so files are evicted and reopened on demand.
const MAX_OPEN_FILES: usize = 8;

fn bench(dir: &std::path::Path, sync: SyncPolicy, ack: bool) -> BenchReport {
    run(BenchOptions {
        streams: STREAMS,
        updates: UPDATES,
        sync,
        via: Via::InProcess,
        ack,
        data_dir: dir.to_path_buf(),
        max_open_files: MAX_OPEN_FILES,
        concurrency: 16,
        progress: false,
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
    assert_eq!(report.recovery.streams, STREAMS, "every stream recovered");
    assert!(report.recovery.bytes > 0);
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
