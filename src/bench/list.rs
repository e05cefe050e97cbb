//! `bench --list`: right after the in-process load, while every stream is still in memory,
//! the load's streams are listed through the manager a page at a time, as `ListStreams`
//! serves them (the service's default page size): how long the first page takes, and the
//! whole listing.

use std::time::{Duration, Instant};

use actix::Addr;

use super::BenchError;
use crate::kind::Native;
use crate::messages::ListStreams;
use crate::service::grpc::LIST_PAGE_SIZE_DEFAULT;
use crate::StatusUpdateManager;

/// What listing every stream took.
#[derive(Debug, Clone, Copy)]
pub struct ListFigures {
    /// From asking for the first page until it arrived.
    pub first_page: Duration,
    /// From asking for the first page until the last one arrived.
    pub all: Duration,
    /// Pages read.
    pub pages: usize,
}

/// Lists every stream of `manager`, a page of [`LIST_PAGE_SIZE_DEFAULT`] after the other;
/// fails unless it finds `expected` streams, in id order, each once.
pub async fn list_all(
    manager: &Addr<StatusUpdateManager<Native>>,
    expected: usize,
) -> Result<ListFigures, BenchError> {
    let page_size = LIST_PAGE_SIZE_DEFAULT as usize;
    let started = Instant::now();
    let mut first_page = None;
    let mut after: Option<String> = None;
    let mut last: Option<String> = None;
    let (mut listed, mut pages) = (0, 0);
    loop {
        let query = ListStreams::<Native>::all()
            .after(after.take())
            .limit(page_size);
        let page = manager.send(query).await?;
        first_page.get_or_insert_with(|| started.elapsed());
        pages += 1;
        for stats in &page {
            if last.as_ref().is_some_and(|last| *last >= stats.stream) {
                return Err(BenchError::Load(format!(
                    "the listing gave stream {} after {}",
                    stats.stream,
                    last.unwrap_or_default()
                )));
            }
            last = Some(stats.stream.clone());
        }
        listed += page.len();
        match page.next_after {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    let all = started.elapsed();
    if listed != expected {
        return Err(BenchError::Load(format!(
            "the listing found {listed} streams, expected {expected}"
        )));
    }
    Ok(ListFigures {
        first_page: first_page.unwrap_or(all),
        all,
        pages,
    })
}
