//! The network's authority set: which Ed25519 keys may sign certificates
//! and revocations, kept as a hash chain of signed versions.
//!
//! Version 1 is written by `weft init`: it holds one key, the network's
//! anchor (the key every invite token names, [`NetworkInfo::anchor`]), and
//! is signed by it. Every later version names the one before it (the
//! BLAKE2s hash of its signed bytes), has a version number one higher, and
//! is signed by a key of the version before it, so a member that trusts
//! the anchor can check any chain from version 1 on its own. A set is
//! never empty, holds at most [`MAX_AUTHORITIES`] keys and carries the
//! network's certificate lifetime.
//!
//! Two holders that change the set at the same moment fork the chain; every
//! node then keeps the same branch: the longer chain, and between chains
//! of equal length the one whose last link has the lower hash
//! ([`Authorities::prefers`]). The losing change has to be made again.
//!
//! A key that leaves the set is *retired*, not forgotten: certificates it
//! signed before it left stay valid until they expire (renewal moves their
//! holders to a current key), so retiring an authority never interrupts
//! traffic. What a retired key signs afterwards is bounded: a certificate
//! must start before the key left and end within one certificate lifetime
//! of it ([`Issuer::admits`]).
//!
//! This module checks and signs chains; it never reads the clock (times
//! are the caller's), never decides who becomes an authority, and nothing
//! in it panics on input from the network or from disk.

use core::fmt;

use blake2::{Blake2s256, Digest};
use serde::{Deserialize, Serialize};

use super::encoding::{decode_canonical, encode, SIGNATURE_LEN};
use super::identity::{Hex, IdentityKey, IdentitySecret, SigningContext};
use super::network::{is_valid_name, Issuer, NetworkId};

/// Most keys one set version may hold.
pub const MAX_AUTHORITIES: usize = 8;
/// Most versions a chain may have: each `weft authority add` or `remove`
/// is one version.
pub const MAX_SET_VERSIONS: usize = 64;
/// Longest encoded [`AuthoritySet`] (eight holders with 63-byte names fit).
pub const MAX_SET_LEN: usize = 1024;
/// Longest [`AuthorityChain::to_bytes`] encoding accepted: it travels in
/// one gossip message, whose limit is 64 KiB.
pub const MAX_CHAIN_LEN: usize = 48 * 1024;
/// Version byte that starts [`AuthorityChain::to_bytes`].
pub const CHAIN_ENCODING_VERSION: u8 = 1;
/// Shortest certificate lifetime a network may set (tests run several
/// renewals in minutes).
pub const MIN_CERTIFICATE_LIFETIME_SECS: u64 = 60;
/// Longest certificate lifetime a network may set.
pub const MAX_CERTIFICATE_LIFETIME_SECS: u64 = 365 * 24 * 3600;
/// The lifetime `weft init` gives a network unless told otherwise.
pub const DEFAULT_CERTIFICATE_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// One key of a set and the member that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityHolder {
    /// The holder's member name ([`is_valid_name`]); the anchor of a new
    /// network is named after the member that ran `weft init`.
    pub name: String,
    /// The authority key (not the holder's member identity).
    pub key: IdentityKey,
    /// When the key entered the set (unix time, the signer's clock).
    pub since_unix: u64,
}

/// One version of the set, as its signer wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthoritySet {
    /// The network.
    pub network: NetworkId,
    /// 1 for the first set, one more for each change.
    pub version: u64,
    /// BLAKE2s-256 of the previous link's signed bytes; zero for version 1.
    pub previous: [u8; 32],
    /// When this version was signed (unix time, the signer's clock).
    pub issued_unix: u64,
    /// How long the certificates of this network are valid, in seconds.
    pub certificate_lifetime_secs: u64,
    /// The keys, in the order they were added.
    pub holders: Vec<AuthorityHolder>,
}

impl AuthoritySet {
    /// The holder with `key`, if it is in this version.
    pub fn holder(&self, key: &IdentityKey) -> Option<&AuthorityHolder> {
        self.holders.iter().find(|h| h.key == *key)
    }

    /// The holder named `name`, if any.
    pub fn holder_named(&self, name: &str) -> Option<&AuthorityHolder> {
        self.holders.iter().find(|h| h.name == name)
    }

    fn check_shape(&self, network: &NetworkId) -> Result<(), SetError> {
        if self.network != *network {
            return Err(SetError::WrongNetwork);
        }
        if self.holders.is_empty() {
            return Err(SetError::Empty);
        }
        if self.holders.len() > MAX_AUTHORITIES {
            return Err(SetError::TooManyAuthorities);
        }
        if !(MIN_CERTIFICATE_LIFETIME_SECS..=MAX_CERTIFICATE_LIFETIME_SECS)
            .contains(&self.certificate_lifetime_secs)
        {
            return Err(SetError::BadLifetime);
        }
        for (i, h) in self.holders.iter().enumerate() {
            if !is_valid_name(&h.name) {
                return Err(SetError::BadName);
            }
            let later = &self.holders[i + 1..];
            if later.iter().any(|o| o.key == h.key || o.name == h.name) {
                return Err(SetError::Duplicate);
            }
        }
        Ok(())
    }
}

/// One version as signed: the exact bytes, who signed them, the signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAuthoritySet {
    /// The postcard encoding of an [`AuthoritySet`]: exactly the signed
    /// bytes.
    pub bytes: Vec<u8>,
    /// The key that signed: for version 1 the anchor, afterwards a key of
    /// the previous version.
    pub signer: IdentityKey,
    /// The signature of `bytes` in the `"authority-set"` context.
    #[serde(with = "super::encoding::sig64")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for SignedAuthoritySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedAuthoritySet")
            .field("len", &self.bytes.len())
            .field("signer", &self.signer)
            .field(
                "signature",
                &format_args!("{:x}…", Hex(&self.signature[..4])),
            )
            .finish()
    }
}

impl SignedAuthoritySet {
    fn sign(set: &AuthoritySet, secret: &IdentitySecret) -> Self {
        let bytes = encode(set);
        let signature = secret.sign(SigningContext::AuthoritySet, &bytes);
        SignedAuthoritySet {
            bytes,
            signer: secret.identity(),
            signature,
        }
    }

    /// BLAKE2s-256 of the signed bytes: what the next version names.
    pub fn hash(&self) -> [u8; 32] {
        Blake2s256::new()
            .chain_update(b"weft-authority-set")
            .chain_update(&self.bytes)
            .finalize()
            .into()
    }
}

/// The chain of every version from 1 to the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityChain {
    links: Vec<SignedAuthoritySet>,
}

/// A change to the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetChange {
    /// Member `name` becomes an authority holder with `key`.
    Add {
        /// The holder's member name.
        name: String,
        /// The authority key it generated.
        key: IdentityKey,
    },
    /// The holder named `name` leaves the set.
    Remove {
        /// The holder's member name.
        name: String,
    },
    /// Certificates are issued for `secs` seconds from now on.
    Lifetime {
        /// The new lifetime.
        secs: u64,
    },
}

impl AuthorityChain {
    /// Version 1 of a new network: `anchor` alone, held by `name`, signed
    /// by itself.
    pub fn genesis(
        network: NetworkId,
        name: &str,
        anchor: &IdentitySecret,
        certificate_lifetime_secs: u64,
        now_unix: u64,
    ) -> Result<Self, SetError> {
        let set = AuthoritySet {
            network,
            version: 1,
            previous: [0; 32],
            issued_unix: now_unix,
            certificate_lifetime_secs,
            holders: vec![AuthorityHolder {
                name: name.to_string(),
                key: anchor.identity(),
                since_unix: now_unix,
            }],
        };
        set.check_shape(&network)?;
        Ok(AuthorityChain {
            links: vec![SignedAuthoritySet::sign(&set, anchor)],
        })
    }

    /// The chain with one more version: `change` applied to the current
    /// set, signed by `signer`, which must hold a key of the current set.
    /// `current` is this chain's [`AuthorityChain::verify`] result.
    pub fn extend(
        &self,
        current: &Authorities,
        change: SetChange,
        signer: &IdentitySecret,
        now_unix: u64,
    ) -> Result<Self, SetError> {
        let last = self.links.last().ok_or(SetError::Empty)?;
        let set = current.current();
        if set.holder(&signer.identity()).is_none() {
            return Err(SetError::SignerNotInPreviousVersion);
        }
        if self.links.len() >= MAX_SET_VERSIONS {
            return Err(SetError::TooManyVersions);
        }
        let mut next = AuthoritySet {
            network: set.network,
            version: set.version + 1,
            previous: last.hash(),
            // Never before the previous version, whatever this clock says.
            issued_unix: now_unix.max(set.issued_unix),
            certificate_lifetime_secs: set.certificate_lifetime_secs,
            holders: set.holders.clone(),
        };
        match change {
            SetChange::Add { name, key } => {
                if next.holders.iter().any(|h| h.name == name || h.key == key) {
                    return Err(SetError::Duplicate);
                }
                next.holders.push(AuthorityHolder {
                    name,
                    key,
                    since_unix: next.issued_unix,
                });
            }
            SetChange::Remove { name } => {
                let before = next.holders.len();
                next.holders.retain(|h| h.name != name);
                if next.holders.len() == before {
                    return Err(SetError::NoSuchHolder);
                }
            }
            SetChange::Lifetime { secs } => next.certificate_lifetime_secs = secs,
        }
        next.check_shape(&set.network)?;
        let mut links = self.links.clone();
        links.push(SignedAuthoritySet::sign(&next, signer));
        let chain = AuthorityChain { links };
        if chain.to_bytes().len() > MAX_CHAIN_LEN {
            return Err(SetError::TooLarge);
        }
        Ok(chain)
    }

    /// Checks every link from version 1 for `network` with trust anchor
    /// `anchor`: version 1 holds the anchor and is signed by it; every
    /// later link names its predecessor, counts up by one, and is signed by
    /// a key of its predecessor; every version is a valid set. Nothing of a
    /// link is interpreted before its signature verified.
    pub fn verify(
        &self,
        network: &NetworkId,
        anchor: &IdentityKey,
    ) -> Result<Authorities, SetError> {
        if self.links.is_empty() {
            return Err(SetError::Empty);
        }
        if self.links.len() > MAX_SET_VERSIONS {
            return Err(SetError::TooManyVersions);
        }
        let mut sets: Vec<AuthoritySet> = Vec::with_capacity(self.links.len());
        let mut previous_hash = [0u8; 32];
        for link in &self.links {
            if link.bytes.len() > MAX_SET_LEN {
                return Err(SetError::TooLarge);
            }
            let allowed = match sets.last() {
                None => link.signer == *anchor,
                Some(prev) => prev.holder(&link.signer).is_some(),
            };
            if !allowed {
                return Err(SetError::SignerNotInPreviousVersion);
            }
            link.signer
                .verify(SigningContext::AuthoritySet, &link.bytes, &link.signature)
                .map_err(|_| SetError::BadSignature)?;
            let set: AuthoritySet = decode_canonical(&link.bytes).ok_or(SetError::Malformed)?;
            set.check_shape(network)?;
            let expected_version = sets.last().map_or(1, |p| p.version + 1);
            if set.version != expected_version {
                return Err(SetError::BrokenChain);
            }
            if set.previous != previous_hash {
                return Err(SetError::BrokenChain);
            }
            if sets.is_empty() && set.holder(anchor).is_none() {
                return Err(SetError::AnchorMissing);
            }
            previous_hash = link.hash();
            sets.push(set);
        }
        let links = self.links.iter().map(|l| (l.hash(), l.signer)).collect();
        Ok(Authorities {
            sets,
            links,
            head: previous_hash,
        })
    }

    /// The chain with every link signed again by the key `secret_of` its
    /// signer field names (links whose signer it does not know keep their
    /// signature): fuzzing reaches the checks behind the signatures.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn resigned(
        &self,
        secret_of: impl Fn(&IdentityKey) -> Option<&'static IdentitySecret>,
    ) -> Self {
        let links = self
            .links
            .iter()
            .map(|l| match secret_of(&l.signer) {
                Some(secret) => SignedAuthoritySet {
                    bytes: l.bytes.clone(),
                    signer: l.signer,
                    signature: secret.sign(SigningContext::AuthoritySet, &l.bytes),
                },
                None => l.clone(),
            })
            .collect();
        AuthorityChain { links }
    }

    /// The chain's first `versions` versions (`None` if it has fewer, or
    /// for 0): what a node that missed the later changes holds.
    pub fn prefix(&self, versions: usize) -> Option<AuthorityChain> {
        (versions > 0 && versions <= self.links.len()).then(|| AuthorityChain {
            links: self.links[..versions].to_vec(),
        })
    }

    /// The number of versions.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the chain has no version (never true of a verified one).
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The encoding for gossip, the join answer and storage: a version
    /// byte (1), then postcard of the links.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![CHAIN_ENCODING_VERSION];
        out.extend_from_slice(&encode(self));
        out
    }

    /// Decodes what [`AuthorityChain::to_bytes`] wrote: size, version, a
    /// canonical encoding. Checks no signature.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SetError> {
        if data.len() > MAX_CHAIN_LEN {
            return Err(SetError::TooLarge);
        }
        let (&version, rest) = data.split_first().ok_or(SetError::Malformed)?;
        if version != CHAIN_ENCODING_VERSION {
            return Err(SetError::UnsupportedVersion(version));
        }
        decode_canonical(rest).ok_or(SetError::Malformed)
    }
}

/// A verified chain: every version in order, and the hash of the last link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorities {
    sets: Vec<AuthoritySet>,
    /// Per link: its hash and the key that signed it (empty for
    /// [`Authorities::anchor_only`]).
    links: Vec<([u8; 32], IdentityKey)>,
    head: [u8; 32],
}

/// How a verified chain a node receives relates to the one it holds
/// ([`Authorities::compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The same chain.
    Same,
    /// It continues the chain held: take it.
    Extends,
    /// A prefix of the chain held: an older version, replayed or late.
    Older,
    /// A fork that wins by the fork rule ([`Authorities::prefers`]) and
    /// whose own versions are all signed by keys of the version held:
    /// take it (two holders changed the set at the same moment).
    WinningFork,
    /// A fork that loses by the fork rule: keep the chain held.
    LosingFork,
    /// A fork with a version signed by a key the chain held no longer
    /// trusts: what a removed (perhaps lost) authority key would sign to
    /// take the network back. Refused, however long it is.
    RetiredSigner,
}

impl Authorities {
    /// The trust a network starts with before it has seen any chain: the
    /// anchor alone, with the default lifetime.
    pub fn anchor_only(network: NetworkId, anchor: IdentityKey) -> Self {
        Authorities {
            sets: vec![AuthoritySet {
                network,
                version: 0,
                previous: [0; 32],
                issued_unix: 0,
                certificate_lifetime_secs: DEFAULT_CERTIFICATE_LIFETIME_SECS,
                holders: vec![AuthorityHolder {
                    name: "anchor".into(),
                    key: anchor,
                    since_unix: 0,
                }],
            }],
            links: Vec::new(),
            head: [0; 32],
        }
    }

    /// The current version.
    pub fn current(&self) -> &AuthoritySet {
        // `verify` and `anchor_only` never build an empty list.
        self.sets.last().expect("a verified chain has a version")
    }

    /// The current version number (0 before any chain was seen).
    pub fn version(&self) -> u64 {
        self.current().version
    }

    /// The hash of the last link.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Whether `other` should replace this view: a later version, or the
    /// same version with a lower head hash (the fork rule every node
    /// applies alike).
    pub fn prefers(&self, other: &Authorities) -> bool {
        (other.version(), std::cmp::Reverse(other.head))
            > (self.version(), std::cmp::Reverse(self.head))
    }

    /// How `candidate` relates to this chain: whether a node holding this
    /// one takes it.
    ///
    /// A chain that continues this one is taken; an older one is not. Two
    /// chains that share a prefix and then differ are a fork: the winner
    /// of [`Authorities::prefers`] is kept, except that a fork is never
    /// taken if one of its own versions is signed by a key the current
    /// version here no longer holds. Without that exception a key removed
    /// from the set could fork the chain from before its removal, make
    /// the fork longer, and win.
    pub fn compare(&self, candidate: &Authorities) -> Adoption {
        let shared = self
            .links
            .iter()
            .zip(&candidate.links)
            .take_while(|(a, b)| a.0 == b.0)
            .count();
        let (ours, theirs) = (self.links.len(), candidate.links.len());
        if shared == ours && shared == theirs {
            return Adoption::Same;
        }
        if shared == ours {
            return Adoption::Extends;
        }
        if shared == theirs {
            return Adoption::Older;
        }
        let current = self.current();
        if candidate.links[shared..]
            .iter()
            .any(|(_, signer)| current.holder(signer).is_none())
        {
            return Adoption::RetiredSigner;
        }
        if self.prefers(candidate) {
            Adoption::WinningFork
        } else {
            Adoption::LosingFork
        }
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[AuthoritySet] {
        &self.sets
    }

    /// Every key that ever was in the set, with when it left (if it did).
    pub fn issuers(&self) -> Vec<Issuer> {
        let current = self.current();
        let mut out: Vec<Issuer> = Vec::new();
        for (i, set) in self.sets.iter().enumerate() {
            for h in &set.holders {
                if out.iter().any(|o| o.key == h.key) {
                    continue;
                }
                let retired_unix = if current.holder(&h.key).is_some() {
                    None
                } else {
                    // The first later version without it.
                    self.sets[i..]
                        .iter()
                        .find(|s| s.holder(&h.key).is_none())
                        .map(|s| s.issued_unix)
                };
                let lifetime_secs = self.sets[i..]
                    .iter()
                    .take_while(|s| s.holder(&h.key).is_some())
                    .last()
                    .map_or(set.certificate_lifetime_secs, |s| {
                        s.certificate_lifetime_secs
                    });
                out.push(Issuer {
                    key: h.key,
                    retired_unix,
                    lifetime_secs,
                });
            }
        }
        out
    }
}

/// Why an authority chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The encoding is longer than any chain or set may be.
    #[error("authority set is too large")]
    TooLarge,
    /// The encoding starts with a version byte this node does not know.
    #[error("unsupported authority set encoding version {0}")]
    UnsupportedVersion(u8),
    /// The bytes do not decode (in canonical form).
    #[error("authority set does not decode")]
    Malformed,
    /// A set with no key, or a chain with no version.
    #[error("an authority set may not be empty")]
    Empty,
    /// More keys than [`MAX_AUTHORITIES`].
    #[error("more than {MAX_AUTHORITIES} authorities")]
    TooManyAuthorities,
    /// More versions than [`MAX_SET_VERSIONS`].
    #[error("more than {MAX_SET_VERSIONS} authority set versions")]
    TooManyVersions,
    /// A holder name breaks [`is_valid_name`].
    #[error("an authority holder has an invalid name")]
    BadName,
    /// Two holders share a key or a name.
    #[error("two authority holders share a key or a name")]
    Duplicate,
    /// A removal names nobody in the set.
    #[error("no authority holder has that name")]
    NoSuchHolder,
    /// The lifetime is outside 60 s ..= 1 year.
    #[error("certificate lifetime outside 60 s ..= 1 year")]
    BadLifetime,
    /// The set is for another network.
    #[error("authority set is for another network")]
    WrongNetwork,
    /// Version 1 does not hold the network's anchor key.
    #[error("the first authority set does not hold the network's anchor key")]
    AnchorMissing,
    /// A link's signer is not in the version before it (or, for version
    /// 1, is not the anchor).
    #[error("authority set signed by a key outside the previous version")]
    SignerNotInPreviousVersion,
    /// The signature does not verify.
    #[error("authority set signature does not verify")]
    BadSignature,
    /// Versions do not count up by one or do not name their predecessor.
    #[error("authority set versions do not form a chain")]
    BrokenChain,
}

impl SetError {
    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            SetError::TooLarge => "too_large",
            SetError::UnsupportedVersion(_) => "unsupported_version",
            SetError::Malformed => "malformed",
            SetError::Empty => "empty",
            SetError::TooManyAuthorities => "too_many_authorities",
            SetError::TooManyVersions => "too_many_versions",
            SetError::BadName => "bad_name",
            SetError::Duplicate => "duplicate",
            SetError::NoSuchHolder => "no_such_holder",
            SetError::BadLifetime => "bad_lifetime",
            SetError::WrongNetwork => "wrong_network",
            SetError::AnchorMissing => "anchor_missing",
            SetError::SignerNotInPreviousVersion => "unchained_signer",
            SetError::BadSignature => "bad_signature",
            SetError::BrokenChain => "broken_chain",
        }
    }
}

#[cfg(test)]
mod tests;
