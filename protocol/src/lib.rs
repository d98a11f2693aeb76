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
//! - [`cookie`]: mac1/mac2 and cookie replies, the DoS defences, with
//!   `ratelimit`: per-source buckets for handshakes under load;
//! - [`session`]: transport encryption in place, counters, [`replay`];
//! - [`timers`]: the timer table and the protocol's time constants;
//! - [`peer`]: what the device knows of one peer, one part per feature;
//! - [`device`]: the state machine that ties them together;
//! - [`drops`]: why packets are dropped, grouped by cause, counted once;
//! - [`addr`]: the one rule for endpoints others name (IPv4-mapped forms
//!   undone, then no loopback, multicast, unspecified or broadcast);
//! - [`pmtu`]: per-edge path-MTU discovery;
//! - [`nat`]: NAT detection, mapping-lifetime trials, keepalive intervals;
//! - [`packet`]: the inner IP header fields routing needs;
//! - [`membership`]: identities, certificates, invite tokens, gossip records;
//! - [`join`]: the exchange that turns an invite token into a certificate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod cookie;
pub mod device;
pub mod drops;
pub mod join;
pub mod membership;
pub mod nat;
pub mod noise;
pub mod packet;
pub mod peer;
pub mod pmtu;
mod ratelimit;
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
pub use drops::{DropCause, DropReason};
pub use nat::{Keepalive, NatStatus, ProbeSocket};
pub use noise::{PresharedKey, PublicKey, StaticSecret};
pub use peer::{PeerConfig, PeerId, PeerStats};
