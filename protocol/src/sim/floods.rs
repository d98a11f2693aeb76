//! Handshake floods: scenarios in which a stranger throws initiations at a
//! node while an honest peer handshakes with it. Each proves one defence of
//! `docs/protocol.md` §3 and prints the figure it measures: junk does not
//! make a node demand cookies, a cookie reply is answered at once (but
//! only once per attempt), and valid-looking initiations from one source
//! reach Diffie-Hellman no faster than that source's bucket allows.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{Datagram, Kind, Link, Sim, Verdict};
use crate::cookie::{CookieChecker, CookieGenerator};
use crate::ratelimit::{HANDSHAKES_PER_SECOND, HANDSHAKE_BURST};
use crate::timers::{REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX};
use crate::wire::{self, INITIATION_LEN};
use crate::{Decapsulated, DropReason};

/// Where the flood comes from: an address no simulated node has.
fn attacker() -> SocketAddr {
    "203.0.113.66:40000".parse().unwrap()
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A 148-byte datagram that parses as an initiation but is random inside,
/// mac1 included: what anyone can send without knowing the node's key.
fn junk_initiation(rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut bytes = vec![0u8; INITIATION_LEN];
    rng.fill_bytes(&mut bytes);
    bytes[..4].copy_from_slice(&[wire::TYPE_INITIATION, 0, 0, 0]);
    bytes
}

/// Injects one datagram from `make` into `to` every `every`, from now until
/// `until` (exclusive), running the simulation in between. Returns how many
/// were injected.
fn flood(
    sim: &mut Sim,
    to: SocketAddr,
    every: Duration,
    until: Instant,
    mut make: impl FnMut(&mut Sim) -> Vec<u8>,
) -> u64 {
    let mut sent = 0;
    let mut t = sim.now();
    while t < until {
        sim.run_until(t);
        let bytes = make(sim);
        sim.inject(Datagram {
            from: attacker(),
            to,
            bytes,
            sent_at: t,
        });
        sent += 1;
        t += every;
    }
    sim.run_until(until);
    sent
}

#[test]
fn junk_initiations_at_300_per_second_do_not_delay_an_honest_handshake() {
    let mut sim = Sim::new(41);
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.connect(a, b);
    sim.set_default_link(Link::latency(ms(10)));
    let t0 = sim.now();
    let b_addr = sim.node(b).addr;
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let every = Duration::from_secs(1) / 300;
    // Two and a half seconds of flood first: the honest initiation arrives
    // in the middle of a one-second load window, with 150 junk messages
    // before it in that window (more than the threshold of 128).
    let mut junk = flood(&mut sim, b_addr, every, t0 + ms(2500), |_| {
        junk_initiation(&mut rng)
    });
    let honest_at = sim.now();
    sim.send(a, b, 100);
    junk += flood(&mut sim, b_addr, every, t0 + ms(10_000), |_| {
        junk_initiation(&mut rng)
    });

    let delivered = &sim.node(b).delivered;
    assert_eq!(delivered.len(), 1, "the honest packet never arrived");
    let delay = delivered[0].at - honest_at;
    println!(
        "junk flood: {junk} bad-mac1 initiations at 300/s; the honest handshake and its first \
         packet took {delay:?}"
    );
    // Initiation, response, data: three one-way trips of 10 ms.
    assert_eq!(delay, ms(30), "the honest handshake was delayed");
    assert_eq!(sim.dropped(b, DropReason::BadMac), junk);
    assert_eq!(sim.node(b).device.stats().cookie_replies_sent, 0);
    assert_eq!(sim.dropped(b, DropReason::UnderLoad), 0);
}

#[test]
fn forged_cookie_replies_to_every_initiation_bring_one_immediate_retry_per_attempt() {
    let mut sim = Sim::new(42);
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.connect(a, b);
    sim.set_default_link(Link::latency(ms(10)));
    // On the path: every initiation of A's is taken, and answered with a
    // cookie reply that decrypts (made with B's public key and the
    // initiation's own mac1), as fast as the attacker can.
    let a_addr = sim.node(a).addr;
    let b_addr = sim.node(b).addr;
    sim.set_adversary(move |d, _| {
        if d.kind() == Kind::Initiation && d.from == a_addr {
            Verdict::Steal
        } else {
            Verdict::Pass
        }
    });
    let mut forger = CookieChecker::new(sim.node(b).public.as_bytes());
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let t0 = sim.now();
    let run_for = Duration::from_secs(20);
    sim.send(a, b, 100);
    let mut forged = 0u64;
    while sim.now() < t0 + run_for {
        for stolen in std::mem::take(&mut sim.held) {
            let Ok(wire::Message::Initiation(m)) = wire::Message::parse(&stolen.bytes) else {
                panic!("only initiations are stolen");
            };
            let now = sim.now();
            let reply = forger.reply(&stolen.bytes, m.sender(), a_addr, now, &mut rng);
            let outcome = sim.inject(Datagram {
                from: b_addr,
                to: a_addr,
                bytes: reply.to_vec(),
                sent_at: now,
            });
            assert_eq!(outcome, Some(Decapsulated::Consumed));
            forged += 1;
        }
        sim.run_for(ms(1));
    }

    let initiations = sim.node(a).sent_times(Kind::Initiation).len() as u64;
    // One run of the retransmission timer every REKEY_TIMEOUT (+ jitter),
    // each followed by at most one immediate retry.
    let timer_runs = 1 + run_for.as_millis() / REKEY_TIMEOUT.as_millis();
    println!(
        "forged cookies: {forged} cookie replies in {run_for:?}; A sent {initiations} \
         initiations (at most {} allowed)",
        2 * timer_runs
    );
    assert!(
        initiations <= 2 * timer_runs as u64,
        "A spun on cookie replies"
    );
    // And the retries did happen at once: every other initiation follows
    // its predecessor within the same millisecond step.
    let times = sim.node(a).sent_times(Kind::Initiation);
    assert!(times.len() >= 3);
    assert!(times[1] - times[0] <= ms(1));
    assert!(times[2] - times[1] >= REKEY_TIMEOUT - ms(1));
    assert!(times[2] - times[1] <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + ms(1));
}

#[test]
fn ten_thousand_initiations_with_valid_macs_from_one_source_reach_dh_at_the_bucket_rate() {
    let mut sim = Sim::new(43);
    let (a, b) = (
        sim.add_node(),
        sim.add_node_with(|c| c.under_load_handshakes_per_second = 0),
    );
    sim.connect(a, b);
    let b_addr = sim.node(b).addr;
    // The attacker knows B's public key (mac1) and receives at its address
    // (so it gets a cookie and makes mac2): the strongest stranger.
    let mut attacker_macs = CookieGenerator::new(sim.node(b).public.as_bytes());
    let mut rng = ChaCha20Rng::seed_from_u64(43);
    let t0 = sim.now();
    let mut first = junk_initiation(&mut rng);
    attacker_macs.seal(&mut first, t0);
    assert_eq!(
        sim.inject(Datagram {
            from: attacker(),
            to: b_addr,
            bytes: first,
            sent_at: t0,
        }),
        Some(Decapsulated::Dropped(DropReason::UnderLoad))
    );
    let reply = sim
        .node(b)
        .sent
        .iter()
        .find(|d| d.to == attacker() && d.kind() == Kind::CookieReply)
        .expect("a cookie reply to the attacker")
        .bytes
        .clone();
    let Ok(wire::Message::CookieReply(r)) = wire::Message::parse(&reply) else {
        panic!("not a cookie reply");
    };
    attacker_macs
        .receive(r.nonce(), r.encrypted_cookie(), t0)
        .expect("the cookie decrypts");

    let count = 10_000u32;
    let span = Duration::from_secs(10);
    let every = span / count;
    let start = sim.now();
    let sent = flood(&mut sim, b_addr, every, start + span, |sim| {
        let mut m = junk_initiation(&mut rng);
        attacker_macs.seal(&mut m, sim.now());
        m
    });
    assert_eq!(sent, u64::from(count));

    let stats = sim.node(b).device.stats();
    // Random contents behind valid macs fail only after the Diffie-Hellman
    // that decrypts the initiator's static key.
    let outcomes = sim.node(b).outcomes(Kind::Initiation);
    let reached_dh = outcomes
        .iter()
        .filter(|o| **o == Decapsulated::Dropped(DropReason::HandshakeFailed))
        .count() as u64;
    let budget = u64::from(HANDSHAKE_BURST) + u64::from(HANDSHAKES_PER_SECOND) * span.as_secs();
    println!(
        "valid-mac flood: {count} initiations from one source over {span:?}; \
         {reached_dh} reached Diffie-Hellman (budget {budget}); {} DH counted",
        stats.handshake_dh
    );
    assert!(reached_dh <= budget, "{reached_dh} DH operations");
    assert_eq!(stats.handshake_dh, reached_dh);
    // The bucket gives what it promises, no less.
    assert!(reached_dh >= budget - u64::from(HANDSHAKE_BURST));
    assert_eq!(
        sim.dropped(b, DropReason::UnderLoad),
        1 + u64::from(count) - reached_dh
    );
}
