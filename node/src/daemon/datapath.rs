//! The data path: moves packets in batches between the TUN device and the
//! UDP socket through the protocol device, in buffers allocated once.
//!
//! TUN reads land at offset 16 of fixed-stride slots of one contiguous
//! buffer, are sealed in place, and consecutive full-size datagrams to one
//! peer leave in a single GSO send; received datagrams (GRO) are opened in
//! place and the inner packets are written back to the TUN device with TCP
//! coalescing. An inner packet too big for its edge is answered with an
//! ICMP "too big" written back into the TUN device (rate-limited) or
//! fragmented (IPv4 without DF); SYN and SYN-ACK MSS options are clamped
//! both ways. It also sends what the device queued between batches
//! ([`DataPath::send_queued`]), with the ICMP errors of the socket as MTU
//! hints.
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
use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};
use weft_protocol::wire::{TAG_LEN, TRANSPORT_HEADER_LEN};
use weft_protocol::{Decapsulated, Device, Encapsulated, PeerId};

use crate::edges;
use crate::inner::icmp::{self, IcmpRateLimiter};
use crate::inner::{self, fragment, mss, Fit};
use crate::tun::Tun;
use crate::udp::UdpIo;

/// TUN packets handled per batch (tun-rs's IDEAL_BATCH_SIZE).
const BATCH: usize = 128;
/// Room one offloaded TUN read may need: a 64 KiB super-packet of
/// 1280-byte segments.
const MAX_SPLIT: usize = 64;
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
    /// Slot size: header, the largest inner packet, tag.
    stride: usize,
    max_gso_segments: usize,
    tun_original: Vec<u8>,
    tx: Vec<u8>,
    tx_sizes: [usize; BATCH],
    tx_out: [Option<(SocketAddr, usize)>; BATCH],
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
    /// Buffers for an interface of `mtu` bytes and the batch sizes `udp`
    /// offers.
    pub fn new(mtu: usize, mss_clamp: bool, udp: &UdpIo) -> Self {
        let stride = TRANSPORT_HEADER_LEN + mtu + TAG_LEN;
        let rx_len = (stride * udp.gro_segments().max(1)).max(u16::MAX as usize + 1);
        Self {
            stride,
            max_gso_segments: udp.max_gso_segments().max(1),
            tun_original: vec![0; VIRTIO_NET_HDR_LEN + u16::MAX as usize],
            tx: vec![0; BATCH * stride],
            tx_sizes: [0; BATCH],
            tx_out: [None; BATCH],
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
            let filled = self.read_tun_batch(tun);
            if filled == 0 {
                break;
            }
            let now = Instant::now();
            let stride = self.stride;
            self.frag_out.clear();
            for i in 0..filled {
                let len = self.tx_sizes[i];
                let slot = &mut self.tx[i * stride..(i + 1) * stride];
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
            for k in 0..self.frag_out.len() {
                let (destination, len) = self.frag_out[k];
                let contents = &self.frag[k * stride..k * stride + len];
                if let Err(e) = udp.send(destination, contents, None).await {
                    send_failed(device, destination, &e, now);
                }
            }
            self.flush_tun(tun).await;
            self.send_queued(device, udp).await;
            if filled < BATCH - MAX_SPLIT {
                break;
            }
        }
    }

    /// Makes the inner packet in slot `i` fit an edge of inner MTU `mtu`:
    /// an ICMP "too big" back to its sender, or IPv4 fragments.
    fn fit(&mut self, device: &mut Device, now: Instant, i: usize, mtu: u16) {
        let stride = self.stride;
        let len = self.tx_sizes[i];
        let start = i * stride + TRANSPORT_HEADER_LEN;
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

    /// Fills TUN slots until the device is drained or the batch is full.
    fn read_tun_batch(&mut self, tun: &Tun) -> usize {
        let stride = self.stride;
        let mut slots: [&mut [u8]; BATCH] = {
            let mut it = self.tx.chunks_exact_mut(stride);
            // `tx` holds exactly BATCH slots of `stride` bytes.
            std::array::from_fn(|_| it.next().expect("BATCH slots"))
        };
        let mut filled = 0;
        while BATCH - filled >= MAX_SPLIT {
            match tun.dev.try_recv_multiple(
                &mut self.tun_original,
                &mut slots[filled..],
                &mut self.tx_sizes[filled..],
                TRANSPORT_HEADER_LEN,
            ) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "TUN read failed");
                    break;
                }
            }
        }
        filled
    }

    /// Sends sealed slots, runs of full-size datagrams to one peer as one
    /// GSO send.
    async fn send_batch(&mut self, filled: usize, device: &mut Device, udp: &UdpIo) {
        let stride = self.stride;
        let max_run = self.max_gso_segments.min(MAX_GSO_BYTES / stride).max(1);
        let mut i = 0;
        while i < filled {
            let Some((destination, len)) = self.tx_out[i] else {
                i += 1;
                continue;
            };
            let mut last = (i, len);
            while last.0 + 1 < filled && last.0 + 1 - i < max_run && last.1 == stride {
                match self.tx_out[last.0 + 1] {
                    Some((d, l)) if d == destination => last = (last.0 + 1, l),
                    _ => break,
                }
            }
            let contents = &self.tx[i * stride..last.0 * stride + last.1];
            let segment = (last.0 > i).then_some(stride);
            if let Err(e) = udp.send(destination, contents, segment).await {
                send_failed(device, destination, &e, Instant::now());
            }
            i = last.0 + 1;
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
            debug!(error = %e, "TUN write failed");
        }
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
