//! The helper's side of binding trials and roaming on handshakes, with two
//! devices wired back to back by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::device::fixtures::{addr, device, peer, A_ADDR, B_ADDR};
use crate::noise::StaticSecret;

const PROBE: &str = "203.0.113.1:40100";
const STRANGER: &str = "203.0.113.66:9999";

/// Delivers everything `from` sends to `to`, as if from `seen_from`;
/// returns the destinations `from` used.
fn deliver(from: &mut Device, to: &mut Device, seen_from: &str, now: Instant) -> Vec<SocketAddr> {
    let mut buf = vec![0u8; 2048];
    let mut dests = Vec::new();
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        dests.push(t.destination);
        let mut d = buf[..t.len].to_vec();
        to.decapsulate(now, addr(seen_from), &mut d);
    }
    dests
}

/// A and B with a session (A initiated), B with A's endpoint learned.
fn connected(now: Instant) -> (Device, Device, PeerId, PeerId) {
    let mut a = device(1, now);
    let mut b = device(2, now);
    let ab = a
        .add_peer(peer(2, Some(B_ADDR), "100.64.0.2/32"), now)
        .unwrap();
    let ba = b.add_peer(peer(1, None, "100.64.0.1/32"), now).unwrap();
    a.start_handshake(ab, now, false);
    for _ in 0..3 {
        deliver(&mut a, &mut b, A_ADDR, now);
        deliver(&mut b, &mut a, B_ADDR, now);
    }
    assert_eq!(b.peer_status(ba, now).unwrap().endpoint, Some(addr(A_ADDR)));
    (a, b, ab, ba)
}

/// Seals `message` from A to B in their session.
fn sealed(a: &mut Device, ab: PeerId, message: &Control<'_>, now: Instant) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let t = a.seal_nat(ab, None, message, false, now, &mut buf).unwrap();
    buf[..t.len].to_vec()
}

fn binding_open(trial: u32, nonce: u64) -> Control<'static> {
    Control::BindingOpen(BindingTrial { trial, nonce })
}

fn binding_check(trial: u32) -> Control<'static> {
    Control::BindingCheck(BindingCheck { trial })
}

#[test]
fn a_binding_open_is_answered_at_its_source_without_moving_the_endpoint() {
    let now = Instant::now();
    let (mut a, mut b, ab, ba) = connected(now);
    let changes = b.peer_status(ba, now).unwrap().stats.endpoint_changes;
    let mut open = sealed(&mut a, ab, &binding_open(7, 99), now);
    assert_eq!(
        b.decapsulate(now, addr(PROBE), &mut open),
        Decapsulated::Consumed
    );
    let status = b.peer_status(ba, now).unwrap();
    assert_eq!(status.endpoint, Some(addr(A_ADDR)));
    assert_eq!(status.stats.endpoint_changes, changes);
    let mut buf = vec![0u8; 2048];
    let ack = b.poll_transmit(now, &mut buf).expect("an acknowledgement");
    assert_eq!(ack.destination, addr(PROBE));
    assert!(b.poll_transmit(now, &mut buf).is_none());
    // The check over the main path brings one binding ping to the probe.
    let mut check = sealed(&mut a, ab, &binding_check(7), now);
    b.decapsulate(now, addr(A_ADDR), &mut check);
    let ping = b.poll_transmit(now, &mut buf).expect("a binding ping");
    assert_eq!(ping.destination, addr(PROBE));
    // A second check finds nothing: one ping per open.
    let mut again = sealed(&mut a, ab, &binding_check(7), now);
    b.decapsulate(now, addr(A_ADDR), &mut again);
    assert!(b.poll_transmit(now, &mut buf).is_none());
}

#[test]
fn a_binding_check_for_a_trial_never_opened_sends_nothing_anywhere() {
    let now = Instant::now();
    let (mut a, mut b, ab, _) = connected(now);
    let mut check = sealed(&mut a, ab, &binding_check(42), now);
    assert_eq!(
        b.decapsulate(now, addr(A_ADDR), &mut check),
        Decapsulated::Consumed
    );
    let mut buf = vec![0u8; 2048];
    assert!(b.poll_transmit(now, &mut buf).is_none());
}

#[test]
fn an_unauthenticated_binding_open_gets_no_answer() {
    let now = Instant::now();
    let (mut a, mut b, ab, _) = connected(now);
    let mut open = sealed(&mut a, ab, &binding_open(7, 99), now);
    let last = open.len() - 1;
    open[last] ^= 1;
    assert_eq!(
        b.decapsulate(now, addr(STRANGER), &mut open),
        Decapsulated::Dropped(DropReason::Decrypt)
    );
    let mut buf = vec![0u8; 2048];
    assert!(b.poll_transmit(now, &mut buf).is_none());
}

#[test]
fn the_helpers_table_is_bounded_per_peer() {
    let now = Instant::now();
    let (mut a, mut b, ab, _) = connected(now);
    let mut buf = vec![0u8; 2048];
    for trial in 0..(BINDING_TABLE_PER_PEER as u32 + 3) {
        let mut open = sealed(&mut a, ab, &binding_open(trial, 1), now);
        b.decapsulate(now, addr(PROBE), &mut open);
        while b.poll_transmit(now, &mut buf).is_some() {}
    }
    assert_eq!(b.bindings.len(), BINDING_TABLE_PER_PEER);
}

#[test]
fn a_handshake_initiation_from_a_new_address_moves_the_endpoint() {
    let now = Instant::now();
    let (mut a, mut b, ab, ba) = connected(now);
    let later = now + Duration::from_secs(1);
    // The NAT forgot the mapping: A's new initiation comes from a new port.
    a.start_handshake(ab, later, true);
    let moved = "203.0.113.1:40200";
    deliver(&mut a, &mut b, moved, later);
    assert_eq!(
        b.peer_status(ba, later).unwrap().endpoint,
        Some(addr(moved))
    );
    let answered = deliver(&mut b, &mut a, B_ADDR, later);
    assert_eq!(answered, vec![addr(moved)]);
}

#[test]
fn a_pong_reports_the_address_the_ping_came_from() {
    let now = Instant::now();
    let (mut a, mut b, ab, _) = connected(now);
    a.set_local_addresses(vec!["198.51.100.2".parse().unwrap()], 51820);
    // Drain the discovery pings of the handshake first.
    deliver(&mut a, &mut b, A_ADDR, now);
    deliver(&mut b, &mut a, B_ADDR, now);
    a.send_ping(ab, now, true);
    deliver(&mut a, &mut b, "203.0.113.1:40300", now);
    deliver(&mut b, &mut a, B_ADDR, now);
    let status = a.nat_status();
    assert_eq!(status.reflexive, Some(addr("203.0.113.1:40300")));
    assert_eq!(status.behind, Some(true));
}

#[test]
fn a_peer_beside_the_nat_neither_undoes_the_nat_nor_serves_as_trial_helper() {
    let now = Instant::now();
    let (mut a, mut b, ab, _) = connected(now);
    let local = "198.51.100.2";
    a.set_local_addresses(vec![local.parse().unwrap()], 51820);
    // C is on A's side of the NAT: it sees A at A's own address.
    let mut c = device(3, now);
    let ac = a
        .add_peer(peer(3, Some("198.51.100.3:51820"), "100.64.0.3/32"), now)
        .unwrap();
    c.add_peer(peer(1, None, "100.64.0.1/32"), now).unwrap();
    a.start_handshake(ac, now, false);
    for _ in 0..3 {
        deliver(&mut a, &mut c, &format!("{local}:51820"), now);
        deliver(&mut c, &mut a, "198.51.100.3:51820", now);
    }
    // B, across the NAT, reports the mapped address; then C reports the local one.
    a.send_ping(ab, now, true);
    deliver(&mut a, &mut b, "203.0.113.1:40300", now);
    deliver(&mut b, &mut a, B_ADDR, now);
    assert_eq!(a.nat_status().behind, Some(true));
    a.send_ping(ac, now, true);
    deliver(&mut a, &mut c, &format!("{local}:51820"), now);
    deliver(&mut c, &mut a, "198.51.100.3:51820", now);
    let status = a.nat_status();
    assert_eq!(status.behind, Some(true), "{status:?}");
    assert_eq!(status.reflexive, Some(addr("203.0.113.1:40300")));
    // C has the lower RTT (it answered last and at once), yet trials run with B.
    assert_eq!(a.helper(now).map(|(p, _)| p), Some(ab));
}

/// A (at its own address 198.51.100.2:51820, behind a NAT toward B and C)
/// with sessions to B and C; returns them and A's ids for them.
fn a_with_two_peers(now: Instant) -> (Device, Device, Device, PeerId, PeerId) {
    let (mut a, b, ab, _) = connected(now);
    a.set_local_addresses(vec!["198.51.100.2".parse().unwrap()], 51820);
    let mut c = device(3, now);
    let ac = a
        .add_peer(peer(3, Some("192.0.2.3:51820"), "100.64.0.3/32"), now)
        .unwrap();
    c.add_peer(peer(1, None, "100.64.0.1/32"), now).unwrap();
    a.start_handshake(ac, now, false);
    for _ in 0..3 {
        deliver(&mut a, &mut c, NAT_A, now);
        deliver(&mut c, &mut a, "192.0.2.3:51820", now);
    }
    (a, b, c, ab, ac)
}

/// A's mapping on the NAT, as its peers across it see it.
const NAT_A: &str = "203.0.113.1:40300";
/// An address a lying member names as A's.
const EVIL: &str = "203.0.113.66:51820";

/// A pings `peer` (device `to`, whose packets come from `to_addr`) across
/// the NAT and takes its pong.
fn ping_across(a: &mut Device, to: &mut Device, peer: PeerId, to_addr: &str, now: Instant) {
    a.send_ping(peer, now, true);
    deliver(a, to, NAT_A, now);
    deliver(to, a, to_addr, now);
}

#[test]
fn one_peers_pong_is_only_a_punch_candidate_and_a_second_peer_agreeing_gets_it_announced() {
    let now = Instant::now();
    let (mut a, mut b, mut c, ab, ac) = a_with_two_peers(now);
    let own = [addr(A_ADDR)];
    // Peers without keepalives get no discovery ping: nobody has reported
    // A's address yet.
    assert_eq!(a.own_endpoints(&own, now).candidates, own.to_vec());
    ping_across(&mut a, &mut b, ab, B_ADDR, now);
    let one = a.own_endpoints(&own, now);
    assert_eq!(one.announced, own.to_vec());
    assert_eq!(one.candidates, vec![addr(A_ADDR), addr(NAT_A)]);
    ping_across(&mut a, &mut c, ac, "192.0.2.3:51820", now);
    let two = a.own_endpoints(&own, now);
    assert_eq!(two.announced, vec![addr(NAT_A), addr(A_ADDR)]);
    assert_eq!(two.candidates, vec![addr(NAT_A), addr(A_ADDR)]);
}

#[test]
fn a_gossiped_report_counts_once_per_current_peer_and_never_alone() {
    let now = Instant::now();
    let (mut a, _b, _c, ..) = a_with_two_peers(now);
    let own = [addr(A_ADDR)];
    let key_b = StaticSecret::from_bytes([2; 32]).public_key();
    let key_c = StaticSecret::from_bytes([3; 32]).public_key();
    let stranger = StaticSecret::from_bytes([9; 32]).public_key();
    // One member says it twice, a key that is no peer says it too.
    a.note_reflexive(&key_b, addr(EVIL), now);
    a.note_reflexive(&key_b, addr(EVIL), now);
    a.note_reflexive(&stranger, addr(EVIL), now);
    let own_now = a.own_endpoints(&own, now);
    assert_eq!(own_now.announced, own.to_vec(), "a lie was announced");
    assert_eq!(own_now.candidates, vec![addr(A_ADDR), addr(EVIL)]);
    // A second current member agreeing is enough.
    a.note_reflexive(&key_c, addr(EVIL), now);
    assert_eq!(a.own_endpoints(&own, now).announced[0], addr(EVIL));
}

#[test]
fn a_single_gossiped_report_does_not_answer_whether_the_node_is_behind_a_nat() {
    let now = Instant::now();
    let mut a = device(1, now);
    a.set_local_addresses(vec!["198.51.100.2".parse().unwrap()], 51820);
    a.add_peer(peer(2, Some(B_ADDR), "100.64.0.2/32"), now)
        .unwrap();
    a.add_peer(peer(3, Some("192.0.2.3:51820"), "100.64.0.3/32"), now)
        .unwrap();
    let key_b = StaticSecret::from_bytes([2; 32]).public_key();
    let key_c = StaticSecret::from_bytes([3; 32]).public_key();
    a.note_reflexive(&key_b, addr(EVIL), now);
    assert_eq!(a.nat_status().behind, None);
    a.note_reflexive(&key_c, addr(EVIL), now);
    assert_eq!(a.nat_status().behind, Some(true));
    assert_eq!(a.nat_status().reflexive, Some(addr(EVIL)));
}
