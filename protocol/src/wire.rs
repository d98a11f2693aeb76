//! Wire formats of the four data-plane messages, as checked zero-copy views,
//! and (in [`control`]) of the control messages carried inside transport
//! messages.
//!
//! Every datagram on the data-plane port starts with a one-byte message type
//! followed by three reserved bytes that must be zero. [`Message::parse`]
//! checks the type and the exact length once; after that no accessor can
//! panic. Builders write into caller-owned buffers. The byte-by-byte layout
//! is specified in `docs/protocol.md`; the field ranges below are the single
//! source of truth for the code.
//!
//! This module never interprets the cryptographic contents: it only slices.

use core::fmt;

pub mod control;

/// Type byte of a handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Type byte of a handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Type byte of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Type byte of a transport data message.
pub const TYPE_TRANSPORT: u8 = 4;

/// Length of a Poly1305 / XChaCha20-Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of a mac1 or mac2 field.
pub const MAC_LEN: usize = 16;
/// Length of the TAI64N timestamp carried in an initiation.
pub const TIMESTAMP_LEN: usize = 12;
/// Length of an X25519 public key.
pub const KEY_LEN: usize = 32;

/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Length of the transport header (type, reserved, receiver index, counter).
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Smallest transport message: a header and a tag around an empty payload
/// (a keepalive).
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Bytes a transport message adds to the inner packet (before padding).
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Length of the Noise message inside an initiation: ephemeral key,
/// encrypted static key, encrypted timestamp.
pub const INITIATION_NOISE_LEN: usize = KEY_LEN + (KEY_LEN + TAG_LEN) + (TIMESTAMP_LEN + TAG_LEN);
/// Length of the Noise message inside a response: ephemeral key and the tag
/// of an empty payload.
pub const RESPONSE_NOISE_LEN: usize = KEY_LEN + TAG_LEN;

/// Byte ranges of each message's fields.
pub mod field {
    use core::ops::Range;

    /// Message type.
    pub const TYPE: usize = 0;
    /// Reserved, zero.
    pub const RESERVED: Range<usize> = 1..4;

    /// Handshake initiation fields.
    pub mod initiation {
        use core::ops::Range;
        /// The initiator's session index (little endian).
        pub const SENDER: Range<usize> = 4..8;
        /// The Noise `IKpsk2` first message.
        pub const NOISE: Range<usize> = 8..116;
        /// mac1 over bytes `..MAC1.start`.
        pub const MAC1: Range<usize> = 116..132;
        /// mac2 over bytes `..MAC2.start`.
        pub const MAC2: Range<usize> = 132..148;
    }

    /// Handshake response fields.
    pub mod response {
        use core::ops::Range;
        /// The responder's session index.
        pub const SENDER: Range<usize> = 4..8;
        /// The initiator's session index, echoed.
        pub const RECEIVER: Range<usize> = 8..12;
        /// The Noise `IKpsk2` second message.
        pub const NOISE: Range<usize> = 12..60;
        /// mac1 over bytes `..MAC1.start`.
        pub const MAC1: Range<usize> = 60..76;
        /// mac2 over bytes `..MAC2.start`.
        pub const MAC2: Range<usize> = 76..92;
    }

    /// Cookie reply fields.
    pub mod cookie_reply {
        use core::ops::Range;
        /// The sender index of the handshake message this answers.
        pub const RECEIVER: Range<usize> = 4..8;
        /// XChaCha20-Poly1305 nonce.
        pub const NONCE: Range<usize> = 8..32;
        /// The encrypted cookie and its tag.
        pub const COOKIE: Range<usize> = 32..64;
    }

    /// Transport data fields.
    pub mod transport {
        use core::ops::Range;
        /// The receiver's session index.
        pub const RECEIVER: Range<usize> = 4..8;
        /// The 64-bit message counter, used as the AEAD nonce.
        pub const COUNTER: Range<usize> = 8..16;
        /// Start of the ciphertext (runs to the end of the datagram).
        pub const PAYLOAD: usize = 16;
    }
}

/// Why a datagram is not a well-formed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Empty datagram.
    Empty,
    /// The first byte names no message type.
    UnknownType(u8),
    /// The reserved bytes were not zero.
    ReservedNotZero,
    /// The length does not fit the message type.
    BadLength {
        /// Message type byte.
        kind: u8,
        /// Length received.
        len: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty => write!(f, "empty datagram"),
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::ReservedNotZero => write!(f, "reserved bytes not zero"),
            WireError::BadLength { kind, len } => {
                write!(f, "message type {kind} cannot be {len} bytes long")
            }
        }
    }
}

impl std::error::Error for WireError {}

fn le32(b: &[u8]) -> u32 {
    // Callers pass a 4-byte field range of a length-checked buffer.
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A parsed data-plane message, borrowing the datagram.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// Handshake initiation.
    Initiation(Initiation<'a>),
    /// Handshake response.
    Response(Response<'a>),
    /// Cookie reply.
    CookieReply(CookieReply<'a>),
    /// Transport data (or a keepalive).
    Transport(Transport<'a>),
}

impl<'a> Message<'a> {
    /// Checks type, reserved bytes and length; afterwards every accessor of
    /// the returned view is infallible.
    pub fn parse(data: &'a [u8]) -> Result<Self, WireError> {
        let kind = *data.first().ok_or(WireError::Empty)?;
        let expected = match kind {
            TYPE_INITIATION => Some(INITIATION_LEN),
            TYPE_RESPONSE => Some(RESPONSE_LEN),
            TYPE_COOKIE_REPLY => Some(COOKIE_REPLY_LEN),
            TYPE_TRANSPORT => None,
            other => return Err(WireError::UnknownType(other)),
        };
        let len_ok = match expected {
            Some(n) => data.len() == n,
            None => data.len() >= TRANSPORT_MIN_LEN,
        };
        if !len_ok {
            return Err(WireError::BadLength {
                kind,
                len: data.len(),
            });
        }
        if data[field::RESERVED] != [0, 0, 0] {
            return Err(WireError::ReservedNotZero);
        }
        Ok(match kind {
            TYPE_INITIATION => Message::Initiation(Initiation(data)),
            TYPE_RESPONSE => Message::Response(Response(data)),
            TYPE_COOKIE_REPLY => Message::CookieReply(CookieReply(data)),
            _ => Message::Transport(Transport(data)),
        })
    }
}

/// View of a handshake initiation.
#[derive(Debug, Clone, Copy)]
pub struct Initiation<'a>(&'a [u8]);

impl<'a> Initiation<'a> {
    /// The initiator's session index.
    pub fn sender(&self) -> u32 {
        le32(&self.0[field::initiation::SENDER])
    }
    /// The Noise message.
    pub fn noise(&self) -> &'a [u8] {
        &self.0[field::initiation::NOISE]
    }
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// View of a handshake response.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a>(&'a [u8]);

impl<'a> Response<'a> {
    /// The responder's session index.
    pub fn sender(&self) -> u32 {
        le32(&self.0[field::response::SENDER])
    }
    /// The initiator's session index.
    pub fn receiver(&self) -> u32 {
        le32(&self.0[field::response::RECEIVER])
    }
    /// The Noise message.
    pub fn noise(&self) -> &'a [u8] {
        &self.0[field::response::NOISE]
    }
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// View of a cookie reply.
#[derive(Debug, Clone, Copy)]
pub struct CookieReply<'a>(&'a [u8]);

impl<'a> CookieReply<'a> {
    /// Index of the handshake message this reply answers.
    pub fn receiver(&self) -> u32 {
        le32(&self.0[field::cookie_reply::RECEIVER])
    }
    /// The 24-byte nonce.
    pub fn nonce(&self) -> &'a [u8] {
        &self.0[field::cookie_reply::NONCE]
    }
    /// The encrypted cookie with its tag.
    pub fn encrypted_cookie(&self) -> &'a [u8] {
        &self.0[field::cookie_reply::COOKIE]
    }
}

/// View of a transport data message.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a>(&'a [u8]);

impl<'a> Transport<'a> {
    /// The receiver's session index.
    pub fn receiver(&self) -> u32 {
        le32(&self.0[field::transport::RECEIVER])
    }
    /// The message counter (AEAD nonce).
    pub fn counter(&self) -> u64 {
        le64(&self.0[field::transport::COUNTER])
    }
    /// Ciphertext and tag.
    pub fn payload(&self) -> &'a [u8] {
        &self.0[field::transport::PAYLOAD..]
    }
}

/// Writes the type and reserved bytes.
fn write_type(buf: &mut [u8], kind: u8) {
    buf[field::TYPE] = kind;
    buf[field::RESERVED].fill(0);
}

/// Writes an initiation's header (type, sender); the caller fills the Noise
/// message and the macs. `buf` must be [`INITIATION_LEN`] long.
pub fn write_initiation_header(buf: &mut [u8; INITIATION_LEN], sender: u32) {
    write_type(buf, TYPE_INITIATION);
    buf[field::initiation::SENDER].copy_from_slice(&sender.to_le_bytes());
}

/// Writes a response's header (type, sender, receiver).
pub fn write_response_header(buf: &mut [u8; RESPONSE_LEN], sender: u32, receiver: u32) {
    write_type(buf, TYPE_RESPONSE);
    buf[field::response::SENDER].copy_from_slice(&sender.to_le_bytes());
    buf[field::response::RECEIVER].copy_from_slice(&receiver.to_le_bytes());
}

/// Writes a whole cookie reply.
pub fn write_cookie_reply(
    buf: &mut [u8; COOKIE_REPLY_LEN],
    receiver: u32,
    nonce: &[u8; 24],
    encrypted_cookie: &[u8; 32],
) {
    write_type(buf, TYPE_COOKIE_REPLY);
    buf[field::cookie_reply::RECEIVER].copy_from_slice(&receiver.to_le_bytes());
    buf[field::cookie_reply::NONCE].copy_from_slice(nonce);
    buf[field::cookie_reply::COOKIE].copy_from_slice(encrypted_cookie);
}

/// Writes a transport header. `buf` must hold at least
/// [`TRANSPORT_HEADER_LEN`] bytes.
pub fn write_transport_header(buf: &mut [u8], receiver: u32, counter: u64) {
    write_type(buf, TYPE_TRANSPORT);
    buf[field::transport::RECEIVER].copy_from_slice(&receiver.to_le_bytes());
    buf[field::transport::COUNTER].copy_from_slice(&counter.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up() {
        assert_eq!(8 + INITIATION_NOISE_LEN + 2 * MAC_LEN, INITIATION_LEN);
        assert_eq!(12 + RESPONSE_NOISE_LEN + 2 * MAC_LEN, RESPONSE_LEN);
        assert_eq!(field::initiation::NOISE.len(), INITIATION_NOISE_LEN);
        assert_eq!(field::response::NOISE.len(), RESPONSE_NOISE_LEN);
    }

    #[test]
    fn every_length_of_every_type_parses_or_errors_without_panicking() {
        let mut buf = vec![0u8; 300];
        for kind in 0..=6u8 {
            for len in 0..buf.len() {
                buf[0] = kind;
                let _ = Message::parse(&buf[..len]);
            }
        }
    }

    #[test]
    fn wrong_length_initiation_is_refused_with_its_length() {
        let mut buf = [0u8; INITIATION_LEN + 1];
        buf[0] = TYPE_INITIATION;
        assert_eq!(
            Message::parse(&buf).unwrap_err(),
            WireError::BadLength {
                kind: 1,
                len: INITIATION_LEN + 1
            }
        );
    }

    #[test]
    fn transport_header_round_trips() {
        let mut buf = [0u8; TRANSPORT_MIN_LEN];
        write_transport_header(&mut buf, 0xdead_beef, 0x0102_0304_0506_0708);
        let Message::Transport(t) = Message::parse(&buf).unwrap() else {
            panic!("not transport")
        };
        assert_eq!(t.receiver(), 0xdead_beef);
        assert_eq!(t.counter(), 0x0102_0304_0506_0708);
        assert_eq!(t.payload().len(), TAG_LEN);
    }

    #[test]
    fn nonzero_reserved_bytes_are_refused() {
        let mut buf = [0u8; TRANSPORT_MIN_LEN];
        write_transport_header(&mut buf, 1, 1);
        buf[2] = 1;
        assert_eq!(
            Message::parse(&buf).unwrap_err(),
            WireError::ReservedNotZero
        );
    }
}
