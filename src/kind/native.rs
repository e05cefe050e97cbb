//! The `native` kind: the service's own status updates (API.md §1).
//!
//! Update: `status_update_manager.v1.StatusUpdate`; record:
//! `status_update_manager.v1.NativeRecord`; stream id: any string of
//! 1..=256 bytes of UTF-8 without NUL. The producer says which status is
//! terminal with the explicit `terminal` flag; states are free-form names.
//!
//! **Integrity.** A native record body is the encoded `NativeRecord`
//! followed by the CRC32C (Castagnoli) of those bytes, 4 bytes little-endian.
//! Any single flipped bit in a record — or a length prefix that moves the
//! record boundary — fails the check and is read as corruption, never
//! replayed as data. (The Mesos kinds keep Mesos's format, which has no
//! checksum.)

use prost::Message;

use super::{parse_status_uuid, InvalidUpdate, Record, RecordError, RecordRef, UpdateKind};
use crate::proto::status_update_manager::v1::{
    native_record::Type as RecordType, NativeRecord, StatusUpdate,
};

/// Size of the CRC32C trailer of a native record.
pub const CRC_BYTES: usize = 4;

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

    fn set_latest_status(update: &mut Self::Update, newest: Option<&Self::Update>) {
        update.latest_status = newest.unwrap_or(update).status.clone();
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
        let start = out.len();
        match record {
            RecordRef::Update(update) => super::encode_update_record(update, out),
            RecordRef::Ack(uuid) => super::encode_ack_record(uuid, false, out),
        }
        let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
    }

    fn decode_record(bytes: &[u8]) -> Result<Record<Self::Update>, RecordError> {
        let split = bytes.len().checked_sub(CRC_BYTES).ok_or_else(|| {
            RecordError::Decode(format!("record of {} bytes has no checksum", bytes.len()))
        })?;
        let (body, trailer) = bytes.split_at(split);
        let stored = <[u8; CRC_BYTES]>::try_from(trailer).map_or(0, u32::from_le_bytes);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(RecordError::Checksum { stored, computed });
        }
        let record = NativeRecord::decode(body)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::status_update_manager::v1::Status;

    fn update() -> StatusUpdate {
        StatusUpdate {
            stream_id: "stream-a".into(),
            framework_id: "fw".into(),
            status: Some(Status {
                uuid: vec![7; 16],
                state: "RUNNING".into(),
                payload: b"opaque".to_vec(),
                ..Status::default()
            }),
            latest_status: None,
        }
    }

    #[test]
    fn records_round_trip() {
        let u = update();
        for record in [
            RecordRef::Update(&u),
            RecordRef::Ack(uuid::Uuid::from_bytes([9; 16])),
        ] {
            let mut bytes = Vec::new();
            Native::encode_record(record, &mut bytes);
            let decoded = Native::decode_record(&bytes).unwrap();
            match (record, decoded) {
                (RecordRef::Update(a), Record::Update(b)) => assert_eq!(a, &b),
                (RecordRef::Ack(a), Record::Ack(b)) => assert_eq!(a, b),
                (sent, got) => panic!("{sent:?} came back as {got:?}"),
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let u = update();
        for record in [
            RecordRef::Update(&u),
            RecordRef::Ack(uuid::Uuid::from_bytes([9; 16])),
        ] {
            let mut bytes = Vec::new();
            Native::encode_record(record, &mut bytes);
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    Native::decode_record(&flipped).is_err(),
                    "bit {bit} of {record:?}"
                );
            }
        }
    }

    #[test]
    fn short_records_are_corrupt() {
        for len in 0..CRC_BYTES {
            assert!(Native::decode_record(&vec![0; len]).is_err(), "{len} bytes");
        }
    }
}
