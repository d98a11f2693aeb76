//! Member certificates: the authority's statement that an identity is a
//! member, under which name, with which data-plane key and addresses, for
//! how long.
//!
//! A [`SignedCertificate`] keeps the exact bytes the authority signed
//! (postcard of a [`Certificate`]), so what is verified is what was
//! signed, byte for byte; [`SignedCertificate::verify`] checks the
//! signature before it decodes anything, then every rule of §9.3 of
//! `docs/protocol.md`. This module checks and encodes; it never decides
//! who gets a certificate, never allocates addresses and never reads the
//! clock.

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::encoding::{decode_canonical, encode, SIGNATURE_LEN};
use super::identity::{Hex, IdentityKey, SigningContext};
use super::network::{is_valid_name, NetworkId, NetworkInfo};
use crate::PublicKey;

/// How far a certificate's start may lie in a verifier's future and still
/// count: clocks of members drift by minutes.
pub const CLOCK_SKEW_SECS: u64 = 300;
/// Longest encoded [`Certificate`] a verifier accepts.
pub const MAX_CERTIFICATE_LEN: usize = 1024;
/// Version byte that starts [`SignedCertificate::to_bytes`].
pub const SIGNED_CERTIFICATE_VERSION: u8 = 1;
/// Longest [`SignedCertificate::to_bytes`] encoding: version byte, a
/// length varint (2 bytes up to 16383), the certificate, the signature.
pub const MAX_SIGNED_CERTIFICATE_LEN: usize = 1 + 2 + MAX_CERTIFICATE_LEN + SIGNATURE_LEN;

/// What the authority certifies about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The network the member belongs to.
    pub network: NetworkId,
    /// The member's name ([`is_valid_name`]), unique in the network by the
    /// authority's choice.
    pub name: String,
    /// The member's identity key: it signs the member's gossip records.
    pub identity: IdentityKey,
    /// The member's data-plane X25519 key (the Noise static key).
    #[serde(with = "super::encoding::noise_key")]
    pub noise_key: PublicKey,
    /// The member's address in the network's IPv4 prefix.
    pub ipv4: Ipv4Addr,
    /// The member's address in the network's IPv6 prefix; always
    /// [`NetworkInfo::allocate_v6`] of `ipv4`.
    pub ipv6: Ipv6Addr,
    /// The authority's serial number for this certificate; revocations
    /// name it.
    pub serial: u64,
    /// First second (unix time) the certificate is valid.
    pub not_before: u64,
    /// First second (unix time) the certificate is no longer valid.
    pub not_after: u64,
}

impl Certificate {
    /// Checks every rule but the signature: network, name, addresses and
    /// validity at `now_unix` (a start up to [`CLOCK_SKEW_SECS`] ahead
    /// counts as started; the end is exact). An issuer can call it before
    /// signing.
    pub fn check(&self, network: &NetworkInfo, now_unix: u64) -> Result<(), CertError> {
        if self.network != *network.id() {
            return Err(CertError::WrongNetwork {
                network: self.network,
            });
        }
        if !is_valid_name(&self.name) {
            return Err(CertError::BadName);
        }
        if !network.is_host_address(self.ipv4) {
            return Err(CertError::AddressOutsideNetwork { ipv4: self.ipv4 });
        }
        if self.ipv6 != network.allocate_v6(self.ipv4) {
            return Err(CertError::Ipv6Mismatch { ipv6: self.ipv6 });
        }
        if now_unix.saturating_add(CLOCK_SKEW_SECS) < self.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
            });
        }
        if now_unix >= self.not_after {
            return Err(CertError::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// A certificate as the authority signed it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCertificate {
    /// The postcard encoding of a [`Certificate`]: exactly the signed bytes.
    pub bytes: Vec<u8>,
    /// The authority's signature of `bytes` in the `"cert"` context.
    #[serde(with = "super::encoding::sig64")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for SignedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCertificate")
            .field("len", &self.bytes.len())
            .field(
                "signature",
                &format_args!("{:x}…", Hex(&self.signature[..4])),
            )
            .finish()
    }
}

impl SignedCertificate {
    /// Checks the certificate for `network` at `now_unix` and returns it:
    /// size, a trusted issuer's signature over the exact bytes
    /// ([`NetworkInfo::issuers`]), a canonical encoding, a retired issuer's
    /// limits ([`Issuer::admits`](super::network::Issuer::admits)), then
    /// [`Certificate::check`].
    pub fn verify(&self, network: &NetworkInfo, now_unix: u64) -> Result<Certificate, CertError> {
        let cert = self.verify_signed(network)?;
        cert.check(network, now_unix)?;
        Ok(cert)
    }

    /// Everything [`SignedCertificate::verify`] checks but the validity
    /// period: for renewing a certificate that has expired, and for telling
    /// an expired certificate from a forged one.
    pub fn verify_signed(&self, network: &NetworkInfo) -> Result<Certificate, CertError> {
        if self.bytes.len() > MAX_CERTIFICATE_LEN {
            return Err(CertError::TooLarge {
                len: self.bytes.len(),
            });
        }
        // Nothing unsigned is interpreted: the signature comes first.
        let issuer = network
            .issuer_of(SigningContext::Certificate, &self.bytes, &self.signature)
            .ok_or(CertError::BadSignature)?;
        let cert: Certificate = decode_canonical(&self.bytes).ok_or(CertError::Malformed)?;
        if !issuer.admits(cert.not_before, cert.not_after) {
            return Err(CertError::IssuerRetired);
        }
        Ok(cert)
    }

    /// The trusted key that signed this certificate, if any.
    pub fn issuer(&self, network: &NetworkInfo) -> Option<IdentityKey> {
        network
            .issuer_of(SigningContext::Certificate, &self.bytes, &self.signature)
            .map(|i| i.key)
    }

    /// The encoding for gossip and storage: a version byte (1), then
    /// postcard of (`bytes`, `signature`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![SIGNED_CERTIFICATE_VERSION];
        out.extend_from_slice(&encode(self));
        out
    }

    /// Decodes what [`SignedCertificate::to_bytes`] wrote. Checks only the
    /// framing; [`SignedCertificate::verify`] checks the contents.
    pub fn from_bytes(data: &[u8]) -> Result<Self, CertError> {
        if data.len() > MAX_SIGNED_CERTIFICATE_LEN {
            return Err(CertError::TooLarge { len: data.len() });
        }
        let (&version, rest) = data.split_first().ok_or(CertError::Malformed)?;
        if version != SIGNED_CERTIFICATE_VERSION {
            return Err(CertError::UnsupportedVersion(version));
        }
        decode_canonical(rest).ok_or(CertError::Malformed)
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The encoding is longer than any certificate may be.
    #[error("certificate is too large ({len} bytes)")]
    TooLarge {
        /// Length received.
        len: usize,
    },
    /// The encoding starts with a version byte this node does not know.
    #[error("unsupported certificate encoding version {0}")]
    UnsupportedVersion(u8),
    /// The bytes do not decode as a certificate (in canonical form).
    #[error("certificate does not decode")]
    Malformed,
    /// The signature is not a trusted authority key's over these bytes.
    #[error("certificate is not signed by the network authority")]
    BadSignature,
    /// The signer has left the authority set, and the certificate starts
    /// after it left or outlives it by more than a certificate lifetime.
    #[error("certificate signed by a retired authority key outside its limits")]
    IssuerRetired,
    /// The certificate is for another network.
    #[error("certificate is for another network ({network})")]
    WrongNetwork {
        /// The network the certificate names.
        network: NetworkId,
    },
    /// The name breaks the rules of [`is_valid_name`].
    #[error("certificate has an invalid member name")]
    BadName,
    /// The IPv4 address is not a host address of the network's prefix.
    #[error("certificate address {ipv4} is not a host address of the network")]
    AddressOutsideNetwork {
        /// The certified address.
        ipv4: Ipv4Addr,
    },
    /// The IPv6 address is not the one derived from the IPv4 address.
    #[error("certificate IPv6 address {ipv6} does not match its IPv4 address")]
    Ipv6Mismatch {
        /// The certified address.
        ipv6: Ipv6Addr,
    },
    /// The validity period has not started.
    #[error("certificate is not valid before {not_before} (unix time)")]
    NotYetValid {
        /// When it starts.
        not_before: u64,
    },
    /// The validity period is over.
    #[error("certificate expired at {not_after} (unix time)")]
    Expired {
        /// When it ended.
        not_after: u64,
    },
}

impl CertError {
    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            CertError::TooLarge { .. } => "too_large",
            CertError::UnsupportedVersion(_) => "unsupported_version",
            CertError::Malformed => "malformed",
            CertError::BadSignature => "bad_signature",
            CertError::IssuerRetired => "issuer_retired",
            CertError::WrongNetwork { .. } => "wrong_network",
            CertError::BadName => "bad_name",
            CertError::AddressOutsideNetwork { .. } => "address_outside_network",
            CertError::Ipv6Mismatch { .. } => "ipv6_mismatch",
            CertError::NotYetValid { .. } => "not_yet_valid",
            CertError::Expired { .. } => "expired",
        }
    }
}

#[cfg(test)]
mod tests;
