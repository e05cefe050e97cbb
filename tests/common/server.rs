//! The gRPC service in this test's process: a real server on `127.0.0.1:0`
//! over a temporary data directory, driven by the generated client.
//!
//! These tests run on real time (network I/O): every wait is bounded
//! ([`BOUND`]) and waits for a message or a condition; nothing asserts a
//! duration, only orders and contents. Where a retry must happen `retry.min`
//! is short ([`SHORT_RETRY`]); elsewhere the default (10 s) is longer than
//! any wait, so a forward that arrives within a wait is a fresh forward or a
//! resume, never a retry. "Nothing (else) was forwarded" is shown by a fence
//! ([`Server::assert_nothing_forwarded`]), not by watching for a while.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use tonic::{Code, Streaming};
use uuid::Uuid;

use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use status_update_manager::proto::status_update_manager::v1::{
    AcknowledgeRequest, AcknowledgeResponse, CleanupRequest, ForwardedUpdate, GetStatusRequest,
    GetStatusResponse, GetStreamRequest, ListStreamsRequest, PauseRequest, ResumeRequest, Status,
    StatusUpdate, StreamInfo, SubscribeRequest, UpdateRequest, UpdateResponse,
};
use status_update_manager::service::config::{Overrides, ServiceConfig, Settings};
use status_update_manager::service::{self, RunningService};
use status_update_manager::store::layout::native_stream_path;

use super::{checkpointed, eventually, snapshot, status_update, BOUND};

/// The generated client over a plain channel.
pub type Client = StatusUpdateManagerClient<Channel>;

/// A short retry schedule for the tests that need retries.
pub const SHORT_RETRY: &str = "250ms";
/// Producer timestamps, so that forwarded statuses compare equal to sent ones
/// (the server fills in 0).
pub const TIMESTAMP: i64 = 1_750_000_000_000_000;

/// Settings over `data_dir` on `listen` from the compiled-in defaults (none
/// of the process environment), with `env` pairs (`SUM__SECTION__KEY`) on top.
pub fn settings(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> Settings {
    let overrides = Overrides {
        data_dir: Some(data_dir.into()),
        listen: Some(listen.into()),
        config_file: None,
    };
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_with_env(&overrides, Some(env)).expect("the settings load")
}

/// The service started in-process with `settings`, which must be valid.
pub async fn start_service(settings: Settings) -> RunningService {
    let config = settings.validate().expect("the test settings are valid");
    service::start(config).await.expect("the service starts")
}

/// A running server over `data_dir`, and a client connected to it.
pub struct Server {
    pub running: RunningService,
    pub url: String,
    pub channel: Channel,
    pub client: Client,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts a server over `data_dir` with the compiled-in defaults (no
    /// process environment), `listen = 127.0.0.1:0`, changed by `tweak`.
    pub async fn start(data_dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Server {
        Self::start_with(data_dir, tweak, |_| {}).await
    }

    /// [`start`](Self::start), with `tweak_config` changing the validated
    /// config (for what has no config key).
    pub async fn start_with(
        data_dir: &Path,
        tweak: impl FnOnce(&mut Settings),
        tweak_config: impl FnOnce(&mut ServiceConfig),
    ) -> Server {
        let mut settings = settings(data_dir, "127.0.0.1:0", &[]);
        tweak(&mut settings);
        let mut config = settings.validate().expect("the test settings are valid");
        tweak_config(&mut config);
        let running = service::start(config).await.expect("the service starts");
        let url = format!("http://{}", running.local_addr);
        let channel = Channel::from_shared(url.clone())
            .expect("a valid url")
            .connect()
            .await
            .expect("the client connects");
        Server {
            running,
            url,
            client: Client::new(channel.clone()),
            channel,
            data_dir: data_dir.into(),
        }
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await.expect("a clean shutdown");
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A new subscriber on its own connection.
    pub async fn subscribe(&self, name: &str) -> Streaming<ForwardedUpdate> {
        Client::connect(self.url.clone())
            .await
            .expect("the subscriber connects")
            .subscribe(SubscribeRequest {
                subscriber: name.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("Subscribe of {name} failed: {s}"))
            .into_inner()
    }

    pub async fn send(&self, request: UpdateRequest) -> Result<UpdateResponse, tonic::Status> {
        self.client()
            .update(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A checkpointed update that must be accepted (not a duplicate).
    pub async fn update(&self, update: StatusUpdate) {
        let what = describe(&update);
        let response = self
            .send(checkpointed(update))
            .await
            .unwrap_or_else(|s| panic!("Update of {what} was rejected: {s}"));
        assert!(!response.duplicate, "Update of {what} reported a duplicate");
    }

    pub async fn ack_raw(
        &self,
        stream: &str,
        uuid: Vec<u8>,
    ) -> Result<AcknowledgeResponse, tonic::Status> {
        self.client()
            .acknowledge(AcknowledgeRequest {
                stream_id: stream.into(),
                status_uuid: uuid,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn ack(
        &self,
        stream: &str,
        status: &Status,
    ) -> Result<AcknowledgeResponse, tonic::Status> {
        self.ack_raw(stream, status.uuid.clone()).await
    }

    /// An ack that must succeed; returns `stream_terminated`.
    pub async fn ack_ok(&self, stream: &str, status: &Status) -> bool {
        self.ack(stream, status)
            .await
            .unwrap_or_else(|s| panic!("ack of {} on {stream} failed: {s}", uuid_of(status)))
            .stream_terminated
    }

    pub async fn get(&self, stream: &str) -> Result<StreamInfo, tonic::Status> {
        self.client()
            .get_stream(GetStreamRequest {
                stream_id: stream.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn info(&self, stream: &str) -> StreamInfo {
        self.get(stream)
            .await
            .unwrap_or_else(|s| panic!("GetStream {stream} failed: {s}"))
    }

    /// Every stream (of `framework`; `""` = all), page after page.
    pub async fn list(&self, framework: &str) -> Vec<StreamInfo> {
        let mut streams = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client()
                .list_streams(ListStreamsRequest {
                    framework_id: framework.into(),
                    page_size: 0,
                    page_token,
                })
                .await
                .unwrap_or_else(|s| panic!("ListStreams '{framework}' failed: {s}"))
                .into_inner();
            streams.extend(page.streams);
            if page.next_page_token.is_empty() {
                return streams;
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn pause(&self) {
        self.client().pause(PauseRequest {}).await.expect("Pause");
    }

    pub async fn resume(&self) {
        self.client()
            .resume(ResumeRequest {})
            .await
            .expect("Resume");
    }

    /// GetStatus, which must succeed.
    pub async fn status(&self) -> GetStatusResponse {
        self.client()
            .get_status(GetStatusRequest {})
            .await
            .expect("GetStatus")
            .into_inner()
    }

    pub async fn cleanup(&self, framework: &str) -> Result<u32, tonic::Status> {
        self.client()
            .cleanup(CleanupRequest {
                framework_id: framework.into(),
            })
            .await
            .map(|r| r.into_inner().streams_closed)
    }

    pub fn path(&self, stream: &str) -> PathBuf {
        native_stream_path(&self.data_dir, stream)
    }

    /// Waits (bounded) until `stream` has no retry armed: the manager paused
    /// it (a subscriber's transport closing is noticed asynchronously).
    pub async fn wait_paused(&self, stream: &str) {
        eventually("the manager pauses once the subscriber is gone", || async {
            self.info(stream).await.next_retry_in_millis == -1
        })
        .await;
    }

    /// Waits (bounded) until `stream` is no longer in memory.
    pub async fn wait_gone(&self, stream: &str) {
        eventually(&format!("stream {stream:?} is no longer in memory"), || {
            async move { matches!(self.get(stream).await, Err(s) if s.code() == Code::NotFound) }
        })
        .await;
    }

    /// Shows that nothing reached `sub` but what the test already read: a
    /// fresh memory-only terminal update (the fence) must be the next forward.
    ///
    /// Why that proves it: a stream sends a forward before it answers the
    /// request that caused it, and forwards reach the subscriber in the
    /// order they were sent. ListStreams first asks every stream, so each
    /// has handled whatever the manager told it before (a resume, say);
    /// any forward they sent is then ahead of the fence's. The fence is
    /// acknowledged afterwards, which ends its stream. `sub` must be the
    /// subscriber, and forwarding not paused.
    pub async fn assert_nothing_forwarded(&self, sub: &mut Streaming<ForwardedUpdate>, what: &str) {
        self.list("").await;
        let fence_id = format!("fence-{}", Uuid::new_v4());
        let fence = status("FENCE", true);
        let sent = self
            .send(memory_only(status_update(&fence_id, "", &fence)))
            .await
            .unwrap_or_else(|s| panic!("{what}: the fence was rejected: {s}"));
        assert!(!sent.duplicate, "{what}: the fence is new");
        let next = next_forward(sub, &format!("the fence ({what})")).await;
        assert_eq!(
            stream_of(&next),
            fence_id,
            "{what}: a forward came before the fence: {next:?}"
        );
        assert!(
            self.ack_ok(&fence_id, &fence).await,
            "{what}: the fence's terminal ack ends it"
        );
    }

    /// Sends a rejected update and checks its code, that the message names
    /// every one of `names`, and that nothing changed under the data dir.
    pub async fn assert_update_rejected(
        &self,
        request: UpdateRequest,
        code: Code,
        names: &[&str],
        what: &str,
    ) -> tonic::Status {
        let before = snapshot(&self.data_dir);
        let status = assert_rejected(self.send(request).await, code, names, what);
        assert_eq!(
            snapshot(&self.data_dir),
            before,
            "{what}: the rejected update changed the data dir"
        );
        status
    }
}

/// The next forward, or a panic naming `what`.
pub async fn next_forward(sub: &mut Streaming<ForwardedUpdate>, what: &str) -> ForwardedUpdate {
    match tokio::time::timeout(BOUND, sub.message()).await {
        Err(_) => panic!("no forward within {BOUND:?} while waiting for {what}"),
        Ok(Err(status)) => {
            panic!("the subscriber stream failed while waiting for {what}: {status}")
        }
        Ok(Ok(None)) => panic!("the subscriber stream ended while waiting for {what}"),
        Ok(Ok(Some(forward))) => forward,
    }
}

/// `n` forwards of `n` different streams (their order across streams is
/// free), keyed by stream id.
pub async fn next_forwards(
    sub: &mut Streaming<ForwardedUpdate>,
    n: usize,
    what: &str,
) -> BTreeMap<String, ForwardedUpdate> {
    let mut got = BTreeMap::new();
    for i in 0..n {
        let forward = next_forward(sub, &format!("{what} ({} of {n})", i + 1)).await;
        let stream = stream_of(&forward).to_string();
        if let Some(earlier) = got.insert(stream.clone(), forward) {
            panic!("{what}: stream {stream} forwarded twice; first {earlier:?}");
        }
    }
    got
}

/// The stream's end, with the status it ended with; a forward that comes
/// first fails the test.
pub async fn stream_error(sub: &mut Streaming<ForwardedUpdate>, what: &str) -> tonic::Status {
    match tokio::time::timeout(BOUND, sub.message()).await {
        Err(_) => panic!("{what}: the subscriber stream did not end within {BOUND:?}"),
        Ok(Ok(Some(forward))) => panic!("{what}: got a forward instead of the end: {forward:?}"),
        Ok(Ok(None)) => panic!("{what}: the subscriber stream ended without a status"),
        Ok(Err(status)) => status,
    }
}

/// Checks a rejection: its code and that its message names each of `names`.
#[track_caller]
pub fn assert_rejected<T: Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    names: &[&str],
    what: &str,
) -> tonic::Status {
    let status = match result {
        Ok(ok) => panic!("{what}: expected {code:?}, got OK {ok:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    for name in names {
        assert!(
            status.message().contains(name),
            "{what}: the message should name '{name}': {}",
            status.message()
        );
    }
    status
}

/// Files under `dir` this process holds open (empty where `/proc` is missing).
pub fn open_files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .collect()
}

/// Waits until the stopped service closed every file under `dir`.
pub async fn files_closed(dir: &Path) {
    eventually(
        "no file under the data dir stays open after shutdown",
        || {
            let open = open_files_under(dir);
            async move { open.is_empty() }
        },
    )
    .await;
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A status with a fresh uuid.
pub fn status(state: &str, terminal: bool) -> Status {
    Status {
        uuid: Uuid::new_v4().as_bytes().to_vec(),
        state: state.into(),
        terminal,
        message: format!("{state} now"),
        payload: state.as_bytes().to_vec(),
        timestamp_unix_micros: TIMESTAMP,
    }
}

pub fn memory_only(update: StatusUpdate) -> UpdateRequest {
    UpdateRequest {
        update: Some(update),
        memory_only: true,
    }
}

pub fn uuid_of(status: &Status) -> String {
    Uuid::from_slice(&status.uuid)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("<{} bytes>", status.uuid.len()))
}

pub fn describe(update: &StatusUpdate) -> String {
    let uuid = update.status.as_ref().map_or("<none>".into(), uuid_of);
    format!("{uuid} of stream {}", update.stream_id)
}

pub fn stream_of(forward: &ForwardedUpdate) -> &str {
    &forward
        .update
        .as_ref()
        .expect("a forward carries its update")
        .stream_id
}

/// Checks a forward: the stream, the status (exactly as sent), the newest
/// queued status in `latest_status`, and the attempt.
#[track_caller]
pub fn assert_forward(
    forward: &ForwardedUpdate,
    stream: &str,
    sent: &Status,
    newest: &Status,
    attempt: u32,
    what: &str,
) {
    let update = forward
        .update
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: the forward has no update"));
    assert_eq!(update.stream_id, stream, "{what}: stream");
    assert_eq!(
        update.status.as_ref().map(uuid_of),
        Some(uuid_of(sent)),
        "{what}: forwarded status uuid"
    );
    assert_eq!(
        update.status.as_ref(),
        Some(sent),
        "{what}: forwarded status"
    );
    assert_eq!(
        update.latest_status.as_ref(),
        Some(newest),
        "{what}: latest_status should be the newest queued status"
    );
    assert_eq!(forward.attempt, attempt, "{what}: attempt");
}
