//! Helpers for the unit tests: stores in temporary directories that are
//! removed afterwards, and sample records.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{MemberRecord, Store};

/// A fresh directory under the system's temporary directory, removed (with
/// its content) when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "weft-store-unit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store in its own temporary directory; the store closes before the
/// directory goes.
pub(crate) struct TestStore {
    store: Store,
    _dir: TempDir,
}

impl Deref for TestStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

pub(crate) fn store() -> TestStore {
    let dir = TempDir::new();
    TestStore {
        store: Store::open(dir.path()).expect("open a store in a fresh directory"),
        _dir: dir,
    }
}

pub(crate) fn member(name: &str) -> MemberRecord {
    MemberRecord {
        name: name.to_owned(),
        certificate: vec![0xc0; 96],
        serial: 7,
        expires_unix: 2_000_000_000,
        updated_unix: 1_700_000_000,
    }
}
