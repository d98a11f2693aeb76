//! Certificate renewal: the two messages a member and an authority holder
//! exchange on the control plane, the holder's rules for answering, and the
//! member's schedule for asking.
//!
//! A member asks with the certificate it has ([`RenewalRequest`]), over a
//! connection that already proved its identity; the holder checks that the
//! certificate is its own, was signed by a trusted key, is not revoked and
//! has not been expired for longer than [`RENEWAL_GRACE_SECS`], and answers
//! with a new certificate that keeps identity, Noise key, name and
//! addresses ([`renewed_certificate`]). A member renews when a third of
//! its certificate's lifetime remains, a little earlier by a random
//! fraction so a fleet spread out ([`renew_at`]), and retries failures with
//! capped exponential backoff ([`retry_delay`]).
//!
//! This module formats and decides; it never reads the clock (times are
//! `now_unix` arguments), never signs (the holder's `Authority` does), and
//! nothing in it panics on input from the network.

use serde::{Deserialize, Serialize};

use super::cert::{CertError, Certificate, SignedCertificate};
use super::encoding::{decode_versioned, encode_versioned};
use super::identity::IdentityKey;
use super::network::NetworkInfo;

/// Version byte that starts both messages.
pub const RENEWAL_VERSION: u8 = 1;
/// Longest encoded message accepted (a certificate and a little framing).
pub const MAX_RENEWAL_MESSAGE_LEN: usize = 1536;
/// How long after its expiry a certificate may still be renewed: a member
/// that was switched off for a month comes back on its own. Revocation,
/// not expiry, is how a member is kept out.
pub const RENEWAL_GRACE_SECS: u64 = 30 * 24 * 3600;
/// First retry after a failed renewal, at most (shorter for short
/// lifetimes: a sixtieth of the lifetime).
pub const RETRY_BASE_SECS: u64 = 5;
/// Longest wait between two attempts.
pub const RETRY_CAP_SECS: u64 = 600;

/// "Renew this certificate of mine."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalRequest {
    /// The requester's current certificate (it may have expired).
    pub certificate: SignedCertificate,
}

/// The holder's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenewalResponse {
    /// The new certificate.
    Renewed(SignedCertificate),
    /// Why not.
    Refused(RenewalRefusal),
}

/// Why a holder refused to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RenewalRefusal {
    /// The node asked holds no authority key.
    #[error("this member holds no authority key")]
    NotAnAuthority,
    /// The request did not decode.
    #[error("the renewal request does not decode")]
    Malformed,
    /// The certificate is not one a trusted key signed for this network.
    #[error("the certificate is not a member certificate of this network")]
    NotAMember,
    /// The certificate is another member's, not the requester's.
    #[error("the certificate belongs to another member")]
    WrongIdentity,
    /// The member has been revoked.
    #[error("the member has been revoked")]
    Revoked,
    /// The certificate expired longer than [`RENEWAL_GRACE_SECS`] ago.
    #[error("the certificate expired too long ago to be renewed")]
    ExpiredTooLong,
    /// The holder is answering as many renewals as it will at once.
    #[error("the authority is busy; try another or later")]
    Busy,
    /// The holder could not store or sign the new certificate.
    #[error("the authority failed to issue the certificate")]
    Failed,
}

impl RenewalRefusal {
    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            RenewalRefusal::NotAnAuthority => "not_an_authority",
            RenewalRefusal::Malformed => "malformed",
            RenewalRefusal::NotAMember => "not_a_member",
            RenewalRefusal::WrongIdentity => "wrong_identity",
            RenewalRefusal::Revoked => "revoked",
            RenewalRefusal::ExpiredTooLong => "expired_too_long",
            RenewalRefusal::Busy => "busy",
            RenewalRefusal::Failed => "failed",
        }
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    encode_versioned(RENEWAL_VERSION, value)
}

fn from_bytes<T>(data: &[u8]) -> Option<T>
where
    T: for<'a> Deserialize<'a> + Serialize,
{
    decode_versioned(RENEWAL_VERSION, MAX_RENEWAL_MESSAGE_LEN, data)
}

impl RenewalRequest {
    /// A version byte, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }

    /// Decodes what [`RenewalRequest::to_bytes`] wrote; `None` for
    /// anything else (too long, another version, not canonical).
    pub fn from_bytes(data: &[u8]) -> Option<Self> {
        from_bytes(data)
    }

    /// The holder's checks, for a request that arrived on a connection
    /// authenticated as `requester`: the certificate verifies for
    /// `network` apart from its validity period, names `requester`, is not
    /// revoked (`revoked` says whether an identity is) and expired at most
    /// [`RENEWAL_GRACE_SECS`] before `now_unix`. Returns the certificate to
    /// renew.
    pub fn check(
        &self,
        requester: &IdentityKey,
        network: &NetworkInfo,
        revoked: &dyn Fn(&IdentityKey) -> bool,
        now_unix: u64,
    ) -> Result<Certificate, RenewalRefusal> {
        let cert = self
            .certificate
            .verify_signed(network)
            .map_err(|_| RenewalRefusal::NotAMember)?;
        // Names, addresses and the network are checked as for any
        // certificate; only the validity period is the grace's business.
        match cert.check(network, now_unix) {
            Ok(()) | Err(CertError::Expired { .. }) | Err(CertError::NotYetValid { .. }) => {}
            Err(_) => return Err(RenewalRefusal::NotAMember),
        }
        if cert.identity != *requester {
            return Err(RenewalRefusal::WrongIdentity);
        }
        if revoked(&cert.identity) {
            return Err(RenewalRefusal::Revoked);
        }
        if cert.not_after.saturating_add(RENEWAL_GRACE_SECS) < now_unix {
            return Err(RenewalRefusal::ExpiredTooLong);
        }
        Ok(cert)
    }
}

impl RenewalResponse {
    /// A version byte, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }

    /// Decodes what [`RenewalResponse::to_bytes`] wrote.
    pub fn from_bytes(data: &[u8]) -> Option<Self> {
        from_bytes(data)
    }
}

/// The certificate a holder issues in place of `old`: the same network,
/// identity, Noise key, name and addresses; a serial above `old`'s (and
/// at least `now_unix`, as serials of first certificates are); valid from
/// `now_unix` for `lifetime_secs`. It is not backdated: verifiers allow
/// five minutes of skew on the start, and a third of the lifetime stays a
/// third of the time it was issued for.
pub fn renewed_certificate(old: &Certificate, lifetime_secs: u64, now_unix: u64) -> Certificate {
    Certificate {
        serial: old.serial.saturating_add(1).max(now_unix),
        not_before: now_unix,
        not_after: now_unix.saturating_add(lifetime_secs),
        ..old.clone()
    }
}

/// When a member renews a certificate valid from `not_before` to
/// `not_after`: when a third of its lifetime remains, earlier by
/// `jitter` (0.0 ..= 1.0, drawn once per certificate) times a twelfth of
/// the lifetime, so members whose certificates were issued together do not
/// renew together.
pub fn renew_at(not_before: u64, not_after: u64, jitter: f64) -> u64 {
    let lifetime = not_after.saturating_sub(not_before);
    let spread = (lifetime as f64 / 12.0 * jitter.clamp(0.0, 1.0)) as u64;
    not_after
        .saturating_sub(lifetime / 3)
        .saturating_sub(spread)
        .max(not_before)
}

/// How long to wait after the `failures`-th failed attempt in a row (1 for
/// the first) for a certificate of `lifetime_secs`: doubling from a base
/// of a sixtieth of the lifetime (at most [`RETRY_BASE_SECS`], at least
/// 1 s), capped at a twentieth of the lifetime and at
/// [`RETRY_CAP_SECS`] (at least the base).
pub fn retry_delay(failures: u32, lifetime_secs: u64) -> u64 {
    let base = (lifetime_secs / 60).clamp(1, RETRY_BASE_SECS);
    let cap = (lifetime_secs / 20).clamp(base, RETRY_CAP_SECS);
    let shift = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u64 << shift).min(cap)
}

#[cfg(test)]
mod tests;
