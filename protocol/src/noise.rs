//! Keys and the Noise `IKpsk2` handshake, through snow.
//!
//! snow runs the handshake; once it finishes, the two transport keys are
//! taken out and handed to [`crate::session`], which seals packets in place
//! with ring (see `docs/decisions/0001-transport-aead.md`). Ephemeral keys
//! come from a ChaCha20 RNG seeded by the caller, so a simulation replays
//! exactly. Secrets never appear in `Debug` output.

use core::fmt;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::wire::{INITIATION_NOISE_LEN, KEY_LEN, RESPONSE_NOISE_LEN, TIMESTAMP_LEN};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Prologue mixed into every handshake, binding it to this protocol version.
pub const PROLOGUE: &[u8] = b"weft data plane v1";

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short fingerprint is enough to tell peers apart in logs.
        write!(f, "PublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An X25519 static private key. Zeroed on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticSecret([u8; KEY_LEN]);

impl StaticSecret {
    /// Wraps raw key bytes (clamping happens inside X25519).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A new key from `rng`.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let mut b = [0u8; KEY_LEN];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// The raw bytes, for writing to a key file.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        // Fuzzing builds may answer from memory (`fuzzing::x25519_memo`).
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(public) = crate::fuzzing::x25519_memo::public_key(&self.0) {
            return PublicKey(public);
        }
        let s = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&s).to_bytes())
    }
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecret(<redacted>)")
    }
}

/// A 32-byte pre-shared key mixed into the handshake (all zero when none
/// is configured, as Noise's `psk2` then degrades to plain `IK`).
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey(pub [u8; 32]);

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// A TAI64N timestamp: 8 bytes of seconds since 1970 offset by 2^62, 4
/// bytes of nanoseconds, both big endian, so byte order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Tai64N(pub [u8; TIMESTAMP_LEN]);

impl Tai64N {
    /// The timestamp `since_unix_epoch` after 1970-01-01.
    pub fn from_unix(since_unix_epoch: core::time::Duration) -> Self {
        let mut b = [0u8; TIMESTAMP_LEN];
        let secs = (1u64 << 62).wrapping_add(since_unix_epoch.as_secs());
        b[..8].copy_from_slice(&secs.to_be_bytes());
        b[8..].copy_from_slice(&since_unix_epoch.subsec_nanos().to_be_bytes());
        Self(b)
    }
}

/// snow resolver: ring's ChaCha20-Poly1305, snow's own X25519 and BLAKE2s,
/// and a ChaCha20 RNG from a seed we choose.
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        // Fuzzing builds may remember X25519 results (same bytes, faster;
        // `fuzzing::x25519_memo`).
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(dh) = crate::fuzzing::x25519_memo::dh(choice) {
            return Some(dh);
        }
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver
            .resolve_cipher(choice)
            .or_else(|| DefaultResolver.resolve_cipher(choice))
    }
}

impl Drop for SeededResolver {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

fn builder<'a>(seed: [u8; 32]) -> Builder<'a> {
    seeded_builder(NOISE_PARAMS, seed)
}

/// A snow builder for `params` whose randomness comes from `seed`.
pub(crate) fn seeded_builder<'a>(params: &str, seed: [u8; 32]) -> Builder<'a> {
    // The parameter strings are constants that snow parses; a failure would
    // be a build-time mistake caught by every test.
    let params = params.parse().expect("valid Noise parameters");
    Builder::with_resolver(params, Box::new(SeededResolver { seed }))
}

/// The two transport keys a finished handshake yields.
pub struct TransportKeys {
    /// Key for the messages we send.
    pub send: [u8; 32],
    /// Key for the messages we receive.
    pub recv: [u8; 32],
}

impl Drop for TransportKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

impl fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportKeys(<redacted>)")
    }
}

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Decryption or authentication failed.
    Crypto,
    /// The message was not the expected size or shape.
    Malformed,
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt | snow::Error::Dh => HandshakeError::Crypto,
            _ => HandshakeError::Malformed,
        }
    }
}

/// An initiator waiting for the response to its first message.
pub struct PendingInitiation {
    hs: HandshakeState,
}

impl fmt::Debug for PendingInitiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingInitiation")
    }
}

/// Writes the first handshake message (ephemeral, encrypted static key,
/// encrypted timestamp) into `out`.
pub fn initiate(
    local: &StaticSecret,
    remote: &PublicKey,
    psk: &PresharedKey,
    timestamp: Tai64N,
    seed: [u8; 32],
    out: &mut [u8; INITIATION_NOISE_LEN],
) -> Result<PendingInitiation, HandshakeError> {
    let mut hs = builder(seed)
        .local_private_key(&local.0)?
        .remote_public_key(&remote.0)?
        .prologue(PROLOGUE)?
        .psk(2, &psk.0)?
        .build_initiator()?;
    let n = hs.write_message(&timestamp.0, out)?;
    debug_assert_eq!(n, INITIATION_NOISE_LEN);
    Ok(PendingInitiation { hs })
}

impl PendingInitiation {
    /// Reads the responder's message and derives the transport keys. A
    /// message that fails leaves the handshake as it was, so a forged
    /// response cannot cancel a genuine one still in flight.
    pub fn finish(&mut self, response: &[u8]) -> Result<TransportKeys, HandshakeError> {
        if response.len() != RESPONSE_NOISE_LEN {
            return Err(HandshakeError::Malformed);
        }
        let mut payload = [0u8; 16];
        let n = self.hs.read_message(response, &mut payload)?;
        if n != 0 || !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Malformed);
        }
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        Ok(TransportKeys {
            send: i2r,
            recv: r2i,
        })
    }
}

/// A responder that has read a first message and knows who sent it.
pub struct ReceivedInitiation {
    hs: HandshakeState,
    /// The initiator's static key, authenticated by the message.
    pub remote: PublicKey,
    /// The initiator's timestamp.
    pub timestamp: Tai64N,
}

impl fmt::Debug for ReceivedInitiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedInitiation")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Reads a first handshake message addressed to `local`.
pub fn receive_initiation(
    local: &StaticSecret,
    seed: [u8; 32],
    message: &[u8],
) -> Result<ReceivedInitiation, HandshakeError> {
    if message.len() != INITIATION_NOISE_LEN {
        return Err(HandshakeError::Malformed);
    }
    let mut hs = builder(seed)
        .local_private_key(&local.0)?
        .prologue(PROLOGUE)?
        .build_responder()?;
    let mut payload = [0u8; 64];
    let n = hs.read_message(message, &mut payload)?;
    if n != TIMESTAMP_LEN {
        return Err(HandshakeError::Malformed);
    }
    let remote = hs.get_remote_static().ok_or(HandshakeError::Malformed)?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(remote);
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    timestamp.copy_from_slice(&payload[..TIMESTAMP_LEN]);
    Ok(ReceivedInitiation {
        hs,
        remote: PublicKey(key),
        timestamp: Tai64N(timestamp),
    })
}

impl ReceivedInitiation {
    /// Writes the response with the peer's pre-shared key and derives the
    /// transport keys.
    pub fn respond(
        mut self,
        psk: &PresharedKey,
        out: &mut [u8; RESPONSE_NOISE_LEN],
    ) -> Result<TransportKeys, HandshakeError> {
        self.hs.set_psk(2, &psk.0)?;
        let n = self.hs.write_message(&[], out)?;
        if n != RESPONSE_NOISE_LEN || !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Malformed);
        }
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        Ok(TransportKeys {
            send: r2i,
            recv: i2r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> StaticSecret {
        StaticSecret::from_bytes([n; 32])
    }

    #[test]
    fn both_sides_derive_matching_keys() {
        let (i, r) = (key(1), key(2));
        let psk = PresharedKey([3; 32]);
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        let mut pending =
            initiate(&i, &r.public_key(), &psk, Tai64N([1; 12]), [4; 32], &mut m1).unwrap();
        let got = receive_initiation(&r, [5; 32], &m1).unwrap();
        assert_eq!(got.remote, i.public_key());
        assert_eq!(got.timestamp, Tai64N([1; 12]));
        let mut m2 = [0u8; RESPONSE_NOISE_LEN];
        let rk = got.respond(&psk, &mut m2).unwrap();
        let ik = pending.finish(&m2).unwrap();
        assert_eq!(ik.send, rk.recv);
        assert_eq!(ik.recv, rk.send);
        assert_ne!(ik.send, ik.recv);
    }

    #[test]
    fn a_psk_mismatch_fails_the_initiator() {
        let (i, r) = (key(1), key(2));
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        let mut pending = initiate(
            &i,
            &r.public_key(),
            &PresharedKey([1; 32]),
            Tai64N::default(),
            [4; 32],
            &mut m1,
        )
        .unwrap();
        let got = receive_initiation(&r, [5; 32], &m1).unwrap();
        let mut m2 = [0u8; RESPONSE_NOISE_LEN];
        got.respond(&PresharedKey([2; 32]), &mut m2).unwrap();
        assert_eq!(pending.finish(&m2).unwrap_err(), HandshakeError::Crypto);
    }

    #[test]
    fn an_initiation_for_another_key_is_refused() {
        let (i, r, other) = (key(1), key(2), key(9));
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        initiate(
            &i,
            &r.public_key(),
            &PresharedKey::default(),
            Tai64N::default(),
            [4; 32],
            &mut m1,
        )
        .unwrap();
        assert!(receive_initiation(&other, [5; 32], &m1).is_err());
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = Tai64N::from_unix(core::time::Duration::new(1_700_000_000, 999_999_999));
        let b = Tai64N::from_unix(core::time::Duration::new(1_700_000_001, 0));
        assert!(a < b);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        assert_eq!(format!("{:?}", key(7)), "StaticSecret(<redacted>)");
    }
}
