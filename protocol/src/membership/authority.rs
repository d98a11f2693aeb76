//! The network authority's two acts: admitting a member (signing its
//! certificate) and revoking one.
//!
//! This module only signs; what a certificate and a revocation are, and how
//! they are checked, belongs to `cert` and `records`. It never checks what
//! it signs and never reads the clock: times are the caller's.

use super::cert::{Certificate, SignedCertificate};
use super::encoding::encode;
use super::identity::{IdentityKey, IdentitySecret, SigningContext};
use super::network::NetworkId;
use super::records::Revocation;

/// The authority's two acts: admitting a member and revoking one.
#[derive(Debug, Clone, Copy)]
pub struct Authority;

impl Authority {
    /// Signs `cert` with the authority key. It does not check the
    /// certificate: call [`Certificate::check`] first, or a verifier will
    /// refuse what was signed.
    pub fn issue(cert: &Certificate, secret: &IdentitySecret) -> SignedCertificate {
        let bytes = encode(cert);
        let signature = secret.sign(SigningContext::Certificate, &bytes);
        SignedCertificate { bytes, signature }
    }

    /// Revokes `identity`'s certificates up to serial `serial` in network
    /// `network`, as of `revoked_unix`. Any member may relay the result in
    /// a record; only the authority can make one.
    pub fn revoke(
        network: &NetworkId,
        identity: IdentityKey,
        serial: u64,
        revoked_unix: u64,
        secret: &IdentitySecret,
    ) -> Revocation {
        Revocation::sign(network, identity, serial, revoked_unix, secret)
    }
}
