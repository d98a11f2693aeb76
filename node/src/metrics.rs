//! The Prometheus endpoint: `GET /metrics` on `[metrics] listen`.
//!
//! Each scrape asks the daemon's main task for a fresh [`Snapshot`] and
//! renders it in Prometheus' text format through a registry built for that
//! scrape, so every value comes straight from the state the main task owns:
//! nothing here keeps counters of its own, and no lock is shared with the
//! data path. Counters are monotonic because the snapshot's counters are.
//! Metric names and meanings are listed in docs/operations.md.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::host::{Step, StepError};
use crate::status::{PeerRow, Snapshot};

/// A request for a snapshot, answered by the main task.
pub type SnapshotRequest = oneshot::Sender<Snapshot>;

/// How long a scrape waits for the main task.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` and serves `/metrics` until the daemon exits. Binding
/// happens here, before the daemon goes on, so a port in use is a start-up
/// error rather than a silent gap in monitoring.
pub async fn serve(
    listen: SocketAddr,
    per_peer_labels: bool,
    snapshots: mpsc::Sender<SnapshotRequest>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StepError::new(Step::ListenMetrics { addr: listen }, e))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || scrape(snapshots.clone(), per_peer_labels)),
        )
        .route("/", get(|| async { "weft: metrics at /metrics\n" }));
    info!(%listen, "metrics served at /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            debug!(error = %e, "metrics server stopped");
        }
    }))
}

async fn scrape(
    snapshots: mpsc::Sender<SnapshotRequest>,
    per_peer_labels: bool,
) -> axum::response::Response {
    let (tx, rx) = oneshot::channel();
    let snapshot = match snapshots.send(tx).await {
        Ok(()) => tokio::time::timeout(SNAPSHOT_TIMEOUT, rx).await,
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "daemon stopping\n").into_response(),
    };
    let Ok(Ok(snapshot)) = snapshot else {
        return (StatusCode::SERVICE_UNAVAILABLE, "daemon busy\n").into_response();
    };
    match render(&snapshot, per_peer_labels) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// What kind of Prometheus series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A monotonic integer count.
    Counter,
    /// An integer that goes up and down.
    IntGauge,
    /// A real number that goes up and down (seconds).
    Gauge,
}

/// One sample's value, of the type its [`Kind`] takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    /// For a [`Kind::Counter`].
    Count(u64),
    /// For a [`Kind::IntGauge`].
    Int(i64),
    /// For a [`Kind::Gauge`].
    Real(f64),
}

/// Counts by the value of a label, as the snapshot keeps them.
type Counts = [(String, u64)];

/// Where a node-wide metric's samples come from. A metric the snapshot
/// has nothing for (`None`) is not exported at all.
#[derive(Clone, Copy)]
enum Source {
    /// One unlabelled sample; its [`Value`] gives the metric's kind.
    One(fn(&Snapshot) -> Option<Value>),
    /// A counter per value of the label named here.
    Counts(&'static str, fn(&Snapshot) -> Option<&Counts>),
    /// An information metric: 1, with the text as the named label's value.
    Info(&'static str, fn(&Snapshot) -> &str),
    /// A gauge per value of the label named here.
    Gauges(&'static str, fn(&Snapshot) -> Option<&Counts>),
}

/// How a per-peer metric reads one peer, and folds all peers into one
/// series when the configuration asks for no peer label.
#[derive(Clone, Copy)]
enum PerPeer {
    /// A counter; summed over peers.
    Total(fn(&PeerRow) -> u64),
    /// 1 or 0; counted over peers.
    Flag(fn(&PeerRow) -> bool),
    /// An integer, where the peer has one; the smallest over peers.
    Smallest(fn(&PeerRow) -> Option<i64>),
    /// Seconds, where the peer has them; the largest over peers.
    Longest(fn(&PeerRow) -> Option<f64>),
    /// Anything else: the value of one peer, and of all peers folded.
    Other {
        kind: Kind,
        one: fn(&PeerRow) -> Option<Value>,
        all: fn(&[PeerRow]) -> Option<Value>,
    },
}

impl Value {
    fn kind(self) -> Kind {
        match self {
            Value::Count(_) => Kind::Counter,
            Value::Int(_) => Kind::IntGauge,
            Value::Real(_) => Kind::Gauge,
        }
    }
}

impl PerPeer {
    fn kind(self) -> Kind {
        match self {
            PerPeer::Total(_) => Kind::Counter,
            PerPeer::Flag(_) | PerPeer::Smallest(_) => Kind::IntGauge,
            PerPeer::Longest(_) => Kind::Gauge,
            PerPeer::Other { kind, .. } => kind,
        }
    }

    /// The value for `p`, if it has one.
    fn one(self, p: &PeerRow) -> Option<Value> {
        match self {
            PerPeer::Total(f) => Some(Value::Count(f(p))),
            PerPeer::Flag(f) => Some(Value::Int(i64::from(f(p)))),
            PerPeer::Smallest(f) => f(p).map(Value::Int),
            PerPeer::Longest(f) => f(p).map(Value::Real),
            PerPeer::Other { one, .. } => one(p),
        }
    }

    /// The value for all `peers` as one series, if there is one.
    fn all(self, peers: &[PeerRow]) -> Option<Value> {
        match self {
            PerPeer::Total(f) => Some(Value::Count(peers.iter().map(f).sum())),
            PerPeer::Flag(f) => Some(Value::Int(peers.iter().filter(|p| f(p)).count() as i64)),
            PerPeer::Smallest(f) => peers.iter().filter_map(f).min().map(Value::Int),
            PerPeer::Longest(f) => peers.iter().filter_map(f).reduce(f64::max).map(Value::Real),
            PerPeer::Other { all, .. } => all(peers),
        }
    }
}

/// The metrics about every node: (name, help, samples).
const NODE: &[(&str, &str, Source)] = &[
    (
        "weft_build_info",
        "weft's version, as a label",
        Source::Info("version", |s| &s.node.version),
    ),
    (
        "weft_peers",
        "Data-plane peers configured or known",
        Source::One(|s| Some(Value::Int(s.peers.len() as i64))),
    ),
    (
        "weft_datagrams_dropped_total",
        "Datagrams and packets dropped, by reason",
        Source::Counts("reason", |s| Some(&s.drops)),
    ),
    (
        "weft_cookie_replies_sent_total",
        "Cookie replies sent to handshake initiators while under load",
        Source::One(|s| Some(Value::Count(s.cookie_replies_sent))),
    ),
    (
        "weft_handshake_dh_total",
        "Received handshake messages that reached Diffie-Hellman (past mac1, and under load \
         past mac2 and the source's rate limit)",
        Source::One(|s| Some(Value::Count(s.handshake_dh))),
    ),
    (
        "weft_nat_behind",
        "1 if this node is behind a NAT",
        Source::One(|s| Some(Value::Int(i64::from(s.nat.behind?)))),
    ),
    (
        "weft_nat_mapping_lifetime_seconds",
        "Longest idle time this node's NAT mapping was seen to survive",
        Source::One(|s| Some(Value::Real(s.nat.lifetime_secs?))),
    ),
    (
        "weft_nat_mapping_losses_total",
        "Lost NAT mappings detected (a keepalive ping and its retry unanswered) and repaired by a new handshake",
        Source::One(|s| Some(Value::Count(s.nat.mapping_losses))),
    ),
    (
        "weft_relay_forwarded_packets_total",
        "Datagrams relayed between other members",
        Source::One(|s| Some(Value::Count(s.relay.forwarded_packets))),
    ),
    (
        "weft_relay_forwarded_bytes_total",
        "Bytes relayed between other members",
        Source::One(|s| Some(Value::Count(s.relay.forwarded_bytes))),
    ),
];

/// The metrics of mesh members, none without mesh statistics: (name, help,
/// samples).
const MESH: &[(&str, &str, Source)] = &[
    (
        "weft_members",
        "Mesh members known and not revoked, this node included",
        Source::One(|s| Some(Value::Int(s.mesh.as_ref()?.members as i64))),
    ),
    (
        "weft_gossip_published_total",
        "Gossip records published, by kind",
        Source::Counts("kind", |s| Some(&s.mesh.as_ref()?.gossip_published)),
    ),
    (
        "weft_gossip_received_total",
        "Gossip records received, by kind",
        Source::Counts("kind", |s| Some(&s.mesh.as_ref()?.gossip_received)),
    ),
    (
        "weft_gossip_rejected_total",
        "Gossip records rejected, by reason",
        Source::Counts("reason", |s| Some(&s.mesh.as_ref()?.gossip_rejected)),
    ),
    (
        "weft_gossip_publish_failed_total",
        "Records the control plane could not publish, by reason",
        Source::Counts("reason", |s| Some(&s.mesh.as_ref()?.gossip_publish_failed)),
    ),
    (
        "weft_control_connections_refused_total",
        "Control-plane connections refused before any protocol ran on them, by reason",
        Source::Counts("reason", |s| {
            Some(&s.mesh.as_ref()?.control_connections_refused)
        }),
    ),
    (
        "weft_queue_dropped_total",
        "Items dropped because a queue between tasks was full, by queue",
        Source::Counts("queue", |s| Some(&s.mesh.as_ref()?.queue_dropped)),
    ),
    (
        "weft_control_connections",
        "Members connected on the control plane",
        Source::One(|s| Some(Value::Int(s.mesh.as_ref()?.control_connections as i64))),
    ),
    (
        "weft_control_neighbours_wanted",
        "Members this node wants as control-plane neighbours",
        Source::One(|s| {
            Some(Value::Int(
                s.mesh.as_ref()?.control_neighbours_wanted as i64,
            ))
        }),
    ),
    (
        "weft_invites_refused_total",
        "Join attempts refused, by reason",
        Source::Counts("reason", |s| Some(&s.mesh.as_ref()?.invites_refused)),
    ),
    (
        "weft_invites_issued_total",
        "Invite tokens issued by this node",
        Source::One(|s| Some(Value::Count(s.mesh.as_ref()?.invites_issued))),
    ),
    (
        "weft_invites_used_total",
        "Invite tokens redeemed at this node",
        Source::One(|s| Some(Value::Count(s.mesh.as_ref()?.invites_used))),
    ),
    (
        "weft_store_write_errors_total",
        "Writes to the state store that failed",
        Source::One(|s| Some(Value::Count(s.mesh.as_ref()?.store_write_errors))),
    ),
    (
        "weft_store_corrupt_records",
        "Undecodable records found when the store was opened",
        Source::One(|s| Some(Value::Int(s.mesh.as_ref()?.store_corrupt_records as i64))),
    ),
    (
        "weft_certificate_expiry_timestamp_seconds",
        "When each known member's certificate expires (unix time), this node's included",
        Source::Gauges("member", |s| Some(&s.mesh.as_ref()?.certificate_expiry)),
    ),
    (
        "weft_certificate_lifetime_seconds",
        "The validity period of this node's certificate in force",
        Source::One(|s| {
            let c = s.mesh.as_ref()?.certificate.as_ref()?;
            Some(Value::Int(c.not_after.saturating_sub(c.not_before) as i64))
        }),
    ),
    (
        "weft_certificate_renewals_total",
        "Renewals of this node's certificate, by result (ok, or why not)",
        Source::Counts("result", |s| Some(&s.mesh.as_ref()?.certificate_renewals)),
    ),
    (
        "weft_certificate_renewals_answered_total",
        "Renewal requests this node answered as an authority holder, by result",
        Source::Counts("result", |s| Some(&s.mesh.as_ref()?.renewals_answered)),
    ),
    (
        "weft_members_expired_total",
        "Members dropped from the data and control planes when their certificate expired",
        Source::One(|s| Some(Value::Count(s.mesh.as_ref()?.members_expired))),
    ),
    (
        "weft_authorities",
        "Holders (keys) of the network's current authority set",
        Source::One(|s| Some(Value::Int(s.mesh.as_ref()?.authorities as i64))),
    ),
];

/// The per-peer metrics: one series per peer with a `peer` label, or, for
/// meshes too large for a label per peer, all peers folded into one series:
/// counters summed, `up` and `relayed` counted, MTUs and the keepalive
/// interval the minimum, RTT and handshake age the maximum.
const PEER: &[(&str, &str, PerPeer)] = &[
    (
        "weft_peer_up",
        "1 if a session is usable and the peer was heard from within 180 s",
        PerPeer::Flag(|p| p.up),
    ),
    (
        "weft_peer_relayed",
        "1 if traffic to the peer goes through a relay",
        PerPeer::Flag(|p| p.via.is_some()),
    ),
    (
        "weft_peer_rx_bytes_total",
        "Inner bytes received from the peer",
        PerPeer::Total(|p| p.rx_bytes),
    ),
    (
        "weft_peer_tx_bytes_total",
        "Inner bytes sent to the peer",
        PerPeer::Total(|p| p.tx_bytes),
    ),
    (
        "weft_peer_rx_packets_total",
        "Inner packets received from the peer",
        PerPeer::Total(|p| p.rx_packets),
    ),
    (
        "weft_peer_tx_packets_total",
        "Inner packets sent to the peer",
        PerPeer::Total(|p| p.tx_packets),
    ),
    (
        "weft_peer_handshakes_total",
        "Handshakes completed with the peer",
        PerPeer::Total(|p| p.handshakes),
    ),
    (
        "weft_peer_handshake_failures_total",
        "Handshake attempts given up after 90 s without an answer",
        PerPeer::Total(|p| p.handshake_failures),
    ),
    (
        "weft_peer_last_handshake_age_seconds",
        "Seconds since the last completed handshake",
        PerPeer::Longest(|p| p.last_handshake_secs),
    ),
    (
        "weft_peer_endpoint_changes_total",
        "Times the peer's endpoint moved to a new source address (roaming)",
        PerPeer::Total(|p| p.endpoint_changes),
    ),
    (
        "weft_peer_keepalives_sent_total",
        "Keepalives sent to the peer",
        PerPeer::Total(|p| p.keepalives_sent),
    ),
    (
        "weft_peer_keepalive_interval_seconds",
        "Persistent keepalive interval in use (0: off)",
        // A peer without keepalives shows 0; folded, the shortest interval
        // of the peers that have one.
        PerPeer::Other {
            kind: Kind::Gauge,
            one: |p| Some(Value::Real(p.keepalive_secs.unwrap_or(0.0))),
            all: |peers| {
                let k = peers.iter().filter_map(|p| p.keepalive_secs);
                k.min_by(f64::total_cmp).map(Value::Real)
            },
        },
    ),
    (
        "weft_path_mtu_bytes",
        "Outer path MTU in use on the edge",
        PerPeer::Smallest(|p| p.pmtu.map(i64::from)),
    ),
    (
        "weft_path_inner_mtu_bytes",
        "Largest inner packet the edge carries",
        PerPeer::Smallest(|p| Some(i64::from(p.inner_mtu))),
    ),
    (
        "weft_path_mtu_confirmed",
        "1 if a probe confirmed the path MTU in use",
        // Only where there is a path MTU; folded, 1 if every one is.
        PerPeer::Other {
            kind: Kind::IntGauge,
            one: |p| p.pmtu.map(|_| Value::Int(i64::from(p.pmtu_confirmed))),
            all: |peers| {
                let confirmed = peers.iter().all(|p| p.pmtu.is_none() || p.pmtu_confirmed);
                let any = peers.iter().any(|p| p.pmtu.is_some());
                any.then_some(Value::Int(i64::from(confirmed)))
            },
        },
    ),
    (
        "weft_path_rtt_seconds",
        "Smoothed round-trip time of the edge",
        PerPeer::Longest(|p| p.rtt_secs),
    ),
    (
        "weft_pmtu_probes_sent_total",
        "Path-MTU probes sent on the edge",
        PerPeer::Total(|p| p.pmtu_probes_sent),
    ),
    (
        "weft_pmtu_probes_lost_total",
        "Path-MTU probes declared lost on the edge",
        PerPeer::Total(|p| p.pmtu_probes_lost),
    ),
    (
        "weft_pmtu_changes_total",
        "Changes of the path MTU in use on the edge",
        PerPeer::Total(|p| p.pmtu_changes),
    ),
    (
        "weft_pmtu_hints_total",
        "ICMP too-big hints that started probing below the path MTU in use on the edge",
        PerPeer::Total(|p| p.pmtu_hints),
    ),
    (
        "weft_pmtu_hints_refuted_total",
        "ICMP too-big hints after which the path MTU in use still passed its probes",
        PerPeer::Total(|p| p.pmtu_hints_refuted),
    ),
];

/// Builds a registry holding `snapshot` and encodes it as text.
pub fn render(snapshot: &Snapshot, per_peer_labels: bool) -> prometheus::Result<String> {
    let r = Registry::new();
    for &(name, help, source) in NODE.iter().chain(MESH) {
        match source {
            Source::One(value) => {
                if let Some(value) = value(snapshot) {
                    Family::register(&r, name, help, value.kind(), &[])?.set(&[], value)?;
                }
            }
            Source::Counts(label, counts) => {
                if let Some(counts) = counts(snapshot) {
                    let family = Family::register(&r, name, help, Kind::Counter, &[label])?;
                    for (k, n) in counts {
                        family.set(&[k.as_str()], Value::Count(*n))?;
                    }
                }
            }
            Source::Info(label, text) => {
                let family = Family::register(&r, name, help, Kind::IntGauge, &[label])?;
                family.set(&[text(snapshot)], Value::Int(1))?;
            }
            Source::Gauges(label, values) => {
                if let Some(values) = values(snapshot) {
                    let family = Family::register(&r, name, help, Kind::IntGauge, &[label])?;
                    for (k, n) in values {
                        family.set(
                            &[k.as_str()],
                            Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
                        )?;
                    }
                }
            }
        }
    }
    let labels: &[&str] = if per_peer_labels { &["peer"] } else { &[] };
    for &(name, help, per_peer) in PEER {
        let family = Family::register(&r, name, help, per_peer.kind(), labels)?;
        if per_peer_labels {
            for p in &snapshot.peers {
                if let Some(value) = per_peer.one(p) {
                    family.set(&[p.name.as_str()], value)?;
                }
            }
        } else if let Some(value) = per_peer.all(&snapshot.peers) {
            family.set(&[], value)?;
        }
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// A registered metric family of one of the three kinds.
enum Family {
    Counter(IntCounterVec),
    IntGauge(IntGaugeVec),
    Gauge(GaugeVec),
}

impl Family {
    fn register(
        r: &Registry,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[&str],
    ) -> prometheus::Result<Self> {
        let opts = Opts::new(name, help);
        let family = match kind {
            Kind::Counter => {
                let c = IntCounterVec::new(opts, labels)?;
                r.register(Box::new(c.clone()))?;
                Family::Counter(c)
            }
            Kind::IntGauge => {
                let g = IntGaugeVec::new(opts, labels)?;
                r.register(Box::new(g.clone()))?;
                Family::IntGauge(g)
            }
            Kind::Gauge => {
                let g = GaugeVec::new(opts, labels)?;
                r.register(Box::new(g.clone()))?;
                Family::Gauge(g)
            }
        };
        Ok(family)
    }

    /// Sets the sample labelled `values` (counters count up from zero to
    /// the value).
    fn set(&self, values: &[&str], value: Value) -> prometheus::Result<()> {
        match (self, value) {
            (Family::Counter(c), Value::Count(n)) => {
                c.get_metric_with_label_values(values)?.inc_by(n)
            }
            (Family::IntGauge(g), Value::Int(n)) => g.get_metric_with_label_values(values)?.set(n),
            (Family::Gauge(g), Value::Real(x)) => g.get_metric_with_label_values(values)?.set(x),
            _ => {
                return Err(prometheus::Error::Msg(
                    "a metric's value does not match its kind".into(),
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{MeshStats, PeerRow};

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.node.version = "0.1.0".into();
        s.drops = vec![("replay".into(), 3), ("malformed".into(), 0)];
        let peer = |name: &str, pmtu, rx| PeerRow {
            name: name.into(),
            up: true,
            pmtu: Some(pmtu),
            pmtu_confirmed: true,
            inner_mtu: pmtu - 60,
            rx_bytes: rx,
            keepalive_secs: Some(2.5),
            ..PeerRow::default()
        };
        s.peers = vec![peer("b", 1400, 100), peer("c\"quoted", 1500, 50)];
        s.mesh = Some(MeshStats {
            members: 3,
            gossip_rejected: vec![("bad_signature".into(), 2)],
            certificate: Some(crate::status::CertificateInfo {
                not_before: 1_800_000_000,
                not_after: 1_800_000_060,
                ..Default::default()
            }),
            certificate_expiry: vec![("a".into(), 1_800_000_060), ("b".into(), 1_800_000_090)],
            certificate_renewals: vec![("ok".into(), 4), ("unreachable".into(), 1)],
            authorities: 2,
            ..MeshStats::default()
        });
        s
    }

    fn sample(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"));
        line[series.len()..].trim().parse().unwrap()
    }

    #[test]
    fn peer_series_carry_the_peer_name_and_escape_it() {
        let text = render(&snapshot(), true).unwrap();
        assert_eq!(sample(&text, "weft_path_mtu_bytes{peer=\"b\"}"), 1400.0);
        assert_eq!(
            sample(&text, "weft_path_mtu_bytes{peer=\"c\\\"quoted\"}"),
            1500.0
        );
        assert_eq!(sample(&text, "weft_peer_rx_bytes_total{peer=\"b\"}"), 100.0);
        assert_eq!(
            sample(&text, "weft_datagrams_dropped_total{reason=\"replay\"}"),
            3.0
        );
        assert_eq!(
            sample(
                &text,
                "weft_gossip_rejected_total{reason=\"bad_signature\"}"
            ),
            2.0
        );
        assert_eq!(sample(&text, "weft_members"), 3.0);
        assert_eq!(
            sample(
                &text,
                "weft_certificate_expiry_timestamp_seconds{member=\"b\"}"
            ),
            1_800_000_090.0
        );
        assert_eq!(sample(&text, "weft_certificate_lifetime_seconds"), 60.0);
        assert_eq!(
            sample(&text, "weft_certificate_renewals_total{result=\"ok\"}"),
            4.0
        );
        assert_eq!(sample(&text, "weft_authorities"), 2.0);
        assert!(text.contains("# TYPE weft_certificate_expiry_timestamp_seconds gauge"));
        assert!(text.contains("# TYPE weft_peer_rx_bytes_total counter"));
        assert!(text.contains("# TYPE weft_path_mtu_bytes gauge"));
    }

    #[test]
    fn without_peer_labels_series_are_folded_over_peers() {
        let text = render(&snapshot(), false).unwrap();
        assert!(!text.contains("peer=\""), "{text}");
        assert_eq!(sample(&text, "weft_peer_up"), 2.0);
        assert_eq!(sample(&text, "weft_peer_rx_bytes_total"), 150.0);
        assert_eq!(sample(&text, "weft_path_mtu_bytes"), 1400.0);
        assert_eq!(sample(&text, "weft_peer_keepalive_interval_seconds"), 2.5);
    }

    #[test]
    fn handshakes_at_diffie_hellman_are_a_counter() {
        let mut s = snapshot();
        s.handshake_dh = 7;
        let text = render(&s, true).unwrap();
        assert_eq!(sample(&text, "weft_handshake_dh_total"), 7.0);
        assert!(text.contains("# TYPE weft_handshake_dh_total counter"));
    }

    #[test]
    fn every_metric_has_help_and_type_and_the_weft_prefix() {
        let text = render(&snapshot(), true).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("weft_"), "{line}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }
}
