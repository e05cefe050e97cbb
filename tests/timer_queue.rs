//! The streams of a manager share one retry-timer queue
//! (`actors::timers`): a stream keeps its own deadline and asks the queue
//! for a wake-up only when none is due at or before it. These tests drive
//! one stream actor directly (no file) on paused tokio time and check
//! that forward/ack churn leaves one entry, and that a deadline set later
//! than the outstanding wake-up still fires on time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use status_update_manager::actors::stream::{
    StreamActor, StreamInit, StreamSettings, StreamShared,
};
use status_update_manager::actors::timers::RetryTimers;
use status_update_manager::kind::Native;
use status_update_manager::messages::manager::StreamEnded;
use status_update_manager::messages::stream::{StreamAck, StreamUpdate};
use status_update_manager::messages::Forward;
use status_update_manager::metrics::StreamMetrics;
use status_update_manager::store::{Committer, FileCache, SyncPolicy};
use status_update_manager::stream::{RetryPolicy, StreamState};

/// Stands in for the manager: stream ends are not part of these tests.
struct NoManager;

impl Actor for NoManager {
    type Context = Context<Self>;
}

impl Handler<StreamEnded<Native>> for NoManager {
    type Result = ();
    fn handle(&mut self, _: StreamEnded<Native>, _: &mut Context<Self>) {}
}

/// One stream under test and what it is wired to.
struct Wired {
    stream: Addr<StreamActor<Native>>,
    timers: Arc<RetryTimers<StreamActor<Native>>>,
    forwards: tokio::sync::mpsc::UnboundedReceiver<Forward<Native>>,
    /// Kept alive for the stream's weak reference.
    _manager: Addr<NoManager>,
}

/// A memory-only stream "s" with the default retry schedule, its timer
/// queue, and the channel its forwards arrive on.
fn stream() -> Wired {
    let (forward, forwards) = probe::<Native>();
    let manager = NoManager.start();
    let timers = Arc::new(RetryTimers::default());
    let shared = Arc::new(StreamShared {
        settings: StreamSettings {
            retry: RetryPolicy::default(),
            sync: SyncPolicy::None,
            max_pending: 1000,
            remove_finished: false,
            faults: None,
            quarantine_dir: None,
            committer: Committer::inline(),
            files: FileCache::new(4),
        },
        forward,
        manager: manager.downgrade().recipient(),
        timers: timers.clone(),
        metrics: StreamMetrics::register(),
    });
    let addr = StreamActor::start(StreamInit {
        state: StreamState::new("s".to_string(), false, None),
        log: None,
        path: None,
        shared,
        paused: false,
        mailbox: Arc::default(),
    });
    Wired {
        stream: addr,
        timers,
        forwards,
        _manager: manager,
    }
}

async fn update(stream: &Addr<StreamActor<Native>>, state: &str) -> uuid::Uuid {
    let update = native_update("s", state, false, "");
    let uuid = native_uuid(&update);
    stream
        .send(StreamUpdate {
            update,
            uuid,
            checkpoint: false,
            reply: None,
            sent_at: tokio::time::Instant::now(),
        })
        .await
        .expect("stream mailbox");
    uuid
}

async fn ack(stream: &Addr<StreamActor<Native>>, uuid: uuid::Uuid) {
    stream
        .send(StreamAck {
            uuid,
            reply: None,
            sent_at: tokio::time::Instant::now(),
        })
        .await
        .expect("stream mailbox");
}

#[actix::test]
async fn forward_ack_churn_leaves_one_wakeup() {
    tokio::time::pause();
    let Wired {
        stream,
        timers,
        mut forwards,
        _manager,
    } = stream();
    for n in 0..100 {
        let uuid = update(&stream, &format!("S{n}")).await;
        let forward = recv_or_fail(&mut forwards, "forward").await;
        assert_eq!(forward.attempt, 0);
        ack(&stream, uuid).await;
    }
    // 100 forwards each armed the retry timer; the first wake-up asked
    // for (10 s out) covers every later deadline.
    assert_eq!(timers.len(), 1, "one wake-up for 100 arms");

    // Nothing is pending: the wake-up (at 10 s, give or take tokio's 1 ms
    // timer resolution) finds nothing to do and asks for none.
    advance(MIN + Duration::from_millis(1)).await;
    assert!(timers.is_empty());
    assert_no_forward(&mut forwards, "nothing pending").await;
}

#[actix::test]
async fn a_later_deadline_fires_on_time_behind_an_earlier_wakeup() {
    tokio::time::pause();
    let Wired {
        stream,
        timers,
        mut forwards,
        _manager,
    } = stream();
    let first = update(&stream, "STARTING").await;
    recv_or_fail(&mut forwards, "first forward").await;
    ack(&stream, first).await;

    // 4 s later the next update is forwarded: its retry is due at 14 s,
    // behind the wake-up at 10 s the first one asked for.
    advance(Duration::from_secs(4)).await;
    update(&stream, "RUNNING").await;
    recv_or_fail(&mut forwards, "second forward").await;
    assert_eq!(timers.len(), 1, "no new wake-up: 10 s comes first");

    // At 10 s the stream is woken, finds its deadline later and asks again.
    advance(Duration::from_secs(6)).await;
    assert_no_forward(&mut forwards, "before the retry is due").await;
    assert_eq!(timers.len(), 1, "the wake-up for 14 s");

    advance(Duration::from_secs(4) - Duration::from_millis(1)).await;
    assert_no_forward(&mut forwards, "1 ms before the retry is due").await;
    advance(Duration::from_millis(2)).await;
    let resend = recv_or_fail(&mut forwards, "the retry at 14 s").await;
    assert_eq!(resend.attempt, 1);
}
