//! The retry schedule: bounded exponential backoff with optional jitter.
//!
//! With `jitter = 0` the gaps between sends of an unacknowledged update are
//! exactly Mesos's: `min`, then doubling up to `max` (10, 20, 40, 80, 160,
//! 320, 600, 600, ... s with the defaults). The backoff restarts at `min` on
//! every fresh forward (a new head, resume, recovery). With `jitter = j > 0`
//! each gap is drawn uniformly from `[gap × (1 − j), gap × (1 + j)]`, and a
//! resume spreads the heads over `[0, j × min]` instead of sending them all
//! at once.

use std::time::Duration;

/// Mesos's `STATUS_UPDATE_RETRY_INTERVAL_MIN`.
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(10);
/// Mesos's `STATUS_UPDATE_RETRY_INTERVAL_MAX`.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(600);

/// Default `retry.warn_after`: with the default schedule, 10 re-sends take
/// about 1.5 hours (10+20+…+320 s, then 600 s each).
pub const DEFAULT_WARN_AFTER: u32 = 10;

/// The first delay before a stream that panicked again after a restart
/// reloads from its file.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest such delay.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The delay before a stream that panicked `panics` times in a row reloads
/// from its file: none after one panic, then [`RESTART_BACKOFF_MIN`]
/// doubling with each further one, at most [`RESTART_BACKOFF_MAX`].
pub fn restart_backoff(panics: u8) -> Duration {
    match panics {
        0 | 1 => Duration::ZERO,
        n => RESTART_BACKOFF_MIN
            .saturating_mul(2u32.saturating_pow(u32::from(n - 2)))
            .min(RESTART_BACKOFF_MAX),
    }
}

/// How a stream re-sends its unacknowledged head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First gap after a fresh forward.
    pub min: Duration,
    /// Largest gap.
    pub max: Duration,
    /// Relative spread of each gap, in `[0, 1)`; 0 = exact schedule.
    pub jitter: f64,
    /// Warn (once per update) when a head was re-sent more than this many
    /// times; 0 = never. Nothing is dropped either way.
    pub warn_after: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min: DEFAULT_RETRY_MIN,
            max: DEFAULT_RETRY_MAX,
            jitter: 0.0,
            warn_after: DEFAULT_WARN_AFTER,
        }
    }
}

impl RetryPolicy {
    /// The gap after `current`: doubled, at most `max`.
    pub fn next_interval(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max)
    }

    /// The gap after `doublings` resends since the last fresh forward:
    /// `min` doubled that many times, at most `max` (what
    /// [`next_interval`](Self::next_interval) reaches step by step).
    pub fn interval(&self, doublings: u8) -> Duration {
        self.min
            .saturating_mul(2u32.saturating_pow(u32::from(doublings)))
            .min(self.max)
    }

    /// The delay actually armed for a gap of `interval`, given a uniform
    /// sample `u` in `[0, 1)`.
    pub fn jittered(&self, interval: Duration, u: f64) -> Duration {
        if self.jitter <= 0.0 {
            return interval;
        }
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * u;
        interval.mul_f64(factor.max(0.0))
    }

    /// The delay before a resumed head is sent, given a uniform sample `u`.
    pub fn resume_delay(&self, u: f64) -> Duration {
        if self.jitter <= 0.0 {
            return Duration::ZERO;
        }
        self.min.mul_f64(self.jitter * u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_panics_again_and_again_waits_longer_each_time() {
        let delays: Vec<u64> = (1..=10).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_backoff(u8::MAX), RESTART_BACKOFF_MAX);
    }

    #[test]
    fn mesos_schedule_without_jitter() {
        let policy = RetryPolicy::default();
        let mut gap = policy.min;
        let mut gaps = vec![gap.as_secs()];
        for _ in 0..8 {
            gap = policy.next_interval(gap);
            gaps.push(gap.as_secs());
        }
        assert_eq!(gaps, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        let direct: Vec<u64> = (0..=8).map(|d| policy.interval(d).as_secs()).collect();
        assert_eq!(direct, gaps);
        assert_eq!(policy.interval(u8::MAX), policy.max);
        assert_eq!(policy.jittered(gap, 0.99), gap);
        assert_eq!(policy.resume_delay(0.5), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let policy = RetryPolicy {
            jitter: 0.25,
            ..RetryPolicy::default()
        };
        let gap = Duration::from_secs(40);
        for (i, u) in [0.0, 0.1, 0.5, 0.9, 0.999_999].iter().enumerate() {
            let d = policy.jittered(gap, *u);
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(50),
                "case {i}: {d:?}"
            );
            let r = policy.resume_delay(*u);
            assert!(r <= Duration::from_millis(2500), "case {i}: {r:?}");
        }
    }
}
