//! End-to-end tests of the gRPC service (API.md §1): a real server on
//! `127.0.0.1:0` over a temporary data directory, driven by the generated
//! client, one `#[actix::test]` per behaviour.
//!
//! These tests run on real time (network I/O): every wait is bounded and
//! waits for a message or a condition; nothing asserts a duration, only
//! orders and contents. Where a retry must happen `retry.min` is short;
//! elsewhere the default (10 s) is longer than any wait here, so a forward
//! that arrives within a wait is a fresh forward or a resume, never a retry.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Streaming};
use uuid::Uuid;

use status_update_manager::config::{Http2Keepalive, Overrides, ServiceConfig, Settings};
use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use status_update_manager::proto::status_update_manager::v1::{
    AcknowledgeRequest, AcknowledgeResponse, CleanupRequest, ForwardedUpdate, GetStreamRequest,
    ListStreamsRequest, PauseRequest, ResumeRequest, Status, StatusUpdate, StreamInfo,
    SubscribeRequest, UpdateRequest, UpdateResponse,
};
use status_update_manager::service::{self, RunningService};
use status_update_manager::store::layout::native_stream_path;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

type Client = StatusUpdateManagerClient<Channel>;

/// Longest wait for anything that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(500);
/// Gap between two looks at a condition.
const POLL: Duration = Duration::from_millis(20);
/// A short retry schedule for the tests that need retries.
const SHORT_RETRY: &str = "250ms";
/// Producer timestamps, so that forwarded statuses compare equal to sent ones
/// (the server fills in 0).
const TIMESTAMP: i64 = 1_750_000_000_000_000;

// ---------------------------------------------------------------- harness

/// A running server over `data_dir`, and a client connected to it.
struct Server {
    running: RunningService,
    url: String,
    client: Client,
    data_dir: PathBuf,
}

impl Server {
    /// Starts a server over `data_dir` with the compiled-in defaults (no
    /// process environment), `listen = 127.0.0.1:0`, changed by `tweak`.
    async fn start(data_dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Server {
        Self::start_with(data_dir, tweak, |_| {}).await
    }

    /// [`start`](Self::start), with `tweak_config` changing the validated
    /// config (for what has no config key).
    async fn start_with(
        data_dir: &Path,
        tweak: impl FnOnce(&mut Settings),
        tweak_config: impl FnOnce(&mut ServiceConfig),
    ) -> Server {
        let overrides = Overrides {
            data_dir: Some(data_dir.into()),
            listen: Some("127.0.0.1:0".into()),
            config_file: None,
        };
        let mut settings = Settings::load_with_env(&overrides, Some(Default::default()))
            .expect("the defaults load");
        tweak(&mut settings);
        let mut config = settings.validate().expect("the test settings are valid");
        tweak_config(&mut config);
        let running = service::start(config).await.expect("the service starts");
        let url = format!("http://{}", running.local_addr);
        let client = Client::connect(url.clone())
            .await
            .expect("the client connects");
        Server {
            running,
            url,
            client,
            data_dir: data_dir.into(),
        }
    }

    async fn shutdown(self) {
        self.running.shutdown().await.expect("a clean shutdown");
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// A new subscriber on its own connection.
    async fn subscribe(&self, name: &str) -> Streaming<ForwardedUpdate> {
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

    async fn send(&self, request: UpdateRequest) -> Result<UpdateResponse, tonic::Status> {
        self.client()
            .update(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A checkpointed update that must be accepted (not a duplicate).
    async fn update(&self, update: StatusUpdate) {
        let what = describe(&update);
        let response = self
            .send(common::checkpointed(update))
            .await
            .unwrap_or_else(|s| panic!("Update of {what} was rejected: {s}"));
        assert!(!response.duplicate, "Update of {what} reported a duplicate");
    }

    async fn ack_raw(
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

    async fn ack(
        &self,
        stream: &str,
        status: &Status,
    ) -> Result<AcknowledgeResponse, tonic::Status> {
        self.ack_raw(stream, status.uuid.clone()).await
    }

    /// An ack that must succeed; returns `stream_terminated`.
    async fn ack_ok(&self, stream: &str, status: &Status) -> bool {
        self.ack(stream, status)
            .await
            .unwrap_or_else(|s| panic!("ack of {} on {stream} failed: {s}", uuid_of(status)))
            .stream_terminated
    }

    async fn get(&self, stream: &str) -> Result<StreamInfo, tonic::Status> {
        self.client()
            .get_stream(GetStreamRequest {
                stream_id: stream.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn info(&self, stream: &str) -> StreamInfo {
        self.get(stream)
            .await
            .unwrap_or_else(|s| panic!("GetStream {stream} failed: {s}"))
    }

    async fn list(&self, framework: &str) -> Vec<StreamInfo> {
        self.client()
            .list_streams(ListStreamsRequest {
                framework_id: framework.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("ListStreams '{framework}' failed: {s}"))
            .into_inner()
            .streams
    }

    async fn pause(&self) {
        self.client().pause(PauseRequest {}).await.expect("Pause");
    }

    async fn resume(&self) {
        self.client()
            .resume(ResumeRequest {})
            .await
            .expect("Resume");
    }

    async fn cleanup(&self, framework: &str) -> Result<u32, tonic::Status> {
        self.client()
            .cleanup(CleanupRequest {
                framework_id: framework.into(),
            })
            .await
            .map(|r| r.into_inner().streams_closed)
    }

    fn path(&self, stream: &str) -> PathBuf {
        native_stream_path(&self.data_dir, stream)
    }

    /// Sends a rejected update and checks its code, that the message names
    /// every one of `names`, and that nothing changed under the data dir.
    async fn assert_update_rejected(
        &self,
        request: UpdateRequest,
        code: Code,
        names: &[&str],
        what: &str,
    ) -> tonic::Status {
        let before = common::snapshot(&self.data_dir);
        let status = assert_rejected(self.send(request).await, code, names, what);
        assert_eq!(
            common::snapshot(&self.data_dir),
            before,
            "{what}: the rejected update changed the data dir"
        );
        status
    }
}

/// The next forward, or a panic naming `what`.
async fn next_forward(sub: &mut Streaming<ForwardedUpdate>, what: &str) -> ForwardedUpdate {
    match tokio::time::timeout(WAIT, sub.message()).await {
        Err(_) => panic!("no forward within {WAIT:?} while waiting for {what}"),
        Ok(Err(status)) => {
            panic!("the subscriber stream failed while waiting for {what}: {status}")
        }
        Ok(Ok(None)) => panic!("the subscriber stream ended while waiting for {what}"),
        Ok(Ok(Some(forward))) => forward,
    }
}

/// `n` forwards of `n` different streams (their order across streams is
/// free), keyed by stream id.
async fn next_forwards(
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

/// Nothing arrives on `sub` for `d`.
async fn no_forward_within(sub: &mut Streaming<ForwardedUpdate>, d: Duration, what: &str) {
    match tokio::time::timeout(d, sub.message()).await {
        Err(_) => {}
        Ok(Ok(Some(forward))) => panic!("{what}: unexpected forward {forward:?}"),
        Ok(Ok(None)) => panic!("{what}: the subscriber stream ended"),
        Ok(Err(status)) => panic!("{what}: the subscriber stream failed: {status}"),
    }
}

/// The stream's end, with the status it ended with.
async fn stream_error(sub: &mut Streaming<ForwardedUpdate>, what: &str) -> tonic::Status {
    match tokio::time::timeout(WAIT, sub.message()).await {
        Err(_) => panic!("{what}: the subscriber stream did not end within {WAIT:?}"),
        Ok(Ok(Some(forward))) => panic!("{what}: got a forward instead of the end: {forward:?}"),
        Ok(Ok(None)) => panic!("{what}: the subscriber stream ended without a status"),
        Ok(Err(status)) => status,
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not the case within {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Checks a rejection: its code and that its message names each of `names`.
#[track_caller]
fn assert_rejected<T: Debug>(
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
fn open_files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .collect()
}

/// Waits until the stopped service closed every file under `dir`.
async fn files_closed(dir: &Path) {
    eventually(
        "no file under the data dir stays open after shutdown",
        || {
            let open = open_files_under(dir);
            async move { open.is_empty() }
        },
    )
    .await;
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A status with a fresh uuid.
fn status(state: &str, terminal: bool) -> Status {
    Status {
        uuid: Uuid::new_v4().as_bytes().to_vec(),
        state: state.into(),
        terminal,
        message: format!("{state} now"),
        payload: state.as_bytes().to_vec(),
        timestamp_unix_micros: TIMESTAMP,
    }
}

fn memory_only(update: StatusUpdate) -> UpdateRequest {
    UpdateRequest {
        update: Some(update),
        memory_only: true,
    }
}

fn uuid_of(status: &Status) -> String {
    Uuid::from_slice(&status.uuid)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("<{} bytes>", status.uuid.len()))
}

fn describe(update: &StatusUpdate) -> String {
    let uuid = update.status.as_ref().map_or("<none>".into(), uuid_of);
    format!("{uuid} of stream {}", update.stream_id)
}

fn stream_of(forward: &ForwardedUpdate) -> &str {
    &forward
        .update
        .as_ref()
        .expect("a forward carries its update")
        .stream_id
}

/// Checks a forward: the stream, the status (exactly as sent), the newest
/// queued status in `latest_status`, and the attempt.
#[track_caller]
fn assert_forward(
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

// ---------------------------------------------------------------- 1. forward, ack, end

#[actix::test]
async fn updates_are_forwarded_in_order_acked_and_a_terminal_ack_ends_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut sub = server.subscribe("upstream").await;
    let s = "task-1";
    let u1 = status("STARTING", false);
    let u2 = status("RUNNING", false);
    let u3 = status("FINISHED", true);

    server.update(common::status_update(s, "fw", &u1)).await;
    let f = next_forward(&mut sub, "first forward of u1").await;
    assert_forward(&f, s, &u1, &u1, 0, "u1 alone in the queue");
    assert_eq!(f.update.as_ref().unwrap().framework_id, "fw");

    // Queued behind the head: not forwarded yet, but latest_status follows.
    server.update(common::status_update(s, "fw", &u2)).await;
    server.update(common::status_update(s, "fw", &u3)).await;
    no_forward_within(&mut sub, QUIET, "u2 and u3 wait behind the unacked u1").await;
    assert!(
        file_len(&server.path(s)) > 0,
        "the stream's file holds the updates"
    );

    assert!(
        !server.ack_ok(s, &u1).await,
        "a non-terminal ack does not end the stream"
    );
    let f = next_forward(&mut sub, "u2 after the ack of u1").await;
    assert_forward(&f, s, &u2, &u3, 0, "u2 with u3 newest");

    assert!(!server.ack_ok(s, &u2).await, "u2 is not terminal");
    let f = next_forward(&mut sub, "u3 after the ack of u2").await;
    assert_forward(&f, s, &u3, &u3, 0, "u3, the last one");

    assert!(
        server.ack_ok(s, &u3).await,
        "the terminal ack ends the stream"
    );
    assert_rejected(
        server.get(s).await,
        Code::NotFound,
        &[s],
        "GetStream of an ended stream",
    );
    assert!(
        !server.path(s).exists(),
        "store.remove_finished = true: the ended stream's file is removed"
    );
    // A retried terminal ack: NOT_FOUND, which the caller takes as success.
    assert_rejected(
        server.ack(s, &u3).await,
        Code::NotFound,
        &[s, &uuid_of(&u3)],
        "ack after the terminal ack",
    );
    no_forward_within(&mut sub, QUIET, "nothing after the end of the stream").await;

    // The server fills in a missing producer timestamp.
    let mut u4 = status("STAGING", false);
    u4.timestamp_unix_micros = 0;
    server
        .update(common::status_update("task-2", "", &u4))
        .await;
    let f = next_forward(&mut sub, "u4 without a timestamp").await;
    let forwarded = f.update.unwrap().status.unwrap();
    assert!(
        forwarded.timestamp_unix_micros > 0,
        "timestamp filled in: {forwarded:?}"
    );
    assert_eq!(forwarded.uuid, u4.uuid);

    server.shutdown().await;
}

// ---------------------------------------------------------------- 2. retries

#[actix::test]
async fn an_unacked_update_is_retried_to_the_subscriber_with_growing_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.retry.min = SHORT_RETRY.into()).await;
    let s = "retried";
    let u1 = status("RUNNING", false);
    let u2 = status("FINISHED", true);

    // Both queued before anyone listens: every send of u1 carries u2 as latest_status.
    server.update(common::status_update(s, "", &u1)).await;
    server.update(common::status_update(s, "", &u2)).await;
    let mut sub = server.subscribe("upstream").await;
    for attempt in 0..3 {
        let what = format!("send {attempt} of u1");
        let f = next_forward(&mut sub, &what).await;
        assert_forward(&f, s, &u1, &u2, attempt, &what);
    }
    let info = server.info(s).await;
    assert_eq!(info.attempt, 2, "GetStream counts the resends: {info:?}");
    assert!(info.next_retry_in_millis >= 0, "a retry is armed: {info:?}");

    // The ack stops u1's retries: the next forward is u2, fresh.
    assert!(!server.ack_ok(s, &u1).await);
    let f = next_forward(&mut sub, "u2 after the ack of u1").await;
    assert_forward(&f, s, &u2, &u2, 0, "u2 after u1's ack, not u1 again");
    let f = next_forward(&mut sub, "first retry of u2").await;
    assert_forward(&f, s, &u2, &u2, 1, "first retry of u2");
    assert!(server.ack_ok(s, &u2).await);

    server.shutdown().await;
}

// ---------------------------------------------------------------- 3. dedup

#[actix::test]
async fn a_duplicate_update_is_answered_duplicate_and_forwarded_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut sub = server.subscribe("upstream").await;
    let s = "dedup";
    let u1 = status("RUNNING", false);

    let first = server
        .send(common::checkpointed(common::status_update(s, "", &u1)))
        .await
        .unwrap();
    assert!(!first.duplicate, "the first send is new");
    let f = next_forward(&mut sub, "the one forward of u1").await;
    assert_forward(&f, s, &u1, &u1, 0, "u1");

    let before = common::snapshot(dir.path());
    let second = server
        .send(common::checkpointed(common::status_update(s, "", &u1)))
        .await
        .unwrap();
    assert!(second.duplicate, "the same update again is a duplicate");
    // Dedup is by status uuid: another state under the same uuid is the same status.
    let mut same_uuid = status("LOST", false);
    same_uuid.uuid = u1.uuid.clone();
    let third = server
        .send(common::checkpointed(common::status_update(
            s, "", &same_uuid,
        )))
        .await
        .unwrap();
    assert!(
        third.duplicate,
        "a known uuid is a duplicate whatever the state"
    );
    assert_eq!(
        common::snapshot(dir.path()),
        before,
        "a duplicate writes nothing"
    );
    no_forward_within(&mut sub, QUIET, "a duplicate is not forwarded").await;
    let info = server.info(s).await;
    assert_eq!((info.pending, info.received), (1, 1), "{info:?}");

    // Still a duplicate once acknowledged.
    assert!(!server.ack_ok(s, &u1).await);
    let again = server
        .send(common::checkpointed(common::status_update(s, "", &u1)))
        .await
        .unwrap();
    assert!(again.duplicate, "an acknowledged uuid is a duplicate");
    no_forward_within(
        &mut sub,
        QUIET,
        "an acknowledged duplicate is not forwarded",
    )
    .await;
    let info = server.info(s).await;
    assert_eq!(
        (info.pending, info.received, info.acknowledged),
        (0, 1, 1),
        "{info:?}"
    );

    server.shutdown().await;
}

// ---------------------------------------------------------------- 4. error codes

#[actix::test]
async fn invalid_arguments_are_rejected_with_invalid_argument_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.server.max_payload_bytes = 16).await;
    let s = "stream-a";
    // An existing stream, so that the rejections below are not "unknown stream".
    let ok = status("RUNNING", false);
    server.update(common::status_update(s, "", &ok)).await;

    let with_uuid = |uuid: Vec<u8>| {
        let mut st = status("RUNNING", false);
        st.uuid = uuid;
        common::status_update(s, "", &st)
    };
    let bad_uuids: [(&str, Vec<u8>, &str); 4] = [
        ("missing uuid", Vec::new(), "0 bytes"),
        ("15-byte uuid", vec![7; 15], "15 bytes"),
        ("17-byte uuid", vec![7; 17], "17 bytes"),
        ("all-zero uuid", vec![0; 16], "all zero"),
    ];
    for (what, uuid, reason) in &bad_uuids {
        server
            .assert_update_rejected(
                common::checkpointed(with_uuid(uuid.clone())),
                Code::InvalidArgument,
                &[s, reason],
                &format!("Update with a {what}"),
            )
            .await;
        // The same for a stream that does not exist yet: no stream, no file.
        let mut fresh = with_uuid(uuid.clone());
        fresh.stream_id = "fresh".into();
        server
            .assert_update_rejected(
                common::checkpointed(fresh),
                Code::InvalidArgument,
                &["fresh", reason],
                &format!("Update of a new stream with a {what}"),
            )
            .await;
        assert_rejected(
            server.ack_raw(s, uuid.clone()).await,
            Code::InvalidArgument,
            &[s, reason],
            &format!("Acknowledge with a {what}"),
        );
    }

    let empty_state = status("", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(s, "", &empty_state)),
            Code::InvalidArgument,
            &[s, &uuid_of(&empty_state), "state"],
            "Update with an empty state",
        )
        .await;

    let mut no_status = common::status_update(s, "", &ok);
    no_status.status = None;
    server
        .assert_update_rejected(
            common::checkpointed(no_status),
            Code::InvalidArgument,
            &[s, "no status"],
            "Update without a status",
        )
        .await;

    server
        .assert_update_rejected(
            UpdateRequest {
                update: None,
                memory_only: false,
            },
            Code::InvalidArgument,
            &["update"],
            "UpdateRequest without an update",
        )
        .await;

    let fresh = status("RUNNING", false);
    let mut with_latest = common::status_update(s, "", &fresh);
    with_latest.latest_status = Some(ok.clone());
    server
        .assert_update_rejected(
            common::checkpointed(with_latest),
            Code::InvalidArgument,
            &[s, &uuid_of(&fresh), "latest_status"],
            "Update with latest_status set",
        )
        .await;

    let long = "x".repeat(257);
    let max = "y".repeat(256);
    for (what, id, reason) in [
        ("an empty stream_id", "", "empty"),
        ("a 257-byte stream_id", long.as_str(), "257 bytes"),
        ("a stream_id with NUL", "a\0b", "NUL"),
    ] {
        let st = status("RUNNING", false);
        server
            .assert_update_rejected(
                common::checkpointed(common::status_update(id, "", &st)),
                Code::InvalidArgument,
                &[&uuid_of(&st), reason],
                &format!("Update with {what}"),
            )
            .await;
        assert_rejected(
            server.ack(id, &st).await,
            Code::InvalidArgument,
            &[&uuid_of(&st), reason],
            &format!("Acknowledge with {what}"),
        );
        assert_rejected(
            server.get(id).await,
            Code::InvalidArgument,
            &[reason],
            &format!("GetStream with {what}"),
        );
    }
    // 256 bytes is allowed.
    server
        .update(common::status_update(&max, "", &status("RUNNING", false)))
        .await;

    // Just over the limit, and far over it (past the limit plus the 64 KiB
    // the server allows for the rest of the message).
    for len in [17, 200 * 1024] {
        let mut big = status("RUNNING", false);
        big.payload = vec![1; len];
        server
            .assert_update_rejected(
                common::checkpointed(common::status_update(s, "", &big)),
                Code::InvalidArgument,
                &[s, &uuid_of(&big), &format!("{len} bytes"), "16"],
                &format!("Update with a payload of {len} bytes over server.max_payload_bytes"),
            )
            .await;
    }
    let mut at_limit = status("RUNNING", false);
    at_limit.payload = vec![1; 16];
    server.update(common::status_update(s, "", &at_limit)).await;

    assert_rejected(
        server.cleanup("").await,
        Code::InvalidArgument,
        &["framework_id"],
        "Cleanup with an empty framework_id",
    );

    server.shutdown().await;
}

#[actix::test]
async fn not_found_already_exists_and_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let u1 = status("RUNNING", false);
    let u2 = status("RUNNING", false);

    // NOT_FOUND
    assert_rejected(
        server.ack("nowhere", &u1).await,
        Code::NotFound,
        &["nowhere", &uuid_of(&u1)],
        "ack on a stream never created",
    );
    assert_rejected(
        server.get("nowhere").await,
        Code::NotFound,
        &["nowhere"],
        "GetStream of a stream never created",
    );

    // ALREADY_EXISTS, checked before "not the head" and "nothing pending".
    let s = "acked";
    server.update(common::status_update(s, "fw", &u1)).await;
    server.update(common::status_update(s, "fw", &u2)).await;
    assert!(!server.ack_ok(s, &u1).await);
    assert_rejected(
        server.ack(s, &u1).await,
        Code::AlreadyExists,
        &[s, &uuid_of(&u1)],
        "re-ack of u1 while u2 is the head",
    );
    assert!(!server.ack_ok(s, &u2).await);
    assert_rejected(
        server.ack(s, &u2).await,
        Code::AlreadyExists,
        &[s, &uuid_of(&u2)],
        "re-ack of u2 with nothing pending",
    );

    // FAILED_PRECONDITION: ack with nothing pending, ack of a non-head uuid.
    let other = status("RUNNING", false);
    assert_rejected(
        server.ack(s, &other).await,
        Code::FailedPrecondition,
        &[s, &uuid_of(&other), "nothing is pending"],
        "ack with nothing pending",
    );
    let h1 = status("RUNNING", false);
    let h2 = status("RUNNING", false);
    server.update(common::status_update(s, "fw", &h1)).await;
    server.update(common::status_update(s, "fw", &h2)).await;
    assert_rejected(
        server.ack(s, &h2).await,
        Code::FailedPrecondition,
        &[s, &uuid_of(&h2), &uuid_of(&h1)],
        "ack of the second update instead of the head",
    );
    assert_rejected(
        server.ack(s, &other).await,
        Code::FailedPrecondition,
        &[s, &uuid_of(&other), &uuid_of(&h1)],
        "ack of an unknown uuid",
    );

    // FAILED_PRECONDITION: framework id differs.
    for (what, framework) in [("another framework", "other-fw"), ("no framework", "")] {
        let st = status("RUNNING", false);
        server
            .assert_update_rejected(
                common::checkpointed(common::status_update(s, framework, &st)),
                Code::FailedPrecondition,
                &[s, &uuid_of(&st), "fw"],
                &format!("update with {what} on a stream of 'fw'"),
            )
            .await;
    }
    let nofw = "no-framework";
    server
        .update(common::status_update(nofw, "", &status("RUNNING", false)))
        .await;
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(nofw, "fw", &st)),
            Code::FailedPrecondition,
            &[nofw, &uuid_of(&st), "fw"],
            "update with a framework on a stream without one",
        )
        .await;

    // FAILED_PRECONDITION: memory_only differs, both ways.
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            memory_only(common::status_update(s, "fw", &st)),
            Code::FailedPrecondition,
            &[s, &uuid_of(&st), "checkpoint"],
            "memory_only update on a checkpointed stream",
        )
        .await;
    let mem = "in-memory";
    let before = common::snapshot(dir.path());
    let r = server
        .send(memory_only(common::status_update(mem, "", &u1)))
        .await
        .unwrap();
    assert!(!r.duplicate);
    assert_eq!(
        common::snapshot(dir.path()),
        before,
        "a memory_only stream has no file"
    );
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(mem, "", &st)),
            Code::FailedPrecondition,
            &[mem, &uuid_of(&st), "checkpoint"],
            "checkpointed update on a memory_only stream",
        )
        .await;

    // FAILED_PRECONDITION: a checkpoint file exists for a stream not in memory.
    let stale = "stale/../file";
    let path = server.path(stale);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"left over").unwrap();
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(stale, "", &st)),
            Code::FailedPrecondition,
            &[stale, "already exists"],
            "update of a stream whose file exists but is not in memory",
        )
        .await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"left over",
        "the file is untouched"
    );
    assert_rejected(
        server.get(stale).await,
        Code::NotFound,
        &[stale],
        "the stream was not created",
    );

    server.shutdown().await;
}

#[actix::test]
async fn limits_are_rejected_with_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| {
        s.limits.max_pending_per_stream = 2;
        s.limits.max_streams = 2;
    })
    .await;
    let (a, b, c) = ("a", "b", "c");
    let a1 = status("RUNNING", false);
    let a2 = status("RUNNING", false);
    server.update(common::status_update(a, "", &a1)).await;
    server.update(common::status_update(a, "", &a2)).await;
    let a3 = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(a, "", &a3)),
            Code::ResourceExhausted,
            &[a, &uuid_of(&a3), "max_pending_per_stream"],
            "a third pending update with max_pending_per_stream = 2",
        )
        .await;
    // A duplicate of a queued update is still a duplicate, not a rejection.
    let dup = server
        .send(common::checkpointed(common::status_update(a, "", &a2)))
        .await
        .unwrap();
    assert!(dup.duplicate);
    // Room again once the head is acknowledged.
    assert!(!server.ack_ok(a, &a1).await);
    server.update(common::status_update(a, "", &a3)).await;

    server
        .update(common::status_update(b, "", &status("RUNNING", false)))
        .await;
    let c1 = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(c, "", &c1)),
            Code::ResourceExhausted,
            &[c, "max_streams"],
            "a third stream with max_streams = 2",
        )
        .await;
    assert!(!server.path(c).exists());
    server
        .assert_update_rejected(
            memory_only(common::status_update(c, "", &c1)),
            Code::ResourceExhausted,
            &[c, "max_streams"],
            "a third memory_only stream with max_streams = 2",
        )
        .await;
    assert_rejected(
        server.get(c).await,
        Code::NotFound,
        &[c],
        "stream c was not created",
    );

    server.shutdown().await;
}

// ---------------------------------------------------------------- 5. no subscriber = paused

#[actix::test]
async fn nothing_is_forwarded_before_the_first_subscriber_which_gets_every_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let a1 = status("RUNNING", false);
    let a2 = status("FINISHED", true);
    let b1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    server.update(common::status_update("a", "", &a2)).await;
    server.update(common::status_update("b", "fw", &b1)).await;
    for s in ["a", "b"] {
        let info = server.info(s).await;
        assert_eq!(
            (info.attempt, info.next_retry_in_millis),
            (0, -1),
            "{s}: paused without a subscriber, no retry armed: {info:?}"
        );
    }

    let mut sub = server.subscribe("first").await;
    let got = next_forwards(&mut sub, 2, "the heads, to the first subscriber").await;
    // attempt 0: nothing was sent (or counted) while no subscriber was connected.
    assert_forward(&got["a"], "a", &a1, &a2, 0, "head of a");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "head of b");

    server.shutdown().await;
}

#[actix::test]
async fn a_subscriber_disconnect_pauses_and_the_next_subscriber_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut first = server.subscribe("first").await;
    let a1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    let f = next_forward(&mut first, "a1 to the first subscriber").await;
    assert_forward(&f, "a", &a1, &a1, 0, "a1");
    assert!(
        server.info("a").await.next_retry_in_millis >= 0,
        "a retry is armed"
    );

    drop(first);
    eventually("the manager pauses once the subscriber is gone", || {
        let mut client = server.client();
        async move {
            let info = client
                .get_stream(GetStreamRequest {
                    stream_id: "a".into(),
                })
                .await
                .expect("GetStream a")
                .into_inner();
            info.next_retry_in_millis == -1
        }
    })
    .await;

    // While nobody listens, a new update is queued, not sent.
    let b1 = status("RUNNING", false);
    let a2 = status("RUNNING", false);
    server.update(common::status_update("b", "", &b1)).await;
    server.update(common::status_update("a", "", &a2)).await;
    let info = server.info("b").await;
    assert_eq!(
        (info.attempt, info.next_retry_in_millis),
        (0, -1),
        "{info:?}"
    );

    let mut second = server.subscribe("second").await;
    let got = next_forwards(&mut second, 2, "the heads on resume").await;
    assert_forward(&got["a"], "a", &a1, &a2, 1, "a1 again, its second send");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1, never sent before");

    server.shutdown().await;
}

// ---------------------------------------------------------------- 6. replacement

#[actix::test]
async fn a_second_subscriber_replaces_the_first_which_ends_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut first = server.subscribe("first").await;
    let a1 = status("RUNNING", false);
    let b1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    server.update(common::status_update("b", "fw", &b1)).await;
    let got = next_forwards(&mut first, 2, "the first sends").await;
    assert_forward(&got["a"], "a", &a1, &a1, 0, "a1 to the first");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1 to the first");

    let mut second = server.subscribe("second").await;
    let end = stream_error(&mut first, "the replaced subscriber").await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert!(
        end.message().contains("second"),
        "names the new subscriber: {end:?}"
    );

    let got = next_forwards(&mut second, 2, "every head to the new subscriber").await;
    assert_forward(&got["a"], "a", &a1, &a1, 1, "a1 resent to the second");
    assert_forward(&got["b"], "b", &b1, &b1, 1, "b1 resent to the second");

    // The second one is the subscriber now.
    let c1 = status("RUNNING", false);
    server.update(common::status_update("c", "", &c1)).await;
    let f = next_forward(&mut second, "c1 to the second").await;
    assert_forward(&f, "c", &c1, &c1, 0, "c1");

    server.shutdown().await;
}

// ---------------------------------------------------------------- 7. admin pause

#[actix::test]
async fn admin_pause_holds_forwards_until_resume_even_across_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut first = server.subscribe("first").await;
    let a1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    let f = next_forward(&mut first, "a1 before the pause").await;
    assert_forward(&f, "a", &a1, &a1, 0, "a1");

    server.pause().await;
    let b1 = status("RUNNING", false);
    server.update(common::status_update("b", "", &b1)).await;
    no_forward_within(&mut first, QUIET, "admin-paused, with a subscriber").await;
    for s in ["a", "b"] {
        let info = server.info(s).await;
        assert_eq!(
            info.next_retry_in_millis, -1,
            "{s}: no retry while paused: {info:?}"
        );
    }

    let mut second = server.subscribe("second").await;
    let end = stream_error(&mut first, "the replaced subscriber").await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    no_forward_within(
        &mut second,
        QUIET,
        "a new subscriber does not lift the admin pause",
    )
    .await;
    assert_eq!(server.info("a").await.next_retry_in_millis, -1);

    server.resume().await;
    let got = next_forwards(&mut second, 2, "every head on Resume").await;
    assert_forward(&got["a"], "a", &a1, &a1, 1, "a1 resent on Resume");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1, first sent on Resume");
    assert!(
        server.info("a").await.next_retry_in_millis >= 0,
        "a retry is armed again"
    );

    // Resume without a subscriber sends nothing; the next subscriber gets the heads.
    drop(second);
    eventually("the manager pauses once the subscriber is gone", || {
        let mut client = server.client();
        async move {
            let info = client
                .get_stream(GetStreamRequest {
                    stream_id: "a".into(),
                })
                .await
                .expect("GetStream a")
                .into_inner();
            info.next_retry_in_millis == -1
        }
    })
    .await;
    server.pause().await;
    server.resume().await;
    assert_eq!(
        server.info("a").await.next_retry_in_millis,
        -1,
        "Resume with no subscriber does not forward"
    );
    let mut third = server.subscribe("third").await;
    let got = next_forwards(&mut third, 2, "every head to the third").await;
    assert_forward(&got["a"], "a", &a1, &a1, 2, "a1 to the third");
    assert_forward(&got["b"], "b", &b1, &b1, 1, "b1 to the third");

    server.shutdown().await;
}

// ---------------------------------------------------------------- 8. cleanup

#[actix::test]
async fn cleanup_closes_the_frameworks_streams_and_stops_their_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.retry.min = SHORT_RETRY.into()).await;
    let f1 = status("RUNNING", false);
    let f2 = status("RUNNING", false);
    let g1 = status("RUNNING", false);
    let n1 = status("RUNNING", false);
    server.update(common::status_update("f-1", "F", &f1)).await;
    server.update(common::status_update("f-2", "F", &f2)).await;
    let r = server
        .send(memory_only(common::status_update("f-mem", "F", &f1)))
        .await
        .unwrap();
    assert!(!r.duplicate);
    server.update(common::status_update("g-1", "G", &g1)).await;
    server.update(common::status_update("n-1", "", &n1)).await;
    // Every head is sent at once to the first subscriber: one retry schedule for all.
    let mut sub = server.subscribe("upstream").await;
    let first = next_forwards(&mut sub, 5, "the first sends").await;
    assert!(first.values().all(|f| f.attempt == 0), "{first:?}");

    assert_eq!(server.cleanup("F").await.unwrap(), 3, "F's three streams");
    assert_eq!(server.cleanup("F").await.unwrap(), 0, "nothing left of F");
    assert_eq!(
        server.cleanup("nobody").await.unwrap(),
        0,
        "unknown framework"
    );
    // Forwards of F emitted before the Cleanup took effect may still be on
    // their way; everything after this fresh update's forward is later.
    let fence = status("RUNNING", false);
    server
        .update(common::status_update("fence", "", &fence))
        .await;

    for s in ["f-1", "f-2", "f-mem"] {
        assert_rejected(
            server.ack(s, &f1).await,
            Code::NotFound,
            &[s],
            &format!("ack on {s} after Cleanup"),
        );
        assert_rejected(
            server.get(s).await,
            Code::NotFound,
            &[s],
            "GetStream after Cleanup",
        );
    }
    assert!(server.list("F").await.is_empty(), "F has no stream left");
    let left: Vec<String> = server
        .list("")
        .await
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert_eq!(
        left,
        ["fence", "g-1", "n-1"],
        "the other streams are untouched"
    );
    for s in ["f-1", "f-2"] {
        let path = server.path(s);
        eventually(&format!("the file of {s} is removed"), || {
            let gone = !path.exists();
            async move { gone }
        })
        .await;
    }
    assert!(server.path("g-1").exists() && server.path("n-1").exists());

    // F's retries stop while the others' go on: had F's timers survived, a
    // resend of F would come before g-1's second resend after the fence.
    let is_f = |s: &str| s.starts_with("f-");
    loop {
        let f = next_forward(&mut sub, "the fence's forward").await;
        if stream_of(&f) == "fence" {
            assert_forward(&f, "fence", &fence, &fence, 0, "the fence");
            break;
        }
    }
    let mut g_resends = 0;
    while g_resends < 2 {
        let f = next_forward(&mut sub, "resends of g-1 after the Cleanup").await;
        let stream = stream_of(&f).to_string();
        assert!(!is_f(&stream), "a cleaned-up stream was forwarded: {f:?}");
        if stream == "g-1" {
            g_resends += 1;
            assert_eq!(f.update.unwrap().status.as_ref(), Some(&g1));
        }
    }
    assert!(!server.ack_ok("g-1", &g1).await);
    assert!(!server.ack_ok("n-1", &n1).await);
    assert!(!server.ack_ok("fence", &fence).await);

    server.shutdown().await;
}

// ---------------------------------------------------------------- 9. introspection

#[actix::test]
async fn list_and_get_stream_report_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let a = [
        status("STARTING", false),
        status("RUNNING", false),
        status("FINISHED", true),
    ];
    let b1 = status("RUNNING", false);
    let c1 = status("RUNNING", false);
    for st in &a {
        server.update(common::status_update("a", "F", st)).await;
    }
    let r = server
        .send(memory_only(common::status_update("b", "", &b1)))
        .await
        .unwrap();
    assert!(!r.duplicate);
    server.update(common::status_update("c", "G", &c1)).await;

    // No subscriber yet: paused, nothing sent.
    let all = server.list("").await;
    let ids: Vec<&str> = all.iter().map(|i| i.stream_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let (ia, ib, ic) = (&all[0], &all[1], &all[2]);
    assert_eq!(ia.framework_id, "F");
    assert!(ia.checkpointed && !ia.terminated, "{ia:?}");
    assert_eq!(
        (ia.pending, ia.received, ia.acknowledged),
        (3, 3, 0),
        "{ia:?}"
    );
    assert_eq!((ia.attempt, ia.next_retry_in_millis), (0, -1), "{ia:?}");
    assert!(ia.oldest_pending_age_millis >= 0, "{ia:?}");
    assert_eq!(ia.checkpoint_bytes, file_len(&server.path("a")), "{ia:?}");
    assert!(ia.checkpoint_bytes > 0);
    assert!(
        ia.pending_statuses.is_empty(),
        "ListStreams leaves pending_statuses empty"
    );
    assert_eq!(ib.framework_id, "");
    assert!(!ib.checkpointed, "{ib:?}");
    assert_eq!(
        (ib.pending, ib.checkpoint_bytes, ib.next_retry_in_millis),
        (1, 0, -1)
    );
    assert!(!server.path("b").exists());
    assert_eq!((ic.framework_id.as_str(), ic.pending), ("G", 1));

    let only_f: Vec<String> = server
        .list("F")
        .await
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert_eq!(only_f, ["a"], "framework filter");
    let only_g: Vec<String> = server
        .list("G")
        .await
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert_eq!(only_g, ["c"], "framework filter");
    assert!(server.list("nobody").await.is_empty());

    let ga = server.info("a").await;
    assert_eq!(
        ga.pending_statuses,
        a.to_vec(),
        "GetStream fills pending_statuses"
    );
    assert_eq!(server.info("b").await.pending_statuses, vec![b1]);

    // Subscribed: every head sent once, a retry armed.
    let mut first = server.subscribe("first").await;
    next_forwards(&mut first, 3, "the heads").await;
    let ga = server.info("a").await;
    assert_eq!(ga.attempt, 0, "{ga:?}");
    assert!((0..=10_000).contains(&ga.next_retry_in_millis), "{ga:?}");

    let bytes_before = ga.checkpoint_bytes;
    assert!(!server.ack_ok("a", &a[0]).await);
    let f = next_forward(&mut first, "a's second update").await;
    assert_forward(&f, "a", &a[1], &a[2], 0, "a[1]");
    let ga = server.info("a").await;
    assert_eq!(
        (ga.pending, ga.received, ga.acknowledged, ga.attempt),
        (2, 3, 1, 0),
        "{ga:?}"
    );
    assert_eq!(ga.pending_statuses, a[1..].to_vec());
    assert!(
        ga.checkpoint_bytes > bytes_before,
        "the ACK record was appended: {ga:?}"
    );
    assert_eq!(ga.checkpoint_bytes, file_len(&server.path("a")));

    assert!(!server.ack_ok("c", &c1).await);
    let gc = server.info("c").await;
    assert_eq!(
        (
            gc.pending,
            gc.received,
            gc.acknowledged,
            gc.next_retry_in_millis
        ),
        (0, 1, 1, -1),
        "nothing pending, no retry: {gc:?}"
    );
    assert!(gc.pending_statuses.is_empty());

    // A new subscriber resends the heads: attempt 1.
    let mut second = server.subscribe("second").await;
    next_forwards(&mut second, 2, "the heads to the second").await;
    assert_eq!(server.info("a").await.attempt, 1);
    assert_eq!(server.info("b").await.attempt, 1);

    server.pause().await;
    for s in ["a", "b", "c"] {
        let info = server.info(s).await;
        assert_eq!(info.next_retry_in_millis, -1, "{s} admin-paused: {info:?}");
    }
    server.resume().await;
    next_forwards(&mut second, 2, "the heads on Resume").await;
    let ga = server.info("a").await;
    assert_eq!(ga.attempt, 2, "{ga:?}");
    assert!(ga.next_retry_in_millis >= 0, "{ga:?}");
    drop(first);

    server.shutdown().await;
}

// ---------------------------------------------------------------- 10. health, shutdown

#[actix::test]
async fn health_is_serving_and_shutdown_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let addr = server.running.local_addr;
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect for health");
    let mut health = HealthClient::new(channel);
    for name in ["", "status_update_manager.v1.StatusUpdateManager"] {
        let reply = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of '{name}' failed: {s}"))
            .into_inner();
        assert_eq!(
            reply.status,
            ServingStatus::Serving as i32,
            "health of '{name}': {reply:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_rejected(unknown, Code::NotFound, &[], "health of an unknown service");

    let mut sub = server.subscribe("upstream").await;
    let pending = status("RUNNING", false);
    server
        .update(common::status_update("s", "", &pending))
        .await;
    next_forward(&mut sub, "the pending update").await;
    let path = server.path("s");
    if Path::new("/proc/self/fd").exists() {
        let mut open = open_files_under(dir.path());
        open.sort();
        let journal = dir.path().join(status_update_manager::store::JOURNAL_FILE);
        let lock = dir.path().join(status_update_manager::store::LOCK_FILE);
        assert_eq!(
            open,
            [
                journal.canonicalize().unwrap(),
                lock.canonicalize().unwrap(),
                path.canonicalize().unwrap()
            ],
            "the commit journal, the data directory's lock and the stream's file are open while serving"
        );
    }
    let url = server.url.clone();
    server.shutdown().await;
    let end = stream_error(&mut sub, "the subscriber at shutdown").await;
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    // The service lets go of its streams, its journal and its lock: their
    // files are closed, and kept.
    files_closed(dir.path()).await;
    assert!(path.exists(), "an unfinished stream's file is kept");

    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens on {addr} after shutdown"
    );
    assert!(
        Client::connect(url).await.is_err(),
        "a new client cannot connect after shutdown"
    );
}

#[actix::test]
async fn after_a_shutdown_the_streams_close_their_files_and_the_committer_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    server
        .update(common::status_update("s", "", &status("RUNNING", false)))
        .await;
    let files = server.running.files.clone();
    let committer = server
        .running
        .committer
        .clone()
        .expect("the service's committer runs on a thread");
    assert_eq!(files.open_files(), 1, "the stream's file is open");
    assert!(!committer.is_stopped(), "the streams hold the committer");

    server.shutdown().await;
    eventually("every stream file is closed", || async {
        files.open_files() == 0
    })
    .await;
    eventually("the committer thread stopped", || async {
        committer.is_stopped()
    })
    .await;
}

// ---------------------------------------------------------------- 11. restart

#[actix::test]
async fn a_second_service_on_a_data_directory_in_use_refuses_to_start_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let pending = status("RUNNING", false);
    server
        .update(common::status_update("s", "", &pending))
        .await;
    let before = common::snapshot(dir.path());
    let overrides = Overrides {
        data_dir: Some(dir.path().into()),
        listen: Some("127.0.0.1:0".into()),
        config_file: None,
    };
    let settings = Settings::load_with_env(&overrides, Some(Default::default())).unwrap();
    let err = service::start(settings.validate().unwrap())
        .await
        .expect_err("the data directory is the running server's");
    match &err {
        service::ServeError::Lock(status_update_manager::store::LockError::InUse {
            dir: locked,
            holder,
            ..
        }) => {
            assert_eq!(locked, dir.path());
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("not a data directory in use: {other:?}"),
    }
    assert!(
        // The running server is in this test's process, and the message says so.
        err.to_string().contains("in use by this process"),
        "{err}"
    );
    // Neither its journal nor its stream files were read into a second
    // manager and written back: the running server's files are as they were.
    assert_eq!(common::snapshot(dir.path()), before);
    server
        .update(common::status_update("s", "", &status("FINISHED", true)))
        .await;
    server.shutdown().await;
    files_closed(dir.path()).await;

    // Released by the shutdown: the next start takes the directory over.
    let server = Server::start(dir.path(), |_| {}).await;
    assert_eq!(server.running.recovered, 1);
    assert_eq!(server.list("").await[0].pending, 2);
    server.shutdown().await;
}

#[actix::test]
async fn after_a_restart_unacked_updates_are_forwarded_again_from_attempt_0() {
    let dir = tempfile::tempdir().unwrap();
    let u1 = status("STARTING", false);
    let u2 = status("RUNNING", false);
    let v1 = status("RUNNING", false);
    let w1 = status("RUNNING", false);
    let m1 = status("RUNNING", false);
    {
        let server = Server::start(dir.path(), |_| {}).await;
        let mut sub = server.subscribe("before").await;
        server.update(common::status_update("s1", "", &u1)).await;
        server.update(common::status_update("s1", "", &u2)).await;
        server.update(common::status_update("s2", "F", &v1)).await;
        server.update(common::status_update("s3", "", &w1)).await;
        let r = server
            .send(memory_only(common::status_update("s4", "", &m1)))
            .await
            .unwrap();
        assert!(!r.duplicate);
        next_forwards(&mut sub, 4, "the first sends before the restart").await;
        assert!(!server.ack_ok("s1", &u1).await);
        next_forward(&mut sub, "u2 after the ack of u1").await;
        assert!(!server.ack_ok("s3", &w1).await);
        server.shutdown().await;
        files_closed(dir.path()).await;
    }

    let server = Server::start(dir.path(), |_| {}).await;
    assert_eq!(server.running.recovered, 3, "s1, s2, s3 recovered");
    let list = server.list("").await;
    let ids: Vec<&str> = list.iter().map(|i| i.stream_id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2", "s3"], "the memory_only s4 is gone");
    let figures: Vec<_> = list
        .iter()
        .map(|i| {
            (
                i.pending,
                i.received,
                i.acknowledged,
                i.attempt,
                i.next_retry_in_millis,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [(1, 2, 1, 0, -1), (1, 1, 0, 0, -1), (0, 1, 1, 0, -1)],
        "recovered figures, paused until a subscriber connects"
    );
    assert_eq!(list[1].framework_id, "F");

    let mut sub = server.subscribe("after").await;
    let got = next_forwards(&mut sub, 2, "the recovered heads").await;
    assert_forward(&got["s1"], "s1", &u2, &u2, 0, "u2, not the acked u1");
    assert_forward(&got["s2"], "s2", &v1, &v1, 0, "v1");
    no_forward_within(&mut sub, QUIET, "nothing acked is forwarded again").await;

    // What was recorded before the restart still holds.
    assert_rejected(
        server.ack("s1", &u1).await,
        Code::AlreadyExists,
        &["s1", &uuid_of(&u1)],
        "u1 was acked before the restart",
    );
    let dup = server
        .send(common::checkpointed(common::status_update("s1", "", &u1)))
        .await
        .unwrap();
    assert!(dup.duplicate, "dedup survives the restart");
    assert!(!server.ack_ok("s1", &u2).await);
    assert_rejected(
        server.get("s4").await,
        Code::NotFound,
        &["s4"],
        "memory_only s4",
    );

    server.shutdown().await;
}

#[actix::test]
async fn a_connection_carries_a_bounded_number_of_rpcs_at_once() {
    use tonic::codegen::http::{Method, Request, StatusCode};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let tcp = tokio::net::TcpStream::connect(server.running.local_addr)
        .await
        .unwrap();
    let (mut send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // A health check: once it is answered, the server's SETTINGS are in.
    let head = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/grpc.health.v1.Health/Check", server.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(head, false).unwrap();
    // An empty HealthCheckRequest: no compression flag, length 0.
    body.send_data(bytes::Bytes::from_static(&[0; 5]), true)
        .unwrap();
    let response = tokio::select! {
        response = response => response.unwrap(),
        ended = &mut connection => panic!("the connection ended first: {ended:?}"),
    };
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        connection.max_concurrent_send_streams(),
        service::MAX_CONCURRENT_STREAMS as usize
    );
    drop((send, body, response, connection));
    server.shutdown().await;
}

/// HTTP/2 frame types and flags the keepalive test reads and writes.
mod frame {
    pub(super) const SETTINGS: u8 = 0x4;
    pub(super) const PING: u8 = 0x6;
    pub(super) const GOAWAY: u8 = 0x7;
    pub(super) const ACK: u8 = 0x1;
}

/// A connection that speaks HTTP/2 frame by frame: the client preface and
/// an empty SETTINGS are sent; the server's SETTINGS are acknowledged as
/// they come; nothing else is answered unless the test does.
struct RawH2(tokio::net::TcpStream);

impl RawH2 {
    async fn connect(server: &Server) -> RawH2 {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(server.running.local_addr)
            .await
            .unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut raw = RawH2(tcp);
        raw.write(frame::SETTINGS, 0, &[]).await;
        raw
    }

    async fn write(&mut self, kind: u8, flags: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        bytes.extend_from_slice(payload);
        self.0.write_all(&bytes).await.unwrap();
    }

    /// The next frame but SETTINGS (acknowledged here): its type, flags and
    /// payload; `None` once the server closed the connection.
    async fn next(&mut self) -> Option<(u8, u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            let mut head = [0u8; 9];
            match tokio::time::timeout(WAIT, self.0.read_exact(&mut head))
                .await
                .expect("a frame or the end of the connection within the wait")
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading a frame: {e}"),
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            self.0.read_exact(&mut payload).await.unwrap();
            let (kind, flags) = (head[3], head[4]);
            if kind == frame::SETTINGS {
                if flags & frame::ACK == 0 {
                    self.write(frame::SETTINGS, frame::ACK, &[]).await;
                }
                continue;
            }
            return Some((kind, flags, payload));
        }
    }

    /// The next PING the server sends (frames in between are skipped).
    async fn ping(&mut self) -> Vec<u8> {
        loop {
            match self.next().await {
                Some((frame::PING, flags, payload)) if flags & frame::ACK == 0 => return payload,
                Some(_) => continue,
                None => panic!("the connection was closed before a PING came"),
            }
        }
    }
}

#[actix::test]
async fn a_connection_that_leaves_pings_unanswered_is_closed_and_one_that_answers_them_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        |_| {},
        |config| {
            // The answers get far more time than they need, so that a
            // loaded machine does not close the answering connection.
            config.http2_keepalive = Http2Keepalive {
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(2),
            }
        },
    )
    .await;

    // A peer that answers: ping after ping, the connection stays.
    let mut answering = RawH2::connect(&server).await;
    for _ in 0..3 {
        let payload = answering.ping().await;
        answering.write(frame::PING, frame::ACK, &payload).await;
    }
    answering.ping().await;

    // A peer that does not (stopped, hung): its connection is closed,
    // with a GOAWAY first.
    let mut silent = RawH2::connect(&server).await;
    silent.ping().await;
    let mut goaway = false;
    while let Some((kind, _, _)) = silent.next().await {
        goaway |= kind == frame::GOAWAY;
    }
    assert!(
        goaway,
        "the server said GOAWAY before it closed the connection"
    );

    // The server serves on.
    server
        .update(common::status_update(
            "k1",
            "",
            &status("TASK_RUNNING", false),
        ))
        .await;
    drop((answering, silent));
    server.shutdown().await;
}

/// One `Update` RPC on a raw HTTP/2 connection, its request message sent
/// in two parts.
struct RawUpdate {
    body: h2::SendStream<bytes::Bytes>,
    response: h2::client::ResponseFuture,
    rest: bytes::Bytes,
}

impl RawUpdate {
    /// Opens the RPC and sends the first `sent` bytes of its message (a
    /// gRPC frame of `request`).
    fn start(
        send: &mut h2::client::SendRequest<bytes::Bytes>,
        server: &Server,
        request: &UpdateRequest,
        sent: usize,
    ) -> RawUpdate {
        use prost::Message;
        use tonic::codegen::http::{Method, Request};
        let message = request.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&message);
        let mut framed = bytes::Bytes::from(framed);
        let head = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "{}/status_update_manager.v1.StatusUpdateManager/Update",
                server.url
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut body) = send.send_request(head, false).unwrap();
        let rest = framed.split_off(sent);
        body.send_data(framed, false).unwrap();
        RawUpdate {
            body,
            response,
            rest,
        }
    }

    /// Sends the rest of the message.
    fn finish(&mut self) {
        let rest = std::mem::take(&mut self.rest);
        self.body.send_data(rest, true).unwrap();
    }
}

/// The gRPC status of a trailers-only answer: code and message.
fn grpc_status(response: &tonic::codegen::http::Response<h2::RecvStream>) -> (String, String) {
    let header = |name: &str| {
        response.headers().get(name).map_or(String::new(), |v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
    };
    (header("grpc-status"), header("grpc-message"))
}

#[actix::test]
async fn requests_being_received_hold_a_bounded_number_of_bytes_and_past_it_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        |_| {},
        |config| config.request_bytes_in_flight = 256 * 1024,
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(server.running.local_addr)
        .await
        .unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);

    // Two updates of about 200 KiB each (a payload far over
    // server.max_payload_bytes), 150 KiB of each sent: 300 KiB, more than
    // the server holds at once.
    let big = |stream: &str| UpdateRequest {
        update: Some(common::status_update(
            stream,
            "",
            &Status {
                payload: vec![7; 200 * 1024],
                ..status("TASK_RUNNING", false)
            },
        )),
        memory_only: false,
    };
    let mut a = RawUpdate::start(&mut send, &server, &big("big-a"), 150 * 1024);
    let mut b = RawUpdate::start(&mut send, &server, &big("big-b"), 150 * 1024);

    // Whichever frame found no room fails its RPC at once.
    let (refused, mut survivor) = tokio::time::timeout(WAIT, async {
        tokio::select! {
            response = &mut a.response => (response, b),
            response = &mut b.response => (response, a),
        }
    })
    .await
    .expect("an RPC past the budget is refused at once");
    let (code, message) = grpc_status(&refused.unwrap());
    assert_eq!(
        code,
        (Code::ResourceExhausted as i32).to_string(),
        "{message}"
    );
    assert!(
        message.contains("of at most 262144 bytes") && message.contains("retry"),
        "{message}"
    );

    // The other one, once whole, reaches the handler, which refuses its
    // payload as API.md says.
    survivor.finish();
    let answered = tokio::time::timeout(WAIT, &mut survivor.response)
        .await
        .expect("the RPC within the budget is answered")
        .unwrap();
    let (code, message) = grpc_status(&answered);
    assert_eq!(
        code,
        (Code::InvalidArgument as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("payload"), "{message}");

    // Every byte was given back: an update of the whole budget but a
    // little goes through on a fresh RPC.
    let mut whole = RawUpdate::start(&mut send, &server, &big("big-c"), 0);
    whole.finish();
    let answered = tokio::time::timeout(WAIT, &mut whole.response)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(
        grpc_status(&answered).0,
        (Code::InvalidArgument as i32).to_string()
    );
    server
        .update(common::status_update(
            "small",
            "",
            &status("TASK_RUNNING", false),
        ))
        .await;
    drop((send, survivor, whole));
    connection.abort();
    server.shutdown().await;
}
