//! Sign-in attempts are limited per client network and per target email, on top of the
//! caller's cost budget: password guessing then neither scales with the number of
//! accounts tried from one network nor with the number of networks trying one
//! account. Every attempt counts (the check runs before the password hash, which is
//! what an attacker wants to make the server do); a refused attempt is THROTTLED with
//! `retryAfter`, whether or not its password was right. Buckets are never evicted for
//! room (`buckets`), so churning emails cannot hand a drained one a fresh allowance.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::buckets::Buckets;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// Most client networks, and most emails, with a bucket of their own (about 200 bytes
/// each); beyond that, newcomers share one bucket (see `buckets`).
const MAX_KEYS: u64 = 50_000;

/// One key's allowance: a burst, then so many attempts per minute.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    /// Attempts at once.
    pub burst: u32,
    /// Attempts regained per minute.
    pub per_minute: u32,
}

impl Allowance {
    fn quota(self) -> Quota {
        let per_minute = self.per_minute.max(1);
        let period = Duration::from_secs(60) / per_minute;
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN))
    }

    /// How long an idle bucket takes to be full again.
    fn refill(self) -> Duration {
        Duration::from_secs(
            60 * u64::from(self.burst.max(1)) / u64::from(self.per_minute.max(1)) + 1,
        )
    }
}

/// Buckets of sign-in attempts (bounded: idle ones leave once full again).
pub struct SignInLimiter {
    per_network: Allowance,
    per_email: Allowance,
    networks: Buckets<IpAddr, Arc<Limiter>>,
    emails: Buckets<String, Arc<Limiter>>,
    clock: DefaultClock,
}

impl SignInLimiter {
    /// Limits per client network and per target email.
    pub fn new(per_network: Allowance, per_email: Allowance) -> Self {
        Self {
            per_network,
            per_email,
            networks: Buckets::new(MAX_KEYS, per_network.refill()),
            emails: Buckets::new(MAX_KEYS, per_email.refill()),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one attempt from `ip` at `email`; when either is out of attempts, how
    /// long until the next one may be made.
    pub fn attempt(&self, ip: Option<IpAddr>, email: &str) -> Result<(), Duration> {
        let make = |a: Allowance| {
            let clock = self.clock.clone();
            move || Arc::new(RateLimiter::direct_with_clock(a.quota(), clock))
        };
        if let Some(ip) = ip {
            let net = crate::networks::network_of(ip);
            let bucket = self
                .networks
                .get_with(net, "network", make(self.per_network));
            self.take(&bucket)?;
        }
        let email = email.trim().to_lowercase();
        let bucket = self.emails.get_with(email, "email", make(self.per_email));
        self.take(&bucket)
    }

    fn take(&self, bucket: &Limiter) -> Result<(), Duration> {
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> SignInLimiter {
        SignInLimiter::new(
            Allowance {
                burst: 5,
                per_minute: 1,
            },
            Allowance {
                burst: 3,
                per_minute: 1,
            },
        )
    }

    #[test]
    fn one_email_is_limited_whatever_the_network() {
        let l = limiter();
        for i in 0..3u8 {
            assert!(l
                .attempt(Some(IpAddr::from([10, 0, 0, i])), "Ann@x.io")
                .is_ok());
        }
        let refused = l.attempt(Some(IpAddr::from([10, 0, 0, 9])), "ann@X.io");
        assert!(
            refused.is_err(),
            "a fourth try at one account from a fourth network"
        );
    }

    #[test]
    fn one_network_is_limited_whatever_the_email() {
        let l = limiter();
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        for i in 0..5 {
            assert!(l.attempt(ip, &format!("user{i}@x.io")).is_ok());
        }
        assert!(
            l.attempt(ip, "user99@x.io").is_err(),
            "a sixth account from one network"
        );
        assert!(l
            .attempt(Some(IpAddr::from([192, 0, 2, 2])), "user99@x.io")
            .is_ok());
    }
}
