//! The two actors: [`manager`] (routing tables, supervision) and [`stream`]
//! (one per stream: its file, queue and retry timer).

pub mod manager;
pub mod stream;
