//! The crate's errors, split by cause: the store on disk is unusable as a
//! whole ([`StoreError::Corrupt`], [`StoreError::NewerSchema`]), the operating
//! system or sled failed, or one stored record does not decode
//! ([`DecodeError`]). Entity-specific refusals live next to their entity
//! ([`crate::InviteError`], [`crate::AllocError`]).

use std::fmt;
use std::path::PathBuf;

/// Why the store could not be opened or an operation on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory is not a usable weft store: sled refused it, it is not a
    /// directory, it holds files but no weft state file, or records present at
    /// the last clean shutdown are gone (a truncated or overwritten `db`
    /// file). weft changed nothing (sled, which had to open the files to
    /// find out, may have rewritten its own recovery data); restore a backup
    /// or move the directory aside.
    #[error("store at {} is corrupt or not a weft store: {reason}", path.display())]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What was found, for the operator.
        reason: String,
    },
    /// The store was written by a newer weft whose schema this build does not
    /// know. It was left untouched.
    #[error(
        "store at {} has schema version {found}, newer than version {supported} supported by this build; \
         run the newer weft or restore a backup made by this version",
        path.display()
    )]
    NewerSchema {
        /// The store's directory.
        path: PathBuf,
        /// The schema version recorded in the store.
        found: u32,
        /// The newest schema version this build can migrate to.
        supported: u32,
    },
    /// Another process (or another [`crate::Store`] in this one) has the store
    /// open.
    #[error("store at {} is in use by another process: {source}", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
        /// sled's description of the lock failure.
        source: sled::Error,
    },
    /// The operating system refused a file operation on the store's directory.
    #[error("I/O error on store at {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// sled failed while reading or writing an open store.
    #[error("database error: {0}")]
    Database(#[from] sled::Error),
    /// One stored record does not decode. Only that record is affected; it is
    /// counted in [`crate::Store::corrupt_records`] and left in place.
    #[error("undecodable record in tree {tree} at key {key}: {source}")]
    Record {
        /// The sled tree holding it.
        tree: &'static str,
        /// Its key, in hex.
        key: Hex,
        /// Why it does not decode.
        source: DecodeError,
    },
}

/// Why one stored key or value does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The value is empty: not even a record version byte.
    #[error("empty value")]
    Empty,
    /// The record version byte is not one this build reads (written by a
    /// newer weft, or garbage).
    #[error("record version {found} is not supported (this build reads version {supported})")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// The bytes after the version byte are not a valid record.
    #[error("malformed record: {0}")]
    Malformed(postcard::Error),
    /// A valid record is followed by extra bytes.
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
    /// The key has the wrong length for its tree.
    #[error("key is {found} bytes, expected {expected}")]
    KeyLength {
        /// The key's length.
        found: usize,
        /// The length this tree's keys have.
        expected: usize,
    },
    /// The value is empty or longer than its tree allows.
    #[error("value is {found} bytes, allowed 1 to {max}")]
    ValueLength {
        /// The value's length.
        found: usize,
        /// The longest value this tree takes.
        max: usize,
    },
}

/// Bytes shown as lowercase hex in messages and logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Hex(pub Vec<u8>);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
