//! R4, R6, R7: hostile input over gRPC, one table row per input.
//!
//! A real server on `127.0.0.1:0` with `server.max_payload_bytes = 16`,
//! `limits.max_pending_per_stream = 2` and `limits.max_streams = 3`, over
//! `<tempdir>/data`. Every row sends one request and checks:
//!
//! - a rejected input gets API.md §1's status code and a message that names
//!   the problem, and the stream and uuid wherever the request has them;
//!   nothing under the data directory changes (every path and every byte);
//! - a stream id that looks like a path (`..`, `/abs`, `../../etc/passwd`, …)
//!   but is valid is accepted and stored in one file strictly below
//!   `data_dir/streams`, which [`discover_native_streams`] maps back to the
//!   same id;
//! - after every row the tempdir holds nothing but the data directory, and
//!   no absolute path a naive server would have written exists.
//!
//! Non-UTF-8 strings cannot be sent through the generated client, so those
//! rows encode the request by hand with `bytes` in place of `string`
//! ([`RawUpdateRequest`]) and call the RPC through `tonic::client::Grpc`.
#![cfg(feature = "service")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Code;
use uuid::Uuid;

use status_update_manager::proto::status_update_manager::v1::{
    AcknowledgeRequest, AcknowledgeResponse, Status, StatusUpdate, UpdateRequest, UpdateResponse,
};
use status_update_manager::store::layout::{discover_native_streams, native_stream_path};

/// `server.max_payload_bytes` of the server under test.
const MAX_PAYLOAD: usize = 16;
/// `limits.max_pending_per_stream`.
const MAX_PENDING: usize = 2;
/// `limits.max_streams`.
const MAX_STREAMS: usize = 3;

/// The code a string field that is not UTF-8 gets: the request does not
/// decode, and the service's codec (src/service/codec.rs) answers
/// INVALID_ARGUMENT naming the field. Nothing is written.
const NOT_UTF8: Code = Code::InvalidArgument;

// ---------------------------------------------------------------- raw messages

/// `Status` with `bytes` for its string fields.
#[derive(Clone, PartialEq, prost::Message)]
struct RawStatus {
    #[prost(bytes = "vec", tag = "1")]
    uuid: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    state: Vec<u8>,
}

/// `StatusUpdate` with `bytes` for its string fields.
#[derive(Clone, PartialEq, prost::Message)]
struct RawStatusUpdate {
    #[prost(bytes = "vec", tag = "1")]
    stream_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    framework_id: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    status: Option<RawStatus>,
}

/// `UpdateRequest` over [`RawStatusUpdate`].
#[derive(Clone, PartialEq, prost::Message)]
struct RawUpdateRequest {
    #[prost(message, optional, tag = "1")]
    update: Option<RawStatusUpdate>,
}

/// `AcknowledgeRequest` with `bytes` for `stream_id`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawAcknowledgeRequest {
    #[prost(bytes = "vec", tag = "1")]
    stream_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    status_uuid: Vec<u8>,
}

const UPDATE_METHOD: &str = "/status_update_manager.v1.StatusUpdateManager/Update";
const ACK_METHOD: &str = "/status_update_manager.v1.StatusUpdateManager/Acknowledge";

/// One unary call with a hand-made request message.
async fn raw_call<Req, Resp>(
    channel: Channel,
    method: &'static str,
    request: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(request),
        PathAndQuery::from_static(method),
        tonic_prost::ProstCodec::<Req, Resp>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

// ---------------------------------------------------------------- harness

/// The shared in-process server (`common::server`) over `<root>/data`, with
/// this file's limits, and the root nothing may be written beside.
struct Server {
    service: common::server::Server,
    root: PathBuf,
}

impl std::ops::Deref for Server {
    type Target = common::server::Server;
    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

impl Server {
    async fn start(root: &Path) -> Server {
        let service = common::server::Server::start(&root.join("data"), |settings| {
            settings.server.max_payload_bytes = MAX_PAYLOAD;
            settings.limits.max_pending_per_stream = MAX_PENDING;
            settings.limits.max_streams = MAX_STREAMS;
        })
        .await;
        Server {
            service,
            root: root.to_path_buf(),
        }
    }

    async fn shutdown(self) {
        self.service.shutdown().await;
    }

    async fn call(&self, call: &Call) -> Result<Answer, tonic::Status> {
        let mut client = self.client();
        match call {
            Call::Update(request) => client
                .update(request.clone())
                .await
                .map(|r| Answer::Update(r.into_inner())),
            Call::Ack(request) => client
                .acknowledge(request.clone())
                .await
                .map(|r| Answer::Ack(r.into_inner())),
            Call::RawUpdate(request) => {
                raw_call::<_, UpdateResponse>(self.channel.clone(), UPDATE_METHOD, request.clone())
                    .await
                    .map(Answer::Update)
            }
            Call::RawAck(request) => raw_call::<_, AcknowledgeResponse>(
                self.channel.clone(),
                ACK_METHOD,
                request.clone(),
            )
            .await
            .map(Answer::Ack),
        }
    }

    /// A checkpointed update that must be accepted.
    async fn accept(&self, update: StatusUpdate) {
        let what = format!("{:?}", update.stream_id);
        match self.call(&Call::Update(common::checkpointed(update))).await {
            Ok(Answer::Update(r)) => assert!(!r.duplicate, "update of {what}: a duplicate"),
            other => panic!("update of {what}: expected OK, got {other:?}"),
        }
    }

    /// The tempdir holds the data directory and nothing else.
    #[track_caller]
    fn assert_only_data_dir(&self, what: &str) {
        let names: Vec<_> = std::fs::read_dir(&self.root)
            .expect("list the tempdir")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(
            names,
            ["data"],
            "{what}: something was written beside the data dir"
        );
    }
}

#[derive(Debug)]
enum Answer {
    Update(UpdateResponse),
    Ack(AcknowledgeResponse),
}

// ---------------------------------------------------------------- requests

/// What a row sends.
#[derive(Debug, Clone)]
enum Call {
    Update(UpdateRequest),
    Ack(AcknowledgeRequest),
    RawUpdate(RawUpdateRequest),
    RawAck(RawAcknowledgeRequest),
}

/// What a row expects.
#[derive(Debug, Clone)]
enum Expect {
    /// This code, with a message naming each of these.
    Rejected(Code, Vec<String>),
    /// Accepted and stored as the file of this stream id.
    Stored(String),
}

struct Row {
    what: String,
    call: Call,
    expect: Expect,
}

fn rejected(what: impl Into<String>, call: Call, code: Code, names: &[&str]) -> Row {
    Row {
        what: what.into(),
        call,
        expect: Expect::Rejected(code, names.iter().map(|n| n.to_string()).collect()),
    }
}

fn status(state: &str) -> Status {
    Status {
        uuid: Uuid::new_v4().as_bytes().to_vec(),
        state: state.into(),
        terminal: false,
        message: String::new(),
        payload: Vec::new(),
        timestamp_unix_micros: 1,
    }
}

fn ack(stream: &str, uuid: &[u8]) -> Call {
    Call::Ack(AcknowledgeRequest {
        stream_id: stream.into(),
        status_uuid: uuid.to_vec(),
    })
}

fn uuid_text(status: &Status) -> String {
    Uuid::from_slice(&status.uuid).map_or_else(|_| "<bad uuid>".into(), |u| u.to_string())
}

/// A raw update: `stream_id`, `framework_id` and `state` as bytes.
fn raw_update(stream: &[u8], framework: &[u8], state: &[u8], uuid: &[u8]) -> Call {
    Call::RawUpdate(RawUpdateRequest {
        update: Some(RawStatusUpdate {
            stream_id: stream.to_vec(),
            framework_id: framework.to_vec(),
            status: Some(RawStatus {
                uuid: uuid.to_vec(),
                state: state.to_vec(),
            }),
        }),
    })
}

/// The stream with one pending update that most rows aim at.
const VICTIM: &str = "victim";
/// Its framework.
const FRAMEWORK: &str = "fw";
/// A stream whose queue is full.
const FULL: &str = "full";

/// One row per bad input, and one per hostile-looking but valid stream id.
fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let v = VICTIM;
    let bad_uuids: [(&str, Vec<u8>, &str); 4] = [
        ("a 0-byte uuid", Vec::new(), "0 bytes"),
        ("a 15-byte uuid", vec![7; 15], "15 bytes"),
        ("a 17-byte uuid", vec![7; 17], "17 bytes"),
        ("an all-zero uuid", vec![0; 16], "all zero"),
    ];
    for (what, uuid, reason) in &bad_uuids {
        for stream in [v, "fresh"] {
            let mut st = status("RUNNING");
            st.uuid = uuid.clone();
            rows.push(rejected(
                format!("Update of {stream:?} with {what}"),
                Call::Update(common::checkpointed(common::status_update(
                    stream, FRAMEWORK, &st,
                ))),
                Code::InvalidArgument,
                &[stream, reason],
            ));
        }
        rows.push(rejected(
            format!("Acknowledge with {what}"),
            ack(v, uuid),
            Code::InvalidArgument,
            &[v, reason],
        ));
    }

    let st = status("");
    rows.push(rejected(
        "Update with an empty state",
        Call::Update(common::checkpointed(common::status_update(
            v, FRAMEWORK, &st,
        ))),
        Code::InvalidArgument,
        &[v, &uuid_text(&st), "state is empty"],
    ));
    let mut no_status = common::status_update(v, FRAMEWORK, &status("RUNNING"));
    no_status.status = None;
    rows.push(rejected(
        "Update without a status",
        Call::Update(common::checkpointed(no_status)),
        Code::InvalidArgument,
        &[v, "no status"],
    ));
    rows.push(rejected(
        "UpdateRequest without an update",
        Call::Update(UpdateRequest {
            update: None,
            memory_only: false,
        }),
        Code::InvalidArgument,
        &["UpdateRequest.update is missing"],
    ));
    let st = status("RUNNING");
    let mut with_latest = common::status_update(v, FRAMEWORK, &st);
    with_latest.latest_status = Some(status("RUNNING"));
    rows.push(rejected(
        "Update with latest_status set",
        Call::Update(common::checkpointed(with_latest)),
        Code::InvalidArgument,
        &[v, &uuid_text(&st), "latest_status"],
    ));
    let st = status("RUNNING");
    rows.push(rejected(
        "Update with another framework id",
        Call::Update(common::checkpointed(common::status_update(
            v, "intruder", &st,
        ))),
        Code::FailedPrecondition,
        &[v, &uuid_text(&st), "framework", FRAMEWORK, "intruder"],
    ));
    let st = status("RUNNING");
    rows.push(rejected(
        "memory_only Update of a checkpointed stream",
        Call::Update(UpdateRequest {
            update: Some(common::status_update(v, FRAMEWORK, &st)),
            memory_only: true,
        }),
        Code::FailedPrecondition,
        &[v, &uuid_text(&st), "checkpoint"],
    ));

    // Stream ids the API refuses, in Update and in Acknowledge.
    let long = "x".repeat(257);
    for (what, id, reason) in [
        ("an empty stream id", "", "stream_id is empty"),
        ("a 257-byte stream id", long.as_str(), "257 bytes"),
        ("a stream id with NUL", "a\0b", "NUL"),
        ("a path stream id with NUL", "../\0/etc/passwd", "NUL"),
    ] {
        let st = status("RUNNING");
        let uuid = uuid_text(&st);
        rows.push(rejected(
            format!("Update with {what}"),
            Call::Update(common::checkpointed(common::status_update(
                id, FRAMEWORK, &st,
            ))),
            Code::InvalidArgument,
            &[&uuid, reason],
        ));
        rows.push(rejected(
            format!("Acknowledge with {what}"),
            ack(id, &st.uuid),
            Code::InvalidArgument,
            &[&uuid, reason],
        ));
    }

    // Strings that are not UTF-8.
    let uuid = Uuid::new_v4();
    let bytes = uuid.as_bytes();
    for (what, call, field) in [
        (
            "Update with a non-UTF-8 stream id",
            raw_update(b"bad-\xff\xfe", FRAMEWORK.as_bytes(), b"RUNNING", bytes),
            "stream_id",
        ),
        (
            "Update with a non-UTF-8 stream id that is a path",
            raw_update(b"../\xc0\xaf../etc/passwd", b"", b"RUNNING", bytes),
            "stream_id",
        ),
        (
            "Update with a non-UTF-8 framework id",
            raw_update(VICTIM.as_bytes(), b"fw-\x80", b"RUNNING", bytes),
            "framework_id",
        ),
        (
            "Update with a non-UTF-8 state",
            raw_update(
                VICTIM.as_bytes(),
                FRAMEWORK.as_bytes(),
                b"RUN\xedNING",
                bytes,
            ),
            "state",
        ),
        (
            "Acknowledge with a non-UTF-8 stream id",
            Call::RawAck(RawAcknowledgeRequest {
                stream_id: b"vic\xfftim".to_vec(),
                status_uuid: bytes.to_vec(),
            }),
            "stream_id",
        ),
    ] {
        rows.push(rejected(what, call, NOT_UTF8, &[field, "UTF-8"]));
    }
    // The raw encoding itself works: the same request with valid UTF-8 is
    // judged by the service (here: the stream's framework differs).
    rows.push(rejected(
        "raw Update with valid UTF-8 reaches the service",
        raw_update(VICTIM.as_bytes(), b"other", b"RUNNING", bytes),
        Code::FailedPrecondition,
        &[VICTIM, &uuid.to_string(), "framework"],
    ));

    // Payloads over server.max_payload_bytes.
    for len in [MAX_PAYLOAD + 1, 200 * 1024] {
        let mut st = status("RUNNING");
        st.payload = vec![0xA5; len];
        rows.push(rejected(
            format!("Update with a payload of {len} bytes"),
            Call::Update(common::checkpointed(common::status_update(
                v, FRAMEWORK, &st,
            ))),
            Code::InvalidArgument,
            &[
                v,
                &uuid_text(&st),
                &format!("{len} bytes"),
                &MAX_PAYLOAD.to_string(),
            ],
        ));
    }

    // A full queue.
    let st = status("RUNNING");
    rows.push(rejected(
        "Update of a stream whose queue is full",
        Call::Update(common::checkpointed(common::status_update(FULL, "", &st))),
        Code::ResourceExhausted,
        &[FULL, &uuid_text(&st), "max_pending_per_stream"],
    ));

    // Stream ids that look like paths but are valid: stored under data_dir.
    let deep = "/".repeat(256);
    let escape = format!("../../../{}", escape_name());
    for id in [
        "..",
        ".",
        "a/b",
        "/abs",
        "../../etc/passwd",
        "streams/../../outside",
        "a/",
        "%2E%2E",
        "x.updates",
        "\\..\\windows",
        "é/..",
        deep.as_str(),
        escape.as_str(),
    ] {
        let st = status("RUNNING");
        rows.push(Row {
            what: format!("Update of the stream {id:?}"),
            call: Call::Update(common::checkpointed(common::status_update(id, "", &st))),
            expect: Expect::Stored(id.to_string()),
        });
    }
    rows
}

/// A name unique to this process, for the id that tries to climb above the tempdir.
fn escape_name() -> String {
    format!("sum-hostile-escape-{}", std::process::id())
}

// ---------------------------------------------------------------- the table

#[actix::test]
async fn every_hostile_input_is_rejected_or_confined_to_the_data_dir() {
    let root = tempfile::tempdir().expect("a tempdir");
    let server = Server::start(root.path()).await;
    let streams_dir = server.data_dir.join("streams");

    // The victim, with one pending update; a stream whose queue is full.
    server
        .accept(common::status_update(VICTIM, FRAMEWORK, &status("RUNNING")))
        .await;
    for _ in 0..MAX_PENDING {
        server
            .accept(common::status_update(FULL, "", &status("RUNNING")))
            .await;
    }

    for (i, row) in rows().into_iter().enumerate() {
        let what = format!("row {i}: {}", row.what);
        let before = common::snapshot(&server.data_dir);
        let result = server.call(&row.call).await;
        match &row.expect {
            Expect::Rejected(code, names) => {
                let status = match result {
                    Ok(ok) => panic!("{what}: expected {code:?}, got OK {ok:?}"),
                    Err(status) => status,
                };
                assert_eq!(status.code(), *code, "{what}: {status:?}");
                for name in names {
                    assert!(
                        status.message().contains(name.as_str()),
                        "{what}: the message should name {name:?}: {:?}",
                        status.message()
                    );
                }
                assert_eq!(
                    common::snapshot(&server.data_dir),
                    before,
                    "{what}: the rejected input changed the data dir"
                );
            }
            Expect::Stored(id) => {
                match result {
                    Ok(Answer::Update(r)) => assert!(!r.duplicate, "{what}: a duplicate"),
                    other => panic!("{what}: expected OK, got {other:?}"),
                }
                assert_stored(&server, id, &before, &what);
                // A terminal ack ends it, removes its file and frees its slot.
                let mut end = status("DONE");
                end.terminal = true;
                server.accept(common::status_update(id, "", &end)).await;
                let info = server
                    .get(id)
                    .await
                    .unwrap_or_else(|s| panic!("{what}: GetStream: {s}"));
                assert_eq!(info.stream_id, *id, "{what}: GetStream names the stream");
                for head in info.pending_statuses {
                    match server.call(&ack(id, &head.uuid)).await {
                        Ok(Answer::Ack(r)) => {
                            assert_eq!(r.stream_terminated, head.terminal, "{what}: ack")
                        }
                        other => panic!("{what}: ack of the head: {other:?}"),
                    }
                }
                server.wait_gone(id).await;
                let path = native_stream_path(&server.data_dir, id);
                assert!(!path.exists(), "{what}: the finished stream's file stays");
                assert!(streams_dir.is_dir(), "{what}: the streams dir was removed");
            }
        }
        server.assert_only_data_dir(&what);
        let escaped = root.path().parent().map(|p| p.join(escape_name()));
        for naive in escaped
            .into_iter()
            .chain(["/abs", "/abs.updates"].map(PathBuf::from))
        {
            let updates = naive.with_extension("updates");
            assert!(
                !naive.exists() && !updates.exists(),
                "{what}: {} was created",
                naive.display()
            );
        }
    }

    // At the stream limit: a third stream fills it, a fourth is refused.
    server
        .accept(common::status_update("third", "", &status("RUNNING")))
        .await;
    let at_limit = [
        ("fourth", false, Code::ResourceExhausted, "max_streams"),
        ("fourth", true, Code::ResourceExhausted, "max_streams"),
        ("../fourth", false, Code::ResourceExhausted, "max_streams"),
    ];
    for (i, (id, memory_only, code, reason)) in at_limit.into_iter().enumerate() {
        let what = format!("limit row {i}: a new stream {id:?} (memory_only={memory_only}) at max_streams = {MAX_STREAMS}");
        let before = common::snapshot(&server.data_dir);
        let result = server
            .call(&Call::Update(UpdateRequest {
                update: Some(common::status_update(id, "", &status("RUNNING"))),
                memory_only,
            }))
            .await;
        let status = result.expect_err(&what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        for name in [id, reason] {
            assert!(
                status.message().contains(name),
                "{what}: the message should name {name:?}: {:?}",
                status.message()
            );
        }
        assert_eq!(
            common::snapshot(&server.data_dir),
            before,
            "{what}: changed the data dir"
        );
        server.assert_only_data_dir(&what);
    }
    // Malformed input is judged before the limit: still INVALID_ARGUMENT.
    let mut st = status("RUNNING");
    st.uuid = vec![1; 15];
    let status = server
        .call(&Call::Update(common::checkpointed(common::status_update(
            "fifth", "", &st,
        ))))
        .await
        .expect_err("a 15-byte uuid at the stream limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    server.shutdown().await;
    server_files_confined(root.path());
}

/// A stored stream: one new file strictly below `data_dir/streams`, holding
/// one record, that discovery maps back to `id`; nothing else changed.
#[track_caller]
fn assert_stored(
    server: &Server,
    id: &str,
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    what: &str,
) {
    let streams_dir = server.data_dir.join("streams");
    let path = native_stream_path(&server.data_dir, id);
    assert!(
        path.starts_with(&streams_dir) && path != streams_dir,
        "{what}: {} is not below {}",
        path.display(),
        streams_dir.display()
    );
    assert!(path.is_file(), "{what}: no file at {}", path.display());
    let discovered = discover_native_streams(&server.data_dir).expect("discovery");
    assert!(
        discovered.contains(&(id.to_string(), path.clone())),
        "{what}: discovery does not map {} back to {id:?}: {discovered:?}",
        path.display()
    );
    let after = common::snapshot(&server.data_dir);
    for (changed, bytes) in &after {
        if before.get(changed) == Some(bytes) {
            continue;
        }
        assert!(
            changed == &path || (bytes.is_none() && path.starts_with(changed)),
            "{what}: {} changed besides the stream's file",
            changed.display()
        );
    }
    assert!(
        before.keys().all(|p| after.contains_key(p)),
        "{what}: a file disappeared"
    );
}

/// After shutdown, restarting over the same data dir recovers exactly the
/// streams left, and still writes nothing outside it.
fn server_files_confined(root: &Path) {
    let names: Vec<_> = std::fs::read_dir(root)
        .expect("list the tempdir")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(names, ["data"], "after shutdown");
    let ids: Vec<String> = discover_native_streams(&root.join("data"))
        .expect("discovery")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["full", "third", "victim"], "the streams left on disk");
}

/// The valid hostile ids survive a restart: recovered from their files, by id.
#[actix::test]
async fn hostile_stream_ids_are_recovered_by_id_after_a_restart() {
    let root = tempfile::tempdir().expect("a tempdir");
    let ids = ["..", "../../etc/passwd", "/abs"];
    let server = Server::start(root.path()).await;
    let mut statuses = Vec::new();
    for id in ids {
        let st = status("RUNNING");
        server.accept(common::status_update(id, "", &st)).await;
        statuses.push(st);
    }
    server.shutdown().await;

    let server = Server::start(root.path()).await;
    assert_eq!(server.running.recovered, ids.len(), "streams recovered");
    for (id, st) in ids.iter().zip(&statuses) {
        let info = server
            .get(id)
            .await
            .unwrap_or_else(|s| panic!("GetStream {id:?} after the restart: {s}"));
        assert_eq!(info.stream_id, *id);
        assert_eq!(
            info.pending_statuses.first(),
            Some(st),
            "{id:?}: its update"
        );
        match server.call(&ack(id, &st.uuid)).await {
            Ok(Answer::Ack(r)) => assert!(!r.stream_terminated, "{id:?}"),
            other => panic!("ack on {id:?} after the restart: {other:?}"),
        }
    }
    server.assert_only_data_dir("after the restart");
    server.shutdown().await;
}
