//! The basic tunnel between two nodes on one link: both overlay address families carry pings in
//! both directions, a 64 MiB TCP stream arrives bit for bit, and SIGTERM ends a node cleanly
//! (exit status 0, its TUN interface removed).

use crate::harness::{overlay, ping, tcp_transfer, wait_reachable, Lab, Node, OneLink, MIB};
use std::net::IpAddr;
use std::time::Duration;

#[test]
fn ping_both_ways_over_ipv4_and_ipv6_and_64mib_transfer_arrives_intact_and_sigterm_removes_weft0() {
    let lab = Lab::new("tunnel");
    let net = OneLink::new(&lab);
    let (config_a, config_b) = OneLink::configs(&lab);
    let mut node_a = Node::start(&lab, &net.a, &config_a);
    let mut node_b = Node::start(&lab, &net.b, &config_b);

    let (a4, a6) = overlay(1);
    let (b4, b6) = overlay(2);
    for (from, to) in [
        (&net.a, IpAddr::from(b4)),
        (&net.b, IpAddr::from(a4)),
        (&net.a, IpAddr::from(b6)),
        (&net.b, IpAddr::from(a6)),
    ] {
        // The first ping may wait on the handshake or on IPv6 address setup.
        wait_reachable(from, to, Duration::from_secs(10));
        let stats = ping(from, to, 5);
        println!(
            "ping {to} from {}: {}/5 replies",
            from.name(),
            stats.received
        );
        assert_eq!(
            stats.received,
            stats.transmitted,
            "ping {to} from {} lost replies: {stats:?}",
            from.name()
        );
    }

    let report = tcp_transfer(&net.a, &net.b, b4.into(), 5201, 64 * MIB, 0x5eed_0001);
    println!("tunnel: TCP a -> b {}", report.summary());
    assert_eq!(report.received, report.sent, "bytes lost in the tunnel");
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );

    for (node, ns) in [(&mut node_a, &net.a), (&mut node_b, &net.b)] {
        let status = node.stop();
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            node.name()
        );
        assert!(
            ns.try_ip(&["link", "show", "dev", "weft0"]).is_err(),
            "node {} left weft0 behind after exiting",
            node.name()
        );
    }
}
