//! Recovering one stream from its checkpoint file: Mesos's per-stream table
//! (mesos-reference §2.8), with the file operations it implies.
//!
//! | on disk | result | side effect |
//! |---|---|---|
//! | parent dir exists, file missing | `None` | none |
//! | parent dir missing | error (open) | none |
//! | no valid UPDATE record (empty, only partial, first record corrupt in non-strict mode) | `None` | file removed |
//! | partial tail | `Some` | truncated to the last full record |
//! | corrupt record | strict: error; non-strict: `Some` + error mark | truncated at the corrupt record (also in strict mode) |
//! | ACK with nothing pending | error | none (no truncation) |
//!
//! Terminated streams are returned like any other; the manager decides what
//! to keep.
//!
//! [`recover_files`] recovers many files on a few threads at once: a file's
//! recovery is I/O plus decoding with no shared state, so a restart with
//! many streams reads and replays them on every core while the results stay
//! in the order asked.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::time::Instant;

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
/// recover (see the module table).
pub fn recover_file<K: UpdateKind>(
    id: K::StreamId,
    path: &Path,
    strict: bool,
    sync: SyncPolicy,
    now: Instant,
) -> Result<Option<RecoveredFile<K>>, ReplayError> {
    let (mut log, contents) = match StreamLog::open(path, sync)? {
        Opened::Missing => return Ok(None),
        Opened::Found { log, contents } => (log, contents),
    };
    let mut contents = contents;
    let replayed = replay::<K>(id, path, &contents, now)?;
    if replayed.valid_bytes < replayed.file_bytes {
        log.truncate(replayed.valid_bytes)?;
    }
    let error = match &replayed.tail {
        Tail::Corrupt { offset, reason } => {
            let err = ReplayError::Corrupt {
                path: path.to_path_buf(),
                offset: *offset,
                reason: reason.clone(),
            };
            if strict {
                return Err(err);
            }
            Some(err)
        }
        Tail::Clean | Tail::Partial => None,
    };
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
pub fn recover_files<K: UpdateKind>(
    files: &[(K::StreamId, PathBuf)],
    strict: bool,
    sync: SyncPolicy,
    now: Instant,
    threads: impl FnOnce() -> usize,
    prepare: impl Fn(&mut StreamLog) + Sync,
    mut each: impl FnMut(FileOutcome<K>) -> ControlFlow<()>,
) {
    let recover = |id: &K::StreamId, path: &Path| {
        let mut outcome = recover_file::<K>(id.clone(), path, strict, sync, now);
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
