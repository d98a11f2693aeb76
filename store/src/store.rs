//! [`Store`]: opening (state file, sled, schema check, migrations), the
//! open-time scan, clean shutdown, and the decoding helpers every entity
//! module goes through so that a bad record is reported and counted in one
//! place. It owns the sled database; nothing else may hold it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use tracing::{info, warn};

use crate::error::Hex;
use crate::manifest::{self, State};
use crate::migrations::{self, META_TREE, SCHEMA_VERSION};
use crate::record::{self, Record};
use crate::{
    allocations, authorities, invites, members, nat, paths, revocations, sequence, Allocations,
    Authorities, DecodeError, Invites, Members, NatLifetimes, Paths, Revocations, Sequence,
    StoreError,
};

/// One entity tree and how to check its entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TreeSpec {
    pub(crate) name: &'static str,
    /// Decodes one entry's key and value, discarding the result.
    pub(crate) check: fn(&[u8], &[u8]) -> Result<(), DecodeError>,
}

/// Every entity tree, in the order the open-time scan visits them.
pub(crate) const ENTITY_TREES: [TreeSpec; 9] = [
    members::SPEC,
    revocations::SPEC,
    invites::SPEC,
    allocations::BY_ADDRESS_SPEC,
    allocations::BY_IDENTITY_SPEC,
    paths::SPEC,
    nat::SPEC,
    sequence::SPEC,
    authorities::SPEC,
];

/// weft's persistent state: one sled database in one directory.
///
/// Share it by reference (it is `Sync`); the entity accessors
/// ([`Store::members`], [`Store::invites`], ...) borrow it. Dropping it
/// shuts it down cleanly like [`Store::close`], logging instead of returning
/// an error.
pub struct Store {
    db: sled::Db,
    /// sled's data file, for [`Store::sync`].
    db_file: fs::File,
    pub(crate) trees: Trees,
    path: PathBuf,
    schema: u32,
    corrupt: Corruption,
    closed: bool,
}

/// The open sled trees.
pub(crate) struct Trees {
    pub(crate) members: sled::Tree,
    pub(crate) revocations: sled::Tree,
    pub(crate) invites: sled::Tree,
    pub(crate) alloc_by_address: sled::Tree,
    pub(crate) alloc_by_identity: sled::Tree,
    pub(crate) paths: sled::Tree,
    pub(crate) nat: sled::Tree,
    pub(crate) sequence: sled::Tree,
    pub(crate) authorities: sled::Tree,
}

impl Store {
    /// Opens the store in directory `path`, creating it if it does not
    /// exist or is empty, and migrates it to this build's schema.
    ///
    /// Refused, without changing anything:
    /// - [`StoreError::NewerSchema`] if a newer weft wrote it;
    /// - [`StoreError::Corrupt`] if `path` is not a directory, holds files
    ///   but no `weft-store.state` (not a weft store), sled cannot open it,
    ///   or records were lost since the last clean shutdown (the `db` file was
    ///   truncated or overwritten: sled itself would open it as empty);
    /// - [`StoreError::Locked`] if it is open elsewhere.
    ///
    /// Every record is decoded once while opening, so
    /// [`Store::corrupt_records`] counts the bad ones from the start.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(corrupt(path, "it is not a directory".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(|source| StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let state = manifest::read(path)?;
        if state.is_none() {
            if !manifest::is_empty_dir(path)? {
                return Err(corrupt(
                    path,
                    format!(
                        "the directory holds files but no {}: it is not a weft store, \
                         or its state file was lost",
                        manifest::FILE_NAME
                    ),
                ));
            }
            manifest::write(path, &State::Creating)?;
        }

        let db = open_sled(path)?;
        let initialised = matches!(state, Some(State::Open { .. } | State::Closed { .. }));
        let lost = |what: &str| {
            corrupt(
                path,
                format!("it was initialised but {what}: the db file was truncated or overwritten"),
            )
        };
        if initialised && !has_tree(&db, META_TREE) {
            return Err(lost("its meta tree is gone"));
        }
        let meta = db.open_tree(META_TREE)?;
        let found = migrations::read_version(&meta).map_err(|e| match e {
            migrations::ReadError::Database(e) => StoreError::Database(e),
            migrations::ReadError::Malformed(len) => corrupt(
                path,
                format!("its schema_version value is {len} bytes, not 4"),
            ),
        })?;
        if let Some(found) = found.filter(|&v| v > SCHEMA_VERSION) {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        match (&state, found) {
            (Some(State::Open { .. } | State::Closed { .. }), None) => {
                return Err(lost("it holds no schema version"));
            }
            (Some(State::Open { schema } | State::Closed { schema, .. }), Some(found))
                if found < *schema =>
            {
                return Err(lost(&format!(
                    "its schema version went back from {schema} to {found}"
                )));
            }
            _ => {}
        }

        let corruption = Corruption::default();
        let counts = scan(&db, &corruption)?;
        if let Some(State::Closed {
            counts: recorded, ..
        }) = &state
        {
            if let Some(why) = count_mismatch(recorded, &counts) {
                return Err(lost(&why));
            }
        }

        let schema = migrations::run(&db, &meta, found.unwrap_or(0))?;
        let trees = Trees::open(&db)
            .map_err(|name| corrupt(path, format!("tree {name} is missing after migrations")))?;
        let db_path = path.join("db");
        let db_file = fs::File::open(&db_path).map_err(|source| StoreError::Io {
            path: db_path,
            source,
        })?;
        let store = Store {
            db,
            db_file,
            trees,
            path: path.to_path_buf(),
            schema,
            corrupt: corruption,
            closed: false,
        };
        // The migrations must be on disk before the state file says the
        // store is initialised.
        store.sync()?;
        manifest::write(path, &State::Open { schema })?;
        info!(
            path = %path.display(),
            schema,
            members = store.trees.members.len(),
            invites = store.trees.invites.len(),
            allocations = store.trees.alloc_by_address.len(),
            paths = store.trees.paths.len(),
            corrupt_records = store.corrupt_records(),
            after_crash = matches!(state, Some(State::Open { .. })),
            "store opened"
        );
        Ok(store)
    }

    /// Writes every buffered change to disk and waits until it is durable:
    /// sled's flush, then an fsync of its data file (sled 0.34's flush alone
    /// uses `sync_file_range` on Linux, which does not survive a power cut).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.sync()
    }

    /// Makes every write so far durable: sled's flush, then an fsync of its
    /// data file. sled 0.34's own flush ends on Linux with
    /// `sync_file_range`, which neither flushes the drive's write cache nor
    /// the file's size and metadata, so it survives a killed process but
    /// not necessarily a power cut; the fsync closes that gap. (Values
    /// larger than about 8 KiB can be moved to sled blob files, which sled
    /// does not fsync; weft's records are far smaller.)
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.db_file.sync_all().map_err(|source| StoreError::Io {
            path: self.path.join("db"),
            source,
        })
    }

    /// Flushes and records a clean shutdown (with each tree's record count,
    /// checked at the next open). Dropping the store does the same but can
    /// only log a failure.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.closed = true;
        self.shut_down()
    }

    fn shut_down(&self) -> Result<(), StoreError> {
        // Durable before the state file vouches for the counts.
        self.sync()?;
        let mut counts = BTreeMap::new();
        for name in std::iter::once(META_TREE).chain(ENTITY_TREES.iter().map(|t| t.name)) {
            counts.insert(name.to_owned(), self.db.open_tree(name)?.len() as u64);
        }
        manifest::write(
            &self.path,
            &State::Closed {
                schema: self.schema,
                counts,
            },
        )
    }

    /// How many distinct stored records were found undecodable since this
    /// store was opened (all of them are checked while opening). They are
    /// left in place; overwriting or removing one does not lower the count.
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt.count()
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open store (always [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> u32 {
        self.schema
    }

    /// Known members and their certificates.
    pub fn members(&self) -> Members<'_> {
        Members::new(self)
    }

    /// Revoked identities.
    pub fn revocations(&self) -> Revocations<'_> {
        Revocations::new(self)
    }

    /// Issued invites and their redemption.
    pub fn invites(&self) -> Invites<'_> {
        Invites::new(self)
    }

    /// Overlay address allocations.
    pub fn allocations(&self) -> Allocations<'_> {
        Allocations::new(self)
    }

    /// Learned paths between nodes.
    pub fn paths(&self) -> Paths<'_> {
        Paths::new(self)
    }

    /// The NAT mapping lifetimes.
    pub fn nat(&self) -> NatLifetimes<'_> {
        NatLifetimes::new(self)
    }

    /// The network's authority chain.
    pub fn authorities(&self) -> Authorities<'_> {
        Authorities::new(self)
    }

    /// The gossip sequence reservation.
    pub fn sequence(&self) -> Sequence<'_> {
        Sequence::new(self)
    }

    /// Decodes a value of `tree`, reporting it if it does not decode.
    pub(crate) fn decode<R: Record>(
        &self,
        tree: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<R, StoreError> {
        record::decode(value).map_err(|e| self.bad_record(tree, key, e))
    }

    /// Reports and counts one undecodable entry, returning the error a
    /// lookup gives for it.
    pub(crate) fn bad_record(
        &self,
        tree: &'static str,
        key: &[u8],
        source: DecodeError,
    ) -> StoreError {
        self.corrupt.report(tree, key, &source);
        StoreError::Record {
            tree,
            key: Hex(key.to_vec()),
            source,
        }
    }

    /// Reads and decodes one record.
    pub(crate) fn get_record<R: Record>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<R>, StoreError> {
        match tree.get(key)? {
            Some(value) => self.decode(name, key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes every entry `entries` yields, skipping (after reporting) the
    /// ones whose key or value does not decode.
    pub(crate) fn list_records<K, R: Record>(
        &self,
        name: &'static str,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        decode_key: impl Fn(&[u8]) -> Result<K, DecodeError>,
    ) -> Result<Vec<(K, R)>, StoreError> {
        let mut out = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let k = match decode_key(&key) {
                Ok(k) => k,
                Err(e) => {
                    self.bad_record(name, &key, e);
                    continue;
                }
            };
            if let Ok(record) = self.decode(name, &key, &value) {
                out.push((k, record));
            }
        }
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.closed {
            if let Err(e) = self.shut_down() {
                warn!(path = %self.path.display(), error = %e, "store not shut down cleanly");
            }
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("schema", &self.schema)
            .field("corrupt_records", &self.corrupt_records())
            .finish_non_exhaustive()
    }
}

impl Trees {
    /// Opens the entity trees, which the migrations created; `Err` names one
    /// that does not exist.
    fn open(db: &sled::Db) -> Result<Trees, &'static str> {
        let tree = |name: &'static str| {
            if has_tree(db, name) {
                db.open_tree(name).map_err(|_| name)
            } else {
                Err(name)
            }
        };
        Ok(Trees {
            members: tree(members::TREE)?,
            revocations: tree(revocations::TREE)?,
            invites: tree(invites::TREE)?,
            alloc_by_address: tree(allocations::BY_ADDRESS)?,
            alloc_by_identity: tree(allocations::BY_IDENTITY)?,
            paths: tree(paths::TREE)?,
            nat: tree(nat::TREE)?,
            sequence: tree(sequence::TREE)?,
            authorities: tree(authorities::TREE)?,
        })
    }
}

/// Distinct undecodable entries seen since the store was opened.
#[derive(Debug, Default)]
struct Corruption {
    seen: Mutex<HashSet<(&'static str, Vec<u8>)>>,
}

impl Corruption {
    fn report(&self, tree: &'static str, key: &[u8], error: &DecodeError) {
        // A panic elsewhere while holding the lock leaves the set valid.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.insert((tree, key.to_vec())) {
            warn!(tree, key = %Hex(key.to_vec()), %error, "undecodable record skipped; it is left in place");
        }
    }

    fn count(&self) -> u64 {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
    }
}

fn corrupt(path: &Path, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

fn has_tree(db: &sled::Db, name: &str) -> bool {
    db.tree_names().iter().any(|n| n == name.as_bytes())
}

/// Opens sled, turning its errors (and, should it panic on a damaged file,
/// its panics) into [`StoreError`]s.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(path);
    let opened = panic::catch_unwind(AssertUnwindSafe(|| config.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        // sled 0.34 reports a held lock only through this message.
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
            Err(StoreError::Locked {
                path: path.to_path_buf(),
                source: sled::Error::Io(e),
            })
        }
        Ok(Err(sled::Error::Io(source))) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Ok(Err(e)) => Err(corrupt(path, format!("sled cannot open it: {e}"))),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(corrupt(
                path,
                format!("sled panicked opening it: {message}"),
            ))
        }
    }
}

/// Counts every tree's entries and decodes every entity record, reporting
/// the bad ones.
fn scan(db: &sled::Db, corruption: &Corruption) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    if has_tree(db, META_TREE) {
        counts.insert(META_TREE.to_owned(), db.open_tree(META_TREE)?.len() as u64);
    }
    for spec in ENTITY_TREES {
        if !has_tree(db, spec.name) {
            continue;
        }
        let mut n = 0;
        for entry in db.open_tree(spec.name)?.iter() {
            let (key, value) = entry?;
            if let Err(e) = (spec.check)(&key, &value) {
                corruption.report(spec.name, &key, &e);
            }
            n += 1;
        }
        counts.insert(spec.name.to_owned(), n);
    }
    Ok(counts)
}

/// Describes the first tree whose record count differs from the one recorded
/// at the last clean shutdown.
fn count_mismatch(
    recorded: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Option<String> {
    recorded
        .keys()
        .chain(found.keys())
        .map(|tree| {
            let was = recorded.get(tree).copied().unwrap_or(0);
            let now = found.get(tree).copied().unwrap_or(0);
            (tree, was, now)
        })
        .find(|(_, was, now)| was != now)
        .map(|(tree, was, now)| {
            format!("tree {tree} held {was} records at the last clean shutdown and holds {now} now")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, TempDir};

    #[test]
    fn a_new_store_is_at_this_builds_schema() {
        let store = testing::store();
        assert_eq!(store.schema_version(), SCHEMA_VERSION);
        assert_eq!(store.corrupt_records(), 0);
    }

    #[test]
    fn closing_records_each_trees_count_in_the_state_file() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        store
            .members()
            .put(&[1; 32], &testing::member("a"))
            .unwrap();
        store.close().unwrap();
        let state = manifest::read(dir.path()).unwrap();
        let Some(State::Closed { schema, counts }) = state else {
            panic!("{state:?}")
        };
        assert_eq!(schema, SCHEMA_VERSION);
        assert_eq!(counts.get("members"), Some(&1));
        assert_eq!(counts.get("paths"), Some(&0));
        // The schema version and one entry per migration.
        assert_eq!(
            counts.get(META_TREE),
            Some(&(1 + u64::from(SCHEMA_VERSION)))
        );
    }

    #[test]
    fn an_open_store_is_marked_open_until_dropped() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            manifest::read(dir.path()).unwrap(),
            Some(State::Open {
                schema: SCHEMA_VERSION
            })
        );
        drop(store);
        assert!(matches!(
            manifest::read(dir.path()).unwrap(),
            Some(State::Closed { .. })
        ));
    }

    #[test]
    fn a_store_with_a_newer_schema_is_refused_and_left_untouched() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).unwrap();
        migrations::force_version(&store.db.open_tree(META_TREE).unwrap(), SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        let before = fs::read(dir.path().join(manifest::FILE_NAME)).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        let after = fs::read(dir.path().join(manifest::FILE_NAME)).unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn an_interrupted_creation_is_finished_on_the_next_open() {
        let dir = TempDir::new();
        manifest::write(dir.path(), &State::Creating).unwrap();
        fs::write(dir.path().join("weft-store.state.tmp"), b"half").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version(), SCHEMA_VERSION);
    }

    #[test]
    fn a_count_mismatch_names_the_tree() {
        let recorded: BTreeMap<String, u64> = [("members".to_owned(), 3)].into_iter().collect();
        let found: BTreeMap<String, u64> = [("members".to_owned(), 2)].into_iter().collect();
        let why = count_mismatch(&recorded, &found).unwrap();
        assert!(why.contains("members held 3"), "{why}");
        assert_eq!(count_mismatch(&recorded, &recorded), None);
        let extra: BTreeMap<String, u64> = [("members".to_owned(), 3), ("paths".to_owned(), 1)]
            .into_iter()
            .collect();
        assert!(count_mismatch(&recorded, &extra).is_some());
    }
}
