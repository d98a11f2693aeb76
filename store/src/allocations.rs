//! Overlay IPv4 address allocations, one address per identity, kept in two
//! trees that mirror each other: address → [`AllocationRecord`] and
//! identity → the same record. Both change together in one sled
//! transaction, so they never disagree.
//!
//! [`Allocations::allocate`] picks the lowest free host address of a prefix
//! (never the network or broadcast address, never a reserved one;
//! [`Allocations::allocate_in`] only among every n-th, a [`Stripe`]) and is
//! idempotent: an identity that already holds an address in the prefix gets
//! it again. [`Allocations::allocate`] and [`Allocations::release`] flush
//! before they return, so an address handed out is never handed out again
//! after a crash.
//!
//! On disk: tree `alloc_by_address`, key the address as a big-endian u32
//! (so keys sort by address); tree `alloc_by_identity`, key the 32-byte
//! identity; both values a version-1 [`AllocationRecord`].

use std::convert::Infallible;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tracing::debug;

use crate::record::{self, key32, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Identity, Store, StoreError};

pub(crate) const BY_ADDRESS: &str = "alloc_by_address";
pub(crate) const BY_IDENTITY: &str = "alloc_by_identity";
pub(crate) const BY_ADDRESS_SPEC: TreeSpec = TreeSpec {
    name: BY_ADDRESS,
    check: check_by_address,
};
pub(crate) const BY_IDENTITY_SPEC: TreeSpec = TreeSpec {
    name: BY_IDENTITY,
    check: check_by_identity,
};

/// One address and the identity holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// The overlay address.
    pub address: Ipv4Addr,
    /// Who holds it.
    pub identity: Identity,
}

impl Record for AllocationRecord {
    const VERSION: u8 = 1;
}

fn address_key(key: &[u8]) -> Result<u32, DecodeError> {
    let bytes: [u8; 4] = key.try_into().map_err(|_| DecodeError::KeyLength {
        found: key.len(),
        expected: 4,
    })?;
    Ok(u32::from_be_bytes(bytes))
}

fn check_by_address(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    address_key(key)?;
    record::decode::<AllocationRecord>(value).map(drop)
}

fn check_by_identity(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    key32(key)?;
    record::decode::<AllocationRecord>(value).map(drop)
}

/// Why no address was allocated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// Every host address of the prefix is allocated or reserved.
    #[error("no free address left in the prefix")]
    Exhausted,
    /// The prefix length is above 32, or the network address has host bits
    /// set (API misuse).
    #[error("{network}/{prefix_len} is not an IPv4 network prefix")]
    InvalidPrefix {
        /// The network address given.
        network: Ipv4Addr,
        /// The prefix length given.
        prefix_len: u8,
    },
    /// The identity already holds an address outside the prefix (the
    /// network was renumbered); release it first.
    #[error("identity already holds {existing}, outside the prefix")]
    OutsidePrefix {
        /// The address it holds.
        existing: Ipv4Addr,
    },
    /// The store failed, or a stored allocation does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for AllocError {
    fn from(e: sled::Error) -> Self {
        AllocError::Store(e.into())
    }
}

/// The host addresses of a prefix, as integers.
#[derive(Debug, Clone, Copy)]
struct Prefix {
    network: u32,
    mask: u32,
}

impl Prefix {
    fn new(network: u32, prefix_len: u8) -> Result<Prefix, AllocError> {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len.min(32)))
            .unwrap_or(0);
        if prefix_len > 32 || network & !mask != 0 {
            return Err(AllocError::InvalidPrefix {
                network: network.into(),
                prefix_len,
            });
        }
        Ok(Prefix { network, mask })
    }

    fn contains(self, address: u32) -> bool {
        address & self.mask == self.network
    }

    /// The first and last host address (the network and broadcast addresses
    /// excluded); `None` for a /31 or /32.
    fn hosts(self) -> Option<(u32, u32)> {
        let broadcast = self.network | !self.mask;
        let first = self.network.checked_add(1)?;
        let last = broadcast.checked_sub(1)?;
        (first <= last).then_some((first, last))
    }
}

fn abort_never(e: TransactionError<Infallible>) -> sled::Error {
    match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(never) => match never {},
    }
}

/// Every `count`-th host address of a prefix, from the `index`-th on
/// (counted from the first host address): the share of one of `count`
/// allocators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    /// Which share, below `count`.
    pub index: u32,
    /// How many shares; 0 counts as 1.
    pub count: u32,
}

impl Stripe {
    /// Every host address.
    pub const ALL: Stripe = Stripe { index: 0, count: 1 };
}

/// The two allocation trees of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Allocations<'s> {
    store: &'s Store,
}

impl<'s> Allocations<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Allocations { store }
    }

    fn by_address(&self) -> &'s sled::Tree {
        &self.store.trees.alloc_by_address
    }

    fn by_identity(&self) -> &'s sled::Tree {
        &self.store.trees.alloc_by_identity
    }

    /// Gives `identity` the lowest free host address of
    /// `prefix_network/prefix_len` that is not in `reserved`, records it and
    /// flushes. If `identity` already holds an address in the prefix, that
    /// one is returned (even if it has since been reserved); one outside it
    /// is [`AllocError::OutsidePrefix`]. Safe to call from many threads: no
    /// address is ever given to two identities.
    pub fn allocate(
        &self,
        prefix_network: u32,
        prefix_len: u8,
        identity: &Identity,
        reserved: &[u32],
    ) -> Result<Ipv4Addr, AllocError> {
        self.allocate_in(prefix_network, prefix_len, identity, reserved, Stripe::ALL)
    }

    /// [`Allocations::allocate`] among the host addresses of `stripe` only
    /// ([`AllocError::Exhausted`] when the stripe is full), so that several
    /// allocators sharing a prefix without talking to each other each hand
    /// out addresses the others do not.
    pub fn allocate_in(
        &self,
        prefix_network: u32,
        prefix_len: u8,
        identity: &Identity,
        reserved: &[u32],
        stripe: Stripe,
    ) -> Result<Ipv4Addr, AllocError> {
        let prefix = Prefix::new(prefix_network, prefix_len)?;
        let mut reserved = reserved.to_vec();
        reserved.sort_unstable();
        loop {
            if let Some(existing) = self.lookup(identity)? {
                return if prefix.contains(existing.into()) {
                    Ok(existing)
                } else {
                    Err(AllocError::OutsidePrefix { existing })
                };
            }
            let (first, last) = prefix.hosts().ok_or(AllocError::Exhausted)?;
            let candidate = self
                .lowest_free(first, last, &reserved, stripe)?
                .ok_or(AllocError::Exhausted)?;
            if self.claim(candidate, identity)? {
                self.store.sync()?;
                debug!(address = %Ipv4Addr::from(candidate), "address allocated");
                return Ok(candidate.into());
            }
            // Another caller took the address or allocated this identity
            // between the scan and the transaction: look again.
        }
    }

    /// The lowest address of `stripe` in `first..=last` neither allocated
    /// nor reserved, from a snapshot; [`Allocations::claim`] re-checks it.
    fn lowest_free(
        &self,
        first: u32,
        last: u32,
        reserved: &[u32],
        stripe: Stripe,
    ) -> Result<Option<u32>, StoreError> {
        let step = u64::from(stripe.count.max(1));
        // u64, so stepping past `last` cannot overflow.
        let skip_reserved = |mut c: u64| {
            while c <= u64::from(last) && reserved.binary_search(&(c as u32)).is_ok() {
                c += step;
            }
            c
        };
        let mut candidate = skip_reserved(u64::from(first) + u64::from(stripe.index) % step);
        // Allocated addresses come in ascending order: walk them alongside
        // the candidate until one is above it.
        for key in self
            .by_address()
            .range(first.to_be_bytes()..=last.to_be_bytes())
            .keys()
        {
            let key = key?;
            let address = match address_key(&key) {
                Ok(address) => u64::from(address),
                Err(e) => {
                    // A stray key of another length; never a candidate.
                    self.store.bad_record(BY_ADDRESS, &key, e);
                    continue;
                }
            };
            if address > candidate {
                break;
            }
            if address == candidate {
                candidate = skip_reserved(candidate + step);
            }
        }
        // Below `last`, a u32, when it converts.
        Ok(u32::try_from(candidate).ok().filter(|&c| c <= last))
    }

    /// Records `address` for `identity` if both are still free; whether it
    /// did.
    fn claim(&self, address: u32, identity: &Identity) -> Result<bool, StoreError> {
        let value = record::encode(&AllocationRecord {
            address: address.into(),
            identity: *identity,
        });
        let key = address.to_be_bytes();
        (self.by_address(), self.by_identity())
            .transaction(|(by_address, by_identity)| {
                if by_identity.get(identity)?.is_some() || by_address.get(key)?.is_some() {
                    return Ok(false);
                }
                by_address.insert(&key, value.clone())?;
                by_identity.insert(identity, value.clone())?;
                Ok::<_, ConflictableTransactionError<Infallible>>(true)
            })
            .map_err(|e| abort_never(e).into())
    }

    /// Frees the address of `identity` and flushes; the address it held, if
    /// any.
    pub fn release(&self, identity: &Identity) -> Result<Option<Ipv4Addr>, StoreError> {
        loop {
            let Some(address) = self.lookup(identity)? else {
                return Ok(None);
            };
            let key = u32::from(address).to_be_bytes();
            let released = (self.by_address(), self.by_identity())
                .transaction(|(by_address, by_identity)| {
                    // Re-check inside the transaction: a concurrent release
                    // (and re-allocation) may have run since the lookup.
                    let Some(value) = by_identity.get(identity)? else {
                        return Ok(false);
                    };
                    if Some(&value) != by_address.get(key)?.as_ref() {
                        return Ok(false);
                    }
                    by_identity.remove(identity)?;
                    by_address.remove(&key)?;
                    Ok::<_, ConflictableTransactionError<Infallible>>(true)
                })
                .map_err(abort_never)?;
            if released {
                self.store.sync()?;
                debug!(%address, "address released");
                return Ok(Some(address));
            }
        }
    }

    /// The address `identity` holds, if any.
    pub fn lookup(&self, identity: &Identity) -> Result<Option<Ipv4Addr>, StoreError> {
        Ok(self
            .store
            .get_record::<AllocationRecord>(self.by_identity(), BY_IDENTITY, identity)?
            .map(|r| r.address))
    }

    /// The identity holding `address`, if any.
    pub fn owner(&self, address: Ipv4Addr) -> Result<Option<Identity>, StoreError> {
        Ok(self
            .store
            .get_record::<AllocationRecord>(
                self.by_address(),
                BY_ADDRESS,
                &u32::from(address).to_be_bytes(),
            )?
            .map(|r| r.identity))
    }

    /// Every decodable allocation, in address order.
    pub fn list(&self) -> Result<Vec<AllocationRecord>, StoreError> {
        Ok(self
            .store
            .list_records(BY_ADDRESS, self.by_address().iter(), address_key)?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    const NET: u32 = u32::from_be_bytes([10, 7, 0, 0]);

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    #[test]
    fn the_first_allocation_is_the_first_host_address() {
        let store = testing::store();
        let got = store
            .allocations()
            .allocate(NET, 24, &[1; 32], &[])
            .unwrap();
        assert_eq!(got, ip(10, 7, 0, 1));
        assert_eq!(store.allocations().lookup(&[1; 32]).unwrap(), Some(got));
        assert_eq!(store.allocations().owner(got).unwrap(), Some([1; 32]));
    }

    #[test]
    fn allocating_twice_for_one_identity_returns_the_same_address() {
        let store = testing::store();
        let a = store.allocations();
        let first = a.allocate(NET, 24, &[1; 32], &[]).unwrap();
        a.allocate(NET, 24, &[2; 32], &[]).unwrap();
        assert_eq!(a.allocate(NET, 24, &[1; 32], &[]).unwrap(), first);
        assert_eq!(a.list().unwrap().len(), 2);
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let store = testing::store();
        let reserved = [u32::from(ip(10, 7, 0, 1)), u32::from(ip(10, 7, 0, 3))];
        let a = store.allocations();
        assert_eq!(
            a.allocate(NET, 24, &[1; 32], &reserved).unwrap(),
            ip(10, 7, 0, 2)
        );
        assert_eq!(
            a.allocate(NET, 24, &[2; 32], &reserved).unwrap(),
            ip(10, 7, 0, 4)
        );
    }

    #[test]
    fn two_stripes_interleave_skip_what_is_held_and_run_out_on_their_own() {
        let (one, two) = (testing::store(), testing::store());
        let first = Stripe { index: 0, count: 2 };
        let second = Stripe { index: 1, count: 2 };
        // Two allocators that never see each other's tables, .1 and .2
        // already held by members both know of.
        let held = [u32::from(ip(10, 7, 0, 1)), u32::from(ip(10, 7, 0, 2))];
        let mut given = Vec::new();
        for i in 0..3u8 {
            given.push(
                one.allocations()
                    .allocate_in(NET, 24, &[10 + i; 32], &held, first),
            );
            given.push(
                two.allocations()
                    .allocate_in(NET, 24, &[20 + i; 32], &held, second),
            );
        }
        let given: Vec<_> = given.into_iter().map(Result::unwrap).collect();
        let expected = [3, 4, 5, 6, 7, 8].map(|d| ip(10, 7, 0, d));
        assert_eq!(given, expected);
        // A /29 has hosts .1 to .6; the second of three stripes holds .2 and .5.
        let store = testing::store();
        let a = store.allocations();
        let stripe = Stripe { index: 1, count: 3 };
        assert_eq!(
            a.allocate_in(NET, 29, &[1; 32], &[], stripe).unwrap(),
            ip(10, 7, 0, 2)
        );
        assert_eq!(
            a.allocate_in(NET, 29, &[2; 32], &[], stripe).unwrap(),
            ip(10, 7, 0, 5)
        );
        assert!(matches!(
            a.allocate_in(NET, 29, &[3; 32], &[], stripe),
            Err(AllocError::Exhausted)
        ));
        assert_eq!(a.allocate(NET, 29, &[3; 32], &[]).unwrap(), ip(10, 7, 0, 1));
    }

    #[test]
    fn a_released_address_is_reused_first() {
        let store = testing::store();
        let a = store.allocations();
        for i in 1..=3u8 {
            a.allocate(NET, 24, &[i; 32], &[]).unwrap();
        }
        assert_eq!(a.release(&[2; 32]).unwrap(), Some(ip(10, 7, 0, 2)));
        assert_eq!(a.release(&[2; 32]).unwrap(), None);
        assert_eq!(a.lookup(&[2; 32]).unwrap(), None);
        assert_eq!(a.owner(ip(10, 7, 0, 2)).unwrap(), None);
        assert_eq!(a.allocate(NET, 24, &[4; 32], &[]).unwrap(), ip(10, 7, 0, 2));
    }

    #[test]
    fn a_slash_30_has_two_hosts_then_is_exhausted() {
        let store = testing::store();
        let a = store.allocations();
        assert_eq!(a.allocate(NET, 30, &[1; 32], &[]).unwrap(), ip(10, 7, 0, 1));
        assert_eq!(a.allocate(NET, 30, &[2; 32], &[]).unwrap(), ip(10, 7, 0, 2));
        assert!(matches!(
            a.allocate(NET, 30, &[3; 32], &[]),
            Err(AllocError::Exhausted)
        ));
    }

    #[test]
    fn prefixes_without_host_addresses_are_exhausted() {
        let store = testing::store();
        for len in [31, 32] {
            assert!(matches!(
                store.allocations().allocate(NET, len, &[1; 32], &[]),
                Err(AllocError::Exhausted)
            ));
        }
    }

    #[test]
    fn the_top_of_the_address_space_allocates_without_overflow() {
        let store = testing::store();
        let a = store.allocations();
        let net = u32::from(ip(255, 255, 255, 252));
        assert_eq!(
            a.allocate(net, 30, &[1; 32], &[]).unwrap(),
            ip(255, 255, 255, 253)
        );
        assert_eq!(
            a.allocate(net, 30, &[2; 32], &[]).unwrap(),
            ip(255, 255, 255, 254)
        );
        assert!(matches!(
            a.allocate(net, 30, &[3; 32], &[]),
            Err(AllocError::Exhausted)
        ));
    }

    #[test]
    fn a_prefix_with_host_bits_or_too_long_is_refused() {
        let store = testing::store();
        let a = store.allocations();
        assert!(matches!(
            a.allocate(NET | 1, 24, &[1; 32], &[]),
            Err(AllocError::InvalidPrefix { prefix_len: 24, .. })
        ));
        assert!(matches!(
            a.allocate(NET, 33, &[1; 32], &[]),
            Err(AllocError::InvalidPrefix { prefix_len: 33, .. })
        ));
    }

    #[test]
    fn an_identity_holding_an_address_elsewhere_is_refused() {
        let store = testing::store();
        let a = store.allocations();
        a.allocate(NET, 24, &[1; 32], &[]).unwrap();
        let other = u32::from(ip(10, 8, 0, 0));
        assert!(matches!(
            a.allocate(other, 24, &[1; 32], &[]),
            Err(AllocError::OutsidePrefix { existing }) if existing == ip(10, 7, 0, 1)
        ));
    }

    #[test]
    fn addresses_outside_the_prefix_do_not_block_it() {
        let store = testing::store();
        let a = store.allocations();
        a.allocate(u32::from(ip(10, 6, 0, 0)), 24, &[1; 32], &[])
            .unwrap();
        a.allocate(u32::from(ip(10, 8, 0, 0)), 24, &[2; 32], &[])
            .unwrap();
        assert_eq!(a.allocate(NET, 24, &[3; 32], &[]).unwrap(), ip(10, 7, 0, 1));
    }

    #[test]
    fn a_corrupt_allocation_still_holds_its_address() {
        let store = testing::store();
        store
            .trees
            .alloc_by_address
            .insert(u32::from(ip(10, 7, 0, 1)).to_be_bytes(), &[0xee])
            .unwrap();
        let a = store.allocations();
        assert_eq!(a.allocate(NET, 24, &[1; 32], &[]).unwrap(), ip(10, 7, 0, 2));
        assert_eq!(a.list().unwrap().len(), 1);
        assert_eq!(store.corrupt_records(), 1);
    }
}
