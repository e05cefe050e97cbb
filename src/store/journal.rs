//! The commit journal: how a `batch` round becomes durable with one sequential `fdatasync`.
//!
//! A round of `store.sync = batch` first writes each stream's records into its own file
//! (positioned writes, page cache only), then appends a copy of every one of them to this
//! journal — one `write` for the whole round — and syncs the journal alone. Once that
//! `fdatasync` returns, every record of the round is on stable storage twice over: in the
//! journal for certain, and in its stream file as soon as the kernel writes it back. The
//! alternative, a `syncfs` of the filesystem, must write back one scattered page per stream
//! file in the round and so runs at the disk's random-write rate; the journal runs at its
//! sequential one (see BENCHMARKS.md, Figures behind design choices).
//!
//! **Stream files stay the format.** The journal is never read except to *replay* it:
//! [`Journal::open`] (when the committer starts, before any stream is recovered) writes every
//! complete entry back at its offset into its stream file, syncs those files, and only then
//! empties the journal. A replayed write puts back the very bytes the round had written, so
//! replaying twice, or replaying entries whose bytes did reach the file, changes nothing.
//! After a clean shutdown, or once replayed, the stream files alone are complete Mesos-format
//! checkpoints.
//!
//! **Bounded.** Once the journal holds [`CHECKPOINT_BYTES`] (the service's
//! `store.journal_checkpoint_bytes`), the committer *checkpoints*: one `syncfs` of every
//! filesystem the journal's entries were on makes their stream files durable by themselves,
//! and the journal can go. That `syncfs` writes back every stream file of a full journal and
//! takes long, so rounds do not wait for it: the journal is first *rotated*
//! ([`Journal::rotate`]), renamed `<name>.old` while a new, empty file takes its name (its
//! directory synced, so that what rounds commit to it survives), and the `syncfs` runs on a
//! thread of its own while rounds go on into the new file. Once it returns, that thread
//! removes the old file ([`remove_old_journal`]), and the committer then stops counting it
//! ([`Journal::old_removed`]). Only a journal that fills again before that makes a round
//! wait. When the committer stops it checkpoints in place, so a clean shutdown leaves one
//! empty journal. [`Journal::open`] replays `<name>.old` first: everything in it was
//! committed before anything in the journal, and a later entry for the same bytes of a file
//! must win.
//!
//! **Which file.** An entry names its stream file by its path *relative to the journal's
//! directory*, so that a start that spells the directory otherwise (another working directory
//! for a relative `store.data_dir`, an absolute path, a symlink) still finds every file; and
//! by its identity: device, inode, the inode's generation (`FS_IOC_GETVERSION`, new for each
//! inode the filesystem allocates, so a reused inode number is told apart) and birth time
//! (`statx`), found once per open handle of the file cache, not once per write, since the
//! inode a handle refers to does not change. Replay skips an entry whose file is gone (the
//! stream ended and its file was removed) or is another file now (removed, then created again
//! for a new stream of the same id): a journal never writes one stream's records into
//! another's file. On a filesystem that keeps no generation or birth time the committer does
//! not journal (it syncs the round with `syncfs`), nor does it for a file outside the
//! journal's directory ([`Journal::names`]: a library may keep its stream files elsewhere),
//! which its round syncs by itself. Replay also skips, with a warning, any entry whose path
//! leaves the journal's directory (`..`, a root), so a damaged journal cannot write elsewhere.
//!
//! **Entry format** (little-endian), one frame (`u32` length, then the body, as in stream
//! files) per record run:
//! `crc32c u32` of the rest, `kind u8`, `dev u64`, `ino u64`, `generation u32`,
//! `birth secs i64`, `birth nanos u32`, `offset u64`, `path length u32`, the path's bytes,
//! then the bytes written. The one kind is 2: the path is relative to the journal's
//! directory, names only (any other kind is a corrupt entry). Replay stops at the first torn
//! or corrupt frame: a round's entries are appended and synced together, so nothing after a
//! torn one was ever answered.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use tracing::{info, warn};

use super::framing::{FrameReader, Next, LENGTH_PREFIX_BYTES};
use super::log::Landed;
use super::sys::{syncfs, FileId};
use super::StoreError;

/// Journal bytes after which the committer checkpoints (64 MiB: about 300 000 records of
/// 200 bytes, so the `syncfs` of a checkpoint is shared by that many).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// The largest checkpoint bound the service accepts (`store.journal_checkpoint_bytes`):
/// replay reads each journal file into memory at start, and a bound beyond the address
/// space would mean a journal that is never checkpointed.
pub const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;

/// The name of the journal file in its directory (the service's `store.data_dir`).
pub const JOURNAL_FILE: &str = "commit.journal";

/// An entry naming its file by its path relative to the journal's directory: found
/// however the directory is spelled at the next start (another working directory, a
/// symlink, `./data` for `data`).
const WRITE_RELATIVE_ENTRY: u8 = 2;
/// crc, kind, dev, ino, generation, birth secs, birth nanos, offset, path length.
const HEADER_BYTES: usize = 4 + 1 + 8 + 8 + 4 + 8 + 4 + 8 + 4;

/// What [`Journal::open`] replayed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Entries written back into their stream files.
    pub applied: usize,
    /// Entries whose file is gone or is another file now.
    pub skipped: usize,
    /// Bytes after the last complete entry (a round torn by the crash), ignored.
    pub torn_bytes: u64,
}

/// The open journal of one committer; see the module docs.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Where a rotated journal waits for its checkpoint: `<path>.old`.
    old_path: PathBuf,
    dir: PathBuf,
    file: File,
    len: u64,
    /// The bytes in `old_path`, while there is one (rotated, not yet dropped).
    old_len: Option<u64>,
    /// A rotation failed halfway and could not be undone: the file appended to is the one
    /// named `old_path`. Then it stays so until a restart (which replays it first, as it
    /// must); no more rotations.
    active_is_old: bool,
    checkpoint_at: u64,
    buf: Vec<u8>,
}

/// `<path>.old`: the name a journal takes while its checkpoint runs.
pub fn old_journal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".old");
    path.with_file_name(name)
}

/// Removes the rotated journal at `old` (see [`Journal::rotate`]); one that is not there
/// is no error. Only once every file its entries name is durable by itself.
pub fn remove_old_journal(old: &Path) -> Result<(), StoreError> {
    match fs::remove_file(old) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(journal_err(old, "remove")(err)),
        _ => Ok(()),
    }
}

fn journal_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Journal {
        path: path.to_path_buf(),
        action,
        source,
    }
}

impl Journal {
    /// Opens (creating it if needed) the journal at `path`, replays what a crash left in it
    /// into the stream files, makes them durable and empties the journal. Fails, naming the
    /// journal, if it cannot be read or written, or a replayed file cannot be written or synced:
    /// the records it holds are then still in the journal for the next start.
    pub fn open(path: &Path) -> Result<(Journal, Replayed), StoreError> {
        Self::open_with(path, CHECKPOINT_BYTES)
    }

    /// [`open`](Self::open), checkpointing after `checkpoint_at` bytes.
    pub fn open_with(path: &Path, checkpoint_at: u64) -> Result<(Journal, Replayed), StoreError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(journal_err(path, "create the directory of"))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(journal_err(path, "open"))?;
        if !existed {
            super::dirs::sync_dir(&dir).map_err(|source| StoreError::SyncDir {
                path: dir.clone(),
                source,
            })?;
        }
        let as_journal_err = |(action, target, source)| StoreError::Journal {
            path: target,
            action,
            source,
        };
        // A journal rotated for a checkpoint that had not ended: older than
        // the journal, so replayed first.
        let old_path = old_journal_path(path);
        let old = match fs::read(&old_path) {
            Ok(contents) => Some((
                replay(&dir, &contents).map_err(as_journal_err)?,
                super::framing::to_u64(contents.len()),
            )),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(journal_err(&old_path, "read")(err)),
        };
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(journal_err(path, "read"))?;
        let mut replayed = replay(&dir, &contents).map_err(as_journal_err)?;
        if let Some((old, _)) = &old {
            replayed.applied += old.applied;
            replayed.skipped += old.skipped;
            replayed.torn_bytes += old.torn_bytes;
        }
        let mut journal = Journal {
            path: path.to_path_buf(),
            old_path,
            dir,
            file,
            len: super::framing::to_u64(contents.len()),
            old_len: old.as_ref().map(|&(_, len)| len),
            active_is_old: false,
            checkpoint_at,
            buf: Vec::new(),
        };
        if journal.len > 0 || old.is_some() {
            // Every replayed file is synced: the journals may go.
            journal.reset()?;
            journal.drop_old()?;
            info!(journal = %path.display(), applied = replayed.applied, skipped = replayed.skipped,
                torn_bytes = replayed.torn_bytes, "replayed the commit journal into the stream files");
        }
        Ok((journal, replayed))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory its entries' files must be in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `path` relative to the journal's directory, if the journal can name it: inside the
    /// directory as spelled (as `serve` spells both, from `store.data_dir`), below it
    /// through names only. A write into any other file is not journaled (the committer
    /// syncs it by other means).
    ///
    /// Compared as bytes (once per journaled record, so without splitting both paths into
    /// components): a path spelled with `//` or `.` below the directory is not named, and
    /// its round syncs it by itself.
    pub fn names<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        let bytes = path.as_os_str().as_bytes();
        let rest = if self.dir == Path::new(".") && path.is_relative() {
            // A journal named without a directory is in `.`, as are relative paths.
            bytes.strip_prefix(b"./").unwrap_or(bytes)
        } else {
            let dir = self.dir.as_os_str().as_bytes();
            let dir = dir.strip_suffix(b"/").unwrap_or(dir);
            bytes.strip_prefix(dir)?.strip_prefix(b"/")?
        };
        let names = rest
            .split(|&byte| byte == b'/')
            .all(|name| !name.is_empty() && name != b"." && name != b"..");
        names.then(|| Path::new(std::ffi::OsStr::from_bytes(rest)))
    }

    /// Bytes in the journal now (not counting a rotated one: see [`old_len`](Self::old_len)).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes in the rotated journal, while its checkpoint has not ended.
    pub fn old_len(&self) -> Option<u64> {
        self.old_len
    }

    /// Whether the journal is empty and no rotated one is left.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.old_len.is_none()
    }

    /// Whether the journal has grown enough to [`reset`](Self::reset) after a checkpoint.
    /// An empty one never does, whatever the bound (a bound of 0 would otherwise rotate an
    /// empty journal after every round).
    pub fn wants_checkpoint(&self) -> bool {
        self.len > 0 && self.len >= self.checkpoint_at
    }

    /// Appends an entry for each of `landed` in one write and syncs the journal: on `Ok`
    /// every one of them survives power loss. On failure the journal is cut back to where it
    /// was (best effort) and none of them may be answered.
    pub fn commit<'a>(
        &mut self,
        landed: impl IntoIterator<Item = &'a Landed>,
    ) -> Result<(), StoreError> {
        self.buf.clear();
        for entry in landed {
            let relative = self.names(&entry.path).ok_or_else(|| StoreError::Journal {
                path: entry.path.to_path_buf(),
                action: "journal a write into",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the file is not inside the journal's directory '{}'",
                        self.dir.display()
                    ),
                ),
            })?;
            encode_entry(
                &mut self.buf,
                WRITE_RELATIVE_ENTRY,
                relative.as_os_str().as_bytes(),
                entry,
            )?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all_at(&self.buf, self.len)
            .map_err(journal_err(&self.path, "write"))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(journal_err(&self.path, "sync"))
            });
        match written {
            Ok(()) => {
                self.len += super::framing::to_u64(self.buf.len());
                Ok(())
            }
            Err(err) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    warn!(journal = %self.path.display(), error = %cut,
                        "could not cut the commit journal back after a failed append");
                }
                Err(err)
            }
        }
    }

    /// Starts a checkpoint that rounds need not wait for: the journal is renamed
    /// `<name>.old` and a new, empty file takes its name, its directory synced before this
    /// returns (what is committed to the new file must be found after a crash). The entries
    /// so far are then in the old file, to be dropped ([`drop_old`](Self::drop_old)) once
    /// every file they name is durable by itself. Refused while an old file is left. On
    /// failure the journal is as it was, under its own name, and rounds go on into it.
    pub fn rotate(&mut self) -> Result<(), StoreError> {
        if self.old_len.is_some() || self.active_is_old {
            return Err(journal_err(&self.old_path, "rotate into")(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the last checkpoint's journal is still there",
            )));
        }
        fs::rename(&self.path, &self.old_path).map_err(journal_err(&self.path, "rotate"))?;
        let new = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&self.path)
            .map_err(journal_err(&self.path, "create"))
            .and_then(|file| {
                super::dirs::sync_dir(&self.dir)
                    .map(|()| file)
                    .map_err(|source| StoreError::SyncDir {
                        path: self.dir.clone(),
                        source,
                    })
            });
        match new {
            Ok(file) => {
                self.file = file;
                self.old_len = Some(self.len);
                self.len = 0;
                Ok(())
            }
            Err(err) => {
                // Back as it was (the open handle writes the renamed file meanwhile).
                let _ = fs::remove_file(&self.path);
                if let Err(back) = fs::rename(&self.old_path, &self.path) {
                    warn!(journal = %self.path.display(), error = %back,
                        "could not rename the commit journal back after a failed rotation; \
                         appending to it under its rotated name until a restart");
                    self.active_is_old = true;
                }
                Err(err)
            }
        }
    }

    /// Removes the rotated journal. Only once every file its entries name is durable by
    /// itself (the checkpoint's `syncfs`). Nothing to do without one.
    pub fn drop_old(&mut self) -> Result<(), StoreError> {
        if self.old_len.is_some() {
            remove_old_journal(&self.old_path)?;
            self.old_len = None;
        }
        Ok(())
    }

    /// Stops counting the rotated journal, which the checkpoint's thread removed
    /// ([`remove_old_journal`]) once its `syncfs` succeeded.
    pub fn old_removed(&mut self) {
        self.old_len = None;
    }

    /// Empties the journal. Only once every file its entries name is durable by itself (a
    /// checkpoint's `syncfs`, or a replay's syncs).
    pub fn reset(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(journal_err(&self.path, "empty"))?;
        self.len = 0;
        Ok(())
    }
}

/// Appends `entry`'s frame to `buf`, of `kind` and naming its file by `path`: the length
/// prefix, then the body with its checksum filled in last.
fn encode_entry(
    buf: &mut Vec<u8>,
    kind: u8,
    path: &[u8],
    entry: &Landed,
) -> Result<(), StoreError> {
    let too_large = |len| StoreError::RecordTooLarge {
        path: entry.path.to_path_buf(),
        len,
    };
    let path_len = u32::try_from(path.len()).map_err(|_| too_large(path.len()))?;
    let body_len = HEADER_BYTES + path.len() + entry.bytes.len();
    let frame_len = u32::try_from(body_len).map_err(|_| too_large(body_len))?;
    let start = buf.len();
    buf.reserve(LENGTH_PREFIX_BYTES + body_len);
    buf.extend_from_slice(&frame_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&entry.file.dev.to_le_bytes());
    buf.extend_from_slice(&entry.file.ino.to_le_bytes());
    buf.extend_from_slice(&entry.file.generation.to_le_bytes());
    buf.extend_from_slice(&entry.file.birth_secs.to_le_bytes());
    buf.extend_from_slice(&entry.file.birth_nanos.to_le_bytes());
    buf.extend_from_slice(&entry.offset.to_le_bytes());
    buf.extend_from_slice(&path_len.to_le_bytes());
    buf.extend_from_slice(path);
    buf.extend_from_slice(&entry.bytes);
    let body = start + LENGTH_PREFIX_BYTES;
    let crc = crc32c::crc32c(buf.get(body + 4..).unwrap_or_default());
    if let Some(slot) = buf.get_mut(body..body + 4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// What a journal file holds, read without replaying it ([`summarize`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalSummary {
    /// Complete entries (runs of records a round wrote into one stream file).
    pub entries: usize,
    /// Bytes of records those entries carry.
    pub record_bytes: u64,
    /// Bytes after the last complete entry (a round torn by a crash, ignored by replay).
    pub torn_bytes: u64,
    /// The stream files the entries name, relative to the journal's directory, each once.
    pub files: std::collections::BTreeSet<PathBuf>,
}

/// Reads a journal's `contents` as replay would, without writing anything.
pub fn summarize(contents: &[u8]) -> JournalSummary {
    let mut summary = JournalSummary::default();
    let mut reader = FrameReader::new(contents);
    loop {
        let start = reader.offset();
        let entry = match reader.next_frame() {
            Next::Record { body, .. } => Entry::parse(body),
            Next::End => break,
            _ => None,
        };
        let Some(entry) = entry else {
            summary.torn_bytes = super::framing::to_u64(contents.len()) - start;
            break;
        };
        summary.entries += 1;
        summary.record_bytes += super::framing::to_u64(entry.bytes.len());
        summary.files.insert(entry.path);
    }
    summary
}

/// Why replay failed: what it was doing, to which file, and the OS error.
type ReplayError = (&'static str, PathBuf, io::Error);

/// Writes every complete entry of `contents` back into its file (see the module docs), then
/// syncs each filesystem written to.
fn replay(dir: &Path, contents: &[u8]) -> Result<Replayed, ReplayError> {
    let mut replayed = Replayed::default();
    // One file on each filesystem written to, for the `syncfs` that makes
    // the replay durable (files are closed as they go: a journal may name
    // more files than may be open at once).
    let mut devices: HashMap<u64, PathBuf> = HashMap::new();
    let mut reader = FrameReader::new(contents);
    loop {
        let start = reader.offset();
        let body = match reader.next_frame() {
            Next::Record { body, .. } => body,
            Next::End => break,
            _ => {
                replayed.torn_bytes = super::framing::to_u64(contents.len()) - start;
                break;
            }
        };
        let Some(entry) = Entry::parse(body) else {
            replayed.torn_bytes = super::framing::to_u64(contents.len()) - start;
            break;
        };
        let Some(path) = entry.file_in(dir) else {
            warn!(path = %entry.path.display(), dir = %dir.display(),
                "skipping a commit journal entry for a file outside the journal's directory");
            replayed.skipped += 1;
            continue;
        };
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                replayed.skipped += 1;
                continue;
            }
            Err(err) => return Err(("open for replay", path, err)),
        };
        if FileId::of(&file) != Some(entry.file) {
            replayed.skipped += 1;
            continue;
        }
        file.write_all_at(entry.bytes, entry.offset)
            .map_err(|err| ("replay into", path.clone(), err))?;
        replayed.applied += 1;
        devices.entry(entry.file.dev).or_insert(path);
    }
    for path in devices.into_values() {
        let file = File::open(&path).map_err(|err| ("open for replay", path.clone(), err))?;
        syncfs(&file).map_err(|err| ("sync after replay", path, err))?;
    }
    Ok(replayed)
}

/// A parsed journal entry.
struct Entry<'a> {
    file: FileId,
    offset: u64,
    /// As written: relative to the journal's directory.
    path: PathBuf,
    bytes: &'a [u8],
}

impl Entry<'_> {
    /// The file to replay into, if the entry names one inside `dir`.
    fn file_in(&self, dir: &Path) -> Option<PathBuf> {
        is_names(&self.path).then(|| dir.join(&self.path))
    }
}

impl<'a> Entry<'a> {
    fn parse(body: &'a [u8]) -> Option<Entry<'a>> {
        let (crc, rest) = body.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*crc) != crc32c::crc32c(rest) {
            return None;
        }
        let (&kind, rest) = rest.split_first()?;
        if kind != WRITE_RELATIVE_ENTRY {
            return None;
        }
        let (dev, rest) = rest.split_first_chunk::<8>()?;
        let (ino, rest) = rest.split_first_chunk::<8>()?;
        let (generation, rest) = rest.split_first_chunk::<4>()?;
        let (birth_secs, rest) = rest.split_first_chunk::<8>()?;
        let (birth_nanos, rest) = rest.split_first_chunk::<4>()?;
        let (offset, rest) = rest.split_first_chunk::<8>()?;
        let (path_len, rest) = rest.split_first_chunk::<4>()?;
        let path_len = usize::try_from(u32::from_le_bytes(*path_len)).ok()?;
        let (path, bytes) = rest.split_at_checked(path_len)?;
        Some(Entry {
            file: FileId {
                dev: u64::from_le_bytes(*dev),
                ino: u64::from_le_bytes(*ino),
                generation: u32::from_le_bytes(*generation),
                birth_secs: i64::from_le_bytes(*birth_secs),
                birth_nanos: u32::from_le_bytes(*birth_nanos),
            },
            offset: u64::from_le_bytes(*offset),
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            bytes,
        })
    }
}

/// Whether `path` is one or more names and nothing else (no `.`, `..`, root or prefix): a
/// relative path that stays below the directory it is joined to.
fn is_names(path: &Path) -> bool {
    path.components().next().is_some()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Writes `bytes` at `offset` of `path` as a round would, and returns what it journals.
    fn land(path: &Path, offset: u64, bytes: &[u8]) -> Result<Landed, Box<dyn std::error::Error>> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        file.write_all_at(bytes, offset)?;
        Ok(Landed {
            path: Arc::from(path),
            file: FileId::of(&file).ok_or("no inode generation or birth time here")?,
            offset,
            bytes: bytes.to_vec(),
        })
    }

    /// One write of a round: the file, the offset, the bytes.
    type Write<'a> = (&'a Path, u64, &'a [u8]);

    /// Opens the journal at `path` and commits `rounds` into it, each a round of writes
    /// made as [`land`] makes them; then closes it, as a crash would leave it.
    fn journal_of(path: &Path, rounds: &[&[Write<'_>]]) -> TestResult {
        let (mut journal, _) = Journal::open(path)?;
        for round in rounds {
            let landed = round
                .iter()
                .map(|&(file, offset, bytes)| land(file, offset, bytes))
                .collect::<Result<Vec<_>, _>>()?;
            journal.commit(&landed)?;
        }
        Ok(())
    }

    #[test]
    fn replay_puts_back_what_the_stream_files_lost_and_empties_the_journal() -> TestResult {
        let dir = tempfile::tempdir()?;
        let journal_path = dir.path().join(JOURNAL_FILE);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        {
            let (mut journal, replayed) = Journal::open(&journal_path)?;
            assert_eq!(replayed, Replayed::default());
            let first = [land(&a, 0, b"one")?, land(&b, 0, b"uno")?];
            journal.commit(&first)?;
            journal.commit([&land(&a, 3, b"two")?])?;
            assert!(!journal.is_empty());
        }
        // Power loss: the stream files never reached the disk; the journal did.
        fs::write(&a, b"")?;
        fs::write(&b, b"u")?;
        let (journal, replayed) = Journal::open(&journal_path)?;
        assert_eq!(
            (replayed.applied, replayed.skipped, replayed.torn_bytes),
            (3, 0, 0)
        );
        assert_eq!(fs::read(&a)?, b"onetwo");
        assert_eq!(fs::read(&b)?, b"uno");
        assert!(journal.is_empty() && fs::metadata(&journal_path)?.len() == 0);
        // Replaying the emptied journal changes nothing.
        drop(journal);
        let (_, again) = Journal::open(&journal_path)?;
        assert_eq!(again, Replayed::default());
        assert_eq!(fs::read(&a)?, b"onetwo");
        Ok(())
    }

    #[test]
    fn replay_never_writes_into_a_file_that_is_gone_or_another_one_now() -> TestResult {
        let dir = tempfile::tempdir()?;
        let journal_path = dir.path().join(JOURNAL_FILE);
        let (gone, reborn) = (dir.path().join("gone"), dir.path().join("reborn"));
        journal_of(
            &journal_path,
            &[&[(&gone, 0, b"old"), (&reborn, 0, b"old stream")]],
        )?;
        fs::remove_file(&gone)?;
        // A new stream of the same id: a new file at the same path (at once: the filesystem
        // may hand it the same inode number, in the same clock tick).
        fs::remove_file(&reborn)?;
        fs::write(&reborn, b"new")?;
        let (_, replayed) = Journal::open(&journal_path)?;
        assert_eq!((replayed.applied, replayed.skipped), (0, 2));
        assert!(!gone.exists(), "replay creates no file");
        assert_eq!(fs::read(&reborn)?, b"new", "the new file is left alone");
        Ok(())
    }

    #[test]
    fn a_file_created_again_at_once_is_another_file_even_on_a_reused_inode() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        let mut reused = 0;
        for _ in 0..20 {
            let old = FileId::of(&File::create(&path)?).ok_or("no identity here")?;
            fs::remove_file(&path)?;
            let new = FileId::of(&File::create(&path)?).ok_or("no identity here")?;
            fs::remove_file(&path)?;
            assert_ne!(old, new);
            if old.ino == new.ino {
                reused += 1;
                assert_ne!(
                    old.generation, new.generation,
                    "a reused inode has a new generation"
                );
            }
        }
        eprintln!("inode numbers reused at once: {reused} of 20");
        Ok(())
    }

    /// Appends `raw` entries to the journal file at `path`, as a damaged journal would
    /// hold them.
    fn append_raw(path: &Path, raw: &[u8]) -> TestResult {
        use std::io::Write;
        OpenOptions::new().append(true).open(path)?.write_all(raw)?;
        Ok(())
    }

    #[test]
    fn a_torn_round_and_entries_outside_the_directory_are_skipped() -> TestResult {
        let dir = tempfile::tempdir()?;
        let inner = dir.path().join("data");
        let journal_path = inner.join(JOURNAL_FILE);
        let (kept, outside) = (inner.join("kept"), dir.path().join("outside"));
        fs::create_dir_all(&inner)?;
        journal_of(&journal_path, &[&[(&kept, 0, b"kept")]])?;
        // A damaged journal names a file outside its directory: by a full path, and
        // relative, through `..`.
        let evil = land(&outside, 0, b"evil")?;
        let mut raw = Vec::new();
        encode_entry(
            &mut raw,
            WRITE_RELATIVE_ENTRY,
            outside.as_os_str().as_bytes(),
            &evil,
        )?;
        encode_entry(&mut raw, WRITE_RELATIVE_ENTRY, b"../outside", &evil)?;
        encode_entry(&mut raw, WRITE_RELATIVE_ENTRY, b"", &evil)?;
        // Then a round torn by the crash: its frame lacks its tail.
        let torn = land(&kept, 4, b"torn")?;
        let before_torn = raw.len();
        encode_entry(&mut raw, WRITE_RELATIVE_ENTRY, b"kept", &torn)?;
        raw.truncate(raw.len() - 3);
        assert!(raw.len() > before_torn);
        append_raw(&journal_path, &raw)?;
        fs::write(&kept, b"")?;
        fs::write(&outside, b"")?;
        let (_, replayed) = Journal::open(&journal_path)?;
        assert_eq!((replayed.applied, replayed.skipped), (1, 3));
        assert!(replayed.torn_bytes > 0);
        assert_eq!(
            fs::read(&kept)?,
            b"kept",
            "the torn round was never answered"
        );
        assert_eq!(
            fs::read(&outside)?,
            b"",
            "nothing is written outside the directory"
        );
        Ok(())
    }

    #[test]
    fn a_write_into_a_file_outside_the_directory_is_refused_not_journaled() -> TestResult {
        let dir = tempfile::tempdir()?;
        let inner = dir.path().join("data");
        let (mut journal, _) = Journal::open(&inner.join(JOURNAL_FILE))?;
        let outside = dir.path().join("outside");
        let inside = inner.join("sub").join("s");
        fs::create_dir_all(inside.parent().ok_or("a parent")?)?;
        assert_eq!(journal.names(&inside), Some(Path::new("sub/s")));
        assert_eq!(journal.names(&outside), None);
        assert_eq!(journal.names(&inner.join("sub/../../outside")), None);
        // Odd spellings below the directory are not named (their rounds sync them).
        assert_eq!(journal.names(&inner.join("sub/./s")), None);
        assert_eq!(journal.names(&inner.join("sub//s")), None);
        assert_eq!(journal.names(&inner), None);
        let datadir = dir.path().join("datadir").join("s");
        assert_eq!(
            journal.names(&datadir),
            None,
            "a directory whose name starts alike"
        );
        let refused = journal
            .commit([&land(&inside, 0, b"in")?, &land(&outside, 0, b"out")?])
            .map(|()| "committed")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&outside.display().to_string())
                && refused.contains("not inside the journal's directory"),
            "{refused}"
        );
        assert!(
            journal.is_empty(),
            "nothing of the refused round is journaled"
        );
        // Without a directory, a journal is in `.` and names relative paths.
        let here = Journal {
            dir: PathBuf::from("."),
            ..Journal::open(&dir.path().join("other").join(JOURNAL_FILE))?.0
        };
        assert_eq!(here.names(Path::new("s")), Some(Path::new("s")));
        assert_eq!(here.names(Path::new("/s")), None);
        Ok(())
    }

    #[test]
    fn entries_are_found_however_the_directory_is_spelled_at_the_next_start() -> TestResult {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let stream = data.join("s");
        fs::create_dir_all(&data)?;
        journal_of(&data.join(JOURNAL_FILE), &[&[(&stream, 0, b"relative")]])?;
        fs::write(&stream, b"")?;

        // The next start names the directory through a symlink (or another working
        // directory, or `./data`): the relative entry is found there.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&data, &link)?;
        let (_, replayed) = Journal::open(&link.join(JOURNAL_FILE))?;
        assert_eq!(fs::read(&stream)?, b"relative");
        assert_eq!((replayed.applied, replayed.skipped), (1, 0));
        Ok(())
    }

    #[test]
    fn a_summary_counts_entries_and_names_their_files_without_replaying() -> TestResult {
        let dir = tempfile::tempdir()?;
        let journal_path = dir.path().join(JOURNAL_FILE);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        journal_of(
            &journal_path,
            &[&[(&a, 0, b"one"), (&b, 0, b"two")], &[(&a, 3, b"3")]],
        )?;
        let mut contents = fs::read(&journal_path)?;
        contents.extend_from_slice(&[9, 0, 0]);
        let summary = summarize(&contents);
        assert_eq!((summary.entries, summary.record_bytes), (3, 7));
        assert_eq!(summary.torn_bytes, 3);
        let files: Vec<_> = summary
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(files, ["a", "b"]);
        fs::write(&a, b"")?;
        assert_eq!(fs::read(&a)?, b"", "nothing was replayed");
        Ok(())
    }

    #[test]
    fn a_corrupt_entry_ends_the_replay_there() -> TestResult {
        let dir = tempfile::tempdir()?;
        let journal_path = dir.path().join(JOURNAL_FILE);
        let a = dir.path().join("a");
        journal_of(&journal_path, &[&[(&a, 0, b"good")], &[(&a, 4, b"flip")]])?;
        let mut bytes = fs::read(&journal_path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&journal_path, &bytes)?;
        fs::write(&a, b"")?;
        let (_, replayed) = Journal::open(&journal_path)?;
        assert_eq!(replayed.applied, 1);
        assert!(replayed.torn_bytes > 0);
        assert_eq!(fs::read(&a)?, b"good");
        Ok(())
    }

    proptest::proptest! {
        /// Whatever bytes a journal holds, opening it neither panics nor fails nor writes
        /// anything (no garbage passes the checksum), and leaves it empty.
        #[test]
        fn any_bytes_replay_to_nothing(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(JOURNAL_FILE);
            fs::write(&path, &bytes).unwrap();
            let (journal, replayed) = Journal::open(&path).unwrap();
            proptest::prop_assert_eq!(replayed.applied, 0);
            proptest::prop_assert!(journal.is_empty());
        }

        /// A valid entry cut or flipped anywhere is skipped, never half-applied.
        #[test]
        fn a_damaged_entry_is_never_applied(cut in 0usize..200, flip in 0usize..200) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(JOURNAL_FILE);
            let target = dir.path().join("s");
            journal_of(&path, &[&[(&target, 0, &[9; 64])]]).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            let flip = flip % bytes.len();
            bytes[flip] ^= 0x5a;
            bytes.truncate(bytes.len() - cut.min(bytes.len()));
            fs::write(&path, &bytes).unwrap();
            fs::write(&target, b"").unwrap();
            let (_, replayed) = Journal::open(&path).unwrap();
            proptest::prop_assert_eq!(replayed.applied, 0);
            proptest::prop_assert_eq!(fs::read(&target).unwrap(), b"");
        }
    }

    #[test]
    fn a_replay_that_cannot_write_fails_naming_the_file_and_keeps_the_journal() -> TestResult {
        let dir = tempfile::tempdir()?;
        let journal_path = dir.path().join(JOURNAL_FILE);
        let a = dir.path().join("a");
        journal_of(&journal_path, &[&[(&a, 0, b"kept")]])?;
        let held = fs::read(&journal_path)?;
        // Something that cannot be written now stands at the entry's path.
        fs::remove_file(&a)?;
        fs::create_dir(&a)?;
        let err = Journal::open(&journal_path).expect_err("a directory cannot be replayed into");
        assert!(
            matches!(&err, StoreError::Journal { path, .. } if path == &a),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("commit journal: failed to open for replay"),
            "{err}"
        );
        assert_eq!(
            fs::read(&journal_path)?,
            held,
            "the records stay for the next start"
        );
        Ok(())
    }

    #[test]
    fn a_journal_path_that_is_a_directory_is_refused_by_name() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(JOURNAL_FILE);
        fs::create_dir(&path)?;
        let err = Journal::open(&path).expect_err("a directory is no journal");
        assert!(
            matches!(&err, StoreError::Journal { path: p, .. } if p == &path),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("commit journal: failed to open"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn wants_a_checkpoint_past_its_bound_and_reset_empties_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (mut journal, _) = Journal::open_with(&dir.path().join(JOURNAL_FILE), 1024)?;
        let a = dir.path().join("a");
        journal.commit([&land(&a, 0, b"short")?])?;
        assert!(!journal.wants_checkpoint());
        journal.commit([&land(&a, 5, &[7; 1024])?])?;
        assert!(journal.wants_checkpoint());
        journal.reset()?;
        assert!(journal.is_empty() && !journal.wants_checkpoint());

        // A bound of 0: a checkpoint after any round, never of an empty journal.
        let (mut journal, _) = Journal::open_with(&dir.path().join("zero.journal"), 0)?;
        assert!(!journal.wants_checkpoint());
        journal.commit([&land(&a, 0, b"one")?])?;
        assert!(journal.wants_checkpoint());
        Ok(())
    }

    #[test]
    fn a_rotated_journal_is_replayed_before_the_one_that_took_its_name() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(JOURNAL_FILE);
        let a = dir.path().join("a");
        {
            let (mut journal, _) = Journal::open(&path)?;
            journal.commit([&land(&a, 0, b"old!")?])?;
            let before = journal.len();
            journal.rotate()?;
            assert_eq!((journal.len(), journal.old_len()), (0, Some(before)));
            assert!(old_journal_path(&path).is_file() && path.is_file());
            // The same bytes of the file, written again later (as after a
            // stream reloaded its file): the later write must win.
            journal.commit([&land(&a, 0, b"new!")?])?;
            // A crash before the checkpoint ended: neither journal emptied.
        }
        std::fs::write(&a, b"")?;
        let (journal, replayed) = Journal::open(&path)?;
        assert_eq!(std::fs::read(&a)?, b"new!");
        assert_eq!(replayed.applied, 2);
        assert!(journal.is_empty());
        assert!(
            !old_journal_path(&path).exists(),
            "the rotated journal is gone"
        );
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
        Ok(())
    }

    #[test]
    fn a_crash_between_the_rename_and_the_new_file_replays_the_rotated_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(JOURNAL_FILE);
        let a = dir.path().join("a");
        journal_of(&path, &[&[(&a, 0, b"kept")]])?;
        std::fs::rename(&path, old_journal_path(&path))?;
        std::fs::write(&a, b"")?;
        let (journal, replayed) = Journal::open(&path)?;
        assert_eq!(std::fs::read(&a)?, b"kept");
        assert_eq!(replayed.applied, 1);
        assert!(journal.is_empty() && path.is_file() && !old_journal_path(&path).exists());
        Ok(())
    }

    #[test]
    fn one_rotation_at_a_time_and_drop_old_removes_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(JOURNAL_FILE);
        let a = dir.path().join("a");
        let (mut journal, _) = Journal::open(&path)?;
        journal.commit([&land(&a, 0, b"one")?])?;
        journal.rotate()?;
        journal.commit([&land(&a, 3, b"two")?])?;
        let refused = journal.rotate().map(|()| "rotated").unwrap_err();
        assert!(
            refused.to_string().contains("commit.journal.old"),
            "{refused}"
        );
        assert!(!journal.is_empty());
        journal.drop_old()?;
        assert!(!old_journal_path(&path).exists());
        assert_eq!(journal.old_len(), None);
        journal.rotate()?;
        journal.drop_old()?;
        journal.reset()?;
        assert!(journal.is_empty());
        Ok(())
    }
}
