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
//! - [`kind`]: the [`UpdateKind`](kind::UpdateKind) trait (stream id, update
//!   and record types and their rules) and the three kinds: `operation` and
//!   `task` (Mesos's messages) and `native` (the service's own).
//! - [`messages`]: the actix messages, one file per receiving actor:
//!   `Update`, `Acknowledge`, `Recover`, `Cleanup`, `Pause`, `Resume`,
//!   `ListStreams`, `GetStream`, `GetHandle` for the manager; `Forward` for
//!   the upstream.
//! - [`actors::manager`]: [`StatusUpdateManager`], the actor an agent talks
//!   to. It owns only the routing tables (stream → actor, framework →
//!   streams), validates updates before creating streams, and supervises
//!   one stream actor per stream.
//! - [`actors::stream`]: `StreamActor`, one per stream. It owns the stream's
//!   file, queue and retry deadline, answers the caller once the record is
//!   durable, and restarts from its file after a storage fault.
//! - [`actors::timers`]: one timer queue per manager that wakes a stream
//!   when its retry is due (no tokio timer per stream).
//! - [`messages::handle`]: requests that skip the manager's hop: a
//!   `StreamHandle` sends a known stream its updates and acks, and
//!   `Forward::acknowledge` acks a forward at the stream that sent it (the
//!   in-process upstream's path).
//! - [`stream`]: what a stream decides, with no I/O and no clock: the state
//!   machine (a queued update is kept as its record's bytes), replay of a
//!   file through the same transitions, recovery of one file (and of many
//!   on every core), and the retry schedule.
//! - [`store`]: the file format and files: framing (u32 LE length + record),
//!   `StreamLog` (one stream's file: create, append, sync, truncate,
//!   remove), the path layout of native streams, injected faults for tests.
//!   Group commit (`store::commit`) makes many writes share one sync (on a
//!   committer thread, which also does the writes: the actors only stage
//!   them); under `batch` a round over many files syncs one sequential
//!   commit journal (`store::journal`, replayed into the stream files at
//!   start) instead of the filesystem, and a full journal is checkpointed
//!   (rotated, then one `syncfs` on a thread of its own while rounds go on
//!   into the new one); an LRU (`store::files`) bounds the
//!   open files (`serve` splits `ulimit -n` between that bound and the
//!   agents' connections); `store::dirs` says which directories a new
//!   file syncs; `store::lock` keeps a second `serve` off a data directory.
//! - [`error`]: the manager's errors, one variant per rejection.
//! - [`service`]: `serve`: the gRPC front (`grpc`), the subscriber hub that
//!   is the manager's upstream (`hub`), access control (`auth`: bearer
//!   token, TLS identity), the connections (`accept`: their share of the
//!   descriptors, keepalive), the bound on request bytes being received
//!   (`inflight`), Prometheus's `/metrics` (`scrape`), startup
//!   recovery and graceful shutdown. The gRPC server and `/metrics` run on
//!   a thread of their own; the actors stay on the actix System's.
//! - [`config`]: layered configuration (embedded defaults, file, `SUM__*`
//!   environment, flags) and its validation.
//! - [`metrics`]: Prometheus metric names and the handles the streams
//!   record through ([`metrics::StreamMetrics`]).
//! - [`inspect`]: offline decoding of checkpoint files (`inspect` command).
//! - [`bench`](mod@bench): the built-in load benchmark (`bench` command), its raw
//!   baselines, and the lean gRPC client its `--via grpc` load calls through.
//! - [`cli`]: the command line; `src/main.rs` only calls it.
//! - [`proto`]: code generated from `proto/` by `build.rs` (protox + prost +
//!   tonic).
//!
//! `service`, `config`, `bench` and `cli` need the `service` feature (on by
//! default); the rest is the library alone.
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
pub mod messages;
pub mod metrics;
pub mod proto;
#[cfg(feature = "service")]
pub mod service;
pub mod store;
pub mod stream;

#[cfg(feature = "service")]
pub use service::config;

pub use actors::manager::{ManagerConfig, StatusUpdateManager, StreamPaths};
pub use error::{AckError, RecoverError, ReplayError, UpdateError};
