//! The retry policy of the buffered store: jittered exponential backoff that never waits less
//! than the server's `Retry-After`, bounded by a per-batch deadline.

use std::time::Duration;

/// First wait after a retryable failure (before jitter).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Longest computed wait between two attempts. A longer `Retry-After` still wins.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long one batch keeps being retried, from its first attempt, before its events count as
/// `failed`. Long enough to ride out a server restart or a failover.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(300);

/// When and how long to retry a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First wait (doubles on every further attempt), default [`DEFAULT_INITIAL_BACKOFF`].
    pub initial_backoff: Duration,
    /// Cap of the computed wait, default [`DEFAULT_MAX_BACKOFF`].
    pub max_backoff: Duration,
    /// Give up on a batch this long after its first attempt, default [`DEFAULT_RETRY_DEADLINE`].
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            deadline: DEFAULT_RETRY_DEADLINE,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt + 1` (attempt 0 is the first failure).
    ///
    /// "Equal jitter": half the exponential step plus a random share of the other half, so
    /// that clients that failed together do not come back together, yet never retry at once.
    /// The result is never shorter than `retry_after`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max_backoff);
        let half = step / 2;
        let jitter = half.mul_f64(fastrand::f64());
        (half + jitter).max(retry_after.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_is_capped_and_never_undercuts_retry_after() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
        };
        for _ in 0..100 {
            let d0 = p.delay(0, None);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = p.delay(3, None);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d20 = p.delay(20, None);
            assert!(d20 <= Duration::from_secs(1), "capped: {d20:?}");
            let ra = p.delay(0, Some(Duration::from_secs(2)));
            assert!(ra >= Duration::from_secs(2), "honours Retry-After: {ra:?}");
        }
    }
}
