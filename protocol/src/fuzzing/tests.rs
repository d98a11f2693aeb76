//! `fuzz_smoke`: the fuzz targets' body over seeded random and mutated
//! inputs, on stable Rust, so every `cargo test` runs a little fuzzing.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand_chacha::rand_core::RngCore;

use super::*;

/// Inputs per run; `WEFT_FUZZ_SMOKE_ITERS` overrides.
const ITERATIONS: usize = 200_000;
/// Inputs fed to one target before a fresh one is built.
const BATCH: usize = 2_000;

fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// Random bytes, often shaped like a message header so they get past the
/// length and type checks.
fn random_input(rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut flags = [0u8; 1];
    rng.fill_bytes(&mut flags);
    let len = match below(rng, 6) {
        0 => INITIATION_LEN,
        1 => RESPONSE_LEN,
        2 => wire::COOKIE_REPLY_LEN,
        3 => wire::TRANSPORT_MIN_LEN + below(rng, 200),
        _ => below(rng, 200),
    };
    let mut d = vec![0u8; len];
    rng.fill_bytes(&mut d);
    if below(rng, 3) > 0 && len >= 4 {
        d[0] = 1 + below(rng, 4) as u8;
        d[1..4].fill(0);
    }
    [&[flags[0] & !LENGTH_PREFIXED][..], &d].concat()
}

/// One to four mutations of a seed: bit flips, byte writes, truncation,
/// growth, index and counter rewrites, flag changes, or a splice with
/// another seed into a two-record input.
fn mutate(seed: &[u8], seeds: &[Vec<u8>], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + below(rng, 4) {
        if d.is_empty() {
            d.push(0);
        }
        match below(rng, 9) {
            0 => {
                let i = below(rng, d.len());
                d[i] ^= 1 << below(rng, 8);
            }
            1 => {
                let i = below(rng, d.len());
                d[i] = rng.next_u32() as u8;
            }
            2 => d.truncate(below(rng, d.len() + 1)),
            3 => d.extend((0..1 + below(rng, 40)).map(|_| rng.next_u32() as u8)),
            // The index fields (after the flags byte).
            4 if d.len() >= 13 => {
                let at = [5, 9][below(rng, 2)];
                let v = match below(rng, 3) {
                    0 => rng.next_u32(),
                    1 => 0,
                    _ => u32::from_le_bytes([d[9], d[10], d[11], d[12]]),
                };
                d[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            // A transport counter.
            5 if d.len() >= 17 => {
                let v = [
                    0,
                    1,
                    8127,
                    8128,
                    u64::MAX - (1 << 13),
                    u64::MAX,
                    rng.next_u64(),
                ][below(rng, 7)];
                d[9..17].copy_from_slice(&v.to_le_bytes());
            }
            6 => d[0] = (rng.next_u32() as u8) & !LENGTH_PREFIXED,
            7 => d[0] |= FIX_MAC1,
            _ => {
                let other = &seeds[below(rng, seeds.len())];
                let first = &d[1..];
                d = [
                    &[d[0] | LENGTH_PREFIXED][..],
                    &(first.len() as u16).to_le_bytes(),
                    first,
                    other,
                ]
                .concat();
            }
        }
    }
    d
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn reason_name(o: &Decapsulated) -> &'static str {
    match o {
        Decapsulated::Tun { .. } => "tun",
        Decapsulated::Consumed => "consumed",
        Decapsulated::Dropped(r) => r.as_str(),
    }
}

#[test]
fn real_messages_do_what_they_should_on_a_fresh_target() {
    let origin = Instant::now();
    let seeds: BTreeMap<_, _> = seed_corpus(origin).into_iter().collect();
    let expect = [
        ("data", vec!["tun"]),
        ("data-bad-source", vec!["source_not_allowed"]),
        ("keepalive", vec!["consumed"]),
        ("initiation-reflected", vec!["bad_mac"]),
        ("initiation-fresh", vec!["consumed"]),
        ("initiation-fresh-fixed-mac1", vec!["consumed"]),
        ("response-stale", vec!["unknown_index"]),
        ("cookie-reply", vec!["consumed"]),
        ("data-then-replay", vec!["tun", "replay"]),
        ("initiation-fresh-then-replay", vec!["consumed", "replay"]),
        // Control messages from the peer, sealed in its session.
        ("sealed-probe", vec!["consumed"]),
        ("sealed-probe-ack", vec!["consumed"]),
        ("sealed-fragment", vec!["consumed"]),
        ("sealed-ping", vec!["consumed"]),
        ("sealed-pong", vec!["consumed"]),
        ("sealed-pong-v6", vec!["consumed"]),
        ("sealed-binding-open", vec!["consumed"]),
        ("sealed-binding-ack", vec!["consumed"]),
        ("sealed-binding-check", vec!["consumed"]),
        ("sealed-binding-ping", vec!["consumed"]),
        // For the peer itself, or from the peer as relayed by itself.
        ("sealed-relay", vec!["relay_refused"]),
        ("sealed-relayed", vec!["relay_refused"]),
        // The peer is reached directly: its offer is refused.
        ("sealed-punch-offer", vec!["punch_refused"]),
        ("sealed-punch", vec!["consumed"]),
    ];
    assert_eq!(seeds.len(), expect.len());
    for (name, outcomes) in expect {
        let got = Target::new(origin).feed(&seeds[name]);
        let got: Vec<_> = got.iter().map(reason_name).collect();
        assert_eq!(got, outcomes, "{name}");
    }
}

#[test]
fn fuzz_smoke() {
    let iterations = std::env::var("WEFT_FUZZ_SMOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    // As in the fuzz targets' bodies.
    x25519_memo::enable();
    let origin = Instant::now();
    let seeds: Vec<Vec<u8>> = seed_corpus(origin).into_iter().map(|(_, s)| s).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_f022);
    let mut tally: BTreeMap<&'static str, u64> = BTreeMap::new();
    let control_seeds: Vec<Vec<u8>> = control_seed_corpus().into_iter().map(|(_, s)| s).collect();
    let mut control_tally: BTreeMap<u8, u64> = BTreeMap::new();
    let mut target = Target::new(origin);
    for i in 0..iterations {
        if i % BATCH == 0 {
            target = Target::new(origin);
        }
        let input = if below(&mut rng, 10) < 4 {
            random_input(&mut rng)
        } else {
            let seed = &seeds[below(&mut rng, seeds.len())];
            mutate(seed, &seeds, &mut rng)
        };
        // The harness asserts every invariant; name the input if one breaks.
        match catch_unwind(AssertUnwindSafe(|| target.feed(&input))) {
            Ok(outcomes) => {
                for o in &outcomes {
                    *tally.entry(reason_name(o)).or_default() += 1;
                }
            }
            Err(_) => panic!("input {i} broke the harness: {}", hex(&input)),
        }
        // The `parse` target's body on bytes shaped like a control
        // plaintext, which no datagram above reaches unauthenticated.
        let plain = control_input(&control_seeds, &mut rng);
        match catch_unwind(|| parse(&plain)) {
            Ok(_) => {
                if let Some(kind) = control(&plain) {
                    *control_tally.entry(kind).or_default() += 1;
                }
            }
            Err(_) => panic!("control input {i} broke the parsers: {}", hex(&plain)),
        }
    }
    eprintln!("fuzz_smoke: {iterations} inputs: {tally:?}");
    let by_type: BTreeMap<String, u64> = control_tally
        .iter()
        .map(|(k, n)| (format!("{k:#04x}"), *n))
        .collect();
    eprintln!("fuzz_smoke: control messages parsed, by type: {by_type:?}");
    // The inputs reached every layer, not only the parser.
    if iterations >= ITERATIONS {
        for layer in [
            "malformed",
            "unknown_index",
            "bad_mac",
            "handshake_failed",
            "replay",
            "decrypt",
            "consumed",
            "tun",
            "malformed_inner",
            "relay_refused",
        ] {
            assert!(
                tally.get(layer).is_some_and(|n| *n > 0),
                "nothing reached {layer}"
            );
        }
        // Every control decoder took some input whole.
        for kind in (0x01..=0x09).chain(0x10..=0x13) {
            assert!(
                control_tally.get(&kind).is_some_and(|n| *n > 0),
                "no control message of type {kind:#04x} parsed"
            );
        }
    }
}

/// Inputs per run of the control mode; `WEFT_FUZZ_SMOKE_ITERS` overrides.
const CONTROL_ITERATIONS: usize = 50_000;

/// The `control` target's body on stable: mutated control-mode seeds and
/// random records, every plaintext sealed by the peer. Every control type
/// must reach the device's handlers authenticated, and some must be
/// refused there (by a parser, the relay or the punch rules) rather than
/// by decryption.
#[test]
fn every_control_message_type_reaches_its_handler_authenticated_in_the_control_mode() {
    let iterations = std::env::var("WEFT_FUZZ_SMOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONTROL_ITERATIONS);
    x25519_memo::enable();
    let origin = Instant::now();
    let seeds: Vec<Vec<u8>> = control_mode_seed_corpus()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(0xc0_7e01);
    let mut tally: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut reached: BTreeMap<u8, u64> = BTreeMap::new();
    let mut target = Target::new(origin);
    for i in 0..iterations {
        if i % BATCH == 0 {
            for (kind, n) in target.reached() {
                *reached.entry(*kind).or_default() += n;
            }
            target = Target::new(origin);
        }
        let input = if below(&mut rng, 10) == 0 {
            random_input(&mut rng)
        } else {
            let seed = &seeds[below(&mut rng, seeds.len())];
            mutate(seed, &seeds, &mut rng)
        };
        match catch_unwind(AssertUnwindSafe(|| target.feed_sealed(&input))) {
            Ok(outcomes) => {
                for o in &outcomes {
                    *tally.entry(reason_name(o)).or_default() += 1;
                }
            }
            Err(_) => panic!("control-mode input {i} broke the harness: {}", hex(&input)),
        }
    }
    for (kind, n) in target.reached() {
        *reached.entry(*kind).or_default() += n;
    }
    let by_type: BTreeMap<String, u64> = reached
        .iter()
        .map(|(k, n)| (format!("{k:#04x}"), *n))
        .collect();
    eprintln!("control mode: {iterations} inputs: {tally:?}");
    eprintln!("control mode: authenticated control messages handled, by type: {by_type:?}");
    for kind in (0x01..=0x09).chain(0x10..=0x13) {
        assert!(
            reached.get(&kind).is_some_and(|n| *n > 0),
            "no control message of type {kind:#04x} reached its handler"
        );
    }
    // Nothing is lost to decryption: every record was authenticated.
    for before in ["malformed", "unknown_index", "replay", "decrypt", "expired"] {
        assert_eq!(
            tally.get(before),
            None,
            "a sealed plaintext dropped as {before}"
        );
    }
    for outcome in [
        "consumed",
        "malformed_inner",
        "relay_refused",
        "punch_refused",
    ] {
        assert!(
            tally.get(outcome).is_some_and(|n| *n > 0),
            "no sealed plaintext ended {outcome}"
        );
    }
}

#[test]
fn control_mode_seeds_do_what_they_should_on_a_fresh_target() {
    let origin = Instant::now();
    let seeds: BTreeMap<_, _> = control_mode_seed_corpus().into_iter().collect();
    for (name, expect) in [
        ("pieces-whole", vec!["consumed", "consumed"]),
        ("ping-twice", vec!["consumed", "consumed"]),
        ("probe-then-ack", vec!["consumed", "consumed"]),
        ("sealed-relay", vec!["relay_refused"]),
        ("sealed-punch-offer", vec!["punch_refused"]),
        ("sealed-ping", vec!["consumed"]),
    ] {
        let mut target = Target::new(origin);
        let got = target.feed_sealed(&seeds[name]);
        let got: Vec<_> = got.iter().map(reason_name).collect();
        assert_eq!(got, expect, "{name}");
        assert_eq!(
            target.reached().values().sum::<u64>(),
            expect.len() as u64,
            "{name}: every message reached its handler"
        );
    }
    // The two pieces made one inner packet (the harness checked it).
    let mut target = Target::new(origin);
    target.feed_sealed(&seeds["pieces-whole"]);
    let status = target.device.peer_status(target.peer, target.now);
    assert_eq!(status.map(|s| s.stats.rx_packets), Some(1));
    // The same bytes outside the control mode are not authenticated.
    let mut target = Target::new(origin);
    let got = target.feed(&seeds["sealed-ping"]);
    assert_eq!(
        got.iter().map(reason_name).collect::<Vec<_>>(),
        ["malformed"]
    );
    assert!(target.reached().is_empty());
}

fn control_seed_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/control")
}

/// Rewrites the `control` target's seed files from
/// [`control_mode_seed_corpus`].
#[test]
#[ignore = "writes files; run by hand after a change to the control formats"]
fn write_control_fuzz_seeds() {
    let dir = control_seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in control_mode_seed_corpus() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn the_committed_control_seeds_are_current() {
    for (name, bytes) in control_mode_seed_corpus() {
        let on_disk = std::fs::read(control_seed_dir().join(&name))
            .unwrap_or_else(|e| panic!("seed {name}: {e}; run write_control_fuzz_seeds"));
        assert!(
            on_disk == bytes,
            "seed {name} is stale; run write_control_fuzz_seeds"
        );
    }
}

/// Bytes for the control parsers: a mutated control message, or random
/// bytes after a type byte in or near the assigned range.
fn control_input(seeds: &[Vec<u8>], rng: &mut ChaCha20Rng) -> Vec<u8> {
    if below(rng, 4) == 0 {
        let mut d = vec![0u8; 1 + below(rng, 64)];
        rng.fill_bytes(&mut d);
        d[0] = below(rng, 0x16) as u8;
        return d;
    }
    // `mutate` works on records: give the seed a flags byte and take it off.
    let seed = [&[0u8][..], &seeds[below(rng, seeds.len())]].concat();
    let with_flags: Vec<Vec<u8>> = seeds.iter().map(|s| [&[0u8][..], s].concat()).collect();
    let d = mutate(&seed, &with_flags, rng);
    d.get(1..).unwrap_or_default().to_vec()
}

fn seed_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decapsulate")
}

/// Rewrites the cargo-fuzz seed files from [`seed_corpus`].
#[test]
#[ignore = "writes files; run by hand after a change to the wire formats"]
fn write_fuzz_seeds() {
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seed_corpus(Instant::now()) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn parse_seed_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/parse")
}

/// Rewrites the `parse` target's seed files from [`control_seed_corpus`].
#[test]
#[ignore = "writes files; run by hand after a change to the control formats"]
fn write_parse_fuzz_seeds() {
    let dir = parse_seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in control_seed_corpus() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn the_committed_parse_seeds_are_current_and_parse_as_their_type() {
    for ((name, bytes), kind) in control_seed_corpus().into_iter().zip([
        0x01, 0x02, 0x03, 0x04, 0x05, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12, 0x13,
    ]) {
        assert_eq!(control(&bytes), Some(kind), "{name}");
        let on_disk = std::fs::read(parse_seed_dir().join(&name))
            .unwrap_or_else(|e| panic!("seed {name}: {e}; run write_parse_fuzz_seeds"));
        assert!(
            on_disk == bytes,
            "seed {name} is stale; run write_parse_fuzz_seeds"
        );
    }
}

#[test]
fn the_committed_fuzz_seeds_are_current() {
    // Keys, seeds and times are fixed, so the messages are too.
    for (name, bytes) in seed_corpus(Instant::now()) {
        let on_disk = std::fs::read(seed_dir().join(&name))
            .unwrap_or_else(|e| panic!("seed {name}: {e}; run write_fuzz_seeds"));
        assert!(
            on_disk == bytes,
            "seed {name} is stale; run write_fuzz_seeds"
        );
    }
}

/// `count` control-mode records of one ping each, every one a clock step
/// of 200 s later than the last: each needs a session younger than the
/// one before.
fn pings_200_s_apart(count: usize) -> Vec<u8> {
    let ping = Control::Ping(control::Ping { id: 1 }).to_vec();
    let len = u16::try_from(ping.len()).unwrap().to_le_bytes();
    let flags = LENGTH_PREFIXED | (7 << STEP_SHIFT);
    (0..count)
        .flat_map(|_| [&[flags][..], &len, &ping].concat())
        .collect()
}

#[test]
fn a_sealed_input_ends_at_the_record_that_would_need_one_peer_handshake_too_many() {
    let origin = Instant::now();
    let budget = PEER_HANDSHAKES as usize;
    let input = pings_200_s_apart(budget + 3);
    let mut target = Target::new(origin);
    let got = target.feed_sealed(&input);
    // Each record fed made the peer re-handshake, and each was sealed in
    // a session the device accepted.
    assert_eq!(
        got.iter().map(reason_name).collect::<Vec<_>>(),
        vec!["consumed"; budget]
    );
    assert_eq!(
        target.reached().get(&control::TYPE_PING),
        Some(&(budget as u64))
    );
    // The budget is the input's: the next input gets it again, in either
    // mode.
    assert_eq!(target.feed_sealed(&input).len(), budget);
    let sealed_records: Vec<u8> = input
        .chunks(3 + control::PING_LEN)
        .flat_map(|r| [&[r[0] | SEALED | FROM_PEER][..], &r[1..]].concat())
        .collect();
    let got = target.feed(&sealed_records);
    assert_eq!(
        got.iter().map(reason_name).collect::<Vec<_>>(),
        vec!["consumed"; budget]
    );
    // Records that need no new session are never cut short.
    let quick: Vec<u8> = input
        .chunks(3 + control::PING_LEN)
        .cycle()
        .take(200)
        .flat_map(|r| [&[r[0] & !(0b111 << STEP_SHIFT)][..], &r[1..]].concat())
        .collect();
    assert_eq!(target.feed_sealed(&quick).len(), 200);
}

/// What a target makes and does, for comparing runs: the seed messages,
/// then the outcomes and the device's drop counters after the seeds of
/// both targets and a run of rekeys.
fn everything_a_target_makes(origin: Instant) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let seeds = seed_corpus(origin);
    let mut outcomes = Vec::new();
    let inputs: Vec<Vec<u8>> = seeds
        .iter()
        .chain(&control_mode_seed_corpus())
        .map(|(_, input)| input.clone())
        .chain([pings_200_s_apart(PEER_HANDSHAKES as usize)])
        .collect();
    for input in &inputs {
        let mut target = Target::new(origin);
        let mut got = target.feed_sealed(input);
        got.extend(target.feed(input));
        let got: Vec<_> = got.iter().map(reason_name).collect();
        let drops = DropReason::ALL.map(|r| target.device.stats().dropped(r));
        outcomes.push(format!("{got:?} {drops:?}"));
    }
    (seeds, outcomes)
}

#[test]
fn remembered_x25519_results_change_no_byte_and_no_outcome() {
    let origin = Instant::now();
    let computed = std::thread::spawn(move || {
        let made = everything_a_target_makes(origin);
        assert_eq!(x25519_memo::counts(), None, "the memo is off");
        made
    })
    .join()
    .unwrap();
    let remembered = std::thread::spawn(move || {
        x25519_memo::enable();
        let first = everything_a_target_makes(origin);
        let (_, misses) = x25519_memo::counts().unwrap();
        // The second time round every key is known.
        let again = everything_a_target_makes(origin);
        let (hits, misses_after) = x25519_memo::counts().unwrap();
        assert_eq!(misses_after, misses, "every result remembered");
        assert!(hits > 0);
        assert_eq!(first, again);
        first
    })
    .join()
    .unwrap();
    assert_eq!(computed.0.len(), remembered.0.len());
    for ((name, a), (_, b)) in computed.0.iter().zip(&remembered.0) {
        assert_eq!(a, b, "seed {name}");
    }
    assert_eq!(computed.1, remembered.1);
}
