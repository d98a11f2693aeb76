//! A peer's inner packets arriving in pieces, and the rule for which
//! packets travel in pieces.
//!
//! IPv6 promises every link carries 1280-byte packets (RFC 8200 §5), so an
//! edge whose inner MTU is below that carries IPv6 packets of up to 1280
//! bytes as pieces (`device/fragment.rs` sends and takes them). This module
//! keeps the pieces of one peer until a packet is whole. Reassembly is
//! bounded: [`PARTIALS_PER_PEER`] packets at once, pieces older than
//! [`REASSEMBLY_TIMEOUT`] dropped. It never checks the whole packet's
//! addresses (the device does, like any inner packet's) and only ever sees
//! pieces from authenticated messages of its peer.

use std::time::{Duration, Instant};

use crate::wire::control::{Fragment, FRAGMENT_HEADER_LEN, MAX_PIECES};
use crate::DropReason;

/// IPv6's minimum link MTU, the largest packet carried in pieces.
pub const IPV6_MIN_MTU: usize = 1280;
/// Pieces wait this long for the rest of their packet.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Packets being reassembled per peer at once; the oldest is dropped.
pub const PARTIALS_PER_PEER: usize = 8;

/// Whether an inner packet on an edge of inner MTU `mtu` travels in
/// pieces.
pub fn wants_pieces(packet: &[u8], mtu: usize) -> bool {
    let len = packet.len();
    packet.first().is_some_and(|b| b >> 4 == 6)
        && len <= IPV6_MIN_MTU
        && mtu < IPV6_MIN_MTU
        && mtu > FRAGMENT_HEADER_LEN
        && len.div_ceil(mtu - FRAGMENT_HEADER_LEN) <= MAX_PIECES
}

/// A packet being reassembled.
#[derive(Debug, Clone)]
struct Partial {
    id: u32,
    count: u8,
    pieces: [Option<Vec<u8>>; MAX_PIECES],
    started: Instant,
}

/// The packets of one peer being reassembled.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partials: Vec<Partial>,
}

impl Reassembly {
    /// Takes `piece`. Returns the whole packet once its last piece arrived
    /// (at most [`IPV6_MIN_MTU`] bytes, not yet checked as an IP packet).
    pub fn add(
        &mut self,
        piece: Fragment<'_>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, DropReason> {
        let Fragment {
            id,
            index,
            count,
            payload,
        } = piece;
        let partials = &mut self.partials;
        partials.retain(|p| now.saturating_duration_since(p.started) < REASSEMBLY_TIMEOUT);
        let pos = match partials.iter().position(|p| p.id == id) {
            Some(i) if partials[i].count == count => i,
            Some(_) => return Err(DropReason::MalformedInner),
            None => {
                if partials.len() == PARTIALS_PER_PEER {
                    partials.remove(0);
                }
                partials.push(Partial {
                    id,
                    count,
                    pieces: Default::default(),
                    started: now,
                });
                partials.len() - 1
            }
        };
        let partial = &mut partials[pos];
        partial.pieces[usize::from(index)] = Some(payload.to_vec());
        if partial.pieces[..usize::from(count)]
            .iter()
            .any(Option::is_none)
        {
            return Ok(None);
        }
        let partial = partials.remove(pos);
        let whole: Vec<u8> = partial.pieces.into_iter().flatten().flatten().collect();
        if whole.len() > IPV6_MIN_MTU {
            return Err(DropReason::MalformedInner);
        }
        Ok(Some(whole))
    }
}
