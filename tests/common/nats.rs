//! Real `nats-server` processes with JetStream for the tests of the
//! JetStream upstream: one server, or a cluster of several (routes on
//! loopback), each on free loopback ports with a store directory of its
//! own; killed when dropped. And a reader of a whole JetStream stream.
//!
//! The binary is `nats-server` on `PATH` (or `/usr/sbin`, where Debian's
//! package puts it), or `$NATS_SERVER`. A test that needs it and cannot
//! find it fails, naming the package: it never skips. `.ci/run` installs
//! it.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures_util::StreamExt;
use prost::Message as _;

use status_update_manager::proto::status_update_manager::v1::ForwardedUpdate;

use super::{POLL, PROCESS_BOUND};

/// The `nats-server` binary; fails the test when there is none.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs a real nats-server (2.9 or later, with JetStream) and none was \
                 found on PATH, in /usr/sbin or in $NATS_SERVER: install Debian's package \
                 (`apt-get install -y nats-server`; `bash .ci/run` does it)"
            )
        })
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One `nats-server` with JetStream, on loopback; killed when dropped.
pub struct NatsServer {
    name: String,
    args: Vec<String>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    /// How many times the server was started.
    starts: usize,
    /// Every start's output, as it is copied into the log: how many times
    /// it said "Server is ready", and whether the running one's output
    /// ended (it exited); signalled on each.
    ready: std::sync::Arc<(std::sync::Mutex<Output>, std::sync::Condvar)>,
}

/// See [`NatsServer::ready`].
#[derive(Debug, Default)]
struct Output {
    ready: usize,
    ended: bool,
}

impl NatsServer {
    /// One server with JetStream, its store under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let port = free_port();
        let mut server = Self::new("n0", dir, port, Vec::new());
        server.launch();
        server
    }

    /// `n` servers in one cluster (routes between all of them), their
    /// stores under `dir`.
    pub fn cluster(dir: &Path, n: usize) -> Vec<NatsServer> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, cluster)| format!("nats://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, cluster))| {
                let extra = vec![
                    "--cluster_name".into(),
                    "sum-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cluster}"),
                    "--routes".into(),
                    routes.clone(),
                ];
                Self::new(&format!("n{i}"), dir, *port, extra)
            })
            .collect();
        // All at once: JetStream's meta group needs a quorum to start.
        for server in &mut servers {
            server.spawn();
        }
        for server in &mut servers {
            server.wait_ready();
        }
        servers
    }

    fn new(name: &str, dir: &Path, port: u16, extra: Vec<String>) -> NatsServer {
        let store = dir.join(format!("nats-{name}"));
        std::fs::create_dir_all(&store).expect("create the store directory");
        let mut args = vec![
            "-js".to_string(),
            "-sd".into(),
            store.display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-n".into(),
            name.into(),
        ];
        args.extend(extra);
        NatsServer {
            name: name.into(),
            args,
            port,
            log: dir.join(format!("nats-{name}.log")),
            child: None,
            starts: 0,
            ready: Default::default(),
        }
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server's log");
        let mut child = Command::new(binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone the log")))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        // nats-server logs on stderr: copied into the log, line by line,
        // telling `wait_ready` of each "Server is ready" and of the end.
        let stderr = child.stderr.take().expect("piped stderr");
        let ready = std::sync::Arc::clone(&self.ready);
        ready.0.lock().unwrap().ended = false;
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut log = log;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if line.contains("Server is ready") {
                    ready.0.lock().unwrap().ready += 1;
                    ready.1.notify_all();
                }
            }
            ready.0.lock().unwrap().ended = true;
            ready.1.notify_all();
        });
        self.child = Some(child);
        self.starts += 1;
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Waits (at most [`PROCESS_BOUND`]) until the server said it is
    /// ready for the `starts`-th time; fails if it exits first.
    fn wait_ready(&mut self) {
        let (output, said) = &*self.ready;
        let (output, _) = said
            .wait_timeout_while(output.lock().unwrap(), PROCESS_BOUND, |o| {
                o.ready < self.starts && !o.ended
            })
            .unwrap();
        let ready = output.ready >= self.starts;
        drop(output);
        if !ready {
            let log = self.log();
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => panic!(
                    "nats-server {} exited ({status}) before it was ready:\n{log}",
                    self.name
                ),
                _ => panic!(
                    "nats-server {} not ready within {PROCESS_BOUND:?}:\n{log}",
                    self.name
                ),
            }
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's name (`n0`, `n1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again (same ports, same store) and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a server that was killed");
        self.launch();
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The URLs of `servers`, comma-separated (`upstream.jetstream.servers` in
/// the environment).
pub fn urls(servers: &[NatsServer]) -> String {
    servers
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// A NATS client of `urls` (comma-separated), retrying while none answers.
pub async fn client(urls: &str) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
    let deadline = Instant::now() + PROCESS_BOUND;
    loop {
        match async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(addrs.clone())
            .await
        {
            Ok(client) => return client,
            Err(e) if Instant::now() >= deadline => panic!("cannot connect to {urls}: {e}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// One message of the stream, as a consumer reads it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The stream sequence.
    pub sequence: u64,
    pub subject: String,
    /// Every header, its last value.
    pub headers: HashMap<String, String>,
    /// The payload, decoded.
    pub forwarded: ForwardedUpdate,
}

impl Published {
    /// The `Nats-Msg-Id` header.
    pub fn msg_id(&self) -> &str {
        self.headers
            .get("Nats-Msg-Id")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// The number of messages in `stream` now, retrying (bounded) while the
/// stream is not available (no leader yet).
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    let deadline = Instant::now() + PROCESS_BOUND;
    loop {
        match js.get_stream(stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => return info.state.messages,
                Err(e) if Instant::now() >= deadline => panic!("stream {stream} info: {e}"),
                Err(_) => {}
            },
            Err(e) if Instant::now() >= deadline => panic!("stream {stream}: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every message of `stream`, in stream order, read by an ephemeral pull
/// consumer from the first one: at least `at_least` of them (waiting, at
/// most `bound`, until that many are there), and whatever else the stream
/// held when they were read.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    at_least: u64,
    bound: Duration,
) -> Vec<Published> {
    let deadline = Instant::now() + bound;
    loop {
        let held = stream_messages(js, stream).await;
        if held >= at_least {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} holds {held} messages, expected at least {at_least} within {bound:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let total = stream_messages(js, stream).await;
    let source = js.get_stream(stream).await.expect("the stream");
    let consumer = source
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("an ephemeral consumer");
    let mut read = Vec::with_capacity(total as usize);
    let read_deadline = Instant::now() + bound.max(PROCESS_BOUND);
    while (read.len() as u64) < total {
        assert!(
            Instant::now() < read_deadline,
            "read {} of {total} messages of {stream}",
            read.len()
        );
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch a batch");
        while let Some(message) = batch.next().await {
            let message = message.expect("a message");
            let sequence = message.info().expect("JetStream metadata").stream_sequence;
            let headers = message
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| {
                            v.last().map(|v| (k.to_string(), v.as_str().to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let forwarded = ForwardedUpdate::decode(message.payload.as_ref())
                .expect("the payload is a ForwardedUpdate");
            read.push(Published {
                sequence,
                subject: message.subject.to_string(),
                headers,
                forwarded,
            });
        }
    }
    read
}
