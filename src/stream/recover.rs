//! Recovering one stream from its checkpoint file: Mesos's per-stream table
//! (mesos-reference §2.8), with the file operations it implies.
//!
//! | on disk | result | side effect |
//! |---|---|---|
//! | parent dir exists, file missing | `None` | none |
//! | parent dir missing | error (open) | none |
//! | no valid UPDATE record (empty, only partial) | `None` | file removed |
//! | no valid UPDATE record before a corrupt one, non-strict | `None` | file **quarantined** |
//! | partial tail | `Some` | truncated to the last full record |
//! | corrupt record | strict: error; non-strict: `Some` + error mark | truncated at the corrupt record (also in strict mode); non-strict: the cut bytes **quarantined** |
//! | ACK with nothing pending | error | none (no truncation) |
//!
//! Terminated streams are returned like any other; the manager decides what
//! to keep.
//!
//! **Quarantine** (changed from Mesos on purpose: Mesos deletes such a
//! file). Non-strict recovery never deletes bytes it could not use: a file
//! corrupt before its first update is moved, and the bytes cut from a file
//! with a valid prefix are copied, into the quarantine directory (the
//! service's `<data_dir>/quarantine`) as `<file name>.<unix seconds>`
//! (`.<n>` added if that name is taken), with a WARN naming both paths and
//! the reason. Without a quarantine directory the file is renamed beside
//! itself to `<file name>.quarantined.<unix seconds>`. `inspect` reads a
//! quarantined file like any other.
//!
//! [`recover_files`] recovers many files on a few threads at once: a file's
//! recovery is I/O plus decoding with no shared state, so a restart with
//! many streams reads and replays them on every core while the results stay
//! in the order asked.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::time::Instant;
use tracing::warn;

use crate::error::ReplayError;
use crate::kind::UpdateKind;
use crate::store::{Opened, StreamLog, SyncPolicy};

use super::replay::{replay, Replayed, Tail, UpdateRecords};

/// A stream recovered from its file.
#[derive(Debug)]
pub struct RecoveredFile<K: UpdateKind> {
    /// What replay found.
    pub replayed: Replayed<K>,
    /// Every UPDATE record of the valid prefix (the file's bytes, decoded on demand).
    pub updates: UpdateRecords<K>,
    /// The file, truncated to its valid prefix and open for appends.
    pub log: StreamLog,
    /// Set when a corrupt record was truncated in non-strict mode.
    pub error: Option<ReplayError>,
}

/// Recovers stream `id` from `path`; `Ok(None)` when there is nothing to
/// recover (see the module table). Non-strict recovery quarantines what it
/// cannot use into `quarantine` (see the module docs).
pub fn recover_file<K: UpdateKind>(
    id: K::StreamId,
    path: &Path,
    strict: bool,
    sync: SyncPolicy,
    now: Instant,
    quarantine: Option<&Path>,
) -> Result<Option<RecoveredFile<K>>, ReplayError> {
    let (mut log, contents) = match StreamLog::open(path, sync)? {
        Opened::Missing => return Ok(None),
        Opened::Found { log, contents } => (log, contents),
    };
    let mut contents = contents;
    let replayed = replay::<K>(id, path, &contents, now)?;
    let error = match &replayed.tail {
        Tail::Corrupt { offset, reason } => {
            let err = ReplayError::Corrupt {
                path: path.to_path_buf(),
                offset: *offset,
                reason: reason.clone(),
            };
            if strict {
                if replayed.valid_bytes < replayed.file_bytes {
                    log.truncate(replayed.valid_bytes)?;
                }
                return Err(err);
            }
            metrics::counter!(crate::metrics::RECOVERY_CORRUPT_RECORDS).increment(1);
            Some(err)
        }
        Tail::Clean | Tail::Partial => None,
    };
    if let Some(err) = &error {
        let cut = usize::try_from(replayed.valid_bytes).unwrap_or(usize::MAX);
        if replayed.updates.is_empty() {
            // Nothing usable: the whole file goes to the quarantine.
            drop(log);
            quarantine_file(path, quarantine, err)?;
            return Ok(None);
        }
        save_cut(
            path,
            contents.get(cut..).unwrap_or_default(),
            quarantine,
            err,
        )?;
    }
    if replayed.valid_bytes < replayed.file_bytes {
        log.truncate(replayed.valid_bytes)?;
    }
    if replayed.updates.is_empty() {
        log.remove()?;
        return Ok(None);
    }
    contents.truncate(usize::try_from(replayed.valid_bytes).unwrap_or(usize::MAX));
    let updates = UpdateRecords::new(contents, replayed.updates.clone());
    Ok(Some(RecoveredFile {
        replayed,
        updates,
        log,
        error,
    }))
}

/// Where `path` goes in the quarantine: `<dir>/<file name>.<unix seconds>`
/// (`dir`: `quarantine`, or beside the file with `.quarantined` added),
/// with `.<n>` added while that name is taken.
fn quarantine_path(path: &Path, quarantine: Option<&Path>, suffix: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let (dir, base) = match quarantine {
        Some(dir) => (dir.to_path_buf(), format!("{name}.{secs}{suffix}")),
        None => (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            format!("{name}.quarantined.{secs}{suffix}"),
        ),
    };
    let mut target = dir.join(&base);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{base}.{n}"));
        n += 1;
    }
    target
}

fn quarantine_err(path: &Path, source: std::io::Error) -> ReplayError {
    ReplayError::from(crate::store::StoreError::Quarantine {
        path: path.to_path_buf(),
        source,
    })
}

/// Moves the whole file at `path` into the quarantine.
fn quarantine_file(
    path: &Path,
    quarantine: Option<&Path>,
    why: &ReplayError,
) -> Result<(), ReplayError> {
    if let Some(dir) = quarantine {
        std::fs::create_dir_all(dir).map_err(|e| quarantine_err(dir, e))?;
    }
    let target = quarantine_path(path, quarantine, "");
    std::fs::rename(path, &target).map_err(|e| quarantine_err(&target, e))?;
    metrics::counter!(crate::metrics::RECOVERY_QUARANTINED_FILES).increment(1);
    warn!(path = %path.display(), quarantined = %target.display(), reason = %why,
        "a stream file holds no usable record: moved to the quarantine, not deleted");
    Ok(())
}

/// Copies `cut`, the bytes recovery cuts from the file at `path`, into the
/// quarantine (`.cut` added to the name), synced before the file is cut.
fn save_cut(
    path: &Path,
    cut: &[u8],
    quarantine: Option<&Path>,
    why: &ReplayError,
) -> Result<(), ReplayError> {
    if let Some(dir) = quarantine {
        std::fs::create_dir_all(dir).map_err(|e| quarantine_err(dir, e))?;
    }
    let target = quarantine_path(path, quarantine, ".cut");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| quarantine_err(&target, e))?;
    std::io::Write::write_all(&mut file, cut)
        .and_then(|()| file.sync_all())
        .map_err(|e| quarantine_err(&target, e))?;
    metrics::counter!(crate::metrics::RECOVERY_QUARANTINED_FILES).increment(1);
    warn!(path = %path.display(), quarantined = %target.display(), bytes = cut.len(), reason = %why,
        "cut a stream file at a corrupt record: the cut bytes are saved in the quarantine");
    Ok(())
}

/// What [`recover_file`] returned for one file of [`recover_files`].
pub type FileOutcome<K> = Result<Option<RecoveredFile<K>>, ReplayError>;

/// Files recovered per hand-out to a worker thread.
const CHUNK: usize = 64;

/// Recovers every `(id, path)` of `files` on `threads()` worker threads and
/// hands each outcome to `each`, on the calling thread and in the order of
/// `files`, while the workers go on reading: the caller's bookkeeping
/// overlaps the I/O. With few files (one chunk), everything runs on the
/// calling thread and `threads` is not asked (finding the core count costs
/// a few cgroup reads); with `threads()` ≤ 1 too.
///
/// Each recovered log goes through `prepare` on the thread that opened it
/// (the manager puts it under its bound on open files there, so the files
/// recovered so far never all stay open at once).
///
/// When `each` breaks, no more files are handed out and no more outcomes
/// are handed to it; workers finish the chunk they hold. Since chunks are
/// handed out in order, every file before the one that broke was recovered,
/// exactly as by a one-by-one loop.
#[allow(clippy::too_many_arguments)]
pub fn recover_files<K: UpdateKind>(
    files: &[(K::StreamId, PathBuf)],
    strict: bool,
    sync: SyncPolicy,
    now: Instant,
    quarantine: Option<&Path>,
    threads: impl FnOnce() -> usize,
    prepare: impl Fn(&mut StreamLog) + Sync,
    mut each: impl FnMut(FileOutcome<K>) -> ControlFlow<()>,
) {
    let recover = |id: &K::StreamId, path: &Path| {
        let mut outcome = recover_file::<K>(id.clone(), path, strict, sync, now, quarantine);
        if let Ok(Some(recovered)) = &mut outcome {
            prepare(&mut recovered.log);
        }
        outcome
    };
    let threads = if files.len() <= CHUNK { 1 } else { threads() };
    if threads <= 1 {
        for (id, path) in files {
            if each(recover(id, path)).is_break() {
                return;
            }
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<FileOutcome<K>>)>();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, recover) = (&next, &stop, &recover);
            scope.spawn(move || loop {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let start = next.fetch_add(CHUNK, Ordering::AcqRel);
                let Some(chunk) = files.get(start..) else {
                    return;
                };
                let done = chunk
                    .iter()
                    .take(CHUNK)
                    .map(|(id, path)| recover(id, path))
                    .collect();
                if tx.send((start, done)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        // Chunks arrive in about the order they were handed out; hold the
        // early arrivals until their turn.
        let mut waiting = std::collections::BTreeMap::new();
        let mut expected = 0;
        for (start, done) in rx {
            waiting.insert(start, done);
            while let Some(done) = waiting.remove(&expected) {
                expected += CHUNK;
                for outcome in done {
                    if each(outcome).is_break() {
                        stop.store(true, Ordering::Release);
                        return;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{encode_framed, Native, RecordRef};
    use crate::proto::status_update_manager::v1::{Status, StatusUpdate};

    const FILES: usize = 300;
    const BAD: usize = 170;

    /// `FILES` one-update files; file `BAD` holds a corrupt record after its update.
    fn files(dir: &Path) -> Vec<(String, PathBuf)> {
        (0..FILES)
            .map(|n| {
                let id = format!("s{n}");
                let update = StatusUpdate {
                    stream_id: id.clone(),
                    status: Some(Status {
                        uuid: (n as u128 + 1).to_le_bytes().to_vec(),
                        state: "RUNNING".into(),
                        ..Status::default()
                    }),
                    ..StatusUpdate::default()
                };
                let mut bytes = Vec::new();
                encode_framed::<Native>(RecordRef::Update(&update), &mut bytes).unwrap();
                if n == BAD {
                    bytes.extend_from_slice(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
                }
                let path = dir.join(format!("{id}.updates"));
                std::fs::write(&path, bytes).unwrap();
                (id, path)
            })
            .collect()
    }

    fn run(strict: bool, threads: usize) -> Vec<(String, bool)> {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let prepared = AtomicUsize::new(0);
        let mut seen = Vec::new();
        recover_files::<Native>(
            &files,
            strict,
            SyncPolicy::None,
            Instant::now(),
            None,
            || threads,
            |_| {
                prepared.fetch_add(1, Ordering::Relaxed);
            },
            |outcome| {
                let (id, failed) = match outcome {
                    Ok(Some(r)) => (r.replayed.state.id().clone(), r.error.is_some()),
                    Ok(None) => (String::new(), false),
                    Err(_) => (format!("s{}", seen.len()), true),
                };
                seen.push((id, failed));
                if failed && strict {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        let prepared = prepared.load(Ordering::Relaxed);
        if strict {
            assert!(prepared >= BAD, "every log before the failure was prepared");
        } else {
            assert_eq!(prepared, FILES, "every recovered log was prepared");
        }
        seen
    }

    #[test]
    fn outcomes_arrive_in_order_whatever_the_threads() {
        for threads in [1, 2, 4] {
            let seen = run(false, threads);
            assert_eq!(seen.len(), FILES, "{threads} threads");
            for (n, (id, failed)) in seen.iter().enumerate() {
                assert_eq!(id, &format!("s{n}"), "{threads} threads");
                assert_eq!(*failed, n == BAD, "only the corrupt file is marked");
            }
        }
    }

    #[test]
    fn a_strict_failure_stops_after_every_file_before_it() {
        for threads in [1, 2, 4] {
            let seen = run(true, threads);
            assert_eq!(seen.len(), BAD + 1, "{threads} threads");
            assert!(seen[..BAD].iter().all(|(_, failed)| !failed));
            assert_eq!(seen[BAD], (format!("s{BAD}"), true));
        }
    }
}
