//! The running member: peers from the store, the join listener, gossip, and
//! the mesh's admin requests. The daemon's main task owns the device; joins
//! are served in their own tasks and reach the main task as messages.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_protocol::membership::validator::MAX_ANNOUNCED_ENDPOINTS;
use weft_protocol::membership::{Certificate, IdentityKey, Revocation};
use weft_protocol::{Device, NatStatus, PeerConfig, PeerId, StaticSecret};

use super::admin::{Request, Response};
use super::gossip::{control_address, Gossip};
use super::join::{self, Admitted};
use super::{invite, now_unix, warm, Membership, MeshConfig};
use crate::control::ControlEvent;
use crate::status::MeshStats;

/// A running member's mesh services.
pub struct MeshNode {
    membership: Arc<Membership>,
    /// The gossip side.
    pub gossip: Gossip,
    _listener: tokio::task::JoinHandle<()>,
    /// The device's NAT status last seen, and the lifetime last published.
    nat: (NatStatus, Option<Duration>),
}

/// What the mesh services hand to the main task.
#[derive(Debug)]
pub struct MeshInbox {
    /// Members admitted by the join listener.
    pub admitted: mpsc::Receiver<Admitted>,
    /// Control-plane events.
    pub control: mpsc::Receiver<ControlEvent>,
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode").finish_non_exhaustive()
    }
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

pub(crate) fn peer_config(cert: &Certificate, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: cert.name.clone(),
        public_key: cert.noise_key,
        preshared_key: None,
        endpoint,
        allowed_ips: member_prefixes(cert),
        keepalive: weft_protocol::Keepalive::Auto,
    }
}

impl MeshNode {
    /// Opens the membership, adds every known member as a data-plane peer,
    /// and starts the join listener and the control plane.
    pub async fn start(
        config: &MeshConfig,
        device: &mut Device,
        noise: StaticSecret,
        listen_port: u16,
    ) -> anyhow::Result<(Self, MeshInbox)> {
        let membership = Arc::new(Membership::open(config)?);
        let me = membership.identity.identity();
        let members = membership
            .store
            .members()
            .list()
            .map_err(|e| anyhow!("{e}"))?;
        let paths = warm::load(&membership);
        let mut added = 0;
        let mut bootstrap = Vec::new();
        for (id, record) in members {
            if id == me.0 {
                continue;
            }
            if membership
                .store
                .revocations()
                .is_revoked(&id)
                .unwrap_or(false)
            {
                continue;
            }
            let Some(cert) = membership.verified(&record) else {
                warn!(name = %record.name, "skipping a stored member whose certificate no longer verifies");
                continue;
            };
            let endpoint = paths.get(&id).map(|p| p.endpoint);
            bootstrap.extend(endpoint.and_then(|e| control_address(e, config.join_port)));
            match device.add_peer(peer_config(&cert, endpoint), Instant::now()) {
                Ok(peer) => {
                    warm::hint(device, peer, &cert.name, paths.get(&id));
                    added += 1;
                }
                Err(e) => warn!(name = %cert.name, error = %e, "cannot add member"),
            }
        }
        // This node's last own NAT measurement: keepalives start from it
        // (and verify it) if it turns out to be behind a NAT again.
        if let Ok(Some((_, own))) = membership.store.nat().latest_own() {
            let lifetime = Duration::from_millis(u64::from(own.lifetime_ms));
            device.set_nat_hint(lifetime, Instant::now());
        }
        let source = membership.endpoint_source(listen_port);
        let data_endpoints = source.current(MAX_ANNOUNCED_ENDPOINTS);
        let (gossip, control) = Gossip::start(&membership, config.join_port, source, bootstrap)?;
        let (admitted_tx, admitted) = mpsc::channel(16);
        let listener = join::listen(
            config.join_port,
            noise,
            membership.clone(),
            data_endpoints,
            admitted_tx,
        )
        .await?;
        info!(
            network = %membership.info.id(),
            name = %config.name,
            members = added,
            join_port = config.join_port,
            "mesh member running"
        );
        Ok((
            Self {
                membership,
                gossip,
                _listener: listener,
                nat: (NatStatus::default(), None),
            },
            MeshInbox { admitted, control },
        ))
    }

    /// Answers an admin request.
    pub async fn handle_admin(&mut self, request: Request, device: &mut Device) -> Response {
        match request {
            Request::Invite { name, ttl_secs } => {
                match invite::issue(&self.membership, name, ttl_secs, device.public_key()) {
                    Ok(token) => {
                        self.membership
                            .counters
                            .invites_issued
                            .fetch_add(1, Ordering::Relaxed);
                        Response::Token(token)
                    }
                    Err(e) => Response::Error(format!("{e:#}")),
                }
            }
            Request::Revoke { name } => match self.revoke(&name, device).await {
                Ok(text) => Response::Done(text),
                Err(e) => Response::Error(format!("{e:#}")),
            },
            // The daemon answers status itself.
            Request::Status => Response::Error("not a mesh request".into()),
        }
    }

    /// Membership, gossip and store counters for status and metrics.
    pub fn stats(&self) -> MeshStats {
        let m = &self.membership;
        let c = &m.counters;
        let members = m
            .store
            .members()
            .list()
            .map(|l| {
                l.iter()
                    .filter(|(id, _)| !m.store.revocations().is_revoked(id).unwrap_or(false))
                    .count()
            })
            .unwrap_or(0);
        let pairs = |map: &std::collections::BTreeMap<&'static str, u64>| {
            map.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        MeshStats {
            network: m.info.id().to_string(),
            members: members as u64,
            gossip_published: pairs(&self.gossip.published),
            gossip_received: pairs(&self.gossip.received),
            gossip_rejected: pairs(&self.gossip.rejected),
            invites_issued: c.invites_issued.load(Ordering::Relaxed),
            invites_used: c.invites_used.load(Ordering::Relaxed),
            invites_refused: c
                .invites_refused
                .lock()
                .map(|m| pairs(&m))
                .unwrap_or_default(),
            store_write_errors: c.store_write_errors.load(Ordering::Relaxed),
            store_corrupt_records: m.store.corrupt_records(),
        }
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.membership.config.name
    }

    async fn revoke(&mut self, name: &str, device: &mut Device) -> anyhow::Result<String> {
        let m = &self.membership;
        let authority = m.authority.as_ref().ok_or_else(|| {
            anyhow!("this member does not hold the authority key, so it cannot revoke")
        })?;
        let (id, record) = m
            .store
            .members()
            .list()
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .find(|(_, r)| r.name == name)
            .ok_or_else(|| anyhow!("no member is named {name:?}"))?;
        if id == m.identity.identity().0 {
            anyhow::bail!("a member cannot revoke itself");
        }
        let revocation = Revocation::sign(
            m.info.id(),
            IdentityKey(id),
            record.serial,
            now_unix(),
            authority,
        );
        self.gossip
            .publish_revocation(&self.membership, revocation, device)
            .await;
        Ok(format!("revoked {name}; the mesh drops it within seconds"))
    }

    /// Follows the device's NAT status: a lifetime stored for the public
    /// address just learned becomes the keepalive's hint, and a finished
    /// measurement is published and stored.
    pub async fn nat_changed(&mut self, device: &mut Device) {
        let status = device.nat_status();
        if status == self.nat.0 {
            return;
        }
        let learned = status
            .reflexive
            .filter(|r| self.nat.0.reflexive != Some(*r));
        self.nat.0 = status;
        if let (Some(public), Some(true)) = (learned, status.behind) {
            if let Ok(Some(r)) = self.membership.store.nat().get(public.ip()) {
                let lifetime = Duration::from_millis(u64::from(r.lifetime_ms));
                device.set_nat_hint(lifetime, Instant::now());
            }
        }
        let done = status.behind == Some(true) && !status.searching;
        if let (true, Some(public), Some(lifetime)) =
            (done, status.reflexive, status.lifetime_at_least)
        {
            if self.nat.1 != Some(lifetime) {
                self.nat.1 = Some(lifetime);
                self.gossip
                    .publish_nat_lifetime(&self.membership, public, lifetime)
                    .await;
            }
        }
    }

    /// Publishes this member's announcement when due or when it moved.
    pub async fn announce(&mut self) {
        self.gossip.tick(&self.membership).await;
    }

    /// Handles a control-plane event; returns peers added, for routes.
    pub async fn on_control(&mut self, event: ControlEvent, device: &mut Device) -> Vec<PeerId> {
        let added = self.gossip.on_event(&self.membership, event, device).await;
        let own = self.gossip.own_candidates();
        self.gossip.relays.apply(&self.membership, device, own);
        added
    }

    /// Tells the mesh a path MTU this node confirmed toward `peer`.
    pub async fn observe(
        &mut self,
        device: &Device,
        peer: PeerId,
        endpoint: SocketAddr,
        pmtu: u16,
    ) {
        self.gossip
            .publish_observation(&self.membership, device, peer, endpoint, pmtu)
            .await;
    }

    /// Stores the current paths and flushes the store: a clean shutdown.
    pub fn shutdown(&self, device: &Device) {
        warm::save(&self.membership, device);
    }

    /// Adds a newly admitted member as a peer; returns its id for routes.
    pub fn admit(&self, admitted: Admitted, device: &mut Device) -> Option<PeerId> {
        match device.add_peer(peer_config(&admitted.certificate, None), Instant::now()) {
            Ok(id) => Some(id),
            Err(e) => {
                debug!(error = %e, "admitted member not added");
                None
            }
        }
    }
}
