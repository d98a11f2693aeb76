//! What identifies a network and the addresses its members live in.
//!
//! A network is a random 16-byte [`NetworkId`], a name, an IPv4 prefix
//! chosen by whoever creates it (100.64.0.0/16, say), an IPv6 /48 unique
//! local prefix (RFC 4193) derived from the id, and the authority's
//! identity key (the anchor), with the keys currently trusted to sign
//! certificates ([`Issuer`]). A member's IPv6 address follows from its IPv4 address
//! ([`NetworkInfo::allocate_v6`]), so the authority allocates one number
//! and both address families agree. This module only computes; it never
//! allocates on anyone's behalf and never keeps state.

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

use blake2::{Blake2s256, Digest};
use ip_network::{Ipv4Network, Ipv6Network};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use super::encoding::{parse_hex, write_hex, SIGNATURE_LEN};
use super::identity::{IdentityKey, ParseKeyError, SigningContext};

/// Length of a network id.
pub const NETWORK_ID_LEN: usize = 16;
/// Prefix length of a network's IPv6 ULA prefix.
pub const IPV6_PREFIX_LEN: u8 = 48;
/// Shortest IPv4 prefix a network may have: a network never claims more
/// than a /8 of the address space.
pub const MIN_IPV4_PREFIX_LEN: u8 = 8;
/// Longest IPv4 prefix a network may have: a /30 still has two host
/// addresses besides the network and broadcast addresses.
pub const MAX_IPV4_PREFIX_LEN: u8 = 30;
/// Longest member or network name, in bytes (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// A network's random identifier. `Display` and `FromStr` use 32
/// hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkId(pub [u8; NETWORK_ID_LEN]);

impl NetworkId {
    /// A new random id.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let mut id = [0u8; NETWORK_ID_LEN];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; NETWORK_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({self})")
    }
}

impl FromStr for NetworkId {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s.trim())
            .map(NetworkId)
            .ok_or(ParseKeyError { digits: 32 })
    }
}

/// The IPv6 /48 of network `id`: `fd` followed by the first 5 bytes of
/// BLAKE2s-256(`"weft-ula"` ‖ id) as RFC 4193's 40-bit global id.
pub fn derive_ula(id: &NetworkId) -> Ipv6Network {
    let hash = Blake2s256::new()
        .chain_update(b"weft-ula")
        .chain_update(id.0)
        .finalize();
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&hash[..5]);
    // Only the first 48 bits are set, so the address is its own /48.
    Ipv6Network::new(Ipv6Addr::from(octets), IPV6_PREFIX_LEN).expect("host bits are zero")
}

/// Whether `name` is a valid member or network name: 1 to 63 characters
/// from `a`–`z`, `0`–`9` and `-`, not starting or ending with `-` (a DNS
/// label in lowercase, so a name can become a host name).
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Why [`NetworkInfo::new`] refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The name breaks the rules of [`is_valid_name`].
    #[error("invalid network name {0:?}: use 1-63 of a-z, 0-9 and '-', not at either end")]
    BadName(String),
    /// The IPv4 prefix is shorter than /8 or longer than /30.
    #[error("IPv4 prefix /{0} is not between /8 and /30")]
    BadIpv4Prefix(u8),
}

/// A key that signed certificates in this network, current or retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuer {
    /// The key.
    pub key: IdentityKey,
    /// When it left the set (the `issued_unix` of the first version
    /// without it), if it did.
    pub retired_unix: Option<u64>,
    /// The certificate lifetime of the last version it was in.
    pub lifetime_secs: u64,
}

impl Issuer {
    /// Whether a certificate valid from `not_before` to `not_after`, signed
    /// by this key, can be believed: always for a current key; for a
    /// retired one, only if it started before the key left and ends within
    /// one lifetime of it (a lost key cannot mint long-lived certificates
    /// after it was removed).
    pub fn admits(&self, not_before: u64, not_after: u64) -> bool {
        match self.retired_unix {
            None => true,
            Some(retired) => {
                not_before <= retired && not_after <= retired.saturating_add(self.lifetime_secs)
            }
        }
    }
}

/// Everything a member needs to know about its network to check
/// certificates and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    id: NetworkId,
    name: String,
    ipv4: Ipv4Network,
    ipv6: Ipv6Network,
    authority: IdentityKey,
    issuers: Vec<Issuer>,
}

impl NetworkInfo {
    /// Describes network `id`; the IPv6 prefix is derived from the id
    /// ([`derive_ula`]).
    pub fn new(
        id: NetworkId,
        name: String,
        ipv4: Ipv4Network,
        authority: IdentityKey,
    ) -> Result<Self, NetworkError> {
        if !is_valid_name(&name) {
            return Err(NetworkError::BadName(name));
        }
        if !(MIN_IPV4_PREFIX_LEN..=MAX_IPV4_PREFIX_LEN).contains(&ipv4.netmask()) {
            return Err(NetworkError::BadIpv4Prefix(ipv4.netmask()));
        }
        Ok(Self {
            id,
            name,
            ipv4,
            ipv6: derive_ula(&id),
            authority,
            issuers: vec![Issuer {
                key: authority,
                retired_unix: None,
                lifetime_secs: u64::MAX,
            }],
        })
    }

    /// The network id.
    pub fn id(&self) -> &NetworkId {
        &self.id
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IPv4 prefix members' addresses come from.
    pub fn ipv4(&self) -> Ipv4Network {
        self.ipv4
    }

    /// The IPv6 /48 derived from the id.
    pub fn ipv6(&self) -> Ipv6Network {
        self.ipv6
    }

    /// The network's anchor: the key of the first authority set, which
    /// every invite token names and every authority chain starts from.
    pub fn authority(&self) -> &IdentityKey {
        &self.authority
    }

    /// The keys whose signatures on certificates and revocations count:
    /// the anchor alone until [`NetworkInfo::set_issuers`] is given the
    /// network's verified authority set.
    pub fn issuers(&self) -> &[Issuer] {
        &self.issuers
    }

    /// Trusts `issuers` (from a verified authority chain,
    /// `Authorities::issuers`) instead of the keys trusted so far. An
    /// empty list is ignored: a network always has an authority.
    pub fn set_issuers(&mut self, issuers: Vec<Issuer>) {
        if !issuers.is_empty() {
            self.issuers = issuers;
        }
    }

    /// The issuer whose signature `signature` over `bytes` in `context`
    /// is, if any trusted key made it.
    pub fn issuer_of(
        &self,
        context: SigningContext,
        bytes: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Option<&Issuer> {
        self.issuers
            .iter()
            .find(|i| i.key.verify(context, bytes, signature).is_ok())
    }

    /// Whether `v4` can be a member's address: inside the IPv4 prefix and
    /// neither its network nor its broadcast address.
    pub fn is_host_address(&self, v4: Ipv4Addr) -> bool {
        self.ipv4.contains(v4)
            && v4 != self.ipv4.network_address()
            && v4 != self.ipv4.broadcast_address()
    }

    /// The IPv6 address of the member whose IPv4 address is `v4`: the /48
    /// with the 32 bits of `v4` as its last 32 bits (subnet id and the rest
    /// zero), so `100.64.1.2` becomes `<prefix>::6440:102`. Defined for any
    /// `v4`; whether `v4` belongs to the network is
    /// [`NetworkInfo::is_host_address`]'s question.
    pub fn allocate_v6(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut octets = self.ipv6.network_address().octets();
        octets[12..].copy_from_slice(&v4.octets());
        Ipv6Addr::from(octets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(prefix: &str) -> Result<NetworkInfo, NetworkError> {
        NetworkInfo::new(
            NetworkId([7; 16]),
            "lab".into(),
            prefix.parse().unwrap(),
            IdentityKey([1; 32]),
        )
    }

    #[test]
    fn the_ula_prefix_is_fd_and_forty_bits_of_the_hash() {
        let id = NetworkId([7; 16]);
        let ula = derive_ula(&id);
        assert_eq!(ula.netmask(), 48);
        assert!(ula.is_unique_local());
        let mut h = Blake2s256::new();
        h.update(b"weft-ula");
        h.update([7u8; 16]);
        let h = h.finalize();
        let o = ula.network_address().octets();
        assert_eq!(o[0], 0xfd);
        assert_eq!(&o[1..6], &h[..5]);
        assert_eq!(&o[6..], &[0; 10]);
        assert_ne!(derive_ula(&NetworkId([8; 16])), ula);
    }

    #[test]
    fn the_v6_address_carries_the_v4_address_in_its_last_32_bits() {
        let n = net("100.64.0.0/16").unwrap();
        let v6 = n.allocate_v6(Ipv4Addr::new(100, 64, 1, 2));
        assert!(n.ipv6().contains(v6));
        assert_eq!(&v6.octets()[6..12], &[0; 6]);
        assert_eq!(&v6.octets()[12..], &[100, 64, 1, 2]);
        assert_ne!(v6, n.allocate_v6(Ipv4Addr::new(100, 64, 1, 3)));
    }

    #[test]
    fn host_addresses_exclude_the_network_and_broadcast_addresses() {
        let n = net("100.64.0.0/16").unwrap();
        assert!(n.is_host_address(Ipv4Addr::new(100, 64, 0, 1)));
        assert!(n.is_host_address(Ipv4Addr::new(100, 64, 255, 254)));
        assert!(!n.is_host_address(Ipv4Addr::new(100, 64, 0, 0)));
        assert!(!n.is_host_address(Ipv4Addr::new(100, 64, 255, 255)));
        assert!(!n.is_host_address(Ipv4Addr::new(100, 65, 0, 1)));
    }

    #[test]
    fn prefixes_outside_8_to_30_are_refused() {
        assert_eq!(
            net("100.0.0.0/7").unwrap_err(),
            NetworkError::BadIpv4Prefix(7)
        );
        assert_eq!(
            net("100.64.0.0/31").unwrap_err(),
            NetworkError::BadIpv4Prefix(31)
        );
        assert!(net("100.64.0.0/30").is_ok());
        assert!(net("10.0.0.0/8").is_ok());
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for good in ["a", "db-1", "0", &"x".repeat(63)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "é",
            " a",
            &"x".repeat(64),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        let e = NetworkInfo::new(
            NetworkId([0; 16]),
            "Bad".into(),
            "10.0.0.0/8".parse().unwrap(),
            IdentityKey([0; 32]),
        );
        assert_eq!(e.unwrap_err(), NetworkError::BadName("Bad".into()));
    }

    #[test]
    fn network_ids_print_and_parse_as_hex() {
        let id = NetworkId([0x0f; 16]);
        assert_eq!(id.to_string(), "0f".repeat(16));
        assert_eq!(id.to_string().parse::<NetworkId>(), Ok(id));
        assert!("0f0f".parse::<NetworkId>().is_err());
    }
}
