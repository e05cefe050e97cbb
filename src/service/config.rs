//! The service's configuration: layered loading and validation.
//!
//! Layers, later ones win: `config/default.toml` (compiled in), the file
//! given with `--config`, environment variables `SUM__SECTION__KEY` (e.g.
//! `SUM__STORE__SYNC=always`), then the `--data-dir` / `--listen` flags.
//! [`Settings`] is the raw, deserialized form (durations as strings, as in
//! the file); [`Settings::validate`] checks every key and turns it into a
//! typed [`ServiceConfig`], reporting every bad key on its own line with the
//! key, the value and what is allowed. Nothing starts before it passed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use super::accept::Http2Keepalive;
use super::auth::{BearerToken, TlsIdentity};
pub use super::inflight::DEFAULT_REQUEST_BYTES_IN_FLIGHT;
pub use super::upstream::{JetStreamConfig, Upstream, UpstreamSettings};
use crate::actors::manager::ManagerConfig;
use crate::store::SyncPolicy;
use crate::stream::RetryPolicy;

/// The compiled-in defaults (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "SUM";

/// Largest `server.max_payload_bytes`: gRPC messages are capped at 4 MiB.
pub const MAX_PAYLOAD_LIMIT: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Largest `limits.max_open_files`: Linux's default ceiling on
/// `ulimit -n` (`fs.nr_open`).
pub const MAX_OPEN_FILES_LIMIT: usize = crate::store::files::DEFAULT_NR_OPEN as usize;

/// How long a graceful stop waits, once the server stopped accepting, for
/// the agents' calls to end; then it closes their connections. A client that
/// keeps its connection alive but stops reading its answers (or its
/// `Subscribe` stream) would otherwise hold the stop for ever: the call's
/// answers wait for room in HTTP/2 flow control. Closing loses nothing: a
/// request the service took is kept whether or not its answer got out, and
/// one sent again is a duplicate.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A layer could not be read or parsed (unknown key, wrong type, bad file).
    #[error("configuration: {0}")]
    Load(String),
    /// Keys with values that are not allowed, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<BadKey>),
}

/// One key with a value that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    /// The key, e.g. `store.sync`.
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

impl fmt::Display for BadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: {} = {:?}: expected {}",
            self.key, self.value, self.allowed
        )
    }
}

/// Integer keys read strictly: a whole number that fits the key's type,
/// written as a TOML integer or (environment, flags) in decimal digits. The
/// config crate on its own rounds a fraction (`1.5` → 2), clamps a number
/// too large for the type to its largest value (`99999999999999999999` →
/// `u64::MAX`) and reads `true` or `yes` as 1; each of these is an error
/// here, naming the key and what it holds.
pub(super) mod whole {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, Unexpected, Visitor};

    /// `#[serde(deserialize_with = "whole::number")]`.
    pub(in crate::service) fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64> + Bounded,
    {
        deserializer.deserialize_any(Whole(PhantomData))
    }

    /// The largest value of an integer key's type, for the error message.
    pub(in crate::service) trait Bounded {
        /// `MAX` as a `u64`.
        const LARGEST: u64;
    }

    impl Bounded for u32 {
        const LARGEST: u64 = u32::MAX as u64;
    }

    impl Bounded for u64 {
        const LARGEST: u64 = u64::MAX;
    }

    impl Bounded for usize {
        const LARGEST: u64 = usize::MAX as u64;
    }

    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<u64> + Bounded> Whole<T> {
        fn fit<E: de::Error>(&self, value: u64) -> Result<T, E> {
            T::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), self))
        }
    }

    impl<'de, T: TryFrom<u64> + Bounded> Visitor<'de> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number from 0 to {}", T::LARGEST)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
            self.fit(value)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
            let value = u64::try_from(value)
                .map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))?;
            self.fit(value)
        }

        fn visit_u128<E: de::Error>(self, value: u128) -> Result<T, E> {
            let value = u64::try_from(value)
                .map_err(|_| E::invalid_value(Unexpected::Other("a number past u64"), &self))?;
            self.fit(value)
        }

        fn visit_i128<E: de::Error>(self, value: i128) -> Result<T, E> {
            let value = u64::try_from(value)
                .map_err(|_| E::invalid_value(Unexpected::Other("a number out of range"), &self))?;
            self.fit(value)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
            let digits = value.trim();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(E::invalid_value(Unexpected::Str(value), &self));
            }
            // Only digits: a failure is a number past u64.
            let value = digits
                .parse::<u64>()
                .map_err(|_| E::invalid_value(Unexpected::Str(value), &self))?;
            self.fit(value)
        }
    }
}

/// The settings as written in the layers (see the module docs).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub retry: RetrySettings,
    pub recovery: RecoverySettings,
    pub limits: LimitSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub upstream: UpstreamSettings,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// gRPC listen address.
    pub listen: String,
    /// Largest `Status.payload`, in bytes.
    #[serde(deserialize_with = "whole::number")]
    pub max_payload_bytes: usize,
    /// A file holding the bearer token every `StatusUpdateManager` call must carry; empty = none.
    pub auth_token_file: PathBuf,
    /// Listen on a non-loopback address without TLS or a token.
    pub allow_insecure: bool,
    /// PEM certificate chain served over TLS; empty = plaintext.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Where stream files live.
    pub data_dir: PathBuf,
    /// `none`, `always` or `batch`.
    pub sync: String,
    /// Delete a stream's files once it ends.
    pub remove_finished: bool,
    /// Commit journal bytes after which it is checkpointed.
    #[serde(deserialize_with = "whole::number")]
    pub journal_checkpoint_bytes: u64,
}

/// `[retry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First gap, e.g. `"10s"`.
    pub min: String,
    /// Largest gap, e.g. `"10m"`.
    pub max: String,
    /// Relative spread in `[0, 1)`.
    pub jitter: f64,
    /// Warn once when a head was re-sent more than this many times; 0 = never.
    #[serde(deserialize_with = "whole::number")]
    pub warn_after: u32,
}

/// `[recovery]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySettings {
    /// Fail startup on a corrupt record.
    pub strict: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Most pending updates per stream.
    #[serde(deserialize_with = "whole::number")]
    pub max_pending_per_stream: usize,
    /// Most streams in memory.
    #[serde(deserialize_with = "whole::number")]
    pub max_streams: usize,
    /// Most stream files open at once.
    #[serde(deserialize_with = "whole::number")]
    pub max_open_files: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Prometheus listen address; empty = off.
    pub listen: String,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter such as `info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

/// Flags that override every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration the service runs with.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Largest `Status.payload`.
    pub max_payload_bytes: usize,
    /// The bearer token the `StatusUpdateManager` service requires (`server.auth_token_file`).
    pub auth_token: Option<BearerToken>,
    /// The TLS identity (`server.tls_cert_file`, `server.tls_key_file`); `None` = plaintext.
    pub tls: Option<TlsIdentity>,
    /// Where stream files live.
    pub data_dir: PathBuf,
    /// When updates and acks are answered.
    pub sync: SyncPolicy,
    /// Delete finished streams' files.
    pub remove_finished: bool,
    /// Commit journal bytes after which it is checkpointed (`store.journal_checkpoint_bytes`).
    pub journal_checkpoint_bytes: u64,
    /// The retry schedule.
    pub retry: RetryPolicy,
    /// Strict recovery at startup.
    pub strict_recovery: bool,
    /// Most pending updates per stream.
    pub max_pending_per_stream: usize,
    /// Most streams.
    pub max_streams: usize,
    /// Most stream files open at once.
    pub max_open_files: usize,
    /// Prometheus listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// How the agents' connections are pinged. Not a config key: always
    /// [`Http2Keepalive::default`] from [`Settings::validate`] (tests
    /// shorten it).
    pub http2_keepalive: Http2Keepalive,
    /// Request bytes the gRPC server holds at once while receiving them
    /// ([`super::inflight`]). Not a config key: always
    /// [`DEFAULT_REQUEST_BYTES_IN_FLIGHT`] from [`Settings::validate`]
    /// (tests lower it).
    pub request_bytes_in_flight: usize,
    /// How long a graceful stop waits for open calls before it closes their
    /// connections. Not a config key: always [`DRAIN_TIMEOUT`] from
    /// [`Settings::validate`] (tests shorten it).
    pub drain_timeout: Duration,
    /// `tracing` filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Storage faults and handler panics to inject into the manager's
    /// streams (tests; no configuration key).
    pub faults: Option<crate::store::FaultPlan>,
    /// Where forwards go (`[upstream]`).
    pub upstream: Upstream,
}

/// Names where a refused value came from ("in the environment", "in
/// c.toml"). The config crate does that itself for a value it could not
/// convert, but not for one that a key's own deserializer refused
/// ([`whole::number`]): its error names only the key, and the key's value
/// in `layers` knows its source.
fn with_origin(err: config::ConfigError, layers: &config::Config) -> config::ConfigError {
    match err {
        config::ConfigError::At {
            error,
            origin: None,
            key: Some(key),
        } => config::ConfigError::At {
            error,
            origin: origin_of(&layers.cache, &key),
            key: Some(key),
        },
        other => other,
    }
}

/// The source of the value at dotted `key` under `root`. (Not
/// `Config::get`: the value it returns is a copy that lost its origin.)
fn origin_of(root: &config::Value, key: &str) -> Option<String> {
    let mut value = root;
    for segment in key.split('.') {
        let config::ValueKind::Table(table) = &value.kind else {
            return None;
        };
        value = table.get(segment)?;
    }
    value.origin().map(str::to_owned)
}

impl Settings {
    /// Loads the layers with the process environment.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(overrides, None)
    }

    /// Loads the layers; `env` replaces the process environment when given
    /// (for tests).
    pub fn load_with_env(
        overrides: &Overrides,
        env: Option<config::Map<String, String>>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = &overrides.config_file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file '{}' does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env),
        );
        let load = |e: config::ConfigError| ConfigError::Load(e.to_string());
        if let Some(dir) = &overrides.data_dir {
            builder = builder
                .set_override("store.data_dir", dir.to_string_lossy().into_owned())
                .map_err(load)?;
        }
        if let Some(listen) = &overrides.listen {
            builder = builder
                .set_override("server.listen", listen.clone())
                .map_err(load)?;
        }
        let layers = builder.build().map_err(load)?;
        layers
            .clone()
            .try_deserialize()
            .map_err(|e| load(with_origin(e, &layers)))
    }

    /// Checks every key; all problems are reported at once.
    pub fn validate(&self) -> Result<ServiceConfig, ConfigError> {
        let mut bad = Vec::new();
        let mut check = |key: &'static str, value: String, allowed: &str, ok: bool| {
            if !ok {
                bad.push(BadKey {
                    key,
                    value,
                    allowed: allowed.to_string(),
                });
            }
        };
        let listen = self.server.listen.parse::<SocketAddr>();
        check(
            "server.listen",
            self.server.listen.clone(),
            "an address like 127.0.0.1:50051",
            listen.is_ok(),
        );
        let payload = self.server.max_payload_bytes;
        check(
            "server.max_payload_bytes",
            payload.to_string(),
            &format!("a size from 1 to {MAX_PAYLOAD_LIMIT}"),
            (1..=MAX_PAYLOAD_LIMIT).contains(&payload),
        );
        let (auth_token, tls) = self.server.access(&listen, &mut check);
        check(
            "store.data_dir",
            self.store.data_dir.display().to_string(),
            "a directory path",
            !self.store.data_dir.as_os_str().is_empty(),
        );
        let checkpoint_bytes = self.store.journal_checkpoint_bytes;
        let max_checkpoint = crate::store::journal::MAX_CHECKPOINT_BYTES;
        check(
            "store.journal_checkpoint_bytes",
            checkpoint_bytes.to_string(),
            &format!(
                "a size in bytes from 1 to {max_checkpoint} (replay reads the journal into memory)"
            ),
            (1..=max_checkpoint).contains(&checkpoint_bytes),
        );
        let sync = self.store.sync.parse::<SyncPolicy>();
        check(
            "store.sync",
            self.store.sync.clone(),
            "one of none, always, batch",
            sync.is_ok(),
        );
        let min = parse_duration(&self.retry.min);
        let max = parse_duration(&self.retry.max);
        check(
            "retry.min",
            self.retry.min.clone(),
            "a duration above zero such as \"10s\" or \"250ms\"",
            min.is_some(),
        );
        let max_ok = match (min, max) {
            (Some(min), Some(max)) => max >= min,
            (None, Some(_)) => true,
            _ => false,
        };
        check(
            "retry.max",
            self.retry.max.clone(),
            "a duration such as \"10m\", not below retry.min",
            max_ok,
        );
        let jitter = self.retry.jitter;
        check(
            "retry.jitter",
            jitter.to_string(),
            "a number from 0.0 up to (not including) 1.0",
            (0.0..1.0).contains(&jitter),
        );
        let limits = &self.limits;
        check(
            "limits.max_pending_per_stream",
            limits.max_pending_per_stream.to_string(),
            "at least 1",
            limits.max_pending_per_stream >= 1,
        );
        check(
            "limits.max_streams",
            limits.max_streams.to_string(),
            "at least 1",
            limits.max_streams >= 1,
        );
        check(
            "limits.max_open_files",
            limits.max_open_files.to_string(),
            &format!("a count from 1 to {MAX_OPEN_FILES_LIMIT}"),
            (1..=MAX_OPEN_FILES_LIMIT).contains(&limits.max_open_files),
        );
        let metrics = if self.metrics.listen.is_empty() {
            Ok(None)
        } else {
            self.metrics.listen.parse().map(Some)
        };
        check(
            "metrics.listen",
            self.metrics.listen.clone(),
            "\"\" (off) or an address like 127.0.0.1:9898",
            metrics.is_ok(),
        );
        let level_ok = tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok();
        check(
            "log.level",
            self.log.level.clone(),
            "a tracing filter such as \"info\" or \"status_update_manager=debug\"",
            level_ok,
        );
        let format = match self.log.format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        };
        check(
            "log.format",
            self.log.format.clone(),
            "one of text, json",
            format.is_some(),
        );

        let upstream = self.upstream.validate(&mut check);

        match (listen, sync, min, max, metrics, format, upstream) {
            (
                Ok(listen),
                Ok(sync),
                Some(min),
                Some(max),
                Ok(metrics_listen),
                Some(log_format),
                Some(upstream),
            ) if bad.is_empty() => Ok(ServiceConfig {
                listen,
                max_payload_bytes: payload,
                auth_token,
                tls,
                data_dir: self.store.data_dir.clone(),
                sync,
                remove_finished: self.store.remove_finished,
                journal_checkpoint_bytes: checkpoint_bytes,
                retry: RetryPolicy {
                    min,
                    max,
                    jitter,
                    warn_after: self.retry.warn_after,
                },
                strict_recovery: self.recovery.strict,
                max_pending_per_stream: limits.max_pending_per_stream,
                max_streams: limits.max_streams,
                max_open_files: limits.max_open_files,
                metrics_listen,
                http2_keepalive: Http2Keepalive::default(),
                request_bytes_in_flight: DEFAULT_REQUEST_BYTES_IN_FLIGHT,
                drain_timeout: DRAIN_TIMEOUT,
                log_level: self.log.level.clone(),
                log_format,
                faults: None,
                upstream,
            }),
            _ => Err(ConfigError::Invalid(bad)),
        }
    }
}

impl ServerSettings {
    /// Checks the access-control keys with `check` (see [`Settings::validate`]) and reads
    /// the token and TLS files, once: the token, and the TLS identity when both files are
    /// set and readable.
    fn access(
        &self,
        listen: &Result<SocketAddr, std::net::AddrParseError>,
        check: &mut impl FnMut(&'static str, String, &str, bool),
    ) -> (Option<BearerToken>, Option<TlsIdentity>) {
        let shown = |path: &Path| path.display().to_string();
        let token_set = !self.auth_token_file.as_os_str().is_empty();
        let token = token_set.then(|| BearerToken::read(&self.auth_token_file));
        if let Some(Err(err)) = &token {
            check(
                "server.auth_token_file",
                shown(&self.auth_token_file),
                &format!("\"\" (no token) or a readable file holding the token ({err})"),
                false,
            );
        }

        let cert_set = !self.tls_cert_file.as_os_str().is_empty();
        let key_set = !self.tls_key_file.as_os_str().is_empty();
        check(
            "server.tls_cert_file",
            shown(&self.tls_cert_file),
            "a PEM certificate file, since server.tls_key_file is set (both or neither)",
            cert_set || !key_set,
        );
        check(
            "server.tls_key_file",
            shown(&self.tls_key_file),
            "a PEM private key file, since server.tls_cert_file is set (both or neither)",
            key_set || !cert_set,
        );
        let cert = cert_set.then(|| TlsIdentity::read_cert(&self.tls_cert_file));
        if let Some(Err(err)) = &cert {
            check(
                "server.tls_cert_file",
                shown(&self.tls_cert_file),
                &format!("\"\" (plaintext) or a readable PEM certificate chain ({err})"),
                false,
            );
        }
        let key = key_set.then(|| TlsIdentity::read_key(&self.tls_key_file));
        if let Some(Err(err)) = &key {
            check(
                "server.tls_key_file",
                shown(&self.tls_key_file),
                &format!("\"\" (plaintext) or a readable PEM private key ({err})"),
                false,
            );
        }

        if let Ok(addr) = listen {
            check(
                "server.listen",
                self.listen.clone(),
                "a loopback address such as 127.0.0.1:50051, unless TLS (server.tls_cert_file \
                 and server.tls_key_file) or a bearer token (server.auth_token_file) is set, \
                 or server.allow_insecure = true",
                addr.ip().is_loopback() || token_set || cert_set || self.allow_insecure,
            );
        }

        let tls = match (cert, key) {
            (Some(Ok(cert)), Some(Ok(key))) => Some(TlsIdentity::new(
                self.tls_cert_file.clone(),
                cert,
                self.tls_key_file.clone(),
                key,
            )),
            _ => None,
        };
        (token.and_then(Result::ok), tls)
    }
}

impl ServiceConfig {
    /// Loads and validates in one step.
    pub fn load(overrides: &Overrides) -> Result<ServiceConfig, ConfigError> {
        Settings::load(overrides)?.validate()
    }

    /// The manager's part of the configuration.
    pub fn manager_config(&self) -> ManagerConfig {
        ManagerConfig {
            sync: self.sync,
            retry: self.retry,
            max_pending_per_stream: self.max_pending_per_stream,
            max_streams: self.max_streams,
            max_open_files: self.max_open_files,
            remove_finished: self.remove_finished,
            // The service forwards only while a subscriber is connected.
            start_paused: true,
            faults: self.faults.clone(),
            quarantine_dir: Some(self.data_dir.join(crate::store::layout::QUARANTINE_DIR)),
            ..ManagerConfig::default()
        }
    }

    /// Where stream files live.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Parses `"10s"`, `"250ms"`, `"10m"`, `"1h 30m"`; zero is refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The defaults with one environment variable `key` = `value`, loaded
    /// and validated.
    fn validated_with(key: &str, value: &str) -> Result<ServiceConfig, ConfigError> {
        Settings::load_with_env(&Overrides::default(), env(&[(key, value)]))
            .unwrap()
            .validate()
    }

    #[test]
    fn embedded_defaults_are_valid_and_match_the_contract() {
        let config = Settings::load_with_env(&Overrides::default(), env(&[]))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.sync, SyncPolicy::Batch);
        assert_eq!(config.retry, RetryPolicy::default());
        assert!(config.remove_finished && config.strict_recovery);
        assert_eq!(
            config.journal_checkpoint_bytes,
            crate::store::journal::CHECKPOINT_BYTES
        );
        assert_eq!(
            (
                config.max_pending_per_stream,
                config.max_streams,
                config.max_open_files
            ),
            (10_000, 1_000_000, 4096)
        );
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(
            config.auth_token.is_none() && config.tls.is_none(),
            "open on loopback"
        );
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sum.toml");
        std::fs::write(
            &file,
            "[store]\nsync = \"none\"\ndata_dir = \"/from-file\"\n[retry]\nmin = \"1s\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config_file: Some(file),
            data_dir: Some("/from-flag".into()),
            listen: None,
        };
        let settings = Settings::load_with_env(
            &overrides,
            env(&[
                ("SUM__STORE__SYNC", "always"),
                ("SUM__RETRY__JITTER", "0.5"),
                ("SUM__SERVER__LISTEN", "127.0.0.1:7000"),
            ]),
        )
        .unwrap();
        let config = settings.validate().unwrap();
        assert_eq!(config.sync, SyncPolicy::Always, "env beats file");
        assert_eq!(
            config.data_dir,
            PathBuf::from("/from-flag"),
            "flag beats file"
        );
        assert_eq!(
            config.retry.min,
            Duration::from_secs(1),
            "file beats defaults"
        );
        assert_eq!(config.retry.jitter, 0.5);
        assert_eq!(config.listen.port(), 7000);
    }

    #[test]
    fn every_bad_key_is_reported_on_its_own_line() {
        let settings = Settings::load_with_env(
            &Overrides::default(),
            env(&[
                ("SUM__STORE__SYNC", "sometimes"),
                ("SUM__RETRY__MIN", "0s"),
                ("SUM__RETRY__JITTER", "1.5"),
                ("SUM__SERVER__LISTEN", "nowhere"),
                ("SUM__LOG__FORMAT", "xml"),
                ("SUM__STORE__JOURNAL_CHECKPOINT_BYTES", "0"),
            ]),
        )
        .unwrap();
        let err = settings.validate().unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 6, "{err}");
        for (i, key) in [
            "server.listen",
            "store.journal_checkpoint_bytes",
            "store.sync",
            "retry.min",
            "retry.jitter",
            "log.format",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                lines[i].contains(key),
                "line {i} should name {key}: {}",
                lines[i]
            );
        }
        assert!(
            err.contains("\"sometimes\": expected one of none, always, batch"),
            "{err}"
        );
    }

    #[test]
    fn the_journal_checkpoint_bound_is_a_size_within_what_replay_can_read() {
        let max = crate::store::journal::MAX_CHECKPOINT_BYTES;
        let at =
            |bytes: u64| validated_with("SUM__STORE__JOURNAL_CHECKPOINT_BYTES", &bytes.to_string());
        assert_eq!(at(max).unwrap().journal_checkpoint_bytes, max);
        assert_eq!(at(1).unwrap().journal_checkpoint_bytes, 1);
        let err = at(max + 1).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "store.journal_checkpoint_bytes = \"{}\": expected a size in bytes from 1 to {max}",
                max + 1
            )),
            "{err}"
        );
    }

    #[test]
    fn integer_keys_take_whole_numbers_that_fit_and_nothing_else() {
        let load = |key: &str, value: &str| {
            Settings::load_with_env(&Overrides::default(), env(&[(key, value)]))
        };
        let max_open = |value: &str| load("SUM__LIMITS__MAX_OPEN_FILES", value);
        assert_eq!(max_open("64").unwrap().limits.max_open_files, 64);
        assert_eq!(max_open(" 64 ").unwrap().limits.max_open_files, 64);
        // The config crate alone reads each as a number the key never held:
        // 2, 1, u64::MAX.
        for (value, shown) in [
            ("1.5", "floating point `1.5`"),
            ("yes", "string \"yes\""),
            ("true", "boolean `true`"),
            ("-1", "integer `-1`"),
            (
                "99999999999999999999",
                "floating point `100000000000000000000.0`",
            ),
            ("0x10", "string \"0x10\""),
        ] {
            let err = max_open(value).unwrap_err().to_string();
            assert!(err.contains(shown), "{value}: {err}");
            assert!(err.contains("`limits.max_open_files`"), "{value}: {err}");
            assert!(
                err.contains("expected a whole number from 0 to"),
                "{value}: {err}"
            );
            assert!(err.ends_with(" in the environment"), "{value}: {err}");
        }
        // A number past the key's own type, not only past u64.
        let err = load("SUM__RETRY__WARN_AFTER", "4294967296")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a whole number from 0 to 4294967295"),
            "{err}"
        );
        assert!(err.contains("`retry.warn_after`"), "{err}");
        // The same in a file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[store]\njournal_checkpoint_bytes = 2.5e6\n").unwrap();
        let overrides = Overrides {
            config_file: Some(file),
            ..Overrides::default()
        };
        let err = Settings::load_with_env(&overrides, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`store.journal_checkpoint_bytes`"), "{err}");
        assert!(err.ends_with("c.toml"), "the file is named: {err}");
    }

    #[test]
    fn the_open_file_bound_is_a_count_a_process_can_hold() {
        let at = |files: usize| validated_with("SUM__LIMITS__MAX_OPEN_FILES", &files.to_string());
        assert_eq!(
            at(MAX_OPEN_FILES_LIMIT).unwrap().max_open_files,
            MAX_OPEN_FILES_LIMIT
        );
        assert_eq!(at(1).unwrap().max_open_files, 1);
        for files in [0, MAX_OPEN_FILES_LIMIT + 1, 1 << 32] {
            let err = at(files).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "limits.max_open_files = \"{files}\": expected a count from 1 to {MAX_OPEN_FILES_LIMIT}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_missing_files_are_refused() {
        let err =
            Settings::load_with_env(&Overrides::default(), env(&[("SUM__STORE__SYNK", "none")]))
                .unwrap_err();
        assert!(err.to_string().contains("synk"), "{err}");
        let overrides = Overrides {
            config_file: Some("/no/such/file.toml".into()),
            ..Overrides::default()
        };
        let err = Settings::load_with_env(&overrides, env(&[])).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.toml"), "{err}");
    }
}
