//! The device's counters: drops by reason, cookie replies, handshakes that
//! reached Diffie-Hellman, relaying and hole punching, NAT keepalives and
//! recovery.
//!
//! A leaf: plain counters the device and its features add to, read by the
//! caller for status and metrics. Nothing here decides anything, and a
//! drop is counted only through [`DeviceStats::count_drop`].

use crate::{DropCause, DropReason};

/// Device-wide counters.
#[derive(Debug, Clone, Default)]
pub struct DeviceStats {
    drops: [u64; DropReason::ALL.len()],
    /// Cookie replies sent while under load.
    pub cookie_replies_sent: u64,
    /// Handshake messages received that reached Diffie-Hellman
    /// (initiations, and responses to an initiation of ours).
    pub handshake_dh: u64,
    /// Relaying and hole punching.
    pub relay: RelayStats,
}

impl DeviceStats {
    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Packets dropped for any reason of `cause`.
    pub fn dropped_by(&self, cause: DropCause) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| r.cause() == cause)
            .map(|r| self.dropped(*r))
            .sum()
    }

    /// Counts one dropped packet: the only way a drop is counted (see
    /// [`crate::drops`]). Returns `reason`, for the caller to report.
    pub(crate) fn count_drop(&mut self, reason: DropReason) -> DropReason {
        self.drops[reason as usize] += 1;
        reason
    }
}

/// Relay and hole-punching counters of a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams this node relayed for other members.
    pub forwarded_packets: u64,
    /// Bytes of those datagrams (the inner datagrams, as forwarded).
    pub forwarded_bytes: u64,
    /// Relay requests refused (unknown or unreachable target, budget).
    pub refused: u64,
    /// Datagrams this node sent to a peer through a relay.
    pub sent_via_relay: u64,
    /// Datagrams that reached this node through a relay.
    pub received_via_relay: u64,
    /// Punches sent.
    pub punches_sent: u64,
    /// Relayed peers that became direct within 10 s of a punch burst.
    pub punches_succeeded: u64,
}

/// Counters of NAT keepalives and recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Pings sent (keepalives behind a NAT, checks, discovery).
    pub pings_sent: u64,
    /// Pings that got no pong in time.
    pub pongs_missed: u64,
    /// Lost mappings detected (a ping and its retry unanswered).
    pub mapping_losses: u64,
    /// Binding messages this node answered as a helper.
    pub bindings_helped: u64,
}
