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

use std::path::Path;

use tokio::time::Instant;

use crate::error::ReplayError;
use crate::kind::UpdateKind;
use crate::store::{Opened, StreamLog, SyncPolicy};

use super::replay::{replay, Replayed, Tail};

/// A stream recovered from its file.
#[derive(Debug)]
pub struct RecoveredFile<K: UpdateKind> {
    /// What replay found.
    pub replayed: Replayed<K>,
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
    let replayed = replay::<K>(id, path, &contents, now)?;
    drop(contents);
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
    Ok(Some(RecoveredFile {
        replayed,
        log,
        error,
    }))
}
