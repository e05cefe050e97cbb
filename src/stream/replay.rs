//! Replaying a checkpoint file's bytes into a [`StreamState`], with no I/O.
//!
//! Records are read in order through the framing reader and applied with the
//! same [`StreamState::apply_update`] / [`StreamState::apply_ack`] the live
//! path uses. Reading stops at the first thing that is not a complete, valid
//! record, and [`Replayed`] says where the valid prefix ends and why:
//!
//! - a clean end of file;
//! - a *partial* tail (1-3 bytes of length, or a length past the end): what a
//!   crash mid-append leaves; recovery truncates it silently;
//! - a *corrupt* record (zero length, or a body that does not decode with all
//!   its required fields): recovery truncates at its start, then strict
//!   recovery fails and non-strict recovery counts an error.
//!
//! An ACK record while nothing is pending is an error of its own
//! ([`ReplayError::AckWithNothingPending`]): the file is left as it is.

use std::path::Path;

use tokio::time::Instant;

use crate::error::ReplayError;
use crate::kind::{status_uuid, Record, RecordError, UpdateKind};
use crate::store::framing::{FrameReader, Next};

use super::state::StreamState;

/// How the valid prefix of a file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// At the end of the file.
    Clean,
    /// At a torn record (normal after a crash).
    Partial,
    /// At a corrupt record.
    Corrupt {
        /// Where the corrupt record starts.
        offset: u64,
        /// Why it does not decode.
        reason: RecordError,
    },
}

impl Tail {
    /// `clean`, `partial` or `corrupt`, as `inspect` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tail::Clean => "clean",
            Tail::Partial => "partial",
            Tail::Corrupt { .. } => "corrupt",
        }
    }
}

/// The result of replaying a file's bytes.
#[derive(Debug, Clone)]
pub struct Replayed<K: UpdateKind> {
    /// The stream as the valid records leave it.
    pub state: StreamState<K>,
    /// Every UPDATE record of the valid prefix, in file order, acknowledged or
    /// not (boxed: a slot is smaller than any framed record, so the list never
    /// outgrows the file).
    pub updates: Vec<Box<K::Update>>,
    /// Length of the valid prefix.
    pub valid_bytes: u64,
    /// Length of the bytes replayed.
    pub file_bytes: u64,
    /// How the valid prefix ends.
    pub tail: Tail,
}

/// Replays `contents` (a whole checkpoint file at `path`) for stream `id`.
pub fn replay<K: UpdateKind>(
    id: K::StreamId,
    path: &Path,
    contents: &[u8],
    now: Instant,
) -> Result<Replayed<K>, ReplayError> {
    let mut state = StreamState::<K>::new(id, true, None);
    // Size the queue and the list once from the number of complete frames:
    // each slot is smaller than the smallest framed record, so neither
    // allocation can outgrow the file, and neither grows by doubling.
    let frames = count_frames(contents);
    state.reserve_exact(frames);
    let mut updates = Vec::with_capacity(frames);
    let mut reader = FrameReader::new(contents);
    // End of the last record applied; a corrupt record is not part of it.
    let mut valid_bytes = 0;
    let tail = loop {
        match reader.next_frame() {
            Next::End => break Tail::Clean,
            Next::Partial { .. } => break Tail::Partial,
            Next::ZeroLength { start } => {
                break Tail::Corrupt {
                    offset: start,
                    reason: RecordError::Decode("zero-length record".into()),
                }
            }
            Next::Record { start, body } => match K::decode_record(body) {
                Ok(Record::Update(update)) => {
                    // decode_record checked the uuid; a failure here is corruption too.
                    match status_uuid::<K>(&update) {
                        Ok(uuid) => {
                            state.apply_record(&update, body, uuid, now);
                            updates.push(Box::new(update));
                            valid_bytes = reader.offset();
                        }
                        Err(err) => {
                            break Tail::Corrupt {
                                offset: start,
                                reason: err.into(),
                            };
                        }
                    }
                }
                Ok(Record::Ack(uuid)) => {
                    if state.apply_ack().is_none() {
                        return Err(ReplayError::AckWithNothingPending {
                            path: path.to_path_buf(),
                            offset: start,
                            uuid: uuid.to_string(),
                        });
                    }
                    valid_bytes = reader.offset();
                }
                Err(reason) => {
                    break Tail::Corrupt {
                        offset: start,
                        reason,
                    }
                }
            },
        }
    };
    Ok(Replayed {
        state,
        updates,
        valid_bytes,
        file_bytes: contents.len() as u64,
        tail,
    })
}

/// Complete frames at the start of `contents` (a cheap pass: lengths only).
fn count_frames(contents: &[u8]) -> usize {
    let mut reader = FrameReader::new(contents);
    let mut frames = 0;
    while let Next::Record { .. } = reader.next_frame() {
        frames += 1;
    }
    frames
}
