//! Criterion bench of what one acknowledged update costs in metrics, under
//! the service's Prometheus recorder: the same six records a stream makes
//! (the update and ack counters, a forward, the pending gauge up and down,
//! the sync histogram; the committer records the append time) looked up by name for each record, as a
//! `counter!(…).increment(1)` does, against through handles taken once, as
//! the stream actors record ([`StreamMetrics`]).
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use metrics_exporter_prometheus::PrometheusBuilder;
use status_update_manager::metrics::{self as m, StreamMetrics};

fn per_update(c: &mut Criterion) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let took = Duration::from_micros(3);
    let mut group = c.benchmark_group("metrics_per_acknowledged_update");
    group.throughput(Throughput::Elements(1));
    metrics::with_local_recorder(&recorder, || {
        group.bench_function("by_name", |b| {
            b.iter(|| {
                metrics::counter!(m::UPDATES, "outcome" => "accepted").increment(1);
                metrics::gauge!(m::PENDING).increment(1.0);
                metrics::counter!(m::FORWARDS).increment(1);
                metrics::histogram!(m::SYNC_SECONDS).record(took);
                metrics::counter!(m::ACKS, "outcome" => "accepted").increment(1);
                metrics::gauge!(m::PENDING).increment(-1.0);
            })
        });
        let handles = StreamMetrics::register();
        group.bench_function("handles", |b| {
            b.iter(|| {
                handles.updates_accepted.increment(1);
                handles.pending.increment(1.0);
                handles.forwards.increment(1);
                handles.sync_seconds.record(took);
                handles.acks_accepted.increment(1);
                handles.pending.increment(-1.0);
            })
        });
    });
    group.finish();
}

criterion_group!(benches, per_update);
criterion_main!(benches);
