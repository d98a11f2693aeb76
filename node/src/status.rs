//! What a running node knows about itself and each peer, as one
//! serializable [`Snapshot`]: the single source of `weft status` (table or
//! JSON, over the admin socket) and of the Prometheus metrics.
//!
//! The daemon's main task builds a snapshot on request from the state it
//! owns (the protocol device, the mesh); this module only reads that state
//! and formats it. It never changes anything.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use serde::{Deserialize, Serialize};
use weft_protocol::timers::REJECT_AFTER_TIME;
use weft_protocol::{Device, DropReason, PeerPath};

use crate::mesh::admin::{self, CallError, Request, Response};

/// Everything `weft status` shows and `/metrics` exports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node.
    pub node: NodeInfo,
    /// Every peer, in configuration/admission order.
    pub peers: Vec<PeerRow>,
    /// Datagrams and packets dropped, by reason (every reason, zeros too).
    pub drops: Vec<(String, u64)>,
    /// Cookie replies sent while under load.
    pub cookie_replies_sent: u64,
    /// Mesh membership and gossip, on mesh members.
    pub mesh: Option<MeshStats>,
    /// What this node knows of its NAT.
    pub nat: NatInfo,
    /// Relay service this node gives other members.
    pub relay: RelayStats,
}

/// This node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Member name (mesh) or interface name (static configuration).
    pub name: String,
    /// TUN interface name.
    pub interface: String,
    /// Static public key, base64.
    pub public_key: String,
    /// UDP port.
    pub listen_port: u16,
    /// Overlay addresses with prefix length.
    pub addresses: Vec<String>,
    /// weft's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
}

/// One peer (edge).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRow {
    /// Member or configured name.
    pub name: String,
    /// Static public key, base64.
    pub public_key: String,
    /// Overlay prefixes routed to it.
    pub addresses: Vec<String>,
    /// Where its packets go.
    pub endpoint: Option<String>,
    /// The relay its packets go through, when no direct path works.
    pub via: Option<String>,
    /// A session is usable and the peer was heard from recently.
    pub up: bool,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<f64>,
    /// Seconds since an authenticated packet last arrived from it.
    pub last_received_secs: Option<f64>,
    /// Inner bytes and packets each way.
    pub rx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshake attempts given up.
    pub handshake_failures: u64,
    /// Roaming: times the endpoint moved.
    pub endpoint_changes: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Persistent keepalive interval in use, seconds (none: off).
    pub keepalive_secs: Option<f64>,
    /// Outer path MTU in use on the edge.
    pub pmtu: Option<u16>,
    /// Whether a probe confirmed it.
    pub pmtu_confirmed: bool,
    /// Largest inner packet the edge carries.
    pub inner_mtu: u16,
    /// Smoothed round-trip time, seconds.
    pub rtt_secs: Option<f64>,
    /// Path-MTU probes sent.
    pub pmtu_probes_sent: u64,
    /// Path-MTU probes lost.
    pub pmtu_probes_lost: u64,
    /// Changes of the path MTU in use.
    pub pmtu_changes: u64,
}

/// Mesh membership and gossip counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MeshStats {
    /// Network id.
    pub network: String,
    /// Members known and not revoked, this node included.
    pub members: u64,
    /// Gossip records published, by kind.
    pub gossip_published: Vec<(String, u64)>,
    /// Gossip records received (accepted or not), by kind.
    pub gossip_received: Vec<(String, u64)>,
    /// Gossip records rejected, by reason.
    pub gossip_rejected: Vec<(String, u64)>,
    /// Publishes the control plane could not carry out, by reason.
    pub gossip_publish_failed: Vec<(String, u64)>,
    /// Items dropped because a queue between tasks was full, by queue.
    pub queue_dropped: Vec<(String, u64)>,
    /// Members connected on the control plane now.
    pub control_connections: u64,
    /// Members this node wants as control-plane neighbours.
    pub control_neighbours_wanted: u64,
    /// Invites issued here.
    pub invites_issued: u64,
    /// Invites redeemed here.
    pub invites_used: u64,
    /// Join attempts refused here, by reason.
    pub invites_refused: Vec<(String, u64)>,
    /// Store writes that failed.
    pub store_write_errors: u64,
    /// Records found undecodable when the store was opened.
    pub store_corrupt_records: u64,
}

/// What this node knows of the NAT in front of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NatInfo {
    /// Behind a NAT: yes, no, or not known yet.
    pub behind: Option<bool>,
    /// This node's address as its peers see it.
    pub reflexive: Option<String>,
    /// Longest idle time a mapping was seen to survive, seconds.
    pub lifetime_secs: Option<f64>,
    /// Shortest idle time a mapping was seen not to survive, seconds.
    pub lifetime_below_secs: Option<f64>,
    /// Keepalive interval for peers in `auto` mode, seconds (none: off).
    pub keepalive_secs: Option<f64>,
    /// Lifetime trials concluded.
    pub trials: u64,
    /// Whether a lifetime search is running.
    pub searching: bool,
    /// Times a lost mapping was detected and repaired by a new handshake.
    pub mapping_losses: u64,
}

/// Relay service counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RelayStats {
    /// Datagrams forwarded between other members.
    pub forwarded_packets: u64,
    /// Bytes forwarded between other members.
    pub forwarded_bytes: u64,
}

impl Snapshot {
    /// Reads the device's view of every peer and the device counters.
    pub fn collect(device: &Device, node: NodeInfo, now: Instant) -> Self {
        let mut peers = Vec::new();
        for id in device.peer_ids() {
            let Some(s) = device.peer_status(id, now) else {
                continue;
            };
            if s.removed {
                continue;
            }
            let heard = s
                .last_received
                .is_some_and(|t| now.saturating_duration_since(t) < REJECT_AFTER_TIME);
            let path = device.path_mtu(id);
            let pmtu_stats = device.pmtu_stats(id).unwrap_or_default();
            peers.push(PeerRow {
                name: s.name,
                public_key: crate::keys::encode(s.public_key.as_bytes()),
                addresses: s.allowed_ips.iter().map(|n| n.to_string()).collect(),
                endpoint: s.endpoint.map(|e| e.to_string()),
                via: match device.peer_path(id) {
                    Some(PeerPath::Relayed { relay }) => Some(device.peer_name(relay).to_string()),
                    _ => None,
                },
                up: s.has_session && heard,
                last_handshake_secs: s.last_handshake.map(|t| secs(now, t)),
                last_received_secs: s.last_received.map(|t| secs(now, t)),
                rx_bytes: s.stats.rx_bytes,
                rx_packets: s.stats.rx_packets,
                tx_bytes: s.stats.tx_bytes,
                tx_packets: s.stats.tx_packets,
                handshakes: s.stats.handshakes_completed,
                handshake_failures: s.stats.handshakes_failed,
                endpoint_changes: s.stats.endpoint_changes,
                keepalives_sent: s.stats.keepalives_sent,
                keepalive_secs: s.persistent_keepalive.map(|d| d.as_secs_f64()),
                pmtu: path.map(|(p, _)| p),
                pmtu_confirmed: path.is_some_and(|(_, c)| c),
                inner_mtu: u16::try_from(device.inner_mtu(id)).unwrap_or(u16::MAX),
                rtt_secs: device.path_rtt(id).map(|d| d.as_secs_f64()),
                pmtu_probes_sent: pmtu_stats.probes_sent,
                pmtu_probes_lost: pmtu_stats.probes_lost,
                pmtu_changes: pmtu_stats.changes,
            });
        }
        let stats = device.stats();
        Self {
            node,
            peers,
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r.as_str().to_string(), stats.dropped(r)))
                .collect(),
            cookie_replies_sent: stats.cookie_replies_sent,
            mesh: None,
            nat: {
                let n = device.nat_status();
                NatInfo {
                    behind: n.behind,
                    reflexive: n.reflexive.map(|r| r.to_string()),
                    lifetime_secs: n.lifetime_at_least.map(|d| d.as_secs_f64()),
                    lifetime_below_secs: n.lifetime_below.map(|d| d.as_secs_f64()),
                    keepalive_secs: n.keepalive_interval.map(|d| d.as_secs_f64()),
                    trials: n.trials,
                    searching: n.searching,
                    mapping_losses: device.nat_counters().mapping_losses,
                }
            },
            relay: RelayStats {
                forwarded_packets: stats.relay.forwarded_packets,
                forwarded_bytes: stats.relay.forwarded_bytes,
            },
        }
    }

    /// The table `weft status` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let n = &self.node;
        let _ = writeln!(
            out,
            "node {} ({}), interface {}, port {}, up {}",
            n.name,
            n.addresses.join(", "),
            n.interface,
            n.listen_port,
            human_duration(Duration::from_secs(n.uptime_secs)),
        );
        let _ = writeln!(out, "  public key {}", n.public_key);
        let nat = match (self.nat.behind, &self.nat.reflexive) {
            (Some(true), Some(r)) => format!("behind NAT, seen as {r}"),
            (Some(true), None) => "behind NAT".to_string(),
            (Some(false), _) => "no NAT".to_string(),
            (None, _) => "not measured yet".to_string(),
        };
        let mut lifetime = String::new();
        if let Some(s) = self.nat.lifetime_secs {
            let _ = write!(lifetime, ", idle mapping lasts >= {s:.1}s");
            if let Some(b) = self.nat.lifetime_below_secs {
                let _ = write!(lifetime, " (< {b:.1}s)");
            }
        }
        if self.nat.searching {
            lifetime.push_str(", measuring");
        }
        if self.nat.mapping_losses > 0 {
            let _ = write!(lifetime, ", {} mappings lost", self.nat.mapping_losses);
        }
        if self.nat.behind == Some(true) {
            match self.nat.keepalive_secs {
                Some(k) => {
                    let _ = write!(lifetime, "; keepalive every {k:.1}s");
                }
                None => lifetime.push_str("; keepalive off"),
            }
        }
        let _ = writeln!(out, "  NAT: {nat}{lifetime}");
        if let Some(m) = &self.mesh {
            let rejected: u64 = m.gossip_rejected.iter().map(|(_, v)| v).sum();
            let _ = writeln!(
                out,
                "  network {}: {} members; gossip {} rejected; invites {} issued, {} used",
                m.network, m.members, rejected, m.invites_issued, m.invites_used
            );
        }
        if self.relay.forwarded_packets > 0 {
            let _ = writeln!(
                out,
                "  relayed for others: {} packets, {}",
                self.relay.forwarded_packets,
                human_bytes(self.relay.forwarded_bytes)
            );
        }
        let _ = writeln!(out);
        let header = [
            "PEER",
            "ADDRESS",
            "ENDPOINT",
            "STATE",
            "PMTU",
            "RTT",
            "HANDSHAKE",
            "RX",
            "TX",
            "KEEPALIVE",
        ];
        let mut rows: Vec<[String; 10]> = vec![header.map(String::from)];
        for p in &self.peers {
            let address = p
                .addresses
                .iter()
                .find(|a| !a.contains(':'))
                .or(p.addresses.first())
                .map(|a| a.trim_end_matches("/32").to_string())
                .unwrap_or_else(|| "-".into());
            let endpoint = match (&p.via, &p.endpoint) {
                (Some(relay), _) => format!("via {relay}"),
                (None, Some(e)) => e.clone(),
                (None, None) => "-".into(),
            };
            let state = if p.up { "up" } else { "down" };
            let pmtu = match p.pmtu {
                Some(m) if p.pmtu_confirmed => format!("{m}"),
                Some(m) => format!("{m}?"),
                None => "-".into(),
            };
            let rtt = p
                .rtt_secs
                .map(|s| format!("{:.1}ms", s * 1e3))
                .unwrap_or_else(|| "-".into());
            let handshake = p
                .last_handshake_secs
                .map(|s| format!("{} ago", human_duration(Duration::from_secs_f64(s))))
                .unwrap_or_else(|| "never".into());
            let keepalive = p
                .keepalive_secs
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "off".into());
            rows.push([
                p.name.clone(),
                address,
                endpoint,
                state.into(),
                pmtu,
                rtt,
                handshake,
                human_bytes(p.rx_bytes),
                human_bytes(p.tx_bytes),
                keepalive,
            ]);
        }
        let mut widths = [0usize; 10];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            let mut line = String::new();
            for (k, (cell, w)) in row.iter().zip(widths).enumerate() {
                if k + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if self.peers.is_empty() {
            let _ = writeln!(out, "(no peers yet)");
        }
        out
    }
}

/// `weft status`: asks the daemon named by `config` (or listening on
/// `socket`) and prints its answer.
pub fn run(config: &Path, socket: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s.to_path_buf(),
        None => crate::config::Config::load(config)?.admin_socket,
    };
    let snapshot = match admin::call(&socket, &Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status(s)) => s,
        Ok(Response::Error(e)) => anyhow::bail!("{e}"),
        Ok(_) => anyhow::bail!("admin socket {}: unexpected answer", socket.display()),
        Err(CallError::NotRunning) => anyhow::bail!(
            "the weft daemon is not running (nothing answers on {}); start it with `weft up --config {}`",
            socket.display(),
            config.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("admin socket {}", socket.display())),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.table());
    }
    Ok(())
}

fn secs(now: Instant, then: Instant) -> f64 {
    now.saturating_duration_since(then).as_secs_f64()
}

/// `1h 2m`, `3m 4s`, `5s`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `512 B`, `1.5 KiB`, `3.2 GiB`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> PeerRow {
        PeerRow {
            name: name.into(),
            addresses: vec!["100.64.0.2/32".into(), "fd00::2/128".into()],
            endpoint: Some("192.0.2.2:51820".into()),
            up: true,
            last_handshake_secs: Some(75.0),
            rx_bytes: 1536,
            tx_bytes: 3 * 1024 * 1024,
            keepalive_secs: Some(2.5),
            pmtu: Some(1400),
            pmtu_confirmed: true,
            inner_mtu: 1340,
            rtt_secs: Some(0.00042),
            ..PeerRow::default()
        }
    }

    #[test]
    fn table_shows_one_aligned_row_per_peer_with_units() {
        let mut s = Snapshot::default();
        s.node.name = "alpha".into();
        s.peers = vec![row("beta"), row("gamma-long-name")];
        s.peers[1].via = Some("relay1".into());
        s.peers[1].pmtu_confirmed = false;
        s.peers[1].up = false;
        let t = s.table();
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("beta")).collect();
        assert_eq!(lines.len(), 1, "{t}");
        let beta = lines[0];
        for cell in [
            "100.64.0.2",
            "192.0.2.2:51820",
            "up",
            "1400",
            "0.4ms",
            "1m 15s ago",
            "1.5 KiB",
            "3.0 MiB",
            "2.5s",
        ] {
            assert!(beta.contains(cell), "{cell:?} missing in {beta:?}");
        }
        let gamma = t.lines().find(|l| l.starts_with("gamma")).unwrap();
        assert!(gamma.contains("via relay1") && gamma.contains("1400?") && gamma.contains("down"));
        // Columns line up: the PMTU column starts at the same offset in both rows.
        let header = t.lines().find(|l| l.starts_with("PEER")).unwrap();
        let col = header.find("PMTU").unwrap();
        assert!(beta[col..].starts_with("1400"), "{t}");
        assert!(gamma[col..].starts_with("1400?"), "{t}");
    }

    #[test]
    fn table_says_so_when_there_are_no_peers() {
        assert!(Snapshot::default().table().contains("(no peers yet)"));
    }

    #[test]
    fn human_units_pick_the_largest_unit_below_the_value() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_duration(Duration::from_secs(59)), "59s");
        assert_eq!(human_duration(Duration::from_secs(3661)), "1h 1m");
        assert_eq!(human_duration(Duration::from_secs(90_000)), "1d 1h");
    }
}
