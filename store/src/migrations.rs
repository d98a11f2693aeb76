//! Numbered schema migrations. The `meta` tree records the schema version
//! (`schema_version`, a big-endian u32) and when each migration ran
//! (`migration/NNNN`, big-endian unix seconds). [`crate::Store::open`] runs
//! every migration newer than the recorded version, in order, recording each
//! one atomically with its version and flushing before the next, so a crash
//! mid-way resumes at the first one not recorded.
//!
//! A migration is history: once released it never changes, so it names its
//! trees literally instead of using the entity modules' constants. It may
//! run again after a crash before it was recorded, so it must be idempotent.
//! A store with a version above [`SCHEMA_VERSION`] is refused, never
//! migrated down.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::info;

/// The schema version this build writes: the last migration's number.
pub const SCHEMA_VERSION: u32 = 5;

/// The tree holding the schema version and the migration history.
pub(crate) const META_TREE: &str = "meta";
const VERSION_KEY: &[u8] = b"schema_version";

struct Migration {
    version: u32,
    description: &'static str,
    apply: fn(&sled::Db) -> sled::Result<()>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "create the entity trees",
        apply: v1_create_trees,
    },
    Migration {
        version: 2,
        description: "create the NAT lifetimes tree",
        apply: v2_create_nat_tree,
    },
    Migration {
        version: 3,
        description: "create the gossip sequence tree",
        apply: v3_create_sequence_tree,
    },
    Migration {
        version: 4,
        description: "key NAT lifetimes by the member that measured them",
        apply: v4_nat_by_member,
    },
    Migration {
        version: 5,
        description: "create the authority chain tree",
        apply: v5_create_authorities_tree,
    },
];

fn v1_create_trees(db: &sled::Db) -> sled::Result<()> {
    for name in [
        "members",
        "revocations",
        "invites",
        "alloc_by_address",
        "alloc_by_identity",
        "paths",
    ] {
        db.open_tree(name)?;
    }
    Ok(())
}

fn v2_create_nat_tree(db: &sled::Db) -> sled::Result<()> {
    db.open_tree("nat").map(drop)
}

fn v3_create_sequence_tree(db: &sled::Db) -> sled::Result<()> {
    db.open_tree("sequence").map(drop)
}

fn v5_create_authorities_tree(db: &sled::Db) -> sled::Result<()> {
    db.open_tree("authorities").map(drop)
}

/// The NAT lifetimes tree was keyed by address alone (16 bytes), so one
/// member could fill it; it is now keyed by member and address (48 bytes).
/// The old entries cannot be given a member, and are measured again: they
/// go.
fn v4_nat_by_member(db: &sled::Db) -> sled::Result<()> {
    let nat = db.open_tree("nat")?;
    for key in nat.iter().keys() {
        let key = key?;
        if key.len() == 16 {
            nat.remove(key)?;
        }
    }
    Ok(())
}

/// Reads the recorded schema version: `None` for a store never migrated.
pub(crate) fn read_version(meta: &sled::Tree) -> Result<Option<u32>, ReadError> {
    let Some(value) = meta.get(VERSION_KEY)? else {
        return Ok(None);
    };
    let bytes: [u8; 4] = value
        .as_ref()
        .try_into()
        .map_err(|_| ReadError::Malformed(value.len()))?;
    Ok(Some(u32::from_be_bytes(bytes)))
}

/// Why the schema version could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Database(sled::Error),
    /// The value has this many bytes instead of 4.
    Malformed(usize),
}

impl From<sled::Error> for ReadError {
    fn from(e: sled::Error) -> Self {
        ReadError::Database(e)
    }
}

/// Runs every migration above `from`, returning the version reached.
pub(crate) fn run(db: &sled::Db, meta: &sled::Tree, from: u32) -> sled::Result<u32> {
    let mut version = from;
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        (migration.apply)(db)?;
        let applied_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut batch = sled::Batch::default();
        batch.insert(VERSION_KEY, &migration.version.to_be_bytes());
        batch.insert(
            format!("migration/{:04}", migration.version).as_bytes(),
            &applied_unix.to_be_bytes(),
        );
        meta.apply_batch(batch)?;
        db.flush()?;
        version = migration.version;
        info!(
            version,
            description = migration.description,
            "store schema migrated"
        );
    }
    Ok(version)
}

/// Records `version` as the schema version, for tests that need a store
/// from another build.
#[cfg(test)]
pub(crate) fn force_version(meta: &sled::Tree, version: u32) -> sled::Result<()> {
    meta.insert(VERSION_KEY, &version.to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.description);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn migrating_records_the_version_and_each_step() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree(META_TREE).unwrap();
        assert_eq!(read_version(&meta).unwrap(), None);
        assert_eq!(run(&db, &meta, 0).unwrap(), SCHEMA_VERSION);
        assert_eq!(read_version(&meta).unwrap(), Some(SCHEMA_VERSION));
        assert!(meta.contains_key(b"migration/0001").unwrap());
        for tree in crate::store::ENTITY_TREES {
            assert!(
                db.tree_names().iter().any(|n| n == tree.name.as_bytes()),
                "{} missing after migrations",
                tree.name
            );
        }
    }

    #[test]
    fn migrating_an_up_to_date_store_does_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree(META_TREE).unwrap();
        run(&db, &meta, 0).unwrap();
        let before: Vec<_> = meta.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(run(&db, &meta, SCHEMA_VERSION).unwrap(), SCHEMA_VERSION);
        let after: Vec<_> = meta.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn nat_lifetimes_keyed_by_address_alone_go_and_those_keyed_by_member_stay() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree(META_TREE).unwrap();
        run(&db, &meta, 0).unwrap();
        let nat = db.open_tree("nat").unwrap();
        nat.insert([7u8; 16], &[1u8, 2][..]).unwrap();
        nat.insert([7u8; 48], &[1u8, 2][..]).unwrap();
        v4_nat_by_member(&db).unwrap();
        v4_nat_by_member(&db).unwrap();
        let keys: Vec<_> = nat.iter().keys().map(|k| k.unwrap().len()).collect();
        assert_eq!(keys, vec![48]);
    }

    #[test]
    fn a_malformed_version_value_is_reported() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree(META_TREE).unwrap();
        meta.insert(VERSION_KEY, &[1u8, 2, 3]).unwrap();
        assert!(matches!(read_version(&meta), Err(ReadError::Malformed(3))));
    }
}
