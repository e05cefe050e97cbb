//! The gRPC front: API.md §1 mapped onto the manager's messages.
//!
//! Each RPC validates what the manager cannot (a missing `update`, the
//! payload limit, the stream id and uuid of an ack), sends one message to
//! the manager (or the hub), and maps the typed error to the status code of
//! API.md's table; the message text is the error's, which names the stream,
//! the uuid and what was expected. A request it refuses itself is logged
//! here ([`crate::logs`]); the manager's and the streams' answers are logged
//! where they were decided, never again here.
//!
//! `UpdateStream` and `AcknowledgeStream` take each of their requests the
//! same way (`begin_update`, `begin_acknowledge`), as they are read, and
//! answer each in a message of the call, in request order
//! (`answer_in_order`): one HTTP/2 stream carries many updates, without a
//! call's headers, trailers and task each.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use super::hub::{AdminPause, AdminResume, GetHubStatus, Subscribe, SubscriberHub, SubscriberItem};
use super::pause::{unix_seconds, PAUSE_FILE};
use crate::error::{AckError, UpdateError};
use crate::kind::native::validate_stream_id;
use crate::kind::{parse_status_uuid, InvalidUpdate, Native};
use crate::logs;
use crate::messages::{
    Acknowledge, Cleanup, GetStream, GetSummary, ListStreams, StreamStats, Update, UpdateOutcome,
};
use crate::proto::status_update_manager::v1 as pb;
use crate::proto::status_update_manager::v1::status_update_manager_server::StatusUpdateManager as Api;
use crate::store::SyncPolicy;
use crate::StatusUpdateManager;

/// The gRPC service; cheap to clone (two actor addresses).
#[derive(Debug, Clone)]
pub struct GrpcService {
    manager: Addr<StatusUpdateManager<Native>>,
    hub: Addr<SubscriberHub>,
    max_payload_bytes: usize,
    /// Why `Subscribe` is refused: the upstream is not the subscriber.
    no_subscriber: Option<Arc<str>>,
    /// `GetStatus`'s `data_dir` (absolute) and `sync`.
    store: Arc<(String, SyncPolicy)>,
    /// Set once the server is shutting down: the streaming calls stop
    /// reading, answer what they took and end ([`Self::end_streaming_calls`]).
    closing: Arc<watch::Sender<bool>>,
    /// Requests taken by the streaming calls and not yet answered, over all
    /// of them ([`STREAM_REQUESTS_IN_FLIGHT_TOTAL`]).
    streamed: Arc<Semaphore>,
}

impl GrpcService {
    /// Refuses `Subscribe` with FAILED_PRECONDITION naming the upstream
    /// kind, unless the upstream is the subscriber.
    pub fn with_upstream(mut self, upstream: &super::config::Upstream) -> Self {
        self.no_subscriber = match upstream {
            super::config::Upstream::Subscriber => None,
            super::config::Upstream::JetStream(js) => Some(
                format!(
                    "this server has no subscriber: its upstream is {} (upstream.kind = \"{}\"), \
                     every forward is published into NATS JetStream stream {} under {}.>",
                    upstream.kind(),
                    upstream.kind(),
                    js.stream,
                    js.subject_prefix
                )
                .into(),
            ),
        };
        self
    }

    /// The service over a running manager and hub.
    pub fn new(
        manager: Addr<StatusUpdateManager<Native>>,
        hub: Addr<SubscriberHub>,
        max_payload_bytes: usize,
    ) -> Self {
        GrpcService {
            manager,
            hub,
            max_payload_bytes,
            no_subscriber: None,
            store: Arc::new((String::new(), SyncPolicy::default())),
            closing: Arc::new(watch::channel(false).0),
            streamed: Arc::new(Semaphore::new(STREAM_REQUESTS_IN_FLIGHT_TOTAL)),
        }
    }

    /// Ends every `UpdateStream` and `AcknowledgeStream` call of this
    /// service and of its clones, now and later: each reads no further
    /// request, answers those it took, and ends with UNAVAILABLE (the
    /// server is shutting down). A graceful stop calls this, else it would
    /// wait for the agents to end their calls.
    pub fn end_streaming_calls(&self) {
        self.closing.send_replace(true);
    }

    /// The data directory and sync policy `GetStatus` reports (the
    /// directory made absolute, from the current directory).
    pub fn with_store(mut self, data_dir: &Path, sync: SyncPolicy) -> Self {
        let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        self.store = Arc::new((dir.display().to_string(), sync));
        self
    }
}

fn mailbox(err: MailboxError) -> Status {
    Status::unavailable(format!(
        "the manager is not running ({err}); the server is shutting down"
    ))
}

/// The status code of an update rejection (API.md §1).
pub fn update_status(err: &UpdateError) -> Status {
    let code = match err {
        UpdateError::Invalid { .. } => Code::InvalidArgument,
        UpdateError::FileExists { .. }
        | UpdateError::CheckpointMismatch { .. }
        | UpdateError::FrameworkMismatch { .. }
        | UpdateError::StreamClosing { .. } => Code::FailedPrecondition,
        UpdateError::QueueFull { .. } | UpdateError::TooManyStreams { .. } => {
            Code::ResourceExhausted
        }
        UpdateError::Unavailable { .. } | UpdateError::Storage { .. } => Code::Unavailable,
        UpdateError::CreateFailed { .. } | UpdateError::Panicked { .. } => Code::Internal,
    };
    Status::new(code, err.to_string())
}

/// The status code of an ack rejection (API.md §1).
pub fn ack_status(err: &AckError) -> Status {
    let code = match err {
        AckError::UnknownStream { .. } => Code::NotFound,
        AckError::Invalid { .. } => Code::InvalidArgument,
        AckError::DuplicateAck { .. } => Code::AlreadyExists,
        AckError::NothingPending { .. } | AckError::UnexpectedAck { .. } => {
            Code::FailedPrecondition
        }
        AckError::Unavailable { .. } | AckError::Storage { .. } => Code::Unavailable,
        AckError::Panicked { .. } => Code::Internal,
    };
    Status::new(code, err.to_string())
}

fn checked_stream_id(id: &str) -> Result<(), Status> {
    validate_stream_id(id).map_err(|reason| Status::invalid_argument(reason.to_string()))
}

/// A status uuid for messages, as far as it can be read.
fn uuid_text(raw: &[u8]) -> String {
    match <[u8; 16]>::try_from(raw) {
        Ok(bytes) => uuid::Uuid::from_bytes(bytes).to_string(),
        Err(_) => format!("<{} bytes>", raw.len()),
    }
}

fn millis(d: Option<Duration>, none: i64) -> i64 {
    d.map_or(none, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stream's figures as `StreamInfo`.
pub fn stream_info(stats: StreamStats<Native>) -> pb::StreamInfo {
    pb::StreamInfo {
        stream_id: stats.stream,
        framework_id: stats.framework_id.unwrap_or_default(),
        checkpointed: stats.checkpointed,
        pending: u32::try_from(stats.pending).unwrap_or(u32::MAX),
        received: stats.received as u64,
        acknowledged: stats.acknowledged as u64,
        terminated: stats.terminated,
        attempt: stats.attempt,
        next_retry_in_millis: millis(stats.next_retry_in, -1),
        oldest_pending_age_millis: millis(stats.oldest_pending_age, 0),
        checkpoint_bytes: stats.checkpoint_bytes,
        pending_statuses: stats
            .pending_updates
            .into_iter()
            .filter_map(|u| u.status)
            .collect(),
        mailbox_backlog: stats.mailbox_backlog,
        messages_handled: stats.messages_handled,
        mailbox_oldest_wait_millis: u64::try_from(stats.mailbox_oldest_wait.as_millis())
            .unwrap_or(u64::MAX),
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `ListStreamsRequest.page_size` when it is 0.
pub const LIST_PAGE_SIZE_DEFAULT: u32 = 1000;
/// The largest `ListStreamsRequest.page_size`; a larger one is INVALID_ARGUMENT.
pub const LIST_PAGE_SIZE_MAX: u32 = 10_000;
/// Most encoded bytes of one `ListStreamsResponse`, so that a client with
/// gRPC's usual 4 MiB receive limit reads every page: a page stops before
/// the stream that would pass it (one stream alone may, the page is never
/// empty while streams follow), leaving room for `next_page_token`.
pub const LIST_PAGE_BYTES: usize = 4 * 1024 * 1024 - 16 * 1024;

/// The page size a `ListStreamsRequest.page_size` asks for.
pub fn list_page_size(page_size: u32) -> Result<usize, Status> {
    match page_size {
        0 => Ok(LIST_PAGE_SIZE_DEFAULT as usize),
        1..=LIST_PAGE_SIZE_MAX => Ok(page_size as usize),
        _ => Err(Status::invalid_argument(format!(
            "ListStreamsRequest.page_size {page_size} is over the limit of {LIST_PAGE_SIZE_MAX}; \
             expected 1 to {LIST_PAGE_SIZE_MAX}, or 0 for the default ({LIST_PAGE_SIZE_DEFAULT})"
        ))),
    }
}

/// The `next_page_token` of a page whose last stream is `last`: the id's
/// bytes in lowercase hex, so that any id round-trips.
pub fn list_page_token(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The stream id a `ListStreamsRequest.page_token` continues after (`None`
/// for `""`, the first page); a token no page could have given is
/// INVALID_ARGUMENT.
pub fn list_page_after(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = |why: &str| {
        Status::invalid_argument(format!(
            "ListStreamsRequest.page_token ({} bytes) is malformed: {why}; expected the \
             next_page_token of a previous ListStreams response, or \"\" for the first page",
            token.len()
        ))
    };
    if !token.len().is_multiple_of(2) {
        return Err(malformed("its length is odd"));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = token
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| malformed("it is not lowercase hexadecimal"))?;
    let id = String::from_utf8(bytes).map_err(|_| malformed("it names no UTF-8 stream id"))?;
    validate_stream_id(&id).map_err(|_| malformed("it names no valid stream id"))?;
    Ok(Some(id))
}

impl GrpcService {
    /// Checks an update as far as the manager cannot, then sends it to the
    /// manager at once (so that requests sent in one order reach the manager
    /// in that order); the returned future awaits its answer. `Update` and
    /// every request of `UpdateStream` go through here.
    fn begin_update(
        &self,
        request: pb::UpdateRequest,
    ) -> impl Future<Output = Result<pb::UpdateResponse, Status>> + Send + 'static {
        let sent = self
            .checked_update(request)
            .map(|message| self.manager.send(message));
        async move {
            let outcome = sent?
                .await
                .map_err(|err| {
                    // The manager gave no answer (it stopped): nobody counted it.
                    crate::metrics::count_rejected_update();
                    mailbox(err)
                })?
                .map_err(|e| update_status(&e))?;
            Ok(pb::UpdateResponse {
                duplicate: outcome == UpdateOutcome::Duplicate,
            })
        }
    }

    /// A streaming call of this service: each request taken by `begin`,
    /// its outcome made an answer by `answer` ([`answer_in_order`]).
    fn answer_each<Q, R, A, Fut>(
        &self,
        requests: Streaming<Q>,
        begin: fn(&GrpcService, Q) -> Fut,
        answer: fn(Result<R, Status>) -> A,
    ) -> ReceiverStream<Result<A, Status>>
    where
        Q: Send + 'static,
        R: 'static,
        A: Send + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
    {
        let service = self.clone();
        answer_in_order(
            requests,
            self.closing.subscribe(),
            self.streamed.clone(),
            move |request| {
                let outcome = begin(&service, request);
                async move { answer(outcome.await) }
            },
        )
    }

    /// The manager's message for an update, or why it is refused (logged
    /// and counted here).
    fn checked_update(&self, request: pb::UpdateRequest) -> Result<Update<Native>, Status> {
        let pb::UpdateRequest {
            update,
            memory_only,
        } = request;
        let Some(mut update) = update else {
            let reason = "UpdateRequest.update is missing";
            logs::rejected(
                logs::Request::Update,
                "invalid",
                &"<missing>",
                &"<missing>",
                &reason,
            );
            crate::metrics::count_rejected_update();
            return Err(Status::invalid_argument(reason));
        };
        // How the messages below name the stream (made only for them).
        let stream = |id: &str| match validate_stream_id(id) {
            Ok(()) => id.to_string(),
            Err(_) => "<invalid stream id>".to_string(),
        };
        // Checked here so that the message says the status is missing (the
        // shared checks would report its missing uuid).
        let Some(status) = update.status.as_mut() else {
            let err = UpdateError::Invalid {
                stream: stream(&update.stream_id),
                uuid: "<missing>".into(),
                reason: InvalidUpdate::MissingStatus,
            };
            logs::update_rejected(&stream(&update.stream_id), &"<missing>", &err);
            crate::metrics::count_rejected_update();
            return Err(update_status(&err));
        };
        if status.payload.len() > self.max_payload_bytes {
            let (stream, uuid) = (stream(&update.stream_id), uuid_text(&status.uuid));
            let reason = format!(
                "rejected update for stream {stream} (status uuid {uuid}): payload of {} bytes is over the limit of {} bytes (server.max_payload_bytes)",
                status.payload.len(),
                self.max_payload_bytes
            );
            logs::rejected(logs::Request::Update, "invalid", &stream, &uuid, &reason);
            crate::metrics::count_rejected_update();
            return Err(Status::invalid_argument(reason));
        }
        if status.timestamp_unix_micros == 0 {
            status.timestamp_unix_micros = now_micros();
        }
        Ok(Update::<Native> {
            update,
            checkpoint: !memory_only,
        })
    }

    /// [`Self::begin_update`] for an acknowledgement (`Acknowledge` and
    /// every request of `AcknowledgeStream`).
    fn begin_acknowledge(
        &self,
        request: pb::AcknowledgeRequest,
    ) -> impl Future<Output = Result<pb::AcknowledgeResponse, Status>> + Send + 'static {
        let sent = self
            .checked_acknowledge(request)
            .map(|message| self.manager.send(message));
        async move {
            let outcome = sent?
                .await
                .map_err(|err| {
                    // The manager gave no answer (it stopped): nobody counted it.
                    crate::metrics::count_rejected_ack();
                    mailbox(err)
                })?
                .map_err(|e| ack_status(&e))?;
            Ok(pb::AcknowledgeResponse {
                stream_terminated: outcome.stream_terminated,
            })
        }
    }

    /// The manager's message for an acknowledgement, or why it is refused
    /// (logged and counted here).
    fn checked_acknowledge(
        &self,
        request: pb::AcknowledgeRequest,
    ) -> Result<Acknowledge<Native>, Status> {
        let pb::AcknowledgeRequest {
            stream_id,
            status_uuid,
        } = request;
        validate_stream_id(&stream_id).map_err(|reason| {
            let uuid = uuid_text(&status_uuid);
            let reason = format!("rejected acknowledgement of {uuid}: {reason}");
            logs::rejected(
                logs::Request::Ack,
                "invalid",
                &"<invalid stream id>",
                &uuid,
                &reason,
            );
            crate::metrics::count_rejected_ack();
            Status::invalid_argument(reason)
        })?;
        let uuid = parse_status_uuid(&status_uuid).map_err(|reason| {
            let reason = format!("rejected acknowledgement for stream {stream_id}: {reason}");
            logs::rejected(
                logs::Request::Ack,
                "invalid",
                &stream_id,
                &uuid_text(&status_uuid),
                &reason,
            );
            crate::metrics::count_rejected_ack();
            Status::invalid_argument(reason)
        })?;
        Ok(Acknowledge::<Native> {
            stream: stream_id,
            uuid,
        })
    }
}

/// Requests of one streaming call taken and not yet answered, at most: as
/// many as unary calls at once on one connection
/// ([`super::MAX_CONCURRENT_STREAMS`]). Past it the call reads no further
/// request until the oldest is answered, and HTTP/2 flow control holds the
/// client back.
pub const STREAM_REQUESTS_IN_FLIGHT: usize = super::MAX_CONCURRENT_STREAMS as usize;

/// Requests taken and not yet answered over every streaming call at once:
/// sixteen calls' worth. Past it the calls read no further request until
/// some are answered, so that many calls on many connections hold no more
/// decoded requests between them than this.
pub const STREAM_REQUESTS_IN_FLIGHT_TOTAL: usize = 16 * STREAM_REQUESTS_IN_FLIGHT;

/// Answers ready to be sent on one streaming call; past it the call waits
/// for the client to read them.
const STREAM_ANSWERS_BUFFERED: usize = 128;

/// Runs a streaming call: each request goes through `begin` as it is read
/// (in order), and its answer is sent once it and every earlier one are
/// answered: the answers come in the order of the requests. A request is
/// read only with room under both bounds: the call's own and `streamed`,
/// every call's. A request the
/// transport cannot give (undecodable, over the size or in-flight bounds)
/// ends the call with its status once the requests taken before it are
/// answered; so does `closing` (UNAVAILABLE). The call ends OK once the
/// client has ended its requests and every one is answered.
fn answer_in_order<Q, A, F, Fut>(
    mut requests: Streaming<Q>,
    mut closing: watch::Receiver<bool>,
    streamed: Arc<Semaphore>,
    mut begin: F,
) -> ReceiverStream<Result<A, Status>>
where
    Q: Send + 'static,
    A: Send + 'static,
    F: FnMut(Q) -> Fut + Send + 'static,
    Fut: Future<Output = A> + Send + 'static,
{
    let (answers, rx) = mpsc::channel(STREAM_ANSWERS_BUFFERED);
    tokio::spawn(async move {
        let mut taken = FuturesOrdered::new();
        let mut reading = true;
        let mut ending = None;
        // Room for the next request under `streamed`, once there is.
        let mut room = None;
        loop {
            tokio::select! {
                biased;
                () = closed(&mut closing), if reading => {
                    reading = false;
                    ending = Some(Status::unavailable(
                        "the server is shutting down: requests not answered on this call were \
                         not taken; send them again to another server or after the restart",
                    ));
                }
                Some(answer) = taken.next(), if !taken.is_empty() => {
                    if answers.send(Ok(answer)).await.is_err() {
                        // The client went away: the answers still due are
                        // dropped, the requests stay taken.
                        return;
                    }
                }
                permit = streamed.clone().acquire_owned(),
                    if reading && room.is_none() && taken.len() < STREAM_REQUESTS_IN_FLIGHT =>
                {
                    match permit {
                        Ok(permit) => room = Some(permit),
                        // Never closed while the service lives.
                        Err(_) => {
                            reading = false;
                            ending = Some(Status::unavailable("the server is shutting down"));
                        }
                    }
                }
                request = requests.message(), if reading && room.is_some() => {
                    match request {
                        Ok(Some(request)) => {
                            let answer = begin(request);
                            let permit = room.take();
                            taken.push_back(async move {
                                let answer = answer.await;
                                drop(permit);
                                answer
                            });
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            reading = false;
                            ending = Some(status);
                        }
                    }
                }
                else => break,
            }
        }
        if let Some(status) = ending {
            let _ = answers.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

/// Returns once `closing` is set (or its sender gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// A streaming call's answer to one request: what the unary RPC replies, or
/// its status as a [`pb::RequestError`].
fn request_error(status: Status) -> pb::RequestError {
    pb::RequestError {
        code: status.code() as i32,
        message: status.message().to_string(),
    }
}

#[tonic::async_trait]
impl Api for GrpcService {
    async fn update(
        &self,
        request: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        self.begin_update(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        self.begin_acknowledge(request.into_inner())
            .await
            .map(Response::new)
    }

    type UpdateStreamStream = ReceiverStream<Result<pb::UpdateStreamResponse, Status>>;

    async fn update_stream(
        &self,
        request: Request<Streaming<pb::UpdateRequest>>,
    ) -> Result<Response<Self::UpdateStreamStream>, Status> {
        use pb::update_stream_response::Outcome;
        Ok(Response::new(self.answer_each(
            request.into_inner(),
            Self::begin_update,
            |answer| pb::UpdateStreamResponse {
                outcome: Some(
                    answer.map_or_else(|e| Outcome::Error(request_error(e)), Outcome::Ok),
                ),
            },
        )))
    }

    type AcknowledgeStreamStream = ReceiverStream<Result<pb::AcknowledgeStreamResponse, Status>>;

    async fn acknowledge_stream(
        &self,
        request: Request<Streaming<pb::AcknowledgeRequest>>,
    ) -> Result<Response<Self::AcknowledgeStreamStream>, Status> {
        use pb::acknowledge_stream_response::Outcome;
        Ok(Response::new(self.answer_each(
            request.into_inner(),
            Self::begin_acknowledge,
            |answer| pb::AcknowledgeStreamResponse {
                outcome: Some(
                    answer.map_or_else(|e| Outcome::Error(request_error(e)), Outcome::Ok),
                ),
            },
        )))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = SubscriberItem> + Send + 'static>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if let Some(why) = &self.no_subscriber {
            return Err(Status::failed_precondition(why.to_string()));
        }
        let name = request.into_inner().subscriber;
        let name = if name.is_empty() {
            "(unnamed)".to_string()
        } else {
            name
        };
        let rx = self.hub.send(Subscribe { name }).await.map_err(mailbox)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cleanup(
        &self,
        request: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        let framework_id = request.into_inner().framework_id;
        if framework_id.is_empty() {
            return Err(Status::invalid_argument(
                "CleanupRequest.framework_id is empty; expected a framework id",
            ));
        }
        let closed = self
            .manager
            .send(Cleanup { framework_id })
            .await
            .map_err(mailbox)?;
        Ok(Response::new(pb::CleanupResponse {
            streams_closed: u32::try_from(closed).unwrap_or(u32::MAX),
        }))
    }

    async fn pause(
        &self,
        _request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        self.hub
            .send(AdminPause)
            .await
            .map_err(mailbox)?
            .map_err(|err| {
                Status::unavailable(format!(
                    "forwarding is paused, but the pause could not be kept in the data \
                     directory's {PAUSE_FILE} file ({err}): it would not survive a restart; retry"
                ))
            })?;
        Ok(Response::new(pb::PauseResponse {}))
    }

    async fn resume(
        &self,
        _request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        self.hub
            .send(AdminResume)
            .await
            .map_err(mailbox)?
            .map_err(|err| {
                Status::unavailable(format!(
                    "forwarding stays paused: the pause file {PAUSE_FILE} in the data directory \
                     could not be removed ({err}); retry"
                ))
            })?;
        Ok(Response::new(pb::ResumeResponse {}))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let hub = self.hub.send(GetHubStatus).await.map_err(mailbox)?;
        let summary = self.manager.send(GetSummary).await.map_err(mailbox)?;
        let (data_dir, sync) = &*self.store;
        let (subscriber, subscribed_since) = hub.subscriber.clone().unzip();
        Ok(Response::new(pb::GetStatusResponse {
            paused: hub.paused,
            operator_paused: hub.admin_paused_since.is_some(),
            operator_paused_since_unix_seconds: hub.admin_paused_since.map_or(0, unix_seconds),
            subscribed: subscriber.is_some(),
            subscriber: subscriber.unwrap_or_default(),
            subscribed_since_unix_seconds: subscribed_since.map_or(0, unix_seconds),
            streams: summary.streams as u64,
            pending_updates: summary.pending_updates,
            data_dir: data_dir.clone(),
            sync: sync.as_str().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let pb::ListStreamsRequest {
            framework_id,
            page_size,
            page_token,
        } = request.into_inner();
        let limit = list_page_size(page_size)?;
        let after = list_page_after(&page_token)?;
        let query = if framework_id.is_empty() {
            ListStreams::<Native>::all()
        } else {
            ListStreams::of_framework(framework_id)
        };
        let page = self
            .manager
            .send(query.after(after).limit(limit))
            .await
            .map_err(mailbox)?;
        let mut next_after = page.next_after;
        let mut streams = Vec::with_capacity(page.streams.len());
        let mut bytes = 0;
        for stats in page.streams {
            let info = stream_info(stats);
            // The field's tag and length prefix take at most 6 bytes.
            let size = prost::Message::encoded_len(&info) + 6;
            if !streams.is_empty() && bytes + size > LIST_PAGE_BYTES {
                // The next page starts with this stream.
                next_after = streams.last().map(|s: &pb::StreamInfo| s.stream_id.clone());
                break;
            }
            bytes += size;
            streams.push(info);
        }
        Ok(Response::new(pb::ListStreamsResponse {
            streams,
            next_page_token: next_after
                .as_deref()
                .map(list_page_token)
                .unwrap_or_default(),
        }))
    }

    async fn get_stream(
        &self,
        request: Request<pb::GetStreamRequest>,
    ) -> Result<Response<pb::StreamInfo>, Status> {
        let stream_id = request.into_inner().stream_id;
        checked_stream_id(&stream_id)?;
        let stats = self
            .manager
            .send(GetStream::<Native> {
                stream: stream_id.clone(),
            })
            .await
            .map_err(mailbox)?
            .map_err(|err| Status::internal(err.to_string()))?
            .ok_or_else(|| Status::not_found(format!("stream {stream_id} is not in memory")))?;
        Ok(Response::new(stream_info(stats)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use http_body::Frame;
    use prost::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An acknowledgement request as a gRPC frame of a request body.
    fn frame(n: usize) -> Result<Frame<Bytes>, Status> {
        let request = pb::AcknowledgeRequest {
            stream_id: format!("s{n}"),
            status_uuid: vec![1; 16],
        };
        let mut bytes = BytesMut::new();
        bytes.put_u8(0);
        bytes.put_u32(request.encoded_len() as u32);
        request.encode(&mut bytes).unwrap();
        Ok(Frame::data(bytes.freeze()))
    }

    /// Lets every task of this (current-thread) runtime run until it waits.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_streaming_call_reads_only_what_the_bounds_leave_room_for_and_answers_in_order() {
        let (frames, rx) = mpsc::channel(16);
        let body = http_body_util::StreamBody::new(ReceiverStream::new(rx));
        let requests = Streaming::new_request(
            tonic_prost::ProstDecoder::<pb::AcknowledgeRequest>::default(),
            body,
            None,
            None,
        );
        let (_closing, closing) = watch::channel(false);
        // Room for two requests over every call.
        let streamed = Arc::new(Semaphore::new(2));
        let (go, ready) = watch::channel(false);
        let begun = Arc::new(AtomicUsize::new(0));
        let counted = begun.clone();
        let mut answers = answer_in_order(requests, closing, streamed.clone(), move |request| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut ready = ready.clone();
            async move {
                let _ = ready.wait_for(|go| *go).await;
                request.stream_id
            }
        });
        for n in 0..5 {
            frames.send(frame(n)).await.unwrap();
        }
        settle().await;
        assert_eq!(
            begun.load(Ordering::SeqCst),
            2,
            "two taken, three left unread"
        );
        assert_eq!(streamed.available_permits(), 0);

        go.send_replace(true);
        for n in 0..5 {
            let answer = answers.next().await.unwrap().unwrap();
            assert_eq!(answer, format!("s{n}"), "answers in request order");
        }
        assert_eq!(begun.load(Ordering::SeqCst), 5);
        drop(frames);
        assert!(
            answers.next().await.is_none(),
            "the call ends once its requests end"
        );
        assert_eq!(streamed.available_permits(), 2, "every permit given back");
    }
}
