//! Relaying through a member, and hole punching between members behind NATs.
//!
//! This module owns what control messages `0x10`–`0x13` do (their formats
//! are [`crate::wire::control`]'s), the decisions to switch a peer between
//! direct and relayed, the relay's side of forwarding, and the coordination
//! of hole punching. The per-peer state those decisions change is the
//! peer's ([`crate::peer::path`]: endpoint, relay, punching;
//! [`crate::peer::relay`]: punch bursts, the per-sender budget), changed
//! only through its methods. It must never let a relayed packet change a peer's direct
//! endpoint, and a relay never holds the keys of the pair it relays for: it
//! forwards the inner datagram (a complete handshake or transport message of
//! that pair) untouched, inside its own authenticated sessions:
//!
//! - `0x10` relay request, sender → relay: the target's static key and the
//!   datagram;
//! - `0x11` relayed, relay → target: the sender's static key and the
//!   datagram;
//! - `0x12` punch offer or answer, end to end between the pair (over their
//!   own session, which may itself be relayed): candidate endpoints;
//! - `0x13` punch, sealed in the pair's session and sent straight to a
//!   candidate endpoint of the other side.
//!
//! A peer is relayed when direct initiations went unanswered for
//! [`REKEY_TIMEOUT`](crate::timers::REKEY_TIMEOUT) and the caller named a
//! relay for it, or when an authenticated packet from it arrives through a
//! relay while no direct packet arrived for
//! [`DIRECT_GRACE`](crate::peer::path::DIRECT_GRACE). Any
//! authenticated packet that arrives directly makes it direct again. While
//! relayed, every initiation also goes to the direct endpoint, and both
//! sides exchange candidates and punch at each other's
//! ([`PUNCH_BURST`](crate::peer::relay::PUNCH_BURST) sends
//! [`PUNCH_SPACING`](crate::peer::relay::PUNCH_SPACING) apart), retried
//! with backoff. Punching must never become a way for one member to aim
//! another's packets: an offer is taken only from a peer relayed at the
//! time, only about that peer, and only usable candidates that are not
//! this node's own are punched at, a bounded number of times.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, trace};

use super::{Decapsulated, Device, Event, Outgoing, Transmit};
use crate::addr::{self, Loopback};
use crate::noise::PublicKey;
use crate::peer::path::{Hop, PeerPath};
#[cfg(test)]
use crate::peer::relay::{PUNCH_BURST, PUNCH_RETRY_MAX, RELAY_OVERHEAD};
use crate::peer::PeerId;
use crate::wire::control::{
    Control, Endpoints, PunchOffer, Relay, MAX_CANDIDATES, RELAY_HEADER_LEN,
};
use crate::wire::{Message, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::DropReason;

/// Relay messages kept while a session with their carrier is set up.
const PARKED_MAX: usize = 32;

/// The endpoints of `offer` worth punching at: those [`addr::usable`]
/// accepts with loopback refused (nothing could answer from port 0, and a
/// punch must never go to this host's loopback, a group or broadcast
/// address), each once, at most [`MAX_CANDIDATES`].
fn usable_candidates(offer: &PunchOffer<'_>) -> Vec<SocketAddr> {
    let mut usable = Vec::new();
    for e in offer.endpoints.iter() {
        match addr::usable(e, Loopback::Refused) {
            Ok(e) if !usable.contains(&e) => usable.push(e),
            _ => {}
        }
    }
    usable.truncate(MAX_CANDIDATES);
    usable
}

/// An offer (`answer` = false) or answer of `endpoints`, encoded.
fn encode_offer(answer: bool, endpoints: &[SocketAddr]) -> Vec<u8> {
    let endpoints = Endpoints::from_list(endpoints);
    Control::PunchOffer(PunchOffer { answer, endpoints }).to_vec()
}

impl Device {
    /// Names `relay` as the member to relay through toward `id` when no
    /// direct path works (`None`: never relay toward `id`). A peer already
    /// relayed moves to the new relay, or back to direct.
    pub fn set_relay(&mut self, id: PeerId, relay: Option<PeerId>, now: Instant) {
        let unusable = |r: PeerId| self.peers.get(r).is_none_or(|p| p.removed);
        if relay == Some(id) || relay.is_some_and(unusable) {
            return;
        }
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.path.name_relay(relay) {
            match relay {
                Some(_) => {
                    self.use_relay(id, now);
                }
                None => self.events.push_back(Event::PathChanged {
                    peer: id,
                    via: None,
                    punched: false,
                }),
            }
        }
    }

    /// A removed member relays for nobody: peers relayed through it go back
    /// to their direct endpoint (and a relay the node names next).
    pub(super) fn forget_relay(&mut self, relay: PeerId) {
        self.parked.retain(|(carrier, _, _)| *carrier != relay);
        for id in self.peers.ids() {
            if self.peers[id].path.forget_relay(relay) {
                self.events.push_back(Event::PathChanged {
                    peer: id,
                    via: None,
                    punched: false,
                });
            }
        }
    }

    /// This node's candidate endpoints for hole punching (its reflexive
    /// endpoints first, then its local ones), sent to relayed peers.
    pub fn set_own_candidates(&mut self, mut candidates: Vec<SocketAddr>) {
        candidates.truncate(MAX_CANDIDATES);
        self.own_candidates = candidates;
    }

    /// Sends an initiation to `id` now unless a session is usable, without
    /// waiting for data: for an endpoint just learned from others, so that
    /// two members behind NATs that learn each other's reflexive endpoints
    /// both send at once and open their mappings (an attempt toward an
    /// older endpoint does not hold it back), and for the peers a restarted
    /// node last reached, so they replace their sessions with its old self
    /// at once rather than after their own rekey timeout.
    pub fn connect(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.removed || peer.keys.sending_session(now).is_some() {
            return;
        }
        self.start_handshake(id, now, true);
    }

    /// The path traffic to `id` takes now.
    pub fn peer_path(&self, id: PeerId) -> Option<PeerPath> {
        Some(self.peers.get(id)?.path.peer_path())
    }

    /// Switches `id` to its relay candidate. Returns whether it is relayed.
    pub(super) fn use_relay(&mut self, id: PeerId, now: Instant) -> bool {
        if self.peers[id].path.via().is_some() {
            return true;
        }
        let Some(relay) = self.peers[id].path.use_named_relay(now) else {
            return false;
        };
        let relay_name = self.peer_name(relay);
        debug!(peer = %self.peer_name(id), relay = %relay_name,
            "no direct answer: reaching the peer through a relay");
        self.events.push_back(Event::PathChanged {
            peer: id,
            via: Some(relay),
            punched: false,
        });
        true
    }

    /// Whether a message authenticated as `id` is consistent with how it
    /// arrived: through a relay, the relay named its sender, and it must be
    /// `id`.
    pub(super) fn hop_matches(&self, id: PeerId, hop: Hop) -> bool {
        match hop {
            Hop::Direct(_) => true,
            Hop::Relayed { relay, peer } => relay != id && self.peers[id].public_key == peer,
        }
    }

    /// The address a handshake message is answered with cookies for: the
    /// sender's, or the relay's for a relayed one.
    pub(super) fn hop_address(&self, hop: Hop) -> SocketAddr {
        match hop {
            Hop::Direct(from) => from,
            Hop::Relayed { relay, .. } => self.peers[relay]
                .path
                .endpoint()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }

    /// An authenticated packet from `id` arrived by `hop`: roaming for a
    /// direct one (and back from a relay), the relay for a relayed one
    /// unless the peer was heard from directly within
    /// [`DIRECT_GRACE`](crate::peer::path::DIRECT_GRACE).
    pub(super) fn arrived(&mut self, id: PeerId, hop: Hop, now: Instant) {
        match hop {
            Hop::Direct(from) => {
                self.update_endpoint(id, from);
                let peer = &mut self.peers[id];
                if let Some(punched) = peer.path.heard_directly(now) {
                    if punched {
                        self.stats.relay.punches_succeeded += 1;
                    }
                    debug!(peer = %peer.name, endpoint = %from, punched, "direct path established");
                    self.events.push_back(Event::PathChanged {
                        peer: id,
                        via: None,
                        punched,
                    });
                }
                self.ensure_edge(id, now);
            }
            Hop::Relayed { relay, .. } => {
                if self.peers[id].path.heard_through(relay, now) {
                    let relay_name = self.peer_name(relay);
                    debug!(peer = %self.peer_name(id), relay = %relay_name, "peer reached through a relay");
                    self.events.push_back(Event::PathChanged {
                        peer: id,
                        via: Some(relay),
                        punched: false,
                    });
                }
            }
        }
    }

    /// As a relay: checks a request from `from` and queues the datagram for
    /// its target.
    pub(super) fn forward(
        &mut self,
        from: PeerId,
        hop: Hop,
        request: Relay<'_>,
        now: Instant,
    ) -> Result<Decapsulated, DropReason> {
        let refused = |device: &mut Self, why: &str| {
            device.stats.relay.refused += 1;
            debug!(peer = %device.peer_name(from), why, "relay request refused");
            Err(DropReason::RelayRefused)
        };
        if !matches!(hop, Hop::Direct(_)) {
            return refused(self, "relay requests are not relayed");
        }
        if self.relay_bytes_per_second == 0 {
            return refused(self, "relaying is off");
        }
        let Relay {
            key,
            datagram: inner,
        } = request;
        if Message::parse(inner).is_err() {
            return refused(self, "the inner datagram is not a weft message");
        }
        let Some(target) = self.by_key.get(&key).copied() else {
            return refused(self, "unknown target");
        };
        let t = &self.peers[target];
        if target == from || t.removed || t.path.direct_endpoint().is_none() {
            return refused(self, "target not reachable directly from here");
        }
        if !self.charge_relay_budget(from, inner.len(), now) {
            return refused(self, "over the relay budget");
        }
        let relayed = Control::Relayed(Relay {
            key: self.peers[from].public_key,
            datagram: inner,
        });
        self.outgoing
            .push_back(Outgoing::Deliver(target, relayed.to_vec()));
        let stats = &mut self.stats.relay;
        stats.forwarded_packets += 1;
        stats.forwarded_bytes += inner.len() as u64;
        if stats.forwarded_packets.is_power_of_two() {
            debug!(
                packets = stats.forwarded_packets,
                bytes = stats.forwarded_bytes,
                "relayed for other members so far"
            );
        }
        trace!(from = %self.peer_name(from), to = %self.peer_name(target),
            len = inner.len(), "relaying");
        Ok(Decapsulated::Consumed)
    }

    /// Takes `len` bytes from `from`'s relay budget; false if it is spent.
    fn charge_relay_budget(&mut self, from: PeerId, len: usize, now: Instant) -> bool {
        let rate = self.relay_bytes_per_second;
        self.peers[from].relay_budget.charge(rate, len, now)
    }

    /// As a target: opens the datagram `relay` carried for the member with
    /// static key `key` and processes it as coming from that member through
    /// `relay`. The relayed message's plaintext is
    /// `buf[TRANSPORT_HEADER_LEN..][..plain]`.
    pub(super) fn take_relayed(
        &mut self,
        relay: PeerId,
        hop: Hop,
        key: PublicKey,
        buf: &mut [u8],
        plain: usize,
        now: Instant,
    ) -> Result<Decapsulated, DropReason> {
        if !matches!(hop, Hop::Direct(_)) {
            return Err(DropReason::RelayRefused);
        }
        let start = TRANSPORT_HEADER_LEN;
        match self.by_key.get(&key) {
            Some(&source) if source != relay => {}
            Some(_) => return Err(DropReason::RelayRefused),
            None => return Err(DropReason::UnknownPeer),
        }
        let inner_start = start + RELAY_HEADER_LEN;
        // A relay that passes on something that is not a message is the
        // relay's fault, counted as such, not as a malformed datagram.
        if Message::parse(&buf[inner_start..start + plain]).is_err() {
            return Err(DropReason::MalformedInner);
        }
        self.stats.relay.received_via_relay += 1;
        let hop = Hop::Relayed { relay, peer: key };
        // The inner datagram is opened in place: its plaintext stays in
        // the caller's buffer, further in.
        Ok(
            match self.receive(now, hop, &mut buf[inner_start..start + plain])? {
                Decapsulated::Tun { peer, offset, len } => Decapsulated::Tun {
                    peer,
                    offset: inner_start + offset,
                    len,
                },
                other => other,
            },
        )
    }

    /// Sends the datagram `buf[..n]` for `id` through `relay`: moves it
    /// behind a relay header and seals that in the relay's session.
    pub(super) fn wrap_for_relay(
        &mut self,
        id: PeerId,
        relay: PeerId,
        buf: &mut [u8],
        n: usize,
        now: Instant,
    ) -> Result<Transmit, DropReason> {
        let inner_start = TRANSPORT_HEADER_LEN + RELAY_HEADER_LEN;
        if buf.len() < inner_start + n + TAG_LEN {
            return Err(DropReason::TooBig);
        }
        buf.copy_within(..n, inner_start);
        let key = self.peers[id].public_key;
        self.seal_relay_request(relay, key, n, now, buf)
    }

    /// Seals the relay request whose inner datagram of `n` bytes already
    /// lies at `buf[TRANSPORT_HEADER_LEN + RELAY_HEADER_LEN..]`, for
    /// `target`, in the session with `relay`.
    fn seal_relay_request(
        &mut self,
        relay: PeerId,
        target: PublicKey,
        n: usize,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        buf.get_mut(TRANSPORT_HEADER_LEN..)
            .and_then(|b| Relay::emit_request_header(&target, b))
            .ok_or(DropReason::TooBig)?;
        let r = &mut self.peers[relay];
        let direct = r.path.direct_endpoint().filter(|_| !r.removed);
        let usable = direct.is_some();
        if r.keys.wants_rekey_on_send(now) || (usable && r.keys.sending_session(now).is_none()) {
            self.start_handshake(relay, now, false);
        }
        let r = &mut self.peers[relay];
        let sealed = match (direct, r.keys.sending_session(now)) {
            (Some(destination), Some(session)) => session
                .seal(buf, RELAY_HEADER_LEN + n, RELAY_HEADER_LEN + n)
                .ok()
                .map(|len| Transmit { destination, len }),
            _ => None,
        };
        let t = sealed.ok_or(DropReason::RelayUnavailable)?;
        Self::on_authenticated_sent(r, now);
        r.mtu.on_active(now);
        self.stats.relay.sent_via_relay += 1;
        Ok(t)
    }

    /// The peer whose missing session holds `out` back: the relay of a
    /// relayed handshake message, or the target of a delivery, when it is
    /// reachable directly but has no session yet.
    pub(super) fn waits_for_session(&self, out: &Outgoing, now: Instant) -> Option<PeerId> {
        let carrier = match out {
            Outgoing::Initiation(Hop::Relayed { relay, .. }, _)
            | Outgoing::Response(Hop::Relayed { relay, .. }, _)
            | Outgoing::CookieReply(Hop::Relayed { relay, .. }, _) => *relay,
            Outgoing::Deliver(target, _) => *target,
            _ => return None,
        };
        let p = &self.peers[carrier];
        let waits = !p.removed && p.path.direct_endpoint().is_some() && !p.keys.can_send(now);
        waits.then_some(carrier)
    }

    /// Keeps `out` until a session with `carrier` is up, and starts one.
    pub(super) fn park(&mut self, carrier: PeerId, out: Outgoing, now: Instant) {
        if self.parked.len() == PARKED_MAX {
            self.parked.pop_front();
            self.stats.count_drop(DropReason::RelayUnavailable);
        }
        self.parked.push_back((carrier, now, out));
        self.start_handshake(carrier, now, false);
    }

    /// A session with `carrier` is up: what waited for it goes out, unless
    /// it is older than a retransmission would be.
    pub(super) fn unpark(&mut self, carrier: PeerId, now: Instant) {
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].0 != carrier {
                i += 1;
                continue;
            }
            let Some((_, since, out)) = self.parked.remove(i) else {
                break;
            };
            if now.saturating_duration_since(since) < crate::timers::REKEY_TIMEOUT {
                self.outgoing.push_back(out);
            } else {
                self.stats.count_drop(DropReason::RelayUnavailable);
            }
        }
    }

    /// Sends the handshake message `bytes` by `hop`; one the relay cannot
    /// carry is a counted drop.
    pub(super) fn send_handshake(
        &mut self,
        hop: Hop,
        bytes: &[u8],
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        match hop {
            Hop::Direct(destination) => {
                buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
                Some(Transmit {
                    destination,
                    len: bytes.len(),
                })
            }
            Hop::Relayed { relay, peer } => {
                let inner_start = TRANSPORT_HEADER_LEN + RELAY_HEADER_LEN;
                buf.get_mut(inner_start..inner_start + bytes.len() + TAG_LEN)?;
                buf[inner_start..inner_start + bytes.len()].copy_from_slice(bytes);
                self.seal_relay_request(relay, peer, bytes.len(), now, buf)
                    .map_err(|reason| self.stats.count_drop(reason))
                    .ok()
            }
        }
    }

    /// Sends the sealed datagram `buf[..n]` for `id` on its path; one the
    /// relay cannot carry is a counted drop.
    pub(super) fn dispatch(
        &mut self,
        id: PeerId,
        buf: &mut [u8],
        n: usize,
        now: Instant,
    ) -> Option<Transmit> {
        let peer = &self.peers[id];
        match peer.path.via() {
            Some(relay) => self
                .wrap_for_relay(id, relay, buf, n, now)
                .map_err(|reason| self.stats.count_drop(reason))
                .ok(),
            None => Some(Transmit {
                destination: peer.path.endpoint()?,
                len: n,
            }),
        }
    }

    /// Whether anything can be sent to `id`: it has an endpoint or a relay
    /// in use.
    pub(super) fn reachable(&self, id: PeerId) -> bool {
        self.peers[id].path.reachable()
    }

    /// Seals `plain` for `id` and sends it straight to `destination`,
    /// whatever the peer's path (punches, datagrams relayed to it).
    pub(super) fn seal_direct(
        &mut self,
        id: PeerId,
        plain: &[u8],
        destination: SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let peer = &mut self.peers[id];
        let body = buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + plain.len())?;
        body.copy_from_slice(plain);
        let n = peer
            .keys
            .sending_session(now)?
            .seal(buf, plain.len(), plain.len())
            .ok()?;
        Self::on_authenticated_sent(peer, now);
        Some(Transmit {
            destination,
            len: n,
        })
    }

    /// Seals a datagram the relay queued for `target`; starts a handshake
    /// toward it if there is no session to carry it.
    pub(super) fn seal_delivery(
        &mut self,
        target: PeerId,
        plain: &[u8],
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let peer = &mut self.peers[target];
        let destination = peer.path.endpoint()?;
        if peer.keys.sending_session(now).is_none() || peer.keys.wants_rekey_on_send(now) {
            self.start_handshake(target, now, false);
        }
        let t = self.seal_direct(target, plain, destination, now, buf);
        if t.is_none() {
            self.stats.count_drop(DropReason::RelayUnavailable);
        }
        t
    }

    /// Takes `id`'s candidates: answers an offer with ours, and punches.
    /// The offer arrived authenticated in `id`'s session, so it speaks only
    /// for `id`; it is taken only while `id` is relayed (else refused as
    /// [`DropReason::PunchRefused`]), at most once per
    /// [`PUNCH_MIN_INTERVAL`](crate::peer::relay::PUNCH_MIN_INTERVAL), and
    /// its candidates are punched only if usable and not this node's own
    /// (see [`Device::punch_targets`]).
    pub(super) fn take_offer(
        &mut self,
        id: PeerId,
        offer: PunchOffer<'_>,
        now: Instant,
    ) -> Result<(), DropReason> {
        let answer = offer.answer;
        let peer = &mut self.peers[id];
        if !peer.path.takes_offers() {
            debug!(peer = %peer.name, answer, "punch offer from a peer reached directly: refused");
            return Err(DropReason::PunchRefused);
        }
        if !peer.path.punch_mut().take_offer(now) {
            return Ok(());
        }
        let targets = self.punch_targets(id, &offer);
        let peer = &mut self.peers[id];
        debug!(peer = %peer.name, answer, ?targets, "punch candidates received; punching");
        if !answer {
            // The other side coordinates this round: no offer of our own
            // until the backoff passes.
            peer.path.punch_mut().defer_offer(now);
            let reply = encode_offer(true, &self.own_candidates);
            self.outgoing.push_back(Outgoing::Control(id, reply));
        }
        self.peers[id].path.punch_mut().start_burst(targets, now);
        Ok(())
    }

    /// Where to punch at for `offer` from `id`: its usable candidates, then
    /// `id`'s known endpoint, each once and never one of this node's own
    /// endpoints (its candidates, or a local address at its port): at most
    /// [`MAX_PUNCH_TARGETS`](crate::peer::relay::MAX_PUNCH_TARGETS).
    fn punch_targets(&self, id: PeerId, offer: &PunchOffer<'_>) -> Vec<SocketAddr> {
        let mut targets = usable_candidates(offer);
        let known = self.peers[id]
            .path
            .endpoint()
            .and_then(|e| addr::usable(e, Loopback::Refused).ok());
        if let Some(e) = known.filter(|e| !targets.contains(e)) {
            targets.push(e);
        }
        targets.retain(|e| !self.own_candidates.contains(e) && !self.nat.is_local(*e));
        targets
    }

    /// The earliest punch or offer deadline.
    pub(super) fn relay_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter(|p| !p.removed)
            .filter_map(|p| {
                let offering = p.path.offering(p.keys.has_current());
                p.path.punch().deadline(offering)
            })
            .min()
    }

    /// Sends due punches and offers.
    pub(super) fn handle_relay_timeouts(&mut self, now: Instant) {
        for id in self.peers.ids() {
            let peer = &mut self.peers[id];
            if peer.removed {
                continue;
            }
            if let Some(targets) = peer.path.due_punches(now) {
                for &target in targets {
                    self.outgoing.push_back(Outgoing::Punch(id, target));
                }
                self.stats.relay.punches_sent += targets.len() as u64;
            }
            let offering = peer.path.offering(peer.keys.has_current());
            if offering && peer.path.punch().offer_due(now) {
                if peer.keys.sending_session(now).is_some() {
                    debug!(peer = %peer.name, candidates = ?self.own_candidates, "offering punch candidates");
                    let offer = encode_offer(false, &self.own_candidates);
                    self.outgoing.push_back(Outgoing::Control(id, offer));
                }
                peer.path.punch_mut().offer_made(now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
