//! What the client commands (`send`, `ack`, `watch`, `streams`, `stream`, `cleanup`,
//! `pause`, `resume`) share: the `--server URL`, `--token-file FILE` and `--ca-file FILE`
//! flags, the connection, the runtime they run on, and [`RpcError`], the failure they report.
//!
//! `--token-file` (or `SUM_TOKEN_FILE`) adds `authorization: Bearer <token>` to every call
//! (the server's `server.auth_token_file`); the file is read once, when the arguments are
//! parsed, and an unreadable or empty one is a usage error. An `https://` server is reached
//! over TLS (rustls) and must present a certificate signed by the CA of `--ca-file` (or
//! `SUM_CA_FILE`; a self-signed server certificate is its own CA) for the URL's host name:
//! this build has no system root store (tonic's `tls-ring` feature only), so `https://`
//! without `--ca-file` is refused, as is `--ca-file` with a plaintext `http://` URL.
//!
//! A client command runs on a tokio current-thread runtime ([`block_on`]) and fails with an
//! [`RpcError`] whose text is the gRPC status code's name and the server's message
//! (`NOT_FOUND: cannot find stream s1 …`); `main` prints it after `error: ` and exits 1. A
//! server that cannot be reached is reported the same way, as `UNAVAILABLE: cannot connect
//! to URL: why`.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::{Code, Status};

use crate::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use crate::service::auth::{AttachToken, BearerToken, TlsIdentity};

/// `--server` when not given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How long connecting to the server may take before the command fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response a client command reads (tonic's default is 4 MiB). A ListStreams
/// page stays under 4 MiB unless one stream alone is larger; a GetStream carries the
/// stream's pending statuses with their payloads.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The generated gRPC client over one connection, adding the bearer token (if any) to
/// every call.
pub type Client = StatusUpdateManagerClient<InterceptedService<Channel, AttachToken>>;

/// The `--server URL`, `--token-file FILE` and `--ca-file FILE` flags of every client
/// command.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The service's gRPC address: http://HOST:PORT, or https://HOST:PORT for TLS.
    #[arg(long, value_name = "URL", default_value = DEFAULT_SERVER, value_parser = parse_server_url)]
    pub server: String,
    /// A file holding the server's bearer token (its server.auth_token_file).
    #[arg(long = "token-file", value_name = "FILE", env = "SUM_TOKEN_FILE", value_parser = parse_token_file)]
    pub token: Option<BearerToken>,
    /// A PEM file of the CA (or the self-signed certificate) to trust for an https:// server.
    #[arg(long = "ca-file", value_name = "FILE", env = "SUM_CA_FILE", value_parser = parse_ca_file)]
    pub ca: Option<Certificate>,
}

impl ServerArg {
    /// Connects to the server; see [`connect_with`].
    pub async fn connect(&self) -> Result<Client, RpcError> {
        connect_with(&self.server, self.token.as_ref(), self.ca.as_ref()).await
    }
}

/// Reads `--token-file`; see [`BearerToken::read`].
pub fn parse_token_file(path: &str) -> Result<BearerToken, String> {
    BearerToken::read(Path::new(path)).map_err(|e| e.to_string())
}

/// Reads `--ca-file`: a file with at least one PEM `CERTIFICATE` block.
pub fn parse_ca_file(path: &str) -> Result<Certificate, String> {
    TlsIdentity::read_cert(Path::new(path))
        .map(Certificate::from_pem)
        .map_err(|e| e.to_string())
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

/// Connects to `server` with no token and, for `https://`, no CA: see [`connect_with`].
pub async fn connect(server: &str) -> Result<Client, RpcError> {
    connect_with(server, None, None).await
}

/// Connects to `server`, sending `token` with every call; an `https://` server must present
/// a certificate that `ca` signed (see the module docs). A failure is
/// `UNAVAILABLE: cannot connect to URL: why`.
pub async fn connect_with(
    server: &str,
    token: Option<&BearerToken>,
    ca: Option<&Certificate>,
) -> Result<Client, RpcError> {
    let unavailable = |why: &dyn std::error::Error| RpcError {
        code: Code::Unavailable,
        message: format!("cannot connect to {server}: {}", error_chain(why)),
    };
    let refused = |why: &str| RpcError {
        code: Code::Unavailable,
        message: format!("cannot connect to {server}: {why}"),
    };
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| unavailable(&e))?
        .connect_timeout(CONNECT_TIMEOUT);
    let https = endpoint.uri().scheme_str() == Some("https");
    match (https, ca) {
        (true, Some(ca)) => {
            let tls = ClientTlsConfig::new().ca_certificate(ca.clone());
            endpoint = endpoint.tls_config(tls).map_err(|e| unavailable(&e))?;
        }
        (true, None) => {
            return Err(refused(
                "an https:// server needs --ca-file FILE, the CA that signed its certificate \
                 (this build has no system root store)",
            ))
        }
        (false, Some(_)) => {
            return Err(refused(
                "--ca-file is for an https:// server, and this URL is plaintext http://",
            ))
        }
        (false, None) => {}
    }
    let channel = endpoint.connect().await.map_err(|e| unavailable(&e))?;
    Ok(
        StatusUpdateManagerClient::with_interceptor(channel, AttachToken::new(token))
            .max_decoding_message_size(MAX_RESPONSE_BYTES),
    )
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

    #[tokio::test]
    async fn https_needs_a_ca_and_a_ca_needs_https() {
        let ca = Certificate::from_pem("-----BEGIN CERTIFICATE-----\n");
        let cases: [(&str, Option<&Certificate>, &str); 2] = [
            ("https://127.0.0.1:1", None, "needs --ca-file"),
            ("http://127.0.0.1:1", Some(&ca), "plaintext"),
        ];
        for (i, (url, ca, why)) in cases.into_iter().enumerate() {
            let err = connect_with(url, None, ca).await.unwrap_err();
            assert_eq!(err.code, Code::Unavailable, "case {i}");
            assert!(err.message.contains(why), "case {i}: {err}");
        }
    }

    #[test]
    fn token_and_ca_files_are_read_when_parsed() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let parse = |args: &[&str]| {
            let argv = ["status-update-manager", "streams"].iter().chain(args);
            crate::cli::Cli::try_parse_from(argv)
        };
        let token = token.to_str().unwrap();
        let Ok(crate::cli::Cli {
            command: crate::cli::Command::Streams(args),
        }) = parse(&["--token-file", token])
        else {
            panic!("--token-file {token} did not parse");
        };
        assert!(args.server.token.is_some() && args.server.ca.is_none());
        for (i, args) in [
            ["--token-file", empty.to_str().unwrap()],
            ["--token-file", "/no/such/token"],
            ["--ca-file", token],
        ]
        .iter()
        .enumerate()
        {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "case {i}: {err}");
        }
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
