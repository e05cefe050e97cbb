//! The `operation` kind: Mesos's operation status updates.
//!
//! Update: `mesos.internal.UpdateOperationStatusMessage`; record:
//! `mesos.internal.UpdateOperationStatusRecord`; stream id: the operation's
//! internal uuid (`operation_uuid`, not the framework-supplied operation id).
//! Terminal states are Mesos's `isTerminalState`: FINISHED, FAILED, ERROR,
//! DROPPED and GONE_BY_OPERATOR.

use prost::Message;
use uuid::Uuid;

use super::{parse_status_uuid, InvalidUpdate, Record, RecordError, RecordRef, UpdateKind};
use crate::proto::mesos;
use crate::proto::mesos::internal::{
    update_operation_status_record::Type as RecordType, UpdateOperationStatusMessage,
    UpdateOperationStatusRecord,
};
use mesos::OperationState;

/// Marker type of the operation kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Operation;

impl UpdateKind for Operation {
    type StreamId = Uuid;
    type Update = UpdateOperationStatusMessage;

    const KIND: &'static str = "operation";
    const LABEL: &'static str = "operation status update";

    fn stream_id(update: &Self::Update) -> Result<Uuid, InvalidUpdate> {
        let raw = update
            .operation_uuid
            .as_ref()
            .ok_or_else(|| InvalidUpdate::StreamId("the update has no 'operation_uuid'".into()))?;
        parse_status_uuid(&raw.value)
            .map_err(|err| InvalidUpdate::StreamId(format!("operation_uuid: {err}")))
    }

    fn raw_status_uuid(update: &Self::Update) -> Option<&[u8]> {
        update
            .status
            .as_ref()?
            .uuid
            .as_ref()
            .map(|u| u.value.as_slice())
    }

    fn framework_id(update: &Self::Update) -> Option<&str> {
        update.framework_id.as_ref().map(|f| f.value.as_str())
    }

    fn is_terminal(update: &Self::Update) -> bool {
        update.status.as_ref().is_some_and(|s| {
            matches!(
                OperationState::try_from(s.state),
                Ok(OperationState::OperationFinished
                    | OperationState::OperationFailed
                    | OperationState::OperationError
                    | OperationState::OperationDropped
                    | OperationState::OperationGoneByOperator)
            )
        })
    }

    fn has_latest_status(update: &Self::Update) -> bool {
        update.latest_status.is_some()
    }

    fn set_latest_status(update: &mut Self::Update, newest: Option<&Self::Update>) {
        update.latest_status = newest.unwrap_or(update).status.clone();
    }

    fn state_name(update: &Self::Update) -> String {
        match update.status.as_ref() {
            Some(status) => state_name(status.state),
            None => "NO_STATUS".to_string(),
        }
    }

    fn validate(update: &Self::Update) -> Result<(), InvalidUpdate> {
        let status = update.status.as_ref().ok_or(InvalidUpdate::MissingStatus)?;
        if OperationState::try_from(status.state).is_err() {
            return Err(InvalidUpdate::State(format!(
                "unknown operation state {}",
                status.state
            )));
        }
        Ok(())
    }

    fn encode_record(record: RecordRef<'_, Self::Update>, out: &mut Vec<u8>) {
        match record {
            RecordRef::Update(update) => super::encode_update_record(update, out),
            RecordRef::Ack(uuid) => super::encode_ack_record(uuid, true, out),
        }
    }

    fn decode_record(bytes: &[u8]) -> Result<Record<Self::Update>, RecordError> {
        let record = UpdateOperationStatusRecord::decode(bytes)?;
        // `type` is required: a body without field 1 decodes to 0 in prost,
        // so look for the field itself.
        if !has_varint_field_1(bytes) {
            return Err(RecordError::MissingField("type"));
        }
        match RecordType::try_from(record.r#type) {
            Ok(RecordType::Update) => {
                let update = record.update.ok_or(RecordError::MissingField("update"))?;
                check_required_update(&update)?;
                Ok(Record::Update(update))
            }
            Ok(RecordType::Ack) => {
                let uuid = record.uuid.ok_or(RecordError::MissingField("uuid"))?;
                Ok(Record::Ack(parse_status_uuid(&uuid.value)?))
            }
            Err(_) => Err(RecordError::UnknownType(record.r#type)),
        }
    }
}

/// The enum name of an operation state number, as Mesos prints it.
pub fn state_name(state: i32) -> String {
    match OperationState::try_from(state) {
        Ok(state) => state.as_str_name().to_string(),
        Err(_) => format!("UNKNOWN_OPERATION_STATE({state})"),
    }
}

/// The required fields of an update read back from a file: Mesos's parser
/// refuses a record without them, and the manager needs them.
fn check_required_update(update: &UpdateOperationStatusMessage) -> Result<(), RecordError> {
    let status = update
        .status
        .as_ref()
        .ok_or(RecordError::MissingField("update.status"))?;
    OperationState::try_from(status.state)
        .map_err(|_| RecordError::Decode(format!("unknown operation state {}", status.state)))?;
    let uuid = status
        .uuid
        .as_ref()
        .ok_or(RecordError::MissingField("update.status.uuid"))?;
    parse_status_uuid(&uuid.value)?;
    Operation::stream_id(update)?;
    Ok(())
}

/// Whether a protobuf body carries field 1 as a varint at its top level.
///
/// prost fills a missing required scalar with its default, so presence of the
/// record `type` can only be seen in the bytes. Mesos always writes it first
/// (`08 00` or `08 01`), but any position is accepted.
pub(crate) fn has_varint_field_1(mut bytes: &[u8]) -> bool {
    use prost::encoding::{decode_key, decode_varint, WireType};
    // Malformed input only needs a "no"; the error values are never shown.
    while !bytes.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut bytes) else {
            return false;
        };
        if tag == 1 && wire_type == WireType::Varint {
            return true;
        }
        let skipped = match wire_type {
            WireType::Varint => decode_varint(&mut bytes)
                .map(|_| ())
                .map_err(|_| underflow()),
            WireType::SixtyFourBit => advance(&mut bytes, 8),
            WireType::ThirtyTwoBit => advance(&mut bytes, 4),
            WireType::LengthDelimited => decode_varint(&mut bytes)
                .map_err(|_| underflow())
                .and_then(|len| {
                    usize::try_from(len)
                        .map_err(|_| underflow())
                        .and_then(|len| advance(&mut bytes, len))
                }),
            WireType::StartGroup | WireType::EndGroup => return false,
        };
        if skipped.is_err() {
            return false;
        }
    }
    false
}

struct Underflow;

fn underflow() -> Underflow {
    Underflow
}

fn advance(bytes: &mut &[u8], n: usize) -> Result<(), Underflow> {
    match bytes.get(n..) {
        Some(rest) => {
            *bytes = rest;
            Ok(())
        }
        None => Err(underflow()),
    }
}
