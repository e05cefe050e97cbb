//! The committer: runs the commit rounds that write stream records and make
//! them durable (see "Durability" in [`store`](super) for the whole path).
//!
//! A stream hands it a [`Ticket`]: its file, the frames it staged (a
//! [`StagedWrite`]), how to make them durable ([`TicketSync`]) and a
//! callback. A **round** takes every ticket that arrived while the previous
//! one ran, and:
//!
//! 1. writes each ticket's frames at their offsets (`none` tickets are
//!    called back as they are written, [`NONE_ANSWERS_PER_HAND_OFF`] at a
//!    time, without waiting for the rest of the round);
//! 2. syncs with the cheapest call that covers the rest: an `fdatasync` per
//!    file for `always` tickets ([`TicketSync::Own`]); for `batch`, an
//!    `fdatasync` of the one file when the round holds one, else one append
//!    and `fdatasync` of the commit journal ([`journal`](super::journal))
//!    when there is one, else a `syncfs` per filesystem;
//! 3. calls every ticket back with the result: a failed write or sync fails
//!    every ticket it covered.
//!
//! A full journal is checkpointed: it is rotated, and the `syncfs` that makes
//! its stream files durable by themselves runs on a thread of its own while
//! rounds go on into the new journal.
//!
//! **Runners.** [`Committer::thread`] (and its variants) runs rounds on a
//! dedicated thread, with a few file threads for creating stream files
//! ([`run_jobs`]). The tickets an arbiter submits in one turn go over in one
//! hand-off, and the committer polls briefly ([`POLL_BEFORE_BLOCKING`])
//! before it blocks, since waking a blocked thread costs the arbiter a
//! system call. Likewise a round hands the callbacks of an arbiter's tickets
//! back to that arbiter in one message ([`Home`]; its `none` tickets' in one
//! message per [`NONE_ANSWERS_PER_HAND_OFF`]). [`Committer::inline`]
//! runs the same rounds as a task on the submitting arbiter once its ready
//! actors have run, and file jobs on the spot: deterministic under paused
//! tokio time, for tests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, warn};

use super::faults::FaultPlan;
use super::journal::{Journal, Replayed};
use super::log::{Landed, Wrote};
use super::sys::syncfs;
use super::{StagedWrite, StoreError, SyncPolicy};

/// Threads for blocking file work (creating stream files) where each new
/// file waits for its directory's sync (`batch`, `always`): a few threads
/// overlap those waits for a burst of new streams, without a thread per file.
pub const FILE_THREADS: usize = 4;

/// File threads under `none`: creating a file is then kernel CPU time under
/// its directory's lock, so more threads only contend for the lock and for
/// the cores the actors run on (see BENCHMARKS.md, Figures behind design
/// choices).
pub const FILE_THREADS_NO_SYNC: usize = 1;

/// Blocking file work for the committer's file threads (creating a stream's
/// file): does the work, may ask for directory syncs, and returns how to
/// tell its owner. See [`run_jobs`].
pub type Job = Box<dyn FnOnce(&mut DirSyncs) -> Completion + Send>;

/// Tells a [`Job`]'s owner that it is done, with how the directory syncs it
/// asked for went: the first directory that failed, and why.
pub type Completion = Box<dyn FnOnce(Result<(), (PathBuf, io::Error)>) + Send>;

/// The directories the jobs of one batch want synced.
#[derive(Debug, Default)]
pub struct DirSyncs {
    dirs: Vec<PathBuf>,
}

impl DirSyncs {
    /// Syncs `dirs` (in this order) once the batch's jobs have run, before
    /// the job's owner is told.
    pub fn sync_later(&mut self, dirs: &[PathBuf]) {
        self.dirs.extend_from_slice(dirs);
    }
}

/// Runs a batch of jobs: every job first, then each directory any of them
/// asked for is synced once (one `fsync` of a directory covers every entry
/// created in it, so a burst of new stream files in one directory costs one
/// directory sync, not one each), then every owner is told, in order.
pub fn run_jobs(jobs: Vec<Job>) {
    let mut syncs = DirSyncs::default();
    let asked: Vec<(Completion, std::ops::Range<usize>)> = jobs
        .into_iter()
        .map(|job| {
            let start = syncs.dirs.len();
            let done = job(&mut syncs);
            (done, start..syncs.dirs.len())
        })
        .collect();
    let mut outcomes: HashMap<&Path, Option<io::Error>> = HashMap::new();
    for dir in &syncs.dirs {
        outcomes
            .entry(dir)
            .or_insert_with(|| super::dirs::sync_dir(dir).err());
    }
    for (done, range) in asked {
        let failed = syncs
            .dirs
            .get(range)
            .unwrap_or_default()
            .iter()
            .find_map(|dir| {
                let err = outcomes.get(dir.as_path())?.as_ref()?;
                // Each owner gets its own copy of the error.
                let copy = err.raw_os_error().map_or_else(
                    || io::Error::new(err.kind(), err.to_string()),
                    io::Error::from_raw_os_error,
                );
                Some((dir.clone(), copy))
            });
        done(failed.map_or(Ok(()), Err));
    }
}

/// What a ticket's callback learns.
pub type CommitResult = Result<(), Arc<StoreError>>;

/// One stream's request to make its bytes durable (writing its staged
/// frames first, under write-behind).
pub struct Ticket {
    /// The stream's file.
    pub path: Arc<Path>,
    /// The filesystem the file is on (`st_dev`), so `syncfs` covers it.
    pub device: u64,
    /// Frames to write before the round syncs (write-behind), if any.
    pub write: Option<StagedWrite>,
    /// How the round makes this ticket's bytes durable.
    pub sync: TicketSync,
    /// Injected faults (tests).
    pub faults: Option<FaultPlan>,
    /// Called once the round that covers this ticket is done.
    pub done: Done,
    /// Where `done` runs: `None` on the committer thread; [`Committer::submit`]
    /// from an actix arbiter sets it to that arbiter's [`Home`].
    pub home: Option<Home>,
}

/// A ticket's callback.
pub type Done = Box<dyn FnOnce(CommitResult) + Send>;

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("path", &self.path)
            .field("device", &self.device)
            .field("write", &self.write.is_some())
            .field("sync", &self.sync)
            .field("home", &self.home.is_some())
            .finish()
    }
}

/// How a round makes a [`Ticket`]'s bytes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketSync {
    /// Covered by the round's one shared sync (`batch`): `fdatasync` if the
    /// round holds one file, else `syncfs`.
    Shared,
    /// An `fdatasync` of the ticket's own file (`always`).
    Own,
    /// No sync (`none`): the round only writes the staged frames.
    Skip,
}

impl TicketSync {
    /// The sync a ticket of a log under `policy` asks for.
    pub fn for_policy(policy: SyncPolicy) -> TicketSync {
        match policy {
            SyncPolicy::Batch => TicketSync::Shared,
            SyncPolicy::Always => TicketSync::Own,
            SyncPolicy::None => TicketSync::Skip,
        }
    }
}

/// Whether a committer thread has stopped ([`Committer::stopped`]): the
/// thread holds its round counter until it ends.
#[derive(Debug, Clone)]
pub struct Stopped(std::sync::Weak<AtomicU64>);

impl Stopped {
    /// True once the thread ended (and no handle of it is left).
    pub fn is_stopped(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// Runs group-commit rounds; see the module docs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub enum Committer {
    /// Rounds on a dedicated thread (and how many it ran), plus a few
    /// threads for other blocking file work (creating stream files).
    Thread(mpsc::Sender<Vec<Ticket>>, Arc<AtomicU64>, mpsc::Sender<Job>),
    /// Rounds as a task on the submitting actix arbiter.
    #[default]
    Inline,
}

impl Committer {
    /// Starts a committer thread with [`FILE_THREADS`] file threads; it ends
    /// when every clone of the handle is gone.
    pub fn thread() -> io::Result<Committer> {
        Self::with_file_threads(FILE_THREADS)
    }

    /// [`thread`](Self::thread), with the file threads that suit `policy`
    /// ([`FILE_THREADS_NO_SYNC`] under `none`).
    pub fn thread_for(policy: SyncPolicy) -> io::Result<Committer> {
        Self::with_file_threads(file_threads_for(policy))
    }

    /// [`thread_for`](Self::thread_for), with the commit journal at `path`
    /// (see [`journal`](super::journal)): first replays what a crash left in
    /// it into the stream files (on this thread, before any stream is
    /// recovered), then makes every `batch` round durable with one sync of
    /// the journal instead of a `syncfs`. Fails, naming the journal, if it
    /// cannot be replayed; its records then stay in it for the next start.
    pub fn thread_with_journal(
        policy: SyncPolicy,
        path: &Path,
    ) -> Result<(Committer, Replayed), StoreError> {
        Self::thread_with_journal_at(policy, path, super::journal::CHECKPOINT_BYTES)
    }

    /// [`thread_with_journal`](Self::thread_with_journal), checkpointing
    /// once the journal holds `checkpoint_at` bytes instead of
    /// [`CHECKPOINT_BYTES`](super::journal::CHECKPOINT_BYTES) (smaller: shorter
    /// checkpoints, more of them).
    pub fn thread_with_journal_at(
        policy: SyncPolicy,
        path: &Path,
        checkpoint_at: u64,
    ) -> Result<(Committer, Replayed), StoreError> {
        let (journal, replayed) = Journal::open_with(path, checkpoint_at)?;
        let committer = Self::start(file_threads_for(policy), Some(journal)).map_err(|source| {
            StoreError::Journal {
                path: path.to_path_buf(),
                action: "start the committer thread of",
                source,
            }
        })?;
        Ok((committer, replayed))
    }

    fn with_file_threads(file_threads: usize) -> io::Result<Committer> {
        Self::start(file_threads, None)
    }

    fn start(file_threads: usize, journal: Option<Journal>) -> io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<Vec<Ticket>>();
        let rounds = Arc::new(AtomicU64::new(0));
        let counter = rounds.clone();
        std::thread::Builder::new()
            .name("sum-committer".into())
            .spawn(move || {
                if let Some(journal) = &journal {
                    metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(journal_bytes(journal));
                }
                let mut syncer = Syncer::new(journal);
                serve(&rx, &mut syncer, &counter);
                // A clean stop leaves the stream files durable by themselves
                // and the journal empty.
                syncer.checkpoint();
                debug!("committer thread stopped");
            })?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..file_threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("sum-files-{n}"))
                .spawn(move || {
                    // Every job queued meanwhile runs in one batch, so that a
                    // burst of new streams shares its directory syncs.
                    loop {
                        let jobs = {
                            let Ok(queue) = queue.lock() else { return };
                            let Ok(first) = queue.recv() else { return };
                            let mut jobs = vec![first];
                            jobs.extend(queue.try_iter());
                            jobs
                        };
                        run_jobs(jobs);
                    }
                })?;
        }
        Ok(Committer::Thread(tx, rounds, jobs))
    }

    /// A way to tell when this committer's thread has stopped: after every
    /// handle is gone, its last round ran and its final checkpoint is done.
    /// `None` for the inline runner.
    pub fn stopped(&self) -> Option<Stopped> {
        match self {
            Committer::Thread(_, rounds, _) => Some(Stopped(Arc::downgrade(rounds))),
            Committer::Inline => None,
        }
    }

    /// The inline runner.
    pub fn inline() -> Committer {
        Committer::Inline
    }

    /// Runs `job` (blocking file work, such as creating a stream's file) on
    /// one of the committer's file threads; the jobs a thread takes together
    /// run as one batch ([`run_jobs`]). `Err(job)` without a thread (inline
    /// committer) or if the thread stopped.
    pub fn run_blocking(&self, job: Job) -> Result<(), Job> {
        match self {
            Committer::Thread(_, _, jobs) => jobs.send(job).map_err(|mpsc::SendError(job)| job),
            Committer::Inline => Err(job),
        }
    }

    /// Whether rounds run on a committer thread.
    pub fn is_thread(&self) -> bool {
        matches!(self, Committer::Thread(..))
    }

    /// Rounds run so far (by this committer thread, or inline on this thread).
    pub fn rounds(&self) -> u64 {
        match self {
            Committer::Thread(_, rounds, _) => rounds.load(Ordering::Relaxed),
            Committer::Inline => INLINE_ROUNDS.with(std::cell::Cell::get),
        }
    }

    /// Queues a ticket for the next round. From an actix arbiter, its
    /// callback runs back on that arbiter's thread ([`Home`]).
    pub fn submit(&self, mut ticket: Ticket) {
        match self {
            Committer::Thread(tx, rounds, _) => {
                if actix_rt::Arbiter::try_current().is_none() {
                    return send_tickets(tx, vec![ticket]);
                }
                ticket.home = Some(Home::here());
                // Every ticket this thread submits until it next runs its
                // tasks goes over in one batch: one wake-up of the committer
                // thread per batch instead of one per ticket.
                let batch = |batches: &mut Vec<Batch>| match batches
                    .iter_mut()
                    .find(|b| Arc::ptr_eq(&b.0, rounds))
                {
                    Some(batch) => batch.2.push(ticket),
                    None => {
                        // Sized like the last batch: a turn under load
                        // hands over many tickets, and growing the vector
                        // to that size would copy it again and again.
                        let mut tickets = Vec::with_capacity(BATCH_SIZE.get().max(1));
                        tickets.push(ticket);
                        batches.push((rounds.clone(), tx.clone(), tickets));
                    }
                };
                at_end_of_turn(&OUTBOX, batch, |batches| {
                    for (_, tx, tickets) in batches {
                        BATCH_SIZE.set(tickets.len());
                        send_tickets(&tx, tickets);
                    }
                });
            }
            Committer::Inline => at_end_of_turn(
                &INLINE,
                |round: &mut Vec<Ticket>| round.push(ticket),
                |round| {
                    INLINE_SYNCER.with(|syncer| syncer.borrow_mut().run(round));
                    INLINE_ROUNDS.with(|rounds| rounds.set(rounds.get() + 1));
                },
            ),
        }
    }
}

/// What an arbiter thread gathers for the end of its turn, and whether a
/// task to take it is already spawned.
struct TurnQueue<T> {
    items: Vec<T>,
    scheduled: bool,
}

impl<T> Default for TurnQueue<T> {
    fn default() -> Self {
        TurnQueue {
            items: Vec::new(),
            scheduled: false,
        }
    }
}

/// Adds to `queue` with `add`; the first addition of a turn spawns one task
/// that, once the actors ready now have run, hands everything gathered
/// meanwhile to `take`.
fn at_end_of_turn<T: 'static>(
    queue: &'static std::thread::LocalKey<RefCell<TurnQueue<T>>>,
    add: impl FnOnce(&mut Vec<T>),
    take: fn(Vec<T>),
) {
    queue.with(|cell| {
        let mut pending = cell.borrow_mut();
        add(&mut pending.items);
        if !pending.scheduled {
            pending.scheduled = true;
            actix_rt::spawn(async move {
                let items = queue.with(|cell| {
                    let mut pending = cell.borrow_mut();
                    pending.scheduled = false;
                    std::mem::take(&mut pending.items)
                });
                take(items);
            });
        }
    });
}

/// Ticket callbacks and their outcomes, for one arbiter thread.
type Answers = Vec<(Done, CommitResult)>;

/// An actix arbiter thread that submits tickets to a committer thread: the
/// committer hands the callbacks of that thread's tickets back to it, all
/// those of one round in one message, and a task there calls them.
///
/// A callback tells its stream actor that the round is done. Called on the
/// committer thread, each would wake the arbiter on its own (a cross-thread
/// send and wake-up per stream); called on the arbiter, each is a local
/// send, and the round costs one cross-thread hand-off.
#[derive(Debug, Clone)]
pub struct Home(Arc<tokio::sync::mpsc::UnboundedSender<Answers>>);

thread_local! {
    /// This arbiter thread's home, once it submitted a ticket.
    static HOME: RefCell<Option<Home>> = const { RefCell::new(None) };
}

impl Home {
    /// The home of this thread, which must be an actix arbiter's. Its task
    /// starts on first use, and again if the runtime that ran it has ended
    /// (a thread may run one actix system after another).
    pub(crate) fn here() -> Home {
        HOME.with(|cell| {
            let mut home = cell.borrow_mut();
            match home.as_ref() {
                Some(home) if !home.0.is_closed() => home.clone(),
                _ => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Answers>();
                    actix_rt::spawn(async move {
                        while let Some(answers) = rx.recv().await {
                            for (done, result) in answers {
                                done(result);
                            }
                        }
                    });
                    home.insert(Home(Arc::new(tx))).clone()
                }
            }
        })
    }
}

/// The callbacks a round has to call, gathered by home, so that each home
/// gets them in one message ([`Home`]).
#[derive(Default)]
struct Outgoing {
    homes: Vec<(Home, Answers)>,
}

impl Outgoing {
    /// Calls `ticket`'s callback with `result`: now if it has no home, else
    /// with the others for its home at the next [`send`](Self::send).
    fn answer(&mut self, done: Done, home: Option<Home>, result: CommitResult) {
        let Some(home) = home else {
            return done(result);
        };
        match self
            .homes
            .iter_mut()
            .find(|(h, _)| Arc::ptr_eq(&h.0, &home.0))
        {
            Some((_, answers)) => answers.push((done, result)),
            None => self.homes.push((home, vec![(done, result)])),
        }
    }

    /// Hands each home its callbacks. A home whose runtime has ended has no
    /// actor left to tell: its callbacks are dropped.
    fn send(&mut self) {
        for (home, answers) in self.homes.drain(..) {
            let _ = home.0.send(answers);
        }
    }
}

/// The file threads that suit `policy` ([`FILE_THREADS_NO_SYNC`] under `none`).
fn file_threads_for(policy: SyncPolicy) -> usize {
    if policy.syncs() {
        FILE_THREADS
    } else {
        FILE_THREADS_NO_SYNC
    }
}

/// How many written `none` tickets a round answers at a time (one message
/// per home, [`Home`]), without waiting for the rest of the round.
///
/// Answered only once the round's last write returned, a steady load falls
/// into lockstep: every ticket in flight sits in one round, the arbiter has
/// nothing to do while the committer writes it, and the committer nothing
/// while the arbiter handles the answers and makes the next tickets, so
/// each thread idles for the other's half. Answered as they are written,
/// the arbiter makes the next tickets while the committer writes the rest,
/// and the next round is waiting when this one ends. A few hundred keep the
/// hand-offs (a cross-thread send, and a wake-up if the arbiter sleeps)
/// rare per ticket. See BENCHMARKS.md, "Figures behind design choices".
pub const NONE_ANSWERS_PER_HAND_OFF: usize = 256;

/// How long the committer thread polls for its next batch before it blocks.
pub const POLL_BEFORE_BLOCKING: Duration = Duration::from_micros(50);

/// How long an idle committer thread blocks at most while a checkpoint runs
/// on a thread of its own: it then ends that checkpoint without waiting for
/// a round, so `sum_commit_journal_bytes` stops counting the removed rotated
/// journal, and the checkpoint is counted, within this much of its end.
pub const IDLE_CHECKPOINT_POLL: Duration = Duration::from_millis(20);

/// The committer thread's loop: every batch of tickets (with whatever
/// arrived meanwhile) is one round, until every sender is gone. While idle
/// with a checkpoint running it looks every [`IDLE_CHECKPOINT_POLL`]
/// whether that checkpoint has ended.
fn serve(rx: &mpsc::Receiver<Vec<Ticket>>, syncer: &mut Syncer, rounds: &AtomicU64) {
    loop {
        match next_batch(rx, syncer.draining.is_some()) {
            Next::Batch(mut round) => {
                round.extend(rx.try_iter().flatten());
                syncer.run(round);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            Next::Idle => syncer.end_checkpoint(false),
            Next::Stopped => return,
        }
    }
}

/// What the committer thread's queue gave it.
enum Next {
    Batch(Vec<Ticket>),
    /// Nothing for [`IDLE_CHECKPOINT_POLL`], while a checkpoint runs.
    Idle,
    /// Every sender is gone.
    Stopped,
}

/// The committer thread's next batch of tickets. Polled for up to
/// [`POLL_BEFORE_BLOCKING`] before blocking: under load the next batch
/// comes within microseconds, and a send to a blocked receiver costs the
/// sending arbiter a `futex` wake-up, a system call on the thread every
/// stream runs on. Between polls the thread yields, so that a file thread
/// or the kernel's writeback runnable on this core goes first. While a
/// checkpoint runs (`draining`), it blocks for at most
/// [`IDLE_CHECKPOINT_POLL`].
fn next_batch(rx: &mpsc::Receiver<Vec<Ticket>>, draining: bool) -> Next {
    let until = std::time::Instant::now() + POLL_BEFORE_BLOCKING;
    loop {
        match rx.try_recv() {
            Ok(batch) => return Next::Batch(batch),
            Err(mpsc::TryRecvError::Disconnected) => return Next::Stopped,
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() < until => {
                std::thread::yield_now();
            }
            Err(mpsc::TryRecvError::Empty) if draining => {
                return match rx.recv_timeout(IDLE_CHECKPOINT_POLL) {
                    Ok(batch) => Next::Batch(batch),
                    Err(mpsc::RecvTimeoutError::Timeout) => Next::Idle,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Next::Stopped,
                };
            }
            Err(mpsc::TryRecvError::Empty) => {
                return rx.recv().map_or(Next::Stopped, Next::Batch);
            }
        }
    }
}

/// Hands `tickets` to the committer thread; if it stopped, fails each.
fn send_tickets(tx: &mpsc::Sender<Vec<Ticket>>, tickets: Vec<Ticket>) {
    if let Err(mpsc::SendError(tickets)) = tx.send(tickets) {
        for ticket in tickets {
            let err = io::Error::other("the committer thread stopped");
            (ticket.done)(Err(Arc::new(StoreError::Sync {
                path: ticket.path.to_path_buf(),
                source: err,
            })));
        }
    }
}

/// The tickets an arbiter thread submitted to one committer thread since it
/// last ran its tasks (the committer is known by its round counter, which
/// the batch keeps alive, so no other committer can take its address).
type Batch = (Arc<AtomicU64>, mpsc::Sender<Vec<Ticket>>, Vec<Ticket>);

thread_local! {
    /// Tickets for committer threads, one batch per committer.
    static OUTBOX: RefCell<TurnQueue<Batch>> = RefCell::new(TurnQueue::default());
    /// Tickets for the inline committer: the next round on this thread.
    static INLINE: RefCell<TurnQueue<Ticket>> = RefCell::new(TurnQueue::default());
    static INLINE_SYNCER: RefCell<Syncer> = RefCell::new(Syncer::new(None));
    static INLINE_ROUNDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// How many tickets the last batch for a committer thread held.
    static BATCH_SIZE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Performs rounds; keeps one directory handle per filesystem for `syncfs`,
/// and the commit journal, if there is one.
struct Syncer {
    roots: HashMap<u64, File>,
    /// Where `batch` rounds make their records durable, instead of `syncfs`.
    journal: Option<Journal>,
    /// The filesystems (and a file on each) of the journal's entries since
    /// the last checkpoint: the `syncfs` that lets the journal be emptied.
    journaled: HashMap<u64, Arc<Path>>,
    /// The time of each ticket's write, taken from the recorder when the
    /// committer starts, not looked up by name per write (as the streams'
    /// [`crate::metrics::StreamMetrics`]).
    append_seconds: metrics::Histogram,
    /// Tickets per round ([`crate::metrics::ROUND_TICKETS`]), taken likewise.
    round_tickets: metrics::Histogram,
    /// Time of each checkpoint ([`crate::metrics::JOURNAL_CHECKPOINT_SECONDS`]), likewise.
    checkpoint_seconds: metrics::Histogram,
    /// The checkpoint running on a thread of its own, if one is.
    draining: Option<Draining>,
    /// Tests: the next checkpoint thread waits for a message (or a hang-up) on
    /// this first; `true` makes it fail as a `syncfs` would.
    #[cfg(test)]
    hold_checkpoint: Option<mpsc::Receiver<bool>>,
    /// Tests: told each time a checkpoint thread's outcome has been taken and acted on.
    #[cfg(test)]
    checkpoint_ended: Option<mpsc::Sender<()>>,
}

/// A checkpoint of a rotated journal ([`Journal::rotate`]), running on a
/// thread of its own while rounds go on into the new journal.
struct Draining {
    /// The filesystems (and a file on each) of the rotated journal's entries.
    devices: Vec<(u64, Arc<Path>)>,
    /// The checkpoint thread's outcome, and how long its syncs took.
    done: mpsc::Receiver<(CommitResult, Duration)>,
}

/// The bytes of `journal`, a rotated one included (`sum_commit_journal_bytes`).
fn journal_bytes(journal: &Journal) -> f64 {
    (journal.len() + journal.old_len().unwrap_or(0)) as f64
}

impl Syncer {
    fn new(journal: Option<Journal>) -> Syncer {
        Syncer {
            roots: HashMap::new(),
            journal,
            journaled: HashMap::new(),
            draining: None,
            #[cfg(test)]
            hold_checkpoint: None,
            #[cfg(test)]
            checkpoint_ended: None,
            append_seconds: metrics::histogram!(crate::metrics::APPEND_SECONDS),
            round_tickets: metrics::histogram!(crate::metrics::ROUND_TICKETS),
            checkpoint_seconds: metrics::histogram!(crate::metrics::JOURNAL_CHECKPOINT_SECONDS),
        }
    }

    /// Writes a ticket's staged frames, if it has any (see
    /// [`StagedWrite::write`]), and records how long the write took.
    fn write_of(&self, ticket: &Ticket, identify: bool) -> Result<Wrote, Arc<StoreError>> {
        let Some(write) = &ticket.write else {
            return Ok(Wrote::Here(None));
        };
        let started = std::time::Instant::now();
        let wrote = write.write(identify).map_err(Arc::new);
        if !matches!(wrote, Ok(Wrote::TakenBack)) {
            self.append_seconds.record(started.elapsed());
        }
        wrote
    }

    /// One round: each `none` ticket's write, answered as they are written
    /// ([`NONE_ANSWERS_PER_HAND_OFF`] at a time); then every
    /// other staged write, one sync over the files that need it (those whose
    /// write failed are not synced: they already failed), and every such
    /// ticket's callback, in the order they came. With a journal, what the
    /// round wrote for `batch` tickets is appended to it and synced with it
    /// alone; the shared sync is left for what the journal cannot name.
    fn run(&mut self, round: Vec<Ticket>) {
        self.round_tickets.record(round.len() as f64);
        if let Some(faults) = round
            .iter()
            .find_map(|t| t.write.as_ref().and(t.faults.as_ref()))
        {
            faults.before_committer_writes();
        }
        // A `none` ticket needs nothing but its write: the `none` tickets are
        // answered as they are written, a few hundred at a time, before the
        // others are, so their streams go on while the rest of the round is
        // written (see NONE_ANSWERS_PER_HAND_OFF).
        let mut outgoing = Outgoing::default();
        let mut unsent = 0;
        let round: Vec<Ticket> = round
            .into_iter()
            .filter_map(|ticket| {
                if ticket.sync != TicketSync::Skip {
                    return Some(ticket);
                }
                let written = self.write_of(&ticket, false).map(|_| ());
                outgoing.answer(ticket.done, ticket.home, written);
                unsent += 1;
                if unsent == NONE_ANSWERS_PER_HAND_OFF {
                    unsent = 0;
                    outgoing.send();
                }
                None
            })
            .collect();
        outgoing.send();
        // The journal takes the round's `batch` records when they are in more
        // than one file (for one, its own `fdatasync` is cheapest: the
        // journal's would also write the file's new blocks, ext4 ordering
        // data before metadata), and only those written into a file it can
        // name (one with an identity, inside its directory).
        let journaling = self.journal.is_some() && shares_several_files(&round);
        let written: Vec<Result<Wrote, Arc<StoreError>>> = round
            .iter()
            .map(|ticket| self.write_of(ticket, journaling && ticket.sync == TicketSync::Shared))
            .collect();
        // A file the journal cannot name (outside its directory) takes the shared sync.
        let journal = self.journal.as_ref();
        let landed: Vec<Option<&Landed>> = written
            .iter()
            .map(|w| match w {
                Ok(Wrote::Here(Some(landed)))
                    if journal.is_some_and(|j| j.names(&landed.path).is_some()) =>
                {
                    Some(landed)
                }
                _ => None,
            })
            .collect();
        let journal_result = match self.journal.as_mut() {
            Some(journal) if landed.iter().any(Option::is_some) => {
                for (ticket, _) in round.iter().zip(&landed).filter(|(_, l)| l.is_some()) {
                    self.journaled
                        .entry(ticket.device)
                        .or_insert_with(|| ticket.path.clone());
                }
                let committed = journal
                    .commit(landed.iter().flatten().copied())
                    .map_err(Arc::new);
                metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(journal_bytes(journal));
                committed
            }
            _ => Ok(()),
        };
        // Sync what is in the files: `always` tickets with an `fdatasync`
        // of their own file each, the other `batch` ones with the cheapest
        // sync that covers them all.
        let ok: Vec<bool> = written.iter().map(Result::is_ok).collect();
        let own = own_syncs(&round, &ok);
        let shared: Vec<bool> = (0..round.len())
            .map(|i| round[i].sync == TicketSync::Shared && ok[i] && landed[i].is_none())
            .collect();
        let result = self.shared_sync(&round, &shared);
        drop(landed);
        for (((ticket, written), own), shared) in
            round.into_iter().zip(written).zip(own).zip(shared)
        {
            let outcome = match written {
                Err(err) => Err(err),
                Ok(_) => {
                    let injected =
                        ticket
                            .faults
                            .as_ref()
                            .and_then(FaultPlan::on_sync)
                            .map(|source| {
                                Arc::new(StoreError::Sync {
                                    path: ticket.path.to_path_buf(),
                                    source,
                                })
                            });
                    let synced = match (&own, shared) {
                        (Some(own), _) => own,
                        (None, true) => &result,
                        (None, false) => &journal_result,
                    };
                    match (synced, injected) {
                        (Err(err), _) => Err(err.clone()),
                        (Ok(()), Some(err)) => Err(err),
                        (Ok(()), None) => Ok(()),
                    }
                }
            };
            outgoing.answer(ticket.done, ticket.home, outcome);
        }
        outgoing.send();
        self.after_round();
    }

    /// After each round: ends a checkpoint whose thread is done, and begins
    /// one if the journal is full.
    fn after_round(&mut self) {
        self.end_checkpoint(false);
        if self.journal.as_ref().is_some_and(Journal::wants_checkpoint) {
            self.start_checkpoint();
        }
    }

    /// Begins a checkpoint that the next rounds need not wait for: the
    /// journal is rotated, and the `syncfs` of every filesystem its entries
    /// were on runs on a thread of its own (see [`journal`](super::journal)).
    /// A journal that filled again before the last such checkpoint ended
    /// waits for it first. One that cannot be rotated, or whose last
    /// checkpoint failed, is checkpointed in place ([`checkpoint`](Self::checkpoint)).
    fn start_checkpoint(&mut self) {
        if self.draining.is_some() {
            self.end_checkpoint(true);
        }
        if self
            .journal
            .as_ref()
            .is_none_or(|journal| journal.old_len().is_some())
        {
            // No journal, or the last checkpoint's is still to be covered.
            return self.checkpoint();
        }
        let devices: Vec<(u64, Arc<Path>)> = self
            .journaled
            .iter()
            .map(|(device, sample)| (*device, sample.clone()))
            .collect();
        // The checkpoint thread syncs through handles opened here (kept per
        // filesystem, as for the rounds' own `syncfs`).
        let mut roots = Vec::with_capacity(devices.len());
        for (device, sample) in &devices {
            let handle = self.root(*device, sample).and_then(|root| {
                root.try_clone().map_err(|source| {
                    Arc::new(StoreError::Sync {
                        path: parent(sample),
                        source,
                    })
                })
            });
            match handle {
                Ok(handle) => roots.push((parent(sample), handle)),
                Err(err) => {
                    warn!(cause = %err, "checkpointing the commit journal in place");
                    return self.checkpoint();
                }
            }
        }
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        if let Err(err) = journal.rotate() {
            warn!(cause = %err, "could not rotate the commit journal; checkpointing it in place");
            return self.checkpoint();
        }
        metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(journal_bytes(journal));
        let old = super::journal::old_journal_path(journal.path());
        self.journaled.clear();
        let (tx, done) = mpsc::channel();
        #[cfg(test)]
        let hold = self.hold_checkpoint.take();
        // Syncs, then removes the rotated journal itself: an idle committer
        // would only notice at its next round (or when it stops).
        let sync_all = move || {
            #[cfg(test)]
            if hold.is_some_and(|hold| hold.recv() == Ok(true)) {
                let injected = io::Error::other("injected syncfs failure");
                let _ = tx.send((
                    Err(Arc::new(StoreError::Sync {
                        path: PathBuf::from("injected"),
                        source: injected,
                    })),
                    Duration::ZERO,
                ));
                return;
            }
            let started = std::time::Instant::now();
            let synced = roots
                .iter()
                .try_for_each(|(dir, root)| {
                    syncfs(root).map_err(|source| StoreError::Sync {
                        path: dir.clone(),
                        source,
                    })
                })
                .and_then(|()| super::journal::remove_old_journal(&old))
                .map_err(Arc::new);
            let _ = tx.send((synced, started.elapsed()));
        };
        // A thread that cannot start drops `tx`: the checkpoint then fails,
        // and the next one runs in place.
        if let Err(err) = std::thread::Builder::new()
            .name("sum-checkpoint".into())
            .spawn(sync_all)
        {
            error!(cause = %err, "could not start a commit journal checkpoint thread");
        }
        self.draining = Some(Draining { devices, done });
    }

    /// Ends the checkpoint running on its own thread once that thread is
    /// done (with `wait`, waits for it): on success the rotated journal is
    /// removed; on failure it stays, its filesystems are owed a sync again,
    /// and the next checkpoint runs in place.
    fn end_checkpoint(&mut self, wait: bool) {
        let Some(draining) = &self.draining else {
            return;
        };
        let outcome = if wait {
            draining.done.recv().ok()
        } else {
            match draining.done.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => None,
            }
        };
        let Some(draining) = self.draining.take() else {
            return;
        };
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let (ended, seconds) = match outcome {
            Some((synced, seconds)) => (synced.map(|()| journal.old_removed()), seconds),
            None => (
                Err(Arc::new(StoreError::Sync {
                    path: journal.path().to_path_buf(),
                    source: io::Error::other("the checkpoint thread stopped without an answer"),
                })),
                Duration::ZERO,
            ),
        };
        match ended {
            Ok(()) => {
                self.checkpoint_seconds.record(seconds);
                metrics::counter!(crate::metrics::JOURNAL_CHECKPOINTS).increment(1);
                metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(journal_bytes(journal));
                debug!(journal = %journal.path().display(), seconds = seconds.as_secs_f64(),
                    "commit journal checkpointed");
            }
            Err(err) => {
                error!(cause = %err, "commit journal checkpoint failed; keeping the journal");
                for (device, sample) in draining.devices {
                    self.journaled.entry(device).or_insert(sample);
                }
            }
        }
        // Told once everything above is done (the rotated journal removed,
        // the figures recorded), so a test that waits for it sees them.
        #[cfg(test)]
        if let Some(ended) = &self.checkpoint_ended {
            let _ = ended.send(());
        }
    }

    /// Makes every file the journal names durable by itself (one `syncfs`
    /// per filesystem), then empties the journal and removes a rotated one,
    /// rounds waiting meanwhile (when the committer stops, and when a
    /// checkpoint cannot run on a thread of its own). On failure the journal
    /// is kept, so a restart still replays it, and the next round tries again.
    fn checkpoint(&mut self) {
        self.end_checkpoint(true);
        if self.journal.as_ref().is_none_or(Journal::is_empty) {
            return;
        }
        let started = std::time::Instant::now();
        let devices: Vec<(u64, Arc<Path>)> = self.journaled.drain().collect();
        for (device, sample) in &devices {
            if let Err(err) = self.sync_device(*device, sample) {
                error!(cause = %err, "commit journal checkpoint failed; keeping the journal");
                self.journaled.extend(devices);
                return;
            }
        }
        if let Some(journal) = self.journal.as_mut() {
            match journal.reset().and_then(|()| journal.drop_old()) {
                Ok(()) => {
                    self.checkpoint_seconds.record(started.elapsed());
                    metrics::counter!(crate::metrics::JOURNAL_CHECKPOINTS).increment(1);
                    metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(journal_bytes(journal));
                    debug!(journal = %journal.path().display(), seconds = started.elapsed().as_secs_f64(),
                        "commit journal checkpointed in place");
                }
                Err(err) => {
                    error!(cause = %err, "could not empty the commit journal after a checkpoint");
                    self.journaled.extend(devices);
                }
            }
        }
    }

    /// One sync for the tickets of the round marked in `covered` (written
    /// [`TicketSync::Shared`] ones the journal did not take): `fdatasync`
    /// for a single file, else one `syncfs` per filesystem.
    fn shared_sync(&mut self, round: &[Ticket], covered: &[bool]) -> CommitResult {
        let mut shared = (0..round.len()).filter(|&i| covered[i]);
        let Some(first) = shared.next() else {
            return Ok(());
        };
        let path = &round[first].path;
        let mut devices: HashMap<u64, usize> = HashMap::from([(round[first].device, first)]);
        let mut one_file = true;
        for i in shared {
            let other = &round[i].path;
            one_file &= Arc::ptr_eq(path, other) || path == other;
            devices.entry(round[i].device).or_insert(i);
        }
        if one_file {
            sync_file(path)
        } else {
            devices
                .iter()
                .try_for_each(|(device, &i)| self.sync_device(*device, &round[i].path))
        }
    }

    /// The directory handle kept for `syncfs` of filesystem `device`,
    /// opened (the directory of `sample`) the first time.
    fn root(&mut self, device: u64, sample: &Path) -> Result<&File, Arc<StoreError>> {
        match self.roots.entry(device) {
            std::collections::hash_map::Entry::Occupied(root) => Ok(root.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let dir = parent(sample);
                let handle = File::open(&dir)
                    .map_err(|source| Arc::new(StoreError::Sync { path: dir, source }))?;
                Ok(slot.insert(handle))
            }
        }
    }

    fn sync_device(&mut self, device: u64, sample: &Path) -> CommitResult {
        let dir = parent(sample);
        let root = self.root(device, sample)?;
        syncfs(root).map_err(|source| {
            // Logged once, by whoever it fails: each stream of a round
            // (with its path and errno), or the journal's checkpoint.
            self.roots.remove(&device);
            Arc::new(StoreError::Sync { path: dir, source })
        })
    }
}

/// Whether the round's [`TicketSync::Shared`] tickets are for more than one file.
fn shares_several_files(round: &[Ticket]) -> bool {
    let mut paths = round
        .iter()
        .filter(|t| t.sync == TicketSync::Shared)
        .map(|t| &t.path);
    let Some(first) = paths.next() else {
        return false;
    };
    paths.any(|other| !Arc::ptr_eq(first, other) && first != other)
}

/// The outcome of each ticket that does not share the round's sync: the
/// `fdatasync` of each [`TicketSync::Own`] ticket's file (once per file)
/// whose frames are in the file, and nothing to do for a written
/// [`TicketSync::Skip`]; `None` for the others.
fn own_syncs(round: &[Ticket], written: &[bool]) -> Vec<Option<CommitResult>> {
    let mut synced: HashMap<&Path, CommitResult> = HashMap::new();
    round
        .iter()
        .zip(written)
        .map(|(ticket, &written)| match (ticket.sync, written) {
            (_, false) | (TicketSync::Shared, true) => None,
            (TicketSync::Skip, true) => Some(Ok(())),
            (TicketSync::Own, true) => Some(
                synced
                    .entry(&ticket.path)
                    .or_insert_with(|| sync_file(&ticket.path))
                    .clone(),
            ),
        })
        .collect()
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_file(path: &Path) -> CommitResult {
    match File::open(path) {
        Ok(file) => file.sync_data(),
        // Removed since (its stream ended): nothing left to make durable.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
    .map_err(|source| {
        Arc::new(StoreError::Sync {
            path: path.to_path_buf(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StreamLog;

    type Told = Arc<std::sync::Mutex<Vec<(usize, Result<(), PathBuf>)>>>;

    /// A job that creates `path` as a `batch` stream file and records what
    /// its owner is told, as job number `n`.
    fn create(n: usize, path: PathBuf, told: &Told) -> Job {
        let told = told.clone();
        Box::new(move |syncs| {
            let created = StreamLog::create_unsynced(Arc::from(path), SyncPolicy::Batch);
            if let Ok(new) = &created {
                syncs.sync_later(new.dirs());
            }
            Box::new(move |synced| {
                let outcome = match created.and_then(|new| new.finish(synced)) {
                    Ok(_) => Ok(()),
                    Err(StoreError::SyncDir { path, .. }) => Err(path),
                    Err(other) => Err(PathBuf::from(other.to_string())),
                };
                if let Ok(mut told) = told.lock() {
                    told.push((n, outcome));
                }
            })
        })
    }

    #[test]
    fn a_batch_of_new_files_shares_its_directory_syncs_and_tells_each_owner_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let told = Told::default();
        let nested = dir.path().join("new/deeper");
        run_jobs(vec![
            create(0, dir.path().join("a"), &told),
            create(1, nested.join("b"), &told),
            create(2, dir.path().join("c"), &told),
        ]);
        assert_eq!(
            *told.lock().unwrap(),
            [(0, Ok(())), (1, Ok(())), (2, Ok(()))]
        );
        for file in [dir.path().join("a"), nested.join("b"), dir.path().join("c")] {
            assert!(file.is_file(), "{}", file.display());
        }
    }

    #[test]
    fn a_directory_that_fails_to_sync_fails_only_the_jobs_that_asked_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let told = Told::default();
        let missing = dir.path().join("gone");
        let asks_missing: Job = {
            let (told, missing) = (told.clone(), missing.clone());
            Box::new(move |syncs| {
                syncs.sync_later(std::slice::from_ref(&missing));
                Box::new(move |synced| {
                    if let Ok(mut told) = told.lock() {
                        told.push((9, synced.map_err(|(dir, _)| dir)));
                    }
                })
            })
        };
        run_jobs(vec![asks_missing, create(1, dir.path().join("ok"), &told)]);
        assert_eq!(*told.lock().unwrap(), [(9, Err(missing)), (1, Ok(()))]);
    }

    /// A ticket for `path` that records its outcome in `told` as number `n`.
    fn ticket(n: usize, path: &Path, sync: TicketSync, told: &Told) -> Ticket {
        let told = told.clone();
        Ticket {
            path: Arc::from(path),
            device: 0,
            write: None,
            sync,
            faults: None,
            home: None,
            done: Box::new(move |outcome| {
                if let Ok(mut told) = told.lock() {
                    told.push((n, outcome.map_err(|err| PathBuf::from(err.to_string()))));
                }
            }),
        }
    }

    /// A Prometheus recorder with the buckets the service sets for the committer's histograms.
    fn recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
        use crate::metrics::*;
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(ROUND_TICKETS.into()), &ROUND_TICKETS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(JOURNAL_CHECKPOINT_SECONDS.into()),
                    &JOURNAL_CHECKPOINT_BUCKETS,
                )
            })
            .unwrap()
            .build_recorder()
    }

    /// A ticket whose callback sends its number and the thread it ran on.
    fn homed(
        n: usize,
        path: &Path,
        home: Option<Home>,
        tx: &tokio::sync::mpsc::UnboundedSender<(usize, std::thread::ThreadId)>,
    ) -> Ticket {
        let tx = tx.clone();
        Ticket {
            path: Arc::from(path),
            device: 0,
            write: None,
            sync: TicketSync::Skip,
            faults: None,
            home,
            done: Box::new(move |_| {
                let _ = tx.send((n, std::thread::current().id()));
            }),
        }
    }

    #[test]
    fn a_rounds_callbacks_run_on_the_arbiter_that_submitted_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stream");
        let committer = Committer::thread().unwrap();
        actix_rt::System::new().block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for n in 0..3 {
                committer.submit(homed(n, &file, None, &tx));
            }
            let here = std::thread::current().id();
            for n in 0..3 {
                assert_eq!(rx.recv().await, Some((n, here)));
            }
        });
    }

    #[test]
    fn a_round_gathers_its_callbacks_by_home_and_a_home_that_ended_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stream");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (first, second) = actix_rt::System::new().block_on(async {
            let first = Home::here();
            // The same thread's home, while its runtime runs.
            assert!(Arc::ptr_eq(&first.0, &Home::here().0));
            (
                first,
                Home(Arc::new(tokio::sync::mpsc::unbounded_channel().0)),
            )
        });
        let mut outgoing = Outgoing::default();
        for (n, home) in [(0, &first), (1, &second), (2, &first)] {
            let ticket = homed(n, &file, Some(home.clone()), &tx);
            outgoing.answer(ticket.done, ticket.home, Ok(()));
        }
        let counts: Vec<usize> = outgoing.homes.iter().map(|(_, a)| a.len()).collect();
        assert_eq!(counts, [2, 1], "one message per home");
        // Without a home, at once, on this thread.
        let ticket = homed(3, &file, None, &tx);
        outgoing.answer(ticket.done, ticket.home, Ok(()));
        assert_eq!(rx.try_recv(), Ok((3, std::thread::current().id())));
        // Both homes' runtimes ended: nobody is left to tell.
        outgoing.send();
        assert!(outgoing.homes.is_empty());
        drop((first, second));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_round_answers_its_none_tickets_as_it_writes_them_a_few_hundred_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stream");
        let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let home = Home(Arc::new(answers_tx));
        let (tx, mut told) = tokio::sync::mpsc::unbounded_channel();
        let mut round: Vec<Ticket> = (0..2 * NONE_ANSWERS_PER_HAND_OFF + 1)
            .map(|n| homed(n, &file, Some(home.clone()), &tx))
            .collect();
        // A `batch` ticket in the same round is answered after its sync, alone.
        let mut synced = homed(usize::MAX, &file, Some(home), &tx);
        synced.sync = TicketSync::Shared;
        std::fs::write(&file, b"").unwrap();
        round.insert(1, synced);
        Syncer::new(None).run(round);
        let mut sizes = Vec::new();
        while let Ok(batch) = answers.try_recv() {
            sizes.push(batch.len());
            for (done, result) in batch {
                done(result);
            }
        }
        let n = NONE_ANSWERS_PER_HAND_OFF;
        assert_eq!(sizes, [n, n, 1, 1], "messages to the home, in order");
        let order: Vec<usize> = std::iter::from_fn(|| told.try_recv().ok())
            .map(|(n, _)| n)
            .collect();
        let none: Vec<usize> = (0..=2 * n).collect();
        assert_eq!(
            order[..=2 * n],
            none[..],
            "the none tickets first, in order"
        );
        assert_eq!(order[2 * n + 1..], [usize::MAX]);
    }

    #[test]
    fn each_round_records_how_many_tickets_it_took_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stream");
        std::fs::write(&file, b"").unwrap();
        let recorder = recorder();
        let served = recorder.handle();
        let mut syncer = metrics::with_local_recorder(&recorder, || Syncer::new(None));
        let told = Told::default();

        // One `batch` ticket (its file's own sync), then three `none` ones.
        syncer.run(vec![ticket(0, &file, TicketSync::Shared, &told)]);
        syncer.run(
            (1..4)
                .map(|n| ticket(n, &file, TicketSync::Skip, &told))
                .collect(),
        );

        assert_eq!(
            *told.lock().unwrap(),
            [(0, Ok(())), (1, Ok(())), (2, Ok(())), (3, Ok(()))]
        );
        let body = served.render();
        for expected in [
            "sum_commit_round_tickets_bucket{le=\"1\"} 1",
            "sum_commit_round_tickets_bucket{le=\"2\"} 1",
            "sum_commit_round_tickets_bucket{le=\"4\"} 2",
            "sum_commit_round_tickets_sum 4",
            "sum_commit_round_tickets_count 2",
        ] {
            assert!(
                body.contains(expected),
                "render lacks {expected:?}:\n{body}"
            );
        }
    }

    #[test]
    fn a_checkpoint_records_how_long_it_took_and_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut syncer, served, landed, device) = syncer_with_journal(dir.path());
        journal_round(&mut syncer, landed(0, b"record"), device);
        assert!(!syncer.journal.as_ref().unwrap().is_empty());

        syncer.checkpoint();

        assert!(syncer.journal.as_ref().unwrap().is_empty(), "emptied");
        let body = served.render();
        for expected in [
            "sum_commit_journal_checkpoint_seconds_bucket{le=\"10\"} 1",
            "sum_commit_journal_checkpoint_seconds_count 1",
        ] {
            assert!(
                body.contains(expected),
                "render lacks {expected:?}:\n{body}"
            );
        }
        // Nothing left to checkpoint: nothing recorded.
        syncer.checkpoint();
        assert!(served
            .render()
            .contains("sum_commit_journal_checkpoint_seconds_count 1"));
    }

    /// A syncer whose journal (in `dir`) wants a checkpoint past one byte,
    /// recording into the returned handle, with one stream file `stream`.
    fn syncer_with_journal(
        dir: &Path,
    ) -> (
        Syncer,
        metrics_exporter_prometheus::PrometheusHandle,
        impl Fn(u64, &[u8]) -> crate::store::log::Landed,
        u64,
    ) {
        use crate::store::log::Landed;
        use crate::store::sys::FileId;
        use std::os::unix::fs::MetadataExt;
        let stream = dir.join("stream");
        std::fs::write(&stream, b"").unwrap();
        let file = File::open(&stream).unwrap();
        let id = FileId::of(&file).expect("this filesystem keeps inode generations");
        let device = file.metadata().unwrap().dev();
        let (journal, _) = Journal::open_with(&dir.join("commit.journal"), 1).unwrap();
        let recorder = recorder();
        let served = recorder.handle();
        let syncer = metrics::with_local_recorder(&recorder, || Syncer::new(Some(journal)));
        let path: Arc<Path> = Arc::from(stream.as_path());
        let landed = move |offset, bytes: &[u8]| {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, bytes, offset).unwrap();
            Landed {
                path: path.clone(),
                file: id,
                offset,
                bytes: bytes.to_vec(),
            }
        };
        (syncer, served, landed, device)
    }

    /// Holds `syncer`'s next checkpoint thread before its `syncfs` until
    /// the returned sender sends (`true`: fail as a `syncfs` would) or hangs up.
    fn hold_next_checkpoint(syncer: &mut Syncer) -> mpsc::Sender<bool> {
        let (release, hold) = mpsc::channel();
        syncer.hold_checkpoint = Some(hold);
        release
    }

    /// What a round does to the journal: commits `landed` and notes its filesystem.
    fn journal_round(syncer: &mut Syncer, landed: crate::store::log::Landed, device: u64) {
        let path = landed.path.clone();
        syncer.journal.as_mut().unwrap().commit([&landed]).unwrap();
        syncer.journaled.insert(device, path);
    }

    #[test]
    fn rounds_go_on_while_a_checkpoint_syncs_on_a_thread_of_its_own() {
        use crate::store::journal::old_journal_path;
        let dir = tempfile::tempdir().unwrap();
        let old = old_journal_path(&dir.path().join("commit.journal"));
        let (mut syncer, served, landed, device) = syncer_with_journal(dir.path());
        let release = hold_next_checkpoint(&mut syncer);

        journal_round(&mut syncer, landed(0, b"one"), device);
        syncer.after_round();
        assert!(old.is_file(), "rotated");
        assert!(syncer.draining.is_some(), "its checkpoint runs (held)");
        // The next round commits into the new journal while the checkpoint
        // has not ended; the round after it finds it still running.
        journal_round(&mut syncer, landed(3, b"two"), device);
        syncer.end_checkpoint(false);
        assert!(syncer.draining.is_some() && old.is_file());
        let count = "sum_commit_journal_checkpoint_seconds_count";
        assert!(served.render().contains(&format!("{count} 0")));

        release.send(false).unwrap();
        syncer.end_checkpoint(true);
        let journal = syncer.journal.as_ref().unwrap();
        assert!(
            syncer.draining.is_none() && !old.exists(),
            "ended: old journal removed"
        );
        assert_ne!(journal.len(), 0, "the newer round's entry stays journaled");
        assert_eq!(journal.old_len(), None);
        assert!(served.render().contains(&format!("{count} 1")));

        // The new journal is past its bound too: checkpointed the same way.
        syncer.after_round();
        syncer.end_checkpoint(true);
        assert!(syncer.journal.as_ref().unwrap().is_empty() && !old.exists());
        assert!(served.render().contains(&format!("{count} 2")));
    }

    #[test]
    fn a_power_loss_during_a_checkpoint_loses_nothing_either_journal_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.journal");
        let stream = dir.path().join("stream");
        let (mut syncer, _served, landed, device) = syncer_with_journal(dir.path());
        // The checkpoint thread never gets to its `syncfs`: nothing in the
        // stream file is durable but through the journals.
        let release = hold_next_checkpoint(&mut syncer);
        journal_round(&mut syncer, landed(0, b"first"), device);
        syncer.after_round();
        assert!(syncer.draining.is_some(), "rotated, its checkpoint held");
        journal_round(&mut syncer, landed(5, b"+second"), device);
        journal_round(&mut syncer, landed(0, b"FIRST"), device);

        // Power loss: the stream file's unsynced bytes are gone; both
        // journals were synced by their rounds.
        std::fs::write(&stream, b"").unwrap();
        drop(syncer);
        let (journal, replayed) = Journal::open_with(&path, 1).unwrap();

        assert_eq!(replayed.applied, 3, "{replayed:?}");
        assert_eq!(
            std::fs::read(&stream).unwrap(),
            b"FIRST+second",
            "the rotated journal first, then the newer one over it"
        );
        assert!(journal.is_empty() && journal.old_len().is_none());
        assert!(!crate::store::journal::old_journal_path(&path).exists());
        drop(release);
    }

    #[test]
    fn an_idle_committer_ends_a_checkpoint_without_waiting_for_a_round() {
        use crate::store::journal::old_journal_path;
        let dir = tempfile::tempdir().unwrap();
        let old = old_journal_path(&dir.path().join("commit.journal"));
        let (mut syncer, served, landed, device) = syncer_with_journal(dir.path());
        let release = hold_next_checkpoint(&mut syncer);
        let (ended_tx, ended) = mpsc::channel();
        syncer.checkpoint_ended = Some(ended_tx);
        journal_round(&mut syncer, landed(0, b"one"), device);
        syncer.after_round();
        assert!(syncer.draining.is_some(), "its checkpoint runs (held)");

        // The committer's loop, with no ticket coming: it ends the checkpoint
        // itself, rather than leaving it open (and counted in
        // `sum_commit_journal_bytes`) until the next round.
        let (tickets, queue) = mpsc::channel::<Vec<Ticket>>();
        let committer = std::thread::spawn(move || {
            serve(&queue, &mut syncer, &AtomicU64::new(0));
            syncer
        });
        release.send(false).unwrap();
        ended
            .recv_timeout(Duration::from_secs(60))
            .expect("the idle committer ended the checkpoint");
        assert!(!old.exists(), "the rotated journal is gone");
        assert!(served
            .render()
            .contains("sum_commit_journal_checkpoint_seconds_count 1"));

        drop(tickets);
        let syncer = committer.join().unwrap();
        assert!(syncer.draining.is_none());
        assert_eq!(syncer.journal.as_ref().unwrap().old_len(), None);
    }

    #[test]
    fn a_failed_checkpoint_keeps_the_rotated_journal_for_one_in_place() {
        use crate::store::journal::old_journal_path;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.journal");
        let old = old_journal_path(&path);
        let (mut syncer, served, landed, device) = syncer_with_journal(dir.path());
        let release = hold_next_checkpoint(&mut syncer);

        journal_round(&mut syncer, landed(0, b"one"), device);
        syncer.after_round();
        release.send(true).unwrap();
        syncer.end_checkpoint(true);
        assert!(old.is_file(), "kept: a restart would replay it");
        assert!(syncer.journal.as_ref().unwrap().old_len().is_some());
        assert!(
            syncer.journaled.contains_key(&device),
            "its filesystem is owed a sync"
        );
        assert!(served
            .render()
            .contains("sum_commit_journal_checkpoint_seconds_count 0"));

        // The next full journal is checkpointed in place, the old one with it.
        journal_round(&mut syncer, landed(3, b"two"), device);
        syncer.after_round();
        assert!(syncer.draining.is_none(), "in place, not on a thread");
        assert!(syncer.journal.as_ref().unwrap().is_empty());
        assert!(!old.exists());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(served
            .render()
            .contains("sum_commit_journal_checkpoint_seconds_count 1"));
    }
}
