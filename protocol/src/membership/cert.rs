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

use super::identity::{Hex, IdentityKey, IdentitySecret, SigningContext};
use super::network::{is_valid_name, NetworkId, NetworkInfo};
use super::records::Revocation;
use super::{decode_canonical, encode, SIGNATURE_LEN};
use crate::PublicKey;

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
    #[serde(with = "super::noise_key")]
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
    /// validity at `now_unix`. An issuer can call it before signing.
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
        if now_unix < self.not_before {
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
    #[serde(with = "super::sig64")]
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
    /// size, the authority's signature over the exact bytes, a canonical
    /// encoding, then [`Certificate::check`].
    pub fn verify(&self, network: &NetworkInfo, now_unix: u64) -> Result<Certificate, CertError> {
        if self.bytes.len() > MAX_CERTIFICATE_LEN {
            return Err(CertError::TooLarge {
                len: self.bytes.len(),
            });
        }
        // Nothing unsigned is interpreted: the signature comes first.
        network
            .authority()
            .verify(SigningContext::Certificate, &self.bytes, &self.signature)
            .map_err(|_| CertError::BadSignature)?;
        let cert: Certificate = decode_canonical(&self.bytes).ok_or(CertError::Malformed)?;
        cert.check(network, now_unix)?;
        Ok(cert)
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
    /// The signature is not the network authority's over these bytes.
    #[error("certificate is not signed by the network authority")]
    BadSignature,
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
mod tests {
    use super::super::fixtures::{self, NOW};
    use super::*;

    fn issue(cert: &Certificate) -> SignedCertificate {
        Authority::issue(cert, &fixtures::authority())
    }

    #[test]
    fn an_issued_certificate_verifies_and_round_trips() {
        let cert = fixtures::certificate(3);
        let signed = issue(&cert);
        assert_eq!(signed.verify(&fixtures::network(), NOW), Ok(cert.clone()));
        let again = SignedCertificate::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(again, signed);
        assert_eq!(again.verify(&fixtures::network(), NOW), Ok(cert));
    }

    #[test]
    fn a_typical_certificate_is_well_under_the_size_limit() {
        let mut cert = fixtures::certificate(3);
        cert.name = "x".repeat(63);
        cert.serial = u64::MAX;
        cert.not_after = u64::MAX;
        let signed = issue(&cert);
        assert!(signed.bytes.len() < 200, "{}", signed.bytes.len());
        assert!(signed.to_bytes().len() < 300);
    }

    #[test]
    fn every_tampered_byte_is_refused_without_panicking() {
        let signed = issue(&fixtures::certificate(3));
        let wire = signed.to_bytes();
        for i in 0..wire.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = wire.clone();
                bad[i] ^= flip;
                let verdict = SignedCertificate::from_bytes(&bad)
                    .and_then(|c| c.verify(&fixtures::network(), NOW));
                assert!(
                    matches!(
                        verdict,
                        Err(CertError::BadSignature
                            | CertError::Malformed
                            | CertError::UnsupportedVersion(_))
                    ),
                    "byte {i} ^ {flip:#x}: {verdict:?}"
                );
            }
        }
    }

    #[test]
    fn a_certificate_signed_by_another_key_is_refused() {
        let other = IdentitySecret::from_bytes([0x99; 32]);
        let signed = Authority::issue(&fixtures::certificate(3), &other);
        assert_eq!(
            signed.verify(&fixtures::network(), NOW),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn a_signature_from_another_context_is_refused() {
        let cert = fixtures::certificate(3);
        let mut signed = issue(&cert);
        signed.signature = fixtures::authority().sign(SigningContext::Record, &signed.bytes);
        assert_eq!(
            signed.verify(&fixtures::network(), NOW),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn a_certificate_for_another_network_is_refused() {
        let mut cert = fixtures::certificate(3);
        cert.network = NetworkId([0xee; 16]);
        assert_eq!(
            issue(&cert).verify(&fixtures::network(), NOW),
            Err(CertError::WrongNetwork {
                network: NetworkId([0xee; 16])
            })
        );
    }

    #[test]
    fn validity_starts_at_not_before_and_ends_at_not_after() {
        let cert = fixtures::certificate(3);
        let signed = issue(&cert);
        let net = fixtures::network();
        assert!(signed.verify(&net, cert.not_before).is_ok());
        assert_eq!(
            signed.verify(&net, cert.not_before - 1),
            Err(CertError::NotYetValid {
                not_before: cert.not_before
            })
        );
        assert!(signed.verify(&net, cert.not_after - 1).is_ok());
        assert_eq!(
            signed.verify(&net, cert.not_after),
            Err(CertError::Expired {
                not_after: cert.not_after
            })
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        for name in ["", "-db", "db-", "DB", "d b", &"x".repeat(64)] {
            let mut cert = fixtures::certificate(3);
            cert.name = name.into();
            assert_eq!(
                issue(&cert).verify(&fixtures::network(), NOW),
                Err(CertError::BadName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn addresses_outside_the_network_or_not_hosts_are_refused() {
        let net = fixtures::network();
        for v4 in [
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(100, 64, 0, 0),
            Ipv4Addr::new(100, 64, 255, 255),
        ] {
            let mut cert = fixtures::certificate(3);
            cert.ipv4 = v4;
            cert.ipv6 = net.allocate_v6(v4);
            assert_eq!(
                issue(&cert).verify(&net, NOW),
                Err(CertError::AddressOutsideNetwork { ipv4: v4 })
            );
        }
    }

    #[test]
    fn an_ipv6_address_not_derived_from_the_ipv4_address_is_refused() {
        let net = fixtures::network();
        let mut cert = fixtures::certificate(3);
        cert.ipv6 = net.allocate_v6(Ipv4Addr::new(100, 64, 0, 4));
        assert_eq!(
            issue(&cert).verify(&net, NOW),
            Err(CertError::Ipv6Mismatch { ipv6: cert.ipv6 })
        );
    }

    #[test]
    fn oversized_certificates_are_refused_before_any_work() {
        let signed = SignedCertificate {
            bytes: vec![0; MAX_CERTIFICATE_LEN + 1],
            signature: [0; 64],
        };
        assert_eq!(
            signed.verify(&fixtures::network(), NOW),
            Err(CertError::TooLarge {
                len: MAX_CERTIFICATE_LEN + 1
            })
        );
        let wire = vec![SIGNED_CERTIFICATE_VERSION; MAX_SIGNED_CERTIFICATE_LEN + 1];
        assert!(matches!(
            SignedCertificate::from_bytes(&wire),
            Err(CertError::TooLarge { .. })
        ));
    }

    #[test]
    fn framing_errors_are_told_apart() {
        let wire = issue(&fixtures::certificate(3)).to_bytes();
        assert_eq!(
            SignedCertificate::from_bytes(&[]),
            Err(CertError::Malformed)
        );
        let mut v2 = wire.clone();
        v2[0] = 2;
        assert_eq!(
            SignedCertificate::from_bytes(&v2),
            Err(CertError::UnsupportedVersion(2))
        );
        for len in 1..wire.len() {
            assert_eq!(
                SignedCertificate::from_bytes(&wire[..len]),
                Err(CertError::Malformed),
                "truncated to {len}"
            );
        }
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(
            SignedCertificate::from_bytes(&long),
            Err(CertError::Malformed)
        );
    }

    #[test]
    fn validly_signed_garbage_is_malformed_not_a_panic() {
        let auth = fixtures::authority();
        for bytes in [
            vec![],
            vec![0xff; 40],
            fixtures::certificate(3).name.into_bytes(),
        ] {
            let signature = auth.sign(SigningContext::Certificate, &bytes);
            let signed = SignedCertificate { bytes, signature };
            assert_eq!(
                signed.verify(&fixtures::network(), NOW),
                Err(CertError::Malformed)
            );
        }
    }

    #[test]
    fn error_names_are_distinct_snake_case() {
        let all = [
            CertError::TooLarge { len: 0 },
            CertError::UnsupportedVersion(0),
            CertError::Malformed,
            CertError::BadSignature,
            CertError::WrongNetwork {
                network: NetworkId([0; 16]),
            },
            CertError::BadName,
            CertError::AddressOutsideNetwork {
                ipv4: Ipv4Addr::UNSPECIFIED,
            },
            CertError::Ipv6Mismatch {
                ipv6: Ipv6Addr::UNSPECIFIED,
            },
            CertError::NotYetValid { not_before: 0 },
            CertError::Expired { not_after: 0 },
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|n| n
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')));
    }
}
