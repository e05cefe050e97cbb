//! The operator's pause, kept in the data directory: `<data_dir>/paused`.
//!
//! The admin `Pause` RPC writes the file, `Resume` removes it, and `serve`
//! reads it at start: a service that an operator paused comes back up
//! paused, whether or not a subscriber connects, until an operator resumes
//! it. Only the file's existence counts; it holds the time of the pause in
//! unix seconds (one line), which `GetStatus` reports.
//!
//! The file is written atomically and durably: a temporary file
//! (`paused.tmp`) is written and synced, renamed over `paused`, and the
//! directory synced. A crash leaves either the old state or the new one (and
//! perhaps a `paused.tmp`, which is ignored and overwritten by the next
//! pause). Removal syncs the directory too, so a resume survives power loss.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file's name in the data directory.
pub const PAUSE_FILE: &str = "paused";

/// `<data_dir>/paused`; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseFile {
    path: PathBuf,
}

impl PauseFile {
    /// The pause file of `data_dir`.
    pub fn in_dir(data_dir: &Path) -> Self {
        PauseFile {
            path: data_dir.join(PAUSE_FILE),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the operator paused, if the file exists: the unix seconds it
    /// holds, or its modification time when it holds none (`UNIX_EPOCH` if
    /// that is unknown too). `None`: not paused. Any failure but the file's
    /// absence is an error: whether the service is paused cannot be told.
    pub fn read(&self) -> io::Result<Option<SystemTime>> {
        let text = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let held = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        let since = held.unwrap_or_else(|| {
            fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH)
        });
        Ok(Some(since))
    }

    /// Keeps a pause made at `since`: written to a temporary file, synced,
    /// renamed over the pause file, then the directory synced.
    pub fn save(&self, since: SystemTime) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{}\n", unix_seconds(since)).as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)?;
        sync_dir(self.dir())
    }

    /// Forgets the pause: the file removed (if it exists), then the
    /// directory synced.
    pub fn clear(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.dir()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }
}

/// `time` in whole seconds since the unix epoch (0 before it).
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_pause_is_read_back_with_its_time_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let file = PauseFile::in_dir(dir.path());
        assert_eq!(file.read().unwrap(), None, "no file: not paused");
        let since = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        file.save(since).unwrap();
        assert_eq!(file.read().unwrap(), Some(since));
        assert_eq!(
            fs::read_to_string(dir.path().join(PAUSE_FILE)).unwrap(),
            "1764000000\n"
        );
        assert!(
            !dir.path().join("paused.tmp").exists(),
            "the temporary file was renamed"
        );
        // Saved again (a second Pause), the file is replaced.
        let later = since + Duration::from_secs(60);
        file.save(later).unwrap();
        assert_eq!(file.read().unwrap(), Some(later));
        file.clear().unwrap();
        assert_eq!(file.read().unwrap(), None);
        file.clear().unwrap();
    }

    #[test]
    fn a_pause_file_whatever_it_holds_means_paused() {
        let dir = tempfile::tempdir().unwrap();
        let file = PauseFile::in_dir(dir.path());
        fs::write(file.path(), "").unwrap();
        assert!(file.read().unwrap().is_some(), "an empty file is a pause");
        fs::write(file.path(), "not a time").unwrap();
        assert!(file.read().unwrap().is_some());
    }

    #[test]
    fn a_pause_file_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = PauseFile::in_dir(dir.path());
        // A directory in its place: neither paused nor not.
        fs::create_dir(file.path()).unwrap();
        assert!(file.read().is_err());
    }
}
