//! The benchmark's gRPC client: unary, server-streaming and bidirectional
//! calls over one HTTP/2 connection, with [`h2`] directly.
//!
//! The gRPC load's agents and upstream run on the machine the service runs
//! on, so every instruction they spend is one the service cannot: what the
//! benchmark should see is the service's cost, not its load generator's.
//! Through tonic's client, the load generator costs about as much as the
//! service itself (see BENCHMARKS.md, Figures behind design choices), most
//! of it per-call machinery a load generator does not need: the request
//! body's encoder and its pipe task (two task spawns per call in hyper),
//! the response decoder and the layers around them. The wire is the same as
//! any gRPC client's: `POST /package.Service/Method` with
//! `content-type: application/grpc` and `te: trailers`, each message framed
//! by a 5-byte prefix (compression flag 0, big-endian length) and encoded by
//! prost, and the call's outcome in `grpc-status` (and `grpc-message`), in
//! the trailers or, for an error without a response, in the headers.
//!
//! Only what the benchmark sends is supported: no compression, no deadlines,
//! no metadata; a compressed or oversized response is an error.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use prost::Message;
use tonic::codegen::http::{self, uri, HeaderMap, Method, Request, StatusCode, Uri};
use tonic::{Code, Status};

use super::BenchError;

/// The RPCs the benchmark calls (API.md §1), by their HTTP/2 paths.
pub const UPDATE: &str = "/status_update_manager.v1.StatusUpdateManager/Update";
/// `Acknowledge`.
pub const ACKNOWLEDGE: &str = "/status_update_manager.v1.StatusUpdateManager/Acknowledge";
/// `Subscribe`.
pub const SUBSCRIBE: &str = "/status_update_manager.v1.StatusUpdateManager/Subscribe";
/// `UpdateStream`.
pub const UPDATE_STREAM: &str = "/status_update_manager.v1.StatusUpdateManager/UpdateStream";
/// `AcknowledgeStream`.
pub const ACKNOWLEDGE_STREAM: &str =
    "/status_update_manager.v1.StatusUpdateManager/AcknowledgeStream";

/// The longest response message accepted (the service's own limit on what
/// it decodes is 4 MiB and some; responses to the benchmark are tiny).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// HTTP/2 flow-control windows announced to the service: large enough that
/// the forwards' stream never waits for a window update (hyper's defaults).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One HTTP/2 connection to the service. Cheap to clone: clones share the
/// connection, each call is a stream of its own.
#[derive(Debug, Clone)]
pub struct GrpcCaller {
    send: SendRequest<Bytes>,
    authority: uri::Authority,
}

impl GrpcCaller {
    /// Connects to the service at `addr` (plaintext HTTP/2) and runs the
    /// connection on the current runtime until every clone is dropped.
    pub async fn connect(addr: SocketAddr) -> Result<Self, BenchError> {
        let unreachable = |e: std::io::Error| {
            BenchError::Load(format!("cannot connect to the service at {addr}: {e}"))
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(unreachable)?;
        tcp.set_nodelay(true).map_err(unreachable)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(tcp)
            .await
            .map_err(|e| BenchError::Load(format!("HTTP/2 handshake with {addr}: {e}")))?;
        // Its error, if any, reaches the calls on it, which fail with it.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let authority = addr
            .to_string()
            .parse()
            .map_err(|e| BenchError::Load(format!("service address {addr}: {e}")))?;
        Ok(GrpcCaller { send, authority })
    }

    /// A unary call: `request` to `path` (`/package.Service/Method`), the
    /// one response message back.
    pub async fn unary<Q: Message, R: Message + Default>(
        &self,
        path: &'static str,
        request: &Q,
    ) -> Result<R, BenchError> {
        let mut messages = self.call(path, request).await?;
        let response = messages.message().await?.ok_or_else(|| {
            BenchError::Load(format!("{path}: the call ended OK without a response"))
        })?;
        match messages.message::<R>().await? {
            None => Ok(response),
            Some(_) => Err(BenchError::Load(format!(
                "{path}: more than one response to a unary call"
            ))),
        }
    }

    /// A call whose responses are read one by one from the returned stream
    /// (a server-streaming RPC; a unary one is a stream of one).
    pub async fn call<Q: Message>(
        &self,
        path: &'static str,
        request: &Q,
    ) -> Result<Messages, BenchError> {
        let (response, mut body) = self.start(path).await?;
        body.send_data(frame(path, request)?, true)
            .map_err(h2_error(path))?;
        responses(path, response).await
    }

    /// A bidirectional call: requests go out through the returned
    /// [`Requests`] as they are sent, responses are read from the
    /// [`Messages`].
    pub async fn open(&self, path: &'static str) -> Result<(Requests, Messages), BenchError> {
        let (response, body) = self.start(path).await?;
        let messages = responses(path, response).await?;
        Ok((Requests { path, body }, messages))
    }

    /// Sends a call's headers; its request body follows on the stream.
    async fn start(
        &self,
        path: &'static str,
    ) -> Result<(h2::client::ResponseFuture, SendStream<Bytes>), BenchError> {
        let uri = Uri::builder()
            .scheme(uri::Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| BenchError::Load(format!("{path}: {e}")))?;
        let head = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(())
            .map_err(|e| BenchError::Load(format!("{path}: {e}")))?;
        let mut send = self.send.clone().ready().await.map_err(h2_error(path))?;
        send.send_request(head, false).map_err(h2_error(path))
    }
}

/// A call's response, once its headers came, as the messages to read.
async fn responses(
    path: &'static str,
    response: h2::client::ResponseFuture,
) -> Result<Messages, BenchError> {
    let response = response.await.map_err(h2_error(path))?;
    if response.status() != StatusCode::OK {
        return Err(BenchError::Load(format!(
            "{path}: HTTP status {} from the service",
            response.status()
        )));
    }
    let (head, body) = response.into_parts();
    // A trailers-only response (an error before any message) carries
    // the status in its headers.
    check_status(path, &head.headers)?;
    Ok(Messages {
        path,
        body,
        buffer: BytesMut::new(),
    })
}

/// The requests of a bidirectional call. h2 buffers what the service's
/// flow-control window has no room for yet: the caller bounds how much it
/// sends ahead of the responses.
#[derive(Debug)]
pub struct Requests {
    path: &'static str,
    body: SendStream<Bytes>,
}

impl Requests {
    /// Sends one request message.
    pub fn send<Q: Message>(&mut self, request: &Q) -> Result<(), BenchError> {
        let path = self.path;
        self.body
            .send_data(frame(path, request)?, false)
            .map_err(h2_error(path))
    }

    /// Ends the requests: the service answers those sent, then ends the call.
    pub fn end(mut self) -> Result<(), BenchError> {
        let path = self.path;
        self.body
            .send_data(Bytes::new(), true)
            .map_err(h2_error(path))
    }
}

/// The response messages of one call.
#[derive(Debug)]
pub struct Messages {
    path: &'static str,
    body: RecvStream,
    buffer: BytesMut,
}

impl Messages {
    /// The next message; `None` when the call ended with status OK, an
    /// error when it ended with another status or broke off.
    pub async fn message<R: Message + Default>(&mut self) -> Result<Option<R>, BenchError> {
        let path = self.path;
        loop {
            if let Some(length) = self.complete_message()? {
                self.buffer.advance(5);
                let bytes = self.buffer.split_to(length);
                return R::decode(bytes)
                    .map(Some)
                    .map_err(|e| BenchError::Load(format!("{path}: undecodable response: {e}")));
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(h2_error(path))?;
                    // Read: the service may send as much again.
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buffer.extend_from_slice(&chunk);
                }
                None => {
                    if !self.buffer.is_empty() {
                        return Err(BenchError::Load(format!(
                            "{path}: the response ended inside a message ({} bytes left)",
                            self.buffer.len()
                        )));
                    }
                    let trailers = self.body.trailers().await.map_err(h2_error(path))?;
                    return match trailers {
                        Some(trailers) if check_status(path, &trailers)? => Ok(None),
                        _ => Err(BenchError::Load(format!(
                            "{path}: the response ended without a grpc-status"
                        ))),
                    };
                }
            }
        }
    }

    /// The length of the message at the front of the buffer, once all of
    /// it is there.
    fn complete_message(&self) -> Result<Option<usize>, BenchError> {
        let Some(prefix) = self.buffer.get(..5) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(BenchError::Load(format!(
                "{}: a compressed response (flag {}); none was asked for",
                self.path, prefix[0]
            )));
        }
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if length > MAX_RESPONSE_BYTES {
            return Err(BenchError::Load(format!(
                "{}: a response of {length} bytes, over the {MAX_RESPONSE_BYTES} accepted",
                self.path
            )));
        }
        Ok((self.buffer.len() >= 5 + length).then_some(length))
    }
}

/// `message` with the gRPC length prefix; an error for a message the
/// prefix's `u32` cannot measure.
fn frame<Q: Message>(path: &str, message: &Q) -> Result<Bytes, BenchError> {
    let length = message.encoded_len();
    let prefix = u32::try_from(length).map_err(|_| {
        BenchError::Load(format!(
            "{path}: a request of {length} bytes, over the 4 GiB a gRPC message can hold"
        ))
    })?;
    let mut frame = BytesMut::with_capacity(5 + length);
    frame.put_u8(0);
    frame.put_u32(prefix);
    message
        .encode(&mut frame)
        .map_err(|e| BenchError::Load(format!("{path}: cannot encode the request: {e}")))?;
    Ok(frame.freeze())
}

/// Whether `headers` carry `grpc-status: 0`; an error for any other status.
/// (Not tonic's `Status::from_header_map`: it panics on a malformed
/// `grpc-status-details-bin`.)
fn check_status(path: &str, headers: &HeaderMap) -> Result<bool, BenchError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(false);
    };
    if code.as_bytes() == b"0" {
        return Ok(true);
    }
    let message = headers
        .get("grpc-message")
        .map(|m| {
            percent_encoding::percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let code = Code::from_bytes(code.as_bytes());
    Err(BenchError::Grpc(Status::new(
        code,
        format!("{path}: {message}"),
    )))
}

fn h2_error(path: &'static str) -> impl Fn(h2::Error) -> BenchError {
    move |e| BenchError::Load(format!("{path}: HTTP/2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_are_the_services_methods() {
        use crate::proto::status_update_manager::v1::status_update_manager_server::StatusUpdateManagerServer;
        use tonic::server::NamedService;
        let service =
            <StatusUpdateManagerServer<crate::service::grpc::GrpcService> as NamedService>::NAME;
        for (path, method) in [
            (UPDATE, "Update"),
            (ACKNOWLEDGE, "Acknowledge"),
            (SUBSCRIBE, "Subscribe"),
            (UPDATE_STREAM, "UpdateStream"),
            (ACKNOWLEDGE_STREAM, "AcknowledgeStream"),
        ] {
            assert_eq!(path, format!("/{service}/{method}"));
        }
    }

    #[tokio::test]
    async fn a_service_that_is_not_there_is_an_error_naming_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match GrpcCaller::connect(addr).await {
            Err(BenchError::Load(message)) => {
                assert!(message.contains(&addr.to_string()), "{message}")
            }
            other => panic!("expected a connection error, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_is_the_message_behind_its_length() {
        let request = crate::proto::status_update_manager::v1::AcknowledgeRequest {
            stream_id: "s".into(),
            status_uuid: vec![7; 16],
        };
        let framed = frame("/p", &request).unwrap();
        assert_eq!(framed[0], 0);
        let length = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
        assert_eq!(length, framed.len() - 5);
        assert_eq!(
            crate::proto::status_update_manager::v1::AcknowledgeRequest::decode(&framed[5..])
                .unwrap(),
            request
        );
    }

    #[test]
    fn a_status_other_than_ok_is_an_error_with_its_code_and_message() {
        let mut headers = HeaderMap::new();
        assert!(!check_status("/p", &headers).unwrap());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status("/p", &headers).unwrap());
        headers.insert("grpc-status", "9".parse().unwrap());
        headers.insert(
            "grpc-message",
            "ack%20uuid%20is%20not%20the%20head".parse().unwrap(),
        );
        match check_status("/p", &headers) {
            Err(BenchError::Grpc(status)) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert_eq!(status.message(), "/p: ack uuid is not the head");
            }
            other => panic!("expected a FAILED_PRECONDITION error, got {other:?}"),
        }
    }
}
