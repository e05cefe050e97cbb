//! Corrupt files are kept (changed from Mesos on purpose: Mesos deletes
//! them). Non-strict recovery moves a stream file corrupt before its first
//! update into the quarantine instead of deleting it, and saves the bytes it
//! cuts at a corrupt record there before it truncates; strict recovery is
//! unchanged; without a quarantine directory the file is renamed beside
//! itself. The service quarantines into `<data_dir>/quarantine`, and
//! `inspect` reads what is there.
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use status_update_manager::kind::{encode_framed, Native, RecordRef};
use status_update_manager::messages::Recover;
use status_update_manager::store::layout::native_stream_path;
use status_update_manager::ManagerConfig;

/// A zero-length record: corrupt wherever it stands.
const CORRUPT: [u8; 5] = [0, 0, 0, 0, 7];

fn update_record(stream: &str) -> Vec<u8> {
    let mut frame = Vec::new();
    let update = native_update(stream, "RUNNING", false, "");
    encode_framed::<Native>(RecordRef::Update(&update), &mut frame).unwrap();
    frame
}

/// The files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

async fn recover(config: ManagerConfig, data: &Path, ids: &[&str], strict: bool) -> usize {
    let (manager, _rx) = start::<Native>(config, native_paths(data));
    let state = manager
        .send(Recover::<Native> {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            strict,
        })
        .await
        .unwrap();
    match state {
        Ok(state) => state.streams.values().filter(|s| s.is_some()).count(),
        Err(_) => usize::MAX,
    }
}

#[actix::test]
async fn non_strict_recovery_quarantines_what_it_cannot_use_and_deletes_nothing() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let quarantine = data.join("quarantine");
    let config = ManagerConfig {
        quarantine_dir: Some(quarantine.clone()),
        ..inline_config()
    };
    // "bad": corrupt from its first byte. "cut": one update, then a corrupt record.
    let bad = native_stream_path(data, "bad");
    let cut = native_stream_path(data, "cut");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    let bad_bytes = [&CORRUPT[..], b"more bytes"].concat();
    fs::write(&bad, &bad_bytes).unwrap();
    let good = update_record("cut");
    fs::write(&cut, [&good[..], &CORRUPT[..], b"tail"].concat()).unwrap();

    assert_eq!(recover(config, data, &["bad", "cut"], false).await, 1);

    // "bad" is gone from its place and kept whole in the quarantine.
    assert!(!bad.exists(), "moved, not left in place");
    let kept = files_in(&quarantine);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let whole = kept
        .iter()
        .find(|p| !p.to_string_lossy().ends_with(".cut"))
        .expect("the whole file");
    let name = whole.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("{}.", bad.file_name().unwrap().to_string_lossy())),
        "<original name>.<unix seconds>: {name}"
    );
    assert_eq!(fs::read(whole).unwrap(), bad_bytes, "the file as it was");
    // "cut" keeps its valid prefix; the bytes cut from it are in the quarantine.
    assert_eq!(
        fs::read(&cut).unwrap(),
        good,
        "truncated to its valid prefix"
    );
    let tail = kept
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".cut"))
        .expect("the cut bytes");
    assert_eq!(fs::read(tail).unwrap(), [&CORRUPT[..], b"tail"].concat());
}

#[actix::test]
async fn strict_recovery_is_unchanged_and_without_a_quarantine_the_file_stays_beside_itself() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let bad = native_stream_path(data, "bad");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, CORRUPT).unwrap();

    // Strict: the recovery fails, nothing is quarantined or renamed.
    let strict = ManagerConfig {
        quarantine_dir: Some(data.join("quarantine")),
        ..inline_config()
    };
    assert_eq!(recover(strict, data, &["bad"], true).await, usize::MAX);
    assert!(files_in(&data.join("quarantine")).is_empty());

    // Non-strict without a quarantine directory: renamed beside itself.
    fs::write(&bad, CORRUPT).unwrap();
    assert_eq!(recover(inline_config(), data, &["bad"], false).await, 0);
    assert!(!bad.exists());
    let beside = files_in(bad.parent().unwrap());
    assert_eq!(beside.len(), 1, "{beside:?}");
    assert!(
        beside[0].to_string_lossy().contains(".quarantined."),
        "{beside:?}"
    );
    assert_eq!(fs::read(&beside[0]).unwrap(), CORRUPT);
}

#[cfg(feature = "service")]
#[actix::test]
async fn the_service_quarantines_into_its_data_directory_and_inspect_reads_it() {
    use common::process::{self, Proc};
    use common::server::Server;

    let dir = tempfile::tempdir().unwrap();
    let bad = native_stream_path(dir.path(), "bad");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, [&CORRUPT[..], b"junk"].concat()).unwrap();
    let server = Server::start(dir.path(), |settings| settings.recovery.strict = false).await;
    let kept = files_in(&dir.path().join("quarantine"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(!bad.exists());
    server.shutdown().await;

    // inspect reads the quarantined file (and says it would not recover cleanly).
    let mut command = process::command(&["inspect", "--kind", "native"], &[]);
    command.arg(&kept[0]);
    let out = Proc::spawn("inspect of a quarantined file", command).finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stdout.contains(&kept[0].display().to_string()) && out.stdout.contains("corrupt"),
        "{}",
        out.stdout
    );
}
