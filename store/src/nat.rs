//! NAT mapping lifetimes: public (reflexive) IP address → [`NatRecord`]
//! (the longest idle time a mapping behind that address was proven to
//! survive, and when). A restarted node starts its keepalives from the
//! lifetime stored for its address, and still verifies it.
//!
//! Writes here are not flushed: a lifetime lost in a crash is measured again.
//!
//! On disk: tree `nat`, key the address as 16 bytes (IPv4 as an
//! IPv4-mapped IPv6 address), value a version-1 [`NatRecord`].

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::record::{self, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Store, StoreError};

pub(crate) const TREE: &str = "nat";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };

/// A measured NAT mapping lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRecord {
    /// The longest idle time a mapping survived, in milliseconds.
    pub lifetime_ms: u32,
    /// When it was measured, in unix seconds.
    pub measured_unix: u64,
    /// Whether this node measured it (rather than a member reporting it).
    pub own: bool,
}

impl Record for NatRecord {
    const VERSION: u8 = 1;
}

fn nat_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn split_key(key: &[u8]) -> Result<IpAddr, DecodeError> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| DecodeError::KeyLength {
        found: key.len(),
        expected: 16,
    })?;
    let v6 = Ipv6Addr::from(bytes);
    Ok(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    split_key(key)?;
    record::decode::<NatRecord>(value).map(drop)
}

/// The NAT lifetimes tree of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct NatLifetimes<'s> {
    store: &'s Store,
}

impl<'s> NatLifetimes<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        NatLifetimes { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.nat
    }

    /// Stores (or replaces) the lifetime behind `public`.
    pub fn put(&self, public: IpAddr, record: &NatRecord) -> Result<(), StoreError> {
        self.tree()
            .insert(nat_key(public), record::encode(record))?;
        tracing::trace!(%public, lifetime_ms = record.lifetime_ms, "NAT lifetime stored");
        Ok(())
    }

    /// The lifetime behind `public`, if any.
    pub fn get(&self, public: IpAddr) -> Result<Option<NatRecord>, StoreError> {
        self.store.get_record(self.tree(), TREE, &nat_key(public))
    }

    /// Every decodable lifetime, by public address.
    pub fn list(&self) -> Result<Vec<(IpAddr, NatRecord)>, StoreError> {
        self.store.list_records(TREE, self.tree().iter(), split_key)
    }

    /// This node's most recent own measurement, with its address.
    pub fn latest_own(&self) -> Result<Option<(IpAddr, NatRecord)>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(_, r)| r.own)
            .max_by_key(|(_, r)| r.measured_unix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn a_lifetime_is_stored_per_address_and_the_latest_own_one_is_found() {
        let store = testing::store();
        let nat = store.nat();
        let v4: IpAddr = "203.0.113.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let rec = |ms, at, own| NatRecord {
            lifetime_ms: ms,
            measured_unix: at,
            own,
        };
        nat.put(v4, &rec(25_000, 100, true)).unwrap();
        nat.put(v6, &rec(60_000, 200, false)).unwrap();
        assert_eq!(nat.get(v4).unwrap(), Some(rec(25_000, 100, true)));
        assert_eq!(nat.list().unwrap().len(), 2);
        assert_eq!(
            nat.latest_own().unwrap(),
            Some((v4, rec(25_000, 100, true)))
        );
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_by_the_check() {
        assert!(check(
            &[1, 2, 3],
            &record::encode(&NatRecord {
                lifetime_ms: 1,
                measured_unix: 1,
                own: true,
            })
        )
        .is_err());
    }
}
