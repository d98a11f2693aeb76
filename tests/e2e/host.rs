//! Hosts as they are: members on hosts that switched IPv6 off (`net.ipv6.conf.all.disable_ipv6=1`
//! and `net.ipv6.conf.default.disable_ipv6=1`, as hardened images do), set in their own
//! namespaces before any link exists. The mesh is built the way an operator builds one (`weft
//! init`, `weft invite` through the running daemon, `weft join`); the members without IPv6 run
//! IPv4-only, say so in exactly one WARN line, carry inner IPv4 to and from every member (also
//! one whose host has IPv6) and answer `weft status`.
//!
//! The underlay is one switch: a namespace holding bridge `br0`, member `i` at 192.0.2.(i+1)/24.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{ping, wait_reachable, Lab, Netns, Node};
use crate::mesh::{addresses, init_alpha, invite, v4, weft};

/// The sysctls a hardened image sets to switch IPv6 off.
const IPV6_OFF: [&str; 2] = [
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
];

/// Runs `argv`, failing the test if it fails.
fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Members on one switch, each in its namespace; `ipv6[i]` false switches IPv6 off in member
/// `i`'s namespace before its link exists.
struct Switch {
    /// Dropped last (fields drop in order): the members' links end in it.
    members: Vec<Netns>,
    _switch: Netns,
}

impl Switch {
    fn new(lab: &Lab, ipv6: &[bool]) -> Switch {
        let switch = lab.netns("sw");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut members = Vec::new();
        for (i, has_ipv6) in ipv6.iter().enumerate() {
            let member = lab.netns(&format!("m{i}"));
            if !has_ipv6 {
                member.sysctl(&IPV6_OFF);
            }
            let port = format!("p{i}");
            // Created inside the two namespaces, so the pair never exists in the root one.
            run(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                member.name(),
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                switch.name(),
            ]);
            switch.ip(&["link", "set", &port, "master", "br0"]);
            switch.ip(&["link", "set", &port, "up"]);
            member.ip(&[
                "addr",
                "add",
                &format!("192.0.2.{}/24", i + 1),
                "dev",
                "eth0",
            ]);
            member.ip(&["link", "set", "eth0", "up"]);
            members.push(member);
        }
        Switch {
            members,
            _switch: switch,
        }
    }
}

/// `weft join TOKEN --dir DIR` in `ns`; the config it wrote.
fn join(ns: &Netns, token: &str, dir: &Path) -> PathBuf {
    let (ok, out, err) = weft(ns, &["join", token, "--dir", dir.to_str().unwrap()]);
    assert!(ok, "weft join failed: {err}");
    println!("host: {out}");
    dir.join("weft.toml")
}

/// The WARN lines of a node's log that speak of IPv6.
fn ipv6_warnings(node: &Node<'_>) -> Vec<String> {
    node.log()
        .text()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.to_lowercase().contains("ipv6"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn members_on_hosts_with_ipv6_disabled_run_ipv4_only_with_one_warning_and_carry_ipv4_both_ways() {
    let lab = Lab::new("host-ipv6-off");
    // alpha and beta: IPv6 switched off; gamma: a host with IPv6, in the same mesh.
    let net = Switch::new(&lab, &[false, false, true]);
    let (alpha_ns, beta_ns, gamma_ns) = (&net.members[0], &net.members[1], &net.members[2]);

    let a_dir = lab.dir().join("alpha");
    let created = init_alpha(alpha_ns, &a_dir);
    println!("host: {created}");
    let a_config = a_dir.join("weft.toml");
    let (a4, _) = addresses(&a_config);
    let alpha = Node::start_file(&lab, alpha_ns, "alpha", &a_config, v4(a4));

    let b_config = join(
        beta_ns,
        &invite(alpha_ns, &a_config, "beta", "1h"),
        &lab.dir().join("beta"),
    );
    let g_config = join(
        gamma_ns,
        &invite(alpha_ns, &a_config, "gamma", "1h"),
        &lab.dir().join("gamma"),
    );
    let (b4, _) = addresses(&b_config);
    let (g4, g6) = addresses(&g_config);
    let beta = Node::start_file(&lab, beta_ns, "beta", &b_config, v4(b4));
    let gamma = Node::start_file(&lab, gamma_ns, "gamma", &g_config, v4(g4));

    let members: [(&str, &Netns, IpAddr); 3] = [
        ("alpha", alpha_ns, a4),
        ("beta", beta_ns, b4),
        ("gamma", gamma_ns, g4),
    ];
    let mut lost = 0;
    for (from, from_ns, _) in members {
        for (to, _, to_ip) in members {
            if from == to {
                continue;
            }
            wait_reachable(from_ns, to_ip, Duration::from_secs(15));
            let received = ping(from_ns, to_ip, 5).received;
            println!("host: {from} -> {to} over the IPv4 overlay: {received}/5 replies");
            lost += 5 - received;
        }
    }
    assert_eq!(lost, 0, "pings lost over the IPv4 overlay");

    for (node, ns) in [(&alpha, alpha_ns), (&beta, beta_ns)] {
        let warnings = ipv6_warnings(node);
        assert_eq!(warnings.len(), 1, "one WARN line about IPv6: {warnings:#?}");
        let line = &warnings[0];
        assert!(
            line.contains("IPv6 is disabled on this host")
                && line.contains("IPv4-only")
                && line.contains("IPv6 overlay address")
                && line.contains("IPv6 routes")
                && line.contains("IPv6 listeners"),
            "{line}"
        );
        let addrs = ns.ip(&["-o", "addr", "show", "dev", "weft0"]);
        assert!(
            !addrs.contains("inet6"),
            "an IPv6 address on weft0: {addrs}"
        );
        let v6_sockets =
            String::from_utf8_lossy(&ns.exec_output(&["ss", "-H", "-lnut6"]).stdout).into_owned();
        assert!(
            !v6_sockets.contains(":5182"),
            "an IPv6 listener on a host without IPv6:\n{v6_sockets}"
        );
    }
    assert_eq!(
        ipv6_warnings(&gamma),
        Vec::<String>::new(),
        "a host with IPv6 has nothing to warn about"
    );
    let g_addrs = gamma_ns.ip(&["-o", "addr", "show", "dev", "weft0"]);
    assert!(
        g_addrs.contains(&format!("inet6 {g6}/")),
        "the member with IPv6 keeps its IPv6 overlay address: {g_addrs}"
    );

    assert!(
        created.contains("IPv6 is disabled on this host") && created.contains("IPv4-only"),
        "weft init does not say the node will run IPv4-only:\n{created}"
    );
    for ((name, ns, _), config) in members.iter().zip([&a_config, &b_config, &g_config]) {
        let (ok, status, err) = weft(ns, &["status", "--config", config.to_str().unwrap()]);
        assert!(ok, "weft status on {name} failed: {err}");
        for (other, _, _) in members.iter().filter(|(other, _, _)| other != name) {
            assert!(
                status.contains(other),
                "{name}'s status does not list {other}:\n{status}"
            );
        }
        println!("host: weft status on {name}:\n{status}");
    }
}
