//! What the device knows about one peer, composed of one part per feature.
//!
//! Each part is a type in its own module under `peer/`, and that module is
//! the only place its fields change; the device's features (`device/*.rs`)
//! call its methods:
//!
//! - `keys`: the three sessions and the handshake state;
//! - `path`: the endpoint, the relay named and the relay in use;
//! - `relay`: hole punching while relayed, and the relaying budget;
//! - `edge`: path-MTU discovery toward the endpoint;
//! - `nat`: the keepalive interval, pings and what they say of NATs;
//! - `reassembly`: inner packets arriving in pieces.
//!
//! These modules import only leaves (the [`PeerId`] of `peer/id.rs`, wire
//! formats, sessions, timers); none of them imports the device, and none
//! sends, draws randomness or reads the clock. `Peers` is the device's
//! table of them, indexed by [`PeerId`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip_network::IpNetwork;

use crate::cookie::CookieGenerator;
use crate::nat::Keepalive;
use crate::noise::{PresharedKey, PublicKey};
use crate::timers::TimerTable;

pub(crate) mod edge;
mod id;
pub(crate) mod keys;
pub(crate) mod nat;
pub(crate) mod path;
pub(crate) mod reassembly;
pub(crate) mod relay;

pub(crate) use edge::PathMtu;
pub use id::PeerId;
pub(crate) use keys::{Initiated, Keys, Slot};
pub(crate) use nat::PeerNat;
pub(crate) use path::Path;
pub(crate) use reassembly::Reassembly;
pub(crate) use relay::RelayBudget;

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

/// State of one peer: who it is, what waits for it, and each feature's
/// part in the feature's own type (which alone changes it).
#[derive(Debug)]
pub(crate) struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub psk: PresharedKey,
    /// Inner addresses routed to, and accepted from, this peer.
    pub allowed_ips: Vec<IpNetwork>,
    /// mac1/mac2 of the handshake messages we send it.
    pub cookie: CookieGenerator,
    /// Sessions and the handshake.
    pub keys: Keys,
    /// Endpoint, relay and hole punching.
    pub path: Path,
    /// Path-MTU discovery toward the endpoint.
    pub mtu: PathMtu,
    /// Keepalive interval, pings and what they tell about NATs.
    pub nat: PeerNat,
    /// Inner packets arriving in pieces.
    pub reassembly: Reassembly,
    /// Bytes this node may still relay for this peer.
    pub relay_budget: RelayBudget,
    /// Every feature arms its own timers here.
    pub timers: TimerTable,
    /// Inner packets waiting for a session.
    pub queue: VecDeque<Vec<u8>>,
    pub stats: PeerStats,
    /// When an authenticated packet last came from this peer.
    pub last_received: Option<Instant>,
    /// Removed from the mesh (revoked); the slot stays so ids are stable.
    pub removed: bool,
}

impl Peer {
    /// A peer as `cfg` describes it; an `Auto` keepalive starts at
    /// `auto_keepalive`.
    pub fn new(cfg: PeerConfig, auto_keepalive: Option<Duration>) -> Self {
        Self {
            cookie: CookieGenerator::new(cfg.public_key.as_bytes()),
            name: cfg.name,
            public_key: cfg.public_key,
            psk: cfg.preshared_key.unwrap_or_default(),
            allowed_ips: cfg.allowed_ips,
            keys: Keys::default(),
            path: Path::new(cfg.endpoint),
            mtu: PathMtu::default(),
            nat: PeerNat::new(cfg.keepalive, auto_keepalive),
            reassembly: Reassembly::default(),
            relay_budget: RelayBudget::default(),
            timers: TimerTable::default(),
            queue: VecDeque::new(),
            stats: PeerStats::default(),
            last_received: None,
            removed: false,
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
