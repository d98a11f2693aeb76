//! A peer's path-MTU state: the edge (the peer at one endpoint, with its
//! [`Pmtud`] search) and what the next edge starts from.
//!
//! This module is the only place an edge starts, takes probe results or
//! changes its limits. It never seals or sends a probe (the device does, in
//! `device/path.rs`), never reads the clock, and never changes the peer's
//! endpoint: it is told the endpoint each time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::pmtu::{NextProbe, PmtuLimits, PmtuStats, Pmtud};
use crate::wire::control::ProbeAck;
use crate::wire::TRANSPORT_OVERHEAD;

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
/// ([`crate::Device::set_path_hint`]).
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
struct Edge {
    endpoint: SocketAddr,
    pmtud: Pmtud,
}

impl Edge {
    /// The largest inner packet this edge carries now.
    fn inner_mtu(&self) -> u16 {
        self.pmtud.current().saturating_sub(overhead(self.endpoint))
    }
}

/// How an edge started, for the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeStart {
    /// The upper bound of the search.
    pub max: u16,
    /// The stored size it starts from, and whether this node confirmed it.
    pub hinted: Option<(u16, bool)>,
}

/// A change of the size in use, to report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PmtuChange {
    pub endpoint: SocketAddr,
    pub pmtu: u16,
    pub inner_mtu: u16,
    pub confirmed: bool,
    pub stats: PmtuStats,
}

/// The path-MTU state of one peer.
#[derive(Debug, Default)]
pub(crate) struct PathMtu {
    /// Discovery toward the endpoint it started at.
    edge: Option<Edge>,
    /// The local interface MTU toward the endpoint, if the caller said.
    local_mtu: Option<u16>,
    /// A size to try first when discovery toward this peer starts.
    prior: Option<u16>,
    /// What this node stored about its path to the peer, for the first edge.
    hint: Option<PathHint>,
}

impl PathMtu {
    /// Whether an edge toward `endpoint` runs; if so, whether it has a
    /// probe to send.
    pub fn edge_toward(&self, endpoint: SocketAddr) -> Option<bool> {
        let edge = self.edge.as_ref().filter(|e| e.endpoint == endpoint)?;
        Some(edge.pmtud.poll_probe().is_some())
    }

    /// Starts an edge toward `endpoint`, searching up to the local MTU (or
    /// `default_max`), from the hint and prior if any. `handshake_rtt` is
    /// the fresh round trip; a stored one is better than none.
    pub fn start(
        &mut self,
        endpoint: SocketAddr,
        default_max: u16,
        handshake_rtt: Option<Duration>,
        now: Instant,
    ) -> EdgeStart {
        let floor = if endpoint.is_ipv4() {
            FLOOR_V4
        } else {
            FLOOR_V6
        };
        let max = self.local_mtu.unwrap_or(default_max).max(floor);
        let limits = PmtuLimits {
            floor,
            base: BASE_INNER_MTU + overhead(endpoint),
            max,
        };
        let hint = self.hint.take();
        // The handshake's round trip is fresh; a stored one is better than
        // none (the responder of a handshake measures none).
        let rtt = handshake_rtt.or(hint.and_then(|h| h.rtt));
        let hinted = hint
            .filter(|h| h.endpoint.is_none_or(|e| e == endpoint))
            .and_then(|h| Some((h.pmtu?, h.confirmed_by_self)));
        let prior = self.prior.take();
        let pmtud = match hinted {
            Some((stored, true)) => Pmtud::resume(limits, rtt, stored, now),
            Some((reported, false)) => Pmtud::new(limits, rtt, prior.or(Some(reported)), now),
            None => Pmtud::new(limits, rtt, prior, now),
        };
        self.edge = Some(Edge { endpoint, pmtud });
        EdgeStart { max, hinted }
    }

    /// Drops the edge (the peer was removed).
    pub fn clear(&mut self) {
        self.edge = None;
    }

    /// The inner MTU of the edge toward `endpoint`, if one runs.
    pub fn inner_mtu(&self, endpoint: Option<SocketAddr>) -> Option<u16> {
        self.edge
            .as_ref()
            .filter(|e| Some(e.endpoint) == endpoint)
            .map(Edge::inner_mtu)
    }

    /// Takes an acknowledgement of one of our probes. Returns whether it
    /// matched what we sent (and so counted).
    pub fn on_probe_ack(&mut self, ack: ProbeAck, now: Instant) -> bool {
        let Some(edge) = self.edge.as_mut() else {
            return false;
        };
        // The peer reports what arrived; it must be what we sent.
        let expected = edge
            .pmtud
            .probe_size(ack.id)
            .map(|s| s - overhead(edge.endpoint) + TRANSPORT_OVERHEAD as u16);
        if expected != Some(ack.received) {
            return false;
        }
        edge.pmtud.on_ack(ack.id, now);
        true
    }

    /// The next probe due on the edge toward `endpoint`, with its plaintext
    /// length.
    pub fn poll_probe(&self, endpoint: Option<SocketAddr>) -> Option<(NextProbe, usize)> {
        let edge = self
            .edge
            .as_ref()
            .filter(|e| Some(e.endpoint) == endpoint)?;
        let next = edge.pmtud.poll_probe()?;
        Some((next, usize::from(next.size - overhead(edge.endpoint))))
    }

    /// `probe` was sealed and sent.
    pub fn probe_sent(&mut self, probe: NextProbe, now: Instant) {
        if let Some(edge) = self.edge.as_mut() {
            edge.pmtud.probe_sent(probe, now);
        }
    }

    /// Data was sent on the edge.
    pub fn on_active(&mut self, now: Instant) {
        if let Some(edge) = self.edge.as_mut() {
            edge.pmtud.on_active(now);
        }
    }

    /// The edge's next discovery deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.edge.as_ref().and_then(|e| e.pmtud.poll_timeout())
    }

    /// Runs the edge's timers if due. Returns whether any was.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let Some(edge) = self.edge.as_mut() else {
            return false;
        };
        let due = edge.pmtud.poll_timeout().is_some_and(|t| t <= now);
        if !due {
            return false;
        }
        edge.pmtud.handle_timeout(now);
        true
    }

    /// A change of the size in use since the last call.
    pub fn poll_change(&mut self) -> Option<PmtuChange> {
        let edge = self.edge.as_mut()?;
        let pmtu = edge.pmtud.poll_change()?;
        Some(PmtuChange {
            endpoint: edge.endpoint,
            pmtu,
            inner_mtu: edge.inner_mtu(),
            confirmed: edge.pmtud.confirmed() == Some(pmtu),
            stats: edge.pmtud.stats(),
        })
    }

    /// The local interface MTU toward the endpoint. Returns whether an edge
    /// took it.
    pub fn set_local_mtu(&mut self, mtu: u16, now: Instant) -> bool {
        self.local_mtu = Some(mtu);
        let Some(edge) = self.edge.as_mut() else {
            return false;
        };
        edge.pmtud.set_max(mtu.max(edge.pmtud.limits().floor), now);
        true
    }

    /// An ICMP "too big" (or EMSGSIZE) says packets to `endpoint` larger
    /// than `mtu` do not pass. A hint only ([`Pmtud::on_too_big`]): the
    /// edge probes its size in use at once and lowers it only if those
    /// probes are lost. Returns whether the edge started probing (it is
    /// toward `endpoint`, `mtu` is below its size in use, and no hint was
    /// taken just before).
    pub fn on_too_big(&mut self, endpoint: SocketAddr, mtu: u16, now: Instant) -> bool {
        let Some(edge) = self.edge.as_mut() else {
            return false;
        };
        edge.endpoint == endpoint && edge.pmtud.on_too_big(mtu, now)
    }

    /// A size to try first, unless an edge already runs.
    pub fn set_prior(&mut self, pmtu: u16) {
        if self.edge.is_none() {
            self.prior = Some(pmtu);
        }
    }

    /// What the first edge starts from, unless an edge already runs.
    pub fn set_hint(&mut self, hint: PathHint) {
        if self.edge.is_none() {
            self.hint = Some(hint);
        }
    }

    /// The path MTU in use and whether it is confirmed.
    pub fn path_mtu(&self) -> Option<(u16, bool)> {
        let e = self.edge.as_ref()?;
        Some((
            e.pmtud.current(),
            e.pmtud.confirmed() == Some(e.pmtud.current()),
        ))
    }

    /// The round-trip time discovery measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.edge.as_ref()?.pmtud.rtt()
    }

    /// Discovery counters.
    pub fn stats(&self) -> Option<PmtuStats> {
        Some(self.edge.as_ref()?.pmtud.stats())
    }
}
