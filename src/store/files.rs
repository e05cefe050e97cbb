//! A bound on open stream files: an LRU of file handles.
//!
//! Mesos keeps one descriptor open per live stream, so a few tens of
//! thousands of streams exhaust `ulimit -n`. Here every [`StreamLog`] of a
//! manager shares one [`FileCache`] of at most `limits.max_open_files`
//! handles: a log whose handle was evicted reopens its file (read-write, no
//! create) the next time it writes. Evicting never loses data — written bytes
//! are in the page cache, and group commit syncs by path or filesystem, not
//! through these handles — so the bound is strict: at most `capacity`
//! stream files are open at once (plus one while a round of the committer
//! syncs a single file).
//!
//! A new stream's file is about to be written, so it evicts the least
//! recently used file; a recovered stream's file is kept open only while
//! there is room (recovering 100,000 streams does not churn through the
//! cache), and is reopened on its next write.
//!
//! The bound must fit under the process's descriptor limit, with room for
//! everything else the process opens, or opens fail with `EMFILE` once
//! enough streams are live. [`fit_to_descriptor_limit`] (which `serve`
//! calls) raises the soft limit to the hard one and splits it: the files
//! get their bound (a smaller one when even the hard limit is too low), the
//! agents' connections what is left after [`RESERVED_DESCRIPTORS`] (at
//! least [`MIN_CONNECTIONS`]), and `serve` accepts no more connections than
//! that (`service::accept`).
//!
//! [`StreamLog`]: super::StreamLog

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::sys::FileId;

#[derive(Debug)]
struct Inner {
    files: Mutex<LruCache<u64, Open>>,
    next_id: AtomicU64,
    peak: AtomicU64,
    reopens: AtomicU64,
}

/// An open stream file, with its identity for the commit journal once a
/// journaled round asked for it: the inode a handle refers to does not
/// change while it is open, so the `fstat` and `ioctl` that find it are
/// made once per handle, not once per round.
#[derive(Debug)]
struct Open {
    file: File,
    identity: Option<Option<FileId>>,
}

impl Open {
    fn new(file: File) -> Open {
        Open {
            file,
            identity: None,
        }
    }
}

/// Shared LRU of open stream files; cheap to clone.
#[derive(Debug, Clone)]
pub struct FileCache {
    inner: Arc<Inner>,
}

impl FileCache {
    /// A cache of at most `capacity` open files (at least one). Its table
    /// grows with the files open, not with the bound: any bound is safe to
    /// ask for (`LruCache::new` would reserve room for all of them at once).
    pub fn new(capacity: usize) -> FileCache {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let mut files = LruCache::unbounded();
        files.resize(capacity);
        FileCache {
            inner: Arc::new(Inner {
                files: Mutex::new(files),
                next_id: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                reopens: AtomicU64::new(0),
            }),
        }
    }

    /// Takes ownership of an open file; returns its slot id.
    pub(crate) fn adopt(&self, file: File) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.insert(id, Open::new(file));
        id
    }

    /// Takes an open file if there is room for it without evicting
    /// another, and closes it otherwise; returns its slot id either way
    /// (the file is reopened on demand).
    pub(crate) fn adopt_if_room(&self, file: File) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut files = self.lock();
        if files.len() < files.cap().get() {
            files.push(id, Open::new(file));
            self.inner
                .peak
                .fetch_max(files.len() as u64, Ordering::Relaxed);
        }
        id
    }

    fn insert(&self, id: u64, open: Open) {
        // `push` evicts the least recently used file when full; it is closed
        // after the lock is released, so no other thread waits for a `close`.
        let evicted = {
            let mut files = self.lock();
            let evicted = files.push(id, open);
            self.inner
                .peak
                .fetch_max(files.len() as u64, Ordering::Relaxed);
            evicted
        };
        drop(evicted);
    }

    /// Runs `op` on slot `id`'s file, reopening `path` if it was evicted.
    pub(crate) fn with<R>(
        &self,
        id: u64,
        path: &Path,
        op: impl FnOnce(&File) -> io::Result<R>,
    ) -> io::Result<R> {
        self.with_open(id, path, |open| op(&open.file))
    }

    /// [`with`](Self::with), and the file's identity for the commit journal
    /// (`None` where the filesystem keeps none), found once per open handle.
    pub(crate) fn with_identity<R>(
        &self,
        id: u64,
        path: &Path,
        op: impl FnOnce(&File) -> io::Result<R>,
    ) -> io::Result<(R, Option<FileId>)> {
        self.with_open(id, path, |open| {
            let result = op(&open.file)?;
            let identity = *open.identity.get_or_insert_with(|| FileId::of(&open.file));
            Ok((result, identity))
        })
    }

    /// Runs `op` on slot `id`'s entry, reopening `path` if it was evicted
    /// (the reopened file then takes the slot, evicting another).
    fn with_open<R>(
        &self,
        id: u64,
        path: &Path,
        op: impl FnOnce(&mut Open) -> io::Result<R>,
    ) -> io::Result<R> {
        {
            let mut files = self.lock();
            if let Some(open) = files.get_mut(&id) {
                return op(open);
            }
        }
        let mut open = Open::new(OpenOptions::new().read(true).write(true).open(path)?);
        self.inner.reopens.fetch_add(1, Ordering::Relaxed);
        let result = op(&mut open);
        self.insert(id, open);
        result
    }

    /// Closes slot `id`'s file if it is open.
    pub(crate) fn forget(&self, id: u64) {
        let file = self.lock().pop(&id);
        drop(file);
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.lock().len()
    }

    /// Most files open at once so far.
    pub fn peak_open_files(&self) -> u64 {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// Files reopened after an eviction so far.
    pub fn reopens(&self) -> u64 {
        self.inner.reopens.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.lock().cap().get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Open>> {
        // The cache holds no invariant a panicking holder could break.
        self.inner
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Descriptors a service keeps for everything but stream files and the
/// agents' connections: stdio, its listeners, the commit journal, the
/// runtimes' epoll and event descriptors, directories being synced, a
/// file being created or reopened, and the scrapers' connections to
/// `/metrics` (at most `service::scrape::SCRAPE_CONNECTIONS`).
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// Agents' connections a service keeps room for however tight the limit:
/// fewer stream files are kept open instead.
pub const MIN_CONNECTIONS: u64 = 32;

/// Linux's default `fs.nr_open`, the most descriptors a process can be
/// given: assumed when `/proc/sys/fs/nr_open` cannot be read, and the
/// largest `limits.max_open_files` (the service's `MAX_OPEN_FILES_LIMIT`).
pub const DEFAULT_NR_OPEN: u64 = 1 << 20;

/// How a process's descriptor limit (`ulimit -n`, `RLIMIT_NOFILE`) is
/// shared between stream files and agents' connections: see
/// [`fit_to_descriptor_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The bound asked for (`limits.max_open_files`).
    pub asked: usize,
    /// The bound the process can keep: `asked`, or less when the limit is
    /// lower than `asked` plus [`RESERVED_DESCRIPTORS`] and
    /// [`MIN_CONNECTIONS`] (at least one).
    pub granted: usize,
    /// The agents' connections the process can hold besides: what the
    /// limit leaves (at least one).
    pub connections: usize,
    /// The soft limit before, when it was raised (to make room).
    pub raised_from: Option<u64>,
    /// The soft limit now.
    pub soft_limit: u64,
    /// The hard limit (the most the soft one can be raised to).
    pub hard_limit: u64,
}

/// Shares the process's descriptor limit between `asked` stream files and
/// the agents' connections, so that neither can take the other's
/// descriptors: a stream file that cannot be opened (`EMFILE`) is a stream
/// fault, while a connection past its share only waits in the listen
/// queue.
///
/// The soft limit is first raised to the hard one, as far as the system
/// lets it (an unlimited hard limit cannot be the soft one: Linux caps it
/// at `fs.nr_open`). The files get `asked`, or what fits after
/// [`RESERVED_DESCRIPTORS`] and [`MIN_CONNECTIONS`] if the limit is too
/// low for that; a smaller bound only means more reopens. The connections
/// get what is left.
pub fn fit_to_descriptor_limit(asked: usize) -> io::Result<DescriptorBudget> {
    Ok(fit(
        asked,
        descriptor_limit()?,
        nr_open(),
        set_soft_descriptor_limit,
    ))
}

/// [`fit_to_descriptor_limit`] under the limits `(soft, hard)` and a
/// system maximum of `nr_open`, raising the soft one with
/// `set_soft(soft, hard)`.
fn fit(
    asked: usize,
    (soft, hard): (u64, u64),
    nr_open: u64,
    mut set_soft: impl FnMut(u64, u64) -> io::Result<()>,
) -> DescriptorBudget {
    let mut budget = DescriptorBudget {
        asked,
        granted: asked,
        connections: 1,
        raised_from: None,
        soft_limit: soft,
        hard_limit: hard,
    };
    let needed = u64::try_from(asked)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_DESCRIPTORS + MIN_CONNECTIONS);
    let mut tried = None;
    for target in [hard, nr_open.min(hard), needed.min(hard)] {
        // The hard limit is often at or under fs.nr_open: one try for both.
        if target <= soft || tried == Some(target) {
            continue;
        }
        tried = Some(target);
        if set_soft(target, hard).is_ok() {
            budget.raised_from = Some(soft);
            budget.soft_limit = target;
            break;
        }
    }
    let limit = budget.soft_limit;
    budget.granted = files_under(asked, limit);
    let left = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .saturating_sub(budget.granted as u64)
        .max(1);
    budget.connections = usize::try_from(left).unwrap_or(usize::MAX);
    budget
}

/// How many of `asked` stream files fit under a descriptor limit of
/// `limit`, with [`RESERVED_DESCRIPTORS`] and [`MIN_CONNECTIONS`] left for
/// the rest (never none of them: a stream needs its file open to write).
fn files_under(asked: usize, limit: u64) -> usize {
    let room = limit
        .saturating_sub(RESERVED_DESCRIPTORS + MIN_CONNECTIONS)
        .max(1);
    usize::try_from(room).map_or(asked, |room| asked.min(room))
}

/// The most descriptors the system gives a process (`fs.nr_open`).
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_NR_OPEN)
}

#[cfg(unix)]
fn descriptor_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid `rlimit` for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `RLIM_INFINITY` is the largest value, as it should read here.
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` everywhere.
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

#[cfg(unix)]
fn set_soft_descriptor_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: a valid `rlimit`; only the soft limit changes, within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn descriptor_limit() -> io::Result<(u64, u64)> {
    Ok((u64::MAX, u64::MAX))
}

#[cfg(not(unix))]
fn set_soft_descriptor_limit(_soft: u64, _hard: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_granted_leave_room_for_everything_else_and_are_never_none() {
        let others = RESERVED_DESCRIPTORS + MIN_CONNECTIONS;
        assert_eq!(files_under(4096, 20_000), 4096);
        assert_eq!(files_under(4096, 4096 + others), 4096);
        assert_eq!(files_under(4096, 2048), 2048 - others as usize);
        assert_eq!(files_under(4096, 10), 1);
        assert_eq!(files_under(0, 10), 0, "no more than asked");
        assert_eq!(
            files_under(usize::MAX, u64::MAX),
            usize::try_from(u64::MAX - others).unwrap_or(usize::MAX)
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_the_connections_get_what_the_files_leave() {
        let nr_open = 1 << 20;
        // Linux refuses a soft limit past fs.nr_open.
        let capped = |soft: u64, _hard: u64| {
            if soft <= nr_open {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            }
        };
        let shared = |limits| {
            let b = fit(4096, limits, nr_open, capped);
            (b.raised_from, b.soft_limit, b.granted, b.connections)
        };
        let left = |limit: u64| (limit - RESERVED_DESCRIPTORS - 4096) as usize;
        assert_eq!(
            shared((1024, 20_000)),
            (Some(1024), 20_000, 4096, left(20_000))
        );
        // Unlimited: as far as fs.nr_open.
        assert_eq!(
            shared((1024, u64::MAX)),
            (Some(1024), nr_open, 4096, left(nr_open))
        );
        // Already at the hard limit: nothing to raise.
        assert_eq!(shared((20_000, 20_000)), (None, 20_000, 4096, left(20_000)));
        // The hard limit is too low even for the files: fewer files, and
        // room for MIN_CONNECTIONS connections all the same.
        let few = (200 - RESERVED_DESCRIPTORS - MIN_CONNECTIONS) as usize;
        assert_eq!(
            shared((100, 200)),
            (Some(100), 200, few, MIN_CONNECTIONS as usize)
        );
        // The soft limit cannot be changed: shared as it is.
        let mut tries = Vec::new();
        let refused = fit(4096, (1024, 20_000), nr_open, |soft, _| {
            tries.push(soft);
            Err(io::Error::from_raw_os_error(libc::EPERM))
        });
        assert_eq!(
            tries,
            [20_000, 4096 + RESERVED_DESCRIPTORS + MIN_CONNECTIONS],
            "each target once"
        );
        let few = (1024 - RESERVED_DESCRIPTORS - MIN_CONNECTIONS) as usize;
        assert_eq!(
            (
                refused.raised_from,
                refused.soft_limit,
                refused.granted,
                refused.connections
            ),
            (None, 1024, few, MIN_CONNECTIONS as usize)
        );
        // A limit too low for anything still lets one file and one connection in.
        let tiny = fit(4096, (10, 10), nr_open, capped);
        assert_eq!((tiny.granted, tiny.connections), (1, 1));
        // fs.nr_open misread as unlimited: the files' need is the last resort.
        let unknown = fit(4096, (1024, u64::MAX), u64::MAX, capped);
        let needed = 4096 + RESERVED_DESCRIPTORS + MIN_CONNECTIONS;
        assert_eq!(
            (unknown.soft_limit, unknown.connections),
            (needed, MIN_CONNECTIONS as usize)
        );
    }

    #[test]
    fn this_process_can_keep_a_small_bound_whatever_its_limit() {
        let budget = fit_to_descriptor_limit(8).expect("the limit can be read");
        assert_eq!((budget.asked, budget.granted), (8, 8));
        assert!(budget.soft_limit <= budget.hard_limit);
        assert!(budget.soft_limit >= 8 + RESERVED_DESCRIPTORS);
        let (soft, _) = descriptor_limit().unwrap();
        assert_eq!(
            soft, budget.soft_limit,
            "the limit it reports is the one in force"
        );
    }

    #[test]
    fn evicts_least_recently_used_and_reopens_on_demand() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = FileCache::new(2);
        let paths: Vec<_> = (0..3).map(|i| dir.path().join(format!("f{i}"))).collect();
        let ids: Vec<u64> = paths
            .iter()
            .map(|p| File::create(p).map(|f| cache.adopt(f)))
            .collect::<io::Result<_>>()?;
        assert_eq!(cache.open_files(), 2, "the first file was evicted");
        assert_eq!(cache.peak_open_files(), 2);
        // Using the evicted file reopens it (and evicts another).
        cache.with(ids[0], &paths[0], |f| f.set_len(7))?;
        assert_eq!(cache.reopens(), 1);
        assert_eq!(std::fs::metadata(&paths[0])?.len(), 7);
        assert_eq!(cache.open_files(), 2);
        cache.forget(ids[0]);
        assert_eq!(cache.open_files(), 1);
        Ok(())
    }

    #[test]
    fn any_bound_is_safe_to_ask_for_and_a_zero_bound_holds_one_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        // Reserving room for the bound up front would overflow here.
        let unbounded = FileCache::new(usize::MAX);
        for i in 0..3 {
            unbounded.adopt(File::create(dir.path().join(format!("u{i}")))?);
        }
        assert_eq!(unbounded.open_files(), 3, "nothing evicted below the bound");
        let one = FileCache::new(0);
        for i in 0..3 {
            one.adopt(File::create(dir.path().join(format!("o{i}")))?);
        }
        assert_eq!(one.open_files(), 1);
        Ok(())
    }

    #[test]
    fn a_handle_keeps_the_identity_of_its_inode_and_a_reopen_finds_it_again() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = FileCache::new(1);
        let path = dir.path().join("f");
        let id = cache.adopt(File::create(&path)?);
        let identity_of = |path: &Path| {
            FileId::of(&File::open(path)?).ok_or_else(|| io::Error::other("no identity here"))
        };
        let first = identity_of(&path)?;
        let ((), identity) = cache.with_identity(id, &path, |_| Ok(()))?;
        assert_eq!(identity, Some(first));
        // The path now names another file; the open handle still refers to
        // the first one, and that is whose identity a write through it has.
        std::fs::remove_file(&path)?;
        File::create(&path)?;
        let second = identity_of(&path)?;
        assert_ne!(first, second, "a new file is another identity");
        let ((), identity) = cache.with_identity(id, &path, |_| Ok(()))?;
        assert_eq!(identity, Some(first), "the handle's own inode");
        // Evicted, then reopened by path: the file the path names now.
        let other = dir.path().join("g");
        cache.adopt(File::create(&other)?);
        let ((), identity) = cache.with_identity(id, &path, |_| Ok(()))?;
        assert_eq!(cache.reopens(), 1);
        assert_eq!(identity, Some(second));
        Ok(())
    }
}
