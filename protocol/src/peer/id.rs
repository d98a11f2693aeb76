//! The peer id: how every part of the device names a peer.
//!
//! A leaf: every module that keeps per-peer state may import it, and it
//! imports nothing of the crate.

/// Index of a peer in its device, stable for the device's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);
