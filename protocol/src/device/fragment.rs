//! Carrying IPv6 packets of up to 1280 bytes over edges whose inner MTU is
//! smaller.
//!
//! IPv6 promises every link carries 1280-byte packets (RFC 8200 §5), so a
//! sender told "packet too big" never goes below 1280. An edge whose path MTU
//! leaves less than 1280 bytes of inner MTU (a path under 1340 bytes over
//! IPv4, 1360 over IPv6) must therefore carry such packets in pieces, as RFC
//! 8200 asks of any link with a smaller MTU. weft splits the inner packet
//! across up to [`MAX_PIECES`] transport messages, each a piece (`0x03`,
//! [`crate::wire::control::Fragment`]), and the receiver reassembles it
//! before any inner-packet check runs. Only IPv6 packets of at
//! most 1280 bytes take this path; anything larger still gets a packet-too-big
//! from the node, and IPv4 is fragmented by the node at the IP layer.
//!
//! Reassembly is bounded: a few packets per peer at once, pieces older than
//! [`REASSEMBLY_TIMEOUT`] are dropped, and only authenticated messages from
//! that peer can add to its buffers.

use std::time::{Duration, Instant};

use tracing::trace;

use super::{Device, Outgoing};
use crate::packet;
use crate::peer::PeerId;
use crate::wire::control::{Control, Fragment, FRAGMENT_HEADER_LEN, MAX_PIECES};
use crate::DropReason;
/// IPv6's minimum link MTU, the largest packet carried in pieces.
pub const IPV6_MIN_MTU: usize = 1280;
/// Pieces wait this long for the rest of their packet.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Packets being reassembled per peer at once; the oldest is dropped.
const PARTIALS_PER_PEER: usize = 8;

/// A packet being reassembled.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    id: u32,
    count: u8,
    pieces: [Option<Vec<u8>>; MAX_PIECES],
    started: Instant,
}

/// Whether an inner packet of `len` bytes on an edge of inner MTU `mtu`
/// travels in pieces.
pub(super) fn wants_pieces(packet: &[u8], mtu: usize) -> bool {
    let len = packet.len();
    packet.first().is_some_and(|b| b >> 4 == 6)
        && len <= IPV6_MIN_MTU
        && mtu < IPV6_MIN_MTU
        && mtu > FRAGMENT_HEADER_LEN
        && len.div_ceil(mtu - FRAGMENT_HEADER_LEN) <= MAX_PIECES
}

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
        trace!(peer = %self.peers[id].name, len = packet.len(), count, "inner packet sent in pieces");
    }

    /// Takes a piece from `id`; once a packet is whole, checks it like any
    /// inner packet and queues it for [`Device::poll_reassembled`].
    pub(super) fn receive_piece(
        &mut self,
        id: PeerId,
        piece: Fragment<'_>,
        now: Instant,
    ) -> Result<(), DropReason> {
        let Fragment {
            id: frag_id,
            index,
            count,
            payload,
        } = piece;
        let peer = &mut self.peers[id];
        peer.partials
            .retain(|p| now.saturating_duration_since(p.started) < REASSEMBLY_TIMEOUT);
        let pos = match peer.partials.iter().position(|p| p.id == frag_id) {
            Some(i) if peer.partials[i].count == count => i,
            Some(_) => return Err(DropReason::MalformedInner),
            None => {
                if peer.partials.len() == PARTIALS_PER_PEER {
                    peer.partials.remove(0);
                }
                peer.partials.push(Partial {
                    id: frag_id,
                    count,
                    pieces: Default::default(),
                    started: now,
                });
                peer.partials.len() - 1
            }
        };
        let partial = &mut peer.partials[pos];
        partial.pieces[usize::from(index)] = Some(payload.to_vec());
        if partial.pieces[..usize::from(count)]
            .iter()
            .any(Option::is_none)
        {
            return Ok(());
        }
        let partial = peer.partials.remove(pos);
        let whole: Vec<u8> = partial.pieces.into_iter().flatten().flatten().collect();
        if whole.len() > IPV6_MIN_MTU {
            return Err(DropReason::MalformedInner);
        }
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
