//! `retry.warn_after`: a head retried past the budget is warned about once,
//! and keeps being retried (nothing is dropped).
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use status_update_manager::kind::Native;
use status_update_manager::messages::{Acknowledge, GetStream, Update};
use status_update_manager::stream::RetryPolicy;
use status_update_manager::ManagerConfig;

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[actix::test]
async fn a_head_past_the_retry_budget_is_warned_once_and_still_retried() {
    tokio::time::pause();
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let retry = RetryPolicy {
        warn_after: 2,
        ..RetryPolicy::default()
    };
    let (manager, mut rx) = start::<Native>(
        ManagerConfig {
            retry,
            ..inline_config()
        },
        native_paths(dir.path()),
    );
    let u1 = native_update("s", "ONE", false, "");
    let u2 = native_update("s", "TWO", false, "");
    manager
        .send(Update {
            update: u1.clone(),
            checkpoint: true,
        })
        .await
        .unwrap()
        .unwrap();
    manager
        .send(Update {
            update: u2.clone(),
            checkpoint: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv_or_fail(&mut rx, "first send").await.attempt, 0);

    // Gaps 10, 20, 40, 80, 160 s: attempts 1..=5, warned once when attempt 3 goes out.
    let mut gap = MIN;
    for attempt in 1..=5 {
        advance(gap + Duration::from_millis(1)).await;
        let forward = recv_or_fail(&mut rx, "retry").await;
        assert_eq!(forward.attempt, attempt);
        assert_eq!(
            forward.update.status, u1.status,
            "nothing dropped: still the head"
        );
        let warnings = lines.count("retry.warn_after");
        assert_eq!(
            warnings,
            usize::from(attempt > 2),
            "after attempt {attempt}"
        );
        gap *= 2;
    }
    let stats = manager
        .send(GetStream::<Native> { stream: "s".into() })
        .await
        .unwrap()
        .expect("the stream answers")
        .unwrap();
    assert_eq!((stats.pending, stats.attempt), (2, 5));

    // The ack works; the next head starts its own budget.
    let ack = Acknowledge::<Native> {
        stream: "s".into(),
        uuid: native_uuid(&u1),
    };
    manager.send(ack).await.unwrap().unwrap();
    assert_eq!(recv_or_fail(&mut rx, "u2").await.update.status, u2.status);
    let mut gap = MIN;
    for _ in 1..=2 {
        advance(gap + Duration::from_millis(1)).await;
        recv_or_fail(&mut rx, "u2 retry").await;
        gap *= 2;
    }
    assert_eq!(
        lines.count("retry.warn_after"),
        1,
        "u2 is within its budget"
    );
}
