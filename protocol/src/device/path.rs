//! The device's side of path-MTU discovery: one [`Pmtud`] per edge, the
//! probes it sends and the acknowledgements it takes, and the inner MTU each
//! edge allows.
//!
//! Probes (`0x01`) and acknowledgements (`0x02`) are control messages
//! ([`crate::wire::control`]): a probe is exactly as long as the probed size
//! requires (no padding beyond it), and the acknowledgement reports the
//! length of the datagram that carried it. So probes are authenticated and
//! encrypted like data, can't be forged or replayed, and the acknowledgement
//! measures the forward path. An edge starts when a session is usable and
//! the endpoint is known, and starts over when the endpoint changes. The
//! first edge toward a peer can start from a [`PathHint`], what the node
//! stored about the path on an earlier run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{Device, Event, Transmit};
use crate::peer::PeerId;
use crate::pmtu::{PmtuLimits, Pmtud};
use crate::wire::control::{Control, Probe, ProbeAck};
use crate::wire::{TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};

/// Smallest IPv4 path MTU probed (RFC 791's minimum reassembly size).
pub const FLOOR_V4: u16 = 576;
/// Smallest IPv6 path MTU (RFC 8200 §5).
pub const FLOOR_V6: u16 = 1280;
/// The inner MTU an edge uses until a size is confirmed: IPv6's minimum.
pub const BASE_INNER_MTU: u16 = 1280;

/// Outer bytes weft adds to an inner packet toward `endpoint`: IP and UDP
/// headers and the transport header and tag.
pub fn overhead(endpoint: SocketAddr) -> u16 {
    let ip = if endpoint.is_ipv4() { 20 } else { 40 };
    ip + 8 + TRANSPORT_OVERHEAD as u16
}

/// What is known about the path to a peer before its first edge starts,
/// typically loaded from the node's store at start
/// ([`Device::set_path_hint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathHint {
    /// The endpoint the path was measured to; the PMTU hint applies only
    /// to an edge toward it (`None`: toward whatever endpoint it starts at).
    pub endpoint: Option<SocketAddr>,
    /// The outer path MTU found.
    pub pmtu: Option<u16>,
    /// The smoothed round-trip time measured.
    pub rtt: Option<Duration>,
    /// Whether this node confirmed `pmtu` itself (rather than a peer
    /// reporting it). Such a size is probed alone and used as soon as one
    /// probe of it is acknowledged ([`Pmtud::resume`]); any other is a
    /// prior, checked exactly by a search.
    pub confirmed_by_self: bool,
}

/// An edge: a peer at one endpoint, with its discovery.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub endpoint: SocketAddr,
    pub pmtud: Pmtud,
}

impl Edge {
    /// The largest inner packet this edge carries now.
    pub fn inner_mtu(&self) -> u16 {
        self.pmtud.current().saturating_sub(overhead(self.endpoint))
    }
}

impl Device {
    /// Starts discovery toward the peer's current endpoint if it has a
    /// usable session and no edge for that endpoint yet.
    pub(super) fn ensure_edge(&mut self, id: PeerId, now: Instant) {
        if !self.pmtu_discovery {
            return;
        }
        let default_max = self.max_pmtu;
        let peer = &mut self.peers[id];
        let Some(endpoint) = peer.endpoint else {
            return;
        };
        if let Some(edge) = peer.edge.as_ref().filter(|e| e.endpoint == endpoint) {
            // A probe that waited for a session may go now.
            if edge.pmtud.poll_probe().is_some() {
                self.probing = true;
            }
            return;
        }
        if peer.keys.sending_session(now).is_none() {
            return;
        }
        let floor = if endpoint.is_ipv4() {
            FLOOR_V4
        } else {
            FLOOR_V6
        };
        let max = peer.local_mtu.unwrap_or(default_max).max(floor);
        let limits = PmtuLimits {
            floor,
            base: BASE_INNER_MTU + overhead(endpoint),
            max,
        };
        let hint = peer.path_hint.take();
        // The handshake's round trip is fresh; a stored one is better than
        // none (the responder of a handshake measures none).
        let rtt = peer.keys.handshake_rtt().or(hint.and_then(|h| h.rtt));
        let hinted = hint
            .filter(|h| h.endpoint.is_none_or(|e| e == endpoint))
            .and_then(|h| Some((h.pmtu?, h.confirmed_by_self)));
        let prior = peer.pmtu_prior.take();
        debug!(peer = %peer.name, %endpoint, max, ?hinted, "starting path MTU discovery");
        let pmtud = match hinted {
            Some((stored, true)) => Pmtud::resume(limits, rtt, stored, now),
            Some((reported, false)) => Pmtud::new(limits, rtt, prior.or(Some(reported)), now),
            None => Pmtud::new(limits, rtt, prior, now),
        };
        peer.edge = Some(Edge { endpoint, pmtud });
        self.probing = true;
    }

    /// The inner MTU toward `id`: the edge's, or the interface MTU when
    /// discovery is off or has not started; through a relay, the relay's
    /// less [`RELAY_OVERHEAD`](super::RELAY_OVERHEAD).
    pub fn inner_mtu(&self, id: PeerId) -> usize {
        match self.peers[id].via {
            Some(relay) => self
                .direct_inner_mtu(relay)
                .saturating_sub(super::RELAY_OVERHEAD),
            None => self.direct_inner_mtu(id),
        }
    }

    fn direct_inner_mtu(&self, id: PeerId) -> usize {
        let peer = &self.peers[id];
        match &peer.edge {
            Some(e) if Some(e.endpoint) == peer.endpoint => {
                usize::from(e.inner_mtu()).min(self.mtu)
            }
            _ => self.mtu,
        }
    }

    /// `id` acknowledged one of our probes.
    pub(super) fn on_probe_ack(&mut self, id: PeerId, ack: ProbeAck, now: Instant) {
        let peer = &mut self.peers[id];
        if let Some(edge) = peer.edge.as_mut() {
            // The peer reports what arrived; it must be what we sent.
            let expected = edge
                .pmtud
                .probe_size(ack.id)
                .map(|s| s - overhead(edge.endpoint) + TRANSPORT_OVERHEAD as u16);
            if expected == Some(ack.received) {
                edge.pmtud.on_ack(ack.id, now);
                self.probing = true;
                self.pmtu_changes(id);
            }
        }
    }

    /// Seals the next due probe of any edge into `buf`. A probe counts as
    /// sent only once it is sealed ([`Pmtud::probe_sent`]): one that finds
    /// no session waits for the next ([`Device::ensure_edge`] looks again),
    /// one that finds no room in `buf` for the next call.
    pub(super) fn poll_probe(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if !self.probing {
            return None;
        }
        let mut wants_room = false;
        for id in self.peers.ids() {
            let peer = &mut self.peers[id];
            let Some(edge) = peer.edge.as_ref() else {
                continue;
            };
            // A relayed peer's direct endpoint does not answer: no probes.
            if peer.endpoint != Some(edge.endpoint) || peer.via.is_some() {
                continue;
            }
            let endpoint = edge.endpoint;
            let Some(next) = edge.pmtud.poll_probe() else {
                continue;
            };
            let plain = usize::from(next.size - overhead(endpoint));
            let probe = Control::Probe(Probe {
                id: next.id,
                len: plain,
            });
            let Some(body) = buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + plain) else {
                wants_room = true;
                continue;
            };
            if probe.emit(body).is_none() {
                wants_room = true;
                continue;
            }
            let Some(session) = peer.keys.sending_session(now) else {
                continue;
            };
            let Ok(n) = session.seal(buf, plain, plain) else {
                continue;
            };
            if let Some(edge) = peer.edge.as_mut() {
                edge.pmtud.probe_sent(next, now);
            }
            Self::on_authenticated_sent(peer, now);
            return Some(Transmit {
                destination: endpoint,
                len: n,
            });
        }
        self.probing = wants_room;
        None
    }

    /// Runs discovery timers of every edge due at `now`.
    pub(super) fn handle_path_timeouts(&mut self, now: Instant) {
        for id in self.peers.ids() {
            let due = self.peers[id]
                .edge
                .as_ref()
                .and_then(|e| e.pmtud.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(e) = self.peers[id].edge.as_mut() {
                    e.pmtud.handle_timeout(now);
                }
                self.probing = true;
                self.pmtu_changes(id);
            }
        }
    }

    /// The earliest discovery deadline.
    pub(super) fn path_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|p| p.edge.as_ref().and_then(|e| e.pmtud.poll_timeout()))
            .min()
    }

    /// Emits an event if the edge of `id` changed its size in use.
    fn pmtu_changes(&mut self, id: PeerId) {
        let peer = &mut self.peers[id];
        let Some(edge) = peer.edge.as_mut() else {
            return;
        };
        if let Some(pmtu) = edge.pmtud.poll_change() {
            let inner_mtu = edge.inner_mtu();
            let stats = edge.pmtud.stats();
            info!(
                peer = %peer.name,
                endpoint = %edge.endpoint,
                pmtu,
                inner_mtu,
                confirmed = edge.pmtud.confirmed() == Some(pmtu),
                probes = stats.probes_sent,
                probe_bytes = stats.probe_bytes,
                "path MTU changed"
            );
            self.events.push_back(Event::PmtuChanged {
                peer: id,
                endpoint: edge.endpoint,
                pmtu,
                inner_mtu,
            });
        }
    }

    /// The local interface MTU toward `id`'s endpoint: the upper bound of
    /// its search.
    pub fn set_local_mtu(&mut self, id: PeerId, mtu: u16, now: Instant) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.local_mtu = Some(mtu);
        if let Some(edge) = peer.edge.as_mut() {
            edge.pmtud.set_max(mtu.max(edge.pmtud.limits().floor), now);
            self.probing = true;
            self.pmtu_changes(id);
        }
    }

    /// An ICMP "too big" (or EMSGSIZE) says packets to `endpoint` larger
    /// than `mtu` do not pass. A hint only: discovery confirms it.
    pub fn handle_too_big(&mut self, endpoint: SocketAddr, mtu: u16, now: Instant) {
        for id in self.peers.ids() {
            let Some(edge) = self.peers[id].edge.as_mut() else {
                continue;
            };
            if edge.endpoint == endpoint && mtu < edge.pmtud.current() {
                edge.pmtud.on_too_big(mtu, now);
                self.probing = true;
                self.pmtu_changes(id);
            }
        }
    }

    /// A path MTU others observed toward `id` (gossip) or this node stored:
    /// the next search toward it tries this size first, and uses it only
    /// once a probe confirms it.
    pub fn set_pmtu_prior(&mut self, id: PeerId, pmtu: u16) {
        if let Some(peer) = self.peers.get_mut(id) {
            if peer.edge.is_none() {
                peer.pmtu_prior = Some(pmtu);
            }
        }
    }

    /// What this node knows of its path to `id` from an earlier run: the
    /// first edge toward it starts from this (see [`PathHint`]). Ignored
    /// once an edge exists.
    pub fn set_path_hint(&mut self, id: PeerId, hint: PathHint) {
        if let Some(peer) = self.peers.get_mut(id) {
            if peer.edge.is_none() {
                peer.path_hint = Some(hint);
            }
        }
    }

    /// The path MTU in use toward `id` and whether it is confirmed.
    pub fn path_mtu(&self, id: PeerId) -> Option<(u16, bool)> {
        let e = self.peers.get(id)?.edge.as_ref()?;
        Some((
            e.pmtud.current(),
            e.pmtud.confirmed() == Some(e.pmtud.current()),
        ))
    }

    /// The round-trip time discovery measured toward `id`.
    pub fn path_rtt(&self, id: PeerId) -> Option<std::time::Duration> {
        self.peers.get(id)?.edge.as_ref()?.pmtud.rtt()
    }

    /// Discovery counters of `id`'s edge.
    pub fn pmtu_stats(&self, id: PeerId) -> Option<crate::pmtu::PmtuStats> {
        Some(self.peers.get(id)?.edge.as_ref()?.pmtud.stats())
    }
}
