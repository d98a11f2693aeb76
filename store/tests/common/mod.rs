//! Shared by the integration tests: temporary store directories that are
//! removed afterwards, and sample records. Not every test file uses all of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use weft_store::{InviteRecord, MemberRecord, PathRecord, RevocationRecord};

/// A fresh directory under the system's temporary directory, removed with
/// its content when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "weft-store-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory, for a store that does not exist yet.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An identity (or hash) made from a number.
pub fn id(n: u32) -> [u8; 32] {
    let mut id = [0x1d; 32];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id
}

pub fn member(n: u32) -> MemberRecord {
    MemberRecord {
        name: format!("node-{n}"),
        certificate: vec![n as u8; 120],
        serial: u64::from(n) + 1,
        expires_unix: 2_000_000_000,
        updated_unix: 1_700_000_000 + u64::from(n),
    }
}

pub fn revocation(n: u32) -> RevocationRecord {
    RevocationRecord {
        serial: u64::from(n),
        revoked_unix: 1_700_000_500,
        signed: vec![0xee; 72],
    }
}

pub fn invite(expires_unix: u64) -> InviteRecord {
    InviteRecord {
        name: Some("invitee".into()),
        expires_unix,
        used_unix: None,
        used_by: None,
    }
}

pub fn path_record(port: u16, measured_unix: u64) -> PathRecord {
    PathRecord {
        endpoint: SocketAddr::from(([203, 0, 113, 9], port)),
        pmtu: 1400,
        rtt_us: 8_000,
        nat: None,
        measured_unix,
        own: true,
    }
}
