//! Rejections over gRPC (API.md §1): each invalid request gets its status
//! code (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
//! RESOURCE_EXHAUSTED) and a message naming the stream, the uuid and what
//! was expected, and a rejected update changes nothing under the data
//! directory. The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use tonic::Code;

use common::server::{assert_rejected, memory_only, status, uuid_of, Server};
use status_update_manager::proto::status_update_manager::v1::UpdateRequest;

#[actix::test]
async fn invalid_arguments_are_rejected_with_invalid_argument_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| s.server.max_payload_bytes = 16).await;
    let s = "stream-a";
    // An existing stream, so that the rejections below are not "unknown stream".
    let ok = status("RUNNING", false);
    server.update(common::status_update(s, "", &ok)).await;

    let with_uuid = |uuid: Vec<u8>| {
        let mut st = status("RUNNING", false);
        st.uuid = uuid;
        common::status_update(s, "", &st)
    };
    let bad_uuids: [(&str, Vec<u8>, &str); 4] = [
        ("missing uuid", Vec::new(), "0 bytes"),
        ("15-byte uuid", vec![7; 15], "15 bytes"),
        ("17-byte uuid", vec![7; 17], "17 bytes"),
        ("all-zero uuid", vec![0; 16], "all zero"),
    ];
    for (what, uuid, reason) in &bad_uuids {
        server
            .assert_update_rejected(
                common::checkpointed(with_uuid(uuid.clone())),
                Code::InvalidArgument,
                &[s, reason],
                &format!("Update with a {what}"),
            )
            .await;
        // The same for a stream that does not exist yet: no stream, no file.
        let mut fresh = with_uuid(uuid.clone());
        fresh.stream_id = "fresh".into();
        server
            .assert_update_rejected(
                common::checkpointed(fresh),
                Code::InvalidArgument,
                &["fresh", reason],
                &format!("Update of a new stream with a {what}"),
            )
            .await;
        assert_rejected(
            server.ack_raw(s, uuid.clone()).await,
            Code::InvalidArgument,
            &[s, reason],
            &format!("Acknowledge with a {what}"),
        );
    }

    let empty_state = status("", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(s, "", &empty_state)),
            Code::InvalidArgument,
            &[s, &uuid_of(&empty_state), "state"],
            "Update with an empty state",
        )
        .await;

    let mut no_status = common::status_update(s, "", &ok);
    no_status.status = None;
    server
        .assert_update_rejected(
            common::checkpointed(no_status),
            Code::InvalidArgument,
            &[s, "no status"],
            "Update without a status",
        )
        .await;

    server
        .assert_update_rejected(
            UpdateRequest {
                update: None,
                memory_only: false,
            },
            Code::InvalidArgument,
            &["update"],
            "UpdateRequest without an update",
        )
        .await;

    let fresh = status("RUNNING", false);
    let mut with_latest = common::status_update(s, "", &fresh);
    with_latest.latest_status = Some(ok.clone());
    server
        .assert_update_rejected(
            common::checkpointed(with_latest),
            Code::InvalidArgument,
            &[s, &uuid_of(&fresh), "latest_status"],
            "Update with latest_status set",
        )
        .await;

    let long = "x".repeat(257);
    let max = "y".repeat(256);
    for (what, id, reason) in [
        ("an empty stream_id", "", "empty"),
        ("a 257-byte stream_id", long.as_str(), "257 bytes"),
        ("a stream_id with NUL", "a\0b", "NUL"),
    ] {
        let st = status("RUNNING", false);
        server
            .assert_update_rejected(
                common::checkpointed(common::status_update(id, "", &st)),
                Code::InvalidArgument,
                &[&uuid_of(&st), reason],
                &format!("Update with {what}"),
            )
            .await;
        assert_rejected(
            server.ack(id, &st).await,
            Code::InvalidArgument,
            &[&uuid_of(&st), reason],
            &format!("Acknowledge with {what}"),
        );
        assert_rejected(
            server.get(id).await,
            Code::InvalidArgument,
            &[reason],
            &format!("GetStream with {what}"),
        );
    }
    // 256 bytes is allowed.
    server
        .update(common::status_update(&max, "", &status("RUNNING", false)))
        .await;

    // Just over the limit, and far over it (past the limit plus the 64 KiB
    // the server allows for the rest of the message).
    for len in [17, 200 * 1024] {
        let mut big = status("RUNNING", false);
        big.payload = vec![1; len];
        server
            .assert_update_rejected(
                common::checkpointed(common::status_update(s, "", &big)),
                Code::InvalidArgument,
                &[s, &uuid_of(&big), &format!("{len} bytes"), "16"],
                &format!("Update with a payload of {len} bytes over server.max_payload_bytes"),
            )
            .await;
    }
    let mut at_limit = status("RUNNING", false);
    at_limit.payload = vec![1; 16];
    server.update(common::status_update(s, "", &at_limit)).await;

    assert_rejected(
        server.cleanup("").await,
        Code::InvalidArgument,
        &["framework_id"],
        "Cleanup with an empty framework_id",
    );

    server.shutdown().await;
}

#[actix::test]
async fn not_found_already_exists_and_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let u1 = status("RUNNING", false);
    let u2 = status("RUNNING", false);

    // NOT_FOUND
    assert_rejected(
        server.ack("nowhere", &u1).await,
        Code::NotFound,
        &["nowhere", &uuid_of(&u1)],
        "ack on a stream never created",
    );
    assert_rejected(
        server.get("nowhere").await,
        Code::NotFound,
        &["nowhere"],
        "GetStream of a stream never created",
    );

    // ALREADY_EXISTS, checked before "not the head" and "nothing pending".
    let s = "acked";
    server.update(common::status_update(s, "fw", &u1)).await;
    server.update(common::status_update(s, "fw", &u2)).await;
    assert!(!server.ack_ok(s, &u1).await);
    assert_rejected(
        server.ack(s, &u1).await,
        Code::AlreadyExists,
        &[s, &uuid_of(&u1)],
        "re-ack of u1 while u2 is the head",
    );
    assert!(!server.ack_ok(s, &u2).await);
    assert_rejected(
        server.ack(s, &u2).await,
        Code::AlreadyExists,
        &[s, &uuid_of(&u2)],
        "re-ack of u2 with nothing pending",
    );

    // FAILED_PRECONDITION: ack with nothing pending, ack of a non-head uuid.
    let other = status("RUNNING", false);
    assert_rejected(
        server.ack(s, &other).await,
        Code::FailedPrecondition,
        &[s, &uuid_of(&other), "nothing is pending"],
        "ack with nothing pending",
    );
    let h1 = status("RUNNING", false);
    let h2 = status("RUNNING", false);
    server.update(common::status_update(s, "fw", &h1)).await;
    server.update(common::status_update(s, "fw", &h2)).await;
    assert_rejected(
        server.ack(s, &h2).await,
        Code::FailedPrecondition,
        &[s, &uuid_of(&h2), &uuid_of(&h1)],
        "ack of the second update instead of the head",
    );
    assert_rejected(
        server.ack(s, &other).await,
        Code::FailedPrecondition,
        &[s, &uuid_of(&other), &uuid_of(&h1)],
        "ack of an unknown uuid",
    );

    // FAILED_PRECONDITION: framework id differs.
    for (what, framework) in [("another framework", "other-fw"), ("no framework", "")] {
        let st = status("RUNNING", false);
        server
            .assert_update_rejected(
                common::checkpointed(common::status_update(s, framework, &st)),
                Code::FailedPrecondition,
                &[s, &uuid_of(&st), "fw"],
                &format!("update with {what} on a stream of 'fw'"),
            )
            .await;
    }
    let nofw = "no-framework";
    server
        .update(common::status_update(nofw, "", &status("RUNNING", false)))
        .await;
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(nofw, "fw", &st)),
            Code::FailedPrecondition,
            &[nofw, &uuid_of(&st), "fw"],
            "update with a framework on a stream without one",
        )
        .await;

    // FAILED_PRECONDITION: memory_only differs, both ways.
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            memory_only(common::status_update(s, "fw", &st)),
            Code::FailedPrecondition,
            &[s, &uuid_of(&st), "checkpoint"],
            "memory_only update on a checkpointed stream",
        )
        .await;
    let mem = "in-memory";
    let before = common::snapshot(dir.path());
    let r = server
        .send(memory_only(common::status_update(mem, "", &u1)))
        .await
        .unwrap();
    assert!(!r.duplicate);
    assert_eq!(
        common::snapshot(dir.path()),
        before,
        "a memory_only stream has no file"
    );
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(mem, "", &st)),
            Code::FailedPrecondition,
            &[mem, &uuid_of(&st), "checkpoint"],
            "checkpointed update on a memory_only stream",
        )
        .await;

    // FAILED_PRECONDITION: a checkpoint file exists for a stream not in memory.
    let stale = "stale/../file";
    let path = server.path(stale);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"left over").unwrap();
    let st = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(stale, "", &st)),
            Code::FailedPrecondition,
            &[stale, "already exists"],
            "update of a stream whose file exists but is not in memory",
        )
        .await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"left over",
        "the file is untouched"
    );
    assert_rejected(
        server.get(stale).await,
        Code::NotFound,
        &[stale],
        "the stream was not created",
    );

    server.shutdown().await;
}

#[actix::test]
async fn limits_are_rejected_with_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |s| {
        s.limits.max_pending_per_stream = 2;
        s.limits.max_streams = 2;
    })
    .await;
    let (a, b, c) = ("a", "b", "c");
    let a1 = status("RUNNING", false);
    let a2 = status("RUNNING", false);
    server.update(common::status_update(a, "", &a1)).await;
    server.update(common::status_update(a, "", &a2)).await;
    let a3 = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(a, "", &a3)),
            Code::ResourceExhausted,
            &[a, &uuid_of(&a3), "max_pending_per_stream"],
            "a third pending update with max_pending_per_stream = 2",
        )
        .await;
    // A duplicate of a queued update is still a duplicate, not a rejection.
    let dup = server
        .send(common::checkpointed(common::status_update(a, "", &a2)))
        .await
        .unwrap();
    assert!(dup.duplicate);
    // Room again once the head is acknowledged.
    assert!(!server.ack_ok(a, &a1).await);
    server.update(common::status_update(a, "", &a3)).await;

    server
        .update(common::status_update(b, "", &status("RUNNING", false)))
        .await;
    let c1 = status("RUNNING", false);
    server
        .assert_update_rejected(
            common::checkpointed(common::status_update(c, "", &c1)),
            Code::ResourceExhausted,
            &[c, "max_streams"],
            "a third stream with max_streams = 2",
        )
        .await;
    assert!(!server.path(c).exists());
    server
        .assert_update_rejected(
            memory_only(common::status_update(c, "", &c1)),
            Code::ResourceExhausted,
            &[c, "max_streams"],
            "a third memory_only stream with max_streams = 2",
        )
        .await;
    assert_rejected(
        server.get(c).await,
        Code::NotFound,
        &[c],
        "stream c was not created",
    );

    server.shutdown().await;
}
