//! Fuzzing harness shared by the cargo-fuzz targets in `protocol/fuzz` and
//! the stable `fuzz_smoke` test. Not part of the API: compiled only with
//! the `fuzzing` feature or for tests.
//!
//! [`Target`] is a device with one configured peer and a live session with
//! it, built from fixed keys and seeds, so every run starts from the same
//! state and real messages for it can be made ahead of time
//! ([`seed_corpus`]). An input is a sequence of records, each a flags byte
//! and a datagram; the flags steer the harness (recompute mac1 so mutated
//! handshakes reach the Noise layer, pick the source address, advance time,
//! send a packet the other way, or have the peer seal the bytes as a
//! transport plaintext first, so that any plaintext, control messages above
//! all, reaches the device's handlers authenticated), the datagram goes to
//! [`Device::decapsulate`], and every output is checked: no panic, a drop is
//! counted exactly once under its reason and a consumed datagram not at all,
//! an inner packet lies within the buffer and comes from the peer's allowed
//! IPs (a packet reassembled from pieces too), nothing is sent but to the
//! peer, the sender or an endpoint the peer offered. Like the rest of the
//! crate it never reads the clock: callers pass the origin.
//!
//! The control mode ([`Target::feed_sealed`], the `control` target) sets
//! that sealing flag on every record: the peer seals every plaintext the
//! fuzzer writes in its live session, so every control message's parser
//! and handler sees authenticated input from the first byte, and
//! [`Target::reached`] tallies which types got there.
//!
//! Cost. Each input gets a fresh target (two devices and a handshake),
//! and clock steps past a session's lifetime make more handshakes; almost
//! all of that was X25519 and repeats input after input, so the target
//! bodies turn on [`x25519_memo`], which remembers X25519 results (the
//! same bytes, computed once). What is left of a handshake is hashing, so
//! one input may make the peer re-handshake to seal a record at most
//! [`PEER_HANDSHAKES`] times: the record that would need one more ends
//! the input.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::cookie::{CookieChecker, CookieGenerator};
use crate::wire::control::{self, Control};
use crate::wire::{self, Message, INITIATION_LEN, RESPONSE_LEN};
use crate::{
    packet, Decapsulated, Device, DeviceConfig, DropReason, Encapsulated, PeerConfig, PeerId,
    StaticSecret,
};

/// The fuzzed device's static key.
pub const LOCAL_KEY: [u8; 32] = [0x11; 32];
/// Its one peer's static key.
pub const REMOTE_KEY: [u8; 32] = [0x22; 32];
const UNIX_TIME: Duration = Duration::from_secs(1_700_000_000);
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The fuzzed device, as the peer's device knows it: its only peer.
const REMOTE_SIDE_PEER: PeerId = PeerId(0);

/// Flags bit: recompute mac1 of a handshake message for the fuzzed device.
pub const FIX_MAC1: u8 = 1 << 0;
/// Flags bit: the datagram comes from the peer's address, not a stranger's.
pub const FROM_PEER: u8 = 1 << 1;
/// Flags bits 2..=4: advance the clock by one of [`STEPS`] first.
const STEP_SHIFT: u8 = 2;
/// Flags bit: the device also sends a packet to the peer.
pub const SEND_TOO: u8 = 1 << 5;
/// Flags bit: the datagram is a plaintext, which the peer seals (unpadded)
/// in its session before it goes to the device; [`FIX_MAC1`] is ignored.
pub const SEALED: u8 = 1 << 6;
/// Flags bit: a little-endian u16 length follows and more records may
/// come after the datagram; without it the datagram runs to the end.
pub const LENGTH_PREFIXED: u8 = 1 << 7;
/// Handshakes the peer may run in one input to replace a session too old
/// to seal [`SEALED`] records in (a clock step of a minute or more makes
/// one almost every time). Four take sessions through every slot
/// (current, previous, next) and back; without a limit a 4 KiB input of
/// three-byte records asks for over a thousand, each a full Noise
/// exchange, and the fuzzer spends its time hashing instead of exploring.
/// A record that would need one more ends the input, so each record
/// that is fed is still sealed in a session the device accepts.
pub const PEER_HANDSHAKES: u32 = 4;
const STEPS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(200),
];

fn local_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 51820))
}

fn remote_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2], 51820))
}

fn stranger_addr() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 7], 4242))
}

fn peer_config(name: &str, key: [u8; 32], endpoint: SocketAddr, ip: Ipv4Addr) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        public_key: StaticSecret::from_bytes(key).public_key(),
        preshared_key: None,
        endpoint: Some(endpoint),
        allowed_ips: vec![ip_network::IpNetwork::new(ip, 32).expect("a /32")],
        keepalive: crate::Keepalive::Off,
    }
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, len: u16) -> Vec<u8> {
    let mut p = vec![0u8; usize::from(len)];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

/// Seals `packet` on `device`; the datagram if it went out at once.
fn seal(device: &mut Device, now: Instant, packet: &[u8]) -> (Encapsulated, Vec<u8>) {
    let mut buf = vec![0u8; packet.len() + 64];
    buf[16..16 + packet.len()].copy_from_slice(packet);
    let out = device.encapsulate(now, &mut buf, packet.len());
    if let Encapsulated::Send { len, .. } = out {
        buf.truncate(len);
    }
    (out, buf)
}

/// Every datagram `device` has to send.
fn transmits(device: &mut Device, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(t) = device.poll_transmit(now, &mut buf) {
        assert!(t.len <= buf.len(), "transmit longer than the buffer");
        out.push((t.destination, buf[..t.len].to_vec()));
    }
    while device.poll_event().is_some() {}
    out
}

fn total_drops(device: &Device) -> u64 {
    DropReason::ALL
        .iter()
        .map(|r| device.stats().dropped(*r))
        .sum()
}

/// The device under test, with a session to its one peer.
#[derive(Debug)]
pub struct Target {
    device: Device,
    peer: PeerId,
    /// The peer's own device, which seals [`SEALED`] records.
    remote: Device,
    now: Instant,
    /// Endpoints the peer offered in punch offers: punches may go there.
    offered: Vec<SocketAddr>,
    /// Control messages the peer sealed that the device authenticated and
    /// handed to its handlers, by type (see [`Target::reached`]).
    reached: BTreeMap<u8, u64>,
    /// Real messages made while building the target (see [`seed_corpus`]).
    messages: Messages,
    /// Handshakes the peer may still run to seal [`SEALED`] records in
    /// the input being fed.
    peer_handshakes_left: u32,
    /// Buffers reused from record to record: transmits, and packets
    /// reassembled from pieces.
    scratch: Vec<u8>,
    whole: Vec<u8>,
}

/// What became of a [`SEALED`] record's plaintext.
enum Sealing {
    /// The peer sealed it in a live session.
    Sealed(Vec<u8>),
    /// No session and none could be made: it goes in as it is.
    Failed,
    /// The session expired and the input has used up
    /// [`PEER_HANDSHAKES`]: the input ends here.
    Spent,
}

#[derive(Debug, Default)]
struct Messages {
    initiation: Vec<u8>,
    response: Vec<u8>,
    data: Vec<u8>,
    data_bad_source: Vec<u8>,
    keepalive: Vec<u8>,
    fresh_initiation: Vec<u8>,
    cookie_reply: Vec<u8>,
}

impl Target {
    /// Builds the device and its peer and runs a handshake between them.
    /// Deterministic: every target starts in the same state.
    pub fn new(origin: Instant) -> Self {
        let now = origin;
        let mut device = Device::new(
            DeviceConfig::new(StaticSecret::from_bytes(LOCAL_KEY)),
            now,
            UNIX_TIME,
            [1; 32],
        );
        let peer = device
            .add_peer(
                peer_config("remote", REMOTE_KEY, remote_addr(), REMOTE_IP),
                now,
            )
            .expect("a valid peer");
        let mut remote = Device::new(
            DeviceConfig::new(StaticSecret::from_bytes(REMOTE_KEY)),
            now,
            UNIX_TIME,
            [2; 32],
        );
        let remote_peer = remote
            .add_peer(peer_config("local", LOCAL_KEY, local_addr(), LOCAL_IP), now)
            .expect("a valid peer");
        debug_assert_eq!(remote_peer, REMOTE_SIDE_PEER);

        // The device initiates; its first packet waits for the handshake.
        seal(&mut device, now, &ipv4(LOCAL_IP, REMOTE_IP, 40));
        let [(_, initiation)] =
            <[_; 1]>::try_from(transmits(&mut device, now)).expect("initiation");
        remote.decapsulate(now, local_addr(), &mut initiation.clone());
        let [(_, response)] = <[_; 1]>::try_from(transmits(&mut remote, now)).expect("response");
        device.decapsulate(now, remote_addr(), &mut response.clone());
        for (_, mut d) in transmits(&mut device, now) {
            remote.decapsulate(now, local_addr(), &mut d);
        }
        Self {
            device,
            peer,
            remote,
            now,
            offered: Vec::new(),
            reached: BTreeMap::new(),
            messages: Messages {
                initiation,
                response,
                ..Messages::default()
            },
            peer_handshakes_left: PEER_HANDSHAKES,
            scratch: vec![0u8; 2048],
            whole: vec![0u8; 1 << 16],
        }
    }

    /// [`Target::new`], plus the messages [`seed_corpus`] needs that the
    /// target itself does not: each costs Diffie-Hellman operations, which
    /// fuzz inputs should not pay for.
    fn with_messages(origin: Instant) -> Self {
        let mut t = Self::new(origin);
        let now = t.now;
        let remote = &mut t.remote;
        let m = &mut t.messages;
        // Messages the device has not seen yet. First the keepalive the
        // remote owes for the data it received (sending data would cancel
        // it).
        let later = now + crate::timers::KEEPALIVE_TIMEOUT;
        remote.handle_timeout(later);
        m.keepalive = transmits(remote, later)
            .into_iter()
            .map(|(_, d)| d)
            .find(|d| d.len() == wire::TRANSPORT_MIN_LEN)
            .unwrap_or_default();
        m.data = seal(remote, later, &ipv4(REMOTE_IP, LOCAL_IP, 60)).1;
        let elsewhere = Ipv4Addr::new(10, 9, 9, 9);
        m.data_bad_source = seal(remote, later, &ipv4(elsewhere, LOCAL_IP, 60)).1;
        // An initiation with a newer timestamp, as from a restarted peer.
        let mut restarted = Device::new(
            DeviceConfig::new(StaticSecret::from_bytes(REMOTE_KEY)),
            now,
            UNIX_TIME + Duration::from_secs(1),
            [3; 32],
        );
        restarted
            .add_peer(peer_config("local", LOCAL_KEY, local_addr(), LOCAL_IP), now)
            .expect("a valid peer");
        seal(&mut restarted, now, &ipv4(REMOTE_IP, LOCAL_IP, 40));
        m.fresh_initiation = transmits(&mut restarted, now).remove(0).1;
        // The cookie reply the remote would have sent, were it under load.
        let remote_public = StaticSecret::from_bytes(REMOTE_KEY).public_key();
        let sender = match Message::parse(&m.initiation) {
            Ok(Message::Initiation(i)) => i.sender(),
            _ => unreachable!("the device sent an initiation"),
        };
        m.cookie_reply = CookieChecker::new(remote_public.as_bytes())
            .reply(
                &m.initiation,
                sender,
                local_addr(),
                now,
                &mut ChaCha20Rng::from_seed([4; 32]),
            )
            .to_vec();
        t
    }

    /// `plain` sealed by the peer in its session, as it is (unpadded). A
    /// session too old to send on is replaced by a handshake first, while
    /// the input has [`PEER_HANDSHAKES`] left.
    fn sealed_by_peer(&mut self, plain: &[u8], now: Instant) -> Sealing {
        let mut buf = vec![0u8; wire::TRANSPORT_MIN_LEN + plain.len()];
        let mut sealed = self
            .remote
            .seal_as_given(REMOTE_SIDE_PEER, plain, now, &mut buf);
        if sealed.is_none() {
            if self.peer_handshakes_left == 0 {
                return Sealing::Spent;
            }
            self.peer_handshakes_left -= 1;
            self.handshake_from_peer(now);
            sealed = self
                .remote
                .seal_as_given(REMOTE_SIDE_PEER, plain, now, &mut buf);
        }
        if let Ok(Control::PunchOffer(offer)) = Control::parse(plain) {
            self.offered.extend(offer.endpoints.iter());
        }
        match sealed {
            Some(t) => {
                buf.truncate(t.len);
                Sealing::Sealed(buf)
            }
            None => Sealing::Failed,
        }
    }

    /// The peer initiates a handshake with the device and confirms it.
    fn handshake_from_peer(&mut self, now: Instant) {
        self.remote.connect(REMOTE_SIDE_PEER, now);
        for _ in 0..2 {
            while let Some(t) = self.remote.poll_transmit(now, &mut self.scratch) {
                let d = &mut self.scratch[..t.len];
                self.device.decapsulate(now, remote_addr(), d);
            }
            while let Some(t) = self.device.poll_transmit(now, &mut self.scratch) {
                self.check_destination(t.destination);
                let d = &mut self.scratch[..t.len];
                self.remote.decapsulate(now, local_addr(), d);
            }
        }
        while self.remote.poll_event().is_some() {}
    }

    /// Replies go to the sender; the rest to the endpoint, which an
    /// authenticated packet from the stranger's address may have moved;
    /// punches to what the peer offered.
    fn check_destination(&self, to: SocketAddr) {
        assert!(
            to == remote_addr() || to == stranger_addr() || self.offered.contains(&to),
            "sent to {to}"
        );
    }

    /// Feeds one fuzz input (a sequence of records), checks every output
    /// and returns what the device made of each datagram.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Decapsulated> {
        self.feed_with(data, 0)
    }

    /// The control mode: [`Target::feed`] with [`SEALED`] and [`FROM_PEER`]
    /// set in every record, so every datagram is a plaintext the peer seals
    /// in its live session and sends from its own address. Every byte the
    /// fuzzer writes is then authenticated control (or inner packet)
    /// plaintext: each control message's parser and handler is reached,
    /// and the rest of the flags still step time and interleave sends.
    pub fn feed_sealed(&mut self, data: &[u8]) -> Vec<Decapsulated> {
        self.feed_with(data, SEALED | FROM_PEER)
    }

    /// Control messages the device authenticated and handed to its
    /// handlers so far, by type byte: each was sealed by the peer, parsed
    /// as that type, and got past decryption and replay checks (whatever
    /// its handler then made of it).
    pub fn reached(&self) -> &BTreeMap<u8, u64> {
        &self.reached
    }

    fn feed_with(&mut self, data: &[u8], forced: u8) -> Vec<Decapsulated> {
        self.peer_handshakes_left = PEER_HANDSHAKES;
        let mut outcomes = Vec::new();
        let mut rest = data;
        while let Some((&flags, tail)) = rest.split_first() {
            let (dgram, next) = if flags & LENGTH_PREFIXED != 0 && tail.len() >= 2 {
                let len = usize::from(u16::from_le_bytes([tail[0], tail[1]])).min(tail.len() - 2);
                tail[2..].split_at(len)
            } else {
                (tail, &[][..])
            };
            match self.record(flags | forced, dgram) {
                Some(out) => outcomes.push(out),
                None => break,
            }
            rest = next;
        }
        outcomes
    }

    /// Feeds one record and checks what came of it; `None` if it ends the
    /// input instead ([`Sealing::Spent`]), once what the clock step made
    /// the device send is checked.
    fn record(&mut self, flags: u8, dgram: &[u8]) -> Option<Decapsulated> {
        self.now += STEPS[usize::from((flags >> STEP_SHIFT) & 0b111)];
        let now = self.now;
        if self.device.poll_timeout().is_some_and(|t| t <= now) {
            self.device.handle_timeout(now);
        }
        let sealed = match flags & SEALED {
            0 => None,
            _ => match self.sealed_by_peer(dgram, now) {
                Sealing::Sealed(buf) => Some(buf),
                Sealing::Failed => None,
                Sealing::Spent => {
                    self.check_outputs(now);
                    return None;
                }
            },
        };
        // The kind of control message the peer sealed, if it sealed one.
        let sealed_control = sealed
            .as_ref()
            .and_then(|_| Control::parse(dgram).ok())
            .map(|c| c.kind());
        let mut buf = sealed.unwrap_or_else(|| dgram.to_vec());
        if flags & (FIX_MAC1 | SEALED) == FIX_MAC1 {
            fix_mac1(&mut buf, now);
        }
        let from = if flags & FROM_PEER != 0 {
            remote_addr()
        } else {
            stranger_addr()
        };
        let parsed = parse(&buf);

        let before = self.device.stats().clone();
        let out = self.device.decapsulate(now, from, &mut buf);
        let after = self.device.stats();
        match out {
            Decapsulated::Dropped(reason) => {
                assert_eq!(
                    after.dropped(reason),
                    before.dropped(reason) + 1,
                    "{reason:?} not counted"
                );
                assert_eq!(
                    total_drops(&self.device),
                    total_drops_of(&before) + 1,
                    "counted twice"
                );
                assert_eq!(
                    reason == DropReason::Malformed,
                    !parsed,
                    "parse and device disagree"
                );
            }
            Decapsulated::Tun { peer, offset, len } => {
                assert_eq!(total_drops(&self.device), total_drops_of(&before));
                assert_eq!(peer, self.peer);
                let inner = buf
                    .get(offset..offset + len)
                    .expect("inner packet within the buffer");
                let s = packet::summarize(inner).expect("a well-formed inner packet");
                assert_eq!(s.len, len);
                assert_eq!(
                    s.src,
                    IpAddr::V4(REMOTE_IP),
                    "source outside the allowed IPs"
                );
            }
            Decapsulated::Consumed => {
                assert_eq!(total_drops(&self.device), total_drops_of(&before));
                assert!(parsed);
            }
        }
        if let Some(kind) = sealed_control.filter(|_| past_authentication(&out)) {
            *self.reached.entry(kind).or_default() += 1;
        }
        if flags & SEND_TOO != 0 {
            let before = total_drops(&self.device);
            let (out, _) = seal(&mut self.device, now, &ipv4(LOCAL_IP, REMOTE_IP, 100));
            let counted = total_drops(&self.device) - before;
            match out {
                Encapsulated::Dropped(_) => assert_eq!(counted, 1),
                // Queueing may push out the oldest packet, counted as such.
                Encapsulated::Queued { .. } => assert!(counted <= 1),
                Encapsulated::Send { .. } | Encapsulated::TooBig { .. } => assert_eq!(counted, 0),
            }
        }
        self.check_outputs(now);
        Some(out)
    }

    /// Checks everything the device has to send and every packet it
    /// reassembled, and drains its events.
    fn check_outputs(&mut self, now: Instant) {
        while let Some(t) = self.device.poll_transmit(now, &mut self.scratch) {
            assert!(
                t.len <= self.scratch.len(),
                "transmit longer than the buffer"
            );
            self.check_destination(t.destination);
        }
        while self.device.poll_event().is_some() {}
        // Packets whole again from pieces were checked like any inner
        // packet: from the peer, within its allowed IPs.
        while let Some((peer, len)) = self.device.poll_reassembled(&mut self.whole) {
            assert_eq!(peer, self.peer);
            let s =
                packet::summarize(&self.whole[..len]).expect("a well-formed reassembled packet");
            assert_eq!(s.len, len);
            assert!(
                self.device.route(s.src) == Some(self.peer),
                "{} not allowed",
                s.src
            );
        }
    }
}

/// Whether the device got past decrypting and replay-checking the datagram:
/// it delivered or consumed it, or dropped it for what the plaintext said.
fn past_authentication(out: &Decapsulated) -> bool {
    !matches!(
        out,
        Decapsulated::Dropped(
            DropReason::Malformed
                | DropReason::UnknownIndex
                | DropReason::Replay
                | DropReason::Decrypt
                | DropReason::Expired
        )
    )
}

fn total_drops_of(stats: &crate::DeviceStats) -> u64 {
    DropReason::ALL.iter().map(|r| stats.dropped(*r)).sum()
}

/// Recomputes mac1 (and clears mac2) of a handshake message as its sender
/// would for the fuzzed device, so that mutations reach the Noise layer.
fn fix_mac1(buf: &mut [u8], now: Instant) {
    let handshake = matches!(
        (buf.first(), buf.len()),
        (Some(1), INITIATION_LEN) | (Some(2), RESPONSE_LEN)
    );
    if handshake {
        let local_public = StaticSecret::from_bytes(LOCAL_KEY).public_key();
        CookieGenerator::new(local_public.as_bytes()).seal(buf, now);
    }
}

/// Runs the parsers on `data` and every accessor of what they return.
/// Returns whether it parsed as a message.
pub fn parse(data: &[u8]) -> bool {
    if let Some(s) = packet::summarize(data) {
        assert!(s.len <= data.len() && s.len >= 20);
    }
    control(data);
    match Message::parse(data) {
        Ok(Message::Initiation(m)) => {
            let _ = (m.sender(), m.noise(), m.bytes());
        }
        Ok(Message::Response(m)) => {
            let _ = (m.sender(), m.receiver(), m.noise(), m.bytes());
        }
        Ok(Message::CookieReply(m)) => {
            let _ = (m.receiver(), m.nonce(), m.encrypted_cookie());
        }
        Ok(Message::Transport(m)) => {
            let _ = (m.receiver(), m.counter());
            assert!(m.payload().len() >= wire::TAG_LEN);
        }
        Err(_) => return false,
    }
    true
}

/// Runs the control-message parser on `data` as a transport plaintext,
/// reads everything it returns and checks that emitting it gives back what
/// was parsed. Returns the control type if it parsed.
pub fn control(data: &[u8]) -> Option<u8> {
    let message = Control::parse(data).ok()?;
    let len = message.buffer_len();
    match message {
        Control::Probe(p) => assert_eq!(p.len, data.len()),
        Control::Fragment(f) => {
            assert!(!f.payload.is_empty() && f.index < f.count);
            assert!(usize::from(f.count) <= control::MAX_PIECES);
        }
        Control::PunchOffer(o) => {
            assert!(o.endpoints.len() <= control::MAX_CANDIDATES);
            assert_eq!(o.endpoints.iter().count(), o.endpoints.len());
        }
        Control::RelayRequest(r) | Control::Relayed(r) => {
            assert_eq!(r.datagram.len() + control::RELAY_HEADER_LEN, data.len());
        }
        _ => {}
    }
    // What was read is the start of the input: emitting it writes exactly
    // those bytes (a probe's fill, which nobody reads, and a punch offer's
    // zero padding aside).
    assert!(len <= data.len());
    let again = message.to_vec();
    let read = match message {
        Control::Probe(_) => control::PROBE_MIN_LEN,
        _ => len,
    };
    assert_eq!(again[..read], data[..read], "{message:?} emits other bytes");
    assert_eq!(Control::parse(&again), Ok(message));
    Some(message.kind())
}

/// One of each control message, well formed, named for the seed files of
/// the `parse` target: mutating them reaches every control decoder's checks
/// past the type byte.
pub fn control_seed_corpus() -> Vec<(String, Vec<u8>)> {
    use control::{
        BindingAck, BindingCheck, BindingTrial, Endpoints, Fragment, Ping, Pong, Probe, ProbeAck,
        PunchOffer, Relay,
    };
    let v4 = SocketAddr::from(([192, 0, 2, 1], 51820));
    let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 4000));
    let key = StaticSecret::from_bytes(REMOTE_KEY).public_key();
    let keepalive = [&[wire::TYPE_TRANSPORT, 0, 0, 0][..], &[0; 28]].concat();
    let candidates = [v4, v6];
    let messages = [
        ("probe", Control::Probe(Probe { id: 1, len: 40 })),
        (
            "probe-ack",
            Control::ProbeAck(ProbeAck {
                id: 1,
                received: 1200,
            }),
        ),
        (
            "fragment",
            Control::Fragment(Fragment {
                id: 9,
                index: 1,
                count: 2,
                payload: &[0x60, 0, 0, 0],
            }),
        ),
        ("ping", Control::Ping(Ping { id: 5 })),
        (
            "pong",
            Control::Pong(Pong {
                id: 5,
                observed: v4,
            }),
        ),
        (
            "pong-v6",
            Control::Pong(Pong {
                id: 5,
                observed: v6,
            }),
        ),
        (
            "binding-open",
            Control::BindingOpen(BindingTrial { trial: 3, nonce: 7 }),
        ),
        (
            "binding-ack",
            Control::BindingAck(BindingAck {
                trial: 3,
                nonce: 7,
                probe: v4,
                main: v6,
            }),
        ),
        (
            "binding-check",
            Control::BindingCheck(BindingCheck { trial: 3 }),
        ),
        (
            "binding-ping",
            Control::BindingPing(BindingTrial { trial: 3, nonce: 7 }),
        ),
        (
            "relay",
            Control::RelayRequest(Relay {
                key,
                datagram: &keepalive,
            }),
        ),
        (
            "relayed",
            Control::Relayed(Relay {
                key,
                datagram: &keepalive,
            }),
        ),
        (
            "punch-offer",
            Control::PunchOffer(PunchOffer {
                answer: false,
                endpoints: Endpoints::from_list(&candidates),
            }),
        ),
        ("punch", Control::Punch),
    ];
    messages
        .iter()
        .map(|(name, message)| (format!("control-{name}"), message.to_vec()))
        .collect()
}

/// The `decapsulate` fuzz target's body: a fresh [`Target`] per input.
pub fn decapsulate(origin: Instant, data: &[u8]) {
    x25519_memo::enable();
    Target::new(origin).feed(data);
}

/// The `control` fuzz target's body: a fresh [`Target`] per input, fed in
/// the control mode ([`Target::feed_sealed`]).
pub fn control_sealed(origin: Instant, data: &[u8]) {
    x25519_memo::enable();
    Target::new(origin).feed_sealed(data);
}

/// Seeds of the `control` target ([`control_sealed`]): one of each control
/// message as a record (a flags byte, then the plaintext), and sequences
/// that take handlers past their first message: an inner packet in two
/// pieces, a ping answered twice, a probe then its acknowledgement.
pub fn control_mode_seed_corpus() -> Vec<(String, Vec<u8>)> {
    use control::{Fragment, Ping, Probe, ProbeAck};
    let record = |flags: u8, plain: &[u8]| -> Vec<u8> {
        let len = u16::try_from(plain.len()).expect("a plaintext shorter than 64 KiB");
        [&[flags | LENGTH_PREFIXED][..], &len.to_le_bytes(), plain].concat()
    };
    let last = |flags: u8, plain: &[u8]| [&[flags][..], plain].concat();
    let inner = ipv4(REMOTE_IP, LOCAL_IP, 60);
    let (head, tail) = inner.split_at(32);
    let piece = |index: u8, payload: &[u8]| {
        Control::Fragment(Fragment {
            id: 77,
            index,
            count: 2,
            payload,
        })
        .to_vec()
    };
    let ping = Control::Ping(Ping { id: 9 }).to_vec();
    let probe = Control::Probe(Probe { id: 3, len: 1200 }).to_vec();
    let ack = Control::ProbeAck(ProbeAck {
        id: 3,
        received: 1200,
    })
    .to_vec();
    let one_second = 3 << STEP_SHIFT;
    let sequences = [
        (
            "pieces-whole",
            [record(0, &piece(1, tail)), last(0, &piece(0, head))].concat(),
        ),
        (
            "ping-twice",
            [record(0, &ping), last(one_second, &ping)].concat(),
        ),
        (
            "probe-then-ack",
            [record(SEND_TOO, &probe), last(0, &ack)].concat(),
        ),
    ];
    control_seed_corpus()
        .into_iter()
        .map(|(name, plain)| (name.replace("control-", "sealed-"), last(0, &plain)))
        .chain(
            sequences
                .into_iter()
                .map(|(name, input)| (name.to_owned(), input)),
        )
        .collect()
}

/// Real messages for a fresh [`Target`], each as an input of one or two
/// records (a flags byte, then the datagram), named for the seed files.
pub fn seed_corpus(origin: Instant) -> Vec<(String, Vec<u8>)> {
    let m = Target::with_messages(origin).messages;
    let one = |flags: u8, d: &[u8]| [&[flags][..], d].concat();
    let two = |flags: u8, d: &[u8], then: u8, e: &[u8]| {
        let len = u16::try_from(d.len()).expect("a datagram shorter than 64 KiB");
        [
            &[flags | LENGTH_PREFIXED][..],
            &len.to_le_bytes(),
            d,
            &[then],
            e,
        ]
        .concat()
    };
    let real = vec![
        ("data", one(FROM_PEER, &m.data)),
        ("data-bad-source", one(FROM_PEER, &m.data_bad_source)),
        ("keepalive", one(FROM_PEER, &m.keepalive)),
        // The device's own initiation, reflected back at it.
        ("initiation-reflected", one(FROM_PEER, &m.initiation)),
        ("initiation-fresh", one(FROM_PEER, &m.fresh_initiation)),
        (
            "initiation-fresh-fixed-mac1",
            one(FROM_PEER | FIX_MAC1, &m.fresh_initiation),
        ),
        ("response-stale", one(FROM_PEER, &m.response)),
        ("cookie-reply", one(0, &m.cookie_reply)),
        (
            "data-then-replay",
            two(FROM_PEER, &m.data, FROM_PEER | SEND_TOO, &m.data),
        ),
        (
            "initiation-fresh-then-replay",
            two(
                FROM_PEER,
                &m.fresh_initiation,
                FROM_PEER | (3 << STEP_SHIFT),
                &m.fresh_initiation,
            ),
        ),
    ];
    // Control messages, sealed by the peer: they reach the device's
    // handlers; mutated, they are still authenticated.
    let sealed = control_seed_corpus().into_iter().map(|(name, plain)| {
        (
            name.replace("control-", "sealed-"),
            one(FROM_PEER | SEALED, &plain),
        )
    });
    real.into_iter()
        .map(|(name, input)| (name.to_owned(), input))
        .chain(sealed)
        .collect()
}

pub mod join;
pub mod x25519_memo;

#[cfg(test)]
mod tests;
