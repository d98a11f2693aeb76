//! Packets for the tests of `inner`: well-formed IPv4/IPv6 UDP, ICMP and
//! TCP SYN packets built with etherparse, and checksum checks.

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    Icmpv4Type, Icmpv6Type, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options,
    PacketBuilder, TcpHeaderSlice, TcpOptionElement,
};

use super::mss::{clamp, find_syn};

pub const V4_SRC: [u8; 4] = [100, 64, 1, 2];
pub const V4_DST: [u8; 4] = [100, 64, 3, 4];
pub const V6_SRC: [u8; 16] = [0xfd, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const V6_DST: [u8; 16] = [0xfd, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];

pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// An IPv4 UDP packet of `total_len` bytes.
pub fn udp_v4(total_len: usize, dont_fragment: bool) -> Vec<u8> {
    udp_v4_with(total_len, dont_fragment, &[], V4_DST)
}

pub fn udp_v4_with(total_len: usize, df: bool, options: &[u8], dst: [u8; 4]) -> Vec<u8> {
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

pub fn udp_v6(total_len: usize) -> Vec<u8> {
    udp_v6_to(total_len, V6_DST)
}

pub fn udp_v6_to(total_len: usize, dst: [u8; 16]) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv6(V6_SRC, dst, 64)
        .udp(5000, 6000)
        .write(&mut packet, &payload(total_len - 48))
        .unwrap();
    packet
}

pub fn icmpv4(icmp_type: Icmpv4Type) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(V4_SRC, V4_DST, 64)
        .icmpv4(icmp_type)
        .write(&mut packet, &payload(1400))
        .unwrap();
    packet
}

pub fn icmpv6(icmp_type: Icmpv6Type) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv6(V6_SRC, V6_DST, 64)
        .icmpv6(icmp_type)
        .write(&mut packet, &payload(1400))
        .unwrap();
    packet
}

pub fn tcp_syn_v4(options: &[u8]) -> Vec<u8> {
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

pub fn tcp_syn_v6(options: &[TcpOptionElement]) -> Vec<u8> {
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
pub fn mss_values(packet: &[u8]) -> Vec<u16> {
    let start = find_syn(packet).unwrap().tcp_start();
    let tcp = TcpHeaderSlice::from_slice(&packet[start..]).unwrap();
    tcp.options_iterator()
        .filter_map(|o| match o.unwrap() {
            TcpOptionElement::MaximumSegmentSize(mss) => Some(mss),
            _ => None,
        })
        .collect()
}

/// Whether the TCP checksum in `packet` verifies (sums to zero).
pub fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let start = find_syn(packet).unwrap().tcp_start();
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

pub fn ipv4_checksum_ok(header: &[u8]) -> bool {
    Sum16BitWords::new().add_slice(header).ones_complement() == 0
}

/// [`find_syn`] and [`clamp`] in one, as the data path uses them: lowers
/// the MSS option of a TCP SYN (or SYN-ACK) in `packet` to `max_mss` and
/// returns whether it changed anything.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    match find_syn(packet) {
        Some(syn) => clamp(packet, syn, max_mss),
        None => false,
    }
}
