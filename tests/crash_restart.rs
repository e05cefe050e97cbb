//! The SIGKILL acceptance test: an update answered OK survives a crash, an ack answered OK
//! is never undone by one (API.md §1, `Update` and `Acknowledge`), and per-stream order holds
//! across the restart.
//!
//! The built server runs as a child process with its data in a temporary directory and the
//! default `store.sync = "batch"`. Phase 1 sends a batch of updates over several streams
//! concurrently, with no subscriber. Phase 2 subscribes and acknowledges forwards as they
//! arrive while more updates are being sent; once enough acks were answered OK, the server
//! is killed with SIGKILL with sends and acks in flight. Every request's outcome is kept in
//! a ledger: answered OK, or unknown (in flight or failed when the server died). Phase 3
//! restarts the server on the same directory, subscribes, and acknowledges each forward as it
//! arrives, walking each stream's queue, until no stream has anything pending. Then, per
//! stream: no update whose ack was answered OK came again; every update answered OK and not
//! acknowledged came; and what came is a run of the stream's send order, starting right after
//! the last ack answered OK (or the one after, if the ack in flight at the kill was recorded)
//! and ending at the last update answered OK or the one in flight after it.
//!
//! Every wait is bounded ([`PROCESS_BOUND`]) and waits for a condition; the server is killed
//! when the test fails ([`Server`]'s `Drop`).
#![cfg(feature = "service")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::process::{connect, Server};
use common::{POLL, PROCESS_BOUND};
use status_update_manager::proto::status_update_manager::v1 as pb;
use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use uuid::Uuid;

/// Streams written concurrently.
const STREAMS: usize = 6;
/// Updates per stream sent before anyone subscribes.
const FIRST_BATCH: usize = 20;
/// Most updates per stream sent while acks flow; the kill comes long before.
const SECOND_BATCH: usize = 10_000;
/// The server is killed once this many acks were answered OK.
const KILL_AFTER_ACKS: usize = STREAMS * FIRST_BATCH / 2;

type Client = StatusUpdateManagerClient<Channel>;

/// What the server answered for one stream's requests.
#[derive(Debug, Default)]
struct StreamLedger {
    /// Every update sent, in send order, and whether it was answered OK (`false`: the
    /// answer is unknown, the server died).
    sent: Vec<(Uuid, bool)>,
    /// Acks answered OK, in order (always a prefix of `sent`: only the head is acked).
    acked: Vec<Uuid>,
    /// The ack in flight when the server died, if any.
    ack_unknown: Option<Uuid>,
}

type Ledger = Arc<Mutex<Vec<StreamLedger>>>;

fn stream_id(index: usize) -> String {
    format!("stream-{index}")
}

fn stream_index(id: &str) -> usize {
    id.strip_prefix("stream-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a forward for an unknown stream {id:?}"))
}

fn update(stream: usize, uuid: Uuid, n: usize) -> pb::UpdateRequest {
    pb::UpdateRequest {
        update: Some(pb::StatusUpdate {
            stream_id: stream_id(stream),
            framework_id: "fw".into(),
            status: Some(pb::Status {
                uuid: uuid.as_bytes().to_vec(),
                state: format!("STEP_{n}"),
                ..pb::Status::default()
            }),
            latest_status: None,
        }),
        memory_only: false,
    }
}

/// Sends `count` updates on each stream, the streams concurrently and each stream's in
/// order; a stream stops at its first failure (the server died).
async fn send_batches(client: &Client, ledger: &Ledger, count: usize) {
    let mut senders = JoinSet::new();
    for stream in 0..STREAMS {
        let mut client = client.clone();
        let ledger = Arc::clone(ledger);
        senders.spawn(async move {
            for n in 0..count {
                let uuid = Uuid::new_v4();
                let at = {
                    let mut ledger = ledger.lock().unwrap();
                    ledger[stream].sent.push((uuid, false));
                    ledger[stream].sent.len() - 1
                };
                match client.update(update(stream, uuid, n)).await {
                    Ok(response) => {
                        assert!(!response.get_ref().duplicate, "{uuid} is new");
                        ledger.lock().unwrap()[stream].sent[at].1 = true;
                    }
                    Err(_) => return,
                }
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.expect("a sender panicked");
    }
}

fn uuid_of(forward: &pb::ForwardedUpdate) -> (usize, Uuid) {
    let update = forward.update.as_ref().expect("ForwardedUpdate.update");
    let status = update.status.as_ref().expect("StatusUpdate.status");
    let uuid = Uuid::from_slice(&status.uuid).expect("a 16-byte uuid");
    (stream_index(&update.stream_id), uuid)
}

/// Phase 2's subscriber: checks each forward is the next unacknowledged update in send
/// order, acks it, records the outcome, and reports the number of OK acks; stops when the
/// server dies.
async fn ack_until_killed(
    mut client: Client,
    ledger: Ledger,
    acks: tokio::sync::watch::Sender<usize>,
) {
    let request = pb::SubscribeRequest {
        subscriber: "crash-test".into(),
    };
    let Ok(response) = client.subscribe(request).await else {
        return;
    };
    let mut forwards = response.into_inner();
    while let Ok(Some(forward)) = forwards.message().await {
        let (stream, uuid) = uuid_of(&forward);
        {
            let mut ledger = ledger.lock().unwrap();
            let entry = &mut ledger[stream];
            if entry.acked.last() == Some(&uuid) {
                continue; // a resend that crossed our ack
            }
            let next = entry.sent.get(entry.acked.len()).map(|(u, _)| *u);
            assert_eq!(
                Some(uuid),
                next,
                "{}: forwarded out of order before the crash",
                stream_id(stream)
            );
            entry.ack_unknown = Some(uuid);
        }
        let ack = pb::AcknowledgeRequest {
            stream_id: stream_id(stream),
            status_uuid: uuid.as_bytes().to_vec(),
        };
        if client.acknowledge(ack).await.is_err() {
            return;
        }
        let total = {
            let mut ledger = ledger.lock().unwrap();
            let entry = &mut ledger[stream];
            entry.acked.push(uuid);
            entry.ack_unknown = None;
            ledger.iter().map(|s| s.acked.len()).sum()
        };
        acks.send_replace(total);
    }
}

/// What phase 3 saw of one stream: the distinct updates forwarded, in arrival order.
type Seen = Arc<Mutex<Vec<Vec<Uuid>>>>;

/// Phase 3's subscriber: records each forward and acks it, walking the queues.
async fn ack_after_restart(mut client: Client, seen: Seen) {
    let request = pb::SubscribeRequest {
        subscriber: "after-restart".into(),
    };
    let mut forwards = client
        .subscribe(request)
        .await
        .expect("subscribe after the restart")
        .into_inner();
    let mut first_attempt: HashMap<Uuid, u32> = HashMap::new();
    while let Some(forward) = forwards.message().await.expect("the subscription") {
        let (stream, uuid) = uuid_of(&forward);
        first_attempt.entry(uuid).or_insert(forward.attempt);
        assert_eq!(
            first_attempt[&uuid], 0,
            "the first send of {uuid} by the restarted server has attempt 0"
        );
        {
            let mut seen = seen.lock().unwrap();
            if seen[stream].last() == Some(&uuid) {
                continue; // a resend that crossed our ack
            }
            seen[stream].push(uuid);
        }
        let ack = pb::AcknowledgeRequest {
            stream_id: stream_id(stream),
            status_uuid: uuid.as_bytes().to_vec(),
        };
        client
            .acknowledge(ack)
            .await
            .unwrap_or_else(|e| panic!("ack of {uuid} after the restart: {e}"));
    }
}

/// Checks one stream's forwards after the restart against what was answered before the
/// crash (see the module docs).
fn check_stream(stream: usize, before: &StreamLedger, after: &[Uuid]) {
    let id = stream_id(stream);
    let order: Vec<Uuid> = before.sent.iter().map(|(u, _)| *u).collect();
    let acked = before.acked.len();
    assert_eq!(
        before.acked,
        order[..acked],
        "{id}: acks answered OK are a prefix of the send order"
    );
    for uuid in after {
        assert!(
            !before.acked.contains(uuid),
            "{id}: {uuid} was acknowledged (answered OK) before the crash and came again"
        );
    }
    if let Some(unknown) = before.ack_unknown {
        assert_eq!(
            unknown, order[acked],
            "{id}: the ack in flight was the head's"
        );
    }
    // Where the run starts: right after the last OK ack, or after the ack in flight when
    // that ack was recorded (what came first tells; if nothing came, it must have been).
    let start = match (after.first(), before.ack_unknown) {
        (Some(first), Some(unknown)) if *first != unknown => acked + 1,
        (None, Some(_)) => acked + 1,
        _ => acked,
    };
    let end = start + after.len();
    assert!(
        end <= order.len() && after == &order[start..end],
        "{id}: forwards after the restart are not the send order from #{start}: \
         got {after:?}, sent {order:?}"
    );
    // Every update answered OK and not acknowledged came.
    if let Some(last_ok) = before.sent.iter().rposition(|(_, ok)| *ok) {
        assert!(
            end > last_ok,
            "{id}: updates answered OK up to #{last_ok} but only #{start}..#{end} came again"
        );
    }
}

/// Waits until `at_least` acks were answered OK.
async fn wait_for_acks(
    acks: &mut tokio::sync::watch::Receiver<usize>,
    at_least: usize,
    server: &Server,
) {
    let enough = tokio::time::timeout(PROCESS_BOUND, acks.wait_for(|n| *n >= at_least));
    if !matches!(enough.await, Ok(Ok(_))) {
        panic!(
            "fewer than {at_least} acks answered within {PROCESS_BOUND:?}: {}\nserver stderr:\n{}",
            *acks.borrow(),
            server.stderr()
        );
    }
}

#[tokio::test]
async fn sigkill_loses_no_answered_update_and_undoes_no_answered_ack() {
    let data = tempfile::tempdir().expect("tempdir");
    let ledger: Ledger = Arc::new(Mutex::new(
        (0..STREAMS).map(|_| StreamLedger::default()).collect(),
    ));

    // Phase 1: a batch of updates, nobody subscribed.
    let mut server = Server::start(data.path(), &[]);
    let client = connect(&server.url()).await;
    send_batches(&client, &ledger, FIRST_BATCH).await;
    {
        let ledger = ledger.lock().unwrap();
        for (i, stream) in ledger.iter().enumerate() {
            assert!(
                stream.sent.iter().all(|(_, ok)| *ok),
                "stream-{i}: every update of the first batch is answered OK"
            );
        }
    }

    // Phase 2: ack as forwards arrive while more updates are sent; SIGKILL mid-flight.
    let (acks_tx, mut acks) = tokio::sync::watch::channel(0usize);
    let subscriber = tokio::spawn(ack_until_killed(
        client.clone(),
        Arc::clone(&ledger),
        acks_tx,
    ));
    wait_for_acks(&mut acks, KILL_AFTER_ACKS / 2, &server).await;
    let senders = {
        let (client, ledger) = (client.clone(), Arc::clone(&ledger));
        tokio::spawn(async move { send_batches(&client, &ledger, SECOND_BATCH).await })
    };
    wait_for_acks(&mut acks, KILL_AFTER_ACKS, &server).await;
    server.kill();
    let stopped = tokio::time::timeout(PROCESS_BOUND, async {
        subscriber.await.expect("the phase 2 subscriber panicked");
        senders.await.expect("a phase 2 sender panicked");
    })
    .await;
    assert!(
        stopped.is_ok(),
        "requests still pending {PROCESS_BOUND:?} after SIGKILL"
    );
    drop(client);

    // Phase 3: restart on the same directory; walk every queue by acking each forward.
    let server = Server::start(data.path(), &[]);
    let client = connect(&server.url()).await;
    let seen: Seen = Arc::new(Mutex::new(vec![Vec::new(); STREAMS]));
    let subscriber = tokio::spawn(ack_after_restart(client.clone(), Arc::clone(&seen)));
    let deadline = Instant::now() + PROCESS_BOUND;
    let mut list = client.clone();
    loop {
        let streams = list
            .list_streams(pb::ListStreamsRequest::default())
            .await
            .expect("ListStreams after the restart")
            .into_inner()
            .streams;
        let pending: u32 = streams.iter().map(|s| s.pending).sum();
        if pending == 0 {
            break;
        }
        assert!(!subscriber.is_finished(), "the subscriber stopped early");
        assert!(
            Instant::now() < deadline,
            "{pending} updates still pending {PROCESS_BOUND:?} after the restart; seen {:?}\nserver stderr:\n{}",
            seen.lock().unwrap().iter().map(Vec::len).collect::<Vec<_>>(),
            server.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    subscriber.abort();

    let ledger = ledger.lock().unwrap();
    let seen = seen.lock().unwrap();
    let (mut acked, mut sent_ok, mut came) = (0, 0, 0);
    for (stream, before) in ledger.iter().enumerate() {
        check_stream(stream, before, &seen[stream]);
        acked += before.acked.len();
        sent_ok += before.sent.iter().filter(|(_, ok)| *ok).count();
        came += seen[stream].len();
    }
    let unknown_sends = ledger
        .iter()
        .filter(|s| s.sent.iter().any(|(_, ok)| !*ok))
        .count();
    let unknown_acks = ledger.iter().filter(|s| s.ack_unknown.is_some()).count();
    eprintln!(
        "before the kill: {sent_ok} updates and {acked} acks answered OK, {unknown_sends} \
         updates and {unknown_acks} acks in flight; after the restart: {came} forwarded"
    );
    // The scenario really crashed mid-way: some acks recorded, some updates left, every
    // stream with a send in flight.
    assert!(acked >= KILL_AFTER_ACKS, "{acked} acks");
    assert_eq!(
        unknown_sends, STREAMS,
        "every stream had a send in flight at the kill"
    );
    assert!(
        came > 0 && sent_ok > acked,
        "{came} forwarded after the restart"
    );
}

/// The checker itself: what it must accept and what it must reject.
#[test]
fn check_stream_rejects_lost_updates_and_undone_acks() {
    let u: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    // Sent u0..u3 answered OK, u4 unknown; u0 acked OK, the ack of u1 in flight.
    let before = StreamLedger {
        sent: vec![
            (u[0], true),
            (u[1], true),
            (u[2], true),
            (u[3], true),
            (u[4], false),
        ],
        acked: vec![u[0]],
        ack_unknown: Some(u[1]),
    };
    let cases: [(&[Uuid], bool); 8] = [
        (&[u[1], u[2], u[3]], true),        // the ack in flight was lost
        (&[u[2], u[3]], true),              // it was recorded
        (&[u[2], u[3], u[4]], true),        // the send in flight was recorded too
        (&[u[0], u[1], u[2], u[3]], false), // an OK ack undone
        (&[u[1], u[3]], false),             // u2 lost
        (&[u[1], u[2]], false),             // u3 (answered OK) lost
        (&[u[1], u[3], u[2]], false),       // out of order
        (&[], false),                       // everything lost
    ];
    for (i, (after, accepted)) in cases.into_iter().enumerate() {
        let result = std::panic::catch_unwind(|| check_stream(0, &before, after));
        assert_eq!(result.is_ok(), accepted, "case {i}");
    }
}
