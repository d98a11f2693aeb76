//! What the node does around path-MTU discovery: tells the device the local
//! MTU toward each endpoint, feeds it ICMP "too big" hints from the socket's
//! error queue, and asks for each peer's kernel routes at the edge's inner
//! MTU.
//!
//! The routes are what make local sockets size their packets right before
//! any is lost: a TCP connection to a peer's overlay address takes its MSS
//! from the route. The device decides every size; this module only carries
//! its decisions toward the kernel. It never waits: route changes go into
//! the [`RouteQueue`] (programmed by the route task, `routes.rs`), and the
//! hints are answered by the kernel at once (`udp::route_mtu`). A route
//! that is never programmed never stops the node: the ICMP replies and MSS
//! clamping still make traffic fit.

use std::net::SocketAddr;
use std::time::Instant;

use ip_network::IpNetwork;
use tracing::debug;
use weft_protocol::device::BASE_INNER_MTU;
use weft_protocol::{Device, Event, PeerId};

use crate::routes::RouteQueue;
use crate::udp::{route_mtu, UdpIo};

/// Route changes and MTU hints for every edge.
#[derive(Debug)]
pub struct Edges {
    routes: Option<RouteQueue>,
    discovery: bool,
    /// Route changes dropped by the route queues of interfaces since
    /// removed, so the count stays monotonic.
    routes_dropped_before: u64,
}

/// The MTU a route to `prefix` may carry: IPv6 routes refuse less than
/// IPv6's minimum.
fn route_mtu_for(prefix: &IpNetwork, inner_mtu: u16) -> u32 {
    match prefix {
        IpNetwork::V4(_) => u32::from(inner_mtu),
        IpNetwork::V6(_) => u32::from(inner_mtu.max(1280)),
    }
}

impl Edges {
    /// Route changes go to `routes` (none: routes are not programmed, only
    /// hints given); `discovery` is whether path-MTU discovery runs.
    pub fn new(routes: Option<RouteQueue>, discovery: bool) -> Self {
        Self {
            routes,
            discovery,
            routes_dropped_before: 0,
        }
    }

    /// Routes every peer's allowed IPs through the interface, at the safe
    /// base MTU until discovery says more, and gives the device the local
    /// MTU toward each configured endpoint.
    pub fn start(&mut self, device: &mut Device, now: Instant) {
        let peers: Vec<PeerId> = device.peer_ids().collect();
        for peer in peers {
            self.peer_added(device, peer, now);
        }
    }

    /// Routes a peer (at start, or added while running) at the base MTU,
    /// and gives the device the local MTU toward its endpoint.
    pub fn peer_added(&mut self, device: &mut Device, peer: PeerId, now: Instant) {
        let mtu = self.discovery.then_some(BASE_INNER_MTU);
        self.set_routes(device, peer, mtu, now);
        if let Some(endpoint) = device.peer_status(peer, now).and_then(|s| s.endpoint) {
            local_mtu(device, peer, endpoint, now);
        }
    }

    /// The interface was created again after it was removed (its routes
    /// went with it): route changes go to `routes`, the queue of a route
    /// task for the new interface, and every peer's routes are asked for
    /// again, at the MTU its edge has now.
    pub fn interface_recreated(
        &mut self,
        routes: Option<RouteQueue>,
        device: &Device,
        now: Instant,
    ) {
        self.routes_dropped_before += self.routes_dropped();
        self.routes = routes;
        let peers: Vec<PeerId> = device.peer_ids().collect();
        for peer in peers {
            let mtu = self
                .discovery
                .then(|| u16::try_from(device.inner_mtu(peer)).unwrap_or(u16::MAX));
            self.set_routes(device, peer, mtu, now);
        }
    }

    /// Follows a protocol event.
    pub fn on_event(&mut self, device: &mut Device, event: &Event, now: Instant) {
        match *event {
            Event::EndpointChanged { peer, to, .. } => local_mtu(device, peer, to, now),
            Event::PmtuChanged {
                peer, inner_mtu, ..
            } => self.set_routes(device, peer, Some(inner_mtu), now),
            // Through a relay the edge carries less; back to direct, the
            // edge's own size (discovery reports changes from there).
            Event::PathChanged { peer, .. } if self.discovery => {
                let mtu = u16::try_from(device.inner_mtu(peer)).unwrap_or(u16::MAX);
                self.set_routes(device, peer, Some(mtu), now)
            }
            _ => {}
        }
    }

    /// Hands the route changes asked for since the last call to the route
    /// task, without waiting; once per turn of the loop.
    pub fn flush(&mut self) {
        if let Some(routes) = self.routes.as_mut() {
            routes.flush();
        }
    }

    /// Route changes dropped because the route task's queue was full.
    pub fn routes_dropped(&self) -> u64 {
        self.routes_dropped_before + self.routes.as_ref().map_or(0, RouteQueue::dropped)
    }

    fn set_routes(&mut self, device: &Device, peer: PeerId, mtu: Option<u16>, now: Instant) {
        let Some(routes) = self.routes.as_mut() else {
            return;
        };
        let Some(status) = device.peer_status(peer, now) else {
            return;
        };
        for prefix in &status.allowed_ips {
            routes.set(*prefix, mtu.map(|m| route_mtu_for(prefix, m)), &status.name);
        }
    }
}

/// Drains ICMP errors from the socket; after a "too big", asks the kernel
/// what it now knows toward every endpoint and hints the device.
pub fn on_socket_errors(device: &mut Device, udp: &UdpIo, now: Instant) {
    let mut too_big = false;
    while let Some(error) = udp.take_transport_error() {
        too_big |= error.is_some();
    }
    if too_big {
        refresh_hints(device, now);
    }
}

/// A send failed with EMSGSIZE, or an ICMP "too big" arrived: the kernel's
/// route MTU toward each endpoint is the hint.
pub fn refresh_hints(device: &mut Device, now: Instant) {
    let peers: Vec<PeerId> = device.peer_ids().collect();
    for peer in peers {
        let Some(endpoint) = device.peer_status(peer, now).and_then(|s| s.endpoint) else {
            continue;
        };
        if let Some(mtu) = route_mtu(endpoint) {
            debug!(peer = device.peer_name(peer), %endpoint, mtu, "kernel path MTU hint");
            device.handle_too_big(endpoint, mtu, now);
        }
    }
}

fn local_mtu(device: &mut Device, peer: PeerId, endpoint: SocketAddr, now: Instant) {
    if let Some(mtu) = route_mtu(endpoint) {
        device.set_local_mtu(peer, mtu, now);
    }
}
