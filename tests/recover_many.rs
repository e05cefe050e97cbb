//! C6: recovering 10,000 streams in one `Recover` completes, and each stream's head is
//! forwarded exactly once (no retry before `retry.min`).
mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::{Duration, Instant};

use uuid::Uuid;

use common::*;
use status_update_manager::kind::{encode_framed, Operation, RecordRef};
use status_update_manager::messages::{Forward, Recover};
use status_update_manager::proto::mesos::OperationState;
use tokio::sync::mpsc::UnboundedReceiver;

const STREAMS: usize = 10_000;

/// Rounds of `settle` without a new forward after which the forwards are taken as complete.
const IDLE_ROUNDS: usize = 20;

/// Takes every forward waiting on `rx` into `forwarded`, checking each is a first send of
/// its stream's head; returns whether there was any.
fn drain(
    rx: &mut UnboundedReceiver<Forward<Operation>>,
    forwarded: &mut HashSet<Uuid>,
    heads: &HashMap<Uuid, Uuid>,
) -> bool {
    let mut any = false;
    while let Ok(forward) = rx.try_recv() {
        any = true;
        let stream = forward.stream;
        assert!(forwarded.insert(stream), "stream {stream} forwarded twice");
        assert_eq!(forward.attempt, 0, "stream {stream}");
        assert_eq!(
            Some(op_status_uuid(&forward.update)),
            heads.get(&stream).copied(),
            "stream {stream}: the head is forwarded"
        );
    }
    any
}

#[actix::test]
async fn recover_10000_streams_forwards_each_head_once() {
    tokio::time::pause();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("streams")).unwrap();
    // Stream id → the status uuid of its one unacknowledged update.
    let mut heads = HashMap::with_capacity(STREAMS);
    let mut frame = Vec::new();
    for i in 0..STREAMS {
        let op = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | i as u128);
        let update = op_update(op, OperationState::OperationPending, Some("fw"));
        heads.insert(op, op_status_uuid(&update));
        frame.clear();
        encode_framed::<Operation>(RecordRef::Update(&update), &mut frame).unwrap();
        fs::write(operation_path(dir.path(), &op), &frame).unwrap();
    }
    let mut ids: Vec<Uuid> = heads.keys().copied().collect();
    ids.sort();

    let (manager, mut rx) = start::<Operation>(inline_config(), operation_paths(dir.path()));
    let state = manager
        .send(Recover::<Operation> {
            ids: ids.clone(),
            strict: true,
        })
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("strict recovery failed: {err}"));
    assert_eq!(state.errors, 0);
    assert_eq!(state.streams.len(), STREAMS);
    for id in &ids {
        let stream = state.streams[id]
            .as_ref()
            .unwrap_or_else(|| panic!("stream {id}: recovered None"));
        assert_eq!(stream.updates.len(), 1, "stream {id}");
        assert!(!stream.terminated, "stream {id}");
    }

    let mut forwarded = HashSet::with_capacity(STREAMS);
    let mut idle = 0;
    while idle < IDLE_ROUNDS {
        settle().await;
        idle = if drain(&mut rx, &mut forwarded, &heads) {
            0
        } else {
            idle + 1
        };
    }
    assert_eq!(forwarded.len(), STREAMS, "each head forwarded once");

    advance(MIN - Duration::from_millis(1)).await;
    for _ in 0..IDLE_ROUNDS {
        settle().await;
        assert!(
            !drain(&mut rx, &mut forwarded, &heads),
            "a forward before retry.min"
        );
    }
    assert_eq!(forwarded.len(), STREAMS);
    eprintln!("recover_many: {:?} (real time)", started.elapsed());
}
