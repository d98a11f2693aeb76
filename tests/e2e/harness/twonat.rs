//! Two members behind two different NAT routers and a public member, joined by an "internet"
//! router that forwards between three public subnets:
//!
//! ```text
//! a 198.51.100.2 ── .1 nat_a 203.0.113.18 ── .17 ┐
//! c 198.51.100.18 ── .17 nat_c 203.0.113.34 ── .33 ├ inet
//! r 203.0.113.2 ──────────────────────── .1 ┘
//! ```
//!
//! Each NAT masquerades what leaves its public side, plainly (ports kept where free: an
//! endpoint-independent mapping) or with `--random-fully` (a new random port per destination).
//! Either filters: a packet from outside passes only as the reply to a flow the inside opened;
//! like a home router's firewall, each drops unsolicited UDP to itself on its public side, so
//! such a packet leaves no connection-tracking entry that would claim the port.
//! The inside hosts route only 203.0.113.0/24; nothing has a default route. Counting rules
//! (iptables, each tagged with a comment) measure what crossed where.

use super::netns::veth;
use super::topology::ensure_conntrack;
use super::{Lab, Netns};

/// How a NAT router picks the public port of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Plain MASQUERADE: the inside port is kept when free, the same for every destination.
    EndpointIndependent,
    /// MASQUERADE --random-fully: a random port for each new flow.
    RandomPerDestination,
}

/// The topology above.
#[derive(Debug)]
pub struct TwoNat {
    pub a: Netns,
    pub nat_a: Netns,
    pub c: Netns,
    pub nat_c: Netns,
    pub r: Netns,
    /// Kept so the internet router lives as long as the rest.
    _inet: Netns,
}

impl TwoNat {
    pub const A: &str = "198.51.100.2";
    pub const C: &str = "198.51.100.18";
    pub const R: &str = "203.0.113.2";
    pub const NAT_A: &str = "203.0.113.18";
    pub const NAT_C: &str = "203.0.113.34";

    /// Builds the six namespaces (roles `{tag}a`, `{tag}na`, `{tag}c`, `{tag}nc`, `{tag}r`,
    /// `{tag}i`) with the given mapping behaviour on each NAT.
    pub fn new(lab: &Lab, tag: &str, at_a: Mapping, at_c: Mapping) -> TwoNat {
        let ns = |role: &str| lab.netns(&format!("{tag}{role}"));
        let (a, nat_a, c, nat_c, r, inet) =
            (ns("a"), ns("na"), ns("c"), ns("nc"), ns("r"), ns("i"));
        veth(&inet, "eth0", &r, "eth0");
        veth(&inet, "eth1", &nat_a, "eth1");
        veth(&inet, "eth2", &nat_c, "eth1");
        veth(&nat_a, "eth0", &a, "eth0");
        veth(&nat_c, "eth0", &c, "eth0");
        let addr = |n: &Netns, a: &str, dev: &str| {
            n.ip(&["addr", "add", a, "dev", dev]);
        };
        addr(&inet, "203.0.113.1/28", "eth0");
        addr(&inet, "203.0.113.17/28", "eth1");
        addr(&inet, "203.0.113.33/28", "eth2");
        addr(&r, &format!("{}/28", Self::R), "eth0");
        addr(&nat_a, &format!("{}/28", Self::NAT_A), "eth1");
        addr(&nat_c, &format!("{}/28", Self::NAT_C), "eth1");
        addr(&nat_a, "198.51.100.1/28", "eth0");
        addr(&nat_c, "198.51.100.17/28", "eth0");
        addr(&a, &format!("{}/28", Self::A), "eth0");
        addr(&c, &format!("{}/28", Self::C), "eth0");
        r.ip(&["route", "add", "203.0.113.0/24", "via", "203.0.113.1"]);
        nat_a.ip(&["route", "add", "203.0.113.0/24", "via", "203.0.113.17"]);
        nat_c.ip(&["route", "add", "203.0.113.0/24", "via", "203.0.113.33"]);
        a.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.1"]);
        c.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.17"]);
        inet.sysctl(&["net.ipv4.ip_forward=1"]);
        for (nat, mapping, peer_nat) in [(&nat_a, at_a, Self::NAT_C), (&nat_c, at_c, Self::NAT_A)] {
            nat.sysctl(&["net.ipv4.ip_forward=1"]);
            let mut rule = vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth1",
                "-j",
                "MASQUERADE",
            ];
            if mapping == Mapping::RandomPerDestination {
                rule.push("--random-fully");
            }
            nat.exec(&rule);
            ensure_conntrack(nat);
            nat.exec(&[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                "eth1",
                "-p",
                "udp",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "DROP",
            ]);
            // Datagrams from the other NAT that this one let in to its member: direct traffic.
            nat.exec(&[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "eth1",
                "-o",
                "eth0",
                "-s",
                peer_nat,
                "-p",
                "udp",
                "-m",
                "comment",
                "--comment",
                "direct-in",
            ]);
        }
        // What the public member receives from and sends to each NAT on the data-plane port.
        for (nat, tag) in [(Self::NAT_A, "a"), (Self::NAT_C, "c")] {
            r.exec(&[
                "iptables",
                "-A",
                "INPUT",
                "-s",
                nat,
                "-p",
                "udp",
                "--dport",
                "51820",
                "-m",
                "comment",
                "--comment",
                &format!("from-{tag}"),
            ]);
            r.exec(&[
                "iptables",
                "-A",
                "OUTPUT",
                "-d",
                nat,
                "-p",
                "udp",
                "--sport",
                "51820",
                "-m",
                "comment",
                "--comment",
                &format!("to-{tag}"),
            ]);
        }
        TwoNat {
            a,
            nat_a,
            c,
            nat_c,
            r,
            _inet: inet,
        }
    }

    /// Makes the internet drop UDP between the two NATs either way (`on`), or carry it again:
    /// no direct path, whatever the NATs do.
    pub fn block_direct(&self, on: bool) {
        let op = if on { "-I" } else { "-D" };
        for (from, to) in [(Self::NAT_A, Self::NAT_C), (Self::NAT_C, Self::NAT_A)] {
            self._inet.exec(&[
                "iptables", op, "FORWARD", "-s", from, "-d", to, "-p", "udp", "-j", "DROP",
            ]);
        }
    }

    /// Packets and bytes counted so far by the rule tagged `comment` in `ns`.
    pub fn counter(ns: &Netns, comment: &str) -> (u64, u64) {
        let out = ns.exec(&["iptables", "-L", "-v", "-x", "-n"]);
        out.lines()
            .filter(|l| l.contains(&format!("/* {comment} */")))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.parse::<u64>().ok()?,
                    f.next()?.parse::<u64>().ok()?,
                ))
            })
            .fold((0, 0), |(p, b), (p2, b2)| (p + p2, b + b2))
    }

    /// Datagrams from the other NAT let in to `a` (`"a"`) or `c` (`"c"`).
    pub fn direct_in(&self, member: &str) -> (u64, u64) {
        let nat = if member == "a" {
            &self.nat_a
        } else {
            &self.nat_c
        };
        Self::counter(nat, "direct-in")
    }

    /// Datagrams and bytes the public member received from (`"from-a"`, `"from-c"`) or sent to
    /// (`"to-a"`, `"to-c"`) each NAT on the data-plane port.
    pub fn at_r(&self, comment: &str) -> (u64, u64) {
        Self::counter(&self.r, comment)
    }
}
