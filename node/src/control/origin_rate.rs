//! How many records each origin may have this node take in: a token
//! bucket per origin member, checked before a record is handed to the
//! owner (and so before its signature is checked or anything is stored).
//!
//! An honest member publishes an announcement every minute or more, and
//! one observation per path that changed: a restart of a member with many
//! peers is the largest burst, about one record per peer. A member that
//! floods valid records beyond that costs each node one hash-map lookup per
//! record; what it sends over its budget is neither forwarded nor handed
//! on. The table is bounded: past [`MAX_ORIGINS`], the origin heard from
//! longest ago is forgotten (it starts again with a full bucket).
//!
//! Sans-IO: the caller passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::bucket::TokenBucket;

/// Records an origin may send in a burst.
pub const BURST: u32 = 256;
/// An origin earns one more record this often (10 a second).
pub const REFILL: Duration = Duration::from_millis(100);
/// Origins remembered.
pub const MAX_ORIGINS: usize = 4096;

/// A token bucket per origin.
#[derive(Debug, Default)]
pub(super) struct OriginRate {
    buckets: HashMap<PeerId, TokenBucket>,
}

impl OriginRate {
    /// Takes one record from `origin`'s budget at `now`; false if it is
    /// spent.
    pub(super) fn allow(&mut self, origin: PeerId, now: Instant) -> bool {
        if !self.buckets.contains_key(&origin) && self.buckets.len() >= MAX_ORIGINS {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last_refill())
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.buckets.remove(&oldest);
            }
        }
        let bucket = self
            .buckets
            .entry(origin)
            .or_insert(TokenBucket::full(BURST, now));
        bucket.refill(BURST, REFILL, now);
        bucket.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_spends_its_burst_then_earns_ten_records_a_second() {
        let (mut rate, origin, now) = (OriginRate::default(), PeerId::random(), Instant::now());
        assert_eq!(
            (0..1000).filter(|_| rate.allow(origin, now)).count(),
            BURST as usize
        );
        let other = PeerId::random();
        assert!(rate.allow(other, now), "another origin has its own budget");
        let later = now + Duration::from_secs(1);
        assert_eq!((0..1000).filter(|_| rate.allow(origin, later)).count(), 10);
    }

    #[test]
    fn the_table_stays_bounded() {
        let (mut rate, now) = (OriginRate::default(), Instant::now());
        for i in 0..MAX_ORIGINS + 10 {
            rate.allow(PeerId::random(), now + Duration::from_millis(i as u64));
        }
        assert_eq!(rate.buckets.len(), MAX_ORIGINS);
    }
}
