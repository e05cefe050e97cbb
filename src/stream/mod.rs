//! One stream's logic, apart from the actor that runs it.
//!
//! - [`state`]: the pure state machine (accept/duplicate/reject an update,
//!   match an ack, what to forward, when the stream ends).
//! - [`replay`](mod@replay): a file's bytes → state, through the same apply functions.
//! - [`recover`]: recovery of one stream file (open, replay, truncate, remove).
//! - [`backoff`]: the retry schedule.
//! - [`retry`]: a stream's retry bookkeeping (deadline, send count,
//!   `warn_after`): given `now`, it says what to do.

pub mod backoff;
pub mod recover;
pub mod replay;
pub mod retry;
pub mod state;

pub use backoff::RetryPolicy;
pub use replay::{replay, Replayed, Tail, UpdateRecords};
pub use state::{AckEffect, Duplicate, Pending, StreamState, UpdateDecision, UpdateEffect};
