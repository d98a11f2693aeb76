//! Changes to the peer set while running, for a mesh whose members come and
//! go: removing a revoked member, finding a peer by key, and endpoints
//! learned from gossip rather than from the peer's own packets.
//!
//! A removed peer keeps its [`PeerId`] slot (ids stay stable) but loses its
//! routes, sessions, queue and timers, and nothing it sends is accepted: its
//! key no longer matches a peer and its session indices are gone.
//!
//! This module owns the device's tables of who the peers are (by key, by
//! route) as the mesh changes; the peer's own state (keys, path, edge) is
//! cleared through its methods. It never takes an endpoint from gossip over
//! one the peer itself proved recently ([`GOSSIP_ENDPOINT_GRACE`]).

use std::net::SocketAddr;
use std::time::Instant;

use tracing::info;

use super::{Device, Event};
use crate::noise::PublicKey;
use crate::peer::path::GOSSIP_ENDPOINT_GRACE;
use crate::peer::PeerId;

impl Device {
    /// The peer with static key `key`, if any.
    pub fn find_peer(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Removes `id`: routes, sessions, handshake, queue and timers. Its
    /// datagrams are refused from now on (unknown index, unknown key).
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.removed {
            return;
        }
        let nets = std::mem::take(&mut peer.allowed_ips);
        peer.removed = true;
        peer.timers.stop_all();
        peer.mtu.clear();
        peer.path.clear_endpoint();
        let key = peer.public_key;
        info!(peer = %peer.name, "peer removed");
        self.erase_keys(id);
        for net in nets {
            if self.routes.exact_match(net) == Some(&id) {
                self.routes.remove(net);
            }
        }
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        self.events.push_back(Event::SessionsCleared { peer: id });
        self.forget_relay(id);
    }

    /// An endpoint for `id` reported by others (gossip): taken if the peer
    /// has none, or has not been heard from directly for
    /// [`GOSSIP_ENDPOINT_GRACE`]. Returns whether it was taken.
    pub fn suggest_endpoint(&mut self, id: PeerId, endpoint: SocketAddr, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
        if peer.removed || peer.path.endpoint() == Some(endpoint) {
            return false;
        }
        let heard_recently = peer
            .last_received
            .is_some_and(|t| now.saturating_duration_since(t) < GOSSIP_ENDPOINT_GRACE);
        if peer.path.endpoint().is_some() && heard_recently {
            return false;
        }
        let old = peer.path.endpoint();
        peer.path.move_endpoint(endpoint);
        info!(peer = %peer.name, from = ?old, to = %endpoint, "endpoint learned from gossip");
        self.events.push_back(Event::EndpointChanged {
            peer: id,
            from: old,
            to: endpoint,
        });
        true
    }
}
