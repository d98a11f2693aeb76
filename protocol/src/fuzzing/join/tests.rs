//! The `join` target's body on stable: its seeds do what they should, and
//! mutated seeds reach every decoder without a panic.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;

/// Inputs per run; `WEFT_FUZZ_SMOKE_ITERS` overrides.
const ITERATIONS: usize = 5_000;

fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// One to four byte mutations after the mode byte, or a mode change.
fn mutate(seed: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + below(rng, 4) {
        if d.len() < 2 {
            d.push(rng.next_u32() as u8);
            continue;
        }
        let i = 1 + below(rng, d.len() - 1);
        match below(rng, 6) {
            0 => d[i] ^= 1 << below(rng, 8),
            1 => d[i] = rng.next_u32() as u8,
            2 => d.truncate(i),
            3 => d.insert(i, rng.next_u32() as u8),
            // A huge varint where a length or integer is read.
            4 => {
                d.splice(i..i, [0xff; 5]);
            }
            _ => d[0] = rng.next_u32() as u8,
        }
    }
    d
}

#[test]
fn the_join_seeds_reach_the_decoders_they_are_for() {
    let seeds: BTreeMap<_, _> = seed_corpus().into_iter().collect();
    // The joiner's real first frame, as the listener reads it.
    assert_eq!(
        join(&seeds["raw-request"]),
        Outcome::Request,
        "a real first frame is a request"
    );
    assert_eq!(join(&seeds["sealed-request"]), Outcome::Request);
    assert_eq!(join(&seeds["sealed-grant"]), Outcome::Accepted);
    // The joiner's own request is no answer from the inviter.
    assert_eq!(
        join(&seeds["raw-response"]),
        Outcome::Error(JoinErrorKind::Handshake)
    );
    for (name, seed) in &seeds {
        if name.starts_with("sealed-refused-") {
            assert_eq!(join(seed), Outcome::Refused, "{name}");
        }
    }
}

#[test]
fn a_request_naming_a_key_the_joiner_did_not_prove_is_refused() {
    let mut forged = request();
    forged.noise_key = [0x99; 32];
    let plain = postcard::to_stdvec(&forged).unwrap();
    assert_eq!(
        join(&[&[SEALED_REQUEST][..], &plain].concat()),
        Outcome::Error(JoinErrorKind::Handshake)
    );
}

#[test]
fn mutated_join_messages_never_panic_and_reach_every_decoder() {
    let iterations = std::env::var("WEFT_FUZZ_SMOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    let seeds: Vec<Vec<u8>> = seed_corpus().into_iter().map(|(_, s)| s).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(0x6a6f_696e);
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..iterations {
        let input = mutate(&seeds[below(&mut rng, seeds.len())], &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| join(&input))).unwrap_or_else(|_| {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("input {i} broke the harness: {hex}")
        });
        let mode = input.first().map_or(0, |f| f & 0b11);
        *tally.entry(format!("{mode}:{outcome:?}")).or_default() += 1;
    }
    eprintln!("join fuzz: {iterations} inputs: {tally:?}");
    if iterations >= ITERATIONS {
        for layer in [
            "0:Error(Handshake)",
            "1:Request",
            "1:Error(Malformed)",
            "2:Accepted",
            "2:Refused",
            "2:Error(Malformed)",
            "3:Error(Handshake)",
        ] {
            assert!(
                tally.get(layer).is_some_and(|n| *n > 0),
                "nothing reached {layer}"
            );
        }
    }
}

fn seed_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/join")
}

/// Rewrites the `join` target's seed files from [`seed_corpus`].
#[test]
#[ignore = "writes files; run by hand after a change to the join formats"]
fn write_join_fuzz_seeds() {
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seed_corpus() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn the_committed_join_seeds_are_current() {
    for (name, bytes) in seed_corpus() {
        let on_disk = std::fs::read(seed_dir().join(&name))
            .unwrap_or_else(|e| panic!("seed {name}: {e}; run write_join_fuzz_seeds"));
        assert!(
            on_disk == bytes,
            "seed {name} is stale; run write_join_fuzz_seeds"
        );
    }
}
