//! The device's side of control messages: the one place an authenticated
//! control plaintext is parsed and handed to the feature it belongs to, and
//! the sealing of control plaintexts the device sends.
//!
//! The formats are [`crate::wire::control`]'s. What each message does is
//! its feature's: path-MTU probes in `path.rs`, pieces in `fragment.rs`,
//! NAT messages in `nat.rs`, relaying and punching in `relay.rs`. This
//! module decides only which one is asked, and never changes a feature's
//! state itself.

use std::time::Instant;

use tracing::trace;

use super::{Decapsulated, Device, Outgoing, Transmit};
use crate::peer::path::Hop;
use crate::peer::PeerId;
use crate::wire::control::{Control, ProbeAck};
use crate::wire::TRANSPORT_HEADER_LEN;
use crate::DropReason;

impl Device {
    /// Handles the authenticated control message from `id` that arrived by
    /// `hop`, whose plaintext (padding included) is
    /// `buf[TRANSPORT_HEADER_LEN..][..plain]`; `buf` is the whole datagram.
    pub(super) fn handle_control(
        &mut self,
        id: PeerId,
        hop: Hop,
        now: Instant,
        buf: &mut [u8],
        plain: usize,
    ) -> Result<Decapsulated, DropReason> {
        let datagram_len = buf.len();
        let start = TRANSPORT_HEADER_LEN;
        let message = Control::parse(&buf[start..start + plain]).map_err(|e| {
            trace!(peer = %self.peer_name(id), error = %e, "malformed control message");
            DropReason::MalformedInner
        })?;
        match message {
            Control::Probe(probe) => {
                // The acknowledgement reports what arrived, so the sender
                // knows the whole probe passed.
                let received = u16::try_from(datagram_len).unwrap_or(u16::MAX);
                let ack = ProbeAck {
                    id: probe.id,
                    received,
                };
                self.outgoing.push_back(Outgoing::ProbeAck(id, ack));
            }
            Control::ProbeAck(ack) => self.on_probe_ack(id, ack, now),
            Control::Fragment(piece) => self.receive_piece(id, piece, now)?,
            Control::Ping(ping) => self.answer_ping(id, ping),
            Control::Pong(pong) => self.on_pong(id, pong, now),
            Control::BindingOpen(open) => {
                // Binding opens are about a direct path; one that came
                // through a relay is refused.
                let Hop::Direct(from) = hop else {
                    return Err(DropReason::RelayRefused);
                };
                self.handle_binding_open(id, now, from, open);
            }
            // Acknowledgements and binding pings belong on probe sockets
            // (`Device::handle_probe_datagram`); a copy on the main path is
            // authenticated but means nothing.
            Control::BindingAck(_) | Control::BindingPing(_) => {}
            Control::BindingCheck(check) => self.on_binding_check(id, check, now),
            Control::RelayRequest(request) => return self.forward(id, hop, request, now),
            Control::Relayed(relayed) => {
                let sender = relayed.key;
                return self.take_relayed(id, hop, sender, buf, plain, now);
            }
            Control::PunchOffer(offer) => self.take_offer(id, offer, now)?,
            Control::Punch => {
                trace!(peer = %self.peer_name(id), ?hop, "punch received");
            }
        }
        Ok(Decapsulated::Consumed)
    }

    /// Seals `message` for `id` on its path, padded up to `max_padded`, and
    /// runs the timers of an authenticated send.
    pub(super) fn seal_control(
        &mut self,
        id: PeerId,
        message: &Control<'_>,
        max_padded: usize,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let len = message.emit(buf.get_mut(TRANSPORT_HEADER_LEN..)?)?;
        self.seal_in_place(id, len, max_padded, false, now, buf)
    }

    /// Seals the encoded control plaintext `plain` for `id` on its path,
    /// unpadded, and runs the timers of a data send if `data` (a piece of
    /// an inner packet), else of an authenticated send.
    pub(super) fn seal_bytes(
        &mut self,
        id: PeerId,
        plain: &[u8],
        data: bool,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let body = buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + plain.len())?;
        body.copy_from_slice(plain);
        self.seal_in_place(id, plain.len(), plain.len(), data, now, buf)
    }

    /// Seals `plain` for `id` exactly as given (unpadded) to its endpoint:
    /// for the fuzzing harness, which plays a peer that sends any plaintext.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn seal_as_given(
        &mut self,
        id: PeerId,
        plain: &[u8],
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let destination = self.peers.get(id)?.path.endpoint()?;
        self.seal_direct(id, plain, destination, now, buf)
    }

    /// Seals the plaintext already at `buf[TRANSPORT_HEADER_LEN..][..len]`
    /// for `id` (padded up to `max_padded`) and sends it on the peer's path.
    fn seal_in_place(
        &mut self,
        id: PeerId,
        len: usize,
        max_padded: usize,
        data: bool,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        if !self.reachable(id) {
            return None;
        }
        let peer = &mut self.peers[id];
        let n = peer
            .keys
            .sending_session(now)?
            .seal(buf, len, max_padded)
            .ok()?;
        if data {
            Self::on_data_sent(peer, now);
        } else {
            Self::on_authenticated_sent(peer, now);
        }
        self.dispatch(id, buf, n, now)
    }
}

#[cfg(test)]
mod tests;
