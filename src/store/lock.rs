//! One process per data directory: [`DataDirLock`].
//!
//! Two processes serving the same data directory would both append to its
//! stream files and both replay, append to and checkpoint its commit
//! journal: records interleaved, a journal emptied under the other's feet,
//! updates reported durable and then lost. So `serve` takes an exclusive
//! lock on `<data_dir>/serve.lock` ([`LOCK_FILE`]) before it touches
//! anything else there, and a second one refuses to start, naming the
//! directory and, where it could read it, the holder's pid.
//!
//! The lock is the kernel's (`flock`, through [`std::fs::File::try_lock`]),
//! not the file's existence: it goes with the process however that ends,
//! SIGKILL and power loss included, so there is never a stale lock to clear
//! by hand. The file stays behind, holding the last holder's pid; it is
//! not removed on release, since a process that opened it meanwhile would
//! then hold a lock on a file no longer there while a third one made a new
//! one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process, or another lock in this one, holds the lock.
    #[error(
        "the data directory '{}' is in use by {}: its lock '{}' is held; \
         {}, or give this one another store.data_dir",
        dir.display(),
        holder_phrase(*holder),
        path.display(),
        if held_here(*holder) {
            "release the other lock first"
        } else {
            "stop that process first"
        }
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it into the file (absent if the
        /// file held none that parses).
        holder: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock the data directory with '{}' (to {action}): {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

/// Whether the pid in the lock file is this process's own: a second
/// [`service::start`](crate::service::start) in the same process on the
/// same directory. Pids are those of this process's pid namespace.
fn held_here(holder: Option<u32>) -> bool {
    holder == Some(std::process::id())
}

/// Who holds a lock, for [`LockError::InUse`]'s message.
fn holder_phrase(holder: Option<u32>) -> String {
    match holder {
        Some(pid) if held_here(holder) => format!("this process (pid {pid}) already"),
        Some(pid) => format!("another process (pid {pid})"),
        None => "another process".to_string(),
    }
}

/// The exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    path: PathBuf,
    // Holds the lock: closing the file releases it.
    _file: File,
}

impl DataDirLock {
    /// Locks `dir` (which must exist) for this process, or says who holds
    /// it. Never waits.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |action| {
            let path = path.clone();
            move |source| LockError::Io {
                path,
                action,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open it"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    holder: read_pid(&mut file),
                    path,
                })
            }
            Err(TryLockError::Error(source)) => return Err(io_err("lock it")(source)),
        }
        // For the message of a process that finds the lock held; the lock
        // does not depend on it, so it is not synced.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_err("write this process's pid into it"))?;
        Ok(DataDirLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the process that holds `dir`'s lock now, from the kernel's
/// table of locks (`/proc/locks`), not by trying the lock: a try, however
/// brief, would make a `serve` starting at that moment fail. `None`: nobody
/// holds it, there is no lock file, or the table cannot be read (not Linux,
/// or a filesystem whose files it lists under another device).
pub fn holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join(LOCK_FILE)).ok()?;
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&table, meta.dev(), meta.ino())
}

/// The pid of the `flock` holder of the file `dev`/`ino` in `table`, which
/// reads `/proc/locks`'s way: `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0
/// EOF`, the device as hexadecimal major and minor; a waiter's line has
/// `->` after its number and is skipped.
fn holder_in(table: &str, dev: u64, ino: u64) -> Option<u32> {
    let file = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, locked, ..] if *locked == file => pid.parse().ok(),
            _ => None,
        }
    })
}

/// The pid written into the lock file by its holder, if it parses.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder_until_the_first_is_dropped(
    ) -> TestResult {
        let dir = tempfile::tempdir()?;
        let first = DataDirLock::acquire(dir.path())?;
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        // A second open file description conflicts with the first even in
        // this process, as another process's would.
        let refused = DataDirLock::acquire(dir.path()).expect_err("the directory is locked");
        match &refused {
            LockError::InUse { dir: d, holder, .. } => {
                assert_eq!(d, dir.path());
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("not InUse: {other:?}"),
        }
        let message = refused.to_string();
        assert!(
            message.contains(&dir.path().display().to_string())
                && message.contains(&format!("pid {}", std::process::id()))
                && message.contains("store.data_dir")
                && message.contains("in use by this process")
                && message.contains("release the other lock first"),
            "{message}"
        );
        drop(first);
        let again = DataDirLock::acquire(dir.path())?;
        drop(again);
        // The file stays; it holds no lock by itself.
        assert!(dir.path().join(LOCK_FILE).exists());
        DataDirLock::acquire(dir.path())?;
        Ok(())
    }

    #[test]
    fn the_holder_is_read_from_the_kernels_table_without_taking_the_lock() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert_eq!(holder(dir.path()), None, "no lock file yet");
        let lock = DataDirLock::acquire(dir.path())?;
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        // Asking did not take it: it is still this one's, and free once dropped.
        assert!(DataDirLock::acquire(dir.path()).is_err());
        drop(lock);
        assert_eq!(holder(dir.path()), None, "the file stays, the lock is gone");
        Ok(())
    }

    #[test]
    fn the_table_is_read_for_the_flock_of_that_file_only() {
        let dev = libc::makedev(0xfd, 0x01);
        let table = "\
1: POSIX  ADVISORY  WRITE 111 fd:01:42 0 EOF
2: FLOCK  ADVISORY  WRITE 222 fd:01:43 0 EOF
2: -> FLOCK  ADVISORY  WRITE 333 fd:01:42 0 EOF
3: FLOCK  ADVISORY  WRITE 444 fd:02:42 0 EOF
4: FLOCK  ADVISORY  WRITE 555 fd:01:42 0 EOF
";
        assert_eq!(holder_in(table, dev, 42), Some(555));
        assert_eq!(holder_in(table, dev, 43), Some(222));
        assert_eq!(holder_in(table, dev, 44), None);
        assert_eq!(holder_in("", dev, 42), None);
    }

    #[test]
    fn a_lock_file_left_with_garbage_or_a_longer_pid_is_taken_and_rewritten() -> TestResult {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "not a pid, and long: 4294967295\n",
        )?;
        let lock = DataDirLock::acquire(dir.path())?;
        assert_eq!(
            std::fs::read_to_string(lock.path())?,
            format!("{}\n", std::process::id())
        );
        Ok(())
    }

    #[test]
    fn a_directory_that_does_not_exist_is_an_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = DataDirLock::acquire(&missing).expect_err("no such directory");
        assert!(
            matches!(
                err,
                LockError::Io {
                    action: "open it",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&missing.join(LOCK_FILE).display().to_string()),
            "{err}"
        );
    }
}
