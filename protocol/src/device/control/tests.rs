//! The control dispatch between two devices wired back to back: every
//! authenticated control plaintext is parsed once, a malformed one is one
//! counted drop, and a well-formed one reaches its feature.

use std::time::Instant;

use super::*;
use crate::device::fixtures::{addr, device, peer, A_ADDR, B_ADDR};
use crate::wire::control::{
    Ping, Pong, Probe, PROBE_MIN_LEN, PUNCH_OFFER_HEADER_LEN, TYPE_PUNCH_OFFER,
};

/// Everything `from` sends, delivered to `to` as from `seen_from`; the
/// plaintexts `to` would have to open are not looked at.
fn deliver(from: &mut Device, to: &mut Device, seen_from: &str, now: Instant) {
    let mut buf = vec![0u8; 2048];
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        let mut d = buf[..t.len].to_vec();
        to.decapsulate(now, addr(seen_from), &mut d);
    }
}

/// A and B with a session (A initiated), both quiet.
fn connected(now: Instant) -> (Device, Device, PeerId) {
    let mut a = device(1, now);
    let mut b = device(2, now);
    let ab = a
        .add_peer(peer(2, Some(B_ADDR), "100.64.0.2/32"), now)
        .unwrap();
    b.add_peer(peer(1, Some(A_ADDR), "100.64.0.1/32"), now)
        .unwrap();
    a.start_handshake(ab, now, false);
    for _ in 0..3 {
        deliver(&mut a, &mut b, A_ADDR, now);
        deliver(&mut b, &mut a, B_ADDR, now);
    }
    (a, b, ab)
}

/// `plain` sealed by A for B exactly as given (unpadded), as a peer running
/// other code could send it.
fn sealed_raw(a: &mut Device, ab: PeerId, plain: &[u8], now: Instant) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let t = a
        .seal_direct(ab, plain, addr(B_ADDR), now, &mut buf)
        .unwrap();
    buf[..t.len].to_vec()
}

fn total_drops(d: &Device) -> u64 {
    DropReason::ALL.iter().map(|r| d.stats().dropped(*r)).sum()
}

#[test]
fn every_control_message_cut_short_is_one_counted_malformed_drop_not_a_panic() {
    let now = Instant::now();
    let (mut a, mut b, ab) = connected(now);
    // Every type but the punch has fields after its type byte; a pong cut
    // before its address once panicked the receiver.
    let types = [
        0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12,
    ];
    for kind in types {
        // An offer of no endpoints is three bytes; everything else has at
        // least five.
        let shortest = match kind {
            TYPE_PUNCH_OFFER => PUNCH_OFFER_HEADER_LEN,
            _ => PROBE_MIN_LEN,
        };
        for len in 1..shortest {
            let mut plain = vec![0u8; len];
            plain[0] = kind;
            let mut d = sealed_raw(&mut a, ab, &plain, now);
            let before = b.stats().dropped(DropReason::MalformedInner);
            let drops = total_drops(&b);
            assert_eq!(
                b.decapsulate(now, addr(A_ADDR), &mut d),
                Decapsulated::Dropped(DropReason::MalformedInner),
                "type {kind:#04x}, {len} bytes"
            );
            assert_eq!(b.stats().dropped(DropReason::MalformedInner), before + 1);
            assert_eq!(total_drops(&b), drops + 1);
        }
    }
    // Unassigned types are malformed too, however long.
    for kind in [0x00u8, 0x0a, 0x0b, 0x14, 0x3f] {
        let mut d = sealed_raw(&mut a, ab, &[kind; 40], now);
        assert_eq!(
            b.decapsulate(now, addr(A_ADDR), &mut d),
            Decapsulated::Dropped(DropReason::MalformedInner)
        );
    }
}

#[test]
fn a_probe_is_acknowledged_with_the_length_of_the_datagram_that_carried_it() {
    let now = Instant::now();
    let (mut a, mut b, ab) = connected(now);
    let probe = Control::Probe(Probe { id: 42, len: 600 });
    let mut d = sealed_raw(&mut a, ab, &probe.to_vec(), now);
    let carried = d.len();
    assert_eq!(
        b.decapsulate(now, addr(A_ADDR), &mut d),
        Decapsulated::Consumed
    );
    let mut buf = vec![0u8; 2048];
    let t = b.poll_transmit(now, &mut buf).expect("an acknowledgement");
    let mut ack = buf[..t.len].to_vec();
    // Open it at A by hand: its plaintext is the acknowledgement.
    let peer = &mut a.peers[ab];
    let receiver = u32::from_le_bytes(ack[4..8].try_into().unwrap());
    let counter = u64::from_le_bytes(ack[8..16].try_into().unwrap());
    let (_, session) = peer.keys.session_mut(receiver).unwrap();
    let n = session
        .open(counter, &mut ack[TRANSPORT_HEADER_LEN..])
        .unwrap();
    assert_eq!(
        Control::parse(&ack[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + n]),
        Ok(Control::ProbeAck(ProbeAck {
            id: 42,
            received: carried as u16
        }))
    );
}

#[test]
fn a_ping_is_answered_with_a_pong_naming_where_it_came_from() {
    let now = Instant::now();
    let (mut a, mut b, ab) = connected(now);
    let ping = Control::Ping(Ping { id: 7 });
    let mut d = sealed_raw(&mut a, ab, &ping.to_vec(), now);
    assert_eq!(
        b.decapsulate(now, addr(A_ADDR), &mut d),
        Decapsulated::Consumed
    );
    let mut buf = vec![0u8; 2048];
    let t = b.poll_transmit(now, &mut buf).expect("a pong");
    let mut pong = buf[..t.len].to_vec();
    let peer = &mut a.peers[ab];
    let receiver = u32::from_le_bytes(pong[4..8].try_into().unwrap());
    let counter = u64::from_le_bytes(pong[8..16].try_into().unwrap());
    let (_, session) = peer.keys.session_mut(receiver).unwrap();
    let n = session
        .open(counter, &mut pong[TRANSPORT_HEADER_LEN..])
        .unwrap();
    assert_eq!(
        Control::parse(&pong[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + n]),
        Ok(Control::Pong(Pong {
            id: 7,
            observed: addr(A_ADDR)
        }))
    );
}

#[test]
fn a_piece_that_completes_a_malformed_packet_is_reported_dropped_and_counted_once() {
    let now = Instant::now();
    let (mut a, mut b, ab) = connected(now);
    let piece = |index: u8, body: &'static [u8]| {
        Control::Fragment(crate::wire::control::Fragment {
            id: 7,
            index,
            count: 2,
            payload: body,
        })
        .to_vec()
    };
    let mut first = sealed_raw(&mut a, ab, &piece(0, &[0xff; 600]), now);
    assert_eq!(
        b.decapsulate(now, addr(A_ADDR), &mut first),
        Decapsulated::Consumed
    );
    let drops = total_drops(&b);
    let mut second = sealed_raw(&mut a, ab, &piece(1, &[0xff; 600]), now);
    assert_eq!(
        b.decapsulate(now, addr(A_ADDR), &mut second),
        Decapsulated::Dropped(DropReason::MalformedInner)
    );
    assert_eq!(total_drops(&b), drops + 1);
    assert_eq!(b.poll_reassembled(&mut [0u8; 2048]), None);
}
