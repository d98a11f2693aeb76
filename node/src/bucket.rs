//! A token bucket for the node's admission limits (join attempts per source
//! address, gossip records per origin): `burst` tokens at most, one more
//! earned per `every`, refilled in whole tokens when it is next used.
//! Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

/// One bucket; its size and refill interval are the caller's constants.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: u32,
    /// When the bucket was last refilled (and so last used).
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at `now`.
    pub fn full(burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            at: now,
        }
    }

    /// Adds the whole tokens earned since the last refill, one per `every`,
    /// up to `burst`.
    pub fn refill(&mut self, burst: u32, every: Duration, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_millis() / every.as_millis().max(1);
        if earned > 0 {
            self.tokens = (u128::from(self.tokens) + earned).min(u128::from(burst)) as u32;
            self.at = now;
        }
    }

    /// Takes a token; false if there is none.
    pub fn take(&mut self) -> bool {
        let had = self.tokens > 0;
        self.tokens = self.tokens.saturating_sub(1);
        had
    }

    /// When it was last refilled: how recently its owner was heard from.
    pub fn last_refill(&self) -> Instant {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_spends_its_burst_then_earns_whole_tokens_up_to_the_burst() {
        let (every, now) = (Duration::from_millis(100), Instant::now());
        let mut b = TokenBucket::full(3, now);
        assert_eq!((0..5).filter(|_| b.take()).count(), 3);
        b.refill(3, every, now + Duration::from_millis(250));
        assert_eq!((0..5).filter(|_| b.take()).count(), 2);
        b.refill(3, every, now + Duration::from_secs(60));
        assert_eq!(
            (0..5).filter(|_| b.take()).count(),
            3,
            "never past the burst"
        );
    }
}
