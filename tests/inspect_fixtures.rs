//! C4 (Mesos-written files): the fixtures in `../shared/fixtures/` are inspected by the built
//! binary (`inspect --json`) exactly as `expected.json` says, without being modified, and
//! recovering a copy of each with the manager (strict and non-strict) arrives at the same
//! facts. Also the command line's other promises: `--kind` overrides detection, a data
//! directory expands to its stream files, a missing file is reported, usage errors exit 2.
#![cfg(feature = "service")]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::process::{self, Finished, Proc};
use common::*;
use status_update_manager::kind::{status_uuid, Operation, Record, Task, UpdateKind};
use status_update_manager::messages::{GetStream, Recover};
use status_update_manager::store::framing::{FrameReader, Next};

const FIXTURES: [&str; 4] = [
    "op_pending.updates",
    "op_terminated.updates",
    "op_torn_tail.updates",
    "task_running.updates",
];

/// Runs `inspect ARGS PATHS` (as a child process, waited for at most
/// `PROCESS_BOUND`): its exit status, stdout and stderr.
fn inspect(args: &[&str], paths: &[PathBuf]) -> Finished {
    let mut command = process::command(&[&["inspect"], args].concat(), &[]);
    command.args(paths);
    Proc::spawn(&format!("inspect {args:?} {paths:?}"), command).finish()
}

/// Runs `inspect --json` and returns its `streams`, checking exit status 0.
fn inspect_json(args: &[&str], paths: &[PathBuf]) -> Vec<Value> {
    inspect_json_exiting(args, paths, 0)
}

/// Runs `inspect --json` and returns its `streams`, checking exit status `code` (1: a file
/// would not recover cleanly, or nothing to inspect; the report is printed all the same).
fn inspect_json_exiting(args: &[&str], paths: &[PathBuf], code: i32) -> Vec<Value> {
    let output = inspect(&[&["--json"], args].concat(), paths);
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(code), "inspect: {stderr}");
    let doc: Value = serde_json::from_str(&output.stdout).expect("one JSON document on stdout");
    let object = doc.as_object().expect("a JSON object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["streams"], "{doc}");
    doc["streams"]
        .as_array()
        .expect("streams is an array")
        .clone()
}

fn expected() -> BTreeMap<String, Value> {
    let text = fs::read_to_string(fixtures_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn file_name(path: &Value) -> String {
    let path = Path::new(path.as_str().expect("path is a string"));
    path.file_name()
        .expect("path has a file name")
        .to_string_lossy()
        .into_owned()
}

fn snapshot() -> Vec<Vec<u8>> {
    FIXTURES
        .iter()
        .map(|name| fs::read(fixtures_dir().join(name)).expect("read a fixture"))
        .collect()
}

#[test]
fn inspect_json_matches_expected_and_leaves_files_alone() {
    let before = snapshot();
    let expected = expected();
    assert_eq!(expected.len(), FIXTURES.len(), "one entry per fixture");
    let paths: Vec<PathBuf> = FIXTURES.iter().map(|n| fixtures_dir().join(n)).collect();
    let streams = inspect_json(&[], &paths);
    assert_eq!(streams.len(), FIXTURES.len());
    for (stream, name) in streams.iter().zip(FIXTURES) {
        assert_eq!(
            file_name(&stream["path"]),
            name,
            "streams in argument order"
        );
        let mut got = stream.as_object().expect("a stream is an object").clone();
        got.remove("path");
        assert_eq!(Value::Object(got), expected[name], "{name}");
    }
    // One file at a time, and with the kind given, reports the same.
    for name in FIXTURES {
        let kind = if name.starts_with("op_") {
            "operation"
        } else {
            "task"
        };
        for args in [&[][..], &["--kind", kind][..]] {
            let streams = inspect_json(args, &[fixtures_dir().join(name)]);
            assert_eq!(streams.len(), 1, "{name} {args:?}");
            let mut got = streams[0].as_object().expect("object").clone();
            got.remove("path");
            assert_eq!(Value::Object(got), expected[name], "{name} {args:?}");
        }
    }
    assert_eq!(snapshot(), before, "inspect modified a fixture");
}

#[test]
fn table_output_lists_every_stream() {
    let before = snapshot();
    let paths: Vec<PathBuf> = FIXTURES.iter().map(|n| fixtures_dir().join(n)).collect();
    let output = inspect(&[], &paths);
    assert!(output.status.success());
    let text = output.stdout;
    assert!(text.starts_with("PATH"), "{text}");
    let expected = expected();
    for name in FIXTURES {
        let want = &expected[name];
        let row = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"));
        let bytes = format!("{}/{}", want["valid_bytes"], want["file_bytes"]);
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[1..5],
            [
                want["kind"].as_str().unwrap(),
                "ok",
                want["tail"].as_str().unwrap(),
                &bytes
            ],
            "{row}"
        );
        for update in want["updates"].as_array().unwrap() {
            assert!(text.contains(update["uuid"].as_str().unwrap()), "{text}");
        }
    }
    assert_eq!(snapshot(), before, "inspect modified a fixture");
}

#[test]
fn kind_flag_overrides_detection() {
    // Read as the task kind, the operation file is corrupt from its first record: exit 1.
    let streams = inspect_json_exiting(
        &["--kind", "task"],
        &[fixtures_dir().join("op_pending.updates")],
        1,
    );
    let s = &streams[0];
    assert_eq!(
        (&s["kind"], &s["outcome"], &s["tail"], &s["valid_bytes"]),
        (
            &Value::from("task"),
            &Value::from("empty"),
            &Value::from("corrupt"),
            &Value::from(0)
        ),
        "{s}"
    );
}

#[test]
fn data_directory_expands_to_its_stream_files() {
    let dir = tempfile::tempdir().unwrap();
    let op = dir.path().join(
        "meta/slaves/agent-1/operations/12345678-90ab-4def-8000-0000000003e8/operation.updates",
    );
    let task = dir.path().join(
        "meta/slaves/agent-1/frameworks/fw-1/executors/ex-1/runs/c1/tasks/task-1/task.updates",
    );
    for (path, name) in [(&op, "op_pending.updates"), (&task, "task_running.updates")] {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::copy(fixtures_dir().join(name), path).unwrap();
    }
    fs::write(dir.path().join("meta/unrelated.txt"), b"not a stream").unwrap();
    let streams = inspect_json(&[], &[dir.path().to_path_buf()]);
    let got: Vec<(String, String, u64)> = streams
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["pending"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = vec![
        (op.display().to_string(), "operation".to_string(), 1),
        (task.display().to_string(), "task".to_string(), 1),
    ];
    assert_eq!(got, want);
    // No native stream file there: nothing to inspect, exit 1.
    assert!(inspect_json_exiting(&["--kind", "native"], &[dir.path().to_path_buf()], 1).is_empty());
}

#[test]
fn missing_file_is_reported_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("task.updates");
    let output = inspect(&["--json"], std::slice::from_ref(&missing));
    assert_eq!(
        output.status.code(),
        Some(1),
        "a missing file: {}",
        output.stderr
    );
    let doc: Value = serde_json::from_str(&output.stdout).expect("the report is printed");
    let streams = doc["streams"].as_array().expect("streams").clone();
    assert_eq!(streams[0]["outcome"], "missing", "{}", streams[0]);
    assert_eq!(streams[0]["kind"], "task", "{}", streams[0]);
    assert!(streams[0].get("error").is_none());
    for args in [&["--kind", "bogus"][..], &["--nope"][..]] {
        let output = inspect(args, std::slice::from_ref(&missing));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    assert_eq!(inspect(&[], &[]).status.code(), Some(2), "no PATH");
    assert!(!missing.exists(), "inspect created a file");
}

/// The stream id of the first UPDATE record of a file.
fn first_stream_id<K: UpdateKind>(bytes: &[u8]) -> K::StreamId {
    match FrameReader::new(bytes).next_frame() {
        Next::Record { body, .. } => match K::decode_record(body) {
            Ok(Record::Update(update)) => K::stream_id(&update).expect("a stream id"),
            other => panic!("first record is not an update: {other:?}"),
        },
        other => panic!("no first record: {other:?}"),
    }
}

fn uuids_of(updates: &[Value], pending_only: bool) -> Vec<String> {
    updates
        .iter()
        .filter(|u| !(pending_only && u["acknowledged"] == Value::Bool(true)))
        .map(|u| u["uuid"].as_str().unwrap().to_string())
        .collect()
}

/// Recovers a copy of fixture `name` as kind `K` and checks it against `expected.json`.
async fn recover_fixture<K: UpdateKind>(name: &str, strict: bool) {
    let what = format!("{name} (strict={strict})");
    let want = &expected()[name];
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(name);
    fs::copy(fixtures_dir().join(name), &copy).unwrap();
    let id = first_stream_id::<K>(&fs::read(&copy).unwrap());
    let (manager, mut rx) = start::<K>(inline_config(), single_file_paths::<K>(&copy));
    let mut state = manager
        .send(Recover::<K> {
            ids: vec![id.clone()],
            strict,
        })
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("{what}: recovery failed: {err}"));
    assert_eq!(state.errors, 0, "{what}");
    let recovered = state
        .streams
        .remove(&id)
        .unwrap_or_else(|| panic!("{what}: no entry"))
        .unwrap_or_else(|| panic!("{what}: recovered None"));
    let want_updates = want["updates"].as_array().unwrap();
    let uuids: Vec<String> = recovered
        .updates
        .iter()
        .map(|u| status_uuid::<K>(&u).unwrap().to_string())
        .collect();
    assert_eq!(uuids, uuids_of(want_updates, false), "{what}: updates");
    let states: Vec<String> = recovered
        .updates
        .iter()
        .map(|u| K::state_name(&u))
        .collect();
    let want_states: Vec<&str> = want_updates
        .iter()
        .map(|u| u["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, want_states, "{what}: states");
    assert_eq!(
        Value::Bool(recovered.terminated),
        want["terminated"],
        "{what}"
    );
    let pending = uuids_of(want_updates, true);
    let stats = manager
        .send(GetStream::<K> { stream: id.clone() })
        .await
        .unwrap()
        .expect("the stream answers");
    if recovered.terminated {
        assert!(stats.is_none(), "{what}: a terminated stream is not kept");
        assert_no_forward(&mut rx, &what).await;
    } else {
        let stats = stats.unwrap_or_else(|| panic!("{what}: stream not kept"));
        let got: Vec<String> = stats
            .pending_updates
            .iter()
            .map(|u| status_uuid::<K>(u).unwrap().to_string())
            .collect();
        assert_eq!(got, pending, "{what}: pending updates");
        assert_eq!(Value::from(stats.pending), want["pending"], "{what}");
        assert_eq!(
            stats.framework_id.map(Value::from).unwrap_or(Value::Null),
            want["framework_id"],
            "{what}"
        );
        let forward = recv_or_fail(&mut rx, &format!("{what}: head forwarded")).await;
        assert_eq!(
            status_uuid::<K>(&forward.update).unwrap().to_string(),
            pending[0],
            "{what}: the head is forwarded"
        );
        assert_no_forward(&mut rx, &what).await;
    }
    let len = fs::metadata(&copy).unwrap().len();
    assert_eq!(Value::from(len), want["valid_bytes"], "{what}: file length");
}

#[actix::test]
async fn recovering_the_fixtures_arrives_at_the_same_facts() {
    tokio::time::pause();
    for strict in [false, true] {
        recover_fixture::<Operation>("op_pending.updates", strict).await;
        recover_fixture::<Operation>("op_terminated.updates", strict).await;
        recover_fixture::<Operation>("op_torn_tail.updates", strict).await;
        recover_fixture::<Task>("task_running.updates", strict).await;
    }
}

#[test]
fn a_data_dir_whose_commit_journal_holds_records_is_flagged_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(status_update_manager::store::JOURNAL_FILE);
    std::fs::write(&journal, b"not yet replayed").unwrap();
    let output = inspect(&["--json"], &[dir.path().to_path_buf()]);
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(1), "no stream file: {stderr}");
    assert!(
        stderr.contains("commit.journal") && stderr.contains("replays them first"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_str(&output.stdout).expect("JSON stays on stdout");
    assert_eq!(doc["streams"], Value::Array(Vec::new()));
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        b"not yet replayed",
        "never modified"
    );

    // A stream file inside that data directory, and a directory below it, are flagged too,
    // with the journal named once.
    let streams = dir
        .path()
        .join(status_update_manager::store::layout::STREAMS_DIR);
    std::fs::create_dir_all(&streams).unwrap();
    let file = streams.join(format!(
        "s{}",
        status_update_manager::store::layout::NATIVE_SUFFIX
    ));
    std::fs::write(&file, b"").unwrap();
    let output = inspect(&["--json"], &[file.clone(), streams.clone()]);
    let stderr = &output.stderr;
    assert!(output.status.success(), "inspect failed: {stderr}");
    assert_eq!(stderr.matches("commit.journal").count(), 1, "{stderr}");
    assert!(stderr.contains("replays them first"), "{stderr}");

    // An empty journal (a clean stop) says nothing.
    std::fs::write(&journal, b"").unwrap();
    let output = inspect(&["--json"], &[dir.path().to_path_buf(), file]);
    assert!(output.status.success());
    assert!(!output.stderr.contains("commit.journal"));
}

#[test]
fn a_journal_rotated_for_a_checkpoint_is_flagged_too() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(status_update_manager::store::JOURNAL_FILE);
    let old = status_update_manager::store::journal::old_journal_path(&journal);
    // A crash during a checkpoint, right after the rotation: the new journal
    // is not there yet.
    std::fs::write(&old, b"not yet replayed").unwrap();
    let output = inspect(&["--json"], &[dir.path().to_path_buf()]);
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(1), "no stream file: {stderr}");
    assert_eq!(stderr.matches("commit.journal.old'").count(), 1, "{stderr}");
    assert!(stderr.contains("replays them first"), "{stderr}");

    // Both, each named once.
    std::fs::write(&journal, b"newer").unwrap();
    let output = inspect(&["--json"], &[dir.path().to_path_buf()]);
    let stderr = &output.stderr;
    assert_eq!(stderr.matches("commit.journal.old'").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("commit.journal'").count(), 1, "{stderr}");
    assert_eq!(
        std::fs::read(&old).unwrap(),
        b"not yet replayed",
        "never modified"
    );
}

/// Runs `inspect` on `paths` with its table output and returns the finished process.
fn inspect_table(paths: &[PathBuf]) -> Finished {
    inspect(&[], paths)
}

#[test]
fn the_exit_status_says_whether_every_file_would_recover_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // A clean file (a torn tail is the normal trace of a crash: still clean).
    let clean = fixtures_dir().join("op_torn_tail.updates");
    let ok = inspect_table(std::slice::from_ref(&clean));
    assert_eq!(ok.status.code(), Some(0), "{}", ok.stderr);

    // A corrupt record (a zero-length frame) after the valid ones.
    let corrupt = dir.path().join("operation.updates");
    let mut bytes = fs::read(fixtures_dir().join("op_pending.updates")).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 0, 7]);
    fs::write(&corrupt, &bytes).unwrap();
    let bad = inspect_table(&[clean.clone(), corrupt.clone()]);
    assert_eq!(bad.status.code(), Some(1), "{}", bad.stderr);
    assert!(bad.stdout.starts_with("PATH"), "the report is printed too");
    assert!(
        bad.stderr
            .contains("1 of 2 stream files would not recover cleanly")
            && bad.stderr.contains(&corrupt.display().to_string()),
        "{}",
        bad.stderr
    );

    // A path that does not exist.
    let missing = inspect_table(&[dir.path().join("no-such-file")]);
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);

    // Nothing to inspect: a directory without stream files.
    let empty = tempfile::tempdir().unwrap();
    let nothing = inspect_table(&[empty.path().to_path_buf()]);
    assert_eq!(nothing.status.code(), Some(1), "{}", nothing.stderr);
    assert!(
        nothing.stdout.contains("(no stream files found)")
            && nothing.stderr.contains("nothing to inspect"),
        "{}",
        nothing.stderr
    );
}

#[test]
fn a_commit_journal_is_summarized_not_decoded_as_a_stream_file() {
    use status_update_manager::store::log::Landed;
    use status_update_manager::store::sys::FileId;
    use status_update_manager::store::{Journal, JOURNAL_FILE};

    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams");
    fs::create_dir_all(&streams).unwrap();
    let journal_path = dir.path().join(JOURNAL_FILE);
    {
        let (mut journal, _) = Journal::open(&journal_path).unwrap();
        for (name, bytes) in [("a", &b"first"[..]), ("b", &b"second"[..])] {
            let path = streams.join(name);
            let file = fs::File::create(&path).unwrap();
            let landed = Landed {
                path: path.as_path().into(),
                file: FileId::of(&file).expect("this filesystem keeps inode generations"),
                offset: 0,
                bytes: bytes.to_vec(),
            };
            journal.commit([&landed]).unwrap();
        }
    }
    let before = fs::read(&journal_path).unwrap();
    let table = inspect_table(std::slice::from_ref(&journal_path));
    assert_eq!(table.status.code(), Some(0), "{}", table.stderr);
    assert!(
        table.stdout.contains("commit journal")
            && table.stdout.contains("2 entries, 11 record bytes")
            && table.stdout.contains("streams/a")
            && table.stdout.contains("streams/b"),
        "{}",
        table.stdout
    );
    let json = inspect(&["--json"], std::slice::from_ref(&journal_path));
    let value: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["streams"].as_array().map(Vec::len), Some(0));
    assert_eq!(value["journals"][0]["entries"], 2);
    assert_eq!(fs::read(&journal_path).unwrap(), before, "nothing replayed");
}
