//! Issued invites: hash of the invite secret → [`InviteRecord`] (an
//! optional name for the invitee, the expiry, and once redeemed when and by
//! whom). The secret itself is never stored.
//!
//! An invite is redeemed at most once, even by concurrent callers:
//! [`Invites::redeem`] changes the record with a compare-and-swap on the
//! exact bytes it checked, and re-checks if another writer got there first.
//! [`Invites::add`], [`Invites::redeem`] and [`Invites::remove`] flush before
//! they return, so an invite that was reported redeemed stays redeemed
//! after a crash.
//!
//! On disk: tree `invites`, key the 32-byte secret hash, value a version-1
//! [`InviteRecord`].

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::record::{self, key32, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Identity, Store, StoreError};

pub(crate) const TREE: &str = "invites";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };

/// One invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// The name the invitee will get, if the inviter chose one.
    pub name: Option<String>,
    /// The invite can be redeemed while the time is before this, in unix
    /// seconds.
    pub expires_unix: u64,
    /// When it was redeemed, in unix seconds.
    pub used_unix: Option<u64>,
    /// The identity that redeemed it.
    pub used_by: Option<Identity>,
}

impl Record for InviteRecord {
    const VERSION: u8 = 1;
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    key32(key)?;
    record::decode::<InviteRecord>(value).map(drop)
}

/// Why an invite could not be added or redeemed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// [`Invites::redeem`]: no invite has this hash (never issued, or
    /// removed).
    #[error("unknown invite")]
    Unknown,
    /// [`Invites::redeem`]: the invite was already redeemed.
    #[error("invite already used at unix time {at}")]
    AlreadyUsed {
        /// When it was redeemed, in unix seconds.
        at: u64,
    },
    /// [`Invites::redeem`]: the invite expired before it was redeemed.
    #[error("invite expired at unix time {at}")]
    Expired {
        /// Its expiry, in unix seconds.
        at: u64,
    },
    /// [`Invites::add`]: an invite with this hash already exists; it was left
    /// as it was.
    #[error("an invite with this hash already exists")]
    Exists,
    /// The store failed, or the stored invite does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for InviteError {
    fn from(e: sled::Error) -> Self {
        InviteError::Store(e.into())
    }
}

/// The invites tree of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Invites<'s> {
    store: &'s Store,
}

impl<'s> Invites<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Invites { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.invites
    }

    /// Stores a new invite under the hash of its secret and flushes. Refused
    /// with [`InviteError::Exists`] if the hash is taken, so a used invite can
    /// never be reset by adding it again.
    pub fn add(&self, hash: &[u8; 32], record: &InviteRecord) -> Result<(), InviteError> {
        let swapped =
            self.tree()
                .compare_and_swap(hash, None::<&[u8]>, Some(record::encode(record)))?;
        if swapped.is_err() {
            return Err(InviteError::Exists);
        }
        self.store.sync()?;
        debug!(name = ?record.name, expires_unix = record.expires_unix, "invite added");
        Ok(())
    }

    /// Marks the invite `hash` as redeemed by `by` at `now_unix` and flushes,
    /// returning the updated record. Of any number of concurrent redeems of
    /// one invite, exactly one succeeds; the others see
    /// [`InviteError::AlreadyUsed`].
    ///
    /// If the final flush fails the redemption may or may not have reached
    /// the disk; the caller must treat the invite as spent.
    pub fn redeem(
        &self,
        hash: &[u8; 32],
        by: &Identity,
        now_unix: u64,
    ) -> Result<InviteRecord, InviteError> {
        loop {
            let current = self.tree().get(hash)?.ok_or(InviteError::Unknown)?;
            let invite: InviteRecord = self.store.decode(TREE, hash, &current)?;
            if let Some(at) = invite.used_unix {
                return Err(InviteError::AlreadyUsed { at });
            }
            if now_unix >= invite.expires_unix {
                return Err(InviteError::Expired {
                    at: invite.expires_unix,
                });
            }
            let redeemed = InviteRecord {
                used_unix: Some(now_unix),
                used_by: Some(*by),
                ..invite
            };
            let swapped = self.tree().compare_and_swap(
                hash,
                Some(&current),
                Some(record::encode(&redeemed)),
            )?;
            if swapped.is_err() {
                // Changed since we read it: decide again on what is there now.
                continue;
            }
            self.store.sync()?;
            info!(name = ?redeemed.name, "invite redeemed");
            return Ok(redeemed);
        }
    }

    /// The invite `hash`, if any. A stored record that does not decode is
    /// [`StoreError::Record`].
    pub fn get(&self, hash: &[u8; 32]) -> Result<Option<InviteRecord>, StoreError> {
        self.store.get_record(self.tree(), TREE, hash)
    }

    /// Removes the invite `hash` (even an undecodable one) and flushes;
    /// whether there was one.
    pub fn remove(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let removed = self.tree().remove(hash)?.is_some();
        self.store.sync()?;
        Ok(removed)
    }

    /// Every decodable invite, by hash; undecodable ones are reported and
    /// skipped.
    pub fn list(&self) -> Result<Vec<([u8; 32], InviteRecord)>, StoreError> {
        self.store.list_records(TREE, self.tree().iter(), key32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn invite(expires_unix: u64) -> InviteRecord {
        InviteRecord {
            name: Some("laptop".into()),
            expires_unix,
            used_unix: None,
            used_by: None,
        }
    }

    #[test]
    fn an_invite_is_redeemed_once_and_records_who_and_when() {
        let store = testing::store();
        let invites = store.invites();
        invites.add(&[1; 32], &invite(2_000)).unwrap();
        let redeemed = invites.redeem(&[1; 32], &[7; 32], 1_000).unwrap();
        assert_eq!(redeemed.used_unix, Some(1_000));
        assert_eq!(redeemed.used_by, Some([7; 32]));
        assert_eq!(invites.get(&[1; 32]).unwrap(), Some(redeemed));
        assert!(matches!(
            invites.redeem(&[1; 32], &[8; 32], 1_001),
            Err(InviteError::AlreadyUsed { at: 1_000 })
        ));
    }

    #[test]
    fn an_unknown_invite_is_refused() {
        let store = testing::store();
        assert!(matches!(
            store.invites().redeem(&[1; 32], &[7; 32], 1_000),
            Err(InviteError::Unknown)
        ));
    }

    #[test]
    fn an_invite_is_expired_from_its_expiry_second_on() {
        let store = testing::store();
        let invites = store.invites();
        invites.add(&[1; 32], &invite(2_000)).unwrap();
        assert!(matches!(
            invites.redeem(&[1; 32], &[7; 32], 2_000),
            Err(InviteError::Expired { at: 2_000 })
        ));
        assert_eq!(invites.get(&[1; 32]).unwrap(), Some(invite(2_000)));
        invites.redeem(&[1; 32], &[7; 32], 1_999).unwrap();
    }

    #[test]
    fn adding_an_existing_invite_is_refused_and_keeps_it_used() {
        let store = testing::store();
        let invites = store.invites();
        invites.add(&[1; 32], &invite(2_000)).unwrap();
        invites.redeem(&[1; 32], &[7; 32], 1_000).unwrap();
        assert!(matches!(
            invites.add(&[1; 32], &invite(3_000)),
            Err(InviteError::Exists)
        ));
        assert_eq!(
            invites.get(&[1; 32]).unwrap().unwrap().used_unix,
            Some(1_000)
        );
    }

    #[test]
    fn a_corrupt_invite_cannot_be_redeemed() {
        let store = testing::store();
        store
            .trees
            .invites
            .insert([1; 32], &[1, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            store.invites().redeem(&[1; 32], &[7; 32], 1_000),
            Err(InviteError::Store(StoreError::Record {
                tree: "invites",
                ..
            }))
        ));
        assert_eq!(store.corrupt_records(), 1);
    }

    #[test]
    fn a_removed_invite_is_unknown() {
        let store = testing::store();
        let invites = store.invites();
        invites.add(&[1; 32], &invite(2_000)).unwrap();
        assert!(invites.remove(&[1; 32]).unwrap());
        assert!(matches!(
            invites.redeem(&[1; 32], &[7; 32], 1_000),
            Err(InviteError::Unknown)
        ));
        assert_eq!(invites.list().unwrap(), vec![]);
    }
}
