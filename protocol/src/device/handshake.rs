//! The device's handshake paths: starting and retransmitting initiations,
//! answering them, and taking responses and cookie replies.
//!
//! Order of checks on every incoming handshake message: mac1 (one hash;
//! a message that fails it is dropped and never counted toward load), then
//! the load check, and under load mac2 (or a cookie reply) and the
//! source's token bucket ([`crate::ratelimit`]), and only then any
//! Diffie-Hellman. Nothing about a peer changes until its message has been
//! authenticated. A cookie reply to our pending initiation is answered at
//! once with a fresh initiation carrying mac2, once per initiation the
//! retransmission timer sent, so forged cookie replies cannot make it spin.
//!
//! This module owns the device's side: indices, randomness, cookies, the
//! retransmission timer and the messages queued. The sessions and the
//! handshake state are the peer's ([`crate::peer::keys`]) and change only
//! through its methods; completion is handled in one place,
//! `Device::handshake_completed`. It never decides a peer's path (it asks
//! `device/relay.rs`) and never sends a message it has not authenticated
//! the need for.

use std::time::{Duration, Instant};

use rand_chacha::rand_core::RngCore;
use tracing::{debug, trace};

use super::{Decapsulated, Device, Outgoing};
use crate::noise;
use crate::peer::path::Hop;
use crate::peer::{Initiated, PeerId};
use crate::session::Session;
use crate::timers::{Timer, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX};
use crate::wire::{self, field, CookieReply, Initiation, Response, INITIATION_LEN, RESPONSE_LEN};
use crate::DropReason;

impl Device {
    /// Sends an initiation to `id`, unless one went out less than
    /// REKEY_TIMEOUT ago (`retry` is the retransmission timer, which may).
    pub(super) fn start_handshake(&mut self, id: PeerId, now: Instant, retry: bool) {
        self.send_initiation(id, now, retry, false);
    }

    /// [`Device::start_handshake`]; `after_cookie` marks the initiation as
    /// the immediate answer to a cookie reply, which gets none of its own.
    fn send_initiation(&mut self, id: PeerId, now: Instant, retry: bool, after_cookie: bool) {
        let peer = &self.peers[id];
        if !retry && peer.keys.initiated_recently(now) {
            return;
        }
        let direct = peer.path.endpoint();
        if !peer.path.reachable() && !self.use_relay(id, now) {
            trace!(peer = %self.peer_name(id), "no endpoint to send a handshake to");
            return;
        }
        let peer = &self.peers[id];
        let relayed = peer.path.via().map(|relay| Hop::Relayed {
            relay,
            peer: peer.public_key,
        });
        let (remote, psk) = (peer.public_key, peer.psk.clone());
        let timestamp = self.timestamp(now);
        let seed = self.seed();
        let local_index = self.new_index(id);
        let mut msg = [0u8; INITIATION_LEN];
        wire::write_initiation_header(&mut msg, local_index);
        let mut noise_msg = [0u8; wire::INITIATION_NOISE_LEN];
        let pending =
            match noise::initiate(&self.secret, &remote, &psk, timestamp, seed, &mut noise_msg) {
                Ok(p) => p,
                Err(e) => {
                    // Only a malformed local key can get here.
                    debug!(error = ?e, "could not build an initiation");
                    self.indices.release(local_index);
                    return;
                }
            };
        msg[field::initiation::NOISE].copy_from_slice(&noise_msg);
        let jitter = Duration::from_millis(
            u64::from(self.rng.next_u32()) % (REKEY_TIMEOUT_JITTER_MAX.as_millis() as u64 + 1),
        );
        let peer = &mut self.peers[id];
        peer.cookie.seal(&mut msg, now);
        let initiated = Initiated {
            pending,
            local_index,
            after_cookie,
        };
        self.indices
            .release_all(peer.keys.initiation_sent(initiated, now));
        peer.stats.initiations_sent += 1;
        peer.timers
            .set(Timer::RetransmitHandshake, now + REKEY_TIMEOUT + jitter);
        Self::on_authenticated_sent(peer, now);
        debug!(peer = %peer.name, ?direct, ?relayed, "sending handshake initiation");
        // While relayed, the same initiation also tries the direct path:
        // whichever copy arrives first is answered, the other is a replay.
        for hop in [direct.map(Hop::Direct), relayed].into_iter().flatten() {
            self.outgoing.push_back(Outgoing::Initiation(hop, msg));
        }
    }

    /// Runs the checks before any Diffie-Hellman: mac1; then, if the
    /// device is under load, mac2 (without it, queues a cookie reply) and
    /// the source's token bucket.
    fn check_macs(
        &mut self,
        now: Instant,
        hop: Hop,
        msg: &[u8],
        sender: u32,
    ) -> Result<(), DropReason> {
        if !self.checker.check_mac1(msg) {
            return Err(DropReason::BadMac);
        }
        // Only now does the message count toward load: junk costs one hash
        // and never makes the node demand cookies from honest peers.
        if !self.load.count(now, self.under_load_threshold) {
            return Ok(());
        }
        let from = self.hop_address(hop);
        if !self.checker.check_mac2(msg, from, now, &mut self.rng) {
            let reply = self.checker.reply(msg, sender, from, now, &mut self.rng);
            self.outgoing.push_back(Outgoing::CookieReply(hop, reply));
            self.stats.cookie_replies_sent += 1;
            return Err(DropReason::UnderLoad);
        }
        if !self.limiter.allow(from.ip(), now) {
            trace!(?hop, "handshake over its source's budget under load");
            return Err(DropReason::UnderLoad);
        }
        Ok(())
    }

    pub(super) fn handle_initiation(
        &mut self,
        now: Instant,
        hop: Hop,
        m: Initiation<'_>,
    ) -> Result<Decapsulated, DropReason> {
        self.check_macs(now, hop, m.bytes(), m.sender())?;
        let seed = self.seed();
        self.stats.handshake_dh += 1;
        let received = noise::receive_initiation(&self.secret, seed, m.noise())
            .map_err(|_| DropReason::HandshakeFailed)?;
        let id = *self
            .by_key
            .get(&received.remote)
            .ok_or(DropReason::UnknownPeer)?;
        if !self.hop_matches(id, hop) {
            return Err(DropReason::RelayRefused);
        }
        let peer = &self.peers[id];
        if let Err(reason) = peer.keys.check_initiation(received.timestamp, now) {
            if reason == DropReason::Replay {
                debug!(peer = %peer.name, "refusing a replayed handshake initiation");
            }
            return Err(reason);
        }
        let psk = peer.psk.clone();
        let timestamp = received.timestamp;
        let mut noise_msg = [0u8; wire::RESPONSE_NOISE_LEN];
        let keys = received
            .respond(&psk, &mut noise_msg)
            .map_err(|_| DropReason::HandshakeFailed)?;
        let local_index = self.new_index(id);
        let session = Session::new(&keys, local_index, m.sender(), false, now);
        let mut msg = [0u8; RESPONSE_LEN];
        wire::write_response_header(&mut msg, local_index, m.sender());
        msg[field::response::NOISE].copy_from_slice(&noise_msg);
        let peer = &mut self.peers[id];
        peer.cookie.seal(&mut msg, now);
        self.indices
            .release_all(peer.keys.answered(session, timestamp, now));
        self.arrived(id, hop, now);
        let peer = &mut self.peers[id];
        peer.timers
            .set(Timer::ZeroKeys, now + 3 * REJECT_AFTER_TIME);
        Self::on_authenticated_received(peer, now);
        Self::on_authenticated_sent(peer, now);
        debug!(peer = %peer.name, ?hop, "answering handshake initiation");
        self.outgoing.push_back(Outgoing::Response(hop, msg));
        Ok(Decapsulated::Consumed)
    }

    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        hop: Hop,
        m: Response<'_>,
    ) -> Result<Decapsulated, DropReason> {
        self.check_macs(now, hop, m.bytes(), m.sender())?;
        let receiver = m.receiver();
        let id = self.sender_of(receiver, hop)?;
        let finished = self.peers[id]
            .keys
            .finish_initiation(receiver, m.noise(), now);
        // Only a response to our pending initiation reaches Diffie-Hellman.
        if !matches!(finished, Err(DropReason::UnknownIndex)) {
            self.stats.handshake_dh += 1;
        }
        let keys = finished?;
        // Authenticated: the handshake is done.
        let session = Session::new(&keys, receiver, m.sender(), true, now);
        self.install_session(id, session, now);
        self.arrived(id, hop, now);
        Self::on_authenticated_received(&mut self.peers[id], now);
        self.handshake_completed(id, true, now);
        Ok(Decapsulated::Consumed)
    }

    pub(super) fn handle_cookie_reply(
        &mut self,
        now: Instant,
        hop: Hop,
        m: CookieReply<'_>,
    ) -> Result<Decapsulated, DropReason> {
        let receiver = m.receiver();
        let id = self.sender_of(receiver, hop)?;
        let peer = &mut self.peers[id];
        peer.cookie
            .receive(m.nonce(), m.encrypted_cookie(), now)
            .map_err(|_| DropReason::Decrypt)?;
        // The cookie answers our pending initiation: retry at once with
        // mac2 rather than after REKEY_TIMEOUT. Not if that initiation was
        // itself such a retry, so a forged reply cannot make us spin.
        let retry = peer.keys.retries_after_cookie(receiver);
        debug!(peer = %peer.name, retry, "cookie received; the peer is under load");
        if retry {
            self.send_initiation(id, now, true, true);
        }
        Ok(Decapsulated::Consumed)
    }
}
