//! The types of the device's public interface: its settings, what its
//! inputs return, the datagrams and events it hands to the caller, and the
//! status snapshot of a peer.
//!
//! A leaf: plain data with no behaviour beyond defaults, imported by the
//! device and by the caller. Nothing here changes device state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::nat::{NatStatus, ProbeSocket};
use crate::noise::{PublicKey, StaticSecret};
use crate::peer::relay::DEFAULT_RELAY_BYTES_PER_SECOND;
use crate::peer::{PeerId, PeerStats};
use crate::DropReason;

/// Settings of a device.
#[derive(Debug)]
pub struct DeviceConfig {
    /// Our static private key.
    pub private_key: StaticSecret,
    /// The interface MTU; transport padding never grows a packet past it.
    pub mtu: usize,
    /// Handshake messages per second above which the device is "under
    /// load" and demands cookies (mac2) before doing any Diffie-Hellman.
    pub under_load_handshakes_per_second: u32,
    /// Packets queued per peer while its handshake runs; the oldest are
    /// dropped beyond this.
    pub queue_limit: usize,
    /// Whether each edge discovers its path MTU by probing.
    pub pmtu_discovery: bool,
    /// The largest path MTU any edge may use, until the caller reports the
    /// local interface MTU toward an endpoint ([`Device::set_local_mtu`](crate::Device::set_local_mtu)).
    pub max_pmtu: u16,
    /// Bytes per second this node relays for each sending member (also
    /// its burst allowance); 0 relays nothing.
    pub relay_bytes_per_second: u64,
    /// Whether peers with [`Keepalive::Auto`](crate::Keepalive::Auto) and an endpoint handshake as
    /// soon as they are added (as fixed keepalives do), which opens a NAT
    /// mapping and tells whether this node is behind a NAT. Off, they
    /// handshake on demand (a mesh, whose members would otherwise all
    /// handshake with all at start).
    pub auto_handshake_at_start: bool,
}

impl DeviceConfig {
    /// Defaults for everything but the key.
    pub fn new(private_key: StaticSecret) -> Self {
        Self {
            private_key,
            mtu: 1420,
            under_load_handshakes_per_second: 128,
            queue_limit: 1024,
            pmtu_discovery: true,
            max_pmtu: 1500,
            relay_bytes_per_second: DEFAULT_RELAY_BYTES_PER_SECOND,
            auto_handshake_at_start: true,
        }
    }
}

/// Why a peer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerConfigError {
    /// The key is our own.
    #[error("peer {0:?} has this node's own public key")]
    OwnKey(String),
    /// Another peer has the same key.
    #[error("peer {0:?} repeats the public key of another peer")]
    DuplicateKey(String),
    /// Another peer already claims this prefix.
    #[error("peer {peer:?}: allowed_ips {prefix} is already routed to another peer")]
    DuplicatePrefix {
        /// The peer being added.
        peer: String,
        /// The prefix.
        prefix: String,
    },
}

/// A datagram ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
}

/// A datagram to send from a probe socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTransmit {
    /// The probe socket to send from (open it if new).
    pub socket: ProbeSocket,
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
}

/// Outcome of [`Device::encapsulate`](crate::Device::encapsulate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// Send `buf[..len]` to `destination`.
    Send {
        /// The peer it goes to.
        peer: PeerId,
        /// Its endpoint.
        destination: SocketAddr,
        /// Datagram length.
        len: usize,
    },
    /// Queued until a handshake with `peer` finishes; poll for transmits.
    Queued {
        /// The peer it waits for.
        peer: PeerId,
    },
    /// Larger than the edge toward `peer` carries: fragment it or answer
    /// with an ICMP "too big" carrying `mtu`.
    TooBig {
        /// The peer it was for.
        peer: PeerId,
        /// The inner MTU of that edge.
        mtu: u16,
    },
    /// Not sent.
    Dropped(DropReason),
}

/// Outcome of [`Device::decapsulate`](crate::Device::decapsulate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decapsulated {
    /// Write `buf[offset..offset + len]` to the TUN device.
    Tun {
        /// The peer it came from.
        peer: PeerId,
        /// Start of the inner packet in the buffer.
        offset: usize,
        /// Inner packet length.
        len: usize,
    },
    /// Taken by the protocol (handshake, keepalive, cookie); poll for
    /// transmits and events.
    Consumed,
    /// Refused.
    Dropped(DropReason),
}

/// Something the caller may want to know or log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new session is in use with `peer`.
    HandshakeCompleted {
        /// The peer.
        peer: PeerId,
        /// Whether we initiated the handshake.
        initiator: bool,
    },
    /// No response came within REKEY_ATTEMPT_TIME; queued packets dropped.
    HandshakeFailed {
        /// The peer.
        peer: PeerId,
    },
    /// An authenticated packet arrived from a new address; replies go there.
    EndpointChanged {
        /// The peer.
        peer: PeerId,
        /// The old endpoint.
        from: Option<SocketAddr>,
        /// The new one.
        to: SocketAddr,
    },
    /// The path MTU in use toward `peer` changed.
    PmtuChanged {
        /// The peer.
        peer: PeerId,
        /// Its endpoint (the edge).
        endpoint: SocketAddr,
        /// The outer path MTU now in use.
        pmtu: u16,
        /// The largest inner packet the edge carries.
        inner_mtu: u16,
    },
    /// All key material of `peer` was erased after a long silence.
    SessionsCleared {
        /// The peer.
        peer: PeerId,
    },
    /// Traffic to `peer` now goes through relay `via`, or directly (`None`).
    PathChanged {
        /// The peer.
        peer: PeerId,
        /// The relay in use, if any.
        via: Option<PeerId>,
        /// Whether a punch burst opened the direct path.
        punched: bool,
    },
    /// What this node knows about its NAT changed (detection, measured
    /// lifetime, keepalive interval).
    NatChanged(NatStatus),
}

/// A snapshot of one peer for status output.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Name from the configuration.
    pub name: String,
    /// Static public key.
    pub public_key: PublicKey,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<Instant>,
    /// Whether a session is usable for sending.
    pub has_session: bool,
    /// Inner prefixes routed to this peer.
    pub allowed_ips: Vec<ip_network::IpNetwork>,
    /// Persistent keepalive interval, if any.
    pub persistent_keepalive: Option<Duration>,
    /// Counters.
    pub stats: PeerStats,
    /// When an authenticated packet last arrived from it.
    pub last_received: Option<Instant>,
    /// Removed from the mesh (revoked): kept only so ids stay stable.
    pub removed: bool,
}
