//! Path-MTU discovery between whole devices over simulated links: probes
//! and acknowledgements travel as real transport messages, links drop what
//! exceeds their MTU and send no ICMP.

use std::time::Duration;

use super::{Link, Sim};
use crate::{Encapsulated, Event};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Two nodes with discovery on, a link of `mtu` both ways (`loss` random
/// loss each way, 0.3 ms latency), and a session set up.
fn black_hole_pair(seed: u64, mtu: usize, loss: f64) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed);
    let a = sim.add_node_with(|c| c.pmtu_discovery = true);
    let b = sim.add_node_with(|c| c.pmtu_discovery = true);
    sim.connect(a, b);
    sim.set_default_link(Link {
        mtu,
        loss,
        ..Link::latency(Duration::from_micros(150))
    });
    // A small packet starts the handshake; retry it through loss.
    for _ in 0..20 {
        sim.send(a, b, 100);
        sim.run_for(ms(200));
        if sim.status(a, b).has_session && sim.status(b, a).has_session {
            break;
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
