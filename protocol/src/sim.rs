//! Virtual-time simulator: many [`Device`]s over lossy, reordering,
//! MTU-limited links, reproducible bit for bit from one seed.
//!
//! The simulator owns the clock (one real `Instant` taken as the origin,
//! then advanced by durations), the underlay (a priority queue of datagrams
//! by delivery time) and every node's TUN side (inner packets written by the
//! device are parsed and recorded). It drives each device exactly as the
//! daemon does: datagrams due go to `decapsulate`, inner packets go to
//! `encapsulate`, and after every input it drains `poll_transmit` and
//! `poll_event`; `handle_timeout` fires at `poll_timeout`. An adversary hook
//! sees every datagram put on the wire and may drop, duplicate or capture it
//! for re-injection later. Scenario tests live in `sim/scenarios.rs`.
//!
//! Test-only code: it is the one place in this crate that reads the clock
//! (once, for the origin), and it panics freely on broken invariants.

mod floods;
mod gossip_model;
pub(crate) mod inner;
mod nat;
mod pmtu_scenarios;
mod reflexive;
mod scenarios;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ip_network::IpNetwork;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::wire::{self, TRANSPORT_HEADER_LEN, TRANSPORT_MIN_LEN};
use crate::{
    Decapsulated, Device, DeviceConfig, DropReason, Encapsulated, Event, PeerConfig, PeerId,
    PeerStatus, PublicKey, StaticSecret,
};

pub(crate) use inner::Inner;

/// Bytes the underlay adds to a datagram: an IPv4 header and a UDP header.
pub(crate) const UNDERLAY_OVERHEAD: usize = 20 + 8;
/// Room the simulator leaves around an inner packet for `encapsulate`:
/// header in front, padding and tag behind.
const ENCAP_ROOM: usize = TRANSPORT_HEADER_LEN + 16 + 16;
/// The wall-clock time every device believes it started at.
const UNIX_TIME_AT_ORIGIN: Duration = Duration::from_secs(1_700_000_000);

/// One direction of a virtual link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Upper bound of a uniformly random extra delay; anything above zero
    /// reorders datagrams sent closer together than this.
    pub jitter: Duration,
    /// Largest underlay IP packet (datagram plus [`UNDERLAY_OVERHEAD`]).
    pub mtu: usize,
}

impl Link {
    /// No delay, no loss, no reordering, an Ethernet MTU.
    pub fn ideal() -> Self {
        Self {
            latency: Duration::ZERO,
            loss: 0.0,
            jitter: Duration::ZERO,
            mtu: 1500,
        }
    }

    /// An ideal link with a fixed delay.
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::ideal()
        }
    }
}

/// What a datagram is, judged from its type byte and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Initiation,
    Response,
    CookieReply,
    /// A transport message with an empty payload.
    Keepalive,
    /// A transport message carrying an inner packet.
    Data,
    /// Anything else.
    Garbage,
}

impl Kind {
    fn of(bytes: &[u8]) -> Self {
        match wire::Message::parse(bytes) {
            Ok(wire::Message::Initiation(_)) => Kind::Initiation,
            Ok(wire::Message::Response(_)) => Kind::Response,
            Ok(wire::Message::CookieReply(_)) => Kind::CookieReply,
            Ok(wire::Message::Transport(_)) if bytes.len() == TRANSPORT_MIN_LEN => Kind::Keepalive,
            Ok(wire::Message::Transport(_)) => Kind::Data,
            Err(_) => Kind::Garbage,
        }
    }
}

/// A datagram on the virtual underlay.
#[derive(Debug, Clone)]
pub(crate) struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    /// When it was put on the wire (or injected).
    pub sent_at: Instant,
}

impl Datagram {
    pub fn kind(&self) -> Kind {
        Kind::of(&self.bytes)
    }

    /// The receiver index of a transport message, response or cookie reply.
    pub fn receiver_index(&self) -> Option<u32> {
        match wire::Message::parse(&self.bytes).ok()? {
            wire::Message::Transport(t) => Some(t.receiver()),
            wire::Message::Response(r) => Some(r.receiver()),
            wire::Message::CookieReply(c) => Some(c.receiver()),
            wire::Message::Initiation(_) => None,
        }
    }
}

/// What the adversary does with a datagram put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Leave it alone.
    Pass,
    /// Drop it.
    Drop,
    /// Send it twice.
    Duplicate,
    /// Keep a copy in [`Sim::held`] and let it through.
    Hold,
    /// Keep it in [`Sim::held`] and let nothing through.
    Steal,
}

/// The adversary hook: sees each datagram and the time since the origin.
type Adversary = Box<dyn FnMut(&Datagram, Duration) -> Verdict>;

/// An inner packet a node's device wrote to its TUN side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivered {
    pub at: Instant,
    pub peer: PeerId,
    pub inner: Inner,
}

/// A datagram a node's device was given, and what it made of it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub at: Instant,
    pub from: SocketAddr,
    pub kind: Kind,
    pub outcome: Decapsulated,
}

/// One simulated host: a device, its addresses and everything observed.
#[derive(Debug)]
pub(crate) struct Node {
    pub device: Device,
    pub addr: SocketAddr,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub public: PublicKey,
    peers: BTreeMap<usize, PeerId>,
    /// Inner packets written to the TUN side.
    pub delivered: Vec<Delivered>,
    /// Every datagram the device sent, before the network touched it.
    pub sent: Vec<Datagram>,
    /// Every datagram given to the device.
    pub received: Vec<Received>,
    pub events: Vec<(Instant, Event)>,
    /// Packets `encapsulate` refused.
    pub local_drops: Vec<(Instant, DropReason)>,
    /// Inner packets refused as larger than the edge's inner MTU.
    pub too_big: u64,
}

impl Node {
    /// Times at which the device sent datagrams of `kind`.
    pub fn sent_times(&self, kind: Kind) -> Vec<Instant> {
        self.sent
            .iter()
            .filter(|d| d.kind() == kind)
            .map(|d| d.sent_at)
            .collect()
    }

    /// Outcomes of the datagrams of `kind` given to the device.
    pub fn outcomes(&self, kind: Kind) -> Vec<Decapsulated> {
        self.received
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.outcome)
            .collect()
    }
}

/// How one node knows another.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerOpts {
    /// Configure the other node's address as the endpoint.
    pub endpoint: bool,
    pub persistent_keepalive: Option<Duration>,
}

impl Default for PeerOpts {
    fn default() -> Self {
        Self {
            endpoint: true,
            persistent_keepalive: None,
        }
    }
}

/// Counters of one direction between two nodes (or from/to no node).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkStats {
    /// Datagrams put on the link (after the adversary).
    pub sent: u64,
    /// Lost at random.
    pub lost: u64,
    /// Larger than the link MTU.
    pub too_big: u64,
    /// Nobody had the destination address when it arrived.
    pub undeliverable: u64,
    /// Data messages among `sent`.
    pub data_sent: u64,
    /// Data messages among the lost, too big and undeliverable.
    pub data_lost: u64,
}

struct Scheduled {
    at: Instant,
    order: u64,
    dgram: Datagram,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// The simulator. See the module documentation.
pub(crate) struct Sim {
    origin: Instant,
    now: Instant,
    rng: ChaCha20Rng,
    nodes: Vec<Node>,
    default_link: Link,
    links: BTreeMap<(usize, usize), Link>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    order: u64,
    adversary: Option<Adversary>,
    /// Datagrams the adversary captured.
    pub held: Vec<Datagram>,
    /// Datagrams the adversary dropped or stole.
    pub adversary_dropped: u64,
    /// Per direction (`usize::MAX` for an address no node has).
    pub link_stats: BTreeMap<(usize, usize), LinkStats>,
    next_seq: BTreeMap<(usize, usize), u64>,
    buf: Vec<u8>,
}

impl Sim {
    /// An empty simulation; every key, index and loss follows from `seed`.
    pub fn new(seed: u64) -> Self {
        let origin = Instant::now();
        Self {
            origin,
            now: origin,
            rng: ChaCha20Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            default_link: Link::ideal(),
            links: BTreeMap::new(),
            queue: BinaryHeap::new(),
            order: 0,
            adversary: None,
            held: Vec::new(),
            adversary_dropped: 0,
            link_stats: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            buf: vec![0; 1 << 16],
        }
    }

    /// Adds a node with default device settings.
    pub fn add_node(&mut self) -> usize {
        self.add_node_with(|_| {})
    }

    /// Adds a node whose device settings `configure` adjusts. Node `i` is at
    /// 192.0.2.(i+1):51820, with 100.64.0.(i+1) and fd00::(i+1) inside.
    pub fn add_node_with(&mut self, configure: impl FnOnce(&mut DeviceConfig)) -> usize {
        let i = self.nodes.len();
        let host = u8::try_from(i + 1).expect("at most 255 nodes");
        let secret = StaticSecret::generate(&mut self.rng);
        let public = secret.public_key();
        let mut config = DeviceConfig::new(secret);
        // Scenarios about sessions and timers count datagrams exactly;
        // path-MTU scenarios turn discovery back on.
        config.pmtu_discovery = false;
        configure(&mut config);
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let device = Device::new(config, self.now, UNIX_TIME_AT_ORIGIN, seed);
        self.nodes.push(Node {
            device,
            addr: SocketAddr::from(([192, 0, 2, host], 51820)),
            v4: Ipv4Addr::new(100, 64, 0, host),
            v6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host)),
            public,
            peers: BTreeMap::new(),
            delivered: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
            events: Vec::new(),
            local_drops: Vec::new(),
            too_big: 0,
        });
        i
    }

    /// Makes `a` and `b` peers of each other, each with the other's address
    /// as endpoint.
    pub fn connect(&mut self, a: usize, b: usize) {
        self.connect_with(a, b, PeerOpts::default(), PeerOpts::default());
    }

    /// Makes `a` and `b` peers; `a_opts` says how `a` knows `b`.
    pub fn connect_with(&mut self, a: usize, b: usize, a_opts: PeerOpts, b_opts: PeerOpts) {
        self.introduce(a, b, a_opts);
        self.introduce(b, a, b_opts);
    }

    /// Configures `other` as a peer of `node` (one direction only).
    pub fn introduce(&mut self, node: usize, other: usize, opts: PeerOpts) {
        let o = &self.nodes[other];
        let cfg = PeerConfig {
            name: format!("node{other}"),
            public_key: o.public,
            preshared_key: None,
            endpoint: opts.endpoint.then_some(o.addr),
            allowed_ips: vec![
                IpNetwork::new(o.v4, 32).expect("a /32"),
                IpNetwork::new(o.v6, 128).expect("a /128"),
            ],
            keepalive: opts
                .persistent_keepalive
                .map_or(crate::Keepalive::Off, crate::Keepalive::Fixed),
        };
        let now = self.now;
        let id = self.nodes[node]
            .device
            .add_peer(cfg, now)
            .expect("simulated peers are distinct");
        self.nodes[node].peers.insert(other, id);
    }

    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// Sets the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: usize, to: usize, link: Link) {
        self.links.insert((from, to), link);
    }

    pub fn set_adversary(&mut self, f: impl FnMut(&Datagram, Duration) -> Verdict + 'static) {
        self.adversary = Some(Box::new(f));
    }

    pub fn clear_adversary(&mut self) {
        self.adversary = None;
    }

    /// Moves `node` to a new underlay address (roaming): what it sends from
    /// now on comes from there, and datagrams to the old address are lost.
    pub fn set_address(&mut self, node: usize, addr: SocketAddr) {
        self.nodes[node].addr = addr;
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Runs `f` on node `i`'s device now (a command from its owner), then
    /// sends what it queued.
    pub fn with_device<T>(&mut self, i: usize, f: impl FnOnce(&mut Device, Instant) -> T) -> T {
        let now = self.now;
        let out = f(&mut self.nodes[i].device, now);
        self.drain(i);
        out
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant `d` after the origin.
    pub fn at(&self, d: Duration) -> Instant {
        self.origin + d
    }

    /// Time since the origin.
    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// The id under which `node` knows `other`.
    pub fn peer(&self, node: usize, other: usize) -> PeerId {
        self.nodes[node].peers[&other]
    }

    /// What `node`'s device says about `other`.
    pub fn status(&self, node: usize, other: usize) -> PeerStatus {
        let n = &self.nodes[node];
        n.device
            .peer_status(n.peers[&other], self.now)
            .expect("a configured peer")
    }

    /// Drops counted by `node`'s device for `reason`.
    pub fn dropped(&self, node: usize, reason: DropReason) -> u64 {
        self.nodes[node].device.stats().dropped(reason)
    }

    /// Sequence numbers of the inner packets from `from` delivered at `to`,
    /// in delivery order.
    pub fn delivered_seqs(&self, from: usize, to: usize) -> Vec<u64> {
        let f = &self.nodes[from];
        let (v4, v6) = (IpAddr::V4(f.v4), IpAddr::V6(f.v6));
        self.nodes[to]
            .delivered
            .iter()
            .filter(|d| d.inner.src == v4 || d.inner.src == v6)
            .map(|d| d.inner.seq)
            .collect()
    }

    /// Counters of the direction `from` → `to`.
    pub fn link(&self, from: usize, to: usize) -> LinkStats {
        self.link_stats
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    fn next_seq(&mut self, from: usize, to: usize) -> u64 {
        let s = self.next_seq.entry((from, to)).or_insert(0);
        *s += 1;
        *s
    }

    /// `from` sends an IPv4 packet of `len` bytes to `to`, carrying the next
    /// sequence number of that pair.
    pub fn send(&mut self, from: usize, to: usize, len: usize) -> Encapsulated {
        let seq = self.next_seq(from, to);
        let (s, d) = (self.nodes[from].v4, self.nodes[to].v4);
        self.send_packet(from, &inner::ipv4(s, d, seq, len))
    }

    /// Like [`Sim::send`] over IPv6.
    pub fn send_v6(&mut self, from: usize, to: usize, len: usize) -> Encapsulated {
        let seq = self.next_seq(from, to);
        let (s, d) = (self.nodes[from].v6, self.nodes[to].v6);
        self.send_packet(from, &inner::ipv6(s, d, seq, len))
    }

    /// `node` reads `packet` from its TUN device.
    pub fn send_packet(&mut self, node: usize, packet: &[u8]) -> Encapsulated {
        let mut buf = vec![0u8; packet.len() + ENCAP_ROOM];
        buf[TRANSPORT_HEADER_LEN..][..packet.len()].copy_from_slice(packet);
        let now = self.now;
        let outcome = self.nodes[node]
            .device
            .encapsulate(now, &mut buf, packet.len());
        match outcome {
            Encapsulated::Send {
                destination, len, ..
            } => {
                buf.truncate(len);
                self.transmit(node, destination, buf);
            }
            Encapsulated::Queued { .. } => {}
            // The node answers these with ICMP; the simulator records them.
            Encapsulated::TooBig { .. } => self.nodes[node].too_big += 1,
            Encapsulated::Dropped(reason) => self.nodes[node].local_drops.push((now, reason)),
        }
        self.drain(node);
        outcome
    }

    /// Every pair in `pairs` sends one IPv4 packet of `len` bytes each
    /// `every`, from now until `until` (exclusive).
    pub fn stream(
        &mut self,
        pairs: &[(usize, usize)],
        every: Duration,
        until: Instant,
        len: usize,
    ) {
        let mut t = self.now;
        while t < until {
            self.run_until(t);
            for &(from, to) in pairs {
                self.send(from, to, len);
            }
            t += every;
        }
        self.run_until(until);
    }

    /// Delivers `d` to whoever has its destination address now, bypassing
    /// links and adversary, and returns what that device made of it.
    pub fn inject(&mut self, mut d: Datagram) -> Option<Decapsulated> {
        d.sent_at = self.now;
        self.deliver(d)
    }

    /// Runs the simulation until `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps_at_same_instant = 0u32;
        loop {
            let next_net = self.queue.peek().map(|Reverse(s)| s.at);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.device.poll_timeout())
                .min();
            let next = match (next_net, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            if next <= self.now {
                steps_at_same_instant += 1;
                assert!(
                    steps_at_same_instant < 100_000,
                    "no progress at {:?}: a timer re-arms itself in the past",
                    self.elapsed()
                );
            } else {
                steps_at_same_instant = 0;
                self.now = next;
            }
            if next_net.is_some_and(|t| t <= self.now) {
                let Reverse(s) = self.queue.pop().expect("peeked");
                self.deliver(s.dgram);
            } else {
                let now = self.now;
                for i in 0..self.nodes.len() {
                    if self.nodes[i]
                        .device
                        .poll_timeout()
                        .is_some_and(|t| t <= now)
                    {
                        self.nodes[i].device.handle_timeout(now);
                        self.drain(i);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs the simulation for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn deliver(&mut self, d: Datagram) -> Option<Decapsulated> {
        let kind = d.kind();
        let src = self.node_at(d.from).unwrap_or(usize::MAX);
        let Some(i) = self.node_at(d.to) else {
            let stats = self.link_stats.entry((src, usize::MAX)).or_default();
            stats.undeliverable += 1;
            stats.data_lost += u64::from(kind == Kind::Data);
            return None;
        };
        let now = self.now;
        let mut buf = d.bytes;
        let node = &mut self.nodes[i];
        let outcome = node.device.decapsulate(now, d.from, &mut buf);
        if let Decapsulated::Tun { peer, offset, len } = outcome {
            let inner = inner::parse(&buf[offset..offset + len])
                .unwrap_or_else(|e| panic!("node {i} got a broken inner packet: {e}"));
            node.delivered.push(Delivered {
                at: now,
                peer,
                inner,
            });
        }
        let mut whole = [0u8; 2048];
        while let Some((peer, len)) = node.device.poll_reassembled(&mut whole) {
            let inner = inner::parse(&whole[..len])
                .unwrap_or_else(|e| panic!("node {i} reassembled a broken packet: {e}"));
            node.delivered.push(Delivered {
                at: now,
                peer,
                inner,
            });
        }
        node.received.push(Received {
            at: now,
            from: d.from,
            kind,
            outcome,
        });
        self.drain(i);
        Some(outcome)
    }

    /// Drains `i`'s transmits and events after an input.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(t) = self.nodes[i].device.poll_transmit(now, &mut buf) {
            self.transmit(i, t.destination, buf[..t.len].to_vec());
        }
        self.buf = buf;
        while let Some(e) = self.nodes[i].device.poll_event() {
            self.nodes[i].events.push((now, e));
        }
    }

    /// Node `i` puts a datagram on the wire.
    fn transmit(&mut self, i: usize, to: SocketAddr, bytes: Vec<u8>) {
        let d = Datagram {
            from: self.nodes[i].addr,
            to,
            bytes,
            sent_at: self.now,
        };
        self.nodes[i].sent.push(d.clone());
        let verdict = match &mut self.adversary {
            Some(f) => f(&d, self.now - self.origin),
            None => Verdict::Pass,
        };
        let copies = match verdict {
            Verdict::Pass => 1,
            Verdict::Drop => 0,
            Verdict::Duplicate => 2,
            Verdict::Hold => {
                self.held.push(d.clone());
                1
            }
            Verdict::Steal => {
                self.held.push(d.clone());
                0
            }
        };
        if copies == 0 {
            self.adversary_dropped += 1;
        }
        for _ in 0..copies {
            self.route(d.clone());
        }
    }

    /// Applies the link between sender and receiver to `d`.
    fn route(&mut self, d: Datagram) {
        let src = self.node_at(d.from).unwrap_or(usize::MAX);
        let dst = self.node_at(d.to).unwrap_or(usize::MAX);
        let link = self
            .links
            .get(&(src, dst))
            .copied()
            .unwrap_or(self.default_link);
        let data = d.kind() == Kind::Data;
        let stats = self.link_stats.entry((src, dst)).or_default();
        stats.sent += 1;
        stats.data_sent += u64::from(data);
        if d.bytes.len() + UNDERLAY_OVERHEAD > link.mtu {
            stats.too_big += 1;
            stats.data_lost += u64::from(data);
            return;
        }
        if link.loss > 0.0 && unit(&mut self.rng) < link.loss {
            stats.lost += 1;
            stats.data_lost += u64::from(data);
            return;
        }
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            link.jitter.mul_f64(unit(&mut self.rng))
        };
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + link.latency + jitter,
            order: self.order,
            dgram: d,
        }));
    }
}

/// A uniform sample in [0, 1).
fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
