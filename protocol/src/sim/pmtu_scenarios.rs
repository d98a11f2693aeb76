//! Path-MTU discovery between whole devices over simulated links: probes
//! and acknowledgements travel as real transport messages, links drop what
//! exceeds their MTU and send no ICMP.

use std::time::Duration;

use super::{Link, Sim};
use crate::{Encapsulated, Event, PathHint};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Two nodes with discovery on, a link of `mtu` both ways (`loss` random
/// loss each way, 0.3 ms latency), and a session set up.
fn black_hole_pair(seed: u64, mtu: usize, loss: f64) -> (Sim, usize, usize) {
    hinted_pair(seed, mtu, loss, None)
}

/// [`black_hole_pair`], with `hint` given to `a` about `b` before the
/// handshake, as a node loads its stored paths at start.
fn hinted_pair(seed: u64, mtu: usize, loss: f64, hint: Option<(u16, bool)>) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed);
    let a = sim.add_node_with(|c| c.pmtu_discovery = true);
    let b = sim.add_node_with(|c| c.pmtu_discovery = true);
    sim.connect(a, b);
    if let Some((pmtu, confirmed_by_self)) = hint {
        let (peer, endpoint) = (sim.peer(a, b), sim.node(b).addr);
        sim.with_device(a, |d, _| {
            d.set_path_hint(
                peer,
                PathHint {
                    endpoint: Some(endpoint),
                    pmtu: Some(pmtu),
                    rtt: Some(Duration::from_micros(300)),
                    confirmed_by_self,
                },
            )
        });
    }
    sim.set_default_link(Link {
        mtu,
        loss,
        ..Link::latency(Duration::from_micros(150))
    });
    // A small packet starts the handshake; retry it through loss.
    // Stops as soon as both have a session, so tests see what follows.
    'attempts: for _ in 0..20 {
        sim.send(a, b, 100);
        for _ in 0..200 {
            sim.run_for(ms(1));
            if sim.status(a, b).has_session && sim.status(b, a).has_session {
                break 'attempts;
            }
        }
    }
    (sim, a, b)
}

fn pmtu(sim: &Sim, from: usize, to: usize) -> Option<(u16, bool)> {
    sim.node(from).device.path_mtu(sim.peer(from, to))
}

#[test]
fn discovery_finds_a_black_hole_link_mtu_exactly_within_a_second() {
    for mtu in [1280usize, 1400, 1420, 1500] {
        let (mut sim, a, b) = black_hole_pair(21, mtu, 0.0);
        let start = sim.now();
        let mut exact = None;
        while sim.now() - start < secs(1) {
            sim.run_for(ms(5));
            if pmtu(&sim, a, b) == Some((mtu as u16, true)) {
                exact = Some(sim.now() - start);
                break;
            }
        }
        let t = exact.unwrap_or_else(|| panic!("mtu {mtu}: {:?}", pmtu(&sim, a, b)));
        assert!(t < ms(500), "mtu {mtu}: {t:?}");
        sim.run_for(secs(1));
        assert_eq!(pmtu(&sim, b, a), Some((mtu as u16, true)), "b→a, mtu {mtu}");
        let changed = sim.node(a).events.iter().any(
            |(_, e)| matches!(e, Event::PmtuChanged { pmtu, .. } if usize::from(*pmtu) == mtu),
        );
        assert!(changed || mtu == 1340, "no PmtuChanged event for {mtu}");
    }
}

#[test]
fn inner_packets_beyond_the_edge_are_refused_with_its_inner_mtu() {
    let (mut sim, a, b) = black_hole_pair(22, 1400, 0.0);
    sim.run_for(secs(1));
    // 1400 outer = 1340 inner over IPv4 (20 + 8 + 32 bytes of overhead).
    let out = sim.send(a, b, 1341);
    assert!(
        matches!(out, Encapsulated::TooBig { mtu: 1340, .. }),
        "{out:?}"
    );
    let before = sim.delivered_seqs(a, b).len();
    let out = sim.send(a, b, 1340);
    assert!(matches!(out, Encapsulated::Send { .. }), "{out:?}");
    sim.run_for(ms(10));
    assert_eq!(
        sim.delivered_seqs(a, b).len(),
        before + 1,
        "a full-size packet was lost to the MTU"
    );
}

#[test]
fn twenty_percent_loss_each_way_still_converges_to_the_exact_mtu() {
    for seed in 30..40 {
        let (mut sim, a, b) = black_hole_pair(seed, 1400, 0.2);
        sim.run_for(secs(5));
        assert_eq!(pmtu(&sim, a, b), Some((1400, true)), "seed {seed}");
    }
}

#[test]
fn a_decrease_mid_stream_is_followed_within_3s_and_an_increase_within_the_raise_interval() {
    let (mut sim, a, b) = black_hole_pair(23, 1400, 0.0);
    let until = sim.now() + secs(2);
    sim.stream(&[(a, b)], ms(10), until, 200);
    assert_eq!(pmtu(&sim, a, b), Some((1400, true)));
    sim.set_default_link(Link {
        mtu: 1300,
        ..Link::latency(Duration::from_micros(150))
    });
    let start = sim.now();
    while pmtu(&sim, a, b) != Some((1300, true)) {
        assert!(sim.now() - start < secs(3), "still {:?}", pmtu(&sim, a, b));
        let until = sim.now() + ms(50);
        sim.stream(&[(a, b)], ms(10), until, 200);
    }
    sim.set_default_link(Link {
        mtu: 1400,
        ..Link::latency(Duration::from_micros(150))
    });
    let start = sim.now();
    while pmtu(&sim, a, b) != Some((1400, true)) {
        assert!(
            sim.now() - start < crate::pmtu::RAISE_INTERVAL + secs(1),
            "still {:?}",
            pmtu(&sim, a, b)
        );
        let until = sim.now() + ms(100);
        sim.stream(&[(a, b)], ms(10), until, 200);
    }
}

#[test]
fn with_discovery_off_no_probe_is_sent_and_the_interface_mtu_is_used() {
    let mut sim = Sim::new(24);
    let a = sim.add_node();
    let b = sim.add_node();
    sim.connect(a, b);
    sim.send(a, b, 100);
    sim.run_for(secs(2));
    assert_eq!(pmtu(&sim, a, b), None);
    let out = sim.send(a, b, 1420);
    assert!(matches!(out, Encapsulated::Send { .. }), "{out:?}");
}

#[test]
fn ipv6_packets_up_to_1280_bytes_cross_an_edge_below_the_ipv6_minimum_in_pieces() {
    let (mut sim, a, b) = black_hole_pair(25, 1300, 0.0);
    sim.run_for(secs(1));
    // 1300 outer over IPv4 leaves 1240 bytes of inner MTU.
    assert_eq!(pmtu(&sim, a, b), Some((1300, true)));
    let before = sim.delivered_seqs(a, b).len();
    for len in [1241, 1280] {
        let out = sim.send_v6(a, b, len);
        assert!(matches!(out, Encapsulated::Queued { .. }), "{len}: {out:?}");
    }
    sim.run_for(ms(10));
    assert_eq!(
        sim.delivered_seqs(a, b).len(),
        before + 2,
        "pieces were not reassembled"
    );
    // Larger IPv6 packets still get a "too big" (at 1280, from the node).
    let out = sim.send_v6(a, b, 1281);
    assert!(
        matches!(out, Encapsulated::TooBig { mtu: 1240, .. }),
        "{out:?}"
    );
    // IPv4 is left to IP fragmentation in the node.
    let out = sim.send(a, b, 1241);
    assert!(matches!(out, Encapsulated::TooBig { .. }), "{out:?}");
}

/// Runs until `a`'s edge toward `b` uses `mtu`, confirmed; returns the time
/// from the end of the handshake and the probes `a` sent toward `b`.
fn until_exact(sim: &mut Sim, a: usize, b: usize, mtu: u16) -> (Duration, u64) {
    let start = sim.now();
    while pmtu(sim, a, b) != Some((mtu, true)) {
        assert!(sim.now() - start < secs(5), "still {:?}", pmtu(sim, a, b));
        sim.run_for(ms(1));
    }
    let probes = sim
        .node(a)
        .device
        .pmtu_stats(sim.peer(a, b))
        .map_or(0, |s| s.probes_sent);
    (sim.now() - start, probes)
}

#[test]
fn stored_pmtu_is_used_after_one_probe_on_a_black_hole_path() {
    let (mut sim, a, b) = hinted_pair(26, 1400, 0.0, Some((1400, true)));
    let (t, probes) = until_exact(&mut sim, a, b, 1400);
    // The stored size and the control: no search at all.
    assert_eq!(probes, 2, "after {t:?}");
    // A full-size inner packet passes at once.
    let out = sim.send(a, b, 1340);
    assert!(matches!(out, Encapsulated::Send { .. }), "{out:?}");
    sim.run_for(ms(10));
    assert!(
        sim.delivered_seqs(a, b).len() >= 2,
        "the full-size packet was lost"
    );
    // For comparison: a gossiped prior, and no prior.
    let (mut gossiped, a2, b2) = hinted_pair(26, 1400, 0.0, Some((1400, false)));
    let (tg, pg) = until_exact(&mut gossiped, a2, b2, 1400);
    let (mut cold, a3, b3) = hinted_pair(26, 1400, 0.0, None);
    let (tc, pc) = until_exact(&mut cold, a3, b3, 1400);
    eprintln!("stored: {probes} probes, {t:?}; gossiped: {pg}, {tg:?}; none: {pc}, {tc:?}");
    assert!(probes < pg && pg < pc, "{probes} / {pg} / {pc}");
    // Nothing above it is tried before the raise interval.
    let until = sim.now() + secs(10);
    sim.stream(&[(a, b)], ms(10), until, 200);
    let lost = sim
        .node(a)
        .device
        .pmtu_stats(sim.peer(a, b))
        .map_or(0, |s| s.probes_lost);
    assert_eq!(lost, 0, "probes above the stored size were sent");
    assert_eq!(pmtu(&sim, a, b), Some((1400, true)));
}

#[test]
fn stored_pmtu_that_no_longer_passes_falls_back_to_a_search() {
    let (mut sim, a, b) = hinted_pair(27, 1300, 0.0, Some((1400, true)));
    assert_eq!(
        pmtu(&sim, a, b).map(|p| p.0),
        Some(crate::device::BASE_INNER_MTU + 60),
        "the stored size is not used before a probe confirms it"
    );
    let (t, probes) = until_exact(&mut sim, a, b, 1300);
    eprintln!("stale stored size: 1300 after {t:?}, {probes} probes");
    assert!(probes > 2, "{probes} probes");
    let out = sim.send(a, b, 1241);
    assert!(
        matches!(out, Encapsulated::TooBig { mtu: 1240, .. }),
        "{out:?}"
    );
}

#[test]
fn a_stored_pmtu_toward_another_endpoint_is_only_a_prior() {
    let mut sim = Sim::new(28);
    let a = sim.add_node_with(|c| c.pmtu_discovery = true);
    let b = sim.add_node_with(|c| c.pmtu_discovery = true);
    sim.connect(a, b);
    sim.set_default_link(Link {
        mtu: 1400,
        ..Link::latency(Duration::from_micros(150))
    });
    let peer = sim.peer(a, b);
    sim.with_device(a, |d, _| {
        d.set_path_hint(
            peer,
            PathHint {
                endpoint: Some("192.0.2.99:51820".parse().unwrap()),
                pmtu: Some(1400),
                rtt: None,
                confirmed_by_self: true,
            },
        )
    });
    sim.send(a, b, 100);
    sim.run_for(ms(200));
    let (_, probes) = until_exact(&mut sim, a, b, 1400);
    // Checked exactly (1400 and 1401, with escalation), not resumed.
    assert!(probes > 2, "{probes} probes");
}

/// Runs `a` → `b` traffic of full-size packets for `d`, one every 10 ms.
fn full_size_stream(sim: &mut Sim, a: usize, b: usize, len: usize, d: Duration) {
    let until = sim.now() + d;
    sim.stream(&[(a, b)], ms(10), until, len);
}

#[test]
fn a_forged_too_big_for_the_floor_leaves_a_streaming_edge_at_its_mtu() {
    let (mut sim, a, b) = black_hole_pair(40, 1400, 0.0);
    full_size_stream(&mut sim, a, b, 200, secs(3));
    assert_eq!(pmtu(&sim, a, b), Some((1400, true)));
    let events = sim.node(a).events.len();
    let before = sim.delivered_seqs(a, b).len();
    let endpoint = sim.node(b).addr;
    // A forged "fragmentation needed" announcing 576, every 5 s for 30 s,
    // while full-size inner packets (1340 bytes: the edge's inner MTU) flow.
    let mut full_size = 0;
    for _ in 0..6 {
        sim.with_device(a, |d, now| d.handle_too_big(endpoint, 576, now));
        assert_eq!(pmtu(&sim, a, b), Some((1400, true)), "lowered by the hint");
        let until = sim.now() + secs(5);
        while sim.now() < until {
            let out = sim.send(a, b, 1340);
            assert!(matches!(out, Encapsulated::Send { .. }), "{out:?}");
            full_size += 1;
            sim.run_for(ms(10));
        }
    }
    let changes: Vec<_> = sim.node(a).events[events..]
        .iter()
        .filter(|(_, e)| matches!(e, Event::PmtuChanged { .. }))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    let arrived = sim.delivered_seqs(a, b).len() - before;
    assert_eq!(arrived, full_size, "full-size packets lost");
    let stats = sim.node(a).device.pmtu_stats(sim.peer(a, b)).unwrap();
    assert_eq!((stats.hints, stats.hints_refuted), (6, 6), "{stats:?}");
}

#[test]
fn a_true_too_big_on_a_black_hole_is_followed_exactly_within_a_few_probe_timeouts() {
    let (mut sim, a, b) = black_hole_pair(41, 1400, 0.0);
    full_size_stream(&mut sim, a, b, 200, secs(3));
    assert_eq!(pmtu(&sim, a, b), Some((1400, true)));
    sim.set_default_link(Link {
        mtu: 1300,
        ..Link::latency(Duration::from_micros(150))
    });
    let endpoint = sim.node(b).addr;
    // A router's message, true this time (and rounded down, as some do).
    sim.with_device(a, |d, now| d.handle_too_big(endpoint, 1280, now));
    let start = sim.now();
    while pmtu(&sim, a, b) != Some((1300, true)) {
        assert!(sim.now() - start < secs(3), "still {:?}", pmtu(&sim, a, b));
        full_size_stream(&mut sim, a, b, 200, ms(5));
    }
    let t = sim.now() - start;
    // Validation alone would take up to a second more.
    assert!(t < ms(200), "followed after {t:?}");
}
