//! Control-plane neighbours: which members this node keeps control
//! connections to, dialling the missing ones and closing the surplus.
//!
//! The choice itself is the protocol's (`weft_protocol::membership::overlay`:
//! fingers on a ring of identities, about `2 log2 N` connections per member,
//! connected with any one member down). This module applies it to what the
//! node sees: members with a known endpoint are dialled at
//! `<endpoint address>/udp/<control port>/quic-v1/p2p/<peer id>`
//! ([`control_address`]); a member
//! that does not answer is retried with exponential backoff (1 s doubling
//! to [`MAX_BACKOFF`]) and, while it waits, is left out of the ring, so the
//! ring closes over members that are down. Connections beyond the wanted
//! ones plus [`SPARE`] are closed once older than [`TRIM_AFTER`], the
//! unwanted first; so the first member, which every joiner dials first,
//! does not stay connected to the whole network.
//!
//! It never waits: dials and disconnects are queued on the control handle,
//! and what is connected is read from the handle's member list each time.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId as P2pId};
use tracing::{debug, info};
use weft_protocol::membership::{overlay, IdentityKey};

use super::members::MemberTable;
use crate::control::ControlHandle;

/// How often the neighbour set is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between dials of a member that does not answer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A connection younger than this is never closed as surplus: both sides
/// may still be learning the membership that makes it wanted.
pub const TRIM_AFTER: Duration = Duration::from_secs(20);
/// Connections kept beyond the wanted ones before any is closed.
pub const SPARE: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Dial {
    /// Dials since the member was last connected.
    attempts: u32,
    /// No new dial before this.
    next_try: Instant,
}

/// The neighbour manager.
#[derive(Debug)]
pub struct Neighbours {
    me: IdentityKey,
    port: u16,
    dials: HashMap<IdentityKey, Dial>,
    /// When each connected member was first seen connected.
    since: HashMap<P2pId, Instant>,
    next_check: Instant,
    /// Members this node wants, last computed (for status and logs).
    wanted: usize,
    /// Dial every finger at the next tick, connected or not: this node
    /// moved, and what looks connected may be a dead connection that
    /// lingers until its idle timeout.
    force: bool,
}

impl Neighbours {
    /// A manager for this node (`me`), whose members listen for the control
    /// plane on UDP `port`.
    pub fn new(me: IdentityKey, port: u16, now: Instant) -> Self {
        Neighbours {
            me,
            port,
            dials: HashMap::new(),
            since: HashMap::new(),
            next_check: now,
            wanted: 0,
            force: false,
        }
    }

    /// When [`Neighbours::tick`] must next run.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Makes the next check happen at `at` or earlier.
    pub fn check_at(&mut self, at: Instant) {
        self.next_check = self.next_check.min(at);
    }

    /// Makes the next tick dial every finger at once, forgetting backoffs
    /// (after this node moved: its old connections are dead).
    pub fn reset(&mut self, now: Instant) {
        self.dials.clear();
        self.since.clear();
        self.next_check = now;
        self.force = true;
    }

    /// Dials missing fingers and closes surplus connections.
    pub fn tick(&mut self, now: Instant, members: &MemberTable, control: &ControlHandle) {
        self.next_check = now + CHECK_EVERY;
        let connected: HashSet<P2pId> = control.members().into_iter().collect();
        self.since.retain(|p, _| connected.contains(p));
        for p in &connected {
            self.since.entry(*p).or_insert(now);
        }
        let connected_ids: HashSet<IdentityKey> = connected
            .iter()
            .filter_map(|p| members.by_p2p(p).map(|m| m.cert.identity))
            .collect();
        for id in &connected_ids {
            self.dials.remove(id);
        }
        // The ring: members connected now, and members with an endpoint
        // that are not waiting out a failed dial.
        let available: Vec<IdentityKey> = members
            .iter()
            .filter(|m| {
                let id = m.cert.identity;
                connected_ids.contains(&id)
                    || (!m.endpoints.is_empty()
                        && self
                            .dials
                            .get(&id)
                            .is_none_or(|d| d.attempts == 0 || now >= d.next_try))
            })
            .map(|m| m.cert.identity)
            .collect();
        let force = std::mem::take(&mut self.force);
        for id in overlay::fingers(&self.me, &available) {
            if connected_ids.contains(&id) && !force {
                continue;
            }
            let Some(address) = members.get(&id).and_then(|m| address(m, self.port)) else {
                continue;
            };
            let dial = self.dials.entry(id).or_insert(Dial {
                attempts: 0,
                next_try: now,
            });
            if now < dial.next_try {
                continue;
            }
            dial.attempts += 1;
            let backoff = Duration::from_secs(1u64 << dial.attempts.min(6)).min(MAX_BACKOFF);
            dial.next_try = now + backoff;
            debug!(%address, attempt = dial.attempts, "control plane: dialling a neighbour");
            let _ = control.try_dial(address);
        }
        self.trim(now, members, &connected, &available, control);
    }

    /// Closes the surplus: connections beyond the wanted ones plus
    /// [`SPARE`], unwanted and old enough.
    fn trim(
        &mut self,
        now: Instant,
        members: &MemberTable,
        connected: &HashSet<P2pId>,
        available: &[IdentityKey],
        control: &ControlHandle,
    ) {
        let wanted: HashSet<IdentityKey> =
            overlay::wanted(&self.me, available).into_iter().collect();
        self.wanted = wanted.len();
        let budget = wanted.len() + SPARE;
        let mut surplus = connected.len().saturating_sub(budget);
        if surplus == 0 {
            return;
        }
        let mut candidates: Vec<(Instant, P2pId)> = connected
            .iter()
            .filter(|p| {
                members
                    .by_p2p(p)
                    .is_some_and(|m| !wanted.contains(&m.cert.identity))
            })
            .filter_map(|p| self.since.get(p).map(|t| (*t, *p)))
            .filter(|(t, _)| now.saturating_duration_since(*t) >= TRIM_AFTER)
            .collect();
        // Oldest first: they have had the most time to be replaced.
        candidates.sort();
        for (_, peer) in candidates {
            if surplus == 0 {
                break;
            }
            info!(%peer, "control plane: closing a surplus connection");
            let _ = control.try_disconnect(peer);
            self.since.remove(&peer);
            surplus -= 1;
        }
    }

    /// How many members this node wants as neighbours.
    pub fn wanted(&self) -> usize {
        self.wanted
    }
}

/// The control address of member `m` (control plane on UDP `port`), from
/// its first announced endpoint.
fn address(m: &super::members::Member, port: u16) -> Option<Multiaddr> {
    let endpoint = m.endpoints.first()?;
    let mut address = control_address(*endpoint, port)?;
    address.push(libp2p::multiaddr::Protocol::P2p(m.p2p?));
    Some(address)
}

/// The control-plane address of a member reached at `endpoint`: members
/// listen for the control plane on `port`, the same number everywhere.
pub fn control_address(endpoint: SocketAddr, port: u16) -> Option<Multiaddr> {
    let ip = match endpoint.ip() {
        std::net::IpAddr::V4(v4) => format!("/ip4/{v4}"),
        std::net::IpAddr::V6(v6) => format!("/ip6/{v6}"),
    };
    format!("{ip}/udp/{port}/quic-v1").parse().ok()
}
