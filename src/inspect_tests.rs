//! Table-driven tests of offline inspection: outcomes, JSON shape, kind detection,
//! directory expansion.

use super::*;
use crate::kind::{encode_framed, RecordRef};
use crate::proto::status_update_manager::v1::{Status, StatusUpdate};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn native(n: u8, terminal: bool) -> StatusUpdate {
    StatusUpdate {
        stream_id: "s".into(),
        framework_id: "fw".into(),
        status: Some(Status {
            uuid: vec![n; 16],
            state: format!("S{n}"),
            terminal,
            ..Status::default()
        }),
        latest_status: None,
    }
}

fn file(records: &[RecordRef<'_, StatusUpdate>]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        assert_eq!(encode_framed::<Native>(*record, &mut out), Ok(()));
    }
    out
}

fn uuid(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

/// outcome, tail, valid_bytes, [updates, acknowledged, pending], terminated
#[derive(Debug, PartialEq)]
struct Want(Outcome, TailState, u64, [usize; 3], bool);

#[test]
fn outcomes_follow_the_recovery_table() {
    let (u1, u2) = (native(1, false), native(2, true));
    let one = file(&[RecordRef::Update(&u1)]);
    let acked = file(&[RecordRef::Update(&u1), RecordRef::Ack(uuid(1))]);
    let ended = file(&[
        RecordRef::Update(&u1),
        RecordRef::Ack(uuid(1)),
        RecordRef::Update(&u2),
        RecordRef::Ack(uuid(2)),
    ]);
    let stray_ack = file(&[RecordRef::Ack(uuid(9))]);
    let late_ack = [acked.clone(), stray_ack.clone()].concat();
    let torn = [one.clone(), vec![7, 0, 0]].concat();
    let corrupt = [one.clone(), vec![3, 0, 0, 0, 0xff, 0xff, 0xff]].concat();
    let n = |v: &Vec<u8>| v.len() as u64;
    use Outcome as O;
    use TailState as T;
    let cases: [(&str, &[u8], Want); 10] = [
        ("empty", &[], Want(O::Empty, T::Clean, 0, [0, 0, 0], false)),
        (
            "torn only",
            &[5, 0],
            Want(O::Empty, T::Partial, 0, [0, 0, 0], false),
        ),
        (
            "zero length",
            &[0; 4],
            Want(O::Empty, T::Corrupt, 0, [0, 0, 0], false),
        ),
        (
            "one update",
            &one,
            Want(O::Ok, T::Clean, n(&one), [1, 0, 1], false),
        ),
        (
            "acked",
            &acked,
            Want(O::Ok, T::Clean, n(&acked), [1, 1, 0], false),
        ),
        (
            "terminated",
            &ended,
            Want(O::Ok, T::Clean, n(&ended), [2, 2, 0], true),
        ),
        (
            "torn tail",
            &torn,
            Want(O::Ok, T::Partial, n(&one), [1, 0, 1], false),
        ),
        (
            "corrupt",
            &corrupt,
            Want(O::Ok, T::Corrupt, n(&one), [1, 0, 1], false),
        ),
        (
            "stray ack",
            &stray_ack,
            Want(O::Error, T::Corrupt, 0, [0, 0, 0], false),
        ),
        (
            "late ack",
            &late_ack,
            Want(O::Error, T::Corrupt, n(&acked), [1, 1, 0], false),
        ),
    ];
    for (i, (name, contents, want)) in cases.into_iter().enumerate() {
        let r = inspect_bytes(Path::new("f"), InspectKind::Native, contents);
        let acked = r.updates.iter().filter(|u| u.acknowledged).count();
        let got = Want(
            r.outcome,
            r.tail,
            r.valid_bytes,
            [r.updates.len(), acked, r.pending],
            r.terminated,
        );
        assert_eq!(got, want, "case {i} ({name}): {r:?}");
        assert_eq!(r.file_bytes, contents.len() as u64, "case {i} ({name})");
        let is_error = r.outcome == O::Error;
        assert_eq!(r.error.is_some(), is_error, "case {i} ({name})");
        let corrupt = r.tail == T::Corrupt && !is_error;
        assert_eq!(r.corrupt.is_some(), corrupt, "case {i} ({name})");
    }
}

#[test]
fn json_shape_is_the_api_one() -> TestResult {
    let u1 = native(1, false);
    let report = inspect_bytes(
        Path::new("d/f"),
        InspectKind::Native,
        &file(&[RecordRef::Update(&u1)]),
    );
    let json = serde_json::to_value(&report)?;
    let want = serde_json::json!({
        "path": "d/f", "kind": "native", "outcome": "ok", "valid_bytes": 43, "file_bytes": 43,
        "tail": "clean", "framework_id": "fw", "terminated": false, "pending": 1,
        "updates": [{ "uuid": "01010101-0101-0101-0101-010101010101", "state": "S1",
                      "acknowledged": false }],
    });
    assert_eq!(json, want);
    let stray = inspect_bytes(
        Path::new("f"),
        InspectKind::Native,
        &file(&[RecordRef::Ack(uuid(3))]),
    );
    let json = serde_json::to_value(&stray)?;
    assert_eq!(json["outcome"], "error");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing is pending")),
        "{json}"
    );
    Ok(())
}

#[test]
fn kind_detection() {
    let u1 = native(1, false);
    let native_file = file(&[RecordRef::Update(&u1)]);
    let cases: [(&str, &[u8], InspectKind); 5] = [
        ("x/operation.updates", &native_file, InspectKind::Operation),
        ("x/task.updates", &native_file, InspectKind::Task),
        ("x/a.updates", &native_file, InspectKind::Native),
        ("x/a.updates", &[], InspectKind::Native),
        ("x/a.updates", &[0xff; 9], InspectKind::Native),
    ];
    for (i, (path, contents, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            detect_kind(Path::new(path), contents),
            want,
            "case {i}: {path}"
        );
    }
    for kind in InspectKind::ALL {
        assert_eq!(kind.as_str().parse::<InspectKind>(), Ok(kind));
    }
    assert!("Task".parse::<InspectKind>().is_err());
}

#[test]
fn missing_file_is_reported_not_failed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("operation.updates");
    let report = inspect_paths(&[path], None)?;
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].outcome, Outcome::Missing);
    assert_eq!(report.streams[0].kind, InspectKind::Operation);
    Ok(())
}

#[test]
fn directories_expand_per_layout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let op = Uuid::from_u128(0x1234);
    let paths = [
        crate::store::layout::native_stream_path(root, "task"),
        crate::store::layout::native_stream_path(root, "a/b"),
        root.join("meta/operations")
            .join(op.to_string())
            .join(OPERATION_FILE),
        root.join("unit").join(op.to_string()),
        root.join("meta/tasks/t1").join(TASK_FILE),
        root.join("meta/other.updates"),
    ];
    for path in &paths {
        fs::create_dir_all(path.parent().ok_or("no parent")?)?;
        fs::write(path, b"")?;
    }
    let kinds =
        |kind| -> Result<Vec<(PathBuf, Option<InspectKind>)>, InspectError> { expand(root, kind) };
    let all = kinds(None)?;
    let want: Vec<_> = [
        (0, InspectKind::Native),
        (1, InspectKind::Native),
        (2, InspectKind::Operation),
        (3, InspectKind::Operation),
        (4, InspectKind::Task),
    ]
    .into_iter()
    .map(|(i, k)| (paths[i].clone(), Some(k)))
    .collect();
    let mut got = all.clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want_sorted);
    assert_eq!(kinds(Some(InspectKind::Native))?.len(), 2);
    assert_eq!(kinds(Some(InspectKind::Operation))?, want[2..4].to_vec());
    // Without the native claim, `streams/task.updates` is a task file by its name.
    let tasks = kinds(Some(InspectKind::Task))?;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    Ok(())
}
