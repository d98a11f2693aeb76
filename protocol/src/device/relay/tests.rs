//! Relaying and hole punching between three devices wired by hand: A and C
//! (members behind NATs) and R (a public member both reach). A small switch
//! moves datagrams between them by address and drops the pairs a test
//! blocks, as a NAT that admits nothing unsolicited would.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::super::{Decapsulated, Device, DeviceConfig, Encapsulated, Event};
use super::*;
use crate::noise::StaticSecret;
use crate::peer::PeerConfig;
use crate::sim::inner;
use crate::timers::REKEY_TIMEOUT;

const A: usize = 0;
const R: usize = 1;
const C: usize = 2;
const ADDRS: [&str; 3] = [
    "203.0.113.10:51820",
    "203.0.113.1:51820",
    "203.0.113.20:51820",
];
const KEYS: [u8; 3] = [1, 3, 2];

fn addr(i: usize) -> SocketAddr {
    ADDRS[i].parse().unwrap()
}

fn overlay(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, KEYS[i])
}

fn key(n: u8) -> StaticSecret {
    StaticSecret::from_bytes([n; 32])
}

fn peer(i: usize) -> PeerConfig {
    PeerConfig {
        name: ["a", "r", "c"][i].into(),
        public_key: key(KEYS[i]).public_key(),
        preshared_key: None,
        endpoint: Some(addr(i)),
        allowed_ips: vec![format!("{}/32", overlay(i)).parse().unwrap()],
        keepalive: crate::nat::Keepalive::Off,
    }
}

/// Three devices, each a peer of the other two; the switch between them.
struct Net {
    devices: Vec<Device>,
    /// (from, to) pairs whose datagrams are lost.
    blocked: Vec<(usize, usize)>,
    /// Inner packets delivered: (receiving device, packet).
    delivered: Vec<(usize, Vec<u8>)>,
    /// Datagrams that crossed the switch: (from, to).
    carried: Vec<(usize, usize)>,
    /// Every datagram sent, wherever it went: (from, destination).
    sent: Vec<(usize, SocketAddr)>,
}

impl Net {
    fn new(now: Instant, configure: impl Fn(usize, &mut DeviceConfig)) -> Net {
        let devices = (0..3)
            .map(|i| {
                let mut config = DeviceConfig::new(key(KEYS[i]));
                config.pmtu_discovery = false;
                configure(i, &mut config);
                let mut d = Device::new(
                    config,
                    now,
                    Duration::from_secs(1_700_000_000),
                    [KEYS[i]; 32],
                );
                for j in (0..3).filter(|&j| j != i) {
                    d.add_peer(peer(j), now).unwrap();
                }
                d
            })
            .collect();
        Net {
            devices,
            blocked: Vec::new(),
            delivered: Vec::new(),
            carried: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// No direct path between A and C either way; both have a session
    /// with R and relay through it.
    fn natted(now: Instant) -> Net {
        Self::natted_with(now, |_, _| {})
    }

    fn natted_with(now: Instant, configure: impl Fn(usize, &mut DeviceConfig)) -> Net {
        let mut net = Net::new(now, configure);
        net.blocked = vec![(A, C), (C, A)];
        net.send(A, R, 1000, 60, now);
        net.send(C, R, 1000, 60, now);
        let (r_at_a, c_at_a) = (net.id(A, R), net.id(A, C));
        let (r_at_c, a_at_c) = (net.id(C, R), net.id(C, A));
        net.devices[A].set_relay(c_at_a, Some(r_at_a), now);
        net.devices[C].set_relay(a_at_c, Some(r_at_c), now);
        net
    }

    /// Device `at`'s id of device `of`.
    fn id(&self, at: usize, of: usize) -> PeerId {
        self.devices[at]
            .find_peer(&key(KEYS[of]).public_key())
            .unwrap()
    }

    fn index_of(destination: SocketAddr) -> Option<usize> {
        (0..3).find(|&i| addr(i) == destination)
    }

    fn carry(&mut self, from: usize, destination: SocketAddr, datagram: &[u8], now: Instant) {
        let Some(to) = Self::index_of(destination) else {
            return;
        };
        if self.blocked.contains(&(from, to)) {
            return;
        }
        self.carried.push((from, to));
        let mut d = datagram.to_vec();
        if let Decapsulated::Tun { offset, len, .. } =
            self.devices[to].decapsulate(now, addr(from), &mut d)
        {
            self.delivered.push((to, d[offset..offset + len].to_vec()));
        }
    }

    /// Moves everything queued until every device is quiet.
    fn run(&mut self, now: Instant) {
        let mut buf = vec![0u8; 65536];
        loop {
            let mut moved = false;
            for i in 0..3 {
                while let Some(t) = self.devices[i].poll_transmit(now, &mut buf) {
                    moved = true;
                    self.sent.push((i, t.destination));
                    let datagram = buf[..t.len].to_vec();
                    self.carry(i, t.destination, &datagram, now);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Fires due timers and runs, in steps of 50 ms up to `until`.
    fn advance(&mut self, now: &mut Instant, until: Instant) {
        while *now < until {
            *now += Duration::from_millis(50);
            for d in &mut self.devices {
                if d.poll_timeout().is_some_and(|t| t <= *now) {
                    d.handle_timeout(*now);
                }
            }
            self.run(*now);
        }
    }

    /// Device `from` sends an inner packet of `len` bytes to device `to`.
    fn send(&mut self, from: usize, to: usize, seq: u64, len: usize, now: Instant) -> Encapsulated {
        let packet = inner::ipv4(overlay(from), overlay(to), seq, len);
        let mut buf = vec![0u8; 16 + 1420 + 16];
        buf[16..16 + len].copy_from_slice(&packet);
        let out = self.devices[from].encapsulate(now, &mut buf, len);
        if let Encapsulated::Send {
            destination, len, ..
        } = out
        {
            self.carry(from, destination, &buf[..len], now);
        }
        self.run(now);
        out
    }

    fn delivered_to(&self, at: usize) -> Vec<u64> {
        self.delivered
            .iter()
            .filter(|(i, _)| *i == at)
            .map(|(_, p)| inner::parse(p).unwrap().seq)
            .collect()
    }

    fn path(&self, at: usize, of: usize) -> PeerPath {
        self.devices[at].peer_path(self.id(at, of)).unwrap()
    }

    fn events(&mut self, at: usize) -> Vec<Event> {
        std::iter::from_fn(|| self.devices[at].poll_event()).collect()
    }
}

/// A and C relayed through R with a session between them, A→C traffic
/// delivered.
fn relayed(now: &mut Instant) -> Net {
    let mut net = Net::natted(*now);
    net.send(A, C, 0, 100, *now);
    let until = *now + REKEY_TIMEOUT + Duration::from_secs(1);
    net.advance(now, until);
    assert_eq!(
        net.delivered_to(C),
        vec![0],
        "the queued packet went through R"
    );
    net
}

#[test]
fn members_without_a_direct_path_handshake_and_exchange_data_through_the_relay() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    let r_at_a = net.id(A, R);
    let r_at_c = net.id(C, R);
    assert_eq!(net.path(A, C), PeerPath::Relayed { relay: r_at_a });
    assert_eq!(net.path(C, A), PeerPath::Relayed { relay: r_at_c });
    for seq in 1..=20 {
        assert!(matches!(
            net.send(A, C, seq, 200, now),
            Encapsulated::Send { .. }
        ));
        assert!(matches!(
            net.send(C, A, seq, 200, now),
            Encapsulated::Send { .. }
        ));
    }
    assert_eq!(net.delivered_to(C), (0..=20).collect::<Vec<_>>());
    assert_eq!(net.delivered_to(A), (1..=20).collect::<Vec<_>>());
    assert!(!net.carried.contains(&(A, C)) && !net.carried.contains(&(C, A)));
    let r = net.devices[R].stats().relay;
    assert!(r.forwarded_packets >= 41, "{r:?}");
    assert!(net.devices[A].stats().relay.sent_via_relay >= 21);
    assert!(net.devices[C].stats().relay.received_via_relay >= 21);
    // A and C each told their caller about the relay.
    assert!(net.events(A).contains(&Event::PathChanged {
        peer: net.id(A, C),
        via: Some(r_at_a),
        punched: false
    }));
}

#[test]
fn a_relay_cannot_read_what_it_carries_and_a_datagram_it_alters_is_dropped_by_the_target() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    // A seals a packet for C; the switch hands it to R by hand.
    let len = 300;
    let packet = inner::ipv4(overlay(A), overlay(C), 77, len);
    let mut buf = vec![0u8; 16 + 1420 + 16];
    buf[16..16 + len].copy_from_slice(&packet);
    let Encapsulated::Send {
        destination,
        len: n,
        ..
    } = net.devices[A].encapsulate(now, &mut buf, len)
    else {
        panic!("not sent");
    };
    assert_eq!(destination, addr(R));
    let mut datagram = buf[..n].to_vec();
    let out = net.devices[R].decapsulate(now, addr(A), &mut datagram);
    assert_eq!(out, Decapsulated::Consumed);
    // What R holds in the clear for C is the relay header and A's
    // ciphertext: no 16-byte run of the inner packet appears in it.
    let queued = net.devices[R].outgoing.back_mut().unwrap();
    let super::super::Outgoing::Deliver(_, plain) = queued else {
        panic!("R queued no delivery");
    };
    assert_eq!(plain[0], crate::wire::control::TYPE_RELAYED);
    assert!(packet
        .windows(16)
        .all(|w| !plain.windows(16).any(|p| p == w)));
    // R flips one bit of A's ciphertext before passing it on.
    let last = plain.len() - 20;
    plain[last] ^= 1;
    let decrypt_drops = net.devices[C].stats().dropped(DropReason::Decrypt);
    net.run(now);
    assert_eq!(
        net.devices[C].stats().dropped(DropReason::Decrypt),
        decrypt_drops + 1
    );
    assert!(
        !net.delivered_to(C).contains(&77),
        "an altered packet was delivered"
    );
}

#[test]
fn a_relay_request_for_a_member_the_relay_does_not_know_is_refused_and_counted() {
    let now = Instant::now();
    let mut net = Net::new(now, |_, _| {});
    // A knows a member D that R has never heard of, reachable only via R.
    let d_key = key(9).public_key();
    let d = net.devices[A]
        .add_peer(
            PeerConfig {
                name: "d".into(),
                public_key: d_key,
                preshared_key: None,
                endpoint: None,
                allowed_ips: vec!["100.64.0.9/32".parse().unwrap()],
                keepalive: crate::nat::Keepalive::Off,
            },
            now,
        )
        .unwrap();
    let r_at_a = net.id(A, R);
    net.devices[A].set_relay(d, Some(r_at_a), now);
    // A session with R first, so the request is authenticated.
    net.send(A, R, 0, 60, now);
    let packet = inner::ipv4(overlay(A), Ipv4Addr::new(100, 64, 0, 9), 1, 60);
    let mut buf = vec![0u8; 2048];
    buf[16..76].copy_from_slice(&packet);
    assert!(matches!(
        net.devices[A].encapsulate(now, &mut buf, 60),
        Encapsulated::Queued { .. }
    ));
    net.run(now);
    let r = net.devices[R].stats();
    assert_eq!(r.relay.refused, 1);
    assert_eq!(r.dropped(DropReason::RelayRefused), 1);
    assert_eq!(r.relay.forwarded_packets, 0);
}

#[test]
fn a_member_with_relaying_off_or_over_its_budget_refuses_to_relay() {
    let mut now = Instant::now();
    let mut off = Net::natted_with(now, |i, c| {
        if i == R {
            c.relay_bytes_per_second = 0;
        }
    });
    off.send(A, C, 0, 100, now);
    let until = now + REKEY_TIMEOUT + Duration::from_secs(1);
    off.advance(&mut now, until);
    assert!(off.delivered_to(C).is_empty());
    assert!(off.devices[R].stats().relay.refused >= 1);

    let mut now = Instant::now();
    let mut small = Net::natted_with(now, |i, c| {
        if i == R {
            c.relay_bytes_per_second = 2_000;
        }
    });
    small.send(A, C, 0, 100, now);
    let until = now + REKEY_TIMEOUT + Duration::from_secs(1);
    small.advance(&mut now, until);
    // 20 packets of 1000 bytes in one instant: only the budget passes.
    for seq in 1..=20 {
        small.send(A, C, seq, 1000, now);
    }
    let through = small.delivered_to(C).len() - 1;
    assert!(
        (1..=2).contains(&through),
        "{through} packets passed a 2000-byte budget"
    );
    assert!(small.devices[R].stats().relay.refused >= 18);
}

#[test]
fn a_relayed_packet_never_changes_the_direct_endpoint() {
    let mut now = Instant::now();
    let net = relayed(&mut now);
    let a_at_c = net.id(C, A);
    let status = net.devices[C].peer_status(a_at_c, now).unwrap();
    assert_eq!(status.endpoint, Some(addr(A)));
    assert_eq!(status.stats.endpoint_changes, 0);
}

#[test]
fn the_inner_mtu_through_a_relay_is_the_relays_less_the_relay_overhead() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    let (r, c) = (net.id(A, R), net.id(A, C));
    let relayed_mtu = net.devices[A].inner_mtu(c);
    assert_eq!(relayed_mtu, net.devices[A].inner_mtu(r) - RELAY_OVERHEAD);
    assert!(matches!(
        net.send(A, C, 1, relayed_mtu, now),
        Encapsulated::Send { .. }
    ));
    assert_eq!(
        net.send(A, C, 2, relayed_mtu + 1, now),
        Encapsulated::TooBig {
            peer: c,
            mtu: relayed_mtu as u16
        }
    );
    assert!(net.delivered_to(C).contains(&1));
}

#[test]
fn punching_over_the_relayed_session_switches_both_sides_to_direct_once_the_path_opens() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    net.devices[A].set_own_candidates(vec![addr(A)]);
    net.devices[C].set_own_candidates(vec![addr(C)]);
    // The NATs would now pass the pair's packets (e.g. mappings that
    // simultaneous sends open); nothing else changes.
    net.blocked.clear();
    let until = now + PUNCH_RETRY_MAX;
    net.advance(&mut now, until);
    assert_eq!(net.path(A, C), PeerPath::Direct(Some(addr(C))));
    assert_eq!(net.path(C, A), PeerPath::Direct(Some(addr(A))));
    let punched = net.devices[A].stats().relay.punches_succeeded
        + net.devices[C].stats().relay.punches_succeeded;
    assert!(punched >= 1);
    let forwarded = net.devices[R].stats().relay.forwarded_packets;
    for seq in 100..110 {
        net.send(A, C, seq, 200, now);
    }
    assert_eq!(net.devices[R].stats().relay.forwarded_packets, forwarded);
    assert!(net
        .delivered_to(C)
        .ends_with(&(100..110).collect::<Vec<_>>()));
    assert!(net.carried.contains(&(A, C)) && net.carried.contains(&(C, A)));
}

#[test]
fn while_no_direct_path_opens_punches_are_retried_with_backoff_and_traffic_stays_relayed() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    net.devices[A].set_own_candidates(vec![addr(A)]);
    net.devices[C].set_own_candidates(vec![addr(C)]);
    let start = now;
    let until = now + Duration::from_secs(60);
    net.advance(&mut now, until);
    let r_at_a = net.id(A, R);
    assert_eq!(net.path(A, C), PeerPath::Relayed { relay: r_at_a });
    let sent = net.devices[A].stats().relay.punches_sent;
    // Offers at 0, 5, 15, 35 s (doubling): a few bursts, not one a second.
    let bursts = sent / u64::from(PUNCH_BURST);
    assert!(
        (2..=8).contains(&bursts),
        "{bursts} bursts in {:?}",
        now - start
    );
    assert_eq!(net.devices[A].stats().relay.punches_succeeded, 0);
}

#[test]
fn a_direct_packet_takes_over_and_a_late_relayed_one_does_not_move_the_peer_back() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    let c_at_a = net.id(A, C);
    let (a_at_c, r_at_c) = (net.id(C, A), net.id(C, R));
    net.blocked.clear();
    // C answers directly (its NAT mapping opened): A goes direct at once.
    net.devices[C].set_relay(a_at_c, None, now);
    let _ = net.events(A);
    net.send(C, A, 5, 100, now);
    assert_eq!(net.path(A, C), PeerPath::Direct(Some(addr(C))));
    assert!(net
        .events(A)
        .iter()
        .any(|e| matches!(e, Event::PathChanged { peer, via: None, .. } if *peer == c_at_a)));
    // A packet relayed before the switch still arrives through R: taken,
    // but the path stays direct.
    net.devices[C].set_relay(a_at_c, Some(r_at_c), now);
    net.devices[C].use_relay(a_at_c, now);
    net.send(C, A, 6, 100, now);
    assert!(net.delivered_to(A).contains(&6));
    assert_eq!(net.path(A, C), PeerPath::Direct(Some(addr(C))));
}

/// What the device makes of an offer it receives: whether it answers,
/// and the endpoints it punches at.
fn decode_offer(plain: &[u8]) -> Option<(bool, Vec<SocketAddr>)> {
    match Control::parse(plain) {
        Ok(Control::PunchOffer(offer)) => Some((offer.answer, usable_candidates(&offer))),
        _ => None,
    }
}

#[test]
fn an_offer_encodes_and_decodes_to_the_same_endpoints() {
    let endpoints: Vec<SocketAddr> = vec![
        "203.0.113.7:51820".parse().unwrap(),
        "[2001:db8::1]:4000".parse().unwrap(),
    ];
    let bytes = encode_offer(true, &endpoints);
    assert_eq!(decode_offer(&bytes), Some((true, endpoints)));
}

#[test]
fn a_truncated_or_oversized_offer_is_malformed_and_unusable_endpoints_are_skipped() {
    let endpoints: Vec<SocketAddr> = vec!["203.0.113.7:51820".parse().unwrap()];
    let bytes = encode_offer(false, &endpoints);
    for cut in 1..bytes.len() {
        assert_eq!(decode_offer(&bytes[..cut]), None, "cut at {cut}");
    }
    let mut too_many = bytes.clone();
    too_many[2] = MAX_CANDIDATES as u8 + 1;
    assert_eq!(decode_offer(&too_many), None);
    let unspecified = encode_offer(false, &["0.0.0.0:51820".parse().unwrap()]);
    assert_eq!(decode_offer(&unspecified), Some((false, vec![])));
}

#[test]
fn a_relayed_handshake_waits_for_sessions_with_the_relay_instead_of_being_lost() {
    let mut now = Instant::now();
    // Nobody has a session yet: A must first set one up with R, and R with C.
    let mut net = Net::new(now, |_, _| {});
    net.blocked = vec![(A, C), (C, A)];
    let (r_at_a, c_at_a) = (net.id(A, R), net.id(A, C));
    net.devices[A].set_relay(c_at_a, Some(r_at_a), now);
    net.send(A, C, 0, 100, now);
    // The first retransmission goes through R and arrives in the same
    // round, not one retransmission per missing session later.
    let until = now + REKEY_TIMEOUT + Duration::from_millis(500);
    net.advance(&mut now, until);
    assert_eq!(net.delivered_to(C), vec![0]);
    assert_eq!(net.path(A, C), PeerPath::Relayed { relay: r_at_a });
}

#[test]
fn peers_relayed_through_a_removed_member_go_back_to_their_direct_endpoint() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    let r_at_a = net.id(A, R);
    net.devices[A].remove_peer(r_at_a);
    assert_eq!(net.path(A, C), PeerPath::Direct(Some(addr(C))));
}

#[test]
fn a_relay_request_that_arrives_through_a_relay_is_refused() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    // A asks C, over their relayed session, to relay on to R: C must not
    // become a relay of relayed traffic.
    let mut plain = vec![crate::wire::control::TYPE_RELAY];
    plain.extend_from_slice(key(KEYS[R]).public_key().as_bytes());
    let mut keepalive_like = vec![0u8; 32];
    keepalive_like[0] = 4;
    plain.extend_from_slice(&keepalive_like);
    let c_at_a = net.id(A, C);
    net.devices[A]
        .outgoing
        .push_back(super::super::Outgoing::Control(c_at_a, plain));
    let forwarded_by_r = net.devices[R].stats().relay.forwarded_packets;
    net.run(now);
    let c = net.devices[C].stats();
    assert_eq!(c.relay.refused, 1);
    assert_eq!(c.dropped(DropReason::RelayRefused), 1);
    assert_eq!(c.relay.forwarded_packets, 0);
    // R carried A's message to C, and nothing on to itself.
    assert_eq!(
        net.devices[R].stats().relay.forwarded_packets,
        forwarded_by_r + 1
    );
}

#[test]
fn a_packet_too_big_to_wrap_for_the_relay_is_reported_under_the_reason_it_is_counted() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    // Room for the packet sealed for C, but not for the relay header and
    // the relay session's tag around it.
    let len = 100;
    let packet = inner::ipv4(overlay(A), overlay(C), 9, len);
    let mut buf = vec![0u8; 16 + len.next_multiple_of(16) + 16];
    buf[16..16 + len].copy_from_slice(&packet);
    let a = &mut net.devices[A];
    let before: Vec<u64> = DropReason::ALL
        .iter()
        .map(|r| a.stats().dropped(*r))
        .collect();
    assert_eq!(
        a.encapsulate(now, &mut buf, len),
        Encapsulated::Dropped(DropReason::TooBig)
    );
    for (r, was) in DropReason::ALL.iter().zip(before) {
        let more = u64::from(*r == DropReason::TooBig);
        assert_eq!(a.stats().dropped(*r), was + more, "{r:?}");
    }
}

/// `from` sends `plain` (a punch offer) to `to` in their session, on
/// whatever path it takes, and the switch carries everything.
fn control_from(net: &mut Net, from: usize, to: usize, plain: Vec<u8>, now: Instant) {
    let id = net.id(from, to);
    net.devices[from]
        .outgoing
        .push_back(super::super::Outgoing::Control(id, plain));
    net.run(now);
}

/// Where `from` sent datagrams since `mark` (an index into `net.sent`).
fn sent_since(net: &Net, from: usize, mark: usize) -> Vec<SocketAddr> {
    net.sent[mark..]
        .iter()
        .filter(|(i, _)| *i == from)
        .map(|(_, d)| *d)
        .collect()
}

#[test]
fn an_offer_from_a_peer_reached_directly_is_refused_counted_and_punches_nothing() {
    let mut now = Instant::now();
    let mut net = Net::new(now, |_, _| {});
    // C and A talk directly; C then offers a third party's address.
    net.send(C, A, 0, 60, now);
    assert_eq!(net.path(A, C), PeerPath::Direct(Some(addr(C))));
    let victim: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    let mark = net.sent.len();
    control_from(&mut net, C, A, encode_offer(false, &[victim]), now);
    let until = now + Duration::from_secs(2);
    net.advance(&mut now, until);
    let a = net.devices[A].stats();
    assert_eq!(a.dropped(DropReason::PunchRefused), 1);
    assert_eq!(DropReason::PunchRefused.cause(), crate::DropCause::Peer);
    assert_eq!(a.relay.punches_sent, 0);
    assert!(!sent_since(&net, A, mark).contains(&victim));
    // Nor did A answer with an offer of its own.
    assert_eq!(net.devices[C].stats().relay.punches_sent, 0);
}

#[test]
fn a_relayed_peers_offer_is_punched_only_at_usable_candidates_that_are_not_our_own() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    net.devices[A].set_own_candidates(vec![addr(A)]);
    // Past the one offer a second the set-up may have used.
    let until = now + Duration::from_millis(1500);
    net.advance(&mut now, until);
    let good: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    let bad: Vec<SocketAddr> = [
        "127.0.0.1:51820",
        "[::1]:51820",
        "224.0.0.1:51820",
        "[ff02::1]:51820",
        "255.255.255.255:51820",
        "0.0.0.0:51820",
    ]
    .iter()
    .map(|e| e.parse().unwrap())
    .chain([addr(A)])
    .collect();
    let offered: Vec<SocketAddr> = std::iter::once(good).chain(bad.clone()).collect();
    assert_eq!(offered.len(), MAX_CANDIDATES);
    let mark = net.sent.len();
    control_from(&mut net, C, A, encode_offer(false, &offered), now);
    let until = now + Duration::from_secs(1);
    net.advance(&mut now, until);
    let punched = sent_since(&net, A, mark);
    assert!(punched.contains(&good), "the offer was taken: {punched:?}");
    assert!(punched.contains(&addr(C)), "C's known endpoint too");
    for b in &bad {
        assert!(!punched.contains(b), "punched {b}");
    }
}

#[test]
fn an_offer_spelling_addresses_as_ipv4_mapped_ipv6_is_malformed_and_punches_none_of_them() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    let until = now + Duration::from_millis(1500);
    net.advance(&mut now, until);
    let mapped = ["127.0.0.1", "224.0.0.1", "0.0.0.0", "198.51.100.9"];
    let mut plain = vec![
        crate::wire::control::TYPE_PUNCH_OFFER,
        0,
        mapped.len() as u8,
    ];
    for ip in mapped {
        let ip: Ipv4Addr = ip.parse().unwrap();
        plain.push(6);
        plain.extend_from_slice(&ip.to_ipv6_mapped().octets());
        plain.extend_from_slice(&51820u16.to_le_bytes());
    }
    let malformed = net.devices[A].stats().dropped(DropReason::MalformedInner);
    let mark = net.sent.len();
    control_from(&mut net, C, A, plain, now);
    let until = now + Duration::from_secs(1);
    net.advance(&mut now, until);
    assert_eq!(
        net.devices[A].stats().dropped(DropReason::MalformedInner),
        malformed + 1
    );
    let punched = sent_since(&net, A, mark);
    for ip in mapped {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(
            !punched.iter().any(|d| d.ip().to_canonical() == ip),
            "punched {ip} ({punched:?})"
        );
    }
}

#[test]
fn a_punch_burst_stops_when_the_peer_is_no_longer_relayed() {
    let mut now = Instant::now();
    let mut net = relayed(&mut now);
    let until = now + Duration::from_millis(1500);
    net.advance(&mut now, until);
    let target: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    control_from(&mut net, C, A, encode_offer(false, &[target]), now);
    // A's burst is due; its caller names no relay for C any more.
    let c_at_a = net.id(A, C);
    net.devices[A].set_relay(c_at_a, None, now);
    assert_eq!(net.path(A, C), PeerPath::Direct(Some(addr(C))));
    let sent = net.devices[A].stats().relay.punches_sent;
    let mark = net.sent.len();
    let until = now + Duration::from_secs(2);
    net.advance(&mut now, until);
    assert_eq!(net.devices[A].stats().relay.punches_sent, sent);
    assert!(!sent_since(&net, A, mark).contains(&target));
}

#[test]
fn a_burst_is_bounded_to_the_candidates_of_one_offer_and_the_known_endpoint() {
    let mut punch = crate::peer::relay::Punch::default();
    let many: Vec<SocketAddr> = (1..=40)
        .map(|i| SocketAddr::from(([198, 51, 100, i], 4000)))
        .collect();
    let now = Instant::now();
    punch.start_burst(many, now);
    let due = punch.due_punches(now).unwrap();
    assert_eq!(due.len(), crate::peer::relay::MAX_PUNCH_TARGETS);
}
