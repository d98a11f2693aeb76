//! Gossip records: what members tell each other, signed by whoever says it.
//!
//! A [`SignedRecord`] is an origin's identity, its sequence number, a
//! [`RecordBody`] and the origin's signature over the three. Its encoding
//! is a version byte (1) and the postcard encoding of the record, in
//! canonical form only, so a record has exactly one byte representation.
//! This module encodes, decodes and checks signatures; whether a record is
//! believed (membership, sequence, plausibility) is the
//! [`Validator`](super::Validator)'s business. It never reads the clock.

use core::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::authority_set::{AuthorityChain, SetError, MAX_CHAIN_LEN};
use super::cert::{CertError, Certificate, SignedCertificate};
use super::encoding::{decode_canonical, encode, SIGNATURE_LEN};
use super::identity::{Hex, IdentityKey, IdentitySecret, SignatureError, SigningContext};
use super::network::{NetworkId, NetworkInfo, NETWORK_ID_LEN};

/// Version byte that starts every encoded record.
pub const RECORD_VERSION: u8 = 1;
/// Longest encoded record accepted, except one carrying the authority
/// chain.
pub const MAX_RECORD_LEN: usize = 4096;
/// Longest encoded record carrying the authority chain
/// ([`RecordBody::AuthoritySet`]): the chain's own limit and room for the
/// record around it.
pub const MAX_AUTHORITY_RECORD_LEN: usize = MAX_CHAIN_LEN + 256;

/// A record as its origin signed it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// Who says it.
    pub origin: IdentityKey,
    /// The origin's sequence number: higher is newer.
    pub seq: u64,
    /// What it says.
    pub body: RecordBody,
    /// The origin's signature, in the `"record"` context, of `origin` (32
    /// bytes) ‖ `seq` (8 bytes, little endian) ‖ the postcard encoding of
    /// `body`.
    #[serde(with = "super::encoding::sig64")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("origin", &self.origin)
            .field("seq", &self.seq)
            .field("body", &self.body)
            .field(
                "signature",
                &format_args!("{:x}…", Hex(&self.signature[..4])),
            )
            .finish()
    }
}

impl SignedRecord {
    /// Signs `body` as `secret`'s identity with sequence number `seq`.
    pub fn sign(secret: &IdentitySecret, seq: u64, body: RecordBody) -> Self {
        let origin = secret.identity();
        let signature = secret.sign(
            SigningContext::Record,
            &Self::signed_bytes(&origin, seq, &body),
        );
        SignedRecord {
            origin,
            seq,
            body,
            signature,
        }
    }

    /// What the signature covers (after the context prefix). Fixed-width
    /// fields first, so the body needs no length.
    fn signed_bytes(origin: &IdentityKey, seq: u64, body: &RecordBody) -> Vec<u8> {
        let body = encode(body);
        let mut m = Vec::with_capacity(32 + 8 + body.len());
        m.extend_from_slice(origin.as_bytes());
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&body);
        m
    }

    /// Checks the origin's signature. Says nothing about whether the
    /// origin may say this: see [`Validator`](super::Validator).
    pub fn verify_signature(&self) -> Result<(), RecordError> {
        self.origin
            .verify(
                SigningContext::Record,
                &Self::signed_bytes(&self.origin, self.seq, &self.body),
                &self.signature,
            )
            .map_err(|_| RecordError::BadSignature)
    }

    /// The encoding for gossip: the version byte, then postcard of the
    /// record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        out.extend_from_slice(&encode(self));
        out
    }

    /// Decodes what [`SignedRecord::to_bytes`] wrote: size, version and a
    /// canonical encoding. Checks no signature.
    pub fn from_bytes(data: &[u8]) -> Result<Self, RecordError> {
        if data.len() > MAX_AUTHORITY_RECORD_LEN {
            return Err(RecordError::TooLarge { len: data.len() });
        }
        let (&version, rest) = data.split_first().ok_or(RecordError::Malformed)?;
        if version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(version));
        }
        let record: SignedRecord = decode_canonical(rest).ok_or(RecordError::Malformed)?;
        // Only the authority chain may be long.
        if data.len() > MAX_RECORD_LEN && !matches!(record.body, RecordBody::AuthoritySet(_)) {
            return Err(RecordError::TooLarge { len: data.len() });
        }
        Ok(record)
    }
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordBody {
    /// "I am a member, here is my certificate, reach me here."
    Announcement(Announcement),
    /// "I reached this member at this endpoint, with this path MTU and RTT."
    PathObservation(PathObservation),
    /// "The authority revoked this member": relayed by any member.
    Revocation(Revocation),
    /// "Behind this public address, idle NAT mappings live this long."
    NatLifetime(NatLifetime),
    /// "These keys may sign certificates": the network's authority chain,
    /// which proves itself from the anchor; relayed by any member.
    AuthoritySet(AuthorityChain),
}

impl RecordBody {
    /// Which kind of record this is.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordBody::Announcement(_) => RecordKind::Announcement,
            RecordBody::PathObservation(_) => RecordKind::PathObservation,
            RecordBody::Revocation(_) => RecordKind::Revocation,
            RecordBody::NatLifetime(_) => RecordKind::NatLifetime,
            RecordBody::AuthoritySet(_) => RecordKind::AuthoritySet,
        }
    }
}

/// The kinds of [`RecordBody`], for counting and for per-kind sequence
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// [`RecordBody::Announcement`].
    Announcement,
    /// [`RecordBody::PathObservation`].
    PathObservation,
    /// [`RecordBody::Revocation`].
    Revocation,
    /// [`RecordBody::NatLifetime`].
    NatLifetime,
    /// [`RecordBody::AuthoritySet`].
    AuthoritySet,
}

impl RecordKind {
    /// Every kind, in discriminant order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Announcement,
        RecordKind::PathObservation,
        RecordKind::Revocation,
        RecordKind::NatLifetime,
        RecordKind::AuthoritySet,
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Announcement => "announcement",
            RecordKind::PathObservation => "path_observation",
            RecordKind::Revocation => "revocation",
            RecordKind::NatLifetime => "nat",
            RecordKind::AuthoritySet => "authority_set",
        }
    }
}

/// A member's certificate and the endpoints it can be reached at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The origin's certificate; its identity must be the origin.
    pub certificate: SignedCertificate,
    /// Local and server-reflexive endpoints, at most
    /// [`MAX_ANNOUNCED_ENDPOINTS`](super::validator::MAX_ANNOUNCED_ENDPOINTS).
    pub endpoints: Vec<SocketAddr>,
}

/// A measurement of the path from the origin to another member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathObservation {
    /// The member at the other end.
    pub to: IdentityKey,
    /// The endpoint of `to` the measurement used.
    pub endpoint: SocketAddr,
    /// The path MTU (outer IP packet size) discovered.
    pub pmtu: u16,
    /// The smoothed round-trip time, in microseconds.
    pub rtt_us: u32,
    /// When it was measured (unix time).
    pub measured_unix: u64,
}

/// A NAT mapping lifetime the origin measured behind a public address, so
/// members behind the same address start their keepalives from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatLifetime {
    /// The origin's reflexive endpoint (members compare its address).
    pub public: SocketAddr,
    /// The longest idle time a mapping was proven to survive, in ms.
    pub lifetime_ms: u32,
    /// When it was measured (unix time).
    pub measured_unix: u64,
}

/// The authority's revocation of a member's certificates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The member whose certificates are revoked.
    pub identity: IdentityKey,
    /// Certificates of `identity` with this serial or a lower one are
    /// revoked.
    pub serial: u64,
    /// When the authority revoked it (unix time).
    pub revoked_unix: u64,
    /// The authority's signature, in the `"revocation"` context, of the
    /// network id (16 bytes) ‖ `identity` (32) ‖ `serial` (8, little
    /// endian) ‖ `revoked_unix` (8, little endian).
    #[serde(with = "super::encoding::sig64")]
    pub authority_signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("identity", &self.identity)
            .field("serial", &self.serial)
            .field("revoked_unix", &self.revoked_unix)
            .field(
                "authority_signature",
                &format_args!("{:x}…", Hex(&self.authority_signature[..4])),
            )
            .finish()
    }
}

impl Revocation {
    /// The authority revokes `identity`'s certificates up to `serial` in
    /// `network`. (Also [`Authority::revoke`](super::Authority::revoke).)
    pub fn sign(
        network: &NetworkId,
        identity: IdentityKey,
        serial: u64,
        revoked_unix: u64,
        authority: &IdentitySecret,
    ) -> Self {
        let authority_signature = authority.sign(
            SigningContext::Revocation,
            &Self::signed_bytes(network, &identity, serial, revoked_unix),
        );
        Revocation {
            identity,
            serial,
            revoked_unix,
            authority_signature,
        }
    }

    fn signed_bytes(
        network: &NetworkId,
        identity: &IdentityKey,
        serial: u64,
        revoked_unix: u64,
    ) -> [u8; NETWORK_ID_LEN + 32 + 8 + 8] {
        let mut m = [0u8; NETWORK_ID_LEN + 32 + 8 + 8];
        m[..16].copy_from_slice(network.as_bytes());
        m[16..48].copy_from_slice(identity.as_bytes());
        m[48..56].copy_from_slice(&serial.to_le_bytes());
        m[56..].copy_from_slice(&revoked_unix.to_le_bytes());
        m
    }

    /// Checks that one of `network`'s authority keys made this revocation
    /// for it; a retired key's only if it is dated before the key left.
    pub fn verify(&self, network: &NetworkInfo) -> Result<(), SignatureError> {
        let issuer = network
            .issuer_of(
                SigningContext::Revocation,
                &Self::signed_bytes(network.id(), &self.identity, self.serial, self.revoked_unix),
                &self.authority_signature,
            )
            .ok_or(SignatureError::Mismatch)?;
        match issuer.retired_unix {
            Some(retired) if self.revoked_unix > retired => Err(SignatureError::Mismatch),
            _ => Ok(()),
        }
    }

    /// Whether this revocation covers `cert`.
    pub fn revokes(&self, cert: &Certificate) -> bool {
        cert.identity == self.identity && cert.serial <= self.serial
    }
}

/// Why a gossip record was refused. Each reason has a stable name
/// ([`RecordError::as_str`]) so the node can count refusals by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record is longer than [`MAX_RECORD_LEN`].
    #[error("record is too large ({len} bytes)")]
    TooLarge {
        /// Length received.
        len: usize,
    },
    /// The record starts with a version byte this node does not know.
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u8),
    /// The bytes do not decode as a record (in canonical form).
    #[error("record does not decode")]
    Malformed,
    /// The signature is not the origin's.
    #[error("record signature does not verify")]
    BadSignature,
    /// The origin is not a current member, and the record is not an
    /// announcement that proves membership with its certificate.
    #[error("record origin is not a member")]
    NotAMember,
    /// An announcement's certificate does not verify.
    #[error("announced certificate refused: {0}")]
    BadCertificate(CertError),
    /// An announcement's certificate belongs to another identity than the
    /// origin.
    #[error("announced certificate is not the origin's")]
    CertificateMismatch,
    /// An announcement's certificate has been revoked.
    #[error("announced certificate (serial {serial}) is revoked")]
    Revoked {
        /// The certificate's serial.
        serial: u64,
    },
    /// A revocation is not signed by the network authority.
    #[error("revocation is not signed by the network authority")]
    BadRevocation,
    /// An authority chain does not verify from the network's anchor
    /// (forged, unchained, or for another network).
    #[error("authority set refused: {0}")]
    BadAuthoritySet(SetError),
    /// The sequence number is not above the last one accepted from this
    /// origin for this kind of record: a replay, or an old record late.
    #[error("stale sequence number {got} (last accepted {last})")]
    StaleSequence {
        /// The last accepted.
        last: u64,
        /// The one received.
        got: u64,
    },
    /// The contents cannot be right (an endpoint no one can send to, an
    /// MTU or time out of range); the text says which.
    #[error("implausible record: {0}")]
    Implausible(&'static str),
}

impl RecordError {
    /// Every name [`RecordError::as_str`] returns, so counters can be
    /// created up front.
    pub const REASONS: [&'static str; 12] = [
        "too_large",
        "unsupported_version",
        "malformed",
        "bad_signature",
        "not_a_member",
        "bad_certificate",
        "certificate_mismatch",
        "revoked",
        "bad_revocation",
        "bad_authority_set",
        "stale_sequence",
        "implausible",
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordError::TooLarge { .. } => "too_large",
            RecordError::UnsupportedVersion(_) => "unsupported_version",
            RecordError::Malformed => "malformed",
            RecordError::BadSignature => "bad_signature",
            RecordError::NotAMember => "not_a_member",
            RecordError::BadCertificate(_) => "bad_certificate",
            RecordError::CertificateMismatch => "certificate_mismatch",
            RecordError::Revoked { .. } => "revoked",
            RecordError::BadRevocation => "bad_revocation",
            RecordError::BadAuthoritySet(_) => "bad_authority_set",
            RecordError::StaleSequence { .. } => "stale_sequence",
            RecordError::Implausible(_) => "implausible",
        }
    }
}

#[cfg(test)]
mod tests;
