//! The few facts weft reads from inner IP packets: version, addresses and
//! the length the header declares.
//!
//! Only what cryptokey routing needs. Inner packets come from the local TUN
//! device or out of an authenticated transport message; either way they are
//! checked here before any field is used, so a short or lying packet is a
//! counted drop, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses and declared length of an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpSummary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Total length the header declares (header included).
    pub len: usize,
}

/// Reads version, addresses and declared length. `None` when the packet is
/// not IPv4 or IPv6, is shorter than its fixed header, or declares more
/// bytes than it has.
pub fn summarize(packet: &[u8]) -> Option<IpSummary> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if len > packet.len() || len < ihl || ihl < 20 {
                return None;
            }
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            Some(IpSummary {
                src: src.into(),
                dst: dst.into(),
                len,
            })
        }
        6 if packet.len() >= 40 => {
            let len = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if len > packet.len() {
                return None;
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&packet[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&packet[24..40]);
            Some(IpSummary {
                src: Ipv6Addr::from(s).into(),
                dst: Ipv6Addr::from(d).into(),
                len,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(len: u16) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(len)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[12..16].copy_from_slice(&[100, 64, 0, 1]);
        p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        p
    }

    #[test]
    fn ipv4_addresses_and_length_are_read() {
        let s = summarize(&v4(60)).unwrap();
        assert_eq!(s.src, IpAddr::from([100, 64, 0, 1]));
        assert_eq!(s.dst, IpAddr::from([100, 64, 0, 2]));
        assert_eq!(s.len, 60);
    }

    #[test]
    fn padding_after_the_declared_length_is_ignored() {
        let mut p = v4(41);
        p.resize(48, 0);
        assert_eq!(summarize(&p).unwrap().len, 41);
    }

    #[test]
    fn a_packet_declaring_more_than_it_has_is_refused() {
        let mut p = v4(60);
        p.truncate(59);
        assert!(summarize(&p).is_none());
    }

    #[test]
    fn ipv6_length_counts_the_fixed_header() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[23] = 1;
        p[39] = 2;
        let s = summarize(&p).unwrap();
        assert_eq!(s.len, 48);
        assert_eq!(s.src, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn short_and_unknown_packets_are_refused() {
        for p in [&[][..], &[0x45; 19][..], &[0x60; 39][..], &[0x00; 60][..]] {
            assert!(summarize(p).is_none());
        }
    }
}
