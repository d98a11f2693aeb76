//! IPv4 fragmentation of inner packets too big for the edge toward their
//! peer (RFC 791 §3.2), for packets whose sender allows it (DF clear).
//!
//! [`fragment_ipv4`] builds the fragments one at a time in a stack buffer
//! and hands each to the caller, which seals it in its own slot. It never
//! fragments a DF packet or IPv6 (those get an ICMP answer, `icmp.rs`),
//! never reassembles (the protocol device does, for its own pieces) and
//! never allocates.

use etherparse::{IpFragOffset, Ipv4Header, Ipv4Options};

use super::{ipv4_header, write_parts};

/// Largest fragment [`fragment_ipv4`] builds, whatever the inner MTU: the
/// size of its stack buffer (a jumbo frame).
pub const MAX_FRAGMENT_LEN: usize = 9216;

/// IPv4 option types that are a single byte (RFC 791 §3.1).
const IPV4_OPT_END: u8 = 0;
const IPV4_OPT_NOP: u8 = 1;
/// The "copied" flag of an IPv4 option type: the option goes into every
/// fragment, not only the first.
const IPV4_OPT_COPIED: u8 = 0x80;

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

#[cfg(test)]
mod tests {
    use super::super::test_packets::*;
    use super::*;
    use etherparse::Ipv4HeaderSlice;

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
}
