//! Gossip sequence numbers that only grow, across restarts and whatever the
//! wall clock does.
//!
//! Every record a member signs carries a sequence number, and members
//! refuse a record whose number is not above the last one they accepted
//! from its origin. A restarted member must therefore start above every
//! number its previous run used. The daemon reserves numbers in blocks: it
//! stores the end of the block it is about to use (flushed) before it uses
//! any number in it, and the next run starts at the stored end. A crash
//! wastes at most the rest of a block; it never reuses a number.
//!
//! On disk: tree `sequence`, key `records`, value the reserved end as an
//! 8-byte big-endian number.

use crate::store::TreeSpec;
use crate::{DecodeError, Store, StoreError};

pub(crate) const TREE: &str = "sequence";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };
const KEY: &[u8] = b"records";

fn decode(value: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| DecodeError::KeyLength {
        found: value.len(),
        expected: 8,
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    if key != KEY {
        return Err(DecodeError::KeyLength {
            found: key.len(),
            expected: KEY.len(),
        });
    }
    decode(value).map(drop)
}

/// The sequence reservation of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'s> {
    store: &'s Store,
}

impl<'s> Sequence<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Sequence { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.sequence
    }

    /// The end of the last reserved block: every number the previous runs
    /// used is below it (0 when nothing was ever reserved). A damaged value
    /// is [`StoreError::Record`].
    pub fn reserved(&self) -> Result<u64, StoreError> {
        match self.tree().get(KEY)? {
            None => Ok(0),
            Some(v) => decode(&v).map_err(|source| StoreError::Record {
                tree: TREE,
                key: crate::error::Hex(KEY.to_vec()),
                source,
            }),
        }
    }

    /// Reserves every number below `end` and flushes: once this returns
    /// `Ok`, no later run starts below `end`. A lower `end` than the one
    /// stored changes nothing.
    pub fn reserve(&self, end: u64) -> Result<(), StoreError> {
        let current = self.reserved().unwrap_or(0);
        if end <= current {
            return Ok(());
        }
        self.tree().insert(KEY, &end.to_be_bytes())?;
        self.store.sync()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TempDir;
    use crate::Store;

    #[test]
    fn a_reservation_survives_reopening_and_never_goes_down() {
        let dir = TempDir::new();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.sequence().reserved().unwrap(), 0);
            store.sequence().reserve(1_000).unwrap();
            store.sequence().reserve(500).unwrap();
            assert_eq!(store.sequence().reserved().unwrap(), 1_000);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.sequence().reserved().unwrap(), 1_000);
    }
}
