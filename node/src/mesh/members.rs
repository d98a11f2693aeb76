//! The members this node knows, in memory: certificate, latest signed
//! announcement, announced endpoints and control-plane identity.
//!
//! Loaded from the store at start (each certificate verified once) and kept
//! by gossip from then on, so that validating a record, finding the member
//! behind a data-plane key or choosing control neighbours never reads the
//! store or verifies a certificate again. Revoked members and this node
//! itself are never in it. It is bounded by the membership: a member is
//! added only with a certificate the network's authority signed.
//!
//! It also says what a member is to the rest of the node: its control-plane
//! identity ([`peer_id_of`]) and its data-plane peer ([`peer_config`]). It
//! imports no other mesh service; gossip, neighbours, relays and warm start
//! read it. It never touches the store after loading, nor the device.

use std::collections::HashMap;
use std::net::SocketAddr;

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
use libp2p::identity::PublicKey as P2pKey;
use libp2p::PeerId as P2pId;
use tracing::warn;
use weft_protocol::membership::{Certificate, IdentityKey};
use weft_protocol::{PeerConfig, PublicKey};

use super::Membership;

/// One known member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its verified certificate.
    pub cert: Certificate,
    /// Its control-plane (libp2p) identity.
    pub p2p: Option<P2pId>,
    /// Its latest accepted announcement, as it signed it: what this node
    /// pushes to newly connected members.
    pub announcement: Option<Vec<u8>>,
    /// The endpoints it announced, newest announcement.
    pub endpoints: Vec<SocketAddr>,
    /// Whether the store holds this certificate (serial).
    pub stored_serial: Option<u64>,
}

/// The known members, by identity.
#[derive(Debug, Default)]
pub struct MemberTable {
    members: HashMap<IdentityKey, Member>,
    by_noise: HashMap<PublicKey, IdentityKey>,
    by_p2p: HashMap<P2pId, IdentityKey>,
}

impl MemberTable {
    /// The stored members whose certificates verify, less this node and
    /// the revoked ones.
    pub fn load(m: &Membership) -> Self {
        let me = m.identity.identity();
        let mut table = MemberTable::default();
        let list = match m.store.members().list() {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, "stored members not read");
                return table;
            }
        };
        for (id, record) in list {
            if id == me.0 || m.store.revocations().is_revoked(&id).unwrap_or(true) {
                continue;
            }
            let Some(cert) = m.verified(&record) else {
                warn!(name = %record.name, "skipping a stored member whose certificate no longer verifies");
                continue;
            };
            let serial = cert.serial;
            table.insert(cert, None, Vec::new());
            if let Some(member) = table.members.get_mut(&IdentityKey(id)) {
                member.stored_serial = Some(serial);
            }
        }
        table
    }

    /// Adds or updates a member: its certificate, and where given its
    /// latest announcement and endpoints. Returns whether it is new.
    pub fn insert(
        &mut self,
        cert: Certificate,
        announcement: Option<Vec<u8>>,
        endpoints: Vec<SocketAddr>,
    ) -> bool {
        let id = cert.identity;
        let p2p = peer_id_of(&id);
        self.by_noise.insert(cert.noise_key, id);
        if let Some(p) = p2p {
            self.by_p2p.insert(p, id);
        }
        match self.members.get_mut(&id) {
            Some(member) => {
                if member.cert.noise_key != cert.noise_key {
                    self.by_noise.remove(&member.cert.noise_key);
                    self.by_noise.insert(cert.noise_key, id);
                }
                member.cert = cert;
                if announcement.is_some() {
                    member.announcement = announcement;
                    member.endpoints = endpoints;
                }
                false
            }
            None => {
                self.members.insert(
                    id,
                    Member {
                        cert,
                        p2p,
                        announcement,
                        endpoints,
                        stored_serial: None,
                    },
                );
                true
            }
        }
    }

    /// Gives `id` an endpoint to be reached at until it announces its own
    /// (a stored path, at start).
    pub fn set_known_endpoint(&mut self, id: &IdentityKey, endpoint: SocketAddr) {
        if let Some(m) = self.members.get_mut(id) {
            if m.endpoints.is_empty() {
                m.endpoints.push(endpoint);
            }
        }
    }

    /// Notes that the store now holds `id`'s certificate with `serial`.
    pub fn mark_stored(&mut self, id: &IdentityKey, serial: u64) {
        if let Some(m) = self.members.get_mut(id) {
            m.stored_serial = Some(serial);
        }
    }

    /// Forgets a member (revoked).
    pub fn remove(&mut self, id: &IdentityKey) -> Option<Member> {
        let member = self.members.remove(id)?;
        self.by_noise.remove(&member.cert.noise_key);
        if let Some(p) = member.p2p {
            self.by_p2p.remove(&p);
        }
        Some(member)
    }

    /// The member `id`.
    pub fn get(&self, id: &IdentityKey) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether `id` is a known member.
    pub fn contains(&self, id: &IdentityKey) -> bool {
        self.members.contains_key(id)
    }

    /// The member whose data-plane key is `key`.
    pub fn by_noise_key(&self, key: &PublicKey) -> Option<&Member> {
        self.members.get(self.by_noise.get(key)?)
    }

    /// The member whose control-plane identity is `peer`.
    pub fn by_p2p(&self, peer: &P2pId) -> Option<&Member> {
        self.members.get(self.by_p2p.get(peer)?)
    }

    /// Every known member.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// How many members are known (this node not included).
    pub fn len(&self) -> usize {
        self.members.len()
    }
}

/// The libp2p peer id of an identity key.
pub fn peer_id_of(identity: &IdentityKey) -> Option<P2pId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(identity.as_bytes()).ok()?;
    Some(P2pId::from_public_key(&P2pKey::from(key)))
}

/// The prefixes a member's certificate routes to it.
pub fn member_prefixes(cert: &Certificate) -> Vec<IpNetwork> {
    let mut out = Vec::with_capacity(2);
    if let Ok(n) = Ipv4Network::new(cert.ipv4, 32) {
        out.push(IpNetwork::V4(n));
    }
    if let Ok(n) = Ipv6Network::new(cert.ipv6, 128) {
        out.push(IpNetwork::V6(n));
    }
    out
}

/// The data-plane peer of a member: its noise key, the prefixes of its
/// certificate, keepalives chosen from NAT measurements.
pub fn peer_config(cert: &Certificate, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: cert.name.clone(),
        public_key: cert.noise_key,
        preshared_key: None,
        endpoint,
        allowed_ips: member_prefixes(cert),
        keepalive: weft_protocol::Keepalive::Auto,
    }
}
