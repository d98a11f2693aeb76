//! The running member: peers from the store, the join listener, gossip, and
//! the mesh's admin requests.
//!
//! The daemon's main task owns the device and calls in here; nothing in
//! this file waits for another task. The control plane, the join listener
//! and the store writer run elsewhere (the services runtime and the store
//! writer thread) and are reached through bounded queues; joins reach the
//! main task as messages, and admin requests that take time (an invite's
//! fsync, a revocation's) are answered by the task or thread that does the
//! work.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use weft_protocol::membership::validator::MAX_ANNOUNCED_ENDPOINTS;
use weft_protocol::membership::{Certificate, IdentityKey, Revocation, SetChange};
use weft_protocol::{Device, NatStatus, PeerId, StaticSecret};

use super::authorities::{self, AuthorityList, Nominated};
use super::gossip::Gossip;
use super::join::{self, Admitted};
use super::members::{peer_config, MemberTable};
use super::writer::{StoreWriter, WriterThread};
use super::{invite, now_unix, warm, Membership, MeshConfig};
use crate::admin::{Request, Response};
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
    /// Peers whose handshake gave up: contacted again as soon as their
    /// member shows up in gossip again.
    gave_up: HashSet<PeerId>,
    /// The runtime that runs the control plane, the join listener and the
    /// admin work that may block.
    services: tokio::runtime::Handle,
    writer_thread: Option<WriterThread>,
    /// Where nominations' answers come back to the main task.
    nominated: mpsc::Sender<Nominated>,
}

/// What the mesh services hand to the main task.
#[derive(Debug)]
pub struct MeshInbox {
    /// Members admitted by the join listener.
    pub admitted: mpsc::Receiver<Admitted>,
    /// Control-plane events.
    pub control: mpsc::Receiver<ControlEvent>,
    /// Members' answers to this holder's nominations.
    pub nominated: mpsc::Receiver<Nominated>,
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode").finish_non_exhaustive()
    }
}

impl MeshNode {
    /// Opens the membership, adds every known member as a data-plane peer,
    /// and starts the store writer, the join listener and the control plane
    /// on `services`.
    pub async fn start(
        config: &MeshConfig,
        device: &mut Device,
        noise: StaticSecret,
        listen_port: u16,
        services: tokio::runtime::Handle,
    ) -> anyhow::Result<(Self, MeshInbox)> {
        let membership = Arc::new(Membership::open(config)?);
        let mut members = MemberTable::load(&membership);
        let paths = warm::load(&membership);
        let mut added = 0;
        let certs: Vec<Certificate> = members.iter().map(|m| m.cert.clone()).collect();
        for cert in certs {
            let path = paths.get(&cert.identity.0);
            let endpoint = path.map(|p| p.endpoint);
            if let Some(e) = endpoint {
                members.set_known_endpoint(&cert.identity, e);
            }
            match device.add_peer(peer_config(&cert, endpoint), Instant::now()) {
                Ok(peer) => {
                    warm::hint(device, peer, &cert.name, path);
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
        let (writer, writer_thread) = StoreWriter::start(membership.clone())
            .map_err(|e| anyhow!("cannot start the store writer thread: {e}"))?;
        let (mut gossip, control) = {
            // The swarm's task is spawned where the control plane runs.
            let _services = services.enter();
            Gossip::start(&membership, config.join_port, source, members, writer)?
        };
        gossip.load_own_observations(&membership);
        // A holder whose configuration names another certificate lifetime
        // than the set's changes the set: the lifetime is the network's,
        // set by its authority.
        let wanted = config.certificate_lifetime.map(|d| d.as_secs());
        let held = membership.authorities();
        if let (Some(secs), Some(_), Some(_)) = (wanted, &held.chain, membership.authority()) {
            if secs != held.verified.current().certificate_lifetime_secs {
                let (reply, answer) = oneshot::channel();
                gossip.change_authorities(
                    &membership,
                    SetChange::Lifetime { secs },
                    reply,
                    &services,
                );
                services.spawn(async move {
                    match answer.await {
                        Ok(Response::Done(text)) => info!("{text}"),
                        Ok(Response::Error(e)) => {
                            warn!(error = %e, "certificate lifetime not changed")
                        }
                        _ => {}
                    }
                });
            }
        }
        let (admitted_tx, admitted) = mpsc::channel(16);
        let (nominated_tx, nominated) = mpsc::channel(4);
        let listener = services
            .spawn(join::listen(
                config.join_port,
                noise,
                membership.clone(),
                data_endpoints,
                admitted_tx,
            ))
            .await
            .map_err(|e| anyhow!("join listener: {e}"))??;
        info!(
            network = %membership.info().id(),
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
                gave_up: HashSet::new(),
                services,
                writer_thread: Some(writer_thread),
                nominated: nominated_tx,
            },
            MeshInbox {
                admitted,
                control,
                nominated,
            },
        ))
    }

    /// Answers an admin request through `reply`, now or (for work that
    /// waits on the disk) from the task that does it.
    pub fn handle_admin(
        &mut self,
        request: Request,
        device: &mut Device,
        reply: oneshot::Sender<Response>,
    ) {
        match request {
            Request::Invite { name, ttl_secs } => {
                let membership = self.membership.clone();
                let key = device.public_key();
                // Stores and flushes the invite: never on this task.
                self.services.spawn_blocking(move || {
                    let response = match invite::issue(&membership, name, ttl_secs, key) {
                        Ok(token) => {
                            membership
                                .counters
                                .invites_issued
                                .fetch_add(1, Ordering::Relaxed);
                            Response::Token(token)
                        }
                        Err(e) => Response::Error(format!("{e:#}")),
                    };
                    let _ = reply.send(response);
                });
            }
            Request::Revoke { name } => match self.revoke(&name, device) {
                // Failed only if neither stored nor published (`revocation`).
                Ok(pending) => {
                    self.services.spawn(async move {
                        let _ = reply.send(pending.answer(&name).await);
                    });
                }
                Err(e) => {
                    let _ = reply.send(Response::Error(format!("{e:#}")));
                }
            },
            Request::Renew => {
                let (tx, rx) = oneshot::channel();
                self.gossip.force_renewal(tx);
                self.services.spawn(async move {
                    let response = match rx.await {
                        Ok(Ok(text)) => Response::Done(text),
                        Ok(Err(e)) => Response::Error(e),
                        Err(_) => Response::Error("the daemon stopped before renewing".into()),
                    };
                    let _ = reply.send(response);
                });
            }
            Request::AuthorityAdd { name } => self.nominate(name, reply),
            Request::AuthorityRemove { name } => {
                let services = self.services.clone();
                self.gossip.change_authorities(
                    &self.membership,
                    SetChange::Remove { name },
                    reply,
                    &services,
                );
            }
            Request::AuthorityList => {
                let list = AuthorityList::of(&self.membership.authorities());
                let _ = reply.send(Response::Authorities(list));
            }
            // The daemon answers status itself.
            Request::Status => {
                let _ = reply.send(Response::Error("not a mesh request".into()));
            }
        }
    }

    /// `weft authority add NAME`: asks member `name` for a key of its own
    /// (on a task of its own); [`MeshNode::nominated`] takes the answer.
    fn nominate(&mut self, name: String, reply: oneshot::Sender<Response>) {
        let m = &self.membership;
        if m.authority().is_none() {
            let _ = reply.send(Response::Error(
                "this member holds no key of the current authority set, so it cannot add one"
                    .into(),
            ));
            return;
        }
        if m.authorities()
            .verified
            .current()
            .holder_named(&name)
            .is_some()
        {
            let _ = reply.send(Response::Error(format!(
                "{name} is already an authority holder"
            )));
            return;
        }
        // Not in the member table: the task looks in the store (a member
        // invited a moment ago is there before its announcement arrives).
        let known = self
            .gossip
            .members
            .iter()
            .find(|x| x.cert.name == name)
            .map(|x| x.cert.identity);
        authorities::nominate(
            self.gossip.control().clone(),
            m.clone(),
            name,
            known,
            reply,
            self.nominated.clone(),
            &self.services,
        );
    }

    /// A nominated member answered: its key goes into the next version.
    pub fn nominated(&mut self, n: Nominated) {
        match n.answer {
            Ok(key) => {
                let services = self.services.clone();
                self.gossip.change_authorities(
                    &self.membership,
                    SetChange::Add { name: n.name, key },
                    n.reply,
                    &services,
                );
            }
            Err(e) => {
                let _ = n.reply.send(Response::Error(e));
            }
        }
    }

    /// Membership, gossip and store counters for status and metrics.
    pub fn stats(&self) -> MeshStats {
        let m = &self.membership;
        let c = &m.counters;
        let pairs = |map: &std::collections::BTreeMap<&'static str, u64>| {
            map.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let control = self.gossip.control().counters();
        let queue_dropped = vec![
            (
                "control_commands".to_string(),
                control.commands_dropped.load(Ordering::Relaxed),
            ),
            (
                "control_events".to_string(),
                control.events_dropped.load(Ordering::Relaxed),
            ),
            (
                "store".to_string(),
                self.gossip
                    .writer()
                    .counters()
                    .dropped
                    .load(Ordering::Relaxed),
            ),
        ];
        MeshStats {
            network: m.info().id().to_string(),
            members: self.gossip.members.len() as u64 + 1,
            gossip_published: pairs(&self.gossip.published),
            gossip_received: pairs(&self.gossip.received),
            gossip_rejected: {
                let mut rejected = pairs(&self.gossip.rejected);
                let over_rate = control.records_over_rate.load(Ordering::Relaxed);
                if over_rate > 0 {
                    rejected.push(("origin_over_rate".to_string(), over_rate));
                }
                rejected
            },
            gossip_publish_failed: control
                .publish_failed
                .lock()
                .map(|m| pairs(&m))
                .unwrap_or_default(),
            control_connections_refused: control
                .connections_refused
                .lock()
                .map(|m| pairs(&m))
                .unwrap_or_default(),
            queue_dropped,
            control_connections: self.gossip.control().members().len() as u64,
            control_neighbours_wanted: self.gossip.wanted_neighbours() as u64,
            invites_issued: c.invites_issued.load(Ordering::Relaxed),
            invites_used: c.invites_used.load(Ordering::Relaxed),
            invites_refused: c
                .invites_refused
                .lock()
                .map(|m| pairs(&m))
                .unwrap_or_default(),
            store_write_errors: c.store_write_errors.load(Ordering::Relaxed),
            store_corrupt_records: m.store.corrupt_records(),
            certificate: {
                let signed = m.certificate();
                signed
                    .verify_signed(&m.info())
                    .ok()
                    .map(|cert| crate::status::CertificateInfo {
                        serial: cert.serial,
                        issuer: signed
                            .issuer(&m.info())
                            .map(|k| k.to_string())
                            .unwrap_or_default(),
                        not_before: cert.not_before,
                        not_after: cert.not_after,
                        expired: super::now_unix() >= cert.not_after,
                    })
            },
            certificate_expiry: m
                .certificate()
                .verify_signed(&m.info())
                .ok()
                .map(|c| (c.name, c.not_after))
                .into_iter()
                .chain(
                    self.gossip
                        .members
                        .iter()
                        .map(|x| (x.cert.name.clone(), x.cert.not_after)),
                )
                .collect(),
            certificate_renewals: pairs(&self.gossip.renewal.results),
            renewals_answered: pairs(&self.gossip.renewal.answered),
            members_expired: self.gossip.expired,
            authorities: m.authorities().verified.current().holders.len() as u64,
        }
    }

    /// The lengths of the mesh's queues, for the watchdog.
    pub fn queue_probes(&self) -> Vec<crate::watchdog::Probe> {
        let mut probes = self.gossip.control().queue_probes();
        probes.push(self.gossip.writer().probe());
        probes
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.membership.config.name
    }

    /// Signs and applies a revocation of member `name`; the returned
    /// receiver answers once it is stored.
    fn revoke(
        &mut self,
        name: &str,
        device: &mut Device,
    ) -> anyhow::Result<super::revocation::Pending> {
        let m = self.membership.clone();
        let authority = m.authority().ok_or_else(|| {
            anyhow!("this member holds no key of the current authority set, so it cannot revoke")
        })?;
        if name == m.config.name {
            anyhow::bail!("a member cannot revoke itself");
        }
        let cert = self
            .gossip
            .members
            .iter()
            .find(|x| x.cert.name == name)
            .map(|x| x.cert.clone())
            .ok_or_else(|| anyhow!("no member is named {name:?}"))?;
        let revocation = Revocation::sign(
            m.info().id(),
            IdentityKey(cert.identity.0),
            cert.serial,
            now_unix(),
            &authority,
        );
        Ok(self.gossip.publish_revocation(&m, revocation, device))
    }

    /// Follows the device's NAT status: a lifetime stored for the public
    /// address just learned becomes the keepalive's hint, and a finished
    /// measurement is published and stored.
    pub fn nat_changed(&mut self, device: &mut Device) {
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
                    .publish_nat_lifetime(&self.membership, public, lifetime);
            }
        }
    }

    /// When [`MeshNode::tick`] must next run.
    pub fn next_deadline(&self) -> Instant {
        self.gossip.next_deadline()
    }

    /// Announces, keeps control neighbours and relays, when due.
    pub fn tick(&mut self, device: &mut Device) {
        self.gossip.tick(&self.membership, device);
    }

    /// Handles a control-plane event; returns peers added, for routes.
    pub fn on_control(&mut self, event: ControlEvent, device: &mut Device) -> Vec<PeerId> {
        let added = self.gossip.on_event(&self.membership, event, device);
        self.retry_given_up(device);
        added
    }

    /// A handshake with `peer` gave up: it is contacted again as soon as
    /// its member is heard of again (announcement, push, or connection).
    pub fn handshake_gave_up(&mut self, peer: PeerId) {
        self.gave_up.insert(peer);
    }

    /// Contacts the peers whose handshake gave up and whose member was
    /// heard from since (an announcement newer than the failure).
    fn retry_given_up(&mut self, device: &mut Device) {
        if self.gave_up.is_empty() {
            self.gossip.take_heard();
            return;
        }
        let now = Instant::now();
        for key in self.gossip.take_heard() {
            let Some(peer) = device.find_peer(&key) else {
                continue;
            };
            if self.gave_up.remove(&peer) {
                debug!(
                    peer = device.peer_name(peer),
                    "member heard of again: handshaking"
                );
                device.connect(peer, now);
            }
        }
    }

    /// Tells the mesh a path MTU this node confirmed toward `peer`.
    pub fn observe(&mut self, device: &Device, peer: PeerId, endpoint: SocketAddr, pmtu: u16) {
        self.gossip
            .publish_observation(&self.membership, device, peer, endpoint, pmtu);
    }

    /// Stores the current paths and flushes the store: a clean shutdown.
    /// Waits for the store writer to finish what was queued first.
    pub fn shutdown(self, device: &Device) {
        let MeshNode {
            membership,
            gossip,
            writer_thread,
            ..
        } = self;
        // The writer thread stops once its last handle (in `gossip`) is gone.
        let members = gossip.into_members();
        if let Some(t) = writer_thread {
            t.finish();
        }
        warm::save(&membership, &members, device);
    }

    /// Adds a newly admitted member as a peer; returns its id for routes.
    pub fn admit(&mut self, admitted: Admitted, device: &mut Device) -> Option<PeerId> {
        let cert = admitted.certificate;
        let serial = cert.serial;
        let id = cert.identity;
        self.gossip.members.insert(cert.clone(), None, Vec::new());
        // The join listener stored it.
        self.gossip.members.mark_stored(&id, serial);
        match device.add_peer(peer_config(&cert, None), Instant::now()) {
            Ok(id) => Some(id),
            Err(e) => {
                debug!(error = %e, "admitted member not added");
                None
            }
        }
    }
}
