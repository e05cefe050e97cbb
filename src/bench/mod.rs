//! `status-update-manager bench`: the built-in load benchmark (API.md §4).
//!
//! One run measures, on this machine and in this process:
//! 1. the load ([`load`], [`grpc_load`]): `streams × updates` updates, each
//!    acknowledged by an upstream as soon as it is forwarded (unless
//!    `--no-ack`), with the configured sync policy; throughput, update
//!    latency percentiles, the peak of open stream files and RSS growth;
//! 2. the raw baseline ([`baseline`]): the same records appended to the same
//!    number of files with the same sync policy by a plain loop, and the p99
//!    of a raw `fdatasync`, so `ratio_to_baseline` is measured, not assumed;
//! 3. recovery: a fresh manager recovers every file the load left, against
//!    a raw read + decode of the same files (alternating, three of each:
//!    the medians, and the first recovery on its own);
//! 4. with `--list`, the listing ([`list`]): right after the in-process load,
//!    every stream listed through the manager a page at a time, as
//!    `ListStreams` serves them.
//!
//! With `--via grpc` or `grpc-stream` the load goes through the service
//! (and the in-process load runs too, for `ratio_to_in_process`); its agents
//! and upstream call the service through [`grpc_caller`], a lean gRPC
//! client, so that the load generator takes as little as it can of the
//! cores the service runs on ([`grpc_load`] says which calls each makes).

pub mod baseline;
pub mod grpc_caller;
pub mod grpc_load;
pub mod jetstream;
pub mod list;
pub mod load;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use thiserror::Error;

use crate::kind::Native;
use crate::messages::Recover;
use crate::store::layout::{discover_native_streams, native_stream_path};
use crate::store::{FileCache, SyncPolicy};
use crate::{ManagerConfig, StatusUpdateManager};
use load::LoadFigures;

/// How the load reaches the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Actix messages in this process.
    InProcess,
    /// The gRPC service, a unary call per update and per ack.
    Grpc,
    /// The gRPC service's streaming calls (`UpdateStream`, `AcknowledgeStream`).
    GrpcStream,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Streams.
    pub streams: usize,
    /// Updates per stream.
    pub updates: usize,
    /// Sync policy.
    pub sync: SyncPolicy,
    /// In-process or through gRPC.
    pub via: Via,
    /// Acknowledge every forward (`false`: every update stays pending).
    pub ack: bool,
    /// Where the stream files go (a fresh directory inside it is used and removed).
    pub data_dir: PathBuf,
    /// Most stream files open at once (`limits.max_open_files`).
    pub max_open_files: usize,
    /// Updates in flight at once from the producers (1 = one at a time: light load).
    pub concurrency: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// After the in-process load, list every stream through the manager a page at a time.
    pub list: bool,
}

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// File or thread I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The load failed.
    #[error("load: {0}")]
    Load(String),
    /// An actor went away.
    #[error("actor mailbox: {0}")]
    Mailbox(#[from] actix::MailboxError),
    /// The commit journal could not be opened or replayed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// Recovery failed.
    #[error("recovery: {0}")]
    Recover(#[from] crate::error::RecoverError),
    /// Stream discovery failed.
    #[error("discovery: {0}")]
    Layout(#[from] crate::store::LayoutError),
    /// The service could not be configured or started.
    #[error("service: {0}")]
    Config(#[from] crate::service::config::ConfigError),
    /// The service failed.
    #[error("service: {0}")]
    Serve(#[from] crate::service::ServeError),
    /// A gRPC call failed.
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    /// A gRPC connection failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Update latency percentiles, µs.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Recoveries of the same files measured per run, alternating with as many
/// raw reads: the report gives the median of each.
pub const RECOVERY_ROUNDS: usize = 3;

/// The recovery phase's figures: the median of [`RECOVERY_ROUNDS`]
/// recoveries and of as many raw reads, and the first recovery on its own.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct RecoveryFigures {
    pub streams: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_sec: f64,
    pub baseline_mb_per_sec: f64,
    /// Recoveries measured (and raw reads).
    pub rounds: usize,
    /// The first recovery, right after the load.
    pub first_seconds: f64,
    /// Files the load left (a file per stream, the commit journal and, with
    /// `--via grpc`, the service's lock file).
    pub files: u64,
    /// Disk space the load's files and directories take (allocated blocks).
    pub disk_bytes: u64,
}

/// `bench --json`, API.md §4 (plus the in-process comparison for `--via grpc`).
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct BenchReport {
    pub streams: usize,
    pub updates: usize,
    pub concurrency: usize,
    pub sync: SyncPolicy,
    pub via: Via,
    pub updates_per_sec: f64,
    pub acks_per_sec: Option<f64>,
    pub update_latency_micros: Latency,
    pub baseline_appends_per_sec: f64,
    pub ratio_to_baseline: f64,
    pub baseline_sync_p99_micros: u64,
    pub open_files_peak: u64,
    pub recovery: RecoveryFigures,
    pub peak_rss_bytes: u64,
    pub rss_bytes_per_stream: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process_updates_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_in_process: Option<f64>,
    /// `--list`: the first page of the listing, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_first_page_ms: Option<f64>,
    /// `--list`: the whole listing, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_all_seconds: Option<f64>,
}

/// Runs the benchmark on a new actix System on this thread.
pub fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    actix_rt::System::new().block_on(run_async(options))
}

async fn run_async(o: BenchOptions) -> Result<BenchReport, BenchError> {
    let root = o.data_dir.join(format!("sum-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let measured = measure(&o, &root).await;
    if measured.is_err() {
        // A run that failed leaves nothing behind either (up to one file per
        // stream and phase); its error names what failed.
        let _ = std::fs::remove_dir_all(&root);
    }
    measured
}

/// Every phase of a run, in `root`, which it removes once done.
async fn measure(o: &BenchOptions, root: &std::path::Path) -> Result<BenchReport, BenchError> {
    let total = o.streams * o.updates;
    let progress = progress_bar(o.progress, total as u64);

    let in_process_dir = root.join("in-process");
    progress.set_message("in-process load");
    let in_process = load::in_process(&in_process_dir, o, &progress).await?;
    let (figures, dir, in_process_rate) = match o.via {
        Via::InProcess => (in_process, in_process_dir, None),
        Via::Grpc | Via::GrpcStream => {
            show_progress(&progress, 0, Duration::ZERO);
            progress.set_message("gRPC load");
            let rate = rate(total, in_process.updates_elapsed);
            let dir = root.join("grpc");
            let mut figures = grpc_load::through_grpc(&dir, o, &progress).await?;
            // `--list` lists the in-process load's streams.
            figures.listing = in_process.listing;
            (figures, dir, Some(rate))
        }
    };

    progress.set_message("recovery");
    let recovery = recover_all(&dir, o.max_open_files).await?;
    progress.set_message("baselines");
    let records = if o.ack { 2 * total } else { total };
    let sample = load::bench_update(0, 1);
    let baseline_appends_per_sec = baseline::appends_per_sec(
        &root.join("baseline"),
        o.streams,
        records.max(1),
        o.sync,
        o.max_open_files,
        &sample,
        baseline::BASELINE_BUDGET,
    )?;
    let baseline_sync_p99_micros = baseline::fdatasync_p99_micros(&root.join("fsync"), 200, 1000)?;
    progress.finish_and_clear();
    std::fs::remove_dir_all(root)?;

    Ok(report(
        o,
        &figures,
        records,
        baseline_appends_per_sec,
        baseline_sync_p99_micros,
        recovery,
        in_process_rate,
    ))
}

fn report(
    o: &BenchOptions,
    f: &LoadFigures,
    records: usize,
    baseline_appends_per_sec: f64,
    baseline_sync_p99_micros: u64,
    recovery: RecoveryFigures,
    in_process_rate: Option<f64>,
) -> BenchReport {
    let total = o.streams * o.updates;
    let updates_per_sec = rate(total, f.updates_elapsed);
    // Records written per second: update and ack records, over the whole load.
    let written_per_sec = rate(records, f.acks_elapsed.unwrap_or(f.updates_elapsed));
    BenchReport {
        streams: o.streams,
        updates: o.updates,
        concurrency: o.concurrency,
        sync: o.sync,
        via: o.via,
        updates_per_sec,
        acks_per_sec: f.acks_elapsed.map(|d| rate(total, d)),
        update_latency_micros: Latency {
            p50: f.latency.value_at_quantile(0.5),
            p99: f.latency.value_at_quantile(0.99),
            max: f.latency.max(),
        },
        baseline_appends_per_sec,
        ratio_to_baseline: written_per_sec / baseline_appends_per_sec.max(f64::MIN_POSITIVE),
        baseline_sync_p99_micros,
        open_files_peak: f.open_files_peak,
        recovery,
        peak_rss_bytes: peak_rss_bytes(),
        rss_bytes_per_stream: f.rss_growth / o.streams.max(1) as u64,
        in_process_updates_per_sec: in_process_rate,
        ratio_to_in_process: in_process_rate.map(|r| updates_per_sec / r.max(f64::MIN_POSITIVE)),
        list_first_page_ms: f.listing.map(|l| l.first_page.as_secs_f64() * 1000.0),
        list_all_seconds: f.listing.map(|l| l.all.as_secs_f64()),
    }
}

/// Recovers every stream file under `dir` with a fresh (paused) manager,
/// [`RECOVERY_ROUNDS`] times, each followed by a raw read + decode of the
/// same files, and gives the median of each side.
///
/// Alternating puts both sides in the same conditions: whichever of the two
/// runs first after the load pays for faulting in the memory the load's
/// heap handed back (the recovery's read buffers and queues), and the other
/// runs in the pages that freed. Recovery changes a file only to cut a torn
/// tail (or to remove one with no update), which the first round does; the
/// rounds after it see the same files.
async fn recover_all(
    dir: &std::path::Path,
    max_open_files: usize,
) -> Result<RecoveryFigures, BenchError> {
    let (files, disk_bytes) = disk_usage(dir)?;
    let found = discover_native_streams(dir)?;
    let paths: Vec<PathBuf> = found.iter().map(|(_, p)| p.clone()).collect();
    let bytes: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let ids: Vec<String> = found.into_iter().map(|(id, _)| id).collect();
    let streams = ids.len();

    let mut recoveries = Vec::with_capacity(RECOVERY_ROUNDS);
    let mut raw = Vec::with_capacity(RECOVERY_ROUNDS);
    let mut raw_bytes = 0;
    for _ in 0..RECOVERY_ROUNDS {
        recoveries.push(recover_once(dir, ids.clone(), max_open_files).await?);
        let (read, seconds) = baseline::read_and_decode(&paths)?;
        raw_bytes = read;
        raw.push(seconds);
    }
    let first_seconds = recoveries.first().copied().unwrap_or(0.0);
    let (seconds, raw_seconds) = (median(&mut recoveries), median(&mut raw));
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s.max(1e-9);
    Ok(RecoveryFigures {
        streams,
        bytes,
        seconds,
        mb_per_sec: mb(bytes, seconds),
        baseline_mb_per_sec: mb(raw_bytes, raw_seconds),
        rounds: RECOVERY_ROUNDS,
        first_seconds,
        files,
        disk_bytes,
    })
}

/// The regular files under `dir` and the disk space of everything under it
/// (allocated blocks, `dir` included), as `du` counts it.
fn disk_usage(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut files, mut bytes) = (0, std::fs::symlink_metadata(dir)?.blocks() * 512);
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                files += 1;
            }
        }
    }
    Ok((files, bytes))
}

/// One strict recovery of `ids` by a fresh manager, in seconds; returns
/// once its streams closed their files again.
async fn recover_once(
    dir: &std::path::Path,
    ids: Vec<String>,
    max_open_files: usize,
) -> Result<f64, BenchError> {
    let (sink, _forwards) = sink();
    let files = FileCache::new(max_open_files);
    let root = dir.to_path_buf();
    let paths_fn = Arc::new(move |id: &String| native_stream_path(&root, id));
    let config = ManagerConfig {
        sync: SyncPolicy::None,
        start_paused: true,
        files: Some(files.clone()),
        ..ManagerConfig::default()
    };
    let manager = StatusUpdateManager::<Native>::start(config, sink, paths_fn);
    let started = Instant::now();
    manager
        .send(Recover::<Native> { ids, strict: true })
        .await??;
    let seconds = started.elapsed().as_secs_f64();
    drop(manager);
    load::wait_closed(&files).await;
    Ok(seconds)
}

/// The median of `values` (the upper one of an even count; 0 for none).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// A forward target that drops everything (recovery starts paused anyway).
fn sink() -> (actix::Recipient<crate::messages::Forward<Native>>, ()) {
    use actix::prelude::*;
    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<crate::messages::Forward<Native>> for Sink {
        type Result = ();
        fn handle(&mut self, _: crate::messages::Forward<Native>, _: &mut Context<Self>) {}
    }
    (Sink.start().recipient(), ())
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The progress bar on stderr (hidden unless `show`): the phase, the updates answered out
/// of `total`, and the rate [`show_progress`] gives it.
fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg:18} [{bar:40}] {pos}/{len} {prefix}")
    {
        bar.set_style(style);
    }
    bar
}

/// Shows `answered` updates on the progress bar, answered `elapsed` after the load began,
/// and their rate: the report's `updates/s` (`updates` answered over the time until the last
/// was), so the line ends on the figure the report gives.
///
/// Not indicatif's own `{per_sec}`: that is a moving average of the recent steps (a 15 s
/// window, from the bar's creation before the load's setup), which shows the later
/// updates' pace (through a stream's handle) rather than the whole load's (the first update
/// of each stream creates it through the manager), and decays toward 0 once the load is
/// over, while recovery and the baselines run.
pub fn show_progress(progress: &ProgressBar, answered: usize, elapsed: Duration) {
    if progress.is_hidden() {
        return;
    }
    progress.set_position(answered as u64);
    progress.set_prefix(if answered == 0 {
        String::new()
    } else {
        format!("{:.0} updates/s", rate(answered, elapsed))
    });
}

/// Resident set size of this process now, bytes (0 where unknown), after
/// handing freed heap pages back to the system, so that it counts live
/// memory rather than what the allocator keeps cached. Both allocators are
/// asked: the binary's (mimalloc) and the C library's (which tests and the
/// C code linked in use).
pub fn rss_bytes() -> u64 {
    // SAFETY: `mi_collect` only frees memory mimalloc holds unused; it has
    // no preconditions, and with mimalloc idle it does nothing.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    proc_status_kib("VmRSS:") * 1024
}

/// Peak resident set size of this process, bytes (0 where unknown).
pub fn peak_rss_bytes() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [0.5, 0.9]), 0.9, "the upper of an even count");
        assert_eq!(median(&mut [7.0]), 7.0);
        assert_eq!(median(&mut []), 0.0);
    }
}
