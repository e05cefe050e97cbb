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

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
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
    /// Where the body of every UPDATE record of the valid prefix is in the
    /// replayed bytes, in file order, acknowledged or not (a span is smaller
    /// than any framed record, so the list never outgrows the file; see
    /// [`UpdateRecords`] to decode them).
    pub updates: Vec<Range<usize>>,
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
    let base = contents.as_ptr() as usize;
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
                            // `body` is a slice of `contents`.
                            let at = body.as_ptr() as usize - base;
                            updates.push(at..at + body.len());
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

/// Decodes the UPDATE record at `span` of `contents` (a span of
/// [`Replayed::updates`] over the bytes that were replayed).
pub fn decode_update<K: UpdateKind>(contents: &[u8], span: &Range<usize>) -> Option<K::Update> {
    match K::decode_record(contents.get(span.clone())?) {
        Ok(Record::Update(update)) => Some(update),
        // Replay decoded this very record as an UPDATE.
        Ok(Record::Ack(_)) | Err(_) => None,
    }
}

/// The UPDATE records of a recovered file, kept as the file's bytes and
/// decoded when asked for: recovering a stream keeps one buffer (the one
/// the file was read into) instead of a decoded message per update.
#[derive(Clone)]
pub struct UpdateRecords<K: UpdateKind> {
    bytes: Vec<u8>,
    spans: Vec<Range<usize>>,
    kind: PhantomData<K>,
}

impl<K: UpdateKind> UpdateRecords<K> {
    /// The records at `spans` of `bytes` (as [`Replayed::updates`] gives them).
    pub fn new(bytes: Vec<u8>, spans: Vec<Range<usize>>) -> Self {
        UpdateRecords {
            bytes,
            spans,
            kind: PhantomData,
        }
    }

    /// How many updates.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Update `i`, decoded.
    pub fn get(&self, i: usize) -> Option<K::Update> {
        decode_update::<K>(&self.bytes, self.spans.get(i)?)
    }

    /// The first update.
    pub fn first(&self) -> Option<K::Update> {
        self.get(0)
    }

    /// Every update in file order, decoded one at a time.
    pub fn iter(&self) -> impl Iterator<Item = K::Update> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Every update, decoded.
    pub fn to_vec(&self) -> Vec<K::Update> {
        self.iter().collect()
    }
}

impl<K: UpdateKind> Default for UpdateRecords<K> {
    fn default() -> Self {
        UpdateRecords::new(Vec::new(), Vec::new())
    }
}

impl<K: UpdateKind> fmt::Debug for UpdateRecords<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: UpdateKind> PartialEq<Vec<K::Update>> for UpdateRecords<K> {
    fn eq(&self, other: &Vec<K::Update>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter().cloned())
    }
}

impl<K: UpdateKind> PartialEq for UpdateRecords<K> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}
