//! Per-principal rate limits (`auth.rateLimit`): a token bucket per authenticated principal
//! (governor's GCRA), with a default and per-principal overrides. The key is the principal's
//! name, never an address or a header a client chooses, so one caller cannot spend another's
//! budget or dodge its own.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::AuthError;
use crate::config::RateLimitSettings;

/// How often buckets of principals that have been quiet long enough to be full are dropped,
/// so the default limiter's memory follows the active principals.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The limits in force. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    default: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    named: Arc<HashMap<String, Option<DefaultDirectRateLimiter>>>,
}

/// A quota from a rate and a burst (`0`: the rate rounded up); `None` for a rate of 0 (no limit).
fn quota(key: &str, per_second: f64, burst: u32) -> anyhow::Result<Option<Quota>> {
    if per_second == 0.0 {
        return Ok(None);
    }
    if !(0.0..=1e9).contains(&per_second) {
        bail!(
            "{key}.requestsPerSecond must be a number from 0 (no limit) to 1e9 (got {per_second})"
        );
    }
    let burst = if burst == 0 {
        per_second.ceil() as u32
    } else {
        burst
    };
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    Ok(Some(
        Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(burst),
    ))
}

impl RateLimits {
    /// Builds the limiters of `auth.rateLimit`; errors name the key.
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<Self> {
        let default = quota(
            "auth.rateLimit",
            settings.requests_per_second,
            settings.burst,
        )?
        .map(|q| Arc::new(RateLimiter::keyed(q)));
        let mut named = HashMap::new();
        for (name, limit) in &settings.principals {
            let q = quota(
                &format!("auth.rateLimit.principals.{name}"),
                limit.requests_per_second,
                limit.burst,
            )?;
            named.insert(name.clone(), q.map(RateLimiter::direct));
        }
        if let Some(limiter) = &default {
            let limiter = Arc::downgrade(limiter);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(FORGET_EVERY);
                loop {
                    ticks.tick().await;
                    let Some(limiter) = limiter.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
        Ok(Self {
            default,
            named: Arc::new(named),
        })
    }

    /// Takes one request from `principal`'s bucket, or says when one would pass.
    pub fn check(&self, principal: &str) -> Result<(), AuthError> {
        let denied = match self.named.get(principal) {
            Some(None) => return Ok(()),
            Some(Some(limiter)) => limiter.check().err(),
            None => match &self.default {
                None => return Ok(()),
                Some(limiter) => limiter.check_key(&principal.to_owned()).err(),
            },
        };
        match denied {
            None => Ok(()),
            Some(not_until) => Err(AuthError::RateLimited {
                principal: principal.to_owned(),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PrincipalLimit;

    #[tokio::test]
    async fn each_principal_has_its_own_bucket_and_overrides_apply() {
        let settings = RateLimitSettings {
            requests_per_second: 1.0,
            burst: 2,
            principals: [
                (
                    "batch-job".to_owned(),
                    PrincipalLimit {
                        requests_per_second: 0.0,
                        burst: 0,
                    },
                ),
                (
                    "slow".to_owned(),
                    PrincipalLimit {
                        requests_per_second: 0.5,
                        burst: 1,
                    },
                ),
            ]
            .into(),
        };
        let limits = RateLimits::new(&settings).unwrap();
        assert!(limits.check("a").is_ok() && limits.check("a").is_ok());
        match limits.check("a") {
            Err(AuthError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        assert!(limits.check("b").is_ok(), "another principal is unaffected");
        assert!(
            (0..100).all(|_| limits.check("batch-job").is_ok()),
            "0 means no limit"
        );
        assert!(limits.check("slow").is_ok() && limits.check("slow").is_err());
    }

    #[test]
    fn a_negative_rate_names_the_key() {
        let settings = RateLimitSettings {
            requests_per_second: -1.0,
            ..Default::default()
        };
        let e = RateLimits::new(&settings).unwrap_err().to_string();
        assert!(e.contains("auth.rateLimit.requestsPerSecond"), "{e}");
    }
}
