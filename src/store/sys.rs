//! The system calls the store's files share: `syncfs`, the filesystem a file is on, and a
//! file's identity (which survives renames and tells a new file at an old path apart).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::UNIX_EPOCH;

/// Which file a journal entry is for: not only its path, which a new file can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) generation: u32,
    pub(super) birth_secs: i64,
    pub(super) birth_nanos: u32,
}

impl FileId {
    /// The identity of an open file, or `None` where the filesystem keeps no inode
    /// generation or birth time (then its records are not journaled).
    pub fn of(file: &File) -> Option<FileId> {
        let generation = inode_generation(file)?;
        Self::from_metadata(&file.metadata().ok()?, generation)
    }

    fn from_metadata(metadata: &fs::Metadata, generation: u32) -> Option<FileId> {
        let birth = metadata.created().ok()?;
        let (birth_secs, birth_nanos) = match birth.duration_since(UNIX_EPOCH) {
            Ok(after) => (i64::try_from(after.as_secs()).ok()?, after.subsec_nanos()),
            Err(before) => {
                let before = before.duration();
                (
                    -i64::try_from(before.as_secs()).ok()?,
                    before.subsec_nanos(),
                )
            }
        };
        Some(FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
            generation,
            birth_secs,
            birth_nanos,
        })
    }
}

/// The inode's generation number (`FS_IOC_GETVERSION`), if the filesystem keeps one.
#[cfg(target_os = "linux")]
fn inode_generation(file: &File) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // The kernel stores an `int`; a zeroed `long` holds it whichever half it fills.
    let mut generation: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes at most a `long` through the pointer, which points to
    // one; the descriptor is open for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::FS_IOC_GETVERSION,
            &mut generation as *mut libc::c_long,
        )
    };
    // Truncation is intended: the value is a 32-bit `int`.
    (rc == 0).then_some(generation as u32)
}

#[cfg(not(target_os = "linux"))]
fn inode_generation(_file: &File) -> Option<u32> {
    None
}

/// `syncfs` of the filesystem `file` is on (elsewhere than Linux: `sync`).
#[cfg(target_os = "linux")]
pub fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `syncfs` only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn syncfs(_file: &File) -> io::Result<()> {
    // No per-filesystem sync: flush everything.
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

/// The filesystem (`st_dev`) of an open file, for a ticket's `device`.
pub fn device_of(file: &File) -> u64 {
    file.metadata().map_or(0, |m| device_in(&m))
}

/// The filesystem named by `metadata` (`st_dev`; 0 where unknown).
pub fn device_in(metadata: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        metadata.dev()
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        0
    }
}
