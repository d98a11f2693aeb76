//! NAT traversal: a node behind a masquerading router stays reachable for a peer that cannot
//! address it directly only while persistent keepalives keep the router's UDP mapping alive.
//!
//! - A fixed keepalive still overrides the default: against a router that forgets a silent
//!   UDP flow after 5 s, with keepalive every 3 s the peer still reaches it after 30 s of
//!   silence; with keepalives off (`0`), it cannot. Both halves are asserted, so the scenario
//!   proves the keepalive is what makes the difference.
//! - With the default (`auto`), the node measures its router's mapping lifetime and picks the
//!   interval: routers forgetting flows after 5 s, 20 s and 60 s, at once on their own
//!   namespaces; after 90 s of silence the public peer reaches the node every time, and the
//!   interval chosen (from the node's log) is below 5 s for the first and above 10 s for the last.
//! - The router's whole table is flushed while the public peer pings every 100 ms: the time
//!   until pings pass again is printed and bounded.
//! - Two mesh members behind one NAT (20 s): the lifetime the first measured reaches the
//!   second by gossip, whose keepalive starts from it before any trial of its own.

use crate::harness::{
    overlay, ping, ping_in_background, poll, wait_reachable, Keypair, Lab, NatSetup, Node,
    NodeConfig, PeerConfig, RoutedHosts, DEFAULT_PORT,
};
use std::time::{Duration, Instant};

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
    let without_a = Node::start(&lab, &without.a, &config_a("a-no-keepalive", Some(0)));
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

/// The message of the line a node logs when its NAT measurement or keepalive changes.
const NAT_LINE: &str = "NAT mapping lifetime";
/// Silence in the auto-keepalive cases.
const AUTO_SILENCE: Duration = Duration::from_secs(90);

/// Configurations of A (behind the NAT, knows B, default keepalive) and B (no endpoint for A).
fn auto_configs(lab: &Lab, tag: &str) -> (NodeConfig, NodeConfig) {
    let (key_a, key_b) = (
        Keypair::generate(lab, &format!("{tag}a")),
        Keypair::generate(lab, &format!("{tag}b")),
    );
    let b_endpoint = format!("{}:{DEFAULT_PORT}", NatSetup::B);
    let a = NodeConfig::new(&format!("a-{tag}"), &key_a, 1)
        .peer(PeerConfig::new("b", &key_b, 2).endpoint(b_endpoint));
    let b = NodeConfig::new(&format!("b-{tag}"), &key_b, 2).peer(PeerConfig::new("a", &key_a, 1));
    (a, b)
}

/// The last value of `key` on A's NAT lines, in seconds.
fn last_nat_secs(node: &Node<'_>, key: &str) -> Option<f64> {
    node.log()
        .field_values(NAT_LINE, key)
        .last()
        .and_then(|v| v.parse().ok())
}

/// What one auto-keepalive case saw.
#[derive(Debug)]
struct AutoOutcome {
    conntrack_timeout: u32,
    keepalive_s: Option<f64>,
    lifetime_at_least_s: Option<f64>,
    lifetime_below_s: Option<f64>,
    replies: u32,
}

#[test]
fn with_default_keepalive_a_node_behind_5s_20s_and_60s_nats_stays_reachable_after_90s_silence() {
    let lab = Lab::new("natauto");
    let timeouts = [5u32, 20, 60];
    let setups: Vec<NatSetup> = timeouts
        .iter()
        .map(|t| NatSetup::new(&lab, &format!("t{t}"), *t))
        .collect();
    let configs: Vec<(NodeConfig, NodeConfig)> = timeouts
        .iter()
        .map(|t| auto_configs(&lab, &format!("t{t}")))
        .collect();
    let nodes: Vec<(Node<'_>, Node<'_>)> = setups
        .iter()
        .zip(&configs)
        .map(|(net, (ca, cb))| (Node::start(&lab, &net.b, cb), Node::start(&lab, &net.a, ca)))
        .map(|(b, a)| (a, b))
        .collect();
    let outcomes: Vec<AutoOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = setups
            .iter()
            .zip(&nodes)
            .zip(timeouts)
            .map(|((net, (node_a, _)), conntrack_timeout)| {
                s.spawn(move || {
                    let (a4, _) = overlay(1);
                    let (b4, _) = overlay(2);
                    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
                    // The passing of time without traffic is what is under test.
                    std::thread::sleep(AUTO_SILENCE);
                    let stats = ping(&net.b, a4.into(), PINGS);
                    AutoOutcome {
                        conntrack_timeout,
                        keepalive_s: last_nat_secs(node_a, "keepalive_s"),
                        lifetime_at_least_s: last_nat_secs(node_a, "lifetime_at_least_s"),
                        lifetime_below_s: last_nat_secs(node_a, "lifetime_below_s"),
                        replies: stats.received,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for o in &outcomes {
        println!(
            "nat auto: conntrack timeout {} s: keepalive every {:?} s, lifetime >= {:?} s \
             (< {:?} s), {}/{PINGS} pings from the public peer answered after {AUTO_SILENCE:?}",
            o.conntrack_timeout,
            o.keepalive_s,
            o.lifetime_at_least_s,
            o.lifetime_below_s,
            o.replies
        );
    }
    for o in &outcomes {
        assert!(
            o.replies >= PINGS - 1,
            "the public peer should reach A behind a {} s NAT: {o:?}",
            o.conntrack_timeout
        );
        let every = o.keepalive_s.expect("A logged its keepalive interval");
        assert!(every < f64::from(o.conntrack_timeout), "{o:?}");
    }
    assert!(
        outcomes[0].keepalive_s.is_some_and(|k| k < 5.0),
        "{:?}",
        outcomes[0]
    );
    assert!(
        outcomes[2].keepalive_s.is_some_and(|k| k > 10.0),
        "{:?}",
        outcomes[2]
    );
}

#[test]
fn after_the_nat_table_is_flushed_pings_pass_again_within_2s() {
    let lab = Lab::new("natflush");
    let net = NatSetup::new(&lab, "f", 60);
    let (ca, cb) = auto_configs(&lab, "f");
    let _b = Node::start(&lab, &net.b, &cb);
    let a = Node::start(&lab, &net.a, &ca);
    let (a4, _) = overlay(1);
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    // A knows it is behind a NAT before the flush.
    poll(Duration::from_secs(10), Duration::from_millis(100), || {
        last_nat_secs(&a, "keepalive_s")
    })
    .expect("A detected its NAT");
    let count = 100;
    let started = Instant::now();
    let pings = ping_in_background(&net.b, a4.into(), count);
    std::thread::sleep(Duration::from_secs(3));
    let flushed = started.elapsed();
    net.flush_conntrack();
    let stats = pings.finish(Duration::from_secs(20));
    // Ping i (1-based) left about (i - 1) x 100 ms after the start.
    let sent_at = |seq: u32| Duration::from_millis(u64::from(seq - 1) * 100);
    let lost_after: Vec<u32> = (1..=count)
        .filter(|s| sent_at(*s) > flushed && !stats.replied.contains(s))
        .collect();
    let back = (1..=count)
        .filter(|s| sent_at(*s) > flushed)
        .find(|s| stats.replied.contains(s) && lost_after.first().is_none_or(|l| s > l))
        .map(|s| sent_at(s).saturating_sub(flushed));
    let recovery = match lost_after.first() {
        None => Duration::ZERO,
        Some(_) => back.expect("pings passed again after the flush"),
    };
    println!(
        "nat flush: {} pings lost after the flush; pings passed again {recovery:?} after it; \
         {}/{count} answered",
        lost_after.len(),
        stats.received
    );
    assert!(
        recovery < Duration::from_secs(2),
        "recovery took {recovery:?}"
    );
    assert!(
        stats.replied.contains(&count) || stats.replied.contains(&(count - 1)),
        "pings stopped passing again: {stats:?}"
    );
}

/// The value of `key=value` on `line`.
fn line_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn a_mesh_member_behind_the_same_nat_starts_from_the_lifetime_another_measured() {
    let lab = Lab::new("natmesh");
    let hosts = RoutedHosts::new(&lab, "", 3);
    // m1 and m2 behind one NAT (one public address) toward m0, from before they join.
    hosts.masquerade(&[1, 2], 0, 20);
    // m2's data plane cannot reach m0 yet (its control plane can: gossip reaches it), so
    // m2 knows nothing of the NAT until m1 has measured it.
    let m0_underlay = RoutedHosts::address(0).to_string();
    let block = [
        "OUTPUT",
        "-p",
        "udp",
        "-d",
        &m0_underlay,
        "--dport",
        "51820",
        "-j",
        "DROP",
    ];
    let iptables = |op: &str| {
        let mut args = vec!["iptables", op];
        args.extend(block);
        hosts.hosts[2].exec(&args);
    };
    iptables("-A");
    let (nodes, addrs) = crate::mesh::build_mesh(&lab, &hosts, 3);
    let m0 = addrs[0].0;
    // m1 talks to m0, learns it is behind a NAT and measures it.
    assert!(ping(&hosts.hosts[1], m0, 3).received > 0);
    let published = poll(Duration::from_secs(150), Duration::from_millis(500), || {
        nodes[2]
            .log()
            .text()
            .lines()
            .find(|l| l.contains("NAT lifetime") && l.contains("lifetime_ms="))
            .map(str::to_owned)
    })
    .expect("m2 never received m1's NAT lifetime");
    let lifetime_ms: f64 = line_field(&published, "lifetime_ms")
        .and_then(|v| v.parse().ok())
        .expect("a lifetime");
    // m2 talks to m0 for the first time: its keepalive starts from m1's lifetime, before any
    // trial of its own concluded.
    iptables("-D");
    wait_reachable(&hosts.hosts[2], m0, Duration::from_secs(15));
    let from_hint = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        nodes[2]
            .log()
            .text()
            .lines()
            .filter(|l| l.contains(NAT_LINE) && line_field(l, "trials") == Some("0"))
            .filter_map(|l| line_field(l, "keepalive_s")?.parse::<f64>().ok())
            .find(|k| *k > 2.0)
    });
    println!(
        "nat mesh: m1 measured {:.1} s behind the shared NAT; m2 started with keepalive every \
         {from_hint:?} s before its own first trial",
        lifetime_ms / 1000.0
    );
    let every = from_hint.expect("m2 did not start from the shared lifetime");
    assert!(
        (every - lifetime_ms / 2000.0).abs() < 0.2,
        "{every} vs {lifetime_ms} ms"
    );
}
