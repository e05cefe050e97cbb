//! `[upstream]`: where the service's forwards go, and its checks.
//!
//! `upstream.kind` is `subscriber` (the default: one gRPC `Subscribe`
//! client, [`super::hub`]) or `jetstream` (each head published into NATS
//! JetStream, [`super::jetstream`]), configured by `[upstream.jetstream]`.
//! `UpstreamSettings::validate` checks every key of both sections, one
//! line per bad key as the rest of the configuration does, and reads the
//! token file once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::config::parse_duration;

/// Most replicas a JetStream stream may have.
pub const MAX_REPLICAS: usize = 5;

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `subscriber` or `jetstream`.
    pub kind: String,
    /// `[upstream.jetstream]`, read only with `kind = "jetstream"` (but
    /// checked either way).
    pub jetstream: JetStreamSettings,
}

/// `[upstream.jetstream]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSettings {
    /// NATS server URLs: a list, or one comma-separated string.
    #[serde(deserialize_with = "server_list")]
    pub servers: Vec<String>,
    /// The JetStream stream's name.
    pub stream: String,
    /// The first token(s) of every subject.
    pub subject_prefix: String,
    /// This node's subject token (encoded); `""` = the host name.
    pub node: String,
    /// Replicas of a stream created here.
    #[serde(deserialize_with = "super::config::whole::number")]
    pub replicas: usize,
    /// Create the stream when it is missing.
    pub create_stream: bool,
    /// How long a publish waits for its PubAck, e.g. `"5s"`.
    pub publish_timeout: String,
    /// A NATS credentials file; `""` = none.
    pub creds_file: PathBuf,
    /// A file holding a NATS token; `""` = none.
    pub token_file: PathBuf,
    /// A PEM CA for `tls://` servers; `""` = the system's roots.
    pub ca_file: PathBuf,
}

/// `servers` as a TOML list, or one string of comma-separated URLs (how an
/// environment variable gives it).
fn server_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(list) => list,
        OneOrMany::One(text) => text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

/// The validated upstream.
#[derive(Debug, Clone, Default)]
pub enum Upstream {
    /// One gRPC subscriber (`upstream.kind = "subscriber"`).
    #[default]
    Subscriber,
    /// NATS JetStream (`upstream.kind = "jetstream"`).
    JetStream(JetStreamConfig),
}

impl Upstream {
    /// `upstream.kind`'s value.
    pub fn kind(&self) -> &'static str {
        match self {
            Upstream::Subscriber => "subscriber",
            Upstream::JetStream(_) => "jetstream",
        }
    }
}

/// The validated `[upstream.jetstream]`.
#[derive(Clone)]
pub struct JetStreamConfig {
    /// Server URLs, each one a NATS server address.
    pub servers: Vec<String>,
    /// The stream's name.
    pub stream: String,
    /// The subjects' first token(s).
    pub subject_prefix: String,
    /// This node's name (not encoded; [`super::jetstream::subject_token`]
    /// makes it one token).
    pub node: String,
    /// Replicas of a stream created here.
    pub replicas: usize,
    /// Create the stream when missing.
    pub create_stream: bool,
    /// The PubAck's deadline.
    pub publish_timeout: Duration,
    /// A NATS credentials file.
    pub creds_file: Option<PathBuf>,
    /// The token of `token_file`, read at start.
    pub token: Option<String>,
    /// A PEM CA to trust.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("servers", &self.servers)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("node", &self.node)
            .field("replicas", &self.replicas)
            .field("create_stream", &self.create_stream)
            .field("publish_timeout", &self.publish_timeout)
            .field("creds_file", &self.creds_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl JetStreamConfig {
    /// The defaults of `config/default.toml` with `servers` and `node`
    /// (tests and the bench).
    pub fn new(servers: Vec<String>, node: &str) -> Self {
        JetStreamConfig {
            servers,
            stream: "SUM".into(),
            subject_prefix: "sum".into(),
            node: node.into(),
            replicas: 1,
            create_stream: true,
            publish_timeout: Duration::from_secs(5),
            creds_file: None,
            token: None,
            ca_file: None,
        }
    }
}

/// The host name (`gethostname`), if there is one.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Whether `name` can name a JetStream stream: not empty, no whitespace,
/// `.`, `*`, `>`, path separators or control characters, at most 255 bytes.
fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

/// Whether `prefix` is one or more literal subject tokens: split on `.`,
/// none empty, none holding whitespace, control characters, `*` or `>`.
fn valid_subject_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '*' | '>'))
        })
}

/// Reads a token file: its content without surrounding whitespace, not
/// empty, printable ASCII.
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("it is empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it holds characters other than printable ASCII".into());
    }
    Ok(token.to_string())
}

/// `""` as `None`.
fn optional(path: &Path) -> Option<PathBuf> {
    (!path.as_os_str().is_empty()).then(|| path.to_path_buf())
}

impl UpstreamSettings {
    /// Checks every key with `check` (see `Settings::validate`): the
    /// upstream, when every key is good.
    pub(super) fn validate(
        &self,
        check: &mut impl FnMut(&'static str, String, &str, bool),
    ) -> Option<Upstream> {
        let kind_ok = matches!(self.kind.as_str(), "subscriber" | "jetstream");
        check(
            "upstream.kind",
            self.kind.clone(),
            "one of subscriber, jetstream",
            kind_ok,
        );
        let jetstream = self.jetstream.validate(check);
        match (self.kind.as_str(), jetstream) {
            ("subscriber", Some(_)) => Some(Upstream::Subscriber),
            ("jetstream", Some(config)) => Some(Upstream::JetStream(config)),
            _ => None,
        }
    }
}

impl JetStreamSettings {
    fn validate(
        &self,
        check: &mut impl FnMut(&'static str, String, &str, bool),
    ) -> Option<JetStreamConfig> {
        let mut ok = true;
        let mut check = |key, value, allowed: &str, good: bool| {
            ok &= good;
            check(key, value, allowed, good);
        };
        let shown = |path: &Path| path.display().to_string();
        check(
            "upstream.jetstream.servers",
            self.servers.join(","),
            "one NATS server URL or more, such as [\"nats://127.0.0.1:4222\"] (in the environment, comma-separated)",
            !self.servers.is_empty(),
        );
        for server in &self.servers {
            if let Err(err) = async_nats::ServerAddr::from_str(server) {
                check(
                    "upstream.jetstream.servers",
                    server.clone(),
                    &format!("a NATS server URL such as nats://127.0.0.1:4222 ({err})"),
                    false,
                );
            }
        }
        check(
            "upstream.jetstream.stream",
            self.stream.clone(),
            "a JetStream stream name: not empty, at most 255 bytes, without whitespace, '.', '*', '>', '/' or '\\'",
            valid_stream_name(&self.stream),
        );
        check(
            "upstream.jetstream.subject_prefix",
            self.subject_prefix.clone(),
            "one or more subject tokens separated by '.', such as \"sum\" or \"acme.sum\": none empty, without whitespace, '*' or '>'",
            valid_subject_prefix(&self.subject_prefix),
        );
        let node = if self.node.is_empty() {
            host_name()
        } else {
            Some(self.node.clone())
        };
        check(
            "upstream.jetstream.node",
            self.node.clone(),
            "this node's name (\"\" = the host name, which could not be read here)",
            node.is_some(),
        );
        check(
            "upstream.jetstream.replicas",
            self.replicas.to_string(),
            &format!("a count from 1 to {MAX_REPLICAS}"),
            (1..=MAX_REPLICAS).contains(&self.replicas),
        );
        let publish_timeout = parse_duration(&self.publish_timeout);
        check(
            "upstream.jetstream.publish_timeout",
            self.publish_timeout.clone(),
            "a duration above zero such as \"5s\" or \"500ms\"",
            publish_timeout.is_some(),
        );
        let creds_file = optional(&self.creds_file);
        if let Some(path) = &creds_file {
            let readable = std::fs::File::open(path).map(|_| ());
            check(
                "upstream.jetstream.creds_file",
                shown(path),
                &format!(
                    "\"\" (none) or a readable NATS credentials file ({})",
                    readable
                        .as_ref()
                        .map_or_else(|e| e.to_string(), |_| String::new())
                ),
                readable.is_ok(),
            );
        }
        let token = optional(&self.token_file).map(|path| read_token(&path));
        if let Some(Err(err)) = &token {
            check(
                "upstream.jetstream.token_file",
                shown(&self.token_file),
                &format!("\"\" (no token) or a readable file holding the token ({err})"),
                false,
            );
        }
        check(
            "upstream.jetstream.token_file",
            shown(&self.token_file),
            "\"\", since upstream.jetstream.creds_file is set (one of them at most)",
            creds_file.is_none() || self.token_file.as_os_str().is_empty(),
        );
        let ca_file = optional(&self.ca_file);
        if let Some(path) = &ca_file {
            let pem = std::fs::read_to_string(path);
            let good = pem.as_ref().is_ok_and(|p| p.contains("BEGIN CERTIFICATE"));
            check(
                "upstream.jetstream.ca_file",
                shown(path),
                &match pem {
                    Err(e) => format!("\"\" (none) or a readable PEM CA certificate file ({e})"),
                    Ok(_) => "\"\" (none) or a PEM file with a CERTIFICATE block".to_string(),
                },
                good,
            );
        }
        let (Some(node), Some(publish_timeout)) = (node, publish_timeout) else {
            return None;
        };
        ok.then(|| JetStreamConfig {
            servers: self.servers.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            node,
            replicas: self.replicas,
            create_stream: self.create_stream,
            publish_timeout,
            creds_file,
            token: token.and_then(Result::ok),
            ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::{ConfigError, Overrides, ServiceConfig, Settings};

    fn validated(pairs: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with_env(&Overrides::default(), Some(env))?.validate()
    }

    #[test]
    fn the_default_upstream_is_the_subscriber_and_the_jetstream_keys_have_their_defaults() {
        let config = validated(&[]).unwrap();
        assert!(matches!(config.upstream, Upstream::Subscriber));
        let config = validated(&[("SUM__UPSTREAM__KIND", "jetstream")]).unwrap();
        let Upstream::JetStream(js) = config.upstream else {
            panic!("expected the jetstream upstream")
        };
        assert_eq!(js.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            (js.stream.as_str(), js.subject_prefix.as_str()),
            ("SUM", "sum")
        );
        assert_eq!(Some(js.node), host_name(), "node defaults to the host name");
        assert_eq!(js.replicas, 1);
        assert!(js.create_stream);
        assert_eq!(js.publish_timeout, Duration::from_secs(5));
        assert!(js.creds_file.is_none() && js.token.is_none() && js.ca_file.is_none());
    }

    #[test]
    fn servers_can_be_one_comma_separated_string() {
        let config = validated(&[
            ("SUM__UPSTREAM__KIND", "jetstream"),
            (
                "SUM__UPSTREAM__JETSTREAM__SERVERS",
                "nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224",
            ),
            ("SUM__UPSTREAM__JETSTREAM__NODE", "node.a"),
        ])
        .unwrap();
        let Upstream::JetStream(js) = config.upstream else {
            panic!("expected the jetstream upstream")
        };
        assert_eq!(
            js.servers,
            [
                "nats://127.0.0.1:4222",
                "nats://127.0.0.1:4223",
                "127.0.0.1:4224"
            ]
        );
        assert_eq!(js.node, "node.a");
    }

    #[test]
    fn every_bad_upstream_key_is_reported_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty-token");
        std::fs::write(&empty, "\n").unwrap();
        let empty = empty.display().to_string();
        let err = validated(&[
            ("SUM__UPSTREAM__KIND", "kafka"),
            ("SUM__UPSTREAM__JETSTREAM__SERVERS", "http://x:1"),
            ("SUM__UPSTREAM__JETSTREAM__STREAM", "a.b"),
            ("SUM__UPSTREAM__JETSTREAM__SUBJECT_PREFIX", "sum.>"),
            ("SUM__UPSTREAM__JETSTREAM__REPLICAS", "7"),
            ("SUM__UPSTREAM__JETSTREAM__PUBLISH_TIMEOUT", "0s"),
            ("SUM__UPSTREAM__JETSTREAM__TOKEN_FILE", &empty),
            ("SUM__UPSTREAM__JETSTREAM__CA_FILE", "/no/such/ca.pem"),
        ])
        .unwrap_err()
        .to_string();
        let lines: Vec<&str> = err.lines().collect();
        let keys = [
            "upstream.kind = \"kafka\": expected one of subscriber, jetstream",
            "upstream.jetstream.servers = \"http://x:1\"",
            "upstream.jetstream.stream = \"a.b\"",
            "upstream.jetstream.subject_prefix = \"sum.>\"",
            "upstream.jetstream.replicas = \"7\": expected a count from 1 to 5",
            "upstream.jetstream.publish_timeout = \"0s\"",
            "upstream.jetstream.token_file",
            "upstream.jetstream.ca_file = \"/no/such/ca.pem\"",
        ];
        assert_eq!(lines.len(), keys.len(), "{err}");
        for (line, key) in lines.iter().zip(keys) {
            assert!(line.contains(key), "expected {key} in {line}");
            assert!(line.starts_with("invalid configuration: "), "{line}");
        }
    }

    #[test]
    fn creds_and_token_files_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let creds = dir.path().join("user.creds");
        std::fs::write(&creds, "creds").unwrap();
        let config = validated(&[
            ("SUM__UPSTREAM__KIND", "jetstream"),
            (
                "SUM__UPSTREAM__JETSTREAM__TOKEN_FILE",
                token.to_str().unwrap(),
            ),
        ])
        .unwrap();
        let Upstream::JetStream(js) = config.upstream else {
            panic!("expected the jetstream upstream")
        };
        assert_eq!(js.token.as_deref(), Some("s3cret"));
        assert!(
            !format!("{js:?}").contains("s3cret"),
            "the token is redacted"
        );
        let err = validated(&[
            (
                "SUM__UPSTREAM__JETSTREAM__TOKEN_FILE",
                token.to_str().unwrap(),
            ),
            (
                "SUM__UPSTREAM__JETSTREAM__CREDS_FILE",
                creds.to_str().unwrap(),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("upstream.jetstream.token_file") && err.contains("one of them at most"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn a_stream_name_and_a_prefix_are_what_jetstream_takes() {
        for good in ["SUM", "sum-1", "a_b"] {
            assert!(valid_stream_name(good), "{good}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b"] {
            assert!(!valid_stream_name(bad), "{bad:?}");
        }
        for good in ["sum", "acme.sum", "a-b.c_d"] {
            assert!(valid_subject_prefix(good), "{good}");
        }
        for bad in ["", ".sum", "sum.", "a..b", "sum.*", "s m", "sum.>"] {
            assert!(!valid_subject_prefix(bad), "{bad:?}");
        }
    }
}
