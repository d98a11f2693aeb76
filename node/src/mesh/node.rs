//! The running member: peers from the store, the join listener, the admin
//! socket. The daemon's main task owns the device; joins and admin requests
//! are served in their own tasks and reach the main task as messages.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_protocol::membership::{Certificate, SignedCertificate};
use weft_protocol::{Device, PeerConfig, PeerId, StaticSecret};

use super::admin::{self, Pending, Request, Response, SocketGuard};
use super::join::{self, Admitted};
use super::{invite, local_addresses, now_unix, Membership, MeshConfig};

/// A running member's mesh services.
pub struct MeshNode {
    membership: Arc<Membership>,
    _socket: SocketGuard,
    _listener: tokio::task::JoinHandle<()>,
}

/// What the mesh services hand to the main task.
#[derive(Debug)]
pub struct MeshInbox {
    /// Admin requests.
    pub admin: mpsc::Receiver<Pending>,
    /// Members admitted by the join listener.
    pub admitted: mpsc::Receiver<Admitted>,
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

fn peer_config(cert: &Certificate, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: cert.name.clone(),
        public_key: cert.noise_key,
        preshared_key: None,
        endpoint,
        allowed_ips: member_prefixes(cert),
        persistent_keepalive: None,
    }
}

impl MeshNode {
    /// Opens the membership, adds every known member as a data-plane peer,
    /// and starts the join listener and the admin socket.
    pub async fn start(
        config: &MeshConfig,
        device: &mut Device,
        noise: StaticSecret,
        listen_port: u16,
    ) -> anyhow::Result<(Self, MeshInbox)> {
        let membership = Arc::new(Membership::open(config)?);
        let me = membership.identity.identity();
        let now = now_unix();
        let members = membership
            .store
            .members()
            .list()
            .map_err(|e| anyhow!("{e}"))?;
        let mut added = 0;
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
            let Some(cert) = SignedCertificate::from_bytes(&record.certificate)
                .ok()
                .and_then(|c| c.verify(&membership.info, now).ok())
            else {
                warn!(name = %record.name, "skipping a stored member whose certificate no longer verifies");
                continue;
            };
            let endpoint = membership
                .store
                .paths()
                .get(&me.0, &id)
                .ok()
                .flatten()
                .map(|p| p.endpoint);
            match device.add_peer(peer_config(&cert, endpoint), Instant::now()) {
                Ok(_) => added += 1,
                Err(e) => warn!(name = %cert.name, error = %e, "cannot add member"),
            }
        }
        let overlay = [
            IpNetwork::V4(membership.info.ipv4()),
            IpNetwork::V6(membership.info.ipv6()),
        ];
        let ips: Vec<IpAddr> = if config.advertise.is_empty() {
            local_addresses(&overlay)
        } else {
            config.advertise.clone()
        };
        let data_endpoints: Vec<SocketAddr> = ips
            .into_iter()
            .take(8)
            .map(|ip| SocketAddr::new(ip, listen_port))
            .collect();
        let (admin_tx, admin) = mpsc::channel(8);
        let socket = admin::bind(&config.admin_socket, admin_tx)?;
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
                _socket: socket,
                _listener: listener,
            },
            MeshInbox { admin, admitted },
        ))
    }

    /// Answers an admin request.
    pub fn handle_admin(&self, request: Request, device: &Device) -> Response {
        match request {
            Request::Invite { name, ttl_secs } => {
                match invite::issue(&self.membership, name, ttl_secs, device.public_key()) {
                    Ok(token) => Response::Token(token),
                    Err(e) => Response::Error(format!("{e:#}")),
                }
            }
        }
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
