//! The streaming calls (API.md §1, `UpdateStream` and `AcknowledgeStream`):
//! each request gets one answer, in request order, with the outcome the
//! unary RPC would give; a refused request does not end the call; the
//! updates of one call reach the streams in the order sent; the call ends
//! OK once the client ends its requests; a graceful stop ends an open call
//! with UNAVAILABLE after answering what it took; a long call does not use
//! up the server's bound on request bytes being received. The harness is
//! `common::server`.
#![cfg(feature = "service")]

mod common;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use status_update_manager::proto::status_update_manager::v1::{
    acknowledge_stream_response, update_stream_response, AcknowledgeRequest,
    AcknowledgeStreamResponse, RequestError, Status, UpdateRequest, UpdateResponse,
    UpdateStreamResponse,
};

use common::server::{assert_forward, next_forward, status, uuid_of, Server};
use common::{checkpointed, status_update, BOUND};

/// An open `UpdateStream` call: requests go in through `requests`.
async fn update_stream(
    server: &Server,
) -> (mpsc::Sender<UpdateRequest>, Streaming<UpdateStreamResponse>) {
    let (requests, rx) = mpsc::channel(64);
    let answers = server
        .client()
        .update_stream(ReceiverStream::new(rx))
        .await
        .expect("UpdateStream is accepted")
        .into_inner();
    (requests, answers)
}

/// An open `AcknowledgeStream` call.
async fn acknowledge_stream(
    server: &Server,
) -> (
    mpsc::Sender<AcknowledgeRequest>,
    Streaming<AcknowledgeStreamResponse>,
) {
    let (requests, rx) = mpsc::channel(64);
    let answers = server
        .client()
        .acknowledge_stream(ReceiverStream::new(rx))
        .await
        .expect("AcknowledgeStream is accepted")
        .into_inner();
    (requests, answers)
}

/// The next answer of a call, within [`BOUND`].
async fn next<T>(answers: &mut Streaming<T>, what: &str) -> T {
    tokio::time::timeout(BOUND, answers.message())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {BOUND:?}"))
        .unwrap_or_else(|status| panic!("{what}: the call failed: {status}"))
        .unwrap_or_else(|| panic!("{what}: the call ended"))
}

fn update_ok(answer: UpdateStreamResponse, what: &str) -> UpdateResponse {
    match answer.outcome {
        Some(update_stream_response::Outcome::Ok(ok)) => ok,
        other => panic!("{what}: expected an accepted update, got {other:?}"),
    }
}

fn update_refused(answer: UpdateStreamResponse, what: &str) -> RequestError {
    match answer.outcome {
        Some(update_stream_response::Outcome::Error(e)) => e,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

fn ack_outcome(answer: AcknowledgeStreamResponse) -> acknowledge_stream_response::Outcome {
    answer.outcome.expect("every answer has an outcome")
}

/// `error` has gRPC code `code` and its message names every one of `names`.
fn assert_error(error: &RequestError, code: Code, names: &[&str], what: &str) {
    assert_eq!(
        Code::from_i32(error.code),
        code,
        "{what}: {}",
        error.message
    );
    for name in names {
        assert!(
            error.message.contains(name),
            "{what}: the message names {name}: {}",
            error.message
        );
    }
}

fn ack_of(stream: &str, status: &Status) -> AcknowledgeRequest {
    AcknowledgeRequest {
        stream_id: stream.into(),
        status_uuid: status.uuid.clone(),
    }
}

#[actix::test]
async fn each_request_gets_its_own_answer_in_order_and_a_refusal_does_not_end_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut sub = server.subscribe("upstream").await;
    let (s, other) = ("task-1", "task-2");
    let (u1, u2, u3) = (
        status("STARTING", false),
        status("RUNNING", false),
        status("FINISHED", true),
    );

    let (updates, mut answers) = update_stream(&server).await;
    let sent = [
        checkpointed(status_update(s, "fw", &u1)),
        checkpointed(status_update(s, "fw", &u2)),
        // The same uuid again: a duplicate.
        checkpointed(status_update(s, "fw", &u1)),
        // No update at all: refused, as `Update` refuses it.
        UpdateRequest {
            update: None,
            memory_only: false,
        },
        // Another framework for the same stream: refused.
        checkpointed(status_update(s, "other-fw", &status("LOST", false))),
        checkpointed(status_update(s, "fw", &u3)),
        checkpointed(status_update(other, "", &u1)),
    ];
    for request in sent {
        updates.send(request).await.unwrap();
    }
    assert!(!update_ok(next(&mut answers, "u1").await, "u1").duplicate);
    assert!(!update_ok(next(&mut answers, "u2").await, "u2").duplicate);
    assert!(
        update_ok(next(&mut answers, "u1 again").await, "u1 again").duplicate,
        "the same uuid again is a duplicate"
    );
    let missing = update_refused(next(&mut answers, "no update").await, "no update");
    assert_error(
        &missing,
        Code::InvalidArgument,
        &["UpdateRequest.update is missing"],
        "no update",
    );
    let mismatch = update_refused(next(&mut answers, "framework").await, "framework");
    assert_error(
        &mismatch,
        Code::FailedPrecondition,
        &[s, "other-fw"],
        "another framework",
    );
    assert!(!update_ok(next(&mut answers, "u3").await, "u3").duplicate);
    assert!(!update_ok(next(&mut answers, "other").await, "other stream").duplicate);

    // The client ends its requests: every one was answered, the call ends OK.
    drop(updates);
    let end = tokio::time::timeout(BOUND, answers.message())
        .await
        .expect("the call ends once its requests are answered");
    assert!(matches!(end, Ok(None)), "the call ends OK, got {end:?}");

    // The updates reached the stream in the order sent: u1 is the head (its
    // forward may have left before u2 and u3 were queued, so its
    // latest_status is not checked here; the next forward's is).
    let mut heads = Vec::new();
    for what in ["a head", "the other head"] {
        let update = next_forward(&mut sub, what).await.update.unwrap();
        heads.push((update.stream_id, update.status.unwrap().uuid));
    }
    heads.sort();
    assert_eq!(
        heads,
        vec![
            (s.to_string(), u1.uuid.clone()),
            (other.to_string(), u1.uuid.clone())
        ]
    );

    // Acks on one call: each answered in order, a refusal does not end it.
    let (acks, mut answers) = acknowledge_stream(&server).await;
    acks.send(ack_of(s, &u1)).await.unwrap();
    acks.send(ack_of(s, &u1)).await.unwrap();
    acks.send(ack_of("never-seen", &u1)).await.unwrap();
    acks.send(AcknowledgeRequest {
        stream_id: s.into(),
        status_uuid: vec![1, 2, 3],
    })
    .await
    .unwrap();
    use acknowledge_stream_response::Outcome;
    match ack_outcome(next(&mut answers, "ack of u1").await) {
        Outcome::Ok(ok) => assert!(!ok.stream_terminated, "u1 is not terminal"),
        other => panic!("ack of u1: expected OK, got {other:?}"),
    }
    match ack_outcome(next(&mut answers, "ack of u1 again").await) {
        Outcome::Error(e) => assert_error(
            &e,
            Code::AlreadyExists,
            &[s, &uuid_of(&u1)],
            "ack of u1 again",
        ),
        other => panic!("ack of u1 again: expected ALREADY_EXISTS, got {other:?}"),
    }
    match ack_outcome(next(&mut answers, "unknown stream").await) {
        Outcome::Error(e) => assert_error(&e, Code::NotFound, &["never-seen"], "unknown stream"),
        other => panic!("unknown stream: expected NOT_FOUND, got {other:?}"),
    }
    match ack_outcome(next(&mut answers, "short uuid").await) {
        Outcome::Error(e) => assert_error(&e, Code::InvalidArgument, &[s], "short uuid"),
        other => panic!("short uuid: expected INVALID_ARGUMENT, got {other:?}"),
    }
    let f = next_forward(&mut sub, "u2 after the ack of u1").await;
    assert_forward(&f, s, &u2, &u3, 0, "u2 with u3 newest");
    acks.send(ack_of(s, &u2)).await.unwrap();
    assert!(matches!(
        ack_outcome(next(&mut answers, "ack of u2").await),
        Outcome::Ok(_)
    ));
    let f = next_forward(&mut sub, "u3 after the ack of u2").await;
    assert_forward(&f, s, &u3, &u3, 0, "u3");
    acks.send(ack_of(s, &u3)).await.unwrap();
    match ack_outcome(next(&mut answers, "ack of u3").await) {
        Outcome::Ok(ok) => assert!(ok.stream_terminated, "the terminal ack ends the stream"),
        other => panic!("ack of u3: expected OK, got {other:?}"),
    }
    drop(acks);
    let end = tokio::time::timeout(BOUND, answers.message())
        .await
        .expect("the call ends");
    assert!(matches!(end, Ok(None)), "the call ends OK, got {end:?}");
    server.shutdown().await;
}

#[actix::test]
async fn a_graceful_stop_answers_what_an_open_call_took_then_ends_it_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let (updates, mut answers) = update_stream(&server).await;
    let u1 = status("RUNNING", false);
    updates
        .send(checkpointed(status_update("s", "", &u1)))
        .await
        .unwrap();
    assert!(!update_ok(next(&mut answers, "u1").await, "u1").duplicate);
    let (acks, mut ack_answers) = acknowledge_stream(&server).await;

    // The client keeps both calls open (`updates` and `acks` live on):
    // the stop must end them itself.
    let (stopped, ended, ack_ended) = tokio::time::timeout(BOUND, async {
        tokio::join!(server.shutdown(), answers.message(), ack_answers.message())
    })
    .await
    .expect("the stop does not wait for the clients to end their calls");
    let () = stopped;
    for (what, ended) in [
        ("UpdateStream", ended.map(|_| ())),
        ("AcknowledgeStream", ack_ended.map(|_| ())),
    ] {
        let status = ended.expect_err(what);
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status}");
        assert!(
            status.message().contains("shutting down"),
            "{what}: {}",
            status.message()
        );
    }
    drop((updates, acks));
}

#[actix::test]
async fn a_long_call_gives_back_each_message_s_bytes_of_the_in_flight_bound() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB held at most, and 100 updates of about 4 KiB each: 400 KiB
    // over the call.
    let server = Server::start_with(
        dir.path(),
        |_| {},
        |config| config.request_bytes_in_flight = 64 * 1024,
    )
    .await;
    let (updates, mut answers) = update_stream(&server).await;
    let sender = tokio::spawn(async move {
        for i in 0..100 {
            let status = Status {
                payload: vec![7; 4000],
                ..status("RUNNING", false)
            };
            let request = checkpointed(status_update(&format!("s{}", i % 10), "", &status));
            if updates.send(request).await.is_err() {
                return;
            }
        }
    });
    for i in 0..100 {
        let answer = next(&mut answers, &format!("update {i}")).await;
        update_ok(answer, &format!("update {i}"));
    }
    sender.await.unwrap();
    let end = tokio::time::timeout(BOUND, answers.message())
        .await
        .expect("the call ends");
    assert!(matches!(end, Ok(None)), "the call ends OK, got {end:?}");
    server.shutdown().await;
}
