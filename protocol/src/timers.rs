//! Per-peer timers in a table indexed by an enum, and the protocol's time
//! constants.
//!
//! The constants are WireGuard's (whitepaper §6.1–6.5), which weft keeps
//! because they are proven on the Internet; `docs/protocol.md` lists each
//! with its source. The table only stores deadlines: the peer decides what a
//! firing timer does, and the caller of the protocol supplies `now`.

use std::time::{Duration, Instant};

/// Start a new handshake for a session this old when sending (REKEY_AFTER_TIME).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Never use a session older than this (REJECT_AFTER_TIME).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Give up a handshake attempt after this long (REKEY_ATTEMPT_TIME).
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retransmit an unanswered initiation after this long (REKEY_TIMEOUT).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to each retransmission.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
/// Answer received data with a keepalive when nothing was sent back within
/// this long (KEEPALIVE_TIMEOUT).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rekey after this many messages on one session (REKEY_AFTER_MESSAGES).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Accept at most one initiation per peer within this interval (WireGuard's
/// INITIATIONS_PER_SECOND = 50).
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);

/// The timers a peer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Timer {
    /// An initiation went unanswered: send another, or give up.
    RetransmitHandshake = 0,
    /// Data arrived and nothing went back: send a keepalive.
    PassiveKeepalive = 1,
    /// Data went out and nothing came back: start a new handshake.
    NewHandshake = 2,
    /// The configured persistent keepalive interval passed without traffic.
    PersistentKeepalive = 3,
    /// No new session for a long time: erase all key material.
    ZeroKeys = 4,
    /// A ping went unanswered: retry it, or declare the NAT mapping lost.
    PongTimeout = 5,
    /// A steady stream from the peer stopped: check the mapping with a ping.
    Silence = 6,
}

impl Timer {
    /// Every timer, in firing priority order.
    pub const ALL: [Timer; 7] = [
        Timer::RetransmitHandshake,
        Timer::PassiveKeepalive,
        Timer::NewHandshake,
        Timer::PersistentKeepalive,
        Timer::ZeroKeys,
        Timer::PongTimeout,
        Timer::Silence,
    ];
}

/// Deadlines of a peer's timers.
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    /// Arms `timer` to fire at `at`, replacing an earlier arming.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Arms `timer` only if it is not armed already.
    pub fn set_if_unarmed(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.deadlines[timer as usize];
        if slot.is_none() {
            *slot = Some(at);
        }
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// Disarms everything.
    pub fn stop_all(&mut self) {
        self.deadlines = [None; Timer::ALL.len()];
    }

    /// The earliest deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer due at `now`, if any.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        for t in Timer::ALL {
            if self.get(t).is_some_and(|at| at <= now) {
                self.stop(t);
                return Some(t);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_timeout_is_the_earliest_armed_deadline() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::ZeroKeys, t0 + Duration::from_secs(9));
        t.set(Timer::PassiveKeepalive, t0 + Duration::from_secs(3));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn set_if_unarmed_keeps_the_first_deadline() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set_if_unarmed(Timer::NewHandshake, t0);
        t.set_if_unarmed(Timer::NewHandshake, t0 + Duration::from_secs(1));
        assert_eq!(t.get(Timer::NewHandshake), Some(t0));
    }

    #[test]
    fn expired_timers_are_taken_once() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::PassiveKeepalive, t0);
        assert_eq!(t.take_expired(t0), Some(Timer::PassiveKeepalive));
        assert_eq!(t.take_expired(t0), None);
    }
}
