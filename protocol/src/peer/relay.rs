//! A peer's part in relaying and hole punching: the punch bursts and
//! candidate offers toward it while it is relayed, and the budget of bytes
//! this node relays on its behalf.
//!
//! What the relay messages do, and when a peer is relayed, is decided in
//! `device/relay.rs`; this module only keeps the per-peer state those
//! decisions need, changed through its methods. It never sends, never reads
//! the clock and never looks at another peer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::control::{MAX_CANDIDATES, RELAY_HEADER_LEN};
use crate::wire::TRANSPORT_OVERHEAD;

/// What relaying costs an inner packet on top of the direct overhead: the
/// relay session's transport header and tag, and the relay header.
pub const RELAY_OVERHEAD: usize = TRANSPORT_OVERHEAD + RELAY_HEADER_LEN;
/// Bytes per second a node relays for one sending peer by default (also
/// its burst allowance).
pub const DEFAULT_RELAY_BYTES_PER_SECOND: u64 = 25_000_000;
/// Punches sent to each candidate per burst.
pub const PUNCH_BURST: u8 = 5;
/// Most addresses one burst punches at: the candidates of one offer and
/// the peer's known endpoint.
pub const MAX_PUNCH_TARGETS: usize = MAX_CANDIDATES + 1;
/// Time between the punches of a burst.
pub const PUNCH_SPACING: Duration = Duration::from_millis(150);
/// First wait before offering candidates again while still relayed; it
/// doubles up to [`PUNCH_RETRY_MAX`].
pub const PUNCH_RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between offers while relayed.
pub const PUNCH_RETRY_MAX: Duration = Duration::from_secs(120);
/// Offers from one peer are taken at most this often (each starts a burst).
pub const PUNCH_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A direct packet this soon after a punch burst counts the burst as the
/// one that opened the path.
const PUNCH_SUCCESS_WINDOW: Duration = Duration::from_secs(10);

/// Hole punching toward one peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Punch {
    /// When to offer candidates next, while relayed.
    next_offer: Option<Instant>,
    backoff: Duration,
    /// The addresses of the running burst, and the sends left.
    targets: Vec<SocketAddr>,
    left: u8,
    next_send: Option<Instant>,
    last_burst: Option<Instant>,
    last_offer_taken: Option<Instant>,
}

impl Punch {
    /// The earliest send or (while `offering`) offer deadline.
    pub fn deadline(&self, offering: bool) -> Option<Instant> {
        let send = self.next_send.filter(|_| self.left > 0);
        let offer = self.next_offer.filter(|_| offering);
        match (send, offer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The peer just became relayed: offer candidates at once.
    pub fn relayed(&mut self, now: Instant) {
        self.next_offer = Some(now);
        self.backoff = Duration::ZERO;
    }

    /// The peer is direct again: all punching stops. Returns whether a
    /// burst ran recently enough to have opened the path.
    pub fn direct(&mut self, now: Instant) -> bool {
        let punched = self
            .last_burst
            .is_some_and(|t| now.saturating_duration_since(t) < PUNCH_SUCCESS_WINDOW);
        *self = Self::default();
        punched
    }

    /// Whether an offer from the peer arriving at `now` is taken (at most
    /// one per [`PUNCH_MIN_INTERVAL`]); taking it is remembered.
    pub fn take_offer(&mut self, now: Instant) -> bool {
        let recent = self
            .last_offer_taken
            .is_some_and(|t| now.saturating_duration_since(t) < PUNCH_MIN_INTERVAL);
        if !recent {
            self.last_offer_taken = Some(now);
        }
        !recent
    }

    /// The other side coordinates this round: no offer of our own until
    /// the first backoff passes.
    pub fn defer_offer(&mut self, now: Instant) {
        if let Some(t) = self.next_offer.as_mut() {
            *t = (*t).max(now + PUNCH_RETRY_FIRST);
        }
    }

    /// Starts a burst of [`PUNCH_BURST`] punches at each of `targets` (the
    /// first [`MAX_PUNCH_TARGETS`]).
    pub fn start_burst(&mut self, mut targets: Vec<SocketAddr>, now: Instant) {
        if targets.is_empty() {
            return;
        }
        targets.truncate(MAX_PUNCH_TARGETS);
        self.targets = targets;
        self.left = PUNCH_BURST;
        self.next_send = Some(now);
        self.last_burst = Some(now);
    }

    /// Ends the running burst, if any (the peer is no longer relayed).
    pub fn stop_burst(&mut self) {
        self.targets.clear();
        self.left = 0;
        self.next_send = None;
    }

    /// The targets to punch at now, if a burst send is due; the send is
    /// counted as made.
    pub fn due_punches(&mut self, now: Instant) -> Option<&[SocketAddr]> {
        if self.left > 0 && self.next_send.is_some_and(|t| t <= now) {
            self.left -= 1;
            self.next_send = (self.left > 0).then_some(now + PUNCH_SPACING);
            return Some(&self.targets);
        }
        None
    }

    /// Whether an offer is due at `now`.
    pub fn offer_due(&self, now: Instant) -> bool {
        self.next_offer.is_some_and(|t| t <= now)
    }

    /// An offer was due at `now`: the next waits twice as long as the last,
    /// within [`PUNCH_RETRY_FIRST`] and [`PUNCH_RETRY_MAX`].
    pub fn offer_made(&mut self, now: Instant) {
        self.backoff = (self.backoff * 2).clamp(PUNCH_RETRY_FIRST, PUNCH_RETRY_MAX);
        self.next_offer = Some(now + self.backoff);
    }
}

/// The bytes this node may still relay for one sending peer: a token
/// bucket of `rate` bytes per second holding at most `rate` bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RelayBudget(Option<(Instant, u64)>);

impl RelayBudget {
    /// Takes `len` bytes at `rate`; false if the budget is spent.
    pub fn charge(&mut self, rate: u64, len: usize, now: Instant) -> bool {
        let (at, tokens) = self.0.unwrap_or((now, rate));
        let refill = u128::from(rate) * now.saturating_duration_since(at).as_micros() / 1_000_000;
        let tokens = (u128::from(tokens) + refill).min(u128::from(rate)) as u64;
        let len = len as u64;
        if tokens < len {
            self.0 = Some((now, tokens));
            return false;
        }
        self.0 = Some((now, tokens - len));
        true
    }
}
