//! The `native` kind: the service's own status updates (API.md §1).
//!
//! Update: `status_update_manager.v1.StatusUpdate`; record:
//! `status_update_manager.v1.NativeRecord`; stream id: any string of
//! 1..=256 bytes of UTF-8 without NUL. The producer says which status is
//! terminal with the explicit `terminal` flag; states are free-form names.

use prost::Message;

use super::{parse_status_uuid, InvalidUpdate, Record, RecordError, RecordRef, UpdateKind};
use crate::proto::status_update_manager::v1::{
    native_record::Type as RecordType, NativeRecord, StatusUpdate,
};

/// Longest stream id accepted, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 256;

/// Marker type of the native kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

/// Checks a native stream id: 1..=256 bytes, no NUL.
pub fn validate_stream_id(id: &str) -> Result<(), InvalidUpdate> {
    if id.is_empty() {
        return Err(InvalidUpdate::StreamId("stream_id is empty".into()));
    }
    if id.len() > MAX_STREAM_ID_BYTES {
        return Err(InvalidUpdate::StreamId(format!(
            "stream_id has {} bytes; at most {MAX_STREAM_ID_BYTES} are allowed",
            id.len()
        )));
    }
    if id.contains('\0') {
        return Err(InvalidUpdate::StreamId(
            "stream_id contains a NUL byte".into(),
        ));
    }
    Ok(())
}

impl UpdateKind for Native {
    type StreamId = String;
    type Update = StatusUpdate;

    const KIND: &'static str = "native";
    const LABEL: &'static str = "status update";

    fn stream_id(update: &Self::Update) -> Result<String, InvalidUpdate> {
        validate_stream_id(&update.stream_id)?;
        Ok(update.stream_id.clone())
    }

    fn raw_status_uuid(update: &Self::Update) -> Option<&[u8]> {
        update.status.as_ref().map(|s| s.uuid.as_slice())
    }

    fn framework_id(update: &Self::Update) -> Option<&str> {
        Some(update.framework_id.as_str()).filter(|f| !f.is_empty())
    }

    fn is_terminal(update: &Self::Update) -> bool {
        update.status.as_ref().is_some_and(|s| s.terminal)
    }

    fn has_latest_status(update: &Self::Update) -> bool {
        update.latest_status.is_some()
    }

    fn set_latest_status(update: &mut Self::Update, newest: &Self::Update) {
        update.latest_status = newest.status.clone();
    }

    fn state_name(update: &Self::Update) -> String {
        update
            .status
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_default()
    }

    fn validate(update: &Self::Update) -> Result<(), InvalidUpdate> {
        let status = update.status.as_ref().ok_or(InvalidUpdate::MissingStatus)?;
        if status.state.is_empty() {
            return Err(InvalidUpdate::State(
                "state is empty; expected a state name".into(),
            ));
        }
        Ok(())
    }

    fn encode_record(record: RecordRef<'_, Self::Update>, out: &mut Vec<u8>) {
        let record = match record {
            RecordRef::Update(update) => NativeRecord {
                r#type: RecordType::Update as i32,
                update: Some(update.clone()),
                uuid: Vec::new(),
            },
            RecordRef::Ack(uuid) => NativeRecord {
                r#type: RecordType::Ack as i32,
                update: None,
                uuid: uuid.as_bytes().to_vec(),
            },
        };
        record.encode_raw(out);
    }

    fn decode_record(bytes: &[u8]) -> Result<Record<Self::Update>, RecordError> {
        let record = NativeRecord::decode(bytes)?;
        match RecordType::try_from(record.r#type) {
            Ok(RecordType::Update) => {
                let update = record.update.ok_or(RecordError::MissingField("update"))?;
                if update.status.is_none() {
                    return Err(RecordError::MissingField("update.status"));
                }
                super::validate_update::<Native>(&update)?;
                Ok(Record::Update(update))
            }
            Ok(RecordType::Ack) => {
                if record.update.is_some() {
                    return Err(RecordError::Decode("ACK record carries an update".into()));
                }
                Ok(Record::Ack(parse_status_uuid(&record.uuid)?))
            }
            Err(_) => Err(RecordError::UnknownType(record.r#type)),
        }
    }
}
