//! A peer's keys: its three transport sessions and the handshake we run
//! with it.
//!
//! The peer holds up to three sessions, as WireGuard does: `current` (used
//! to send), `previous` (kept so packets still in flight under the old keys
//! are accepted after a rekey) and `next` (a session we answered as
//! responder, promoted once the initiator's first packet proves it has the
//! keys). Our own initiation is a [`Handshake`] state that carries its data.
//!
//! This module is the only place sessions are installed, rotated or erased.
//! It never touches the device's index table: every method that drops a
//! session or an initiation returns the local indices it released, and the
//! device frees them. It never reads the clock, draws randomness or sends.

use std::time::{Duration, Instant};

use crate::noise::{PendingInitiation, Tai64N, TransportKeys};
use crate::replay::REJECT_AFTER_MESSAGES;
use crate::session::Session;
use crate::timers::{
    KEEPALIVE_TIMEOUT, MIN_INITIATION_INTERVAL, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
};
use crate::DropReason;

/// A handshake we initiated, waiting for its response.
#[derive(Debug)]
pub(crate) struct Initiated {
    /// The Noise state that finishes with the response.
    pub pending: PendingInitiation,
    /// Our index: the response carries it.
    pub local_index: u32,
    /// Sent at once in answer to a cookie reply (not by a timer or for
    /// data): a cookie reply to this one brings no further retry.
    pub after_cookie: bool,
}

/// Our side of the handshake with a peer.
#[derive(Debug, Default)]
pub(crate) enum Handshake {
    /// No initiation of ours is outstanding.
    #[default]
    Idle,
    /// Our initiation is out; it is retried until [`REKEY_ATTEMPT_TIME`]
    /// after `since`, when this run of attempts began.
    Initiating {
        /// The initiation last sent.
        initiated: Initiated,
        /// When the run of attempts began.
        since: Instant,
    },
    /// A session came up with us as responder while our initiation was
    /// out: the attempt is over (never given up on), but a late response
    /// to it is still taken.
    Superseded {
        /// The initiation last sent.
        initiated: Initiated,
    },
}

impl Handshake {
    fn initiated(&self) -> Option<&Initiated> {
        match self {
            Self::Idle => None,
            Self::Initiating { initiated, .. } | Self::Superseded { initiated } => Some(initiated),
        }
    }

    fn take(&mut self) -> Option<Initiated> {
        match std::mem::take(self) {
            Self::Idle => None,
            Self::Initiating { initiated, .. } | Self::Superseded { initiated } => Some(initiated),
        }
    }

    /// The attempt is over (a session is up): no retries, no giving up.
    fn end_attempt(&mut self) {
        if let Self::Initiating { .. } = self {
            if let Some(initiated) = self.take() {
                *self = Self::Superseded { initiated };
            }
        }
    }
}

/// Which of a peer's sessions a packet matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Next,
}

/// The sessions and handshake state of one peer.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    current: Option<Session>,
    previous: Option<Session>,
    next: Option<Session>,
    handshake: Handshake,
    /// When our last initiation was sent.
    last_initiation_sent: Option<Instant>,
    /// Greatest initiation timestamp accepted from the peer.
    last_timestamp: Option<Tai64N>,
    /// When we last answered an initiation from the peer.
    last_initiation_received: Option<Instant>,
    /// When the last handshake completed.
    last_handshake: Option<Instant>,
    /// Round-trip time of the last handshake we initiated.
    handshake_rtt: Option<Duration>,
}

impl Keys {
    /// The session to send on, if one is still within its limits.
    pub fn sending_session(&mut self, now: Instant) -> Option<&mut Session> {
        self.current.as_mut().filter(|s| {
            now.saturating_duration_since(s.established) < REJECT_AFTER_TIME
                && s.send_counter() < REJECT_AFTER_MESSAGES
        })
    }

    /// Whether [`Keys::sending_session`] would give a session.
    pub fn can_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| {
            now.saturating_duration_since(s.established) < REJECT_AFTER_TIME
                && s.send_counter() < REJECT_AFTER_MESSAGES
        })
    }

    /// Whether the current session is younger than REJECT_AFTER_TIME
    /// (whatever its counter), for status.
    pub fn has_fresh_session(&self, now: Instant) -> bool {
        self.current
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.established) < REJECT_AFTER_TIME)
    }

    /// Whether there is a current session at all, however old.
    pub fn has_current(&self) -> bool {
        self.current.is_some()
    }

    /// Whether sending on the current session should start a new handshake:
    /// we initiated it and it is past its age or message budget.
    pub fn wants_rekey_on_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| {
            (s.initiator && now.saturating_duration_since(s.established) >= REKEY_AFTER_TIME)
                || s.send_counter() >= REKEY_AFTER_MESSAGES
        })
    }

    /// Whether a session we initiated, and that only receives, is close
    /// enough to REJECT_AFTER_TIME to refresh it on receipt (WireGuard's
    /// keep-key-fresh on receive).
    pub fn wants_rekey_on_receive(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| {
            s.initiator
                && now.saturating_duration_since(s.established)
                    >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        })
    }

    /// The session (current, previous or next) with our index `local`.
    pub fn session_mut(&mut self, local: u32) -> Option<(Slot, &mut Session)> {
        for (slot, s) in [
            (Slot::Current, self.current.as_mut()),
            (Slot::Previous, self.previous.as_mut()),
            (Slot::Next, self.next.as_mut()),
        ] {
            if let Some(s) = s.filter(|s| s.local_index == local) {
                return Some((slot, s));
            }
        }
        None
    }

    /// Every local index these keys hold (sessions and handshake).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.local_index)
            .chain(self.handshake.initiated().map(|h| h.local_index))
    }

    /// Whether an initiation of ours is outstanding.
    pub fn initiating(&self) -> bool {
        self.handshake.initiated().is_some()
    }

    /// Whether a cookie reply to our initiation with index `receiver`
    /// should be answered at once with a new initiation: the attempt is
    /// running, that initiation is the last one sent, and it was not
    /// itself an answer to a cookie reply.
    pub fn retries_after_cookie(&self, receiver: u32) -> bool {
        match &self.handshake {
            Handshake::Initiating { initiated, .. } => {
                initiated.local_index == receiver && !initiated.after_cookie
            }
            _ => false,
        }
    }

    /// Whether an initiation went out less than REKEY_TIMEOUT ago.
    pub fn initiated_recently(&self, now: Instant) -> bool {
        self.last_initiation_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
    }

    /// Whether the running attempt began REKEY_ATTEMPT_TIME ago or more.
    pub fn attempt_expired(&self, now: Instant) -> bool {
        match self.handshake {
            Handshake::Initiating { since, .. } => {
                now.saturating_duration_since(since) >= REKEY_ATTEMPT_TIME
            }
            _ => false,
        }
    }

    /// Our initiation `initiated` went out at `now`, continuing the running
    /// attempt or starting one. Returns the index of the initiation it
    /// replaces.
    pub fn initiation_sent(&mut self, initiated: Initiated, now: Instant) -> Option<u32> {
        let since = match self.handshake {
            Handshake::Initiating { since, .. } => since,
            _ => now,
        };
        let old = self.handshake.take().map(|h| h.local_index);
        self.handshake = Handshake::Initiating { initiated, since };
        self.last_initiation_sent = Some(now);
        old
    }

    /// Gives up the running attempt. Returns the initiation's index.
    pub fn give_up(&mut self) -> Option<u32> {
        self.handshake.take().map(|h| h.local_index)
    }

    /// Finishes our initiation with the response to `receiver`, whose
    /// Noise part is `noise`. On success the handshake is done.
    pub fn finish_initiation(
        &mut self,
        receiver: u32,
        noise: &[u8],
        now: Instant,
    ) -> Result<TransportKeys, DropReason> {
        let initiated = match &mut self.handshake {
            Handshake::Initiating { initiated, .. } | Handshake::Superseded { initiated }
                if initiated.local_index == receiver =>
            {
                initiated
            }
            _ => return Err(DropReason::UnknownIndex),
        };
        let keys = initiated
            .pending
            .finish(noise)
            .map_err(|_| DropReason::HandshakeFailed)?;
        self.handshake = Handshake::Idle;
        self.handshake_rtt = self
            .last_initiation_sent
            .map(|t| now.saturating_duration_since(t));
        Ok(keys)
    }

    /// Installs `session`, from a handshake we initiated, as current.
    /// Returns the indices of the sessions it released.
    pub fn install_initiated(&mut self, session: Session, now: Instant) -> [Option<u32>; 2] {
        // A pending responder session moves to previous (it may still
        // receive), the old current is released.
        let released = if let Some(next) = self.next.take() {
            let old_current = self.current.take();
            let old_previous = self.previous.replace(next);
            [old_current, old_previous]
        } else {
            let old_previous = self.previous.take();
            self.previous = self.current.take();
            [old_previous, None]
        };
        self.current = Some(session);
        self.last_handshake = Some(now);
        released.map(|s| s.map(|s| s.local_index))
    }

    /// Whether an initiation with `timestamp` arriving at `now` may be
    /// answered: newer than any accepted, and not too soon after the last.
    pub fn check_initiation(&self, timestamp: Tai64N, now: Instant) -> Result<(), DropReason> {
        if self.last_timestamp.is_some_and(|t| timestamp <= t) {
            return Err(DropReason::Replay);
        }
        if self
            .last_initiation_received
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(DropReason::HandshakeFlood);
        }
        Ok(())
    }

    /// We answered an initiation with `timestamp`: `session` waits as next
    /// until the initiator uses it. Returns the index of the next session
    /// it replaces.
    pub fn answered(&mut self, session: Session, timestamp: Tai64N, now: Instant) -> Option<u32> {
        self.last_timestamp = Some(timestamp);
        self.last_initiation_received = Some(now);
        self.next.replace(session).map(|s| s.local_index)
    }

    /// The responder's next session proved itself: it becomes current, and
    /// our own attempt, if any, is over. `None` if there was no next
    /// session; else the index of the session released.
    pub fn confirm_next(&mut self, now: Instant) -> Option<Option<u32>> {
        let next = self.next.take()?;
        let released = self.previous.take().map(|s| s.local_index);
        self.previous = self.current.take();
        self.current = Some(next);
        self.last_handshake = Some(now);
        self.handshake.end_attempt();
        Some(released)
    }

    /// Erases every session and the handshake. Returns the indices
    /// released.
    pub fn erase(&mut self) -> Vec<u32> {
        let indices = self.local_indices().collect();
        self.current = None;
        self.previous = None;
        self.next = None;
        self.handshake = Handshake::Idle;
        indices
    }

    /// When the last handshake completed.
    pub fn last_handshake(&self) -> Option<Instant> {
        self.last_handshake
    }

    /// Round-trip time of the last handshake we initiated.
    pub fn handshake_rtt(&self) -> Option<Duration> {
        self.handshake_rtt
    }
}
