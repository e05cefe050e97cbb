//! The actix messages of the crate, one file per receiving actor.
//!
//! - [`manager`]: what an agent sends to [`crate::StatusUpdateManager`]:
//!   `Update`, `Acknowledge`, `Recover`, `Cleanup`, `Pause`, `Resume`,
//!   `ListStreams`, `GetStream`, `GetHandle`.
//! - [`forward`]: what the manager sends to the upstream's recipient.
//! - [`handle`]: requests that go to a stream's actor without the manager's
//!   hop (`GetHandle` gives a `StreamHandle`), and the `Reply` they answer
//!   with.
//! - [`stream`]: what the manager sends to a stream actor (crate-internal
//!   shapes, public so the actor's handlers can name them).
//! - [`mailbox`]: the count of a stream actor's mailbox, kept by whoever
//!   sends to it and by the actor.

pub mod forward;
pub mod handle;
pub mod mailbox;
pub mod manager;
pub mod stream;

pub use forward::Forward;
pub use handle::{GetHandle, Reply, StreamHandle};
pub use manager::{
    AckOutcome, Acknowledge, Cleanup, GetStream, GetSummary, ListStreams, ManagerSummary, Pause,
    Recover, RecoveredStream, RecoveryState, Resume, StreamPage, StreamStats, SyncAll, Update,
    UpdateOutcome,
};
