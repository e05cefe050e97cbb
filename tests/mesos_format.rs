//! C4: files written through the manager are byte-for-byte what a Mesos agent writes and
//! reads (mesos-reference §3): the worked example of §3.4, required fields encoded even when
//! 0, opaque nested data kept exactly, and the task kind's records (raw-uuid ACK).
mod common;

use std::fs;

use actix::Addr;
use uuid::Uuid;

use common::*;
use status_update_manager::kind::{
    encode_framed, Operation, Record, RecordError, RecordRef, Task, TaskStreamId, UpdateKind,
};
use status_update_manager::messages::{Acknowledge, Update, UpdateOutcome};
use status_update_manager::proto::mesos;
use status_update_manager::proto::mesos::internal::UpdateOperationStatusMessage;
use status_update_manager::proto::mesos::{OperationState, TaskState};
use status_update_manager::store::framing::{FrameReader, Next};
use status_update_manager::StatusUpdateManager;

/// O: the operation uuid of the worked example.
const O: Uuid = Uuid::from_u128(0x0f0e_0d0c_0b0a_4908_8706_0504_0302_0100);
/// S: the status uuid of the worked example.
const S: Uuid = Uuid::from_u128(0x5555_aaaa_5555_4aaa_9555_aaaa_5555_aaaa);

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A protobuf varint.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// A length-delimited field: key (field number, wire type 2), length, payload.
fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
    cat(&[&[field << 3 | 2], &varint(payload.len()), payload])
}

/// A framed record: u32 LE length, body.
fn framed(body: &[u8]) -> Vec<u8> {
    cat(&[&(body.len() as u32).to_le_bytes(), body])
}

/// The update of the worked example: operation uuid O, state, status uuid S.
fn example_update(state: OperationState, framework: Option<&str>) -> UpdateOperationStatusMessage {
    let mut update = op_update(O, state, framework);
    if let Some(status) = update.status.as_mut() {
        status.uuid = Some(mesos::Uuid {
            value: S.as_bytes().to_vec(),
        });
    }
    update
}

/// The worked example's UPDATE record (52 bytes without a framework) and ACK record (26).
fn example_bytes(state: u8, framework: Option<&str>) -> Vec<u8> {
    let framework = framework
        .map(|f| ld(1, &ld(1, f.as_bytes())))
        .unwrap_or_default();
    let status = cat(&[&[0x10, state], &ld(5, &ld(1, S.as_bytes()))]);
    let update = cat(&[&framework, &ld(3, &status), &ld(5, &ld(1, O.as_bytes()))]);
    let update_record = framed(&cat(&[&[0x08, 0x00], &ld(2, &update)]));
    let ack_record = framed(&cat(&[&[0x08, 0x01], &ld(3, &ld(1, S.as_bytes()))]));
    cat(&[&update_record, &ack_record])
}

async fn checkpoint<K: UpdateKind>(manager: &Addr<StatusUpdateManager<K>>, update: K::Update) {
    let outcome = manager
        .send(Update {
            update,
            checkpoint: true,
        })
        .await
        .expect("manager mailbox")
        .expect("update accepted");
    assert_eq!(outcome, UpdateOutcome::Accepted);
}

async fn acknowledge<K: UpdateKind>(
    manager: &Addr<StatusUpdateManager<K>>,
    stream: K::StreamId,
    uuid: Uuid,
) -> bool {
    manager
        .send(Acknowledge::<K> { stream, uuid })
        .await
        .expect("manager mailbox")
        .expect("ack accepted")
        .stream_terminated
}

/// Writes `update` and its ack through an operation manager; returns the file's bytes.
async fn write_operation(update: UpdateOperationStatusMessage) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start::<Operation>(inline_config(), operation_paths(dir.path()));
    let op = Operation::stream_id(&update).unwrap();
    let uuid = op_status_uuid(&update);
    checkpoint(&manager, update).await;
    recv_or_fail(&mut rx, "first forward").await;
    acknowledge(&manager, op, uuid).await;
    fs::read(operation_path(dir.path(), &op)).unwrap()
}

#[test]
fn the_worked_example_is_52_plus_26_bytes() {
    let bytes = example_bytes(2, None);
    let want = cat(&[
        &[
            0x30, 0, 0, 0, 0x08, 0x00, 0x12, 0x2c, 0x1a, 0x16, 0x10, 0x02,
        ],
        &[0x2a, 0x12, 0x0a, 0x10],
        S.as_bytes(),
        &[0x2a, 0x12, 0x0a, 0x10],
        O.as_bytes(),
        &[0x16, 0, 0, 0, 0x08, 0x01, 0x1a, 0x12, 0x0a, 0x10],
        S.as_bytes(),
    ]);
    assert_eq!(hex(&bytes), hex(&want), "the helper spells §3.4");
    assert_eq!(bytes.len(), 52 + 26);
}

#[actix::test]
async fn manager_writes_the_worked_example() {
    tokio::time::pause();
    let bytes = write_operation(example_update(OperationState::OperationFinished, None)).await;
    assert_eq!(hex(&bytes), hex(&example_bytes(2, None)));

    let bytes = write_operation(example_update(
        OperationState::OperationFinished,
        Some("frameworkId"),
    ))
    .await;
    let want = example_bytes(2, Some("frameworkId"));
    assert_eq!(hex(&bytes), hex(&want));
    // Field 1 (framework_id) comes first inside the update.
    let framework: &[u8] = &[0x0a, 0x0d, 0x0a, 0x0b, b'f', b'r', b'a', b'm', b'e', b'w'];
    assert_eq!(&bytes[8..18], framework, "{}", hex(&bytes));
}

#[actix::test]
async fn required_enums_are_encoded_even_when_0() {
    tokio::time::pause();
    // OPERATION_UNSUPPORTED = 0: the status carries `10 00`, the record type UPDATE `08 00`.
    let bytes = write_operation(example_update(OperationState::OperationUnsupported, None)).await;
    assert_eq!(hex(&bytes), hex(&example_bytes(0, None)));
    assert_eq!(&bytes[4..6], &[0x08, 0x00]);
    assert_eq!(&bytes[8..12], &[0x1a, 0x16, 0x10, 0x00]);

    // TASK_STARTING = 0 in a task record.
    let update = task_update("fw", "t", TaskState::TaskStarting);
    let mut body = Vec::new();
    Task::encode_record(RecordRef::Update(&update), &mut body);
    assert_eq!(&body[..2], &[0x08, 0x00]);
    let status = ld(4, &mesos_status_bytes(&update));
    assert!(
        body.windows(status.len()).any(|w| w == status.as_slice()),
        "{}",
        hex(&body)
    );

    // Without its `type`, a record is one Mesos cannot parse: corrupt, not an UPDATE.
    let update = example_update(OperationState::OperationPending, None);
    let mut body = Vec::new();
    Operation::encode_record(RecordRef::Update(&update), &mut body);
    assert_eq!(
        Operation::decode_record(&body[2..]),
        Err(RecordError::MissingField("type"))
    );
}

/// TaskStatus bytes of the helper's update, spelled by hand: task_id, `10 00`, timestamp, uuid.
fn mesos_status_bytes(update: &mesos::internal::StatusUpdate) -> Vec<u8> {
    let status = update.status.as_ref().unwrap();
    let task = status.task_id.as_ref().unwrap().value.as_bytes();
    let timestamp = status.timestamp.unwrap().to_le_bytes();
    cat(&[
        &ld(1, &ld(1, task)),
        &[0x10, 0x00],
        &[0x31],
        &timestamp,
        &ld(11, status.uuid.as_ref().unwrap()),
    ])
}

/// A `mesos.Resource` as Mesos serializes it, fields this crate never models included:
/// name "cpus", type SCALAR (0), scalar { value: 1.5 }, role "*", provider_id { "rp" }.
fn resource(name: &str) -> Vec<u8> {
    cat(&[
        &ld(1, name.as_bytes()),
        &[0x10, 0x00],
        &ld(3, &cat(&[&[0x09], &1.5f64.to_le_bytes()])),
        &ld(6, b"*"),
        &ld(12, &ld(1, b"rp")),
    ])
}

/// An UPDATE record with every field of the operation messages set, resources included.
fn full_operation_record() -> Vec<u8> {
    let status = cat(&[
        &ld(1, &ld(1, b"op-1")),
        &[0x10, 0x01],
        &ld(3, b"converted"),
        &ld(4, &resource("cpus")),
        &ld(4, &resource("mem")),
        &ld(5, &ld(1, S.as_bytes())),
        &ld(6, &ld(1, b"agent-1")),
        &ld(7, &ld(1, b"rp-1")),
    ]);
    let update = cat(&[
        &ld(1, &ld(1, b"fw-a")),
        &ld(2, &ld(1, b"agent-1")),
        &ld(3, &status),
        &ld(5, &ld(1, O.as_bytes())),
    ]);
    framed(&cat(&[&[0x08, 0x00], &ld(2, &update)]))
}

#[actix::test]
async fn unknown_nested_data_survives_decode_and_encode() {
    tokio::time::pause();
    let original = full_operation_record();
    let update = match Operation::decode_record(&original[4..]) {
        Ok(Record::Update(update)) => update,
        other => panic!("not an update: {other:?}"),
    };
    let status = update.status.as_ref().unwrap();
    assert_eq!(
        status.converted_resources,
        [resource("cpus"), resource("mem")]
    );
    let mut encoded = Vec::new();
    encode_framed::<Operation>(RecordRef::Update(&update), &mut encoded).unwrap();
    assert_eq!(hex(&encoded), hex(&original), "decode → encode");

    // The manager writes the decoded update back byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let (manager, _rx) = start::<Operation>(inline_config(), operation_paths(dir.path()));
    checkpoint(&manager, update).await;
    let written = fs::read(operation_path(dir.path(), &O)).unwrap();
    assert_eq!(hex(&written), hex(&original), "through the manager");
}

/// The complete frames of a file.
fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut reader = FrameReader::new(bytes);
    let mut out = Vec::new();
    loop {
        match reader.next_frame() {
            Next::Record { body, .. } => out.push(body),
            Next::End => return out,
            other => panic!("not a clean file: {other:?}"),
        }
    }
}

#[actix::test]
async fn task_records_decode_back_and_ack_carries_raw_uuid() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start::<Task>(inline_config(), task_paths(dir.path()));
    let update = task_update("fw-1", "task-1", TaskState::TaskRunning);
    let uuid = task_uuid(&update);
    let id = TaskStreamId {
        framework_id: "fw-1".into(),
        task_id: "task-1".into(),
    };
    checkpoint(&manager, update.clone()).await;
    recv_or_fail(&mut rx, "first forward").await;
    assert!(!acknowledge(&manager, id.clone(), uuid).await);

    let bytes = fs::read(task_path(dir.path(), &id)).unwrap();
    let records = frames(&bytes);
    assert_eq!(records.len(), 2, "{}", hex(&bytes));
    assert_eq!(&records[0][..3], &[0x08, 0x00, 0x12]);
    assert_eq!(Task::decode_record(records[0]), Ok(Record::Update(update)));
    assert_eq!(Task::decode_record(records[1]), Ok(Record::Ack(uuid)));
    let ack = cat(&[&[0x14, 0, 0, 0, 0x08, 0x01, 0x1a, 0x10], uuid.as_bytes()]);
    assert_eq!(hex(&bytes[bytes.len() - 24..]), hex(&ack));
}

/// Decodes the first record of a fixture, which must be an UPDATE.
fn first_update<K: UpdateKind>(fixture: &[u8]) -> K::Update {
    match K::decode_record(first_body(fixture)) {
        Ok(Record::Update(update)) => update,
        other => panic!("not an update: {other:?}"),
    }
}

fn first_body(bytes: &[u8]) -> &[u8] {
    match FrameReader::new(bytes).next_frame() {
        Next::Record { body, .. } => body,
        other => panic!("no first record: {other:?}"),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    fs::read(fixtures_dir().join(name)).unwrap()
}

#[actix::test]
async fn manager_rewrites_mesos_written_files_identically() {
    tokio::time::pause();
    // op_terminated: UPDATE(FINISHED) + ACK, 104 bytes.
    let want = fixture("op_terminated.updates");
    let update = first_update::<Operation>(&want);
    let written = write_operation(update).await;
    assert_eq!(hex(&written), hex(&want), "op_terminated.updates");

    // task_running: UPDATE(STARTING) + ACK, the first 127 bytes.
    let want = fixture("task_running.updates");
    let update = first_update::<Task>(&want);
    let id = Task::stream_id(&update).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut rx) = start::<Task>(inline_config(), task_paths(dir.path()));
    let uuid = task_uuid(&update);
    checkpoint(&manager, update).await;
    recv_or_fail(&mut rx, "first forward").await;
    assert!(!acknowledge(&manager, id.clone(), uuid).await);
    let written = fs::read(task_path(dir.path(), &id)).unwrap();
    assert_eq!(written.len(), 127);
    assert_eq!(hex(&written), hex(&want[..127]), "task_running.updates");
}
