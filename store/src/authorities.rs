//! The network's authority chain: every signed version of the set of keys
//! that may sign certificates, as the node last adopted it.
//!
//! The store keeps the chain's encoding as the protocol wrote it and
//! checks only its size: whether it verifies from the network's anchor is
//! the daemon's question every time it loads it, so a damaged or forged
//! value on disk is refused there, never trusted. Replaced as a whole, and
//! flushed before `put` returns, so a crash leaves the old chain or the
//! new one.
//!
//! On disk: tree `authorities`, key `chain`, value the chain's encoding
//! (at most [`MAX_CHAIN_LEN`] bytes).

use crate::store::TreeSpec;
use crate::{DecodeError, Store, StoreError};

pub(crate) const TREE: &str = "authorities";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };
const KEY: &[u8] = b"chain";
/// Longest chain stored (the protocol's own limit on a chain's encoding).
pub const MAX_CHAIN_LEN: usize = 48 * 1024;

fn check_value(value: &[u8]) -> Result<(), DecodeError> {
    if value.is_empty() || value.len() > MAX_CHAIN_LEN {
        return Err(DecodeError::ValueLength {
            found: value.len(),
            max: MAX_CHAIN_LEN,
        });
    }
    Ok(())
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    if key != KEY {
        return Err(DecodeError::KeyLength {
            found: key.len(),
            expected: KEY.len(),
        });
    }
    check_value(value)
}

/// The authority chain of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Authorities<'s> {
    store: &'s Store,
}

impl<'s> Authorities<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Authorities { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.authorities
    }

    /// The stored chain's encoding, if any. One of the wrong size is
    /// [`StoreError::Record`].
    pub fn get(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self.tree().get(KEY)? {
            None => Ok(None),
            Some(v) => {
                check_value(&v).map_err(|source| StoreError::Record {
                    tree: TREE,
                    key: crate::error::Hex(KEY.to_vec()),
                    source,
                })?;
                Ok(Some(v.to_vec()))
            }
        }
    }

    /// Replaces the stored chain with `chain` (its encoding) and flushes.
    pub fn put(&self, chain: &[u8]) -> Result<(), StoreError> {
        check_value(chain).map_err(|source| StoreError::Record {
            tree: TREE,
            key: crate::error::Hex(KEY.to_vec()),
            source,
        })?;
        self.tree().insert(KEY, chain)?;
        self.store.sync()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TempDir;
    use crate::{Store, StoreError};

    #[test]
    fn a_chain_survives_reopening_and_is_replaced_whole() {
        let dir = TempDir::new();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.authorities().get().unwrap(), None);
            store.authorities().put(&[1, 2, 3]).unwrap();
            store.authorities().put(&[1, 4]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.authorities().get().unwrap(), Some(vec![1, 4]));
    }

    #[test]
    fn an_empty_or_oversized_chain_is_refused_and_the_stored_one_kept() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        store.authorities().put(&[1, 2]).unwrap();
        assert!(matches!(
            store.authorities().put(&[]),
            Err(StoreError::Record { .. })
        ));
        assert!(matches!(
            store.authorities().put(&vec![1; super::MAX_CHAIN_LEN + 1]),
            Err(StoreError::Record { .. })
        ));
        assert_eq!(store.authorities().get().unwrap(), Some(vec![1, 2]));
    }
}
