//! Real inner IPv4/IPv6 packets for the simulator, as a TUN device would
//! hand them over, and their strict parsing on the receiving side.
//!
//! The payload starts with a 64-bit sequence number followed by filler bytes
//! derived from it, so the receiver can prove that a packet arrived whole and
//! unaltered, and tell which one it is. Protocol 253 (RFC 3692, for
//! experiments) spares us a transport checksum; the IPv4 header checksum is
//! real.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Protocol / next-header number used by simulator packets.
const PROTO_EXPERIMENT: u8 = 253;
const SEQ_LEN: usize = 8;
/// Smallest IPv4 packet the simulator builds: header and sequence number.
pub(crate) const MIN_V4: usize = 20 + SEQ_LEN;
/// Smallest IPv6 packet the simulator builds.
pub(crate) const MIN_V6: usize = 40 + SEQ_LEN;

/// What the receiver read from a delivered inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inner {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub seq: u64,
    pub len: usize,
}

fn filler(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

fn write_payload(payload: &mut [u8], seq: u64) {
    payload[..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in payload[SEQ_LEN..].iter_mut().enumerate() {
        *b = filler(seq, i);
    }
}

fn check_payload(payload: &[u8]) -> Result<u64, String> {
    let seq_bytes: [u8; SEQ_LEN] = payload
        .get(..SEQ_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or("payload shorter than a sequence number")?;
    let seq = u64::from_be_bytes(seq_bytes);
    for (i, b) in payload[SEQ_LEN..].iter().enumerate() {
        if *b != filler(seq, i) {
            return Err(format!("payload byte {i} of packet {seq} altered"));
        }
    }
    Ok(seq)
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet of `len` bytes (at least [`MIN_V4`]) carrying `seq`.
pub(crate) fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, seq: u64, len: usize) -> Vec<u8> {
    assert!(
        (MIN_V4..=usize::from(u16::MAX)).contains(&len),
        "IPv4 length {len}"
    );
    let mut p = vec![0u8; len];
    p[0] = 0x45; // version 4, five 32-bit words of header
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes()); // identification
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = PROTO_EXPERIMENT;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    write_payload(&mut p[20..], seq);
    p
}

/// An IPv6 packet of `len` bytes (at least [`MIN_V6`]) carrying `seq`.
pub(crate) fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, seq: u64, len: usize) -> Vec<u8> {
    assert!(
        (MIN_V6..=40 + usize::from(u16::MAX)).contains(&len),
        "IPv6 length {len}"
    );
    let mut p = vec![0u8; len];
    p[0] = 0x60; // version 6, traffic class and flow label zero
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = PROTO_EXPERIMENT;
    p[7] = 64; // hop limit
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    write_payload(&mut p[40..], seq);
    p
}

/// Parses a packet the device handed to the TUN side, checking every field
/// the simulator wrote. `packet` is exactly what the device said to write.
pub(crate) fn parse(packet: &[u8]) -> Result<Inner, String> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            if packet.len() < MIN_V4 {
                return Err(format!("IPv4 packet of {} bytes", packet.len()));
            }
            if packet[0] != 0x45 || packet[9] != PROTO_EXPERIMENT {
                return Err("IPv4 header altered".into());
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            if total != packet.len() {
                return Err(format!(
                    "IPv4 total length {total}, {} delivered",
                    packet.len()
                ));
            }
            if checksum(&packet[..20]) != 0 {
                return Err("IPv4 header checksum wrong".into());
            }
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            Ok(Inner {
                src: src.into(),
                dst: dst.into(),
                seq: check_payload(&packet[20..])?,
                len: total,
            })
        }
        Some(6) => {
            if packet.len() < MIN_V6 {
                return Err(format!("IPv6 packet of {} bytes", packet.len()));
            }
            if packet[6] != PROTO_EXPERIMENT {
                return Err("IPv6 header altered".into());
            }
            let total = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if total != packet.len() {
                return Err(format!("IPv6 length {total}, {} delivered", packet.len()));
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&packet[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&packet[24..40]);
            Ok(Inner {
                src: Ipv6Addr::from(s).into(),
                dst: Ipv6Addr::from(d).into(),
                seq: check_payload(&packet[40..])?,
                len: total,
            })
        }
        _ => Err("not an IP packet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet;

    #[test]
    fn built_packets_parse_back_and_agree_with_the_protocol_summary() {
        let (a4, b4) = (Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2));
        let (a6, b6): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        for len in [MIN_V4, 61, 1420] {
            let p = ipv4(a4, b4, 77, len);
            let got = parse(&p).unwrap();
            assert_eq!(
                (got.src, got.dst, got.seq, got.len),
                (a4.into(), b4.into(), 77, len)
            );
            let s = packet::summarize(&p).unwrap();
            assert_eq!((s.src, s.dst, s.len), (got.src, got.dst, len));
        }
        for len in [MIN_V6, 99, 1420] {
            let p = ipv6(a6, b6, 9, len);
            let got = parse(&p).unwrap();
            assert_eq!(
                (got.src, got.dst, got.seq, got.len),
                (a6.into(), b6.into(), 9, len)
            );
            assert_eq!(packet::summarize(&p).unwrap().len, len);
        }
    }

    #[test]
    fn an_altered_packet_is_detected() {
        let mut p = ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 5, 100);
        p[60] ^= 1;
        assert!(parse(&p).is_err());
        let mut p = ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 5, 100);
        p[15] ^= 1;
        assert!(parse(&p).is_err(), "checksum covers the source");
        let p = ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 5, 100);
        assert!(parse(&p[..99]).is_err());
    }
}
