//! The fleet: several `serve` processes publish into one JetStream stream
//! at 3 replicas on a three-server NATS cluster, while producers send
//! updates over gRPC and processes are killed.
//!
//! - Three `nats-server` processes clustered on loopback (routes), with
//!   JetStream; the stream `SUM` is created by the services with
//!   `upstream.jetstream.replicas = 3`.
//! - [`NODES`] (or `SUM_FLEET_NODES`) `serve` processes, each with its own
//!   data directory, port and `upstream.jetstream.node`, all given the three
//!   servers' URLs.
//! - Per node [`STREAMS_PER_NODE`] producers, one per stream, each sending
//!   its stream's updates one at a time over gRPC: an update whose `Update`
//!   failed (its serve was killed) is sent again with the same uuid until it
//!   is answered OK (or `duplicate`), so the order in which they were
//!   answered OK is the order they were sent in: the acceptance order.
//! - During the run (`SUM_FLEET_SECONDS`, default [`DEFAULT_SECONDS`]) a
//!   chaos thread SIGKILLs a random serve every 0.5–2 s and restarts it
//!   after 0.1–1 s on the same directory and port; at 30 % of the run it
//!   SIGKILLs one nats-server, and restarts it at 60 %.
//! - Then the producers stop, every serve runs, and the test waits until no
//!   serve has an update pending (every head got its PubAck). A JetStream
//!   consumer reads the whole stream and checks: every update answered OK is
//!   there (else it is lost); per stream, the first occurrence of each
//!   update comes in acceptance order (else it is out of order); the other
//!   occurrences are duplicates (a copy re-sent after JetStream's duplicate
//!   window, or the window lost with a server: allowed, counted).
//!
//! It prints `fleet: N nodes, U updates accepted, P published, D
//! duplicates, L lost, O out of order` and fails if L or O is above 0.
//! `SUM_FLEET_SEED` sets the seed of the chaos (printed). A long run, as
//! RELIABILITY.md reports it: `scripts/fleet.sh` (or
//! `SUM_FLEET_SECONDS=600 cargo test --release --test jetstream_fleet -- --nocapture`).
#![cfg(feature = "service")]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tonic::transport::Channel;
use uuid::Uuid;

use common::nats::{self, NatsServer};
use common::process::Proc;
use common::{POLL, PROCESS_BOUND};
use status_update_manager::proto::status_update_manager::v1 as pb;
use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;

/// `serve` processes when `SUM_FLEET_NODES` is not set.
const NODES: usize = 4;
/// Streams (and producers) per node.
const STREAMS_PER_NODE: usize = 6;
/// Seconds of traffic and kills when `SUM_FLEET_SECONDS` is not set.
const DEFAULT_SECONDS: u64 = 20;
/// The longest the drain at the end may take.
const DRAIN_BOUND: Duration = Duration::from_secs(90);

fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// One `serve` of the fleet: its port and directory stay across restarts.
struct Node {
    name: String,
    addr: String,
    data: PathBuf,
    env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Node {
    fn new(i: usize, root: &Path, servers: &str) -> Node {
        let name = format!("node-{i}");
        let env = vec![
            ("SUM__UPSTREAM__KIND", "jetstream"),
            ("SUM__UPSTREAM__JETSTREAM__SERVERS", servers),
            ("SUM__UPSTREAM__JETSTREAM__NODE", name.as_str()),
            ("SUM__UPSTREAM__JETSTREAM__REPLICAS", "3"),
            ("SUM__UPSTREAM__JETSTREAM__PUBLISH_TIMEOUT", "2s"),
            ("SUM__RETRY__MIN", "500ms"),
            ("SUM__RETRY__MAX", "2s"),
            ("SUM__LOG__LEVEL", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Node {
            addr: format!("127.0.0.1:{}", nats::free_port()),
            data: root.join(&name),
            name,
            env,
            proc: None,
        }
    }

    fn start(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let data = self.data.display().to_string();
        let proc = Proc::start(
            &self.name,
            &["serve", "--listen", &self.addr, "--data-dir", &data],
            &env,
        );
        proc.line_where("`listening on ADDR`", |l| l.starts_with("listening on "));
        self.proc = Some(proc);
    }

    fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a producer had answered OK, in order.
#[derive(Default)]
struct Accepted {
    /// (node, stream) → uuids in acceptance order.
    streams: HashMap<(String, String), Vec<String>>,
}

async fn connect(url: &str) -> Option<StatusUpdateManagerClient<Channel>> {
    let endpoint = Channel::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10));
    endpoint
        .connect()
        .await
        .ok()
        .map(StatusUpdateManagerClient::new)
}

/// Sends stream `stream`'s updates to `node` one at a time until `stop`,
/// each until it is answered OK; records the uuids answered OK.
async fn produce(
    node: String,
    url: String,
    stream: String,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Accepted>>,
    retries: Arc<AtomicU64>,
) {
    let mut client = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let uuid = Uuid::new_v4();
        let update = pb::StatusUpdate {
            stream_id: stream.clone(),
            framework_id: "fleet".into(),
            status: Some(pb::Status {
                uuid: uuid.as_bytes().to_vec(),
                state: format!("S{seq}"),
                ..pb::Status::default()
            }),
            latest_status: None,
        };
        let deadline = Instant::now() + PROCESS_BOUND * 3;
        loop {
            assert!(
                Instant::now() < deadline,
                "{node}/{stream}: update {uuid} not accepted within {:?}",
                PROCESS_BOUND * 3
            );
            if client.is_none() {
                client = connect(&url).await;
            }
            let Some(c) = client.as_mut() else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            match c
                .update(pb::UpdateRequest {
                    update: Some(update.clone()),
                    memory_only: false,
                })
                .await
            {
                Ok(_) => break,
                Err(status) => {
                    assert!(
                        matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                                | tonic::Code::DeadlineExceeded
                        ),
                        "{node}/{stream}: update {uuid} refused: {status:?}"
                    );
                    retries.fetch_add(1, Ordering::Relaxed);
                    client = None;
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        accepted
            .lock()
            .unwrap()
            .streams
            .entry((node.clone(), stream.clone()))
            .or_default()
            .push(uuid.to_string());
        seq += 1;
        // A steady trickle, not a flood: the point is the kills.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(5..40))).await;
    }
}

/// Updates pending on `url`'s streams, or `None` if it cannot be asked.
async fn pending(url: &str) -> Option<u64> {
    let mut client = connect(url).await?;
    let mut total = 0u64;
    let mut token = String::new();
    loop {
        let page = client
            .list_streams(pb::ListStreamsRequest {
                framework_id: String::new(),
                page_size: 10_000,
                page_token: token,
            })
            .await
            .ok()?
            .into_inner();
        total += page
            .streams
            .iter()
            .map(|s| u64::from(s.pending))
            .sum::<u64>();
        if page.next_page_token.is_empty() {
            return Some(total);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_services_loses_and_reorders_nothing_through_kills_of_services_and_of_a_nats_server(
) {
    let nodes_n = env_number("SUM_FLEET_NODES", NODES as u64) as usize;
    let seconds = env_number("SUM_FLEET_SECONDS", DEFAULT_SECONDS);
    let seed = env_number("SUM_FLEET_SEED", fastrand::u64(..));
    println!("fleet: seed {seed} (SUM_FLEET_SEED), {nodes_n} nodes, {seconds} s");
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Mutex::new(NatsServer::cluster(dir.path(), 3)));
    let servers = nats::urls(&cluster.lock().unwrap());

    let mut nodes: Vec<Node> = (0..nodes_n)
        .map(|i| Node::new(i, dir.path(), &servers))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let urls: Vec<(String, String)> = nodes.iter().map(|n| (n.name.clone(), n.url())).collect();
    let nodes = Arc::new(Mutex::new(nodes));

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Accepted::default()));
    let retries = Arc::new(AtomicU64::new(0));
    let mut producers = tokio::task::JoinSet::new();
    for (node, url) in &urls {
        for s in 0..STREAMS_PER_NODE {
            producers.spawn(produce(
                node.clone(),
                url.clone(),
                format!("task-{s}.{node}"),
                stop.clone(),
                accepted.clone(),
                retries.clone(),
            ));
        }
    }

    // Chaos: random delays on the runtime's timer; the kills and starts
    // block (a start waits for its process to be ready), on the worker
    // they run on (`block_in_place`), not on the producers'.
    let chaos = {
        let nodes = nodes.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let run = Duration::from_secs(seconds);
            let started = Instant::now();
            let (mut serve_kills, mut nats_kills) = (0u64, 0u64);
            let mut nats_down = false;
            let mut nats_done = false;
            while started.elapsed() < run {
                tokio::time::sleep(Duration::from_millis(rng.u64(500..2000))).await;
                let progress = started.elapsed().as_secs_f64() / run.as_secs_f64();
                if !nats_down && !nats_done && progress >= 0.3 {
                    tokio::task::block_in_place(|| cluster.lock().unwrap()[1].kill());
                    nats_kills += 1;
                    nats_down = true;
                } else if nats_down && progress >= 0.6 {
                    tokio::task::block_in_place(|| cluster.lock().unwrap()[1].restart());
                    nats_down = false;
                    nats_done = true;
                }
                let victim = rng.usize(..nodes_n);
                tokio::task::block_in_place(|| nodes.lock().unwrap()[victim].kill());
                serve_kills += 1;
                tokio::time::sleep(Duration::from_millis(rng.u64(100..1000))).await;
                tokio::task::block_in_place(|| nodes.lock().unwrap()[victim].start());
            }
            if nats_down {
                tokio::task::block_in_place(|| cluster.lock().unwrap()[1].restart());
            }
            (serve_kills, nats_kills)
        })
    };
    let (serve_kills, nats_kills) = chaos.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = producers.join_next().await {
        done.expect("a producer");
    }

    // Drain: every serve up, nothing pending anywhere.
    let deadline = Instant::now() + DRAIN_BOUND;
    for (node, url) in &urls {
        loop {
            if pending(url).await == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node} still has updates pending after {DRAIN_BOUND:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    let accepted = std::mem::take(&mut accepted.lock().unwrap().streams);
    let total_accepted: usize = accepted.values().map(Vec::len).sum();
    let client = nats::client(&servers).await;
    let js = jetstream::new(client);
    let read = nats::read_stream(&js, "SUM", total_accepted as u64, PROCESS_BOUND).await;

    let mut first: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut duplicates = 0usize;
    for message in &read {
        let node = message
            .subject
            .split('.')
            .nth(1)
            .expect("sum.<node>.<stream>")
            .to_string();
        let stream = message
            .forwarded
            .update
            .as_ref()
            .expect("an update")
            .stream_id
            .clone();
        let id = message.msg_id().to_string();
        assert_eq!(message.headers["Sum-Stream-Id"], stream);
        if seen.insert((node.clone(), stream.clone(), id.clone())) {
            first.entry((node, stream)).or_default().push(id);
        } else {
            duplicates += 1;
        }
    }
    let (mut lost, mut out_of_order) = (0usize, 0usize);
    for (key, uuids) in &accepted {
        let position: HashMap<&str, usize> = uuids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), i))
            .collect();
        let firsts = first.get(key).map(Vec::as_slice).unwrap_or_default();
        let present: HashSet<&str> = firsts.iter().map(String::as_str).collect();
        lost += uuids
            .iter()
            .filter(|u| !present.contains(u.as_str()))
            .count();
        let mut highest = None;
        for id in firsts {
            let Some(&at) = position.get(id.as_str()) else {
                panic!("{key:?}: {id} was published but never answered OK");
            };
            if highest.is_some_and(|h| at < h) {
                out_of_order += 1;
            }
            highest = highest.max(Some(at));
        }
    }
    println!(
        "fleet: {nodes_n} nodes, {total_accepted} updates accepted, {} published, {duplicates} duplicates, {lost} lost, {out_of_order} out of order",
        read.len()
    );
    println!(
        "fleet: {serve_kills} serve SIGKILLs, {nats_kills} nats-server SIGKILL, {} Update RPCs sent again, {seconds} s",
        retries.load(Ordering::Relaxed)
    );
    assert!(total_accepted > 0, "no update was accepted");
    assert_eq!(lost, 0, "updates answered OK and not in JetStream");
    assert_eq!(out_of_order, 0, "first occurrences out of acceptance order");

    for node in nodes.lock().unwrap().iter_mut() {
        node.kill();
    }
}
