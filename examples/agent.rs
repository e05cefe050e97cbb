//! An actix agent that embeds the status update manager.
//!
//! The agent recovers whatever an earlier run left in its data directory,
//! then reports three statuses of one task. The upstream (here an actor in
//! the same process, standing in for a controller) receives each forward and
//! acknowledges it through the forward itself (`Forward::acknowledge`, which
//! goes straight to the stream that sent it: the upstream needs no address of
//! the manager). The stream forwards the next status only after the previous
//! one was acknowledged, and the terminal status ends the stream.
//!
//! Run it with `cargo run --example agent [DATA_DIR]`; run it twice with the
//! same directory and kill the first run midway to see recovery re-send.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use status_update_manager::kind::Native;
use status_update_manager::messages::{Forward, ListStreams, Recover, Update};
use status_update_manager::proto::status_update_manager::v1::{Status, StatusUpdate};
use status_update_manager::store::layout::{discover_native_streams, native_stream_path};
use status_update_manager::{ManagerConfig, StatusUpdateManager};
use tokio::sync::oneshot;

/// The upstream: prints each forward and acknowledges it.
struct Upstream {
    /// Fired when a terminal status was acknowledged.
    done: Option<oneshot::Sender<()>>,
}

impl Actor for Upstream {
    type Context = Context<Self>;
}

impl Handler<Forward<Native>> for Upstream {
    type Result = ();

    fn handle(&mut self, forward: Forward<Native>, ctx: &mut Context<Self>) {
        let Some(status) = forward.update.status.as_ref() else {
            return;
        };
        let latest = forward
            .update
            .latest_status
            .as_ref()
            .map_or("-", |s| s.state.as_str());
        println!(
            "upstream <- stream {} state {} (latest {latest}, attempt {})",
            forward.stream, status.state, forward.attempt
        );
        // A forward carries its stream's ack port: the ack goes straight to
        // the stream that sent it, with the answers the manager would give.
        let uuid = forward.uuid();
        ctx.spawn(
            forward
                .acknowledge()
                .into_actor(self)
                .map(move |reply, act, _| match reply {
                    Ok(outcome) if outcome.stream_terminated => {
                        println!("upstream -> ack {uuid}: stream ended");
                        if let Some(done) = act.done.take() {
                            let _ = done.send(());
                        }
                    }
                    Ok(_) => println!("upstream -> ack {uuid}"),
                    // A head left unacknowledged is sent again after its gap.
                    Err(err) => eprintln!("ack failed: {err}"),
                }),
        );
    }
}

fn status(state: &str, terminal: bool) -> Status {
    Status {
        uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
        state: state.to_string(),
        terminal,
        ..Status::default()
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join(format!("sum-agent-{}", std::process::id())),
        PathBuf::from,
    );
    println!("data dir: {}", data_dir.display());

    let (done_tx, done_rx) = oneshot::channel();
    let upstream = Upstream {
        done: Some(done_tx),
    }
    .start();
    let paths_dir = data_dir.clone();
    let paths = Arc::new(move |id: &String| native_stream_path(&paths_dir, id));
    let config = ManagerConfig {
        remove_finished: true,
        ..ManagerConfig::default()
    };
    let manager = StatusUpdateManager::<Native>::start(config, upstream.recipient(), paths);

    // Recover what an earlier run left behind: its pending heads are re-sent.
    let ids = discover_native_streams(&data_dir)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let recovered = manager
        .send(Recover::<Native> { ids, strict: true })
        .await??;
    println!(
        "recovered {} stream(s), {} error(s)",
        recovered.streams.len(),
        recovered.errors
    );

    for (state, terminal) in [("STARTING", false), ("RUNNING", false), ("FINISHED", true)] {
        let update = StatusUpdate {
            stream_id: "task-1".into(),
            framework_id: "framework-a".into(),
            status: Some(status(state, terminal)),
            latest_status: None,
        };
        let outcome = manager
            .send(Update {
                update,
                checkpoint: true,
            })
            .await??;
        println!("agent -> {state}: {outcome:?} (checkpointed)");
    }

    done_rx.await?;
    let left = manager.send(ListStreams::<Native>::all()).await?;
    println!("streams left in memory: {}", left.len());
    Ok(())
}
