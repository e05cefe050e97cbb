//! Table-driven tests of the pure stream state machine (no runtime needed).

use tokio::time::Instant;

use super::*;
use crate::kind::Native;
use crate::proto::status_update_manager::v1::{Status, StatusUpdate};

fn update(n: u8, terminal: bool, framework: &str) -> (StatusUpdate, StatusUuid) {
    let uuid = StatusUuid::from_bytes([n; 16]);
    let update = StatusUpdate {
        stream_id: "s".into(),
        framework_id: framework.into(),
        status: Some(Status {
            uuid: uuid.as_bytes().to_vec(),
            state: format!("S{n}"),
            terminal,
            ..Status::default()
        }),
        latest_status: None,
    };
    (update, uuid)
}

fn stream() -> StreamState<Native> {
    StreamState::new("s".into(), true, Some("fw".into()))
}

#[test]
fn update_decisions() {
    let now = Instant::now();
    let mut s = stream();
    let (u1, id1) = update(1, false, "fw");
    assert_eq!(
        s.check_update(&u1, id1, true).unwrap(),
        UpdateDecision::Accept
    );
    assert_eq!(
        s.apply_update(&u1, id1, now).unwrap(),
        UpdateEffect { forward_head: true }
    );
    let (u2, id2) = update(2, false, "fw");
    assert_eq!(
        s.apply_update(&u2, id2, now).unwrap(),
        UpdateEffect {
            forward_head: false
        }
    );

    let cases: Vec<(&str, StatusUpdate, StatusUuid, bool, &str)> = vec![
        ("received", u1.clone(), id1, true, "dup-received"),
        (
            "checkpoint flag",
            update(3, false, "fw").0,
            update(3, false, "fw").1,
            false,
            "checkpoint",
        ),
        (
            "other framework",
            update(3, false, "other").0,
            update(3, false, "fw").1,
            true,
            "framework",
        ),
        (
            "no framework",
            update(3, false, "").0,
            update(3, false, "fw").1,
            true,
            "framework",
        ),
        (
            "new",
            update(3, false, "fw").0,
            update(3, false, "fw").1,
            true,
            "accept",
        ),
    ];
    for (i, (name, u, id, checkpoint, want)) in cases.into_iter().enumerate() {
        let got = match s.check_update(&u, id, checkpoint) {
            Ok(UpdateDecision::Accept) => "accept",
            Ok(UpdateDecision::Duplicate(Duplicate::AlreadyReceived)) => "dup-received",
            Ok(UpdateDecision::Duplicate(Duplicate::AlreadyAcknowledged)) => "dup-acked",
            Err(UpdateError::CheckpointMismatch { .. }) => "checkpoint",
            Err(UpdateError::FrameworkMismatch { .. }) => "framework",
            Err(other) => panic!("case {i} ({name}): unexpected {other}"),
        };
        assert_eq!(got, want, "case {i} ({name})");
    }
}

#[test]
fn ack_rules_and_latest_status() {
    let now = Instant::now();
    let mut s = stream();
    let (u1, id1) = update(1, false, "fw");
    let (u2, id2) = update(2, true, "fw");
    let (u3, id3) = update(3, false, "fw");
    s.apply_update(&u1, id1, now).unwrap();
    s.apply_update(&u2, id2, now).unwrap();
    s.apply_update(&u3, id3, now).unwrap();

    // The forward carries the newest status as latest_status.
    let (head, fwd) = s.forward_copy().unwrap().unwrap();
    assert_eq!(head, id1);
    assert_eq!(fwd.latest_status.unwrap().state, "S3");
    assert!(
        s.head()
            .unwrap()
            .update::<Native>()
            .unwrap()
            .latest_status
            .is_none(),
        "stored copy never carries it"
    );

    assert!(matches!(
        s.check_ack(id2),
        Err(AckError::UnexpectedAck { .. })
    ));
    assert!(s.check_ack(id1).is_ok());
    let effect = s.apply_ack().unwrap();
    assert_eq!(
        effect,
        AckEffect {
            terminated: false,
            dropped: 0,
            forward_head: true
        }
    );
    assert!(matches!(
        s.check_ack(id1),
        Err(AckError::DuplicateAck { .. })
    ));

    // Acking the terminal head drops what is queued behind it.
    let effect = s.apply_ack().unwrap();
    assert_eq!(
        effect,
        AckEffect {
            terminated: true,
            dropped: 1,
            forward_head: false
        }
    );
    assert!(s.terminated());
    assert!(matches!(
        s.check_ack(id3),
        Err(AckError::NothingPending { .. })
    ));
    assert!(matches!(
        s.check_ack(id2),
        Err(AckError::DuplicateAck { .. })
    ));
    assert!(matches!(
        s.check_update(&update(4, false, "fw").0, update(4, false, "fw").1, true),
        Err(UpdateError::StreamClosing { .. })
    ));
    assert!(s.apply_ack().is_none());
}

#[test]
fn uuid_hashes_spread_over_the_low_bits() {
    use std::hash::BuildHasher;
    let hasher = std::hash::BuildHasherDefault::<super::UuidHasher>::default();
    // Sequential uuids differ in one or two bytes only; they must still use
    // nearly every bucket of a 1024-slot table.
    let buckets: std::collections::HashSet<u64> = (1..=1000u128)
        .map(|n| hasher.hash_one(StatusUuid::from_u128(n)) & 1023)
        .collect();
    assert!(
        buckets.len() > 550,
        "only {} of 1024 buckets used",
        buckets.len()
    );
}

#[test]
fn an_update_kept_as_it_arrived_is_forwarded_as_its_record_would_decode() {
    let now = Instant::now();
    let mut s = stream();
    let (u1, id1) = update(1, false, "fw");
    s.apply_update(&u1, id1, now).unwrap();
    let decoded = s.forward_copy().unwrap().unwrap();
    // As it arrived (an agent's update never sets latest_status).
    s.keep_arrived(id1, u1.clone());
    let kept = s.forward_copy().unwrap().unwrap();
    assert_eq!(kept, decoded);
    assert_eq!(
        kept.1.latest_status, u1.status,
        "its own status is the newest"
    );
    assert_eq!(
        s.forward_copy().unwrap().unwrap(),
        decoded,
        "a resend decodes the head again"
    );

    // Not the newest queued update: not kept.
    let (u2, id2) = update(2, false, "fw");
    s.keep_arrived(id2, u2.clone());
    assert_eq!(s.forward_copy().unwrap().unwrap(), decoded);

    // Queued behind the head: kept for the head's latest_status, and
    // forwarded from the copy once it is the head.
    s.apply_update(&u2, id2, now).unwrap();
    let behind = s.forward_copy().unwrap().unwrap();
    s.keep_arrived(id2, u2.clone());
    assert_eq!(s.forward_copy().unwrap().unwrap(), behind);
    assert_eq!(
        behind.1.latest_status, u2.status,
        "the newest queued status"
    );
    s.check_ack(id1).unwrap();
    s.apply_ack().unwrap();
    let next = s.forward_copy().unwrap().unwrap();
    assert_eq!(next.0, id2);
    assert_eq!(next.1.latest_status, u2.status);
    s.keep_arrived(id2, u2.clone());
    let (u3, id3) = update(3, false, "fw");
    s.apply_update(&u3, id3, now).unwrap();
    // A copy kept for an update no longer the newest is not used: the
    // head's latest_status is the newest's, decoded.
    let (head, fwd) = s.forward_copy().unwrap().unwrap();
    assert_eq!(head, id2);
    assert_eq!(fwd.latest_status, u3.status);
    let mut without = stream();
    for (u, id) in [(&u2, id2), (&u3, id3)] {
        without.apply_update(u, id, now).unwrap();
    }
    assert_eq!((head, fwd), without.forward_copy().unwrap().unwrap());
}

#[test]
fn a_forward_takes_the_kept_update_instead_of_decoding_its_record() {
    // Live, the record is encoded from the kept update, so the two are the
    // same; a kept copy that differs shows which one a forward used.
    let marked = |u: &StatusUpdate| {
        let mut u = u.clone();
        u.status.as_mut().unwrap().message = "kept".into();
        u
    };
    let now = Instant::now();
    let mut s = stream();
    let (u1, id1) = update(1, false, "fw");
    s.apply_update(&u1, id1, now).unwrap();
    s.keep_arrived(id1, marked(&u1));
    let (_, head) = s.forward_copy().unwrap().unwrap();
    assert_eq!(
        head.status.unwrap().message,
        "kept",
        "the head as it arrived"
    );

    let (u2, id2) = update(2, false, "fw");
    s.apply_update(&u2, id2, now).unwrap();
    s.keep_arrived(id2, marked(&u2));
    let (_, head) = s.forward_copy().unwrap().unwrap();
    assert_eq!(head.status.unwrap().message, "", "the head, decoded");
    assert_eq!(
        head.latest_status.unwrap().message,
        "kept",
        "the newest's status as it arrived"
    );
    s.apply_ack().unwrap();
    let (uuid, head) = s.forward_copy().unwrap().unwrap();
    assert_eq!(uuid, id2);
    assert_eq!(head.status.unwrap().message, "kept");
}
