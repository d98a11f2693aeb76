//! Fitting inner packets to the path MTU toward a peer: pure functions over
//! the IP packets the data path moves between the TUN device and the
//! device.
//!
//! When an IP packet read from the TUN device is larger than the inner MTU
//! toward its peer (the discovered path MTU less weft's overhead), the data
//! path asks [`needs_fitting`] what to do, then either splits the packet with
//! [`fragment::fragment_ipv4`] or drops it and writes the ICMP "too big"
//! answer from [`icmp::too_big_reply`] back into the TUN device (paced by
//! [`icmp::IcmpRateLimiter`]). [`mss`] lowers the MSS of TCP SYNs so most
//! TCP traffic never gets that far.
//!
//! This module and its three files own those packet decisions and encodings
//! only: they never do I/O, never read the clock, never allocate on the data
//! path (outputs go into caller buffers or a stack buffer), never route
//! (the caller says which peer's MTU applies) and never panic on any input;
//! whatever they cannot parse they report (`Fit::Malformed`, `None`,
//! `false`) and leave to the caller to drop.
//!
//! Header parsing and writing use `etherparse`. Written by hand here, because
//! etherparse lacks them: walking IPv4 and TCP options by byte position (its
//! TCP option iterator yields values, not where they sit, and it keeps IPv4
//! options as raw bytes), and the RFC 1624 incremental checksum update.

pub mod fragment;
pub mod icmp;
pub mod mss;
#[cfg(test)]
mod test_packets;

use etherparse::{Ipv4HeaderSlice, Ipv6Header, Ipv6HeaderSlice};

/// What the data path must do with an inner packet before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// At most `inner_mtu` bytes: send it as it is.
    Fits,
    /// Too big, and must not be fragmented (IPv4 with DF set, or any IPv6
    /// packet): drop it and answer with [`icmp::too_big_reply`].
    TooBigDf,
    /// Too big, IPv4 without DF: split it with [`fragment::fragment_ipv4`].
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

/// The IPv4 header of `packet` if it is whole and its total length is the
/// packet's length (a TUN read is exactly one packet: a mismatch is
/// corruption, not padding).
pub(crate) fn ipv4_header(packet: &[u8]) -> Option<Ipv4HeaderSlice<'_>> {
    let ip = Ipv4HeaderSlice::from_slice(packet).ok()?;
    (usize::from(ip.total_len()) == packet.len()).then_some(ip)
}

/// The IPv6 header of `packet` if its payload length is the rest of the
/// packet (jumbograms, with payload length 0, never come from a TUN device).
pub(crate) fn ipv6_header(packet: &[u8]) -> Option<Ipv6HeaderSlice<'_>> {
    let ip = Ipv6HeaderSlice::from_slice(packet).ok()?;
    (Ipv6Header::LEN + usize::from(ip.payload_length()) == packet.len()).then_some(ip)
}

/// Copies `parts` one after another to the start of `out` and returns
/// their total length, or `None` if `out` is too small.
pub(crate) fn write_parts(out: &mut [u8], parts: &[&[u8]]) -> Option<usize> {
    let mut len = 0;
    for part in parts {
        out.get_mut(len..len + part.len())?.copy_from_slice(part);
        len += part.len();
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::fragment::fragment_ipv4;
    use super::icmp::too_big_reply;
    use super::mss;
    use super::test_packets::*;
    use super::*;
    use etherparse::{Icmpv4Type, TcpOptionElement};

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
            let checksum_was_ok = mss::find_syn(&packet).is_some() && tcp_checksum_ok(&packet);
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
