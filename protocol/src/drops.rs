//! Why a packet was dropped ([`DropReason`]), grouped by who caused it
//! ([`DropCause`]).
//!
//! Every packet the device does not deliver or send is counted once, under
//! one reason, in [`DeviceStats`](crate::DeviceStats), and only through
//! `DeviceStats::count_drop`. Functions inside the device return
//! `Err(reason)` for the packet they were given and never count it: the
//! input call that was handed the packet (`encapsulate`, `decapsulate`,
//! `handle_probe_datagram`) counts it as it returns `Dropped(reason)`. A
//! packet the device held and then gives up (a queued packet pushed out, a
//! parked relay message gone stale, a reassembled packet that does not fit
//! the caller's buffer) is counted where it is given up, and reported to no
//! one. The reasons' names ([`DropReason::as_str`]) are metric label values
//! (`weft_datagrams_dropped_total{reason}`): they never change.

/// Who caused a drop: the three groups of [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropCause {
    /// The input is not well formed: a datagram that is no weft message,
    /// or an inner packet or control message that does not parse. Says
    /// nothing about who sent it (a datagram is unauthenticated).
    MalformedInput,
    /// Well formed, but from a sender that is unknown, cannot prove who it
    /// is, replays, or asks for what it may not have: the peer (or whoever
    /// pretends to be one) misbehaves, or is simply not one of ours.
    Peer,
    /// This node will not or cannot carry the packet: no route or
    /// endpoint for it, a full queue, a buffer or path too small, no
    /// session with the relay, handshakes refused while under load.
    LocalLimit,
}

impl DropCause {
    /// Every cause.
    pub const ALL: [DropCause; 3] = [
        DropCause::MalformedInput,
        DropCause::Peer,
        DropCause::LocalLimit,
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::MalformedInput => "malformed_input",
            DropCause::Peer => "peer",
            DropCause::LocalLimit => "local_limit",
        }
    }
}

/// Why a packet was dropped. Every drop is counted per reason in
/// [`DeviceStats`](crate::DeviceStats); [`DropReason::cause`] groups the
/// reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The datagram is not a well-formed message (type, length, reserved).
    Malformed,
    /// An inner packet is not a well-formed IPv4/IPv6 packet, or a control
    /// message in a transport message does not parse.
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
    /// A punch offer from a peer this node does not reach through a relay:
    /// hole punching is only for relayed pairs, so a member cannot make
    /// another send punches where it pleases.
    PunchRefused,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 19] = [
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
        DropReason::PunchRefused,
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
            DropReason::PunchRefused => "punch_refused",
        }
    }

    /// Who caused it.
    pub fn cause(self) -> DropCause {
        match self {
            DropReason::Malformed | DropReason::MalformedInner => DropCause::MalformedInput,
            DropReason::UnknownIndex
            | DropReason::UnknownPeer
            | DropReason::BadMac
            | DropReason::HandshakeFailed
            | DropReason::HandshakeFlood
            | DropReason::Replay
            | DropReason::Decrypt
            | DropReason::Expired
            | DropReason::SourceNotAllowed
            | DropReason::RelayRefused
            | DropReason::PunchRefused => DropCause::Peer,
            DropReason::UnderLoad
            | DropReason::NoRoute
            | DropReason::NoEndpoint
            | DropReason::QueueFull
            | DropReason::TooBig
            | DropReason::RelayUnavailable => DropCause::LocalLimit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DropCause, DropReason};

    #[test]
    fn drop_reasons_are_listed_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn every_cause_groups_some_reason_and_names_stay_distinct() {
        for cause in DropCause::ALL {
            assert!(DropReason::ALL.iter().any(|r| r.cause() == cause));
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
