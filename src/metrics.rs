//! Metrics through the `metrics` facade: names, descriptions, buckets and
//! the handles the streams record through.
//!
//! The actors record through the facade; without an installed recorder
//! (library use, tests) every call is a no-op. The service (`service`
//! feature) installs a Prometheus recorder when `metrics.listen` is set
//! (`service::recorder`) and serves `/metrics` from it (`service::scrape`);
//! an application that embeds the library may install any recorder.
//! No metric carries a per-stream label: with up to a million streams that
//! would be unbounded; per-stream figures come from `GetStream`.
//!
//! **Handles, not lookups, on the hot path.** Each `counter!`/`gauge!`/
//! `histogram!` call builds its key and asks the recorder for the metric (a
//! hash and a registry lookup under the Prometheus recorder); an acknowledged
//! update records six or seven of them. So the stream actors record through
//! [`StreamMetrics`], handles taken once when the manager starts its first
//! stream, and a committer times its writes through a handle taken when it
//! starts: a recorder installed after those points is not seen by them
//! (install it first, as `serve` does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

/// Updates answered, each once, by `outcome` (`accepted`, `duplicate`,
/// `rejected`: any error, wherever it was decided). A stream counts what it
/// answers; what is refused before reaching one is counted where it is
/// refused ([`count_rejected_update`]).
pub const UPDATES: &str = "sum_updates_total";
/// Acknowledgements, by `outcome` (`accepted`, `rejected`).
pub const ACKS: &str = "sum_acks_total";
/// Sends of a stream head upstream (first sends and re-sends).
pub const FORWARDS: &str = "sum_forwards_total";
/// Re-sends by the retry timer.
pub const RETRIES: &str = "sum_retries_total";
/// Failed checkpoint writes or syncs (each restarts its stream).
pub const STORAGE_ERRORS: &str = "sum_storage_errors_total";
/// Heads retried past `retry.warn_after` (each counted once).
pub const RETRY_BUDGET_EXCEEDED: &str = "sum_retry_budget_exceeded_total";
/// Streams whose head is now past `retry.warn_after`.
pub const OVER_RETRY_BUDGET: &str = "sum_streams_over_retry_budget";
/// Streams in memory.
pub const STREAMS: &str = "sum_streams";
/// Updates pending acknowledgement, over all streams.
pub const PENDING: &str = "sum_pending_updates";
/// Age of the oldest pending update, over all streams.
pub const OLDEST_PENDING_AGE: &str = "sum_oldest_pending_age_seconds";
/// Time to write one record, or (write-behind) one stream's records of a commit round.
pub const APPEND_SECONDS: &str = "sum_checkpoint_append_seconds";
/// Restarts of a stream from its file, by `cause`: `storage` (a write or
/// sync failed), `panic` (a handler panicked), `stopped` (its actor was
/// found stopped and the manager started it again).
pub const STREAM_RESTARTS: &str = "sum_stream_restarts_total";
/// Stream files (or the bytes cut from one) that non-strict recovery moved
/// into the quarantine instead of deleting them.
pub const RECOVERY_QUARANTINED_FILES: &str = "sum_recovery_quarantined_files_total";
/// Corrupt records that non-strict recovery found (and cut).
pub const RECOVERY_CORRUPT_RECORDS: &str = "sum_recovery_corrupt_records_total";
/// Time of one data sync.
pub const SYNC_SECONDS: &str = "sum_checkpoint_sync_seconds";
/// The largest mailbox backlog of any stream (messages queued, not yet
/// handled), taken by the manager at most once a second: when it looks for
/// stopped streams (every `retry.min`) and on `ListStreams`/`GetStream`.
pub const STREAM_MAILBOX_BACKLOG_MAX: &str = "sum_stream_mailbox_backlog_max";
/// Time a request (update, ack, figures request) waited in its stream's
/// mailbox, from being enqueued until the stream took it.
pub const STREAM_MAILBOX_WAIT_SECONDS: &str = "sum_stream_mailbox_wait_seconds";
/// 1 while a subscriber is connected (service only).
pub const SUBSCRIBERS: &str = "sum_subscribers";
/// Bytes in the commit journal: records of `batch` rounds whose stream files
/// are not yet durable by themselves.
pub const JOURNAL_BYTES: &str = "sum_commit_journal_bytes";
/// Checkpoints of the commit journal (a `syncfs`, then the journal emptied).
pub const JOURNAL_CHECKPOINTS: &str = "sum_commit_journal_checkpoints_total";
/// Time of one checkpoint of the commit journal: its `syncfs`, on a thread of
/// its own while rounds go on into a new journal (in place, rounds waiting,
/// when the committer stops or the journal cannot be rotated).
pub const JOURNAL_CHECKPOINT_SECONDS: &str = "sum_commit_journal_checkpoint_seconds";
/// 1 while the manager's forwarding is paused, whatever the cause (the
/// service's: no subscriber, an operator `Pause`, the start before
/// recovery), else 0.
pub const PAUSED: &str = "sum_paused";
/// Always 1, with the crate's `version` as its label.
pub const BUILD_INFO: &str = "sum_build_info";
/// From the first forward of an update (by this process) until its
/// acknowledgement reached its stream.
pub const ACK_LATENCY_SECONDS: &str = "sum_ack_latency_seconds";
/// gRPC requests to the API service, by `method` (the RPC's name, such as
/// `Update`) and `code` (the gRPC status code's name, such as `OK`).
pub const GRPC_REQUESTS: &str = "sum_grpc_requests_total";
/// Time of one gRPC request to the API service, by `method`: from its
/// arrival until its response's status was sent.
pub const GRPC_REQUEST_SECONDS: &str = "sum_grpc_request_seconds";
/// How long the service's startup recovery took (journal replay, stream
/// discovery, the streams' recovery).
pub const RECOVERY_SECONDS: &str = "sum_recovery_seconds";
/// Streams recovered (not terminated) at the service's start.
pub const RECOVERED_STREAMS: &str = "sum_recovered_streams";

/// 1 while the upstream is usable (`upstream.kind = "jetstream"`: connected
/// to NATS and the stream checked), else 0.
pub const UPSTREAM_CONNECTED: &str = "sum_upstream_connected";
/// From a head's publish into JetStream until its PubAck.
pub const UPSTREAM_PUBLISH_SECONDS: &str = "sum_upstream_publish_seconds";
/// PubAcks received, by `outcome` (`stored`, `duplicate`: JetStream already
/// had that `Nats-Msg-Id` within its duplicate window).
pub const UPSTREAM_PUBACKS: &str = "sum_upstream_pubacks_total";
/// Publishes without a PubAck, by `reason` (`timeout`, `no_stream`,
/// `error`); each is retried by its stream.
pub const UPSTREAM_PUBLISH_FAILURES: &str = "sum_upstream_publish_failures_total";

/// Buckets of every histogram without buckets of its own below: the
/// checkpoint's append and sync times ([`APPEND_SECONDS`],
/// [`SYNC_SECONDS`]), 10 µs to 1 s.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets of [`JOURNAL_CHECKPOINT_SECONDS`]: a checkpoint writes back the
/// stream files' share of a full journal (64 MiB by default), milliseconds to
/// seconds.
pub const JOURNAL_CHECKPOINT_BUCKETS: [f64; 13] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of [`STREAM_MAILBOX_WAIT_SECONDS`]: a stream that keeps up takes
/// a request within microseconds, an overloaded one seconds later; 1 µs to
/// 10 s.
pub const MAILBOX_WAIT_BUCKETS: [f64; 22] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
];

/// Tickets per commit round: the streams' writes one round took together
/// (under `batch`, how many share one sync: group commit at work).
pub const ROUND_TICKETS: &str = "sum_commit_round_tickets";

/// Buckets of [`ROUND_TICKETS`]: powers of two, one ticket to 4 096.
pub const ROUND_TICKETS_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Buckets of [`ACK_LATENCY_SECONDS`]: an upstream that keeps up acks within
/// a round trip, one that lost a forward acks after a retry (`retry.min`,
/// then doubling up to `retry.max`), one that was down much later; 100 µs
/// to 1 h.
pub const ACK_LATENCY_BUCKETS: [f64; 23] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Buckets of [`GRPC_REQUEST_SECONDS`]: 50 µs (an answer from memory) to
/// 30 s (a page of `ListStreams` over many streams). A `Subscribe` lasts as
/// long as its subscriber stays, mostly past the last bucket.
pub const GRPC_SECONDS_BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Describes every metric (units and help text) to the installed recorder.
pub fn describe() {
    describe_counter!(
        UPDATES,
        "Updates answered, by outcome; rejected: any error, wherever it was decided."
    );
    describe_counter!(
        ACKS,
        "Acknowledgements answered, by outcome; rejected: any error, wherever it was decided."
    );
    describe_counter!(
        FORWARDS,
        "Sends of a stream head upstream, first sends and re-sends."
    );
    describe_counter!(
        RETRIES,
        "Re-sends of an unacknowledged head by the retry timer."
    );
    describe_counter!(
        STORAGE_ERRORS,
        "Failed checkpoint writes or syncs; each restarts its stream."
    );
    describe_counter!(
        RECOVERY_QUARANTINED_FILES,
        "Stream files, or bytes cut from one, moved into the quarantine by non-strict recovery."
    );
    describe_counter!(
        RECOVERY_CORRUPT_RECORDS,
        "Corrupt records non-strict recovery found and cut."
    );
    describe_counter!(
        STREAM_RESTARTS,
        "Restarts of a stream from its file, by cause (storage, panic, stopped)."
    );
    describe_counter!(
        RETRY_BUDGET_EXCEEDED,
        "Heads retried past retry.warn_after, each counted once."
    );
    describe_gauge!(
        OVER_RETRY_BUDGET,
        "Streams whose head is retried past retry.warn_after now."
    );
    describe_gauge!(STREAMS, "Streams in memory.");
    describe_gauge!(
        PENDING,
        "Updates pending acknowledgement, over all streams."
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest pending update."
    );
    describe_histogram!(
        APPEND_SECONDS,
        Unit::Seconds,
        "Time to append one checkpoint record."
    );
    describe_histogram!(
        SYNC_SECONDS,
        Unit::Seconds,
        "Time of one checkpoint data sync."
    );
    describe_gauge!(
        STREAM_MAILBOX_BACKLOG_MAX,
        Unit::Count,
        "The largest mailbox backlog of any stream: messages queued, not yet handled."
    );
    describe_histogram!(
        STREAM_MAILBOX_WAIT_SECONDS,
        Unit::Seconds,
        "Time a request (update, ack, figures request) waited in its stream's mailbox."
    );
    describe_gauge!(SUBSCRIBERS, "1 while an upstream subscriber is connected.");
    describe_gauge!(
        UPSTREAM_CONNECTED,
        "1 while the JetStream upstream is connected and its stream checked."
    );
    describe_histogram!(
        UPSTREAM_PUBLISH_SECONDS,
        Unit::Seconds,
        "Time from publishing a head into JetStream until its PubAck."
    );
    describe_counter!(
        UPSTREAM_PUBACKS,
        "PubAcks from JetStream, by outcome (stored, duplicate)."
    );
    describe_counter!(
        UPSTREAM_PUBLISH_FAILURES,
        "Publishes into JetStream without a PubAck, by reason (timeout, no_stream, error); each is retried."
    );
    describe_gauge!(
        JOURNAL_BYTES,
        Unit::Bytes,
        "Bytes in the commit journal not yet checkpointed into the stream files."
    );
    describe_counter!(
        JOURNAL_CHECKPOINTS,
        "Checkpoints of the commit journal: a syncfs, then the journal emptied."
    );
    describe_histogram!(
        JOURNAL_CHECKPOINT_SECONDS,
        Unit::Seconds,
        "Time of one commit journal checkpoint (its syncfs), run beside the rounds after a rotation."
    );
    describe_histogram!(
        ROUND_TICKETS,
        Unit::Count,
        "Stream writes taken together by one commit round; under batch, how many share one sync."
    );
    describe_gauge!(
        PAUSED,
        "1 while forwarding is paused (no subscriber, an operator Pause, or the start before recovery)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version of the build as a label.");
    describe_histogram!(
        ACK_LATENCY_SECONDS,
        Unit::Seconds,
        "Time from the first forward of an update until its acknowledgement reached its stream."
    );
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC requests to the StatusUpdateManager service, by method and status code."
    );
    describe_histogram!(
        GRPC_REQUEST_SECONDS,
        Unit::Seconds,
        "Time of one gRPC request to the StatusUpdateManager service, until its status was sent."
    );
    describe_gauge!(
        RECOVERY_SECONDS,
        Unit::Seconds,
        "How long the startup recovery took: journal replay, stream discovery, the streams' recovery."
    );
    describe_gauge!(
        RECOVERED_STREAMS,
        Unit::Count,
        "Streams recovered (not terminated) at the start."
    );
}

/// Registers every metric of the library with the installed recorder, each
/// with every one of its label sets, so that a scrape shows each family from
/// the start rather than from its first event (which would leave `rate()`
/// and alerts a gap): counters at 0, gauges at their value (0 unless set
/// already), histograms with no sample (empty buckets, not a made-up
/// sample). [`BUILD_INFO`] is set to 1. The service's own families (gRPC
/// requests, `process_*`) are registered by the service.
pub fn register_all() {
    for outcome in ["accepted", "duplicate", "rejected"] {
        let _ = counter!(UPDATES, "outcome" => outcome);
    }
    for outcome in ["accepted", "rejected"] {
        let _ = counter!(ACKS, "outcome" => outcome);
    }
    for cause in ["storage", "panic", "stopped"] {
        let _ = counter!(STREAM_RESTARTS, "cause" => cause);
    }
    // The JetStream upstream's, whatever the upstream (0 without it).
    for outcome in ["stored", "duplicate"] {
        let _ = counter!(UPSTREAM_PUBACKS, "outcome" => outcome);
    }
    for reason in ["timeout", "no_stream", "error"] {
        let _ = counter!(UPSTREAM_PUBLISH_FAILURES, "reason" => reason);
    }
    for name in [
        FORWARDS,
        RETRIES,
        STORAGE_ERRORS,
        RETRY_BUDGET_EXCEEDED,
        RECOVERY_QUARANTINED_FILES,
        RECOVERY_CORRUPT_RECORDS,
        JOURNAL_CHECKPOINTS,
    ] {
        let _ = counter!(name);
    }
    for name in [
        OVER_RETRY_BUDGET,
        STREAMS,
        PENDING,
        OLDEST_PENDING_AGE,
        STREAM_MAILBOX_BACKLOG_MAX,
        SUBSCRIBERS,
        JOURNAL_BYTES,
        PAUSED,
        RECOVERY_SECONDS,
        RECOVERED_STREAMS,
        UPSTREAM_CONNECTED,
    ] {
        let _ = gauge!(name);
    }
    for name in [
        APPEND_SECONDS,
        SYNC_SECONDS,
        STREAM_MAILBOX_WAIT_SECONDS,
        JOURNAL_CHECKPOINT_SECONDS,
        ROUND_TICKETS,
        ACK_LATENCY_SECONDS,
        UPSTREAM_PUBLISH_SECONDS,
    ] {
        let _ = histogram!(name);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Counts an update answered with an error where no stream's handles are
/// at hand (refused before it reached a stream). Each rejected update is
/// counted once, by whoever answers it.
pub fn count_rejected_update() {
    counter!(UPDATES, "outcome" => "rejected").increment(1);
}

/// [`count_rejected_update`] for an acknowledgement.
pub fn count_rejected_ack() {
    counter!(ACKS, "outcome" => "rejected").increment(1);
}

/// The handles of every metric a stream actor records, taken from the
/// recorder installed when [`register`](Self::register) runs (no-ops
/// without one). One per manager, shared by all its streams.
#[derive(Debug, Clone)]
pub struct StreamMetrics {
    /// [`UPDATES`] with `outcome="accepted"`.
    pub updates_accepted: Counter,
    /// [`UPDATES`] with `outcome="duplicate"`.
    pub updates_duplicate: Counter,
    /// [`UPDATES`] with `outcome="rejected"`.
    pub updates_rejected: Counter,
    /// [`ACKS`] with `outcome="accepted"`.
    pub acks_accepted: Counter,
    /// [`ACKS`] with `outcome="rejected"`.
    pub acks_rejected: Counter,
    /// [`FORWARDS`].
    pub forwards: Counter,
    /// [`RETRIES`].
    pub retries: Counter,
    /// [`STORAGE_ERRORS`].
    pub storage_errors: Counter,
    /// [`RETRY_BUDGET_EXCEEDED`].
    pub retry_budget_exceeded: Counter,
    /// [`OVER_RETRY_BUDGET`].
    pub over_retry_budget: Gauge,
    /// [`PENDING`].
    pub pending: Gauge,
    /// The same figure as [`pending`](Self::pending), over this manager's
    /// streams, readable in process (the manager's `GetSummary`): a gauge
    /// cannot be read back through the facade. Moved with the gauge by
    /// [`move_pending`](Self::move_pending).
    pub pending_total: Arc<AtomicU64>,
    /// [`SYNC_SECONDS`].
    pub sync_seconds: Histogram,
    /// [`STREAM_RESTARTS`] after a storage fault.
    pub restarts_storage: Counter,
    /// [`STREAM_RESTARTS`] after a panic.
    pub restarts_panic: Counter,
    /// [`STREAM_MAILBOX_WAIT_SECONDS`].
    pub mailbox_wait_seconds: Histogram,
    /// [`STREAM_MAILBOX_BACKLOG_MAX`] (set by the manager).
    pub mailbox_backlog_max: Gauge,
    /// [`ACK_LATENCY_SECONDS`].
    pub ack_latency_seconds: Histogram,
}

impl StreamMetrics {
    /// A stream's pending updates went from `from` to `to`: moves
    /// [`PENDING`] and [`pending_total`](Self::pending_total) by the difference.
    pub fn move_pending(&self, from: u32, to: u32) {
        self.pending.increment(f64::from(to) - f64::from(from));
        if to >= from {
            self.pending_total
                .fetch_add(u64::from(to - from), Ordering::Relaxed);
        } else {
            self.pending_total
                .fetch_sub(u64::from(from - to), Ordering::Relaxed);
        }
    }

    /// Takes the handles from the recorder installed now.
    pub fn register() -> Self {
        StreamMetrics {
            updates_accepted: counter!(UPDATES, "outcome" => "accepted"),
            updates_duplicate: counter!(UPDATES, "outcome" => "duplicate"),
            updates_rejected: counter!(UPDATES, "outcome" => "rejected"),
            acks_accepted: counter!(ACKS, "outcome" => "accepted"),
            acks_rejected: counter!(ACKS, "outcome" => "rejected"),
            forwards: counter!(FORWARDS),
            retries: counter!(RETRIES),
            storage_errors: counter!(STORAGE_ERRORS),
            retry_budget_exceeded: counter!(RETRY_BUDGET_EXCEEDED),
            over_retry_budget: gauge!(OVER_RETRY_BUDGET),
            pending: gauge!(PENDING),
            pending_total: Arc::default(),
            sync_seconds: histogram!(SYNC_SECONDS),
            restarts_storage: counter!(STREAM_RESTARTS, "cause" => "storage"),
            restarts_panic: counter!(STREAM_RESTARTS, "cause" => "panic"),
            mailbox_wait_seconds: histogram!(STREAM_MAILBOX_WAIT_SECONDS),
            mailbox_backlog_max: gauge!(STREAM_MAILBOX_BACKLOG_MAX),
            ack_latency_seconds: histogram!(ACK_LATENCY_SECONDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn every_family_is_served_once_registered_before_its_first_event() {
        // With buckets, histograms are rendered as histograms (else summaries).
        let recorder = PrometheusBuilder::new()
            .set_buckets(&SECONDS_BUCKETS)
            .unwrap()
            .build_recorder();
        let served = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_all();
        });
        let body = served.render();
        let version = env!("CARGO_PKG_VERSION");
        for expected in [
            "sum_updates_total{outcome=\"rejected\"} 0".to_string(),
            "sum_acks_total{outcome=\"accepted\"} 0".into(),
            "sum_stream_restarts_total{cause=\"stopped\"} 0".into(),
            "sum_recovery_quarantined_files_total 0".into(),
            "sum_recovery_corrupt_records_total 0".into(),
            "sum_streams 0".into(),
            "sum_paused 0".into(),
            "sum_recovered_streams 0".into(),
            format!("sum_build_info{{version=\"{version}\"}} 1"),
            // A histogram with no sample: its buckets, sum and count at 0.
            "sum_ack_latency_seconds_bucket{le=\"+Inf\"} 0".into(),
            "sum_ack_latency_seconds_count 0".into(),
            "sum_commit_journal_checkpoint_seconds_count 0".into(),
            "# HELP sum_ack_latency_seconds ".into(),
        ] {
            assert!(body.contains(&expected), "lacks {expected:?}:\n{body}");
        }
    }

    #[test]
    fn handles_record_into_the_recorder_installed_when_they_were_taken() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let served = recorder.handle();
        let handles = metrics::with_local_recorder(&recorder, StreamMetrics::register);
        // Taken without a recorder: records nowhere, and does not fail.
        let unrecorded = StreamMetrics::register();

        handles.updates_accepted.increment(2);
        handles.acks_rejected.increment(1);
        handles.pending.increment(3.0);
        handles.pending.decrement(1.0);
        handles
            .mailbox_wait_seconds
            .record(std::time::Duration::from_micros(3));
        handles.mailbox_backlog_max.set(7.0);
        unrecorded.updates_accepted.increment(5);

        let body = served.render();
        for expected in [
            "sum_updates_total{outcome=\"accepted\"} 2",
            "sum_updates_total{outcome=\"duplicate\"} 0",
            "sum_acks_total{outcome=\"rejected\"} 1",
            "sum_pending_updates 2",
            "sum_forwards_total 0",
            "sum_stream_mailbox_wait_seconds_count 1",
            "sum_stream_mailbox_backlog_max 7",
        ] {
            assert!(
                body.contains(expected),
                "render lacks {expected:?}:\n{body}"
            );
        }
    }
}
