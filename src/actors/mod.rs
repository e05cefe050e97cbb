//! The two actors: [`manager`] (routing tables, supervision) and [`stream`]
//! (one per stream: its file, queue and retry deadline), and [`timers`], the
//! one timer queue that wakes the streams of a manager when a retry is due.

mod gate;
pub mod manager;
pub mod stream;
pub mod timers;
