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

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

/// Updates handed to the manager, by `outcome` (`accepted`, `duplicate`, `rejected`).
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

/// Describes every metric (units and help text) to the installed recorder.
pub fn describe() {
    describe_counter!(UPDATES, "Updates handed to the manager, by outcome.");
    describe_counter!(ACKS, "Acknowledgements, by outcome.");
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
}

impl StreamMetrics {
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
            sync_seconds: histogram!(SYNC_SECONDS),
            restarts_storage: counter!(STREAM_RESTARTS, "cause" => "storage"),
            restarts_panic: counter!(STREAM_RESTARTS, "cause" => "panic"),
            mailbox_wait_seconds: histogram!(STREAM_MAILBOX_WAIT_SECONDS),
            mailbox_backlog_max: gauge!(STREAM_MAILBOX_BACKLOG_MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

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
