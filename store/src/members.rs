//! Known members: identity → [`MemberRecord`] (name, signed certificate,
//! its serial and expiry, when we last updated it). The certificate is kept
//! as the opaque bytes it was received as; this module never interprets it.
//!
//! Writes here are not flushed: a member lost in a crash within sled's flush
//! interval is learned again from the network.
//!
//! On disk: tree `members`, key the 32-byte identity, value a version-1
//! [`MemberRecord`].

use serde::{Deserialize, Serialize};

use crate::record::{self, key32, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Identity, Store, StoreError};

pub(crate) const TREE: &str = "members";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };

/// What the store keeps about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's name, as its certificate states it.
    pub name: String,
    /// The member's signed certificate, opaque to the store.
    pub certificate: Vec<u8>,
    /// The certificate's serial number.
    pub serial: u64,
    /// When the certificate expires, in unix seconds.
    pub expires_unix: u64,
    /// When this record was last written, in unix seconds.
    pub updated_unix: u64,
}

impl Record for MemberRecord {
    const VERSION: u8 = 1;
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    key32(key)?;
    record::decode::<MemberRecord>(value).map(drop)
}

/// The members tree of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Members<'s> {
    store: &'s Store,
}

impl<'s> Members<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Members { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.members
    }

    /// Stores (or replaces) the record of `identity`.
    pub fn put(&self, identity: &Identity, record: &MemberRecord) -> Result<(), StoreError> {
        self.tree().insert(identity, record::encode(record))?;
        tracing::debug!(name = %record.name, serial = record.serial, "member stored");
        Ok(())
    }

    /// The record of `identity`, if any. A stored record that does not
    /// decode is [`StoreError::Record`].
    pub fn get(&self, identity: &Identity) -> Result<Option<MemberRecord>, StoreError> {
        self.store.get_record(self.tree(), TREE, identity)
    }

    /// Removes the record of `identity` (even an undecodable one); whether
    /// there was one.
    pub fn remove(&self, identity: &Identity) -> Result<bool, StoreError> {
        Ok(self.tree().remove(identity)?.is_some())
    }

    /// Every decodable member, by identity; undecodable ones are reported and
    /// skipped.
    pub fn list(&self) -> Result<Vec<(Identity, MemberRecord)>, StoreError> {
        self.store.list_records(TREE, self.tree().iter(), key32)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, member};

    #[test]
    fn a_stored_member_is_read_back() {
        let store = testing::store();
        let members = store.members();
        members.put(&[1; 32], &member("alpha")).unwrap();
        assert_eq!(members.get(&[1; 32]).unwrap(), Some(member("alpha")));
        assert_eq!(members.get(&[2; 32]).unwrap(), None);
    }

    #[test]
    fn putting_again_replaces_the_record() {
        let store = testing::store();
        let members = store.members();
        members.put(&[1; 32], &member("alpha")).unwrap();
        members.put(&[1; 32], &member("beta")).unwrap();
        assert_eq!(members.list().unwrap(), vec![([1; 32], member("beta"))]);
    }

    #[test]
    fn a_removed_member_is_gone() {
        let store = testing::store();
        let members = store.members();
        members.put(&[1; 32], &member("alpha")).unwrap();
        assert!(members.remove(&[1; 32]).unwrap());
        assert!(!members.remove(&[1; 32]).unwrap());
        assert_eq!(members.get(&[1; 32]).unwrap(), None);
    }

    #[test]
    fn members_are_listed_in_identity_order() {
        let store = testing::store();
        let members = store.members();
        for i in [3u8, 1, 2] {
            members.put(&[i; 32], &member(&i.to_string())).unwrap();
        }
        let ids: Vec<u8> = members
            .list()
            .unwrap()
            .iter()
            .map(|(id, _)| id[0])
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn a_corrupt_member_is_skipped_by_list_and_an_error_for_get() {
        let store = testing::store();
        let members = store.members();
        members.put(&[1; 32], &member("alpha")).unwrap();
        members.put(&[3; 32], &member("gamma")).unwrap();
        store.trees.members.insert([2; 32], &[1, 0xff]).unwrap();
        let listed: Vec<String> = members
            .list()
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.name)
            .collect();
        assert_eq!(listed, ["alpha", "gamma"]);
        assert!(matches!(
            members.get(&[2; 32]),
            Err(crate::StoreError::Record {
                tree: "members",
                ..
            })
        ));
        assert_eq!(store.corrupt_records(), 1);
        assert!(
            store.trees.members.contains_key([2; 32]).unwrap(),
            "left in place"
        );
    }

    #[test]
    fn a_key_of_the_wrong_length_is_skipped_by_list() {
        let store = testing::store();
        store.members().put(&[1; 32], &member("alpha")).unwrap();
        store
            .trees
            .members
            .insert([9; 5], crate::record::encode(&member("odd")))
            .unwrap();
        assert_eq!(store.members().list().unwrap().len(), 1);
        assert_eq!(store.corrupt_records(), 1);
    }
}
