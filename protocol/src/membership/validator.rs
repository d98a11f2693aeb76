//! The checks a gossip record passes before the node believes it.
//!
//! [`Validator`] is a small sans-IO state machine: it remembers the last
//! sequence number accepted from each origin for each kind of record (so
//! replays and late old records are refused) and the revocations it has
//! seen (so a revoked certificate cannot announce its way back in). The
//! node feeds it every record that arrives and asks the caller-supplied
//! `members` function who is a current member; the validator never reads
//! the clock, never does I/O and never trusts a record it has not checked
//! in full. The rules and their order are in `docs/protocol.md` §9.6.

use std::collections::HashMap;

use super::encoding::endpoint_problem;
use super::identity::IdentityKey;
use super::network::NetworkInfo;
use super::records::{RecordBody, RecordError, RecordKind, SignedRecord};
use crate::addr::Loopback;

/// Most endpoints an announcement may list (local and server-reflexive).
pub const MAX_ANNOUNCED_ENDPOINTS: usize = 8;
/// Smallest plausible path MTU: IPv4's minimum datagram size (RFC 791).
pub const MIN_PMTU: u16 = 576;
/// Largest plausible path MTU: a jumbo frame.
pub const MAX_PMTU: u16 = 9000;
/// Largest plausible round-trip time, in microseconds (60 s).
pub const MAX_RTT_US: u32 = 60_000_000;
/// How far in the future a measurement time may be: members' clocks
/// disagree by this much at most.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// How old a path measurement may be and still be worth relaying.
pub const MAX_OBSERVATION_AGE_SECS: u64 = 86_400;
/// Shortest plausible NAT mapping lifetime in a record, in ms.
pub const MIN_NAT_LIFETIME_MS: u32 = 1_000;
/// Longest plausible NAT mapping lifetime in a record, in ms.
pub const MAX_NAT_LIFETIME_MS: u32 = 3_600_000;
/// Default bound on the number of origins whose sequence numbers are kept.
pub const DEFAULT_MAX_ORIGINS: usize = 65_536;

/// What is remembered about one origin.
#[derive(Debug, Clone, Copy, Default)]
struct Origin {
    /// The last sequence number accepted, per [`RecordKind`].
    last_seq: [Option<u64>; RecordKind::ALL.len()],
    /// When a record from it was last accepted, to pick whom to forget.
    last_accepted_unix: u64,
}

fn slot(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Announcement => 0,
        RecordKind::PathObservation => 1,
        RecordKind::Revocation => 2,
        RecordKind::NatLifetime => 3,
        RecordKind::AuthoritySet => 4,
    }
}

/// Checks gossip records and remembers what it needs to refuse replays.
///
/// Drive it with [`Validator::validate`] for every record received; at
/// start-up, load the revocations the node has stored with
/// [`Validator::note_revocation`], since a revoked member still holds a
/// certificate that verifies.
#[derive(Debug, Clone)]
pub struct Validator {
    origins: HashMap<IdentityKey, Origin>,
    /// Highest revoked serial per identity.
    revoked: HashMap<IdentityKey, u64>,
    max_origins: usize,
    allow_loopback: bool,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// A validator that remembers up to [`DEFAULT_MAX_ORIGINS`] origins.
    pub fn new() -> Self {
        Self::with_max_origins(DEFAULT_MAX_ORIGINS)
    }

    /// A validator that remembers up to `max_origins` origins (at least
    /// one). When full, it forgets origins that are no longer members, then
    /// the one heard from longest ago; a forgotten origin's old records
    /// would be accepted once more, so the bound should exceed the size of
    /// the network.
    pub fn with_max_origins(max_origins: usize) -> Self {
        Validator {
            origins: HashMap::new(),
            revoked: HashMap::new(),
            max_origins: max_origins.max(1),
            allow_loopback: false,
        }
    }

    /// Accepts loopback endpoints (refused by default: gossiped to another
    /// host, a loopback address points that host at itself). For test
    /// networks on a single host.
    pub fn set_allow_loopback(&mut self, allow: bool) {
        self.allow_loopback = allow;
    }

    /// Checks `bytes` as a record for `network` at `now_unix` and, if it
    /// passes, remembers its sequence number (and, for a revocation, what
    /// it revokes) and returns it. `members` says whether an identity is a
    /// current, unrevoked member. The checks, in order:
    ///
    /// 1. size, version and a canonical encoding;
    /// 2. a sequence number above the last accepted from the origin for
    ///    this kind of record (checked before any signature, so a record
    ///    that could change nothing is cheap to refuse);
    /// 3. the origin's signature;
    /// 4. the origin's right to say it: an announcement's certificate must
    ///    verify, belong to the origin and not be revoked (this is how a new
    ///    member first becomes known, so `members` is not asked); any other
    ///    record needs a member origin, a revocation the authority's
    ///    signature, and an authority chain must verify from the anchor;
    /// 5. plausibility of endpoints, MTU, RTT and times.
    ///
    /// A refused record changes nothing.
    pub fn validate(
        &mut self,
        bytes: &[u8],
        network: &NetworkInfo,
        members: &dyn Fn(&IdentityKey) -> bool,
        now_unix: u64,
    ) -> Result<SignedRecord, RecordError> {
        let record = SignedRecord::from_bytes(bytes)?;
        // Before any signature: a record that could change nothing (a late
        // copy, one pushed again to a newly connected member) costs no
        // signature check.
        let slot = slot(record.body.kind());
        if let Some(last) = self.last_seq(&record.origin, record.body.kind()) {
            if record.seq <= last {
                return Err(RecordError::StaleSequence {
                    last,
                    got: record.seq,
                });
            }
        }
        record.verify_signature()?;
        self.authorize(&record, network, members, now_unix)?;
        self.check_plausible(&record, now_unix)?;

        if !self.origins.contains_key(&record.origin) && self.origins.len() >= self.max_origins {
            self.make_room(members);
        }
        let origin = self.origins.entry(record.origin).or_default();
        origin.last_seq[slot] = Some(record.seq);
        origin.last_accepted_unix = now_unix;
        if let RecordBody::Revocation(r) = &record.body {
            self.note_revocation(r.identity, r.serial);
        }
        Ok(record)
    }

    fn authorize(
        &self,
        record: &SignedRecord,
        network: &NetworkInfo,
        members: &dyn Fn(&IdentityKey) -> bool,
        now_unix: u64,
    ) -> Result<(), RecordError> {
        match &record.body {
            RecordBody::Announcement(a) => {
                let cert = a
                    .certificate
                    .verify(network, now_unix)
                    .map_err(RecordError::BadCertificate)?;
                if cert.identity != record.origin {
                    return Err(RecordError::CertificateMismatch);
                }
                if self.is_revoked(&cert.identity, cert.serial) {
                    return Err(RecordError::Revoked {
                        serial: cert.serial,
                    });
                }
            }
            RecordBody::PathObservation(_) | RecordBody::NatLifetime(_) => {
                if !members(&record.origin) {
                    return Err(RecordError::NotAMember);
                }
            }
            RecordBody::Revocation(r) => {
                if !members(&record.origin) {
                    return Err(RecordError::NotAMember);
                }
                r.verify(network).map_err(|_| RecordError::BadRevocation)?;
            }
            // The chain proves itself from the anchor; whether it replaces
            // the one the node holds is the node's question
            // (`Authorities::compare`).
            RecordBody::AuthoritySet(chain) => {
                if !members(&record.origin) {
                    return Err(RecordError::NotAMember);
                }
                chain
                    .verify(network.id(), network.authority())
                    .map_err(RecordError::BadAuthoritySet)?;
            }
        }
        Ok(())
    }

    fn check_plausible(&self, record: &SignedRecord, now_unix: u64) -> Result<(), RecordError> {
        let loopback = if self.allow_loopback {
            Loopback::Allowed
        } else {
            Loopback::Refused
        };
        let endpoint_ok = |e| match endpoint_problem(e, loopback) {
            Some(problem) => Err(RecordError::Implausible(problem)),
            None => Ok(()),
        };
        match &record.body {
            RecordBody::Announcement(a) => {
                if a.endpoints.len() > MAX_ANNOUNCED_ENDPOINTS {
                    return Err(RecordError::Implausible("more than 8 endpoints"));
                }
                a.endpoints.iter().try_for_each(endpoint_ok)?;
            }
            RecordBody::PathObservation(p) => {
                if p.to == record.origin {
                    return Err(RecordError::Implausible("path to the origin itself"));
                }
                endpoint_ok(&p.endpoint)?;
                if !(MIN_PMTU..=MAX_PMTU).contains(&p.pmtu) {
                    return Err(RecordError::Implausible("path MTU outside 576..=9000"));
                }
                if p.rtt_us > MAX_RTT_US {
                    return Err(RecordError::Implausible("round-trip time above 60 s"));
                }
                if p.measured_unix > now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) {
                    return Err(RecordError::Implausible("measured in the future"));
                }
                if p.measured_unix.saturating_add(MAX_OBSERVATION_AGE_SECS) < now_unix {
                    return Err(RecordError::Implausible("measured more than a day ago"));
                }
            }
            RecordBody::NatLifetime(n) => {
                endpoint_ok(&n.public)?;
                if !(MIN_NAT_LIFETIME_MS..=MAX_NAT_LIFETIME_MS).contains(&n.lifetime_ms) {
                    return Err(RecordError::Implausible("NAT lifetime outside 1 s..=1 h"));
                }
                if n.measured_unix > now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) {
                    return Err(RecordError::Implausible("measured in the future"));
                }
                if n.measured_unix.saturating_add(MAX_OBSERVATION_AGE_SECS) < now_unix {
                    return Err(RecordError::Implausible("measured more than a day ago"));
                }
            }
            // Its authority signature is what matters; its time is the
            // authority's clock and is not second-guessed.
            RecordBody::Revocation(_) => {}
            // Signed from the anchor on; its times are its signers'.
            RecordBody::AuthoritySet(_) => {}
        }
        Ok(())
    }

    /// Forgets non-members, or failing that the origin heard from longest
    /// ago, to make room for one more.
    fn make_room(&mut self, members: &dyn Fn(&IdentityKey) -> bool) {
        self.origins.retain(|k, _| members(k));
        if self.origins.len() < self.max_origins {
            return;
        }
        let oldest = self
            .origins
            .iter()
            .min_by_key(|(k, o)| (o.last_accepted_unix, **k))
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.origins.remove(&k);
        }
    }

    /// Records that `identity`'s certificates up to `serial` are revoked
    /// (a stored revocation, at start-up). Announcements of such
    /// certificates are refused from then on.
    pub fn note_revocation(&mut self, identity: IdentityKey, serial: u64) {
        let s = self.revoked.entry(identity).or_insert(serial);
        *s = (*s).max(serial);
    }

    /// Whether `identity`'s certificate with `serial` has been revoked.
    pub fn is_revoked(&self, identity: &IdentityKey, serial: u64) -> bool {
        self.revoked.get(identity).is_some_and(|s| serial <= *s)
    }

    /// The last sequence number accepted from `origin` for `kind`.
    pub fn last_seq(&self, origin: &IdentityKey, kind: RecordKind) -> Option<u64> {
        self.origins
            .get(origin)
            .and_then(|o| o.last_seq[slot(kind)])
    }

    /// How many origins are remembered.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }
}

#[cfg(test)]
mod tests;
