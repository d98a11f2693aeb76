//! Transport data path throughput.
//!
//! - `session_seal` / `session_open`: one packet through [`Session`] (ring's
//!   ChaCha20-Poly1305 in place), 64 and 1420-byte payloads;
//! - `device_round_trip`: `Device::encapsulate` then `Device::decapsulate`
//!   of a 1420-byte inner packet between two devices with a session: header,
//!   padding, routing, replay window and allowed-IPs check included;
//! - `snow_stateless_write_message`: snow's own transport (copy the payload
//!   into the output, then seal) for 1420 bytes, with snow's ring backend, the
//!   alternative `docs/decisions/0001-transport-aead.md` weighs.
//!
//! Run: `cargo bench -p weft-protocol --bench transport -- --warm-up-time 1
//! --measurement-time 3`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use weft_protocol::noise::{TransportKeys, NOISE_PARAMS, PROLOGUE};
use weft_protocol::session::Session;
use weft_protocol::wire::{TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use weft_protocol::{Decapsulated, Device, DeviceConfig, Encapsulated, PeerConfig, StaticSecret};

const MTU: usize = 1420;
const SIZES: [usize; 2] = [64, 1420];

fn session_pair(now: Instant) -> (Session, Session) {
    let a = TransportKeys {
        send: [1; 32],
        recv: [2; 32],
    };
    let b = TransportKeys {
        send: [2; 32],
        recv: [1; 32],
    };
    (
        Session::new(&a, 10, 20, true, now),
        Session::new(&b, 20, 10, false, now),
    )
}

/// Room for the header, the payload padded to 16 bytes and the tag.
fn buffer(len: usize) -> Vec<u8> {
    vec![0u8; len + TRANSPORT_OVERHEAD + 16]
}

fn session_seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_seal");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, &len| {
            let (mut tx, _) = session_pair(Instant::now());
            let mut buf = buffer(len);
            b.iter(|| tx.seal(black_box(&mut buf), len, MTU).expect("room"));
        });
    }
    g.finish();
}

fn session_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_open");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, &len| {
            let (mut tx, mut rx) = session_pair(Instant::now());
            // Each packet needs a fresh counter for the replay window, so
            // sealing happens in the untimed setup.
            b.iter_batched_ref(
                || {
                    let mut buf = buffer(len);
                    let n = tx.seal(&mut buf, len, MTU).expect("room");
                    buf.truncate(n);
                    let counter = tx.send_counter() - 1;
                    (counter, buf)
                },
                |(counter, buf)| {
                    rx.open(*counter, black_box(&mut buf[TRANSPORT_HEADER_LEN..]))
                        .expect("authentic")
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

/// Two devices with a session, A the initiator.
fn device_pair(now: Instant) -> (Device, Device) {
    let unix = Duration::from_secs(1_700_000_000);
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let (addr_a, addr_b): (SocketAddr, SocketAddr) = (
        "192.0.2.1:51820".parse().unwrap(),
        "192.0.2.2:51820".parse().unwrap(),
    );
    let peer = |key: [u8; 32], endpoint, ip: &str| PeerConfig {
        name: "peer".into(),
        public_key: StaticSecret::from_bytes(key).public_key(),
        preshared_key: None,
        endpoint: Some(endpoint),
        allowed_ips: vec![ip.parse().unwrap()],
        keepalive: weft_protocol::Keepalive::Off,
    };
    let mut a = Device::new(
        DeviceConfig::new(StaticSecret::from_bytes(ka)),
        now,
        unix,
        [1; 32],
    );
    let mut b = Device::new(
        DeviceConfig::new(StaticSecret::from_bytes(kb)),
        now,
        unix,
        [2; 32],
    );
    a.add_peer(peer(kb, addr_b, "100.64.0.2/32"), now).unwrap();
    b.add_peer(peer(ka, addr_a, "100.64.0.1/32"), now).unwrap();

    let packet = ipv4([100, 64, 0, 1].into(), [100, 64, 0, 2].into(), 60);
    let mut buf = buffer(60);
    buf[16..76].copy_from_slice(&packet);
    assert!(matches!(
        a.encapsulate(now, &mut buf, 60),
        Encapsulated::Queued { .. }
    ));
    let mut scratch = vec![0u8; 2048];
    // Initiation, response, then the queued packet confirming the session.
    for _ in 0..3 {
        while let Some(t) = a.poll_transmit(now, &mut scratch) {
            b.decapsulate(now, addr_a, &mut scratch[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut scratch) {
            a.decapsulate(now, addr_b, &mut scratch[..t.len]);
        }
    }
    (a, b)
}

fn device_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_round_trip");
    let len = 1420;
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function(BenchmarkId::from_parameter(len), |bench| {
        let now = Instant::now();
        let (mut a, mut b) = device_pair(now);
        let from: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let packet = ipv4([100, 64, 0, 1].into(), [100, 64, 0, 2].into(), len);
        let mut buf = buffer(len);
        bench.iter(|| {
            // As from a TUN read: the packet lands after the header room.
            buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len].copy_from_slice(&packet);
            let Encapsulated::Send { len: n, .. } = a.encapsulate(now, &mut buf, len) else {
                panic!("no session")
            };
            let out = b.decapsulate(now, from, black_box(&mut buf[..n]));
            assert!(matches!(out, Decapsulated::Tun { .. }));
        });
    });
    g.finish();
}

/// snow's stateless transport after a real IKpsk2 handshake between two
/// builders (snow's ring backend for ChaCha20-Poly1305).
fn snow_stateless_write_message(c: &mut Criterion) {
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let pub_b = StaticSecret::from_bytes(kb).public_key();
    let psk = [3u8; 32];
    let builder = || snow::Builder::new(NOISE_PARAMS.parse().expect("valid params"));
    let mut init = builder()
        .local_private_key(&ka)
        .and_then(|b| b.remote_public_key(pub_b.as_bytes()))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.psk(2, &psk))
        .and_then(|b| b.build_initiator())
        .expect("initiator");
    let mut resp = builder()
        .local_private_key(&kb)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.psk(2, &psk))
        .and_then(|b| b.build_responder())
        .expect("responder");
    let (mut m, mut p) = ([0u8; 256], [0u8; 256]);
    let n = init.write_message(&[0; 12], &mut m).unwrap();
    resp.read_message(&m[..n], &mut p).unwrap();
    let n = resp.write_message(&[], &mut m).unwrap();
    init.read_message(&m[..n], &mut p).unwrap();
    let init = init.into_stateless_transport_mode().unwrap();

    let mut g = c.benchmark_group("snow_stateless_write_message");
    let len = 1420;
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function(BenchmarkId::from_parameter(len), |b| {
        let payload = vec![0xabu8; len];
        let mut out = buffer(len);
        let mut nonce = 0u64;
        b.iter(|| {
            nonce += 1;
            init.write_message(nonce, black_box(&payload), &mut out)
                .expect("room")
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    session_seal,
    session_open,
    device_round_trip,
    snow_stateless_write_message
);
criterion_main!(benches);
