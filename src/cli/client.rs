//! What the client commands (`send`, `ack`, `watch`, `streams`, `stream`, `cleanup`,
//! `pause`, `resume`) share: the `--server URL` flag, the connection, the runtime they run
//! on, and [`RpcError`], the failure they report.
//!
//! A client command runs on a tokio current-thread runtime ([`block_on`]) and fails with an
//! [`RpcError`] whose text is the gRPC status code's name and the server's message
//! (`NOT_FOUND: cannot find stream s1 …`); `main` prints it after `error: ` and exits 1. A
//! server that cannot be reached is reported the same way, as `UNAVAILABLE: cannot connect
//! to URL: why`.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use crate::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;

/// `--server` when not given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How long connecting to the server may take before the command fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The generated gRPC client over one connection.
pub type Client = StatusUpdateManagerClient<Channel>;

/// The `--server URL` flag of every client command.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The service's gRPC address.
    #[arg(long, value_name = "URL", default_value = DEFAULT_SERVER, value_parser = parse_server_url)]
    pub server: String,
}

impl ServerArg {
    /// Connects to the server; see [`connect`].
    pub async fn connect(&self) -> Result<Client, RpcError> {
        connect(&self.server).await
    }
}

/// Accepts `http://HOST:PORT` and `https://HOST:PORT` (a path is ignored by gRPC).
pub fn parse_server_url(text: &str) -> Result<String, String> {
    let expected = "expected a URL like http://127.0.0.1:50051";
    let uri: Uri = text.parse().map_err(|e| format!("{e}; {expected}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(text.to_string()),
        _ => Err(expected.to_string()),
    }
}

/// Connects to `server`; a failure is `UNAVAILABLE: cannot connect to URL: why`.
pub async fn connect(server: &str) -> Result<Client, RpcError> {
    let unavailable = |why: &dyn std::error::Error| RpcError {
        code: Code::Unavailable,
        message: format!("cannot connect to {server}: {}", error_chain(why)),
    };
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| unavailable(&e))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| unavailable(&e))?;
    Ok(StatusUpdateManagerClient::new(channel))
}

/// Runs `future` to completion on a new tokio current-thread runtime.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    Ok(runtime.block_on(future))
}

/// A failed RPC: the status code and the server's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The gRPC status code.
    pub code: Code,
    /// What went wrong, as the server (or the transport) said it.
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl std::error::Error for RpcError {}

impl From<Status> for RpcError {
    fn from(status: Status) -> Self {
        let mut message = status.message().to_string();
        // A transport failure carries its cause as the source, not in the message.
        append_causes(&mut message, std::error::Error::source(&status));
        if message.is_empty() {
            message = status.code().description().to_string();
        }
        RpcError {
            code: status.code(),
            message,
        }
    }
}

/// The canonical name of a status code, as gRPC documents it (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `err` and its sources joined with `: ` (see [`append_causes`]).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    append_causes(&mut text, err.source());
    text
}

/// Appends `cause` and its sources to `text`, each after `: `, skipping one whose text is
/// already there (transport errors often repeat their source in their own message).
fn append_causes(text: &mut String, mut cause: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(err) = cause {
        let part = err.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = err.source();
    }
}

/// Formats a 16-byte uuid as `8-4-4-4-12`; other lengths as hex (the server never sends
/// them, but a reader should see what arrived).
pub fn format_uuid(bytes: &[u8]) -> String {
    match uuid::Uuid::from_slice(bytes) {
        Ok(uuid) => uuid.to_string(),
        Err(_) if bytes.is_empty() => "(none)".to_string(),
        Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// A value for a `key=value` line or a table cell: as is when it is one plain word, quoted
/// (Rust string syntax) when it is empty or holds spaces, quotes, `=` or control characters,
/// so that a line always splits on whitespace.
pub fn word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let cases = [
            ("http://127.0.0.1:50051", true),
            ("https://example.com:443", true),
            ("http://[::1]:50051", true),
            ("127.0.0.1:50051", false),
            ("ftp://host:1", false),
            ("http://", false),
            ("", false),
        ];
        for (i, (text, ok)) in cases.into_iter().enumerate() {
            assert_eq!(parse_server_url(text).is_ok(), ok, "case {i}: {text:?}");
        }
    }

    #[test]
    fn rpc_errors_name_the_code() {
        let err = RpcError::from(Status::not_found("cannot find stream s1"));
        assert_eq!(err.to_string(), "NOT_FOUND: cannot find stream s1");
        let err = RpcError::from(Status::new(Code::Aborted, ""));
        assert!(err.to_string().starts_with("ABORTED: "), "{err}");
        assert!(
            err.message.len() > 1,
            "an empty message is filled in: {err}"
        );
    }

    /// An error with a fixed text and an optional source.
    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);

    impl fmt::Display for Link {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Link {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn causes_are_named_once() {
        let broken = Link("broken pipe", None);
        let body = Link("reading a body", Some(Box::new(broken)));
        let h2 = Link("h2 error: reading a body", Some(Box::new(body)));
        assert_eq!(error_chain(&h2), "h2 error: reading a body: broken pipe");
        let mut text = String::new();
        append_causes(&mut text, Some(&h2));
        assert_eq!(text, "h2 error: reading a body: broken pipe");
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        // A port that was just free: nothing listens there any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let url = format!("http://{addr}");
        let err = connect(&url).await.unwrap_err();
        assert_eq!(err.code, Code::Unavailable);
        assert!(
            err.message
                .starts_with(&format!("cannot connect to {url}: ")),
            "{err}"
        );
    }

    #[test]
    fn words_split_on_whitespace() {
        let cases = [
            ("s1", "s1"),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("k=v", "\"k=v\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
        ];
        for (i, (value, shown)) in cases.into_iter().enumerate() {
            assert_eq!(word(value), shown, "case {i}");
        }
        assert_eq!(
            format_uuid(&[0x11; 16]),
            "11111111-1111-1111-1111-111111111111"
        );
        assert_eq!(format_uuid(&[0xab, 0x01]), "ab01");
    }
}
