//! Nomination: how an authority holder makes another member a holder
//! without ever seeing that member's authority key.
//!
//! The holder asks the member, over a control-plane connection that
//! already proved both identities, to take part ([`Nomination`]); the
//! member generates an authority key of its own, keeps it, and answers with
//! the public half ([`NominationAnswer`]). The holder then signs the next
//! version of the authority set with that key in it
//! ([`AuthorityChain::extend`](super::AuthorityChain::extend)). A member
//! asked again before the new version reached it answers with the same key,
//! so a lost answer costs nothing.
//!
//! A member answers only a current holder: [`Nomination::check`] says
//! whether the asker, by its member name, holds a key of the set the member
//! trusts. This module formats and decides; it never generates or stores a
//! key, and nothing in it panics on input from the network.

use serde::{Deserialize, Serialize};

use super::authority_set::{Authorities, MAX_AUTHORITIES};
use super::encoding::{decode_versioned, encode_versioned};
use super::identity::IdentityKey;
use super::network::NetworkId;

/// Version byte that starts both messages.
pub const NOMINATION_VERSION: u8 = 1;
/// Longest encoded message accepted.
pub const MAX_NOMINATION_LEN: usize = 256;

/// "Become an authority holder: send me the public half of a key of yours."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nomination {
    /// The network.
    pub network: NetworkId,
    /// The set version the asking holder is at.
    pub version: u64,
}

/// The nominated member's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NominationAnswer {
    /// The public half of the authority key it generated (or generated
    /// for an earlier nomination and still holds).
    Key(IdentityKey),
    /// Why not.
    Refused(NominationRefusal),
}

/// Why a member refused a nomination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum NominationRefusal {
    /// The nomination did not decode or is for another network.
    #[error("the nomination does not decode or is for another network")]
    Malformed,
    /// The asker holds no key of the set this member trusts.
    #[error("the asking member is not an authority holder")]
    NotAHolder,
    /// This member already holds a key of the current set.
    #[error("the member is already an authority holder")]
    AlreadyAHolder,
    /// The set already has the most keys it may have.
    #[error("the authority set is full")]
    SetFull,
    /// The member could not generate or store its key.
    #[error("the member could not store a new authority key")]
    Failed,
}

impl NominationRefusal {
    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            NominationRefusal::Malformed => "malformed",
            NominationRefusal::NotAHolder => "not_a_holder",
            NominationRefusal::AlreadyAHolder => "already_a_holder",
            NominationRefusal::SetFull => "set_full",
            NominationRefusal::Failed => "failed",
        }
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    encode_versioned(NOMINATION_VERSION, value)
}

fn from_bytes<T>(data: &[u8]) -> Option<T>
where
    T: for<'a> Deserialize<'a> + Serialize,
{
    decode_versioned(NOMINATION_VERSION, MAX_NOMINATION_LEN, data)
}

impl Nomination {
    /// A version byte, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }

    /// Decodes what [`Nomination::to_bytes`] wrote; `None` for anything
    /// else (too long, another version, not canonical).
    pub fn from_bytes(data: &[u8]) -> Option<Self> {
        from_bytes(data)
    }

    /// The nominated member's checks, for a nomination from the member
    /// named `asker` (its connection proved it) when this member trusts
    /// `authorities` and is named `me`: for this network, from a current
    /// holder, to a member that holds no key yet, with room in the set.
    pub fn check(
        &self,
        network: &NetworkId,
        authorities: &Authorities,
        asker: &str,
        me: &str,
    ) -> Result<(), NominationRefusal> {
        let current = authorities.current();
        if self.network != *network {
            return Err(NominationRefusal::Malformed);
        }
        if current.holder_named(asker).is_none() {
            return Err(NominationRefusal::NotAHolder);
        }
        if current.holder_named(me).is_some() {
            return Err(NominationRefusal::AlreadyAHolder);
        }
        if current.holders.len() >= MAX_AUTHORITIES {
            return Err(NominationRefusal::SetFull);
        }
        Ok(())
    }
}

impl NominationAnswer {
    /// A version byte, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }

    /// Decodes what [`NominationAnswer::to_bytes`] wrote; `None` for
    /// anything else.
    pub fn from_bytes(data: &[u8]) -> Option<Self> {
        from_bytes(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::fixtures::{self, NETWORK_ID, NOW};
    use crate::membership::{AuthorityChain, IdentitySecret, SetChange};

    fn set() -> Authorities {
        let anchor = fixtures::authority();
        let genesis = AuthorityChain::genesis(NETWORK_ID, "a", &anchor, 3600, NOW).unwrap();
        genesis.verify(&NETWORK_ID, &anchor.identity()).unwrap()
    }

    #[test]
    fn a_nomination_from_a_holder_to_a_member_without_a_key_is_taken() {
        let n = Nomination {
            network: NETWORK_ID,
            version: 1,
        };
        assert_eq!(Nomination::from_bytes(&n.to_bytes()), Some(n.clone()));
        assert_eq!(n.check(&NETWORK_ID, &set(), "a", "b"), Ok(()));
        let answer = NominationAnswer::Key(IdentitySecret::from_bytes([3; 32]).identity());
        assert_eq!(
            NominationAnswer::from_bytes(&answer.to_bytes()),
            Some(answer)
        );
    }

    #[test]
    fn a_nomination_from_a_non_holder_to_a_holder_or_for_another_network_is_refused() {
        let n = Nomination {
            network: NETWORK_ID,
            version: 1,
        };
        assert_eq!(
            n.check(&NETWORK_ID, &set(), "b", "c"),
            Err(NominationRefusal::NotAHolder)
        );
        assert_eq!(
            n.check(&NETWORK_ID, &set(), "a", "a"),
            Err(NominationRefusal::AlreadyAHolder)
        );
        let other = NetworkId([0xee; 16]);
        assert_eq!(
            n.check(&other, &set(), "a", "b"),
            Err(NominationRefusal::Malformed)
        );
    }

    #[test]
    fn a_full_set_takes_no_more_nominations() {
        let anchor = fixtures::authority();
        let mut chain = AuthorityChain::genesis(NETWORK_ID, "a", &anchor, 3600, NOW).unwrap();
        for i in 0..MAX_AUTHORITIES - 1 {
            let current = chain.verify(&NETWORK_ID, &anchor.identity()).unwrap();
            let key = IdentitySecret::from_bytes([0x40 + i as u8; 32]).identity();
            let name = format!("h{i}");
            chain = chain
                .extend(&current, SetChange::Add { name, key }, &anchor, NOW)
                .unwrap();
        }
        let full = chain.verify(&NETWORK_ID, &anchor.identity()).unwrap();
        let n = Nomination {
            network: NETWORK_ID,
            version: full.version(),
        };
        assert_eq!(
            n.check(&NETWORK_ID, &full, "a", "z"),
            Err(NominationRefusal::SetFull)
        );
    }

    #[test]
    fn junk_and_oversized_messages_do_not_decode() {
        assert_eq!(Nomination::from_bytes(&[]), None);
        assert_eq!(Nomination::from_bytes(&[2, 0, 0]), None);
        assert_eq!(NominationAnswer::from_bytes(&[1; 300]), None);
        let mut bytes = Nomination {
            network: NETWORK_ID,
            version: 1,
        }
        .to_bytes();
        bytes.push(0);
        assert_eq!(Nomination::from_bytes(&bytes), None);
    }
}
