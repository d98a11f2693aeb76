//! Membership of a weft network: who may join, and what members tell each
//! other.
//!
//! A network has an **authority**, an Ed25519 key that signs one
//! [`Certificate`] per member (its name, keys, addresses and validity). A new
//! server joins with a one-time [`InviteToken`]; members then gossip
//! [`SignedRecord`]s (announcements, path observations, revocations) that a
//! [`Validator`] checks before the node believes them. The formats and
//! their rules are specified in `docs/protocol.md` §9.
//!
//! Like the rest of the crate this module is sans-IO: every check takes the
//! time as `now_unix` (seconds since 1970) and every key or secret comes
//! from an RNG the caller passes in. It never reads the clock, the OS RNG,
//! the disk or the network, and nothing in it panics on input from the
//! network or from disk.
//!
//! - [`identity`]: Ed25519 identity keys and domain-separated signatures;
//! - [`network`]: the network's id, address prefixes and trusted issuers;
//! - [`authority_set`]: the chain of signed authority sets;
//! - [`cert`]: member certificates and how they are checked;
//! - `authority`: the authority's acts, issuing certificates and
//!   revocations ([`Authority`]);
//! - [`renewal`]: certificate renewal messages, rules and schedule;
//! - [`invite`]: invite tokens and their text form;
//! - [`records`]: the gossip records and their encoding;
//! - [`validator`]: what a record must satisfy before it is believed;
//! - [`overlay`]: which members keep control connections to which.
//! - `encoding`: hex, canonical postcard and serde helpers the formats
//!   share (a leaf: it imports none of them).

mod authority;
pub mod authority_set;
pub mod cert;
mod encoding;
pub mod identity;
pub mod invite;
pub mod network;
pub mod nomination;
pub mod overlay;
pub mod records;
pub mod renewal;
pub mod validator;

#[cfg(any(test, feature = "fuzzing"))]
mod fixtures;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod authority_fuzzing;

pub use authority::Authority;
pub use authority_set::{
    Adoption, Authorities, AuthorityChain, AuthorityHolder, AuthoritySet, SetChange, SetError,
};
pub use cert::{CertError, Certificate, SignedCertificate};
pub use encoding::SIGNATURE_LEN;
pub use identity::{IdentityKey, IdentitySecret, ParseKeyError, SignatureError, SigningContext};
pub use invite::{InviteError, InviteToken};
pub use network::{derive_ula, is_valid_name, Issuer, NetworkError, NetworkId, NetworkInfo};
pub use nomination::{Nomination, NominationAnswer, NominationRefusal};
pub use records::{
    Announcement, NatLifetime, PathObservation, RecordBody, RecordError, RecordKind, Revocation,
    SignedRecord,
};
pub use renewal::{RenewalRefusal, RenewalRequest, RenewalResponse};
pub use validator::Validator;
