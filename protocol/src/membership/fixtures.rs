//! A fixed network, authority and members for the unit tests and the
//! fuzzing harness: the same keys on every run.

use std::net::{Ipv4Addr, SocketAddr};

use super::authority::Authority;
use super::cert::{Certificate, SignedCertificate};
use super::identity::IdentitySecret;
use super::network::{NetworkId, NetworkInfo};
use crate::StaticSecret;

/// The time every fixture is checked at.
pub(crate) const NOW: u64 = 1_700_000_000;

/// The network's id.
pub(crate) const NETWORK_ID: NetworkId = NetworkId([0x5e; 16]);

/// The authority's key.
pub(crate) fn authority() -> IdentitySecret {
    IdentitySecret::from_bytes([0xa1; 32])
}

/// `lab`, 100.64.0.0/16, signed by [`authority`].
pub(crate) fn network() -> NetworkInfo {
    NetworkInfo::new(
        NETWORK_ID,
        "lab".into(),
        "100.64.0.0/16".parse().expect("a valid prefix"),
        authority().identity(),
    )
    .expect("a valid network")
}

/// Member `n`'s identity key.
pub(crate) fn member(n: u8) -> IdentitySecret {
    IdentitySecret::from_bytes([n; 32])
}

/// Member `n`'s certificate: `node-<n>` at 100.64.0.`n`, valid an hour
/// either side of [`NOW`].
pub(crate) fn certificate(n: u8) -> Certificate {
    let ipv4 = Ipv4Addr::new(100, 64, 0, n);
    Certificate {
        network: NETWORK_ID,
        name: format!("node-{n}"),
        identity: member(n).identity(),
        noise_key: StaticSecret::from_bytes([n ^ 0x80; 32]).public_key(),
        ipv4,
        ipv6: network().allocate_v6(ipv4),
        serial: u64::from(n),
        not_before: NOW - 3600,
        not_after: NOW + 3600,
    }
}

/// [`certificate`] signed by [`authority`].
pub(crate) fn signed_certificate(n: u8) -> SignedCertificate {
    Authority::issue(&certificate(n), &authority())
}

/// A public endpoint for member `n`.
pub(crate) fn endpoint(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 51820))
}
