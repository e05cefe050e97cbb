//! `JetStreamUpstream`: the service's upstream when `upstream.kind =
//! "jetstream"`, the manager's forward target in place of the hub's
//! subscriber.
//!
//! **Owns** the NATS connection (async-nats: the protocol, reconnection,
//! JetStream's API; nothing of NATS is written here) and whether JetStream
//! is usable now: connected, and the stream checked ([`ensure_stream`]).
//!
//! **Handles** [`Forward`] from the manager's streams: each head is
//! published to `<subject_prefix>.<node>.<stream token>` ([`subject`]) with
//! the headers of [`headers`] and the `ForwardedUpdate` of service.proto as
//! payload ([`message`]). JetStream's PubAck (stored, or a duplicate within
//! its window) is the acknowledgement: the forward is acknowledged at the
//! stream that sent it ([`Forward::acknowledge`]), which checkpoints an ACK
//! record exactly as the `Acknowledge` RPC does and then forwards the next
//! head. So per stream the JetStream stream receives the updates in
//! acceptance order. A failed or missing PubAck is not acknowledged: the
//! stream re-sends the head on its retry schedule, with the same
//! `Nats-Msg-Id` (the status uuid), so JetStream drops the copies inside its
//! duplicate window and a consumer may see a copy only beyond it.
//!
//! **Sends** [`UpstreamLink`] to the hub, which pauses the manager while
//! JetStream cannot be reached and resumes it (every head published at
//! once) when it can, unless an admin `Pause` holds it.
//!
//! The NATS client and every publish run on the runtime given to
//! [`JetStreamUpstream::start`] (the service's gRPC thread): the actor's
//! thread only builds each message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use metrics::{counter, gauge, histogram, Counter, Histogram};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use prost::Message as _;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::hub::{SubscriberHub, UpstreamLink};
use super::upstream::JetStreamConfig;
use crate::kind::Native;
use crate::messages::Forward;
use crate::proto::status_update_manager::v1::{ForwardedUpdate, StatusUpdate};

/// `Nats-Msg-Id`: the status uuid, lower-case and hyphenated; JetStream's
/// dedup key.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// `Sum-Stream-Id`: the stream id ([`header_text`]).
pub const HEADER_STREAM_ID: &str = "Sum-Stream-Id";
/// `Sum-Framework-Id`: the framework id ([`header_text`]); absent without one.
pub const HEADER_FRAMEWORK_ID: &str = "Sum-Framework-Id";
/// `Sum-Attempt`: `ForwardedUpdate.attempt`, in decimal.
pub const HEADER_ATTEMPT: &str = "Sum-Attempt";

/// How long after a failed stream check it is tried again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// PubAcks awaited at once over every stream (one head per stream is in
/// flight; more wait for a permit).
const MAX_ACKS_IN_FLIGHT: usize = 1 << 16;

/// Every byte but `[A-Za-z0-9_-]`.
const TOKEN_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// `id` as one subject token: every byte outside `[A-Za-z0-9_-]` written
/// `%XX` (upper-case hex), as the stream files' names are.
pub fn subject_token(id: &str) -> String {
    utf8_percent_encode(id, TOKEN_ESCAPED).to_string()
}

/// `id` as a header value: as it is, unless a header cannot carry it (a
/// control character such as CR or LF, or whitespace at either end), then
/// [`subject_token`]'s encoding.
pub fn header_text(id: &str) -> String {
    let carried = !id.chars().any(char::is_control)
        && !id.starts_with(char::is_whitespace)
        && !id.ends_with(char::is_whitespace);
    if carried {
        id.to_string()
    } else {
        subject_token(id)
    }
}

/// The subject of stream `stream_id`'s updates from `node`:
/// `<prefix>.<node token>.<stream token>`.
pub fn subject(prefix: &str, node: &str, stream_id: &str) -> String {
    format!(
        "{prefix}.{}.{}",
        subject_token(node),
        subject_token(stream_id)
    )
}

/// The headers of a forward of `update` (see the module docs).
pub fn headers(update: &StatusUpdate, attempt: u32, uuid: &uuid::Uuid) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, uuid.hyphenated().to_string());
    headers.insert(HEADER_STREAM_ID, header_text(&update.stream_id));
    if !update.framework_id.is_empty() {
        headers.insert(HEADER_FRAMEWORK_ID, header_text(&update.framework_id));
    }
    headers.insert(HEADER_ATTEMPT, attempt.to_string());
    headers
}

/// What a forward is published as: subject, headers, payload (the
/// `ForwardedUpdate`, `latest_status` filled in by the stream).
pub fn message(
    prefix: &str,
    node: &str,
    update: StatusUpdate,
    attempt: u32,
    uuid: &uuid::Uuid,
) -> (String, HeaderMap, Bytes) {
    let subject = subject(prefix, node, &update.stream_id);
    let headers = headers(&update, attempt, uuid);
    let payload = ForwardedUpdate {
        update: Some(update),
        attempt,
    }
    .encode_to_vec();
    (subject, headers, Bytes::from(payload))
}

/// Whether the subject filter `filter` matches every subject that starts
/// with the tokens of `prefix` (`prefix.>`).
pub fn covers(filter: &str, prefix: &str) -> bool {
    let mut wanted = prefix.split('.');
    for token in filter.split('.') {
        match (token, wanted.next()) {
            (">", _) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (literal, Some(ours)) if literal == ours => {}
            _ => return false,
        }
    }
    false
}

/// Connects to `config.servers` in the background (the first connection
/// too: `serve` starts while NATS is down), reconnecting forever; every
/// connection event goes into `events`. Must run inside a tokio runtime.
pub async fn connect(
    config: &JetStreamConfig,
    name: &str,
    events: tokio::sync::mpsc::UnboundedSender<async_nats::Event>,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(20) as u64))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.ca_file {
        options = options.add_root_certificates(path.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| e.to_string())?;
    options
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", config.servers.join(",")))
}

/// A JetStream context for `client` whose API requests and PubAcks wait at
/// most `timeout`. Must run inside a tokio runtime.
pub fn context(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(timeout)
        .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Makes sure the stream exists: used as it is when it does (a WARN when
/// its subjects do not cover this node's), created with subjects
/// `<prefix>.>`, file storage and `replicas` when it does not and
/// `create_stream` is set; an error otherwise.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &JetStreamConfig,
) -> Result<(), String> {
    let ours = format!("{}.{}", config.subject_prefix, subject_token(&config.node));
    match js.get_stream(&config.stream).await {
        Ok(stream) => {
            let subjects = &stream.cached_info().config.subjects;
            if !subjects.iter().any(|s| covers(s, &ours)) {
                warn!(stream = %config.stream, ?subjects, ours = %format!("{ours}.>"),
                    "the JetStream stream exists but its subjects do not cover this node's: publishes will fail until they do");
            }
            Ok(())
        }
        Err(err) => {
            let missing = matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            if !missing {
                return Err(format!("cannot look up stream {}: {err}", config.stream));
            }
            if !config.create_stream {
                return Err(format!(
                    "stream {} does not exist and upstream.jetstream.create_stream is false",
                    config.stream
                ));
            }
            let created = js
                .create_stream(stream::Config {
                    name: config.stream.clone(),
                    subjects: vec![format!("{}.>", config.subject_prefix)],
                    storage: stream::StorageType::File,
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    info!(stream = %config.stream, replicas = config.replicas,
                        subjects = %format!("{}.>", config.subject_prefix), "created the JetStream stream");
                    Ok(())
                }
                Err(err) => Err(format!("cannot create stream {}: {err}", config.stream)),
            }
        }
    }
}

/// The metric handles of the publishes.
#[derive(Clone)]
struct PublishMetrics {
    seconds: Histogram,
    stored: Counter,
    duplicate: Counter,
    timeout: Counter,
    no_stream: Counter,
    error: Counter,
}

impl PublishMetrics {
    fn register() -> Self {
        use crate::metrics::{
            UPSTREAM_PUBACKS, UPSTREAM_PUBLISH_FAILURES, UPSTREAM_PUBLISH_SECONDS,
        };
        PublishMetrics {
            seconds: histogram!(UPSTREAM_PUBLISH_SECONDS),
            stored: counter!(UPSTREAM_PUBACKS, "outcome" => "stored"),
            duplicate: counter!(UPSTREAM_PUBACKS, "outcome" => "duplicate"),
            timeout: counter!(UPSTREAM_PUBLISH_FAILURES, "reason" => "timeout"),
            no_stream: counter!(UPSTREAM_PUBLISH_FAILURES, "reason" => "no_stream"),
            error: counter!(UPSTREAM_PUBLISH_FAILURES, "reason" => "error"),
        }
    }
}

/// The JetStream upstream; see the module docs.
pub struct JetStreamUpstream {
    config: Arc<JetStreamConfig>,
    runtime: Handle,
    hub: Addr<SubscriberHub>,
    js: Option<Arc<jetstream::Context>>,
    /// Where heads go to be published (once the client is built).
    jobs: Option<mpsc::UnboundedSender<Job>>,
    /// The publishes' side of the forwards whose PubAck came.
    acked: mpsc::UnboundedSender<Forward<Native>>,
    /// Their receiving side, until the actor starts draining it.
    acked_rx: Option<mpsc::UnboundedReceiver<Forward<Native>>>,
    /// The connection is up (the last event was `Connected`).
    link_up: bool,
    /// Connected and the stream checked: publishing.
    ready: bool,
    /// A stream check is running.
    checking: bool,
    /// Counts connection changes, so that a check started before one is ignored.
    generation: u64,
    metrics: PublishMetrics,
    failures: u64,
}

impl std::fmt::Debug for JetStreamUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamUpstream")
            .field("servers", &self.config.servers)
            .field("stream", &self.config.stream)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl JetStreamUpstream {
    /// Starts the upstream on the current arbiter; it connects at once, on
    /// `runtime`, and tells `hub` whenever JetStream becomes usable or not.
    pub fn start(config: JetStreamConfig, hub: Addr<SubscriberHub>, runtime: Handle) -> Addr<Self> {
        JetStreamUpstream::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            let (acked, acked_rx) = mpsc::unbounded_channel();
            JetStreamUpstream {
                config: Arc::new(config),
                runtime,
                hub,
                js: None,
                jobs: None,
                acked,
                acked_rx: Some(acked_rx),
                link_up: false,
                ready: false,
                checking: false,
                generation: 0,
                metrics: PublishMetrics::register(),
                failures: 0,
            }
        })
    }

    fn set_ready(&mut self, ready: bool) {
        if self.ready == ready {
            return;
        }
        self.ready = ready;
        gauge!(crate::metrics::UPSTREAM_CONNECTED).set(if ready { 1.0 } else { 0.0 });
        if ready {
            info!(servers = %self.config.servers.join(","), stream = %self.config.stream,
                "JetStream reachable; forwarding");
        } else {
            warn!(servers = %self.config.servers.join(","), "JetStream unreachable; pausing");
        }
        let hub = self.hub.clone();
        // Ordered after every earlier link change: the hub's mailbox is unbounded.
        actix::spawn(async move {
            if hub.send(UpstreamLink(ready)).await.is_err() {
                debug!("the hub is gone; the upstream's link change is not told");
            }
        });
    }

    /// Checks (or creates) the stream, on the NATS runtime; the answer
    /// comes back as [`StreamChecked`].
    fn check_stream(&mut self, ctx: &mut Context<Self>) {
        let Some(js) = self.js.clone() else { return };
        if self.checking || !self.link_up {
            return;
        }
        self.checking = true;
        let config = Arc::clone(&self.config);
        let generation = self.generation;
        let me = ctx.address();
        self.runtime.spawn(async move {
            let result = ensure_stream(&js, &config).await;
            let _ = me.send(StreamChecked { generation, result }).await;
        });
    }
}

impl Actor for JetStreamUpstream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        gauge!(crate::metrics::UPSTREAM_CONNECTED).set(0.0);
        if let Some(acked) = self.acked_rx.take() {
            ctx.spawn(acknowledge_all(acked).into_actor(self));
        }
        let me = ctx.address().downgrade();
        let config = Arc::clone(&self.config);
        let name = format!("status-update-manager {}", config.node);
        let weak = me.clone();
        let runtime = self.runtime.clone();
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        // The client's events, in order, to this actor while it runs.
        runtime.spawn(async move {
            while let Some(event) = received.recv().await {
                let Some(me) = weak.upgrade() else { return };
                let _ = me.send(LinkEvent(event)).await;
            }
        });
        runtime.spawn(async move {
            let result = connect(&config, &name, events)
                .await
                .map(|client| Arc::new(context(client, config.publish_timeout)));
            if let Some(me) = me.upgrade() {
                let _ = me.send(Connecting(result)).await;
            }
        });
    }
}

/// The client, built (connecting in the background), or why not.
struct Connecting(Result<Arc<jetstream::Context>, String>);

impl Message for Connecting {
    type Result = ();
}

impl Handler<Connecting> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, msg: Connecting, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(js) => {
                let (jobs, received) = mpsc::unbounded_channel();
                let publisher = Publisher {
                    js: Arc::clone(&js),
                    timeout: self.config.publish_timeout,
                    metrics: self.metrics.clone(),
                    acked: self.acked.clone(),
                    me: ctx.address(),
                };
                self.runtime.spawn(publish_all(publisher, received));
                self.jobs = Some(jobs);
                self.js = Some(js);
                self.check_stream(ctx);
            }
            Err(err) => {
                warn!(cause = %err, "cannot set up the JetStream connection; forwarding stays paused")
            }
        }
    }
}

/// A connection event of the NATS client.
struct LinkEvent(async_nats::Event);

impl Message for LinkEvent {
    type Result = ();
}

impl Handler<LinkEvent> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, msg: LinkEvent, ctx: &mut Context<Self>) {
        match msg.0 {
            async_nats::Event::Connected => {
                info!(servers = %self.config.servers.join(","), "connected to NATS");
                self.generation += 1;
                self.link_up = true;
                self.checking = false;
                self.check_stream(ctx);
            }
            async_nats::Event::Disconnected | async_nats::Event::Closed => {
                info!(servers = %self.config.servers.join(","), "disconnected from NATS");
                self.generation += 1;
                self.link_up = false;
                self.checking = false;
                self.set_ready(false);
            }
            other => debug!(event = %other, "NATS client event"),
        }
    }
}

/// The outcome of a stream check started in `generation`.
struct StreamChecked {
    generation: u64,
    result: Result<(), String>,
}

impl Message for StreamChecked {
    type Result = ();
}

impl Handler<StreamChecked> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, msg: StreamChecked, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        self.checking = false;
        match msg.result {
            Ok(()) => self.set_ready(self.link_up),
            Err(err) => {
                warn!(cause = %err, retry_in = ?RECHECK_AFTER, "JetStream is not usable yet");
                ctx.run_later(RECHECK_AFTER, |act, ctx| act.check_stream(ctx));
            }
        }
    }
}

/// A publish found no stream for its subject: check it again (and create
/// it, with `create_stream`).
struct StreamMissing;

impl Message for StreamMissing {
    type Result = ();
}

impl Handler<StreamMissing> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, _: StreamMissing, ctx: &mut Context<Self>) {
        self.check_stream(ctx);
    }
}

impl Handler<Forward<Native>> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, mut forward: Forward<Native>, _: &mut Context<Self>) {
        let Some(jobs) = self.jobs.as_ref().filter(|_| self.ready) else {
            // Paused meanwhile: the stream sends it again on resume.
            return;
        };
        let uuid = forward.uuid();
        let update = std::mem::take(&mut forward.update);
        let (subject, headers, payload) = message(
            &self.config.subject_prefix,
            &self.config.node,
            update,
            forward.attempt,
            &uuid,
        );
        if jobs
            .send(Job {
                subject,
                headers,
                payload,
                forward,
            })
            .is_err()
        {
            debug!(%uuid, "the publisher is gone; the stream retries");
        }
    }
}

/// One head to publish, and the forward its PubAck acknowledges.
struct Job {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    forward: Forward<Native>,
}

/// What a publish needs besides its job.
#[derive(Clone)]
struct Publisher {
    js: Arc<jetstream::Context>,
    timeout: Duration,
    metrics: PublishMetrics,
    /// Forwards whose PubAck came, to be acknowledged on the actors' thread.
    acked: mpsc::UnboundedSender<Forward<Native>>,
    me: Addr<JetStreamUpstream>,
}

/// Takes the jobs the actor hands over, as many as are there at a time,
/// and publishes each in a task of its own on this (the NATS client's)
/// runtime: the actor and the publishes cross threads once per batch, not
/// once per publish.
async fn publish_all(publisher: Publisher, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        tokio::spawn(publish(publisher.clone(), job));
        while let Ok(job) = jobs.try_recv() {
            tokio::spawn(publish(publisher.clone(), job));
        }
    }
}

/// Publishes one head; its PubAck sends the forward back to be
/// acknowledged; a failure is told to the actor (the stream retries).
async fn publish(p: Publisher, job: Job) {
    let Job {
        subject,
        headers,
        payload,
        forward,
    } = job;
    let started = Instant::now();
    let published = tokio::time::timeout(p.timeout, async {
        p.js.send_publish(
            subject,
            PublishMessage::build().headers(headers).payload(payload),
        )
        .await?
        .await
    })
    .await;
    let why = match published {
        Ok(Ok(ack)) => {
            p.metrics.seconds.record(started.elapsed().as_secs_f64());
            if ack.duplicate {
                p.metrics.duplicate.increment(1);
            } else {
                p.metrics.stored.increment(1);
            }
            if p.acked.send(forward).is_err() {
                debug!("the upstream stopped; a PubAck is not recorded (the stream retries)");
            }
            return;
        }
        Ok(Err(err)) => {
            match err.kind() {
                PublishErrorKind::TimedOut => p.metrics.timeout.increment(1),
                PublishErrorKind::StreamNotFound => {
                    p.metrics.no_stream.increment(1);
                    let _ = p.me.send(StreamMissing).await;
                }
                _ => p.metrics.error.increment(1),
            }
            err.to_string()
        }
        Err(_) => {
            p.metrics.timeout.increment(1);
            format!("no PubAck within {:?}", p.timeout)
        }
    };
    let _ =
        p.me.send(PublishFailed {
            stream: forward.stream.clone(),
            uuid: forward.uuid(),
            why,
        })
        .await;
}

/// Acknowledges, on the actors' thread, each forward whose PubAck came (as
/// many as are there at a time): the ACK record, as the `Acknowledge` RPC
/// writes it; then the stream forwards its next head. Each stream answers
/// (and logs) a rejection itself; nobody waits for the answers.
async fn acknowledge_all(mut acked: mpsc::UnboundedReceiver<Forward<Native>>) {
    while let Some(forward) = acked.recv().await {
        drop(forward.acknowledge());
        while let Ok(forward) = acked.try_recv() {
            drop(forward.acknowledge());
        }
    }
}

/// A publish that got no PubAck; it is retried by its stream.
struct PublishFailed {
    stream: String,
    uuid: uuid::Uuid,
    why: String,
}

impl Message for PublishFailed {
    type Result = ();
}

impl Handler<PublishFailed> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, msg: PublishFailed, _: &mut Context<Self>) {
        self.failures += 1;
        // A server going away fails every publish in flight: say it now and then.
        if self.failures.is_power_of_two() {
            warn!(stream = %msg.stream, uuid = %msg.uuid, cause = %msg.why, failures = self.failures,
                "publish not acknowledged by JetStream; its stream retries it");
        } else {
            debug!(stream = %msg.stream, uuid = %msg.uuid, cause = %msg.why, "publish not acknowledged by JetStream");
        }
    }
}

/// Whether JetStream is usable now: connected, and the stream checked
/// (what `sum_upstream_connected` shows).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct IsReady;

impl Handler<IsReady> for JetStreamUpstream {
    type Result = bool;

    fn handle(&mut self, _: IsReady, _: &mut Context<Self>) -> bool {
        self.ready
    }
}

/// Shutdown: the connection is dropped and the actor stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopUpstream;

impl Handler<StopUpstream> for JetStreamUpstream {
    type Result = ();

    fn handle(&mut self, _: StopUpstream, ctx: &mut Context<Self>) {
        self.js = None;
        self.jobs = None;
        self.ready = false;
        gauge!(crate::metrics::UPSTREAM_CONNECTED).set(0.0);
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_id_is_one_subject_token() {
        assert_eq!(subject_token("task-1"), "task-1");
        assert_eq!(subject_token("a/b.c"), "a%2Fb%2Ec");
        assert_eq!(subject_token("a b*>%"), "a%20b%2A%3E%25");
        assert_eq!(subject_token("é"), "%C3%A9");
        assert_eq!(
            subject("sum", "host.example", "x.y"),
            "sum.host%2Eexample.x%2Ey"
        );
    }

    #[test]
    fn header_values_are_as_they_are_unless_a_header_cannot_carry_them() {
        assert_eq!(header_text("task 1/é"), "task 1/é");
        assert_eq!(header_text("a\r\nb"), "a%0D%0Ab");
        assert_eq!(header_text(" lead"), "%20lead");
        assert_eq!(header_text("trail\t"), "trail%09");
    }

    #[test]
    fn the_headers_carry_the_uuid_the_ids_and_the_attempt() {
        let uuid = uuid::Uuid::new_v4();
        let update = StatusUpdate {
            stream_id: "s\n1".into(),
            framework_id: "fw".into(),
            ..StatusUpdate::default()
        };
        let h = headers(&update, 3, &uuid);
        assert_eq!(h.get(HEADER_MSG_ID).unwrap().as_str(), uuid.to_string());
        assert_eq!(h.get(HEADER_STREAM_ID).unwrap().as_str(), "s%0A1");
        assert_eq!(h.get(HEADER_FRAMEWORK_ID).unwrap().as_str(), "fw");
        assert_eq!(h.get(HEADER_ATTEMPT).unwrap().as_str(), "3");
        let bare = StatusUpdate {
            stream_id: "s".into(),
            ..StatusUpdate::default()
        };
        assert!(headers(&bare, 0, &uuid).get(HEADER_FRAMEWORK_ID).is_none());
    }

    #[test]
    fn a_filter_covers_a_prefix_when_it_matches_everything_under_it() {
        assert!(covers("sum.>", "sum.node-1"));
        assert!(covers(">", "sum.node-1"));
        assert!(covers("sum.*.>", "sum.node-1"));
        assert!(covers("sum.node-1.>", "sum.node-1"));
        assert!(!covers("sum.node-2.>", "sum.node-1"));
        assert!(
            !covers("sum.node-1.*", "sum.node-1"),
            "only one token deeper"
        );
        assert!(!covers("sum.node-1", "sum.node-1"));
        assert!(!covers("other.>", "sum.node-1"));
    }
}
