//! weft's persistent state: the members it knows, the certificates it has
//! revoked, the invites it issued and which were used, the overlay addresses
//! it allocated, and the paths (endpoint, PMTU, RTT) it learned, so that a
//! restarted daemon resumes where it stopped.
//!
//! The store is one [sled] database per node, opened only by the daemon
//! ([`Store::open`]). It knows nothing of weft's wire formats: identities are
//! 32-byte keys and certificates are opaque byte strings.
//!
//! # Layout
//!
//! One module, one sled tree and one record type per stored entity:
//! [`members`], [`revocations`], [`invites`], [`allocations`] (two trees, one
//! per direction), [`paths`], [`nat`], [`sequence`] and [`authorities`] (the chain's
//! own encoding, checked by the daemon). Otherwise a value is a one-byte record version
//! followed by the record in [postcard]; see [`record`] for how a record
//! evolves. A `meta` tree holds the schema version, which the numbered
//! [`migrations`] raise one step at a time when the store is opened.
//!
//! # Failure model
//!
//! - Nothing here panics on what it reads from disk. A value that does not
//!   decode is logged, counted ([`Store::corrupt_records`]), skipped by list
//!   operations and reported as [`StoreError::Record`] by lookups; it is never
//!   deleted, and the records around it stay readable.
//! - Writes that must survive a crash are durable before they return (sled's
//!   flush, then an fsync of its data file, as [`Store::flush`]): invite add,
//!   redeem and remove, address allocation and release, revocation. The
//!   others (members, paths) reach the disk within sled's flush interval
//!   (500 ms) or at [`Store::flush`] / [`Store::close`], and are re-learned
//!   if lost.
//! - A store that sled cannot open, or one whose content was lost while the
//!   daemon was stopped (a truncated or overwritten `db` file, which sled
//!   0.34 silently opens as empty or partial), is refused as
//!   [`StoreError::Corrupt`]: see the state file in [`Store::open`].

pub mod allocations;
pub mod authorities;
mod error;
pub mod invites;
mod manifest;
pub mod members;
pub mod migrations;
pub mod nat;
pub mod paths;
pub mod record;
pub mod revocations;
pub mod sequence;
mod store;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(test)]
mod testing;

pub use allocations::{AllocError, AllocationRecord, Allocations, Stripe};
pub use authorities::Authorities;
pub use error::{DecodeError, StoreError};
pub use invites::{InviteError, InviteRecord, Invites};
pub use members::{MemberRecord, Members};
pub use nat::{NatLifetimes, NatRecord, Stored as NatStored};
pub use paths::{PathRecord, Paths};
pub use revocations::{RevocationRecord, Revocations};
pub use sequence::Sequence;
pub use store::Store;

/// A node's long-term identity: its 32-byte public key.
pub type Identity = [u8; 32];
