//! One stream's append-only checkpoint file.
//!
//! A [`StreamLog`] is owned by exactly one stream actor, which is the only writer of the file,
//! so the log keeps the file length itself and writes every frame at that explicit offset
//! (`pwrite` on Unix): appends land at the end of the last good record also after a recovery
//! truncation, and nothing depends on a shared file cursor.
//!
//! Durability follows the log's [`SyncPolicy`]: `always` syncs inside [`StreamLog::append`],
//! `batch` only marks the log dirty and leaves the sync to the owner ([`StreamLog::sync`]),
//! `none` never syncs. See the [`store`](super) module documentation for the guarantees.
//!
//! **Write-behind.** A log whose file sits in the shared [`FileCache`] leaves the `write` (and
//! the sync) to the committer, which reaches the file through the cache:
//! [`StreamLog::stage`] reserves the frame's place at the end of the log and
//! copies it into the owner's [`Staged`] bytes, [`StreamLog::hand_off`] turns those into a
//! [`StagedWrite`] for the next commit round, and the round writes them at their offset before
//! it syncs. The owner keeps every effect of the staged frames until the round returns, as it
//! does for a sync. One round per log is in flight at a time, so the frames land in order.
//! A `StagedWrite` is written once: by the committer, or taken back by its owner
//! ([`StreamLog::settle`] writes it on the spot; an owner that gives up drops it unwritten),
//! whichever comes first, so no stale write can land after the owner moved on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::dirs::{create_dir_chain, parent_dir, sync_dir};
use super::faults::FaultPlan;
use super::files::FileCache;
use super::framing::{encode_frame, to_u64, LENGTH_PREFIX_BYTES};
use super::sys::FileId;
use super::{StoreError, SyncPolicy};

/// `io_err!(Variant, path)`: a closure turning an `io::Error` into `StoreError::Variant` for
/// `path` (anything with `to_path_buf`).
macro_rules! io_err {
    ($variant:ident, $path:expr) => {
        |source: io::Error| StoreError::$variant {
            path: $path.to_path_buf(),
            source,
        }
    };
}

/// An open, append-only checkpoint file of one stream.
#[derive(Debug)]
pub struct StreamLog {
    path: Arc<Path>,
    handle: Handle,
    /// Length of the file as far as this log knows: the end of the last complete append.
    len: u64,
    policy: SyncPolicy,
    /// Whether bytes were appended (written, or staged under write-behind) that no completed
    /// sync (or write-behind round) covers yet.
    dirty: bool,
    /// Injected faults (tests only).
    faults: Option<FaultPlan>,
    /// The filesystem the file is on (`st_dev`).
    device: u64,
}

/// A checkpoint file just created, whose new directory entries may still need a sync
/// ([`StreamLog::create_unsynced`]).
#[derive(Debug)]
pub struct NewLog {
    log: StreamLog,
    dirs: Vec<PathBuf>,
}

impl NewLog {
    /// The directories to sync so that the new file survives power loss: its own, and the
    /// parent of every directory on its path not yet known durable (created for it, or for
    /// another file and not synced since). Empty under `none`.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The log, once `synced` tells how syncing [`dirs`](Self::dirs) went. If a directory
    /// failed to sync, the new file is removed again and the error names that directory.
    pub fn finish(self, synced: Result<(), (PathBuf, io::Error)>) -> Result<StreamLog, StoreError> {
        match synced {
            Ok(()) => Ok(self.log),
            Err((dir, source)) => {
                let path = self.log.path.clone();
                drop(self.log);
                if let Err(err) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %err,
                        "could not remove a new checkpoint file after its directory failed to sync");
                }
                Err(StoreError::SyncDir { path: dir, source })
            }
        }
    }
}

/// The result of [`StreamLog::open`].
#[derive(Debug)]
pub enum Opened {
    /// The directory exists but the file does not: nothing was ever checkpointed.
    Missing,
    /// The file exists; `contents` holds all of it, for replay.
    Found {
        /// The open log, positioned to append at the end of `contents`.
        log: StreamLog,
        /// Every byte of the file at the time it was opened.
        contents: Vec<u8>,
    },
}

impl StreamLog {
    /// Creates a new, empty checkpoint file at `path`, creating missing parent directories.
    ///
    /// Fails with [`StoreError::AlreadyExists`] if the file is already there (Mesos's U1 rule:
    /// a stream whose file survived must be recovered, not re-created). If `sync` syncs, the
    /// file's directory is synced once, and so is the parent of every directory created here
    /// (or created for another new file and not synced yet: see `store::dirs`), so the new
    /// entries survive power loss; if that fails, the new file is removed again.
    pub fn create(path: &Path, sync: SyncPolicy) -> Result<StreamLog, StoreError> {
        Self::create_shared(Arc::from(path), sync)
    }

    /// [`create`](Self::create), keeping `path` (one allocation shared with
    /// whoever else holds it, such as the stream actor).
    pub fn create_shared(path: Arc<Path>, sync: SyncPolicy) -> Result<StreamLog, StoreError> {
        let new = Self::create_unsynced(path, sync)?;
        let synced = new
            .dirs()
            .iter()
            .try_for_each(|dir| sync_dir(dir).map_err(|source| (dir.clone(), source)));
        new.finish(synced)
    }

    /// [`create_shared`](Self::create_shared) without its directory syncs: the caller syncs
    /// [`NewLog::dirs`] (so that one sync of a directory can cover many new files) and then
    /// [finishes](NewLog::finish) the log.
    pub fn create_unsynced(path: Arc<Path>, sync: SyncPolicy) -> Result<NewLog, StoreError> {
        let dir = parent_dir(&path);
        let dirs = if sync.syncs() {
            create_dir_chain(dir)
        } else {
            fs::create_dir_all(dir).map(|()| Vec::new())
        }
        .map_err(io_err!(CreateDir, dir))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    path: path.to_path_buf(),
                },
                _ => io_err!(Create, &path)(source),
            })?;
        let log = StreamLog {
            path,
            handle: Handle::Owned(file),
            len: 0,
            policy: sync,
            dirty: false,
            faults: None,
            device: 0,
        }
        .with_device();
        Ok(NewLog { log, dirs })
    }

    /// Opens an existing checkpoint file for recovery and reads all of it.
    ///
    /// Returns [`Opened::Missing`] if the parent directory exists but the file does not, and
    /// [`StoreError::Open`] if the parent directory is missing too (Mesos: "Failed to open";
    /// strict recovery fails on it). The file is opened read-write, neither created nor
    /// truncated; the read buffer is sized from the file's length and reading stops there, so
    /// memory use never exceeds the file size.
    pub fn open(path: &Path, sync: SyncPolicy) -> Result<Opened, StoreError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(source)
                if source.kind() == io::ErrorKind::NotFound && parent_dir(path).is_dir() =>
            {
                return Ok(Opened::Missing);
            }
            Err(source) => return Err(io_err!(Open, path)(source)),
        };
        let read_err = io_err!(Read, path);
        let metadata = file.metadata().map_err(read_err)?;
        let file_len = metadata.len();
        // A length beyond the address space fails the reservation below.
        let capacity = usize::try_from(file_len).unwrap_or(usize::MAX);
        let mut contents = Vec::new();
        contents
            .try_reserve_exact(capacity)
            .map_err(|e| read_err(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
        (&mut file)
            .take(file_len)
            .read_to_end(&mut contents)
            .map_err(read_err)?;
        let log = StreamLog {
            path: Arc::from(path),
            handle: Handle::Owned(file),
            len: to_u64(contents.len()),
            policy: sync,
            dirty: false,
            faults: None,
            device: super::sys::device_in(&metadata),
        };
        Ok(Opened::Found { log, contents })
    }

    /// Appends one complete frame (length prefix and body) at the end of the log.
    ///
    /// Under `always` the data is synced before this returns; under `batch` the log is only
    /// marked dirty and the caller must [`sync`](Self::sync) before relying on it. If the write
    /// (or the `always` sync) fails, the file is cut back to its previous length (best effort,
    /// so no torn record is left behind), the length stays unchanged, and the error is returned.
    pub fn append(&mut self, frame: &[u8]) -> Result<(), StoreError> {
        let Some(end) = self.len.checked_add(to_u64(frame.len())) else {
            return Err(StoreError::RecordTooLarge {
                path: self.path.to_path_buf(),
                len: frame.len(),
            });
        };
        if let Err(source) = self.write_frame(frame) {
            self.cut_back();
            return Err(io_err!(Write, self.path)(source));
        }
        match self.policy {
            SyncPolicy::None => {}
            SyncPolicy::Always => {
                if let Err(source) = self.sync_data() {
                    self.cut_back();
                    return Err(io_err!(Sync, self.path)(source));
                }
            }
            SyncPolicy::Batch => self.dirty = true,
        }
        self.len = end;
        Ok(())
    }

    /// Frames `body` (see [`encode_frame`]) and [`append`](Self::append)s it.
    pub fn append_record(&mut self, body: &[u8]) -> Result<(), StoreError> {
        let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES.saturating_add(body.len()));
        encode_frame(body, &mut frame).map_err(|e| StoreError::RecordTooLarge {
            path: self.path.to_path_buf(),
            len: e.len,
        })?;
        self.append(&frame)
    }

    /// Syncs written data to stable storage if anything was written since the last sync.
    ///
    /// On failure the log stays dirty. (After a failed `fdatasync` the kernel may have dropped
    /// the data, so the owner should treat the stream as failed and reload it from its file.)
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.sync_data().map_err(io_err!(Sync, self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Syncs the file's data now, dirty or not (shutdown, `none` policy).
    pub fn force_sync(&mut self) -> Result<(), StoreError> {
        self.dirty = true;
        self.sync()
    }

    /// Whether bytes were written that no sync has covered yet (only ever true under `batch`,
    /// or after a failed sync).
    pub fn needs_sync(&self) -> bool {
        self.dirty
    }

    /// Cuts the file to `len` bytes (recovery: the end of the last good record) and, under
    /// `always` and `batch`, syncs it. Later appends land at `len`. Growing the file is refused
    /// with [`StoreError::TruncateBeyondEnd`], since it would append zero bytes.
    pub fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        if len > self.len {
            return Err(StoreError::TruncateBeyondEnd {
                path: self.path.to_path_buf(),
                len,
                current: self.len,
            });
        }
        self.with_file(|file| file.set_len(len))
            .map_err(io_err!(Truncate, self.path))?;
        self.len = len;
        if self.policy.syncs() {
            self.dirty = true;
            self.sync()?;
        }
        Ok(())
    }

    /// Length of the file in bytes: the end of the last complete append.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's path, shared (one allocation for the log and its owner).
    pub fn path_arc(&self) -> Arc<Path> {
        self.path.clone()
    }

    /// The log's sync policy.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Closes and deletes the file (a file that is already gone is fine). Directories are left
    /// alone; removing them is the caller's decision.
    pub fn remove(self) -> Result<(), StoreError> {
        let path = self.path.to_path_buf();
        drop(self);
        remove_file(&path)
    }

    fn with_device(mut self) -> Self {
        if let Handle::Owned(file) = &self.handle {
            self.device = super::sys::device_of(file);
        }
        self
    }

    /// Moves this log's file handle into `cache`, which bounds how many stream files are open
    /// at once; the file is reopened on demand after an eviction.
    pub fn set_cache(&mut self, cache: &FileCache) {
        self.hand_to(cache, FileCache::adopt);
    }

    /// [`set_cache`](Self::set_cache) for a file that is not about to be
    /// written (a recovered stream): it stays open only if the cache has
    /// room, and is otherwise closed now and reopened on its next write,
    /// rather than evicting a file that is in use.
    pub fn park_in(&mut self, cache: &FileCache) {
        self.hand_to(cache, FileCache::adopt_if_room);
    }

    fn hand_to(&mut self, cache: &FileCache, adopt: impl FnOnce(&FileCache, File) -> u64) {
        let old = std::mem::replace(&mut self.handle, Handle::Closed);
        self.handle = match old {
            Handle::Owned(file) => Handle::Cached {
                cache: cache.clone(),
                id: adopt(cache, file),
            },
            other => other,
        };
    }

    /// Runs `op` on the open file (reopening it if the cache evicted it).
    fn with_file<R>(&self, op: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        match &self.handle {
            Handle::Owned(file) => op(file),
            Handle::Cached { cache, id } => cache.with(*id, &self.path, op),
            Handle::Closed => Err(io::Error::other("checkpoint file handle already released")),
        }
    }

    /// The filesystem the file is on (`st_dev`), for group commit.
    pub fn device(&self) -> u64 {
        self.device
    }

    /// The injected faults of this log, if any.
    pub fn faults(&self) -> Option<&FaultPlan> {
        self.faults.as_ref()
    }

    /// Hands the unsynced bytes to a group commit: returns whether there
    /// were any, and marks the log clean (the caller's commit round covers
    /// them; if that round fails, the caller reloads the stream).
    pub fn take_unsynced(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Write-behind: reserves `frame`'s place at the end of the log and appends it to
    /// `staged`; nothing touches the file until the staged bytes are handed off
    /// ([`hand_off`](Self::hand_off)) and written, or [settled](Self::settle). The log is dirty
    /// until then.
    pub fn stage(&mut self, frame: &[u8], staged: &mut Staged) -> Result<(), StoreError> {
        let end = self
            .len
            .checked_add(to_u64(frame.len()))
            .filter(|_| staged.bytes.is_empty() || staged.end() == self.len)
            .ok_or_else(|| StoreError::RecordTooLarge {
                path: self.path.to_path_buf(),
                len: frame.len(),
            })?;
        if staged.bytes.is_empty() {
            staged.offset = self.len;
        }
        staged.bytes.extend_from_slice(frame);
        self.len = end;
        self.dirty = true;
        Ok(())
    }

    /// Turns `staged` into the write a commit round makes (`None` if nothing is staged, or
    /// the file is not in a cache).
    pub fn hand_off(&self, staged: Staged) -> Option<StagedWrite> {
        let Handle::Cached { cache, id } = &self.handle else {
            return None;
        };
        if staged.bytes.is_empty() {
            return None;
        }
        Some(StagedWrite(Arc::new(WriteInner {
            cache: cache.clone(),
            id: *id,
            path: self.path.clone(),
            offset: staged.offset,
            faults: self.faults.clone(),
            slot: Mutex::new(Slot::Pending(staged.bytes)),
        })))
    }

    /// Writes, on this thread, whatever of `flight` (the round in flight) the committer has
    /// not written yet, then `staged`, so that the file holds every frame this log reserved;
    /// the caller syncs next ([`force_sync`](Self::force_sync)). On failure the file may end
    /// short of [`len`](Self::len): the owner must reload the stream from its file.
    pub fn settle(
        &mut self,
        flight: Option<&StagedWrite>,
        staged: Staged,
    ) -> Result<(), StoreError> {
        if let Some(flight) = flight {
            if let Some(bytes) = flight.take_back()? {
                self.with_file(|file| write_at(file, &bytes, flight.0.offset))
                    .map_err(io_err!(Write, self.path))?;
            }
        }
        if !staged.bytes.is_empty() {
            self.with_file(|file| write_at(file, &staged.bytes, staged.offset))
                .map_err(io_err!(Write, self.path))?;
        }
        Ok(())
    }

    /// Makes this log fail writes and syncs as `faults` says (tests).
    pub fn set_faults(&mut self, faults: Option<FaultPlan>) {
        self.faults = faults;
    }

    /// Writes `frame` at the end; an injected fault writes half of it first.
    fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        if let Some(err) = self.faults.as_ref().and_then(FaultPlan::on_write) {
            let half = frame.get(..frame.len() / 2).unwrap_or_default();
            self.with_file(|file| write_at(file, half, self.len))?;
            return Err(err);
        }
        self.with_file(|file| write_at(file, frame, self.len))
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(err) = self.faults.as_ref().and_then(FaultPlan::on_sync) {
            return Err(err);
        }
        self.with_file(File::sync_data)
    }

    /// Best effort: cuts the file back to the last complete append after a failed one.
    fn cut_back(&self) {
        if let Err(err) = self.with_file(|file| file.set_len(self.len)) {
            tracing::warn!(path = %self.path.display(), len = self.len, error = %err,
                "could not cut a checkpoint file back after a failed append");
        }
    }
}

/// Frames a write-behind log reserved and its owner has not handed off yet: the bytes, back
/// to back, and the file offset of the first.
#[derive(Debug, Default, Clone)]
pub struct Staged {
    offset: u64,
    bytes: Vec<u8>,
}

impl Staged {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn end(&self) -> u64 {
        self.offset.saturating_add(to_u64(self.bytes.len()))
    }
}

/// Staged frames handed to a commit round, to be written at their offset once: by the
/// committer ([`write`](Self::write)) or by their owner ([`StreamLog::settle`]), whichever
/// comes first. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StagedWrite(Arc<WriteInner>);

#[derive(Debug)]
struct WriteInner {
    cache: FileCache,
    id: u64,
    path: Arc<Path>,
    offset: u64,
    faults: Option<FaultPlan>,
    slot: Mutex<Slot>,
}

/// What [`StagedWrite::write`] did.
#[derive(Debug)]
pub enum Wrote {
    /// The committer wrote the frames; what it wrote, if it was asked to identify it.
    Here(Option<Landed>),
    /// Their owner had taken them back: it writes and syncs them itself.
    TakenBack,
}

/// Where a [`StagedWrite`]'s frames are.
#[derive(Debug)]
enum Slot {
    /// Not written yet.
    Pending(Vec<u8>),
    /// In the file (or taken back by the owner, who writes them itself).
    Done,
    /// The committer's write failed (the file may hold part of them).
    Failed(io::ErrorKind),
}

impl StagedWrite {
    /// Writes the frames (the committer thread), unless their owner took them back. The
    /// lock is held across the write, so an owner that looks afterwards knows where they
    /// are. An injected write fault writes half of them, as a crash would.
    ///
    /// With `identify`, what the committer wrote comes back as a [`Landed`] (the bytes, and
    /// the file's identity, when the filesystem has one) for the commit journal.
    pub fn write(&self, identify: bool) -> Result<Wrote, StoreError> {
        let inner = &*self.0;
        let mut slot = lock(&inner.slot);
        let Slot::Pending(bytes) = std::mem::replace(&mut *slot, Slot::Done) else {
            return Ok(Wrote::TakenBack);
        };
        let write = |buf: &[u8]| {
            let write = |file: &File| write_at(file, buf, inner.offset);
            if identify {
                let ((), identity) = inner.cache.with_identity(inner.id, &inner.path, write)?;
                Ok(identity)
            } else {
                inner
                    .cache
                    .with(inner.id, &inner.path, write)
                    .map(|()| None)
            }
        };
        let result = match inner.faults.as_ref().and_then(FaultPlan::on_write) {
            Some(err) => write(bytes.get(..bytes.len() / 2).unwrap_or_default()).and(Err(err)),
            None => write(&bytes),
        };
        match result {
            Ok(Some(file)) => Ok(Wrote::Here(Some(Landed {
                path: inner.path.clone(),
                file,
                offset: inner.offset,
                bytes,
            }))),
            Ok(None) => Ok(Wrote::Here(None)),
            Err(source) => {
                *slot = Slot::Failed(source.kind());
                Err(io_err!(Write, inner.path)(source))
            }
        }
    }

    /// Takes the frames back if the committer has not written them (waiting while it
    /// writes): `Ok(None)` if they are in the file, `Err` if the committer failed to write
    /// them.
    fn take_back(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = &*self.0;
        let mut slot = lock(&inner.slot);
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Pending(bytes) => Ok(Some(bytes)),
            Slot::Done => Ok(None),
            Slot::Failed(kind) => {
                *slot = Slot::Failed(kind);
                Err(StoreError::Write {
                    path: inner.path.to_path_buf(),
                    source: io::Error::new(kind, "the committer could not write these records"),
                })
            }
        }
    }

    /// Gives the frames up: the committer will not write them. For an owner that stops
    /// without answering what they were for.
    pub fn abandon(&self) {
        let mut slot = lock(&self.0.slot);
        if matches!(*slot, Slot::Pending(_)) {
            *slot = Slot::Done;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The slot holds no invariant a panicking holder could break.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a log's file handle lives.
#[derive(Debug)]
enum Handle {
    /// Held by the log itself.
    Owned(File),
    /// In a shared, bounded cache.
    Cached { cache: FileCache, id: u64 },
    /// Released (only while the log is being taken apart).
    Closed,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        if let Handle::Cached { cache, id } = &self.handle {
            cache.forget(*id);
        }
    }
}

/// Deletes the checkpoint file at `path`, for callers that hold no [`StreamLog`]; a missing
/// file is not an error.
pub fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_err!(Remove, path)(source)),
    }
}

/// Directory holding `path` (`.` for a bare file name).
#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

/// One run of records a round wrote into a stream file, to journal.
#[derive(Debug)]
pub struct Landed {
    /// The stream file.
    pub path: Arc<Path>,
    /// Its identity when the round wrote it.
    pub file: FileId,
    /// Where the bytes start in the file.
    pub offset: u64,
    /// The bytes written.
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const POLICIES: [SyncPolicy; 3] = SyncPolicy::ALL;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(encode_frame(body, &mut out).is_ok());
        out
    }

    fn found(path: &Path, policy: SyncPolicy) -> (StreamLog, Vec<u8>) {
        match StreamLog::open(path, policy) {
            Ok(Opened::Found { log, contents }) => (log, contents),
            other => panic!("expected Found for {}: {other:?}", path.display()),
        }
    }

    #[test]
    fn create_makes_directories_and_refuses_an_existing_file() -> TestResult {
        let tmp = tempfile::tempdir()?;
        for policy in POLICIES {
            let path = tmp.path().join(policy.as_str()).join("x/y/s.updates");
            let log = StreamLog::create(&path, policy)?;
            assert!(log.is_empty() && !log.needs_sync() && log.policy() == policy);
            assert_eq!(log.path(), path.as_path());
            let again = StreamLog::create(&path, policy);
            assert!(
                matches!(&again, Err(StoreError::AlreadyExists { path: p }) if *p == path),
                "{again:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn append_then_open_returns_the_same_bytes_and_tracks_dirtiness() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dirty_after_append = [false, false, true]; // none, always, batch
        for (policy, dirty) in POLICIES.into_iter().zip(dirty_after_append) {
            let path = tmp.path().join(format!("{policy}.updates"));
            let mut log = StreamLog::create(&path, policy)?;
            let mut expected = Vec::new();
            for body in [&b"one"[..], b"two two", &[7u8; 1000]] {
                log.append_record(body)?;
                assert_eq!(log.needs_sync(), dirty, "{policy}");
                expected.extend_from_slice(&frame(body));
            }
            log.sync()?;
            assert!(!log.needs_sync(), "{policy}");
            assert_eq!(log.len(), to_u64(expected.len()));
            drop(log);
            let (reopened, contents) = found(&path, policy);
            assert_eq!(contents, expected, "{policy}");
            assert_eq!(reopened.len(), to_u64(expected.len()));
        }
        Ok(())
    }

    #[test]
    fn truncate_then_append_lands_at_the_truncation_point() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("t.updates");
        let mut log = StreamLog::create(&path, SyncPolicy::Batch)?;
        log.append_record(b"keep")?;
        log.append(&[9, 0, 0, 0, 1, 2])?; // a torn tail, as a crash would leave
        drop(log);
        let (mut log, contents) = found(&path, SyncPolicy::Batch);
        assert_eq!(contents.len(), 14);
        log.truncate(8)?;
        assert!(!log.needs_sync());
        log.append_record(b"next")?;
        let too_far = log.truncate(1000);
        assert!(matches!(
            too_far,
            Err(StoreError::TruncateBeyondEnd {
                len: 1000,
                current: 16,
                ..
            })
        ));
        drop(log);
        let (_, contents) = found(&path, SyncPolicy::Batch);
        assert_eq!(contents, [frame(b"keep"), frame(b"next")].concat());
        Ok(())
    }

    #[test]
    fn open_distinguishes_missing_file_from_missing_directory() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let missing_file = tmp.path().join("absent.updates");
        assert!(matches!(
            StreamLog::open(&missing_file, SyncPolicy::None)?,
            Opened::Missing
        ));
        let missing_dir = tmp.path().join("no-such-dir/absent.updates");
        let err = StreamLog::open(&missing_dir, SyncPolicy::None);
        assert!(matches!(&err, Err(StoreError::Open { path, .. }) if *path == missing_dir));
        // A directory where the file should be is an open error, not Missing.
        let err = StreamLog::open(tmp.path(), SyncPolicy::None);
        assert!(matches!(err, Err(StoreError::Open { .. })), "{err:?}");
        Ok(())
    }

    #[test]
    fn remove_deletes_the_file_and_tolerates_a_missing_one() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("d/r.updates");
        let mut log = StreamLog::create(&path, SyncPolicy::Always)?;
        log.append_record(b"x")?;
        log.remove()?;
        assert!(!path.exists() && tmp.path().join("d").is_dir());
        remove_file(&path)?;
        Ok(())
    }

    /// `/dev/full` reports a length of 0 (so nothing is read, although reading it never ends)
    /// and fails every write with ENOSPC: the append error leaves the length unchanged.
    #[test]
    #[cfg(target_os = "linux")]
    fn failed_write_is_reported_and_leaves_the_length_unchanged() {
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let (mut log, contents) = found(path, SyncPolicy::None);
        assert!(contents.is_empty());
        let err = log.append_record(b"lost");
        assert!(
            matches!(&err, Err(StoreError::Write { path: p, .. }) if p == path),
            "{err:?}"
        );
        assert_eq!(log.len(), 0);
    }

    /// A batch log in a cache, writing behind.
    fn write_behind_log(dir: &Path, faults: Option<FaultPlan>) -> Result<StreamLog, StoreError> {
        let mut log = StreamLog::create(&dir.join("s"), SyncPolicy::Batch)?;
        log.set_faults(faults);
        log.set_cache(&FileCache::new(4));
        Ok(log)
    }

    #[test]
    fn a_log_outside_a_cache_hands_nothing_to_the_committer() -> TestResult {
        let tmp = tempfile::tempdir()?;
        for policy in POLICIES {
            let mut log = StreamLog::create(&tmp.path().join(policy.as_str()), policy)?;
            let mut staged = Staged::default();
            log.stage(&frame(b"a"), &mut staged)?;
            assert!(
                log.hand_off(staged.clone()).is_none(),
                "{policy}: not in a cache"
            );
            log.set_cache(&FileCache::new(4));
            assert!(log.hand_off(staged).is_some(), "{policy}: in a cache");
        }
        Ok(())
    }

    #[test]
    fn staged_frames_are_written_once_by_whoever_comes_first() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut log = write_behind_log(tmp.path(), None)?;
        let (a, b, c) = (frame(b"a"), frame(b"bb"), frame(b"ccc"));
        let mut staged = Staged::default();
        log.stage(&a, &mut staged)?;
        log.stage(&b, &mut staged)?;
        assert!(log.needs_sync(), "staged bytes are not covered yet");
        assert_eq!(log.len(), to_u64(a.len() + b.len()));
        assert_eq!(
            std::fs::metadata(log.path())?.len(),
            0,
            "nothing written yet"
        );

        // The committer writes a hand-off once.
        let first = log.hand_off(std::mem::take(&mut staged)).ok_or("a write")?;
        first.write(false)?;
        first.write(false)?;
        assert_eq!(std::fs::read(log.path())?, [a.clone(), b.clone()].concat());

        // The owner takes a round back, writes it with what it staged since,
        // and the committer then leaves it alone.
        log.stage(&c, &mut staged)?;
        let second = log.hand_off(std::mem::take(&mut staged)).ok_or("a write")?;
        log.stage(&a, &mut staged)?;
        log.settle(Some(&second), staged)?;
        second.write(false)?;
        assert_eq!(std::fs::read(log.path())?, [a.clone(), b, c, a].concat());
        assert!(log.hand_off(Staged::default()).is_none(), "nothing staged");
        Ok(())
    }

    #[test]
    fn an_abandoned_write_is_never_made_and_a_failed_one_fails_its_settle() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let faults = FaultPlan::new();
        let mut log = write_behind_log(tmp.path(), Some(faults.clone()))?;
        let mut staged = Staged::default();
        log.stage(&frame(b"gone"), &mut staged)?;
        let abandoned = log.hand_off(std::mem::take(&mut staged)).ok_or("a write")?;
        abandoned.abandon();
        abandoned.write(false)?;
        assert_eq!(std::fs::metadata(log.path())?.len(), 0);

        faults.fail_nth_write(1, super::super::Fault::Eio);
        log.stage(&frame(b"torn"), &mut staged)?;
        let failed = log.hand_off(std::mem::take(&mut staged)).ok_or("a write")?;
        assert!(matches!(failed.write(false), Err(StoreError::Write { .. })));
        let settled = log.settle(Some(&failed), Staged::default());
        assert!(
            matches!(&settled, Err(StoreError::Write { source, .. })
                if source.to_string().contains("could not write")),
            "{settled:?}"
        );
        Ok(())
    }
}
