//! Learned paths: (from, to) identity pair → [`PathRecord`] (the endpoint
//! that worked, its path MTU and RTT, the NAT type seen, when it was
//! measured, and whether we measured it ourselves or a peer reported it).
//! They let a restarted node try known-good endpoints and MTUs first.
//!
//! Writes here are not flushed: a path lost in a crash is measured again.
//! [`Paths::expire`] drops stale paths but never an undecodable record.
//!
//! On disk: tree `paths`, key the 32-byte `from` identity followed by the
//! 32-byte `to` identity (so one node's paths are a key prefix), value a
//! version-1 [`PathRecord`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::record::{self, key32, Record};
use crate::store::TreeSpec;
use crate::{DecodeError, Identity, Store, StoreError};

pub(crate) const TREE: &str = "paths";
pub(crate) const SPEC: TreeSpec = TreeSpec { name: TREE, check };

/// A path measurement from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    /// The endpoint `to` was reached at.
    pub endpoint: SocketAddr,
    /// The path MTU found, in bytes.
    pub pmtu: u16,
    /// The smoothed round-trip time, in microseconds.
    pub rtt_us: u32,
    /// The NAT behaviour seen on the path, if classified.
    pub nat: Option<String>,
    /// When it was measured, in unix seconds.
    pub measured_unix: u64,
    /// Whether this node measured it or held a session over it (rather
    /// than a peer reporting it).
    pub own: bool,
}

impl PathRecord {
    /// An endpoint `to` was reached at, with nothing measured on it yet.
    pub fn unmeasured(endpoint: SocketAddr, measured_unix: u64) -> Self {
        Self {
            endpoint,
            pmtu: 0,
            rtt_us: 0,
            nat: None,
            measured_unix,
            own: false,
        }
    }
}

impl Record for PathRecord {
    const VERSION: u8 = 1;
}

fn path_key(from: &Identity, to: &Identity) -> [u8; 64] {
    let mut key = [0; 64];
    key[..32].copy_from_slice(from);
    key[32..].copy_from_slice(to);
    key
}

/// Splits a key into (from, to).
fn split_key(key: &[u8]) -> Result<(Identity, Identity), DecodeError> {
    if key.len() != 64 {
        return Err(DecodeError::KeyLength {
            found: key.len(),
            expected: 64,
        });
    }
    Ok((key32(&key[..32])?, key32(&key[32..])?))
}

fn check(key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
    split_key(key)?;
    record::decode::<PathRecord>(value).map(drop)
}

/// The paths tree of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Paths<'s> {
    store: &'s Store,
}

impl<'s> Paths<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Paths { store }
    }

    fn tree(&self) -> &'s sled::Tree {
        &self.store.trees.paths
    }

    /// Stores (or replaces) the path from `from` to `to`.
    pub fn put(
        &self,
        from: &Identity,
        to: &Identity,
        record: &PathRecord,
    ) -> Result<(), StoreError> {
        self.tree()
            .insert(path_key(from, to), record::encode(record))?;
        tracing::trace!(endpoint = %record.endpoint, pmtu = record.pmtu, "path stored");
        Ok(())
    }

    /// The path from `from` to `to`, if any. A stored record that does not
    /// decode is [`StoreError::Record`].
    pub fn get(&self, from: &Identity, to: &Identity) -> Result<Option<PathRecord>, StoreError> {
        self.store
            .get_record(self.tree(), TREE, &path_key(from, to))
    }

    /// Removes the path from `from` to `to`; whether there was one.
    pub fn remove(&self, from: &Identity, to: &Identity) -> Result<bool, StoreError> {
        Ok(self.tree().remove(path_key(from, to))?.is_some())
    }

    /// Every decodable path from `from`, by destination identity.
    pub fn list_from(&self, from: &Identity) -> Result<Vec<(Identity, PathRecord)>, StoreError> {
        self.store
            .list_records(TREE, self.tree().scan_prefix(from), |key| {
                split_key(key).map(|(_, to)| to)
            })
    }

    /// Removes every path measured before `older_than_unix`, returning how
    /// many went. A path re-measured concurrently is kept, and an
    /// undecodable one is left in place.
    pub fn expire(&self, older_than_unix: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.tree().iter() {
            let (key, value) = entry?;
            let Ok(path) = self.store.decode::<PathRecord>(TREE, &key, &value) else {
                continue;
            };
            if path.measured_unix >= older_than_unix {
                continue;
            }
            // Only if unchanged since read: a fresh measurement wins.
            if self
                .tree()
                .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                .is_ok()
            {
                removed += 1;
            }
        }
        if removed > 0 {
            debug!(removed, older_than_unix, "stale paths expired");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn path(port: u16, measured_unix: u64) -> PathRecord {
        PathRecord {
            endpoint: SocketAddr::from(([192, 0, 2, 1], port)),
            pmtu: 1420,
            rtt_us: 12_500,
            nat: Some("endpoint-independent".into()),
            measured_unix,
            own: true,
        }
    }

    #[test]
    fn a_stored_path_is_read_back() {
        let store = testing::store();
        let paths = store.paths();
        paths.put(&[1; 32], &[2; 32], &path(51820, 100)).unwrap();
        assert_eq!(
            paths.get(&[1; 32], &[2; 32]).unwrap(),
            Some(path(51820, 100))
        );
        assert_eq!(paths.get(&[2; 32], &[1; 32]).unwrap(), None);
    }

    #[test]
    fn an_ipv6_endpoint_round_trips() {
        let store = testing::store();
        let mut p = path(1, 1);
        p.endpoint = "[2001:db8::1]:443".parse().unwrap();
        p.nat = None;
        p.own = false;
        store.paths().put(&[1; 32], &[2; 32], &p).unwrap();
        assert_eq!(store.paths().get(&[1; 32], &[2; 32]).unwrap(), Some(p));
    }

    #[test]
    fn list_from_returns_only_that_nodes_paths() {
        let store = testing::store();
        let paths = store.paths();
        paths.put(&[1; 32], &[2; 32], &path(1, 100)).unwrap();
        paths.put(&[1; 32], &[3; 32], &path(2, 100)).unwrap();
        paths.put(&[2; 32], &[1; 32], &path(3, 100)).unwrap();
        let from_1: Vec<(u8, u16)> = paths
            .list_from(&[1; 32])
            .unwrap()
            .into_iter()
            .map(|(to, p)| (to[0], p.endpoint.port()))
            .collect();
        assert_eq!(from_1, [(2, 1), (3, 2)]);
    }

    #[test]
    fn expiry_removes_only_paths_measured_before_the_cutoff() {
        let store = testing::store();
        let paths = store.paths();
        paths.put(&[1; 32], &[2; 32], &path(1, 99)).unwrap();
        paths.put(&[1; 32], &[3; 32], &path(2, 100)).unwrap();
        paths.put(&[1; 32], &[4; 32], &path(3, 101)).unwrap();
        assert_eq!(paths.expire(100).unwrap(), 1);
        assert_eq!(paths.get(&[1; 32], &[2; 32]).unwrap(), None);
        assert_eq!(paths.list_from(&[1; 32]).unwrap().len(), 2);
        assert_eq!(paths.expire(100).unwrap(), 0);
    }

    #[test]
    fn expiry_leaves_an_undecodable_path_in_place() {
        let store = testing::store();
        store
            .trees
            .paths
            .insert(path_key(&[1; 32], &[2; 32]), &[1])
            .unwrap();
        assert_eq!(store.paths().expire(u64::MAX).unwrap(), 0);
        assert_eq!(store.trees.paths.len(), 1);
        assert_eq!(store.corrupt_records(), 1);
    }
}
