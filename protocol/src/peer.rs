//! What the device knows about one peer: configuration, sessions, the
//! handshake in flight, timers, queued packets and counters.
//!
//! The peer holds up to three sessions, as WireGuard does: `current` (used
//! to send), `previous` (kept so packets still in flight under the old keys
//! are accepted after a rekey) and `next` (a session we answered as
//! responder, promoted once the initiator's first packet proves it has the
//! keys). The decisions that need the whole device (indices, randomness,
//! output queues) live in [`crate::device`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip_network::IpNetwork;

use crate::cookie::CookieGenerator;
use crate::nat::Keepalive;
use crate::noise::{PresharedKey, PublicKey};
use crate::timers::TimerTable;

mod id;
pub(crate) mod keys;

pub use id::PeerId;
pub(crate) use keys::{Initiated, Keys, Slot};

/// How a peer is configured.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// Optional pre-shared key (all zero when absent).
    pub preshared_key: Option<PresharedKey>,
    /// Where to send until the peer is heard from somewhere else.
    pub endpoint: Option<SocketAddr>,
    /// Inner addresses routed to, and accepted from, this peer.
    pub allowed_ips: Vec<IpNetwork>,
    /// Persistent keepalives, to keep NAT mappings open: off, a fixed
    /// interval, or chosen from the measured NAT mapping lifetime.
    pub keepalive: Keepalive,
}

/// Counters of one peer, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Inner bytes delivered to the TUN device from this peer.
    pub rx_bytes: u64,
    /// Inner packets delivered from this peer.
    pub rx_packets: u64,
    /// Inner bytes sent to this peer.
    pub tx_bytes: u64,
    /// Inner packets sent to this peer.
    pub tx_packets: u64,
    /// Handshakes that produced a session.
    pub handshakes_completed: u64,
    /// Handshake attempts given up after REKEY_ATTEMPT_TIME.
    pub handshakes_failed: u64,
    /// Initiations sent (first tries and retransmissions).
    pub initiations_sent: u64,
    /// Keepalives sent (passive and persistent).
    pub keepalives_sent: u64,
    /// Times the endpoint moved to a new source address.
    pub endpoint_changes: u64,
}

/// State of one peer: who it is, and each feature's part, in the feature's
/// own type.
#[derive(Debug)]
pub(crate) struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub psk: PresharedKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNetwork>,
    /// How the persistent keepalive is chosen.
    pub keepalive: Keepalive,
    /// The persistent keepalive interval in use.
    pub persistent_keepalive: Option<Duration>,
    /// A ping waiting for its pong: id, when sent, tries so far.
    pub ping: Option<(u32, Instant, u8)>,
    /// Smoothed round-trip time measured by pings.
    pub nat_rtt: Option<Duration>,
    /// Whether the address this peer last reported for our main socket was
    /// not one of ours (a NAT between us), from its pongs.
    pub sees_nat: Option<bool>,
    /// Authenticated packets received in a row at short gaps.
    pub stream: u8,
    /// Discovery pings unanswered since the last pong.
    pub discovery_misses: u8,
    pub cookie: CookieGenerator,
    /// Sessions and the handshake.
    pub keys: Keys,
    pub timers: TimerTable,
    pub queue: VecDeque<Vec<u8>>,
    pub stats: PeerStats,
    /// Path-MTU discovery toward the current endpoint.
    pub edge: Option<crate::device::path::Edge>,
    /// The local interface MTU toward the endpoint, if the caller said.
    pub local_mtu: Option<u16>,
    /// Inner packets arriving in pieces.
    pub partials: Vec<crate::device::fragment::Partial>,
    /// When an authenticated packet last came from this peer.
    pub last_received: Option<Instant>,
    /// Removed from the mesh (revoked); the slot stays so ids are stable.
    pub removed: bool,
    /// A size to try first when discovery toward this peer starts.
    pub pmtu_prior: Option<u16>,
    /// What this node stored about its path to the peer, for the first edge.
    pub path_hint: Option<crate::device::PathHint>,
    /// The member the caller named to relay through when no direct path
    /// works ([`crate::Device::set_relay`]).
    pub relay: Option<PeerId>,
    /// The relay in use: while set, everything for this peer goes through
    /// it; `endpoint` stays the direct endpoint, retried in the background.
    pub via: Option<PeerId>,
    /// When an authenticated packet last arrived from this peer directly.
    pub last_direct: Option<Instant>,
    /// Hole punching toward this peer while it is relayed.
    pub punch: crate::device::relay::Punch,
    /// Bytes this peer may still have relayed (token bucket) and when the
    /// bucket was last filled.
    pub relay_budget: Option<(Instant, u64)>,
}

impl Peer {
    pub fn new(cfg: PeerConfig) -> Self {
        Self {
            cookie: CookieGenerator::new(cfg.public_key.as_bytes()),
            name: cfg.name,
            public_key: cfg.public_key,
            psk: cfg.preshared_key.unwrap_or_default(),
            endpoint: cfg.endpoint,
            allowed_ips: cfg.allowed_ips,
            // Zero means off, as in WireGuard; armed, it would re-fire at
            // the same instant forever.
            persistent_keepalive: match cfg.keepalive {
                Keepalive::Fixed(d) if !d.is_zero() => Some(d),
                _ => None,
            },
            keepalive: match cfg.keepalive {
                Keepalive::Fixed(d) if d.is_zero() => Keepalive::Off,
                k => k,
            },
            ping: None,
            nat_rtt: None,
            sees_nat: None,
            stream: 0,
            discovery_misses: 0,
            keys: Keys::default(),
            timers: TimerTable::default(),
            queue: VecDeque::new(),
            stats: PeerStats::default(),
            edge: None,
            local_mtu: None,
            partials: Vec::new(),
            last_received: None,
            removed: false,
            pmtu_prior: None,
            path_hint: None,
            relay: None,
            via: None,
            last_direct: None,
            punch: Default::default(),
            relay_budget: None,
        }
    }
}

/// Every peer of a device, indexed by [`PeerId`].
///
/// Slots are only ever added (a removed peer keeps its slot, marked
/// removed), so an id this table handed out always indexes a peer: indexing
/// with one cannot panic. Ids from outside the device (the public API) go
/// through [`Peers::get`] instead.
#[derive(Debug, Default)]
pub(crate) struct Peers(Vec<Peer>);

impl Peers {
    /// The id the next [`Peers::push`] gives.
    pub fn next_id(&self) -> PeerId {
        PeerId(self.0.len() as u32)
    }

    /// Adds `peer` in a new slot.
    pub fn push(&mut self, peer: Peer) -> PeerId {
        let id = self.next_id();
        self.0.push(peer);
        id
    }

    /// The peer `id`, if the id is one of this table's.
    pub fn get(&self, id: PeerId) -> Option<&Peer> {
        self.0.get(id.0 as usize)
    }

    /// The peer `id` for changing, if the id is one of this table's.
    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.0.get_mut(id.0 as usize)
    }

    /// Number of slots (removed peers included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Every id, without borrowing the table (so the loop body may change
    /// the device).
    pub fn ids(&self) -> std::iter::Map<std::ops::Range<u32>, fn(u32) -> PeerId> {
        (0..self.0.len() as u32).map(PeerId as fn(u32) -> PeerId)
    }

    /// Every peer.
    pub fn iter(&self) -> std::slice::Iter<'_, Peer> {
        self.0.iter()
    }

    /// Every peer, for changing.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Peer> {
        self.0.iter_mut()
    }
}

impl std::ops::Index<PeerId> for Peers {
    type Output = Peer;

    fn index(&self, id: PeerId) -> &Peer {
        &self.0[id.0 as usize]
    }
}

impl std::ops::IndexMut<PeerId> for Peers {
    fn index_mut(&mut self, id: PeerId) -> &mut Peer {
        &mut self.0[id.0 as usize]
    }
}
