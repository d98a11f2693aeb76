//! Revoked identities: identity → [`RevocationRecord`] (the revoked
//! certificate's serial, when, and the signed revocation to pass on).
//!
//! [`Revocations::revoke`] flushes before it returns: a revocation forgotten
//! in a crash would let the revoked node back in. [`Revocations::is_revoked`]
//! fails closed: an identity with a stored revocation is revoked even if that
//! record no longer decodes. There is no un-revoke.
//!
//! On disk: tree `revocations`, key the 32-byte identity, value a version-1
//! [`RevocationRecord`].

use serde::{Deserialize, Serialize};

use crate::record::{self, key32, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Identity, Store, StoreError};

pub(crate) const TREE: &str = "revocations";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The serial of the revoked certificate.
    pub serial: u64,
    /// When it was revoked, in unix seconds.
    pub revoked_unix: u64,
    /// The signed revocation, opaque to the store.
    pub signed: Vec<u8>,
}

impl Record for RevocationRecord {
    const VERSION: u8 = 1;
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    key32(key)?;
    record::decode::<RevocationRecord>(value).map(drop)
}

/// The revocations tree of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Revocations<'s> {
    store: &'s Store,
}

impl<'s> Revocations<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Revocations { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.revocations
    }

    /// Records that `identity` is revoked (replacing an earlier revocation of
    /// it) and flushes: once this returns `Ok`, the revocation survives a
    /// crash.
    pub fn revoke(&self, identity: &Identity, record: &RevocationRecord) -> Result<(), StoreError> {
        self.tree().insert(identity, record::encode(record))?;
        self.store.sync()?;
        tracing::info!(serial = record.serial, "identity revoked");
        Ok(())
    }

    /// Whether `identity` is revoked. Only the key is looked at, so a
    /// revocation whose record is corrupt still counts.
    pub fn is_revoked(&self, identity: &Identity) -> Result<bool, StoreError> {
        Ok(self.tree().contains_key(identity)?)
    }

    /// The revocation of `identity`, if any. A stored record that does not
    /// decode is [`StoreError::Record`].
    pub fn get(&self, identity: &Identity) -> Result<Option<RevocationRecord>, StoreError> {
        self.store.get_record(self.tree(), TREE, identity)
    }

    /// Every decodable revocation, by identity; undecodable ones are reported
    /// and skipped (use [`Revocations::is_revoked`] to check one identity).
    pub fn list(&self) -> Result<Vec<(Identity, RevocationRecord)>, StoreError> {
        self.store.list_records(TREE, self.tree().iter(), key32)
    }

    /// Every revoked identity, whether or not its record decodes: what a
    /// node must keep out (a revocation fails closed).
    pub fn identities(&self) -> Result<Vec<Identity>, StoreError> {
        let mut ids = Vec::new();
        for key in self.tree().iter().keys() {
            if let Ok(id) = Identity::try_from(key?.as_ref()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn revocation(serial: u64) -> RevocationRecord {
        RevocationRecord {
            serial,
            revoked_unix: 1_700_000_100,
            signed: vec![0x5e; 64],
        }
    }

    #[test]
    fn a_revoked_identity_is_revoked_and_others_are_not() {
        let store = testing::store();
        let revocations = store.revocations();
        revocations.revoke(&[1; 32], &revocation(4)).unwrap();
        assert!(revocations.is_revoked(&[1; 32]).unwrap());
        assert!(!revocations.is_revoked(&[2; 32]).unwrap());
        assert_eq!(revocations.get(&[1; 32]).unwrap(), Some(revocation(4)));
        assert_eq!(revocations.list().unwrap(), vec![([1; 32], revocation(4))]);
    }

    #[test]
    fn revoking_again_replaces_the_record() {
        let store = testing::store();
        let revocations = store.revocations();
        revocations.revoke(&[1; 32], &revocation(4)).unwrap();
        revocations.revoke(&[1; 32], &revocation(5)).unwrap();
        assert_eq!(revocations.get(&[1; 32]).unwrap(), Some(revocation(5)));
    }

    #[test]
    fn a_corrupt_revocation_still_revokes() {
        let store = testing::store();
        store.trees.revocations.insert([1; 32], &[9, 9, 9]).unwrap();
        assert!(store.revocations().is_revoked(&[1; 32]).unwrap());
        assert!(store.revocations().get(&[1; 32]).is_err());
        assert_eq!(store.revocations().list().unwrap(), vec![]);
        assert_eq!(store.revocations().identities().unwrap(), vec![[1; 32]]);
    }
}
