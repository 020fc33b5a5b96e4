//! Abuse limits: token buckets for per-connection datagram and request rates, a per-source
//! handshake limiter, and the token replay guard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts protocol violations of one connection within a sliding window; reports when a
/// connection should be closed for abuse.
#[derive(Debug, Clone)]
pub struct ViolationCounter {
    window: Duration,
    limit: u32,
    count: u32,
    since: Instant,
}

impl ViolationCounter {
    /// Closes after more than `limit` violations within `window`.
    pub fn new(limit: u32, window: Duration, now: Instant) -> Self {
        Self {
            window,
            limit,
            count: 0,
            since: now,
        }
    }

    /// Records one violation; returns true when the limit is exceeded.
    pub fn record(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) > self.window {
            self.since = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

/// Handshake admission per source IP address, with a bounded table.
#[derive(Debug)]
pub struct HandshakeLimiter {
    rate: u32,
    burst: u32,
    max_sources: usize,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl HandshakeLimiter {
    /// Allows `rate` handshakes per second per address (burst `burst`), tracking at most
    /// `max_sources` addresses (idle entries are pruned when the table is full).
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            rate,
            burst,
            max_sources,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a handshake from `ip` may proceed now.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_sources && !buckets.contains_key(&ip) {
            // Drop entries that have refilled completely: they carry no information.
            let full_after =
                Duration::from_secs_f64(f64::from(self.burst) / f64::from(self.rate.max(1)));
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if buckets.len() >= self.max_sources {
                return false;
            }
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now)
    }
}

/// Why a token's nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// This token has opened a session before.
    #[error("token already used")]
    Replayed,
    /// The guard is full of unexpired nonces.
    #[error("too many live tokens")]
    Full,
}

/// Remembers token nonces until their expiry so a token opens at most one session.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    seen: Mutex<HashMap<[u8; 16], u64>>,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` unexpired nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records `nonce` (valid until `expires_at`, Unix seconds) at time `now`.
    pub fn check_and_remember(
        &self,
        nonce: [u8; 16],
        expires_at: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&exp) = seen.get(&nonce) {
            if exp >= now {
                return Err(ReplayError::Replayed);
            }
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp >= now);
            if seen.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        seen.insert(nonce, expires_at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn violations_close_only_past_the_limit_within_the_window() {
        let t0 = Instant::now();
        let mut v = ViolationCounter::new(2, Duration::from_secs(10), t0);
        assert!(!v.record(t0));
        assert!(!v.record(t0));
        assert!(v.record(t0));
        let mut w = ViolationCounter::new(2, Duration::from_secs(10), t0);
        assert!(!w.record(t0));
        assert!(!w.record(t0 + Duration::from_secs(11)));
        assert!(!w.record(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn handshake_limiter_is_per_address_and_bounded() {
        let t0 = Instant::now();
        let l = HandshakeLimiter::new(1, 2, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let c: IpAddr = [127, 0, 0, 3].into();
        assert!(l.admit(a, t0) && l.admit(a, t0));
        assert!(!l.admit(a, t0));
        assert!(l.admit(b, t0));
        assert!(!l.admit(c, t0), "table full of busy sources");
        assert!(
            l.admit(c, t0 + Duration::from_secs(3)),
            "idle entries pruned"
        );
    }

    #[test]
    fn replayed_nonce_is_refused_until_expiry() {
        let g = ReplayGuard::new(2);
        assert_eq!(g.check_and_remember([1; 16], 100, 50), Ok(()));
        assert_eq!(
            g.check_and_remember([1; 16], 100, 60),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.check_and_remember([2; 16], 100, 60), Ok(()));
        assert_eq!(
            g.check_and_remember([3; 16], 100, 60),
            Err(ReplayError::Full)
        );
        assert_eq!(
            g.check_and_remember([3; 16], 300, 150),
            Ok(()),
            "expired nonces pruned"
        );
        assert_eq!(
            g.check_and_remember([1; 16], 300, 150),
            Ok(()),
            "an expired nonce may be reused"
        );
    }
}
