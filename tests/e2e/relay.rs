//! Members behind NATs reach each other: directly when both NATs keep a mapping's port for
//! every destination (simultaneous sends open both), and through a public member when one NAT
//! picks a new port per destination, with the public member carrying every byte and the two
//! members never exchanging a datagram directly; and when a direct path opens while they are
//! relayed, the punches they keep sending find it and the traffic moves off the relay. The mesh is built as an operator would: `weft
//! init` on the public member, `weft join` from behind the NATs to its public address.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{
    ping, ping_in_background, poll, tcp_transfer, wait_reachable, Lab, Mapping, Netns, Node,
    TwoNat, MIB,
};
use crate::mesh::{addresses, invite, v4, weft};

/// Bytes sent through the tunnel from A to C in each scenario.
const TRANSFER: usize = 4 * MIB;
/// Longer than a burst of punches (5 sends 150 ms apart) and its answer.
const PUNCH_ROUND: Duration = Duration::from_millis(1500);

/// The three running members and their overlay IPv4 addresses.
struct Mesh<'n> {
    nodes: Vec<Node<'n>>,
    a4: IpAddr,
    c4: IpAddr,
}

/// `weft join` of member `name` in `ns` with a token from the public member.
fn join<'n>(
    lab: &Lab,
    ns: &'n Netns,
    net: &TwoNat,
    r_config: &std::path::Path,
    name: &str,
) -> (Node<'n>, IpAddr) {
    let token = invite(&net.r, r_config, name, "1h");
    let dir = lab.dir().join(name);
    let (ok, _, err) = weft(ns, &["join", &token, "--dir", dir.to_str().unwrap()]);
    assert!(ok, "{name}: weft join from behind the NAT failed: {err}");
    let config = dir.join("weft.toml");
    let (ip4, _) = addresses(&config);
    (Node::start_file(lab, ns, name, &config, v4(ip4)), ip4)
}

/// Builds the mesh: R initialises the network, A and C join from behind their NATs; then
/// traffic between each and R lets R confirm its paths, which tells A and C their reflexive
/// endpoints and everyone that R is public.
fn mesh<'n>(lab: &Lab, net: &'n TwoNat) -> Mesh<'n> {
    let r_dir: PathBuf = lab.dir().join("r");
    let (ok, _, err) = weft(
        &net.r,
        &[
            "init",
            "--name",
            "r",
            "--network",
            "100.64.0.0/16",
            "--dir",
            r_dir.to_str().unwrap(),
        ],
    );
    assert!(ok, "weft init failed: {err}");
    let r_config = r_dir.join("weft.toml");
    let (r4, _) = addresses(&r_config);
    let r = Node::start_file(lab, &net.r, "r", &r_config, v4(r4));
    let (a, a4) = join(lab, &net.a, net, &r_config, "a");
    let (c, c4) = join(lab, &net.c, net, &r_config, "c");
    wait_reachable(&net.a, r4, Duration::from_secs(15));
    wait_reachable(&net.c, r4, Duration::from_secs(15));
    // Path MTU discovery runs on edges that carry data: keep both busy until R has confirmed
    // its paths and A and C know their reflexive endpoints and that R is public.
    let busy = [
        ping_in_background(&net.a, r4, 150),
        ping_in_background(&net.c, r4, 150),
    ];
    let ready = poll(Duration::from_secs(40), Duration::from_millis(200), || {
        [&a, &c]
            .iter()
            .all(|n| {
                let text = n.log().text();
                text.contains("reflexive endpoint learned")
                    && text.contains("relay for members without a direct path")
            })
            .then_some(())
    });
    drop(busy);
    assert!(
        ready.is_some(),
        "A and C did not learn their reflexive endpoints and a relay within 40 s"
    );
    Mesh {
        nodes: vec![r, a, c],
        a4,
        c4,
    }
}

/// A reaches C (and back) and sends [`TRANSFER`] bytes to it; returns the time to the first
/// answered ping and the counters' growth over the transfer: (bytes let in to C directly from
/// NAT A, bytes R sent to NAT C). Bytes, not datagrams: with offloads one counted packet may
/// be a train of datagrams.
fn a_reaches_c(net: &TwoNat, m: &Mesh<'_>) -> (Duration, u64, u64) {
    let start = Instant::now();
    wait_reachable(&net.a, m.c4, Duration::from_secs(30));
    let first = start.elapsed();
    assert_eq!(ping(&net.a, m.c4, 5).received, 5, "a -> c");
    assert_eq!(ping(&net.c, m.a4, 5).received, 5, "c -> a");
    let (_, direct_before) = net.direct_in("c");
    let (_, relayed_before) = net.at_r("to-c");
    let report = tcp_transfer(&net.a, &net.c, m.c4, 5201, TRANSFER, 7);
    assert_eq!(report.received, TRANSFER);
    assert_eq!(report.sent_sha256, report.received_sha256);
    println!("relay: a -> c {}", report.summary());
    let (_, direct_after) = net.direct_in("c");
    let (_, relayed_after) = net.at_r("to-c");
    (
        first,
        direct_after - direct_before,
        relayed_after - relayed_before,
    )
}

#[test]
fn members_behind_two_endpoint_independent_nats_reach_each_other_directly() {
    let lab = Lab::new("relay-eim");
    let net = TwoNat::new(
        &lab,
        "",
        Mapping::EndpointIndependent,
        Mapping::EndpointIndependent,
    );
    let m = mesh(&lab, &net);
    let (first, direct, relayed) = a_reaches_c(&net, &m);
    println!(
        "relay-eim: a reached c after {:.1} s; during the transfer {direct} bytes came \
         straight from NAT A into C, R sent {relayed} bytes to NAT C; in all R relayed {:?}",
        first.as_secs_f64(),
        m.nodes[0]
            .log()
            .field_values("relayed for other members so far", "packets")
            .last(),
    );
    assert!(
        direct as usize >= TRANSFER,
        "only {direct} bytes of a {TRANSFER}-byte transfer went directly from NAT A to C"
    );
    assert!(
        (relayed as usize) < TRANSFER / 20,
        "R carried {relayed} bytes of a direct transfer"
    );
}

#[test]
fn behind_a_nat_that_randomizes_ports_traffic_flows_through_the_public_member() {
    let lab = Lab::new("relay-random");
    let net = TwoNat::new(
        &lab,
        "",
        Mapping::EndpointIndependent,
        Mapping::RandomPerDestination,
    );
    let m = mesh(&lab, &net);
    let (first, direct, relayed) = a_reaches_c(&net, &m);
    let (_, from_a) = net.at_r("from-a");
    println!(
        "relay-random: a reached c after {:.1} s; during the transfer R sent {relayed} bytes \
         to NAT C ({} bytes from NAT A in all); {direct} bytes went directly; R's log: \
         {:?} packets relayed",
        first.as_secs_f64(),
        from_a,
        m.nodes[0]
            .log()
            .field_values("relayed for other members so far", "packets")
            .last(),
    );
    assert!(
        relayed as usize >= TRANSFER,
        "R sent only {relayed} bytes to NAT C during a {TRANSFER}-byte transfer"
    );
    assert_eq!(
        net.direct_in("c").0,
        0,
        "a datagram from NAT A reached C directly"
    );
    assert_eq!(
        net.direct_in("a").0,
        0,
        "a datagram from NAT C reached A directly"
    );
    assert!(
        m.nodes[1].log().text().contains("peer reached via relay"),
        "A never logged the relay"
    );
}

#[test]
fn relayed_members_punch_through_once_a_direct_path_opens_and_leave_the_relay() {
    let lab = Lab::new("relay-punch");
    let net = TwoNat::new(
        &lab,
        "",
        Mapping::EndpointIndependent,
        Mapping::EndpointIndependent,
    );
    net.block_direct(true);
    let m = mesh(&lab, &net);
    wait_reachable(&net.a, m.c4, Duration::from_secs(30));
    assert!(
        m.nodes[1].log().text().contains("peer reached via relay"),
        "A reached C without the relay although no direct path exists"
    );
    assert_eq!(net.direct_in("c").0, 0);
    // Let the first round of punches (at the switch to the relay) fail against the block and
    // end, so what opens the path below is a retry.
    let first_round = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        m.nodes[1]
            .log()
            .text()
            .contains("punch candidates received")
            .then_some(())
    });
    assert!(first_round.is_some(), "A never exchanged punch candidates");
    std::thread::sleep(PUNCH_ROUND);
    net.block_direct(false);
    let opened = Instant::now();
    // Offers are retried 5, 10, 20 s apart while relayed; the next round finds the path.
    let punched = poll(Duration::from_secs(45), Duration::from_millis(200), || {
        [&m.nodes[1], &m.nodes[2]]
            .iter()
            .any(|n| {
                n.log()
                    .field_values("direct path established", "punched")
                    .iter()
                    .any(|p| p == "true")
            })
            .then_some(())
    });
    assert!(
        punched.is_some(),
        "no punch opened the direct path within 45 s"
    );
    println!(
        "relay-punch: direct path punched {:.1} s after it opened",
        opened.elapsed().as_secs_f64()
    );
    let (_, direct, relayed) = a_reaches_c(&net, &m);
    println!("relay-punch: then {direct} bytes went directly, R sent {relayed} bytes to NAT C");
    assert!(
        direct as usize >= TRANSFER,
        "only {direct} bytes of a {TRANSFER}-byte transfer went directly"
    );
    assert!(
        (relayed as usize) < TRANSFER / 20,
        "R still carried {relayed} bytes"
    );
}
