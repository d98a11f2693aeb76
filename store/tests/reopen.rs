//! Reopening a store: every record is kept, newer schemas are refused, and a
//! store in use is refused.

mod common;

use std::net::Ipv4Addr;

use common::{id, invite, member, path_record, revocation, TempDir};
use weft_store::migrations::SCHEMA_VERSION;
use weft_store::{Store, StoreError};

const NET: u32 = u32::from_be_bytes([10, 99, 0, 0]);

fn fill(store: &Store) {
    for n in 0..50 {
        store.members().put(&id(n), &member(n)).unwrap();
        store
            .paths()
            .put(&id(0), &id(n), &path_record(n as u16, 1_000 + u64::from(n)))
            .unwrap();
    }
    for n in 0..10 {
        store
            .revocations()
            .revoke(&id(100 + n), &revocation(n))
            .unwrap();
        store.invites().add(&id(200 + n), &invite(5_000)).unwrap();
        store.allocations().allocate(NET, 16, &id(n), &[]).unwrap();
    }
    store.invites().redeem(&id(200), &id(7), 4_000).unwrap();
}

fn check(store: &Store) {
    let members = store.members().list().unwrap();
    assert_eq!(members.len(), 50);
    for (identity, record) in &members {
        let n = u32::from_be_bytes(identity[..4].try_into().unwrap());
        assert_eq!(*record, member(n));
    }
    assert_eq!(store.paths().list_from(&id(0)).unwrap().len(), 50);
    assert_eq!(
        store.paths().get(&id(0), &id(3)).unwrap(),
        Some(path_record(3, 1_003))
    );
    for n in 0..10 {
        assert!(store.revocations().is_revoked(&id(100 + n)).unwrap());
        assert_eq!(
            store.revocations().get(&id(100 + n)).unwrap(),
            Some(revocation(n))
        );
        assert_eq!(
            store.allocations().lookup(&id(n)).unwrap(),
            Some(Ipv4Addr::from(NET + 1 + n))
        );
    }
    let redeemed = store.invites().get(&id(200)).unwrap().unwrap();
    assert_eq!(
        (redeemed.used_unix, redeemed.used_by),
        (Some(4_000), Some(id(7)))
    );
    assert_eq!(store.invites().get(&id(201)).unwrap(), Some(invite(5_000)));
    assert_eq!(store.corrupt_records(), 0);
}

#[test]
fn reopening_after_a_clean_close_keeps_every_record() {
    let dir = TempDir::new("reopen");
    let store = Store::open(dir.path()).unwrap();
    fill(&store);
    store.close().unwrap();
    for _ in 0..3 {
        let store = Store::open(dir.path()).unwrap();
        check(&store);
        store.close().unwrap();
    }
}

#[test]
fn reopening_after_a_drop_keeps_every_record() {
    let dir = TempDir::new("reopen-drop");
    fill(&Store::open(dir.path()).unwrap());
    check(&Store::open(dir.path()).unwrap());
}

#[test]
fn a_missing_directory_is_created() {
    let dir = TempDir::new("create");
    let path = dir.join("a/b/store");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
}

#[test]
fn a_store_with_a_newer_schema_is_refused_with_both_versions_and_its_path() {
    let dir = TempDir::new("newer");
    Store::open(dir.path()).unwrap().close().unwrap();
    {
        // What a future weft would leave behind: a higher schema version.
        let db = sled::open(dir.path()).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    let StoreError::NewerSchema {
        found,
        supported,
        ref path,
    } = err
    else {
        panic!("expected NewerSchema, got {err}");
    };
    assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
    assert_eq!(path, dir.path());
    let message = err.to_string();
    assert!(
        message.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{message}"
    );
    assert!(
        message.contains(&format!("version {SCHEMA_VERSION} supported")),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    // Still refused: nothing was migrated down.
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::NewerSchema { .. })
    ));
}

#[test]
fn a_store_open_elsewhere_is_refused_as_locked() {
    let dir = TempDir::new("locked");
    let store = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(store);
    Store::open(dir.path()).unwrap();
}
