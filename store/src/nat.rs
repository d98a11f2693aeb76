//! NAT mapping lifetimes, by the member that measured them: (member
//! identity, public IP address) → [`NatRecord`] (the longest idle time a
//! mapping behind that address was proven to survive, and when). A
//! restarted node starts its keepalives from the lifetime stored for its
//! address, and still verifies it.
//!
//! The tree is keyed by the reporting member, so what one member says can
//! only ever take that member's own few slots: at most [`MAX_PER_MEMBER`]
//! addresses per member (a new one replaces the member's oldest), at most
//! [`MAX_ENTRIES`] in all (a new member's first entry then replaces the
//! oldest entry another member reported), and every entry of a member goes
//! with [`NatLifetimes::remove_member`] when it is revoked. A member that
//! floods lifetimes for made-up addresses rewrites its own slots; it never
//! grows the tree.
//!
//! Writes here are not flushed: a lifetime lost in a crash is measured again.
//!
//! On disk: tree `nat`, key the 32-byte identity of the member that measured
//! it followed by the address as 16 bytes (IPv4 as an IPv4-mapped IPv6
//! address), value a version-1 [`NatRecord`]. Schema 4 introduced this key;
//! its migration dropped the entries of the earlier address-only key.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::record::{self, key32, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Identity, Store, StoreError};

pub(crate) const TREE: &str = "nat";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };

/// Public addresses kept per member: a member that roams between a few
/// networks keeps the lifetime of each; a fifth replaces the oldest.
pub const MAX_PER_MEMBER: usize = 4;
/// Entries kept in all: [`MAX_PER_MEMBER`] for each of 16,384 members.
pub const MAX_ENTRIES: usize = 65_536;

const KEY_LEN: usize = 48;

/// Whose measurement, behind which public address.
pub type NatKey = (Identity, IpAddr);

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

/// What [`NatLifetimes::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// The member's entry for that address was replaced.
    Replaced,
    /// A new entry was added.
    Added,
    /// A new entry was added in place of the member's oldest one: it
    /// already had [`MAX_PER_MEMBER`].
    ReplacedOldestOfMember,
    /// A new entry was added in place of the oldest entry of another
    /// member: the tree held [`MAX_ENTRIES`].
    ReplacedOldest,
}

fn nat_key(member: &Identity, ip: IpAddr) -> [u8; KEY_LEN] {
    let ip = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut key = [0; KEY_LEN];
    key[..32].copy_from_slice(member);
    key[32..].copy_from_slice(&ip);
    key
}

fn split_key(key: &[u8]) -> Result<(Identity, IpAddr), DecodeError> {
    if key.len() != KEY_LEN {
        return Err(DecodeError::KeyLength {
            found: key.len(),
            expected: KEY_LEN,
        });
    }
    let bytes: [u8; 16] = key[32..].try_into().map_err(|_| DecodeError::KeyLength {
        found: key.len(),
        expected: KEY_LEN,
    })?;
    let v6 = Ipv6Addr::from(bytes);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    Ok((key32(&key[..32])?, ip))
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

    /// Stores (or replaces) the lifetime `member` measured behind `public`,
    /// within the bounds the module documentation gives. Called from one
    /// writer at a time (the node's store writer): the bounds are checked
    /// and kept by the same call.
    pub fn put(
        &self,
        member: &Identity,
        public: IpAddr,
        record: &NatRecord,
    ) -> Result<Stored, StoreError> {
        self.put_within(member, public, record, MAX_ENTRIES)
    }

    /// [`NatLifetimes::put`] with `max_entries` in all.
    fn put_within(
        &self,
        member: &Identity,
        public: IpAddr,
        record: &NatRecord,
        max_entries: usize,
    ) -> Result<Stored, StoreError> {
        let key = nat_key(member, public);
        let value = record::encode(record);
        if self.tree().contains_key(key)? {
            self.tree().insert(key, value)?;
            return Ok(Stored::Replaced);
        }
        let mut stored = Stored::Added;
        let own_entries = self.entries(self.tree().scan_prefix(member))?;
        if own_entries.len() >= MAX_PER_MEMBER {
            // The member's oldest measurement makes room; undecodable ones
            // count as oldest (a lookup could not use them anyway).
            if let Some((oldest, _)) = own_entries.iter().min_by_key(|(_, r)| r.measured_unix) {
                self.tree().remove(oldest)?;
            }
            stored = Stored::ReplacedOldestOfMember;
        } else if self.tree().len() >= max_entries {
            // Counting is a scan, but it runs only for a member's first few
            // addresses; and the tree fills only past 16,384 members.
            // Another member's oldest report makes room, never this node's
            // own.
            let all = self.entries(self.tree().iter())?;
            if let Some((oldest, _)) = all
                .iter()
                .filter(|(_, r)| !r.own)
                .min_by_key(|(_, r)| r.measured_unix)
            {
                self.tree().remove(oldest)?;
            }
            stored = Stored::ReplacedOldest;
        }
        self.tree().insert(key, value)?;
        tracing::trace!(%public, lifetime_ms = record.lifetime_ms, ?stored, "NAT lifetime stored");
        Ok(stored)
    }

    /// The raw keys of `entries` with their records; an undecodable record
    /// is measured at time 0 (first to go).
    fn entries(
        &self,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<(sled::IVec, NatRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let r = self
                .store
                .decode::<NatRecord>(TREE, &key, &value)
                .unwrap_or(NatRecord {
                    lifetime_ms: 0,
                    measured_unix: 0,
                    own: false,
                });
            out.push((key, r));
        }
        Ok(out)
    }

    /// The lifetime behind `public`: this node's own measurement if it has
    /// one, otherwise the most recent a member reported.
    pub fn get(&self, public: IpAddr) -> Result<Option<NatRecord>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|((_, ip), _)| *ip == public)
            .map(|(_, r)| r)
            .max_by_key(|r| (r.own, r.measured_unix)))
    }

    /// Every decodable lifetime, by (member, public address).
    pub fn list(&self) -> Result<Vec<(NatKey, NatRecord)>, StoreError> {
        self.store.list_records(TREE, self.tree().iter(), split_key)
    }

    /// How many entries the tree holds (decodable or not).
    pub fn len(&self) -> usize {
        self.tree().len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.tree().is_empty()
    }

    /// This node's most recent own measurement, with its address.
    pub fn latest_own(&self) -> Result<Option<(IpAddr, NatRecord)>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(_, r)| r.own)
            .max_by_key(|(_, r)| r.measured_unix)
            .map(|((_, ip), r)| (ip, r)))
    }

    /// Removes every lifetime `member` reported (a revoked member);
    /// returns how many went.
    pub fn remove_member(&self, member: &Identity) -> Result<usize, StoreError> {
        let mut removed = 0;
        for key in self.tree().scan_prefix(member).keys() {
            if self.tree().remove(key?)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every entry whose member `keep` refuses (at start: members
    /// revoked or forgotten while the node was down), and every entry whose
    /// key does not decode; returns how many went.
    pub fn retain_members(&self, keep: impl Fn(&Identity) -> bool) -> Result<usize, StoreError> {
        let mut removed = 0;
        for key in self.tree().iter().keys() {
            let key = key?;
            let gone = split_key(&key).map_or(true, |(member, _)| !keep(&member));
            if gone && self.tree().remove(&key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn rec(ms: u32, at: u64, own: bool) -> NatRecord {
        NatRecord {
            lifetime_ms: ms,
            measured_unix: at,
            own,
        }
    }

    /// A made-up public IPv4 address for `n`.
    fn address(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xCB00_7100u32.wrapping_add(n)))
    }

    #[test]
    fn a_lifetime_is_stored_per_member_and_address_and_the_latest_own_one_is_found() {
        let store = testing::store();
        let nat = store.nat();
        let v4: IpAddr = "203.0.113.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let (me, other) = ([1; 32], [2; 32]);
        assert_eq!(
            nat.put(&me, v4, &rec(25_000, 100, true)).unwrap(),
            Stored::Added
        );
        nat.put(&other, v6, &rec(60_000, 200, false)).unwrap();
        nat.put(&other, v4, &rec(30_000, 300, false)).unwrap();
        assert_eq!(
            nat.get(v4).unwrap(),
            Some(rec(25_000, 100, true)),
            "own first"
        );
        assert_eq!(nat.get(v6).unwrap(), Some(rec(60_000, 200, false)));
        assert_eq!(nat.list().unwrap().len(), 3);
        assert_eq!(
            nat.latest_own().unwrap(),
            Some((v4, rec(25_000, 100, true)))
        );
        assert_eq!(
            nat.put(&me, v4, &rec(26_000, 400, true)).unwrap(),
            Stored::Replaced
        );
        assert_eq!(nat.len(), 3);
    }

    #[test]
    fn lifetimes_a_member_reports_for_ten_thousand_made_up_addresses_take_only_its_own_slots() {
        let store = testing::store();
        let nat = store.nat();
        let honest = [1; 32];
        nat.put(&honest, address(0), &rec(25_000, 10, false))
            .unwrap();
        let flooder = [9; 32];
        for n in 1..=10_000 {
            nat.put(
                &flooder,
                address(n),
                &rec(30_000, 1_000 + u64::from(n), false),
            )
            .unwrap();
        }
        assert_eq!(nat.len(), 1 + MAX_PER_MEMBER, "the tree grew");
        // The flooder's newest reports are the ones kept, and the honest
        // member's entry is untouched.
        assert_eq!(nat.get(address(0)).unwrap(), Some(rec(25_000, 10, false)));
        assert!(nat.get(address(10_000)).unwrap().is_some());
        assert!(nat.get(address(1)).unwrap().is_none());
    }

    #[test]
    fn a_full_tree_makes_room_from_the_oldest_report_of_another_member_never_an_own_one() {
        let store = testing::store();
        let nat = store.nat();
        let mine = [0xAA; 32];
        nat.put(&mine, address(0), &rec(25_000, 1, true)).unwrap();
        // The same rule as at MAX_ENTRIES, at a bound a test fills quickly.
        let max = 64;
        let mut member = [0u8; 32];
        for n in 1..max as u32 {
            member[..4].copy_from_slice(&n.to_be_bytes());
            nat.put_within(
                &member,
                address(n),
                &rec(25_000, 10 + u64::from(n), false),
                max,
            )
            .unwrap();
        }
        assert_eq!(nat.len(), max);
        member[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            nat.put_within(
                &member,
                address(u32::MAX),
                &rec(25_000, 1_000_000, false),
                max
            )
            .unwrap(),
            Stored::ReplacedOldest
        );
        assert_eq!(nat.len(), max);
        assert!(nat.get(address(0)).unwrap().is_some(), "own kept");
        assert!(nat.get(address(1)).unwrap().is_none(), "oldest other gone");
    }

    #[test]
    fn a_removed_members_lifetimes_go_and_so_do_those_of_members_not_kept() {
        let store = testing::store();
        let nat = store.nat();
        for (m, n) in [(1u8, 1), (1, 2), (2, 3), (3, 4)] {
            nat.put(&[m; 32], address(n), &rec(25_000, 5, false))
                .unwrap();
        }
        assert_eq!(nat.remove_member(&[1; 32]).unwrap(), 2);
        assert_eq!(nat.len(), 2);
        assert_eq!(nat.retain_members(|m| *m == [3; 32]).unwrap(), 1);
        assert_eq!(
            nat.list().unwrap(),
            vec![(([3; 32], address(4)), rec(25_000, 5, false))]
        );
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_by_the_check() {
        assert!(check(&[1, 2, 3], &record::encode(&rec(1, 1, true))).is_err());
        assert!(check(&[0; 16], &record::encode(&rec(1, 1, true))).is_err());
    }
}
