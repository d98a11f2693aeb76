//! Scenario tests: each drives devices through the simulator and checks one
//! behaviour of the protocol, with WireGuard's timer constants, to the
//! millisecond where the links have no delay.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{inner, Datagram, Kind, Link, PeerOpts, Sim, Verdict};
use crate::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
};
use crate::{Decapsulated, DropReason, Encapsulated, Event};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Two connected nodes over links with `link` in both directions.
fn pair(seed: u64, link: Link) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed);
    let (a, b) = (sim.add_node(), sim.add_node());
    sim.connect(a, b);
    sim.set_default_link(link);
    (sim, a, b)
}

fn assert_no_duplicates(seqs: &[u64]) {
    let unique: BTreeSet<_> = seqs.iter().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "an inner packet was delivered twice"
    );
}

/// Offsets from `t0` of `times`, for readable assertion messages.
fn offsets(t0: Instant, times: &[Instant]) -> Vec<Duration> {
    times.iter().map(|t| *t - t0).collect()
}

#[test]
fn handshake_completes_under_30_percent_loss_and_reordering() {
    // 50 packets/s each way with up to 60 ms of extra delay: datagrams
    // overtake each other all the time.
    let lossy = Link {
        latency: ms(20),
        loss: 0.3,
        jitter: ms(60),
        mtu: 1500,
    };
    let (mut sim, a, b) = pair(1, lossy);
    let sent = 1500;
    let end = sim.at(secs(30));
    sim.stream(&[(a, b), (b, a)], ms(20), end, 200);
    // Let the last datagrams land.
    sim.run_for(secs(1));

    for (from, to) in [(a, b), (b, a)] {
        let status = sim.status(from, to);
        assert!(status.has_session, "node {from} has no session");
        let first_hs = sim
            .node(from)
            .events
            .iter()
            .find(|(_, e)| matches!(e, Event::HandshakeCompleted { .. }))
            .map(|(t, _)| *t - sim.at(Duration::ZERO))
            .expect("a handshake completed");
        assert!(first_hs < secs(20), "first handshake only at {first_hs:?}");

        // Every packet the application sent was sealed and put on the wire
        // once: nothing stayed queued, nothing was dropped locally.
        assert!(sim.node(from).local_drops.is_empty());
        assert_eq!(status.stats.tx_packets, sent);
        let link = sim.link(from, to);
        assert_eq!(link.data_sent, sent);

        // What reached the receiver was delivered exactly once, however
        // late; what did not was lost by the link, and nothing else.
        let seqs = sim.delivered_seqs(from, to);
        assert_no_duplicates(&seqs);
        let overtaken = seqs.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(overtaken > 50, "only {overtaken} reorderings");
        let from_addr = sim.node(from).addr;
        let refused: Vec<_> = sim
            .node(to)
            .received
            .iter()
            .filter(|r| r.kind == Kind::Data && r.from == from_addr)
            .filter(|r| !matches!(r.outcome, Decapsulated::Tun { .. }))
            .map(|r| r.outcome)
            .collect();
        assert_eq!(refused, vec![], "node {to} refused data from {from}");
        assert_eq!(seqs.len() as u64 + link.data_lost, sent);
        // 30% loss leaves about 70%; a broken handshake or replay window
        // would leave far fewer.
        let share = seqs.len() as f64 / sent as f64;
        assert!(share > 0.6, "only {} of {sent} delivered", seqs.len());
    }
}

#[test]
fn rekey_after_120s_loses_no_packet() {
    let (mut sim, a, b) = pair(2, Link::latency(ms(10)));
    let end = sim.at(secs(400));
    sim.stream(&[(a, b), (b, a)], ms(100), end, 120);
    sim.run_for(secs(1));

    let expected: Vec<u64> = (1..=4000).collect();
    assert_eq!(sim.delivered_seqs(a, b), expected);
    assert_eq!(sim.delivered_seqs(b, a), expected);
    // A handshake at the start and one per REKEY_AFTER_TIME after it.
    let handshakes = sim.status(a, b).stats.handshakes_completed;
    assert!(handshakes >= 4, "{handshakes} handshakes in 400 s");
    for (from, to) in [(a, b), (b, a)] {
        // Sessions rotate: data goes out under at least four receiver
        // indices, each used over one stretch of time.
        let mut indices: Vec<u32> = Vec::new();
        for d in sim
            .node(from)
            .sent
            .iter()
            .filter(|d| d.kind() == Kind::Data)
        {
            let i = d.receiver_index().expect("transport");
            if indices.last() != Some(&i) {
                assert!(!indices.contains(&i), "index {i} came back");
                indices.push(i);
            }
        }
        assert!(indices.len() >= 4, "sessions used by {from}: {indices:?}");
        assert_eq!(sim.status(from, to).stats.handshakes_failed, 0);
    }
    for reason in DropReason::ALL {
        assert_eq!(
            sim.dropped(a, reason) + sim.dropped(b, reason),
            0,
            "{reason:?}"
        );
    }
}

#[test]
fn a_replayed_transport_packet_is_refused() {
    let (mut sim, a, b) = pair(3, Link::latency(ms(5)));
    sim.set_adversary(|d, _| {
        if d.kind() == Kind::Data {
            Verdict::Hold
        } else {
            Verdict::Pass
        }
    });
    for _ in 0..10 {
        sim.send(a, b, 100);
        sim.run_for(ms(100));
    }
    assert_eq!(sim.delivered_seqs(a, b), (1..=10).collect::<Vec<_>>());
    let held = std::mem::take(&mut sim.held);
    assert_eq!(held.len(), 10);
    for d in held {
        assert_eq!(
            sim.inject(d),
            Some(Decapsulated::Dropped(DropReason::Replay))
        );
    }
    assert_eq!(sim.dropped(b, DropReason::Replay), 10);

    // A network that duplicates gets the same treatment.
    sim.set_adversary(|d, _| {
        if d.kind() == Kind::Data {
            Verdict::Duplicate
        } else {
            Verdict::Pass
        }
    });
    sim.send(a, b, 100);
    sim.run_for(ms(100));
    assert_eq!(sim.delivered_seqs(a, b), (1..=11).collect::<Vec<_>>());
    assert_eq!(sim.dropped(b, DropReason::Replay), 11);
    assert_eq!(sim.status(b, a).stats.rx_packets, 11);
}

#[test]
fn a_replayed_initiation_is_refused() {
    let (mut sim, a, b) = pair(4, Link::latency(ms(5)));
    sim.set_adversary(|d, _| {
        if d.kind() == Kind::Initiation {
            Verdict::Hold
        } else {
            Verdict::Pass
        }
    });
    sim.send(a, b, 100);
    sim.run_for(secs(1));
    sim.clear_adversary();
    sim.send(b, a, 100);
    sim.run_for(secs(1));
    let index_to_a = sim.node(b).sent.last().and_then(Datagram::receiver_index);
    let before = sim.status(b, a);
    let responses = sim.node(b).sent_times(Kind::Response).len();
    assert_eq!(responses, 1);
    let [initiation] = std::mem::take(&mut sim.held)
        .try_into()
        .expect("one initiation");

    // Replayed as is, and from an address the attacker controls.
    let mut spoofed = initiation.clone();
    spoofed.from = "203.0.113.66:4444".parse().unwrap();
    for d in [initiation, spoofed] {
        assert_eq!(
            sim.inject(d),
            Some(Decapsulated::Dropped(DropReason::Replay))
        );
    }
    sim.run_for(secs(1));
    assert_eq!(sim.dropped(b, DropReason::Replay), 2);
    assert_eq!(
        sim.node(b).sent_times(Kind::Response).len(),
        1,
        "answered a replay"
    );
    let after = sim.status(b, a);
    assert_eq!(
        after.endpoint, before.endpoint,
        "a replay moved the endpoint"
    );
    assert_eq!(after.last_handshake, before.last_handshake);
    assert_eq!(
        after.stats.handshakes_completed,
        before.stats.handshakes_completed
    );

    // The session is the one from before, both ways.
    sim.send(b, a, 100);
    sim.send(a, b, 100);
    sim.run_for(secs(1));
    assert_eq!(
        sim.node(b).sent.last().and_then(Datagram::receiver_index),
        index_to_a
    );
    assert_eq!(sim.delivered_seqs(b, a), vec![1, 2]);
    assert_eq!(sim.delivered_seqs(a, b), vec![1, 2]);
}

#[test]
fn roaming_mid_stream_switches_the_endpoint_at_once() {
    let (mut sim, a, b) = pair(5, Link::latency(ms(10)));
    let old = sim.node(a).addr;
    let new: SocketAddr = "198.51.100.1:40000".parse().unwrap();
    let switch = sim.at(secs(10));
    sim.stream(&[(a, b), (b, a)], ms(100), switch, 200);
    sim.set_address(a, new);
    let end = sim.at(secs(20));
    sim.stream(&[(a, b), (b, a)], ms(100), end, 200);
    sim.run_for(secs(1));

    let learned = sim
        .node(b)
        .received
        .iter()
        .find(|r| r.from == new)
        .expect("B heard from A's new address");
    assert!(matches!(learned.outcome, Decapsulated::Tun { .. }));
    let learned_at = learned.at;
    assert_eq!(
        learned_at - switch,
        ms(10),
        "A's first packet after the move"
    );
    let changes: Vec<_> = sim
        .node(b)
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::EndpointChanged { .. }))
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0, learned_at);
    assert_eq!(
        changes[0].1,
        Event::EndpointChanged {
            peer: sim.peer(b, a),
            from: Some(old),
            to: new
        }
    );
    // Every datagram B sent before it knew went to the old address, every
    // one from then on to the new one.
    for d in &sim.node(b).sent {
        let expected = if d.sent_at < learned_at { old } else { new };
        assert_eq!(d.to, expected, "sent at {:?}", d.sent_at - switch);
    }
    assert_eq!(sim.status(b, a).endpoint, Some(new));
    assert_eq!(sim.status(b, a).stats.endpoint_changes, 1);

    // A to B lost nothing; B to A lost only what it sent to the old address
    // after A had left it: the one packet of the tick at the switch.
    assert_eq!(sim.delivered_seqs(a, b), (1..=200).collect::<Vec<_>>());
    assert!(sim
        .node(b)
        .delivered
        .iter()
        .all(|d| d.peer == sim.peer(b, a)));
    let b_to_a = sim.delivered_seqs(b, a);
    assert_no_duplicates(&b_to_a);
    let lost = sim.link(b, usize::MAX).data_lost;
    assert_eq!(lost, 1);
    assert_eq!(b_to_a.len() as u64, 200 - lost);
}

#[test]
fn passive_keepalive_follows_received_data_after_10s() {
    let (mut sim, a, b) = pair(6, Link::ideal());
    let t0 = sim.at(secs(1));
    sim.run_until(t0);
    sim.send(a, b, 100);
    // B answers data 10 s later with a keepalive, since it had nothing to
    // send back.
    sim.run_until(t0 + secs(20));
    sim.send(a, b, 100);
    // Here B has something to say within 10 s: no keepalive from B; A now
    // owes one.
    sim.run_until(t0 + secs(24));
    sim.send(b, a, 100);
    sim.run_until(t0 + secs(60));

    assert_eq!(
        offsets(t0, &sim.node(b).sent_times(Kind::Keepalive)),
        vec![KEEPALIVE_TIMEOUT]
    );
    assert_eq!(
        offsets(t0, &sim.node(a).sent_times(Kind::Keepalive)),
        vec![secs(24) + KEEPALIVE_TIMEOUT]
    );
    assert_eq!(sim.status(b, a).stats.keepalives_sent, 1);
    assert_eq!(sim.delivered_seqs(a, b), vec![1, 2]);
}

#[test]
fn persistent_keepalive_is_sent_every_interval_during_silence() {
    let mut sim = Sim::new(7);
    let (a, b) = (sim.add_node(), sim.add_node());
    let every = secs(25);
    sim.connect_with(
        a,
        b,
        PeerOpts {
            persistent_keepalive: Some(every),
            ..PeerOpts::default()
        },
        PeerOpts::default(),
    );
    let t0 = sim.now();
    let mut samples = Vec::new();
    for s in 1..=400 {
        sim.run_until(t0 + secs(s));
        samples.push(sim.status(a, b).has_session);
    }

    // The first handshake starts at once and confirms with a keepalive;
    // then one keepalive per interval, with no other traffic. Rekeys may
    // add a keepalive at the same instant, never at another.
    let times: BTreeSet<Duration> = offsets(t0, &sim.node(a).sent_times(Kind::Keepalive))
        .into_iter()
        .collect();
    let expected: BTreeSet<Duration> = (0..=16).map(|k| every * k).collect();
    assert_eq!(times, expected);
    assert!(sim.node(b).sent_times(Kind::Keepalive).is_empty());
    // The keepalives keep the session fresh: it never lapses.
    assert!(samples.iter().all(|s| *s), "session lapsed at {:?} s", {
        samples.iter().position(|s| !s).map(|i| i + 1)
    });
}

#[test]
fn keepalives_from_the_responder_keep_the_initiators_session_fresh() {
    let mut sim = Sim::new(18);
    let (a, b) = (sim.add_node(), sim.add_node());
    // Only B keeps the tunnel alive, but A starts the first session.
    sim.connect_with(
        a,
        b,
        PeerOpts::default(),
        PeerOpts {
            persistent_keepalive: Some(secs(25)),
            ..PeerOpts::default()
        },
    );
    sim.set_default_link(Link::latency(ms(10)));
    sim.send(a, b, 100);
    let t0 = sim.now();
    for s in 1..=400 {
        sim.run_until(t0 + secs(s));
        for (x, y) in [(a, b), (b, a)] {
            assert!(
                sim.status(x, y).has_session,
                "{x} lost its session at {s} s"
            );
        }
    }
    // A, the initiator, renewed the session it only received on, before
    // REJECT_AFTER_TIME each time.
    assert!(sim.status(a, b).stats.handshakes_completed >= 3);
    assert_eq!(sim.dropped(a, DropReason::Expired), 0);
    assert_eq!(sim.dropped(b, DropReason::Expired), 0);
}

#[test]
fn handshake_retries_every_5s_with_jitter_and_gives_up_after_90s() {
    let (mut sim, a, b) = pair(8, Link::ideal());
    let unreachable = Link {
        loss: 1.0,
        ..Link::ideal()
    };
    sim.set_link(a, b, unreachable);
    assert!(matches!(sim.send(a, b, 100), Encapsulated::Queued { .. }));
    sim.run_until(sim.at(secs(150)));

    let inits = sim.node(a).sent_times(Kind::Initiation);
    let intervals: Vec<Duration> = inits.windows(2).map(|w| w[1] - w[0]).collect();
    for i in &intervals {
        assert!(
            (REKEY_TIMEOUT..=REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX).contains(i),
            "retry after {i:?}"
        );
    }
    assert!(intervals.windows(2).any(|w| w[0] != w[1]), "no jitter");
    let (failed_at, _) = *sim
        .node(a)
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::HandshakeFailed { .. }))
        .expect("gave up");
    let gave_up_after = failed_at - inits[0];
    assert!(
        (REKEY_ATTEMPT_TIME..REKEY_ATTEMPT_TIME + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)
            .contains(&gave_up_after),
        "gave up after {gave_up_after:?}"
    );
    assert!(
        inits.iter().all(|t| *t < failed_at),
        "retried after giving up"
    );
    // About REKEY_ATTEMPT_TIME / REKEY_TIMEOUT retries after the first try.
    assert!(
        (17..=19).contains(&inits.len()),
        "{} initiations",
        inits.len()
    );
    let stats = sim.status(a, b).stats;
    assert_eq!(stats.initiations_sent, inits.len() as u64);
    assert_eq!(stats.handshakes_failed, 1);

    // The queued packet went with the attempt: once B is reachable, only
    // what is sent afterwards arrives.
    sim.set_link(a, b, Link::ideal());
    sim.send(a, b, 100);
    sim.run_for(secs(1));
    assert_eq!(sim.delivered_seqs(a, b), vec![2]);
}

#[test]
fn no_reply_to_sent_data_starts_a_new_handshake_after_15s() {
    let (mut sim, a, b) = pair(9, Link::ideal());
    let t0 = sim.now();
    // B is alive and its keepalive answers the first packet: no new
    // handshake at 15 s.
    sim.send(a, b, 100);
    sim.run_until(t0 + secs(20));
    // Then B's replies stop reaching A.
    let dead = Link {
        loss: 1.0,
        ..Link::ideal()
    };
    sim.set_link(b, a, dead);
    sim.run_until(t0 + secs(30));
    sim.send(a, b, 100);
    sim.run_until(t0 + secs(46));

    let inits = offsets(t0, &sim.node(a).sent_times(Kind::Initiation));
    assert_eq!(
        inits,
        vec![Duration::ZERO, secs(30) + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT]
    );
    assert_eq!(
        offsets(t0, &sim.node(b).sent_times(Kind::Keepalive)),
        vec![KEEPALIVE_TIMEOUT, secs(30) + KEEPALIVE_TIMEOUT]
    );
}

#[test]
fn session_is_rejected_after_180s_without_rekey() {
    let (mut sim, a, b) = pair(10, Link::latency(ms(10)));
    // Every initiation after the first is lost, and one data packet is
    // captured instead of delivered.
    let mut initiations = 0;
    sim.set_adversary(move |d, elapsed| match d.kind() {
        Kind::Initiation => {
            initiations += 1;
            if initiations > 1 {
                Verdict::Drop
            } else {
                Verdict::Pass
            }
        }
        Kind::Data if (secs(100)..secs(101)).contains(&elapsed) => Verdict::Steal,
        _ => Verdict::Pass,
    });
    // The session is up 20 ms after the first packet (two link delays).
    sim.send(a, b, 100);
    let mut outcomes = Vec::new();
    for s in 0..200 {
        sim.run_until(sim.at(secs(s) + ms(500)));
        outcomes.push((s, sim.send(a, b, 100)));
    }
    sim.run_for(secs(1));

    // Sent while the session was younger than REJECT_AFTER_TIME, queued
    // for a new handshake after.
    for (s, outcome) in &outcomes {
        let sent = matches!(outcome, Encapsulated::Send { .. });
        assert_eq!(sent, secs(*s) < REJECT_AFTER_TIME, "at {s} s: {outcome:?}");
    }
    // Packet n + 2 is the one sent at n.5 s; the one of 100.5 s was stolen.
    let expected: Vec<u64> = (1..=181).filter(|s| *s != 102).collect();
    assert_eq!(sim.delivered_seqs(a, b), expected);
    assert!(
        sim.node(a).sent_times(Kind::Initiation).len() > 5,
        "no rekey attempts"
    );
    assert!(!sim.status(a, b).has_session);
    assert!(!sim.status(b, a).has_session);

    // A packet sealed under the old session and delivered late is refused
    // for its age, before any decryption.
    let [late] = std::mem::take(&mut sim.held)
        .try_into()
        .expect("one stolen packet");
    assert_eq!(
        sim.inject(late),
        Some(Decapsulated::Dropped(DropReason::Expired))
    );
    assert_eq!(sim.delivered_seqs(a, b).len(), 180);
}

#[test]
fn keys_are_erased_after_540s_of_silence() {
    let (mut sim, a, b) = pair(11, Link::ideal());
    let t0 = sim.at(secs(1));
    sim.run_until(t0);
    sim.set_adversary(|d, _| {
        if d.kind() == Kind::Data {
            Verdict::Hold
        } else {
            Verdict::Pass
        }
    });
    sim.send(a, b, 100);
    sim.run_until(t0 + secs(300));
    let [copy] = std::mem::take(&mut sim.held)
        .try_into()
        .expect("one data packet");
    // Old but not erased: refused for its age.
    assert_eq!(
        sim.inject(copy.clone()),
        Some(Decapsulated::Dropped(DropReason::Expired))
    );
    sim.run_until(t0 + 3 * REJECT_AFTER_TIME + ms(1));

    for (node, other) in [(a, b), (b, a)] {
        let cleared: Vec<Duration> = sim
            .node(node)
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::SessionsCleared { .. }))
            .map(|(t, _)| *t - t0)
            .collect();
        assert_eq!(cleared, vec![3 * REJECT_AFTER_TIME], "node {node}");
        assert!(!sim.status(node, other).has_session);
    }
    // Erased: the index means nothing any more.
    assert_eq!(
        sim.inject(copy),
        Some(Decapsulated::Dropped(DropReason::UnknownIndex))
    );

    // A new packet brings a new handshake and gets through.
    assert!(matches!(sim.send(a, b, 100), Encapsulated::Queued { .. }));
    sim.run_for(secs(1));
    assert_eq!(sim.delivered_seqs(a, b), vec![1, 2]);
}

#[test]
fn under_load_a_cookie_reply_is_sent_and_the_retry_with_mac2_succeeds() {
    let mut sim = Sim::new(12);
    let a = sim.add_node();
    let b = sim.add_node_with(|c| c.under_load_handshakes_per_second = 0);
    sim.connect(a, b);
    sim.set_default_link(Link::latency(ms(10)));
    let t0 = sim.now();
    sim.send(a, b, 100);
    sim.run_until(t0 + secs(10));

    assert_eq!(
        sim.node(b).outcomes(Kind::Initiation),
        vec![
            Decapsulated::Dropped(DropReason::UnderLoad),
            Decapsulated::Consumed
        ]
    );
    assert_eq!(sim.node(b).device.stats().cookie_replies_sent, 1);
    assert_eq!(
        sim.node(a).outcomes(Kind::CookieReply),
        vec![Decapsulated::Consumed]
    );
    // The retry went out as soon as the cookie reply arrived (initiation
    // and cookie reply: two trips of 10 ms), not on the retransmission
    // timer, and carried mac2.
    let inits = offsets(t0, &sim.node(a).sent_times(Kind::Initiation));
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[1], ms(20));
    let delivered = &sim.node(b).delivered;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].at - t0,
        inits[1] + ms(30),
        "initiation, response, data"
    );
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped() {
    let mut sim = Sim::new(13);
    let (a, b, c) = (sim.add_node(), sim.add_node(), sim.add_node());
    sim.connect(a, b);
    sim.connect(a, c);
    sim.connect(b, c);
    let (bv4, cv4) = (sim.node(b).v4, sim.node(c).v4);
    // A claims to be C (a configured peer of B), then someone nobody knows.
    let as_c = inner::ipv4(cv4, bv4, 1, 100);
    let as_stranger = inner::ipv4("100.64.0.99".parse().unwrap(), bv4, 2, 100);
    assert!(matches!(
        sim.send_packet(a, &as_c),
        Encapsulated::Queued { .. }
    ));
    assert!(matches!(
        sim.send_packet(a, &as_stranger),
        Encapsulated::Queued { .. }
    ));
    sim.run_for(secs(1));
    assert!(matches!(
        sim.send_packet(a, &as_c),
        Encapsulated::Send { .. }
    ));
    sim.run_for(secs(1));

    assert!(sim.node(b).delivered.is_empty());
    assert_eq!(sim.dropped(b, DropReason::SourceNotAllowed), 3);
    assert_eq!(sim.status(b, a).stats.rx_packets, 0);
    // A's own address still gets through on the same session.
    sim.send(a, b, 100);
    sim.run_for(secs(1));
    assert_eq!(sim.delivered_seqs(a, b), vec![1]);
}

#[test]
fn unknown_peer_initiation_is_dropped() {
    let mut sim = Sim::new(14);
    let (b, c) = (sim.add_node(), sim.add_node());
    // C knows B; B has never heard of C.
    sim.introduce(c, b, PeerOpts::default());
    sim.send(c, b, 100);
    sim.run_for(secs(12));

    let outcomes = sim.node(b).outcomes(Kind::Initiation);
    assert!(outcomes.len() >= 3, "C retries");
    assert!(outcomes
        .iter()
        .all(|o| *o == Decapsulated::Dropped(DropReason::UnknownPeer)));
    assert!(sim.node(b).sent.is_empty(), "B answered a stranger");
    assert_eq!(
        sim.dropped(b, DropReason::UnknownPeer),
        outcomes.len() as u64
    );
}

#[test]
fn an_initiation_answered_by_the_peer_stops_our_own_retries() {
    let (mut sim, a, b) = pair(15, Link::latency(ms(10)));
    // A's initiations never arrive; B's do.
    let a_addr = sim.node(a).addr;
    sim.set_adversary(move |d, _| {
        if d.kind() == Kind::Initiation && d.from == a_addr {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    });
    sim.send(a, b, 100);
    sim.send(b, a, 100);
    sim.run_for(secs(1));
    assert_eq!(sim.delivered_seqs(a, b), vec![1]);
    assert_eq!(sim.delivered_seqs(b, a), vec![1]);
    // The session B started works both ways, so A's attempt is over: no
    // retries, no failure.
    sim.run_for(secs(100));
    assert_eq!(sim.node(a).sent_times(Kind::Initiation).len(), 1);
    assert!(!sim
        .node(a)
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::HandshakeFailed { .. })));
}

#[test]
fn padding_stops_at_the_mtu_so_full_size_packets_fit_the_link() {
    let (mut sim, a, b) = pair(16, Link::ideal());
    // Exactly room for a 1420-byte packet with no padding.
    let tight = Link {
        mtu: 1420 + 32 + super::UNDERLAY_OVERHEAD,
        ..Link::ideal()
    };
    sim.set_link(a, b, tight);
    for len in 1400..=1421 {
        sim.send(a, b, len);
        sim.run_for(ms(10));
    }
    // 1421 bytes is beyond the interface MTU: refused before it is sent,
    // so the caller can answer it with an ICMP "too big".
    assert_eq!(sim.delivered_seqs(a, b), (1..=21).collect::<Vec<_>>());
    assert_eq!(sim.node(a).too_big, 1);
    assert_eq!(sim.link(a, b).too_big, 0);
}

#[test]
fn five_nodes_in_a_lossy_full_mesh_all_reach_each_other() {
    let mut sim = Sim::new(17);
    let nodes: Vec<usize> = (0..5).map(|_| sim.add_node()).collect();
    for (i, &x) in nodes.iter().enumerate() {
        for &y in &nodes[i + 1..] {
            sim.connect(x, y);
        }
    }
    sim.set_default_link(Link {
        latency: ms(15),
        loss: 0.1,
        jitter: ms(10),
        mtu: 1500,
    });
    let pairs: Vec<(usize, usize)> = nodes
        .iter()
        .flat_map(|&x| nodes.iter().filter(move |&&y| y != x).map(move |&y| (x, y)))
        .collect();
    let t0 = sim.now();
    for tick in 0..120u32 {
        sim.run_until(t0 + ms(500) * tick);
        for &(x, y) in &pairs {
            if tick % 2 == 0 {
                sim.send(x, y, 300);
            } else {
                sim.send_v6(x, y, 300);
            }
        }
    }
    sim.run_for(secs(2));

    for &(x, y) in &pairs {
        let seqs = sim.delivered_seqs(x, y);
        assert_no_duplicates(&seqs);
        // 10% loss leaves about 108 of 120.
        assert!(seqs.len() >= 90, "{x}->{y}: {} of 120", seqs.len());
        assert!(sim.status(x, y).has_session, "{x} has no session with {y}");
        let lost = sim.link(x, y).data_lost;
        assert_eq!(
            seqs.len() as u64 + lost,
            120,
            "{x}->{y}: refused by the receiver"
        );
    }
}

#[test]
fn connect_completes_a_handshake_without_any_data_and_is_a_no_op_once_a_session_exists() {
    let (mut sim, a, b) = pair(90, Link::latency(ms(5)));
    let peer = sim.peer(a, b);
    sim.with_device(a, |d, now| d.connect(peer, now));
    sim.run_for(ms(20));
    assert!(
        sim.status(a, b).has_session && sim.status(b, a).has_session,
        "{:?}",
        sim.status(a, b)
    );
    let initiations = sim.node(a).sent_times(Kind::Initiation).len();
    assert_eq!(initiations, 1);
    sim.with_device(a, |d, now| d.connect(peer, now));
    sim.run_for(ms(20));
    assert_eq!(sim.node(a).sent_times(Kind::Initiation).len(), initiations);
    assert!(sim.delivered_seqs(a, b).is_empty(), "no data was sent");
}
