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
use crate::noise::{PendingInitiation, PresharedKey, PublicKey, Tai64N};
use crate::session::Session;
use crate::timers::{TimerTable, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME};

/// Index of a peer in its device, stable for the device's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

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

/// A handshake we initiated, waiting for its response.
#[derive(Debug)]
pub(crate) struct Initiated {
    pub pending: PendingInitiation,
    pub local_index: u32,
}

/// State of one peer.
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
    pub handshake: Option<Initiated>,
    /// When the current run of handshake attempts began.
    pub attempt_started: Option<Instant>,
    /// When the last initiation was sent.
    pub last_initiation_sent: Option<Instant>,
    pub current: Option<Session>,
    pub previous: Option<Session>,
    pub next: Option<Session>,
    /// Greatest initiation timestamp accepted from this peer.
    pub last_timestamp: Option<Tai64N>,
    pub last_initiation_received: Option<Instant>,
    pub last_handshake: Option<Instant>,
    pub timers: TimerTable,
    pub queue: VecDeque<Vec<u8>>,
    pub stats: PeerStats,
    /// Path-MTU discovery toward the current endpoint.
    pub edge: Option<crate::device::path::Edge>,
    /// The local interface MTU toward the endpoint, if the caller said.
    pub local_mtu: Option<u16>,
    /// Round-trip time of the last handshake we initiated.
    pub handshake_rtt: Option<Duration>,
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
            handshake: None,
            attempt_started: None,
            last_initiation_sent: None,
            current: None,
            previous: None,
            next: None,
            last_timestamp: None,
            last_initiation_received: None,
            last_handshake: None,
            timers: TimerTable::default(),
            queue: VecDeque::new(),
            stats: PeerStats::default(),
            edge: None,
            local_mtu: None,
            handshake_rtt: None,
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

    /// The session to send on, if one is still within its limits.
    pub fn sending_session(&mut self, now: Instant) -> Option<&mut Session> {
        self.current.as_mut().filter(|s| {
            now.saturating_duration_since(s.established) < REJECT_AFTER_TIME
                && s.send_counter() < crate::replay::REJECT_AFTER_MESSAGES
        })
    }

    /// Whether [`Peer::sending_session`] would give a session.
    pub fn can_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| {
            now.saturating_duration_since(s.established) < REJECT_AFTER_TIME
                && s.send_counter() < crate::replay::REJECT_AFTER_MESSAGES
        })
    }

    /// Whether sending on the current session should start a new handshake:
    /// we initiated it and it is past its age or message budget.
    pub fn wants_rekey_on_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| {
            (s.initiator && now.saturating_duration_since(s.established) >= REKEY_AFTER_TIME)
                || s.send_counter() >= REKEY_AFTER_MESSAGES
        })
    }

    /// The session (current, previous or next) with our index `local`.
    pub fn session_mut(&mut self, local: u32) -> Option<(Slot, &mut Session)> {
        for (slot, s) in [
            (Slot::Current, self.current.as_mut()),
            (Slot::Previous, self.previous.as_mut()),
            (Slot::Next, self.next.as_mut()),
        ] {
            if let Some(s) = s.filter(|s| s.local_index == local) {
                return Some((slot, s));
            }
        }
        None
    }

    /// Every local index this peer holds (sessions and handshake).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.local_index)
            .chain(self.handshake.as_ref().map(|h| h.local_index))
    }
}

/// Which of a peer's sessions a packet matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Next,
}
