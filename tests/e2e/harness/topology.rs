//! The underlay networks the scenarios run on, built from namespaces and veth links, and the
//! overlay address plan. Underlay addresses come only from the documentation ranges
//! 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24; overlay ones from 100.64.0.0/10 and
//! fd00::/8. No namespace here gets a default route, so nothing can be routed anywhere else.

use super::netns::veth;
use super::{cmd, Keypair, Lab, Netns, NodeConfig, PeerConfig, DEFAULT_PORT};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Overlay addresses of host number `host`: 100.64.0.HOST and fd00:77::HOST.
pub fn overlay(host: u8) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::new(100, 64, 0, host),
        Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, u16::from(host)),
    )
}

/// Two namespaces `a` (192.0.2.1/24) and `b` (192.0.2.2/24) on one veth link, `eth0` in both.
#[derive(Debug)]
pub struct OneLink {
    pub a: Netns,
    pub b: Netns,
}

impl OneLink {
    pub const A: &str = "192.0.2.1";
    pub const B: &str = "192.0.2.2";

    pub fn new(lab: &Lab) -> OneLink {
        let a = lab.netns("a");
        let b = lab.netns("b");
        veth(&a, "eth0", &b, "eth0");
        a.ip(&["addr", "add", &format!("{}/24", Self::A), "dev", "eth0"]);
        b.ip(&["addr", "add", &format!("{}/24", Self::B), "dev", "eth0"]);
        OneLink { a, b }
    }

    /// Key pairs and configs of nodes `a` (overlay host 1) and `b` (host 2), each with the
    /// other as its one peer at its address on this link.
    pub fn configs(lab: &Lab) -> (NodeConfig, NodeConfig) {
        let (key_a, key_b) = (Keypair::generate(lab, "a"), Keypair::generate(lab, "b"));
        let a = NodeConfig::new("a", &key_a, 1)
            .peer(PeerConfig::new("b", &key_b, 2).endpoint(format!("{}:{DEFAULT_PORT}", Self::B)));
        let b = NodeConfig::new("b", &key_b, 2)
            .peer(PeerConfig::new("a", &key_a, 1).endpoint(format!("{}:{DEFAULT_PORT}", Self::A)));
        (a, b)
    }
}

/// `a` behind a masquerading router `router`, `b` on the router's public side:
///
/// ```text
/// a 198.51.100.2 ── 198.51.100.1 router 203.0.113.1 ── 203.0.113.2 b
/// ```
///
/// `a` routes only 203.0.113.0/24 via the router; `b` has no route to 198.51.100.0/24, so it
/// can reach `a` only through a NAT mapping that `a`'s own traffic created.
#[derive(Debug)]
pub struct NatSetup {
    pub a: Netns,
    pub router: Netns,
    pub b: Netns,
}

impl NatSetup {
    pub const A: &str = "198.51.100.2";
    pub const ROUTER_INSIDE: &str = "198.51.100.1";
    pub const ROUTER_PUBLIC: &str = "203.0.113.1";
    pub const B: &str = "203.0.113.2";

    /// Builds the three namespaces (roles `{tag}a`, `{tag}r`, `{tag}b`) with UDP conntrack
    /// entries on the router expiring after `udp_timeout_secs` of silence.
    pub fn new(lab: &Lab, tag: &str, udp_timeout_secs: u32) -> NatSetup {
        let a = lab.netns(&format!("{tag}a"));
        let router = lab.netns(&format!("{tag}r"));
        let b = lab.netns(&format!("{tag}b"));
        veth(&a, "eth0", &router, "eth0");
        veth(&router, "eth1", &b, "eth0");
        a.ip(&["addr", "add", &format!("{}/24", Self::A), "dev", "eth0"]);
        router.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::ROUTER_INSIDE),
            "dev",
            "eth0",
        ]);
        router.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::ROUTER_PUBLIC),
            "dev",
            "eth1",
        ]);
        b.ip(&["addr", "add", &format!("{}/24", Self::B), "dev", "eth0"]);
        a.ip(&["route", "add", "203.0.113.0/24", "via", Self::ROUTER_INSIDE]);

        router.sysctl(&["net.ipv4.ip_forward=1"]);
        router.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "eth1",
            "-j",
            "MASQUERADE",
        ]);
        forget_udp_after(&router, udp_timeout_secs);
        NatSetup { a, router, b }
    }

    /// Makes the router forget every tracked flow (`conntrack -F`): every NAT mapping is lost.
    pub fn flush_conntrack(&self) {
        self.router.exec(&["conntrack", "-F"]);
    }

    /// How many UDP flows the router's connection tracking currently holds.
    pub fn udp_mappings(&self) -> usize {
        let out = self.router.exec_output(&["conntrack", "-L", "-p", "udp"]);
        assert!(
            out.status.success(),
            "conntrack -L failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

/// The MASQUERADE rule pulls in connection tracking; where it is a module that did not load,
/// load it, and fail clearly if the router still has no conntrack sysctls.
/// Makes `router` track connections and forget a UDP flow, answered or not, after `secs` of
/// silence.
fn forget_udp_after(router: &Netns, secs: u32) {
    ensure_conntrack(router);
    router.sysctl(&[
        &format!("net.netfilter.nf_conntrack_udp_timeout={secs}"),
        &format!("net.netfilter.nf_conntrack_udp_timeout_stream={secs}"),
    ]);
}

pub(super) fn ensure_conntrack(router: &Netns) {
    let present = |ns: &Netns| {
        ns.exec_output(&[
            "test",
            "-e",
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
        ])
        .status
        .success()
    };
    if present(router) {
        return;
    }
    let _ = cmd::try_run(&["modprobe", "nf_conntrack"]);
    assert!(
        present(router),
        "connection tracking is unavailable in namespace {} even after `modprobe nf_conntrack`: \
         the kernel needs nf_conntrack and iptable_nat (or nft nat) for the NAT scenario",
        router.name()
    );
}

/// `a` and `b` on different subnets with a forwarding router between them, the router–`b` link
/// (both of its veth ends) narrower than the rest:
///
/// ```text
/// a 198.51.100.1 ── 198.51.100.254 router 203.0.113.254 ── 203.0.113.2 b
///      eth0, 1500          eth0          eth1, bottleneck     eth0, bottleneck
/// ```
///
/// Each end host routes only the other's subnet via the router. No NAT: the router forwards,
/// and unless told to drop them, sends ICMP fragmentation-needed for oversized DF packets.
#[derive(Debug)]
pub struct RouterPath {
    pub a: Netns,
    pub router: Netns,
    pub b: Netns,
}

impl RouterPath {
    pub const A: &str = "198.51.100.1";
    pub const ROUTER_A: &str = "198.51.100.254";
    pub const ROUTER_B: &str = "203.0.113.254";
    pub const B: &str = "203.0.113.2";
    /// The router's end of the bottleneck link.
    pub const ROUTER_BOTTLENECK_IF: &str = "eth1";
    /// `b`'s end of the bottleneck link.
    pub const B_IF: &str = "eth0";

    /// Builds the three namespaces (roles `{tag}a`, `{tag}r`, `{tag}b`) with a router–`b` link
    /// of MTU `bottleneck_mtu`.
    pub fn new(lab: &Lab, tag: &str, bottleneck_mtu: u16) -> RouterPath {
        let a = lab.netns(&format!("{tag}a"));
        let router = lab.netns(&format!("{tag}r"));
        let b = lab.netns(&format!("{tag}b"));
        veth(&a, "eth0", &router, "eth0");
        veth(&router, Self::ROUTER_BOTTLENECK_IF, &b, Self::B_IF);
        let addr = |ns: &Netns, addr: &str, dev: &str| {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
        };
        addr(&a, Self::A, "eth0");
        addr(&router, Self::ROUTER_A, "eth0");
        addr(&router, Self::ROUTER_B, Self::ROUTER_BOTTLENECK_IF);
        addr(&b, Self::B, Self::B_IF);
        a.ip(&["route", "add", "203.0.113.0/24", "via", Self::ROUTER_A]);
        b.ip(&["route", "add", "198.51.100.0/24", "via", Self::ROUTER_B]);
        router.sysctl(&["net.ipv4.ip_forward=1"]);
        let net = RouterPath { a, router, b };
        net.set_bottleneck_mtu(bottleneck_mtu);
        net
    }

    /// Sets the MTU of both ends of the router–`b` link (also while traffic flows).
    pub fn set_bottleneck_mtu(&self, mtu: u16) {
        let mtu = mtu.to_string();
        self.router.ip(&[
            "link",
            "set",
            "dev",
            Self::ROUTER_BOTTLENECK_IF,
            "mtu",
            &mtu,
        ]);
        self.b.ip(&["link", "set", "dev", Self::B_IF, "mtu", &mtu]);
    }

    /// Makes the bottleneck an ICMP black hole: the router silently drops every
    /// fragmentation-needed (and IPv6 packet-too-big) it would send, so oversized packets
    /// vanish without a word to their sender.
    pub fn drop_icmp_too_big(&self) {
        self.router.exec(&[
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "fragmentation-needed",
            "-j",
            "DROP",
        ]);
        self.router.exec(&[
            "ip6tables",
            "-A",
            "OUTPUT",
            "-p",
            "icmpv6",
            "--icmpv6-type",
            "packet-too-big",
            "-j",
            "DROP",
        ]);
    }

    /// Makes the router drop each packet it forwards, either way, with `probability`.
    pub fn random_loss(&self, probability: f64) {
        self.router.exec(&[
            "iptables",
            "-A",
            "FORWARD",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability.to_string(),
            "-j",
            "DROP",
        ]);
    }

    /// Sends two don't-fragment pings of `packet_size` bytes (whole IPv4 packets) from `a` to
    /// `b`'s underlay address and says what came of them, to check the premise of a scenario.
    pub fn df_ping_a_to_b(&self, packet_size: u16) -> DfPing {
        let payload = (packet_size - 28).to_string();
        let out = self.a.exec_output(&[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &payload,
            Self::B,
        ]);
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        if text.contains(" bytes from ") {
            DfPing::Replied
        } else if text.contains("Frag needed") || text.contains("message too long") {
            DfPing::TooBig
        } else {
            DfPing::Silent
        }
    }
}

/// What became of a don't-fragment ping across a [`RouterPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DfPing {
    /// It got through and was answered.
    Replied,
    /// A fragmentation-needed came back (or the kernel already knew the path MTU).
    TooBig,
    /// Nothing came back at all: a black hole.
    Silent,
}

/// `n` hosts (`n` ≤ 14), each on its own /28 of 192.0.2.0/24, routed through one router:
///
/// ```text
/// host i: 192.0.2.(16·(i+1)+2)/28, default via 192.0.2.(16·(i+1)+1) = the router
/// ```
///
/// A routed underlay: hosts reach each other only through the router, as servers in different
/// racks or sites do.
#[derive(Debug)]
pub struct RoutedHosts {
    /// Kept so the router's namespace lives as long as the hosts'.
    _router: Netns,
    pub hosts: Vec<Netns>,
}

impl RoutedHosts {
    /// Host `i`'s underlay address.
    pub fn address(i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(192, 0, 2, (16 * (i + 1) + 2) as u8)
    }

    /// A second address in host `i`'s subnet, for moving it.
    pub fn other_address(i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(192, 0, 2, (16 * (i + 1) + 9) as u8)
    }

    fn gateway(i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(192, 0, 2, (16 * (i + 1) + 1) as u8)
    }

    pub fn new(lab: &Lab, tag: &str, n: usize) -> RoutedHosts {
        assert!(n <= 14, "at most 14 hosts");
        let router = lab.netns(&format!("{tag}r"));
        router.sysctl(&["net.ipv4.ip_forward=1"]);
        let mut hosts = Vec::with_capacity(n);
        for i in 0..n {
            let host = lab.netns(&format!("{tag}{i}"));
            let router_if = format!("eth{i}");
            veth(&router, &router_if, &host, "eth0");
            router.ip(&[
                "addr",
                "add",
                &format!("{}/28", Self::gateway(i)),
                "dev",
                &router_if,
            ]);
            host.ip(&[
                "addr",
                "add",
                &format!("{}/28", Self::address(i)),
                "dev",
                "eth0",
            ]);
            host.ip(&[
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                &Self::gateway(i).to_string(),
            ]);
            hosts.push(host);
        }
        RoutedHosts {
            _router: router,
            hosts,
        }
    }

    /// Gives host `i`'s link an MTU of `mtu` at both ends and makes the router drop the ICMP
    /// "fragmentation needed" it would send: a black hole in front of host `i`.
    pub fn narrow(&self, i: usize, mtu: u16) {
        let mtu = mtu.to_string();
        self._router
            .ip(&["link", "set", "dev", &format!("eth{i}"), "mtu", &mtu]);
        self.hosts[i].ip(&["link", "set", "dev", "eth0", "mtu", &mtu]);
        self._router.exec(&[
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "fragmentation-needed",
            "-j",
            "DROP",
        ]);
    }

    /// Puts `hosts` behind one masquerading NAT toward host `toward`: what they send there
    /// leaves from the router's address on `toward`'s subnet, nothing from there reaches them
    /// unless they opened the flow, and the router forgets a silent UDP flow after
    /// `udp_timeout_secs`.
    pub fn masquerade(&self, hosts: &[usize], toward: usize, udp_timeout_secs: u32) {
        let public = Self::gateway(toward).to_string();
        let out_if = format!("eth{toward}");
        for &i in hosts {
            let subnet = format!("{}/28", Self::gateway(i));
            self._router.exec(&[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                &subnet,
                "-o",
                &out_if,
                "-j",
                "SNAT",
                "--to-source",
                &public,
            ]);
            // As a real NAT: nothing from `toward` reaches the hosts behind it unless
            // their own traffic opened the flow.
            self._router.exec(&[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                &out_if,
                "-o",
                &format!("eth{i}"),
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "DROP",
            ]);
        }
        forget_udp_after(&self._router, udp_timeout_secs);
    }

    /// Moves host `i` to its other address (the old one is removed).
    pub fn move_host(&self, i: usize) {
        let host = &self.hosts[i];
        // Without this, deleting the primary address also deletes the new secondary one.
        host.sysctl(&["net.ipv4.conf.eth0.promote_secondaries=1"]);
        host.ip(&[
            "addr",
            "add",
            &format!("{}/28", Self::other_address(i)),
            "dev",
            "eth0",
        ]);
        host.ip(&[
            "addr",
            "del",
            &format!("{}/28", Self::address(i)),
            "dev",
            "eth0",
        ]);
        // The route through the router went with the old address's subnet route only if it
        // was the last one; put it back to be sure.
        let _ = host.try_ip(&[
            "route",
            "replace",
            "192.0.2.0/24",
            "via",
            &Self::gateway(i).to_string(),
        ]);
    }
}
