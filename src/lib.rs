//! WIP
pub mod actors;
pub mod error;
pub mod kind;
pub mod messages;
pub mod proto;
pub mod store;
pub mod stream;

pub use actors::manager::{ManagerConfig, StatusUpdateManager, StreamPaths};
