//! The `task` kind: Mesos's task status updates (`task.updates` files).
//!
//! Update: `mesos.internal.StatusUpdate`; record:
//! `mesos.internal.StatusUpdateRecord`, whose ACK carries the raw 16 uuid
//! bytes (not a `UUID` message); stream id: (framework id, task id).
//!
//! The status uuid is the update's top-level `uuid` (the field Mesos's task
//! status update manager keys on), falling back to `status.uuid` when the
//! top-level one is absent. The latest-status field of a forward is
//! `latest_state`: the state of the newest queued update. Terminal states
//! are FINISHED, FAILED, KILLED, LOST, ERROR, DROPPED, GONE and
//! GONE_BY_OPERATOR.

use std::fmt;

use prost::Message;

use super::operation::has_varint_field_1;
use super::{parse_status_uuid, InvalidUpdate, Record, RecordError, RecordRef, UpdateKind};
use crate::proto::mesos::internal::{
    status_update_record::Type as RecordType, StatusUpdate, StatusUpdateRecord,
};
use crate::proto::mesos::TaskState;

/// Marker type of the task kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Task;

/// A task stream's key: the framework and the task within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskStreamId {
    /// The framework's id.
    pub framework_id: String,
    /// The task's id within the framework.
    pub task_id: String,
}

impl fmt::Display for TaskStreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} of framework {}",
            self.task_id, self.framework_id
        )
    }
}

impl UpdateKind for Task {
    type StreamId = TaskStreamId;
    type Update = StatusUpdate;

    const KIND: &'static str = "task";
    const LABEL: &'static str = "task status update";

    fn stream_id(update: &Self::Update) -> Result<TaskStreamId, InvalidUpdate> {
        let framework_id = update
            .framework_id
            .as_ref()
            .map(|f| f.value.clone())
            .filter(|f| !f.is_empty())
            .ok_or_else(|| InvalidUpdate::StreamId("the update has no 'framework_id'".into()))?;
        let task_id = update
            .status
            .as_ref()
            .and_then(|s| s.task_id.as_ref())
            .map(|t| t.value.clone())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| InvalidUpdate::StreamId("the update has no 'status.task_id'".into()))?;
        Ok(TaskStreamId {
            framework_id,
            task_id,
        })
    }

    fn raw_status_uuid(update: &Self::Update) -> Option<&[u8]> {
        update
            .uuid
            .as_deref()
            .or_else(|| update.status.as_ref()?.uuid.as_deref())
    }

    fn framework_id(update: &Self::Update) -> Option<&str> {
        update.framework_id.as_ref().map(|f| f.value.as_str())
    }

    fn is_terminal(update: &Self::Update) -> bool {
        update.status.as_ref().is_some_and(|s| {
            matches!(
                TaskState::try_from(s.state),
                Ok(TaskState::TaskFinished
                    | TaskState::TaskFailed
                    | TaskState::TaskKilled
                    | TaskState::TaskLost
                    | TaskState::TaskError
                    | TaskState::TaskDropped
                    | TaskState::TaskGone
                    | TaskState::TaskGoneByOperator)
            )
        })
    }

    fn has_latest_status(update: &Self::Update) -> bool {
        update.latest_state.is_some()
    }

    fn set_latest_status(update: &mut Self::Update, newest: Option<&Self::Update>) {
        update.latest_state = newest.unwrap_or(update).status.as_ref().map(|s| s.state);
    }

    fn state_name(update: &Self::Update) -> String {
        match update.status.as_ref() {
            Some(status) => state_name(status.state),
            None => "NO_STATUS".to_string(),
        }
    }

    fn validate(update: &Self::Update) -> Result<(), InvalidUpdate> {
        let status = update.status.as_ref().ok_or(InvalidUpdate::MissingStatus)?;
        if TaskState::try_from(status.state).is_err() {
            return Err(InvalidUpdate::State(format!(
                "unknown task state {}",
                status.state
            )));
        }
        Ok(())
    }

    fn encode_record(record: RecordRef<'_, Self::Update>, out: &mut Vec<u8>) {
        match record {
            RecordRef::Update(update) => super::encode_update_record(update, out),
            RecordRef::Ack(uuid) => super::encode_ack_record(uuid, false, out),
        }
    }

    fn decode_record(bytes: &[u8]) -> Result<Record<Self::Update>, RecordError> {
        let record = StatusUpdateRecord::decode(bytes)?;
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
                Ok(Record::Ack(parse_status_uuid(&uuid)?))
            }
            Err(_) => Err(RecordError::UnknownType(record.r#type)),
        }
    }
}

/// The enum name of a task state number, as Mesos prints it.
pub fn state_name(state: i32) -> String {
    match TaskState::try_from(state) {
        Ok(state) => state.as_str_name().to_string(),
        Err(_) => format!("UNKNOWN_TASK_STATE({state})"),
    }
}

fn check_required_update(update: &StatusUpdate) -> Result<(), RecordError> {
    update
        .framework_id
        .as_ref()
        .ok_or(RecordError::MissingField("update.framework_id"))?;
    let status = update
        .status
        .as_ref()
        .ok_or(RecordError::MissingField("update.status"))?;
    status
        .task_id
        .as_ref()
        .ok_or(RecordError::MissingField("update.status.task_id"))?;
    TaskState::try_from(status.state)
        .map_err(|_| RecordError::Decode(format!("unknown task state {}", status.state)))?;
    let raw = Task::raw_status_uuid(update).ok_or(RecordError::MissingField("update.uuid"))?;
    parse_status_uuid(raw)?;
    Ok(())
}
