//! ListStreams a page at a time (API.md §1): pages come in stream id order (byte order),
//! `page_size` 0 is the default (1000) and above 10 000 is refused, a `page_token` that no
//! page gave out is refused, and a stream created or ended between two pages never makes a
//! page repeat or skip another stream. The harness is `common::server`.
#![cfg(feature = "service")]

mod common;

use std::collections::BTreeSet;

use tonic::Code;

use common::server::{assert_rejected, memory_only, status, Server};
use status_update_manager::proto::status_update_manager::v1::{
    ListStreamsRequest, ListStreamsResponse, Status,
};

/// Streams created up front: three pages of 1000.
const STREAMS: usize = 2500;

/// The id of stream `i`: not zero-padded, so byte order is not numeric order (`s-10` <
/// `s-2`); a few ids are not plain ASCII words, and their tokens must round-trip too.
fn id(i: usize) -> String {
    match i {
        0 => "a b".into(),
        1 => "é-1".into(),
        2 => "z/1.2%".into(),
        _ => format!("s-{i}"),
    }
}

/// Creates memory-only stream `stream` of `framework` with one pending terminal status
/// (acknowledging it ends the stream), and returns that status.
async fn create(server: &Server, stream: &str, framework: &str) -> Status {
    let head = status("FINISHED", true);
    let sent = server
        .send(memory_only(common::status_update(stream, framework, &head)))
        .await
        .unwrap_or_else(|s| panic!("Update of {stream} failed: {s}"));
    assert!(!sent.duplicate, "{stream} is new");
    head
}

/// Ends `stream` by acknowledging its terminal head, and waits until it is gone.
async fn end(server: &Server, stream: &str, head: &Status) {
    assert!(server.ack_ok(stream, head).await, "the ack ends {stream}");
    server.wait_gone(stream).await;
}

async fn page(
    server: &Server,
    framework: &str,
    page_size: u32,
    page_token: &str,
) -> Result<ListStreamsResponse, tonic::Status> {
    server
        .client()
        .list_streams(ListStreamsRequest {
            framework_id: framework.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn page_ok(
    server: &Server,
    framework: &str,
    page_size: u32,
    page_token: &str,
) -> ListStreamsResponse {
    page(server, framework, page_size, page_token)
        .await
        .unwrap_or_else(|s| panic!("ListStreams page of {page_size} after {page_token:?}: {s}"))
}

fn ids(page: &ListStreamsResponse) -> Vec<String> {
    page.streams.iter().map(|s| s.stream_id.clone()).collect()
}

#[actix::test]
async fn pages_come_in_id_order_and_streams_that_come_and_go_between_them_skip_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let mut heads = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        heads.push(create(&server, &id(i), "").await);
    }
    let mut sorted: Vec<String> = (0..STREAMS).map(id).collect();
    sorted.sort();
    let head_of = |stream: &str| {
        let i = (0..STREAMS).find(|&i| id(i) == stream).expect("a known id");
        heads[i].clone()
    };

    // Three pages of 1000, 1000 and 500, in byte order of the ids.
    let mut token = String::new();
    for (n, chunk) in sorted.chunks(1000).enumerate() {
        let page = page_ok(&server, "", 1000, &token).await;
        assert_eq!(ids(&page), chunk, "page {n}");
        let last = n == STREAMS.div_ceil(1000) - 1;
        assert_eq!(page.next_page_token.is_empty(), last, "page {n}'s token");
        assert!(
            page.streams.iter().all(|s| s.pending == 1),
            "page {n} has the figures"
        );
        token = page.next_page_token;
    }

    // Again, with streams ending and starting between the pages.
    let first = page_ok(&server, "", 1000, "").await;
    assert_eq!(ids(&first), sorted[..1000]);
    let last_listed = sorted[999].clone();
    let not_yet_listed = sorted[1500].clone();
    // Ends: the stream the token names, one already listed and one not listed yet.
    end(&server, &last_listed, &head_of(&last_listed)).await;
    end(&server, &sorted[10], &head_of(&sorted[10])).await;
    end(&server, &not_yet_listed, &head_of(&not_yet_listed)).await;
    // Starts: one behind the cursor (not listed in this pass), one ahead of it.
    let behind = format!("{}-new", sorted[500]);
    let ahead = format!("{}-new", sorted[2000]);
    assert!(behind < last_listed && ahead > last_listed);
    create(&server, &behind, "").await;
    create(&server, &ahead, "").await;

    let mut listed = ids(&first);
    let mut token = first.next_page_token;
    let mut pages = 1;
    while !token.is_empty() {
        let page = page_ok(&server, "", 1000, &token).await;
        listed.extend(ids(&page));
        token = page.next_page_token;
        pages += 1;
        assert!(pages <= 4, "the listing ends");
    }
    let mut expected: Vec<String> = sorted
        .iter()
        .filter(|s| **s != not_yet_listed)
        .cloned()
        .chain([ahead])
        .collect();
    expected.sort();
    assert_eq!(
        listed.len(),
        listed.iter().collect::<BTreeSet<_>>().len(),
        "no stream is listed twice"
    );
    assert_eq!(
        listed, expected,
        "every stream that lived through the listing, once, in order; the one that \
         started ahead of the cursor too, not the one behind it"
    );

    server.shutdown().await;
}

#[actix::test]
async fn page_sizes_tokens_and_frameworks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    for i in 0..1100 {
        create(&server, &format!("n-{i:04}"), "").await;
    }
    for i in 0..30 {
        create(&server, &format!("f-{i:02}"), "fw").await;
    }

    // No page fields (an older client): the first 1000 streams and a token.
    let default = page_ok(&server, "", 0, "").await;
    assert_eq!(default.streams.len(), 1000);
    assert!(!default.next_page_token.is_empty());
    let rest = page_ok(&server, "", 0, &default.next_page_token).await;
    assert_eq!(rest.streams.len(), 130);
    assert_eq!(rest.next_page_token, "", "the last page has no token");

    // The largest page holds everything; one above it is refused, naming the limit.
    let all = page_ok(&server, "", 10_000, "").await;
    assert_eq!(
        (all.streams.len(), all.next_page_token.as_str()),
        (1130, "")
    );
    assert_rejected(
        page(&server, "", 10_001, "").await,
        Code::InvalidArgument,
        &["page_size", "10001", "10000"],
        "page_size over the limit",
    );

    // A token no page gave out: odd length, not hex, uppercase, not UTF-8, not a stream id.
    for (i, token) in ["abc", "zz", "6E2D", "ff", "00", "6e2d303030\u{e9}"]
        .into_iter()
        .enumerate()
    {
        assert_rejected(
            page(&server, "", 10, token).await,
            Code::InvalidArgument,
            &["page_token"],
            &format!("case {i}: token {token:?}"),
        );
    }

    // A framework's streams page on their own: 7, 7, 7, 7, 2.
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = page_ok(&server, "fw", 7, &token).await;
        sizes.push(page.streams.len());
        assert!(page.streams.iter().all(|s| s.framework_id == "fw"));
        listed.extend(ids(&page));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, [7, 7, 7, 7, 2]);
    let expected: Vec<String> = (0..30).map(|i| format!("f-{i:02}")).collect();
    assert_eq!(listed, expected);

    server.shutdown().await;
}
