//! The service's connections (API.md §1), spoken to frame by frame over
//! raw HTTP/2: a connection carries a bounded number of RPCs at once; one
//! that leaves the server's keepalive pings unanswered is closed (GOAWAY
//! first) while one that answers is kept; the bytes of requests still being
//! received are bounded, and an RPC past the bound fails at once with
//! RESOURCE_EXHAUSTED. The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use std::time::Duration;

use tonic::Code;

use common::server::{status, Server};
use common::BOUND;
use status_update_manager::proto::status_update_manager::v1::{Status, UpdateRequest};
use status_update_manager::service;
use status_update_manager::service::config::Http2Keepalive;

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
            match tokio::time::timeout(BOUND, self.0.read_exact(&mut head))
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
    let (refused, mut survivor) = tokio::time::timeout(BOUND, async {
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
    let answered = tokio::time::timeout(BOUND, &mut survivor.response)
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
    let answered = tokio::time::timeout(BOUND, &mut whole.response)
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
