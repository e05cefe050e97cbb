//! The process's Prometheus recorder: what the `metrics` facade
//! ([`crate::metrics`]) records into when `metrics.listen` is set, and what
//! [`scrape`](super::scrape) renders. The library itself installs no
//! recorder; an application that embeds it without the service installs
//! its own, or none (every record is then a no-op).

use std::sync::{Mutex, PoisonError};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metrics::{
    describe, JOURNAL_CHECKPOINT_BUCKETS, JOURNAL_CHECKPOINT_SECONDS, MAILBOX_WAIT_BUCKETS,
    ROUND_TICKETS, ROUND_TICKETS_BUCKETS, SECONDS_BUCKETS, STREAM_MAILBOX_WAIT_SECONDS,
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
        .install_recorder()?;
    describe();
    *installed = Some(handle.clone());
    Ok(handle)
}
