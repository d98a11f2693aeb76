//! Unit tests of the device for behaviour that needs no simulated network:
//! devices are wired back to back by hand. Scenarios over links and time
//! are in `crate::sim`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::peer::PeerConfig;
use crate::sim::inner;
use crate::wire::control::Fragment;

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";
const A_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn key(n: u8) -> StaticSecret {
    StaticSecret::from_bytes([n; 32])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn device_with(n: u8, now: Instant, configure: impl FnOnce(&mut DeviceConfig)) -> Device {
    let mut config = DeviceConfig::new(key(n));
    config.pmtu_discovery = false;
    configure(&mut config);
    Device::new(config, now, Duration::from_secs(1_700_000_000), [n; 32])
}

fn device(n: u8, now: Instant) -> Device {
    device_with(n, now, |_| {})
}

fn peer(name: &str, n: u8, endpoint: Option<&str>, allowed: &[&str]) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        public_key: key(n).public_key(),
        preshared_key: None,
        endpoint: endpoint.map(addr),
        allowed_ips: allowed.iter().map(|p| p.parse().unwrap()).collect(),
        keepalive: crate::Keepalive::Off,
    }
}

/// A (key 1, 100.64.0.1) and B (key 2, 100.64.0.2), peers of each other.
fn pair_with(now: Instant, configure: impl FnOnce(&mut DeviceConfig)) -> (Device, Device) {
    let mut a = device_with(1, now, configure);
    let mut b = device(2, now);
    a.add_peer(peer("b", 2, Some(B_ADDR), &["100.64.0.2/32"]), now)
        .unwrap();
    b.add_peer(peer("a", 1, Some(A_ADDR), &["100.64.0.1/32"]), now)
        .unwrap();
    (a, b)
}

/// Encapsulates an IPv4 packet of `len` bytes with room to spare.
fn encap(
    d: &mut Device,
    now: Instant,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u64,
    len: usize,
) -> (Encapsulated, Vec<u8>) {
    let packet = inner::ipv4(src, dst, seq, len);
    let mut buf = vec![0u8; len + 64];
    buf[16..16 + len].copy_from_slice(&packet);
    let out = d.encapsulate(now, &mut buf, len);
    (out, buf)
}

/// Moves everything `from` has to send into `to` (sent from `from_addr`),
/// repeatedly in both directions until both are quiet. Returns the
/// sequence numbers of the inner packets delivered, per receiving side.
fn pump(a: &mut Device, b: &mut Device, now: Instant) -> (Vec<u64>, Vec<u64>) {
    let mut delivered = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 4096];
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            assert_eq!(t.destination, addr(B_ADDR));
            moved = true;
            let mut dgram = buf[..t.len].to_vec();
            if let Decapsulated::Tun { offset, len, .. } =
                b.decapsulate(now, addr(A_ADDR), &mut dgram)
            {
                delivered
                    .1
                    .push(inner::parse(&dgram[offset..offset + len]).unwrap().seq);
            }
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            assert_eq!(t.destination, addr(A_ADDR));
            moved = true;
            let mut dgram = buf[..t.len].to_vec();
            if let Decapsulated::Tun { offset, len, .. } =
                a.decapsulate(now, addr(B_ADDR), &mut dgram)
            {
                delivered
                    .0
                    .push(inner::parse(&dgram[offset..offset + len]).unwrap().seq);
            }
        }
        if !moved {
            return delivered;
        }
    }
}

/// A and B with a session, A the initiator.
fn connected(now: Instant, configure: impl FnOnce(&mut DeviceConfig)) -> (Device, Device) {
    let (mut a, mut b) = pair_with(now, configure);
    let (out, _) = encap(&mut a, now, A_IP, B_IP, 0, 40);
    assert!(matches!(out, Encapsulated::Queued { .. }));
    let (_, at_b) = pump(&mut a, &mut b, now);
    assert_eq!(at_b, vec![0]);
    (a, b)
}

#[test]
fn a_packet_routed_by_the_caller_is_sealed_for_that_peer_only_if_it_routes_there() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now, |_| {});
    let to_b = a.route(B_IP.into()).expect("b routes 100.64.0.2");
    let packet = inner::ipv4(A_IP, B_IP, 1, 60);
    let mut buf = vec![0u8; 60 + 64];
    buf[16..76].copy_from_slice(&packet);
    let out = a.encapsulate_to(now, to_b, &mut buf, 60);
    assert!(matches!(out, Encapsulated::Send { peer, .. } if peer == to_b));

    // The same peer for a destination it does not route: refused, never sent.
    let elsewhere = inner::ipv4(A_IP, Ipv4Addr::new(100, 64, 0, 9), 2, 60);
    buf[16..76].copy_from_slice(&elsewhere);
    let out = a.encapsulate_to(now, to_b, &mut buf, 60);
    assert_eq!(out, Encapsulated::Dropped(DropReason::NoRoute));
    let (_, at_b) = pump(&mut a, &mut b, now);
    assert!(at_b.is_empty(), "nothing more reached b: {at_b:?}");
}

#[test]
fn a_packet_no_peer_routes_is_dropped_as_no_route() {
    let now = Instant::now();
    let (mut a, _) = pair_with(now, |_| {});
    let (out, _) = encap(&mut a, now, A_IP, Ipv4Addr::new(100, 64, 0, 9), 1, 60);
    assert_eq!(out, Encapsulated::Dropped(DropReason::NoRoute));
    assert_eq!(a.stats().dropped(DropReason::NoRoute), 1);
    assert!(
        a.poll_transmit(now, &mut [0u8; 256]).is_none(),
        "no handshake for nobody"
    );
}

#[test]
fn a_peer_without_endpoint_drops_as_no_endpoint_and_sends_nothing() {
    let now = Instant::now();
    let mut a = device(1, now);
    a.add_peer(peer("b", 2, None, &["100.64.0.2/32"]), now)
        .unwrap();
    let (out, _) = encap(&mut a, now, A_IP, B_IP, 1, 60);
    assert_eq!(out, Encapsulated::Dropped(DropReason::NoEndpoint));
    assert_eq!(a.stats().dropped(DropReason::NoEndpoint), 1);
    assert!(a.poll_transmit(now, &mut [0u8; 256]).is_none());
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn a_malformed_or_out_of_buffer_inner_packet_is_dropped() {
    let now = Instant::now();
    let (mut a, _) = pair_with(now, |_| {});
    let mut buf = vec![0u8; 200];
    buf[16] = 0x45; // IPv4 claiming more than it has
    buf[18..20].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(
        a.encapsulate(now, &mut buf, 100),
        Encapsulated::Dropped(DropReason::MalformedInner)
    );
    // A length that runs past the caller's buffer.
    assert_eq!(
        a.encapsulate(now, &mut buf, 1000),
        Encapsulated::Dropped(DropReason::MalformedInner)
    );
    assert_eq!(a.stats().dropped(DropReason::MalformedInner), 2);
}

#[test]
fn the_queue_keeps_the_newest_packets_up_to_its_limit() {
    let now = Instant::now();
    let (mut a, mut b) = pair_with(now, |c| c.queue_limit = 3);
    for seq in 1..=5 {
        let (out, _) = encap(&mut a, now, A_IP, B_IP, seq, 60);
        assert!(matches!(out, Encapsulated::Queued { .. }));
    }
    assert_eq!(a.stats().dropped(DropReason::QueueFull), 2);
    // One initiation for all of them.
    let (_, at_b) = pump(&mut a, &mut b, now);
    let peer_b = a.peer_ids().next().unwrap();
    assert_eq!(
        a.peer_status(peer_b, now).unwrap().stats.initiations_sent,
        1
    );
    assert_eq!(at_b, vec![3, 4, 5]);
}

#[test]
fn padding_rounds_up_to_16_bytes_but_never_past_the_mtu() {
    let now = Instant::now();
    let (mut a, _) = connected(now, |c| c.mtu = 1000);
    for (len, padded) in [
        (28, 32),
        (32, 32),
        (33, 48),
        (990, 992),
        (999, 1000),
        (1000, 1000),
    ] {
        let (out, _) = encap(&mut a, now, A_IP, B_IP, 1, len);
        let Encapsulated::Send { len: n, .. } = out else {
            panic!("{len}: {out:?}")
        };
        assert_eq!(n, 16 + padded + 16, "inner packet of {len} bytes");
    }
    let (out, _) = encap(&mut a, now, A_IP, B_IP, 1, 1100);
    assert_eq!(
        out,
        Encapsulated::TooBig {
            peer: PeerId(0),
            mtu: 1000
        }
    );
}

#[test]
fn a_buffer_without_room_for_the_tag_is_dropped_as_too_big() {
    let now = Instant::now();
    let (mut a, _) = connected(now, |_| {});
    let packet = inner::ipv4(A_IP, B_IP, 1, 100);
    let mut buf = vec![0u8; 16 + 100 + 8];
    buf[16..116].copy_from_slice(&packet);
    assert_eq!(
        a.encapsulate(now, &mut buf, 100),
        Encapsulated::Dropped(DropReason::TooBig)
    );
    assert_eq!(a.stats().dropped(DropReason::TooBig), 1);
}

#[test]
fn a_queued_packet_too_big_for_the_transmit_buffer_is_counted() {
    let now = Instant::now();
    let (mut a, mut b) = pair_with(now, |_| {});
    let (out, _) = encap(&mut a, now, A_IP, B_IP, 1, 1000);
    assert!(matches!(out, Encapsulated::Queued { .. }));
    let mut buf = [0u8; 512];
    let t = a.poll_transmit(now, &mut buf).expect("initiation");
    let mut dgram = buf[..t.len].to_vec();
    b.decapsulate(now, addr(A_ADDR), &mut dgram);
    let t = b.poll_transmit(now, &mut buf).expect("response");
    let mut dgram = buf[..t.len].to_vec();
    assert_eq!(
        a.decapsulate(now, addr(B_ADDR), &mut dgram),
        Decapsulated::Consumed
    );
    // The released packet cannot fit a 512-byte buffer.
    assert!(a.poll_transmit(now, &mut buf).is_none());
    assert_eq!(a.stats().dropped(DropReason::TooBig), 1);
}

#[test]
fn add_peer_refuses_our_own_key_a_repeated_key_and_a_claimed_prefix() {
    let now = Instant::now();
    let mut a = device(1, now);
    a.add_peer(peer("b", 2, None, &["100.64.0.2/32", "fd00::2/128"]), now)
        .unwrap();
    assert_eq!(
        a.add_peer(peer("me", 1, None, &["100.64.0.9/32"]), now),
        Err(PeerConfigError::OwnKey("me".into()))
    );
    assert_eq!(
        a.add_peer(peer("b-again", 2, None, &["100.64.0.9/32"]), now),
        Err(PeerConfigError::DuplicateKey("b-again".into()))
    );
    assert_eq!(
        a.add_peer(peer("c", 3, None, &["100.64.0.3/32", "fd00::2/128"]), now),
        Err(PeerConfigError::DuplicatePrefix {
            peer: "c".into(),
            prefix: "fd00::2/128".into()
        })
    );
    // A refused peer leaves nothing behind.
    assert_eq!(a.peer_ids().count(), 1);
    assert_eq!(a.route("100.64.0.3".parse().unwrap()), None);
    // An overlapping but different prefix is fine; the longest match wins.
    let c = a
        .add_peer(peer("c", 3, None, &["100.64.0.0/24"]), now)
        .unwrap();
    assert_eq!(a.route("100.64.0.7".parse().unwrap()), Some(c));
    assert_eq!(a.route("100.64.0.2".parse().unwrap()), Some(PeerId(0)));
}

#[test]
fn a_zero_persistent_keepalive_is_off() {
    let now = Instant::now();
    let mut a = device(1, now);
    let mut cfg = peer("b", 2, Some(B_ADDR), &["100.64.0.2/32"]);
    cfg.keepalive = crate::Keepalive::Fixed(Duration::ZERO);
    let id = a.add_peer(cfg, now).unwrap();
    // A zero interval would re-arm at `now` forever inside handle_timeout.
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.peer_status(id, now).unwrap().persistent_keepalive, None);
}

#[test]
fn garbage_and_unknown_indices_are_counted_drops() {
    let now = Instant::now();
    let (_, mut b) = connected(now, |_| {});
    let from = addr(A_ADDR);
    assert_eq!(
        b.decapsulate(now, from, &mut []),
        Decapsulated::Dropped(DropReason::Malformed)
    );
    assert_eq!(
        b.decapsulate(now, from, &mut [9u8; 40]),
        Decapsulated::Dropped(DropReason::Malformed)
    );
    let mut t = [0u8; 48];
    crate::wire::write_transport_header(&mut t, 0x1234_5678, 0);
    assert_eq!(
        b.decapsulate(now, from, &mut t),
        Decapsulated::Dropped(DropReason::UnknownIndex)
    );
    let mut forged = [0u8; crate::wire::INITIATION_LEN];
    forged[0] = crate::wire::TYPE_INITIATION;
    assert_eq!(
        b.decapsulate(now, from, &mut forged),
        Decapsulated::Dropped(DropReason::BadMac)
    );
    assert_eq!(b.stats().dropped(DropReason::Malformed), 2);
    assert_eq!(b.stats().dropped(DropReason::UnknownIndex), 1);
    assert_eq!(b.stats().dropped(DropReason::BadMac), 1);
}

#[test]
fn a_tampered_transport_packet_fails_authentication_and_changes_nothing() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now, |_| {});
    let (out, mut buf) = encap(&mut a, now, A_IP, B_IP, 7, 100);
    let Encapsulated::Send { len, .. } = out else {
        panic!("{out:?}")
    };
    let mut tampered = buf[..len].to_vec();
    tampered[40] ^= 0x80;
    // From another address: an unauthenticated packet must not move the
    // endpoint.
    let elsewhere = addr("203.0.113.5:9");
    assert_eq!(
        b.decapsulate(now, elsewhere, &mut tampered),
        Decapsulated::Dropped(DropReason::Decrypt)
    );
    let a_id = b.peer_ids().next().unwrap();
    assert_eq!(
        b.peer_status(a_id, now).unwrap().endpoint,
        Some(addr(A_ADDR))
    );
    // The genuine packet with the same counter still opens.
    assert!(matches!(
        b.decapsulate(now, addr(A_ADDR), &mut buf[..len]),
        Decapsulated::Tun { .. }
    ));
}

#[test]
fn initiations_faster_than_50_per_second_are_refused() {
    let now = Instant::now();
    let mut b = device(2, now);
    b.add_peer(peer("a", 1, None, &["100.64.0.1/32"]), now)
        .unwrap();
    // Two devices holding A's key, the second one's clock a little ahead so
    // its timestamp is newer.
    let initiation = |offset: Duration, send_at: Instant| {
        let mut a = Device::new(
            DeviceConfig::new(key(1)),
            now,
            Duration::from_secs(1_700_000_000) + offset,
            [offset.subsec_millis() as u8; 32],
        );
        a.add_peer(peer("b", 2, Some(B_ADDR), &["100.64.0.2/32"]), now)
            .unwrap();
        encap(&mut a, send_at, A_IP, B_IP, 1, 40);
        let mut buf = [0u8; 256];
        let t = a.poll_transmit(send_at, &mut buf).unwrap();
        buf[..t.len].to_vec()
    };
    let mut first = initiation(Duration::ZERO, now);
    let mut second = initiation(Duration::from_millis(5), now);
    let mut third = initiation(Duration::from_millis(30), now);
    let from = addr(A_ADDR);
    assert_eq!(b.decapsulate(now, from, &mut first), Decapsulated::Consumed);
    let soon = now + Duration::from_millis(10);
    assert_eq!(
        b.decapsulate(soon, from, &mut second),
        Decapsulated::Dropped(DropReason::HandshakeFlood)
    );
    let later = now + crate::timers::MIN_INITIATION_INTERVAL;
    assert_eq!(
        b.decapsulate(later, from, &mut third),
        Decapsulated::Consumed
    );
}

#[test]
fn hostile_pieces_are_counted_drops_and_never_delivered() {
    let now = Instant::now();
    let (mut a, _) = connected(now, |_| {});
    let peer = PeerId(0);
    let piece = |id: u32, index: u8, count: u8, body: &[u8]| {
        let mut p = vec![crate::wire::control::TYPE_FRAGMENT];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[index, count]);
        p.extend_from_slice(body);
        p
    };
    // Malformed pieces never reach reassembly (and arriving, are dropped
    // as malformed_inner: `control::tests`).
    for bad in [
        piece(1, 0, 0, b"x"),
        piece(1, 2, 2, b"x"),
        piece(1, 0, 9, b"x"),
        vec![crate::wire::control::TYPE_FRAGMENT, 1, 2],
    ] {
        assert!(Control::parse(&bad).is_err());
    }
    let piece = |id: u32, index: u8, count: u8, body: &'static [u8]| Fragment {
        id,
        index,
        count,
        payload: body,
    };
    // Two pieces of garbage make no packet.
    assert_eq!(
        a.receive_piece(peer, piece(7, 0, 2, &[0xff; 600]), now),
        Ok(())
    );
    assert_eq!(
        a.receive_piece(peer, piece(7, 1, 2, &[0xff; 600]), now),
        Err(DropReason::MalformedInner)
    );
    // A piece whose companion comes too late is forgotten.
    assert_eq!(
        a.receive_piece(peer, piece(8, 0, 2, &[0x60; 10]), now),
        Ok(())
    );
    let later = now + crate::peer::reassembly::REASSEMBLY_TIMEOUT + Duration::from_millis(1);
    assert_eq!(
        a.receive_piece(peer, piece(8, 1, 2, &[0; 10]), later),
        Ok(())
    );
    let mut buf = [0u8; 2048];
    assert_eq!(a.poll_reassembled(&mut buf), None);
}

#[test]
fn a_removed_peer_gets_no_route_and_its_packets_are_refused() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now, |_| {});
    let peer = PeerId(0);
    // B's traffic is accepted before the removal...
    let (out, buf) = encap(&mut b, now, B_IP, A_IP, 1, 100);
    let Encapsulated::Send { len, .. } = out else {
        panic!("{out:?}")
    };
    let mut first = buf[..len].to_vec();
    assert!(matches!(
        a.decapsulate(now, addr(B_ADDR), &mut first),
        Decapsulated::Tun { .. }
    ));
    a.remove_peer(peer);
    // ...and refused after it, as is anything routed to it.
    let (out, buf) = encap(&mut b, now, B_IP, A_IP, 2, 100);
    let Encapsulated::Send { len, .. } = out else {
        panic!("{out:?}")
    };
    let mut second = buf[..len].to_vec();
    assert_eq!(
        a.decapsulate(now, addr(B_ADDR), &mut second),
        Decapsulated::Dropped(DropReason::UnknownIndex)
    );
    let (out, _) = encap(&mut a, now, A_IP, B_IP, 3, 100);
    assert_eq!(out, Encapsulated::Dropped(DropReason::NoRoute));
    assert_eq!(a.find_peer(&b.public_key()), None);
}

#[test]
fn a_gossiped_endpoint_never_overrides_one_the_peer_just_proved() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now, |_| {});
    let peer = PeerId(0);
    let (out, buf) = encap(&mut b, now, B_IP, A_IP, 1, 100);
    let Encapsulated::Send { len, .. } = out else {
        panic!("{out:?}")
    };
    let mut d = buf[..len].to_vec();
    a.decapsulate(now, addr(B_ADDR), &mut d);
    let elsewhere: SocketAddr = "203.0.113.9:51820".parse().unwrap();
    assert!(!a.suggest_endpoint(peer, elsewhere, now + Duration::from_secs(1)));
    assert!(a.suggest_endpoint(peer, elsewhere, now + GOSSIP_ENDPOINT_GRACE));
    assert_eq!(a.peer_status(peer, now).unwrap().endpoint, Some(elsewhere));
}

/// A (probing) and B (not) with a session A initiated; A's first data
/// packet has gone out and its first probe round is due.
fn probing_pair(now: Instant) -> (Device, Device, PeerId) {
    let (mut a, mut b) = pair_with(now, |c| c.pmtu_discovery = true);
    let (out, _) = encap(&mut a, now, A_IP, B_IP, 0, 40);
    assert!(matches!(out, Encapsulated::Queued { .. }));
    let mut buf = vec![0u8; 2048];
    let t = a.poll_transmit(now, &mut buf).expect("an initiation");
    let mut initiation = buf[..t.len].to_vec();
    b.decapsulate(now, addr(A_ADDR), &mut initiation);
    let t = b.poll_transmit(now, &mut buf).expect("a response");
    let mut response = buf[..t.len].to_vec();
    assert_eq!(
        a.decapsulate(now, addr(B_ADDR), &mut response),
        Decapsulated::Consumed
    );
    let t = a.poll_transmit(now, &mut buf).expect("the queued packet");
    assert_eq!(t.len, 16 + 48 + 16);
    (a, b, PeerId(0))
}

#[test]
fn a_probe_that_never_left_is_not_counted_lost() {
    let now = Instant::now();
    let (mut a, _b, peer) = probing_pair(now);
    // A buffer with room for no probe: none leaves.
    let mut small = [0u8; 100];
    assert_eq!(a.poll_transmit(now, &mut small), None);
    let later = now + Duration::from_secs(1);
    a.handle_timeout(later);
    let stats = a.pmtu_stats(peer).unwrap();
    assert_eq!((stats.probes_sent, stats.probes_lost), (0, 0));
    // Given room, the probes go out, and only those count.
    let mut buf = vec![0u8; 2048];
    let mut sent = 0;
    while let Some(t) = a.poll_transmit(later, &mut buf) {
        assert!(t.len >= 576 - 28, "a probe");
        sent += 1;
    }
    assert!(sent > 0);
    assert_eq!(a.pmtu_stats(peer).unwrap().probes_sent, sent);
}

#[test]
fn a_probe_due_once_the_session_expired_is_neither_sent_nor_lost() {
    let mut now = Instant::now();
    let (mut a, _b, peer) = probing_pair(now);
    // Nothing A sends arrives: every round is silent and retried, backing
    // off, past the session's REJECT_AFTER_TIME.
    let end = now + REJECT_AFTER_TIME + Duration::from_secs(60);
    let mut buf = vec![0u8; 2048];
    let mut probes = 0;
    while now < end {
        a.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            // Probes are at least the floor; handshakes and keepalives less.
            if t.len >= 576 - 28 {
                probes += 1;
            }
        }
        now = a
            .poll_timeout()
            .unwrap_or(end)
            .min(end)
            .max(now + Duration::from_millis(1));
    }
    a.handle_timeout(now);
    let stats = a.pmtu_stats(peer).unwrap();
    assert_eq!(stats.probes_sent, probes);
    assert_eq!(stats.probes_lost, probes);
}
