//! R1, the crash loop: the built server is killed with SIGKILL at random moments under
//! load, restarted on the same data directory, and checked after every restart against a
//! model of everything it answered, across all cycles.
//!
//! Each cycle starts `serve --data-dir DIR --listen 127.0.0.1:0` (default
//! `store.sync = "batch"`, `store.remove_finished = true`; odd cycles with
//! `store.journal_checkpoint_bytes = 4096`, so that the commit journal is rotated and
//! checkpointed every few rounds, a kill can land mid-checkpoint, and the next start then
//! replays a `commit.journal.old` first), then:
//!
//! 1. **Restart check.** ListStreams, and GetStream for every stream the model has open,
//!    are compared with what the model allows ([`StreamModel::resolve`]): every update
//!    answered OK and not acknowledged is pending, in send order; no update whose ack was
//!    answered OK is pending; every stream that has not ended is listed with the right
//!    `acknowledged` count, and no stream that ended comes back. A request that was in
//!    flight at the kill is the only uncertainty: an update in flight may or may not exist
//!    (at the end of its queue), an ack in flight may or may not have taken effect (on the
//!    head; if that head was terminal, the stream may be gone). What the server shows
//!    decides each, and the model is exact again.
//! 2. **Traffic.** [`PRODUCERS`] producers, each its own gRPC connection, write
//!    [`SLOTS`] streams at once, each stream's updates in order and one at a time; a
//!    stream has 2 to 10 updates, the last one terminal, and a producer starts a new stream
//!    when one is written (holding back while [`MAX_OPEN`] of its streams have not ended).
//!    A subscriber acknowledges each forward as it arrives, with the acks of many streams
//!    in flight at once (one per stream). Each forward must be the head the model expects
//!    ([`StreamModel::on_forward`]); the only repeats allowed are resends of the current
//!    head and, within one process lifetime, a resend of the update just acknowledged that
//!    crossed the ack. After a restart, a forward of an update whose ack was answered OK is
//!    a violation.
//! 3. **Kill.** After a random delay (up to [`KILL_MAX_MS`]), SIGKILL. Requests that fail
//!    after it are "in flight"; one that fails before it is a violation.
//!
//! After the last cycle the server is started once more, checked, and every queue is walked
//! to its end by acknowledging, which shows that everything pending was forwarded in order
//! and that the streams whose terminal update was acknowledged are gone.
//!
//! `SUM_CRASH_CYCLES` sets the number of cycles (default 20, for CI), `SUM_CRASH_SEED` the
//! seed of the kill delays, stream lengths and uuids (printed; the interleaving of requests
//! still depends on timing). A long run, as RELIABILITY.md reports it:
//!
//! ```text
//! SUM_CRASH_CYCLES=200 cargo test --release --test crash_loop -- --nocapture
//! ```
//!
//! Every wait is bounded and polls a condition; apart from polling, the only sleep is the
//! kill delay. The server is killed if the test fails ([`Server`]'s `Drop`), and the
//! cycle's tasks are aborted with their `JoinSet`.
#![cfg(feature = "service")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{connect, Server};
use common::{POLL, PROCESS_BOUND};
use status_update_manager::proto::status_update_manager::v1 as pb;
use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;
use uuid::Uuid;

/// Cycles when `SUM_CRASH_CYCLES` is not set.
const DEFAULT_CYCLES: usize = 20;
/// Producers, each on its own connection.
const PRODUCERS: usize = 4;
/// Streams a producer writes at once.
const SLOTS: usize = 3;
/// A producer starts no new stream while this many of its streams have not ended.
const MAX_OPEN: usize = 8;
/// Updates per stream, the last one terminal.
const STEPS: std::ops::RangeInclusive<usize> = 2..=10;
/// Bounds of the random delay between the start of traffic and the kill, in ms.
const KILL_MIN_MS: u64 = 5;
/// See [`KILL_MIN_MS`].
const KILL_MAX_MS: u64 = 700;

type Client = StatusUpdateManagerClient<Channel>;

// ---------------------------------------------------------------- the model

/// What the model knows of one stream. Exact at the start of a cycle (after
/// [`resolve`](Self::resolve)); during a cycle only the request in flight on each side is
/// open.
#[derive(Debug, Clone, Default)]
struct StreamModel {
    /// The producer writing it.
    producer: usize,
    /// Updates it will have, the last one terminal.
    planned: usize,
    /// Updates that exist and are not acknowledged, in send order.
    queue: VecDeque<Uuid>,
    /// Updates acknowledged.
    acked: usize,
    /// The terminal update, once sent.
    terminal: Option<Uuid>,
    /// The update request not answered yet: it may or may not exist.
    send_in_flight: Option<Uuid>,
    /// The ack request not answered yet: it may or may not have taken effect.
    ack_in_flight: Option<Uuid>,
    /// Acknowledged in this process lifetime, with no forward of the stream since: a resend
    /// of it crossed the ack.
    just_acked: Option<Uuid>,
}

/// What the subscriber does with a forward.
#[derive(Debug, PartialEq, Eq)]
enum OnForward {
    /// The head: acknowledge it.
    Ack,
    /// A resend of the update just acknowledged: nothing.
    Ignore,
}

/// A stream as the restarted server shows it: `None` when not listed, else its pending
/// uuids (head first) and its `acknowledged` count.
type Observed<'a> = Option<(&'a [Uuid], usize)>;

/// The outcome of a restart check for one stream: which in-flight requests took effect.
#[derive(Debug, PartialEq, Eq, Default)]
struct Resolved {
    /// The update in flight exists.
    send_kept: Option<bool>,
    /// The ack in flight took effect.
    ack_kept: Option<bool>,
    /// The stream ended (its terminal update's ack took effect).
    ended: bool,
}

impl StreamModel {
    /// Updates that exist (acknowledged or pending).
    fn existing(&self) -> usize {
        self.acked + self.queue.len()
    }

    /// Every update of the stream exists (the terminal one included).
    fn written(&self) -> bool {
        self.existing() == self.planned
    }

    /// A forward of `uuid` during a cycle.
    fn on_forward(&mut self, uuid: Uuid, acked_ok: &HashSet<Uuid>) -> Result<OnForward, String> {
        if self.queue.front() == Some(&uuid) {
            self.just_acked = None;
            return Ok(OnForward::Ack);
        }
        if self.queue.is_empty() && self.send_in_flight == Some(uuid) {
            // Forwarded before the producer read the answer: it exists.
            self.send_in_flight = None;
            self.queue.push_back(uuid);
            self.just_acked = None;
            return Ok(OnForward::Ack);
        }
        if self.just_acked == Some(uuid) {
            return Ok(OnForward::Ignore);
        }
        let expected = match self.queue.front() {
            Some(head) => format!("the head {head}"),
            None => "nothing (no update pending)".to_string(),
        };
        if acked_ok.contains(&uuid) {
            Err(format!(
                "{uuid} was forwarded again although its ack was answered OK; expected {expected}"
            ))
        } else {
            Err(format!("{uuid} was forwarded; expected {expected}"))
        }
    }

    /// An ack of `uuid` answered OK, with its `stream_terminated`. Returns whether the
    /// stream ended.
    fn on_ack_ok(&mut self, uuid: Uuid, terminated: bool) -> Result<bool, String> {
        self.ack_in_flight = None;
        if self.queue.front() != Some(&uuid) {
            return Err(format!(
                "the ack of {uuid} was answered OK but the head is {:?}",
                self.queue.front()
            ));
        }
        self.queue.pop_front();
        self.acked += 1;
        self.just_acked = Some(uuid);
        let terminal = self.terminal == Some(uuid);
        if terminated != terminal {
            return Err(format!(
                "the ack of {uuid} answered stream_terminated = {terminated}, but that update \
                 is {}terminal",
                if terminal { "" } else { "not " }
            ));
        }
        Ok(terminal)
    }

    /// After a restart: `observed` is the stream as the server shows it (`None`: not
    /// listed; else its pending uuids, head first, and its `acknowledged` count). Accepts
    /// exactly the outcomes the in-flight requests allow, and makes the model exact.
    fn resolve(&mut self, observed: Observed) -> Result<Resolved, String> {
        let existed = self.existing() > 0;
        let pops: &[bool] = if self.ack_in_flight.is_some() {
            &[false, true]
        } else {
            &[false]
        };
        let appends: &[bool] = if self.send_in_flight.is_some() {
            &[false, true]
        } else {
            &[false]
        };
        let mut allowed = Vec::new();
        for &pop in pops {
            for &append in appends {
                let mut queue = self.queue.clone();
                let mut acked = self.acked;
                if pop {
                    assert_eq!(
                        queue.front(),
                        self.ack_in_flight.as_ref(),
                        "only the head is acknowledged"
                    );
                    queue.pop_front();
                    acked += 1;
                }
                if append {
                    queue.push_back(self.send_in_flight.expect("an update in flight"));
                }
                let ended = pop && self.ack_in_flight == self.terminal;
                let listed = !ended && (existed || !queue.is_empty());
                let expected = listed.then(|| (Vec::from(queue.clone()), acked));
                let matches = match (&expected, observed) {
                    (None, None) => true,
                    (Some((queue, acked)), Some((got, got_acked))) => {
                        queue[..] == got[..] && *acked == got_acked
                    }
                    _ => false,
                };
                if matches {
                    let resolved = Resolved {
                        send_kept: self.send_in_flight.map(|_| append),
                        ack_kept: self.ack_in_flight.map(|_| pop),
                        ended,
                    };
                    if self.send_in_flight.is_some()
                        && !append
                        && self.terminal == self.send_in_flight
                    {
                        self.terminal = None;
                    }
                    self.queue = queue;
                    self.acked = acked;
                    self.send_in_flight = None;
                    self.ack_in_flight = None;
                    self.just_acked = None;
                    return Ok(resolved);
                }
                allowed.push(expected);
            }
        }
        let show = |o: &Option<(Vec<Uuid>, usize)>| match o {
            None => "not listed".to_string(),
            Some((queue, acked)) => format!("pending {queue:?}, acknowledged {acked}"),
        };
        let got = show(&observed.map(|(q, a)| (q.to_vec(), a)));
        let allowed: Vec<String> = allowed.iter().map(show).collect();
        Err(format!(
            "after the restart the stream is {got}; allowed: {}",
            allowed.join(" | ")
        ))
    }
}

/// Figures of the whole run.
#[derive(Debug, Default)]
struct Stats {
    updates_ok: usize,
    acks_ok: usize,
    forwards: usize,
    streams: usize,
    streams_ended: usize,
    sends_in_flight: usize,
    sends_kept: usize,
    acks_in_flight: usize,
    acks_kept: usize,
}

/// Everything the test knows, shared by the tasks of a cycle.
struct Model {
    /// Streams that have not ended.
    streams: BTreeMap<String, StreamModel>,
    /// Streams that ended (terminal update acknowledged).
    ended: HashSet<String>,
    /// Streams that ended in this process lifetime, with their terminal update: a resend
    /// of it may still be on its way.
    just_ended: HashMap<String, Uuid>,
    /// Every uuid whose ack was answered OK (or took effect).
    acked_ok: HashSet<Uuid>,
    /// Each producer's slots: the stream it writes there.
    slots: Vec<Vec<Option<String>>>,
    /// Each producer's streams that have not ended.
    open: Vec<usize>,
    /// Streams each producer started.
    started: Vec<usize>,
    /// Stream lengths and uuids.
    rng: fastrand::Rng,
    /// The cycle running.
    cycle: usize,
    violations: Vec<String>,
    stats: Stats,
}

type Shared = Arc<Mutex<Model>>;

impl Model {
    fn new(seed: u64) -> Model {
        Model {
            streams: BTreeMap::new(),
            ended: HashSet::new(),
            just_ended: HashMap::new(),
            acked_ok: HashSet::new(),
            slots: vec![vec![None; SLOTS]; PRODUCERS],
            open: vec![0; PRODUCERS],
            started: vec![0; PRODUCERS],
            rng: fastrand::Rng::with_seed(seed),
            cycle: 0,
            violations: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn violation(&mut self, stream: &str, what: impl std::fmt::Display) {
        let line = format!("cycle {}: {stream}: {what}", self.cycle);
        eprintln!("VIOLATION {line}");
        self.violations.push(line);
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    fn end(&mut self, stream: &str) {
        if let Some(model) = self.streams.remove(stream) {
            if let Some(terminal) = model.terminal {
                self.just_ended.insert(stream.to_string(), terminal);
            }
            self.open[model.producer] -= 1;
            self.ended.insert(stream.to_string());
            self.stats.streams_ended += 1;
        }
    }

    /// The next update producer `p` sends from `slot`, or `None` while it must hold back.
    fn next_update(&mut self, p: usize, slot: usize) -> Option<pb::UpdateRequest> {
        let current = self.slots[p][slot]
            .clone()
            .filter(|id| self.streams.get(id).is_some_and(|s| !s.written()));
        let id = match current {
            Some(id) => id,
            None => {
                if self.open[p] >= MAX_OPEN {
                    return None;
                }
                let id = format!("p{p}-{}", self.started[p]);
                self.started[p] += 1;
                self.open[p] += 1;
                self.stats.streams += 1;
                let planned = self.rng.usize(STEPS);
                self.streams.insert(
                    id.clone(),
                    StreamModel {
                        producer: p,
                        planned,
                        ..StreamModel::default()
                    },
                );
                self.slots[p][slot] = Some(id.clone());
                id
            }
        };
        let uuid = self.uuid();
        let stream = self.streams.get_mut(&id).expect("the slot's stream");
        assert!(
            stream.send_in_flight.is_none(),
            "{id}: one update at a time"
        );
        let step = stream.existing();
        let terminal = step + 1 == stream.planned;
        stream.send_in_flight = Some(uuid);
        if terminal {
            stream.terminal = Some(uuid);
        }
        Some(pb::UpdateRequest {
            update: Some(pb::StatusUpdate {
                stream_id: id,
                framework_id: format!("fw-{p}"),
                status: Some(pb::Status {
                    uuid: uuid.as_bytes().to_vec(),
                    state: if terminal {
                        "FINISHED".into()
                    } else {
                        format!("STEP_{step}")
                    },
                    terminal,
                    ..pb::Status::default()
                }),
                latest_status: None,
            }),
            memory_only: false,
        })
    }
}

/// Whether a failed request may be explained by the kill: a transport failure after it.
fn died(status: &tonic::Status, killed: &AtomicBool) -> bool {
    killed.load(Ordering::SeqCst)
        && matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
        )
}

// ---------------------------------------------------------------- the tasks of a cycle

/// One producer slot: sends the updates of one stream after another, in order, until the
/// server dies.
async fn produce(
    mut client: Client,
    model: Shared,
    killed: Arc<AtomicBool>,
    p: usize,
    slot: usize,
) {
    while !killed.load(Ordering::SeqCst) {
        let Some(request) = model.lock().unwrap().next_update(p, slot) else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let update = request.update.as_ref().expect("update");
        let id = update.stream_id.clone();
        let uuid = Uuid::from_slice(&update.status.as_ref().expect("status").uuid).unwrap();
        let answer = client.update(request).await;
        let mut model = model.lock().unwrap();
        match answer {
            Ok(response) => {
                model.stats.updates_ok += 1;
                if response.get_ref().duplicate {
                    model.violation(&id, format!("the new update {uuid} was answered duplicate"));
                }
                if let Some(stream) = model.streams.get_mut(&id) {
                    if stream.send_in_flight == Some(uuid) {
                        stream.send_in_flight = None;
                        stream.queue.push_back(uuid);
                    }
                }
            }
            Err(status) if died(&status, &killed) => return,
            Err(status) => {
                model.violation(&id, format!("the update {uuid} was refused: {status}"));
                return;
            }
        }
    }
}

/// How an ack request ended: answered with `stream_terminated`, failed with the server's
/// death (in flight), or refused.
type AckAnswer = (String, Uuid, Result<bool, Option<tonic::Status>>);

/// The upstream: acknowledges each forward the model says is the head, many streams at
/// once. A forward of a stream whose ack is not answered yet waits until it is, so that the
/// model sees each stream's forwards and answers in the order the server produced them.
async fn subscribe(mut client: Client, model: Shared, killed: Arc<AtomicBool>) {
    let request = pb::SubscribeRequest {
        subscriber: "crash-loop".into(),
    };
    let mut forwards = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if died(&status, &killed) => return,
        Err(status) => {
            let what = format!("Subscribe failed: {status}");
            model.lock().unwrap().violation("-", what);
            return;
        }
    };
    let mut acks: JoinSet<AckAnswer> = JoinSet::new();
    let mut waiting: HashMap<String, VecDeque<Uuid>> = HashMap::new();
    let spawn_ack = |acks: &mut JoinSet<AckAnswer>, id: String, uuid: Uuid| {
        let (mut client, killed) = (client.clone(), Arc::clone(&killed));
        acks.spawn(async move {
            let ack = pb::AcknowledgeRequest {
                stream_id: id.clone(),
                status_uuid: uuid.as_bytes().to_vec(),
            };
            let answer = match client.acknowledge(ack).await {
                Ok(response) => Ok(response.into_inner().stream_terminated),
                Err(status) if died(&status, &killed) => Err(None),
                Err(status) => Err(Some(status)),
            };
            (id, uuid, answer)
        });
    };
    loop {
        tokio::select! {
            forward = forwards.message() => {
                let forward = match forward {
                    Ok(Some(forward)) => forward,
                    Err(status) if died(&status, &killed) => return,
                    Ok(None) | Err(_) if killed.load(Ordering::SeqCst) => return,
                    other => {
                        let what = format!("the subscription ended while the server ran: {other:?}");
                        model.lock().unwrap().violation("-", what);
                        return;
                    }
                };
                let update = forward.update.expect("ForwardedUpdate.update");
                let uuid = Uuid::from_slice(&update.status.expect("a status").uuid).expect("a uuid");
                let id = update.stream_id;
                model.lock().unwrap().stats.forwards += 1;
                if let Some(uuid) = on_forward(&model, &id, uuid, &mut waiting) {
                    spawn_ack(&mut acks, id, uuid);
                }
            }
            Some(done) = acks.join_next(), if !acks.is_empty() => {
                let (id, uuid, answer) = done.expect("an ack task panicked");
                {
                    let mut model = model.lock().unwrap();
                    match answer {
                        Ok(terminated) => {
                            model.stats.acks_ok += 1;
                            model.acked_ok.insert(uuid);
                            let stream = model.streams.get_mut(&id).expect("acked stream");
                            match stream.on_ack_ok(uuid, terminated) {
                                Ok(true) => model.end(&id),
                                Ok(false) => {}
                                Err(what) => model.violation(&id, what),
                            }
                        }
                        // In flight at the kill: the restart check decides.
                        Err(None) => continue,
                        Err(Some(status)) => {
                            if let Some(stream) = model.streams.get_mut(&id) {
                                stream.ack_in_flight = None;
                            }
                            model.violation(&id, format!("the ack of {uuid} was refused: {status}"));
                        }
                    }
                }
                while let Some(next) = waiting.get_mut(&id).and_then(VecDeque::pop_front) {
                    if let Some(next) = on_forward(&model, &id, next, &mut waiting) {
                        spawn_ack(&mut acks, id.clone(), next);
                        break;
                    }
                }
            }
        }
    }
}

/// A forward of `uuid` on stream `id`: the uuid to acknowledge, if any. Waits (in
/// `waiting`) while the stream's ack is not answered, unless it is a resend of that update.
fn on_forward(
    model: &Shared,
    id: &str,
    uuid: Uuid,
    waiting: &mut HashMap<String, VecDeque<Uuid>>,
) -> Option<Uuid> {
    let mut model = model.lock().unwrap();
    let model = &mut *model;
    let Some(stream) = model.streams.get_mut(id) else {
        if model.just_ended.get(id) == Some(&uuid) {
            return None; // a resend of the terminal update that crossed its ack
        }
        let what = if model.ended.contains(id) {
            format!("{uuid} was forwarded after the stream ended")
        } else {
            format!("{uuid} was forwarded for a stream nobody wrote")
        };
        model.violation(id, what);
        return None;
    };
    match stream.ack_in_flight {
        Some(acking) if acking == uuid => return None,
        Some(_) => {
            waiting.entry(id.to_string()).or_default().push_back(uuid);
            return None;
        }
        None => {}
    }
    match stream.on_forward(uuid, &model.acked_ok) {
        Ok(OnForward::Ack) => {
            stream.ack_in_flight = Some(uuid);
            Some(uuid)
        }
        Ok(OnForward::Ignore) => None,
        Err(what) => {
            model.violation(id, what);
            None
        }
    }
}

// ---------------------------------------------------------------- checks after a restart

/// Compares what the restarted server holds with the model (see the module docs) and
/// makes the model exact again.
async fn check_restart(client: &mut Client, model: &Shared) {
    let listed: HashMap<String, pb::StreamInfo> = client
        .list_streams(pb::ListStreamsRequest::default())
        .await
        .expect("ListStreams after the restart")
        .into_inner()
        .streams
        .into_iter()
        .map(|s| (s.stream_id.clone(), s))
        .collect();
    let ids: Vec<String> = model.lock().unwrap().streams.keys().cloned().collect();
    let mut observed = HashMap::new();
    for id in ids.iter().filter(|id| listed.contains_key(*id)) {
        let info = client
            .get_stream(pb::GetStreamRequest {
                stream_id: id.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("GetStream {id} after the restart: {s}"))
            .into_inner();
        let pending: Vec<Uuid> = info
            .pending_statuses
            .iter()
            .map(|s| Uuid::from_slice(&s.uuid).expect("a uuid"))
            .collect();
        observed.insert(
            id.clone(),
            (pending, info.acknowledged as usize, info.terminated),
        );
    }

    let mut model = model.lock().unwrap();
    model.just_ended.clear();
    for id in listed.keys() {
        if !model.streams.contains_key(id) {
            let what = if model.ended.contains(id) {
                "the stream ended (terminal ack answered OK) and came back"
            } else {
                "a stream nobody wrote is listed"
            };
            model.violation(id, what);
        }
    }
    for id in ids {
        let seen = observed.get(&id);
        if let Some((_, _, true)) = seen {
            model.violation(&id, "listed as terminated after the restart");
        }
        let stream = model.streams.get_mut(&id).expect("a model stream");
        let (send_was, ack_was) = (stream.send_in_flight, stream.ack_in_flight);
        match stream.resolve(seen.map(|(q, a, _)| (&q[..], *a))) {
            Ok(resolved) => {
                let model = &mut *model;
                if let Some(kept) = resolved.send_kept {
                    model.stats.sends_in_flight += 1;
                    model.stats.sends_kept += usize::from(kept);
                }
                if let Some(kept) = resolved.ack_kept {
                    model.stats.acks_in_flight += 1;
                    model.stats.acks_kept += usize::from(kept);
                    if kept {
                        model.acked_ok.insert(ack_was.expect("an ack in flight"));
                    }
                }
                if resolved.ended {
                    model.end(&id);
                }
            }
            Err(what) => {
                let what = format!(
                    "{what} (update in flight at the kill: {send_was:?}, ack in flight: {ack_was:?})"
                );
                model.violation(&id, what);
                // Carry on from what the server shows, so that one fault is counted once.
                match seen {
                    None => model.end(&id),
                    Some((pending, acked, _)) => {
                        let stream = model.streams.get_mut(&id).expect("a model stream");
                        stream.queue = pending.iter().copied().collect();
                        stream.acked = *acked;
                        stream.send_in_flight = None;
                        stream.ack_in_flight = None;
                        stream.just_acked = None;
                    }
                }
            }
        }
    }
}

/// Waits for `tasks`, at most [`PROCESS_BOUND`]; what is left is aborted (its request stays in
/// flight in the model).
async fn join_all(tasks: &mut JoinSet<()>) -> usize {
    let deadline = tokio::time::Instant::now() + PROCESS_BOUND;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => done.expect("a crash-loop task panicked"),
            Ok(None) => break,
            Err(_) => {
                let left = tasks.len();
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return left;
            }
        }
    }
    0
}

fn env_number(key: &str) -> Option<u64> {
    let text = std::env::var(key).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={text:?} is not a number")),
    )
}

#[tokio::test]
async fn crash_loop_keeps_every_answer() {
    let cycles = env_number("SUM_CRASH_CYCLES").map_or(DEFAULT_CYCLES, |n| n as usize);
    let seed = env_number("SUM_CRASH_SEED").unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash loop: {cycles} cycles, seed {seed} (replay with SUM_CRASH_SEED={seed})");
    let started = Instant::now();
    let data = tempfile::tempdir().expect("tempdir");
    let model: Shared = Arc::new(Mutex::new(Model::new(seed)));
    let mut delays = fastrand::Rng::with_seed(seed ^ 0x5eed_de1a);
    let mut stuck = 0;

    for cycle in 0..cycles {
        let violations_before = {
            let mut model = model.lock().unwrap();
            model.cycle = cycle;
            model.violations.len()
        };
        // Odd cycles checkpoint the commit journal every 4 KiB: rotations and
        // checkpoint threads all the time, so a kill can land mid-checkpoint.
        let checkpoint_bytes = if cycle % 2 == 1 { "4096" } else { "67108864" };
        let mut server = Server::start(
            data.path(),
            &[
                ("SUM__LOG__LEVEL", "warn"),
                ("SUM__STORE__JOURNAL_CHECKPOINT_BYTES", checkpoint_bytes),
            ],
        );
        let url = server.url();
        let mut admin = connect(&url).await;
        check_restart(&mut admin, &model).await;

        let killed = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        tasks.spawn(subscribe(
            connect(&url).await,
            Arc::clone(&model),
            Arc::clone(&killed),
        ));
        for p in 0..PRODUCERS {
            let client = connect(&url).await;
            for slot in 0..SLOTS {
                let (client, model, killed) =
                    (client.clone(), Arc::clone(&model), Arc::clone(&killed));
                tasks.spawn(produce(client, model, killed, p, slot));
            }
        }
        tokio::time::sleep(Duration::from_millis(delays.u64(KILL_MIN_MS..=KILL_MAX_MS))).await;
        killed.store(true, Ordering::SeqCst);
        server.kill();
        stuck += join_all(&mut tasks).await;
        let found = model.lock().unwrap().violations.len();
        if found > violations_before {
            eprintln!("server stderr of cycle {cycle}:\n{}", server.stderr());
        }
    }

    // The last restart: check, then walk every queue to its end.
    let last_stderr = drain(data.path(), &model, cycles).await;

    let model = model.lock().unwrap();
    let stats = &model.stats;
    eprintln!(
        "crash loop: {cycles} cycles, {} updates, {} acks, {} violations",
        stats.updates_ok,
        stats.acks_ok,
        model.violations.len()
    );
    eprintln!(
        "  seed {seed}; {} streams started, {} ended, {} open; {} forwards; in flight at a \
         kill: {} updates ({} kept), {} acks ({} took effect); {stuck} tasks aborted; {:.1} s",
        stats.streams,
        stats.streams_ended,
        model.streams.len(),
        stats.forwards,
        stats.sends_in_flight,
        stats.sends_kept,
        stats.acks_in_flight,
        stats.acks_kept,
        started.elapsed().as_secs_f64()
    );
    if !model.violations.is_empty() {
        let first: Vec<&String> = model.violations.iter().take(20).collect();
        panic!(
            "{} violations (seed {seed}), the first: {first:#?}\nlast server stderr:\n{last_stderr}",
            model.violations.len()
        );
    }
    // The loop really crashed mid-traffic and exercised what it claims to.
    assert!(stats.updates_ok > 0 && stats.acks_ok > 0, "{stats:?}");
    assert!(
        cycles < 10 || (stats.sends_in_flight > 0 && stats.streams_ended > 0),
        "no update was in flight at any kill, or no stream ended: {stats:?}"
    );
}

/// The last restart: checks it, acknowledges every forward until nothing is pending, and
/// checks that exactly the streams that have not ended are listed, with nothing pending.
/// Returns the server's stderr.
async fn drain(data_dir: &std::path::Path, model: &Shared, cycles: usize) -> String {
    model.lock().unwrap().cycle = cycles;
    let server = Server::start(data_dir, &[("SUM__LOG__LEVEL", "warn")]);
    let url = server.url();
    let mut admin = connect(&url).await;
    check_restart(&mut admin, model).await;
    let killed = Arc::new(AtomicBool::new(false));
    let subscriber = tokio::spawn(subscribe(
        connect(&url).await,
        Arc::clone(model),
        Arc::clone(&killed),
    ));
    let deadline = Instant::now() + PROCESS_BOUND;
    loop {
        let pending: usize = {
            let model = model.lock().unwrap();
            model.streams.values().map(|s| s.queue.len()).sum()
        };
        if pending == 0 {
            break;
        }
        if Instant::now() >= deadline || subscriber.is_finished() {
            let what =
                format!("{pending} updates still pending {PROCESS_BOUND:?} after the last restart");
            model.lock().unwrap().violation("-", what);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Streams with an update (a stream whose first update was lost at a kill has none);
    // a terminal ack is answered before its stream leaves the table: poll.
    let open: HashSet<String> = {
        let model = model.lock().unwrap();
        let streams = model.streams.iter();
        streams
            .filter(|(_, s)| s.existing() > 0)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let listed = loop {
        let listed = admin
            .list_streams(pb::ListStreamsRequest::default())
            .await
            .expect("ListStreams at the end")
            .into_inner()
            .streams;
        let shown: HashSet<String> = listed.iter().map(|s| s.stream_id.clone()).collect();
        if shown == open || Instant::now() >= deadline {
            break listed;
        }
        tokio::time::sleep(POLL).await;
    };
    killed.store(true, Ordering::SeqCst);
    subscriber.abort();
    let mut model = model.lock().unwrap();
    let shown: HashSet<String> = listed.iter().map(|s| s.stream_id.clone()).collect();
    if open != shown {
        let what = format!("listed {shown:?}, expected the open streams {open:?}");
        model.violation("-", what);
    }
    for info in listed.iter().filter(|info| info.pending != 0) {
        let what = format!("{} updates still pending at the end", info.pending);
        model.violation(&info.stream_id, what);
    }
    server.stderr()
}

// ---------------------------------------------------------------- the checker itself

fn uuids(n: usize) -> Vec<Uuid> {
    (0..n).map(|i| Uuid::from_u128(i as u128 + 1)).collect()
}

/// Two pending (u0, u1), u0's ack in flight, u2 (terminal) in flight.
fn model_with_both_in_flight(u: &[Uuid]) -> StreamModel {
    StreamModel {
        producer: 0,
        planned: 4,
        queue: VecDeque::from(vec![u[0], u[1]]),
        acked: 1,
        terminal: Some(u[2]),
        send_in_flight: Some(u[2]),
        ack_in_flight: Some(u[0]),
        just_acked: None,
    }
}

#[test]
fn resolve_accepts_exactly_what_the_requests_in_flight_allow() {
    let u = uuids(4);
    let cases: [(Observed, bool); 9] = [
        (Some((&[u[0], u[1]], 1)), true),        // neither took effect
        (Some((&[u[1]], 2)), true),              // the ack did
        (Some((&[u[0], u[1], u[2]], 1)), true),  // the update did
        (Some((&[u[1], u[2]], 2)), true),        // both did
        (Some((&[u[1]], 1)), false),             // u0 lost, ack count says not acked
        (Some((&[u[0]], 1)), false),             // u1 (answered OK) lost
        (Some((&[u[1], u[0]], 1)), false),       // out of order
        (Some((&[u[0], u[1], u[3]], 1)), false), // something never sent
        (None, false),                           // the stream lost
    ];
    for (i, (observed, ok)) in cases.into_iter().enumerate() {
        let mut model = model_with_both_in_flight(&u);
        let result = model.resolve(observed);
        assert_eq!(result.is_ok(), ok, "case {i}: {result:?}");
        if ok {
            let (queue, acked) = observed.unwrap();
            assert_eq!(Vec::from(model.queue.clone()), queue, "case {i}");
            assert_eq!(model.acked, acked, "case {i}");
            assert!(model.send_in_flight.is_none() && model.ack_in_flight.is_none());
        }
    }

    // A terminal head whose ack was in flight: gone, or still pending; nothing else.
    let terminal_head = || StreamModel {
        planned: 2,
        queue: VecDeque::from(vec![u[1]]),
        acked: 1,
        terminal: Some(u[1]),
        ack_in_flight: Some(u[1]),
        ..StreamModel::default()
    };
    let cases: [(Observed, bool); 3] = [
        (None, true),
        (Some((&[u[1]], 1)), true),
        (Some((&[], 2)), false),
    ];
    for (i, (observed, ok)) in cases.into_iter().enumerate() {
        let result = terminal_head().resolve(observed);
        assert_eq!(result.is_ok(), ok, "terminal case {i}: {result:?}");
        assert_eq!(result.is_ok_and(|r| r.ended), ok && observed.is_none());
    }

    // A first update in flight: the stream may not exist at all.
    let first = || StreamModel {
        planned: 3,
        send_in_flight: Some(u[0]),
        ..StreamModel::default()
    };
    assert!(first().resolve(None).is_ok());
    assert!(first().resolve(Some((&[u[0]], 0))).is_ok());
    assert!(
        first().resolve(Some((&[], 0))).is_err(),
        "an empty stream is not kept"
    );
}

#[test]
fn forwards_must_follow_the_queue() {
    let u = uuids(4);
    let acked: HashSet<Uuid> = [u[0]].into();
    let mut model = StreamModel {
        planned: 4,
        queue: VecDeque::from(vec![u[1]]),
        acked: 1,
        send_in_flight: Some(u[2]),
        ..StreamModel::default()
    };
    assert!(model
        .on_forward(u[0], &acked)
        .unwrap_err()
        .contains("answered OK"));
    assert!(model.on_forward(u[2], &acked).is_err(), "u1 skipped");
    assert_eq!(model.on_forward(u[1], &acked), Ok(OnForward::Ack));
    assert_eq!(
        model.on_forward(u[1], &acked),
        Ok(OnForward::Ack),
        "a resend of the head"
    );
    assert_eq!(model.on_ack_ok(u[1], false), Ok(false));
    assert_eq!(
        model.on_forward(u[1], &acked),
        Ok(OnForward::Ignore),
        "crossed the ack"
    );
    // u2 is forwarded before its producer read the answer.
    assert_eq!(model.on_forward(u[2], &acked), Ok(OnForward::Ack));
    assert_eq!(Vec::from(model.queue.clone()), vec![u[2]]);
    assert!(model.send_in_flight.is_none());
    assert!(
        model.on_forward(u[1], &acked).is_err(),
        "no longer just acked"
    );
}
