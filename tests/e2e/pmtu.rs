//! Path-MTU discovery across a router: A and B on different subnets, the router–B link at MTU
//! 1400 while weft's interface MTU stays at its default 1420 (1480-byte outer packets), so
//! every full-size tunnel packet is too big for the path. In most scenarios the router drops
//! the ICMP fragmentation-needed it would send (a black hole), so the kernel never learns the
//! path MTU and only weft's own probing can find it. Each scenario asserts the PMTU weft
//! reports (its last confirmed `path MTU changed` line) is exactly the bottleneck's, and that
//! bulk TCP gets through intact; the last one turns discovery off and asserts that the same
//! transfer then stalls, so the scenarios prove discovery is what makes the difference.

use crate::harness::{
    elapsed_between, overlay, ping, ping_in_background, ping_sized, poll, tcp_transfer,
    tcp_transfer_while, try_tcp_transfer, wait_reachable, DfPing, Keypair, Lab, Limits, Netns,
    Node, NodeConfig, PeerConfig, RouterPath, DEFAULT_PORT, MIB,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// The router–B link's MTU, and so the path MTU between the nodes.
const BOTTLENECK: u16 = 1400;
/// The lowered bottleneck of the decrease scenario.
const LOWERED: u16 = 1300;
/// Outer overhead of a tunnel packet over an IPv4 underlay (IPv4, UDP, transport header, tag).
const OVERHEAD_V4: u16 = 60;
/// How long an edge may take to find its PMTU once the handshake is done.
const CONVERGE: Duration = Duration::from_secs(10);
/// How long a raise may take: the raise interval (30 s) plus margin.
const RAISE: Duration = Duration::from_secs(40);
/// The peer name A's config gives B: what A's log lines say.
const PEER_B: &str = "b";

/// Writes key pairs and the configs of nodes `a` (overlay host 1) and `b` (host 2) on
/// `RouterPath`'s underlay addresses, each adjusted by `tweak`, and starts both.
pub(crate) fn start_nodes<'n>(
    lab: &Lab,
    net: &'n RouterPath,
    tweak: impl Fn(NodeConfig) -> NodeConfig,
) -> (Node<'n>, Node<'n>) {
    let (key_a, key_b) = (Keypair::generate(lab, "a"), Keypair::generate(lab, "b"));
    let config_a = tweak(NodeConfig::new("a", &key_a, 1).peer(
        PeerConfig::new(PEER_B, &key_b, 2).endpoint(format!("{}:{DEFAULT_PORT}", RouterPath::B)),
    ));
    let config_b = tweak(NodeConfig::new("b", &key_b, 2).peer(
        PeerConfig::new("a", &key_a, 1).endpoint(format!("{}:{DEFAULT_PORT}", RouterPath::A)),
    ));
    let node_a = Node::start(lab, &net.a, &config_a);
    let node_b = Node::start(lab, &net.b, &config_b);
    (node_a, node_b)
}

/// Pings B's overlay IPv4 address from A until it answers (the first ping starts the
/// handshake), then waits until A reports the PMTU toward B as exactly `pmtu`.
pub(crate) fn handshake_and_converge(net: &RouterPath, node_a: &Node<'_>, pmtu: u16) {
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    let log = node_a.log();
    let change = log.wait_pmtu(PEER_B, pmtu, CONVERGE);
    if let (Some(handshake), Some(at)) = (log.first_handshake(PEER_B), change.at) {
        println!(
            "pmtu: a -> b {pmtu} confirmed {} ms after the handshake, {:?} probes, {:?} probe bytes",
            elapsed_between(handshake, at).as_millis(),
            change.probes,
            change.probe_bytes
        );
    }
    assert_eq!(
        change.inner_mtu,
        Some(pmtu - OVERHEAD_V4),
        "inner MTU of a PMTU of {pmtu} over IPv4: {change:?}"
    );
}

/// The Internet checksum (RFC 1071) of `data`.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMPv4 fragmentation-needed (type 3, code 4) announcing next-hop MTU `mtu`, quoting the
/// IPv4 header and UDP header of a full-size (1480-byte, DF) datagram `from` -> `to`: what a
/// router on the path sends when that datagram is too big for its next link.
pub(crate) fn frag_needed(from: SocketAddrV4, to: SocketAddrV4, mtu: u16) -> Vec<u8> {
    let mut quoted = vec![0u8; 28];
    quoted[0] = 0x45;
    quoted[2..4].copy_from_slice(&1480u16.to_be_bytes());
    quoted[4..6].copy_from_slice(&0x5eedu16.to_be_bytes());
    quoted[6] = 0x40; // don't fragment
    quoted[8] = 64;
    quoted[9] = 17; // UDP
    quoted[12..16].copy_from_slice(&from.ip().octets());
    quoted[16..20].copy_from_slice(&to.ip().octets());
    let ip_sum = internet_checksum(&quoted[..20]);
    quoted[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    quoted[20..22].copy_from_slice(&from.port().to_be_bytes());
    quoted[22..24].copy_from_slice(&to.port().to_be_bytes());
    quoted[24..26].copy_from_slice(&1460u16.to_be_bytes());
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quoted);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// Sends `icmp` from `ns` to `victim` in an IPv4 packet claiming to come from `source` (which
/// need not be `ns`'s: a raw socket writes the header itself).
pub(crate) fn send_icmp(ns: &Netns, source: Ipv4Addr, victim: Ipv4Addr, icmp: &[u8]) {
    let mut packet = vec![0u8; 20];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    packet[8] = 64;
    packet[9] = 1; // ICMP
    packet[12..16].copy_from_slice(&source.octets());
    packet[16..20].copy_from_slice(&victim.octets());
    let sum = internet_checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(icmp);
    ns.run(|| {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("a raw IPv4 socket (the e2e tests run as root)");
        socket
            .set_header_included_v4(true)
            .expect("IP_HDRINCL on a raw socket");
        let to = SocketAddr::from((victim, 0));
        let sent = socket
            .send_to(&packet, &to.into())
            .expect("send the ICMP message");
        assert_eq!(sent, packet.len());
    });
}

/// Waits (up to 2 s: routes are programmed after the change is logged) until `ns` routes
/// `dest` through weft0 with MTU `mtu`.
fn assert_route_mtu(ns: &Netns, dest: IpAddr, mtu: u16) {
    let family = if dest.is_ipv4() { "-4" } else { "-6" };
    let dest = dest.to_string();
    let needle = format!(" mtu {mtu}");
    let mut last = String::new();
    let found = poll(Duration::from_secs(2), Duration::from_millis(50), || {
        last = ns.ip(&[family, "route", "show", &dest]);
        (last.contains("dev weft0") && last.contains(&needle)).then_some(())
    });
    assert!(
        found.is_some(),
        "the route to {dest} in {} does not carry mtu {mtu}: {last:?}",
        ns.name()
    );
}

/// The PMTU A reports toward B right now, failing with every change if it is not `pmtu`.
fn assert_reported(node_a: &Node<'_>, pmtu: u16, when: &str) {
    let log = node_a.log();
    assert_eq!(
        log.reported_pmtu(PEER_B),
        Some(pmtu),
        "{when}: A's reported PMTU toward B is not exactly {pmtu}; every change:\n{}",
        log.describe_changes(PEER_B)
    );
}

/// The body of the two 64 MiB scenarios: with or without the router's ICMP.
fn transfer_64mib_over_the_bottleneck(test: &str, icmp_dropped: bool) {
    let lab = Lab::new(test);
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    if icmp_dropped {
        net.drop_icmp_too_big();
    }
    let (node_a, node_b) = start_nodes(&lab, &net, |c| c);
    handshake_and_converge(&net, &node_a, BOTTLENECK);
    let (b4, b6) = overlay(2);
    assert_route_mtu(&net.a, b4.into(), BOTTLENECK - OVERHEAD_V4);
    assert_route_mtu(&net.a, b6.into(), BOTTLENECK - OVERHEAD_V4);

    let report = tcp_transfer(&net.a, &net.b, b4.into(), 5201, 64 * MIB, 0x5eed_1400);
    println!("{test}: TCP a -> b {}", report.summary());
    assert_eq!(report.received, report.sent, "bytes lost in the tunnel");
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
    assert_reported(&node_a, BOTTLENECK, "after the transfer");
    println!(
        "{test}: b -> a reported PMTU {:?}",
        node_b.log().reported_pmtu("a")
    );

    // The premise, checked last so the scenario's own traffic met the path untouched: full-size
    // packets really are too big, and the router does (or does not) say so.
    let oversized = net.df_ping_a_to_b(BOTTLENECK + 50);
    let expected = if icmp_dropped {
        DfPing::Silent
    } else {
        DfPing::TooBig
    };
    assert_eq!(
        oversized, expected,
        "the underlay is not what the scenario assumes"
    );
    assert_eq!(
        net.df_ping_a_to_b(BOTTLENECK),
        DfPing::Replied,
        "the underlay does not carry {BOTTLENECK}-byte packets"
    );
}

#[test]
fn a_64mib_transfer_crosses_an_icmp_black_hole_and_the_pmtu_is_exactly_1400() {
    transfer_64mib_over_the_bottleneck("pmtu-black-hole", true);
}

#[test]
fn with_icmp_allowed_a_64mib_transfer_completes_and_the_pmtu_is_exactly_1400() {
    transfer_64mib_over_the_bottleneck("pmtu-icmp", false);
}

/// Bytes of the decrease scenario's transfer.
const LONG_TRANSFER: usize = 256 * MIB;
/// Bytes that arrive before the bottleneck narrows.
const BEFORE_DECREASE: usize = 16 * MIB;

#[test]
fn a_pmtu_decrease_mid_transfer_is_followed_and_a_raise_is_found_again() {
    let lab = Lab::new("pmtu-decrease");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    net.drop_icmp_too_big();
    let (node_a, _node_b) = start_nodes(&lab, &net, |c| c);
    handshake_and_converge(&net, &node_a, BOTTLENECK);
    let log = node_a.log();
    let (b4, _) = overlay(2);

    let (report, (received_at_change, followed_during)) = tcp_transfer_while(
        &net.a,
        &net.b,
        b4.into(),
        5201,
        LONG_TRANSFER,
        0x5eed_1300,
        |progress| {
            let started = poll(Duration::from_secs(30), Duration::from_millis(5), || {
                (progress.received() >= BEFORE_DECREASE || progress.is_done()).then_some(())
            });
            assert!(started.is_some(), "the transfer did not get going");
            let received = progress.received();
            net.set_bottleneck_mtu(LOWERED);
            let changed = Instant::now();
            // From here, every full-size packet in flight vanishes until weft follows.
            let followed = poll(Duration::from_secs(60), Duration::from_millis(20), || {
                if log.reported_pmtu(PEER_B) == Some(LOWERED) {
                    Some(Some(changed.elapsed()))
                } else {
                    progress.is_done().then_some(None)
                }
            })
            .flatten();
            (received, followed)
        },
    );
    println!(
        "pmtu-decrease: bottleneck lowered to {LOWERED} after {} MiB; TCP a -> b {}; \
         PMTU followed during the transfer after {followed_during:?}",
        received_at_change / MIB,
        report.summary()
    );
    assert!(
        received_at_change + 32 * MIB < LONG_TRANSFER,
        "the bottleneck narrowed only near the end of the transfer ({received_at_change} bytes \
         in): the scenario proves nothing"
    );
    assert_eq!(report.received, report.sent, "bytes lost in the tunnel");
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
    log.wait_pmtu(PEER_B, LOWERED, Duration::from_secs(15));
    assert_route_mtu(&net.a, b4.into(), LOWERED - OVERHEAD_V4);

    // Raising is tried only while the edge carries traffic: keep a ping going.
    let _pinger = ping_in_background(&net.a, b4.into(), 10 * RAISE.as_secs() as u32 + 100);
    net.set_bottleneck_mtu(BOTTLENECK);
    let raised = Instant::now();
    log.wait_pmtu(PEER_B, BOTTLENECK, RAISE);
    println!(
        "pmtu-decrease: back to {BOTTLENECK} {:.1} s after the bottleneck widened",
        raised.elapsed().as_secs_f64()
    );
    assert_route_mtu(&net.a, b4.into(), BOTTLENECK - OVERHEAD_V4);
}

/// The kernel's cached path MTU toward `dest` in `ns` (`ip route get`), if it holds one.
pub(crate) fn cached_route_mtu(ns: &Netns, dest: &str) -> Option<u16> {
    let route = ns.ip(&["-4", "route", "get", dest]);
    let mut words = route.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

#[test]
fn with_icmp_a_pmtu_decrease_mid_transfer_is_followed_within_3s() {
    let lab = Lab::new("pmtu-icmp-decrease");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    let (node_a, _node_b) = start_nodes(&lab, &net, |c| c);
    handshake_and_converge(&net, &node_a, BOTTLENECK);
    let log = node_a.log();
    let (b4, _) = overlay(2);

    let (report, followed) = tcp_transfer_while(
        &net.a,
        &net.b,
        b4.into(),
        5201,
        LONG_TRANSFER,
        0x5eed_1c3f,
        |progress| {
            let started = poll(Duration::from_secs(30), Duration::from_millis(5), || {
                (progress.received() >= BEFORE_DECREASE || progress.is_done()).then_some(())
            });
            assert!(started.is_some(), "the transfer did not get going");
            net.set_bottleneck_mtu(LOWERED);
            let changed = Instant::now();
            poll(Duration::from_secs(10), Duration::from_millis(10), || {
                (log.reported_pmtu(PEER_B) == Some(LOWERED)).then(|| changed.elapsed())
            })
        },
    );
    println!(
        "pmtu-icmp-decrease: with the router's ICMP, {LOWERED} followed after {followed:?}; \
         TCP a -> b {}",
        report.summary()
    );
    // The premise: the router's fragmentation-needed reached A (its kernel cached the size).
    assert_eq!(
        cached_route_mtu(&net.a, RouterPath::B),
        Some(LOWERED),
        "no ICMP from the router reached A: the scenario proves nothing"
    );
    let followed = followed.unwrap_or_else(|| {
        panic!(
            "A never followed the decrease; every change:\n{}",
            log.describe_changes(PEER_B)
        )
    });
    assert!(
        followed < Duration::from_secs(3),
        "the decrease took {followed:?} to follow"
    );
    assert_eq!(report.received, report.sent, "bytes lost in the tunnel");
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
    assert_route_mtu(&net.a, b4.into(), LOWERED - OVERHEAD_V4);
}

#[test]
fn ten_percent_random_loss_on_the_router_still_converges_to_exactly_1400() {
    let lab = Lab::new("pmtu-loss");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    net.drop_icmp_too_big();
    net.random_loss(0.1);
    let (node_a, _node_b) = start_nodes(&lab, &net, |c| c);
    let (b4, _) = overlay(2);
    // Handshake messages get lost too: weft's retries must get one through.
    wait_reachable(&net.a, b4.into(), Duration::from_secs(20));
    let log = node_a.log();
    // Traffic keeps the edge active, so it re-validates (and could wrongly give up) its size.
    let pinger = ping_in_background(&net.a, b4.into(), 100);
    log.wait_pmtu(PEER_B, BOTTLENECK, Duration::from_secs(20));
    let stats = pinger.finish(Duration::from_secs(30));
    println!(
        "pmtu-loss: {} of {} pings answered",
        stats.received, stats.transmitted
    );
    // Each ping crosses the router twice: about 81 % come back.
    assert!(
        stats.received * 10 >= stats.transmitted * 6,
        "too few pings answered over 10 % loss: {stats:?}"
    );
    assert_reported(&node_a, BOTTLENECK, "after 10 s of pings over a lossy path");
}

#[test]
fn inner_ipv6_traffic_works_over_the_constrained_path() {
    let lab = Lab::new("pmtu-ipv6");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    net.drop_icmp_too_big();
    let (node_a, _node_b) = start_nodes(&lab, &net, |c| c);
    handshake_and_converge(&net, &node_a, BOTTLENECK);
    let (_, b6) = overlay(2);
    // IPv6 address setup on weft0 may still be under way.
    wait_reachable(&net.a, b6.into(), Duration::from_secs(10));
    assert_route_mtu(&net.a, b6.into(), BOTTLENECK - OVERHEAD_V4);

    let report = tcp_transfer(&net.a, &net.b, b6.into(), 5201, 16 * MIB, 0x5eed_0006);
    println!("pmtu-ipv6: TCP a -> b over IPv6 {}", report.summary());
    assert_eq!(report.received, report.sent, "bytes lost in the tunnel");
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
    assert_reported(&node_a, BOTTLENECK, "after the IPv6 transfer");
}

#[test]
fn ipv6_packets_of_1280_bytes_cross_a_path_below_the_ipv6_minimum() {
    let lab = Lab::new("pmtu-v6min");
    // A 1300-byte path leaves 1240 bytes of inner MTU: less than any IPv6 sender goes to.
    let net = RouterPath::new(&lab, "", LOWERED);
    net.drop_icmp_too_big();
    let (node_a, _node_b) = start_nodes(&lab, &net, |c| c);
    handshake_and_converge(&net, &node_a, LOWERED);
    let (_, b6) = overlay(2);
    wait_reachable(&net.a, b6.into(), Duration::from_secs(10));
    // 1232 bytes of ICMPv6 data make a 1280-byte IPv6 packet.
    let stats = ping_sized(&net.a, b6.into(), 10, 1232);
    println!(
        "pmtu-v6min: {}/{} 1280-byte IPv6 pings answered",
        stats.received, stats.transmitted
    );
    assert!(
        stats.received >= 8,
        "1280-byte IPv6 packets do not cross a 1300-byte path: {}/{}",
        stats.received,
        stats.transmitted
    );
    let report = tcp_transfer(&net.a, &net.b, b6.into(), 5201, 4 * MIB, 0x5eed_0007);
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
}

#[test]
fn with_discovery_off_a_large_transfer_stalls() {
    let lab = Lab::new("pmtu-off");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    net.drop_icmp_too_big();
    let (_node_a, _node_b) = start_nodes(&lab, &net, |c| c.pmtu_discovery(false));
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    let stats = ping(&net.a, b4.into(), 5);
    assert_eq!(
        stats.received, stats.transmitted,
        "small pings must still get through: {stats:?}"
    );

    let limits = Limits {
        stall: Duration::from_secs(5),
        deadline: Some(Duration::from_secs(15)),
    };
    let outcome = try_tcp_transfer(
        &net.a,
        &net.b,
        b4.into(),
        5201,
        8 * MIB,
        0x5eed_0ff0,
        limits,
    );
    match outcome {
        Ok(report) => panic!(
            "with discovery off, full-size tunnel packets (1480 bytes outer) should vanish in \
             the 1400-byte black hole, yet the transfer finished: {}",
            report.summary()
        ),
        Err(unfinished) => println!(
            "pmtu-off: the transfer stalled as it should after {} of {} bytes ({:.1} s): {}",
            unfinished.received,
            8 * MIB,
            unfinished.elapsed.as_secs_f64(),
            unfinished.reason
        ),
    }
}
