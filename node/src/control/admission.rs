//! Who may stay connected: the membership state of every connected peer,
//! as a small sans-IO table driven by the event loop.
//!
//! A peer is *pending* from its first connection until it presents a
//! credential the gate accepts (it becomes a *member*) or one the gate
//! refuses, or until [`CREDENTIAL_TIMEOUT`](super::api::CREDENTIAL_TIMEOUT)
//! passes without one (it becomes *rejected*). A refused credential blocks
//! the peer for long; silence only holds it off briefly, because an honest
//! member on a saturated host can be slow, and a long block would keep two
//! members apart long after the load is gone.
//! A member is *announced* to the caller once it has also joined the records
//! topic, so that a publish from then on reaches it. The table never calls
//! the gate, reads the clock or touches the swarm: the loop passes `now` and
//! the gate's verdict in, and carries out what the returned values say.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Most peers blocked at once. Anyone can make new PeerIds; past this, the
/// block that ends soonest is lifted early, so the table never grows with
/// an attacker's identities.
pub(super) const MAX_BLOCKED: usize = 4096;

/// Membership state of the connected peers and the blocked ones.
#[derive(Debug)]
pub(super) struct Admission {
    peers: HashMap<PeerId, Peer>,
    /// Rejected peers and when their block ends; at most [`MAX_BLOCKED`].
    blocked: HashMap<PeerId, Instant>,
    /// Blocks lifted early to make room, for the caller to lift in the swarm.
    evicted: Vec<PeerId>,
    credential_timeout: Duration,
    /// How long a peer whose credential the gate refused stays blocked.
    block_duration: Duration,
    /// How long a peer that presented nothing in time stays blocked.
    silent_block: Duration,
}

#[derive(Debug)]
struct Peer {
    state: State,
    /// It has joined the records topic.
    subscribed: bool,
    /// The caller was told it is a member (and so must hear when it leaves).
    announced: bool,
}

#[derive(Debug)]
enum State {
    Pending {
        deadline: Instant,
    },
    /// Presented a credential that may only be renewed: it may ask for a
    /// renewal and present the renewed one until `deadline`, then it is
    /// disconnected without a block.
    RenewalOnly {
        deadline: Instant,
    },
    Member {
        credential: Vec<u8>,
    },
    Rejected,
}

/// What a presented credential changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Presented {
    /// The peer became a member; `announce` holds the credential to report
    /// if it is also ready to hear records.
    Admitted { announce: Option<Vec<u8>> },
    /// A member presented a different, accepted credential.
    Renewed { announce: Option<Vec<u8>> },
    /// A member presented the credential it had already presented.
    Unchanged,
    /// The gate refused it: disconnect and block the peer.
    Rejected,
    /// The peer is not connected, or was already rejected.
    Ignored,
}

/// Deadlines that passed, returned by [`Admission::handle_timeout`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Expired {
    /// Pending peers that presented no credential in time: disconnect them
    /// (they are blocked for the short silent-peer block).
    pub(super) silent: Vec<PeerId>,
    /// Rejected peers whose block ended.
    pub(super) unblocked: Vec<PeerId>,
    /// Peers allowed only to renew whose time ran out: disconnect them,
    /// without a block (they come back once renewed).
    pub(super) lapsed: Vec<PeerId>,
}

impl Admission {
    pub(super) fn new(
        credential_timeout: Duration,
        block_duration: Duration,
        silent_block: Duration,
    ) -> Self {
        Self {
            peers: HashMap::new(),
            blocked: HashMap::new(),
            evicted: Vec::new(),
            credential_timeout,
            block_duration,
            silent_block,
        }
    }

    /// The first connection to `peer` is up: it has until
    /// `now + credential_timeout` to present a credential.
    pub(super) fn handle_connected(&mut self, peer: PeerId, now: Instant) {
        self.peers.insert(
            peer,
            Peer {
                state: State::Pending {
                    deadline: now + self.credential_timeout,
                },
                subscribed: false,
                announced: false,
            },
        );
    }

    /// `peer` presented `credential`, which the gate judged `accepted`.
    pub(super) fn handle_credential(
        &mut self,
        peer: PeerId,
        credential: &[u8],
        accepted: bool,
        now: Instant,
    ) -> Presented {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return Presented::Ignored;
        };
        let outcome = match (&entry.state, accepted) {
            (State::Rejected, _) => return Presented::Ignored,
            (State::Member { credential: known }, true) if known == credential => {
                return Presented::Unchanged
            }
            (_, false) => Presented::Rejected,
            (State::Pending { .. } | State::RenewalOnly { .. }, true) => {
                Presented::Admitted { announce: None }
            }
            (State::Member { .. }, true) => Presented::Renewed { announce: None },
        };
        if outcome == Presented::Rejected {
            self.reject(peer, now);
            return outcome;
        }
        entry.state = State::Member {
            credential: credential.to_vec(),
        };
        let announce = entry.subscribed.then(|| {
            entry.announced = true;
            credential.to_vec()
        });
        match outcome {
            Presented::Admitted { .. } => Presented::Admitted { announce },
            _ => Presented::Renewed { announce },
        }
    }

    /// A pending `peer` presented a credential that may only be renewed: it
    /// keeps its deadline, and meets it without a block. Returns whether
    /// it was pending.
    pub(super) fn handle_renewal_only(&mut self, peer: PeerId) -> bool {
        match self.peers.get_mut(&peer) {
            Some(entry) => match entry.state {
                State::Pending { deadline } | State::RenewalOnly { deadline } => {
                    entry.state = State::RenewalOnly { deadline };
                    true
                }
                _ => false,
            },
            None => false,
        }
    }

    /// `peer` joined the records topic. Returns its credential if this makes
    /// it an announced member.
    pub(super) fn handle_subscribed(&mut self, peer: PeerId) -> Option<Vec<u8>> {
        let entry = self.peers.get_mut(&peer)?;
        entry.subscribed = true;
        match &entry.state {
            State::Member { credential } if !entry.announced => {
                entry.announced = true;
                Some(credential.clone())
            }
            _ => None,
        }
    }

    /// The last connection to `peer` closed. Returns whether it had been
    /// announced, so the caller hears that it left.
    pub(super) fn handle_closed(&mut self, peer: &PeerId) -> bool {
        self.peers.remove(peer).is_some_and(|p| p.announced)
    }

    /// Marks `peer` rejected and blocked until `now + block_duration`.
    /// Returns whether it was connected and not already rejected.
    pub(super) fn reject(&mut self, peer: PeerId, now: Instant) -> bool {
        self.reject_for(peer, now + self.block_duration)
    }

    /// Marks `peer` rejected and blocked until `until` (a longer block
    /// already in force stays).
    fn reject_for(&mut self, peer: PeerId, until: Instant) -> bool {
        if self.blocked.len() >= MAX_BLOCKED && !self.blocked.contains_key(&peer) {
            let soonest = self.blocked.iter().min_by_key(|(_, end)| **end);
            if let Some((&early, _)) = soonest {
                self.blocked.remove(&early);
                self.evicted.push(early);
            }
        }
        let end = self.blocked.entry(peer).or_insert(until);
        *end = (*end).max(until);
        match self.peers.get_mut(&peer) {
            Some(entry) if !matches!(entry.state, State::Rejected) => {
                entry.state = State::Rejected;
                true
            }
            _ => false,
        }
    }

    /// Blocks lifted early to make room since the last call: unblock them.
    pub(super) fn take_evicted(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.evicted)
    }

    /// Fires the deadlines that passed by `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Expired {
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state, State::Pending { deadline } if deadline <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &silent {
            self.reject_for(*peer, now + self.silent_block);
        }
        let lapsed: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state, State::RenewalOnly { deadline } if deadline <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &lapsed {
            if let Some(entry) = self.peers.get_mut(peer) {
                entry.state = State::Rejected;
            }
        }
        let unblocked: Vec<PeerId> = self
            .blocked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &unblocked {
            self.blocked.remove(peer);
        }
        Expired {
            silent,
            unblocked,
            lapsed,
        }
    }

    /// The earliest deadline still to fire.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        let pending = self.peers.values().filter_map(|p| match p.state {
            State::Pending { deadline } | State::RenewalOnly { deadline } => Some(deadline),
            _ => None,
        });
        pending.chain(self.blocked.values().copied()).min()
    }

    /// Whether `peer` passed the gate and is still connected.
    pub(super) fn is_member(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| matches!(p.state, State::Member { .. }))
    }

    /// Whether `peer` is connected and has not presented an accepted or
    /// refused credential yet (or only one that may be renewed).
    pub(super) fn is_pending(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| matches!(p.state, State::Pending { .. } | State::RenewalOnly { .. }))
    }

    /// The connected members.
    pub(super) fn members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(p.state, State::Member { .. }))
            .map(|(peer, _)| *peer)
    }

    /// The connected peers that are not rejected: those our credential is
    /// presented to when it changes.
    pub(super) fn not_rejected(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| !matches!(p.state, State::Rejected))
            .map(|(peer, _)| *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);
    const BLOCK: Duration = Duration::from_secs(600);
    const SILENT_BLOCK: Duration = Duration::from_secs(15);

    fn setup() -> (Admission, PeerId, Instant) {
        (
            Admission::new(TIMEOUT, BLOCK, SILENT_BLOCK),
            PeerId::random(),
            Instant::now(),
        )
    }

    #[test]
    fn a_member_is_announced_once_admitted_and_subscribed_in_either_order() {
        let (mut table, peer, now) = setup();
        table.handle_connected(peer, now);
        assert_eq!(
            table.handle_credential(peer, b"member", true, now),
            Presented::Admitted { announce: None }
        );
        assert_eq!(table.handle_subscribed(peer), Some(b"member".to_vec()));
        assert_eq!(table.handle_subscribed(peer), None);

        let other = PeerId::random();
        table.handle_connected(other, now);
        assert_eq!(table.handle_subscribed(other), None);
        assert_eq!(
            table.handle_credential(other, b"member", true, now),
            Presented::Admitted {
                announce: Some(b"member".to_vec())
            }
        );
        assert!(table.is_member(&peer) && table.is_member(&other));
    }

    #[test]
    fn a_refused_credential_rejects_and_blocks_until_the_block_ends() {
        let (mut table, peer, now) = setup();
        table.handle_connected(peer, now);
        assert_eq!(
            table.handle_credential(peer, b"intruder", false, now),
            Presented::Rejected
        );
        assert!(!table.is_member(&peer));
        assert_eq!(
            table.handle_credential(peer, b"member", true, now),
            Presented::Ignored
        );
        assert_eq!(table.next_timeout(), Some(now + BLOCK));
        assert_eq!(
            table.handle_timeout(now + BLOCK - Duration::from_millis(1)),
            Expired::default()
        );
        assert_eq!(
            table.handle_timeout(now + BLOCK),
            Expired {
                silent: vec![],
                unblocked: vec![peer],
                lapsed: vec![],
            }
        );
    }

    #[test]
    fn a_silent_peer_is_rejected_at_its_deadline_and_held_off_only_briefly() {
        let (mut table, peer, now) = setup();
        table.handle_connected(peer, now);
        assert_eq!(table.next_timeout(), Some(now + TIMEOUT));
        assert_eq!(
            table.handle_timeout(now + TIMEOUT - Duration::from_millis(1)),
            Expired::default()
        );
        let expired = table.handle_timeout(now + TIMEOUT);
        assert_eq!(expired.silent, vec![peer]);
        assert_eq!(table.next_timeout(), Some(now + TIMEOUT + SILENT_BLOCK));
        assert!(
            !table.handle_closed(&peer),
            "never announced, so no departure"
        );
    }

    #[test]
    fn a_member_presenting_again_is_unchanged_renewed_or_rejected() {
        let (mut table, peer, now) = setup();
        table.handle_connected(peer, now);
        table.handle_subscribed(peer);
        table.handle_credential(peer, b"v1", true, now);
        assert_eq!(
            table.handle_credential(peer, b"v1", true, now),
            Presented::Unchanged
        );
        assert_eq!(
            table.handle_credential(peer, b"v2", true, now),
            Presented::Renewed {
                announce: Some(b"v2".to_vec())
            }
        );
        assert_eq!(
            table.handle_credential(peer, b"v3", false, now),
            Presented::Rejected
        );
        assert!(table.handle_closed(&peer), "it had been announced");
    }

    #[test]
    fn a_credential_from_an_unknown_peer_is_ignored() {
        let (mut table, peer, now) = setup();
        assert_eq!(
            table.handle_credential(peer, b"member", true, now),
            Presented::Ignored
        );
        assert_eq!(table.members().count(), 0);
    }

    #[test]
    fn a_peer_that_may_only_renew_stays_pending_then_leaves_without_a_block_or_is_admitted() {
        let (mut a, peer, t0) = setup();
        a.handle_connected(peer, t0);
        assert!(a.handle_renewal_only(peer));
        assert!(a.is_pending(&peer) && !a.is_member(&peer));
        // Its deadline passes: disconnected, not blocked.
        let expired = a.handle_timeout(t0 + TIMEOUT);
        assert_eq!(expired.lapsed, vec![peer]);
        assert!(expired.silent.is_empty());
        assert_eq!(a.next_timeout(), None);
        // Another time it renews in time: the renewed credential admits it.
        let (mut a, peer, t0) = setup();
        a.handle_connected(peer, t0);
        a.handle_renewal_only(peer);
        assert_eq!(
            a.handle_credential(peer, b"renewed", true, t0 + Duration::from_secs(1)),
            Presented::Admitted { announce: None }
        );
        assert!(a.is_member(&peer));
    }

    #[test]
    fn the_block_table_stays_bounded_whatever_the_number_of_identities() {
        let (mut table, first, now) = setup();
        table.reject(first, now);
        for i in 1..MAX_BLOCKED + 100 {
            let peer = PeerId::random();
            table.reject(peer, now + Duration::from_millis(i as u64));
        }
        assert_eq!(table.blocked.len(), MAX_BLOCKED);
        let evicted = table.take_evicted();
        assert_eq!(evicted.len(), 100);
        assert_eq!(evicted[0], first, "the block that ends soonest goes first");
        assert!(table.take_evicted().is_empty());
    }
}
