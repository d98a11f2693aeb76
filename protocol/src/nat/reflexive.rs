//! Where other members say they see this node's main socket (its reflexive
//! address), who said so, and which of those addresses the node may
//! announce as its own.
//!
//! A report is one member's word: a pong answering this node's ping (sealed
//! in that member's session) or a path observation that member signed about
//! this node (gossip). A member can put any address in either, so one report
//! proves nothing, and an address announced as this node's is where every
//! other member sends its traffic. The rule (`docs/protocol.md` §12.1):
//!
//! - each member counts once, with its latest report, for
//!   [`REPORT_TTL`] after it;
//! - an address is **verified** when at least [`VERIFY_QUORUM`] distinct
//!   members currently report it: one lying member cannot make it so;
//! - only verified addresses are announced, ahead of the node's own ones
//!   (a member behind a NAT is mostly reached from outside);
//! - an address reported by fewer is still offered as a hole-punching
//!   candidate, after the node's own ones: a punch moves no endpoint until
//!   an authenticated packet answers from there, so the worst a lie costs is
//!   one bounded burst at the wrong address.
//!
//! Addresses that are the node's own (no NAT between it and the reporter)
//! are not reflexive and are left to the caller. This module keeps no
//! sockets and reads no clock; every input takes `now`. It is bounded by
//! [`MAX_REPORTERS`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::membership::validator::MAX_ANNOUNCED_ENDPOINTS;
use crate::noise::PublicKey;
use crate::wire::control::MAX_CANDIDATES;

/// Distinct members that must report an address before it is announced.
pub const VERIFY_QUORUM: usize = 2;
/// A report counts for this long. Members that exchange traffic with this
/// node report again at every handshake (about every 2 min) and, behind a
/// NAT, at every keepalive ping (at most 120 s apart), so a live address is
/// never dropped; one nobody confirms any more fades out.
pub const REPORT_TTL: Duration = Duration::from_secs(10 * 60);
/// Members whose reports are kept; past it, the oldest report goes.
pub const MAX_REPORTERS: usize = 64;
/// Verified reflexive addresses announced at most (one per NAT a
/// multi-homed member sits behind, usually one).
pub const MAX_ANNOUNCED_REFLEXIVE: usize = 2;
/// Addresses reported by too few members offered as punch candidates at
/// most.
pub const MAX_UNVERIFIED_CANDIDATES: usize = 2;
const _: () = assert!(MAX_UNVERIFIED_CANDIDATES < MAX_CANDIDATES);

#[derive(Debug, Clone, Copy)]
struct Report {
    reporter: PublicKey,
    address: SocketAddr,
    at: Instant,
}

/// What members report of this node's reflexive address. See the module
/// documentation.
#[derive(Debug, Default)]
pub struct ReflexiveReports {
    /// One per reporter, oldest report first.
    reports: Vec<Report>,
}

/// This node's endpoints for the rest of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnEndpoints {
    /// What it announces: verified reflexive addresses, then its own.
    pub announced: Vec<SocketAddr>,
    /// What it offers for hole punching: the announced ones, then
    /// reflexive addresses too few members reported.
    pub candidates: Vec<SocketAddr>,
}

impl ReflexiveReports {
    /// `reporter` says it sees this node at `address` (its latest word
    /// replaces its earlier one). Returns whether the verified addresses
    /// changed.
    pub fn report(&mut self, reporter: PublicKey, address: SocketAddr, now: Instant) -> bool {
        let before = self.verified(now, |_| true);
        self.reports.retain(|r| r.reporter != reporter);
        if self.reports.len() >= MAX_REPORTERS {
            self.reports.remove(0);
        }
        self.reports.push(Report {
            reporter,
            address,
            at: now,
        });
        self.verified(now, |_| true) != before
    }

    /// Withdraws `reporter`'s report (it now sees the node at one of its
    /// own addresses).
    pub fn withdraw(&mut self, reporter: &PublicKey) {
        self.reports.retain(|r| r.reporter != *reporter);
    }

    /// Forgets every report (the node's own addresses changed: where it was
    /// seen before says nothing about where it is now).
    pub fn clear(&mut self) {
        self.reports.clear();
    }

    /// How many distinct members currently report `address`, counting only
    /// those `counts` accepts (current members).
    pub fn reporters(
        &self,
        address: SocketAddr,
        now: Instant,
        counts: impl Fn(&PublicKey) -> bool,
    ) -> usize {
        self.live(now, &counts)
            .filter(|r| r.address == address)
            .count()
    }

    /// Reported addresses with their number of reporters, most reported
    /// first, then most recently reported.
    fn tally(&self, now: Instant, counts: impl Fn(&PublicKey) -> bool) -> Vec<(SocketAddr, usize)> {
        let mut tally: Vec<(SocketAddr, usize, Instant)> = Vec::new();
        for r in self.live(now, &counts) {
            match tally.iter_mut().find(|(a, _, _)| *a == r.address) {
                Some((_, n, at)) => {
                    *n += 1;
                    *at = (*at).max(r.at);
                }
                None => tally.push((r.address, 1, r.at)),
            }
        }
        tally.sort_by(|x, y| y.1.cmp(&x.1).then(y.2.cmp(&x.2)));
        tally.into_iter().map(|(a, n, _)| (a, n)).collect()
    }

    fn live<'a>(
        &'a self,
        now: Instant,
        counts: &'a impl Fn(&PublicKey) -> bool,
    ) -> impl Iterator<Item = &'a Report> + 'a {
        self.reports.iter().filter(move |r| {
            now.saturating_duration_since(r.at) < REPORT_TTL && counts(&r.reporter)
        })
    }

    /// The verified addresses: reported by at least [`VERIFY_QUORUM`]
    /// members `counts` accepts, most reported first.
    pub fn verified(&self, now: Instant, counts: impl Fn(&PublicKey) -> bool) -> Vec<SocketAddr> {
        self.tally(now, counts)
            .into_iter()
            .filter(|(_, n)| *n >= VERIFY_QUORUM)
            .map(|(a, _)| a)
            .collect()
    }

    /// This node's endpoints given its own addresses `local`: verified
    /// reflexive addresses first, then `local`, announced; addresses fewer
    /// members reported only among the punch candidates, last.
    pub fn own_endpoints(
        &self,
        local: &[SocketAddr],
        now: Instant,
        counts: impl Fn(&PublicKey) -> bool,
    ) -> OwnEndpoints {
        let tally = self.tally(now, counts);
        let fresh = |a: &SocketAddr| !local.contains(a);
        let verified = tally
            .iter()
            .filter(|(a, n)| *n >= VERIFY_QUORUM && fresh(a))
            .map(|(a, _)| *a)
            .take(MAX_ANNOUNCED_REFLEXIVE);
        let announced: Vec<SocketAddr> = verified
            .chain(local.iter().copied())
            .take(MAX_ANNOUNCED_ENDPOINTS)
            .collect();
        let unverified: Vec<SocketAddr> = tally
            .iter()
            .filter(|(a, n)| *n < VERIFY_QUORUM && fresh(a))
            .map(|(a, _)| *a)
            .take(MAX_UNVERIFIED_CANDIDATES)
            .collect();
        // Unverified addresses keep their room even beside many of the
        // node's own: they are what two members behind NATs punch through.
        let mut candidates: Vec<SocketAddr> = announced
            .iter()
            .copied()
            .take(MAX_CANDIDATES - unverified.len())
            .collect();
        candidates.extend(unverified);
        OwnEndpoints {
            announced,
            candidates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.168.1.10:51820";
    const NAT: &str = "198.51.100.7:40001";
    const EVIL: &str = "203.0.113.66:51820";

    fn all(_: &PublicKey) -> bool {
        true
    }

    #[test]
    fn one_members_report_is_offered_for_punching_but_never_announced() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        assert!(!r.report(key(1), at(EVIL), now));
        let own = r.own_endpoints(&[at(LOCAL)], now, all);
        assert_eq!(own.announced, vec![at(LOCAL)]);
        assert_eq!(own.candidates, vec![at(LOCAL), at(EVIL)]);
    }

    #[test]
    fn the_same_member_reporting_twice_is_still_one_member() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(EVIL), now);
        r.report(key(1), at(EVIL), now + Duration::from_secs(1));
        assert!(r.verified(now, all).is_empty());
        assert_eq!(r.reporters(at(EVIL), now, all), 1);
    }

    #[test]
    fn two_members_agreeing_verify_an_address_which_is_announced_first() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(NAT), now);
        assert!(r.report(key(2), at(NAT), now));
        let own = r.own_endpoints(&[at(LOCAL)], now, all);
        assert_eq!(own.announced, vec![at(NAT), at(LOCAL)]);
        assert_eq!(own.candidates, vec![at(NAT), at(LOCAL)]);
    }

    #[test]
    fn a_liar_beside_two_honest_members_is_outvoted_and_ranked_below_the_nodes_own_addresses() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(NAT), now);
        r.report(key(2), at(NAT), now);
        r.report(key(3), at(EVIL), now + Duration::from_secs(1));
        let own = r.own_endpoints(&[at(LOCAL)], now + Duration::from_secs(1), all);
        assert_eq!(own.announced, vec![at(NAT), at(LOCAL)]);
        assert_eq!(own.candidates, vec![at(NAT), at(LOCAL), at(EVIL)]);
    }

    #[test]
    fn a_member_changing_its_report_withdraws_its_earlier_vote() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(NAT), now);
        r.report(key(2), at(NAT), now);
        assert!(r.report(key(2), at(EVIL), now));
        assert!(r.verified(now, all).is_empty());
    }

    #[test]
    fn reports_fade_after_their_lifetime_and_members_no_longer_current_do_not_count() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(NAT), now);
        r.report(key(2), at(NAT), now);
        assert_eq!(r.verified(now + REPORT_TTL, all), Vec::<SocketAddr>::new());
        assert!(r.verified(now, |k| *k != key(2)).is_empty());
        assert_eq!(r.verified(now, all), vec![at(NAT)]);
    }

    #[test]
    fn the_table_keeps_at_most_its_bound_of_members() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        for n in 0..(MAX_REPORTERS + 10) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(n as u64).to_le_bytes());
            r.report(PublicKey(k), at(NAT), now);
        }
        assert_eq!(r.reports.len(), MAX_REPORTERS);
        assert_eq!(r.reporters(at(NAT), now, all), MAX_REPORTERS);
    }

    #[test]
    fn a_reported_address_that_is_the_nodes_own_is_not_listed_twice() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(LOCAL), now);
        r.report(key(2), at(LOCAL), now);
        let own = r.own_endpoints(&[at(LOCAL)], now, all);
        assert_eq!(own.announced, vec![at(LOCAL)]);
        assert_eq!(own.candidates, vec![at(LOCAL)]);
    }

    #[test]
    fn unverified_candidates_keep_room_beside_many_own_addresses() {
        let now = Instant::now();
        let mut r = ReflexiveReports::default();
        r.report(key(1), at(NAT), now);
        let local: Vec<SocketAddr> = (1..=8)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 51820)))
            .collect();
        let own = r.own_endpoints(&local, now, all);
        assert_eq!(own.announced, local);
        assert_eq!(own.candidates.len(), MAX_CANDIDATES);
        assert_eq!(own.candidates.last(), Some(&at(NAT)));
    }
}
