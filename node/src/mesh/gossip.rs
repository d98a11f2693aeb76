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
//! - a path observation is a prior for later searches;
//! - a revocation is stored (flushed), the member's peer is removed and its
//!   control connection closed.
//!
//! How the membership converges at any size:
//! - a member that connects is pushed, directly, every announcement this
//!   node holds, the revocations and this node's own path observations
//!   (`/weft/sync/1`), and learns a member from the certificate it presents
//!   on connection; so a new or restarted member learns everyone in one
//!   round trip;
//! - each member keeps control connections to a few neighbours chosen on a
//!   ring (`neighbours.rs`), never to everyone;
//! - a member announces itself shortly after its first connection, once more
//!   a little later, then every [`announce_interval`] (which grows with the
//!   network), and at once when its addresses change;
//! - a record from a member not known yet is ignored, not held against the
//!   member that forwarded it;
//! - sequence numbers only grow across restarts, whatever the clock does
//!   ([`Sequence`]).
//!
//! Nothing here waits for another task: publishes, reports, dials and
//! pushes are queued on the control handle, store writes on the store
//! writer; full queues drop and count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use weft_protocol::membership::validator::MAX_ANNOUNCED_ENDPOINTS;
use weft_protocol::membership::{
    CertError, Certificate, IdentityKey, NatLifetime, NetworkInfo, PathObservation, RecordBody,
    RecordError, Revocation, SignedCertificate, SignedRecord, Validator,
};
use weft_protocol::nat::OwnEndpoints;
use weft_protocol::Device;
use weft_store::{MemberRecord, NatRecord, PathRecord, RevocationRecord};

use super::expiry::Expiry;
use super::members::{peer_config, peer_id_of, MemberTable};
use super::neighbours::{control_address, Neighbours};
use super::renewal::{Holder, Renewal};
use super::revocation;
use super::writer::StoreWriter;
use super::{now_unix, EndpointSource, Membership};
use crate::control::{Admit, Control, ControlConfig, ControlEvent, ControlHandle, Gate, Verdict};

/// Shortest interval of periodic announcements; each is jittered by ±10%.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);
/// Longest interval of periodic announcements.
pub const ANNOUNCE_AT_MOST_EVERY: Duration = Duration::from_secs(1800);
/// Delay of the first announcement after the first connection (jittered
/// up to twice this), so a fleet started at once does not announce at once.
pub const FIRST_ANNOUNCE: Duration = Duration::from_millis(750);
/// Delay of the second announcement after the first (jittered up to
/// twice this): it reaches members that were still connecting.
pub const SECOND_ANNOUNCE: Duration = Duration::from_secs(8);
/// After a move, members are dialled again once their copies of the dead
/// connections have timed out.
pub const REDIAL_AFTER_MOVE: Duration =
    Duration::from_millis(crate::control::behaviour::QUIC_IDLE_TIMEOUT_MS as u64 + 1_000);
/// How often the host's addresses are re-read; a change is announced at
/// once, so the mesh follows a member that moved.
pub const ADDRESS_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Relays are chosen again at most this often.
const RELAYS_EVERY: Duration = Duration::from_secs(1);
/// Sequence numbers reserved (and stored) at a time.
pub const SEQUENCE_BLOCK: u64 = 1 << 20;

/// The periodic announcement interval in a network of `members`: half a
/// second per member, from [`ANNOUNCE_EVERY`] to [`ANNOUNCE_AT_MOST_EVERY`],
/// so that from 120 to 3,600 members each member receives about two
/// announcements a second, and beyond that the rate grows slowly (see
/// docs/scale.md).
pub fn announce_interval(members: usize) -> Duration {
    (Duration::from_millis(500) * u32::try_from(members).unwrap_or(u32::MAX))
        .clamp(ANNOUNCE_EVERY, ANNOUNCE_AT_MOST_EVERY)
}

/// `base` plus a random extra of up to `base`.
fn jittered(base: Duration) -> Duration {
    base + Duration::from_millis(OsRng.next_u64() % (base.as_millis() as u64).max(1))
}

/// Whether `credential` is a valid certificate of this network for `peer`
/// and not revoked.
fn admit(
    info: &NetworkInfo,
    revoked: &RwLock<HashSet<[u8; 32]>>,
    peer: &PeerId,
    credential: &[u8],
) -> Option<Certificate> {
    let signed = SignedCertificate::from_bytes(credential).ok()?;
    let cert = signed.verify(info, now_unix()).ok()?;
    let not_revoked = revoked
        .read()
        .map(|r| !r.contains(cert.identity.as_bytes()))
        .unwrap_or(false);
    (not_revoked && peer_id_of(&cert.identity).as_ref() == Some(peer)).then_some(cert)
}

/// The gate's verdict on `peer`'s `credential`: a member ([`admit`]); one
/// whose own certificate is not valid now but may be renewed (its
/// signature, identity and standing check out and it ended less than the
/// renewal grace ago), which may then only ask for a renewal; or refused.
fn gate_verdict(
    info: &NetworkInfo,
    revoked: &RwLock<HashSet<[u8; 32]>>,
    peer: &PeerId,
    credential: &[u8],
) -> Admit {
    if admit(info, revoked, peer, credential).is_some() {
        return Admit::Member;
    }
    let renewable = SignedCertificate::from_bytes(credential)
        .ok()
        .and_then(|signed| signed.verify_signed(info).ok())
        .filter(|cert| peer_id_of(&cert.identity).as_ref() == Some(peer))
        .filter(|cert| {
            revoked
                .read()
                .map(|r| !r.contains(cert.identity.as_bytes()))
                .unwrap_or(false)
        })
        .is_some_and(|cert| {
            matches!(
                cert.check(info, now_unix()),
                Err(CertError::Expired { .. } | CertError::NotYetValid { .. })
            ) && cert
                .not_after
                .saturating_add(weft_protocol::membership::renewal::RENEWAL_GRACE_SECS)
                >= now_unix()
        });
    if renewable {
        Admit::RenewalOnly
    } else {
        Admit::Refused
    }
}

/// The members the store holds whose certificates a trusted authority
/// signed (expired or not), less this node and the revoked, with the
/// control address of the endpoint this node last reached each at.
fn stored_holders(m: &Membership, port: u16) -> Vec<Holder> {
    let me = m.identity.identity();
    let Ok(list) = m.store.members().list() else {
        return Vec::new();
    };
    list.into_iter()
        .filter(|(id, _)| *id != me.0)
        .filter(|(id, _)| !m.store.revocations().is_revoked(id).unwrap_or(true))
        .filter_map(|(id, record)| {
            let cert = SignedCertificate::from_bytes(&record.certificate)
                .ok()?
                .verify_signed(&m.info())
                .ok()?;
            let peer = peer_id_of(&cert.identity)?;
            let endpoint = m.store.paths().get(&me.0, &id).ok().flatten()?.endpoint;
            let mut address = control_address(endpoint, port)?;
            address.push(libp2p::multiaddr::Protocol::P2p(peer));
            Some(Holder {
                name: cert.name,
                peer,
                address: Some(address),
            })
        })
        .collect()
}

/// Sequence numbers for this member's records: above every number an
/// earlier run used, whatever the clock did. Numbers are reserved in
/// blocks of [`SEQUENCE_BLOCK`] stored before use (the first at start, the
/// next through the store writer when half of the current one is used).
#[derive(Debug)]
pub struct Sequence {
    next: u64,
    reserved: u64,
}

impl Sequence {
    /// Starts above the stored reservation and the clock in milliseconds,
    /// and stores the first block (flushed).
    fn start(m: &Membership) -> anyhow::Result<Self> {
        let stored = m.store.sequence().reserved().unwrap_or_else(|e| {
            warn!(error = %e, "stored sequence reservation unreadable; starting from the clock");
            0
        });
        let next = first_sequence(stored, now_unix().saturating_mul(1000));
        let reserved = next + SEQUENCE_BLOCK;
        m.store
            .sequence()
            .reserve(reserved)
            .map_err(|e| anyhow::anyhow!("cannot store the gossip sequence reservation: {e}"))?;
        Ok(Sequence { next, reserved })
    }

    /// The next number; reserves the next block in the background when
    /// half of this one is used.
    fn take(&mut self, writer: &StoreWriter) -> u64 {
        self.next += 1;
        if self.next + SEQUENCE_BLOCK / 2 >= self.reserved {
            let end = self.reserved + SEQUENCE_BLOCK;
            // Retried on the next number if the write is dropped.
            if writer.submit(move |m| {
                m.counters
                    .store("sequence", m.store.sequence().reserve(end));
            }) {
                self.reserved = end;
            }
        }
        self.next
    }
}

/// Where a run's sequence numbers start: above everything the earlier runs
/// reserved (`reserved`), and at the clock in milliseconds if that is
/// later (a store that was lost).
fn first_sequence(reserved: u64, clock_ms: u64) -> u64 {
    reserved.max(clock_ms)
}

/// Counts by a short name.
pub type Counts = BTreeMap<&'static str, u64>;

/// The gossip side of a running member.
pub struct Gossip {
    handle: ControlHandle,
    validator: Validator,
    revoked: Arc<RwLock<HashSet<[u8; 32]>>>,
    /// Revocations this node holds, to pass on to members that connect.
    revocations: Vec<Revocation>,
    seq: Sequence,
    /// The members this node knows.
    pub members: MemberTable,
    neighbours: Neighbours,
    writer: StoreWriter,
    redial_at: Option<Instant>,
    next_announce: Instant,
    /// No member has connected since start: the first connection schedules
    /// the first announcement.
    awaiting_first_connection: bool,
    /// Quick announcements still owed after the first one.
    quick_announcements: u8,
    next_check: Instant,
    next_relays: Option<Instant>,
    endpoints: Vec<SocketAddr>,
    /// What this member announces and offers for hole punching: its
    /// addresses and the reflexive ones members report, as the device
    /// ranks them (only those enough members agree on are announced).
    own: OwnEndpoints,
    /// Where this member's endpoints come from: a fixed list, or the
    /// host's addresses (re-read every few seconds) and this port.
    source: EndpointSource,
    /// This member's latest announcement as signed, and for which endpoints.
    own_announcement: Option<(Vec<SocketAddr>, Vec<u8>)>,
    /// This member's own path observations, by member: the last endpoint
    /// and path MTU published.
    own_observations: HashMap<IdentityKey, PathObservation>,
    /// Records rejected, by reason.
    pub rejected: Counts,
    /// Records published, by kind.
    pub published: Counts,
    /// Records received, by kind (`invalid` when rejected before decoding).
    pub received: Counts,
    /// Members' announced and observed endpoints, for choosing relays.
    pub relays: super::relay::Relays,
    /// Data-plane keys of the members heard of since the last
    /// [`Gossip::take_heard`] (bounded by the records handled in between).
    heard: Vec<weft_protocol::PublicKey>,
    /// When members' certificates run out.
    expiry: Expiry,
    /// This member's own renewals, and the renewals it answered.
    pub renewal: Renewal,
    /// Members dropped because their certificate expired.
    pub expired: u64,
    /// The control-plane port members listen on.
    control_port: u16,
    /// Members known from the store at start, whatever their
    /// certificates' validity, and where this node last reached them: whom
    /// to ask for a renewal when this node starts with an expired
    /// certificate and everyone else's it stored has run out too.
    stored_holders: Vec<Holder>,
    /// The runtime of the control plane, for work that may block.
    pub(super) services: tokio::runtime::Handle,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// Starts the control plane on UDP `port` (on the current Tokio
    /// runtime: the caller enters the services runtime).
    pub fn start(
        m: &Membership,
        port: u16,
        source: EndpointSource,
        members: MemberTable,
        writer: StoreWriter,
    ) -> anyhow::Result<(Self, mpsc::Receiver<ControlEvent>)> {
        let mut revoked_set = HashSet::new();
        let mut revocations = Vec::new();
        let mut validator = record_validator();
        // Every stored revocation keeps its member out, also one whose
        // record no longer decodes (every serial of that identity).
        let revoked_ids = m.store.revocations().identities().unwrap_or_else(|e| {
            warn!(error = %e, "stored revocations unreadable");
            Vec::new()
        });
        for id in revoked_ids {
            revoked_set.insert(id);
            validator.note_revocation(IdentityKey(id), u64::MAX);
        }
        if let Ok(list) = m.store.revocations().list() {
            for (_, record) in list {
                if let Ok(r) = postcard::from_bytes::<Revocation>(&record.signed) {
                    revocations.push(r);
                }
            }
        }
        let revoked = Arc::new(RwLock::new(revoked_set));
        let gate: Gate = {
            // Shared, so a newly adopted authority set counts at once.
            let network = m.network();
            let revoked = revoked.clone();
            Arc::new(move |peer: &PeerId, credential: &[u8]| {
                let Ok(info) = network.read() else {
                    return Admit::Refused;
                };
                gate_verdict(&info, &revoked, peer, credential)
            })
        };
        let (handle, events) = Control::spawn(
            ControlConfig {
                identity_secret: m.identity.to_bytes(),
                listen_port: port,
                topic: format!("weft/{}/records", m.info().id()),
                credential: m.certificate().to_bytes(),
                bootstrap: Vec::new(),
            },
            gate,
        )?;
        info!(peer_id = %handle.peer_id(), port, "gossip on the control plane");
        let seq = Sequence::start(m)?;
        let endpoints = source.current(MAX_ANNOUNCED_ENDPOINTS);
        // NAT lifetimes are kept only for current members: those of members
        // revoked, or whose certificates lapsed, while the node was down go.
        let keep: HashSet<[u8; 32]> = members
            .iter()
            .map(|x| x.cert.identity.0)
            .chain([m.identity.identity().0])
            .collect();
        writer.submit(move |m| {
            m.counters
                .store("nat", m.store.nat().retain_members(|id| keep.contains(id)));
        });
        let mut expiry = Expiry::default();
        for x in members.iter() {
            expiry.note(x.cert.not_after);
        }
        let own = m
            .certificate()
            .verify_signed(&m.info())
            .map_err(|e| anyhow::anyhow!("own certificate: {e}"))?;
        let renewal = Renewal::new(&own);
        let stored_holders = stored_holders(m, port);
        let now = Instant::now();
        Ok((
            Self {
                handle,
                validator,
                revoked,
                revocations,
                seq,
                members,
                neighbours: Neighbours::new(m.identity.identity(), port, now),
                writer,
                redial_at: None,
                next_announce: now + announce_interval(0),
                awaiting_first_connection: true,
                quick_announcements: 0,
                next_check: now + ADDRESS_CHECK_EVERY,
                next_relays: Some(now),
                endpoints: endpoints.clone(),
                own: OwnEndpoints {
                    announced: endpoints.clone(),
                    candidates: endpoints,
                },
                source,
                own_announcement: None,
                own_observations: HashMap::new(),
                rejected: Default::default(),
                published: Default::default(),
                received: Default::default(),
                relays: Default::default(),
                heard: Vec::new(),
                expiry,
                renewal,
                expired: 0,
                control_port: port,
                stored_holders,
                // `start` runs on the services runtime.
                services: tokio::runtime::Handle::current(),
            },
            events,
        ))
    }

    /// The control handle (counters, connected members).
    pub fn control(&self) -> &ControlHandle {
        &self.handle
    }

    /// The store writer.
    pub fn writer(&self) -> &StoreWriter {
        &self.writer
    }

    /// The data-plane keys of the members heard of (announced, pushed or
    /// connected) since the last call.
    pub fn take_heard(&mut self) -> Vec<weft_protocol::PublicKey> {
        std::mem::take(&mut self.heard)
    }

    /// Stops gossip (the control task and, once its queue is done, the
    /// store writer end when their last handle goes) and keeps the members.
    pub fn into_members(self) -> MemberTable {
        self.members
    }

    /// How many members this node wants as control neighbours.
    pub fn wanted_neighbours(&self) -> usize {
        self.neighbours.wanted()
    }

    /// When [`Gossip::tick`] must next run.
    pub fn next_deadline(&self) -> Instant {
        let mut t = self
            .next_announce
            .min(self.next_check)
            .min(self.neighbours.next_check());
        if let Some(r) = self.redial_at {
            t = t.min(r);
        }
        if let Some(r) = self.next_relays {
            t = t.min(r);
        }
        let now = Instant::now();
        if let Some(e) = self.expiry.next_deadline(now, now_unix()) {
            t = t.min(e);
        }
        t.min(self.renewal.next_deadline(now))
    }

    /// Announces when due or at once when the host's addresses changed,
    /// keeps the control neighbours, and chooses relays when something
    /// they depend on changed.
    pub fn tick(&mut self, m: &Membership, device: &mut Device) {
        let now = Instant::now();
        if now >= self.next_check {
            self.next_check = now + ADDRESS_CHECK_EVERY;
            let current = self.source.current(MAX_ANNOUNCED_ENDPOINTS);
            if current != self.endpoints {
                info!(endpoints = ?current, "local addresses changed; announcing");
                self.endpoints = current;
                // Reflexive reports are relative to the old addresses: the
                // device drops them with the change.
                device.set_local_addresses(super::local_addresses(&[]), self.source.port);
                self.relays_changed(now);
                // Control connections from the old address are dead but
                // would linger until their idle timeout, swallowing what we
                // send: close them and dial the neighbours again. Each new
                // connection pushes our new announcement; the gossip one
                // follows shortly, and one more redial after members have
                // timed out their copies of the dead connections.
                self.redial(now);
                self.redial_at = Some(now + REDIAL_AFTER_MOVE);
                self.next_announce = now + Duration::from_secs(2);
            }
        }
        if self.redial_at.is_some_and(|t| now >= t) {
            self.redial_at = None;
            self.redial(now);
            self.next_announce = self.next_announce.min(now + Duration::from_secs(1));
        }
        if now >= self.neighbours.next_check() {
            self.neighbours.tick(now, &self.members, &self.handle);
        }
        if now >= self.next_announce {
            self.announce(m);
        }
        self.refresh_own(device, now);
        if self.next_relays.is_some_and(|t| now >= t) {
            self.next_relays = None;
            let own = self.own.candidates.clone();
            self.relays.apply(&self.members, m, device, own);
        }
        self.enforce_expiry(device);
        self.renew(m);
    }

    /// Drops every member whose certificate has run out from the data
    /// plane (its sessions end, its handshakes are refused) and the
    /// control plane. A renewed certificate, announced or presented, adds
    /// it back.
    fn enforce_expiry(&mut self, device: &mut Device) {
        let now = now_unix();
        if !self.expiry.due(now) {
            return;
        }
        for id in self.expiry.take_expired(&self.members, now) {
            let Some(member) = self.members.remove(&id) else {
                continue;
            };
            self.expired += 1;
            info!(name = %member.cert.name, expired_unix = member.cert.not_after,
                "member's certificate expired; removed from the data and control planes");
            if let Some(peer) = device.find_peer(&member.cert.noise_key) {
                device.remove_peer(peer);
            }
            self.relays.forget(&id);
            if let Some(peer) = member.p2p.or_else(|| peer_id_of(&id)) {
                let _ = self.handle.try_disconnect(peer);
            }
        }
    }

    /// Runs this member's renewal; a renewed certificate is presented to
    /// every connected peer and announced at once.
    fn renew(&mut self, m: &Membership) {
        let members = &self.members;
        let control = &self.handle;
        let port = self.control_port;
        let stored = &self.stored_holders;
        let set = m.authorities().verified;
        let renewed = self.renewal.poll(m, control, || {
            let connected = control.members();
            let mut holders: Vec<(bool, bool, Holder)> = members
                .iter()
                .filter_map(|x| {
                    let peer = x.p2p.or_else(|| peer_id_of(&x.cert.identity))?;
                    let address = x
                        .endpoints
                        .first()
                        .and_then(|e| control_address(*e, port))
                        .map(|mut a| {
                            a.push(libp2p::multiaddr::Protocol::P2p(peer));
                            a
                        });
                    Some((
                        set.current().holder_named(&x.cert.name).is_none(),
                        !connected.contains(&peer),
                        Holder {
                            name: x.cert.name.clone(),
                            peer,
                            address,
                        },
                    ))
                })
                .collect();
            // Members the authority set names first, connected ones
            // before the others; then those only the store knows.
            holders.sort_by_key(|(other, far, _)| (*other, *far));
            let mut holders: Vec<Holder> = holders.into_iter().map(|(_, _, h)| h).collect();
            for h in stored {
                if !holders.iter().any(|x| x.peer == h.peer) {
                    holders.push(h.clone());
                }
            }
            holders
        });
        if let Some(certificate) = renewed {
            let bytes = certificate.to_bytes();
            m.set_certificate(certificate);
            let _ = self.handle.try_set_credential(bytes);
            self.own_announcement = None;
            self.announce(m);
        }
    }

    /// Forces a renewal now (`weft renew`); `reply` hears the outcome.
    pub fn force_renewal(&mut self, reply: oneshot::Sender<Result<String, String>>) {
        self.renewal.force(reply);
    }

    /// Takes this member's endpoints from the device again: a reflexive
    /// address that enough members now agree on (or no longer do) is
    /// announced within a second; one a single member reports is only
    /// offered for hole punching.
    fn refresh_own(&mut self, device: &Device, now: Instant) {
        let own = device.own_endpoints(&self.endpoints, now);
        if own == self.own {
            return;
        }
        let new = own
            .candidates
            .iter()
            .filter(|e| !self.own.candidates.contains(e));
        for e in new {
            if !own.announced.contains(e) {
                // Offered to relayed peers for punching only.
                info!(
                    endpoint = %e,
                    "reflexive endpoint learned; announced once another member confirms it"
                );
            } else if !self.endpoints.contains(e) {
                info!(endpoint = %e, "reflexive endpoint verified by two members; announcing it");
            }
        }
        if own.announced != self.own.announced {
            info!(endpoints = ?own.announced, "announced endpoints changed");
            self.next_announce = self.next_announce.min(now + Duration::from_secs(1));
        }
        self.own = own;
        self.relays_changed(now);
    }

    /// Relays depend on what changed: choose them again soon.
    fn relays_changed(&mut self, now: Instant) {
        if self.next_relays.is_none() {
            self.next_relays = Some(now + RELAYS_EVERY);
        }
    }

    /// Closes every control connection and dials the neighbours again.
    fn redial(&mut self, now: Instant) {
        for peer in self.handle.members() {
            let _ = self.handle.try_disconnect(peer);
        }
        self.neighbours.reset(now);
    }

    /// This member's announcement for its current endpoints, signed anew
    /// only when they changed.
    fn own_announcement(&mut self, m: &Membership, fresh: bool) -> Vec<u8> {
        let endpoints = self.own_candidates();
        match &self.own_announcement {
            Some((e, bytes)) if *e == endpoints && !fresh => bytes.clone(),
            _ => {
                let seq = self.seq.take(&self.writer);
                let bytes = m.announcement(seq, endpoints.clone()).to_bytes();
                self.own_announcement = Some((endpoints, bytes.clone()));
                bytes
            }
        }
    }

    /// Publishes this member's announcement now and schedules the next.
    pub fn announce(&mut self, m: &Membership) {
        // A new sequence number each time: gossipsub drops a message whose
        // content it has seen.
        let record = self.own_announcement(m, true);
        self.publish("announcement", record);
        let now = Instant::now();
        self.next_announce = if self.quick_announcements > 0 {
            self.quick_announcements -= 1;
            now + jittered(SECOND_ANNOUNCE)
        } else {
            // The interval, give or take 10%.
            let interval = announce_interval(self.members.len() + 1);
            now + interval * 9 / 10 - interval / 5 + jittered(interval / 5)
        };
    }

    /// This member's endpoints as announced: verified reflexive ones first
    /// (a member that has one is behind a NAT, and most members reach it
    /// from outside), then its own addresses.
    pub fn own_candidates(&self) -> Vec<SocketAddr> {
        self.own.announced.clone()
    }

    /// Signs a path observation of this member.
    fn observation_record(&mut self, m: &Membership, p: &PathObservation) -> Vec<u8> {
        let seq = self.seq.take(&self.writer);
        SignedRecord::sign(&m.identity, seq, RecordBody::PathObservation(p.clone())).to_bytes()
    }

    /// This member confirmed `pmtu` toward `peer` at `endpoint`: stored for
    /// a warm start and, when the edge changed, published (others use it
    /// as a prior for their own search, and to tell who is public).
    pub fn publish_observation(
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
        let Some(to) = self
            .members
            .by_noise_key(&status.public_key)
            .map(|c| c.cert.identity)
        else {
            return;
        };
        let rtt_us = super::warm::rtt_us(device, peer);
        let changed = self
            .own_observations
            .get(&to)
            .is_none_or(|o| o.endpoint != endpoint || o.pmtu != pmtu);
        let me = m.identity.identity();
        let measured_unix = now_unix();
        self.writer.submit(move |m| {
            m.counters.store(
                "paths",
                m.store.paths().put(
                    me.as_bytes(),
                    to.as_bytes(),
                    &PathRecord {
                        endpoint,
                        pmtu,
                        rtt_us,
                        nat: None,
                        measured_unix,
                        own: true,
                    },
                ),
            );
        });
        if !changed {
            return;
        }
        let members = &self.members;
        // `to` was just found in the member table.
        let _ = self
            .relays
            .observed(me, to, endpoint, |id| members.contains(id));
        self.relays_changed(Instant::now());
        let observation = PathObservation {
            to,
            endpoint,
            pmtu,
            rtt_us,
            measured_unix,
        };
        let record = self.observation_record(m, &observation);
        self.own_observations.insert(to, observation);
        self.publish("path_observation", record);
    }

    /// Loads this member's own stored observations, to pass on to members
    /// that connect.
    pub fn load_own_observations(&mut self, m: &Membership) {
        let me = m.identity.identity();
        let Ok(paths) = m.store.paths().list_from(me.as_bytes()) else {
            return;
        };
        for (to, path) in paths {
            if !path.own || path.pmtu == 0 {
                continue;
            }
            self.own_observations.insert(
                IdentityKey(to),
                PathObservation {
                    to: IdentityKey(to),
                    endpoint: path.endpoint,
                    pmtu: path.pmtu,
                    rtt_us: path.rtt_us,
                    measured_unix: path.measured_unix,
                },
            );
        }
    }

    /// Publishes this node's measured NAT mapping lifetime behind its
    /// public address, and stores it, so members behind the same address
    /// (and this node after a restart) start from it.
    pub fn publish_nat_lifetime(&mut self, m: &Membership, public: SocketAddr, lifetime: Duration) {
        let lifetime_ms = u32::try_from(lifetime.as_millis()).unwrap_or(u32::MAX);
        let measured_unix = now_unix();
        let me = m.identity.identity();
        self.writer.submit(move |m| {
            m.counters.store(
                "nat",
                m.store.nat().put(
                    me.as_bytes(),
                    public.ip(),
                    &NatRecord {
                        lifetime_ms,
                        measured_unix,
                        own: true,
                    },
                ),
            );
        });
        let seq = self.seq.take(&self.writer);
        let record = SignedRecord::sign(
            &m.identity,
            seq,
            RecordBody::NatLifetime(NatLifetime {
                public,
                lifetime_ms,
                measured_unix,
            }),
        );
        self.publish("nat_lifetime", record.to_bytes());
    }

    /// The next sequence number for a record this member signs.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq.take(&self.writer)
    }

    /// Queues `record` (of `kind`) for the mesh and counts it; a full
    /// queue is counted by the control handle.
    fn publish(&mut self, kind: &'static str, record: Vec<u8>) {
        if self.handle.try_publish(record).is_ok() {
            *self.published.entry(kind).or_default() += 1;
        }
    }

    /// Publishes an authority-signed revocation and applies it here (the
    /// member is dropped at once); the store write and the publish go on
    /// in the background, and what came of each is in the returned
    /// [`revocation::Pending`].
    pub fn publish_revocation(
        &mut self,
        m: &Membership,
        revocation: Revocation,
        device: &mut Device,
    ) -> revocation::Pending {
        let seq = self.seq.take(&self.writer);
        let record =
            SignedRecord::sign(&m.identity, seq, RecordBody::Revocation(revocation.clone()));
        let (reply, stored) = oneshot::channel();
        self.revoke(revocation, device, Some(reply));
        let published = self.handle.try_publish_reported(record.to_bytes());
        if published.is_ok() {
            *self.published.entry("revocation").or_default() += 1;
        }
        revocation::Pending { stored, published }
    }

    /// What a member that just connected is pushed: every announcement
    /// this node holds (its own first), the revocations and its own path
    /// observations, freshly signed in that order (a receiver accepts one
    /// origin's records only in increasing sequence order).
    fn push_for_newcomer(&mut self, m: &Membership) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        // The authority set first: the certificates that follow may be
        // signed by a key only it names.
        if let Some(chain) = m.authorities().chain {
            let seq = self.seq.take(&self.writer);
            records.push(
                SignedRecord::sign(&m.identity, seq, RecordBody::AuthoritySet(chain)).to_bytes(),
            );
        }
        records.push(self.own_announcement(m, false));
        records.extend(self.members.iter().filter_map(|x| x.announcement.clone()));
        for r in self.revocations.clone() {
            let seq = self.seq.take(&self.writer);
            records
                .push(SignedRecord::sign(&m.identity, seq, RecordBody::Revocation(r)).to_bytes());
        }
        let observations: Vec<PathObservation> = self.own_observations.values().cloned().collect();
        for o in observations {
            records.push(self.observation_record(m, &o));
        }
        records.truncate(crate::control::MAX_SYNC_RECORDS);
        records
    }

    /// Handles a control-plane event. Returns peers newly added to the
    /// device, for routes.
    pub fn on_event(
        &mut self,
        m: &Arc<Membership>,
        event: ControlEvent,
        device: &mut Device,
    ) -> Vec<weft_protocol::PeerId> {
        let now = Instant::now();
        match event {
            ControlEvent::MemberConnected { peer, credential } => {
                debug!(%peer, "member connected to the control plane");
                let mut added = Vec::new();
                // Its credential is a certificate the gate verified: a
                // member not known yet is learned from it at once.
                if let Some(cert) = admit(&m.info(), &self.revoked, &peer, &credential) {
                    if !self.members.contains(&cert.identity) {
                        added = self.learn(m, cert, credential, None, Vec::new(), device);
                    }
                }
                let records = self.push_for_newcomer(m);
                let _ = self.handle.try_push(peer, records);
                if std::mem::take(&mut self.awaiting_first_connection) {
                    self.quick_announcements = 1;
                    self.next_announce = now + jittered(FIRST_ANNOUNCE);
                }
                self.neighbours_soon(now);
                added
            }
            ControlEvent::PeerRejected { peer, reason } => {
                // The control task logged it at WARN already.
                debug!(%peer, %reason, "control-plane peer rejected");
                Vec::new()
            }
            ControlEvent::Disconnected { peer } => {
                debug!(%peer, "member left the control plane");
                self.neighbours_soon(now);
                Vec::new()
            }
            ControlEvent::Message {
                message_id,
                propagation_source,
                data,
                ..
            } => {
                let (verdict, added) = self.receive(m, &data, device);
                let _ = self
                    .handle
                    .try_report(message_id, propagation_source, verdict);
                added
            }
            ControlEvent::RenewalRequest { peer, id, request } => {
                let revoked = &self.revoked;
                let is_revoked = |who: &IdentityKey| {
                    revoked
                        .read()
                        .map(|r| r.contains(who.as_bytes()))
                        .unwrap_or(true)
                };
                let lifetime = m.certificate_lifetime_secs();
                let (answer, result) =
                    super::renewal::answer(m, &is_revoked, &peer, &request, lifetime);
                *self.renewal.answered.entry(result).or_default() += 1;
                let _ = self.handle.try_answer_renewal(id, answer.to_bytes());
                Vec::new()
            }
            ControlEvent::NominationRequest { peer, id, request } => {
                let services = self.services.clone();
                self.nominated(m, peer, id, request, &services);
                Vec::new()
            }
            ControlEvent::Records { peer, records } => {
                debug!(%peer, records = records.len(), "records pushed by a member");
                let mut added = Vec::new();
                for data in records {
                    added.extend(self.receive(m, &data, device).1);
                }
                added
            }
        }
    }

    /// Checks the neighbours at the next turn.
    fn neighbours_soon(&mut self, now: Instant) {
        self.neighbours.check_at(now);
    }

    /// Validates one record and applies it; returns the verdict for
    /// gossipsub and the peers added.
    fn receive(
        &mut self,
        m: &Membership,
        data: &[u8],
        device: &mut Device,
    ) -> (Verdict, Vec<weft_protocol::PeerId>) {
        let now = now_unix();
        let members = &self.members;
        let revoked = &self.revoked;
        let is_member = |id: &IdentityKey| {
            members.contains(id)
                && !revoked
                    .read()
                    .map(|r| r.contains(id.as_bytes()))
                    .unwrap_or(true)
        };
        match self.validator.validate(data, &m.info(), &is_member, now) {
            Ok(record) => {
                *self
                    .received
                    .entry(record.body.kind().as_str())
                    .or_default() += 1;
                // An observation of someone who is not a member (a made-up
                // identity, one revoked, or one not learned yet) is not
                // kept: what members say is stored only about members.
                if let RecordBody::PathObservation(p) = &record.body {
                    if p.to != m.identity.identity() && !self.members.contains(&p.to) {
                        *self.rejected.entry("unknown_subject").or_default() += 1;
                        debug!(to = %p.to, "observation of a non-member dropped");
                        return (Verdict::Ignore, Vec::new());
                    }
                }
                if let RecordBody::AuthoritySet(chain) = record.body {
                    return (self.take_authorities(m, chain), Vec::new());
                }
                let raw = matches!(record.body, RecordBody::Announcement(_)).then(|| data.to_vec());
                let origin = record.origin;
                (
                    Verdict::Accept,
                    self.apply(m, origin, record.body, raw, device),
                )
            }
            Err(e) => {
                *self.received.entry("invalid").or_default() += 1;
                *self.rejected.entry(e.as_str()).or_default() += 1;
                debug!(reason = e.as_str(), "gossip record rejected");
                let verdict = match e {
                    // Late, or from a member this node has not learned yet:
                    // not the forwarder's fault, and not worth forwarding.
                    RecordError::StaleSequence { .. } | RecordError::NotAMember => Verdict::Ignore,
                    _ => Verdict::Reject,
                };
                (verdict, Vec::new())
            }
        }
    }

    fn apply(
        &mut self,
        m: &Membership,
        origin: IdentityKey,
        body: RecordBody,
        raw: Option<Vec<u8>>,
        device: &mut Device,
    ) -> Vec<weft_protocol::PeerId> {
        let now = now_unix();
        match body {
            RecordBody::Announcement(a) => {
                let Ok(cert) = a.certificate.verify(&m.info(), now) else {
                    return Vec::new();
                };
                if cert.identity == m.identity.identity() {
                    return Vec::new();
                }
                if let Err(e) = self.relays.announced(cert.identity, &a.endpoints) {
                    *self.rejected.entry(e.as_str()).or_default() += 1;
                }
                self.relays_changed(Instant::now());
                self.learn(m, cert, a.certificate.to_bytes(), raw, a.endpoints, device)
            }
            RecordBody::PathObservation(p) => {
                debug!(to = %p.to, pmtu = p.pmtu, "path observation");
                let members = &self.members;
                if let Err(e) = self
                    .relays
                    .observed(origin, p.to, p.endpoint, |id| members.contains(id))
                {
                    // An observation of us is used below, not tracked.
                    if p.to != m.identity.identity() {
                        *self.rejected.entry(e.as_str()).or_default() += 1;
                    }
                }
                self.relays_changed(Instant::now());
                let me = m.identity.identity();
                if p.to == me {
                    // An observation of us says where its origin reaches us
                    // from outside: one member's word on our reflexive
                    // endpoint. It is announced only once another member
                    // agrees (`weft_protocol::nat::reflexive`); until then
                    // it is only offered for hole punching.
                    if let Some(origin) = self.members.get(&origin) {
                        let now = Instant::now();
                        device.note_reflexive(&origin.cert.noise_key, p.endpoint, now);
                        self.refresh_own(device, now);
                    }
                } else if let Some(peer) = self
                    .members
                    .get(&p.to)
                    .and_then(|x| device.find_peer(&x.cert.noise_key))
                {
                    // What another member confirmed toward `to` is where our
                    // own search toward it starts (confirmed again first).
                    device.set_pmtu_prior(peer, p.pmtu);
                }
                Vec::new()
            }
            RecordBody::NatLifetime(n) => {
                debug!(public = %n.public, lifetime_ms = n.lifetime_ms, "NAT lifetime");
                // Stored under the member that measured it: a member
                // flooding lifetimes rewrites its own few entries.
                self.writer.submit(move |m| {
                    m.counters.store(
                        "nat",
                        m.store.nat().put(
                            origin.as_bytes(),
                            n.public.ip(),
                            &NatRecord {
                                lifetime_ms: n.lifetime_ms,
                                measured_unix: n.measured_unix,
                                own: false,
                            },
                        ),
                    );
                });
                // Behind the same public address, the same NAT: start there.
                let ours = device.nat_status().reflexive.map(|r| r.ip());
                if ours == Some(n.public.ip()) {
                    let lifetime = Duration::from_millis(u64::from(n.lifetime_ms));
                    device.set_nat_hint(lifetime, Instant::now());
                }
                Vec::new()
            }
            RecordBody::Revocation(r) => {
                self.revoke(r, device, None);
                Vec::new()
            }
            // Taken in `receive`, which needs the verdict.
            RecordBody::AuthoritySet(_) => Vec::new(),
        }
    }

    /// Applies a revocation: remembered, stored (flushed, then `reply`
    /// answered), and the member dropped from the data and control planes.
    fn revoke(
        &mut self,
        r: Revocation,
        device: &mut Device,
        reply: Option<oneshot::Sender<anyhow::Result<()>>>,
    ) {
        let id = r.identity;
        info!(identity = %id, serial = r.serial, "member revoked");
        // Identity-wide: no certificate of a revoked identity, of any
        // serial, is taken again (the gate refuses the identity too).
        self.validator.note_revocation(id, u64::MAX);
        if let Ok(mut set) = self.revoked.write() {
            set.insert(id.0);
        }
        if !self
            .revocations
            .iter()
            .any(|x| x.identity == id && x.serial >= r.serial)
        {
            self.revocations.retain(|x| x.identity != id);
            self.revocations.push(r.clone());
        }
        let record = RevocationRecord {
            serial: r.serial,
            revoked_unix: r.revoked_unix,
            // The authority-signed revocation itself, so it can be passed
            // on to members that were away.
            signed: postcard::to_stdvec(&r).unwrap_or_default(),
        };
        let queued = self.writer.submit(move |m| {
            let stored = m.store.revocations().revoke(id.as_bytes(), &record);
            let failed = stored.as_ref().err().map(|e| anyhow::anyhow!("{e}"));
            m.counters.store("revocations", stored);
            if let Some(reply) = reply {
                let _ = reply.send(failed.map_or(Ok(()), Err));
            }
        });
        if !queued {
            warn!(identity = %id, "revocation not stored: the store writer is full");
        }
        if let Some(member) = self.members.remove(&id) {
            if let Some(peer) = device.find_peer(&member.cert.noise_key) {
                device.remove_peer(peer);
            }
        }
        self.relays.forget(&id);
        self.writer.submit(move |m| {
            m.counters
                .store("nat", m.store.nat().remove_member(id.as_bytes()));
        });
        if let Some(peer) = peer_id_of(&id) {
            let _ = self.handle.try_disconnect(peer);
        }
    }

    /// Takes `cert` (verified; `signed` is its encoding) as a member's,
    /// from an announcement (with its `endpoints` and signed bytes `raw`)
    /// or from the credential it presented: remembered, stored when new or
    /// renewed, added to the device or given the endpoint. Returns the
    /// peers added to the device.
    fn learn(
        &mut self,
        m: &Membership,
        cert: Certificate,
        signed: Vec<u8>,
        raw: Option<Vec<u8>>,
        endpoints: Vec<SocketAddr>,
        device: &mut Device,
    ) -> Vec<weft_protocol::PeerId> {
        let endpoint = endpoints.first().copied();
        let id = cert.identity;
        self.heard.push(cert.noise_key);
        self.expiry.note(cert.not_after);
        let known = self.members.get(&id);
        let stored = known.and_then(|x| x.stored_serial);
        // The store is written only when the endpoint changed.
        let moved =
            endpoint.is_some() && known.and_then(|x| x.endpoints.first().copied()) != endpoint;
        self.members.insert(cert.clone(), raw, endpoints);
        if stored != Some(cert.serial) {
            let record = MemberRecord {
                name: cert.name.clone(),
                certificate: signed,
                serial: cert.serial,
                expires_unix: cert.not_after,
                updated_unix: now_unix(),
            };
            let queued = self.writer.submit(move |m| {
                m.counters
                    .store("members", m.store.members().put(id.as_bytes(), &record));
            });
            if queued {
                self.members.mark_stored(&id, cert.serial);
            }
        }
        let now = Instant::now();
        match device.find_peer(&cert.noise_key) {
            Some(peer) => {
                if let Some(e) = endpoint {
                    let had_endpoint = device
                        .peer_status(peer, now)
                        .is_some_and(|s| s.endpoint.is_some());
                    // A member that moved: both members of a pair behind
                    // NATs hear of each other's new endpoint at about the
                    // same time, and each sends at once, which opens the
                    // mappings for the other's packets. A first endpoint
                    // (a member learned from its credential) is only
                    // noted: members handshake on demand.
                    if device.suggest_endpoint(peer, e, now) && had_endpoint {
                        device.connect(peer, now);
                    }
                    if moved {
                        self.remember_endpoint(m, &cert, e);
                    }
                }
                Vec::new()
            }
            None => match device.add_peer(peer_config(&cert, endpoint), now) {
                Ok(peer) => {
                    info!(name = %cert.name, endpoint = ?endpoint, "member learned from gossip");
                    if let Some(e) = endpoint {
                        self.remember_endpoint(m, &cert, e);
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

    /// Stores `endpoint` as where `cert`'s member is reached, unless this
    /// node measured a path there itself (kept for a warm start).
    fn remember_endpoint(&self, m: &Membership, cert: &Certificate, endpoint: SocketAddr) {
        let (me, to) = (m.identity.identity(), cert.identity);
        self.writer.submit(move |m| {
            let stored = m.store.paths().get(&me.0, &to.0).ok().flatten();
            if stored.is_some_and(|p| p.endpoint == endpoint && p.pmtu != 0) {
                return;
            }
            m.counters.store(
                "paths",
                m.store.paths().put(
                    me.as_bytes(),
                    to.as_bytes(),
                    &PathRecord::unmeasured(endpoint, now_unix()),
                ),
            );
        });
    }
}

/// The validator of gossip records: loopback endpoints refused, as for
/// every endpoint others name (docs/protocol.md §9): a member announcing
/// 127.0.0.1 would have its peers send to themselves.
pub(crate) fn record_validator() -> Validator {
    Validator::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_announcing_a_loopback_endpoint_is_refused() {
        use rand_core::OsRng;
        use weft_protocol::membership::{Announcement, IdentitySecret, NetworkId, NetworkInfo};
        let authority = IdentitySecret::generate(&mut OsRng);
        let network = NetworkId([3; 16]);
        let prefix = "100.64.0.0/16".parse().unwrap();
        let info = NetworkInfo::new(network, "test".into(), prefix, authority.identity()).unwrap();
        let member = IdentitySecret::generate(&mut OsRng);
        let now = now_unix();
        let ipv4 = std::net::Ipv4Addr::new(100, 64, 0, 7);
        let cert = Certificate {
            network,
            name: "beta".into(),
            identity: member.identity(),
            noise_key: weft_protocol::PublicKey([7; 32]),
            ipv4,
            ipv6: info.allocate_v6(ipv4),
            serial: 1,
            not_before: now - 60,
            not_after: now + 3600,
        };
        let signed = weft_protocol::membership::Authority::issue(&cert, &authority);
        let announce = |seq, endpoint: &str| {
            let body = RecordBody::Announcement(Announcement {
                certificate: signed.clone(),
                endpoints: vec![endpoint.parse().unwrap()],
            });
            SignedRecord::sign(&member, seq, body).to_bytes()
        };
        let mut validator = record_validator();
        let known = |_: &IdentityKey| true;
        for spelling in ["127.0.0.1:51820", "[::ffff:127.0.0.1]:51820", "[::1]:51820"] {
            assert!(
                validator
                    .validate(&announce(1, spelling), &info, &known, now)
                    .is_err(),
                "{spelling} accepted"
            );
        }
        assert!(validator
            .validate(&announce(2, "192.0.2.7:51820"), &info, &known, now)
            .is_ok());
    }

    #[test]
    fn the_gate_admits_a_valid_credential_lets_a_recently_expired_one_only_renew_and_refuses_the_rest(
    ) {
        use rand_core::OsRng;
        use weft_protocol::membership::{Authority, IdentitySecret, NetworkId, NetworkInfo};
        let authority = IdentitySecret::generate(&mut OsRng);
        let network = NetworkId([4; 16]);
        let info = NetworkInfo::new(
            network,
            "test".into(),
            "100.64.0.0/16".parse().unwrap(),
            authority.identity(),
        )
        .unwrap();
        let member = IdentitySecret::generate(&mut OsRng);
        let peer = peer_id_of(&member.identity()).unwrap();
        let now = now_unix();
        let ipv4 = std::net::Ipv4Addr::new(100, 64, 0, 9);
        let credential = |not_before: u64, not_after: u64, signer: &IdentitySecret| {
            let cert = Certificate {
                network,
                name: "gamma".into(),
                identity: member.identity(),
                noise_key: weft_protocol::PublicKey([9; 32]),
                ipv4,
                ipv6: info.allocate_v6(ipv4),
                serial: 1,
                not_before,
                not_after,
            };
            Authority::issue(&cert, signer).to_bytes()
        };
        let revoked = RwLock::new(HashSet::new());
        let verdict = |c: &[u8], who: &PeerId| gate_verdict(&info, &revoked, who, c);
        let valid = credential(now - 10, now + 60, &authority);
        let expired = credential(now - 120, now - 60, &authority);
        let long_expired = credential(now - 40 * 86_400, now - 31 * 86_400, &authority);
        let forged = credential(now - 120, now - 60, &member);
        assert_eq!(verdict(&valid, &peer), Admit::Member);
        assert_eq!(verdict(&expired, &peer), Admit::RenewalOnly);
        assert_eq!(verdict(&long_expired, &peer), Admit::Refused);
        assert_eq!(verdict(&forged, &peer), Admit::Refused);
        // Another peer presenting this member's certificate.
        let other = PeerId::random();
        assert_eq!(verdict(&expired, &other), Admit::Refused);
        assert_eq!(verdict(&valid, &other), Admit::Refused);
        // A revoked member may not even renew.
        revoked.write().unwrap().insert(member.identity().0);
        assert_eq!(verdict(&expired, &peer), Admit::Refused);
        assert_eq!(verdict(&valid, &peer), Admit::Refused);
    }

    #[test]
    fn a_restart_after_the_clock_stepped_back_still_numbers_records_higher() {
        // First run: clock at t, numbers used up to just below the block end.
        let clock = 1_700_000_000_000;
        let first = first_sequence(0, clock);
        let reserved = first + SEQUENCE_BLOCK;
        let last_used = reserved - 1;
        // The clock steps back ten minutes; the next run starts above.
        let second = first_sequence(reserved, clock - 600_000);
        assert!(second > last_used, "{second} <= {last_used}");
        // A lost store falls back on the clock.
        assert_eq!(first_sequence(0, clock + 5), clock + 5);
    }

    #[test]
    fn the_announcement_interval_grows_with_the_network_within_its_bounds() {
        assert_eq!(announce_interval(1), ANNOUNCE_EVERY);
        assert_eq!(announce_interval(120), ANNOUNCE_EVERY);
        assert_eq!(announce_interval(1000), Duration::from_secs(500));
        assert_eq!(announce_interval(1_000_000), ANNOUNCE_AT_MOST_EVERY);
    }
}
