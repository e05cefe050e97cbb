//! `bench`: the built-in load benchmark (API.md §4); the work is in
//! [`crate::bench`].

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Args;

use crate::bench::{BenchOptions, BenchReport, Via};
use crate::store::SyncPolicy;

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Streams.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub streams: u64,
    /// Updates per stream.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub updates: u64,
    /// Sync policy: none, always or batch.
    #[arg(long, default_value_t = SyncPolicy::Batch)]
    pub sync: SyncPolicy,
    /// How the load reaches the manager.
    #[arg(long, value_enum, default_value_t = Via::InProcess)]
    pub via: Via,
    /// Updates in flight at once (1 = one at a time: light load, for latency).
    #[arg(long, default_value_t = crate::bench::load::DEFAULT_CONCURRENCY as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub concurrency: u64,
    /// Leave every update pending (no upstream acks): memory and file use at scale.
    #[arg(long)]
    pub no_ack: bool,
    /// Most stream files open at once (`limits.max_open_files`).
    #[arg(long, default_value_t = crate::actors::manager::DEFAULT_MAX_OPEN_FILES as u64, value_parser = clap::value_parser!(u64).range(1..=crate::service::config::MAX_OPEN_FILES_LIMIT as u64))]
    pub max_open_files: u64,
    /// Directory for the stream files (a fresh directory inside it is used, then removed).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Print the report as one JSON document (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// After the in-process load, list every stream through the manager, 1000 at a time
    /// (as ListStreams pages): the first page's latency and the whole listing's time.
    #[arg(long)]
    pub list: bool,
}

impl BenchArgs {
    /// Runs the benchmark and prints its report.
    pub fn run(self) -> anyhow::Result<()> {
        let options = BenchOptions {
            streams: usize::try_from(self.streams)?,
            updates: usize::try_from(self.updates)?,
            sync: self.sync,
            via: self.via,
            ack: !self.no_ack,
            data_dir: self.data_dir,
            max_open_files: usize::try_from(self.max_open_files)?,
            concurrency: usize::try_from(self.concurrency)?,
            progress: !self.json && std::io::stderr().is_terminal(),
            list: self.list,
        };
        let report = crate::bench::run(options)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", table(&report));
        }
        Ok(())
    }
}

/// The report as readable lines.
pub fn table(r: &BenchReport) -> String {
    let mut out = format!(
        "{} streams x {} updates ({} in flight), sync {}, via {:?}\n",
        r.streams, r.updates, r.concurrency, r.sync, r.via
    );
    let mut line = |name: &str, value: String| out.push_str(&format!("  {name:<28} {value}\n"));
    line("updates/s", format!("{:.0}", r.updates_per_sec));
    line(
        "acks/s",
        r.acks_per_sec.map_or("-".into(), |a| format!("{a:.0}")),
    );
    let l = &r.update_latency_micros;
    line(
        "update latency p50/p99/max",
        format!("{} / {} / {} µs", l.p50, l.p99, l.max),
    );
    line(
        "baseline appends/s",
        format!("{:.0}", r.baseline_appends_per_sec),
    );
    line("ratio to baseline", format!("{:.3}", r.ratio_to_baseline));
    line(
        "raw fdatasync p99",
        format!("{} µs", r.baseline_sync_p99_micros),
    );
    line("open files (peak)", r.open_files_peak.to_string());
    let rec = &r.recovery;
    line(
        "recovery",
        format!(
            "{} streams, {} bytes in {:.3} s = {:.1} MB/s (raw read+decode {:.1} MB/s; \
             median of {}, the first took {:.3} s)",
            rec.streams,
            rec.bytes,
            rec.seconds,
            rec.mb_per_sec,
            rec.baseline_mb_per_sec,
            rec.rounds,
            rec.first_seconds
        ),
    );
    line("peak RSS", format!("{} bytes", r.peak_rss_bytes));
    line(
        "RSS per stream",
        format!("{} bytes", r.rss_bytes_per_stream),
    );
    if let (Some(rate), Some(ratio)) = (r.in_process_updates_per_sec, r.ratio_to_in_process) {
        line(
            "in-process updates/s",
            format!("{rate:.0} (gRPC/in-process {ratio:.3})"),
        );
    }
    if let (Some(first), Some(all)) = (r.list_first_page_ms, r.list_all_seconds) {
        line("list: first page", format!("{first:.3} ms"));
        line("list: every stream", format!("{all:.3} s"));
    }
    out
}
