//! Raw baselines, measured in the same run as the manager: what a plain
//! loop achieves with the same records, files and sync policy, and what a
//! plain read + decode of the same files costs. The benchmark divides by
//! them, so its ratios are measured, not assumed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::kind::{encode_framed, Native, RecordRef, UpdateKind};
use crate::proto::status_update_manager::v1::StatusUpdate;
use crate::store::{FrameReader, Next, SyncPolicy};

/// Longest time a baseline loop runs; it stops early (after at least one
/// round over every file) and reports its rate.
pub const BASELINE_BUDGET: Duration = Duration::from_secs(5);

/// Creates `files` new files in `dir` and appends `records` records to
/// them round-robin, alternating an UPDATE and an ACK record, with
/// `policy`: `none` writes only; `always` syncs the file after each write;
/// `batch` writes one record to every file, then syncs the round the way
/// the committer would (one `fdatasync` for one file, one `syncfs`
/// otherwise). At most `max_open` files are open at once, as in the
/// manager: beyond that a file is opened for each write. File creation is
/// timed too, since the manager creates its files as part of the load.
/// Stops after `budget` (but not before one round over every file).
/// Returns records appended per second.
pub fn appends_per_sec(
    dir: &Path,
    files: usize,
    records: usize,
    policy: SyncPolicy,
    max_open: usize,
    sample: &StatusUpdate,
    budget: Duration,
) -> io::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let files = files.max(1);
    let mut update = Vec::new();
    let _ = encode_framed::<Native>(RecordRef::Update(sample), &mut update);
    let mut ack = Vec::new();
    let _ = encode_framed::<Native>(RecordRef::Ack(uuid::Uuid::from_bytes([1; 16])), &mut ack);
    let path = |i: usize| dir.join(format!("b{i}"));
    let keep_open = files <= max_open;
    let started = Instant::now();
    let mut handles: Vec<File> = Vec::new();
    for i in 0..files {
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(path(i))?;
        if keep_open {
            handles.push(file);
        }
    }
    let root = File::open(dir)?;
    let mut offsets = vec![0u64; files];
    let mut written = 0usize;
    // At least one round, however long creating the files took.
    while written < records && (written < files || started.elapsed() < budget) {
        for (i, offset) in offsets.iter_mut().enumerate() {
            let frame = if written.is_multiple_of(2) {
                &update
            } else {
                &ack
            };
            let reopened;
            let file = match handles.get(i) {
                Some(file) => file,
                None => {
                    reopened = OpenOptions::new().write(true).open(path(i))?;
                    &reopened
                }
            };
            file.write_all_at(frame, *offset)?;
            *offset += frame.len() as u64;
            written += 1;
            if policy == SyncPolicy::Always {
                file.sync_data()?;
            }
            if written >= records {
                break;
            }
        }
        if policy == SyncPolicy::Batch {
            sync_round(files, handles.first(), &root)?;
        }
    }
    let rate = written as f64 / started.elapsed().as_secs_f64();
    drop(handles);
    std::fs::remove_dir_all(dir)?;
    Ok(rate)
}

fn sync_round(files: usize, first: Option<&File>, root: &File) -> io::Result<()> {
    match (files, first) {
        (1, Some(one)) => one.sync_data(),
        _ => syncfs(root),
    }
}

#[cfg(target_os = "linux")]
fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `syncfs` only reads the descriptor, which `file` keeps open.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// p99 of one `fdatasync` after one append of `record_len` bytes, in µs.
pub fn fdatasync_p99_micros(dir: &Path, record_len: usize, samples: usize) -> io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fdatasync");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let record = vec![0x5a; record_len.max(1)];
    let mut histogram = new_histogram()?;
    let mut offset = 0;
    for _ in 0..samples.max(1) {
        file.write_all_at(&record, offset)?;
        offset += record.len() as u64;
        let started = Instant::now();
        file.sync_data()?;
        record_micros(&mut histogram, started.elapsed());
    }
    std::fs::remove_file(&path)?;
    Ok(histogram.value_at_quantile(0.99))
}

/// Reads and decodes every file in `paths` (no state, no actors): the
/// floor for recovery. Returns (bytes, seconds).
pub fn read_and_decode(paths: &[PathBuf]) -> io::Result<(u64, f64)> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut records = 0u64;
    for path in paths {
        let contents = std::fs::read(path)?;
        bytes += contents.len() as u64;
        let mut reader = FrameReader::new(&contents);
        while let Next::Record { body, .. } = reader.next_frame() {
            if Native::decode_record(body).is_ok() {
                records += 1;
            }
        }
    }
    std::hint::black_box(records);
    Ok((bytes, started.elapsed().as_secs_f64()))
}

/// A histogram of microseconds from 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(io::Error::other)
}

/// Records a duration (saturating at the histogram's bounds).
pub fn record_micros(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(micros);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_round_over_every_file_whatever_the_budget() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sample = crate::bench::load::bench_update(0, 0);
        for policy in [SyncPolicy::None, SyncPolicy::Batch] {
            let at = dir.path().join(policy.as_str());
            // A budget already spent when the files exist: one round still runs.
            let rate = appends_per_sec(&at, 3, 100, policy, 2, &sample, Duration::ZERO)?;
            assert!(rate > 0.0, "{policy}: no record was appended");
            assert!(!at.exists(), "{policy}: the baseline's files are removed");
        }
        Ok(())
    }
}
