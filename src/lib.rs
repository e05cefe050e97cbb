//! A reliable status update manager on actix.
//!
//! An agent hands the manager status updates; the manager checkpoints each
//! one to an append-only file per stream, forwards it upstream in order,
//! retries with bounded exponential backoff until the update is acknowledged
//! by its status uuid, deduplicates, survives crashes by replaying its files,
//! pauses and resumes forwarding, and cleans up all streams of a framework at
//! once. It re-implements Apache Mesos's status update manager (same
//! semantics, byte-compatible files for the Mesos kinds) and changes what
//! Mesos gets wrong on purpose: typed errors instead of aborts, validation
//! before any stream is created, supervised restart with reload after a
//! storage fault, cancelled timers, bounded allocations on corrupt files.
//!
//! # Layout
//!
//! From the bottom up: each module imports only modules listed before it.
//!
//! - [`proto`]: code generated from `proto/` by `build.rs`.
//! - [`metrics`]: metric names and the handles streams record through.
//! - [`kind`]: the [`UpdateKind`](kind::UpdateKind) trait and the three kinds
//!   (`operation` and `task`, Mesos's; `native`, the service's).
//! - [`store`]: the file format, one stream's file ([`store::StreamLog`]),
//!   the committer and its journal; its "Durability" section is the one
//!   account of how a record becomes durable.
//! - [`error`]: the manager's errors, one variant per rejection.
//! - [`logs`]: what is logged when something fails or is refused (level,
//!   fields) and the rate limit of rejections' lines.
//! - [`stream`]: what a stream decides, with no I/O and no clock: state
//!   machine, replay, recovery of a file, retry schedule and bookkeeping.
//! - [`messages`]: the actix messages, one file per receiver, the
//!   direct route to a stream ([`messages::handle`]) and the count of a
//!   stream's mailbox ([`messages::mailbox`]).
//! - [`actors`]: [`StatusUpdateManager`] (routing tables, supervision), one
//!   `StreamActor` per stream (its file, queue, gate and retries) and the
//!   shared retry timer queue.
//! - [`inspect`]: offline decoding of checkpoint files.
//!
//! With the `service` feature (on by default):
//!
//! - `service`: `serve`, the gRPC front, its configuration
//!   (`service::config`), the upstream (a gRPC subscriber, `service::hub`,
//!   or NATS JetStream, `service::jetstream`), the operator's pause kept
//!   across restarts, access control, connections, `/metrics`.
//! - `bench`: the built-in load benchmark and its baselines.
//! - `cli`: the command line; `src/main.rs` only calls it.
//!
//! # Using the library
//!
//! Start a manager with a forward target and a path function, send it
//! messages, acknowledge what the upstream confirms. `examples/agent.rs` is
//! a complete actix agent; in short:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use actix::prelude::*;
//! use status_update_manager::kind::Native;
//! use status_update_manager::messages::{Acknowledge, Forward, Update};
//! use status_update_manager::{ManagerConfig, StatusUpdateManager};
//! # struct Upstream;
//! # impl Actor for Upstream { type Context = Context<Self>; }
//! # impl Handler<Forward<Native>> for Upstream { type Result = (); fn handle(&mut self, _: Forward<Native>, _: &mut Context<Self>) {} }
//! # async fn run(update: status_update_manager::proto::status_update_manager::v1::StatusUpdate) {
//! let upstream = Upstream.start().recipient();
//! let data_dir = std::path::PathBuf::from("./data");
//! let paths = Arc::new(move |id: &String| {
//!     status_update_manager::store::layout::native_stream_path(&data_dir, id)
//! });
//! let manager = StatusUpdateManager::<Native>::start(ManagerConfig::default(), upstream, paths);
//! manager.send(Update { update, checkpoint: true }).await.expect("mailbox").expect("accepted");
//! # }
//! ```

pub mod actors;
#[cfg(feature = "service")]
pub mod bench;
#[cfg(feature = "service")]
pub mod cli;
pub mod error;
pub mod inspect;
pub mod kind;
pub mod logs;
pub mod messages;
pub mod metrics;
pub mod proto;
#[cfg(feature = "service")]
pub mod service;
pub mod store;
pub mod stream;

pub use actors::manager::{ManagerConfig, StatusUpdateManager, StreamPaths};
pub use error::{AckError, RecoverError, ReplayError, UpdateError};

/// Compiles every Rust block of README.md as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
