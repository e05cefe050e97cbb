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
    /// Streams the load creates, each with its own file.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub streams: u64,
    /// Updates sent to each stream (the load is streams × updates).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub updates: u64,
    /// When an update is answered, as store.sync: none (after the write), always (after an
    /// fdatasync of its file) or batch (after a sync shared by the updates that came together).
    #[arg(long, value_name = "POLICY", default_value_t = SyncPolicy::Batch)]
    pub sync: SyncPolicy,
    /// How the load reaches the manager: in-process (actix messages) or grpc (through a
    /// service started on 127.0.0.1, after the same load in process for comparison).
    #[arg(long, value_enum, default_value_t = Via::InProcess)]
    pub via: Via,
    /// Updates in flight at once (1 = one at a time: light load, for latency).
    #[arg(long, value_name = "N", default_value_t = crate::bench::load::DEFAULT_CONCURRENCY as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub concurrency: u64,
    /// Leave every update pending (no upstream acks): memory and file use at scale.
    #[arg(long)]
    pub no_ack: bool,
    /// Most stream files open at once, as limits.max_open_files (the others are reopened on
    /// demand).
    #[arg(long, value_name = "N", default_value_t = crate::actors::manager::DEFAULT_MAX_OPEN_FILES as u64, value_parser = clap::value_parser!(u64).range(1..=crate::service::config::MAX_OPEN_FILES_LIMIT as u64))]
    pub max_open_files: u64,
    /// Where the run's files go: a fresh directory sum-bench-PID inside DIR, removed
    /// afterwards (also when the run fails).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Print the report as one JSON document (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// After the in-process load, list every stream through the manager, 1000 at a time
    /// (as ListStreams pages): the first page's latency and the whole listing's time.
    #[arg(long)]
    pub list: bool,
    /// Where the load's forwards go: subscriber (the load above) or jetstream (the service
    /// publishing into NATS JetStream, against a plain publish loop; see BENCHMARKS.md).
    #[arg(long, value_enum, default_value_t = BenchUpstream::Subscriber)]
    pub upstream: BenchUpstream,
    /// With --upstream jetstream: the NATS server to use (e.g. nats://127.0.0.1:4222) instead
    /// of a nats-server started for the run.
    #[arg(long, value_name = "URL", requires = "upstream")]
    pub nats: Option<String>,
}

/// `bench --upstream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchUpstream {
    /// The load's own upstream, acknowledging each forward.
    Subscriber,
    /// NATS JetStream.
    Jetstream,
}

impl BenchArgs {
    /// Runs the benchmark and prints its report.
    pub fn run(self) -> anyhow::Result<()> {
        if self.upstream == BenchUpstream::Jetstream {
            let report =
                crate::bench::jetstream::run(crate::bench::jetstream::JetStreamBenchOptions {
                    streams: usize::try_from(self.streams)?,
                    updates: usize::try_from(self.updates)?,
                    concurrency: usize::try_from(self.concurrency)?,
                    sync: self.sync,
                    data_dir: self.data_dir,
                    nats: self.nats,
                })?;
            if self.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench::jetstream::table(&report));
            }
            return Ok(());
        }
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

/// The report as a person reads it: rates per second, latencies and short durations in
/// milliseconds, sizes in KiB/MiB/GiB, and the concurrency the load ran at. (`--json` gives
/// the exact figures.)
pub fn table(r: &BenchReport) -> String {
    let total = r.streams.saturating_mul(r.updates);
    // The load never has more updates in flight than it has updates.
    let in_flight = r.concurrency.min(total).max(1);
    let concurrency = if in_flight < r.concurrency {
        format!(
            "at concurrency {in_flight} (every update at once; {} asked)",
            r.concurrency
        )
    } else {
        format!("at concurrency {in_flight} (updates in flight at once)")
    };
    let via = match r.via {
        Via::InProcess => "in-process",
        Via::Grpc => "gRPC",
        Via::GrpcStream => "gRPC streaming calls",
    };
    let acks = if r.acks_per_sec.is_some() {
        ""
    } else {
        ", no acks"
    };
    let mut out = format!(
        "{} streams × {} updates {concurrency}, sync {}, via {via}{acks}\n",
        r.streams, r.updates, r.sync
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
        format!(
            "{} / {} / {} ms",
            millis(l.p50 as f64 / 1000.0),
            millis(l.p99 as f64 / 1000.0),
            millis(l.max as f64 / 1000.0)
        ),
    );
    line(
        "baseline appends/s",
        format!("{:.0}", r.baseline_appends_per_sec),
    );
    line("ratio to baseline", format!("{:.3}", r.ratio_to_baseline));
    line(
        "raw fdatasync p99",
        format!("{} ms", millis(r.baseline_sync_p99_micros as f64 / 1000.0)),
    );
    line("open files (peak)", r.open_files_peak.to_string());
    let rec = &r.recovery;
    // MB/s (10^6 bytes) in the JSON; MiB/s here, as the sizes.
    let mib_per_sec = |mb_per_sec: f64| mb_per_sec * 1e6 / MIB;
    line(
        "recovery",
        format!(
            "{} streams, {} in {} = {:.1} MiB/s (median of {}; the first took {})",
            rec.streams,
            size(rec.bytes),
            seconds(rec.seconds),
            mib_per_sec(rec.mb_per_sec),
            rec.rounds,
            seconds(rec.first_seconds)
        ),
    );
    line(
        "files on disk",
        format!("{} files, {} allocated", rec.files, size(rec.disk_bytes)),
    );
    line(
        "raw read+decode",
        format!("{:.1} MiB/s", mib_per_sec(rec.baseline_mb_per_sec)),
    );
    line("peak RSS", size(r.peak_rss_bytes));
    line("RSS per stream", size(r.rss_bytes_per_stream));
    if let (Some(rate), Some(ratio)) = (r.in_process_updates_per_sec, r.ratio_to_in_process) {
        line(
            "in-process updates/s",
            format!("{rate:.0} (gRPC/in-process {ratio:.3})"),
        );
    }
    if let (Some(first), Some(all)) = (r.list_first_page_ms, r.list_all_seconds) {
        line("list: first page", format!("{} ms", millis(first)));
        line("list: every stream", seconds(all));
    }
    out
}

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Milliseconds with three significant digits or so: `0.042`, `4.21`, `42.9`, `596`.
fn millis(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A duration: in ms under a second (`31.2 ms`), else in seconds (`2.35 s`, `12.4 s`).
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{} ms", millis(s * 1000.0))
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A size: bytes under 1 KiB, else KiB, MiB or GiB with one decimal (two for GiB).
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} bytes")
    } else if b < MIB {
        format!("{:.1} KiB", b / KIB)
    } else if b < GIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{:.2} GiB", b / GIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Latency, RecoveryFigures};

    fn report() -> BenchReport {
        BenchReport {
            streams: 1000,
            updates: 10,
            concurrency: 2048,
            sync: SyncPolicy::Batch,
            via: Via::InProcess,
            updates_per_sec: 230_712.4,
            acks_per_sec: Some(221_004.9),
            update_latency_micros: Latency {
                p50: 4_213,
                p99: 42_975,
                max: 595_455,
            },
            baseline_appends_per_sec: 512_000.0,
            ratio_to_baseline: 0.9012,
            baseline_sync_p99_micros: 1_240,
            open_files_peak: 1000,
            recovery: RecoveryFigures {
                streams: 1000,
                bytes: 1_992_294,
                seconds: 0.0312,
                mb_per_sec: 63.86,
                baseline_mb_per_sec: 251.7,
                rounds: 3,
                first_seconds: 0.045,
                files: 1001,
                disk_bytes: 4_300_800,
            },
            peak_rss_bytes: 34_091_008,
            rss_bytes_per_stream: 3_481,
            in_process_updates_per_sec: None,
            ratio_to_in_process: None,
            list_first_page_ms: None,
            list_all_seconds: None,
        }
    }

    #[test]
    fn the_report_reads_as_a_person_would_write_it() {
        assert_eq!(
            table(&report()),
            "1000 streams × 10 updates at concurrency 2048 (updates in flight at once), \
             sync batch, via in-process
  updates/s                    230712
  acks/s                       221005
  update latency p50/p99/max   4.21 / 43.0 / 595 ms
  baseline appends/s           512000
  ratio to baseline            0.901
  raw fdatasync p99            1.24 ms
  open files (peak)            1000
  recovery                     1000 streams, 1.9 MiB in 31.2 ms = 60.9 MiB/s (median of 3; the first took 45.0 ms)
  files on disk                1001 files, 4.1 MiB allocated
  raw read+decode              240.0 MiB/s
  peak RSS                     32.5 MiB
  RSS per stream               3.4 KiB
"
        );
    }

    #[test]
    fn the_report_says_the_concurrency_it_ran_at_and_what_else_it_did() {
        let small = BenchReport {
            streams: 4,
            updates: 5,
            via: Via::Grpc,
            acks_per_sec: None,
            in_process_updates_per_sec: Some(100_000.0),
            ratio_to_in_process: Some(0.4),
            list_first_page_ms: Some(0.8123),
            list_all_seconds: Some(2.5),
            ..report()
        };
        let text = table(&small);
        assert!(
            text.starts_with(
                "4 streams × 5 updates at concurrency 20 (every update at once; 2048 asked), \
                 sync batch, via gRPC, no acks\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n  acks/s                       -\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  in-process updates/s         100000 (gRPC/in-process 0.400)\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  list: first page             0.812 ms\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  list: every stream           2.50 s\n"),
            "{text}"
        );
    }

    #[test]
    fn every_flag_says_what_it_does() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let bench = cli.find_subcommand("bench").expect("the bench command");
        for arg in bench.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.split_whitespace().count() >= 3,
                "--{}: {help:?}",
                arg.get_id()
            );
        }
    }

    #[test]
    fn units_keep_about_three_significant_digits() {
        assert_eq!(millis(0.0421), "0.042");
        assert_eq!(millis(4.213), "4.21");
        assert_eq!(millis(42.975), "43.0");
        assert_eq!(millis(595.455), "595");
        assert_eq!(seconds(0.0312), "31.2 ms");
        assert_eq!(seconds(2.345), "2.35 s");
        assert_eq!(seconds(64.0), "64.0 s");
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(3_481), "3.4 KiB");
        assert_eq!(size(34_091_008), "32.5 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
