//! `MailboxFigures`: the count of one stream actor's mailbox.
//!
//! actix keeps the length of an actor's mailbox to itself, so each stream
//! counts its own: whoever enqueues a message on a stream counts it
//! ([`enqueued`](MailboxFigures::enqueued), before the send, taken back
//! with [`unsent`](MailboxFigures::unsent) if the mailbox was closed), and
//! the stream's actor counts each message it takes
//! ([`took`](MailboxFigures::took), first thing in every handler). The
//! backlog is the difference. The senders are the manager (routed updates
//! and acks, `SetPaused`, `Close`, `GetStats`, `SyncNow`), a
//! [`StreamHandle`](crate::messages::StreamHandle), a
//! [`Forward`](crate::messages::Forward)'s acknowledgement, the committer
//! (`Durable`) and the retry timer queue (`Due`); a message sent to the
//! actor's address by anyone else (a test driving the actor directly) is
//! handled but not counted as sent, and the backlog reads 0 rather than
//! below.
//!
//! **Two counters, not one queued count.** Only the actor writes
//! `handled`, so it moves it with a plain load and store rather than an
//! atomic read-modify-write: a message costs one locked instruction (the
//! sender's increment) instead of two, and `handled` is the stream's
//! `messages_handled` as well.

use std::sync::atomic::{AtomicU64, Ordering};

/// The count of one stream's mailbox, shared (behind an `Arc`) by its
/// actor and by everything that sends to it; see the module docs.
#[derive(Debug, Default)]
pub struct MailboxFigures {
    /// Messages enqueued (counted before the send).
    sent: AtomicU64,
    /// Messages the actor took; written by the actor only.
    handled: AtomicU64,
}

impl MailboxFigures {
    /// Counts a message about to be enqueued. Called before the send, so
    /// that the actor never takes a message not counted yet.
    pub fn enqueued(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back [`enqueued`](Self::enqueued): the send failed (the
    /// mailbox is closed), or the message will never be handled.
    pub fn unsent(&self) {
        self.sent.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a message the actor takes from its mailbox. Only the stream's
    /// actor calls this (a second caller would lose counts).
    pub fn took(&self) {
        let handled = self.handled.load(Ordering::Relaxed);
        // Release: whoever reads this count sees the sends it covers.
        self.handled.store(handled + 1, Ordering::Release);
    }

    /// Messages the actor has taken from its mailbox.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Messages enqueued and not taken yet.
    pub fn backlog(&self) -> u64 {
        // `handled` first: every message it counts was counted in `sent`
        // before it was enqueued, so `sent` read after it is never smaller.
        let handled = self.handled.load(Ordering::Acquire);
        self.sent.load(Ordering::Relaxed).saturating_sub(handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_what_was_sent_and_not_taken() {
        let figures = MailboxFigures::default();
        // (enqueued, unsent, took) applied in turn, then (backlog, handled).
        let cases = [
            ((3, 0, 0), (3, 0)),
            ((0, 0, 2), (1, 2)),
            ((1, 1, 0), (1, 2)),
            ((0, 0, 1), (0, 3)),
            // Taken but never counted as sent (a direct send): 0, not below.
            ((0, 0, 1), (0, 4)),
        ];
        for (i, ((enqueued, unsent, took), (backlog, handled))) in cases.into_iter().enumerate() {
            (0..enqueued).for_each(|_| figures.enqueued());
            (0..unsent).for_each(|_| figures.unsent());
            (0..took).for_each(|_| figures.took());
            assert_eq!(
                (figures.backlog(), figures.handled()),
                (backlog, handled),
                "case {i}"
            );
        }
    }
}
