//! Damaged stores: a directory sled cannot use, or whose data was lost while
//! weft was stopped, is refused as `Corrupt` without a panic; one bad record
//! is counted and skipped while the others stay readable.

mod common;

use std::fs;
use std::path::Path;

use common::{id, invite, member, TempDir};
use weft_store::{Store, StoreError};

fn assert_corrupt(path: &Path) -> String {
    match Store::open(path) {
        Err(StoreError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("a damaged store at {} was opened", path.display()),
    }
}

/// A closed store holding 400 members of ~200 bytes, enough to span most of
/// sled's first log segment.
fn filled_store(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    let store = Store::open(dir.path()).unwrap();
    for n in 0..400 {
        store.members().put(&id(n), &member(n)).unwrap();
    }
    store.close().unwrap();
    dir
}

fn junk(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ 0x5a)
        .collect()
}

#[test]
fn a_directory_of_unrelated_files_is_refused() {
    let dir = TempDir::new("foreign");
    fs::write(dir.join("notes.txt"), b"not a store").unwrap();
    let reason = assert_corrupt(dir.path());
    assert!(reason.contains("not a weft store"), "{reason}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was created"
    );
}

#[test]
fn a_regular_file_is_refused() {
    let dir = TempDir::new("file");
    let file = dir.join("store");
    fs::write(&file, b"hello").unwrap();
    let reason = assert_corrupt(&file);
    assert!(reason.contains("not a directory"), "{reason}");
}

#[test]
fn a_store_whose_every_file_was_overwritten_with_junk_is_refused() {
    let dir = filled_store("junk-all");
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let len = fs::metadata(&path).unwrap().len() as usize;
            fs::write(&path, junk(len.max(64), 1)).unwrap();
        }
    }
    assert_corrupt(dir.path());
}

#[test]
fn a_store_whose_sled_files_were_overwritten_with_junk_is_refused() {
    let dir = filled_store("junk-sled");
    for name in ["conf", "db"] {
        let path = dir.join(name);
        let len = fs::metadata(&path).unwrap().len() as usize;
        fs::write(&path, junk(len, 2)).unwrap();
    }
    assert_corrupt(dir.path());
}

#[test]
fn a_store_whose_db_file_was_overwritten_with_junk_is_refused() {
    // sled itself opens this as an empty database.
    let dir = filled_store("junk-db");
    let len = fs::metadata(dir.join("db")).unwrap().len() as usize;
    fs::write(dir.join("db"), junk(len, 3)).unwrap();
    let reason = assert_corrupt(dir.path());
    assert!(reason.contains("truncated or overwritten"), "{reason}");
}

#[test]
fn a_store_whose_db_file_was_truncated_is_refused() {
    let original = filled_store("truncated");
    let len = fs::metadata(original.join("db")).unwrap().len();
    for keep in [0, 100, 4096, len / 2, len * 9 / 10] {
        let dir = TempDir::new("truncated-copy");
        for name in ["conf", "db", "weft-store.state"] {
            fs::copy(original.join(name), dir.join(name)).unwrap();
        }
        let db = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("db"))
            .unwrap();
        db.set_len(keep).unwrap();
        drop(db);
        let reason = assert_corrupt(dir.path());
        assert!(
            reason.contains("truncated or overwritten"),
            "kept {keep} of {len}: {reason}"
        );
    }
    // The untouched original still opens.
    assert_eq!(
        Store::open(original.path())
            .unwrap()
            .members()
            .list()
            .unwrap()
            .len(),
        400
    );
}

#[test]
fn a_store_with_a_junk_state_file_is_refused() {
    let dir = filled_store("junk-state");
    fs::write(dir.join("weft-store.state"), junk(40, 4)).unwrap();
    let reason = assert_corrupt(dir.path());
    assert!(reason.contains("weft-store.state"), "{reason}");
}

#[test]
fn a_store_without_its_state_file_is_refused() {
    let dir = filled_store("no-state");
    fs::remove_file(dir.join("weft-store.state")).unwrap();
    assert_corrupt(dir.path());
}

/// Writes `value` under `key` of `tree` behind the store's back, as a bug or
/// another build might; the record count does not change.
fn overwrite_raw(dir: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree(tree).unwrap();
    assert!(
        tree.insert(key, value).unwrap().is_some(),
        "overwrites a record"
    );
    db.flush().unwrap();
}

#[test]
fn a_corrupt_record_leaves_the_others_readable_and_is_counted() {
    let dir = TempDir::new("bad-record");
    let store = Store::open(dir.path()).unwrap();
    for n in 0..5 {
        store.members().put(&id(n), &member(n)).unwrap();
    }
    store.invites().add(&id(50), &invite(9_000)).unwrap();
    store.close().unwrap();
    overwrite_raw(
        dir.path(),
        "members",
        &id(2),
        b"\x01garbage that is not a record",
    );

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.corrupt_records(), 1, "found while opening");
    let names: Vec<String> = store
        .members()
        .list()
        .unwrap()
        .into_iter()
        .map(|(_, m)| m.name)
        .collect();
    assert_eq!(names, ["node-0", "node-1", "node-3", "node-4"]);
    assert_eq!(store.members().get(&id(3)).unwrap(), Some(member(3)));
    let err = store.members().get(&id(2)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Record {
                tree: "members",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&"1d".repeat(28)),
        "names the key: {err}"
    );
    assert_eq!(
        store.corrupt_records(),
        1,
        "counted once however often it is read"
    );
    store.invites().redeem(&id(50), &id(1), 1_000).unwrap();
    store.close().unwrap();

    // Nothing was deleted: it is still there, and still counted, next time.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.corrupt_records(), 1);
    assert!(store.members().get(&id(2)).is_err());
}

#[test]
fn a_record_of_an_unknown_version_is_skipped_not_misread() {
    let dir = TempDir::new("future-record");
    let store = Store::open(dir.path()).unwrap();
    store.members().put(&id(1), &member(1)).unwrap();
    store.members().put(&id(2), &member(2)).unwrap();
    store.close().unwrap();
    // A version-2 record with a version-1 body: must not be read as version 1.
    let mut value = weft_store::record::encode(&member(2));
    value[0] = 2;
    overwrite_raw(dir.path(), "members", &id(2), &value);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.members().list().unwrap(), vec![(id(1), member(1))]);
    let err = store.members().get(&id(2)).unwrap_err();
    assert!(err.to_string().contains("record version 2"), "{err}");
    assert_eq!(store.corrupt_records(), 1);
}
