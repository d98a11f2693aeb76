//! Ed25519 identities: the key that says who a member (or the authority)
//! is, and the only signing and verifying the membership layer does.
//!
//! Every signature is **domain-separated**: the signed message is
//! `"weft-v1/" ‖ context ‖ 0x00 ‖ bytes`, where the context names what is
//! being signed ([`SigningContext`]), so a signature made for one purpose
//! can never be presented as another (a record signature as a certificate,
//! say). Verification is strict: weak keys and non-canonical signatures are
//! refused. This module never sees the clock or the OS RNG (a new key comes
//! from the caller's RNG), and the signing key never appears in `Debug`.

use core::fmt;
use core::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::encoding::{parse_hex, write_hex, SIGNATURE_LEN};

/// Length of an Ed25519 public or secret key.
pub const IDENTITY_KEY_LEN: usize = 32;

/// Prefix of every signed message: the protocol and its version.
const DOMAIN: &[u8] = b"weft-v1/";

/// What a signature is for. Part of every signed message, so a signature
/// for one context never verifies in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningContext {
    /// A member certificate, signed by the authority (`"cert"`).
    Certificate,
    /// A gossip record, signed by its origin (`"record"`).
    Record,
    /// A revocation, signed by the authority (`"revocation"`).
    Revocation,
    /// A version of the authority set, signed by a key of the version
    /// before it (`"authority-set"`).
    AuthoritySet,
}

impl SigningContext {
    /// The context string that goes into the signed message.
    pub fn label(self) -> &'static str {
        match self {
            SigningContext::Certificate => "cert",
            SigningContext::Record => "record",
            SigningContext::Revocation => "revocation",
            SigningContext::AuthoritySet => "authority-set",
        }
    }
}

/// The exact message an Ed25519 signature covers.
fn signed_message(context: SigningContext, bytes: &[u8]) -> Vec<u8> {
    let label = context.label().as_bytes();
    let mut m = Vec::with_capacity(DOMAIN.len() + label.len() + 1 + bytes.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(label);
    m.push(0);
    m.extend_from_slice(bytes);
    m
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The 32 bytes are not a usable Ed25519 public key (not a point on the
    /// curve, or one of small order).
    #[error("not a valid Ed25519 public key")]
    InvalidKey,
    /// The signature is not this key's over this message and context.
    #[error("signature does not verify")]
    Mismatch,
}

/// An Ed25519 public key: a member's (or the authority's) identity.
///
/// `Display` shows a short fingerprint (the first 8 bytes in hex), enough
/// to tell members apart in logs; [`IdentityKey::to_hex`] and `FromStr`
/// use all 32 bytes. Any 32 bytes make an `IdentityKey`; whether they are a
/// usable key shows when a signature is verified with them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentityKey(pub [u8; IDENTITY_KEY_LEN]);

impl IdentityKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTITY_KEY_LEN] {
        &self.0
    }

    /// All 32 bytes as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        format!("{:x}", Hex(&self.0))
    }

    /// Checks that `signature` is this key's signature of `bytes` in
    /// `context`.
    pub fn verify(
        &self,
        context: SigningContext,
        bytes: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::InvalidKey)?;
        if key.is_weak() {
            return Err(SignatureError::InvalidKey);
        }
        key.verify_strict(
            &signed_message(context, bytes),
            &Signature::from_bytes(signature),
        )
        .map_err(|_| SignatureError::Mismatch)
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0[..8])
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({self}…)")
    }
}

/// A key or id in text form did not have the expected number of
/// hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected {digits} hexadecimal digits")]
pub struct ParseKeyError {
    /// How many digits were expected.
    pub digits: usize,
}

impl FromStr for IdentityKey {
    type Err = ParseKeyError;

    /// Parses the 64 hexadecimal digits [`IdentityKey::to_hex`] writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s.trim())
            .map(IdentityKey)
            .ok_or(ParseKeyError { digits: 64 })
    }
}

/// Lowercase hex of a byte slice, for `format!`.
pub(super) struct Hex<'a>(pub(super) &'a [u8]);

impl fmt::LowerHex for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0)
    }
}

/// An Ed25519 signing key. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct IdentitySecret(SigningKey);

impl IdentitySecret {
    /// Wraps the 32 secret bytes (as [`IdentitySecret::to_bytes`] wrote).
    pub fn from_bytes(mut bytes: [u8; IDENTITY_KEY_LEN]) -> Self {
        let key = SigningKey::from_bytes(&bytes);
        bytes.zeroize();
        Self(key)
    }

    /// A new key from `rng`, which must be cryptographically secure.
    pub fn generate(rng: &mut dyn CryptoRngCore) -> Self {
        let mut bytes = [0u8; IDENTITY_KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// The 32 secret bytes, for writing to a key file.
    pub fn to_bytes(&self) -> [u8; IDENTITY_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn identity(&self) -> IdentityKey {
        IdentityKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `bytes` in `context` (see the module documentation for the
    /// exact message).
    pub fn sign(&self, context: SigningContext, bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(&signed_message(context, bytes)).to_bytes()
    }
}

impl fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentitySecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn secret() -> IdentitySecret {
        IdentitySecret::generate(&mut ChaCha20Rng::seed_from_u64(1))
    }

    #[test]
    fn a_signature_verifies_for_its_key_bytes_and_context() {
        let s = secret();
        let sig = s.sign(SigningContext::Record, b"hello");
        assert_eq!(
            s.identity().verify(SigningContext::Record, b"hello", &sig),
            Ok(())
        );
    }

    #[test]
    fn a_signature_does_not_verify_in_another_context() {
        let s = secret();
        let sig = s.sign(SigningContext::Record, b"hello");
        for other in [SigningContext::Certificate, SigningContext::Revocation] {
            assert_eq!(
                s.identity().verify(other, b"hello", &sig),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn the_signed_message_is_the_domain_context_and_bytes() {
        // Pinned so that a change to the construction is a deliberate one.
        assert_eq!(
            signed_message(SigningContext::Revocation, b"xy"),
            b"weft-v1/revocation\0xy"
        );
        let s = secret();
        let sig = s.0.sign(b"weft-v1/cert\0abc").to_bytes();
        assert_eq!(
            s.identity()
                .verify(SigningContext::Certificate, b"abc", &sig),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_message_signature_or_key_does_not_verify() {
        let s = secret();
        let sig = s.sign(SigningContext::Certificate, b"abc");
        let id = s.identity();
        assert!(id
            .verify(SigningContext::Certificate, b"abd", &sig)
            .is_err());
        for i in 0..SIGNATURE_LEN {
            let mut bad = sig;
            bad[i] ^= 0x01;
            assert!(id
                .verify(SigningContext::Certificate, b"abc", &bad)
                .is_err());
        }
        for i in 0..IDENTITY_KEY_LEN {
            let mut bad = id;
            bad.0[i] ^= 0x01;
            assert!(bad
                .verify(SigningContext::Certificate, b"abc", &sig)
                .is_err());
        }
    }

    #[test]
    fn a_small_order_key_is_refused_as_invalid() {
        // The identity point: every "signature" with R = identity, S = 0
        // would verify under non-strict rules.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        assert_eq!(
            IdentityKey(identity_point).verify(SigningContext::Record, b"x", &sig),
            Err(SignatureError::InvalidKey)
        );
    }

    #[test]
    fn secret_bytes_round_trip() {
        let s = secret();
        let again = IdentitySecret::from_bytes(s.to_bytes());
        assert_eq!(again.identity(), s.identity());
    }

    #[test]
    fn identity_keys_print_short_and_parse_long() {
        let id = IdentityKey([0xab; 32]);
        assert_eq!(id.to_string(), "abababababababab");
        assert_eq!(format!("{id:?}"), "IdentityKey(abababababababab…)");
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id.to_hex().parse::<IdentityKey>(), Ok(id));
        assert_eq!(
            id.to_string().parse::<IdentityKey>(),
            Err(ParseKeyError { digits: 64 })
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        assert_eq!(format!("{:?}", secret()), "IdentitySecret(<redacted>)");
    }
}
