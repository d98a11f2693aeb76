//! The device's side of path-MTU discovery: starting an edge when a
//! session is usable toward a known endpoint, sealing the probes it asks
//! for, taking acknowledgements and ICMP hints, and the inner MTU each edge
//! allows.
//!
//! Probes (`0x01`) and acknowledgements (`0x02`) are control messages
//! ([`crate::wire::control`]): a probe is exactly as long as the probed size
//! requires (no padding beyond it), and the acknowledgement reports the
//! length of the datagram that carried it. So probes are authenticated and
//! encrypted like data, can't be forged or replayed, and the acknowledgement
//! measures the forward path. An edge starts over when the endpoint
//! changes; the first edge toward a peer can start from a [`PathHint`],
//! what the node stored about the path on an earlier run.
//!
//! The search itself and the edge's state are the peer's
//! ([`crate::peer::edge`], [`crate::pmtu`]); this module never changes them
//! but through their methods, and never sends a probe toward a relayed peer
//! (its direct endpoint does not answer).

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, info};

use super::{Device, Event, Transmit};
use crate::peer::edge::PathHint;
use crate::peer::relay::RELAY_OVERHEAD;
use crate::peer::PeerId;
use crate::wire::control::{Control, Probe, ProbeAck};
use crate::wire::TRANSPORT_HEADER_LEN;

impl Device {
    /// Starts discovery toward the peer's current endpoint if it has a
    /// usable session and no edge for that endpoint yet.
    pub(super) fn ensure_edge(&mut self, id: PeerId, now: Instant) {
        if !self.pmtu_discovery {
            return;
        }
        let default_max = self.max_pmtu;
        let peer = &mut self.peers[id];
        let Some(endpoint) = peer.path.endpoint() else {
            return;
        };
        if let Some(wants_probe) = peer.mtu.edge_toward(endpoint) {
            // A probe that waited for a session may go now.
            if wants_probe {
                self.probing = true;
            }
            return;
        }
        if peer.keys.sending_session(now).is_none() {
            return;
        }
        let rtt = peer.keys.handshake_rtt();
        let start = peer.mtu.start(endpoint, default_max, rtt, now);
        debug!(peer = %peer.name, %endpoint, max = start.max, hinted = ?start.hinted,
            "starting path MTU discovery");
        self.probing = true;
    }

    /// The inner MTU toward `id`: the edge's, or the interface MTU when
    /// discovery is off or has not started; through a relay, the relay's
    /// less [`RELAY_OVERHEAD`].
    pub fn inner_mtu(&self, id: PeerId) -> usize {
        match self.peers[id].path.via() {
            Some(relay) => self.direct_inner_mtu(relay).saturating_sub(RELAY_OVERHEAD),
            None => self.direct_inner_mtu(id),
        }
    }

    fn direct_inner_mtu(&self, id: PeerId) -> usize {
        let peer = &self.peers[id];
        match peer.mtu.inner_mtu(peer.path.endpoint()) {
            Some(inner) => usize::from(inner).min(self.mtu),
            None => self.mtu,
        }
    }

    /// `id` acknowledged one of our probes.
    pub(super) fn on_probe_ack(&mut self, id: PeerId, ack: ProbeAck, now: Instant) {
        if self.peers[id].mtu.on_probe_ack(ack, now) {
            self.probing = true;
            self.pmtu_changes(id);
        }
    }

    /// Seals the next due probe of any edge into `buf`. A probe counts as
    /// sent only once it is sealed: one that finds no session waits for the
    /// next ([`Device::ensure_edge`] looks again), one that finds no room in
    /// `buf` for the next call.
    pub(super) fn poll_probe(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if !self.probing {
            return None;
        }
        let mut wants_room = false;
        for peer in self.peers.iter_mut() {
            // A relayed peer's direct endpoint does not answer: no probes.
            let Some(endpoint) = peer.path.direct_endpoint() else {
                continue;
            };
            let Some((next, plain)) = peer.mtu.poll_probe(Some(endpoint)) else {
                continue;
            };
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
            peer.mtu.probe_sent(next, now);
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
            if self.peers[id].mtu.handle_timeout(now) {
                self.probing = true;
                self.pmtu_changes(id);
            }
        }
    }

    /// The earliest discovery deadline.
    pub(super) fn path_timeout(&self) -> Option<Instant> {
        self.peers.iter().filter_map(|p| p.mtu.poll_timeout()).min()
    }

    /// Emits an event if the edge of `id` changed its size in use.
    fn pmtu_changes(&mut self, id: PeerId) {
        let peer = &mut self.peers[id];
        let Some(change) = peer.mtu.poll_change() else {
            return;
        };
        info!(
            peer = %peer.name,
            endpoint = %change.endpoint,
            pmtu = change.pmtu,
            inner_mtu = change.inner_mtu,
            confirmed = change.confirmed,
            probes = change.stats.probes_sent,
            probe_bytes = change.stats.probe_bytes,
            "path MTU changed"
        );
        self.events.push_back(Event::PmtuChanged {
            peer: id,
            endpoint: change.endpoint,
            pmtu: change.pmtu,
            inner_mtu: change.inner_mtu,
        });
    }

    /// The local interface MTU toward `id`'s endpoint: the upper bound of
    /// its search.
    pub fn set_local_mtu(&mut self, id: PeerId, mtu: u16, now: Instant) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.mtu.set_local_mtu(mtu, now) {
            self.probing = true;
            self.pmtu_changes(id);
        }
    }

    /// An ICMP "too big" (or EMSGSIZE) says packets to `endpoint` larger
    /// than `mtu` do not pass. A hint only: discovery confirms it.
    pub fn handle_too_big(&mut self, endpoint: SocketAddr, mtu: u16, now: Instant) {
        for id in self.peers.ids() {
            if self.peers[id].mtu.on_too_big(endpoint, mtu, now) {
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
            peer.mtu.set_prior(pmtu);
        }
    }

    /// What this node knows of its path to `id` from an earlier run: the
    /// first edge toward it starts from this (see [`PathHint`]). Ignored
    /// once an edge exists.
    pub fn set_path_hint(&mut self, id: PeerId, hint: PathHint) {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.mtu.set_hint(hint);
        }
    }

    /// The path MTU in use toward `id` and whether it is confirmed.
    pub fn path_mtu(&self, id: PeerId) -> Option<(u16, bool)> {
        self.peers.get(id)?.mtu.path_mtu()
    }

    /// The round-trip time discovery measured toward `id`.
    pub fn path_rtt(&self, id: PeerId) -> Option<std::time::Duration> {
        self.peers.get(id)?.mtu.rtt()
    }

    /// Discovery counters of `id`'s edge.
    pub fn pmtu_stats(&self, id: PeerId) -> Option<crate::pmtu::PmtuStats> {
        self.peers.get(id)?.mtu.stats()
    }
}
