//! Injected storage faults, so tests can show what a failing disk does.
//!
//! A [`FaultPlan`] is shared (cheap clones of one `Arc`) by every
//! [`StreamLog`](super::StreamLog) a manager opens when it is set in
//! [`ManagerConfig::faults`](crate::ManagerConfig). It counts the writes and
//! syncs of those logs and fails the ones it was told to, with a real errno
//! (`EIO`, `ENOSPC`), after writing half of the frame, as a disk that fills
//! up mid-record would. A plan that was given no faults costs one atomic
//! increment per write and per sync; without a plan there is no cost. A plan
//! can also make a stream actor's handler panic ([`FaultPlan::panic_in`]).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// The error a fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `EIO`: an I/O error.
    Eio,
    /// `ENOSPC`: no space left on the device.
    Enospc,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::Eio => io::Error::from_raw_os_error(5),
            Fault::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    writes: AtomicU64,
    syncs: AtomicU64,
    fail_writes: Mutex<BTreeMap<u64, Fault>>,
    fail_syncs: Mutex<BTreeMap<u64, Fault>>,
    disk_full: AtomicBool,
    syncs_held: Gate,
    writes_held: Gate,
    /// Stream actor handlers that panic the next time they run (by the
    /// name the stream gives each handler), with how many times.
    panics: Mutex<BTreeMap<&'static str, u32>>,
    /// The same, for panics that the stream does not catch: its actor stops.
    kills: Mutex<BTreeMap<&'static str, u32>>,
}

/// Holds whoever [waits](Gate::wait) while it is closed, and counts them.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    opened: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    /// Threads held at the gate right now.
    held: usize,
}

impl Gate {
    fn set(&self, closed: bool) {
        lock(&self.state).closed = closed;
        if !closed {
            self.opened.notify_all();
        }
    }

    fn wait(&self) {
        let mut state = lock(&self.state);
        if !state.closed {
            return;
        }
        state.held += 1;
        while state.closed {
            state = self
                .opened
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.held -= 1;
    }

    fn held(&self) -> usize {
        lock(&self.state).held
    }
}

/// Which writes and syncs fail; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    inner: Arc<Inner>,
}

impl FaultPlan {
    /// A plan that fails nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `n`th write from now (1 = the next one) fails with `fault`.
    pub fn fail_nth_write(&self, n: u64, fault: Fault) {
        let at = self.inner.writes.load(Ordering::SeqCst) + n;
        lock(&self.inner.fail_writes).insert(at, fault);
    }

    /// The `n`th sync from now (1 = the next one) fails with `fault`.
    pub fn fail_nth_sync(&self, n: u64, fault: Fault) {
        let at = self.inner.syncs.load(Ordering::SeqCst) + n;
        lock(&self.inner.fail_syncs).insert(at, fault);
    }

    /// While `full`, every write fails with `ENOSPC` (and reloading a stream
    /// still works: reads and truncation are not affected).
    pub fn set_disk_full(&self, full: bool) {
        self.inner.disk_full.store(full, Ordering::SeqCst);
    }

    /// Holds every sync (after it reached the disk, before anyone is told)
    /// until [`release_syncs`](Self::release_syncs): shows that nothing is
    /// answered before the sync that covers it.
    pub fn hold_syncs(&self) {
        self.inner.syncs_held.set(true);
    }

    /// Lets held syncs finish.
    pub fn release_syncs(&self) {
        self.inner.syncs_held.set(false);
    }

    /// Syncs held right now by [`hold_syncs`](Self::hold_syncs): once one
    /// is, the round it belongs to has reached its sync and goes no
    /// further, so a test can check that nothing it covers was answered.
    pub fn syncs_held(&self) -> usize {
        self.inner.syncs_held.held()
    }

    /// Holds the committer thread's next round before it writes anything
    /// (write-behind), until [`release_committer_writes`](Self::release_committer_writes):
    /// shows that nothing is answered before its write, and what a stream does
    /// while its round is on the way.
    pub fn hold_committer_writes(&self) {
        self.inner.writes_held.set(true);
    }

    /// Lets held committer rounds write.
    pub fn release_committer_writes(&self) {
        self.inner.writes_held.set(false);
    }

    /// Committer rounds held right now by
    /// [`hold_committer_writes`](Self::hold_committer_writes), before they
    /// wrote anything.
    pub fn committer_writes_held(&self) -> usize {
        self.inner.writes_held.held()
    }

    /// Called by the committer before a round writes.
    pub(crate) fn before_committer_writes(&self) {
        self.inner.writes_held.wait();
    }

    /// The next `times` runs of the stream actor handler named `handler`
    /// panic (`update`, `ack`, `retry wake-up`, `durable`, `stats`, `pause`,
    /// `close`, `sync`, `flush`, `start`, `file created`): shows that a
    /// panic restarts the stream instead of killing it.
    pub fn panic_in(&self, handler: &'static str, times: u32) {
        *lock(&self.inner.panics).entry(handler).or_default() += times;
    }

    /// The next `times` runs of the handler named `handler` panic where the
    /// stream does not catch it, so that its actor stops for good: shows
    /// that the manager starts such a stream again from its file.
    pub fn kill_in(&self, handler: &'static str, times: u32) {
        *lock(&self.inner.kills).entry(handler).or_default() += times;
    }

    /// Whether the handler named `handler` must panic now (counts it).
    pub(crate) fn panics_now(&self, handler: &str) -> bool {
        take_one(&self.inner.panics, handler)
    }

    /// Whether the handler named `handler` must stop its actor now (counts it).
    pub(crate) fn kills_now(&self, handler: &str) -> bool {
        take_one(&self.inner.kills, handler)
    }

    /// Writes seen so far.
    pub fn writes(&self) -> u64 {
        self.inner.writes.load(Ordering::SeqCst)
    }

    /// Syncs seen so far.
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::SeqCst)
    }

    /// Counts one write; `Some(error)` if it must fail.
    pub(crate) fn on_write(&self) -> Option<io::Error> {
        let n = self.inner.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inner.disk_full.load(Ordering::SeqCst) {
            return Some(Fault::Enospc.error());
        }
        lock(&self.inner.fail_writes).remove(&n).map(Fault::error)
    }

    /// Counts one sync; `Some(error)` if it must fail.
    pub(crate) fn on_sync(&self) -> Option<io::Error> {
        self.inner.syncs_held.wait();
        let n = self.inner.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.inner.fail_syncs).remove(&n).map(Fault::error)
    }
}

/// Takes one from `handler`'s count in `plan`; whether there was one.
fn take_one(plan: &Mutex<BTreeMap<&'static str, u32>>, handler: &str) -> bool {
    match lock(plan).get_mut(handler) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_fails_the_planned_operations() {
        let plan = FaultPlan::new();
        plan.fail_nth_write(2, Fault::Enospc);
        plan.fail_nth_sync(1, Fault::Eio);
        assert!(plan.on_write().is_none());
        assert_eq!(plan.on_write().and_then(|e| e.raw_os_error()), Some(28));
        assert!(plan.on_write().is_none());
        assert_eq!(plan.on_sync().and_then(|e| e.raw_os_error()), Some(5));
        assert!(plan.on_sync().is_none());
        plan.set_disk_full(true);
        assert!(plan.on_write().is_some());
        plan.set_disk_full(false);
        assert!(plan.on_write().is_none());
        assert_eq!((plan.writes(), plan.syncs()), (5, 2));
    }

    #[test]
    fn a_held_sync_is_counted_until_it_is_released() {
        let plan = FaultPlan::new();
        plan.hold_syncs();
        let syncer = {
            let plan = plan.clone();
            std::thread::spawn(move || plan.on_sync())
        };
        while plan.syncs_held() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(plan.syncs(), 0, "a held sync is not counted as done");
        plan.release_syncs();
        assert!(syncer.join().expect("the syncing thread").is_none());
        assert_eq!((plan.syncs_held(), plan.syncs()), (0, 1));
    }
}
