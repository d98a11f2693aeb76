//! Wire formats of the control messages: the plaintexts of transport
//! messages that are not inner IP packets.
//!
//! A transport message (`docs/protocol.md` §2.4) carries an inner IPv4 or
//! IPv6 packet, nothing (a keepalive), or a control message whose first byte
//! is its type, `0x01`–`0x13`; no IP packet starts with one of those (an IP
//! packet's first nibble is its version, 4 or 6). The control messages are
//! authenticated and encrypted like data. [`Control::parse`] checks a
//! plaintext once, its type, its length and every field with a constrained
//! value; the [`Control`] it returns holds plain values and borrowed
//! payloads, so nothing read from it can fail afterwards.
//! [`Control::emit`] writes a message into a caller's buffer, byte for byte
//! what `parse` reads. The byte-by-byte layout is specified in
//! `docs/protocol.md` (§8 PMTU probes and pieces, §11 relaying and hole
//! punching, §12 NAT messages, and the table of types in §2.5); the field
//! ranges below are the single source of truth for the code.
//!
//! Bytes after the fixed fields are ignored, except in a punch offer (which
//! must end in zeros): transport padding follows a control message that is
//! sealed padded. This module never decides what a message means to the
//! device, nor which of them may arrive how (probe socket, relay): that is
//! the device's.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::addr;
use crate::noise::PublicKey;
use crate::wire::{le32, le64, KEY_LEN};

/// Type byte of a path-MTU probe.
pub const TYPE_PROBE: u8 = 0x01;
/// Type byte of a probe acknowledgement.
pub const TYPE_PROBE_ACK: u8 = 0x02;
/// Type byte of a piece of an inner packet.
pub const TYPE_FRAGMENT: u8 = 0x03;
/// Type byte of a NAT ping.
pub const TYPE_PING: u8 = 0x04;
/// Type byte of a NAT pong.
pub const TYPE_PONG: u8 = 0x05;
/// Type byte of a binding open (sent from a probe socket).
pub const TYPE_BINDING_OPEN: u8 = 0x06;
/// Type byte of a binding acknowledgement.
pub const TYPE_BINDING_ACK: u8 = 0x07;
/// Type byte of a binding check.
pub const TYPE_BINDING_CHECK: u8 = 0x08;
/// Type byte of a binding ping.
pub const TYPE_BINDING_PING: u8 = 0x09;
/// Type byte of a relay request (sender → relay).
pub const TYPE_RELAY: u8 = 0x10;
/// Type byte of a relayed datagram (relay → target).
pub const TYPE_RELAYED: u8 = 0x11;
/// Type byte of a punch offer or answer.
pub const TYPE_PUNCH_OFFER: u8 = 0x12;
/// Type byte of a punch.
pub const TYPE_PUNCH: u8 = 0x13;

/// Shortest probe: its type and id (a probe is as long as the probed size
/// requires, zeros after the id).
pub const PROBE_MIN_LEN: usize = 5;
/// Length of a probe acknowledgement.
pub const PROBE_ACK_LEN: usize = 7;
/// Bytes in front of a piece's slice of the inner packet.
pub const FRAGMENT_HEADER_LEN: usize = 7;
/// Most pieces one inner packet is split into.
pub const MAX_PIECES: usize = 4;
/// Length of a ping (and of the fixed part of a pong).
pub const PING_LEN: usize = 5;
/// Length of a binding open or a binding ping (and of the fixed part of a
/// binding acknowledgement).
pub const BINDING_LEN: usize = 13;
/// Length of a binding check.
pub const BINDING_CHECK_LEN: usize = 5;
/// Bytes in front of the datagram of a relay request or relayed datagram:
/// the type and a static key.
pub const RELAY_HEADER_LEN: usize = 1 + KEY_LEN;
/// Bytes in front of the endpoints of a punch offer.
pub const PUNCH_OFFER_HEADER_LEN: usize = 3;
/// Most endpoints in a punch offer.
pub const MAX_CANDIDATES: usize = 8;
/// Length of an encoded IPv4 endpoint.
pub const ENDPOINT_V4_LEN: usize = 7;
/// Length of an encoded IPv6 endpoint.
pub const ENDPOINT_V6_LEN: usize = 19;

/// Byte ranges of each control message's fields.
pub mod field {
    /// Message type, in every control message.
    pub const TYPE: usize = 0;

    /// Path-MTU probe fields.
    pub mod probe {
        use core::ops::{Range, RangeFrom};
        /// The probe id (little endian).
        pub const ID: Range<usize> = 1..5;
        /// Zeros, up to the probed size.
        pub const FILL: RangeFrom<usize> = 5..;
    }

    /// Probe acknowledgement fields.
    pub mod probe_ack {
        use core::ops::Range;
        /// The id of the probe acknowledged.
        pub const ID: Range<usize> = 1..5;
        /// The length of the UDP payload that carried the probe (u16).
        pub const RECEIVED: Range<usize> = 5..7;
    }

    /// Fields of a piece of an inner packet.
    pub mod fragment {
        use core::ops::{Range, RangeFrom};
        /// The id shared by the pieces of one inner packet.
        pub const ID: Range<usize> = 1..5;
        /// This piece's index, below the count.
        pub const INDEX: usize = 5;
        /// The number of pieces, 1 to [`MAX_PIECES`](super::super::MAX_PIECES).
        pub const COUNT: usize = 6;
        /// The slice of the inner packet (at least one byte).
        pub const PAYLOAD: RangeFrom<usize> = 7..;
    }

    /// Ping and pong fields.
    pub mod ping {
        use core::ops::Range;
        /// The ping id, echoed by the pong.
        pub const ID: Range<usize> = 1..5;
        /// Pong only: the endpoint the ping came from starts here.
        pub const OBSERVED: usize = 5;
    }

    /// Fields of the binding messages (open, acknowledgement, check, ping).
    pub mod binding {
        use core::ops::Range;
        /// The trial id.
        pub const TRIAL: Range<usize> = 1..5;
        /// The trial's nonce (u64; not in a check).
        pub const NONCE: Range<usize> = 5..13;
        /// Acknowledgement only: the endpoint the open came from starts
        /// here; the endpoint of the sender's main socket follows it.
        pub const PROBE: usize = 13;
    }

    /// Fields of a relay request and a relayed datagram.
    pub mod relay {
        use core::ops::{Range, RangeFrom};
        /// The static key of the target (request) or the sender (relayed).
        pub const KEY: Range<usize> = 1..33;
        /// The datagram of the pair, unchanged.
        pub const DATAGRAM: RangeFrom<usize> = 33..;
    }

    /// Punch offer fields.
    pub mod punch_offer {
        /// 0 for an offer, 1 for an answer.
        pub const ROLE: usize = 1;
        /// The number of endpoints, at most
        /// [`MAX_CANDIDATES`](super::super::MAX_CANDIDATES).
        pub const COUNT: usize = 2;
        /// The endpoints start here, one after the other; zeros follow.
        pub const ENDPOINTS: usize = 3;
    }

    /// Fields of an endpoint (an IP address and a UDP port), relative to
    /// where it starts.
    pub mod endpoint {
        use core::ops::Range;
        /// 4 or 6.
        pub const FAMILY: usize = 0;
        /// IPv4 address.
        pub const V4_IP: Range<usize> = 1..5;
        /// Port after an IPv4 address (u16, little endian).
        pub const V4_PORT: Range<usize> = 5..7;
        /// IPv6 address.
        pub const V6_IP: Range<usize> = 1..17;
        /// Port after an IPv6 address (u16, little endian).
        pub const V6_PORT: Range<usize> = 17..19;
    }
}

/// Why a plaintext is not a well-formed control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// Empty plaintext (that is a keepalive, not a control message).
    Empty,
    /// The first byte names no control message (`0x0A`, `0x0B` and
    /// `0x14`–`0x1F` are reserved).
    UnknownType(u8),
    /// Shorter than the message's fixed fields.
    Truncated {
        /// Message type byte.
        kind: u8,
        /// Length received.
        len: usize,
    },
    /// An endpoint's family is neither 4 nor 6, the endpoint is cut short,
    /// or it is an IPv4-mapped IPv6 address (IPv4 is sent as family 4).
    BadEndpoint {
        /// Message type byte.
        kind: u8,
    },
    /// A field holds a value its message does not allow.
    BadField {
        /// Message type byte.
        kind: u8,
        /// The field's name.
        field: &'static str,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Empty => write!(f, "empty control message"),
            ControlError::UnknownType(t) => write!(f, "unknown control type {t:#04x}"),
            ControlError::Truncated { kind, len } => {
                write!(f, "control type {kind:#04x} cannot be {len} bytes long")
            }
            ControlError::BadEndpoint { kind } => {
                write!(f, "control type {kind:#04x}: malformed endpoint")
            }
            ControlError::BadField { kind, field } => {
                write!(f, "control type {kind:#04x}: invalid {field}")
            }
        }
    }
}

impl std::error::Error for ControlError {}

fn le16(b: &[u8]) -> u16 {
    // Callers pass a 2-byte field range of a length-checked buffer.
    u16::from_le_bytes([b[0], b[1]])
}

/// The encoded length of `endpoint`.
pub fn endpoint_len(endpoint: &SocketAddr) -> usize {
    if addr::canonical(*endpoint).is_ipv4() {
        ENDPOINT_V4_LEN
    } else {
        ENDPOINT_V6_LEN
    }
}

/// Writes `endpoint` at the start of `buf` (`[4][IPv4][port]` or
/// `[6][IPv6][port]`, the port little endian); returns its length. `buf`
/// holds at least [`endpoint_len`] bytes. An IPv4-mapped IPv6 address is
/// written as the IPv4 address it stands for.
fn emit_endpoint(endpoint: &SocketAddr, buf: &mut [u8]) -> usize {
    use field::endpoint::*;
    let endpoint = addr::canonical(*endpoint);
    match endpoint.ip() {
        IpAddr::V4(ip) => {
            buf[FAMILY] = 4;
            buf[V4_IP].copy_from_slice(&ip.octets());
            buf[V4_PORT].copy_from_slice(&endpoint.port().to_le_bytes());
            ENDPOINT_V4_LEN
        }
        IpAddr::V6(ip) => {
            buf[FAMILY] = 6;
            buf[V6_IP].copy_from_slice(&ip.octets());
            buf[V6_PORT].copy_from_slice(&endpoint.port().to_le_bytes());
            ENDPOINT_V6_LEN
        }
    }
}

/// Reads the endpoint at the start of `b`; returns it and its length. An
/// IPv4 address has one encoding, family 4: a family-6 endpoint holding an
/// IPv4-mapped address (`::ffff:a.b.c.d`) is refused, so every endpoint
/// read here is in [`addr::canonical`] form and no check after it can be
/// fooled by the mapped spelling of a loopback or multicast address.
fn parse_endpoint(b: &[u8]) -> Option<(SocketAddr, usize)> {
    use field::endpoint::*;
    match b.first()? {
        4 => {
            let b = b.get(..ENDPOINT_V4_LEN)?;
            let ip: [u8; 4] = b[V4_IP].try_into().ok()?;
            let ip = IpAddr::V4(Ipv4Addr::from(ip));
            Some((SocketAddr::new(ip, le16(&b[V4_PORT])), ENDPOINT_V4_LEN))
        }
        6 => {
            let b = b.get(..ENDPOINT_V6_LEN)?;
            let ip: [u8; 16] = b[V6_IP].try_into().ok()?;
            let ip = Ipv6Addr::from(ip);
            if ip.to_ipv4_mapped().is_some() {
                return None;
            }
            let ip = IpAddr::V6(ip);
            Some((SocketAddr::new(ip, le16(&b[V6_PORT])), ENDPOINT_V6_LEN))
        }
        _ => None,
    }
}

/// A control message, parsed: plain values and borrowed payloads, so no
/// accessor can fail. Also what [`Control::emit`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control<'a> {
    /// `0x01` path-MTU probe (§8).
    Probe(Probe),
    /// `0x02` probe acknowledgement (§8).
    ProbeAck(ProbeAck),
    /// `0x03` piece of an inner IPv6 packet (§8).
    Fragment(Fragment<'a>),
    /// `0x04` NAT ping (§12).
    Ping(Ping),
    /// `0x05` NAT pong (§12).
    Pong(Pong),
    /// `0x06` binding open, from a probe socket (§12).
    BindingOpen(BindingTrial),
    /// `0x07` binding acknowledgement, to a probe socket (§12).
    BindingAck(BindingAck),
    /// `0x08` binding check, over the main path (§12).
    BindingCheck(BindingCheck),
    /// `0x09` binding ping, to a probe socket (§12).
    BindingPing(BindingTrial),
    /// `0x10` relay request: a datagram for `key`, sender → relay (§11).
    RelayRequest(Relay<'a>),
    /// `0x11` relayed datagram: from `key`, relay → target (§11).
    Relayed(Relay<'a>),
    /// `0x12` punch offer or answer (§11).
    PunchOffer(PunchOffer<'a>),
    /// `0x13` punch (§11).
    Punch,
}

/// `0x01`: a path-MTU probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The probe id.
    pub id: u32,
    /// The plaintext's whole length: [`PROBE_MIN_LEN`] or more, zeros
    /// after the id, so the datagram has the probed size.
    pub len: usize,
}

/// `0x02`: a probe acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeAck {
    /// The id of the probe acknowledged.
    pub id: u32,
    /// The length of the UDP payload that carried the probe.
    pub received: u16,
}

/// `0x03`: a piece of an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The id shared by the pieces of one inner packet.
    pub id: u32,
    /// This piece's index, below `count`.
    pub index: u8,
    /// The number of pieces, 1 to [`MAX_PIECES`].
    pub count: u8,
    /// The slice of the inner packet, not empty.
    pub payload: &'a [u8],
}

/// `0x04`: a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// The ping id.
    pub id: u32,
}

/// `0x05`: a pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The id of the ping answered.
    pub id: u32,
    /// The address the ping came from.
    pub observed: SocketAddr,
}

/// `0x06` binding open and `0x09` binding ping: a trial and its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingTrial {
    /// The trial id.
    pub trial: u32,
    /// The trial's nonce.
    pub nonce: u64,
}

/// `0x07`: a binding acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingAck {
    /// The trial id.
    pub trial: u32,
    /// The trial's nonce.
    pub nonce: u64,
    /// The address the open came from (the probe socket's mapping).
    pub probe: SocketAddr,
    /// The endpoint the helper holds for the sender's main socket.
    pub main: SocketAddr,
}

/// `0x08`: a binding check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingCheck {
    /// The trial id.
    pub trial: u32,
}

/// `0x10` relay request and `0x11` relayed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay<'a> {
    /// The target's static key (request) or the sender's (relayed).
    pub key: PublicKey,
    /// The pair's datagram (a handshake or transport message), unchanged.
    /// Not checked here: what may be relayed is the device's decision.
    pub datagram: &'a [u8],
}

impl Relay<'_> {
    /// Writes the header of a relay request for `target` in front of a
    /// datagram that already lies at `buf[field::relay::DATAGRAM]`; returns
    /// the header's length, or `None` if `buf` is shorter than it.
    pub fn emit_request_header(target: &PublicKey, buf: &mut [u8]) -> Option<usize> {
        let header = buf.get_mut(..RELAY_HEADER_LEN)?;
        header[field::TYPE] = TYPE_RELAY;
        header[field::relay::KEY].copy_from_slice(target.as_bytes());
        Some(RELAY_HEADER_LEN)
    }
}

/// `0x12`: a punch offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchOffer<'a> {
    /// Whether it answers an offer.
    pub answer: bool,
    /// The sender's candidate endpoints.
    pub endpoints: Endpoints<'a>,
}

/// The endpoints of a punch offer: as received (checked encoded bytes) or
/// as given to send (at most [`MAX_CANDIDATES`] are sent).
#[derive(Clone, Copy)]
pub struct Endpoints<'a>(EndpointsInner<'a>);

#[derive(Clone, Copy)]
enum EndpointsInner<'a> {
    /// `count` encoded endpoints, checked by [`Control::parse`].
    Encoded {
        count: u8,
        bytes: &'a [u8],
    },
    List(&'a [SocketAddr]),
}

impl<'a> Endpoints<'a> {
    /// Endpoints to send: the first [`MAX_CANDIDATES`] of `list`.
    pub fn from_list(list: &'a [SocketAddr]) -> Self {
        Self(EndpointsInner::List(
            &list[..list.len().min(MAX_CANDIDATES)],
        ))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        match self.0 {
            EndpointsInner::Encoded { count, .. } => usize::from(count),
            EndpointsInner::List(l) => l.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoints, in order.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        let (mut encoded, list) = match self.0 {
            EndpointsInner::Encoded { count, bytes } => ((count, bytes), &[][..]),
            EndpointsInner::List(l) => ((0, &[][..]), l),
        };
        let decoded = std::iter::from_fn(move || {
            let (left, rest) = encoded;
            if left == 0 {
                return None;
            }
            // Checked by `Control::parse`: every one of `count` decodes.
            let (endpoint, n) = parse_endpoint(rest)?;
            encoded = (left - 1, &rest[n..]);
            Some(endpoint)
        });
        // As sent: an IPv4-mapped address goes out as IPv4.
        decoded.chain(list.iter().copied().map(addr::canonical))
    }

    fn encoded_len(&self) -> usize {
        self.iter().map(|e| endpoint_len(&e)).sum()
    }
}

impl PartialEq for Endpoints<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Endpoints<'_> {}

impl fmt::Debug for Endpoints<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Control<'a> {
    /// Checks the type, the length and every constrained field of the
    /// control message `plain` (a transport message's plaintext, padding
    /// included) once; afterwards nothing read from the result can fail.
    pub fn parse(plain: &'a [u8]) -> Result<Self, ControlError> {
        let kind = *plain.first().ok_or(ControlError::Empty)?;
        let need = |min: usize| {
            if plain.len() < min {
                Err(ControlError::Truncated {
                    kind,
                    len: plain.len(),
                })
            } else {
                Ok(())
            }
        };
        let endpoint = |at: usize| {
            plain
                .get(at..)
                .and_then(parse_endpoint)
                .ok_or(ControlError::BadEndpoint { kind })
        };
        let binding = || BindingTrial {
            trial: le32(&plain[field::binding::TRIAL]),
            nonce: le64(&plain[field::binding::NONCE]),
        };
        Ok(match kind {
            TYPE_PROBE => {
                need(PROBE_MIN_LEN)?;
                Control::Probe(Probe {
                    id: le32(&plain[field::probe::ID]),
                    len: plain.len(),
                })
            }
            TYPE_PROBE_ACK => {
                need(PROBE_ACK_LEN)?;
                Control::ProbeAck(ProbeAck {
                    id: le32(&plain[field::probe_ack::ID]),
                    received: le16(&plain[field::probe_ack::RECEIVED]),
                })
            }
            TYPE_FRAGMENT => {
                need(FRAGMENT_HEADER_LEN + 1)?;
                let (index, count) = (plain[field::fragment::INDEX], plain[field::fragment::COUNT]);
                if count == 0 || usize::from(count) > MAX_PIECES {
                    return Err(ControlError::BadField {
                        kind,
                        field: "count",
                    });
                }
                if index >= count {
                    return Err(ControlError::BadField {
                        kind,
                        field: "index",
                    });
                }
                Control::Fragment(Fragment {
                    id: le32(&plain[field::fragment::ID]),
                    index,
                    count,
                    payload: &plain[field::fragment::PAYLOAD],
                })
            }
            TYPE_PING => {
                need(PING_LEN)?;
                Control::Ping(Ping {
                    id: le32(&plain[field::ping::ID]),
                })
            }
            TYPE_PONG => {
                need(PING_LEN)?;
                let (observed, _) = endpoint(field::ping::OBSERVED)?;
                Control::Pong(Pong {
                    id: le32(&plain[field::ping::ID]),
                    observed,
                })
            }
            TYPE_BINDING_OPEN => {
                need(BINDING_LEN)?;
                Control::BindingOpen(binding())
            }
            TYPE_BINDING_ACK => {
                need(BINDING_LEN)?;
                let (probe, n) = endpoint(field::binding::PROBE)?;
                let (main, _) = endpoint(field::binding::PROBE + n)?;
                let BindingTrial { trial, nonce } = binding();
                Control::BindingAck(BindingAck {
                    trial,
                    nonce,
                    probe,
                    main,
                })
            }
            TYPE_BINDING_CHECK => {
                need(BINDING_CHECK_LEN)?;
                Control::BindingCheck(BindingCheck {
                    trial: le32(&plain[field::binding::TRIAL]),
                })
            }
            TYPE_BINDING_PING => {
                need(BINDING_LEN)?;
                Control::BindingPing(binding())
            }
            TYPE_RELAY | TYPE_RELAYED => {
                need(RELAY_HEADER_LEN)?;
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(&plain[field::relay::KEY]);
                let relay = Relay {
                    key: PublicKey(key),
                    datagram: &plain[field::relay::DATAGRAM],
                };
                if kind == TYPE_RELAY {
                    Control::RelayRequest(relay)
                } else {
                    // The relay passes on a datagram, never nothing.
                    if relay.datagram.is_empty() {
                        return Err(ControlError::Truncated {
                            kind,
                            len: plain.len(),
                        });
                    }
                    Control::Relayed(relay)
                }
            }
            TYPE_PUNCH_OFFER => {
                need(PUNCH_OFFER_HEADER_LEN)?;
                let answer = match plain[field::punch_offer::ROLE] {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(ControlError::BadField {
                            kind,
                            field: "role",
                        })
                    }
                };
                let count = plain[field::punch_offer::COUNT];
                if usize::from(count) > MAX_CANDIDATES {
                    return Err(ControlError::BadField {
                        kind,
                        field: "count",
                    });
                }
                let mut at = field::punch_offer::ENDPOINTS;
                for _ in 0..count {
                    at += endpoint(at)?.1;
                }
                if plain[at..].iter().any(|&b| b != 0) {
                    return Err(ControlError::BadField {
                        kind,
                        field: "padding",
                    });
                }
                Control::PunchOffer(PunchOffer {
                    answer,
                    endpoints: Endpoints(EndpointsInner::Encoded {
                        count,
                        bytes: &plain[field::punch_offer::ENDPOINTS..at],
                    }),
                })
            }
            TYPE_PUNCH => Control::Punch,
            other => return Err(ControlError::UnknownType(other)),
        })
    }

    /// The type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Control::Probe(_) => TYPE_PROBE,
            Control::ProbeAck(_) => TYPE_PROBE_ACK,
            Control::Fragment(_) => TYPE_FRAGMENT,
            Control::Ping(_) => TYPE_PING,
            Control::Pong(_) => TYPE_PONG,
            Control::BindingOpen(_) => TYPE_BINDING_OPEN,
            Control::BindingAck(_) => TYPE_BINDING_ACK,
            Control::BindingCheck(_) => TYPE_BINDING_CHECK,
            Control::BindingPing(_) => TYPE_BINDING_PING,
            Control::RelayRequest(_) => TYPE_RELAY,
            Control::Relayed(_) => TYPE_RELAYED,
            Control::PunchOffer(_) => TYPE_PUNCH_OFFER,
            Control::Punch => TYPE_PUNCH,
        }
    }

    /// The length [`Control::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Control::Probe(p) => p.len.max(PROBE_MIN_LEN),
            Control::ProbeAck(_) => PROBE_ACK_LEN,
            Control::Fragment(f) => FRAGMENT_HEADER_LEN + f.payload.len(),
            Control::Ping(_) => PING_LEN,
            Control::Pong(p) => PING_LEN + endpoint_len(&p.observed),
            Control::BindingOpen(_) | Control::BindingPing(_) => BINDING_LEN,
            Control::BindingAck(a) => BINDING_LEN + endpoint_len(&a.probe) + endpoint_len(&a.main),
            Control::BindingCheck(_) => BINDING_CHECK_LEN,
            Control::RelayRequest(r) | Control::Relayed(r) => RELAY_HEADER_LEN + r.datagram.len(),
            Control::PunchOffer(o) => PUNCH_OFFER_HEADER_LEN + o.endpoints.encoded_len(),
            Control::Punch => 1,
        }
    }

    /// Writes the message at the start of `buf`; returns its length
    /// ([`Control::buffer_len`]), or `None`, writing nothing, if `buf` is
    /// shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.buffer_len();
        let buf = buf.get_mut(..len)?;
        buf[field::TYPE] = self.kind();
        let binding = |buf: &mut [u8], trial: u32, nonce: u64| {
            buf[field::binding::TRIAL].copy_from_slice(&trial.to_le_bytes());
            buf[field::binding::NONCE].copy_from_slice(&nonce.to_le_bytes());
        };
        match self {
            Control::Probe(p) => {
                buf[field::probe::ID].copy_from_slice(&p.id.to_le_bytes());
                buf[field::probe::FILL].fill(0);
            }
            Control::ProbeAck(a) => {
                buf[field::probe_ack::ID].copy_from_slice(&a.id.to_le_bytes());
                buf[field::probe_ack::RECEIVED].copy_from_slice(&a.received.to_le_bytes());
            }
            Control::Fragment(f) => {
                buf[field::fragment::ID].copy_from_slice(&f.id.to_le_bytes());
                buf[field::fragment::INDEX] = f.index;
                buf[field::fragment::COUNT] = f.count;
                buf[field::fragment::PAYLOAD].copy_from_slice(f.payload);
            }
            Control::Ping(p) => buf[field::ping::ID].copy_from_slice(&p.id.to_le_bytes()),
            Control::Pong(p) => {
                buf[field::ping::ID].copy_from_slice(&p.id.to_le_bytes());
                emit_endpoint(&p.observed, &mut buf[field::ping::OBSERVED..]);
            }
            Control::BindingOpen(b) | Control::BindingPing(b) => binding(buf, b.trial, b.nonce),
            Control::BindingAck(a) => {
                binding(buf, a.trial, a.nonce);
                let n = emit_endpoint(&a.probe, &mut buf[field::binding::PROBE..]);
                emit_endpoint(&a.main, &mut buf[field::binding::PROBE + n..]);
            }
            Control::BindingCheck(c) => {
                buf[field::binding::TRIAL].copy_from_slice(&c.trial.to_le_bytes());
            }
            Control::RelayRequest(r) | Control::Relayed(r) => {
                buf[field::relay::KEY].copy_from_slice(r.key.as_bytes());
                buf[field::relay::DATAGRAM].copy_from_slice(r.datagram);
            }
            Control::PunchOffer(o) => {
                buf[field::punch_offer::ROLE] = u8::from(o.answer);
                // At most MAX_CANDIDATES: `from_list` and `parse` bound it.
                buf[field::punch_offer::COUNT] = o.endpoints.len() as u8;
                let mut at = field::punch_offer::ENDPOINTS;
                for e in o.endpoints.iter() {
                    at += emit_endpoint(&e, &mut buf[at..]);
                }
            }
            Control::Punch => {}
        }
        Some(len)
    }

    /// The message in a new buffer of its own, for a queue.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.buffer_len()];
        // The buffer has exactly the length the message needs.
        self.emit(&mut v);
        v
    }
}

#[cfg(test)]
mod tests;
