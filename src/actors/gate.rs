//! `Gate`: what a stream actor holds back until the commit round that
//! writes (and, but for `none`, syncs) its records is done.
//!
//! **Checkpoint before effect.** A stream stages each record it appends
//! (into the gate's [`Staged`] bytes) and keeps every effect that must not
//! precede durability (a reply, a forward, the end of the stream) in the
//! gate. Once its mailbox is drained the stream hands the staged bytes to
//! the committer ([`Gate::begin_round`]): the effects that waited move into
//! that round. When the round is done the actor runs them, one by one
//! ([`Gate::round_done`], [`Gate::next_covered`]); when it failed, every
//! held effect fails ([`Gate::take_all`]). One round per stream is in flight at a time; what the
//! stream appends meanwhile waits for the next. A stream that must be
//! durable on the spot (cleanup, shutdown) takes the round back
//! ([`Gate::take_back`]) and writes it itself.
//!
//! The gate is generic over the effect so that its rules are tested here
//! without an actor. It allocates only while it holds something, so an
//! idle stream pays one pointer for it.

use std::time::Instant;

use crate::store::{Staged, StagedWrite};

/// Effects held until durability, and the stream's round in flight; see
/// the module docs.
#[derive(Debug)]
pub(crate) struct Gate<E> {
    inner: Option<Box<Inner<E>>>,
}

impl<E> Default for Gate<E> {
    fn default() -> Self {
        Gate { inner: None }
    }
}

#[derive(Debug)]
struct Inner<E> {
    /// Effects waiting for bytes that no round covers yet.
    waiting: Vec<E>,
    /// Effects covered by the round in flight.
    committing: Vec<E>,
    /// When the round in flight was handed to the committer.
    in_flight: Option<Instant>,
    /// Frames appended since the last hand-off, for the next round.
    staged: Staged,
    /// The frames the round in flight writes.
    flight: Option<StagedWrite>,
}

impl<E> Default for Inner<E> {
    fn default() -> Self {
        Inner {
            waiting: Vec::new(),
            committing: Vec::new(),
            in_flight: None,
            staged: Staged::default(),
            flight: None,
        }
    }
}

impl<E> Inner<E> {
    fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.committing.is_empty()
            && self.in_flight.is_none()
            && self.staged.is_empty()
            && self.flight.is_none()
    }
}

impl<E> Drop for Inner<E> {
    /// A stream that drops its round in flight (it failed, restarts or
    /// stopped) answered nothing it covers; the committer must not write it
    /// after the stream has moved on (a reload would read the file without
    /// it and append over it).
    fn drop(&mut self) {
        if let Some(flight) = &self.flight {
            flight.abandon();
        }
    }
}

impl<E> Gate<E> {
    /// Whether the gate holds nothing: no effect, no staged bytes, no round.
    pub(crate) fn is_idle(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.is_idle())
    }

    /// Where the stream stages the frames it appends.
    pub(crate) fn staged(&mut self) -> &mut Staged {
        &mut self.inner.get_or_insert_with(Box::default).staged
    }

    /// Holds `effect` until the next round is done, unless the gate holds
    /// nothing and `unsynced` is false: then it is returned, to run now.
    pub(crate) fn hold(&mut self, effect: E, unsynced: bool) -> Option<E> {
        if !unsynced && self.is_idle() {
            return Some(effect);
        }
        self.inner
            .get_or_insert_with(Box::default)
            .waiting
            .push(effect);
        None
    }

    /// When the round in flight was handed over, if one is.
    pub(crate) fn in_flight(&self) -> Option<Instant> {
        self.inner.as_ref().and_then(|inner| inner.in_flight)
    }

    /// Starts a round: the staged frames go to `hand_off` (which makes the
    /// committer's write of them), and the waiting effects now wait for
    /// that round. Returns the write.
    pub(crate) fn begin_round(
        &mut self,
        now: Instant,
        hand_off: impl FnOnce(Staged) -> Option<StagedWrite>,
    ) -> Option<StagedWrite> {
        let inner = self.inner.get_or_insert_with(Box::default);
        inner.committing = std::mem::take(&mut inner.waiting);
        inner.in_flight = Some(now);
        let write = hand_off(std::mem::take(&mut inner.staged));
        inner.flight.clone_from(&write);
        write
    }

    /// The round in flight is done: returns when it was handed over (none
    /// if no round was in flight). The effects it covered are now ready
    /// ([`next_covered`](Self::next_covered)).
    pub(crate) fn round_done(&mut self) -> Option<Instant> {
        let inner = self.inner.as_mut()?;
        let submitted = inner.in_flight.take()?;
        inner.flight = None;
        Some(submitted)
    }

    /// The next effect a done round covered, in order. They stay in the
    /// gate until taken one by one, so that if running one panics, the
    /// rest are still here to be answered.
    pub(crate) fn next_covered(&mut self) -> Option<E> {
        let inner = self.inner.as_mut()?;
        if inner.in_flight.is_some() || inner.committing.is_empty() {
            return None;
        }
        let effect = inner.committing.remove(0);
        self.free_if_idle();
        Some(effect)
    }

    /// The stream wrote and synced, itself, what it took back
    /// ([`take_back`](Self::take_back)): every effect held is covered now,
    /// ready in order ([`next_covered`](Self::next_covered)).
    pub(crate) fn all_covered(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.in_flight = None;
            let mut waiting = std::mem::take(&mut inner.waiting);
            inner.committing.append(&mut waiting);
        }
    }

    /// The effects waiting for a round not yet begun (to run them when
    /// there turned out to be nothing to commit).
    pub(crate) fn take_waiting(&mut self) -> Vec<E> {
        let Some(inner) = self.inner.as_mut() else {
            return Vec::new();
        };
        let effects = std::mem::take(&mut inner.waiting);
        self.free_if_idle();
        effects
    }

    /// Takes the round in flight back from the committer (it will not
    /// write it now) and the frames staged since, for the stream to write
    /// and sync itself; then [`all_covered`](Self::all_covered), or
    /// [`take_all`](Self::take_all) to fail them.
    pub(crate) fn take_back(&mut self) -> (Option<StagedWrite>, Staged) {
        match self.inner.as_deref_mut() {
            Some(inner) => (inner.flight.take(), std::mem::take(&mut inner.staged)),
            None => (None, Staged::default()),
        }
    }

    /// Every effect held (the round in flight's first, then those
    /// waiting), and the gate is emptied (a round in flight is abandoned):
    /// to answer them with the error of a round that failed, or of a panic.
    pub(crate) fn take_all(&mut self) -> Vec<E> {
        match self.inner.take() {
            Some(mut inner) => {
                let mut effects = std::mem::take(&mut inner.committing);
                effects.append(&mut inner.waiting);
                effects
            }
            None => Vec::new(),
        }
    }

    fn free_if_idle(&mut self) {
        if self.inner.as_ref().is_some_and(|inner| inner.is_idle()) {
            self.inner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileCache, StreamLog, SyncPolicy};

    type Effects = Vec<&'static str>;

    #[test]
    fn an_effect_runs_at_once_only_while_nothing_is_held_or_unsynced() {
        let mut gate = Gate::default();
        assert_eq!(gate.hold("reply", false), Some("reply"));
        assert!(gate.is_idle(), "nothing held: nothing allocated");
        assert_eq!(gate.hold("forward", true), None, "unsynced bytes");
        // Behind a held effect, even one with nothing unsynced waits: order is kept.
        assert_eq!(gate.hold("reply", false), None);
        assert_eq!(gate.take_waiting(), ["forward", "reply"]);
        assert!(gate.is_idle());
    }

    #[test]
    fn effects_run_after_the_round_that_covers_them_and_later_ones_wait_for_the_next() {
        let t0 = Instant::now();
        let mut gate = Gate::default();
        gate.hold("reply 1", true);
        assert!(gate.begin_round(t0, |_| None).is_none(), "nothing staged");
        assert_eq!(gate.in_flight(), Some(t0));
        // Appended while the round is on its way: not covered by it.
        gate.hold("reply 2", false);
        assert_eq!(gate.next_covered(), None, "the round is not done");
        assert_eq!(gate.round_done(), Some(t0));
        assert!(gate.round_done().is_none(), "one round, done once");
        assert_eq!(gate.next_covered(), Some("reply 1"));
        assert_eq!(
            gate.next_covered(),
            None,
            "reply 2 waits for the next round"
        );
        assert!(!gate.is_idle(), "reply 2 still waits");
        gate.begin_round(t0, |_| None);
        gate.round_done();
        assert_eq!(gate.next_covered(), Some("reply 2"));
        assert!(gate.is_idle());
    }

    #[test]
    fn a_failed_round_fails_everything_held_and_abandons_its_write(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut log = StreamLog::create(&dir.path().join("s"), SyncPolicy::Batch)?;
        log.set_cache(&FileCache::new(4));
        let mut gate: Gate<&str> = Gate::default();
        log.stage(&[1, 0, 0, 0, 7], gate.staged())?;
        gate.hold("reply 1", true);
        let write = gate
            .begin_round(Instant::now(), |staged| log.hand_off(staged))
            .ok_or("a write for the committer")?;
        gate.hold("reply 2", true);
        let failed: Effects = gate.take_all();
        assert_eq!(
            failed,
            ["reply 1", "reply 2"],
            "covered first, then waiting"
        );
        assert!(gate.is_idle());
        // The committer comes to the abandoned write: it writes nothing.
        write.write(false)?;
        assert_eq!(std::fs::metadata(log.path())?.len(), 0);
        Ok(())
    }

    #[test]
    fn a_round_taken_back_is_not_written_by_the_committer() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let mut log = StreamLog::create(&dir.path().join("s"), SyncPolicy::Batch)?;
        log.set_cache(&FileCache::new(4));
        let mut gate: Gate<&str> = Gate::default();
        log.stage(&[1, 0, 0, 0, 7], gate.staged())?;
        let write = gate
            .begin_round(Instant::now(), |staged| log.hand_off(staged))
            .ok_or("a write")?;
        log.stage(&[1, 0, 0, 0, 8], gate.staged())?;
        gate.hold("reply", true);
        let (flight, staged) = gate.take_back();
        log.settle(flight.as_ref(), staged)?;
        write.write(false)?;
        assert_eq!(std::fs::read(log.path())?, [1, 0, 0, 0, 7, 1, 0, 0, 0, 8]);
        gate.all_covered();
        assert_eq!(gate.next_covered(), Some("reply"));
        assert!(gate.is_idle() && gate.in_flight().is_none());
        Ok(())
    }
}
