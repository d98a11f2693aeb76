//! NAT traversal: a node behind a masquerading router stays reachable for a peer that cannot
//! address it directly only while persistent keepalives keep the router's UDP mapping alive.
//! Both cases run at once, each on its own namespaces, against a router that forgets a silent
//! UDP flow after 5 s: with keepalive every 3 s the peer still reaches it after 30 s of
//! silence; without, it cannot. Both halves are asserted, so the scenario proves the keepalive
//! is what makes the difference.

use crate::harness::{
    overlay, ping, wait_reachable, Keypair, Lab, NatSetup, Node, NodeConfig, PeerConfig,
    DEFAULT_PORT,
};
use std::time::Duration;

/// The router forgets a UDP flow after this much silence.
const CONNTRACK_UDP_TIMEOUT_SECS: u32 = 5;
/// Keepalive interval of the node behind NAT in the keepalive case.
const KEEPALIVE_SECS: u16 = 3;
/// Silence after the session is up, several times the conntrack timeout.
const SILENCE: Duration = Duration::from_secs(30);
/// Pings from the public peer after the silence.
const PINGS: u32 = 5;

/// What one case saw.
#[derive(Debug)]
struct Outcome {
    udp_mappings_after_silence: usize,
    replies: u32,
}

/// Runs one case on `net`: A (behind NAT, knows B's endpoint) pings B once to set up the
/// session, everything goes quiet for [`SILENCE`], then B pings A.
fn silence_then_public_peer_pings(net: &NatSetup, node_a: &Node<'_>, node_b: &Node<'_>) -> Outcome {
    let (a4, _) = overlay(1);
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    println!(
        "nat: session {} <-> {} up; {SILENCE:?} of silence",
        node_a.name(),
        node_b.name()
    );
    // Nothing to poll for: the passing of time with no traffic is what is under test.
    std::thread::sleep(SILENCE);
    let udp_mappings_after_silence = net.udp_mappings();
    let stats = ping(&net.b, a4.into(), PINGS);
    Outcome {
        udp_mappings_after_silence,
        replies: stats.received,
    }
}

#[test]
fn public_peer_reaches_a_node_behind_nat_after_30s_silence_only_with_persistent_keepalive() {
    let lab = Lab::new("nat");
    let (key_a, key_b) = (Keypair::generate(&lab, "a"), Keypair::generate(&lab, "b"));
    let b_endpoint = format!("{}:{DEFAULT_PORT}", NatSetup::B);
    // B has no endpoint for A: it can only answer where A's packets came from.
    let config_b =
        |name: &str| NodeConfig::new(name, &key_b, 2).peer(PeerConfig::new("a", &key_a, 1));
    let config_a = |name: &str, keepalive: Option<u16>| {
        let peer = PeerConfig::new("b", &key_b, 2).endpoint(b_endpoint.clone());
        let peer = match keepalive {
            Some(seconds) => peer.keepalive(seconds),
            None => peer,
        };
        NodeConfig::new(name, &key_a, 1).peer(peer)
    };

    let with = NatSetup::new(&lab, "k", CONNTRACK_UDP_TIMEOUT_SECS);
    let without = NatSetup::new(&lab, "n", CONNTRACK_UDP_TIMEOUT_SECS);
    let with_a = Node::start(
        &lab,
        &with.a,
        &config_a("a-keepalive", Some(KEEPALIVE_SECS)),
    );
    let with_b = Node::start(&lab, &with.b, &config_b("b-keepalive"));
    let without_a = Node::start(&lab, &without.a, &config_a("a-no-keepalive", None));
    let without_b = Node::start(&lab, &without.b, &config_b("b-no-keepalive"));

    let (kept, lapsed) = std::thread::scope(|s| {
        let kept = s.spawn(|| silence_then_public_peer_pings(&with, &with_a, &with_b));
        let lapsed = s.spawn(|| silence_then_public_peer_pings(&without, &without_a, &without_b));
        let join = |h: std::thread::ScopedJoinHandle<'_, Outcome>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        (join(kept), join(lapsed))
    });
    for (case, outcome) in [("with keepalive", &kept), ("no keepalive", &lapsed)] {
        println!(
            "nat: {case}: {} UDP flow(s) on the router after the silence, {}/{PINGS} pings \
             from the public peer answered",
            outcome.udp_mappings_after_silence, outcome.replies
        );
    }
    assert!(
        kept.replies >= PINGS - 1,
        "with keepalive the public peer should reach the node behind NAT: {kept:?}"
    );
    assert!(
        lapsed.replies <= 1,
        "without keepalive the NAT mapping should have expired, yet B reached A: {lapsed:?}"
    );
}
