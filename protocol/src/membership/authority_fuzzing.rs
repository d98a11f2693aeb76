//! Fuzzing harness for the authority-set chain, the renewal messages and
//! the nomination messages,
//! shared by the cargo-fuzz target `authority` in `protocol/fuzz` and the
//! stable no-panic test below. Not part of the API: compiled only with the
//! `fuzzing` feature or for tests.
//!
//! An input is a flags byte and a payload, fed to
//! [`AuthorityChain::from_bytes`] then `verify` against the fixture
//! network's anchor, and to [`RenewalRequest::from_bytes`] then `check`
//! (as the holder would, for fixture member 3) and
//! [`RenewalResponse::from_bytes`], and to [`Nomination::from_bytes`] then
//! `check` (from fixture holder "first") and [`NominationAnswer::from_bytes`].
//! A chain that verifies is also compared with a fixture chain a node could
//! hold (`Authorities::compare`). With [`RESIGN`], every link of a chain
//! that decodes is signed again by the fixture key its signer field names,
//! so mutated contents reach the checks behind the signatures.
//!
//! Besides "no panic", whatever is accepted must obey the rules: one
//! encoding per value, versions 1.. without a gap, every set non-empty and
//! within bounds, a renewal accepted only for the requester's own, trusted,
//! unrevoked certificate.

use std::sync::OnceLock;

use super::authority_set::{Adoption, AuthorityChain, SetChange, MAX_AUTHORITIES};
use super::fixtures::{self, NETWORK_ID, NOW};
use super::identity::IdentitySecret;
use super::nomination::{Nomination, NominationAnswer};
use super::renewal::{RenewalRefusal, RenewalRequest, RenewalResponse};

/// Flags bit: sign every link of a decoded chain again.
pub const RESIGN: u8 = 1 << 0;

/// The anchor and the other holders' keys of the fixture chains.
fn keys() -> &'static Vec<IdentitySecret> {
    static KEYS: OnceLock<Vec<IdentitySecret>> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::iter::once(fixtures::authority())
            .chain((1..4).map(|n| IdentitySecret::from_bytes([0xc0 + n; 32])))
            .collect()
    })
}

/// What each parser made of one input, for tallies.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The chain: "ok" or the error.
    pub chain: &'static str,
    /// The renewal request: "ok", the refusal, or "undecodable".
    pub request: &'static str,
    /// The renewal response: "renewed", "refused" or "undecodable".
    pub response: &'static str,
    /// The nomination: "ok", the refusal, or "undecodable".
    pub nomination: &'static str,
    /// The nomination answer: "key", "refused" or "undecodable".
    pub answer: &'static str,
}

/// The `authority` fuzz target's body.
pub fn authority(data: &[u8]) -> Outcome {
    let (flags, payload) = match data.split_first() {
        Some((f, p)) => (*f, p),
        None => (0, data),
    };
    Outcome {
        chain: chain(flags, payload),
        request: request(payload),
        response: match RenewalResponse::from_bytes(payload) {
            Some(r) => {
                assert_eq!(r.to_bytes(), payload, "a second encoding was accepted");
                match r {
                    RenewalResponse::Renewed(_) => "renewed",
                    RenewalResponse::Refused(_) => "refused",
                }
            }
            None => "undecodable",
        },
        nomination: nomination(payload),
        answer: match NominationAnswer::from_bytes(payload) {
            Some(a) => {
                assert_eq!(a.to_bytes(), payload, "a second encoding was accepted");
                match a {
                    NominationAnswer::Key(_) => "key",
                    NominationAnswer::Refused(_) => "refused",
                }
            }
            None => "undecodable",
        },
    }
}

fn nomination(payload: &[u8]) -> &'static str {
    let Some(n) = Nomination::from_bytes(payload) else {
        return "undecodable";
    };
    assert_eq!(n.to_bytes(), payload, "a second encoding was accepted");
    let k = keys();
    let held = AuthorityChain::genesis(NETWORK_ID, "first", &k[0], 3600, NOW)
        .and_then(|c| c.verify(&NETWORK_ID, &k[0].identity()))
        .expect("the fixture chain verifies");
    match n.check(&NETWORK_ID, &held, "first", "second") {
        Ok(()) => {
            assert_eq!(n.network, NETWORK_ID);
            "ok"
        }
        Err(why) => why.as_str(),
    }
}

fn chain(flags: u8, payload: &[u8]) -> &'static str {
    let anchor = keys()[0].identity();
    let mut chain = match AuthorityChain::from_bytes(payload) {
        Ok(c) => c,
        Err(e) => return e.as_str(),
    };
    assert_eq!(chain.to_bytes(), payload, "a second encoding was accepted");
    if flags & RESIGN != 0 {
        chain = chain.resigned(|signer| keys().iter().find(|k| k.identity() == *signer));
    }
    match chain.verify(&NETWORK_ID, &anchor) {
        Ok(a) => {
            let set = a.current();
            assert_eq!(a.version() as usize, chain.len());
            assert!(!set.holders.is_empty() && set.holders.len() <= MAX_AUTHORITIES);
            assert!(!a.issuers().is_empty());
            // Against the first version a node holds: every verified chain
            // from the same anchor starts with that version or forks from
            // nothing it could hold, and is never "older" than it.
            let held = AuthorityChain::genesis(NETWORK_ID, "first", &keys()[0], 3600, NOW)
                .and_then(|c| c.verify(&NETWORK_ID, &anchor))
                .expect("the fixture chain verifies");
            let verdict = held.compare(&a);
            assert_ne!(verdict, Adoption::Older);
            if verdict == Adoption::Extends {
                assert!(a.version() > held.version());
            }
            "ok"
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e.as_str()
        }
    }
}

fn request(payload: &[u8]) -> &'static str {
    let Some(r) = RenewalRequest::from_bytes(payload) else {
        return "undecodable";
    };
    assert_eq!(r.to_bytes(), payload, "a second encoding was accepted");
    let me = fixtures::member(3).identity();
    let network = fixtures::network();
    match r.check(&me, &network, &|_| false, NOW) {
        Ok(cert) => {
            assert_eq!(cert.identity, me);
            assert!(r.check(&me, &network, &|_| true, NOW) == Err(RenewalRefusal::Revoked));
            "ok"
        }
        Err(why) => why.as_str(),
    }
}

/// Valid inputs, named for the seed files.
pub fn seed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let k = keys();
    let genesis =
        AuthorityChain::genesis(NETWORK_ID, "first", &k[0], 3600, NOW).expect("a valid first set");
    let v1 = genesis
        .verify(&NETWORK_ID, &k[0].identity())
        .expect("verifies");
    let two = genesis
        .extend(
            &v1,
            SetChange::Add {
                name: "second".into(),
                key: k[1].identity(),
            },
            &k[0],
            NOW + 10,
        )
        .expect("a valid change");
    let v2 = two.verify(&NETWORK_ID, &k[0].identity()).expect("verifies");
    let three = two
        .extend(
            &v2,
            SetChange::Remove {
                name: "first".into(),
            },
            &k[1],
            NOW + 20,
        )
        .expect("a valid change");
    let with = |flags: u8, d: Vec<u8>| [vec![flags], d].concat();
    vec![
        ("chain-genesis", with(0, genesis.to_bytes())),
        ("chain-rotated", with(RESIGN, three.to_bytes())),
        (
            "renewal-request",
            with(
                0,
                RenewalRequest {
                    certificate: fixtures::signed_certificate(3),
                }
                .to_bytes(),
            ),
        ),
        (
            "renewal-response",
            with(
                0,
                RenewalResponse::Renewed(fixtures::signed_certificate(3)).to_bytes(),
            ),
        ),
        (
            "nomination",
            with(
                0,
                Nomination {
                    network: NETWORK_ID,
                    version: 1,
                }
                .to_bytes(),
            ),
        ),
        (
            "nomination-answer",
            with(0, NominationAnswer::Key(k[2].identity()).to_bytes()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;

    const ITERATIONS: u64 = 20_000;

    fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
        (rng.next_u64() % n.max(1) as u64) as usize
    }

    #[test]
    fn the_seeds_are_accepted_where_they_should_be() {
        let seeds: BTreeMap<_, _> = seed_corpus().into_iter().collect();
        assert_eq!(authority(&seeds["chain-genesis"]).chain, "ok");
        assert_eq!(authority(&seeds["chain-rotated"]).chain, "ok");
        assert_eq!(authority(&seeds["renewal-request"]).request, "ok");
        assert_eq!(authority(&seeds["renewal-response"]).response, "renewed");
        assert_eq!(authority(&seeds["nomination"]).nomination, "ok");
        assert_eq!(authority(&seeds["nomination-answer"]).answer, "key");
    }

    #[test]
    fn mutated_chains_and_renewal_messages_never_panic_and_reach_every_check() {
        let seeds: Vec<Vec<u8>> = seed_corpus().into_iter().map(|(_, s)| s).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(0x6175_7468);
        let mut tally: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..ITERATIONS {
            let mut input = seeds[below(&mut rng, seeds.len())].clone();
            for _ in 0..=below(&mut rng, 4) {
                match below(&mut rng, 4) {
                    0 if !input.is_empty() => {
                        let at = below(&mut rng, input.len());
                        input[at] ^= 1 << below(&mut rng, 8);
                    }
                    1 if input.len() > 1 => {
                        let at = below(&mut rng, input.len());
                        input.truncate(at.max(1));
                    }
                    2 if !input.is_empty() => {
                        let at = below(&mut rng, input.len());
                        input[at] = rng.next_u32() as u8;
                    }
                    _ => input.push(rng.next_u32() as u8),
                }
            }
            let o = catch_unwind(AssertUnwindSafe(|| authority(&input)))
                .unwrap_or_else(|_| panic!("input {i} broke the harness: {input:02x?}"));
            for (what, v) in [
                ("chain", o.chain),
                ("request", o.request),
                ("response", o.response),
                ("nomination", o.nomination),
                ("answer", o.answer),
            ] {
                *tally.entry(format!("{what}:{v}")).or_default() += 1;
            }
        }
        eprintln!("authority fuzz: {ITERATIONS} inputs: {tally:?}");
        for layer in [
            "chain:ok",
            "chain:malformed",
            "chain:bad_signature",
            "request:ok",
            "request:undecodable",
            "response:renewed",
            "nomination:ok",
            "nomination:undecodable",
            "answer:key",
        ] {
            assert!(
                tally.get(layer).is_some_and(|n| *n > 0),
                "nothing reached {layer}"
            );
        }
    }

    fn seed_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/authority")
    }

    /// Rewrites the cargo-fuzz seed files from [`seed_corpus`].
    #[test]
    #[ignore = "writes files; run by hand after a change to these formats"]
    fn write_authority_fuzz_seeds() {
        let dir = seed_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seed_corpus() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn the_committed_authority_seeds_are_current() {
        for (name, bytes) in seed_corpus() {
            let on_disk = std::fs::read(seed_dir().join(name))
                .unwrap_or_else(|e| panic!("seed {name}: {e}; run write_authority_fuzz_seeds"));
            assert!(
                on_disk == bytes,
                "seed {name} is stale; run write_authority_fuzz_seeds"
            );
        }
    }
}
