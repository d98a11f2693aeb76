//! The device: weft's data-plane state machine for one local interface.
//!
//! A [`Device`] owns every peer, session and timer. It performs no I/O and
//! never reads the clock; the caller drives it:
//!
//! 1. A packet read from the TUN device goes to [`Device::encapsulate`],
//!    which seals it in place and says where to send it (or queues it while
//!    a handshake runs).
//! 2. A datagram read from the UDP socket goes to [`Device::decapsulate`],
//!    which opens it in place and says whether the inner packet goes to the
//!    TUN device, or consumes it (handshakes, keepalives, cookies).
//! 3. After any input, the caller drains [`Device::poll_transmit`] (control
//!    messages, keepalives, packets released by a finished handshake) and
//!    [`Device::poll_event`], then sleeps until [`Device::poll_timeout`] and
//!    calls [`Device::handle_timeout`].
//!
//! Data packets take the direct path of steps 1 and 2, so the hot path is one
//! table lookup and one AEAD call in the caller's buffer, with no allocation.
//! Randomness (indices, ephemeral keys, jitter, cookie secrets) comes from a
//! ChaCha20 RNG seeded by the caller, so a simulation replays bit for bit.
//!
//! How the code is laid out: each peer is a [`crate::peer`] composed of one
//! part per feature (keys, path, edge, NAT, reassembly), and each part
//! changes only through its own methods. The files under `device/` are the
//! device's side of each feature (`handshake`, `relay`, `path`, `nat`,
//! `fragment`, `control`, `membership`): they decide, queue outputs and
//! emit events, calling those methods. This file holds the device's tables
//! and the data path, and imports only leaves (`indices`, `stats`, the
//! peer's parts), never a feature file, so no import circle forms.

mod control;
#[cfg(test)]
mod fixtures;
mod fragment;
mod handshake;
mod indices;
mod membership;
mod nat;
mod path;
mod relay;
mod stats;
mod types;

pub use crate::peer::edge::{overhead, PathHint, BASE_INNER_MTU, FLOOR_V4, FLOOR_V6};
pub use crate::peer::path::{PeerPath, GOSSIP_ENDPOINT_GRACE};
pub use crate::peer::relay::{DEFAULT_RELAY_BYTES_PER_SECOND, RELAY_OVERHEAD};
pub use stats::{DeviceStats, NatCounters, RelayStats};
pub use types::{
    Decapsulated, DeviceConfig, Encapsulated, Event, PeerConfigError, PeerStatus, ProbeTransmit,
    Transmit,
};

use indices::Indices;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip_network_table::IpNetworkTable;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tracing::{debug, info, trace};

use crate::cookie::CookieChecker;
use crate::nat::{BindingTable, NatMachine, NatStatus, ProbeSocket};
use crate::noise::{PublicKey, StaticSecret, Tai64N};
use crate::packet;
use crate::peer::path::Hop;
use crate::peer::reassembly::wants_pieces;
use crate::peer::{Peer, PeerConfig, PeerId, Peers, Slot};
use crate::ratelimit::{HandshakeLimiter, LoadMeter};
use crate::session::{Session, SessionError};
use crate::timers::{
    Timer, KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
};
use crate::wire::control::{BindingTrial, Control, ProbeAck, TYPE_BINDING_OPEN, TYPE_PUNCH};
use crate::wire::{self, Message, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN};
use crate::DropReason;

enum Outgoing {
    Initiation(Hop, [u8; INITIATION_LEN]),
    Response(Hop, [u8; RESPONSE_LEN]),
    CookieReply(Hop, [u8; COOKIE_REPLY_LEN]),
    Keepalive(PeerId),
    /// An acknowledgement of a probe from the peer.
    ProbeAck(PeerId, ProbeAck),
    /// A piece of an inner packet: the plaintext to seal.
    Piece(PeerId, Vec<u8>),
    /// A control plaintext for the peer, on its path.
    Control(PeerId, Vec<u8>),
    /// A datagram this node relays, as the plaintext for its target.
    Deliver(PeerId, Vec<u8>),
    /// A punch toward a candidate endpoint of the peer.
    Punch(PeerId, SocketAddr),
    /// A NAT message, to `to` or else the peer's endpoint; `keepalive`
    /// counts it as one.
    Nat {
        peer: PeerId,
        to: Option<SocketAddr>,
        message: Control<'static>,
        keepalive: bool,
    },
}

/// The data-plane state machine. See the module documentation.
pub struct Device {
    secret: StaticSecret,
    public: PublicKey,
    mtu: usize,
    under_load_threshold: u32,
    queue_limit: usize,
    checker: CookieChecker,
    peers: Peers,
    by_key: HashMap<PublicKey, PeerId>,
    indices: Indices,
    routes: IpNetworkTable<PeerId>,
    rng: ChaCha20Rng,
    origin: Instant,
    unix_at_origin: Duration,
    outgoing: VecDeque<Outgoing>,
    flush: VecDeque<PeerId>,
    events: VecDeque<Event>,
    /// Handshake messages with a valid mac1, counted toward load.
    load: LoadMeter,
    /// Per-source budgets of handshakes under load.
    limiter: HandshakeLimiter,
    stats: DeviceStats,
    pmtu_discovery: bool,
    max_pmtu: u16,
    /// Some edge may have a probe to send.
    probing: bool,
    next_fragment_id: u32,
    /// Inner packets reassembled from pieces, waiting for the caller.
    reassembled: VecDeque<(PeerId, Vec<u8>)>,
    relay_bytes_per_second: u64,
    /// Our endpoints offered to relayed peers for hole punching.
    own_candidates: Vec<SocketAddr>,
    /// Relay messages waiting for a session with the peer that carries
    /// them (the relay, or the target of a delivery), and since when.
    parked: VecDeque<(PeerId, Instant, Outgoing)>,
    /// NAT detection, lifetime trials and the keepalive interval.
    nat: NatMachine,
    /// Binding opens to send from probe sockets.
    probe_out: VecDeque<(ProbeSocket, PeerId, BindingTrial)>,
    /// Trials other nodes run with us.
    bindings: BindingTable,
    nat_counters: NatCounters,
    last_nat_log: Option<NatStatus>,
    auto_handshake_at_start: bool,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("public", &self.public)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device with no peers. `unix_time` is the wall-clock time at `now`
    /// (for handshake timestamps); `seed` seeds all randomness.
    pub fn new(config: DeviceConfig, now: Instant, unix_time: Duration, seed: [u8; 32]) -> Self {
        let public = config.private_key.public_key();
        Self {
            checker: CookieChecker::new(public.as_bytes()),
            secret: config.private_key,
            public,
            mtu: config.mtu,
            under_load_threshold: config.under_load_handshakes_per_second,
            queue_limit: config.queue_limit.max(1),
            peers: Peers::default(),
            by_key: HashMap::new(),
            indices: Indices::default(),
            routes: IpNetworkTable::new(),
            rng: ChaCha20Rng::from_seed(seed),
            origin: now,
            unix_at_origin: unix_time,
            outgoing: VecDeque::new(),
            flush: VecDeque::new(),
            events: VecDeque::new(),
            load: LoadMeter::default(),
            limiter: HandshakeLimiter::default(),
            stats: DeviceStats::default(),
            pmtu_discovery: config.pmtu_discovery,
            max_pmtu: config.max_pmtu,
            probing: false,
            next_fragment_id: 0,
            reassembled: VecDeque::new(),
            relay_bytes_per_second: config.relay_bytes_per_second,
            own_candidates: Vec::new(),
            parked: VecDeque::new(),
            nat: NatMachine::new(seed),
            probe_out: VecDeque::new(),
            bindings: BindingTable::default(),
            nat_counters: NatCounters::default(),
            last_nat_log: None,
            auto_handshake_at_start: config.auto_handshake_at_start,
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Adds a peer. With a persistent keepalive and an endpoint, the first
    /// handshake starts at the next timeout.
    pub fn add_peer(&mut self, cfg: PeerConfig, now: Instant) -> Result<PeerId, PeerConfigError> {
        if cfg.public_key == self.public {
            return Err(PeerConfigError::OwnKey(cfg.name));
        }
        if self.by_key.contains_key(&cfg.public_key) {
            return Err(PeerConfigError::DuplicateKey(cfg.name));
        }
        for net in &cfg.allowed_ips {
            if self.routes.exact_match(*net).is_some() {
                return Err(PeerConfigError::DuplicatePrefix {
                    peer: cfg.name,
                    prefix: net.to_string(),
                });
            }
        }
        let id = self.peers.next_id();
        for net in &cfg.allowed_ips {
            self.routes.insert(*net, id);
        }
        self.by_key.insert(cfg.public_key, id);
        let mut peer = Peer::new(cfg, self.nat.keepalive_interval());
        // With an endpoint, an Auto peer handshakes at once too: its pong
        // tells whether this node is behind a NAT.
        let auto_start =
            self.auto_handshake_at_start && peer.nat.is_auto() && peer.path.endpoint().is_some();
        if peer.nat.interval().is_some() || auto_start {
            peer.timers.set(Timer::PersistentKeepalive, now);
        }
        self.peers.push(peer);
        Ok(id)
    }

    /// The peer whose allowed IPs contain `ip` most specifically.
    pub fn route(&self, ip: std::net::IpAddr) -> Option<PeerId> {
        self.routes.longest_match(ip).map(|(_, id)| *id)
    }

    /// Whether `id` is a live peer whose allowed IPs hold `ip`: the one
    /// condition for sending it a packet to `ip` (cryptokey routing).
    fn routes_to(&self, id: PeerId, ip: std::net::IpAddr) -> bool {
        self.peers
            .get(id)
            .is_some_and(|p| !p.removed && p.allowed_ips.iter().any(|n| n.contains(ip)))
    }

    /// Every peer's id.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> {
        self.peers.ids()
    }

    /// A snapshot of `peer`.
    pub fn peer_status(&self, peer: PeerId, now: Instant) -> Option<PeerStatus> {
        let p = self.peers.get(peer)?;
        Some(PeerStatus {
            name: p.name.clone(),
            public_key: p.public_key,
            endpoint: p.path.endpoint(),
            last_handshake: p.keys.last_handshake(),
            has_session: p.keys.has_fresh_session(now),
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: p.nat.interval(),
            stats: p.stats,
            last_received: p.last_received,
            removed: p.removed,
        })
    }

    /// The name of `peer`, for logs.
    pub fn peer_name(&self, peer: PeerId) -> &str {
        self.peers.get(peer).map_or("?", |p| p.name.as_str())
    }

    /// Device-wide counters.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// Seals the inner packet at `buf[TRANSPORT_HEADER_LEN..][..len]` for the
    /// peer its destination routes to. On [`Encapsulated::Send`] the datagram
    /// is `buf[..len]`. `buf` should have room for the header, the packet
    /// padded to 16 bytes and the tag.
    pub fn encapsulate(&mut self, now: Instant, buf: &mut [u8], len: usize) -> Encapsulated {
        match self.seal_inner(now, None, buf, len) {
            Ok(out) => out,
            Err(reason) => Encapsulated::Dropped(self.stats.count_drop(reason)),
        }
    }

    /// [`Device::encapsulate`] for a packet the caller has already routed
    /// to `peer` (with [`Device::route`], e.g. to clamp a SYN's MSS to that
    /// peer's edge), so it is not routed twice. A `peer` that does not
    /// route the packet's destination is a `NoRoute` drop: this never sends
    /// a packet where routing would not.
    pub fn encapsulate_to(
        &mut self,
        now: Instant,
        peer: PeerId,
        buf: &mut [u8],
        len: usize,
    ) -> Encapsulated {
        match self.seal_inner(now, Some(peer), buf, len) {
            Ok(out) => out,
            Err(reason) => Encapsulated::Dropped(self.stats.count_drop(reason)),
        }
    }

    /// [`Device::encapsulate`] (or [`Device::encapsulate_to`] with `routed`),
    /// with the drop of the packet given not yet counted.
    fn seal_inner(
        &mut self,
        now: Instant,
        routed: Option<PeerId>,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, DropReason> {
        let start = wire::TRANSPORT_HEADER_LEN;
        let summary = buf
            .get(start..start + len)
            .and_then(packet::summarize)
            .ok_or(DropReason::MalformedInner)?;
        let id = match routed {
            Some(id) if self.routes_to(id, summary.dst) => id,
            Some(_) => return Err(DropReason::NoRoute),
            None => self.route(summary.dst).ok_or_else(|| {
                trace!(dst = %summary.dst, "no peer routes this destination");
                DropReason::NoRoute
            })?,
        };
        let mtu = self.inner_mtu(id);
        if len > mtu
            && wants_pieces(&buf[start..start + len], mtu)
            && self.peers[id].keys.sending_session(now).is_some()
        {
            let packet = buf[start..start + len].to_vec();
            self.send_in_pieces(id, &packet, mtu);
            return Ok(Encapsulated::Queued { peer: id });
        }
        if len > mtu {
            return Ok(Encapsulated::TooBig {
                peer: id,
                mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
            });
        }
        if self.peers[id].keys.wants_rekey_on_send(now) {
            self.start_handshake(id, now, false);
        }
        if !self.reachable(id) && !self.use_relay(id, now) {
            return Err(DropReason::NoEndpoint);
        }
        let peer = &mut self.peers[id];
        if let Some(session) = peer.keys.sending_session(now) {
            match session.seal(buf, len, mtu) {
                Ok(n) => {
                    peer.stats.tx_bytes += len as u64;
                    peer.stats.tx_packets += 1;
                    Self::on_data_sent(peer, now);
                    if let Some(relay) = peer.path.via() {
                        let t = self.wrap_for_relay(id, relay, buf, n, now)?;
                        return Ok(Encapsulated::Send {
                            peer: id,
                            destination: t.destination,
                            len: t.len,
                        });
                    }
                    peer.mtu.on_active(now);
                    let destination = peer.path.endpoint().ok_or(DropReason::NoEndpoint)?;
                    return Ok(Encapsulated::Send {
                        peer: id,
                        destination,
                        len: n,
                    });
                }
                Err(SessionError::BufferTooSmall) => return Err(DropReason::TooBig),
                // An exhausted session is replaced below like a missing one.
                Err(_) => {}
            }
        }
        if peer.queue.len() >= self.queue_limit {
            // The oldest queued packet makes room for this one.
            peer.queue.pop_front();
            self.stats.count_drop(DropReason::QueueFull);
        }
        let peer = &mut self.peers[id];
        peer.queue.push_back(buf[start..start + len].to_vec());
        self.start_handshake(id, now, false);
        Ok(Encapsulated::Queued { peer: id })
    }

    /// Handles the datagram `buf` received from `from`. On
    /// [`Decapsulated::Tun`] the inner packet lies in `buf`.
    pub fn decapsulate(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> Decapsulated {
        match self.receive(now, Hop::Direct(from), buf) {
            Ok(d) => d,
            Err(reason) => Decapsulated::Dropped(self.stats.count_drop(reason)),
        }
    }

    /// [`Device::decapsulate`] for a datagram that arrived by `hop`, with
    /// its drop not yet counted.
    fn receive(
        &mut self,
        now: Instant,
        hop: Hop,
        buf: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        match Message::parse(buf) {
            Err(e) => {
                trace!(?hop, error = %e, "malformed datagram");
                Err(DropReason::Malformed)
            }
            Ok(Message::Transport(t)) => {
                let (receiver, counter) = (t.receiver(), t.counter());
                self.handle_transport(now, hop, receiver, counter, buf)
            }
            Ok(Message::Initiation(m)) => self.handle_initiation(now, hop, m),
            Ok(Message::Response(m)) => self.handle_response(now, hop, m),
            Ok(Message::CookieReply(m)) => self.handle_cookie_reply(now, hop, m),
        }
    }

    fn handle_transport(
        &mut self,
        now: Instant,
        hop: Hop,
        receiver: u32,
        counter: u64,
        buf: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        let id = self.sender_of(receiver, hop)?;
        let (slot, session) = self.peers[id]
            .keys
            .session_mut(receiver)
            .ok_or(DropReason::UnknownIndex)?;
        if now.saturating_duration_since(session.established) >= REJECT_AFTER_TIME {
            return Err(DropReason::Expired);
        }
        let start = wire::TRANSPORT_HEADER_LEN;
        let plain = session
            .open(counter, &mut buf[start..])
            .map_err(|e| match e {
                SessionError::Replay => DropReason::Replay,
                _ => DropReason::Decrypt,
            })?;
        // Authenticated from here on.
        if slot == Slot::Next {
            self.confirm_next_session(id, now);
        }
        // A binding open comes from a probe socket (§12): it must not move
        // the endpoint nor touch the timers, whatever else it turns out to be.
        let from_probe_socket = buf[start..start + plain].first() == Some(&TYPE_BINDING_OPEN);
        if !from_probe_socket {
            self.authenticated_arrival(id, hop, now);
        }
        match buf[start..start + plain].first() {
            None => {
                trace!(peer = %self.peer_name(id), "keepalive received");
                Ok(Decapsulated::Consumed)
            }
            // An IP packet starts with its version; no control type does.
            Some(b) if b >> 4 == 4 || b >> 4 == 6 => self.take_inner(id, now, buf, plain),
            Some(_) => self.handle_control(id, hop, now, buf, plain),
        }
    }

    /// Bookkeeping of an authenticated transport message from `id` that
    /// arrived by `hop`: paths and roaming, NAT, timers, keeping keys fresh.
    fn authenticated_arrival(&mut self, id: PeerId, hop: Hop, now: Instant) {
        self.arrived(id, hop, now);
        let previous = self.peers[id].last_received;
        self.nat_on_received(id, now, previous);
        let peer = &mut self.peers[id];
        Self::on_authenticated_received(peer, now);
        // An initiator about to hit REJECT_AFTER_TIME on a session that only
        // receives (data or keepalives) refreshes it now.
        if peer.keys.wants_rekey_on_receive(now) {
            self.start_handshake(id, now, false);
        }
    }

    /// An inner IP packet from `id`, opened at
    /// `buf[TRANSPORT_HEADER_LEN..][..plain]` (padding included): checked
    /// and handed to the caller.
    fn take_inner(
        &mut self,
        id: PeerId,
        now: Instant,
        buf: &[u8],
        plain: usize,
    ) -> Result<Decapsulated, DropReason> {
        let start = wire::TRANSPORT_HEADER_LEN;
        let summary =
            packet::summarize(&buf[start..start + plain]).ok_or(DropReason::MalformedInner)?;
        if self.route(summary.src) != Some(id) {
            trace!(src = %summary.src, "inner source not allowed for this peer");
            return Err(DropReason::SourceNotAllowed);
        }
        let peer = &mut self.peers[id];
        peer.stats.rx_bytes += summary.len as u64;
        peer.stats.rx_packets += 1;
        peer.timers
            .set_if_unarmed(Timer::PassiveKeepalive, now + KEEPALIVE_TIMEOUT);
        Ok(Decapsulated::Tun {
            peer: id,
            offset: start,
            len: summary.len,
        })
    }

    /// The responder's new session proved itself: it becomes current.
    fn confirm_next_session(&mut self, id: PeerId, now: Instant) {
        let Some(released) = self.peers[id].keys.confirm_next(now) else {
            return;
        };
        self.indices.release_all(released);
        self.handshake_completed(id, false, now);
    }

    /// A handshake with `id` produced the session now current: the one
    /// place its completion is counted, reported and acted on. As
    /// initiator the response arrived; as responder the initiator's first
    /// packet on the new session did.
    fn handshake_completed(&mut self, id: PeerId, initiator: bool, now: Instant) {
        let peer = &mut self.peers[id];
        peer.stats.handshakes_completed += 1;
        // A session is up: our own attempt, if any, need not be retried
        // (WireGuard's handshake-complete timer event). A late response to
        // it is still taken.
        peer.timers.stop(Timer::RetransmitHandshake);
        let role = if initiator { "initiator" } else { "responder" };
        info!(peer = %peer.name, "handshake completed ({role})");
        self.events.push_back(Event::HandshakeCompleted {
            peer: id,
            initiator,
        });
        // The responder may only send once it hears from us on the new
        // session: as initiator, release the queue or confirm with a
        // keepalive.
        if !peer.queue.is_empty() {
            self.flush.push_back(id);
        } else if initiator {
            self.outgoing.push_back(Outgoing::Keepalive(id));
        }
        self.unpark(id, now);
        self.nat_after_handshake(id, now);
    }

    /// Erases every session and the handshake of `id`, frees their indices
    /// and drops what was queued for them.
    fn erase_keys(&mut self, id: PeerId) {
        let peer = &mut self.peers[id];
        self.indices.release_all(peer.keys.erase());
        peer.queue.clear();
    }

    /// The peer our index `receiver` belongs to, if a message for it that
    /// arrived by `hop` is consistent with that peer's path.
    fn sender_of(&self, receiver: u32, hop: Hop) -> Result<PeerId, DropReason> {
        let id = self.indices.owner(receiver)?;
        if !self.hop_matches(id, hop) {
            return Err(DropReason::RelayRefused);
        }
        Ok(id)
    }

    /// Follows a peer to the source address of an authenticated packet
    /// that arrived directly.
    fn update_endpoint(&mut self, id: PeerId, from: SocketAddr) {
        let peer = &mut self.peers[id];
        if let Some(old) = peer.path.move_endpoint(from) {
            peer.stats.endpoint_changes += 1;
            info!(peer = %peer.name, from = ?old, to = %from, "endpoint changed");
            self.events.push_back(Event::EndpointChanged {
                peer: id,
                from: old,
                to: from,
            });
        }
    }

    fn on_authenticated_received(peer: &mut Peer, now: Instant) {
        peer.last_received = Some(now);
        peer.timers.stop(Timer::NewHandshake);
        if let Some(every) = peer.nat.interval_after_receipt() {
            peer.timers.set(Timer::PersistentKeepalive, now + every);
        }
    }

    fn on_authenticated_sent(peer: &mut Peer, now: Instant) {
        peer.timers.stop(Timer::PassiveKeepalive);
        if let Some(every) = peer.nat.interval() {
            peer.timers.set(Timer::PersistentKeepalive, now + every);
        }
    }

    fn on_data_sent(peer: &mut Peer, now: Instant) {
        Self::on_authenticated_sent(peer, now);
        peer.timers
            .set_if_unarmed(Timer::NewHandshake, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    }

    fn new_index(&mut self, id: PeerId) -> u32 {
        self.indices.allocate(id, &mut self.rng)
    }

    fn timestamp(&self, now: Instant) -> Tai64N {
        Tai64N::from_unix(self.unix_at_origin + now.saturating_duration_since(self.origin))
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    /// The next datagram to send, written into `buf`. `buf` should hold
    /// the largest datagram the device may send (`max_pmtu` less the IP and
    /// UDP headers, or more): a path-MTU probe is never cut, and one that
    /// does not fit waits for a call with room for it.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(out) = self.outgoing.pop_front() {
            if let Some(carrier) = self.waits_for_session(&out, now) {
                self.park(carrier, out, now);
                continue;
            }
            let (hop, bytes): (Hop, &[u8]) = match &out {
                Outgoing::Initiation(h, b) => (*h, b),
                Outgoing::Response(h, b) => (*h, b),
                Outgoing::CookieReply(h, b) => (*h, b),
                Outgoing::Keepalive(id) => {
                    if let Some(t) = self.seal_keepalive(*id, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
                Outgoing::ProbeAck(id, ack) => {
                    let ack = Control::ProbeAck(*ack);
                    if let Some(t) = self.seal_control(*id, &ack, self.mtu, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
                Outgoing::Piece(id, plain) => {
                    if let Some(t) = self.seal_bytes(*id, plain, true, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
                Outgoing::Control(id, plain) => {
                    if let Some(t) = self.seal_bytes(*id, plain, false, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
                Outgoing::Deliver(id, plain) => {
                    if let Some(t) = self.seal_delivery(*id, plain, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
                Outgoing::Punch(id, destination) => {
                    let punch = [TYPE_PUNCH];
                    if let Some(t) = self.seal_direct(*id, &punch, *destination, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
                Outgoing::Nat {
                    peer,
                    to,
                    message,
                    keepalive,
                } => {
                    if let Some(t) = self.seal_nat(*peer, *to, message, *keepalive, now, buf) {
                        return Some(t);
                    }
                    continue;
                }
            };
            if let Some(t) = self.send_handshake(hop, bytes, now, buf) {
                return Some(t);
            }
        }
        while let Some(&id) = self.flush.front() {
            let reachable = self.reachable(id);
            let peer = &mut self.peers[id];
            let mtu = if peer.path.via().is_some() {
                self.inner_mtu(id)
            } else {
                self.mtu
            };
            let peer = &mut self.peers[id];
            if !reachable || peer.keys.sending_session(now).is_none() {
                self.flush.pop_front();
                continue;
            }
            let Some(packet) = peer.queue.pop_front() else {
                self.flush.pop_front();
                continue;
            };
            let start = wire::TRANSPORT_HEADER_LEN;
            let len = packet.len();
            let Some(body) = buf.get_mut(start..start + len) else {
                self.stats.count_drop(DropReason::TooBig);
                continue;
            };
            body.copy_from_slice(&packet);
            let session = peer.keys.sending_session(now)?;
            if let Ok(n) = session.seal(buf, len, mtu) {
                peer.stats.tx_bytes += len as u64;
                peer.stats.tx_packets += 1;
                Self::on_data_sent(peer, now);
                match self.dispatch(id, buf, n, now) {
                    Some(t) => return Some(t),
                    None => continue,
                }
            }
            // The buffer holds the packet but not its padding and tag.
            self.stats.count_drop(DropReason::TooBig);
        }
        self.poll_probe(now, buf)
    }

    fn seal_keepalive(&mut self, id: PeerId, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let mtu = self.mtu;
        if !self.reachable(id) {
            return None;
        }
        let peer = &mut self.peers[id];
        let n = peer.keys.sending_session(now)?.seal(buf, 0, mtu).ok()?;
        peer.stats.keepalives_sent += 1;
        Self::on_authenticated_sent(peer, now);
        trace!(peer = %peer.name, "keepalive sent");
        // Keepalives keep the key fresh like data does (WireGuard's
        // keep-key-fresh on send); the initiation goes out next.
        if peer.keys.wants_rekey_on_send(now) {
            self.start_handshake(id, now, false);
        }
        self.dispatch(id, buf, n, now)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Device::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self
            .peers
            .iter()
            .filter_map(|p| p.timers.next_timeout())
            .chain(self.nat.poll_timeout())
            .min();
        [timers, self.path_timeout(), self.relay_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in self.peers.ids() {
            while let Some(timer) = self.peers[id].timers.take_expired(now) {
                self.fire(id, timer, now);
            }
        }
        self.handle_path_timeouts(now);
        self.handle_relay_timeouts(now);
        self.handle_nat_timeout(now);
    }

    fn fire(&mut self, id: PeerId, timer: Timer, now: Instant) {
        let peer = &mut self.peers[id];
        match timer {
            Timer::RetransmitHandshake => {
                if peer.keys.attempt_expired(now) {
                    info!(peer = %peer.name, "handshake did not complete after {}s, giving up",
                        REKEY_ATTEMPT_TIME.as_secs());
                    self.indices.release_all(peer.keys.give_up());
                    peer.queue.clear();
                    peer.stats.handshakes_failed += 1;
                    peer.timers
                        .set_if_unarmed(Timer::ZeroKeys, now + 3 * REJECT_AFTER_TIME);
                    self.events.push_back(Event::HandshakeFailed { peer: id });
                } else {
                    debug!(peer = %peer.name, "retransmitting handshake initiation");
                    // The last initiation went unanswered: from now on
                    // they also go through the relay, if there is one.
                    self.use_relay(id, now);
                    self.start_handshake(id, now, true);
                }
            }
            Timer::PassiveKeepalive => self.outgoing.push_back(Outgoing::Keepalive(id)),
            Timer::NewHandshake => {
                debug!(peer = %peer.name, "no reply to sent data, starting a new handshake");
                self.start_handshake(id, now, false);
            }
            Timer::PersistentKeepalive => {
                if peer.keys.sending_session(now).is_some() {
                    self.keepalive_due(id, now);
                } else {
                    self.start_handshake(id, now, false);
                }
                let peer = &mut self.peers[id];
                if let Some(every) = peer.nat.interval() {
                    peer.timers
                        .set_if_unarmed(Timer::PersistentKeepalive, now + every);
                }
            }
            Timer::PongTimeout => self.pong_missed(id, now),
            Timer::Silence => self.silence(id, now),
            Timer::ZeroKeys => {
                debug!(peer = %peer.name, "erasing key material after a long silence");
                self.erase_keys(id);
                self.events.push_back(Event::SessionsCleared { peer: id });
            }
        }
    }

    /// Installs `session`, from a handshake we initiated, as current.
    fn install_session(&mut self, id: PeerId, session: Session, now: Instant) {
        let peer = &mut self.peers[id];
        self.indices.release_all(
            peer.keys
                .install_initiated(session, now)
                .into_iter()
                .flatten(),
        );
        peer.timers
            .set(Timer::ZeroKeys, now + 3 * REJECT_AFTER_TIME);
    }
}

#[cfg(test)]
mod tests;
