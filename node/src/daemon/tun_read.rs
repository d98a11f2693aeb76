//! Reading the TUN device into the data path's slots, each sized for the
//! packet it holds.
//!
//! With virtio-net offload one read returns a TCP (or UDP) super-packet of
//! up to 64 KiB with the segment size the kernel chose (`gso_size`, the
//! connection's MSS). It is split here into one inner packet per segment,
//! each in a slot of one contiguous buffer (the *arena*) with room for the
//! transport header, the padding, the tag and a relay wrapping around it.
//! The read is taken first and the slots carved after, from what the read
//! says: a super-packet of 36-byte segments takes ~1,800 small slots, one of
//! 1,380-byte segments ~48 large ones, and neither costs more memory than
//! the bytes it carries. The caller may carve a super-packet's slots
//! tighter, exactly as long as the datagrams they will be sealed into (all
//! its segments go to one peer), so that they leave in one GSO send where
//! they lie. (tun-rs's own `try_recv_multiple` wants every
//! output buffer as large as the largest segment and as many buffers as
//! segments, before it knows either; with buffers for 1280-byte segments a
//! super-packet of smaller ones failed with "too many GSO segments" and was
//! lost whole.)
//!
//! The buffers are sized for the smallest segment the kernel's TCP sends:
//! its MSS floor (`net.ipv4.tcp_min_snd_mss`, 48 bytes at the least) less
//! the 12 bytes of timestamps, so [`MAX_SEGMENTS`] segments of a 64 KiB
//! super-packet; UDP segmentation offload carries at most 128 segments. A
//! read that still does not fit (smaller segments, or a packet the offload
//! header does not describe) is dropped and counted ([`TunDrops`],
//! `weft_datagrams_dropped_total{reason="tun_…"}`). A read that fits the arena but not
//! what is left of it waits, whole, for the next batch.
//!
//! This file only reads and splits: it never seals or sends, and it
//! allocates nothing after [`TunReader::new`].

use std::io;

use tracing::{debug, trace};
use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use weft_protocol::wire::control::RELAY_HEADER_LEN;
use weft_protocol::wire::{TAG_LEN, TRANSPORT_HEADER_LEN};

use crate::tun::Tun;

/// The largest read the TUN device returns: a 64 KiB IP packet behind the
/// virtio-net header.
const MAX_READ: usize = VIRTIO_NET_HDR_LEN + u16::MAX as usize;
/// The smallest TCP segment payload the kernel hands over in a
/// super-packet: the MSS floor (`TCP_MIN_SND_MSS`, 48) less the timestamp
/// option (12).
pub const MIN_SEGMENT: usize = 36;
/// Segments one super-packet may be split into: 64 KiB of the smallest
/// segments (also more than the 128 of UDP segmentation offload).
pub const MAX_SEGMENTS: usize = (u16::MAX as usize).div_ceil(MIN_SEGMENT);
/// The longest IP and transport headers a segment repeats: IPv4 with
/// options (60) and TCP with options (60).
const MAX_HEADERS: usize = 120;
/// Room a slot needs beyond its inner packet padded to 16 bytes: the
/// transport header and tag, and around them a relay request's own header,
/// relay header and tag (`Device::encapsulate` seals in place, and wraps in
/// place for a relayed peer).
pub const SEAL_ROOM: usize = 2 * (TRANSPORT_HEADER_LEN + TAG_LEN) + RELAY_HEADER_LEN;

/// virtio-net header flag: the checksum from `csum_start` on is still to
/// be computed (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
const NEEDS_CSUM: u8 = 1;
/// virtio-net GSO types (`include/uapi/linux/virtio_net.h`).
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// The bytes of a slot for an inner packet of `len` bytes.
pub fn room(len: usize) -> usize {
    len.next_multiple_of(16) + SEAL_ROOM
}

/// The arena that holds any one read of up to [`MAX_SEGMENTS`] segments,
/// and at least `batch` packets of `mtu` bytes.
pub fn arena_len(batch: usize, mtu: usize) -> usize {
    // Each segment repeats its headers and needs its own room; together
    // the segments' payloads are at most the 64 KiB read plus one
    // segment's worth of padding-to-a-segment.
    let worst_read = MAX_SEGMENTS * (MAX_HEADERS + 15 + SEAL_ROOM) + 2 * (u16::MAX as usize + 1);
    worst_read.max(batch * room(mtu))
}

/// One inner packet read from the TUN device: it lies at
/// `arena[start + TRANSPORT_HEADER_LEN..][..len]`, in `cap` bytes from
/// `start`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slot {
    /// Where the slot begins in the arena.
    pub start: usize,
    /// The slot's bytes.
    pub cap: usize,
    /// The inner packet's length.
    pub len: usize,
}

/// TUN reads dropped before the protocol saw them, by reason; exported
/// beside the device's drops (`weft_datagrams_dropped_total{reason}`) as
/// `tun_too_many_segments` and `tun_malformed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunDrops {
    /// A super-packet with more segments than the split buffers hold.
    pub too_many_segments: u64,
    /// An offload header or packet that does not describe a packet weft
    /// can split.
    pub malformed: u64,
}

impl TunDrops {
    /// `(reason, count)` for every reason, zeros too, as metric labels.
    pub fn by_reason(&self) -> [(String, u64); 2] {
        [
            ("tun_too_many_segments".to_string(), self.too_many_segments),
            ("tun_malformed".to_string(), self.malformed),
        ]
    }
}

/// How a [`TunReader::fill`] ended.
#[derive(Debug)]
pub enum Fill {
    /// The batch is full; the device may hold more.
    Full,
    /// The device has nothing more to read.
    Drained,
    /// The device is gone (removed under the node): reads fail with this.
    Gone(io::Error),
}

/// What one read holds, once its offload header is checked.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// One packet of this many bytes, at this offset in the read.
    Single { at: usize, len: usize },
    /// A super-packet to split (header fixed up as the splitter needs it).
    Gso {
        hdr: VirtioNetHdr,
        is_v6: bool,
        segments: usize,
        segment_len: usize,
    },
}

/// Reads and splits TUN packets into slots. See the module documentation.
pub struct TunReader {
    /// The raw read: virtio-net header and packet.
    original: Vec<u8>,
    /// The length of a read that did not fit the last batch, still in
    /// `original`.
    pending: Option<usize>,
    /// Whether reads carry a virtio-net header (offload is on).
    offload: bool,
    /// The splitter's output lengths.
    sizes: Vec<usize>,
    /// The splitter's output buffers, empty between reads: only the
    /// allocation is kept (see [`recycle`]).
    split_bufs: Vec<&'static mut [u8]>,
    drops: TunDrops,
}

impl TunReader {
    /// A reader for a device with (`offload`) or without virtio-net headers.
    pub fn new(offload: bool) -> Self {
        Self {
            original: vec![0; MAX_READ],
            pending: None,
            offload,
            sizes: vec![0; MAX_SEGMENTS],
            split_bufs: Vec::with_capacity(MAX_SEGMENTS),
            drops: TunDrops::default(),
        }
    }

    /// Starts over on a new device: a read of the old one still waiting is
    /// given up.
    pub fn reset(&mut self, offload: bool) {
        self.pending = None;
        self.offload = offload;
    }

    /// Reads dropped so far.
    pub fn drops(&self) -> TunDrops {
        self.drops
    }

    /// Reads packets into `slots` carved from `arena` until `slots` holds
    /// `batch` packets or more, the next read does not fit what is left,
    /// or the device is drained. `slots` must be empty and have room for
    /// `batch + MAX_SEGMENTS` slots, and `arena` be [`arena_len`] long.
    /// `slot_len(packet, segment)` gives the slots of a super-packet
    /// (`packet`, its IP header first) of `segment`-byte segments; it is
    /// held between the least a sealed segment takes and [`room`].
    pub fn fill(
        &mut self,
        tun: &Tun,
        arena: &mut [u8],
        slots: &mut Vec<Slot>,
        batch: usize,
        slot_len: impl Fn(&[u8], usize) -> usize,
    ) -> Fill {
        let mut used = 0;
        while slots.len() < batch {
            let n = match self.pending.take() {
                Some(n) => n,
                None => match tun.dev.try_recv(&mut self.original) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fill::Drained,
                    Err(e) if gone(&e) => return Fill::Gone(e),
                    Err(e) => {
                        debug!(error = %e, "TUN read failed");
                        return Fill::Drained;
                    }
                },
            };
            let shape = match shape(&mut self.original[..n], self.offload) {
                Ok(shape) => shape,
                Err(why) => {
                    self.drops.malformed += 1;
                    trace!(why, "TUN read dropped: malformed offload packet");
                    continue;
                }
            };
            let (count, cap) = match shape {
                Shape::Single { len, .. } => (1, room(len)),
                Shape::Gso {
                    segments,
                    segment_len,
                    ..
                } => (
                    segments,
                    slot_len(&self.original[VIRTIO_NET_HDR_LEN..n], segment_len).clamp(
                        TRANSPORT_HEADER_LEN + segment_len + TAG_LEN,
                        room(segment_len),
                    ),
                ),
            };
            if count > MAX_SEGMENTS || count * cap > arena.len() {
                self.drops.too_many_segments += 1;
                trace!(
                    segments = count,
                    "TUN read dropped: more segments than the split buffers hold"
                );
                continue;
            }
            if slots.len() + count > slots.capacity() || used + count * cap > arena.len() {
                // Whole in the next batch, which starts empty.
                self.pending = Some(n);
                return Fill::Full;
            }
            let region = &mut arena[used..used + count * cap];
            match shape {
                Shape::Single { at, len } => {
                    region[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len]
                        .copy_from_slice(&self.original[at..at + len]);
                    slots.push(Slot {
                        start: used,
                        cap,
                        len,
                    });
                    used += cap;
                }
                Shape::Gso { hdr, is_v6, .. } => {
                    let mut bufs = recycle(std::mem::take(&mut self.split_bufs));
                    bufs.extend(region.chunks_exact_mut(cap));
                    let split = tun_rs::gso_split(
                        &mut self.original[VIRTIO_NET_HDR_LEN..n],
                        hdr,
                        &mut bufs,
                        &mut self.sizes[..count],
                        TRANSPORT_HEADER_LEN,
                        is_v6,
                    );
                    self.split_bufs = recycle(bufs);
                    match split {
                        Ok(k) => {
                            for (j, &len) in self.sizes[..k].iter().enumerate() {
                                slots.push(Slot {
                                    start: used + j * cap,
                                    cap,
                                    len,
                                });
                            }
                            used += k * cap;
                        }
                        Err(e) => {
                            self.drops.malformed += 1;
                            trace!(error = %e, "TUN read dropped: super-packet cannot be split");
                        }
                    }
                }
            }
        }
        Fill::Full
    }
}

/// Whether a TUN read or write failed because the device is gone: the
/// interface was deleted under the open descriptor, which the kernel then
/// answers with EBADFD for every read and write (and readiness forever).
pub fn gone(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBADFD)
}

/// Checks a read (with its virtio-net header when `offload`) and says what
/// it holds. A packet without segmentation whose checksum the kernel left
/// to us gets it here. Nothing in `read` is trusted: every offset is
/// checked before use.
fn shape(read: &mut [u8], offload: bool) -> Result<Shape, &'static str> {
    if !offload {
        return Ok(Shape::Single {
            at: 0,
            len: read.len(),
        });
    }
    if read.len() <= VIRTIO_NET_HDR_LEN {
        return Err("read shorter than its offload header");
    }
    let mut hdr = VirtioNetHdr::decode(&read[..VIRTIO_NET_HDR_LEN])
        .map_err(|_| "offload header does not decode")?;
    let packet = &mut read[VIRTIO_NET_HDR_LEN..];
    let len = packet.len();
    let csum_start = usize::from(hdr.csum_start);
    let csum_at = csum_start + usize::from(hdr.csum_offset);
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & NEEDS_CSUM != 0 {
            if csum_at + 2 > len {
                return Err("checksum field beyond the packet");
            }
            // The field holds the pseudo-header sum to start from.
            let initial = u16::from_be_bytes([packet[csum_at], packet[csum_at + 1]]);
            packet[csum_at..csum_at + 2].fill(0);
            let sum = tun_rs::checksum(&packet[csum_start..], u64::from(initial));
            packet[csum_at..csum_at + 2].copy_from_slice(&(!sum).to_be_bytes());
        }
        return Ok(Shape::Single {
            at: VIRTIO_NET_HDR_LEN,
            len,
        });
    }
    let is_v6 = match packet[0] >> 4 {
        4 => false,
        6 => true,
        _ => return Err("super-packet is neither IPv4 nor IPv6"),
    };
    // The kernel's hdr_len may cover a whole segment on the forwarding
    // path: the headers' length comes from the packet, as tun-rs does.
    let transport = match hdr.gso_type & !GSO_ECN {
        GSO_TCPV4 | GSO_TCPV6 => {
            let data_offset = *packet
                .get(csum_start + 12)
                .ok_or("TCP header beyond the packet")?;
            let tcp_len = usize::from(data_offset >> 4) * 4;
            if !(20..=60).contains(&tcp_len) {
                return Err("TCP header length out of range");
            }
            tcp_len
        }
        GSO_UDP_L4 => 8,
        _ => return Err("unknown segmentation type"),
    };
    let hdr_len = csum_start + transport;
    if hdr_len > len || csum_at + 2 > len || hdr.gso_size == 0 {
        return Err("offload header beyond the packet");
    }
    hdr.hdr_len = u16::try_from(hdr_len).map_err(|_| "headers too long")?;
    let gso_size = usize::from(hdr.gso_size);
    let payload = len - hdr_len;
    Ok(Shape::Gso {
        hdr,
        is_v6,
        segments: payload.div_ceil(gso_size),
        segment_len: hdr_len + gso_size.min(payload),
    })
}

/// Empties `v` and keeps its allocation for slices of another lifetime,
/// so the splitter's buffer list is made anew for every read without
/// allocating: collecting an emptied vector's iterator into one of the
/// same element size reuses its allocation.
// `filter_map` rather than `filter`: the elements change lifetime.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(mut v: Vec<&mut [u8]>) -> Vec<&'b mut [u8]> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtio-net header of a TCP/IPv4 super-packet with `gso_size`.
    fn tcp4_header(gso_size: u16) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    /// A read: `hdr`, then an IPv4/TCP packet (20 + 20 bytes of headers)
    /// carrying `payload` bytes.
    fn tcp4_read(hdr: VirtioNetHdr, payload: usize) -> Vec<u8> {
        let mut read = vec![0u8; VIRTIO_NET_HDR_LEN + 40 + payload];
        hdr.encode(&mut read[..VIRTIO_NET_HDR_LEN]).unwrap();
        let p = &mut read[VIRTIO_NET_HDR_LEN..];
        let total = u16::try_from(40 + payload).unwrap_or(u16::MAX);
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 64, 0, 1]);
        p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        p[32] = 5 << 4; // data offset: 20 bytes
        p[33] = 0x18; // PSH, ACK
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        read
    }

    #[test]
    fn a_64_kib_super_packet_of_the_smallest_segments_fits_the_buffers() {
        let payload = u16::MAX as usize - 40;
        let mut read = tcp4_read(tcp4_header(MIN_SEGMENT as u16), payload);
        let shape = shape(&mut read, true).unwrap();
        let Shape::Gso {
            segments,
            segment_len,
            ..
        } = shape
        else {
            panic!("a super-packet: {shape:?}")
        };
        assert_eq!(segments, payload.div_ceil(MIN_SEGMENT));
        assert!(segments <= MAX_SEGMENTS);
        assert_eq!(segment_len, 40 + MIN_SEGMENT);
        assert!(segments * room(segment_len) <= arena_len(128, 1420));
    }

    #[test]
    fn the_arena_stays_under_a_mebibyte() {
        assert!(arena_len(128, 1420) < 1 << 20, "{}", arena_len(128, 1420));
        assert!(
            arena_len(128, 9000) > 128 * 9000,
            "a batch of jumbo packets fits"
        );
    }

    #[test]
    fn a_super_packet_splits_into_segments_of_its_own_size_with_their_headers() {
        let mut read = tcp4_read(tcp4_header(488), 10 * 488 + 100);
        let Shape::Gso {
            hdr,
            is_v6,
            segments,
            segment_len,
        } = shape(&mut read, true).unwrap()
        else {
            panic!("a super-packet")
        };
        assert_eq!((segments, segment_len, is_v6), (11, 528, false));
        let cap = room(segment_len);
        let mut arena = vec![0u8; segments * cap];
        let mut bufs: Vec<&mut [u8]> = arena.chunks_exact_mut(cap).collect();
        let mut sizes = vec![0; segments];
        let n = tun_rs::gso_split(
            &mut read[VIRTIO_NET_HDR_LEN..],
            hdr,
            &mut bufs,
            &mut sizes,
            TRANSPORT_HEADER_LEN,
            is_v6,
        )
        .unwrap();
        assert_eq!(n, 11);
        assert!(sizes[..10].iter().all(|&s| s == 528));
        assert_eq!(sizes[10], 140);
        let second = &arena[cap + TRANSPORT_HEADER_LEN..][..528];
        assert_eq!(
            u16::from_be_bytes([second[2], second[3]]),
            528,
            "IPv4 total length"
        );
        assert_eq!(
            second[40],
            (488 % 256) as u8,
            "the second segment's first byte"
        );
    }

    #[test]
    fn offload_headers_that_do_not_describe_the_packet_are_refused_not_trusted() {
        let mut short = vec![0u8; VIRTIO_NET_HDR_LEN];
        assert!(shape(&mut short, true).is_err());
        let mut zero_size = tcp4_read(tcp4_header(0), 1000);
        assert!(shape(&mut zero_size, true).is_err());
        let mut beyond = tcp4_read(
            VirtioNetHdr {
                csum_start: 4000,
                ..tcp4_header(500)
            },
            1000,
        );
        assert!(shape(&mut beyond, true).is_err());
        let mut unknown = tcp4_read(
            VirtioNetHdr {
                gso_type: 3,
                ..tcp4_header(500)
            },
            1000,
        );
        assert!(shape(&mut unknown, true).is_err());
        let mut csum_beyond = tcp4_read(
            VirtioNetHdr {
                gso_type: GSO_NONE,
                csum_offset: 2000,
                ..tcp4_header(500)
            },
            100,
        );
        assert!(shape(&mut csum_beyond, true).is_err());
    }

    #[test]
    fn a_packet_without_segmentation_gets_the_checksum_the_kernel_left_to_us() {
        let mut read = tcp4_read(
            VirtioNetHdr {
                gso_type: GSO_NONE,
                gso_size: 0,
                ..tcp4_header(0)
            },
            10,
        );
        let shape = shape(&mut read, true).unwrap();
        assert!(matches!(
            shape,
            Shape::Single {
                at: VIRTIO_NET_HDR_LEN,
                len: 50
            }
        ));
        let tcp = &read[VIRTIO_NET_HDR_LEN + 20..];
        // A correct checksum sums (with the pseudo-header, here left at 0
        // as the field's start value) to 0xffff.
        assert_eq!(tun_rs::checksum(tcp, 0), 0xffff);
    }

    #[test]
    fn recycling_the_buffer_list_keeps_its_allocation() {
        let mut data = [0u8; 64];
        let mut v: Vec<&mut [u8]> = Vec::with_capacity(16);
        v.extend(data.chunks_exact_mut(8));
        let before = v.capacity();
        let v: Vec<&'static mut [u8]> = recycle(v);
        assert!(v.is_empty());
        assert_eq!(v.capacity(), before);
    }
}
