//! A stream's retry bookkeeping: when its head is sent again, how many
//! sends it had, and whether it is past `retry.warn_after`. No I/O and no
//! clock of its own: each method takes `now` (and the random draw for the
//! jitter) and returns what the stream actor must do, which the actor then
//! does (send the forward, ask the shared timer queue for a wake-up, log,
//! count).
//!
//! The deadline lives here, not in a timer: the actor asks the manager's
//! timer queue to wake it at some instant, and on each wake-up
//! [`Retry::woken`] decides from the deadline whether anything is due. A
//! cancelled or re-armed deadline needs no call to the queue, and a stream
//! that already asked for a wake-up at or before its new deadline asks for
//! none.

use tokio::time::Instant;

use super::backoff::RetryPolicy;
use crate::kind::StatusUuid;

/// What the deadline does once it passes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum OnDue {
    /// Send the head again, if it is still the update last sent.
    #[default]
    Resend,
    /// Send the head with a fresh backoff (the delay after a resume).
    Forward,
}

/// The retry deadline and the send count of a stream's head; see the
/// module docs.
///
/// Kept as separate small fields (not tuples in options, each padded to 24
/// bytes): every stream actor has one, and the task that runs the actor
/// stays in a smaller allocation size class.
#[derive(Debug, Default)]
pub struct Retry {
    /// When the deadline passes (`None`: not armed).
    due: Option<Instant>,
    /// What it does then.
    on_due: OnDue,
    /// The earliest wake-up asked of the timer queue and not yet received
    /// (a later deadline needs no new one).
    asked: Option<Instant>,
    /// Doublings of the retry gap since the last fresh forward.
    doublings: u8,
    /// The update the send count is for.
    head: Option<StatusUuid>,
    /// How many sends `head` had.
    sends: u32,
    /// The head was sent past `retry.warn_after` (reported once, until the
    /// head changes or the stream ends).
    over_budget: bool,
}

/// What one send of the head means, for the actor to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// 0 for the first send of this update, one more for each later send.
    pub attempt: u32,
    /// A new head replaced one that was past `warn_after`: it leaves the
    /// over-budget count.
    pub left_budget: bool,
    /// This send took the head past `warn_after` (warn and count, once).
    pub over_budget: bool,
    /// Ask the timer queue to wake the stream at this instant.
    pub wake: Option<Instant>,
}

/// What a wake-up from the timer queue means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Nothing is due (the deadline was cancelled).
    Nothing,
    /// The deadline moved later: ask to be woken then.
    AskAgain(Instant),
    /// The deadline passed: do what it was armed for.
    Due(OnDue),
}

impl Retry {
    /// Disarms the deadline (a wake-up already asked for finds nothing to do).
    pub fn cancel(&mut self) {
        self.due = None;
    }

    /// The next send of the head starts the backoff again at `retry.min`
    /// (a new head, a resume, a recovery).
    pub fn fresh(&mut self) {
        self.doublings = 0;
    }

    /// The head `uuid` is sent at `now`: counts the send and arms the
    /// deadline for the next one (`random`, in `[0, 1)`, draws the jitter).
    pub fn send(
        &mut self,
        uuid: StatusUuid,
        now: Instant,
        policy: &RetryPolicy,
        random: f64,
    ) -> Send {
        let mut left_budget = false;
        let attempt = if self.head == Some(uuid) {
            let attempt = self.sends;
            self.sends = attempt.saturating_add(1);
            attempt
        } else {
            self.head = Some(uuid);
            self.sends = 1;
            left_budget = self.leave_budget();
            0
        };
        let over_budget = policy.warn_after > 0 && attempt > policy.warn_after && !self.over_budget;
        self.over_budget |= over_budget;
        let delay = policy.jittered(policy.interval(self.doublings), random);
        let wake = self.arm(now + delay, OnDue::Resend);
        Send {
            attempt,
            left_budget,
            over_budget,
            wake,
        }
    }

    /// Arms the deadline at `at` for `on_due`, replacing any other; returns
    /// the wake-up to ask the timer queue for, if the one asked already
    /// comes too late.
    pub fn arm(&mut self, at: Instant, on_due: OnDue) -> Option<Instant> {
        self.due = Some(at);
        self.on_due = on_due;
        self.ask(at)
    }

    fn ask(&mut self, at: Instant) -> Option<Instant> {
        if self.asked.is_some_and(|asked| asked <= at) {
            return None;
        }
        self.asked = Some(at);
        Some(at)
    }

    /// The timer queue woke the stream for the wake-up it asked for at
    /// `at`; `now` is the time.
    pub fn woken(&mut self, at: Instant, now: Instant) -> Woken {
        if self.asked == Some(at) {
            self.asked = None;
        }
        let Some(due) = self.due else {
            return Woken::Nothing;
        };
        if due > now {
            return self.ask(due).map_or(Woken::Nothing, Woken::AskAgain);
        }
        self.due = None;
        Woken::Due(self.on_due)
    }

    /// A resend is due and `head` is the stream's head now: whether it is
    /// the update last sent (else there is nothing to resend). If so, the
    /// next gap doubles.
    pub fn resend(&mut self, head: Option<StatusUuid>) -> bool {
        let same = head.is_some() && head == self.head;
        if same {
            self.doublings = self.doublings.saturating_add(1);
        }
        same
    }

    /// The head leaves the over-budget count (it changed, or the stream
    /// ended): whether it was in it.
    pub fn leave_budget(&mut self) -> bool {
        std::mem::take(&mut self.over_budget)
    }

    /// The sends of the head before the last one (0 before any send).
    pub fn attempt(&self) -> u32 {
        self.head.map_or(0, |_| self.sends.saturating_sub(1))
    }

    /// When the deadline passes, if it is armed.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The update the send count is for: the head last sent, if any.
    pub fn head(&self) -> Option<StatusUuid> {
        self.head
    }
}

/// When a stream's head was first sent, kept in 4 bytes: the stream actor
/// holds one, and has no room for a 16-byte `Instant` (see its size test).
///
/// It is an offset from when the head was queued (its `Pending::since`,
/// which the stream keeps anyway), so it needs no clock of its own: to the
/// microsecond while the head waited less than 35 minutes before its first
/// send, to the millisecond up to 24 days (past that, 24 days). The latency
/// from that first send to the ack is then exact to the microsecond, or to
/// the millisecond after a long wait.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FirstSend(u32);

impl FirstSend {
    /// Set: the offset is in milliseconds, not in microseconds + 1.
    const MILLIS: u32 = 1 << 31;

    /// Not sent (or already taken).
    pub const NONE: FirstSend = FirstSend(0);

    /// The head queued at `queued` was first sent at `sent`.
    pub fn at(queued: Instant, sent: Instant) -> Self {
        let offset = sent.saturating_duration_since(queued);
        match u32::try_from(offset.as_micros()) {
            Ok(micros) if micros < Self::MILLIS - 1 => FirstSend(micros + 1),
            _ => {
                let millis = u32::try_from(offset.as_millis()).unwrap_or(u32::MAX);
                FirstSend(Self::MILLIS | millis.min(Self::MILLIS - 1))
            }
        }
    }

    /// Whether a first send is recorded.
    pub fn is_some(self) -> bool {
        self.0 != 0
    }

    /// The time from the first send of the head queued at `queued` until
    /// `now`; `None` if no send was recorded.
    pub fn elapsed(self, queued: Instant, now: Instant) -> Option<std::time::Duration> {
        let offset = match self.0 {
            0 => return None,
            raw if raw & Self::MILLIS == 0 => std::time::Duration::from_micros(u64::from(raw - 1)),
            raw => std::time::Duration::from_millis(u64::from(raw & !Self::MILLIS)),
        };
        let sent = queued.checked_add(offset)?;
        Some(now.saturating_duration_since(sent))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn uuid(n: u8) -> StatusUuid {
        StatusUuid::from_bytes([n; 16])
    }

    fn policy(warn_after: u32) -> RetryPolicy {
        RetryPolicy {
            warn_after,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn sends_of_one_head_count_up_and_back_off_until_a_new_head_starts_again() {
        let (t0, p) = (Instant::now(), policy(0));
        let mut retry = Retry::default();
        let first = retry.send(uuid(1), t0, &p, 0.0);
        assert_eq!((first.attempt, first.wake), (0, Some(t0 + p.min)));
        assert_eq!(retry.due(), Some(t0 + p.min));
        let mut now = t0;
        for (n, gap) in [20, 40, 80, 160, 320, 600, 600].into_iter().enumerate() {
            now = retry.due().expect("armed");
            assert_eq!(retry.woken(now, now), Woken::Due(OnDue::Resend), "send {n}");
            assert!(retry.resend(Some(uuid(1))), "send {n}");
            let sent = retry.send(uuid(1), now, &p, 0.0);
            assert_eq!(sent.attempt, u32::try_from(n).unwrap() + 1, "send {n}");
            assert_eq!(
                retry.due(),
                Some(now + Duration::from_secs(gap)),
                "send {n}"
            );
        }
        assert_eq!(retry.attempt(), 7);
        // A new head: attempt 0, and the backoff starts at `min` once made fresh.
        retry.fresh();
        let next = retry.send(uuid(2), now, &p, 0.0);
        assert_eq!((next.attempt, retry.due()), (0, Some(now + p.min)));
    }

    #[test]
    fn a_wake_up_acts_only_on_a_deadline_that_passed() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut retry = Retry::default();
        assert_eq!(retry.arm(later, OnDue::Forward), Some(later));
        // An earlier wake-up (say, one asked before a re-arm) finds the deadline ahead.
        assert_eq!(
            retry.woken(t0, t0),
            Woken::Nothing,
            "asked for later already"
        );
        assert_eq!(retry.woken(later, later), Woken::Due(OnDue::Forward));
        assert_eq!(retry.woken(later, later), Woken::Nothing, "done once");
        // Cancelled: nothing is due, and the queue is asked nothing new.
        let at = t0 + Duration::from_secs(20);
        assert_eq!(retry.arm(at, OnDue::Resend), Some(at));
        retry.cancel();
        assert_eq!(retry.woken(at, at), Woken::Nothing);
    }

    #[test]
    fn a_later_deadline_asks_for_no_new_wake_up_and_is_asked_for_when_the_early_one_comes() {
        let t0 = Instant::now();
        let (early, late) = (t0 + Duration::from_secs(5), t0 + Duration::from_secs(9));
        let mut retry = Retry::default();
        assert_eq!(retry.arm(early, OnDue::Resend), Some(early));
        assert_eq!(
            retry.arm(late, OnDue::Resend),
            None,
            "the early wake-up covers it"
        );
        assert_eq!(retry.woken(early, early), Woken::AskAgain(late));
        assert_eq!(retry.woken(late, late), Woken::Due(OnDue::Resend));
    }

    #[test]
    fn a_resend_is_for_the_head_last_sent_only() {
        let mut retry = Retry::default();
        assert!(!retry.resend(None), "nothing sent");
        retry.send(uuid(1), Instant::now(), &policy(0), 0.0);
        assert!(!retry.resend(Some(uuid(2))), "the head changed");
        assert!(!retry.resend(None), "the head was acknowledged");
        assert!(retry.resend(Some(uuid(1))));
    }

    #[test]
    fn a_first_send_is_kept_to_the_microsecond_then_to_the_millisecond() {
        let queued = Instant::now();
        assert_eq!(FirstSend::default(), FirstSend::NONE);
        assert_eq!(FirstSend::NONE.elapsed(queued, queued), None);
        // Sent at once, acked 1.5 ms later: exact.
        let now = queued + Duration::from_micros(1_500);
        assert_eq!(
            FirstSend::at(queued, queued).elapsed(queued, now),
            Some(Duration::from_micros(1_500))
        );
        // Queued 20 minutes first (forwarding paused): still to the microsecond.
        let sent = queued + Duration::from_secs(1_200) + Duration::from_micros(7);
        let first = FirstSend::at(queued, sent);
        assert!(first.is_some());
        assert_eq!(
            first.elapsed(queued, sent + Duration::from_micros(250)),
            Some(Duration::from_micros(250))
        );
        // Queued 2 hours first: to the millisecond, never more than the truth.
        let sent = queued + Duration::from_secs(7_200) + Duration::from_micros(1_700);
        let acked = sent + Duration::from_millis(40);
        let elapsed = FirstSend::at(queued, sent).elapsed(queued, acked).unwrap();
        assert!(
            elapsed > Duration::from_millis(40) && elapsed < Duration::from_millis(41),
            "{elapsed:?}"
        );
        // Queued 30 days first: taken as 24 days, so the latency is at most
        // overstated, and acked before it was sent is 0, not a panic.
        let late = queued + Duration::from_secs(30 * 86_400);
        let first = FirstSend::at(queued, late);
        assert!(first.elapsed(queued, late).unwrap() > Duration::from_secs(5 * 86_400));
        assert_eq!(
            FirstSend::at(queued, sent).elapsed(queued, queued),
            Some(Duration::ZERO)
        );
        assert_eq!(std::mem::size_of::<FirstSend>(), 4);
    }

    #[test]
    fn past_warn_after_a_head_is_reported_once_and_leaves_the_count_when_it_changes() {
        let (now, p) = (Instant::now(), policy(2));
        let mut retry = Retry::default();
        let over: Vec<bool> = (0..5)
            .map(|_| retry.send(uuid(1), now, &p, 0.0).over_budget)
            .collect();
        assert_eq!(
            over,
            [false, false, false, true, false],
            "attempt 3 > 2, once"
        );
        let next = retry.send(uuid(2), now, &p, 0.0);
        assert!(next.left_budget && !next.over_budget);
        assert!(!retry.leave_budget(), "already left");
        // warn_after = 0 never reports.
        let mut quiet = Retry::default();
        assert!((0..20).all(|_| !quiet.send(uuid(3), now, &policy(0), 0.0).over_budget));
    }
}
