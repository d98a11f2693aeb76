//! Invite tokens: how a new server finds its inviter and proves it was
//! invited.
//!
//! A token names the network, pins the inviter's data-plane key and says
//! where to reach it, and carries a one-time 32-byte secret. Its text form
//! is `weft1.` followed by base64url (no padding) of the postcard encoding
//! and a 4-byte BLAKE2s checksum, so it survives a chat window or an email
//! (whitespace and line breaks are ignored) and damage shows as
//! [`InviteError::Corrupted`] rather than as a mysterious failure later.
//! The inviter keeps only [`InviteToken::secret_hash`], never the secret.
//!
//! This module never sees the clock (expiry is checked against the
//! caller's `now_unix`) or the OS RNG, and never prints the secret.

use core::fmt;
use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use blake2::{Blake2s256, Digest};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::encoding::{encode, endpoint_problem};
use super::network::{is_valid_name, NetworkId};
use crate::addr::{self, Loopback};
use crate::PublicKey;

/// Version of the token format, the digit in the text prefix.
pub const INVITE_VERSION: u32 = 1;
/// What every version-1 token starts with.
pub const INVITE_PREFIX: &str = "weft1.";
/// Most inviter endpoints a token carries.
pub const MAX_INVITE_ENDPOINTS: usize = 4;
/// Length of the invite secret.
pub const INVITE_SECRET_LEN: usize = 32;
/// Length of the checksum appended to the encoding before base64.
const CHECKSUM_LEN: usize = 4;
/// Longest text [`InviteToken::parse`] looks at, whitespace included; a
/// token with four IPv6 endpoints and a long name is under 350 characters.
pub const MAX_INVITE_TEXT_LEN: usize = 2048;

/// A one-time invitation to join a network.
///
/// The join: the new server runs a Noise handshake with the pinned
/// `inviter_noise_key` at one of `inviter_endpoints`, so only the real
/// inviter can read what it sends. The secret travels in that first
/// message, encrypted to the inviter, and is then mixed in as the
/// pre-shared key; the inviter, which stored only
/// [`InviteToken::secret_hash`], checks it with
/// [`InviteToken::secret_matches`] and forgets the hash (one use). The
/// exchange itself is the join protocol's business, not this module's.
///
/// `Debug` redacts the secret and the secret is zeroed on drop. There is
/// deliberately no `Display`: [`InviteToken::to_text`] is the secret in
/// another form, and should not end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken {
    /// The network to join.
    pub network: NetworkId,
    /// The inviter's data-plane key, pinned: the joiner talks to no one else.
    pub inviter_noise_key: PublicKey,
    /// Where the inviter listens (1 to [`MAX_INVITE_ENDPOINTS`]).
    pub inviter_endpoints: Vec<SocketAddr>,
    /// The one-time secret.
    pub secret: [u8; INVITE_SECRET_LEN],
    /// The token is refused from this second (unix time) on.
    pub expires_unix: u64,
    /// The member name the inviter chose for the joiner, if it chose one.
    pub name: Option<String>,
}

impl Drop for InviteToken {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteToken")
            .field("network", &self.network)
            .field("inviter_noise_key", &self.inviter_noise_key)
            .field("inviter_endpoints", &self.inviter_endpoints)
            .field("secret", &format_args!("<redacted>"))
            .field("expires_unix", &self.expires_unix)
            .field("name", &self.name)
            .finish()
    }
}

/// The encoded form, field for field. Separate from [`InviteToken`] so
/// that the public type has no serde implementation to leak the secret
/// through.
#[derive(Serialize, Deserialize)]
struct TokenWire {
    network: NetworkId,
    #[serde(with = "super::encoding::noise_key")]
    inviter_noise_key: PublicKey,
    inviter_endpoints: Vec<SocketAddr>,
    secret: [u8; INVITE_SECRET_LEN],
    expires_unix: u64,
    name: Option<String>,
}

impl Drop for TokenWire {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl InviteToken {
    /// A new token for `network`, valid for `ttl_secs` from `now_unix`,
    /// with a fresh secret from `rng` (which must be cryptographically
    /// secure). IPv4-mapped endpoints are written as the IPv4 endpoints
    /// they stand for ([`addr::canonical`]); anything else
    /// [`InviteToken::parse`] would refuse is refused.
    pub fn generate(
        network: NetworkId,
        inviter_noise_key: PublicKey,
        inviter_endpoints: Vec<SocketAddr>,
        name: Option<String>,
        ttl_secs: u64,
        now_unix: u64,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Self, InviteError> {
        if ttl_secs == 0 {
            return Err(InviteError::Invalid("the lifetime is zero"));
        }
        let mut token = InviteToken {
            network,
            inviter_noise_key,
            inviter_endpoints: inviter_endpoints.into_iter().map(addr::canonical).collect(),
            secret: [0; INVITE_SECRET_LEN],
            expires_unix: now_unix.saturating_add(ttl_secs),
            name,
        };
        token.check()?;
        rng.fill_bytes(&mut token.secret);
        Ok(token)
    }

    /// The text form: `weft1.` and base64url without padding of the
    /// encoding and its checksum. URL-safe, no spaces.
    pub fn to_text(&self) -> String {
        let wire = TokenWire {
            network: self.network,
            inviter_noise_key: self.inviter_noise_key,
            inviter_endpoints: self.inviter_endpoints.clone(),
            secret: self.secret,
            expires_unix: self.expires_unix,
            name: self.name.clone(),
        };
        let mut payload = encode(&wire);
        let text = encode_text(&mut payload);
        payload.zeroize();
        text
    }

    /// Reads a token as [`InviteToken::to_text`] wrote it, ignoring any
    /// whitespace (around it, or line breaks a mail client put inside), and
    /// checks it is still valid at `now_unix`.
    pub fn parse(text: &str, now_unix: u64) -> Result<Self, InviteError> {
        if text.len() > MAX_INVITE_TEXT_LEN {
            return Err(InviteError::Malformed);
        }
        let mut compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let decoded = decode_text(&compact);
        compact.zeroize();
        let mut payload = decoded?;
        let token = Self::from_payload(&payload);
        payload.zeroize();
        let token = token?;
        token.check()?;
        if now_unix >= token.expires_unix {
            return Err(InviteError::Expired {
                at: token.expires_unix,
            });
        }
        Ok(token)
    }

    /// Decodes the encoding (checksum already removed).
    fn from_payload(payload: &[u8]) -> Result<Self, InviteError> {
        let (mut wire, rest) =
            postcard::take_from_bytes::<TokenWire>(payload).map_err(|_| InviteError::Malformed)?;
        if !rest.is_empty() {
            return Err(InviteError::Malformed);
        }
        Ok(InviteToken {
            network: wire.network,
            inviter_noise_key: wire.inviter_noise_key,
            inviter_endpoints: core::mem::take(&mut wire.inviter_endpoints),
            secret: wire.secret,
            expires_unix: wire.expires_unix,
            name: wire.name.take(),
        })
    }

    /// The rules on contents that both generating and parsing enforce.
    fn check(&self) -> Result<(), InviteError> {
        if !(1..=MAX_INVITE_ENDPOINTS).contains(&self.inviter_endpoints.len()) {
            return Err(InviteError::Invalid(
                "it must name 1 to 4 inviter endpoints",
            ));
        }
        for e in &self.inviter_endpoints {
            // Loopback is allowed: a single-host test of the join is fine.
            if let Some(problem) = endpoint_problem(e, Loopback::Allowed) {
                return Err(InviteError::Invalid(problem));
            }
        }
        if self.name.as_deref().is_some_and(|n| !is_valid_name(n)) {
            return Err(InviteError::Invalid("the member name is not valid"));
        }
        Ok(())
    }

    /// What the inviter stores instead of the secret:
    /// BLAKE2s-256(`"weft-invite"` ‖ secret).
    pub fn secret_hash(&self) -> [u8; 32] {
        Self::hash_secret(&self.secret)
    }

    /// [`InviteToken::secret_hash`] of a secret on its own, as the inviter
    /// computes it from what the joiner sends.
    pub fn hash_secret(secret: &[u8; INVITE_SECRET_LEN]) -> [u8; 32] {
        Blake2s256::new()
            .chain_update(b"weft-invite")
            .chain_update(secret)
            .finalize()
            .into()
    }

    /// Whether `secret` is the one whose hash the inviter stored, compared
    /// in constant time.
    pub fn secret_matches(secret: &[u8; INVITE_SECRET_LEN], stored_hash: &[u8; 32]) -> bool {
        let h = Self::hash_secret(secret);
        h.iter()
            .zip(stored_hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The checksum: the first 4 bytes of BLAKE2s-256 of the encoding.
fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = Blake2s256::digest(payload);
    [h[0], h[1], h[2], h[3]]
}

/// The text form of an encoding: appends the checksum to `payload`, then
/// the prefix and base64url.
pub(super) fn encode_text(payload: &mut Vec<u8>) -> String {
    let sum = checksum(payload);
    payload.extend_from_slice(&sum);
    format!("{INVITE_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload))
}

/// Checks the prefix, base64 and checksum of a token without whitespace,
/// and returns the encoding inside.
fn decode_text(compact: &str) -> Result<Vec<u8>, InviteError> {
    let (prefix, body) = compact.split_once('.').ok_or(InviteError::Malformed)?;
    match prefix.strip_prefix("weft").ok_or(InviteError::Malformed)? {
        "1" => {}
        v if !v.is_empty() && !v.starts_with('0') && v.bytes().all(|c| c.is_ascii_digit()) => {
            return Err(InviteError::UnsupportedVersion(
                v.parse().unwrap_or(u32::MAX),
            ));
        }
        _ => return Err(InviteError::Malformed),
    }
    // The prefix was right, so a body that does not decode, or whose
    // checksum fails, is a token damaged on the way.
    let mut payload = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| InviteError::Corrupted)?;
    if payload.len() <= CHECKSUM_LEN {
        return Err(InviteError::Corrupted);
    }
    let split = payload.len() - CHECKSUM_LEN;
    if checksum(&payload[..split]) != payload[split..] {
        payload.zeroize();
        return Err(InviteError::Corrupted);
    }
    payload.truncate(split);
    Ok(payload)
}

/// Prints unix time as `YYYY-MM-DD HH:MM:SS UTC`.
struct Utc(u64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, secs) = (self.0 / 86_400, self.0 % 86_400);
        // Howard Hinnant's civil_from_days, on days since 1970-01-01; u64
        // seconds give at most ~2^47 days, far inside i64.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// Why an invite token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The text is not an invite token at all (wrong prefix, or contents
    /// that do not decode although the checksum matches).
    #[error("not a weft invite token")]
    Malformed,
    /// The token is from a newer token format.
    #[error("this invite is from a newer weft (token version {0}); upgrade weft to use it")]
    UnsupportedVersion(u32),
    /// The prefix is right but the rest does not decode or fails its
    /// checksum: the text was changed or cut on the way.
    #[error("the token was damaged in copying (checksum mismatch)")]
    Corrupted,
    /// The contents break a rule (endpoints, name, lifetime). From
    /// [`InviteToken::parse`] this means a faulty inviter; from
    /// [`InviteToken::generate`], faulty arguments.
    #[error("the invite is not valid: {0}")]
    Invalid(&'static str),
    /// The token has expired.
    #[error("this invite expired at {}", Utc(*.at))]
    Expired {
        /// When it expired (unix time).
        at: u64,
    },
}

impl InviteError {
    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            InviteError::Malformed => "malformed",
            InviteError::UnsupportedVersion(_) => "unsupported_version",
            InviteError::Corrupted => "corrupted",
            InviteError::Invalid(_) => "invalid",
            InviteError::Expired { .. } => "expired",
        }
    }
}

#[cfg(test)]
mod tests;
