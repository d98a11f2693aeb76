//! What a running node knows about itself and each peer, as one
//! serializable [`Snapshot`]: the single source of `weft status` (sent over
//! the admin socket, rendered by `cli::status`) and of the Prometheus
//! metrics (`metrics.rs`).
//!
//! The daemon's main task builds a snapshot on request from the state it
//! owns (the protocol device, the mesh) in one pass, without I/O; this
//! module only reads that state into plain types. It never changes
//! anything, never formats for people, and imports nothing of the daemon.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use weft_protocol::timers::REJECT_AFTER_TIME;
use weft_protocol::{Device, DropReason, PeerPath};

/// Everything `weft status` shows and `/metrics` exports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node.
    pub node: NodeInfo,
    /// Every peer, in configuration/admission order.
    pub peers: Vec<PeerRow>,
    /// Datagrams and packets dropped, by reason (every reason, zeros too):
    /// the device's, then the TUN reads the node dropped before the device
    /// saw them (`tun_…`).
    pub drops: Vec<(String, u64)>,
    /// Cookie replies sent while under load.
    pub cookie_replies_sent: u64,
    /// Received handshake messages that reached Diffie-Hellman.
    pub handshake_dh: u64,
    /// Mesh membership and gossip, on mesh members.
    pub mesh: Option<MeshStats>,
    /// What this node knows of its NAT.
    pub nat: NatInfo,
    /// Relay service this node gives other members.
    pub relay: RelayStats,
    /// Times the TUN interface was created again after it was removed
    /// under the node.
    #[serde(default)]
    pub tun_recreated: u64,
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
    /// ICMP "too big" hints that started probing below the size in use.
    #[serde(default)]
    pub pmtu_hints: u64,
    /// Of those, the ones after which the size in use still passed.
    #[serde(default)]
    pub pmtu_hints_refuted: u64,
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
    /// Control-plane connections refused before any protocol ran on them,
    /// by reason (`limit`, `blocked`).
    pub control_connections_refused: Vec<(String, u64)>,
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
    /// This node's certificate in force.
    #[serde(default)]
    pub certificate: Option<CertificateInfo>,
    /// The certificate expiry of every known member, this node's
    /// included: (name, unix time).
    #[serde(default)]
    pub certificate_expiry: Vec<(String, u64)>,
    /// Renewals of this node's certificate, by result (`ok` or why not).
    #[serde(default)]
    pub certificate_renewals: Vec<(String, u64)>,
    /// Renewals this node answered as an authority holder, by result.
    #[serde(default)]
    pub renewals_answered: Vec<(String, u64)>,
    /// Members dropped from the data plane when their certificate expired.
    #[serde(default)]
    pub members_expired: u64,
    /// Holders of the current authority set.
    #[serde(default)]
    pub authorities: u64,
}

/// This node's certificate, as `weft status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Serial number.
    pub serial: u64,
    /// The key that signed it (fingerprint), if a trusted one did.
    pub issuer: String,
    /// Valid from (unix time).
    pub not_before: u64,
    /// Valid until (unix time).
    pub not_after: u64,
    /// Whether it has expired (the node is renewing it).
    pub expired: bool,
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
                pmtu_hints: pmtu_stats.hints,
                pmtu_hints_refuted: pmtu_stats.hints_refuted,
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
            handshake_dh: stats.handshake_dh,
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
            tun_recreated: 0,
        }
    }
}

fn secs(now: Instant, then: Instant) -> f64 {
    now.saturating_duration_since(then).as_secs_f64()
}
