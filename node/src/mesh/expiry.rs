//! When members' certificates run out: the moment the earliest one does,
//! so the node can drop that member from its data and control planes on
//! time (a timer, not the next restart or gossip round).
//!
//! It keeps only a lower bound of the earliest expiry among the members
//! it was told of ([`Expiry::note`]); when that moment comes it looks at
//! the members once ([`Expiry::take_expired`]), returns those whose
//! certificates are over and computes the next moment. A renewal that
//! replaced a certificate makes the bound early, never late: an early
//! look finds nothing and moves on. It decides nothing about the member
//! (the gossip service removes it) and never reads the store.

use std::time::{Duration, Instant};

use weft_protocol::membership::IdentityKey;

use super::members::MemberTable;

/// The earliest known expiry. See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expiry {
    next_unix: Option<u64>,
}

impl Expiry {
    /// A member's certificate ends at `not_after` (unix time).
    pub fn note(&mut self, not_after: u64) {
        self.next_unix = Some(self.next_unix.map_or(not_after, |n| n.min(not_after)));
    }

    /// When to look next, given the wall clock says `now_unix` at `now`.
    /// Re-read against the clock at least every minute, so a clock that
    /// steps cannot strand it.
    pub fn next_deadline(&self, now: Instant, now_unix: u64) -> Option<Instant> {
        let at = self.next_unix?;
        Some(now + Duration::from_secs(at.saturating_sub(now_unix).min(60)))
    }

    /// Whether the earliest expiry has come.
    pub fn due(&self, now_unix: u64) -> bool {
        self.next_unix.is_some_and(|at| now_unix >= at)
    }

    /// The members whose certificates have ended at `now_unix`; the next
    /// moment becomes the earliest end among the others.
    pub fn take_expired(&mut self, members: &MemberTable, now_unix: u64) -> Vec<IdentityKey> {
        let mut expired = Vec::new();
        self.next_unix = None;
        for m in members.iter() {
            if now_unix >= m.cert.not_after {
                expired.push(m.cert.identity);
            } else {
                self.note(m.cert.not_after);
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_earliest_expiry_noted_and_never_more_than_a_minute_away() {
        let now = Instant::now();
        let mut e = Expiry::default();
        assert_eq!(e.next_deadline(now, 1000), None);
        e.note(1030);
        e.note(1010);
        e.note(1500);
        assert_eq!(
            e.next_deadline(now, 1000),
            Some(now + Duration::from_secs(10))
        );
        assert!(!e.due(1009));
        assert!(e.due(1010));
        let mut far = Expiry::default();
        far.note(1_000_000);
        assert_eq!(
            far.next_deadline(now, 1000),
            Some(now + Duration::from_secs(60))
        );
        // A clock that stepped past the expiry: due at once.
        assert_eq!(e.next_deadline(now, 5000), Some(now));
    }
}
