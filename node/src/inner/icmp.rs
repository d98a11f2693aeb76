//! ICMP "too big" answers written back into the TUN device, and their pace.
//!
//! When a packet that must not be fragmented does not fit the edge toward
//! its peer, the data path drops it and hands its sender the answer a router
//! would give: [`too_big_reply`] builds it in a caller buffer,
//! [`IcmpRateLimiter`] paces such answers. This file never decides *whether*
//! a packet fits (`inner::needs_fitting` does), never reads the clock (the
//! caller passes `now`) and never answers an ICMP error or a packet that
//! names no single host.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6ExtensionSlice,
    Ipv6ExtensionsSlice, Ipv6FlowLabel, Ipv6Header,
};

use super::{ipv4_header, ipv6_header, write_parts};

/// TTL / hop limit of the ICMP replies weft writes into the TUN device.
const REPLY_TTL: u8 = 64;

/// The IPv6 minimum link MTU (RFC 8200 §5): the floor of the MTU announced
/// in a Packet Too Big, and the ceiling of any ICMPv6 error (RFC 4443 §2.4 c).
const IPV6_MIN_MTU: usize = 1280;

/// Bytes of an ICMPv6 error before its quote: IPv6 header and ICMPv6 header.
const IPV6_ICMP_OVERHEAD: usize = Ipv6Header::LEN + 8;

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

#[cfg(test)]
mod tests {
    use super::super::test_packets::*;
    use super::super::{needs_fitting, Fit};
    use super::*;
    use etherparse::{
        checksum::Sum16BitWords, Icmpv4Slice, Icmpv6Slice, IpFragOffset, Ipv4HeaderSlice,
    };

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
}
