//! What the manager and the service log when something fails or is refused,
//! and the one rate limit of the log.
//!
//! docs/API.md, "Logs", is the contract. Every failure is logged once, where
//! it is found, with its cause; the callers it fails are answered with the
//! error and log nothing more (neither the manager nor the gRPC layer):
//!
//! | event | level | fields | logged by |
//! |---|---|---|---|
//! | a stream's file could not be created, or a record written or synced | ERROR | `stream`, `uuid`, `path`, `errno`, `errno_name`, `requests`, `cause` | the stream actor, once per failure (`storage_failed`) |
//! | an update or an ack refused | WARN | `stream`, `uuid`, `request`, `kind`, `reason` | where it is refused: the gRPC layer (a missing field, the payload limit), the manager (validation, `limits.max_streams`, an existing file, an unknown stream), the stream actor (mismatch, closing, queue full, every ack check), the direct route ([`crate::messages::handle`]); rate-limited, below |
//! | a duplicate update | DEBUG | `stream`, `uuid` | the stream actor |
//!
//! `uuid` is the status uuid of the request (for a failed round, the first
//! of the `requests` it failed); `errno` and `errno_name` are there when the
//! cause is an OS error (`errno_name` is `unknown` for a number not in
//! [`errno_name`]'s list); `reason` and `cause` are the error's text; `kind`
//! is the error's variant ([`UpdateError::kind`], [`AckError::kind`]) and
//! `request` is `update` or `ack`. Failures and rejections are logged under
//! this module's target, `status_update_manager::logs`.
//!
//! **Rate limit.** A client that sends bad requests in a loop must not flood
//! the log: per process, each (`request`, `kind`) pair gets at most
//! [`REJECTIONS_PER_WINDOW`] WARN lines per [`REJECTION_WINDOW`] (one
//! second, starting at its first rejection once the previous one is over).
//! Further rejections of that pair in the window are only counted, and when
//! the window ends one WARN line says how many (`suppressed`, with
//! `request` and `kind`): "M more update rejections (queue_full) suppressed
//! in the last second". [`RejectionLimit`] is the bookkeeping, behind one
//! mutex; a thread of its own (`sum-log-limit`, started by the first
//! rejection suppressed) writes the summaries when their window ends, so a
//! flood that stops is still summed up. Storage failures are not limited:
//! each restarts its stream, which bounds them.

use std::fmt::Display;
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::error::{AckError, UpdateError};
use crate::store::StoreError;

/// Most WARN lines for one kind of rejection in one [`REJECTION_WINDOW`].
pub const REJECTIONS_PER_WINDOW: u32 = 10;
/// The window of the rejections' rate limit.
pub const REJECTION_WINDOW: Duration = Duration::from_secs(1);
/// Longest text of a field of a rejection's line (a framework id, say, may
/// be as long as a request); longer is cut, saying by how much.
const FIELD_BYTES: usize = 1024;

/// Which request a rejection refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// An update.
    Update,
    /// An acknowledgement.
    Ack,
}

impl Request {
    /// `update` or `ack`: the `request` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Update => "update",
            Request::Ack => "ack",
        }
    }
}

/// Rejections of one kind counted, not logged, in a window that is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// What they refused.
    pub request: Request,
    /// Their kind.
    pub kind: &'static str,
    /// How many.
    pub count: u64,
}

/// What [`RejectionLimit::admit`] decided for one rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; first, the summary of its kind's previous window, if that
    /// suppressed some and was not summed up yet.
    Log(Option<Suppressed>),
    /// Only count it; `first`: the first one its window suppressed.
    Count {
        /// The first suppressed in this window.
        first: bool,
    },
}

/// One kind's window.
#[derive(Debug)]
struct Window {
    request: Request,
    kind: &'static str,
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// The rate limit of rejections' WARN lines (see the module docs): at most
/// `per_window` lines per kind per `window`, the rest counted. Pure
/// bookkeeping: the caller says what time it is, and logs.
#[derive(Debug)]
pub struct RejectionLimit {
    per_window: u32,
    window: Duration,
    /// One per kind seen (a few dozen at most: the error variants).
    windows: Vec<Window>,
}

impl RejectionLimit {
    /// At most `per_window` lines per kind per `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        RejectionLimit {
            per_window,
            window,
            windows: Vec::new(),
        }
    }

    /// A rejection of `kind` refusing `request`, at `now`.
    pub fn admit(&mut self, request: Request, kind: &'static str, now: Instant) -> Admit {
        let window = self.window;
        let Some(w) = self
            .windows
            .iter_mut()
            .find(|w| w.request == request && w.kind == kind)
        else {
            self.windows.push(Window {
                request,
                kind,
                start: now,
                logged: 1,
                suppressed: 0,
            });
            return Admit::Log(None);
        };
        if now.saturating_duration_since(w.start) >= window {
            let over = take(w);
            w.start = now;
            w.logged = 1;
            return Admit::Log(over);
        }
        if w.logged < self.per_window {
            w.logged += 1;
            return Admit::Log(None);
        }
        w.suppressed += 1;
        Admit::Count {
            first: w.suppressed == 1,
        }
    }

    /// Ends every window over at `now` that suppressed rejections, and
    /// gives their counts.
    pub fn close_due(&mut self, now: Instant) -> Vec<Suppressed> {
        let window = self.window;
        self.windows
            .iter_mut()
            .filter(|w| now.saturating_duration_since(w.start) >= window)
            .filter_map(take)
            .collect()
    }

    /// When the first window that suppressed rejections ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.start + self.window)
            .min()
    }
}

/// The count `w` suppressed, if any, now summed up.
fn take(w: &mut Window) -> Option<Suppressed> {
    (w.suppressed > 0).then(|| Suppressed {
        request: w.request,
        kind: w.kind,
        count: std::mem::take(&mut w.suppressed),
    })
}

/// The process's limit, and the summaries' thread.
struct Limiter {
    limit: Mutex<RejectionLimit>,
    /// Told when a window starts suppressing.
    suppressing: Condvar,
    summaries: Once,
}

static REJECTIONS: Limiter = Limiter {
    limit: Mutex::new(RejectionLimit::new(REJECTIONS_PER_WINDOW, REJECTION_WINDOW)),
    suppressing: Condvar::new(),
    summaries: Once::new(),
};

fn locked() -> MutexGuard<'static, RejectionLimit> {
    REJECTIONS
        .limit
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Whether a rejection of `kind` refusing `request` gets its line now.
fn admitted(request: Request, kind: &'static str) -> bool {
    let admit = locked().admit(request, kind, Instant::now());
    match admit {
        Admit::Log(over) => {
            if let Some(over) = over {
                summarize(over);
            }
            true
        }
        Admit::Count { first } => {
            if first {
                REJECTIONS.summaries.call_once(start_summaries);
                REJECTIONS.suppressing.notify_all();
            }
            false
        }
    }
}

/// Starts the thread that sums up each window that suppressed rejections
/// when it ends. If it cannot start, a window is summed up by the next
/// rejection of its kind instead.
fn start_summaries() {
    let started = std::thread::Builder::new()
        .name("sum-log-limit".into())
        .spawn(|| {
            let mut limit = locked();
            loop {
                let now = Instant::now();
                let over = limit.close_due(now);
                if !over.is_empty() {
                    drop(limit);
                    over.into_iter().for_each(summarize);
                    limit = locked();
                    continue;
                }
                limit = match limit.next_due() {
                    None => REJECTIONS
                        .suppressing
                        .wait(limit)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(due) => {
                        REJECTIONS
                            .suppressing
                            .wait_timeout(limit, due.saturating_duration_since(now))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
            }
        });
    if let Err(err) = started {
        warn!(cause = %err, "cannot start the thread that sums up suppressed rejections; the next rejection of each kind does");
    }
}

fn summarize(over: Suppressed) {
    warn!(
        request = over.request.as_str(),
        kind = over.kind,
        suppressed = over.count,
        "{} more {} rejections ({}) suppressed in the last second",
        over.count,
        over.request.as_str(),
        over.kind
    );
}

/// `value`'s text, cut to [`FIELD_BYTES`].
fn clipped(value: &dyn Display) -> String {
    let mut text = value.to_string();
    if text.len() > FIELD_BYTES {
        let mut end = FIELD_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("… ({cut} more bytes)"));
    }
    text
}

/// Logs a refused request: a WARN line with `stream`, `uuid`, `request`,
/// `kind` and `reason`, unless the rate limit counts it instead.
pub(crate) fn rejected(
    request: Request,
    kind: &'static str,
    stream: &dyn Display,
    uuid: &dyn Display,
    reason: &dyn Display,
) {
    if !tracing::enabled!(tracing::Level::WARN) || !admitted(request, kind) {
        return;
    }
    let what = match request {
        Request::Update => "update rejected",
        Request::Ack => "acknowledgement rejected",
    };
    warn!(
        stream = %clipped(stream),
        uuid = %clipped(uuid),
        request = request.as_str(),
        kind,
        reason = %clipped(reason),
        "{what}"
    );
}

/// Logs an update refused with `err` ([`rejected`]).
pub(crate) fn update_rejected(stream: &dyn Display, uuid: &dyn Display, err: &UpdateError) {
    rejected(Request::Update, err.kind(), stream, uuid, err);
}

/// Logs an ack refused with `err` ([`rejected`]).
pub(crate) fn ack_rejected(stream: &dyn Display, uuid: &dyn Display, err: &AckError) {
    rejected(Request::Ack, err.kind(), stream, uuid, err);
}

/// Logs a storage failure, once: an ERROR line with `stream`, `uuid` (the
/// first request it fails, `-` if none), `path`, `errno` and `errno_name`
/// (when the cause is an OS error), `requests` (how many requests it fails)
/// and `cause`; `what` is the message.
pub(crate) fn storage_failed(
    stream: &dyn Display,
    uuid: Option<&dyn Display>,
    err: &StoreError,
    requests: usize,
    what: &str,
) {
    let uuid: &dyn Display = uuid.unwrap_or(&"-");
    let path = err.path().display();
    match err.io_error().and_then(std::io::Error::raw_os_error) {
        Some(errno) => error!(
            %stream,
            %uuid,
            %path,
            errno,
            errno_name = errno_name(errno).unwrap_or("unknown"),
            requests,
            cause = %err,
            "{what}"
        ),
        None => error!(%stream, %uuid, %path, requests, cause = %err, "{what}"),
    }
}

/// The symbolic name of the OS error numbers a store operation is likely
/// to meet (`EACCES`, `ENOSPC`, …); `None` for others.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    #[cfg(unix)]
    {
        Some(match errno {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::ENFILE => "ENFILE",
            libc::EMFILE => "EMFILE",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::ESPIPE => "ESPIPE",
            libc::EROFS => "EROFS",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ELOOP => "ELOOP",
            libc::EDQUOT => "EDQUOT",
            _ => return None,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = errno;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(1);

    #[test]
    fn each_kind_gets_its_lines_per_window_and_the_rest_are_counted() {
        let mut limit = RejectionLimit::new(3, W);
        let t0 = Instant::now();
        let kinds = [
            (Request::Update, "queue_full"),
            (Request::Ack, "unknown_stream"),
        ];
        for (request, kind) in kinds {
            for _ in 0..3 {
                assert_eq!(limit.admit(request, kind, t0), Admit::Log(None));
            }
            assert_eq!(limit.admit(request, kind, t0), Admit::Count { first: true });
            assert_eq!(
                limit.admit(request, kind, t0),
                Admit::Count { first: false }
            );
        }
        // `invalid` of an update and of an ack are two kinds.
        assert_eq!(
            limit.admit(Request::Update, "invalid", t0),
            Admit::Log(None)
        );
        assert_eq!(limit.admit(Request::Ack, "invalid", t0), Admit::Log(None));
        assert_eq!(limit.next_due(), Some(t0 + W));
        assert!(limit.close_due(t0 + W / 2).is_empty(), "not over yet");
        let over = limit.close_due(t0 + W);
        assert_eq!(
            over,
            vec![
                Suppressed {
                    request: Request::Update,
                    kind: "queue_full",
                    count: 2
                },
                Suppressed {
                    request: Request::Ack,
                    kind: "unknown_stream",
                    count: 2
                },
            ]
        );
        assert!(limit.close_due(t0 + 2 * W).is_empty(), "summed up once");
        assert_eq!(limit.next_due(), None);
        // A new window starts with the next rejection.
        let t1 = t0 + 3 * W;
        assert_eq!(
            limit.admit(Request::Update, "queue_full", t1),
            Admit::Log(None)
        );
    }

    #[test]
    fn a_window_not_summed_up_yet_is_summed_up_by_the_next_rejection_of_its_kind() {
        let mut limit = RejectionLimit::new(1, W);
        let t0 = Instant::now();
        assert_eq!(
            limit.admit(Request::Ack, "duplicate_ack", t0),
            Admit::Log(None)
        );
        assert_eq!(
            limit.admit(Request::Ack, "duplicate_ack", t0),
            Admit::Count { first: true }
        );
        assert_eq!(
            limit.admit(Request::Ack, "duplicate_ack", t0 + W),
            Admit::Log(Some(Suppressed {
                request: Request::Ack,
                kind: "duplicate_ack",
                count: 1
            }))
        );
        assert!(limit.close_due(t0 + 5 * W).is_empty());
    }

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        let long = "é".repeat(FIELD_BYTES);
        let cut = clipped(&long);
        assert!(cut.starts_with(&"é".repeat(FIELD_BYTES / 2)), "{cut}");
        assert!(
            cut.ends_with(&format!("… ({} more bytes)", FIELD_BYTES)),
            "{cut}"
        );
        assert_eq!(clipped(&"short"), "short");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn common_os_errors_have_their_names() {
        assert_eq!(errno_name(1), Some("EPERM"));
        assert_eq!(errno_name(13), Some("EACCES"));
        assert_eq!(errno_name(28), Some("ENOSPC"));
        assert_eq!(errno_name(-1), None);
    }
}
