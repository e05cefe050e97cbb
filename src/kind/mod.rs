//! Update kinds: what the manager is generic over.
//!
//! Mesos's status update manager is a C++ template over a stream id type, a
//! checkpoint record type and an update type, plus a handful of rules (where
//! the status uuid lives, which states are terminal, how `latest_status` is
//! set). [`UpdateKind`] carries the same: one implementation per kind.
//!
//! | kind | update | record | stream id |
//! |---|---|---|---|
//! | [`operation`] | `mesos.internal.UpdateOperationStatusMessage` | `UpdateOperationStatusRecord` | operation uuid |
//! | [`task`] | `mesos.internal.StatusUpdate` | `StatusUpdateRecord` | (framework id, task id) |
//! | [`native`] | the service's `StatusUpdate` | `NativeRecord` | any string of 1..=256 bytes |
//!
//! The Mesos kinds read and write files byte-compatible with a Mesos agent's.
//! prost does not enforce proto2 `required` fields on decode, so each kind
//! checks them itself in [`UpdateKind::decode_record`]: a record that Mesos
//! would refuse to parse is corruption here too, never data.

use std::fmt;
use std::hash::Hash;

use thiserror::Error;
use uuid::Uuid;

pub mod native;
pub mod operation;
pub mod task;

pub use native::Native;
pub use operation::Operation;
pub use task::{Task, TaskStreamId};

/// The status uuid of an update: its dedup and acknowledgement key.
///
/// Always exactly 16 bytes and never all zero (any version is accepted, so
/// UUIDv7 works); [`parse_status_uuid`] is the only way in from raw bytes.
pub type StatusUuid = Uuid;

/// One record of a stream's checkpoint file, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<U> {
    /// An update, exactly as accepted (no `latest_status`).
    Update(U),
    /// The acknowledgement of the status uuid at the head of the queue.
    Ack(StatusUuid),
}

/// A record to encode, borrowing the update.
#[derive(Debug)]
pub enum RecordRef<'a, U> {
    /// An UPDATE record holding this update.
    Update(&'a U),
    /// An ACK record for this status uuid.
    Ack(StatusUuid),
}

impl<U> Clone for RecordRef<'_, U> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<U> Copy for RecordRef<'_, U> {}

/// Why an update (or the uuid of an ack) was rejected before anything
/// happened. The manager wraps it with the stream and uuid it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidUpdate {
    /// The caller set `latest_status`; only forwards carry it.
    #[error("expected the update to not contain 'latest_status' (it is set on forwards only)")]
    LatestStatusSet,
    /// The update has no status.
    #[error("the update has no status")]
    MissingStatus,
    /// The status has no uuid.
    #[error("the status has no uuid")]
    MissingUuid,
    /// The uuid is not exactly 16 bytes.
    #[error("the status uuid has {len} bytes; expected exactly 16")]
    UuidLength {
        /// The length received.
        len: usize,
    },
    /// The uuid is all zero.
    #[error("the status uuid is all zero; expected a non-nil RFC 4122 uuid")]
    NilUuid,
    /// The stream id cannot be derived or is not acceptable.
    #[error("bad stream id: {0}")]
    StreamId(String),
    /// The state is empty or unknown.
    #[error("bad state: {0}")]
    State(String),
    /// The encoded record does not fit the 4-byte length of the file format.
    #[error("the encoded update has {len} bytes; a record holds at most 4 GiB")]
    TooLarge {
        /// The encoded size.
        len: usize,
    },
    /// The payload is larger than allowed.
    #[error("payload of {len} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// Why a record's bytes do not decode into a record: corruption.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The bytes are not valid protobuf of the record type.
    #[error("failed to deserialize record: {0}")]
    Decode(String),
    /// A field the record needs is absent (prost does not enforce proto2
    /// `required`; we do).
    #[error("record is missing required field '{0}'")]
    MissingField(&'static str),
    /// The record's checksum does not match its bytes.
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The CRC32C stored in the record.
        stored: u32,
        /// The CRC32C of the record's bytes.
        computed: u32,
    },
    /// The record type is not UPDATE or ACK.
    #[error("record has unknown type {0}")]
    UnknownType(i32),
    /// The update inside an UPDATE record is not acceptable.
    #[error("record holds an invalid update: {0}")]
    InvalidUpdate(#[from] InvalidUpdate),
}

impl From<prost::DecodeError> for RecordError {
    fn from(err: prost::DecodeError) -> Self {
        RecordError::Decode(err.to_string())
    }
}

/// The type parameters and rules of one kind of status update.
///
/// Implementations are zero-sized markers; everything is an associated
/// function so that the manager and stream actors stay generic.
pub trait UpdateKind: fmt::Debug + Sized + Unpin + Send + Sync + 'static {
    /// The stream key.
    type StreamId: Clone + Eq + Hash + Ord + fmt::Debug + fmt::Display + Send + Sync + Unpin;
    /// The update message.
    type Update: Clone + fmt::Debug + PartialEq + Send + Sync + Unpin;

    /// Short name of the kind: `operation`, `task` or `native`.
    const KIND: &'static str;
    /// How messages name an update of this kind, e.g. `operation status update`.
    const LABEL: &'static str;

    /// The stream the update belongs to.
    fn stream_id(update: &Self::Update) -> Result<Self::StreamId, InvalidUpdate>;
    /// The raw status uuid bytes, `None` if absent.
    fn raw_status_uuid(update: &Self::Update) -> Option<&[u8]>;
    /// The framework the update belongs to, if any.
    fn framework_id(update: &Self::Update) -> Option<&str>;
    /// Whether acknowledging this update ends its stream.
    fn is_terminal(update: &Self::Update) -> bool;
    /// Whether `latest_status` (or the kind's equivalent) is set.
    fn has_latest_status(update: &Self::Update) -> bool;
    /// Sets the latest-status field of `update` from the status of `newest`,
    /// or from its own status when `newest` is `None` (it is the newest).
    fn set_latest_status(update: &mut Self::Update, newest: Option<&Self::Update>);
    /// The state's name, for logs and `inspect` (enum name for the Mesos kinds).
    fn state_name(update: &Self::Update) -> String;
    /// Kind-specific validation of a live update, beyond the shared checks of
    /// [`validate_update`].
    fn validate(_update: &Self::Update) -> Result<(), InvalidUpdate> {
        Ok(())
    }
    /// Appends the encoded record (no framing) to `out`.
    fn encode_record(record: RecordRef<'_, Self::Update>, out: &mut Vec<u8>);
    /// Decodes one record body, enforcing every field the record needs.
    fn decode_record(bytes: &[u8]) -> Result<Record<Self::Update>, RecordError>;
}

/// Field numbers shared by every kind's record message: `type` (1, varint:
/// 0 = UPDATE, 1 = ACK), `update` (2, message), `uuid` (3).
const TYPE_FIELD: u32 = 1;
const UPDATE_FIELD: u32 = 2;
const UUID_FIELD: u32 = 3;

/// Appends an UPDATE record (`type` = 0 always written, as proto2 `required`
/// does, then the update as field 2) without copying the update.
pub(crate) fn encode_update_record<M: prost::Message>(update: &M, out: &mut Vec<u8>) {
    prost::encoding::int32::encode(TYPE_FIELD, &0, out);
    prost::encoding::message::encode(UPDATE_FIELD, update, out);
}

/// Appends an ACK record (`type` = 1, then the uuid as field 3: a `UUID`
/// message for the operation kind, raw bytes for the others).
pub(crate) fn encode_ack_record(uuid: StatusUuid, as_message: bool, out: &mut Vec<u8>) {
    prost::encoding::int32::encode(TYPE_FIELD, &1, out);
    let bytes = uuid.as_bytes().to_vec();
    if as_message {
        prost::encoding::message::encode(
            UUID_FIELD,
            &crate::proto::mesos::Uuid { value: bytes },
            out,
        );
    } else {
        prost::encoding::bytes::encode(UUID_FIELD, &bytes, out);
    }
}

/// Parses a status uuid from raw bytes: exactly 16 bytes, not all zero.
pub fn parse_status_uuid(bytes: &[u8]) -> Result<StatusUuid, InvalidUpdate> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| InvalidUpdate::UuidLength { len: bytes.len() })?;
    let uuid = Uuid::from_bytes(array);
    if uuid.is_nil() {
        return Err(InvalidUpdate::NilUuid);
    }
    Ok(uuid)
}

/// The status uuid of an update, validated.
pub fn status_uuid<K: UpdateKind>(update: &K::Update) -> Result<StatusUuid, InvalidUpdate> {
    parse_status_uuid(K::raw_status_uuid(update).ok_or(InvalidUpdate::MissingUuid)?)
}

/// Everything the manager learns from a valid live update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateKey<K: UpdateKind> {
    /// The stream it belongs to.
    pub stream: K::StreamId,
    /// Its status uuid.
    pub uuid: StatusUuid,
}

/// The checks every live update passes before it reaches a stream: no
/// `latest_status`, a valid stream id and status uuid, and the kind's own
/// rules. Nothing is created for an update that fails them.
pub fn validate_update<K: UpdateKind>(update: &K::Update) -> Result<UpdateKey<K>, InvalidUpdate> {
    let stream = K::stream_id(update)?;
    if K::has_latest_status(update) {
        return Err(InvalidUpdate::LatestStatusSet);
    }
    K::validate(update)?;
    let uuid = status_uuid::<K>(update)?;
    Ok(UpdateKey { stream, uuid })
}

/// Encodes a record and frames it (u32 LE length + body) into `out`.
///
/// A record too large for the u32 length leaves `out` as it was.
pub fn encode_framed<K: UpdateKind>(
    record: RecordRef<'_, K::Update>,
    out: &mut Vec<u8>,
) -> Result<(), InvalidUpdate> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    K::encode_record(record, out);
    let body = out.len() - start - 4;
    match u32::try_from(body) {
        Ok(len) => {
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(InvalidUpdate::TooLarge { len: body })
        }
    }
}

/// Best-effort names of an update's stream and uuid for error messages.
pub(crate) fn describe_update<K: UpdateKind>(update: &K::Update) -> (String, String) {
    let stream = K::stream_id(update)
        .map_or_else(|_| "<invalid stream id>".to_string(), |id| id.to_string());
    let uuid = match K::raw_status_uuid(update) {
        None => "<missing>".to_string(),
        Some(raw) => match <[u8; 16]>::try_from(raw) {
            Ok(bytes) => uuid::Uuid::from_bytes(bytes).to_string(),
            Err(_) => format!("<{} bytes>", raw.len()),
        },
    };
    (stream, uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_uuid_rules() {
        let cases: &[(&[u8], Result<(), InvalidUpdate>)] = &[
            (&[7; 16], Ok(())),
            (&[0; 16], Err(InvalidUpdate::NilUuid)),
            (&[], Err(InvalidUpdate::UuidLength { len: 0 })),
            (&[1; 15], Err(InvalidUpdate::UuidLength { len: 15 })),
            (&[1; 17], Err(InvalidUpdate::UuidLength { len: 17 })),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            let got = parse_status_uuid(bytes).map(|_| ());
            assert_eq!(&got, want, "case {i}: {bytes:?}");
        }
    }
}
