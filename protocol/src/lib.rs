//! weft-protocol: the sans-IO core of the weft mesh VPN.
//!
//! Everything here is deterministic: no sockets, no threads, no clock. Each
//! input takes `now: Instant`, randomness comes from a seed the caller
//! provides, and outputs are polled. The daemon (`weft-node`) owns the I/O
//! and drives a [`Device`] as its module documentation describes; the
//! simulator in this crate drives many devices over virtual links in
//! virtual time.
//!
//! Map of the crate:
//! - [`wire`]: byte layouts of the four data-plane messages, and
//!   ([`wire::control`]) of the control messages inside transport messages;
//! - [`noise`]: keys and the Noise `IKpsk2` handshake (through snow);
//! - [`cookie`]: mac1/mac2 and cookie replies, the DoS defences;
//! - [`session`]: transport encryption in place, counters, [`replay`];
//! - [`timers`]: the timer table and the protocol's time constants;
//! - [`peer`], [`device`]: the state machine that ties them together;
//! - [`pmtu`]: per-edge path-MTU discovery;
//! - [`nat`]: NAT detection, mapping-lifetime trials, keepalive intervals;
//! - [`packet`]: the inner IP header fields routing needs;
//! - [`membership`]: identities, certificates, invite tokens, gossip records;
//! - [`join`]: the exchange that turns an invite token into a certificate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cookie;
pub mod device;
pub mod join;
pub mod membership;
pub mod nat;
pub mod noise;
pub mod packet;
pub mod peer;
pub mod pmtu;
pub mod replay;
pub mod session;
pub mod timers;
pub mod wire;

#[cfg(test)]
mod sim;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use device::{
    Decapsulated, Device, DeviceConfig, DeviceStats, Encapsulated, Event, NatCounters, PathHint,
    PeerConfigError, PeerPath, PeerStatus, ProbeTransmit, RelayStats, Transmit,
};
pub use nat::{Keepalive, NatStatus, ProbeSocket};
pub use noise::{PresharedKey, PublicKey, StaticSecret};
pub use peer::{PeerConfig, PeerId, PeerStats};

/// Why a packet was dropped. Every drop is counted per reason in
/// [`DeviceStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The datagram is not a well-formed message (type, length, reserved).
    Malformed,
    /// An inner packet is not a well-formed IPv4/IPv6 packet.
    MalformedInner,
    /// No session or handshake has this receiver index.
    UnknownIndex,
    /// A handshake came from a static key that is not a configured peer.
    UnknownPeer,
    /// mac1 did not verify: the sender does not know our public key.
    BadMac,
    /// Under load, a handshake came without a valid cookie (one was sent).
    UnderLoad,
    /// The Noise handshake message did not decrypt or verify.
    HandshakeFailed,
    /// Initiations from one peer arrived faster than 50 per second.
    HandshakeFlood,
    /// A transport counter or initiation timestamp was seen before.
    Replay,
    /// A transport message or cookie did not authenticate.
    Decrypt,
    /// The session is older than REJECT_AFTER_TIME.
    Expired,
    /// The inner source address is not in the sending peer's allowed IPs.
    SourceNotAllowed,
    /// No peer's allowed IPs contain the inner destination.
    NoRoute,
    /// The peer has no known endpoint yet.
    NoEndpoint,
    /// The per-peer queue overflowed while a handshake ran.
    QueueFull,
    /// The packet does not fit the buffer.
    TooBig,
    /// A relay request this node will not serve: the target is unknown,
    /// not reachable directly, the sender itself, or the sender is over
    /// its relay budget; or a relayed message that is itself a relay
    /// message.
    RelayRefused,
    /// A packet for a relayed peer found no usable session with the relay.
    RelayUnavailable,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 18] = [
        DropReason::Malformed,
        DropReason::MalformedInner,
        DropReason::UnknownIndex,
        DropReason::UnknownPeer,
        DropReason::BadMac,
        DropReason::UnderLoad,
        DropReason::HandshakeFailed,
        DropReason::HandshakeFlood,
        DropReason::Replay,
        DropReason::Decrypt,
        DropReason::Expired,
        DropReason::SourceNotAllowed,
        DropReason::NoRoute,
        DropReason::NoEndpoint,
        DropReason::QueueFull,
        DropReason::TooBig,
        DropReason::RelayRefused,
        DropReason::RelayUnavailable,
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::MalformedInner => "malformed_inner",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::BadMac => "bad_mac",
            DropReason::UnderLoad => "under_load",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::HandshakeFlood => "handshake_flood",
            DropReason::Replay => "replay",
            DropReason::Decrypt => "decrypt",
            DropReason::Expired => "expired",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::NoRoute => "no_route",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::QueueFull => "queue_full",
            DropReason::TooBig => "too_big",
            DropReason::RelayRefused => "relay_refused",
            DropReason::RelayUnavailable => "relay_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DropReason;

    #[test]
    fn drop_reasons_are_listed_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
