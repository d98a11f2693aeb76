//! Fuzzing harness for the membership parsers, shared by the cargo-fuzz
//! target `membership` in `protocol/fuzz` and the stable no-panic test
//! below. Not part of the API: compiled only with the `fuzzing` feature or
//! for tests.
//!
//! An input is a flags byte and a payload. Every input goes to all three
//! parsers, against the fixed network, authority and members of
//! `fixtures`, at a fixed time:
//! - [`SignedCertificate::from_bytes`], then `verify`;
//! - [`InviteToken::parse`] of the payload as text, and of the payload
//!   wrapped as a token with a correct checksum, so that mutations reach
//!   the decoder behind the checksum;
//! - [`Validator::validate`]. With [`RESIGN`], a payload that decodes as a
//!   record from a fixture member is signed again with that member's key
//!   (and with [`RESIGN_CERT`] an announced certificate again with the
//!   authority's), so mutated contents reach the checks behind the
//!   signatures, as the data-plane harness recomputes mac1.
//!
//! Besides "no panic", whatever is accepted must obey the rules: one
//! encoding per value, names and addresses valid, an announcement's
//! certificate the origin's, a replay of an accepted record refused.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_chacha::rand_core::SeedableRng as _;

use super::cert::SignedCertificate;
use super::fixtures::{self, NOW};
use super::identity::{IdentityKey, IdentitySecret, SigningContext};
use super::invite::{self, InviteToken};
use super::network::{is_valid_name, NetworkInfo};
use super::records::{
    Announcement, NatLifetime, PathObservation, RecordBody, RecordError, Revocation, SignedRecord,
};
use super::validator::Validator;

/// Flags bit: sign a record that decodes again, as its origin.
pub const RESIGN: u8 = 1 << 0;
/// Flags bit: sign an announced certificate again, as the authority.
pub const RESIGN_CERT: u8 = 1 << 1;

/// Members 1 to 4 are current; 5 to 8 have certificates but are not yet
/// known.
const MEMBERS: u8 = 4;
const WITH_CERTIFICATES: u8 = 8;

struct Keys {
    authority: IdentitySecret,
    members: Vec<IdentitySecret>,
    network: NetworkInfo,
}

impl Keys {
    fn secret_of(&self, id: &IdentityKey) -> Option<&IdentitySecret> {
        self.members.iter().find(|s| s.identity() == *id)
    }

    fn is_member(&self, id: &IdentityKey) -> bool {
        self.members[..usize::from(MEMBERS)]
            .iter()
            .any(|s| s.identity() == *id)
    }
}

/// Key derivation costs a scalar multiplication; do it once per process.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        authority: fixtures::authority(),
        members: (1..=WITH_CERTIFICATES).map(fixtures::member).collect(),
        network: fixtures::network(),
    })
}

/// What each parser made of one input, for tallies.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// `SignedCertificate::from_bytes` and `verify`: "ok" or the error.
    pub certificate: &'static str,
    /// `InviteToken::parse` of the payload as text.
    pub invite_text: &'static str,
    /// `InviteToken::parse` of the payload wrapped as a token.
    pub invite_wrapped: &'static str,
    /// `Validator::validate`: "ok" or the error.
    pub record: &'static str,
}

/// The `membership` fuzz target's body.
pub fn membership(data: &[u8]) -> Outcome {
    let (flags, payload) = match data.split_first() {
        Some((f, p)) => (*f, p),
        None => (0, data),
    };
    Outcome {
        certificate: certificate(payload),
        invite_text: invite_token(&String::from_utf8_lossy(payload)),
        invite_wrapped: invite_token(&invite::encode_text(&mut payload.to_vec())),
        record: record(flags, payload),
    }
}

fn certificate(payload: &[u8]) -> &'static str {
    let k = keys();
    let signed = match SignedCertificate::from_bytes(payload) {
        Ok(s) => s,
        Err(e) => return e.as_str(),
    };
    assert_eq!(signed.to_bytes(), payload, "a second encoding was accepted");
    match signed.verify(&k.network, NOW) {
        Ok(cert) => {
            assert!(is_valid_name(&cert.name));
            assert!(k.network.is_host_address(cert.ipv4));
            assert_eq!(cert.ipv6, k.network.allocate_v6(cert.ipv4));
            assert!(cert.not_before <= NOW && NOW < cert.not_after);
            "ok"
        }
        Err(e) => e.as_str(),
    }
}

fn invite_token(text: &str) -> &'static str {
    match InviteToken::parse(text, NOW) {
        Ok(t) => {
            assert!((1..=invite::MAX_INVITE_ENDPOINTS).contains(&t.inviter_endpoints.len()));
            assert!(t.name.as_deref().is_none_or(is_valid_name));
            assert!(NOW < t.expires_unix);
            assert_eq!(InviteToken::parse(&t.to_text(), NOW).as_ref(), Ok(&t));
            "ok"
        }
        Err(e) => e.as_str(),
    }
}

fn record(flags: u8, payload: &[u8]) -> &'static str {
    let k = keys();
    let mut bytes = payload.to_vec();
    if flags & RESIGN != 0 {
        if let Ok(mut r) = SignedRecord::from_bytes(payload) {
            if flags & RESIGN_CERT != 0 {
                if let RecordBody::Announcement(a) = &mut r.body {
                    a.certificate.signature = k
                        .authority
                        .sign(SigningContext::Certificate, &a.certificate.bytes);
                }
            }
            if let Some(secret) = k.secret_of(&r.origin) {
                r = SignedRecord::sign(secret, r.seq, r.body);
            }
            bytes = r.to_bytes();
        }
    }
    let members = |id: &IdentityKey| k.is_member(id);
    let mut v = Validator::new();
    let r = match v.validate(&bytes, &k.network, &members, NOW) {
        Ok(r) => r,
        Err(e) => {
            // Every refusal has a name and a message.
            assert!(!e.to_string().is_empty());
            return e.as_str();
        }
    };
    assert_eq!(r.to_bytes(), bytes, "a second encoding was accepted");
    assert_eq!(r.verify_signature(), Ok(()));
    match &r.body {
        RecordBody::Announcement(a) => {
            let cert = a.certificate.verify(&k.network, NOW).expect("verified");
            assert_eq!(cert.identity, r.origin);
            assert!(a.endpoints.len() <= 8);
        }
        RecordBody::PathObservation(p) => {
            assert!(k.is_member(&r.origin));
            assert!((576..=9000).contains(&p.pmtu));
        }
        RecordBody::Revocation(rev) => {
            assert!(k.is_member(&r.origin));
            assert_eq!(rev.verify(&k.network), Ok(()));
            assert!(v.is_revoked(&rev.identity, rev.serial));
        }
        RecordBody::NatLifetime(n) => {
            assert!(k.is_member(&r.origin));
            assert!((1_000..=3_600_000).contains(&n.lifetime_ms));
        }
        RecordBody::AuthoritySet(chain) => {
            assert!(k.is_member(&r.origin));
            let authorities = chain
                .verify(k.network.id(), k.network.authority())
                .expect("verified");
            assert!(!authorities.current().holders.is_empty());
        }
    }
    assert!(matches!(
        v.validate(&bytes, &k.network, &members, NOW),
        Err(RecordError::StaleSequence { .. })
    ));
    "ok"
}

/// Valid inputs, named for the seed files: a certificate, tokens, and a
/// record of each kind (with the flags that keep mutations signed).
pub fn seed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let k = keys();
    let with = |flags: u8, d: &[u8]| [&[flags][..], d].concat();
    let token = InviteToken::generate(
        fixtures::NETWORK_ID,
        crate::StaticSecret::from_bytes([0x42; 32]).public_key(),
        vec![
            fixtures::endpoint(1),
            "[2001:db8::1]:51820".parse().expect("an address"),
        ],
        Some("new-node".into()),
        3600,
        NOW,
        &mut rand_chacha::ChaCha20Rng::from_seed([7; 32]),
    )
    .expect("a valid token");
    let record = |from: u8, body: RecordBody| {
        SignedRecord::sign(&k.members[usize::from(from - 1)], 1, body).to_bytes()
    };
    let announcement = |n: u8| {
        RecordBody::Announcement(Announcement {
            certificate: fixtures::signed_certificate(n),
            endpoints: vec![
                fixtures::endpoint(n),
                "10.0.0.5:51820".parse().expect("an address"),
            ],
        })
    };
    let observation = RecordBody::PathObservation(PathObservation {
        to: k.members[1].identity(),
        endpoint: fixtures::endpoint(2),
        pmtu: 1420,
        rtt_us: 12_000,
        measured_unix: NOW - 5,
    });
    let revocation = RecordBody::Revocation(Revocation::sign(
        k.network.id(),
        k.members[2].identity(),
        3,
        NOW,
        &k.authority,
    ));
    let nat_lifetime = RecordBody::NatLifetime(NatLifetime {
        public: "203.0.113.1:40001".parse().expect("an address"),
        lifetime_ms: 25_000,
        measured_unix: NOW - 5,
    });
    vec![
        (
            "certificate",
            with(0, &fixtures::signed_certificate(1).to_bytes()),
        ),
        ("invite", with(0, token.to_text().as_bytes())),
        ("invite-payload", with(0, &token_payload(&token))),
        (
            "announcement-member",
            with(RESIGN | RESIGN_CERT, &record(1, announcement(1))),
        ),
        (
            "announcement-newcomer",
            with(RESIGN | RESIGN_CERT, &record(6, announcement(6))),
        ),
        ("observation", with(RESIGN, &record(1, observation))),
        ("revocation", with(RESIGN, &record(2, revocation))),
        ("nat-lifetime", with(RESIGN, &record(3, nat_lifetime))),
    ]
}

/// The encoding inside a token's text (without prefix and checksum), which
/// the harness wraps again.
fn token_payload(token: &InviteToken) -> Vec<u8> {
    let text = token.to_text();
    let mut payload = URL_SAFE_NO_PAD
        .decode(&text[invite::INVITE_PREFIX.len()..])
        .expect("to_text writes base64url");
    payload.truncate(payload.len() - 4);
    payload
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// Inputs per run; `WEFT_MEMBERSHIP_FUZZ_ITERS` overrides.
    const ITERATIONS: usize = 100_000;

    fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
        (rng.next_u64() % n as u64) as usize
    }

    /// One to four mutations of a seed (the flags byte included): bit
    /// flips, byte writes, truncation, growth, insertion, deletion, or a
    /// chunk copied from another seed.
    fn mutate(seed: &[u8], seeds: &[Vec<u8>], rng: &mut ChaCha20Rng) -> Vec<u8> {
        let mut d = seed.to_vec();
        for _ in 0..1 + below(rng, 4) {
            if d.is_empty() {
                d.push(0);
            }
            let i = below(rng, d.len());
            match below(rng, 7) {
                0 => d[i] ^= 1 << below(rng, 8),
                1 => d[i] = rng.next_u32() as u8,
                2 => d.truncate(below(rng, d.len() + 1)),
                3 => d.extend((0..1 + below(rng, 40)).map(|_| rng.next_u32() as u8)),
                4 => d.insert(i, rng.next_u32() as u8),
                5 => {
                    d.remove(i);
                }
                _ => {
                    let other = &seeds[below(rng, seeds.len())];
                    let from = below(rng, other.len());
                    let len = below(rng, other.len() - from + 1);
                    d.splice(i..i, other[from..from + len].iter().copied());
                }
            }
        }
        d
    }

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_seeds_are_accepted_where_they_should_be() {
        let seeds: BTreeMap<_, _> = seed_corpus().into_iter().collect();
        assert_eq!(membership(&seeds["certificate"]).certificate, "ok");
        assert_eq!(membership(&seeds["invite"]).invite_text, "ok");
        assert_eq!(membership(&seeds["invite-payload"]).invite_wrapped, "ok");
        for name in [
            "announcement-member",
            "announcement-newcomer",
            "observation",
            "revocation",
        ] {
            assert_eq!(membership(&seeds[name]).record, "ok", "{name}");
            // Without the re-signing flags too: the seeds are genuine.
            let mut plain = seeds[name].clone();
            plain[0] = 0;
            assert_eq!(membership(&plain).record, "ok", "{name}");
        }
    }

    #[test]
    fn mutated_and_truncated_inputs_never_panic() {
        let iterations = std::env::var("WEFT_MEMBERSHIP_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ITERATIONS);
        let seeds: Vec<Vec<u8>> = seed_corpus().into_iter().map(|(_, s)| s).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(0x6d65_6d62);
        let mut tally: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..iterations {
            let input = if below(&mut rng, 10) == 0 {
                let mut d = vec![0u8; below(&mut rng, 300)];
                rng.fill_bytes(&mut d);
                d
            } else {
                let seed = &seeds[below(&mut rng, seeds.len())];
                mutate(seed, &seeds, &mut rng)
            };
            // The harness asserts the invariants; name the input if one breaks.
            let o = catch_unwind(AssertUnwindSafe(|| membership(&input)))
                .unwrap_or_else(|_| panic!("input {i} broke the harness: {}", hex(&input)));
            for (what, verdict) in [
                ("certificate", o.certificate),
                ("invite_text", o.invite_text),
                ("invite_wrapped", o.invite_wrapped),
                ("record", o.record),
            ] {
                *tally.entry(format!("{what}:{verdict}")).or_default() += 1;
            }
        }
        eprintln!("membership fuzz: {iterations} inputs: {tally:?}");
        // The inputs reached every layer, not only the framing.
        if iterations >= ITERATIONS {
            for layer in [
                "certificate:ok",
                "certificate:malformed",
                "certificate:bad_signature",
                "invite_text:ok",
                "invite_text:corrupted",
                "invite_text:malformed",
                "invite_wrapped:ok",
                "invite_wrapped:malformed",
                "invite_wrapped:invalid",
                "record:ok",
                "record:malformed",
                "record:bad_signature",
                "record:bad_certificate",
                "record:implausible",
            ] {
                assert!(
                    tally.get(layer).is_some_and(|n| *n > 0),
                    "nothing reached {layer}"
                );
            }
        }
    }

    fn seed_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/membership")
    }

    /// Rewrites the cargo-fuzz seed files from [`seed_corpus`].
    #[test]
    #[ignore = "writes files; run by hand after a change to the membership formats"]
    fn write_membership_fuzz_seeds() {
        let dir = seed_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seed_corpus() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn the_committed_membership_seeds_are_current() {
        // Keys, seeds and times are fixed, so the inputs are too.
        for (name, bytes) in seed_corpus() {
            let on_disk = std::fs::read(seed_dir().join(name))
                .unwrap_or_else(|e| panic!("seed {name}: {e}; run write_membership_fuzz_seeds"));
            assert!(
                on_disk == bytes,
                "seed {name} is stale; run write_membership_fuzz_seeds"
            );
        }
    }
}
