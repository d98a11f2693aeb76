//! Gossip on the running member: what it publishes, how it judges what it
//! receives, and what an accepted record changes.
//!
//! The control plane (libp2p gossipsub, `crate::control`) carries signed
//! records; this module decides. A peer stays connected only if it presents
//! a certificate for this network, bound to its libp2p identity (the
//! identity key is the libp2p Ed25519 key) and not revoked. Every record is
//! checked by the protocol's `Validator` before it is forwarded or used:
//! - an announcement adds the member as a data-plane peer (or gives a known
//!   one an endpoint it has not proved otherwise), and is stored;
//! - a path observation is stored (a prior for later searches);
//! - a revocation is stored (flushed), the member's peer is removed and its
//!   control connection closed.
//!
//! A member announces itself when it starts, whenever another member
//! connects (so newcomers learn it at once), and every 60 s with jitter.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use libp2p::{identity::PublicKey as P2pKey, Multiaddr, PeerId};
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_protocol::membership::{
    Certificate, IdentityKey, NetworkInfo, RecordBody, RecordError, SignedCertificate, Validator,
};
use weft_protocol::Device;
use weft_store::{MemberRecord, NatRecord, PathRecord, RevocationRecord};

use super::node::peer_config;
use super::{now_unix, EndpointSource, Membership};
use crate::control::{Control, ControlConfig, ControlEvent, ControlHandle, Gate, Verdict};
use weft_protocol::membership::validator::MAX_ANNOUNCED_ENDPOINTS;

/// Base interval of periodic announcements; each is jittered by up to 20%.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);
/// A second announcement this long after a member connects, in case the
/// first crossed its admission of us.
pub const FOLLOW_UP: Duration = Duration::from_secs(1);
/// After a move, members are dialled again once their copies of the dead
/// connections have timed out.
pub const REDIAL_AFTER_MOVE: Duration =
    Duration::from_millis(crate::control::behaviour::QUIC_IDLE_TIMEOUT_MS as u64 + 1_000);
/// Reflexive endpoints kept for announcements.
pub const MAX_REFLEXIVE: usize = 2;
/// How often the host's addresses are re-read; a change is announced at
/// once, so the mesh follows a member that moved.
pub const ADDRESS_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The control-plane address of a member reached at `endpoint`: members
/// listen for the control plane on `port`, the same number everywhere.
pub fn control_address(endpoint: SocketAddr, port: u16) -> Option<Multiaddr> {
    let ip = match endpoint.ip() {
        std::net::IpAddr::V4(v4) => format!("/ip4/{v4}"),
        std::net::IpAddr::V6(v6) => format!("/ip6/{v6}"),
    };
    format!("{ip}/udp/{port}/quic-v1").parse().ok()
}

/// The libp2p peer id of an identity key.
pub fn peer_id_of(identity: &IdentityKey) -> Option<PeerId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(identity.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&P2pKey::from(key)))
}

/// Whether `credential` is a valid certificate of this network for `peer`
/// and not revoked.
fn admit(
    info: &NetworkInfo,
    revoked: &RwLock<HashSet<[u8; 32]>>,
    peer: &PeerId,
    credential: &[u8],
) -> bool {
    let Ok(signed) = SignedCertificate::from_bytes(credential) else {
        return false;
    };
    let Ok(cert) = signed.verify(info, now_unix()) else {
        return false;
    };
    let not_revoked = revoked
        .read()
        .map(|r| !r.contains(cert.identity.as_bytes()))
        .unwrap_or(false);
    not_revoked && peer_id_of(&cert.identity).as_ref() == Some(peer)
}

/// The gossip side of a running member.
pub struct Gossip {
    handle: ControlHandle,
    validator: Validator,
    revoked: Arc<RwLock<HashSet<[u8; 32]>>>,
    seq: u64,
    control_port: u16,
    redial_at: Option<Instant>,
    next_announce: Instant,
    next_check: Instant,
    endpoints: Vec<SocketAddr>,
    /// Endpoints other members reached us at that are not our own
    /// addresses (NAT mappings), newest last.
    reflexive: Vec<SocketAddr>,
    /// Where this member's endpoints come from: a fixed list, or the
    /// host's addresses (re-read every few seconds) and this port.
    source: EndpointSource,
    /// Records rejected, by reason.
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// Records published, by kind.
    pub published: std::collections::BTreeMap<&'static str, u64>,
    /// Records received, by kind (`invalid` when rejected before decoding).
    pub received: std::collections::BTreeMap<&'static str, u64>,
    /// Members' announced and observed endpoints, for choosing relays.
    pub relays: super::relay::Relays,
    /// Own path observations go out again with the next announcement.
    observations_due: bool,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// Starts the control plane on UDP `port` and dials `bootstrap`.
    pub fn start(
        m: &Membership,
        port: u16,
        source: EndpointSource,
        bootstrap: Vec<Multiaddr>,
    ) -> anyhow::Result<(Self, mpsc::Receiver<ControlEvent>)> {
        let mut revoked_set = HashSet::new();
        let mut validator = Validator::new();
        validator.set_allow_loopback(true);
        if let Ok(list) = m.store.revocations().list() {
            for (id, record) in list {
                revoked_set.insert(id);
                validator.note_revocation(IdentityKey(id), record.serial);
            }
        }
        let revoked = Arc::new(RwLock::new(revoked_set));
        let gate: Gate = {
            let info = m.info.clone();
            let revoked = revoked.clone();
            Arc::new(move |peer: &PeerId, credential: &[u8]| {
                admit(&info, &revoked, peer, credential)
            })
        };
        let (handle, events) = Control::spawn(
            ControlConfig {
                identity_secret: m.identity.to_bytes(),
                listen_port: port,
                topic: format!("weft/{}/records", m.info.id()),
                credential: m.certificate.to_bytes(),
                bootstrap,
            },
            gate,
        )?;
        info!(peer_id = %handle.peer_id(), port, "gossip on the control plane");
        // Sequence numbers must grow across restarts: start from the clock.
        let seq = now_unix().saturating_mul(1000);
        Ok((
            Self {
                handle,
                validator,
                revoked,
                seq,
                control_port: port,
                redial_at: None,
                next_announce: Instant::now(),
                next_check: Instant::now() + ADDRESS_CHECK_EVERY,
                endpoints: source.current(MAX_ANNOUNCED_ENDPOINTS),
                reflexive: Vec::new(),
                source,
                rejected: Default::default(),
                published: Default::default(),
                received: Default::default(),
                relays: Default::default(),
                observations_due: false,
            },
            events,
        ))
    }

    /// When [`Gossip::tick`] must next run.
    pub fn next_announce(&self) -> Instant {
        let t = self.next_announce.min(self.next_check);
        self.redial_at.map_or(t, |r| t.min(r))
    }

    /// Announces when due, or at once when the host's addresses changed.
    pub async fn tick(&mut self, m: &Membership) {
        let now = Instant::now();
        if now >= self.next_check {
            self.next_check = now + ADDRESS_CHECK_EVERY;
            let current = self.source.current(MAX_ANNOUNCED_ENDPOINTS);
            if current != self.endpoints {
                info!(endpoints = ?current, "local addresses changed; announcing");
                self.endpoints = current;
                // Control connections from the old address are dead but
                // would linger until their idle timeout, swallowing what we
                // send: close them and dial the members again. Each new
                // connection triggers an announcement on both sides; one
                // more follows in case a member could not be dialled.
                self.redial(m);
                // Members keep the dead connections until their idle
                // timeout, and gossip only starts on a member's first
                // connection: dial once more after that.
                self.redial_at = Some(now + REDIAL_AFTER_MOVE);
                self.next_announce = now + Duration::from_secs(2);
                return;
            }
        }
        if self.redial_at.is_some_and(|t| now >= t) {
            self.redial_at = None;
            self.redial(m);
            self.next_announce = self.next_announce.min(now + FOLLOW_UP);
        }
        if now >= self.next_announce {
            self.announce(m).await;
        }
    }

    /// Dials the control plane of every member with a known endpoint.
    fn redial(&self, m: &Membership) {
        let me = m.identity.identity();
        let Ok(paths) = m.store.paths().list_from(&me.0) else {
            return;
        };
        let addresses: Vec<Multiaddr> = paths
            .into_iter()
            .filter_map(|(_, path)| control_address(path.endpoint, self.control_port))
            .collect();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            for peer in handle.connected_members().await.unwrap_or_default() {
                let _ = handle.disconnect(peer).await;
            }
            for address in addresses {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle.dial(address.clone()).await {
                        debug!(%address, error = %e, "control plane: redial failed");
                    }
                });
            }
        });
    }

    /// Publishes this member's announcement now and schedules the next.
    pub async fn announce(&mut self, m: &Membership) {
        self.seq += 1;
        let endpoints = self.own_candidates();
        let record = m.announcement(self.seq, endpoints);
        if let Err(e) = self.publish(&record).await {
            debug!(error = %e, "announcement not published (no member connected yet?)");
        }
        if std::mem::take(&mut self.observations_due) {
            self.republish_observations(m).await;
        }
        let jitter =
            Duration::from_millis(OsRng.next_u64() % (ANNOUNCE_EVERY.as_millis() as u64 / 5));
        self.next_announce = Instant::now() + ANNOUNCE_EVERY - ANNOUNCE_EVERY / 10 + jitter;
    }

    /// This member's endpoints as announced and offered for hole punching:
    /// reflexive ones first (a member that has one is behind a NAT, and
    /// most members reach it from outside), then its own addresses.
    pub fn own_candidates(&self) -> Vec<SocketAddr> {
        self.reflexive
            .iter()
            .rev()
            .chain(self.endpoints.iter())
            .copied()
            .take(MAX_ANNOUNCED_ENDPOINTS)
            .collect()
    }

    /// Publishes a path observation: this member confirmed `pmtu` toward
    /// `peer` at `endpoint`. Others use it as a prior for their own search.
    pub async fn publish_observation(
        &mut self,
        m: &Membership,
        device: &Device,
        peer: weft_protocol::PeerId,
        endpoint: SocketAddr,
        pmtu: u16,
    ) {
        let Some(status) = device.peer_status(peer, Instant::now()) else {
            return;
        };
        let Some(to) = m
            .member_with_noise_key(&status.public_key)
            .map(|c| c.identity)
        else {
            return;
        };
        self.relays.observed(to, endpoint);
        let rtt_us = super::warm::rtt_us(device, peer);
        self.seq += 1;
        let record = weft_protocol::membership::SignedRecord::sign(
            &m.identity,
            self.seq,
            RecordBody::PathObservation(weft_protocol::membership::PathObservation {
                to,
                endpoint,
                pmtu,
                rtt_us,
                measured_unix: now_unix(),
            }),
        );
        m.counters.store(
            "paths",
            m.store.paths().put(
                m.identity.identity().as_bytes(),
                to.as_bytes(),
                &PathRecord {
                    endpoint,
                    pmtu,
                    rtt_us,
                    nat: None,
                    measured_unix: now_unix(),
                    own: true,
                },
            ),
        );
        if let Err(e) = self.publish(&record).await {
            debug!(error = %e, "path observation not published");
        }
    }

    /// Publishes again the path observations this member made itself: one
    /// made before a member connected never reached it, and it is how a
    /// member behind a NAT learns its reflexive endpoint.
    async fn republish_observations(&mut self, m: &Membership) {
        let me = m.identity.identity();
        let Ok(paths) = m.store.paths().list_from(me.as_bytes()) else {
            return;
        };
        for (to, path) in paths {
            if !path.own || path.pmtu == 0 {
                continue;
            }
            self.seq += 1;
            let record = weft_protocol::membership::SignedRecord::sign(
                &m.identity,
                self.seq,
                RecordBody::PathObservation(weft_protocol::membership::PathObservation {
                    to: IdentityKey(to),
                    endpoint: path.endpoint,
                    pmtu: path.pmtu,
                    rtt_us: path.rtt_us,
                    measured_unix: path.measured_unix,
                }),
            );
            let _ = self.publish(&record).await;
        }
    }

    /// Publishes this node's measured NAT mapping lifetime behind its
    /// public address, and stores it, so members behind the same address
    /// (and this node after a restart) start from it.
    pub async fn publish_nat_lifetime(
        &mut self,
        m: &Membership,
        public: SocketAddr,
        lifetime: Duration,
    ) {
        let lifetime_ms = u32::try_from(lifetime.as_millis()).unwrap_or(u32::MAX);
        let measured_unix = now_unix();
        m.counters.store(
            "nat",
            m.store.nat().put(
                public.ip(),
                &NatRecord {
                    lifetime_ms,
                    measured_unix,
                    own: true,
                },
            ),
        );
        self.seq += 1;
        let record = weft_protocol::membership::SignedRecord::sign(
            &m.identity,
            self.seq,
            RecordBody::NatLifetime(weft_protocol::membership::NatLifetime {
                public,
                lifetime_ms,
                measured_unix,
            }),
        );
        if let Err(e) = self.publish(&record).await {
            debug!(error = %e, "NAT lifetime not published");
        }
    }

    /// Passes on every stored revocation, so a member that was away when
    /// one was made learns it as soon as it reconnects.
    async fn republish_revocations(&mut self, m: &Membership) {
        let Ok(list) = m.store.revocations().list() else {
            return;
        };
        for (_, record) in list {
            let Ok(revocation) =
                postcard::from_bytes::<weft_protocol::membership::Revocation>(&record.signed)
            else {
                continue;
            };
            self.seq += 1;
            let record = weft_protocol::membership::SignedRecord::sign(
                &m.identity,
                self.seq,
                RecordBody::Revocation(revocation),
            );
            let _ = self.publish(&record).await;
        }
    }

    /// Publishes `record` to the mesh and counts it.
    async fn publish(
        &mut self,
        record: &weft_protocol::membership::SignedRecord,
    ) -> Result<(), crate::control::PublishError> {
        self.handle.publish(record.to_bytes()).await?;
        *self
            .published
            .entry(record.body.kind().as_str())
            .or_default() += 1;
        Ok(())
    }

    /// Publishes an authority-signed revocation and applies it here.
    pub async fn publish_revocation(
        &mut self,
        m: &Membership,
        revocation: weft_protocol::membership::Revocation,
        device: &mut Device,
    ) {
        self.seq += 1;
        let record = weft_protocol::membership::SignedRecord::sign(
            &m.identity,
            self.seq,
            RecordBody::Revocation(revocation.clone()),
        );
        self.apply(m, RecordBody::Revocation(revocation), device);
        if let Err(e) = self.publish(&record).await {
            warn!(error = %e, "revocation not published; it is stored and will not be forgotten");
        }
    }

    /// Handles a control-plane event. Returns peers newly added to the
    /// device, for routes.
    pub async fn on_event(
        &mut self,
        m: &Membership,
        event: ControlEvent,
        device: &mut Device,
    ) -> Vec<weft_protocol::PeerId> {
        match event {
            ControlEvent::MemberConnected { peer, .. } => {
                debug!(%peer, "member connected to the control plane");
                self.announce(m).await;
                self.republish_revocations(m).await;
                self.republish_observations(m).await;
                // Once more with the follow-up, in case this crossed the
                // new member's admission of us.
                self.observations_due = true;
                // The new member may not have admitted us yet and then
                // drops what we just sent: say it again shortly.
                self.next_announce = self.next_announce.min(Instant::now() + FOLLOW_UP);
                Vec::new()
            }
            ControlEvent::PeerRejected { peer, reason } => {
                warn!(%peer, %reason, "control-plane peer rejected");
                Vec::new()
            }
            ControlEvent::Disconnected { peer } => {
                debug!(%peer, "member left the control plane");
                Vec::new()
            }
            ControlEvent::Message {
                message_id,
                propagation_source,
                data,
                ..
            } => {
                let now = now_unix();
                let members = |id: &IdentityKey| {
                    m.store
                        .members()
                        .get(id.as_bytes())
                        .ok()
                        .flatten()
                        .is_some()
                        && !self
                            .revoked
                            .read()
                            .map(|r| r.contains(id.as_bytes()))
                            .unwrap_or(true)
                };
                let verdict = self.validator.validate(&data, &m.info, &members, now);
                let (verdict, added) = match verdict {
                    Ok(record) => {
                        *self
                            .received
                            .entry(record.body.kind().as_str())
                            .or_default() += 1;
                        (Verdict::Accept, self.apply(m, record.body, device))
                    }
                    Err(e) => {
                        *self.received.entry("invalid").or_default() += 1;
                        *self.rejected.entry(e.as_str()).or_default() += 1;
                        debug!(reason = e.as_str(), "gossip record rejected");
                        let verdict = match e {
                            RecordError::StaleSequence { .. } => Verdict::Ignore,
                            _ => Verdict::Reject,
                        };
                        (verdict, Vec::new())
                    }
                };
                let _ = self
                    .handle
                    .report(message_id, propagation_source, verdict)
                    .await;
                added
            }
        }
    }

    fn apply(
        &mut self,
        m: &Membership,
        body: RecordBody,
        device: &mut Device,
    ) -> Vec<weft_protocol::PeerId> {
        let now = now_unix();
        match body {
            RecordBody::Announcement(a) => {
                let Ok(cert) = a.certificate.verify(&m.info, now) else {
                    return Vec::new();
                };
                if cert.identity == m.identity.identity() {
                    return Vec::new();
                }
                self.relays.announced(cert.identity, &a.endpoints);
                m.counters.store(
                    "members",
                    m.store.members().put(
                        cert.identity.as_bytes(),
                        &MemberRecord {
                            name: cert.name.clone(),
                            certificate: a.certificate.to_bytes(),
                            serial: cert.serial,
                            expires_unix: cert.not_after,
                            updated_unix: now,
                        },
                    ),
                );
                self.learn_endpoint(m, &cert, a.endpoints.first().copied(), device)
            }
            RecordBody::PathObservation(p) => {
                debug!(to = %p.to, pmtu = p.pmtu, "path observation");
                self.relays.observed(p.to, p.endpoint);
                // An observation of us says where we are reached from
                // outside: our reflexive endpoint (behind a NAT, not one of
                // our own addresses). It joins our announced endpoints.
                if p.to == m.identity.identity()
                    && !self.endpoints.contains(&p.endpoint)
                    && !self.reflexive.contains(&p.endpoint)
                {
                    info!(endpoint = %p.endpoint, "reflexive endpoint learned");
                    if self.reflexive.len() == MAX_REFLEXIVE {
                        self.reflexive.remove(0);
                    }
                    self.reflexive.push(p.endpoint);
                    self.next_announce = self.next_announce.min(Instant::now() + FOLLOW_UP);
                }
                if p.to == m.identity.identity() {
                    device.note_reflexive(p.endpoint, Instant::now());
                }
                // What another member confirmed toward `to` is where our own
                // search toward it starts (confirmed again before use).
                if p.to != m.identity.identity() {
                    let key = m.member_certificate(&p.to).map(|c| c.noise_key);
                    if let Some(peer) = key.and_then(|k| device.find_peer(&k)) {
                        device.set_pmtu_prior(peer, p.pmtu);
                    }
                }
                Vec::new()
            }
            RecordBody::NatLifetime(n) => {
                debug!(public = %n.public, lifetime_ms = n.lifetime_ms, "NAT lifetime");
                m.counters.store(
                    "nat",
                    m.store.nat().put(
                        n.public.ip(),
                        &NatRecord {
                            lifetime_ms: n.lifetime_ms,
                            measured_unix: n.measured_unix,
                            own: false,
                        },
                    ),
                );
                // Behind the same public address, the same NAT: start there.
                let ours = device.nat_status().reflexive.map(|r| r.ip());
                if ours == Some(n.public.ip()) {
                    let lifetime = Duration::from_millis(u64::from(n.lifetime_ms));
                    device.set_nat_hint(lifetime, Instant::now());
                }
                Vec::new()
            }
            RecordBody::Revocation(r) => {
                let id = r.identity;
                info!(identity = %id, serial = r.serial, "member revoked");
                self.validator.note_revocation(id, r.serial);
                if let Ok(mut set) = self.revoked.write() {
                    set.insert(id.0);
                }
                m.counters.store(
                    "revocations",
                    m.store.revocations().revoke(
                        id.as_bytes(),
                        &RevocationRecord {
                            serial: r.serial,
                            revoked_unix: r.revoked_unix,
                            // The authority-signed revocation itself, so it can
                            // be passed on to members that were away.
                            signed: postcard::to_stdvec(&r).unwrap_or_default(),
                        },
                    ),
                );
                if let Some(cert) = m.member_certificate(&id) {
                    if let Some(peer) = device.find_peer(&cert.noise_key) {
                        device.remove_peer(peer);
                    }
                }
                if let Some(peer) = peer_id_of(&id) {
                    let handle = self.handle.clone();
                    tokio::spawn(async move {
                        let _ = handle.disconnect(peer).await;
                    });
                }
                Vec::new()
            }
        }
    }

    fn learn_endpoint(
        &mut self,
        m: &Membership,
        cert: &Certificate,
        endpoint: Option<SocketAddr>,
        device: &mut Device,
    ) -> Vec<weft_protocol::PeerId> {
        let now = Instant::now();
        match device.find_peer(&cert.noise_key) {
            Some(peer) => {
                if let Some(e) = endpoint {
                    // Both members of a pair behind NATs hear of each
                    // other's endpoint at about the same time: each sends at
                    // once, which opens the mappings for the other's packets.
                    if device.suggest_endpoint(peer, e, now) {
                        device.connect(peer, now);
                    }
                    self.remember_endpoint(m, cert, e);
                }
                Vec::new()
            }
            None => match device.add_peer(peer_config(cert, endpoint), now) {
                Ok(peer) => {
                    info!(name = %cert.name, endpoint = ?endpoint, "member learned from gossip");
                    if let Some(e) = endpoint {
                        self.remember_endpoint(m, cert, e);
                    }
                    vec![peer]
                }
                Err(e) => {
                    debug!(name = %cert.name, error = %e, "member not added");
                    Vec::new()
                }
            },
        }
    }

    fn remember_endpoint(&self, m: &Membership, cert: &Certificate, endpoint: SocketAddr) {
        let (me, to) = (m.identity.identity(), cert.identity);
        let stored = m.store.paths().get(&me.0, &to.0).ok().flatten();
        if stored.is_some_and(|p| p.endpoint == endpoint && p.pmtu != 0) {
            // Our own measurement of that endpoint stays, for a warm start.
            return;
        }
        m.counters.store(
            "paths",
            m.store.paths().put(
                m.identity.identity().as_bytes(),
                cert.identity.as_bytes(),
                &PathRecord::unmeasured(endpoint, now_unix()),
            ),
        );
    }
}
