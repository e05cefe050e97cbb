//! New directories and their syncs: which directories a new stream file
//! must sync before it is reported durable.
//!
//! A new file survives power loss once its directory is synced (that makes
//! its entry durable), and a new directory once its parent is. So a file
//! created under a directory chain that did not exist syncs its own
//! directory and the parent of every directory created for it.
//!
//! "Did not exist" is not enough when files are created concurrently, as the
//! committer's file threads do: the first task files of a new executor,
//! created by two threads at once, share the directories that the first of
//! them creates. The second finds them already there; were it to sync only
//! its own directory, it could be answered before the first has synced the
//! parents, and a power loss in between would lose the directory entries and
//! with them a file reported durable. So every directory created here is
//! recorded until a sync of its parent *that began after it was created*
//! succeeds ([`sync_dir`]), and a file created under a recorded directory
//! syncs that parent too ([`create_dir_chain`]). A failed sync leaves the
//! record, so the next file under it tries again.
//!
//! The record is process-wide (the file threads are), kept under one mutex
//! that also covers the creation of the directories, so that no two threads
//! see a chain half made. It holds only directories whose parents are not
//! synced yet: at most a burst of new streams' directories, until their
//! batch's directory syncs. Only the syncing policies use it (under `none`
//! nothing is durable, and directories are simply created).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// The directories created here whose entries are not known to be durable.
#[derive(Debug, Default)]
struct Unsynced {
    /// The sequence number the next created directory gets.
    next: u64,
    /// Each such directory, with its sequence number.
    dirs: HashMap<PathBuf, u64>,
    /// The same directories by parent, for [`covered`](Self::covered).
    by_parent: HashMap<PathBuf, Vec<PathBuf>>,
}

impl Unsynced {
    fn contains(&self, dir: &Path) -> bool {
        self.dirs.contains_key(dir)
    }

    /// Whether `dir` or one of its ancestors is recorded.
    fn at_or_above(&self, dir: &Path) -> bool {
        !self.dirs.is_empty() && dir.ancestors().any(|d| self.dirs.contains_key(d))
    }

    fn record(&mut self, dir: PathBuf) {
        let seq = self.next;
        self.next += 1;
        self.by_parent
            .entry(parent_dir(&dir).to_path_buf())
            .or_default()
            .push(dir.clone());
        self.dirs.insert(dir, seq);
    }

    /// A sync of `parent` that began when `began` was the next sequence
    /// number succeeded: every directory in it created before then is durable.
    fn covered(&mut self, parent: &Path, began: u64) {
        let Some(children) = self.by_parent.get_mut(parent) else {
            return;
        };
        let dirs = &mut self.dirs;
        children.retain(|child| {
            let durable = dirs.get(child).is_none_or(|seq| *seq < began);
            if durable {
                dirs.remove(child);
            }
            !durable
        });
        if children.is_empty() {
            self.by_parent.remove(parent);
        }
    }
}

static UNSYNCED: LazyLock<Mutex<Unsynced>> = LazyLock::new(Mutex::default);

fn unsynced() -> MutexGuard<'static, Unsynced> {
    // Nothing in this module panics while it holds the lock.
    UNSYNCED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `path`'s directory (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing ancestors, and returns the directories to
/// sync, in order, so that a file created in `dir` survives power loss:
/// `dir` itself, then the parent of each directory on the way up that was
/// created now, or earlier and not yet covered by a sync (see the module
/// docs). The walk ends at the first directory that exists with nothing
/// recorded at or above it.
pub(crate) fn create_dir_chain(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut unsynced = unsynced();
    let mut dirs = vec![dir.to_path_buf()];
    let mut created = Vec::new();
    let mut current = dir;
    // Up to the first directory that exists with no recorded directory at
    // or above it: from there up, every entry is durable.
    loop {
        let exists = current.is_dir();
        if exists && !unsynced.at_or_above(current) {
            break;
        }
        let parent = parent_dir(current);
        if parent == current {
            break;
        }
        if !exists {
            created.push(current.to_path_buf());
        }
        if !exists || unsynced.contains(current) {
            dirs.push(parent.to_path_buf());
        }
        current = parent;
    }
    if created.is_empty() {
        return Ok(dirs);
    }
    fs::create_dir_all(dir)?;
    for dir in created {
        unsynced.record(dir);
    }
    Ok(dirs)
}

/// Syncs `dir`, so that every entry in it is durable; on success, the
/// directories created in it before the sync began are no longer recorded.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    let began = unsynced().next;
    File::open(dir)?.sync_all()?;
    unsynced().covered(dir, began);
    Ok(())
}

/// Directories cannot be opened and synced portably; NTFS journals its
/// metadata.
#[cfg(not(unix))]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    let began = unsynced().next;
    unsynced().covered(dir, began);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_new_chain_syncs_the_parent_of_every_directory_it_creates() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().to_path_buf();
        let dir = root.join("a/b/c");
        assert_eq!(
            create_dir_chain(&dir)?,
            [dir.clone(), root.join("a/b"), root.join("a"), root.clone()]
        );
        assert!(dir.is_dir());
        for synced in [&dir, &root.join("a/b"), &root.join("a"), &root] {
            sync_dir(synced)?;
        }
        assert_eq!(create_dir_chain(&dir)?, std::slice::from_ref(&dir));
        assert_eq!(create_dir_chain(&root)?, std::slice::from_ref(&root));
        assert_eq!(parent_dir(Path::new("f.updates")), Path::new("."));
        Ok(())
    }

    /// The race of the module docs, in order: a second file under the same
    /// new chain, before the first file's syncs, syncs the chain too.
    #[test]
    fn a_chain_another_file_created_is_synced_again_until_its_parents_are() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().to_path_buf();
        let executor = root.join("executor");
        let tasks = executor.join("tasks");
        let whole = [tasks.clone(), executor.clone(), root.clone()];
        assert_eq!(create_dir_chain(&tasks)?, whole);
        // Another file in `tasks`, while the first has synced nothing.
        assert_eq!(create_dir_chain(&tasks)?, whole);
        // A new sibling directory: its own parent, then the unsynced chain.
        let other = executor.join("other");
        assert_eq!(
            create_dir_chain(&other)?,
            [other.clone(), executor.clone(), root.clone()]
        );
        // Syncing `executor` covers `tasks` and `other`; `executor` itself
        // still waits for `root`.
        sync_dir(&executor)?;
        assert_eq!(create_dir_chain(&tasks)?, [tasks.clone(), root.clone()]);
        sync_dir(&root)?;
        assert_eq!(create_dir_chain(&tasks)?, std::slice::from_ref(&tasks));
        assert_eq!(create_dir_chain(&other)?, std::slice::from_ref(&other));
        Ok(())
    }

    /// A sync that began before a directory was created does not cover it.
    #[test]
    fn only_a_sync_begun_after_the_creation_covers_it() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().to_path_buf();
        let began = unsynced().next;
        let dir = root.join("late");
        create_dir_chain(&dir)?;
        unsynced().covered(&root, began);
        assert_eq!(create_dir_chain(&dir)?, [dir.clone(), root.clone()]);
        sync_dir(&root)?;
        assert_eq!(create_dir_chain(&dir)?, std::slice::from_ref(&dir));
        Ok(())
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_error_and_not_recorded() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("plain");
        fs::write(&file, b"x")?;
        let below = file.join("d");
        assert!(create_dir_chain(&below).is_err());
        assert!(!unsynced().contains(&below));
        Ok(())
    }
}
