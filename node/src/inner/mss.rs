//! TCP MSS clamping: SYNs and SYN-ACKs crossing the tunnel get an MSS that
//! fits the edge toward the peer, so TCP never sends a segment the edge
//! would have to refuse or fragment.
//!
//! The data path reads each packet once with [`find_syn`]: most packets
//! are ruled out by two bytes (protocol and TCP flags); a SYN comes back
//! with where its TCP header sits and where it goes, so the caller can pick
//! the peer (by routing the destination, or the peer it came from) and
//! [`clamp`] it without reading the headers again. This file never routes,
//! never changes anything but the MSS option and the TCP checksum, and
//! leaves alone what it does not fully understand: fragments, IPv6 with
//! extension headers, malformed packets.

use std::net::IpAddr;

use etherparse::{IpNumber, Ipv6Header, TcpHeader, TcpHeaderSlice};

use super::{ipv4_header, ipv6_header};

/// TCP option kinds (RFC 9293 §3.1).
const TCP_OPT_END: u8 = 0;
const TCP_OPT_NOP: u8 = 1;
const TCP_OPT_MSS: u8 = 2;

/// The SYN flag in the 14th byte of the TCP header.
const TCP_FLAG_SYN: u8 = 0x02;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_AT: usize = 13;

/// A TCP SYN (or SYN-ACK) found in an inner packet by [`find_syn`]: where
/// its TCP header is and where the packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    /// Offset of the TCP header in the packet.
    tcp_start: usize,
    /// Length of the TCP header, options included.
    tcp_len: usize,
    /// The packet's destination.
    pub destination: IpAddr,
}

impl Syn {
    /// Offset of the TCP header in the packet.
    #[cfg(test)]
    pub fn tcp_start(&self) -> usize {
        self.tcp_start
    }

    /// The MSS that keeps this connection's segments within `inner_mtu`.
    pub fn mss_for(&self, inner_mtu: usize) -> u16 {
        mss_for(inner_mtu, self.destination.is_ipv6())
    }
}

/// Reads `packet` once and returns the SYN in it: an unfragmented TCP
/// segment with SYN set, directly in IPv4 or in IPv6 without extension
/// headers, whose IP header is whole, whose length field is the packet's
/// length and whose TCP header is whole. Anything else is `None`, most of it
/// decided from the protocol byte and the TCP flags before any header is
/// checked.
pub fn find_syn(packet: &[u8]) -> Option<Syn> {
    let (tcp_start, destination) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if packet.get(9) != Some(&IpNumber::TCP.0) || !syn_flag(packet, ihl) {
                return None;
            }
            let ip = ipv4_header(packet)?;
            if ip.is_fragmenting_payload() {
                return None;
            }
            (ip.slice().len(), IpAddr::V4(ip.destination_addr()))
        }
        6 => {
            if packet.get(6) != Some(&IpNumber::TCP.0) || !syn_flag(packet, Ipv6Header::LEN) {
                return None;
            }
            (
                Ipv6Header::LEN,
                IpAddr::V6(ipv6_header(packet)?.destination_addr()),
            )
        }
        _ => return None,
    };
    let tcp = TcpHeaderSlice::from_slice(packet.get(tcp_start..)?).ok()?;
    Some(Syn {
        tcp_start,
        tcp_len: tcp.slice().len(),
        destination,
    })
}

/// Whether the TCP flags of a segment starting at `tcp_start` have SYN set.
fn syn_flag(packet: &[u8], tcp_start: usize) -> bool {
    packet
        .get(tcp_start + TCP_FLAGS_AT)
        .is_some_and(|flags| flags & TCP_FLAG_SYN != 0)
}

/// Lowers the MSS option of `syn`, found in `packet` by [`find_syn`], to
/// `max_mss` if it is larger, fixing the TCP checksum in place, and returns
/// whether it changed anything. `packet` is the one `syn` was found in,
/// unchanged since (given another, it still never panics).
pub fn clamp(packet: &mut [u8], syn: Syn, max_mss: u16) -> bool {
    match packet.get_mut(syn.tcp_start..) {
        Some(segment) => clamp_segment_mss(segment, syn.tcp_len, max_mss),
        None => false,
    }
}

/// Walks the options of a TCP header of `header_len` bytes at the start of
/// `segment` and lowers every MSS option above `max_mss`.
fn clamp_segment_mss(segment: &mut [u8], header_len: usize, max_mss: u16) -> bool {
    let header_len = header_len.min(segment.len());
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

#[cfg(test)]
mod tests {
    use super::super::test_packets::*;
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement};

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
}
