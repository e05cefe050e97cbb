//! `RetryTimers`: one timer queue for the retry timers of every stream of a
//! manager, instead of one tokio timer per stream.
//!
//! A stream keeps its own deadline (`due`) and asks this queue to wake it
//! at some instant ([`RetryTimers::wake_at`]); when that instant passes, the
//! queue sends the stream a [`Due`] message and the stream decides, from
//! its own deadline, whether to act, to ask again for later, or to do
//! nothing (its timer was cancelled meanwhile). Cancelling and re-arming
//! never touch the queue, and a stream that already has a wake-up at or
//! before its new deadline asks for none: in the steady state of
//! forward → ack → forward, each stream has one entry at most, however many
//! times it re-arms. An entry also holds the count of the stream's mailbox
//! ([`MailboxFigures`]), which the `Due` it sends is counted in.
//!
//! **Why.** A tokio timer armed through an actor's context costs each
//! stream a boxed timer future, its timer entry and the callback, and an
//! arm plus a cancel per forward. An entry here is a deadline and a weak
//! address (the queue never keeps a stream alive) in one binary heap, and
//! costs nothing to cancel (see BENCHMARKS.md, Figures behind design
//! choices).
//!
//! **Driver.** One task per queue, spawned on the arbiter of the first
//! stream that asks, sleeps until the earliest deadline (tokio time, so
//! paused-time tests drive it with `advance` like any timer) and is woken
//! early when an earlier one arrives. It ends once the queue is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use actix::prelude::*;
use actix::WeakAddr;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::messages::mailbox::MailboxFigures;

/// The wake-up a stream asked for: `at` has passed.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    /// The instant the stream asked to be woken at.
    pub at: Instant,
}

impl Message for Due {
    type Result = ();
}

/// The timer queue shared by the streams of one manager; see the module docs.
pub struct RetryTimers<A: Actor + Handler<Due>>
where
    A::Context: actix::dev::ToEnvelope<A, Due>,
{
    queue: Mutex<Queue<A>>,
    /// Wakes the driver when an entry earlier than its sleep arrives, or
    /// when the queue is dropped.
    wake: Arc<Notify>,
}

struct Queue<A: Actor> {
    heap: BinaryHeap<Reverse<Entry<A>>>,
    /// The instant the driver sleeps until (`None`: it waits for an entry).
    target: Option<Instant>,
    driver_started: bool,
}

struct Entry<A: Actor> {
    at: Instant,
    stream: WeakAddr<A>,
    mailbox: Arc<MailboxFigures>,
}

impl<A: Actor> PartialEq for Entry<A> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl<A: Actor> Eq for Entry<A> {}

impl<A: Actor> PartialOrd for Entry<A> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<A: Actor> Ord for Entry<A> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl<A> std::fmt::Debug for RetryTimers<A>
where
    A: Actor + Handler<Due>,
    A::Context: actix::dev::ToEnvelope<A, Due>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.lock();
        f.debug_struct("RetryTimers")
            .field("entries", &queue.heap.len())
            .field("target", &queue.target)
            .finish()
    }
}

impl<A> Default for RetryTimers<A>
where
    A: Actor + Handler<Due>,
    A::Context: actix::dev::ToEnvelope<A, Due>,
{
    fn default() -> Self {
        RetryTimers {
            queue: Mutex::new(Queue {
                heap: BinaryHeap::new(),
                target: None,
                driver_started: false,
            }),
            wake: Arc::new(Notify::new()),
        }
    }
}

impl<A> RetryTimers<A>
where
    A: Actor + Handler<Due>,
    A::Context: actix::dev::ToEnvelope<A, Due>,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<A>> {
        // The queue holds no invariant a panicking holder could break.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `stream` a [`Due`] once `at` has passed, counted in `mailbox`
    /// (the count of the stream's mailbox). Must be called on an arbiter
    /// (the first call spawns the driver there).
    pub fn wake_at(
        self: &Arc<Self>,
        at: Instant,
        stream: WeakAddr<A>,
        mailbox: &Arc<MailboxFigures>,
    ) {
        let mailbox = mailbox.clone();
        let mut queue = self.lock();
        queue.heap.push(Reverse(Entry {
            at,
            stream,
            mailbox,
        }));
        if !queue.driver_started {
            queue.driver_started = true;
            actix_rt::spawn(drive(Arc::downgrade(self), self.wake.clone()));
        }
        if queue.target.is_none_or(|target| at < target) {
            queue.target = Some(at);
            self.wake.notify_one();
        }
    }

    /// Entries waiting (for tests and figures).
    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    /// Whether no entry is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends every entry due at `now`; returns the next deadline, which
    /// the driver then sleeps until.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut queue = self.lock();
            while queue.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(entry)) = queue.heap.pop() {
                    due.push(entry);
                }
            }
            queue.target = queue.heap.peek().map(|Reverse(e)| e.at);
            queue.target
        };
        // Outside the lock: a stream stopped meanwhile is simply skipped.
        for entry in due {
            if let Some(stream) = entry.stream.upgrade() {
                entry.mailbox.enqueued();
                match stream.try_send(Due { at: entry.at }) {
                    Ok(()) => {}
                    Err(SendError::Full(due)) => stream.do_send(due),
                    Err(SendError::Closed(_)) => entry.mailbox.unsent(),
                }
            }
        }
        next
    }
}

impl<A> Drop for RetryTimers<A>
where
    A: Actor + Handler<Due>,
    A::Context: actix::dev::ToEnvelope<A, Due>,
{
    fn drop(&mut self) {
        // Let the driver see the queue is gone and end.
        self.wake.notify_one();
    }
}

/// The driver task: sleeps until the earliest entry, sends what is due.
async fn drive<A>(timers: Weak<RetryTimers<A>>, wake: Arc<Notify>)
where
    A: Actor + Handler<Due>,
    A::Context: actix::dev::ToEnvelope<A, Due>,
{
    loop {
        let next = match timers.upgrade() {
            Some(timers) => timers.fire(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Records every `Due` it gets.
    struct Sleeper(tokio::sync::mpsc::UnboundedSender<Instant>);

    impl Actor for Sleeper {
        type Context = Context<Self>;
    }

    impl Handler<Due> for Sleeper {
        type Result = ();
        fn handle(&mut self, msg: Due, _: &mut Context<Self>) {
            let _ = self.0.send(msg.at);
        }
    }

    /// Woken at `at`, give or take tokio's 1 ms timer resolution.
    fn assert_on_time(at: Instant) {
        let now = Instant::now();
        assert!(
            now >= at && now - at <= Duration::from_millis(1),
            "woken {:?} after its instant",
            now.checked_duration_since(at)
        );
    }

    #[actix_rt::test]
    async fn wakes_each_stream_at_its_instant_in_order() {
        tokio::time::pause();
        let timers = Arc::new(RetryTimers::<Sleeper>::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let a = Sleeper(tx.clone()).start();
        let b = Sleeper(tx).start();
        let start = Instant::now();
        let (late, early) = (
            start + Duration::from_secs(10),
            start + Duration::from_secs(3),
        );
        let mailbox = Arc::default();
        timers.wake_at(late, a.downgrade(), &mailbox);
        // An earlier entry wakes the driver out of its longer sleep.
        timers.wake_at(early, b.downgrade(), &mailbox);
        assert_eq!(timers.len(), 2);

        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "nothing is due before 3 s");

        assert_eq!(rx.recv().await, Some(early));
        assert_on_time(early);
        assert_eq!(rx.recv().await, Some(late));
        assert_on_time(late);
        assert!(timers.is_empty());
        // Each wake-up was counted into the mailbox it was sent to (the
        // sleepers do not count what they take).
        assert_eq!(mailbox.backlog(), 2);
    }

    #[actix_rt::test]
    async fn a_stopped_stream_is_skipped_and_the_driver_ends_with_the_queue() {
        tokio::time::pause();
        let timers = Arc::new(RetryTimers::<Sleeper>::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let gone = Sleeper(tx.clone()).start();
        let alive = Sleeper(tx).start();
        let now = Instant::now();
        let alive_mailbox = Arc::default();
        timers.wake_at(
            now + Duration::from_secs(1),
            gone.downgrade(),
            &Arc::default(),
        );
        timers.wake_at(
            now + Duration::from_secs(2),
            alive.downgrade(),
            &alive_mailbox,
        );
        drop(gone);
        assert_eq!(rx.recv().await, Some(now + Duration::from_secs(2)));
        assert!(timers.is_empty());
        // Counted into the mailbox of the stream it was sent to.
        assert_eq!(alive_mailbox.backlog(), 1);

        let wake = timers.wake.clone();
        drop(timers);
        // The driver held the only other reference to the notifier; once it
        // has ended, ours is the last one.
        while Arc::strong_count(&wake) > 1 {
            tokio::task::yield_now().await;
        }
    }
}
