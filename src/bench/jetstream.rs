//! `bench --upstream jetstream`: the service publishing into NATS
//! JetStream, against a plain publish loop in the same run.
//!
//! 1. A `nats-server` with JetStream is started on a free loopback port
//!    with its store in the run's directory (or `--nats URL` is used).
//! 2. The service is started in this process with `upstream.kind =
//!    "jetstream"` (a stream of the run's own, 1 replica), and the load
//!    (`streams × updates`, `concurrency` updates in flight) is sent to its
//!    manager. Two rates: updates accepted per second (answered, so
//!    checkpointed), and updates published and stored per second (until the
//!    JetStream stream holds every one: each took its PubAck, in order per
//!    stream, one head in flight per stream).
//! 3. The baseline: a plain loop publishes the same messages (subjects,
//!    headers, payloads of the same size) into another stream with the same
//!    concurrency, waiting for each PubAck, on a runtime like the service's
//!    NATS client (one worker thread).
//!
//! `ratio_to_baseline` is (2)'s published rate over (3)'s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::load::bench_update;
use super::BenchError;
use crate::kind::Native;
use crate::messages::Update;
use crate::service::config::{Overrides, Settings};
use crate::service::jetstream::{context, message, IsReady};
use crate::store::SyncPolicy;

/// What to run.
#[derive(Debug, Clone)]
pub struct JetStreamBenchOptions {
    /// Streams.
    pub streams: usize,
    /// Updates per stream.
    pub updates: usize,
    /// Updates (and baseline publishes) in flight at once.
    pub concurrency: usize,
    /// The service's `store.sync`.
    pub sync: SyncPolicy,
    /// Where the run's files go (a fresh directory inside, removed after).
    pub data_dir: PathBuf,
    /// A NATS server to use instead of starting one.
    pub nats: Option<String>,
}

/// `bench --upstream jetstream --json`.
#[derive(Debug, Clone, Serialize)]
pub struct JetStreamReport {
    /// As given.
    pub streams: usize,
    /// Updates per stream.
    pub updates: usize,
    /// Updates in flight at once.
    pub concurrency: usize,
    /// `store.sync`.
    pub sync: SyncPolicy,
    /// The NATS server used.
    pub nats: String,
    /// Updates answered (accepted, checkpointed) per second.
    pub updates_per_sec: f64,
    /// Updates published and stored by JetStream per second, from the
    /// first update sent until the stream held every one.
    pub published_per_sec: f64,
    /// The plain loop: the same messages published with the same
    /// concurrency, each PubAck awaited, per second.
    pub baseline_published_per_sec: f64,
    /// `published_per_sec` / `baseline_published_per_sec`.
    pub ratio_to_baseline: f64,
}

/// The `nats-server` started for the run; killed when dropped.
struct NatsProcess(Child);

impl Drop for NatsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|c| c.is_file())
}

fn start_nats(dir: &Path) -> Result<(NatsProcess, String), BenchError> {
    let binary = nats_server_binary().ok_or_else(|| {
        BenchError::Load(
            "nats-server not found on PATH or in /usr/sbin: install it (apt-get install -y \
             nats-server) or give --nats URL"
                .into(),
        )
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let store = dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let child = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((NatsProcess(child), format!("nats://127.0.0.1:{port}")))
}

/// A client of `url`, retrying for up to 20 s while it does not answer.
async fn client(url: &str) -> Result<async_nats::Client, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match async_nats::connect(url).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => {
                return Err(BenchError::Load(format!("cannot connect to {url}: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Messages in `stream` now.
async fn held(js: &async_nats::jetstream::Context, stream: &str) -> Result<u64, BenchError> {
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| BenchError::Load(format!("stream {stream}: {e}")))?;
    let info = s
        .info()
        .await
        .map_err(|e| BenchError::Load(format!("stream {stream}: {e}")))?;
    Ok(info.state.messages)
}

/// Runs the benchmark on a new actix System on this thread.
pub fn run(options: JetStreamBenchOptions) -> Result<JetStreamReport, BenchError> {
    actix_rt::System::new().block_on(async move {
        let root = options
            .data_dir
            .join(format!("sum-bench-jetstream-{}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        let result = measure(&options, &root).await;
        let _ = std::fs::remove_dir_all(&root);
        result
    })
}

async fn measure(o: &JetStreamBenchOptions, root: &Path) -> Result<JetStreamReport, BenchError> {
    let (_nats, url) = match &o.nats {
        Some(url) => (None, url.clone()),
        None => {
            let (process, url) = start_nats(root)?;
            (Some(process), url)
        }
    };
    let pid = std::process::id();
    let stream = format!("SUMBENCH{pid}");
    let prefix = format!("sumbench{pid}");
    let observer = client(&url).await?;
    let observer = async_nats::jetstream::new(observer);

    // The service, publishing into JetStream.
    let overrides = Overrides {
        data_dir: Some(root.join("data")),
        listen: Some("127.0.0.1:0".into()),
        config_file: None,
    };
    let mut settings = Settings::load_with_env(&overrides, Some(Default::default()))?;
    settings.store.sync = o.sync.to_string();
    settings.store.remove_finished = false;
    settings.limits.max_pending_per_stream = o.updates.max(1);
    settings.limits.max_streams = o.streams.max(1);
    settings.upstream.kind = "jetstream".into();
    settings.upstream.jetstream.servers = vec![url.clone()];
    settings.upstream.jetstream.stream = stream.clone();
    settings.upstream.jetstream.subject_prefix = prefix.clone();
    settings.upstream.jetstream.node = "bench".into();
    settings.upstream.jetstream.publish_timeout = "30s".into();
    let running = crate::service::start(settings.validate()?).await?;
    let upstream = running
        .jetstream
        .clone()
        .ok_or_else(|| BenchError::Load("the service has no JetStream upstream".into()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upstream.send(IsReady).await? {
        if Instant::now() >= deadline {
            return Err(BenchError::Load(format!(
                "JetStream at {url} not usable in 20 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let total = o.streams * o.updates;
    let started = Instant::now();
    let next = Rc::new(std::cell::Cell::new(0usize));
    let failed = Rc::new(std::cell::RefCell::new(None::<String>));
    let mut producers = Vec::new();
    for _ in 0..o.concurrency.min(total).max(1) {
        let (next, failed, manager, streams) = (
            Rc::clone(&next),
            Rc::clone(&failed),
            running.manager.clone(),
            o.streams,
        );
        producers.push(actix_rt::spawn(async move {
            loop {
                let i = next.get();
                if i >= total {
                    return;
                }
                next.set(i + 1);
                let update = bench_update(i % streams, i / streams);
                let answer = manager
                    .send(Update::<Native> {
                        update,
                        checkpoint: true,
                    })
                    .await;
                match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => *failed.borrow_mut() = Some(e.to_string()),
                    Err(e) => *failed.borrow_mut() = Some(e.to_string()),
                }
            }
        }));
    }
    for producer in producers {
        let _ = producer.await;
    }
    if let Some(why) = failed.borrow_mut().take() {
        return Err(BenchError::Load(format!("an update failed: {why}")));
    }
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while held(&observer, &stream).await? < total as u64 {
        if Instant::now() >= deadline {
            return Err(BenchError::Load(
                "JetStream did not store every update in 600 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let published = started.elapsed();
    running.shutdown().await?;

    let baseline = baseline(&url, &prefix, o.streams, o.updates, o.concurrency).await?;
    let _ = observer.delete_stream(&stream).await;
    let published_per_sec = total as f64 / published.as_secs_f64();
    Ok(JetStreamReport {
        streams: o.streams,
        updates: o.updates,
        concurrency: o.concurrency,
        sync: o.sync,
        nats: url,
        updates_per_sec: total as f64 / accepted.as_secs_f64(),
        published_per_sec,
        baseline_published_per_sec: baseline,
        ratio_to_baseline: published_per_sec / baseline,
    })
}

/// The plain loop: the load's messages published into a stream of their
/// own, `concurrency` at a time, each PubAck awaited; publishes per second.
async fn baseline(
    url: &str,
    prefix: &str,
    streams: usize,
    updates: usize,
    concurrency: usize,
) -> Result<f64, BenchError> {
    let url = url.to_string();
    let prefix = format!("{prefix}base");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-baseline".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(BenchError::from)
                .and_then(|rt| {
                    rt.block_on(publish_loop(url, prefix, streams, updates, concurrency))
                });
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| BenchError::Load("the baseline thread stopped".into()))?
}

async fn publish_loop(
    url: String,
    prefix: String,
    streams: usize,
    updates: usize,
    concurrency: usize,
) -> Result<f64, BenchError> {
    let js = Arc::new(context(client(&url).await?, Duration::from_secs(30)));
    let name = prefix.to_uppercase();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| BenchError::Load(format!("baseline stream: {e}")))?;
    let total = streams * updates;
    // Built before the clock starts, as the service's are built by its streams.
    let messages: Vec<_> = (0..total)
        .map(|i| {
            let mut update = bench_update(i % streams, i / streams);
            update.latest_status = update.status.clone();
            let uuid =
                uuid::Uuid::from_slice(&update.status.as_ref().map_or(vec![], |s| s.uuid.clone()))
                    .unwrap_or_else(|_| uuid::Uuid::new_v4());
            message(&prefix, "bench", update, 0, &uuid)
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(messages.into_iter()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(total).max(1) {
        let (js, queue) = (Arc::clone(&js), Arc::clone(&queue));
        tasks.spawn(async move {
            loop {
                let Some((subject, headers, payload)) =
                    queue.lock().ok().and_then(|mut q| q.next())
                else {
                    return Ok(());
                };
                js.publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| BenchError::Load(e.to_string()))?
            .map_err(|e: String| BenchError::Load(format!("baseline publish: {e}")))?;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(&name).await;
    Ok(rate)
}

/// The report as text.
pub fn table(r: &JetStreamReport) -> String {
    format!(
        "{} streams × {} updates at concurrency {}, sync {}, upstream JetStream at {}\n\
         \x20 updates/s accepted           {:.0}\n\
         \x20 published and stored/s       {:.0}\n\
         \x20 baseline publishes/s         {:.0} (a plain loop, same messages and concurrency, each PubAck awaited)\n\
         \x20 ratio to baseline            {:.3}\n",
        r.streams,
        r.updates,
        r.concurrency,
        r.sync,
        r.nats,
        r.updates_per_sec,
        r.published_per_sec,
        r.baseline_published_per_sec,
        r.ratio_to_baseline
    )
}
