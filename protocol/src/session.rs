//! One transport session: a pair of keys, a send counter, a replay window.
//!
//! Packets are sealed and opened in place in the caller's buffer with ring's
//! ChaCha20-Poly1305: the nonce is 32 zero bits followed by the 64-bit
//! little-endian counter, exactly as Noise's ChaChaPoly transport (and
//! WireGuard) define it. Nothing is copied and nothing is allocated per
//! packet. A session never decides when it is too old; the peer does, with
//! the constants in [`crate::timers`].

use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::noise::TransportKeys;
use crate::replay::{ReplayWindow, REJECT_AFTER_MESSAGES};
use crate::wire::{write_transport_header, TAG_LEN, TRANSPORT_HEADER_LEN};

/// Why a packet could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The counter is exhausted: the session must not send again.
    CounterExhausted,
    /// The counter was already seen or is too old.
    Replay,
    /// Authentication failed.
    Decrypt,
    /// The buffer cannot hold the sealed packet.
    BufferTooSmall,
}

/// A transport session with one peer.
pub struct Session {
    /// Our index: incoming messages for this session carry it.
    pub local_index: u32,
    /// The peer's index: outgoing messages carry it.
    pub remote_index: u32,
    /// When the handshake that made it finished.
    pub established: Instant,
    /// Whether we initiated that handshake.
    pub initiator: bool,
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    send_counter: u64,
    replay: ReplayWindow,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is exactly what ChaCha20-Poly1305 takes.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte key"))
}

impl Session {
    /// A session from a finished handshake.
    pub fn new(
        keys: &TransportKeys,
        local_index: u32,
        remote_index: u32,
        initiator: bool,
        now: Instant,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            established: now,
            initiator,
            send_key: key(&keys.send),
            recv_key: key(&keys.recv),
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// The counter the next sealed packet will carry.
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Seals the payload at `buf[TRANSPORT_HEADER_LEN..][..len]` in place:
    /// pads it with zeros to a multiple of 16 bytes (not beyond
    /// `max_padded`), writes the header in front and the tag behind.
    /// Returns the datagram length.
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        len: usize,
        max_padded: usize,
    ) -> Result<usize, SessionError> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::CounterExhausted);
        }
        let padded = len.next_multiple_of(16).min(max_padded.max(len));
        let total = TRANSPORT_HEADER_LEN + padded + TAG_LEN;
        if buf.len() < total {
            return Err(SessionError::BufferTooSmall);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        write_transport_header(buf, self.remote_index, counter);
        let body = &mut buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + padded];
        body[len..].fill(0);
        let tag = self
            .send_key
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
            .map_err(|_| SessionError::BufferTooSmall)?;
        buf[TRANSPORT_HEADER_LEN + padded..total].copy_from_slice(tag.as_ref());
        Ok(total)
    }

    /// Whether a message with `counter` could be new (before decrypting).
    pub fn may_accept(&self, counter: u64) -> bool {
        self.replay.check(counter)
    }

    /// Opens `ciphertext` (payload and tag) in place and records the
    /// counter. Returns the plaintext length; the plaintext starts where the
    /// ciphertext did.
    pub fn open(&mut self, counter: u64, ciphertext: &mut [u8]) -> Result<usize, SessionError> {
        if !self.replay.check(counter) {
            return Err(SessionError::Replay);
        }
        let plain = self
            .recv_key
            .open_in_place(nonce(counter), Aad::empty(), ciphertext)
            .map_err(|_| SessionError::Decrypt)?
            .len();
        // Only an authenticated counter moves the window.
        if !self.replay.mark(counter) {
            return Err(SessionError::Replay);
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Session, Session) {
        let a = TransportKeys {
            send: [1; 32],
            recv: [2; 32],
        };
        let b = TransportKeys {
            send: [2; 32],
            recv: [1; 32],
        };
        (
            Session::new(&a, 10, 20, true, now),
            Session::new(&b, 20, 10, false, now),
        )
    }

    fn open(s: &mut Session, dgram: &mut [u8]) -> Result<usize, SessionError> {
        let mut c = [0u8; 8];
        c.copy_from_slice(&dgram[8..16]);
        s.open(u64::from_le_bytes(c), &mut dgram[TRANSPORT_HEADER_LEN..])
    }

    #[test]
    fn sealed_packets_open_on_the_other_side_padded_to_16() {
        let (mut a, mut b) = pair(Instant::now());
        let mut buf = [0u8; 200];
        buf[16..16 + 21].copy_from_slice(&[0xab; 21]);
        let n = a.seal(&mut buf, 21, 1420).unwrap();
        assert_eq!(n, 16 + 32 + 16);
        assert_eq!(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]), 20);
        let plain = open(&mut b, &mut buf[..n]).unwrap();
        assert_eq!(plain, 32);
        assert_eq!(&buf[16..37], &[0xab; 21]);
        assert_eq!(&buf[37..48], &[0; 11]);
    }

    #[test]
    fn padding_never_exceeds_the_maximum() {
        let (mut a, _) = pair(Instant::now());
        let mut buf = [0u8; 2000];
        let n = a.seal(&mut buf, 1419, 1420).unwrap();
        assert_eq!(n, 16 + 1420 + 16);
        let n = a.seal(&mut buf, 1500, 1420).unwrap();
        assert_eq!(n, 16 + 1500 + 16);
    }

    #[test]
    fn a_replayed_packet_is_refused_and_a_tampered_one_fails_authentication() {
        let (mut a, mut b) = pair(Instant::now());
        let mut buf = [0u8; 100];
        let n = a.seal(&mut buf, 0, 1420).unwrap();
        let copy = buf;
        assert_eq!(open(&mut b, &mut buf[..n]), Ok(0));
        let mut again = copy;
        assert_eq!(open(&mut b, &mut again[..n]), Err(SessionError::Replay));
        let n = a.seal(&mut buf, 0, 1420).unwrap();
        buf[20] ^= 1;
        assert_eq!(open(&mut b, &mut buf[..n]), Err(SessionError::Decrypt));
        // A failed authentication does not burn the counter.
        buf[20] ^= 1;
        assert_eq!(open(&mut b, &mut buf[..n]), Ok(0));
    }
}
