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

/// Observed endpoints kept per member (the newest replace the oldest).
const MAX_OBSERVED: usize = 16;

/// What the node knows about members' reachability, and the relay chosen.
#[derive(Debug, Default)]
pub struct Relays {
    announced: BTreeMap<IdentityKey, Vec<SocketAddr>>,
    /// When each member's first announcement of this run arrived: of two
    /// relays without a session, the one known longer is preferred (a
    /// member that just started is the worst relay there is).
    first_seen: BTreeMap<IdentityKey, Instant>,
    observed: BTreeMap<IdentityKey, Vec<SocketAddr>>,
    /// The relay last given to the device, for the log.
    chosen: Option<IdentityKey>,
}

impl Relays {
    /// `who` announced these endpoints (its newest announcement).
    pub fn announced(&mut self, who: IdentityKey, endpoints: &[SocketAddr]) {
        self.announced.insert(who, endpoints.to_vec());
        self.first_seen.entry(who).or_insert_with(Instant::now);
    }

    /// A member reached `who` at `endpoint` (a path observation).
    pub fn observed(&mut self, who: IdentityKey, endpoint: SocketAddr) {
        let seen = self.observed.entry(who).or_default();
        if !seen.contains(&endpoint) {
            if seen.len() == MAX_OBSERVED {
                seen.remove(0);
            }
            seen.push(endpoint);
        }
    }

    /// Whether `who` is reachable at every endpoint it announces.
    pub fn is_public(&self, who: &IdentityKey) -> bool {
        let (Some(announced), Some(observed)) = (self.announced.get(who), self.observed.get(who))
        else {
            return false;
        };
        !announced.is_empty() && announced.iter().all(|e| observed.contains(e))
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

    #[test]
    fn a_member_reached_at_every_endpoint_it_announces_is_public() {
        let mut r = Relays::default();
        r.announced(id(1), &[at("203.0.113.2:51820")]);
        assert!(!r.is_public(&id(1)), "nobody reached it yet");
        r.observed(id(1), at("203.0.113.2:51820"));
        assert!(r.is_public(&id(1)));
    }

    #[test]
    fn a_member_behind_a_nat_is_not_public_even_once_it_announces_its_reflexive_endpoint() {
        let mut r = Relays::default();
        // Its NAT's address (reflexive, observed) and its own private one.
        r.announced(id(2), &[at("203.0.113.18:51820"), at("198.51.100.2:51820")]);
        r.observed(id(2), at("203.0.113.18:51820"));
        assert!(!r.is_public(&id(2)));
    }
}
