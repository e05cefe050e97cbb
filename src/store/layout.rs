//! Where stream files live: stream id ↔ path, and discovery of existing streams.
//!
//! **Operation kind** (Mesos layout): `<root>/<operation uuid>/operation.updates`, the uuid in
//! canonical lowercase hyphenated form, as the Mesos agent and its unit tests lay it out.
//!
//! **Native kind** (service): stream ids are arbitrary strings, so their path must never escape
//! the data directory. Every byte outside `[A-Za-z0-9_-]` is percent-encoded as `%XX` (uppercase
//! hex) — including `.`, `/`, `%`, NUL and every byte of a non-ASCII character — so no encoded
//! piece can be `.` or `..` or contain a separator. An encoded id can be three times as long as
//! the id, more than a file name may hold (255 bytes), so it is cut greedily into chunks of at
//! most [`MAX_CHUNK_BYTES`] bytes, never inside a `%XX` triple. All chunks but the last are
//! directories; the last one gets the suffix `.updates`:
//!
//! ```text
//! <data_dir>/streams/<chunk 1>/…/<chunk n>.updates
//! ```
//!
//! The mapping is a bijection onto the paths it produces: [`native_stream_id`] decodes a path and
//! accepts it only if encoding the result gives that same path back, so two files can never claim
//! the same stream id.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The directory under a data directory where non-strict recovery moves
/// the files (and the bytes cut from files) it could not use.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Directory under the data directory that holds the native stream files.
pub const STREAMS_DIR: &str = "streams";
/// Suffix of every native stream file name.
pub const NATIVE_SUFFIX: &str = ".updates";
/// File name of an operation stream inside its uuid directory (as in Mesos).
pub const OPERATION_FILE: &str = "operation.updates";
/// Longest encoded chunk (one path component, before the suffix); well under the 255-byte limit.
pub const MAX_CHUNK_BYTES: usize = 200;

/// Why a path is not the file of a native stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// The last component does not end with `.updates`.
    #[error("its name does not end with '{NATIVE_SUFFIX}'")]
    MissingSuffix,
    /// A component below the streams directory is not a plain UTF-8 name (`.`, `..`, root, …).
    #[error("a component is not a plain UTF-8 name")]
    BadComponent,
    /// A byte that the encoder never leaves plain, or a malformed `%XX` escape.
    #[error("it is not a valid percent-encoding")]
    BadEncoding,
    /// The decoded bytes are not UTF-8.
    #[error("the decoded stream id is not UTF-8")]
    NotUtf8,
    /// It decodes, but the encoder would write that stream id to a different path.
    #[error("it is not the canonical path of its stream id")]
    NotCanonical,
}

/// A failure to map a path to a stream, or to list the stream directories.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The path is not below `<data_dir>/streams`.
    #[error("'{}' is not under the streams directory '{}'", .path.display(), .root.display())]
    OutsideStreamsDir {
        /// The rejected path.
        path: PathBuf,
        /// The streams directory.
        root: PathBuf,
    },
    /// The path is below the streams directory but the encoder never produces it.
    #[error("'{}' is not a native stream file: {problem}", .path.display())]
    InvalidName {
        /// The rejected path.
        path: PathBuf,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// Listing a directory during discovery failed.
    #[error("failed to list stream directory '{}': {source}", .path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Path of the checkpoint file of an operation stream: `root/<uuid>/operation.updates`.
pub fn operation_stream_path(root: &Path, operation_uuid: &uuid::Uuid) -> PathBuf {
    root.join(operation_uuid.hyphenated().to_string())
        .join(OPERATION_FILE)
}

/// Path of the checkpoint file of the native stream `stream_id`, always strictly below
/// `data_dir/streams` whatever the id holds (see the module documentation).
pub fn native_stream_path(data_dir: &Path, stream_id: &str) -> PathBuf {
    let mut path = data_dir.join(STREAMS_DIR);
    let mut chunks = encode_chunks(stream_id);
    let last = chunks.pop().unwrap_or_default();
    for dir in chunks {
        path.push(dir);
    }
    path.push(format!("{last}{NATIVE_SUFFIX}"));
    path
}

/// Decodes the stream id of a native stream file; the inverse of [`native_stream_path`].
///
/// Rejects every path the encoder would not produce for `data_dir`.
pub fn native_stream_id(data_dir: &Path, path: &Path) -> Result<String, LayoutError> {
    let root = data_dir.join(STREAMS_DIR);
    let invalid = |problem| LayoutError::InvalidName {
        path: path.to_path_buf(),
        problem,
    };
    let relative = path
        .strip_prefix(&root)
        .map_err(|_| LayoutError::OutsideStreamsDir {
            path: path.to_path_buf(),
            root: root.clone(),
        })?;
    let mut names = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => {
                names.push(
                    name.to_str()
                        .ok_or_else(|| invalid(NameProblem::BadComponent))?,
                );
            }
            _ => return Err(invalid(NameProblem::BadComponent)),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Err(invalid(NameProblem::MissingSuffix));
    };
    let stem = last
        .strip_suffix(NATIVE_SUFFIX)
        .ok_or_else(|| invalid(NameProblem::MissingSuffix))?;
    let mut encoded = dirs.concat();
    encoded.push_str(stem);
    let bytes = percent_decode(&encoded).ok_or_else(|| invalid(NameProblem::BadEncoding))?;
    let id = String::from_utf8(bytes).map_err(|_| invalid(NameProblem::NotUtf8))?;
    if native_stream_path(data_dir, &id) != path {
        return Err(invalid(NameProblem::NotCanonical));
    }
    Ok(id)
}

/// Finds every native stream file under `data_dir/streams`, sorted by stream id.
///
/// Walks the tree without following symlinks (a symlink is skipped with a warning). A missing
/// streams directory yields an empty list; a `*.updates` file whose name does not decode is
/// skipped with a warning; other files are ignored. Failing to list a directory is an error.
pub fn discover_native_streams(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, LayoutError> {
    let mut found = Vec::new();
    // An explicit stack: a hostile tree cannot exhaust the call stack.
    let mut pending = vec![data_dir.join(STREAMS_DIR)];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The streams directory does not exist (yet), or a directory vanished meanwhile.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LayoutError::ReadDir { path: dir, source }),
        };
        for entry in entries {
            let read_err = |source| LayoutError::ReadDir {
                path: dir.clone(),
                source,
            };
            let entry = entry.map_err(read_err)?;
            let file_type = entry.file_type().map_err(read_err)?;
            let path = entry.path();
            if file_type.is_dir() {
                pending.push(path);
            } else if !has_native_suffix(&entry.file_name()) {
                tracing::debug!(path = %path.display(), "ignoring a file that is not a stream file");
            } else if file_type.is_symlink() {
                tracing::warn!(path = %path.display(), "skipping a symlink among the stream files");
            } else {
                match native_stream_id(data_dir, &path) {
                    Ok(id) => found.push((id, path)),
                    Err(err) => tracing::warn!(path = %path.display(), error = %err,
                        "skipping a stream file whose name does not decode"),
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn has_native_suffix(name: &OsStr) -> bool {
    name.as_encoded_bytes().ends_with(NATIVE_SUFFIX.as_bytes())
}

/// Bytes left as they are by the encoding.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

fn hex_digit(nibble: u8) -> char {
    let nibble = nibble & 0x0F;
    char::from(if nibble < 10 {
        b'0' + nibble
    } else {
        b'A' + (nibble - 10)
    })
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes `id` and cuts the result greedily into chunks of at most
/// [`MAX_CHUNK_BYTES`] bytes, never inside a `%XX` triple. Always returns at least one chunk.
fn encode_chunks(id: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for &byte in id.as_bytes() {
        let width = if is_plain(byte) { 1 } else { 3 };
        if current.len() + width > MAX_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
        }
        if is_plain(byte) {
            current.push(char::from(byte));
        } else {
            current.push('%');
            current.push(hex_digit(byte >> 4));
            current.push(hex_digit(byte));
        }
    }
    chunks.push(current);
    chunks
}

/// Decodes what [`encode_chunks`] produced (joined); `None` on any byte it never emits.
fn percent_decode(encoded: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(hex_value)?;
            let low = bytes.next().and_then(hex_value)?;
            out.push(high << 4 | low);
        } else if is_plain(byte) {
            out.push(byte);
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn hostile_ids() -> Vec<String> {
        let mut ids: Vec<String> = [
            "..",
            ".",
            "a/b",
            "/abs",
            "%",
            "a%2Fb",
            "%2F",
            "\0",
            "a\0b",
            "../../etc/passwd",
            "\\..\\x",
            "C:\\x",
            "streams",
            ".updates",
            "a.updates",
            "-",
            "_",
            "id-1_A",
            "🦀 stream",
            "日本語",
            "ünï/cödé",
            " ",
            "a//b/",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        ids.push("x".repeat(256));
        ids.push("é".repeat(128));
        ids.push(format!("{}x", "日".repeat(85)));
        ids.push("/".repeat(256));
        ids.push(format!("{}{}", "x".repeat(199), "é".repeat(20)));
        ids
    }

    fn assert_contained(data_dir: &Path, id: &str, path: &Path) {
        assert!(
            path.starts_with(data_dir.join(STREAMS_DIR)),
            "{id:?} -> {path:?}"
        );
        let relative = path.strip_prefix(data_dir).unwrap_or(path);
        for component in relative.components() {
            let Component::Normal(name) = component else {
                panic!("{id:?} -> {path:?} has component {component:?}");
            };
            assert!(
                name.len() <= 255,
                "{id:?} -> {path:?}: component of {} bytes",
                name.len()
            );
        }
    }

    #[test]
    fn hostile_ids_stay_under_data_dir_and_round_trip() -> TestResult {
        let data_dir = Path::new("/var/lib/sum");
        for id in hostile_ids() {
            let path = native_stream_path(data_dir, &id);
            assert_contained(data_dir, &id, &path);
            assert_eq!(native_stream_id(data_dir, &path)?, id);
        }
        Ok(())
    }

    #[test]
    fn encoding_is_uppercase_percent_and_chunked() {
        let cases = [
            ("a.b", "streams/a%2Eb.updates"),
            ("é/", "streams/%C3%A9%2F.updates"),
            ("", "streams/.updates"),
        ];
        for (id, expected) in cases {
            assert_eq!(
                native_stream_path(Path::new(""), id),
                Path::new(expected),
                "{id:?}"
            );
        }
        // 128 × "%C3%A9" = 768 bytes: 33 pairs (198 bytes) per chunk, never splitting a triple.
        let chunks = encode_chunks(&"é".repeat(128));
        let lens: Vec<usize> = chunks.iter().map(String::len).collect();
        assert_eq!(lens, [198, 198, 198, 174]);
        assert!(chunks.iter().all(|c| c.starts_with('%')));
    }

    #[test]
    fn native_stream_id_rejects_paths_the_encoder_never_writes() {
        let data_dir = Path::new("/d");
        let invalid = |p| Some(p);
        let cases: [(&str, Option<NameProblem>); 11] = [
            ("/d/other/a.updates", None),
            ("/d/streams", invalid(NameProblem::MissingSuffix)),
            ("/d/streams/a", invalid(NameProblem::MissingSuffix)),
            ("/d/streams/a.txt", invalid(NameProblem::MissingSuffix)),
            (
                "/d/streams/../a.updates",
                invalid(NameProblem::BadComponent),
            ),
            ("/d/streams/a.b.updates", invalid(NameProblem::BadEncoding)),
            ("/d/streams/%2f.updates", invalid(NameProblem::BadEncoding)),
            ("/d/streams/%4.updates", invalid(NameProblem::BadEncoding)),
            ("/d/streams/%FF.updates", invalid(NameProblem::NotUtf8)),
            ("/d/streams/%41.updates", invalid(NameProblem::NotCanonical)),
            ("/d/streams/a/b.updates", invalid(NameProblem::NotCanonical)),
        ];
        for (path, expected) in cases {
            let result = native_stream_id(data_dir, Path::new(path));
            match (expected, &result) {
                (None, Err(LayoutError::OutsideStreamsDir { .. })) => {}
                (Some(want), Err(LayoutError::InvalidName { problem, path: p })) => {
                    assert_eq!((*problem, p.as_path()), (want, Path::new(path)));
                }
                _ => panic!("{path}: expected {expected:?}, got {result:?}"),
            }
        }
    }

    #[test]
    fn discovery_finds_every_created_stream_sorted_and_skips_junk() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path();
        assert!(discover_native_streams(data_dir)?.is_empty());
        let mut expected = Vec::new();
        for id in hostile_ids() {
            let path = native_stream_path(data_dir, &id);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            fs::write(&path, b"")?;
            expected.push((id, path));
        }
        expected.sort();
        let streams = data_dir.join(STREAMS_DIR);
        fs::write(streams.join("notes.txt"), b"")?;
        fs::write(streams.join("a.b.updates"), b"")?;
        fs::write(streams.join("%2f.updates"), b"")?;
        fs::create_dir_all(streams.join("empty-dir"))?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(native_stream_path(data_dir, "x"), streams.join("l.updates"))?;
        assert_eq!(discover_native_streams(data_dir)?, expected);
        Ok(())
    }

    #[test]
    fn operation_paths_follow_the_mesos_layout() -> TestResult {
        let uuid = uuid::Uuid::parse_str("6E8BC430-9C3A-11D9-9669-0800200C9A66")?;
        assert_eq!(
            operation_stream_path(Path::new("/meta/operations"), &uuid),
            Path::new("/meta/operations/6e8bc430-9c3a-11d9-9669-0800200c9a66/operation.updates")
        );
        Ok(())
    }
}
