//! Decoding harness shared by the cargo-fuzz target in `store/fuzz` and the
//! stable `fuzz_smoke` test. Not part of the API: compiled only with the
//! `fuzzing` feature or for tests.
//!
//! [`records`] decodes one input as every record type and as an entry of
//! every tree, and checks that whatever decodes re-encodes to something
//! that decodes to the same record. [`manifest`] reads one input as the
//! store's state file (`weft-store.state`), and checks that whatever reads
//! is written back to text that reads the same. Neither may panic.

use std::fmt::Debug;
use std::net::SocketAddr;

use crate::record::{decode, encode, Record};
use crate::store::ENTITY_TREES;
use crate::{
    AllocationRecord, InviteRecord, MemberRecord, NatRecord, PathRecord, RevocationRecord,
};

/// Runs every decoder over `data`.
pub fn records(data: &[u8]) {
    round_trip::<MemberRecord>(data);
    round_trip::<RevocationRecord>(data);
    round_trip::<InviteRecord>(data);
    round_trip::<AllocationRecord>(data);
    round_trip::<PathRecord>(data);
    round_trip::<NatRecord>(data);
    // As a tree entry: the first byte is the key's length.
    if let Some((&key_len, rest)) = data.split_first() {
        let (key, value) = rest.split_at(usize::from(key_len).min(rest.len()));
        for tree in ENTITY_TREES {
            let _ = (tree.check)(key, value);
        }
    }
}

fn round_trip<R: Record + PartialEq + Debug>(data: &[u8]) {
    if let Ok(record) = decode::<R>(data) {
        let again = encode(&record);
        assert_eq!(decode::<R>(&again).as_ref(), Ok(&record));
    }
}

/// Reads `data` as the state file's text (lossily, as bytes that are not
/// UTF-8 are refused before parsing): what parses must render to text
/// that parses to the same state.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(state) = crate::manifest::parse(&text) {
        let again = crate::manifest::render(&state);
        assert_eq!(crate::manifest::parse(&again).as_ref(), Ok(&state));
    }
}

/// State files of every state, as seeds of the `manifest` target.
pub fn manifest_seeds() -> Vec<Vec<u8>> {
    use crate::manifest::{render, State};
    let counts = [("members", 3), ("paths", 0), ("nat", u64::MAX)]
        .into_iter()
        .map(|(tree, n)| (tree.to_owned(), n))
        .collect();
    [
        State::Creating,
        State::Open { schema: 3 },
        State::Closed {
            schema: u32::MAX,
            counts,
        },
    ]
    .iter()
    .map(|state| render(state).into_bytes())
    .collect()
}

/// One valid encoding of each record type, with some variety, as seeds.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        encode(&MemberRecord {
            name: "alpha".into(),
            certificate: (0..=255).collect(),
            serial: u64::MAX,
            expires_unix: 2_000_000_000,
            updated_unix: 1_700_000_000,
        }),
        encode(&RevocationRecord {
            serial: 3,
            revoked_unix: 1_700_000_000,
            signed: vec![0xaa; 64],
        }),
        encode(&InviteRecord {
            name: None,
            expires_unix: 1,
            used_unix: None,
            used_by: None,
        }),
        encode(&InviteRecord {
            name: Some("laptop".into()),
            expires_unix: 1_800_000_000,
            used_unix: Some(1_750_000_000),
            used_by: Some([0x42; 32]),
        }),
        encode(&AllocationRecord {
            address: [10, 0, 0, 1].into(),
            identity: [7; 32],
        }),
        encode(&PathRecord {
            endpoint: SocketAddr::from(([198, 51, 100, 7], 51820)),
            pmtu: 1420,
            rtt_us: 30_000,
            nat: Some("symmetric".into()),
            measured_unix: 1_700_000_000,
            own: true,
        }),
        encode(&PathRecord {
            endpoint: "[2001:db8::7]:443".parse().expect("a valid socket address"),
            pmtu: 1280,
            rtt_us: 0,
            nat: None,
            measured_unix: 0,
            own: false,
        }),
        encode(&NatRecord {
            lifetime_ms: 120_000,
            measured_unix: 1_700_000_000,
            own: true,
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: a seeded generator, so a failing input can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
        for _ in 0..=rng.below(4) {
            let len = input.len();
            match rng.below(8) {
                0 if len > 0 => input[rng.below(len)] ^= 1 << rng.below(8),
                1 if len > 0 => input[rng.below(len)] = rng.byte(),
                2 => input.truncate(rng.below(len + 1)),
                3 => input.insert(rng.below(len + 1), rng.byte()),
                4 if len > 0 => {
                    // A huge varint, where a length or integer is read.
                    let at = rng.below(len);
                    input.splice(at..at, [0xff; 10]);
                }
                5 if len > 0 => input[0] = rng.byte(),
                6 if len > 1 => {
                    input.remove(rng.below(len));
                }
                _ => input.push(rng.byte()),
            }
        }
    }

    #[test]
    fn every_seed_decodes_as_its_own_type() {
        let seeds = seeds();
        assert!(decode::<MemberRecord>(&seeds[0]).is_ok());
        assert!(decode::<RevocationRecord>(&seeds[1]).is_ok());
        assert!(decode::<InviteRecord>(&seeds[2]).is_ok());
        assert!(decode::<InviteRecord>(&seeds[3]).is_ok());
        assert!(decode::<AllocationRecord>(&seeds[4]).is_ok());
        assert!(decode::<PathRecord>(&seeds[5]).is_ok());
        assert!(decode::<PathRecord>(&seeds[6]).is_ok());
        assert!(decode::<NatRecord>(&seeds[7]).is_ok());
    }

    fn seed_dir(target: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target)
    }

    fn all_seeds() -> [(&'static str, Vec<Vec<u8>>); 2] {
        [("records", seeds()), ("manifest", manifest_seeds())]
    }

    /// Rewrites the cargo-fuzz seed files from [`seeds`] and
    /// [`manifest_seeds`].
    #[test]
    #[ignore = "writes files; run by hand after a change to a stored format"]
    fn write_store_fuzz_seeds() {
        for (target, seeds) in all_seeds() {
            let dir = seed_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
            }
        }
    }

    #[test]
    fn the_committed_store_seeds_are_current() {
        for (target, seeds) in all_seeds() {
            for (i, seed) in seeds.iter().enumerate() {
                let path = seed_dir(target).join(format!("seed-{i}"));
                let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e}; run write_store_fuzz_seeds", path.display())
                });
                assert!(
                    on_disk == *seed,
                    "{} is stale; run write_store_fuzz_seeds",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn every_manifest_seed_parses() {
        for seed in manifest_seeds() {
            let text = String::from_utf8(seed).unwrap();
            assert!(crate::manifest::parse(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn manifest_fuzz_smoke() {
        let mut rng = Rng(0x5eed_5a7e);
        let seeds = manifest_seeds();
        for _ in 0..100_000 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            // Whole lines from other seeds, then byte mutations.
            if rng.below(2) == 0 {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(input.len() + 1);
                let from = rng.below(other.len() + 1);
                input.splice(at..at, other[from..].iter().copied());
            }
            mutate(&mut rng, &mut input);
            manifest(&input);
        }
    }

    #[test]
    fn fuzz_smoke() {
        let seed = std::env::var("WEFT_STORE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_f00d);
        let mut rng = Rng(seed);
        let seeds = seeds();
        for _ in 0..100_000 {
            let input = if rng.below(4) == 0 {
                (0..rng.below(80)).map(|_| rng.byte()).collect()
            } else {
                let mut input = seeds[rng.below(seeds.len())].clone();
                mutate(&mut rng, &mut input);
                input
            };
            records(&input);
        }
    }
}
