//! An operator's pause you can see and trust (API.md, `GetStatus` and the
//! data directory's `paused` file): `GetStatus` says whether forwarding is
//! paused and why; an admin `Pause` is kept in `<data_dir>/paused`, so a
//! restarted service comes up paused, forwards nothing to a subscriber that
//! connects, and forwards again only on `Resume`, which removes the file. A
//! pause that cannot be kept, or a resume that cannot remove it, says so.
//! The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Code;

use common::server::{
    assert_forward, assert_rejected, files_closed, next_forward, next_forwards, settings, status,
    Server,
};
use status_update_manager::proto::status_update_manager::v1::{PauseRequest, ResumeRequest};
use status_update_manager::service::{self, ServeError};

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn pause_file(dir: &Path) -> std::path::PathBuf {
    dir.join(status_update_manager::service::pause::PAUSE_FILE)
}

#[actix::test]
async fn an_operators_pause_survives_a_restart_and_holds_every_forward_until_resume() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let s = server.status().await;
    assert!(
        s.paused && !s.operator_paused && !s.subscribed,
        "no subscriber yet: paused, not by an operator: {s:?}"
    );
    let a1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    let mut first = server.subscribe("first").await;
    let f = next_forward(&mut first, "a1 before the pause").await;
    assert_forward(&f, "a", &a1, &a1, 0, "a1");
    let s = server.status().await;
    assert!(
        !s.paused && s.subscribed && s.subscriber == "first",
        "{s:?}"
    );

    let before = now_unix();
    server.pause().await;
    let after = now_unix();
    assert!(pause_file(dir.path()).is_file(), "the pause is kept");
    let s = server.status().await;
    assert!(s.paused && s.operator_paused && s.subscribed, "{s:?}");
    let since = s.operator_paused_since_unix_seconds;
    assert!((before..=after).contains(&since), "{s:?}");
    // A second pause keeps the first one's time.
    server.pause().await;
    assert_eq!(
        server.status().await.operator_paused_since_unix_seconds,
        since
    );
    let b1 = status("RUNNING", false);
    server.update(common::status_update("b", "", &b1)).await;
    server.shutdown().await;
    drop(first);
    files_closed(dir.path()).await;

    // Restarted on the same directory: still paused by the operator, with no
    // subscriber and then with one.
    let server = Server::start(dir.path(), |_| {}).await;
    let s = server.status().await;
    assert!(s.paused && s.operator_paused && !s.subscribed, "{s:?}");
    assert_eq!(
        s.operator_paused_since_unix_seconds, since,
        "kept with the pause"
    );
    common::eventually(
        "both streams recovered, one update pending on each",
        || async {
            let s = server.status().await;
            (s.streams, s.pending_updates) == (2, 2)
        },
    )
    .await;
    let mut sub = server.subscribe("after the restart").await;
    let s = server.status().await;
    assert!(s.paused && s.operator_paused && s.subscribed, "{s:?}");
    // A stream arms its retry when it sends: none is armed, nothing was sent.
    for stream in ["a", "b"] {
        let info = server.info(stream).await;
        assert_eq!(info.next_retry_in_millis, -1, "{stream}: {info:?}");
    }

    server.resume().await;
    assert!(!pause_file(dir.path()).exists(), "Resume removes the file");
    // attempt 0: the first send of each by this process. Anything forwarded
    // before the resume would have reached the subscriber first, and the
    // resume's send would be attempt 1.
    let got = next_forwards(&mut sub, 2, "the heads on Resume").await;
    assert_forward(&got["a"], "a", &a1, &a1, 0, "a1 after the restart");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1 after the restart");
    server
        .assert_nothing_forwarded(&mut sub, "after the resume, the heads only")
        .await;
    let s = server.status().await;
    assert!(!s.paused && !s.operator_paused, "{s:?}");
    assert_eq!(s.operator_paused_since_unix_seconds, 0, "{s:?}");
    server.shutdown().await;
    drop(sub);
    files_closed(dir.path()).await;

    // Resumed, the next start forwards as soon as a subscriber connects.
    let server = Server::start(dir.path(), |_| {}).await;
    assert!(!server.status().await.operator_paused);
    let mut sub = server.subscribe("after the resume").await;
    let got = next_forwards(&mut sub, 2, "the heads to a subscriber").await;
    assert_forward(&got["a"], "a", &a1, &a1, 0, "a1 once more");
    assert_forward(&got["b"], "b", &b1, &b1, 0, "b1 once more");
    server.shutdown().await;
}

#[actix::test]
async fn get_status_reports_the_subscriber_the_figures_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.store.sync = "always".into()).await;
    let s = server.status().await;
    assert_eq!(
        (
            s.streams,
            s.pending_updates,
            s.sync.as_str(),
            s.version.as_str()
        ),
        (0, 0, "always", env!("CARGO_PKG_VERSION")),
        "{s:?}"
    );
    assert_eq!(
        Path::new(&s.data_dir),
        std::path::absolute(dir.path()).unwrap(),
        "{s:?}"
    );
    assert!(
        !s.subscribed && s.subscriber.is_empty() && s.subscribed_since_unix_seconds == 0,
        "{s:?}"
    );

    let a1 = status("RUNNING", false);
    let a2 = status("FINISHED", true);
    let b1 = status("RUNNING", false);
    server.update(common::status_update("a", "", &a1)).await;
    server.update(common::status_update("a", "", &a2)).await;
    server.update(common::status_update("b", "fw", &b1)).await;
    common::eventually("three updates pending over two streams", || async {
        let s = server.status().await;
        (s.streams, s.pending_updates) == (2, 3)
    })
    .await;

    let before = now_unix();
    let mut sub = server.subscribe("").await;
    let after = now_unix();
    let s = server.status().await;
    assert!(s.subscribed && !s.paused, "{s:?}");
    assert_eq!(
        s.subscriber, "(unnamed)",
        "an empty name, as the log names it"
    );
    assert!(
        (before..=after).contains(&s.subscribed_since_unix_seconds),
        "{s:?}"
    );
    next_forwards(&mut sub, 2, "the heads").await;
    server.ack_ok("a", &a1).await;
    common::eventually("a1's ack leaves two pending", || async {
        server.status().await.pending_updates == 2
    })
    .await;
    let next = next_forward(&mut sub, "a2").await;
    assert_forward(&next, "a", &a2, &a2, 0, "a2");
    assert!(server.ack_ok("a", &a2).await, "a's terminal ack ends it");
    server.wait_gone("a").await;
    let s = server.status().await;
    assert_eq!((s.streams, s.pending_updates), (1, 1), "{s:?}");

    // Without a subscriber: paused, for that reason alone.
    drop(sub);
    common::eventually("the subscriber's departure is noticed", || async {
        !server.status().await.subscribed
    })
    .await;
    let s = server.status().await;
    assert!(
        s.paused && !s.operator_paused && s.subscriber.is_empty(),
        "{s:?}"
    );
    server.shutdown().await;
}

#[actix::test]
async fn a_pause_file_that_cannot_be_read_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A directory in its place: paused or not cannot be told.
    std::fs::create_dir(pause_file(dir.path())).unwrap();
    let config = settings(dir.path(), "127.0.0.1:0", &[]).validate().unwrap();
    match service::start(config).await {
        Err(err @ ServeError::PauseFile { .. }) => {
            assert!(err.to_string().contains("paused"), "{err}")
        }
        Err(other) => panic!("expected a pause file error, got {other}"),
        Ok(_) => panic!("the service started"),
    }
}

/// `chattr FLAG DIR` (`+i`: nothing can be created in or removed from it,
/// not even by root).
fn chattr(flag: &str, dir: &Path) {
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(dir)
        .status()
        .expect("chattr (e2fsprogs) runs");
    assert!(status.success(), "chattr {flag} {}", dir.display());
}

#[actix::test]
async fn a_pause_that_cannot_be_kept_or_lifted_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut sub = server.subscribe("sub").await;

    chattr("+i", dir.path());
    let paused = server.client().pause(PauseRequest {}).await;
    chattr("-i", dir.path());
    assert_rejected(
        paused,
        Code::Unavailable,
        &["paused", "would not survive a restart"],
        "Pause with a data directory that takes no file",
    );
    assert!(!pause_file(dir.path()).exists());
    let s = server.status().await;
    assert!(s.paused && s.operator_paused, "paused all the same: {s:?}");

    server.pause().await;
    assert!(pause_file(dir.path()).is_file(), "a new Pause keeps it");
    chattr("+i", dir.path());
    let resumed = server.client().resume(ResumeRequest {}).await;
    chattr("-i", dir.path());
    assert_rejected(
        resumed,
        Code::Unavailable,
        &["stays paused", "paused"],
        "Resume with a pause file that cannot be removed",
    );
    let s = server.status().await;
    assert!(s.paused && s.operator_paused, "still paused: {s:?}");

    server.resume().await;
    let s = server.status().await;
    assert!(!s.paused && !pause_file(dir.path()).exists(), "{s:?}");
    server
        .assert_nothing_forwarded(&mut sub, "nothing was pending")
        .await;
    server.shutdown().await;
}
