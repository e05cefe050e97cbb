//! Access control: who may call the `StatusUpdateManager` service (R8).
//!
//! The service listens on loopback by default. A listen address anyone else can reach needs
//! TLS (`server.tls_cert_file` + `server.tls_key_file`), a bearer token
//! (`server.auth_token_file`), or an explicit `server.allow_insecure = true`;
//! [`Settings::validate`](super::config::Settings::validate) refuses anything else before the
//! service starts.
//!
//! - [`BearerToken`]: the shared secret, read once at startup from its file (a trailing
//!   newline is dropped). It is never printed: its `Debug` is redacted and no error message
//!   contains it.
//! - [`RequireToken`]: the server-side tonic interceptor. It wraps the `StatusUpdateManager`
//!   service only, so that `grpc.health.v1.Health` and server reflection stay open to
//!   probes. A request whose `authorization` metadata is not `Bearer <token>` is
//!   UNAUTHENTICATED, with a message that says what was expected. The comparison takes the
//!   same time wherever the first differing byte is.
//! - [`AttachToken`]: the client-side interceptor that adds the header (the CLI's
//!   `--token-file`).
//! - [`TlsIdentity`]: the server's certificate chain and private key (PEM), read at startup;
//!   the service hands them to tonic's rustls support.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key that carries the token.
pub const AUTHORIZATION: &str = "authorization";

/// The authentication scheme: `authorization: Bearer <token>` (RFC 6750).
pub const SCHEME: &str = "Bearer";

/// Why a token file cannot be used.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read '{path}': {source}")]
    Unreadable {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty (or only whitespace).
    #[error("'{path}' holds no token (the file is empty)")]
    Empty {
        /// The token file.
        path: PathBuf,
    },
    /// The token has a character that cannot travel in a gRPC header.
    #[error(
        "the token in '{path}' has a space, a control or a non-ASCII character; \
         expected printable ASCII only"
    )]
    BadCharacters {
        /// The token file.
        path: PathBuf,
    },
}

/// A bearer token; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Reads the token from `path`: its whole content without trailing whitespace (the
    /// newline an editor or `echo` leaves), which must be non-empty printable ASCII.
    pub fn read(path: &Path) -> Result<BearerToken, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: path.into(),
            source,
        })?;
        let token = text.trim_end();
        if token.is_empty() {
            return Err(TokenError::Empty { path: path.into() });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacters { path: path.into() });
        }
        Ok(BearerToken(token.into()))
    }

    /// The value of the `authorization` header: `Bearer <token>`.
    pub fn header_value(&self) -> MetadataValue<Ascii> {
        format!("{SCHEME} {}", self.0)
            .parse()
            .expect("a token of printable ASCII is a valid header value")
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

/// `a == b` in time that depends on the lengths only: every byte pair is compared, and
/// the differences are folded together before the one branch at the end.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u64::try_from(a.len() ^ b.len()).unwrap_or(u64::MAX);
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(std::hint::black_box(x ^ y));
    }
    std::hint::black_box(diff) == 0
}

/// The server-side interceptor; see the module docs. Without a token it lets everything
/// through (loopback, TLS only, or `server.allow_insecure`).
#[derive(Debug, Clone, Default)]
pub struct RequireToken {
    token: Option<BearerToken>,
}

impl RequireToken {
    /// Requires `token` when given.
    pub fn new(token: Option<BearerToken>) -> Self {
        RequireToken { token }
    }

    fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let expected = "expected `authorization: Bearer <token>` with the token of the \
                        server's server.auth_token_file";
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "this server requires a bearer token and the request has no \
                 `authorization` metadata: {expected}"
            )));
        };
        let presented = value
            .as_encoded_bytes()
            .split_at_checked(SCHEME.len() + 1)
            .filter(|(scheme, _)| {
                scheme[..SCHEME.len()].eq_ignore_ascii_case(SCHEME.as_bytes())
                    && scheme[SCHEME.len()] == b' '
            })
            .map(|(_, token)| token);
        match presented {
            None => Err(Status::unauthenticated(format!(
                "the `authorization` metadata is not a bearer token: {expected}"
            ))),
            Some(presented) if token.matches(presented) => Ok(()),
            Some(_) => Err(Status::unauthenticated(format!(
                "the bearer token in `authorization` is not this server's: {expected}"
            ))),
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// The client-side interceptor: adds `authorization: Bearer <token>` to every request when
/// it has a token, and nothing otherwise.
#[derive(Clone, Default)]
pub struct AttachToken {
    header: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for AttachToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = self.header.as_ref().map(|_| "<redacted>");
        f.debug_struct("AttachToken")
            .field("header", &header)
            .finish()
    }
}

impl AttachToken {
    /// Sends `token` when given.
    pub fn new(token: Option<&BearerToken>) -> Self {
        AttachToken {
            header: token.map(BearerToken::header_value),
        }
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

/// The server's TLS certificate chain and private key, as PEM; see the module docs.
#[derive(Clone)]
pub struct TlsIdentity {
    /// `server.tls_cert_file`.
    pub cert_file: PathBuf,
    /// `server.tls_key_file`.
    pub key_file: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Why a TLS file cannot be used.
#[derive(Debug, Error)]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("cannot read '{path}': {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has no PEM block of the expected kind.
    #[error("'{path}' has no PEM block `-----BEGIN {what}`")]
    NotPem {
        /// The file.
        path: PathBuf,
        /// The block expected, e.g. `CERTIFICATE`.
        what: &'static str,
    },
}

impl TlsIdentity {
    /// Reads the certificate chain and the private key; each must hold a PEM block of its
    /// kind (whether they parse and match is checked when the server starts).
    pub fn read_cert(path: &Path) -> Result<Vec<u8>, TlsFileError> {
        read_pem(path, "CERTIFICATE", "CERTIFICATE")
    }

    /// Reads a private key file (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`).
    pub fn read_key(path: &Path) -> Result<Vec<u8>, TlsFileError> {
        read_pem(path, "PRIVATE KEY", "… PRIVATE KEY")
    }

    /// An identity from PEM bytes read with [`read_cert`](Self::read_cert) and
    /// [`read_key`](Self::read_key).
    pub fn new(cert_file: PathBuf, cert_pem: Vec<u8>, key_file: PathBuf, key_pem: Vec<u8>) -> Self {
        TlsIdentity {
            cert_file,
            key_file,
            cert_pem,
            key_pem,
        }
    }

    /// tonic's server TLS configuration for this identity.
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        tonic::transport::ServerTlsConfig::new().identity(identity)
    }
}

fn read_pem(path: &Path, marker: &str, what: &'static str) -> Result<Vec<u8>, TlsFileError> {
    let pem = std::fs::read(path).map_err(|source| TlsFileError::Unreadable {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&pem);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(marker));
    if !found {
        return Err(TlsFileError::NotPem {
            path: path.into(),
            what,
        });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn token_files() {
        let cases: [(&str, Option<&str>); 6] = [
            ("s3cret\n", Some("s3cret")),
            ("s3cret\r\n", Some("s3cret")),
            ("s3cret", Some("s3cret")),
            ("\n", None),
            ("", None),
            ("two words\n", None),
        ];
        for (i, (content, want)) in cases.into_iter().enumerate() {
            let (_dir, path) = token_file(content);
            match (BearerToken::read(&path), want) {
                (Ok(token), Some(want)) => assert_eq!(&*token.0, want, "case {i}"),
                (Err(_), None) => {}
                (got, want) => panic!("case {i}: {content:?}: got {got:?}, want {want:?}"),
            }
        }
        let err = BearerToken::read(Path::new("/no/such/token")).unwrap_err();
        assert!(err.to_string().contains("/no/such/token"), "{err}");
    }

    #[test]
    fn the_token_is_never_shown() {
        let (_dir, path) = token_file("hunter2\n");
        let token = BearerToken::read(&path).unwrap();
        assert!(!format!("{token:?}").contains("hunter2"));
        let attach = AttachToken::new(Some(&token));
        assert!(!format!("{attach:?}").contains("hunter2"));
        let require = RequireToken::new(Some(token));
        assert!(!format!("{require:?}").contains("hunter2"));
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        let cases: [(&[u8], &[u8], bool); 6] = [
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abc", b"ab", false),
            (b"ab", b"abc", false),
            (b"", b"", true),
            (b"abc", b"", false),
        ];
        for (i, (a, b, eq)) in cases.into_iter().enumerate() {
            assert_eq!(constant_time_eq(a, b), eq, "case {i}");
        }
    }

    #[test]
    fn require_token_checks_the_header() {
        let (_dir, path) = token_file("s3cret\n");
        let token = BearerToken::read(&path).unwrap();
        let mut require = RequireToken::new(Some(token));
        let with = |value: Option<&str>| {
            let mut request = Request::new(());
            if let Some(value) = value {
                request
                    .metadata_mut()
                    .insert(AUTHORIZATION, value.parse().unwrap());
            }
            request
        };
        let cases: [(Option<&str>, bool); 7] = [
            (Some("Bearer s3cret"), true),
            (Some("bearer s3cret"), true),
            (Some("Bearer s3cre"), false),
            (Some("Bearer s3cret2"), false),
            (Some("Basic s3cret"), false),
            (Some("s3cret"), false),
            (None, false),
        ];
        for (i, (value, ok)) in cases.into_iter().enumerate() {
            match require.call(with(value)) {
                Ok(_) => assert!(ok, "case {i}: {value:?} let through"),
                Err(status) => {
                    assert!(!ok, "case {i}: {value:?} refused: {status:?}");
                    assert_eq!(status.code(), tonic::Code::Unauthenticated, "case {i}");
                    assert!(!status.message().contains("s3cret"), "case {i}: {status:?}");
                    assert!(status.message().contains("Bearer <token>"), "case {i}");
                }
            }
        }
        let mut open = RequireToken::new(None);
        assert!(open.call(with(None)).is_ok(), "no token configured: open");
    }
}
