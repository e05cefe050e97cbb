//! Criterion benches of the checkpoint format: encoding a framed record of
//! each kind, and reading a file of records back (framing + decode).
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use status_update_manager::kind::{encode_framed, Native, Operation, RecordRef, UpdateKind};
use status_update_manager::proto::mesos;
use status_update_manager::proto::mesos::internal::UpdateOperationStatusMessage;
use status_update_manager::proto::status_update_manager::v1::{Status, StatusUpdate};
use status_update_manager::store::{FrameReader, Next};

fn native_update(i: u8) -> StatusUpdate {
    StatusUpdate {
        stream_id: "stream-0001".into(),
        framework_id: "framework-a".into(),
        status: Some(Status {
            uuid: vec![i.max(1); 16],
            state: "RUNNING".into(),
            payload: vec![0x42; 96],
            ..Status::default()
        }),
        latest_status: None,
    }
}

fn operation_update(i: u8) -> UpdateOperationStatusMessage {
    UpdateOperationStatusMessage {
        framework_id: Some(mesos::FrameworkId {
            value: "framework-a".into(),
        }),
        slave_id: None,
        status: Some(mesos::OperationStatus {
            state: mesos::OperationState::OperationFinished as i32,
            uuid: Some(mesos::Uuid {
                value: vec![i.max(1); 16],
            }),
            ..Default::default()
        }),
        latest_status: None,
        operation_uuid: Some(mesos::Uuid { value: vec![7; 16] }),
    }
}

fn file_of<K: UpdateKind>(updates: &[K::Update]) -> Vec<u8> {
    let mut file = Vec::new();
    for update in updates {
        encode_framed::<K>(RecordRef::Update(update), &mut file).expect("small record");
    }
    file
}

fn read_all<K: UpdateKind>(file: &[u8]) -> usize {
    let mut reader = FrameReader::new(file);
    let mut records = 0;
    while let Next::Record { body, .. } = reader.next_frame() {
        if K::decode_record(body).is_ok() {
            records += 1;
        }
    }
    records
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_framed");
    group.throughput(Throughput::Elements(1));
    let native = native_update(1);
    let operation = operation_update(1);
    let mut out = Vec::with_capacity(512);
    group.bench_function("native_update", |b| {
        b.iter(|| {
            out.clear();
            encode_framed::<Native>(RecordRef::Update(&native), &mut out).expect("small record");
        })
    });
    group.bench_function("operation_update", |b| {
        b.iter(|| {
            out.clear();
            encode_framed::<Operation>(RecordRef::Update(&operation), &mut out)
                .expect("small record");
        })
    });
    group.bench_function("native_ack", |b| {
        b.iter(|| {
            out.clear();
            encode_framed::<Native>(RecordRef::Ack(uuid::Uuid::from_bytes([3; 16])), &mut out)
                .expect("small record");
        })
    });
    group.finish();

    let mut group = c.benchmark_group("read_file");
    let native_file = file_of::<Native>(&(1..=255).map(native_update).collect::<Vec<_>>());
    let operation_file = file_of::<Operation>(&(1..=255).map(operation_update).collect::<Vec<_>>());
    group.throughput(Throughput::Bytes(native_file.len() as u64));
    group.bench_function("native_255_records", |b| {
        b.iter_batched(
            || &native_file,
            |f| read_all::<Native>(f),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Bytes(operation_file.len() as u64));
    group.bench_function("operation_255_records", |b| {
        b.iter_batched(
            || &operation_file,
            |f| read_all::<Operation>(f),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
