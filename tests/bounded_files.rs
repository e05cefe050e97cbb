//! At most `max_open_files` stream files are open at once; the others are
//! reopened on demand, and every stream keeps working.
mod common;

use common::*;
use status_update_manager::kind::Native;
use status_update_manager::messages::{Acknowledge, GetStream, Recover, Update, UpdateOutcome};
use status_update_manager::store::layout::discover_native_streams;
use status_update_manager::store::SyncPolicy;
use status_update_manager::ManagerConfig;

/// File descriptors of this process that point into `dir`.
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

#[actix::test]
async fn streams_beyond_the_bound_reopen_their_files() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap();
    const STREAMS: usize = 200;
    const BOUND: usize = 8;
    for sync in SyncPolicy::ALL {
        let config = ManagerConfig {
            sync,
            max_open_files: BOUND,
            ..inline_config()
        };
        let (manager, mut rx) = start::<Native>(config.clone(), native_paths(&data));
        let mut updates = Vec::new();
        for i in 0..STREAMS {
            let u = native_update(&format!("{sync}-{i}"), "ONE", false, "");
            let outcome = manager
                .send(Update {
                    update: u.clone(),
                    checkpoint: true,
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(outcome, UpdateOutcome::Accepted, "{sync} stream {i}");
            assert!(
                open_files_under(&data) <= BOUND + 1,
                "{sync}: too many files open after stream {i}"
            );
            updates.push(u);
        }
        // Every stream appends again (its file was evicted long ago), then is acked.
        for (i, first) in updates.iter().enumerate() {
            let second = native_update(&first.stream_id, "TWO", false, "");
            manager
                .send(Update {
                    update: second,
                    checkpoint: true,
                })
                .await
                .unwrap()
                .unwrap();
            let ack = Acknowledge::<Native> {
                stream: first.stream_id.clone(),
                uuid: native_uuid(first),
            };
            assert!(
                !manager.send(ack).await.unwrap().unwrap().stream_terminated,
                "{sync} stream {i}"
            );
        }
        assert!(open_files_under(&data) <= BOUND + 1, "{sync}");
        while rx.try_recv().is_ok() {}

        // Restart: recovery reads every file, still within the bound.
        drop(manager);
        drop(rx);
        settle().await;
        let (manager, mut rx) = start::<Native>(config, native_paths(&data));
        let ids: Vec<String> = discover_native_streams(&data)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.starts_with(&format!("{sync}-")))
            .collect();
        assert_eq!(ids.len(), STREAMS);
        let state = manager
            .send(Recover::<Native> { ids, strict: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.streams.values().filter(|s| s.is_some()).count(),
            STREAMS
        );
        assert!(
            open_files_under(&data) <= BOUND + 1,
            "{sync}: after recovery"
        );
        let stats = manager
            .send(GetStream::<Native> {
                stream: format!("{sync}-7"),
            })
            .await
            .unwrap()
            .expect("the stream answers")
            .unwrap();
        assert_eq!(
            (stats.pending, stats.received, stats.acknowledged),
            (1, 2, 1)
        );
        let mut heads = 0;
        settle().await;
        while let Ok(f) = rx.try_recv() {
            assert_eq!(f.update.status.unwrap().state, "TWO");
            heads += 1;
        }
        assert_eq!(heads, STREAMS, "{sync}: each recovered head forwarded once");
    }
}
