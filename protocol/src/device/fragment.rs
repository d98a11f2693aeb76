//! Sending inner packets in pieces, and taking pieces from peers.
//!
//! An edge whose inner MTU is below IPv6's 1280-byte minimum carries IPv6
//! packets of up to 1280 bytes as up to `MAX_PIECES` transport messages,
//! each a piece (`0x03`, [`crate::wire::control::Fragment`]); the receiver
//! reassembles the packet (`crate::peer::reassembly`, which says which
//! packets travel in pieces) before any inner-packet check runs. Anything
//! larger still gets a packet-too-big from the node, and IPv4 is fragmented
//! by the node at the IP layer.
//!
//! This module owns the device's side only: numbering and queueing the
//! pieces we send, and checking a reassembled packet like any inner packet
//! (source allowed for the peer) before handing it to the caller. It never
//! keeps pieces itself, and only pieces from authenticated messages of a
//! peer reach that peer's buffers.

use std::time::Instant;

use tracing::trace;

use super::{Device, Outgoing};
use crate::packet;
use crate::peer::PeerId;
use crate::wire::control::{Control, Fragment, FRAGMENT_HEADER_LEN};
use crate::DropReason;

impl Device {
    /// Queues `packet` for `id` as pieces that fit inner MTU `mtu`.
    pub(super) fn send_in_pieces(&mut self, id: PeerId, packet: &[u8], mtu: usize) {
        let room = mtu - FRAGMENT_HEADER_LEN;
        let count = packet.len().div_ceil(room);
        let frag_id = self.next_fragment_id;
        self.next_fragment_id = self.next_fragment_id.wrapping_add(1);
        for (index, chunk) in packet.chunks(room).enumerate() {
            // At most MAX_PIECES: `wants_pieces` said so.
            let piece = Control::Fragment(Fragment {
                id: frag_id,
                index: index as u8,
                count: count as u8,
                payload: chunk,
            });
            self.outgoing.push_back(Outgoing::Piece(id, piece.to_vec()));
        }
        trace!(peer = %self.peer_name(id), len = packet.len(), count, "inner packet sent in pieces");
    }

    /// Takes a piece from `id`; once a packet is whole, checks it like any
    /// inner packet and queues it for [`Device::poll_reassembled`].
    pub(super) fn receive_piece(
        &mut self,
        id: PeerId,
        piece: Fragment<'_>,
        now: Instant,
    ) -> Result<(), DropReason> {
        let Some(whole) = self.peers[id].reassembly.add(piece, now)? else {
            return Ok(());
        };
        let summary = packet::summarize(&whole).ok_or(DropReason::MalformedInner)?;
        if self.route(summary.src) != Some(id) {
            return Err(DropReason::SourceNotAllowed);
        }
        let peer = &mut self.peers[id];
        peer.stats.rx_bytes += summary.len as u64;
        peer.stats.rx_packets += 1;
        let mut whole = whole;
        whole.truncate(summary.len);
        self.reassembled.push_back((id, whole));
        Ok(())
    }

    /// The next inner packet reassembled from pieces: copied into `buf`,
    /// with the peer it came from and its length. Drain it after
    /// [`Device::decapsulate`] returns [`super::Decapsulated::Consumed`].
    pub fn poll_reassembled(&mut self, buf: &mut [u8]) -> Option<(PeerId, usize)> {
        loop {
            let (id, packet) = self.reassembled.pop_front()?;
            if let Some(out) = buf.get_mut(..packet.len()) {
                out.copy_from_slice(&packet);
                return Some((id, packet.len()));
            }
            self.stats.count_drop(DropReason::TooBig);
        }
    }
}
