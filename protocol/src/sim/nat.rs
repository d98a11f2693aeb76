//! A NAT model and the scenarios of NAT keepalives: one node behind a NAT
//! (with probe sockets), one public node, in virtual time.
//!
//! The model is an endpoint-independent mapping NAT (RFC 4787): one outside
//! port per inside (address, port), refreshed by outbound packets only (the
//! conservative case: many NATs ignore inbound refreshes), forgotten after
//! its idle timeout or when the table is flushed; a flushed mapping comes
//! back on a new outside port. Inbound packets without a live mapping are
//! dropped. Scenario tests live at the bottom.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ip_network::IpNetwork;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::inner;
use crate::nat::{Keepalive, NatStatus, ProbeSocket};
use crate::wire::TRANSPORT_HEADER_LEN;
use crate::{Decapsulated, Device, DeviceConfig, Encapsulated, Event, PeerConfig, PeerId};
use crate::{StaticSecret, Transmit};

const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const A_INSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const A_INNER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B_INNER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const PORT: u16 = 51820;

/// An endpoint-independent mapping NAT with an idle timeout.
#[derive(Debug)]
pub(crate) struct NatModel {
    pub timeout: Duration,
    /// Inside address → (outside port, last outbound packet).
    mappings: BTreeMap<SocketAddr, (u16, Instant)>,
    next_port: u16,
}

impl NatModel {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            mappings: BTreeMap::new(),
            next_port: 40000,
        }
    }

    /// Translates an outbound packet's source, creating or refreshing its
    /// mapping.
    fn outbound(&mut self, inside: SocketAddr, now: Instant) -> SocketAddr {
        let timeout = self.timeout;
        let alive = self
            .mappings
            .get(&inside)
            .filter(|(_, last)| now.saturating_duration_since(*last) < timeout)
            .map(|(p, _)| *p);
        let port = alive.unwrap_or_else(|| {
            self.next_port += 1;
            self.next_port
        });
        self.mappings.insert(inside, (port, now));
        SocketAddr::new(IpAddr::V4(NAT_PUBLIC), port)
    }

    /// The inside address a packet to outside `port` goes to, if its
    /// mapping is alive.
    fn inbound(&self, port: u16, now: Instant) -> Option<SocketAddr> {
        self.mappings
            .iter()
            .find(|(_, (p, last))| {
                *p == port && now.saturating_duration_since(*last) < self.timeout
            })
            .map(|(inside, _)| *inside)
    }

    /// Forgets every mapping (`conntrack -F`).
    pub fn flush(&mut self) {
        self.mappings.clear();
    }
}

#[derive(Debug)]
struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Node A behind the NAT (or not), node B public, one link between.
pub(crate) struct NatSim {
    pub now: Instant,
    pub a: Device,
    pub b: Device,
    a_peer: PeerId,
    b_peer: PeerId,
    /// `None`: A is public too, at its inside address.
    pub nat: Option<NatModel>,
    latency: Duration,
    loss: f64,
    rng: ChaCha20Rng,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    packets: BTreeMap<usize, Packet>,
    order: u64,
    probe_ports: BTreeMap<ProbeSocket, u16>,
    next_probe_port: u16,
    /// When A wrote an inner packet from B to its TUN side.
    pub a_delivered: Vec<Instant>,
    /// When B got an echo back from A.
    pub b_delivered: Vec<Instant>,
    /// Datagrams (time, bytes on the wire with IP and UDP headers) A sent
    /// from its main socket.
    pub a_sent: Vec<(Instant, usize)>,
    /// A's NAT status changes.
    pub a_nat: Vec<(Instant, NatStatus)>,
    /// B's NAT status changes.
    pub b_nat: Vec<(Instant, NatStatus)>,
    seq: u64,
    pub echo: bool,
}

impl NatSim {
    /// A behind a NAT forgetting idle mappings after `timeout` (no NAT when
    /// `None`); both peers use `Keepalive::Auto`.
    pub fn new(seed: u64, timeout: Option<Duration>, latency: Duration, loss: f64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let origin = Instant::now();
        let device = |rng: &mut ChaCha20Rng| {
            let key = StaticSecret::generate(rng);
            let mut config = DeviceConfig::new(key);
            config.pmtu_discovery = false;
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            Device::new(config, origin, Duration::from_secs(1_700_000_000), seed)
        };
        let mut a = device(&mut rng);
        let mut b = device(&mut rng);
        a.set_local_addresses(vec![IpAddr::V4(A_INSIDE)], PORT);
        b.set_local_addresses(vec![IpAddr::V4(B_ADDR)], PORT);
        let cfg = |name: &str, key, endpoint, inner: Ipv4Addr| PeerConfig {
            name: name.into(),
            public_key: key,
            preshared_key: None,
            endpoint,
            allowed_ips: vec![IpNetwork::new(inner, 32).expect("a /32")],
            keepalive: Keepalive::Auto,
        };
        let (ka, kb) = (a.public_key(), b.public_key());
        let a_peer = a
            .add_peer(
                cfg("b", kb, Some(SocketAddr::from((B_ADDR, PORT))), B_INNER),
                origin,
            )
            .expect("distinct keys");
        let b_peer = b
            .add_peer(cfg("a", ka, None, A_INNER), origin)
            .expect("distinct keys");
        Self {
            now: origin,
            a,
            b,
            a_peer,
            b_peer,
            nat: timeout.map(NatModel::new),
            latency,
            loss,
            rng,
            queue: BinaryHeap::new(),
            packets: BTreeMap::new(),
            order: 0,
            probe_ports: BTreeMap::new(),
            next_probe_port: 30000,
            a_delivered: Vec::new(),
            b_delivered: Vec::new(),
            a_sent: Vec::new(),
            a_nat: Vec::new(),
            b_nat: Vec::new(),
            seq: 0,
            echo: false,
        }
    }

    fn a_inside(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(A_INSIDE), port)
    }

    /// Puts a datagram on the link (through the NAT when A sends).
    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let from = match (&mut self.nat, from.ip() == IpAddr::V4(A_INSIDE)) {
            (Some(nat), true) => nat.outbound(from, self.now),
            _ => from,
        };
        if self.loss > 0.0 && super::unit(&mut self.rng) < self.loss {
            return;
        }
        self.order += 1;
        let key = self.order as usize;
        self.packets.insert(key, Packet { from, to, bytes });
        self.queue
            .push(Reverse((self.now + self.latency, self.order, key)));
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        let mut buf = p.bytes;
        if p.to == SocketAddr::from((B_ADDR, PORT)) {
            if let Decapsulated::Tun { .. } = self.b.decapsulate(now, p.from, &mut buf) {
                self.b_delivered.push(now);
            }
            return;
        }
        let inside = match &self.nat {
            Some(nat) if p.to.ip() == IpAddr::V4(NAT_PUBLIC) => nat.inbound(p.to.port(), now),
            None if p.to.ip() == IpAddr::V4(A_INSIDE) => Some(p.to),
            _ => None,
        };
        let Some(inside) = inside else { return };
        if inside.port() == PORT {
            if let Decapsulated::Tun { offset, len, .. } = self.a.decapsulate(now, p.from, &mut buf)
            {
                self.a_delivered.push(now);
                if self.echo {
                    let seq = inner::parse(&buf[offset..offset + len]).map_or(0, |i| i.seq);
                    let reply = inner::ipv4(A_INNER, B_INNER, seq, 64);
                    self.encapsulate_at_a(&reply);
                }
            }
        } else if let Some((&socket, _)) = self
            .probe_ports
            .iter()
            .find(|(_, &port)| port == inside.port())
        {
            self.a.handle_probe_datagram(now, socket, &mut buf);
        }
    }

    fn encapsulate_at_a(&mut self, packet: &[u8]) {
        let mut buf = vec![0u8; packet.len() + 64];
        buf[TRANSPORT_HEADER_LEN..][..packet.len()].copy_from_slice(packet);
        if let Encapsulated::Send {
            destination, len, ..
        } = self.a.encapsulate(self.now, &mut buf, packet.len())
        {
            buf.truncate(len);
            self.a_sent.push((self.now, len + 28));
            self.send(Self::a_inside(PORT), destination, buf);
        }
    }

    /// B sends an inner packet to A.
    pub fn b_sends(&mut self) {
        self.seq += 1;
        let packet = inner::ipv4(B_INNER, A_INNER, self.seq, 64);
        let mut buf = vec![0u8; packet.len() + 64];
        buf[TRANSPORT_HEADER_LEN..][..packet.len()].copy_from_slice(&packet);
        if let Encapsulated::Send {
            destination, len, ..
        } = self.b.encapsulate(self.now, &mut buf, packet.len())
        {
            buf.truncate(len);
            self.send(SocketAddr::from((B_ADDR, PORT)), destination, buf);
        }
        self.drain();
    }

    fn drain(&mut self) {
        let now = self.now;
        let mut buf = vec![0u8; 2048];
        loop {
            let mut any = false;
            while let Some(Transmit { destination, len }) = self.a.poll_transmit(now, &mut buf) {
                self.a_sent.push((now, len + 28));
                self.send(Self::a_inside(PORT), destination, buf[..len].to_vec());
                any = true;
            }
            while let Some(t) = self.a.poll_probe_transmit(now, &mut buf) {
                let next = self.next_probe_port;
                let port = *self.probe_ports.entry(t.socket).or_insert(next);
                if port == next {
                    self.next_probe_port += 1;
                }
                self.send(Self::a_inside(port), t.destination, buf[..t.len].to_vec());
                any = true;
            }
            while let Some(Transmit { destination, len }) = self.b.poll_transmit(now, &mut buf) {
                self.send(
                    SocketAddr::from((B_ADDR, PORT)),
                    destination,
                    buf[..len].to_vec(),
                );
                any = true;
            }
            while let Some(e) = self.a.poll_event() {
                if let Event::NatChanged(s) = e {
                    self.a_nat.push((now, s));
                }
            }
            while let Some(e) = self.b.poll_event() {
                if let Event::NatChanged(s) = e {
                    self.b_nat.push((now, s));
                }
            }
            if !any {
                break;
            }
        }
        // Sockets of finished trials close.
        let live: Vec<ProbeSocket> = self.a.probe_sockets().collect();
        self.probe_ports.retain(|s, _| live.contains(s));
    }

    pub fn run_until(&mut self, until: Instant) {
        self.drain();
        loop {
            let net = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let timer = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = [net, timer].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if net.is_some_and(|t| t <= self.now) {
                let Reverse((_, _, key)) = self.queue.pop().expect("peeked");
                let p = self.packets.remove(&key).expect("queued");
                self.deliver(p);
            } else {
                let now = self.now;
                if self.a.poll_timeout().is_some_and(|t| t <= now) {
                    self.a.handle_timeout(now);
                }
                if self.b.poll_timeout().is_some_and(|t| t <= now) {
                    self.b.handle_timeout(now);
                }
            }
            self.drain();
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// B sends every `every` until `until`.
    pub fn stream(&mut self, every: Duration, until: Instant) {
        while self.now < until {
            self.b_sends();
            let next = self.now + every;
            self.run_until(next.min(until));
        }
    }

    pub fn a_status(&self) -> NatStatus {
        self.a.nat_status()
    }

    pub fn a_interval(&self) -> Option<Duration> {
        self.a.keepalive_interval(self.a_peer)
    }

    pub fn b_interval(&self) -> Option<Duration> {
        self.b.keepalive_interval(self.b_peer)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// After `minutes` of silence behind a NAT of `lifetime`, what A measured;
/// also checks B still reaches A.
fn measure(seed: u64, lifetime: u64, minutes: u64, loss: f64) -> NatSim {
    let mut sim = NatSim::new(seed, Some(secs(lifetime)), ms(10), loss);
    sim.run_for(secs(minutes * 60));
    let before = sim.a_delivered.len();
    // Three tries, for the lossy case.
    for _ in 0..3 {
        sim.b_sends();
        sim.run_for(ms(500));
    }
    assert!(
        sim.a_delivered.len() > before,
        "{:?} {:?} {:?} {:?}: B did not reach A behind a {lifetime}s NAT after {minutes} min of silence",
        sim.a.peer_status(sim.a_peer, sim.now),
        sim.b.peer_status(sim.b_peer, sim.now),
        sim.nat.as_ref().map(|n| &n.mappings),
        sim.a_nat.last(),
    );
    sim
}

fn lifetime_found_within_bounds(lifetime: u64) {
    let sim = measure(lifetime, lifetime, 12, 0.0);
    let s = sim.a_status();
    let l = secs(lifetime);
    assert_eq!(s.behind, Some(true));
    assert_eq!(s.reflexive.map(|r| r.ip()), Some(IpAddr::V4(NAT_PUBLIC)));
    let proven = s.lifetime_at_least.expect("a proven lifetime");
    assert!(proven <= l, "proved {proven:?} behind a {lifetime}s NAT");
    assert!(
        proven.as_secs_f64() >= lifetime as f64 / 1.3,
        "search stopped at {proven:?} behind a {lifetime}s NAT"
    );
    let every = sim.a_interval().expect("keepalives behind a NAT");
    assert!(
        every < l,
        "keepalive every {every:?} behind a {lifetime}s NAT"
    );
    assert_eq!(s.keepalive_interval, Some(every));
    // Never, during the whole search, did an interval reach the lifetime.
    for (at, st) in &sim.a_nat {
        if let Some(i) = st.keepalive_interval {
            assert!(i < l, "interval {i:?} at {at:?} behind a {lifetime}s NAT");
        }
    }
}

#[test]
fn lifetime_of_a_5s_nat_is_found_and_keepalives_stay_below_it() {
    lifetime_found_within_bounds(5);
}

#[test]
fn lifetime_of_a_20s_nat_is_found_and_keepalives_stay_below_it() {
    lifetime_found_within_bounds(20);
}

#[test]
fn lifetime_of_a_60s_nat_is_found_and_keepalives_stay_below_it() {
    lifetime_found_within_bounds(60);
}

#[test]
fn lifetime_of_a_120s_nat_is_found_and_keepalives_stay_below_it() {
    lifetime_found_within_bounds(120);
}

#[test]
fn a_60s_nat_gets_a_keepalive_above_10s_within_90s() {
    let mut sim = NatSim::new(7, Some(secs(60)), ms(10), 0.0);
    sim.run_for(secs(90));
    let every = sim.a_interval().expect("behind a NAT");
    assert!(every > secs(10), "keepalive every {every:?} after 90 s");
}

#[test]
fn the_main_socket_is_never_idle_longer_than_the_mapping_lifetime() {
    let sim = measure(11, 20, 10, 0.0);
    let gaps = sim.a_sent.windows(2).map(|w| w[1].0 - w[0].0);
    let longest = gaps.max().expect("A sent");
    assert!(longest < secs(20), "A was silent for {longest:?}");
}

#[test]
fn a_public_node_sends_no_keepalives() {
    let mut sim = NatSim::new(3, None, ms(10), 0.0);
    sim.run_for(secs(5));
    assert_eq!(sim.a_status().behind, Some(false));
    assert_eq!(sim.b.nat_status().behind, Some(false));
    let sent = sim.a_sent.len();
    sim.run_for(secs(600));
    assert_eq!(sim.a_sent.len(), sent, "a public node sent keepalives");
    assert_eq!(sim.a_interval(), None);
    assert_eq!(sim.b_interval(), None);
    assert_eq!(sim.a.nat_status().trials, 0);
}

#[test]
fn the_public_peer_of_a_natted_node_sends_no_keepalives() {
    let sim = measure(5, 20, 5, 0.0);
    assert_eq!(sim.b.nat_status().behind, Some(false));
    assert_eq!(sim.b_interval(), None);
}

#[test]
fn a_flushed_mapping_is_recovered_within_a_second_while_traffic_flows() {
    let mut sim = NatSim::new(9, Some(secs(60)), ms(10), 0.0);
    sim.echo = true;
    sim.run_for(secs(120));
    let start = sim.now;
    sim.stream(ms(100), start + secs(5));
    sim.nat.as_mut().expect("a NAT").flush();
    let flushed = sim.now;
    sim.stream(ms(100), flushed + secs(10));
    let back = sim
        .b_delivered
        .iter()
        .find(|t| **t > flushed)
        .map(|t| *t - flushed)
        .expect("echoes came back after the flush");
    assert!(back < secs(1), "recovered after {back:?}");
    let last = *sim.b_delivered.last().expect("echoes");
    assert!(last > flushed + secs(9), "echoes stopped again");
}

#[test]
fn a_lossy_path_never_yields_a_too_long_lifetime() {
    for seed in 0..3 {
        let sim = measure(100 + seed, 20, 12, 0.1);
        let s = sim.a_status();
        if let Some(p) = s.lifetime_at_least {
            assert!(p <= secs(20), "proved {p:?} on a lossy path");
        }
        let every = sim.a_interval().expect("behind a NAT");
        assert!(every < secs(20), "keepalive every {every:?}");
    }
}

#[test]
fn a_gossiped_hint_sets_the_keepalive_at_once_and_a_wrong_one_is_corrected() {
    let mut sim = NatSim::new(13, Some(secs(20)), ms(10), 0.0);
    let now = sim.now;
    sim.a.set_nat_hint(secs(40), now);
    sim.run_for(secs(600));
    let s = sim.a_status();
    assert!(s.lifetime_at_least.is_some_and(|p| p <= secs(20)));
    assert!(sim.a_interval().is_some_and(|i| i < secs(20)));
}

#[test]
fn trials_never_move_the_helpers_endpoint_for_the_natted_node() {
    let sim = measure(21, 20, 6, 0.0);
    let b = sim.b.peer_status(sim.b_peer, sim.now).expect("a peer");
    assert!(sim.a.nat_counters().pings_sent > 0);
    assert!(sim.b.nat_counters().bindings_helped >= 2 * sim.a_status().trials);
    // One change: from no endpoint to A's main mapping, never to a probe.
    assert_eq!(b.stats.endpoint_changes, 1);
    assert_eq!(b.endpoint.map(|e| e.port()), Some(40001));
}
