//! Where traffic to a peer goes: its direct endpoint, the relay named for
//! it and the relay in use, and hole punching while relayed.
//!
//! A peer is relayed when the device says so (direct initiations went
//! unanswered, or a packet arrived through a relay while nothing arrived
//! directly for [`DIRECT_GRACE`]); any authenticated direct packet makes it
//! direct again. This module is the only place the endpoint and the relay
//! in use change. It never decides on its own when to switch (the device
//! does, in `device/relay.rs`), never sends and never reads the clock; a
//! relayed packet must never move the direct endpoint, and punches go out
//! only while the peer is relayed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::id::PeerId;
use super::relay::Punch;
use crate::noise::PublicKey;

/// A packet arriving through a relay switches the peer to that relay only
/// if nothing arrived directly for this long (packets relayed before a
/// switch to direct are still in flight for a moment).
pub const DIRECT_GRACE: Duration = Duration::from_secs(15);
/// An endpoint learned from gossip replaces the current one only if the peer
/// has not been heard from directly for this long: a packet the peer sent
/// itself is better evidence than what others report.
pub const GOSSIP_ENDPOINT_GRACE: Duration = Duration::from_secs(15);

/// Where a datagram came from or goes: straight over the socket, or inside
/// a relay member's session on behalf of the peer with key `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    Direct(SocketAddr),
    Relayed { relay: PeerId, peer: PublicKey },
}

/// The path traffic to a peer takes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPath {
    /// Straight to its endpoint (`None`: none known yet).
    Direct(Option<SocketAddr>),
    /// Through the member `relay`.
    Relayed {
        /// The relay member.
        relay: PeerId,
    },
}

/// The path state of one peer.
#[derive(Debug, Default)]
pub(crate) struct Path {
    /// The direct endpoint; kept while relayed, retried in the background.
    endpoint: Option<SocketAddr>,
    /// The member the caller named to relay through when no direct path
    /// works ([`crate::Device::set_relay`]).
    relay: Option<PeerId>,
    /// The relay in use: while set, everything for this peer goes through
    /// it.
    via: Option<PeerId>,
    /// When an authenticated packet last arrived from this peer directly.
    last_direct: Option<Instant>,
    /// Hole punching toward this peer while it is relayed.
    punch: Punch,
}

impl Path {
    /// A path to `endpoint`, direct.
    pub fn new(endpoint: Option<SocketAddr>) -> Self {
        Self {
            endpoint,
            ..Self::default()
        }
    }

    /// The direct endpoint, relayed or not.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// The relay in use.
    pub fn via(&self) -> Option<PeerId> {
        self.via
    }

    /// The direct endpoint, if the peer is not relayed.
    pub fn direct_endpoint(&self) -> Option<SocketAddr> {
        self.endpoint.filter(|_| self.via.is_none())
    }

    /// Whether anything can be sent: an endpoint or a relay in use.
    pub fn reachable(&self) -> bool {
        self.endpoint.is_some() || self.via.is_some()
    }

    /// The path traffic takes now.
    pub fn peer_path(&self) -> PeerPath {
        match self.via {
            Some(relay) => PeerPath::Relayed { relay },
            None => PeerPath::Direct(self.endpoint),
        }
    }

    /// Moves the endpoint to `to`. Returns the old one if it changed.
    pub fn move_endpoint(&mut self, to: SocketAddr) -> Option<Option<SocketAddr>> {
        (self.endpoint != Some(to)).then(|| self.endpoint.replace(to))
    }

    /// Forgets the endpoint (the peer was removed).
    pub fn clear_endpoint(&mut self) {
        self.endpoint = None;
    }

    /// Names `relay` for when no direct path works. Returns whether the
    /// relay in use was dropped (it was another).
    pub fn name_relay(&mut self, relay: Option<PeerId>) -> bool {
        self.relay = relay;
        let dropped = self.via.is_some() && self.via != relay;
        if dropped {
            self.leave_relay();
        }
        dropped
    }

    /// The member `relay` relays no more. Returns whether it was the relay
    /// in use.
    pub fn forget_relay(&mut self, relay: PeerId) -> bool {
        if self.relay == Some(relay) {
            self.relay = None;
        }
        let dropped = self.via == Some(relay);
        if dropped {
            self.leave_relay();
        }
        dropped
    }

    /// No longer relayed, though not heard from directly: a running punch
    /// burst stops (punching is only for relayed pairs).
    fn leave_relay(&mut self) {
        self.via = None;
        self.punch.stop_burst();
    }

    /// Switches to the named relay if not relayed yet. Returns the relay it
    /// switched to; `None` if already relayed or no relay is named.
    pub fn use_named_relay(&mut self, now: Instant) -> Option<PeerId> {
        if self.via.is_some() {
            return None;
        }
        let relay = self.relay?;
        self.relay_through(relay, now);
        Some(relay)
    }

    /// An authenticated packet arrived directly at `now`. Returns, if the
    /// peer was relayed, whether a punch burst opened the direct path.
    pub fn heard_directly(&mut self, now: Instant) -> Option<bool> {
        self.last_direct = Some(now);
        self.via.take()?;
        Some(self.punch.direct(now))
    }

    /// An authenticated packet arrived through `relay` at `now`: the peer
    /// is relayed through it unless it was heard from directly within
    /// [`DIRECT_GRACE`]. Returns whether it switched.
    pub fn heard_through(&mut self, relay: PeerId, now: Instant) -> bool {
        let direct_recently = self
            .last_direct
            .is_some_and(|t| now.saturating_duration_since(t) < DIRECT_GRACE);
        let switch = self.via != Some(relay) && !direct_recently;
        if switch {
            self.relay_through(relay, now);
        }
        switch
    }

    fn relay_through(&mut self, relay: PeerId, now: Instant) {
        self.via = Some(relay);
        self.punch.relayed(now);
    }

    /// Whether candidates are offered: relayed, over a session.
    pub fn offering(&self, has_session: bool) -> bool {
        self.via.is_some() && has_session
    }

    /// Whether the peer's offers are taken: only while it is relayed. A
    /// peer reached directly has no use for punches, and taking its offer
    /// would let it aim this node's punches wherever it likes.
    pub fn takes_offers(&self) -> bool {
        self.via.is_some()
    }

    /// The targets to punch at now, if a burst send is due and the peer is
    /// still relayed (a burst of a peer no longer relayed is ended); the
    /// send is counted as made.
    pub fn due_punches(&mut self, now: Instant) -> Option<&[SocketAddr]> {
        if self.via.is_none() {
            self.punch.stop_burst();
            return None;
        }
        self.punch.due_punches(now)
    }

    /// Hole punching toward the peer.
    pub fn punch(&self) -> &Punch {
        &self.punch
    }

    /// Hole punching toward the peer, for changing.
    pub fn punch_mut(&mut self) -> &mut Punch {
        &mut self.punch
    }
}
