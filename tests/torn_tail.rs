//! C2: a torn tail at every byte offset inside the last record, for every kind, recovers
//! (strictly, with no error) exactly the records before it, and the file is truncated to them.
mod common;

use std::fs;
use std::path::Path;

use common::*;
use status_update_manager::kind::{status_uuid, Native, Operation, Task, UpdateKind};
use status_update_manager::messages::{Acknowledge, GetStream, Recover, Update};
use status_update_manager::proto::mesos::{OperationState, TaskState};
use status_update_manager::store::framing::{FrameReader, Next};
use status_update_manager::store::SyncPolicy;
use status_update_manager::{ManagerConfig, StreamPaths};
use uuid::Uuid;

/// One step of writing a stream through the manager: update `i`, or acknowledge update `i`.
#[derive(Debug, Clone, Copy)]
enum Step {
    Update(usize),
    Ack(usize),
}

/// The last record is an UPDATE: the records before it hold update 0, acknowledged.
const TORN_UPDATE: [Step; 3] = [Step::Update(0), Step::Ack(0), Step::Update(1)];
/// The last record is an ACK: the records before it hold updates 0 and 1, both pending.
const TORN_ACK: [Step; 3] = [Step::Update(0), Step::Update(1), Step::Ack(0)];

/// Start offsets of the complete records of `bytes`, which must end cleanly.
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut reader = FrameReader::new(bytes);
    let mut starts = Vec::new();
    loop {
        match reader.next_frame() {
            Next::Record { start, .. } => starts.push(start as usize),
            Next::End => return starts,
            other => panic!("written file does not end cleanly: {other:?}"),
        }
    }
}

/// What recovering the records of `steps` gives: every update in order, and those still pending.
fn replay_steps(steps: &[Step], uuids: &[Uuid]) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut updates = Vec::new();
    let mut pending = Vec::new();
    for step in steps {
        match *step {
            Step::Update(i) => {
                updates.push(uuids[i]);
                pending.push(uuids[i]);
            }
            Step::Ack(_) => {
                pending.remove(0);
            }
        }
    }
    (updates, pending)
}

/// Writes `steps` through a manager, then for every cut inside the last record recovers a
/// copy truncated there and checks what comes back.
async fn torn_tail_at_every_offset<K: UpdateKind>(
    paths: fn(&Path) -> StreamPaths<K>,
    updates: [K::Update; 2],
    steps: [Step; 3],
) {
    let id = K::stream_id(&updates[0]).unwrap();
    let uuids: Vec<Uuid> = updates
        .iter()
        .map(|u| status_uuid::<K>(u).unwrap())
        .collect();
    let write_dir = tempfile::tempdir().unwrap();
    let (writer, _rx) = start::<K>(inline_config(), paths(write_dir.path()));
    for step in steps {
        match step {
            Step::Update(i) => {
                writer
                    .send(Update {
                        update: updates[i].clone(),
                        checkpoint: true,
                    })
                    .await
                    .unwrap()
                    .unwrap();
            }
            Step::Ack(i) => {
                writer
                    .send(Acknowledge::<K> {
                        stream: id.clone(),
                        uuid: uuids[i],
                    })
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    }
    let bytes = fs::read(paths(write_dir.path())(&id)).unwrap();
    let starts = record_starts(&bytes);
    assert_eq!(starts.len(), 3, "{} {steps:?}", K::KIND);
    let last = starts[2];
    let (want_updates, want_pending) = replay_steps(&steps[..2], &uuids);
    assert!(
        bytes.len() - last > 20,
        "the last record is {} bytes",
        bytes.len() - last
    );

    for cut in last + 1..bytes.len() {
        let what = format!(
            "{} {steps:?}: cut at byte {cut} of {}",
            K::KIND,
            bytes.len()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = paths(dir.path())(&id);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &bytes[..cut]).unwrap();
        let config = ManagerConfig {
            sync: SyncPolicy::None,
            ..inline_config()
        };
        let (manager, _rx) = start::<K>(config, paths(dir.path()));
        let mut state = manager
            .send(Recover::<K> {
                ids: vec![id.clone()],
                strict: true,
            })
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("{what}: strict recovery failed: {err}"));
        assert_eq!(state.errors, 0, "{what}");
        let recovered = state
            .streams
            .remove(&id)
            .flatten()
            .unwrap_or_else(|| panic!("{what}: nothing recovered"));
        let got: Vec<Uuid> = recovered
            .updates
            .iter()
            .map(|u| status_uuid::<K>(&u).unwrap())
            .collect();
        assert_eq!(got, want_updates, "{what}: updates");
        assert_eq!(
            recovered.updates.to_vec()[..],
            updates[..got.len()],
            "{what}"
        );
        assert!(!recovered.terminated, "{what}");
        let stats = manager
            .send(GetStream::<K> { stream: id.clone() })
            .await
            .unwrap()
            .expect("the stream answers")
            .unwrap_or_else(|| panic!("{what}: stream not kept"));
        let pending: Vec<Uuid> = stats
            .pending_updates
            .iter()
            .map(|u| status_uuid::<K>(u).unwrap())
            .collect();
        assert_eq!(pending, want_pending, "{what}: pending");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            last as u64,
            "{what}: file length"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            &bytes[..last],
            "{what}: file bytes"
        );
    }
}

#[actix::test]
async fn native_torn_tail_at_every_offset() {
    tokio::time::pause();
    let updates = || {
        [
            native_update("torn", "STARTING", false, "fw"),
            native_update("torn", "RUNNING", false, "fw"),
        ]
    };
    torn_tail_at_every_offset::<Native>(native_paths, updates(), TORN_UPDATE).await;
    torn_tail_at_every_offset::<Native>(native_paths, updates(), TORN_ACK).await;
}

#[actix::test]
async fn operation_torn_tail_at_every_offset() {
    tokio::time::pause();
    let op = Uuid::new_v4();
    let updates = || {
        [
            op_update(op, OperationState::OperationPending, Some("fw")),
            op_update(op, OperationState::OperationPending, Some("fw")),
        ]
    };
    torn_tail_at_every_offset::<Operation>(operation_paths, updates(), TORN_UPDATE).await;
    torn_tail_at_every_offset::<Operation>(operation_paths, updates(), TORN_ACK).await;
}

#[actix::test]
async fn task_torn_tail_at_every_offset() {
    tokio::time::pause();
    let updates = || {
        [
            task_update("fw", "task-1", TaskState::TaskStarting),
            task_update("fw", "task-1", TaskState::TaskRunning),
        ]
    };
    torn_tail_at_every_offset::<Task>(task_paths, updates(), TORN_UPDATE).await;
    torn_tail_at_every_offset::<Task>(task_paths, updates(), TORN_ACK).await;
}
