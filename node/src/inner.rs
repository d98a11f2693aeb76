//! Fitting inner packets to the path MTU toward a peer.
//!
//! When an IP packet read from the TUN device is larger than the inner MTU
//! toward its peer (the discovered path MTU less weft's overhead), the data
//! path asks [`needs_fitting`] what to do, then either splits the packet with
//! [`fragment_ipv4`] or drops it and writes the ICMP "too big" answer from
//! [`too_big_reply`] back into the TUN device (paced by [`IcmpRateLimiter`]).
//! [`clamp_mss`] lowers the MSS of TCP SYNs so most TCP traffic never gets
//! that far. This module owns those packet decisions and encodings only: it
//! never does I/O, never reads the clock, never allocates on the data path
//! (outputs go into caller buffers or a stack buffer) and never panics on
//! any input; whatever it cannot parse it reports (`Fit::Malformed`, `None`,
//! `false`) and leaves to the caller to drop.
//!
//! Header parsing and writing use `etherparse`. Written by hand here, because
//! etherparse lacks them: walking IPv4 and TCP options by byte position (its
//! TCP option iterator yields values, not where they sit, and it keeps IPv4
//! options as raw bytes), and the RFC 1624 incremental checksum update.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpFragOffset, IpNumber, Ipv4Header,
    Ipv4HeaderSlice, Ipv4Options, Ipv6ExtensionSlice, Ipv6ExtensionsSlice, Ipv6FlowLabel,
    Ipv6Header, Ipv6HeaderSlice, TcpHeader, TcpHeaderSlice,
};

/// TTL / hop limit of the ICMP replies weft writes into the TUN device.
const REPLY_TTL: u8 = 64;

/// The IPv6 minimum link MTU (RFC 8200 §5): the floor of the MTU announced
/// in a Packet Too Big, and the ceiling of any ICMPv6 error (RFC 4443 §2.4 c).
const IPV6_MIN_MTU: usize = 1280;

/// Bytes of an ICMPv6 error before its quote: IPv6 header and ICMPv6 header.
const IPV6_ICMP_OVERHEAD: usize = Ipv6Header::LEN + 8;

/// Largest fragment [`fragment_ipv4`] builds, whatever the inner MTU: the
/// size of its stack buffer (a jumbo frame).
pub const MAX_FRAGMENT_LEN: usize = 9216;

/// TCP option kinds (RFC 9293 §3.1).
const TCP_OPT_END: u8 = 0;
const TCP_OPT_NOP: u8 = 1;
const TCP_OPT_MSS: u8 = 2;

/// IPv4 option types that are a single byte (RFC 791 §3.1).
const IPV4_OPT_END: u8 = 0;
const IPV4_OPT_NOP: u8 = 1;
/// The "copied" flag of an IPv4 option type: the option goes into every
/// fragment, not only the first.
const IPV4_OPT_COPIED: u8 = 0x80;

/// What the data path must do with an inner packet before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// At most `inner_mtu` bytes: send it as it is.
    Fits,
    /// Too big, and must not be fragmented (IPv4 with DF set, or any IPv6
    /// packet): drop it and answer with [`too_big_reply`].
    TooBigDf,
    /// Too big, IPv4 without DF: split it with [`fragment_ipv4`].
    TooBigFragmentable,
    /// Not an IPv4 or IPv6 packet whose header is whole and whose length
    /// field matches the packet's length.
    Malformed,
}

/// Decides whether `packet`, an IP packet as read from the TUN device, fits
/// in `inner_mtu` bytes, and if not, how to make it fit.
///
/// A TUN device hands over exactly one packet per read, so a length field
/// that disagrees with the packet's length makes it [`Fit::Malformed`].
pub fn needs_fitting(packet: &[u8], inner_mtu: usize) -> Fit {
    match packet.first().map(|b| b >> 4) {
        Some(4) => match ipv4_header(packet) {
            None => Fit::Malformed,
            Some(_) if packet.len() <= inner_mtu => Fit::Fits,
            Some(ip) if ip.dont_fragment() => Fit::TooBigDf,
            Some(_) => Fit::TooBigFragmentable,
        },
        Some(6) => match ipv6_header(packet) {
            None => Fit::Malformed,
            Some(_) if packet.len() <= inner_mtu => Fit::Fits,
            Some(_) => Fit::TooBigDf,
        },
        _ => Fit::Malformed,
    }
}

/// Writes into `out` the ICMP error telling the sender of `packet` that it
/// does not fit in `inner_mtu` bytes, and returns its length; the caller
/// writes `out[..len]` back into the TUN device.
///
/// - IPv4: Destination Unreachable, code 4 "fragmentation needed and DF set"
///   with next-hop MTU `inner_mtu` (RFC 1191 §4), quoting the IP header and
///   the first 8 bytes of its payload (RFC 792). At most 96 bytes.
/// - IPv6: Packet Too Big with MTU `max(inner_mtu, 1280)`, quoting as much of
///   the packet as keeps the reply within 1280 bytes (RFC 4443 §3.2). At
///   most 1280 bytes.
///
/// The reply comes from the packet's destination and goes to its source.
///
/// Returns `None` when no reply may be sent (RFC 1122 §3.2.2, RFC 4443
/// §2.4 e): the packet is an ICMP error itself (or an ICMP message whose
/// type cannot be read), a non-first fragment, addressed to a multicast or
/// broadcast destination, or from an address that names no single host.
/// Also `None` when the packet is malformed or `out` is too small.
pub fn too_big_reply(packet: &[u8], inner_mtu: u16, out: &mut [u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => too_big_reply_v4(packet, inner_mtu, out),
        6 => too_big_reply_v6(packet, inner_mtu, out),
        _ => None,
    }
}

fn too_big_reply_v4(packet: &[u8], inner_mtu: u16, out: &mut [u8]) -> Option<usize> {
    let ip = ipv4_header(packet)?;
    if ip.fragments_offset().value() != 0 {
        return None;
    }
    if !names_one_host_v4(ip.source_addr()) || !is_unicast_destination_v4(ip.destination_addr()) {
        return None;
    }
    let header_len = ip.slice().len();
    let payload = packet.get(header_len..)?;
    if ip.protocol() == IpNumber::ICMP && payload.first().is_none_or(|&t| !is_icmpv4_query(t)) {
        return None;
    }

    let quote = packet.get(..header_len + payload.len().min(8))?;
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: inner_mtu,
        }),
        quote,
    )
    .to_bytes();
    let icmp_len = icmp.len() + quote.len();
    let mut reply = Ipv4Header::new(
        u16::try_from(icmp_len).ok()?,
        REPLY_TTL,
        IpNumber::ICMP,
        ip.destination(),
        ip.source(),
    )
    .ok()?;
    // Like the kernel's own ICMP errors: small enough never to need DF.
    reply.dont_fragment = false;
    reply.header_checksum = reply.calc_header_checksum();
    let reply = reply.to_bytes();

    write_parts(out, &[&reply, &icmp, quote])
}

fn too_big_reply_v6(packet: &[u8], inner_mtu: u16, out: &mut [u8]) -> Option<usize> {
    let ip = ipv6_header(packet)?;
    let (source, destination) = (ip.source_addr(), ip.destination_addr());
    // RFC 4443 §2.4 e.2 allows a Packet Too Big about a multicast packet,
    // but ours would have to come *from* the multicast address: refuse.
    if source.is_unspecified() || source.is_multicast() || destination.is_multicast() {
        return None;
    }
    let (exts, upper, upper_data, err) =
        Ipv6ExtensionsSlice::from_slice_lax(ip.next_header(), packet.get(Ipv6Header::LEN..)?);
    if err.is_some() {
        return None;
    }
    for ext in exts {
        if let Ipv6ExtensionSlice::Fragment(fragment) = ext {
            if fragment.fragment_offset().value() != 0 {
                return None;
            }
        }
    }
    // ICMPv6 types below 128 are errors (RFC 4443 §2.1).
    if upper == IpNumber::IPV6_ICMP && upper_data.first().is_none_or(|&t| t < 128) {
        return None;
    }

    let quote = packet.get(..packet.len().min(IPV6_MIN_MTU - IPV6_ICMP_OVERHEAD))?;
    let mtu = u32::from(inner_mtu).max(IPV6_MIN_MTU as u32);
    let icmp = Icmpv6Header::with_checksum(
        Icmpv6Type::PacketTooBig { mtu },
        ip.destination(),
        ip.source(),
        quote,
    )
    .ok()?
    .to_bytes();
    let reply = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: u16::try_from(icmp.len() + quote.len()).ok()?,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: REPLY_TTL,
        source: ip.destination(),
        destination: ip.source(),
    }
    .to_bytes();

    write_parts(out, &[&reply, &icmp, quote])
}

/// Splits `packet`, an IPv4 packet without DF, into fragments of at most
/// `inner_mtu` bytes (and at most [`MAX_FRAGMENT_LEN`]) and hands each, in
/// order, to `emit`, which must copy it out before returning. Returns `true`
/// once all fragments were emitted (a packet that already fits is emitted
/// as it is) and `false`, having emitted nothing, when it refuses: the
/// packet is malformed, has DF set, has malformed options, or `inner_mtu`
/// cannot hold its header and 8 bytes of data.
///
/// Fragment offsets count from the packet's own offset and the last fragment
/// keeps its MF flag, so a fragment can be fragmented again (RFC 791 §3.2).
/// Options are kept: all of them in the first fragment, and in the others
/// only those with the copied flag set, padded to a 4-byte boundary.
pub fn fragment_ipv4(packet: &[u8], inner_mtu: usize, mut emit: impl FnMut(&[u8])) -> bool {
    let Some(ip) = ipv4_header(packet) else {
        return false;
    };
    if ip.dont_fragment() {
        return false;
    }
    if packet.len() <= inner_mtu {
        emit(packet);
        return true;
    }
    let Some(payload) = packet.get(ip.slice().len()..) else {
        return false;
    };
    let first_header = ip.to_header();
    let Some((copied, copied_len)) = copied_options(ip.options()) else {
        return false;
    };
    let Ok(rest_options) = Ipv4Options::try_from(&copied[..copied_len]) else {
        return false;
    };
    let rest_header = Ipv4Header {
        options: rest_options,
        ..first_header.clone()
    };

    let limit = inner_mtu.min(MAX_FRAGMENT_LEN);
    // Every fragment but the last carries a multiple of 8 bytes of data.
    let first_chunk = limit.saturating_sub(first_header.header_len()) & !7;
    let rest_chunk = limit.saturating_sub(rest_header.header_len()) & !7;
    if first_chunk == 0 || rest_chunk == 0 {
        return false;
    }
    // Checked before emitting anything, so no fragment is refused halfway.
    let base = ip.fragments_offset().value();
    if usize::from(base) + payload.len().saturating_sub(1) / 8 > usize::from(IpFragOffset::MAX_U16)
    {
        return false;
    }

    let mut buf = [0u8; MAX_FRAGMENT_LEN];
    let mut start = 0;
    while start < payload.len() {
        let (template, chunk) = if start == 0 {
            (&first_header, first_chunk)
        } else {
            (&rest_header, rest_chunk)
        };
        let end = payload.len().min(start + chunk);
        let mut header = template.clone();
        header.more_fragments = end < payload.len() || ip.more_fragments();
        // Neither can fail: the offset was checked above and every
        // fragment is smaller than the original packet.
        let Ok(offset) = u16::try_from(start / 8).map(|o| base + o) else {
            return false;
        };
        let Ok(offset) = IpFragOffset::try_new(offset) else {
            return false;
        };
        header.fragment_offset = offset;
        if header.set_payload_len(end - start).is_err() {
            return false;
        }
        header.header_checksum = header.calc_header_checksum();
        let Some(len) = write_parts(&mut buf, &[&header.to_bytes(), &payload[start..end]]) else {
            return false;
        };
        emit(&buf[..len]);
        start = end;
    }
    true
}

/// The options of a non-first fragment: those of `options` with the copied
/// flag, zero-padded (END) to a multiple of 4 bytes. `None` if `options` is
/// not a well-formed option list.
fn copied_options(options: &[u8]) -> Option<([u8; 40], usize)> {
    let mut copied = [0u8; 40];
    let mut len = 0;
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            IPV4_OPT_END => break,
            IPV4_OPT_NOP => at += 1,
            _ => {
                let option_len = usize::from(*options.get(at + 1)?);
                let option = options
                    .get(at..at + option_len)
                    .filter(|_| option_len >= 2)?;
                if kind & IPV4_OPT_COPIED != 0 {
                    copied
                        .get_mut(len..len + option_len)?
                        .copy_from_slice(option);
                    len += option_len;
                }
                at += option_len;
            }
        }
    }
    let padded = len.next_multiple_of(4);
    (padded <= copied.len()).then_some((copied, padded))
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) in `packet` to `max_mss`
/// if it is larger, fixing the TCP checksum in place, and returns whether it
/// changed anything.
///
/// Leaves alone, returning `false`: anything but an unfragmented TCP segment
/// directly in IPv4 or IPv6 (IPv6 extension headers are skipped), segments
/// authenticated by an IPv6 AH (rewriting would break them), segments
/// without SYN, and malformed packets.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let Some(tcp_start) = tcp_offset(packet) else {
        return false;
    };
    match packet.get_mut(tcp_start..) {
        Some(segment) => clamp_segment_mss(segment, max_mss),
        None => false,
    }
}

/// Where the TCP header of an unfragmented TCP packet starts.
fn tcp_offset(packet: &[u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => {
            let ip = ipv4_header(packet)?;
            let whole = ip.protocol() == IpNumber::TCP && !ip.is_fragmenting_payload();
            whole.then(|| ip.slice().len())
        }
        6 => {
            let ip = ipv6_header(packet)?;
            let (exts, upper, segment) =
                Ipv6ExtensionsSlice::from_slice(ip.next_header(), packet.get(Ipv6Header::LEN..)?)
                    .ok()?;
            if upper != IpNumber::TCP || exts.is_fragmenting_payload() {
                return None;
            }
            let authenticated = exts
                .into_iter()
                .any(|ext| matches!(ext, Ipv6ExtensionSlice::Authentication(_)));
            // The segment runs to the end: the payload length was checked.
            (!authenticated).then(|| packet.len() - segment.len())
        }
        _ => None,
    }
}

fn clamp_segment_mss(segment: &mut [u8], max_mss: u16) -> bool {
    let (syn, header_len) = match TcpHeaderSlice::from_slice(segment) {
        Ok(tcp) => (tcp.syn(), tcp.slice().len()),
        Err(_) => return false,
    };
    if !syn {
        return false;
    }
    let mut changed = false;
    let mut at = TcpHeader::MIN_LEN;
    while at < header_len {
        let Some(&kind) = segment.get(at) else {
            break;
        };
        match kind {
            TCP_OPT_END => break,
            TCP_OPT_NOP => at += 1,
            _ => {
                let Some(option_len) = segment.get(at + 1).map(|&l| usize::from(l)) else {
                    break;
                };
                if option_len < 2 || at + option_len > header_len {
                    break;
                }
                if kind == TCP_OPT_MSS && option_len == 4 {
                    changed |= lower_u16_field(segment, at + 2, max_mss);
                }
                at += option_len;
            }
        }
    }
    changed
}

/// Lowers the big-endian u16 at `at` in a TCP segment to `max` if it is
/// larger, updating the TCP checksum (bytes 16..18) incrementally.
fn lower_u16_field(segment: &mut [u8], at: usize, max: u16) -> bool {
    let (Some(&[hi, lo]), Some(&[c_hi, c_lo])) = (segment.get(at..at + 2), segment.get(16..18))
    else {
        return false;
    };
    let old = u16::from_be_bytes([hi, lo]);
    if old <= max {
        return false;
    }
    // The checksum sums 16-bit words from the start of the TCP header; a
    // field at an odd offset straddles two words, which sums the same as
    // the byte-swapped value in one word (RFC 1071 §2 A).
    let (old_word, new_word) = if at % 2 == 0 {
        (old, max)
    } else {
        (old.swap_bytes(), max.swap_bytes())
    };
    let checksum = checksum_replace(u16::from_be_bytes([c_hi, c_lo]), old_word, new_word);
    segment[at..at + 2].copy_from_slice(&max.to_be_bytes());
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    true
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old`
/// to `new`: `HC' = ~(~HC + ~m + m')` in one's complement arithmetic.
fn checksum_replace(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    !(sum as u16)
}

/// The TCP MSS that keeps segments within `inner_mtu`: the MTU less a
/// minimal IP header and TCP header (40 bytes for IPv4, 60 for IPv6).
pub fn mss_for(inner_mtu: usize, ipv6: bool) -> u16 {
    let headers = if ipv6 { 60 } else { 40 };
    u16::try_from(inner_mtu.saturating_sub(headers)).unwrap_or(u16::MAX)
}

/// Paces the ICMP errors weft writes into the TUN device (RFC 4443 §2.4 f,
/// RFC 1812 §4.3.2.8): a token bucket of `burst` tokens refilled at `rate`
/// per second, kept as a GCRA "theoretical arrival time". It never reads
/// the clock: the caller passes `now`; a `now` earlier than a previous one
/// only denies more.
#[derive(Debug, Clone)]
pub struct IcmpRateLimiter {
    /// Time that earns one token.
    interval: Duration,
    /// How far ahead of `now` the arrival time may run: `burst - 1` tokens.
    tolerance: Duration,
    /// When the bucket would be full again; `None` until the first reply.
    full_at: Option<Instant>,
}

impl IcmpRateLimiter {
    /// Replies allowed per second in the long run, by default.
    pub const DEFAULT_RATE: u32 = 100;
    /// Replies allowed at once, by default.
    pub const DEFAULT_BURST: u32 = 20;

    /// A limiter allowing `rate` replies per second with bursts of `burst`;
    /// both are taken as at least 1.
    pub fn new(rate: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / rate.max(1);
        IcmpRateLimiter {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            full_at: None,
        }
    }

    /// Whether one more reply may be sent at `now`; if so, it is counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        let arrival = match self.full_at {
            Some(full_at) if full_at > now => full_at,
            _ => now,
        };
        if arrival.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        match arrival.checked_add(self.interval) {
            Some(next) => {
                self.full_at = Some(next);
                true
            }
            None => false,
        }
    }
}

impl Default for IcmpRateLimiter {
    fn default() -> Self {
        Self::new(Self::DEFAULT_RATE, Self::DEFAULT_BURST)
    }
}

/// The IPv4 header of `packet` if it is whole and its total length is the
/// packet's length (a TUN read is exactly one packet: a mismatch is
/// corruption, not padding).
fn ipv4_header(packet: &[u8]) -> Option<Ipv4HeaderSlice<'_>> {
    let ip = Ipv4HeaderSlice::from_slice(packet).ok()?;
    (usize::from(ip.total_len()) == packet.len()).then_some(ip)
}

/// The IPv6 header of `packet` if its payload length is the rest of the
/// packet (jumbograms, with payload length 0, never come from a TUN device).
fn ipv6_header(packet: &[u8]) -> Option<Ipv6HeaderSlice<'_>> {
    let ip = Ipv6HeaderSlice::from_slice(packet).ok()?;
    (Ipv6Header::LEN + usize::from(ip.payload_length()) == packet.len()).then_some(ip)
}

/// RFC 1122 §3.2.2: no ICMP error about a datagram whose source does not
/// name a single host.
fn names_one_host_v4(source: Ipv4Addr) -> bool {
    !(source.is_unspecified()
        || source.is_loopback()
        || source.is_broadcast()
        || source.is_multicast()
        || source.octets()[0] >= 240)
}

/// RFC 1122 §3.2.2: no ICMP error about a datagram sent to a multicast or
/// broadcast address (a directed broadcast cannot be told from here).
fn is_unicast_destination_v4(destination: Ipv4Addr) -> bool {
    !(destination.is_broadcast() || destination.is_multicast())
}

/// ICMPv4 types that are queries, not errors. Anything else, including
/// types unknown here, is treated as an error, never to be answered.
fn is_icmpv4_query(icmp_type: u8) -> bool {
    // Echo reply/request, router advertisement/solicitation, timestamp,
    // information and address mask request/reply, extended echo (RFC 8335).
    matches!(icmp_type, 0 | 8 | 9 | 10 | 13..=18 | 42 | 43)
}

/// Copies `parts` one after another to the start of `out` and returns
/// their total length, or `None` if `out` is too small.
fn write_parts(out: &mut [u8], parts: &[&[u8]]) -> Option<usize> {
    let mut len = 0;
    for part in parts {
        out.get_mut(len..len + part.len())?.copy_from_slice(part);
        len += part.len();
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        checksum::Sum16BitWords, Icmpv4Slice, Icmpv6Slice, IpHeaders, Ipv4Extensions,
        PacketBuilder, TcpOptionElement,
    };

    const V4_SRC: [u8; 4] = [100, 64, 1, 2];
    const V4_DST: [u8; 4] = [100, 64, 3, 4];
    const V6_SRC: [u8; 16] = [0xfd, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const V6_DST: [u8; 16] = [0xfd, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// An IPv4 UDP packet of `total_len` bytes.
    fn udp_v4(total_len: usize, dont_fragment: bool) -> Vec<u8> {
        udp_v4_with(total_len, dont_fragment, &[], V4_DST)
    }

    fn udp_v4_with(total_len: usize, df: bool, options: &[u8], dst: [u8; 4]) -> Vec<u8> {
        let mut header = Ipv4Header::new(0, 64, IpNumber::UDP, V4_SRC, dst).unwrap();
        header.dont_fragment = df;
        header.identification = 0x1234;
        header.options = Ipv4Options::try_from(options).unwrap();
        let data = payload(total_len - header.header_len() - 8);
        let mut packet = Vec::new();
        PacketBuilder::ip(IpHeaders::Ipv4(header, Ipv4Extensions::default()))
            .udp(5000, 6000)
            .write(&mut packet, &data)
            .unwrap();
        assert_eq!(packet.len(), total_len);
        packet
    }

    fn udp_v6(total_len: usize) -> Vec<u8> {
        udp_v6_to(total_len, V6_DST)
    }

    fn udp_v6_to(total_len: usize, dst: [u8; 16]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv6(V6_SRC, dst, 64)
            .udp(5000, 6000)
            .write(&mut packet, &payload(total_len - 48))
            .unwrap();
        packet
    }

    fn icmpv4(icmp_type: Icmpv4Type) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv4(V4_SRC, V4_DST, 64)
            .icmpv4(icmp_type)
            .write(&mut packet, &payload(1400))
            .unwrap();
        packet
    }

    fn icmpv6(icmp_type: Icmpv6Type) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv6(V6_SRC, V6_DST, 64)
            .icmpv6(icmp_type)
            .write(&mut packet, &payload(1400))
            .unwrap();
        packet
    }

    fn tcp_syn_v4(options: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv4(V4_SRC, V4_DST, 64)
            .tcp(40000, 443, 1, 64240)
            .syn()
            .options_raw(options)
            .unwrap()
            .write(&mut packet, &[])
            .unwrap();
        packet
    }

    fn tcp_syn_v6(options: &[TcpOptionElement]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv6(V6_SRC, V6_DST, 64)
            .tcp(40000, 443, 1, 64240)
            .syn()
            .options(options)
            .unwrap()
            .write(&mut packet, &payload(10))
            .unwrap();
        packet
    }

    /// The MSS options of the TCP segment in `packet`, as etherparse reads them.
    fn mss_values(packet: &[u8]) -> Vec<u16> {
        let start = tcp_offset(packet).unwrap();
        let tcp = TcpHeaderSlice::from_slice(&packet[start..]).unwrap();
        tcp.options_iterator()
            .filter_map(|o| match o.unwrap() {
                TcpOptionElement::MaximumSegmentSize(mss) => Some(mss),
                _ => None,
            })
            .collect()
    }

    /// Whether the TCP checksum in `packet` verifies (sums to zero).
    fn tcp_checksum_ok(packet: &[u8]) -> bool {
        let start = tcp_offset(packet).unwrap();
        let segment = &packet[start..];
        let pseudo = if packet[0] >> 4 == 4 {
            Sum16BitWords::new().add_slice(&packet[12..20])
        } else {
            Sum16BitWords::new().add_slice(&packet[8..40])
        };
        pseudo
            .add_2bytes([0, IpNumber::TCP.0])
            .add_4bytes((segment.len() as u32).to_be_bytes())
            .add_slice(segment)
            .ones_complement()
            == 0
    }

    fn ipv4_checksum_ok(header: &[u8]) -> bool {
        Sum16BitWords::new().add_slice(header).ones_complement() == 0
    }

    fn fragments(packet: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        fragment_ipv4(packet, mtu, |f| out.push(f.to_vec())).then_some(out)
    }

    /// Reassembles fragments emitted in order, checking each header.
    fn reassemble(original: &[u8], fragments: &[Vec<u8>], mtu: usize) -> Vec<u8> {
        let original_ip = Ipv4HeaderSlice::from_slice(original).unwrap();
        let mut data = Vec::new();
        for (i, fragment) in fragments.iter().enumerate() {
            assert!(
                fragment.len() <= mtu,
                "fragment {i} is {} > {mtu}",
                fragment.len()
            );
            let ip = ipv4_header(fragment).expect("fragment is a whole IPv4 packet");
            assert!(ipv4_checksum_ok(ip.slice()), "fragment {i} header checksum");
            assert_eq!(ip.identification(), original_ip.identification());
            assert_eq!(ip.protocol(), original_ip.protocol());
            assert_eq!((ip.source(), ip.destination()), (V4_SRC, V4_DST));
            assert_eq!(
                usize::from(ip.fragments_offset().byte_offset()),
                usize::from(original_ip.fragments_offset().byte_offset()) + data.len(),
                "fragment {i} offset"
            );
            let last = i == fragments.len() - 1;
            assert_eq!(ip.more_fragments(), !last || original_ip.more_fragments());
            if !last {
                assert_eq!((fragment.len() - ip.slice().len()) % 8, 0);
            }
            data.extend_from_slice(&fragment[ip.slice().len()..]);
        }
        data
    }

    #[test]
    fn packets_within_the_mtu_fit() {
        assert_eq!(needs_fitting(&udp_v4(1300, true), 1300), Fit::Fits);
        assert_eq!(needs_fitting(&udp_v6(1300), 1300), Fit::Fits);
    }

    #[test]
    fn oversized_packets_are_classified_by_version_and_df() {
        assert_eq!(needs_fitting(&udp_v4(1301, true), 1300), Fit::TooBigDf);
        assert_eq!(
            needs_fitting(&udp_v4(1301, false), 1300),
            Fit::TooBigFragmentable
        );
        assert_eq!(needs_fitting(&udp_v6(1301), 1300), Fit::TooBigDf);
    }

    #[test]
    fn length_fields_that_disagree_with_the_packet_are_malformed() {
        let mut v4 = udp_v4(200, true);
        v4.push(0);
        assert_eq!(needs_fitting(&v4, 1500), Fit::Malformed);
        let v6 = udp_v6(200);
        assert_eq!(needs_fitting(&v6[..199], 1500), Fit::Malformed);
        assert_eq!(needs_fitting(&[], 1500), Fit::Malformed);
        assert_eq!(needs_fitting(&[0x50; 40], 1500), Fit::Malformed);
    }

    #[test]
    fn ipv4_reply_is_fragmentation_needed_quoting_header_and_8_bytes() {
        let packet = udp_v4(1400, true);
        let mut out = [0u8; 1500];
        let len = too_big_reply(&packet, 1300, &mut out).expect("a reply");
        let reply = &out[..len];
        assert_eq!(len, 20 + 8 + 20 + 8);

        let ip = ipv4_header(reply).expect("whole IPv4 packet");
        assert!(ipv4_checksum_ok(ip.slice()));
        assert_eq!((ip.source(), ip.destination()), (V4_DST, V4_SRC));
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), IpNumber::ICMP);

        let icmp = Icmpv4Slice::from_slice(&reply[20..]).unwrap();
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1300
            })
        );
        assert_eq!(
            Sum16BitWords::new()
                .add_slice(&reply[20..])
                .ones_complement(),
            0
        );
        assert_eq!(icmp.payload(), &packet[..28]);
    }

    #[test]
    fn ipv4_reply_quotes_options_too() {
        let packet = udp_v4_with(1400, true, &[1, 1, 1, 0], V4_DST);
        let mut out = [0u8; 1500];
        let len = too_big_reply(&packet, 1300, &mut out).unwrap();
        assert_eq!(&out[28..len], &packet[..24 + 8]);
    }

    #[test]
    fn ipv6_reply_is_packet_too_big_within_1280_bytes() {
        let packet = udp_v6(1500);
        let mut out = [0u8; 2000];
        let len = too_big_reply(&packet, 1400, &mut out).expect("a reply");
        assert_eq!(len, 1280);
        let reply = &out[..len];

        let ip = ipv6_header(reply).expect("whole IPv6 packet");
        assert_eq!((ip.source(), ip.destination()), (V6_DST, V6_SRC));
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.next_header(), IpNumber::IPV6_ICMP);
        let icmp = Icmpv6Slice::from_slice(&reply[40..]).unwrap();
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
        assert!(icmp.is_checksum_valid(V6_DST, V6_SRC));
        assert_eq!(icmp.payload(), &packet[..1280 - 48]);
    }

    #[test]
    fn ipv6_reply_announces_at_least_1280_and_quotes_small_packets_whole() {
        let packet = udp_v6(300);
        let mut out = [0u8; 2000];
        let len = too_big_reply(&packet, 200, &mut out).unwrap();
        let icmp = Icmpv6Slice::from_slice(&out[40..len]).unwrap();
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1280 });
        assert!(icmp.is_checksum_valid(V6_DST, V6_SRC));
        assert_eq!(icmp.payload(), &packet[..]);
    }

    #[test]
    fn icmp_errors_get_no_reply_but_queries_do() {
        let mut out = [0u8; 2000];
        let unreachable = icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Host,
        ));
        assert_eq!(too_big_reply(&unreachable, 1300, &mut out), None);
        let echo = icmpv4(Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
            id: 1,
            seq: 2,
        }));
        assert!(too_big_reply(&echo, 1300, &mut out).is_some());

        let too_big = icmpv6(Icmpv6Type::PacketTooBig { mtu: 1300 });
        assert_eq!(too_big_reply(&too_big, 1300, &mut out), None);
        let echo = icmpv6(Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
            id: 1,
            seq: 2,
        }));
        assert!(too_big_reply(&echo, 1300, &mut out).is_some());
    }

    #[test]
    fn multicast_and_broadcast_destinations_get_no_reply() {
        let mut out = [0u8; 2000];
        for dst in [[224, 0, 0, 251], [255, 255, 255, 255]] {
            let packet = udp_v4_with(1400, true, &[], dst);
            assert_eq!(too_big_reply(&packet, 1300, &mut out), None, "{dst:?}");
        }
        let mut all_nodes = [0u8; 16];
        all_nodes[..2].copy_from_slice(&[0xff, 0x02]);
        all_nodes[15] = 1;
        assert_eq!(
            too_big_reply(&udp_v6_to(1400, all_nodes), 1300, &mut out),
            None
        );
    }

    #[test]
    fn non_first_fragments_get_no_reply() {
        let mut out = [0u8; 2000];
        let mut v4 = udp_v4(1400, false);
        v4[6] = 0x20; // MF, offset 8 units
        v4[7] = 0x08;
        v4[10..12].fill(0);
        let checksum = Ipv4HeaderSlice::from_slice(&v4)
            .unwrap()
            .to_header()
            .calc_header_checksum();
        v4[10..12].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(too_big_reply(&v4, 1300, &mut out), None);

        // IPv6 header, fragment header at offset 185 units, then data.
        let data = payload(1400);
        let ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: (8 + data.len()) as u16,
            next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
            hop_limit: 64,
            source: V6_SRC,
            destination: V6_DST,
        };
        let fragment = etherparse::Ipv6FragmentHeader::new(
            IpNumber::UDP,
            IpFragOffset::try_new(185).unwrap(),
            true,
            7,
        );
        let packet = [&ip.to_bytes()[..], &fragment.to_bytes(), &data].concat();
        assert_eq!(needs_fitting(&packet, 1300), Fit::TooBigDf);
        assert_eq!(too_big_reply(&packet, 1300, &mut out), None);
    }

    #[test]
    fn reply_needs_room_in_out() {
        let mut out = [0u8; 55];
        assert_eq!(too_big_reply(&udp_v4(1400, true), 1300, &mut out), None);
        let mut out = [0u8; 56];
        assert_eq!(too_big_reply(&udp_v4(1400, true), 1300, &mut out), Some(56));
    }

    #[test]
    fn fragments_fit_the_mtu_and_reassemble_to_the_original() {
        let packet = udp_v4(1400, false);
        for mtu in [1399, 1001, 576, 68] {
            let fragments = fragments(&packet, mtu).expect("fragmentable");
            assert!(fragments.len() >= 2);
            let data = reassemble(&packet, &fragments, mtu);
            assert_eq!(data, &packet[20..], "mtu {mtu}");
        }
    }

    #[test]
    fn a_packet_that_fits_is_emitted_unchanged() {
        let packet = udp_v4(1000, false);
        assert_eq!(fragments(&packet, 1000), Some(vec![packet]));
    }

    #[test]
    fn fragmenting_refuses_df_and_mtus_without_room_for_data() {
        assert_eq!(fragments(&udp_v4(1400, true), 1300), None);
        assert_eq!(fragments(&udp_v4(1400, false), 27), None);
        assert!(fragments(&udp_v4(1400, false), 28).is_some());
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        // NOP, loose source route (copied), record route (not copied), END.
        let options = [1, 0x83, 7, 4, 192, 0, 2, 1, 0x07, 7, 4, 0, 0, 0, 0, 0];
        let packet = udp_v4_with(1400, false, &options, V4_DST);
        let fragments = fragments(&packet, 576).unwrap();
        let first = Ipv4HeaderSlice::from_slice(&fragments[0]).unwrap();
        assert_eq!(first.options(), &options);
        for fragment in &fragments[1..] {
            let ip = Ipv4HeaderSlice::from_slice(fragment).unwrap();
            assert_eq!(ip.options(), &[0x83, 7, 4, 192, 0, 2, 1, 0]);
        }
        assert_eq!(reassemble(&packet, &fragments, 576), &packet[36..]);
    }

    #[test]
    fn malformed_options_are_refused() {
        let packet = udp_v4_with(1400, false, &[0x83, 9, 4, 192, 0, 2, 1, 0], V4_DST);
        assert_eq!(fragments(&packet, 576), None);
    }

    #[test]
    fn fragmenting_a_fragment_keeps_its_offset_and_more_fragments_flag() {
        let mut packet = udp_v4(1400, false);
        packet[6] = 0x20; // MF, offset 100 units
        packet[7] = 100;
        packet[10..12].fill(0);
        let checksum = Ipv4HeaderSlice::from_slice(&packet)
            .unwrap()
            .to_header()
            .calc_header_checksum();
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        let fragments = fragments(&packet, 600).unwrap();
        assert_eq!(reassemble(&packet, &fragments, 600), &packet[20..]);
    }

    #[test]
    fn clamping_lowers_a_larger_mss_and_keeps_the_checksum_valid() {
        let packet = tcp_syn_v4(&[2, 4, 0x05, 0xb4]);
        let mut clamped = packet.clone();
        assert!(clamp_mss(&mut clamped, 1360));
        assert_eq!(mss_values(&clamped), [1360]);
        assert!(tcp_checksum_ok(&clamped));

        let mut v6 = tcp_syn_v6(&[
            TcpOptionElement::MaximumSegmentSize(1440),
            TcpOptionElement::WindowScale(7),
        ]);
        assert!(clamp_mss(&mut v6, 1340));
        assert_eq!(mss_values(&v6), [1340]);
        assert!(tcp_checksum_ok(&v6));
    }

    #[test]
    fn clamping_an_mss_at_an_odd_offset_keeps_the_checksum_valid() {
        let mut packet = tcp_syn_v4(&[1, 2, 4, 0x05, 0xb4, 1, 1, 0]);
        assert!(clamp_mss(&mut packet, 1200));
        assert_eq!(mss_values(&packet), [1200]);
        assert!(tcp_checksum_ok(&packet));
    }

    #[test]
    fn clamping_leaves_smaller_mss_non_syn_and_non_tcp_alone() {
        let packet = tcp_syn_v4(&[2, 4, 0x04, 0x00]);
        let mut copy = packet.clone();
        assert!(!clamp_mss(&mut copy, 1360));
        assert_eq!(copy, packet);

        let mut ack = Vec::new();
        PacketBuilder::ipv4(V4_SRC, V4_DST, 64)
            .tcp(40000, 443, 1, 64240)
            .ack(5)
            .options_raw(&[2, 4, 0x05, 0xb4])
            .unwrap()
            .write(&mut ack, &[])
            .unwrap();
        assert!(!clamp_mss(&mut ack, 1360));

        assert!(!clamp_mss(&mut udp_v4(1400, true), 1360));
    }

    #[test]
    fn mss_is_the_mtu_less_ip_and_tcp_headers() {
        assert_eq!(mss_for(1400, false), 1360);
        assert_eq!(mss_for(1400, true), 1340);
        assert_eq!(mss_for(30, false), 0);
        assert_eq!(mss_for(1 << 20, true), u16::MAX);
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = IcmpRateLimiter::default();
        assert_eq!((0..30).filter(|_| limiter.allow(start)).count(), 20);
        let later = start + Duration::from_millis(10);
        assert!(limiter.allow(later));
        assert!(!limiter.allow(later));
        // A clock that seems to go back only denies.
        assert!(!limiter.allow(start));
        let rested = start + Duration::from_secs(2);
        assert_eq!((0..30).filter(|_| limiter.allow(rested)).count(), 20);
    }

    #[test]
    fn rate_limiter_over_a_second_allows_burst_plus_rate() {
        let start = Instant::now();
        let mut limiter = IcmpRateLimiter::new(100, 20);
        let allowed = (0..1000)
            .filter(|i| limiter.allow(start + Duration::from_millis(*i)))
            .count();
        // 20 at once, then one per 10 ms.
        assert!((118..=121).contains(&allowed), "{allowed}");
    }

    /// xorshift64*: deterministic, seeded, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn no_input_makes_any_function_panic() {
        let seeds = [
            udp_v4(1400, false),
            udp_v4_with(600, false, &[0x83, 7, 4, 192, 0, 2, 1, 0], V4_DST),
            udp_v6(1400),
            tcp_syn_v4(&[1, 2, 4, 0x05, 0xb4, 1, 1, 0]),
            tcp_syn_v6(&[TcpOptionElement::MaximumSegmentSize(1440)]),
            icmpv4(Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
                id: 1,
                seq: 2,
            })),
        ];
        let mut rng = Rng(0x5eed_cafe_f00d_d00d);
        let mut out = vec![0u8; 2048];
        let (mut fits, mut replies, mut fragmented, mut clamped) = (0, 0, 0, 0);
        for _ in 0..100_000 {
            let mut packet = match rng.below(3) {
                0 => {
                    let len = rng.below(1600);
                    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if let Some(first) = bytes.first_mut() {
                        *first = (*first & 0x0f) | if rng.below(2) == 0 { 0x40 } else { 0x60 };
                    }
                    bytes
                }
                1 => {
                    let mut bytes = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..rng.below(4) {
                        // Mostly in the headers, where the parsing is.
                        let at = rng.below(bytes.len().min(80));
                        bytes[at] = rng.next() as u8;
                    }
                    bytes
                }
                _ => {
                    let mut bytes = seeds[rng.below(seeds.len())].clone();
                    bytes.truncate(rng.below(bytes.len() + 1));
                    bytes
                }
            };
            let mtu = rng.below(1600);
            if needs_fitting(&packet, mtu) == Fit::Fits {
                fits += 1;
            }
            let out_len = rng.below(out.len() + 1);
            if let Some(len) = too_big_reply(&packet, mtu as u16, &mut out[..out_len]) {
                assert!(len <= out_len && len <= 1280);
                replies += 1;
            }
            if fragment_ipv4(&packet, mtu, |f| assert!(f.len() <= mtu)) {
                fragmented += 1;
            }
            let checksum_was_ok = tcp_offset(&packet).is_some() && tcp_checksum_ok(&packet);
            if clamp_mss(&mut packet, rng.below(2000) as u16) {
                assert!(!checksum_was_ok || tcp_checksum_ok(&packet));
                clamped += 1;
            }
        }
        // The inputs reach past the parsers, not only into them.
        for (what, count) in [
            ("fits", fits),
            ("replies", replies),
            ("fragmented", fragmented),
            ("clamped", clamped),
        ] {
            assert!(count > 1000, "only {count} {what}");
        }
    }
}
