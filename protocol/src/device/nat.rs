//! The device's side of NAT awareness: pings and pongs that prove a peer's
//! path (and report the reflexive address), binding-lifetime trials between
//! probe sockets and a cooperating peer, the per-peer keepalive interval,
//! and recovery when a NAT forgets the mapping.
//!
//! All messages are control messages ([`crate::wire::control`]) sealed in
//! the peer's session, so they are authenticated like data
//! (`docs/protocol.md` §12):
//!
//! - `0x04` ping and `0x05` pong: the pong names the address the ping came
//!   from;
//! - `0x06` binding open, sent from a probe socket;
//! - `0x07` binding ack, sent to the probe socket's reflexive address;
//! - `0x08` binding check, over the main path;
//! - `0x09` binding ping, to the probe socket's reflexive address.
//!
//! A binding open never moves the sender's endpoint or touches its timers;
//! the helper answers only to addresses seen in authenticated opens, once
//! per open and once per check, from a small table with expiry
//! ([`crate::nat::BindingTable`]).
//!
//! This module decides what to send and which timers to arm. The state it
//! works on is owned elsewhere and changed through methods: the node-wide
//! search by [`crate::nat::NatMachine`], each peer's pings, RTT and
//! keepalive interval by [`crate::peer::nat`]. It never moves an endpoint
//! and never changes a session.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::RngCore;
use tracing::{debug, info, trace};

use super::{Decapsulated, Device, Event, NatCounters, Outgoing, ProbeTransmit, Transmit};
use crate::nat::reflexive::VERIFY_QUORUM;
#[cfg(test)]
use crate::nat::BINDING_TABLE_PER_PEER;
use crate::nat::{Keepalive, NatAction, NatStatus, OwnEndpoints, ProbeSocket};
use crate::noise::PublicKey;
use crate::peer::PeerId;
use crate::timers::Timer;
use crate::wire::control::{BindingAck, BindingCheck, BindingTrial, Control, Ping, Pong};
use crate::wire::{Message, TRANSPORT_HEADER_LEN};
use crate::DropReason;

/// Least time to wait for a pong; three smoothed RTTs when longer.
pub const PONG_TIMEOUT_MIN: Duration = Duration::from_millis(300);
/// Least silence after a steady stream before a ping checks the mapping;
/// four smoothed RTTs when longer.
pub const SILENCE_MIN: Duration = Duration::from_millis(500);
impl Device {
    /// What this node knows about its NAT.
    pub fn nat_status(&self) -> NatStatus {
        self.nat.status()
    }

    /// NAT keepalive counters.
    pub fn nat_counters(&self) -> NatCounters {
        self.nat_counters
    }

    /// The persistent keepalive interval in use toward `peer` (`None`: off).
    pub fn keepalive_interval(&self, peer: PeerId) -> Option<Duration> {
        self.peers.get(peer)?.nat.interval()
    }

    /// This node's own addresses and the main socket's port, to tell a
    /// reflexive address behind a NAT from a local one.
    pub fn set_local_addresses(&mut self, ips: Vec<IpAddr>, port: u16) {
        self.nat.set_local_addresses(ips, port);
    }

    /// A NAT mapping lifetime learned from gossip or the store: keepalives
    /// start from it, and the first trial verifies it.
    pub fn set_nat_hint(&mut self, lifetime: Duration, now: Instant) {
        self.nat.set_hint(lifetime);
        self.apply_nat_changes(now);
    }

    /// Member `reporter` (its data-plane key) said elsewhere (a gossiped
    /// path observation) that it sees this node at `observed`. It counts as
    /// that member's report toward the verification of the address
    /// ([`crate::nat::reflexive`]); a key that is not a current peer is
    /// ignored. Until a pong or binding acknowledgement has answered
    /// whether this node is behind a NAT, a verified address answers it.
    pub fn note_reflexive(&mut self, reporter: &PublicKey, observed: SocketAddr, now: Instant) {
        if self.find_peer(reporter).is_none() {
            return;
        }
        self.nat.report(*reporter, observed, now);
        let by_key = &self.by_key;
        let agreed = self
            .nat
            .reports()
            .reporters(observed, now, |k| by_key.contains_key(k));
        if self.nat.status().behind.is_some() || agreed < VERIFY_QUORUM {
            return;
        }
        self.nat.on_reflexive(now, observed);
        self.apply_nat_changes(now);
    }

    /// This node's endpoints for the mesh, given its own addresses `local`:
    /// announced (reflexive addresses at least [`VERIFY_QUORUM`] current
    /// peers report, then `local`) and offered for hole punching (those,
    /// then addresses fewer peers report). See [`crate::nat::reflexive`].
    pub fn own_endpoints(&self, local: &[SocketAddr], now: Instant) -> OwnEndpoints {
        let by_key = &self.by_key;
        self.nat
            .reports()
            .own_endpoints(local, now, |k| by_key.contains_key(k))
    }

    /// The probe sockets running trials need; any other may be closed.
    pub fn probe_sockets(&self) -> impl Iterator<Item = ProbeSocket> + '_ {
        self.nat.probe_sockets()
    }

    /// The next datagram to send from a probe socket, written into `buf`.
    pub fn poll_probe_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<ProbeTransmit> {
        while let Some((socket, id, open)) = self.probe_out.pop_front() {
            let peer = &mut self.peers[id];
            let Some(destination) = peer.path.endpoint() else {
                continue;
            };
            let open = Control::BindingOpen(open);
            let Some(plain) = buf
                .get_mut(TRANSPORT_HEADER_LEN..)
                .and_then(|body| open.emit(body))
            else {
                continue;
            };
            let mtu = self.mtu;
            let Some(session) = peer.keys.sending_session(now) else {
                continue;
            };
            if let Ok(len) = session.seal(buf, plain, mtu) {
                return Some(ProbeTransmit {
                    socket,
                    destination,
                    len,
                });
            }
        }
        None
    }

    /// Handles a datagram received on probe socket `socket`: only binding
    /// acknowledgements and pings from that trial's helper are taken.
    pub fn handle_probe_datagram(
        &mut self,
        now: Instant,
        socket: ProbeSocket,
        buf: &mut [u8],
    ) -> Decapsulated {
        match self.probe_datagram(now, socket, buf) {
            Ok(()) => {
                self.apply_nat_changes(now);
                Decapsulated::Consumed
            }
            Err(reason) => Decapsulated::Dropped(self.stats.count_drop(reason)),
        }
    }

    fn probe_datagram(
        &mut self,
        now: Instant,
        socket: ProbeSocket,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let Ok(Message::Transport(t)) = Message::parse(buf) else {
            return Err(DropReason::Malformed);
        };
        let (receiver, counter) = (t.receiver(), t.counter());
        let (trial, helper, nonce) = self.nat.trial_on(socket).ok_or(DropReason::UnknownIndex)?;
        let id = self.indices.owner(receiver)?;
        if id != helper {
            return Err(DropReason::UnknownPeer);
        }
        let peer = &mut self.peers[id];
        let (_, session) = peer
            .keys
            .session_mut(receiver)
            .ok_or(DropReason::UnknownIndex)?;
        let plain = session
            .open(counter, &mut buf[TRANSPORT_HEADER_LEN..])
            .map_err(|e| match e {
                crate::session::SessionError::Replay => DropReason::Replay,
                _ => DropReason::Decrypt,
            })?;
        // Authenticated; nothing about the peer changes.
        let m = &buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + plain];
        let message = Control::parse(m).map_err(|_| DropReason::MalformedInner)?;
        // Only this trial's messages are taken: another trial's, or an
        // earlier run's, is old news.
        let is_this_trial = |t: u32, n: u64| {
            if (t, n) == (trial, nonce) {
                Ok(())
            } else {
                Err(DropReason::Replay)
            }
        };
        match message {
            Control::BindingAck(ack) => {
                is_this_trial(ack.trial, ack.nonce)?;
                trace!(trial, main = %ack.main, "binding acknowledged");
                self.nat.on_ack(now, trial, nonce);
                self.nat.on_reflexive(now, ack.main);
                self.nat.report(peer.public_key, ack.main, now);
            }
            Control::BindingPing(ping) => {
                is_this_trial(ping.trial, ping.nonce)?;
                self.nat.on_binding_ping(now, trial, nonce);
            }
            _ => return Err(DropReason::MalformedInner),
        }
        Ok(())
    }

    /// A binding open arrived from `from` (a peer's probe socket): answer
    /// it there, remember where, and change nothing else.
    pub(super) fn handle_binding_open(
        &mut self,
        id: PeerId,
        now: Instant,
        from: SocketAddr,
        open: BindingTrial,
    ) {
        let BindingTrial { trial, nonce } = open;
        self.bindings.open(id, trial, nonce, from, now);
        let main = self.peers[id].path.endpoint().unwrap_or(from);
        let ack = BindingAck {
            trial,
            nonce,
            probe: from,
            main,
        };
        self.nat_counters.bindings_helped += 1;
        self.outgoing.push_back(Outgoing::Nat {
            peer: id,
            to: Some(from),
            message: Control::BindingAck(ack),
            keepalive: false,
        });
    }

    /// A ping from `id`: answered with the address it came from.
    pub(super) fn answer_ping(&mut self, id: PeerId, ping: Ping) {
        let Some(seen) = self.peers[id].path.endpoint() else {
            return;
        };
        let pong = Pong {
            id: ping.id,
            observed: seen,
        };
        self.outgoing.push_back(Outgoing::Nat {
            peer: id,
            to: None,
            message: Control::Pong(pong),
            keepalive: false,
        });
    }

    /// A pong from `id`: the round trip, and the address our main socket
    /// is seen at.
    pub(super) fn on_pong(&mut self, id: PeerId, pong: Pong, now: Instant) {
        let seen = pong.observed;
        let nat_between = !self.nat.is_local(seen);
        let peer = &mut self.peers[id];
        if peer.nat.pong(pong.id, nat_between, now) {
            peer.timers.stop(Timer::PongTimeout);
        }
        // The member's word on where it sees us: one vote toward announcing
        // the address, never enough alone.
        self.nat.report(peer.public_key, seen, now);
        // Behind a NAT toward some peers and not toward others (a LAN
        // beside the NAT): the NAT decides, as long as any peer still
        // sees it; a local report alone does not undo it.
        let nat_elsewhere = self.peers.iter().any(|p| p.nat.sees_nat() == Some(true));
        if nat_between || !nat_elsewhere {
            self.nat.on_reflexive(now, seen);
        }
        self.apply_nat_changes(now);
    }

    /// A binding check from `id`, over the main path: one binding ping to
    /// the probe socket of the open it names, if this node holds it.
    pub(super) fn on_binding_check(&mut self, id: PeerId, check: BindingCheck, now: Instant) {
        let trial = check.trial;
        // One binding ping per open: nothing here can be turned into a
        // stream toward an address.
        if let Some((nonce, probe)) = self.bindings.check(id, trial, now) {
            self.nat_counters.bindings_helped += 1;
            let ping = BindingTrial { trial, nonce };
            self.outgoing.push_back(Outgoing::Nat {
                peer: id,
                to: Some(probe),
                message: Control::BindingPing(ping),
                keepalive: false,
            });
        }
    }

    /// Queues a ping to `id` unless one is outstanding.
    pub(super) fn send_ping(&mut self, id: PeerId, now: Instant, keepalive: bool) {
        let ping_id = self.rng.next_u32();
        let peer = &mut self.peers[id];
        if peer.nat.ping().is_some() {
            return;
        }
        self.queue_ping(id, ping_id, 1, now, keepalive);
    }

    /// Sends try number `tries` of ping `ping_id` to `id` and arms its pong
    /// timer.
    fn queue_ping(&mut self, id: PeerId, ping_id: u32, tries: u8, now: Instant, keepalive: bool) {
        let peer = &mut self.peers[id];
        peer.nat.ping_sent(ping_id, tries, now);
        let wait = pong_timeout(peer.nat.rtt_or(peer.keys.handshake_rtt()));
        peer.timers.set(Timer::PongTimeout, now + wait);
        self.nat_counters.pings_sent += 1;
        self.outgoing.push_back(Outgoing::Nat {
            peer: id,
            to: None,
            message: Control::Ping(Ping { id: ping_id }),
            keepalive,
        });
    }

    /// The pong timer fired: retry once, then take the mapping as lost.
    pub(super) fn pong_missed(&mut self, id: PeerId, now: Instant) {
        self.nat_counters.pongs_missed += 1;
        let behind = self.nat.status().behind == Some(true);
        let unknown = self.nat.status().behind.is_none();
        let peer = &mut self.peers[id];
        let Some(ping) = peer.nat.ping() else {
            return;
        };
        if ping.tries < 2 {
            self.queue_ping(id, ping.id, ping.tries + 1, now, true);
            return;
        }
        peer.nat.clear_ping();
        if unknown && peer.nat.is_auto() && peer.nat.discovery_missed() {
            // Still unknown whether we are behind a NAT: ask again soon, at
            // the interval a NAT would need.
            peer.timers
                .set(Timer::PersistentKeepalive, now + crate::nat::START_INTERVAL);
            return;
        }
        if !behind || !peer.nat.is_auto() || peer.keys.initiating() {
            return;
        }
        info!(peer = %peer.name, "mapping lost: re-handshake");
        self.nat_counters.mapping_losses += 1;
        // From the same socket, at once: the new mapping reaches the peer,
        // which follows it by roaming.
        self.start_handshake(id, now, true);
        self.nat.on_mapping_lost(now);
        self.apply_nat_changes(now);
    }

    /// An authenticated packet arrived from `id` on the main path: behind a
    /// NAT any packet answers an outstanding ping, and a steady stream arms
    /// the silence check.
    pub(super) fn nat_on_received(&mut self, id: PeerId, now: Instant, previous: Option<Instant>) {
        let behind = self.nat.status().behind == Some(true);
        let peer = &mut self.peers[id];
        // Behind a NAT any packet proves the mapping; a discovery ping
        // still waits for its pong, which carries the reflexive address.
        if peer.nat.ping().is_some() && behind {
            peer.nat.clear_ping();
            peer.timers.stop(Timer::PongTimeout);
        }
        if !behind || !peer.nat.is_auto() {
            return;
        }
        if peer.nat.received(now, previous) {
            let rtt = peer
                .nat
                .rtt_or(peer.keys.handshake_rtt())
                .unwrap_or_default();
            peer.timers
                .set(Timer::Silence, now + (rtt * 4).max(SILENCE_MIN));
        } else {
            peer.timers.stop(Timer::Silence);
        }
    }

    /// A steady stream from `id` stopped: a NAT may have dropped the
    /// mapping, and a ping (from the same socket) recreates it.
    pub(super) fn silence(&mut self, id: PeerId, now: Instant) {
        let peer = &mut self.peers[id];
        peer.nat.stream_stopped();
        if peer.keys.sending_session(now).is_some() {
            debug!(peer = %peer.name, "stream stopped; checking the mapping");
            self.send_ping(id, now, true);
        }
    }

    /// A handshake with `id` completed: a ping learns the reflexive address
    /// (and so whether this node is behind a NAT).
    pub(super) fn nat_after_handshake(&mut self, id: PeerId, now: Instant) {
        if self.peers[id].nat.keepalive() != Keepalive::Off {
            self.send_ping(id, now, false);
        }
    }

    /// The persistent keepalive of `id` is due.
    pub(super) fn keepalive_due(&mut self, id: PeerId, now: Instant) {
        let behind = self.nat.status().behind != Some(false);
        if self.peers[id].nat.is_auto() && behind {
            self.send_ping(id, now, true);
        } else {
            self.outgoing.push_back(Outgoing::Keepalive(id));
        }
    }

    /// Runs the NAT machine's timers and queues its messages.
    pub(super) fn handle_nat_timeout(&mut self, now: Instant) {
        if self.nat.poll_timeout().is_some_and(|t| t <= now) {
            let helper = self.helper(now);
            self.nat.handle_timeout(now, helper);
        }
        while let Some(action) = self.nat.poll_action() {
            match action {
                NatAction::Open {
                    helper,
                    socket,
                    trial,
                    nonce,
                } => {
                    let open = BindingTrial { trial, nonce };
                    self.probe_out.push_back((socket, helper, open));
                }
                NatAction::Check { helper, trial } => {
                    self.outgoing.push_back(Outgoing::Nat {
                        peer: helper,
                        to: None,
                        message: Control::BindingCheck(BindingCheck { trial }),
                        keepalive: false,
                    });
                }
            }
        }
        self.apply_nat_changes(now);
    }

    /// The peer to run trials with: a usable session across the NAT, lowest
    /// RTT first.
    fn helper(&mut self, now: Instant) -> Option<(PeerId, Duration)> {
        let behind = self.nat.status().behind == Some(true);
        let mut best: Option<(PeerId, Duration)> = None;
        for id in self.peers.ids() {
            let p = &mut self.peers[id];
            if p.removed || p.path.endpoint().is_none() || p.keys.sending_session(now).is_none() {
                continue;
            }
            // A peer on our side of the NAT would prove every lifetime: its
            // packets never cross the NAT.
            if behind && p.nat.sees_nat() == Some(false) {
                continue;
            }
            let rtt = p
                .nat
                .rtt_or(p.keys.handshake_rtt())
                .unwrap_or(Duration::from_millis(500));
            if best.is_none_or(|(_, b)| rtt < b) {
                best = Some((id, rtt));
            }
        }
        best
    }

    /// Applies a changed keepalive interval to every `Auto` peer and
    /// reports the change.
    pub(super) fn apply_nat_changes(&mut self, now: Instant) {
        if !self.nat.poll_change() {
            return;
        }
        let status = self.nat.status();
        let every = status.keepalive_interval;
        for p in self.peers.iter_mut() {
            if !p.nat.follow_interval(every) {
                continue;
            }
            match every {
                Some(e) if p.keys.has_current() => {
                    let due = now + e;
                    if p.timers
                        .get(Timer::PersistentKeepalive)
                        .is_none_or(|t| t > due)
                    {
                        p.timers.set(Timer::PersistentKeepalive, due);
                    }
                }
                Some(_) => {}
                None => p.timers.stop(Timer::PersistentKeepalive),
            }
        }
        if self.last_nat_log.as_ref() != Some(&status) {
            log_nat(&status, self.last_nat_log.as_ref());
            self.last_nat_log = Some(status);
            self.events.push_back(Event::NatChanged(status));
        }
    }

    /// Seals a NAT message for `id`, to `to` or the endpoint.
    pub(super) fn seal_nat(
        &mut self,
        id: PeerId,
        to: Option<SocketAddr>,
        message: &Control<'_>,
        keepalive: bool,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let mtu = self.mtu;
        let peer = &mut self.peers[id];
        let destination = to.or(peer.path.endpoint())?;
        let plain = message.emit(buf.get_mut(TRANSPORT_HEADER_LEN..)?)?;
        let len = peer.keys.sending_session(now)?.seal(buf, plain, mtu).ok()?;
        if to.is_none() {
            Self::on_authenticated_sent(peer, now);
        }
        if keepalive {
            peer.stats.keepalives_sent += 1;
            trace!(peer = %peer.name, "keepalive ping sent");
        }
        Some(Transmit { destination, len })
    }
}

fn pong_timeout(rtt: Option<Duration>) -> Duration {
    rtt.map_or(PONG_TIMEOUT_MIN, |r| (r * 3).max(PONG_TIMEOUT_MIN))
}

fn log_nat(now: &NatStatus, before: Option<&NatStatus>) {
    if now.behind == Some(true)
        && (before.and_then(|b| b.behind) != Some(true)
            || before.and_then(|b| b.reflexive) != now.reflexive)
    {
        if let Some(r) = now.reflexive {
            info!(reflexive = %r, "NAT detected reflexive={r}");
        }
    }
    if now.behind == Some(false) && before.and_then(|b| b.behind) != Some(false) {
        info!("no NAT: reflexive address is local");
    }
    let changed = before.is_none_or(|b| {
        b.lifetime_at_least != now.lifetime_at_least
            || b.lifetime_below != now.lifetime_below
            || b.keepalive_interval != now.keepalive_interval
    });
    if now.behind == Some(true) && changed {
        let secs = |d: Option<Duration>| {
            d.map_or_else(|| "?".to_string(), |d| format!("{:.1}", d.as_secs_f64()))
        };
        info!(
            lifetime_at_least_s = %secs(now.lifetime_at_least),
            lifetime_below_s = %secs(now.lifetime_below),
            keepalive_s = %secs(now.keepalive_interval),
            trials = now.trials,
            "NAT mapping lifetime >= {} s (< {} s): keepalive every {} s",
            secs(now.lifetime_at_least),
            secs(now.lifetime_below),
            secs(now.keepalive_interval),
        );
    }
}

#[cfg(test)]
mod tests;
