//! The data path: moves packets in batches between the TUN device and the
//! UDP socket through the protocol device, in buffers allocated once.
//!
//! TUN reads land at offset 16 of slots of one contiguous buffer, each
//! sized for its packet (`tun_read.rs` splits offloaded super-packets), are
//! sealed in place, and consecutive datagrams of one size to one peer leave
//! in a single GSO send; received datagrams (GRO) are opened in place and
//! the inner packets are written back to the TUN device with TCP
//! coalescing. An inner packet too big for its edge is answered with an
//! ICMP "too big" written back into the TUN device (rate-limited) or
//! fragmented (IPv4 without DF); SYN and SYN-ACK MSS options are clamped
//! both ways. It also sends what the device queued between batches
//! ([`DataPath::send_queued`]), with the ICMP errors of the socket as MTU
//! hints. A TUN read or write that finds the device gone is reported
//! ([`DataPath::take_tun_gone`]), not retried.
//!
//! This file owns the buffers and the batching. It never takes protocol
//! events (`Device::poll_event` is the node's, `daemon/node.rs`), never
//! awaits anything but the TUN device and the UDP socket, and never
//! allocates per packet.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Instant;

use quinn_udp::RecvMeta;
use tracing::{debug, trace};
use tun_rs::GROTable;
use weft_protocol::packet::summarize;
use weft_protocol::wire::{TAG_LEN, TRANSPORT_HEADER_LEN};
use weft_protocol::{Decapsulated, Device, Encapsulated, PeerId, PeerPath};

use super::tun_read::{self, Fill, Slot, TunDrops, TunReader, MAX_SEGMENTS};
use crate::edges;
use crate::inner::icmp::{self, IcmpRateLimiter};
use crate::inner::{self, fragment, mss, Fit};
use crate::tun::Tun;
use crate::udp::UdpIo;

/// TUN packets read before a batch is sealed and sent (tun-rs's
/// IDEAL_BATCH_SIZE); the last read may take a batch beyond it.
const BATCH: usize = 128;
/// Datagram buffers per receive call.
const RX_BATCH: usize = 16;
/// Inner packets gathered before one coalescing TUN write.
const TUN_OUT: usize = 256;
/// Batches handled per wake-up before yielding to the other direction.
const ROUNDS: usize = 8;
/// Largest UDP payload one GSO send may carry.
const MAX_GSO_BYTES: usize = 65_000;
/// Fragments one oversized IPv4 packet may become (64 KiB at a 1280-byte
/// inner MTU needs 52).
const MAX_FRAGMENTS: usize = 64;
/// Room for an ICMP "too big" written back into the TUN device, and for an
/// IPv6 packet reassembled from pieces (both at most 1280 bytes).
const ICMP_ROOM: usize = 1280;

/// Buffers and batching of the data path; allocated once.
pub struct DataPath {
    /// Fragment slot size: header, the largest inner packet, tag.
    stride: usize,
    max_gso_segments: usize,
    reader: TunReader,
    /// The arena TUN packets are read into and sealed in.
    tx: Vec<u8>,
    /// The packets of the batch in `tx`.
    slots: Vec<Slot>,
    /// Where each slot's sealed datagram goes, and its length.
    tx_out: Vec<Option<(SocketAddr, usize)>>,
    /// Why the TUN device failed as gone, until the node takes it.
    tun_gone: Option<io::Error>,
    rx: Vec<Vec<u8>>,
    rx_meta: [RecvMeta; RX_BATCH],
    tun_out: Vec<Vec<u8>>,
    tun_out_len: usize,
    gro: GROTable,
    control: Vec<u8>,
    /// Slots for the sealed fragments of one oversized IPv4 packet.
    frag: Vec<u8>,
    frag_out: Vec<(SocketAddr, usize)>,
    icmp_limit: IcmpRateLimiter,
    /// Whether SYN and SYN-ACK MSS options are clamped.
    mss_clamp: bool,
}

impl DataPath {
    /// Buffers for an interface of `mtu` bytes, read with virtio-net
    /// headers or not (`offload`), and the batch sizes `udp` offers.
    pub fn new(mtu: usize, offload: bool, mss_clamp: bool, udp: &UdpIo) -> Self {
        let stride = TRANSPORT_HEADER_LEN + mtu + TAG_LEN;
        let rx_len = (stride * udp.gro_segments().max(1)).max(u16::MAX as usize + 1);
        Self {
            stride,
            max_gso_segments: udp.max_gso_segments().max(1),
            reader: TunReader::new(offload),
            tx: vec![0; tun_read::arena_len(BATCH, mtu)],
            slots: Vec::with_capacity(BATCH + MAX_SEGMENTS),
            tx_out: vec![None; BATCH + MAX_SEGMENTS],
            tun_gone: None,
            rx: (0..RX_BATCH).map(|_| vec![0; rx_len]).collect(),
            rx_meta: [RecvMeta::default(); RX_BATCH],
            tun_out: (0..TUN_OUT)
                .map(|_| Vec::with_capacity(TRANSPORT_HEADER_LEN + u16::MAX as usize))
                .collect(),
            tun_out_len: 0,
            gro: GROTable::default(),
            // Control messages include PMTU probes up to the largest
            // datagram, whatever the interface MTU.
            control: vec![0; u16::MAX as usize + 1],
            frag: vec![0; MAX_FRAGMENTS * stride],
            frag_out: Vec::with_capacity(MAX_FRAGMENTS),
            icmp_limit: IcmpRateLimiter::default(),
            mss_clamp,
        }
    }

    /// Sends everything the device queued (handshake messages, cookie
    /// replies, keepalives, probes, packets a handshake released), after
    /// taking the socket's ICMP errors as MTU hints.
    pub async fn send_queued(&mut self, device: &mut Device, udp: &UdpIo) {
        let now = Instant::now();
        edges::on_socket_errors(device, udp, now);
        while let Some(t) = device.poll_transmit(now, &mut self.control) {
            if let Err(e) = udp.send(t.destination, &self.control[..t.len], None).await {
                send_failed(device, t.destination, &e, now);
            }
        }
    }

    /// Reads batches from the TUN device, seals them and sends them.
    pub async fn pump_tun(&mut self, device: &mut Device, tun: &Tun, udp: &UdpIo) {
        for _ in 0..ROUNDS {
            self.slots.clear();
            let fill = {
                let device = &*device;
                self.reader
                    .fill(tun, &mut self.tx, &mut self.slots, BATCH, |p, len| {
                        slot_len(device, p, len)
                    })
            };
            let filled = self.slots.len();
            if filled == 0 {
                if let Fill::Gone(e) = fill {
                    self.tun_gone = Some(e);
                }
                break;
            }
            let now = Instant::now();
            self.frag_out.clear();
            for i in 0..filled {
                let Slot { start, cap, len } = self.slots[i];
                let slot = &mut self.tx[start..start + cap];
                // A SYN is routed once, for its MSS, and sealed for that peer.
                let routed = if self.mss_clamp {
                    clamp_mss(
                        device,
                        &mut slot[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len],
                        None,
                    )
                } else {
                    None
                };
                let sealed = match routed {
                    Some(peer) => device.encapsulate_to(now, peer, slot, len),
                    None => device.encapsulate(now, slot, len),
                };
                self.tx_out[i] = match sealed {
                    Encapsulated::Send {
                        destination, len, ..
                    } => Some((destination, len)),
                    Encapsulated::Queued { .. } => None,
                    Encapsulated::TooBig { mtu, .. } => {
                        self.fit(device, now, i, mtu);
                        None
                    }
                    Encapsulated::Dropped(reason) => {
                        trace!(reason = reason.as_str(), "outgoing packet dropped");
                        None
                    }
                };
            }
            self.send_batch(filled, device, udp).await;
            let stride = self.stride;
            for k in 0..self.frag_out.len() {
                let (destination, len) = self.frag_out[k];
                let contents = &self.frag[k * stride..k * stride + len];
                if let Err(e) = udp.send(destination, contents, None).await {
                    send_failed(device, destination, &e, now);
                }
            }
            self.flush_tun(tun).await;
            self.send_queued(device, udp).await;
            match fill {
                Fill::Full => {}
                Fill::Drained => break,
                Fill::Gone(e) => {
                    self.tun_gone = Some(e);
                    break;
                }
            }
        }
    }

    /// Takes the error with which the TUN device failed as gone (deleted
    /// under the node), if it did since the last call. The data path does
    /// not touch the device again until [`DataPath::tun_replaced`].
    pub fn take_tun_gone(&mut self) -> Option<io::Error> {
        self.tun_gone.take()
    }

    /// The TUN device was created anew, with (`offload`) or without
    /// virtio-net headers: what the old one left is given up.
    pub fn tun_replaced(&mut self, offload: bool) {
        self.reader.reset(offload);
        self.tun_out_len = 0;
        self.gro = GROTable::default();
        self.tun_gone = None;
    }

    /// TUN reads dropped before the protocol saw them.
    pub fn tun_drops(&self) -> TunDrops {
        self.reader.drops()
    }

    /// Makes the inner packet in slot `i` fit an edge of inner MTU `mtu`:
    /// an ICMP "too big" back to its sender, or IPv4 fragments.
    fn fit(&mut self, device: &mut Device, now: Instant, i: usize, mtu: u16) {
        let stride = self.stride;
        let Slot { start, len, .. } = self.slots[i];
        let start = start + TRANSPORT_HEADER_LEN;
        let packet = &self.tx[start..start + len];
        match inner::needs_fitting(packet, usize::from(mtu)) {
            Fit::TooBigDf => {
                if self.tun_out_len == TUN_OUT || !self.icmp_limit.allow(now) {
                    return;
                }
                let out = &mut self.tun_out[self.tun_out_len];
                out.clear();
                out.resize(TRANSPORT_HEADER_LEN + ICMP_ROOM, 0);
                match icmp::too_big_reply(packet, mtu, &mut out[TRANSPORT_HEADER_LEN..]) {
                    Some(n) => {
                        out.truncate(TRANSPORT_HEADER_LEN + n);
                        self.tun_out_len += 1;
                        trace!(mtu, "packet too big for the edge: ICMP written back");
                    }
                    None => out.clear(),
                }
            }
            Fit::TooBigFragmentable => {
                let (frag, out) = (&mut self.frag, &mut self.frag_out);
                let done = fragment::fragment_ipv4(packet, usize::from(mtu), |piece| {
                    let k = out.len();
                    if k == MAX_FRAGMENTS {
                        return;
                    }
                    let slot = &mut frag[k * stride..(k + 1) * stride];
                    slot[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + piece.len()]
                        .copy_from_slice(piece);
                    if let Encapsulated::Send {
                        destination, len, ..
                    } = device.encapsulate(now, slot, piece.len())
                    {
                        out.push((destination, len));
                    }
                });
                if !done {
                    trace!("oversized packet could not be fragmented");
                }
            }
            Fit::Fits | Fit::Malformed => {}
        }
    }

    /// Sends sealed slots; a run of datagrams of one size to one peer (the
    /// last may be shorter) is moved together and leaves as one GSO send.
    async fn send_batch(&mut self, filled: usize, device: &mut Device, udp: &UdpIo) {
        let mut i = 0;
        while i < filled {
            let Some((destination, len)) = self.tx_out[i] else {
                i += 1;
                continue;
            };
            let max_run = self.max_gso_segments.min(MAX_GSO_BYTES / len.max(1)).max(1);
            let base = self.slots[i].start;
            let (mut end, mut total) = (i + 1, len);
            while end < filled && end - i < max_run {
                match self.tx_out[end] {
                    Some((d, l)) if d == destination && l <= len => {
                        // Slots lie in order and each is at least as long as
                        // its datagram, so this never moves over one not yet
                        // moved.
                        let from = self.slots[end].start;
                        self.tx.copy_within(from..from + l, base + total);
                        total += l;
                        end += 1;
                        if l < len {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            let contents = &self.tx[base..base + total];
            let segment = (end - i > 1).then_some(len);
            if let Err(e) = udp.send(destination, contents, segment).await {
                send_failed(device, destination, &e, Instant::now());
            }
            i = end;
        }
    }

    /// Receives datagram batches, opens them and writes inner packets to
    /// the TUN device.
    pub async fn pump_udp(&mut self, device: &mut Device, tun: &Tun, udp: &UdpIo) {
        for _ in 0..ROUNDS {
            let n = {
                let mut slices: [IoSliceMut<'_>; RX_BATCH] = {
                    let mut it = self.rx.iter_mut();
                    // `rx` holds exactly RX_BATCH buffers.
                    std::array::from_fn(|_| IoSliceMut::new(it.next().expect("RX_BATCH buffers")))
                };
                match udp.try_recv(&mut slices, &mut self.rx_meta) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "UDP receive failed");
                        break;
                    }
                }
            };
            let now = Instant::now();
            for i in 0..n {
                let meta = self.rx_meta[i];
                let stride = meta.stride.max(1);
                let mut start = 0;
                while start < meta.len {
                    let end = (start + stride).min(meta.len);
                    let datagram = &mut self.rx[i][start..end];
                    start = end;
                    match device.decapsulate(now, meta.addr, datagram) {
                        Decapsulated::Tun { offset, len, peer } => {
                            let packet = &mut datagram[offset..offset + len];
                            if self.mss_clamp {
                                clamp_mss(device, packet, Some(peer));
                            }
                            let out = &mut self.tun_out[self.tun_out_len];
                            out.clear();
                            out.extend_from_slice(&[0; TRANSPORT_HEADER_LEN]);
                            out.extend_from_slice(packet);
                            self.tun_out_len += 1;
                            if self.tun_out_len == TUN_OUT {
                                self.flush_tun(tun).await;
                            }
                        }
                        Decapsulated::Consumed => {}
                        Decapsulated::Dropped(reason) => {
                            trace!(from = %meta.addr, reason = reason.as_str(), "datagram dropped");
                        }
                    }
                }
            }
            self.take_reassembled(device, tun).await;
            self.flush_tun(tun).await;
            self.send_queued(device, udp).await;
            if n < RX_BATCH {
                break;
            }
        }
    }

    /// Queues inner packets the device reassembled from pieces.
    async fn take_reassembled(&mut self, device: &mut Device, tun: &Tun) {
        loop {
            if self.tun_out_len == TUN_OUT {
                self.flush_tun(tun).await;
            }
            let out = &mut self.tun_out[self.tun_out_len];
            out.clear();
            out.resize(TRANSPORT_HEADER_LEN + ICMP_ROOM, 0);
            match device.poll_reassembled(&mut out[TRANSPORT_HEADER_LEN..]) {
                Some((peer, len)) => {
                    out.truncate(TRANSPORT_HEADER_LEN + len);
                    if self.mss_clamp {
                        clamp_mss(device, &mut out[TRANSPORT_HEADER_LEN..], Some(peer));
                    }
                    self.tun_out_len += 1;
                }
                None => {
                    out.clear();
                    return;
                }
            }
        }
    }

    async fn flush_tun(&mut self, tun: &Tun) {
        if self.tun_out_len == 0 {
            return;
        }
        let n = self.tun_out_len;
        self.tun_out_len = 0;
        if let Err(e) = tun
            .dev
            .send_multiple(&mut self.gro, &mut self.tun_out[..n], TRANSPORT_HEADER_LEN)
            .await
        {
            if tun_read::gone(&e) {
                self.tun_gone.get_or_insert(e);
            } else {
                debug!(error = %e, "TUN write failed");
            }
        }
    }
}

/// The slots for the segments (`len` bytes each) of a super-packet
/// `packet`: for a peer reached directly, exactly the datagram a full
/// segment is sealed into (header, the inner packet padded as
/// `Device::encapsulate` pads it for the peer's edge, tag), so the sealed
/// segments lie end to end and leave in one GSO send without being moved;
/// otherwise room for a relay's wrapping too. The super-packet is routed
/// once for all its segments. (A peer the device turns to its relay while
/// sealing such a batch loses that batch's segments as `too_big`; the
/// next read is carved for the relay.)
fn slot_len(device: &Device, packet: &[u8], len: usize) -> usize {
    let direct = summarize(packet)
        .and_then(|s| device.route(s.dst))
        .filter(|&peer| matches!(device.peer_path(peer), Some(PeerPath::Direct(Some(_)))));
    match direct {
        Some(peer) => {
            let padded = len
                .next_multiple_of(16)
                .min(device.inner_mtu(peer).max(len));
            TRANSPORT_HEADER_LEN + padded + TAG_LEN
        }
        None => tun_read::room(len),
    }
}

/// Clamps the MSS of a SYN or SYN-ACK crossing the tunnel to what the edge
/// carries: toward the peer its destination routes to (outgoing), or from
/// `peer` (incoming). The packet is read once; only a SYN is routed, and
/// the peer it routes to is returned, so the SYN is not routed again.
fn clamp_mss(device: &Device, packet: &mut [u8], peer: Option<PeerId>) -> Option<PeerId> {
    let syn = mss::find_syn(packet)?;
    let peer = peer.or_else(|| device.route(syn.destination))?;
    mss::clamp(packet, syn, syn.mss_for(device.inner_mtu(peer)));
    Some(peer)
}

/// A send failed: with EMSGSIZE the datagram was larger than the local MTU
/// toward `destination`, and the kernel says how large it may be.
fn send_failed(device: &mut Device, destination: SocketAddr, e: &io::Error, now: Instant) {
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        edges::refresh_hints(device, now);
    } else {
        debug!(%destination, error = %e, "send failed");
    }
}
