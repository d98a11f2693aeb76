//! Choosing relays: which members are public, and which of them each peer's
//! traffic falls back to when no direct path works; and this node's own
//! candidate endpoints for hole punching.
//!
//! A member counts as **public** when it announced at least one endpoint
//! and every endpoint it announces is one that some member (this one
//! included) actually reached it at, according to path observations. A
//! member behind a NAT always announces its private address too, which
//! nobody reaches, so it never counts, even once it announces the
//! reflexive endpoint its NAT gives it. This module only names relays: the
//! device decides when to use one, forwards, punches and switches paths.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use super::members::MemberTable;

use tracing::{debug, info};
use weft_protocol::membership::IdentityKey;
use weft_protocol::{Device, PeerId};

use super::Membership;

/// Members tracked, as announcers and as the subject of observations: the
/// validator's bound on origins, well above any network weft runs.
pub const MAX_TRACKED: usize = 65_536;
/// Observers remembered per member, each with the last endpoint it reached
/// the member at (the one heard from longest ago makes room). A member
/// that floods observations rewrites its own slot; it cannot push the
/// others' out.
pub const MAX_OBSERVERS: usize = 16;

/// Why an observation or announcement was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// Its subject is not a current member.
    NotAMember,
    /// [`MAX_TRACKED`] members are tracked already.
    Full,
}

impl NotKept {
    /// A short name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NotKept::NotAMember => "unknown_subject",
            NotKept::Full => "relay_table_full",
        }
    }
}

/// What the node knows about members' reachability, and the relay chosen.
///
/// Keyed only by current members (the caller says who is one, and
/// [`Relays::forget`]s a member that is revoked) and bounded: at most
/// [`MAX_TRACKED`] members, [`MAX_OBSERVERS`] observations each.
#[derive(Debug, Default)]
pub struct Relays {
    announced: BTreeMap<IdentityKey, Vec<SocketAddr>>,
    /// When each member's first announcement of this run arrived: of two
    /// relays without a session, the one known longer is preferred (a
    /// member that just started is the worst relay there is).
    first_seen: BTreeMap<IdentityKey, Instant>,
    /// Per member, who reached it where: (observer, endpoint), the
    /// observer heard from most recently last.
    observed: BTreeMap<IdentityKey, Vec<(IdentityKey, SocketAddr)>>,
    /// The relay last given to the device, for the log.
    chosen: Option<IdentityKey>,
}

impl Relays {
    /// `who` (a member: its certificate verified) announced these
    /// endpoints (its newest announcement).
    pub fn announced(&mut self, who: IdentityKey, endpoints: &[SocketAddr]) -> Result<(), NotKept> {
        if !self.announced.contains_key(&who) && self.announced.len() >= MAX_TRACKED {
            return Err(NotKept::Full);
        }
        self.announced.insert(who, endpoints.to_vec());
        self.first_seen.entry(who).or_insert_with(Instant::now);
        Ok(())
    }

    /// Member `by` (or this node) reached `who` at `endpoint` (a path
    /// observation). Kept only if `is_member` says `who` is a current
    /// member.
    pub fn observed(
        &mut self,
        by: IdentityKey,
        who: IdentityKey,
        endpoint: SocketAddr,
        is_member: impl Fn(&IdentityKey) -> bool,
    ) -> Result<(), NotKept> {
        if !is_member(&who) {
            return Err(NotKept::NotAMember);
        }
        if !self.observed.contains_key(&who) && self.observed.len() >= MAX_TRACKED {
            return Err(NotKept::Full);
        }
        let seen = self.observed.entry(who).or_default();
        seen.retain(|(observer, _)| *observer != by);
        if seen.len() >= MAX_OBSERVERS {
            seen.remove(0);
        }
        seen.push((by, endpoint));
        Ok(())
    }

    /// Forgets `who` (revoked): as a relay, as the subject of observations
    /// and as an observer.
    pub fn forget(&mut self, who: &IdentityKey) {
        self.announced.remove(who);
        self.first_seen.remove(who);
        self.observed.remove(who);
        for seen in self.observed.values_mut() {
            seen.retain(|(observer, _)| observer != who);
        }
        self.observed.retain(|_, seen| !seen.is_empty());
        if self.chosen.as_ref() == Some(who) {
            self.chosen = None;
        }
    }

    /// How many members are tracked (announced or observed).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.announced
            .keys()
            .chain(self.observed.keys())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Whether `who` is reachable at every endpoint it announces.
    pub fn is_public(&self, who: &IdentityKey) -> bool {
        let (Some(announced), Some(observed)) = (self.announced.get(who), self.observed.get(who))
        else {
            return false;
        };
        !announced.is_empty()
            && announced
                .iter()
                .all(|e| observed.iter().any(|(_, seen)| seen == e))
    }

    /// Names a relay for every peer of `device` (a public member other than
    /// the peer itself: one with a usable session first, then the one known
    /// longest) and gives the device this node's candidate endpoints.
    pub fn apply(
        &mut self,
        members: &MemberTable,
        m: &Membership,
        device: &mut Device,
        own: Vec<SocketAddr>,
    ) {
        let now = Instant::now();
        device.set_own_candidates(own);
        let me = m.identity.identity();
        let public: BTreeSet<IdentityKey> = self
            .announced
            .keys()
            .filter(|id| **id != me && self.is_public(id))
            .copied()
            .collect();
        // Public members that are device peers, those with a session first.
        let mut relays: Vec<(IdentityKey, PeerId)> = public
            .iter()
            .filter_map(|id| {
                let key = members.get(id)?.cert.noise_key;
                Some((*id, device.find_peer(&key)?))
            })
            .collect();
        relays.sort_by_key(|(id, peer)| {
            let up = device
                .peer_status(*peer, now)
                .is_some_and(|s| s.has_session);
            (!up, self.first_seen.get(id).copied(), *id)
        });
        let first = relays.first().map(|(id, _)| *id);
        if first != self.chosen {
            match first {
                Some(id) => {
                    let name = members
                        .get(&id)
                        .map(|x| x.cert.name.clone())
                        .unwrap_or_default();
                    info!(relay = %name, "relay for members without a direct path");
                }
                None => debug!("no public member to relay through"),
            }
            self.chosen = first;
        }
        let peers: Vec<PeerId> = device.peer_ids().collect();
        for peer in peers {
            let relay = relays.iter().map(|(_, r)| *r).find(|r| *r != peer);
            device.set_relay(peer, relay, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> IdentityKey {
        IdentityKey([n; 32])
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn anyone(_: &IdentityKey) -> bool {
        true
    }

    #[test]
    fn a_member_reached_at_every_endpoint_it_announces_is_public() {
        let mut r = Relays::default();
        r.announced(id(1), &[at("203.0.113.2:51820")]).unwrap();
        assert!(!r.is_public(&id(1)), "nobody reached it yet");
        r.observed(id(3), id(1), at("203.0.113.2:51820"), anyone)
            .unwrap();
        assert!(r.is_public(&id(1)));
    }

    #[test]
    fn a_member_behind_a_nat_is_not_public_even_once_it_announces_its_reflexive_endpoint() {
        let mut r = Relays::default();
        // Its NAT's address (reflexive, observed) and its own private one.
        r.announced(id(2), &[at("203.0.113.18:51820"), at("198.51.100.2:51820")])
            .unwrap();
        r.observed(id(3), id(2), at("203.0.113.18:51820"), anyone)
            .unwrap();
        assert!(!r.is_public(&id(2)));
    }

    #[test]
    fn observations_about_ten_thousand_made_up_members_are_dropped_and_track_nobody() {
        let mut r = Relays::default();
        let members = [id(1), id(2)];
        let is_member = |who: &IdentityKey| members.contains(who);
        r.observed(id(2), id(1), at("203.0.113.2:51820"), is_member)
            .unwrap();
        let mut dropped = 0;
        for n in 0..10_000u32 {
            let mut made_up = [0xEE; 32];
            made_up[..4].copy_from_slice(&n.to_be_bytes());
            let endpoint = SocketAddr::from(([203, 0, 113, (n % 250) as u8], 40_000));
            if r.observed(id(2), IdentityKey(made_up), endpoint, is_member)
                == Err(NotKept::NotAMember)
            {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 10_000);
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn a_member_flooding_observations_of_another_keeps_one_slot_and_cannot_push_the_others_out() {
        let mut r = Relays::default();
        let real = at("203.0.113.2:51820");
        r.announced(id(1), &[real]).unwrap();
        r.observed(id(2), id(1), real, anyone).unwrap();
        for n in 0..10_000u16 {
            let made_up = SocketAddr::from(([198, 51, 100, 9], 1_000 + n));
            r.observed(id(9), id(1), made_up, anyone).unwrap();
        }
        assert_eq!(r.observed[&id(1)].len(), 2, "one slot per observer");
        assert!(r.is_public(&id(1)), "the honest observation stays");
    }

    #[test]
    fn observers_per_member_are_bounded_and_the_table_is_bounded() {
        let mut r = Relays::default();
        for n in 0..100u8 {
            r.observed(id(n), id(200), at("203.0.113.2:51820"), anyone)
                .unwrap();
        }
        assert_eq!(r.observed[&id(200)].len(), MAX_OBSERVERS);
        for n in 0..MAX_TRACKED as u32 {
            let mut who = [0xAB; 32];
            who[..4].copy_from_slice(&n.to_be_bytes());
            let _ = r.observed(id(1), IdentityKey(who), at("203.0.113.3:51820"), anyone);
        }
        assert_eq!(
            r.observed(id(1), id(201), at("203.0.113.3:51820"), anyone),
            Err(NotKept::Full)
        );
        assert_eq!(r.observed.len(), MAX_TRACKED);
    }

    #[test]
    fn a_revoked_member_is_forgotten_as_relay_subject_and_observer() {
        let mut r = Relays::default();
        let e = at("203.0.113.2:51820");
        r.announced(id(1), &[e]).unwrap();
        r.observed(id(2), id(1), e, anyone).unwrap();
        r.observed(id(1), id(2), at("203.0.113.3:51820"), anyone)
            .unwrap();
        r.forget(&id(1));
        assert!(!r.is_public(&id(1)));
        assert_eq!(r.tracked(), 0, "{r:?}");
    }
}
