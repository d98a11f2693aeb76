//! mac1, mac2 and cookie replies: cheap checks before any Diffie-Hellman.
//!
//! Every handshake message carries `mac1`, a keyed BLAKE2s-128 over the
//! message keyed by a hash of the *receiver's* static public key: a sender
//! that does not know who it is talking to cannot make one, so garbage is
//! dropped for the price of one hash, and only a message that passes counts
//! toward load. Under load, the responder also demands `mac2`, keyed by a
//! cookie that only a sender able to receive at its source address can
//! know; a handshake without it is answered with a cookie reply (the cookie
//! encrypted with XChaCha20-Poly1305) instead of being processed. When the
//! device is under load, and how often one source may then be processed,
//! is `ratelimit.rs`'s to say, not this module's.
//!
//! The construction and labels follow WireGuard's (whitepaper §5.4.4–5.4.7).
//! Nothing here reads the clock or an unseeded RNG.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::RngCore;

use crate::wire::{COOKIE_REPLY_LEN, MAC_LEN};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// How long a cookie secret, and a cookie received from a peer, stay valid
/// (WireGuard's COOKIE_REFRESH_TIME).
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);

type Mac16 = Blake2sMac<U16>;

fn hash(label: &[u8], key: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(key);
    h.finalize().into()
}

fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    // Keys here are 16 or 32 bytes, within BLAKE2s's 32-byte key limit.
    let mut m = <Mac16 as KeyInit>::new_from_slice(key).expect("key of at most 32 bytes");
    Mac::update(&mut m, data);
    m.finalize_fixed().into()
}

fn address_bytes(src: SocketAddr, out: &mut [u8; 18]) -> &[u8] {
    let n = match src.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    out[n..n + 2].copy_from_slice(&src.port().to_be_bytes());
    &out[..n + 2]
}

/// Keys derived from one static public key.
#[derive(Clone)]
struct DerivedKeys {
    mac1: [u8; 32],
    cookie: [u8; 32],
}

impl DerivedKeys {
    fn new(public: &[u8; 32]) -> Self {
        Self {
            mac1: hash(LABEL_MAC1, public),
            cookie: hash(LABEL_COOKIE, public),
        }
    }
}

/// Result of checking the macs of an incoming handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacVerdict {
    /// Process the message.
    Accept,
    /// mac1 is wrong: drop silently.
    BadMac1,
    /// Under load and mac2 is missing or stale: answer with a cookie reply.
    NeedCookie,
}

/// The responder's side: checks mac1/mac2 of messages sent to us and makes
/// cookie replies.
pub struct CookieChecker {
    keys: DerivedKeys,
    secret: [u8; 32],
    secret_born: Option<Instant>,
}

impl core::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieChecker").finish_non_exhaustive()
    }
}

impl CookieChecker {
    /// A checker for messages addressed to `our_public` key.
    pub fn new(our_public: &[u8; 32]) -> Self {
        Self {
            keys: DerivedKeys::new(our_public),
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// Whether mac1 of the whole handshake message `msg` (which ends with
    /// mac1, mac2) is ours: one hash, nothing changes. Only a message that
    /// passes counts toward load.
    pub fn check_mac1(&self, msg: &[u8]) -> bool {
        let mac2_start = msg.len() - MAC_LEN;
        let mac1_start = mac2_start - MAC_LEN;
        let expected = mac(&self.keys.mac1, &msg[..mac1_start]);
        ct_eq(&expected, &msg[mac1_start..mac2_start])
    }

    /// Whether mac2 of `msg` is made with the cookie of its source `src`
    /// (the cookie secret is renewed first if it is stale).
    pub fn check_mac2(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
        rng: &mut dyn RngCore,
    ) -> bool {
        let mac2_start = msg.len() - MAC_LEN;
        let cookie = self.cookie_for(src, now, rng);
        let expected = mac(&cookie, &msg[..mac2_start]);
        ct_eq(&expected, &msg[mac2_start..])
    }

    /// Both checks at once: mac1, then, if `under_load`, mac2.
    pub fn verify(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        under_load: bool,
        now: Instant,
        rng: &mut dyn RngCore,
    ) -> MacVerdict {
        if !self.check_mac1(msg) {
            MacVerdict::BadMac1
        } else if under_load && !self.check_mac2(msg, src, now, rng) {
            MacVerdict::NeedCookie
        } else {
            MacVerdict::Accept
        }
    }

    /// Builds a cookie reply to handshake message `msg` from `src` whose
    /// sender index is `sender`.
    pub fn reply(
        &mut self,
        msg: &[u8],
        sender: u32,
        src: SocketAddr,
        now: Instant,
        rng: &mut dyn RngCore,
    ) -> [u8; COOKIE_REPLY_LEN] {
        let cookie = self.cookie_for(src, now, rng);
        let mac1 = &msg[msg.len() - 2 * MAC_LEN..msg.len() - MAC_LEN];
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let mut sealed = [0u8; 32];
        sealed[..16].copy_from_slice(&cookie);
        let aead = XChaCha20Poly1305::new((&self.keys.cookie).into());
        // Encrypting 16 bytes into a fixed buffer cannot fail.
        let tag = aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut sealed[..16])
            .expect("in-place encryption of a 16-byte buffer");
        sealed[16..].copy_from_slice(&tag);
        let mut out = [0u8; COOKIE_REPLY_LEN];
        crate::wire::write_cookie_reply(&mut out, sender, &nonce, &sealed);
        out
    }

    fn cookie_for(&mut self, src: SocketAddr, now: Instant, rng: &mut dyn RngCore) -> [u8; 16] {
        let stale = self
            .secret_born
            .is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_REFRESH_TIME);
        if stale {
            rng.fill_bytes(&mut self.secret);
            self.secret_born = Some(now);
        }
        let mut buf = [0u8; 18];
        mac(&self.secret, address_bytes(src, &mut buf))
    }
}

/// The initiator's side toward one peer: computes mac1/mac2 for messages we
/// send it and takes its cookie replies.
#[derive(Clone)]
pub struct CookieGenerator {
    keys: DerivedKeys,
    last_mac1: Option<[u8; MAC_LEN]>,
    cookie: Option<([u8; 16], Instant)>,
}

impl core::fmt::Debug for CookieGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieGenerator")
            .field("has_cookie", &self.cookie.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a cookie reply was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// No handshake message was sent that it could answer.
    Unexpected,
    /// It did not decrypt under the peer's key and our last mac1.
    Invalid,
}

impl CookieGenerator {
    /// A generator for messages sent to the peer with `peer_public` key.
    pub fn new(peer_public: &[u8; 32]) -> Self {
        Self {
            keys: DerivedKeys::new(peer_public),
            last_mac1: None,
            cookie: None,
        }
    }

    /// Fills the last two 16-byte fields of `msg` with mac1 and mac2.
    pub fn seal(&mut self, msg: &mut [u8], now: Instant) {
        let mac2_start = msg.len() - MAC_LEN;
        let mac1_start = mac2_start - MAC_LEN;
        let mac1 = mac(&self.keys.mac1, &msg[..mac1_start]);
        msg[mac1_start..mac2_start].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let mac2 = match self.cookie {
            // A cookie is used for a little less than its lifetime so that
            // it does not expire in flight.
            Some((cookie, at))
                if now.saturating_duration_since(at)
                    < COOKIE_REFRESH_TIME - Duration::from_secs(5) =>
            {
                mac(&cookie, &msg[..mac2_start])
            }
            _ => [0; MAC_LEN],
        };
        msg[mac2_start..].copy_from_slice(&mac2);
    }

    /// Takes a cookie reply to our last handshake message.
    pub fn receive(
        &mut self,
        nonce: &[u8],
        encrypted: &[u8],
        now: Instant,
    ) -> Result<(), CookieError> {
        let mac1 = self.last_mac1.ok_or(CookieError::Unexpected)?;
        let mut buf = [0u8; 16];
        buf.copy_from_slice(&encrypted[..16]);
        let aead = XChaCha20Poly1305::new((&self.keys.cookie).into());
        aead.decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &mac1,
            &mut buf,
            encrypted[16..32].into(),
        )
        .map_err(|_| CookieError::Invalid)?;
        self.cookie = Some((buf, now));
        Ok(())
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn msg() -> [u8; 148] {
        let mut m = [7u8; 148];
        m[0] = 1;
        m
    }

    #[test]
    fn mac1_made_for_the_receiver_is_accepted_and_any_other_refused() {
        // Any 32 bytes serve as a public key for the keyed hashes.
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let src: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let mut m = msg();
        CookieGenerator::new(&a).seal(&mut m, now);
        let mut to_a = CookieChecker::new(&a);
        let mut to_b = CookieChecker::new(&b);
        assert_eq!(
            to_a.verify(&m, src, false, now, &mut rng),
            MacVerdict::Accept
        );
        assert_eq!(
            to_b.verify(&m, src, false, now, &mut rng),
            MacVerdict::BadMac1
        );
        m[10] ^= 1;
        assert_eq!(
            to_a.verify(&m, src, false, now, &mut rng),
            MacVerdict::BadMac1
        );
    }

    #[test]
    fn under_load_a_cookie_round_trip_makes_mac2_valid_for_that_source_only() {
        let key = [9u8; 32];
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let src: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:6".parse().unwrap();
        let mut gen = CookieGenerator::new(&key);
        let mut chk = CookieChecker::new(&key);
        let mut m = msg();
        gen.seal(&mut m, now);
        assert_eq!(
            chk.verify(&m, src, true, now, &mut rng),
            MacVerdict::NeedCookie
        );
        let reply = chk.reply(&m, 42, src, now, &mut rng);
        let crate::wire::Message::CookieReply(r) = crate::wire::Message::parse(&reply).unwrap()
        else {
            panic!("not a cookie reply")
        };
        assert_eq!(r.receiver(), 42);
        gen.receive(r.nonce(), r.encrypted_cookie(), now).unwrap();
        let mut m2 = msg();
        gen.seal(&mut m2, now);
        assert_eq!(
            chk.verify(&m2, src, true, now, &mut rng),
            MacVerdict::Accept
        );
        assert_eq!(
            chk.verify(&m2, other, true, now, &mut rng),
            MacVerdict::NeedCookie
        );
    }

    #[test]
    fn a_forged_cookie_reply_is_refused() {
        let key = [9u8; 32];
        let now = Instant::now();
        let mut gen = CookieGenerator::new(&key);
        assert_eq!(
            gen.receive(&[0; 24], &[0; 32], now),
            Err(CookieError::Unexpected)
        );
        let mut m = msg();
        gen.seal(&mut m, now);
        assert_eq!(
            gen.receive(&[0; 24], &[0; 32], now),
            Err(CookieError::Invalid)
        );
    }
}
