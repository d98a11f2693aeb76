//! A peer's part in NAT awareness: how its persistent keepalive is chosen
//! and the interval in use, the ping waiting for a pong, the round trip
//! those pings measure, what its pongs say about a NAT between us, and the
//! steady-stream count that arms the silence check.
//!
//! The device decides what to send and when (`device/nat.rs`); this module
//! is the only place these fields change. It never sends, never arms
//! timers (the device does, from what these methods return) and never
//! reads the clock.

use std::time::{Duration, Instant};

use crate::nat::Keepalive;

/// Packets received at gaps shorter than this count as a steady stream.
pub const STREAM_GAP: Duration = Duration::from_millis(250);
/// Packets in a row that make a steady stream.
pub const STREAM_PACKETS: u8 = 4;
/// Discovery pings (each with its retry) sent while no peer has told
/// whether this node is behind a NAT, before giving up until the next
/// handshake.
pub const DISCOVERY_TRIES: u8 = 10;

/// A ping waiting for its pong.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ping {
    pub id: u32,
    pub sent: Instant,
    /// Tries so far (the first send is 1).
    pub tries: u8,
}

/// The NAT state of one peer.
#[derive(Debug)]
pub(crate) struct PeerNat {
    /// How the persistent keepalive is chosen.
    keepalive: Keepalive,
    /// The persistent keepalive interval in use.
    interval: Option<Duration>,
    ping: Option<Ping>,
    /// Smoothed round-trip time measured by pings.
    rtt: Option<Duration>,
    /// Whether the address this peer last reported for our main socket was
    /// not one of ours (a NAT between us), from its pongs.
    sees_nat: Option<bool>,
    /// Authenticated packets received in a row at short gaps.
    stream: u8,
    /// Discovery pings unanswered since the last pong.
    discovery_misses: u8,
}

impl PeerNat {
    /// The state of a peer configured with `keepalive`; an `Auto` one
    /// starts at `auto_interval`.
    pub fn new(keepalive: Keepalive, auto_interval: Option<Duration>) -> Self {
        // Zero means off, as in WireGuard; armed, it would re-fire at the
        // same instant forever.
        let (keepalive, interval) = match keepalive {
            Keepalive::Fixed(d) if d.is_zero() => (Keepalive::Off, None),
            Keepalive::Fixed(d) => (keepalive, Some(d)),
            Keepalive::Auto => (keepalive, auto_interval),
            Keepalive::Off => (keepalive, None),
        };
        Self {
            keepalive,
            interval,
            ping: None,
            rtt: None,
            sees_nat: None,
            stream: 0,
            discovery_misses: 0,
        }
    }

    /// How the persistent keepalive is chosen.
    pub fn keepalive(&self) -> Keepalive {
        self.keepalive
    }

    /// Whether the keepalive follows the NAT ([`Keepalive::Auto`]).
    pub fn is_auto(&self) -> bool {
        self.keepalive == Keepalive::Auto
    }

    /// The persistent keepalive interval in use.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// The interval to re-arm the persistent keepalive with after an
    /// authenticated receipt: many NATs refresh a mapping only on outbound
    /// packets, so an `Auto` keepalive counts from the last send alone.
    pub fn interval_after_receipt(&self) -> Option<Duration> {
        self.interval.filter(|_| !self.is_auto())
    }

    /// An `Auto` peer takes the interval the NAT machine chose. Returns
    /// whether it changed.
    pub fn follow_interval(&mut self, every: Option<Duration>) -> bool {
        if !self.is_auto() || self.interval == every {
            return false;
        }
        self.interval = every;
        true
    }

    /// The ping waiting for its pong.
    pub fn ping(&self) -> Option<Ping> {
        self.ping
    }

    /// Try `tries` of ping `id` went out at `now`.
    pub fn ping_sent(&mut self, id: u32, tries: u8, now: Instant) {
        self.ping = Some(Ping {
            id,
            sent: now,
            tries,
        });
    }

    /// The outstanding ping is answered or abandoned.
    pub fn clear_ping(&mut self) {
        self.ping = None;
    }

    /// A pong for ping `id` arrived at `now`, from an address that says
    /// whether a NAT is between us (`nat_between`). Returns whether it
    /// answered the outstanding ping.
    pub fn pong(&mut self, id: u32, nat_between: bool, now: Instant) -> bool {
        let answered = self.ping.is_some_and(|p| p.id == id);
        if let Some(ping) = self.ping.filter(|_| answered) {
            let rtt = now.saturating_duration_since(ping.sent);
            self.rtt = Some(match self.rtt {
                Some(s) => (s * 7 + rtt) / 8,
                None => rtt,
            });
            self.ping = None;
        }
        self.discovery_misses = 0;
        self.sees_nat = Some(nat_between);
        answered
    }

    /// What this peer's pongs say about a NAT between us.
    pub fn sees_nat(&self) -> Option<bool> {
        self.sees_nat
    }

    /// The round trip measured by pings, else `fallback`.
    pub fn rtt_or(&self, fallback: Option<Duration>) -> Option<Duration> {
        self.rtt.or(fallback)
    }

    /// A discovery ping went unanswered: whether another may be sent
    /// (counted if so).
    pub fn discovery_missed(&mut self) -> bool {
        if self.discovery_misses >= DISCOVERY_TRIES {
            return false;
        }
        self.discovery_misses += 1;
        true
    }

    /// An authenticated packet arrived at `now`, the last one before it at
    /// `previous`. Returns whether the packets make a steady stream.
    pub fn received(&mut self, now: Instant, previous: Option<Instant>) -> bool {
        let steady = previous.is_some_and(|t| now.saturating_duration_since(t) < STREAM_GAP);
        self.stream = if steady {
            self.stream.saturating_add(1)
        } else {
            1
        };
        self.stream >= STREAM_PACKETS
    }

    /// The stream stopped.
    pub fn stream_stopped(&mut self) {
        self.stream = 0;
    }
}
