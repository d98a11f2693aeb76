//! The basic tunnel between two nodes on one link: both overlay address families carry pings in
//! both directions, a 64 MiB TCP stream arrives bit for bit, and SIGTERM ends a node cleanly
//! (exit status 0, its TUN interface removed). And the TUN interface removed under a running
//! node (`ip link del weft0`): the node creates it again with its addresses, MTU and routes and
//! traffic resumes, or, when it cannot (the name was taken by another link), it exits with a
//! failure status for its supervisor to restart it.

use crate::harness::{
    cpu_ticks, overlay, ping, ping_in_background, poll, tcp_transfer, wait_reachable, weft_bin,
    Lab, Netns, Node, OneLink, MIB,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Whether weft0 in `ns` is up and carries `needle` (an address with its `/`).
fn weft0_has(ns: &Netns, needle: &str) -> bool {
    ns.try_ip(&["-o", "addr", "show", "dev", "weft0"])
        .is_ok_and(|addrs| addrs.contains(needle))
}

/// `weft status` for the node of `config`: whether it answered, and how long it took.
fn status_answers(config: &Path) -> (bool, Duration) {
    let started = Instant::now();
    let out = Command::new(weft_bin())
        .args(["status", "--config"])
        .arg(config)
        .output()
        .expect("run weft status");
    (out.status.success(), started.elapsed())
}

/// The node's CPU use over `window`, in percent of one core.
fn cpu_percent(pid: u32, window: Duration) -> f64 {
    let pid = Pid::from_raw(pid as i32);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    let used = cpu_ticks(pid).saturating_sub(before) as f64 / hz;
    100.0 * used / window.as_secs_f64()
}

#[test]
fn weft0_deleted_under_a_running_node_is_created_again_with_its_addresses_and_routes_and_pings_resume(
) {
    let lab = Lab::new("tun-gone");
    let net = OneLink::new(&lab);
    let (config_a, config_b) = OneLink::configs(&lab);
    let node_a = Node::start(&lab, &net.a, &config_a);
    let _node_b = Node::start(&lab, &net.b, &config_b);
    let (a4, a6) = overlay(1);
    let (b4, b6) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    // The route weft programs for b's allowed IPs, which goes with the interface.
    let route_to_b = || net.a.ip(&["route", "show", &format!("{b4}/32")]);
    assert!(
        route_to_b().contains("dev weft0"),
        "no route to b: {}",
        route_to_b()
    );
    let mtu_before = net.a.ip(&["-o", "link", "show", "dev", "weft0"]);

    // 150 pings over 15 s; weft0 goes away 3 s in.
    let pings = ping_in_background(&net.a, b4.into(), 150);
    std::thread::sleep(Duration::from_secs(3));
    let deleted = Instant::now();
    net.a.ip(&["link", "del", "weft0"]);
    let back = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        weft0_has(&net.a, &format!("inet {a4}/24")).then(|| deleted.elapsed())
    });
    let cpu = cpu_percent(node_a.pid(), Duration::from_secs(3));
    let (answered, took) = status_answers(&lab.dir().join("a.toml"));
    let routed = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        route_to_b().contains("dev weft0").then_some(())
    });
    let v6_back = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        weft0_has(&net.a, &format!("inet6 {a6}/64")).then_some(())
    });
    let stats = pings.finish(Duration::from_secs(20));
    let after: Vec<u32> = stats.replied.iter().copied().filter(|&s| s > 60).collect();
    println!(
        "weft0 deleted: back with its address after {back:?}; node CPU {cpu:.1} % over 3 s; \
         weft status answered {answered} in {took:?}; pings {}/{} answered, {} of seq 61-150",
        stats.received,
        stats.transmitted,
        after.len()
    );

    let log = node_a.log().text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("TUN interface removed")),
        "the node logged no ERROR about the removed interface"
    );
    assert!(
        back.is_some(),
        "weft0 did not come back with {a4} within 5 s"
    );
    assert!(
        cpu < 20.0,
        "the node used {cpu:.1} % CPU after weft0 was deleted"
    );
    assert!(
        answered,
        "weft status did not answer after weft0 was deleted"
    );
    assert!(routed.is_some(), "the route to b was not programmed again");
    assert!(v6_back.is_some(), "weft0 came back without {a6}");
    assert_eq!(
        net.a
            .ip(&["-o", "link", "show", "dev", "weft0"])
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1),
        mtu_before
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1),
        "weft0 came back with another MTU"
    );
    assert!(
        after.len() >= 80,
        "pings did not resume: {} of seq 61-150 answered",
        after.len()
    );
    for (from, to) in [(&net.a, IpAddr::from(b6)), (&net.b, IpAddr::from(a4))] {
        wait_reachable(from, to, Duration::from_secs(10));
        let stats = ping(from, to, 5);
        assert_eq!(
            stats.received, 5,
            "ping {to} after weft0 came back: {stats:?}"
        );
    }
}

#[test]
fn weft0_that_cannot_be_created_again_ends_the_node_with_a_failure_status_within_seconds() {
    let lab = Lab::new("tun-taken");
    let net = OneLink::new(&lab);
    let (config_a, _) = OneLink::configs(&lab);
    let mut node_a = Node::start(&lab, &net.a, &config_a);
    let pid = Pid::from_raw(node_a.pid() as i32);
    // Stopped, the node cannot create weft0 again before another link takes its name: the
    // order is the same in every run.
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the node");
    net.a.ip(&["link", "del", "weft0"]);
    net.a.ip(&[
        "link",
        "add",
        "weft0",
        "type",
        "veth",
        "peer",
        "name",
        "weft0-peer",
    ]);
    let resumed = Instant::now();
    kill(pid, Signal::SIGCONT).expect("SIGCONT the node");
    let exited = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        (!node_a.is_running()).then(|| resumed.elapsed())
    });
    let status = node_a.kill();
    println!("weft0 taken by a veth link: node exited after {exited:?} with {status}");
    assert!(
        exited.is_some_and(|t| t < Duration::from_secs(5)),
        "the node did not exit within 5 s of finding weft0 gone and its name taken ({exited:?})"
    );
    assert!(!status.success(), "the node exited with {status}");
    let log = node_a.log().text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("TUN interface removed")),
        "the node logged no ERROR about the removed interface"
    );
    assert!(
        log.contains("cannot be created again"),
        "the node did not say why it exited"
    );
}

/// `Tcp: OutSegs` and `RetransSegs` of namespace `ns` (`/proc/net/snmp` is per namespace).
fn tcp_segments(ns: &Netns) -> (u64, u64) {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"]);
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
    let field = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or_else(|| panic!("no Tcp {name} in /proc/net/snmp:\n{snmp}"))
    };
    (field("OutSegs"), field("RetransSegs"))
}

#[test]
fn a_tcp_stream_of_500_byte_segments_crosses_the_tunnel_without_segments_lost_in_the_node() {
    let lab = Lab::new("small-mss");
    let net = OneLink::new(&lab);
    let (config_a, config_b) = OneLink::configs(&lab);
    let _node_a = Node::start(&lab, &net.a, &config_a);
    let _node_b = Node::start(&lab, &net.b, &config_b);
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    // b announces an MSS of 500, so a sends 500-byte segments: an inner MTU near 516, where
    // one 64 KiB super-packet from a's TUN device splits into ~130 segments.
    net.b.exec(&[
        "iptables",
        "-t",
        "mangle",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "--tcp-flags",
        "SYN,RST",
        "SYN",
        "-j",
        "TCPMSS",
        "--set-mss",
        "500",
    ]);
    let (out_before, retrans_before) = tcp_segments(&net.a);
    let report = tcp_transfer(&net.a, &net.b, b4.into(), 5202, 32 * MIB, 0x5eed_0500);
    let (out_after, retrans_after) = tcp_segments(&net.a);
    let (out, retrans) = (out_after - out_before, retrans_after - retrans_before);
    println!(
        "MSS 500: TCP a -> b {}; {retrans} of {out} segments retransmitted",
        report.summary()
    );
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
    // The link loses nothing: every retransmission is a segment the tunnel lost.
    assert!(
        retrans * 1000 <= out,
        "{retrans} of {out} segments were retransmitted (more than 0.1 %)"
    );
}
