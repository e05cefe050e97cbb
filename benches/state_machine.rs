//! Criterion benches of the pure stream state machine: the decisions of an
//! update and of an ack, and replaying a file into a stream.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use status_update_manager::kind::{encode_framed, Native, RecordRef, StatusUuid};
use status_update_manager::proto::status_update_manager::v1::{Status, StatusUpdate};
use status_update_manager::stream::{replay, StreamState};
use tokio::time::Instant;

fn update(n: u32) -> (StatusUpdate, StatusUuid) {
    let uuid = uuid::Uuid::from_u128(u128::from(n) + 1);
    let update = StatusUpdate {
        stream_id: "s".into(),
        framework_id: String::new(),
        status: Some(Status {
            uuid: uuid.as_bytes().to_vec(),
            state: "RUNNING".into(),
            payload: vec![0x42; 96],
            ..Status::default()
        }),
        latest_status: None,
    };
    (update, uuid)
}

fn state_machine(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("stream_state");
    group.throughput(Throughput::Elements(1));
    group.bench_function("update_forward_ack", |b| {
        let mut state = StreamState::<Native>::new("s".into(), true, None);
        let mut n = 0;
        b.iter(|| {
            n += 1;
            let (u, id) = update(n);
            let _ = state.check_update(&u, id, true);
            let _ = state.apply_update(&u, id, now);
            let _ = state.forward_copy();
            let _ = state.check_ack(id);
            state.apply_ack()
        })
    });
    group.bench_function("duplicate_check_1000_acked", |b| {
        let mut state = StreamState::<Native>::new("s".into(), true, None);
        for n in 0..1000 {
            let (u, id) = update(n);
            let _ = state.apply_update(&u, id, now);
            state.apply_ack();
        }
        let (dup, id) = update(500);
        b.iter(|| state.check_update(&dup, id, true))
    });
    group.finish();

    let mut file = Vec::new();
    for n in 0..1000 {
        let (u, id) = update(n);
        encode_framed::<Native>(RecordRef::Update(&u), &mut file).expect("small record");
        encode_framed::<Native>(RecordRef::Ack(id), &mut file).expect("small record");
    }
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Bytes(file.len() as u64));
    group.bench_function("native_1000_updates_1000_acks", |b| {
        b.iter_batched(
            || &file,
            |f| replay::<Native>("s".into(), std::path::Path::new("bench"), f, now),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, state_machine);
criterion_main!(benches);
