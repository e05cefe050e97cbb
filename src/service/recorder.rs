//! The process's Prometheus recorder: what the `metrics` facade
//! ([`crate::metrics`]) records into when `metrics.listen` is set, and what
//! [`scrape`](super::scrape) renders. The library itself installs no
//! recorder; an application that embeds it without the service installs
//! its own, or none (every record is then a no-op).
//!
//! Installing it registers every family the service serves (the library's,
//! [`crate::metrics::register_all`]; the gRPC requests',
//! [`super::rpc_metrics::register`]; the `process_*` figures', described
//! here and read by [`super::scrape`] before each render), so that the
//! first scrape shows each of them, at 0 until it happens.

use std::sync::{Mutex, PoisonError};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metrics::{
    describe, register_all, ACK_LATENCY_BUCKETS, ACK_LATENCY_SECONDS, GRPC_REQUEST_SECONDS,
    GRPC_SECONDS_BUCKETS, JOURNAL_CHECKPOINT_BUCKETS, JOURNAL_CHECKPOINT_SECONDS,
    MAILBOX_WAIT_BUCKETS, ROUND_TICKETS, ROUND_TICKETS_BUCKETS, SECONDS_BUCKETS,
    STREAM_MAILBOX_WAIT_SECONDS,
};

/// The recorder installed by [`install`], if it ran.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the process's and returns the handle
/// that renders its text; whoever serves the text also runs the handle's
/// upkeep. A process has one recorder, and it cannot be taken back: a later
/// call (a service started again in the same process) gets the handle of
/// the one installed first, with the figures counted so far. It fails only
/// if another recorder than this one is the process's.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&SECONDS_BUCKETS)?
        // A count, not seconds.
        .set_buckets_for_metric(Matcher::Full(ROUND_TICKETS.into()), &ROUND_TICKETS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(JOURNAL_CHECKPOINT_SECONDS.into()),
            &JOURNAL_CHECKPOINT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(STREAM_MAILBOX_WAIT_SECONDS.into()),
            &MAILBOX_WAIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(ACK_LATENCY_SECONDS.into()),
            &ACK_LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(GRPC_REQUEST_SECONDS.into()),
            &GRPC_SECONDS_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    register_all();
    super::rpc_metrics::register();
    metrics_process::Collector::default().describe();
    *installed = Some(handle.clone());
    Ok(handle)
}
