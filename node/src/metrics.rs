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

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

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
        .with_context(|| format!("metrics.listen: cannot listen on {listen}"))?;
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

/// Per-peer series, labelled by peer name or folded into one series.
struct PeerMetrics {
    up: IntGaugeVec,
    relayed: IntGaugeVec,
    rx_bytes: IntCounterVec,
    tx_bytes: IntCounterVec,
    rx_packets: IntCounterVec,
    tx_packets: IntCounterVec,
    handshakes: IntCounterVec,
    handshake_failures: IntCounterVec,
    handshake_age: GaugeVec,
    endpoint_changes: IntCounterVec,
    keepalives: IntCounterVec,
    keepalive_interval: GaugeVec,
    pmtu: IntGaugeVec,
    inner_mtu: IntGaugeVec,
    pmtu_confirmed: IntGaugeVec,
    rtt: GaugeVec,
    probes_sent: IntCounterVec,
    probes_lost: IntCounterVec,
    pmtu_changes: IntCounterVec,
}

/// Builds a registry holding `snapshot` and encodes it as text.
pub fn render(snapshot: &Snapshot, per_peer_labels: bool) -> prometheus::Result<String> {
    let r = Registry::new();
    let labels: &'static [&'static str] = if per_peer_labels { &["peer"] } else { &[] };

    gauge_int(
        &r,
        "weft_build_info",
        "weft's version, as a label",
        &["version"],
    )?
    .with_label_values(&[&snapshot.node.version])
    .set(1);
    gauge_int(
        &r,
        "weft_peers",
        "Data-plane peers configured or known",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .set(snapshot.peers.len() as i64);
    let drops = counter(
        &r,
        "weft_datagrams_dropped_total",
        "Datagrams and packets dropped, by reason",
        &["reason"],
    )?;
    for (reason, n) in &snapshot.drops {
        drops.with_label_values(&[reason]).inc_by(*n);
    }
    counter(
        &r,
        "weft_cookie_replies_sent_total",
        "Cookie replies sent to handshake initiators while under load",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .inc_by(snapshot.cookie_replies_sent);

    let m = PeerMetrics {
        up: gauge_int(
            &r,
            "weft_peer_up",
            "1 if a session is usable and the peer was heard from within 180 s",
            labels,
        )?,
        relayed: gauge_int(
            &r,
            "weft_peer_relayed",
            "1 if traffic to the peer goes through a relay",
            labels,
        )?,
        rx_bytes: counter(
            &r,
            "weft_peer_rx_bytes_total",
            "Inner bytes received from the peer",
            labels,
        )?,
        tx_bytes: counter(
            &r,
            "weft_peer_tx_bytes_total",
            "Inner bytes sent to the peer",
            labels,
        )?,
        rx_packets: counter(
            &r,
            "weft_peer_rx_packets_total",
            "Inner packets received from the peer",
            labels,
        )?,
        tx_packets: counter(
            &r,
            "weft_peer_tx_packets_total",
            "Inner packets sent to the peer",
            labels,
        )?,
        handshakes: counter(
            &r,
            "weft_peer_handshakes_total",
            "Handshakes completed with the peer",
            labels,
        )?,
        handshake_failures: counter(
            &r,
            "weft_peer_handshake_failures_total",
            "Handshake attempts given up after 90 s without an answer",
            labels,
        )?,
        handshake_age: gauge(
            &r,
            "weft_peer_last_handshake_age_seconds",
            "Seconds since the last completed handshake",
            labels,
        )?,
        endpoint_changes: counter(
            &r,
            "weft_peer_endpoint_changes_total",
            "Times the peer's endpoint moved to a new source address (roaming)",
            labels,
        )?,
        keepalives: counter(
            &r,
            "weft_peer_keepalives_sent_total",
            "Keepalives sent to the peer",
            labels,
        )?,
        keepalive_interval: gauge(
            &r,
            "weft_peer_keepalive_interval_seconds",
            "Persistent keepalive interval in use (0: off)",
            labels,
        )?,
        pmtu: gauge_int(
            &r,
            "weft_path_mtu_bytes",
            "Outer path MTU in use on the edge",
            labels,
        )?,
        inner_mtu: gauge_int(
            &r,
            "weft_path_inner_mtu_bytes",
            "Largest inner packet the edge carries",
            labels,
        )?,
        pmtu_confirmed: gauge_int(
            &r,
            "weft_path_mtu_confirmed",
            "1 if a probe confirmed the path MTU in use",
            labels,
        )?,
        rtt: gauge(
            &r,
            "weft_path_rtt_seconds",
            "Smoothed round-trip time of the edge",
            labels,
        )?,
        probes_sent: counter(
            &r,
            "weft_pmtu_probes_sent_total",
            "Path-MTU probes sent on the edge",
            labels,
        )?,
        probes_lost: counter(
            &r,
            "weft_pmtu_probes_lost_total",
            "Path-MTU probes declared lost on the edge",
            labels,
        )?,
        pmtu_changes: counter(
            &r,
            "weft_pmtu_changes_total",
            "Changes of the path MTU in use on the edge",
            labels,
        )?,
    };
    if per_peer_labels {
        for p in &snapshot.peers {
            m.one(p, &[p.name.as_str()]);
        }
    } else {
        m.folded(&snapshot.peers);
    }

    if let Some(mesh) = &snapshot.mesh {
        gauge_int(
            &r,
            "weft_members",
            "Mesh members known and not revoked, this node included",
            &[],
        )?
        .with_label_values::<&str>(&[])
        .set(mesh.members as i64);
        let by = |name, help, label, values: &[(String, u64)]| -> prometheus::Result<()> {
            let c = counter(&r, name, help, &[label])?;
            for (k, v) in values {
                c.with_label_values(&[k]).inc_by(*v);
            }
            Ok(())
        };
        by(
            "weft_gossip_published_total",
            "Gossip records published, by kind",
            "kind",
            &mesh.gossip_published,
        )?;
        by(
            "weft_gossip_received_total",
            "Gossip records received, by kind",
            "kind",
            &mesh.gossip_received,
        )?;
        by(
            "weft_gossip_rejected_total",
            "Gossip records rejected, by reason",
            "reason",
            &mesh.gossip_rejected,
        )?;
        by(
            "weft_gossip_publish_failed_total",
            "Records the control plane could not publish, by reason",
            "reason",
            &mesh.gossip_publish_failed,
        )?;
        by(
            "weft_queue_dropped_total",
            "Items dropped because a queue between tasks was full, by queue",
            "queue",
            &mesh.queue_dropped,
        )?;
        gauge_int(
            &r,
            "weft_control_connections",
            "Members connected on the control plane",
            &[],
        )?
        .with_label_values::<&str>(&[])
        .set(mesh.control_connections as i64);
        gauge_int(
            &r,
            "weft_control_neighbours_wanted",
            "Members this node wants as control-plane neighbours",
            &[],
        )?
        .with_label_values::<&str>(&[])
        .set(mesh.control_neighbours_wanted as i64);
        by(
            "weft_invites_refused_total",
            "Join attempts refused, by reason",
            "reason",
            &mesh.invites_refused,
        )?;
        let plain = |name, help, v: u64| -> prometheus::Result<()> {
            counter(&r, name, help, &[])?
                .with_label_values::<&str>(&[])
                .inc_by(v);
            Ok(())
        };
        plain(
            "weft_invites_issued_total",
            "Invite tokens issued by this node",
            mesh.invites_issued,
        )?;
        plain(
            "weft_invites_used_total",
            "Invite tokens redeemed at this node",
            mesh.invites_used,
        )?;
        plain(
            "weft_store_write_errors_total",
            "Writes to the state store that failed",
            mesh.store_write_errors,
        )?;
        gauge_int(
            &r,
            "weft_store_corrupt_records",
            "Undecodable records found when the store was opened",
            &[],
        )?
        .with_label_values::<&str>(&[])
        .set(mesh.store_corrupt_records as i64);
    }

    if let Some(behind) = snapshot.nat.behind {
        gauge_int(&r, "weft_nat_behind", "1 if this node is behind a NAT", &[])?
            .with_label_values::<&str>(&[])
            .set(i64::from(behind));
    }
    if let Some(lifetime) = snapshot.nat.lifetime_secs {
        gauge(
            &r,
            "weft_nat_mapping_lifetime_seconds",
            "Longest idle time this node's NAT mapping was seen to survive",
            &[],
        )?
        .with_label_values::<&str>(&[])
        .set(lifetime);
    }
    counter(
        &r,
        "weft_nat_mapping_losses_total",
        "Lost NAT mappings detected (a keepalive ping and its retry unanswered) and repaired by a new handshake",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .inc_by(snapshot.nat.mapping_losses);
    counter(
        &r,
        "weft_relay_forwarded_packets_total",
        "Datagrams relayed between other members",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .inc_by(snapshot.relay.forwarded_packets);
    counter(
        &r,
        "weft_relay_forwarded_bytes_total",
        "Bytes relayed between other members",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .inc_by(snapshot.relay.forwarded_bytes);

    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

impl PeerMetrics {
    /// One peer's series under `labels`.
    fn one(&self, p: &PeerRow, values: &[&str]) {
        self.up.with_label_values(values).set(i64::from(p.up));
        self.relayed
            .with_label_values(values)
            .set(i64::from(p.via.is_some()));
        self.rx_bytes.with_label_values(values).inc_by(p.rx_bytes);
        self.tx_bytes.with_label_values(values).inc_by(p.tx_bytes);
        self.rx_packets
            .with_label_values(values)
            .inc_by(p.rx_packets);
        self.tx_packets
            .with_label_values(values)
            .inc_by(p.tx_packets);
        self.handshakes
            .with_label_values(values)
            .inc_by(p.handshakes);
        self.handshake_failures
            .with_label_values(values)
            .inc_by(p.handshake_failures);
        if let Some(age) = p.last_handshake_secs {
            self.handshake_age.with_label_values(values).set(age);
        }
        self.endpoint_changes
            .with_label_values(values)
            .inc_by(p.endpoint_changes);
        self.keepalives
            .with_label_values(values)
            .inc_by(p.keepalives_sent);
        self.keepalive_interval
            .with_label_values(values)
            .set(p.keepalive_secs.unwrap_or(0.0));
        if let Some(pmtu) = p.pmtu {
            self.pmtu.with_label_values(values).set(i64::from(pmtu));
            self.pmtu_confirmed
                .with_label_values(values)
                .set(i64::from(p.pmtu_confirmed));
        }
        self.inner_mtu
            .with_label_values(values)
            .set(i64::from(p.inner_mtu));
        if let Some(rtt) = p.rtt_secs {
            self.rtt.with_label_values(values).set(rtt);
        }
        self.probes_sent
            .with_label_values(values)
            .inc_by(p.pmtu_probes_sent);
        self.probes_lost
            .with_label_values(values)
            .inc_by(p.pmtu_probes_lost);
        self.pmtu_changes
            .with_label_values(values)
            .inc_by(p.pmtu_changes);
    }

    /// All peers as one series each, for meshes too large for a label per
    /// peer: counters summed, `up` and `relayed` counted, MTUs and the
    /// keepalive interval the minimum, RTT and handshake age the maximum.
    fn folded(&self, peers: &[PeerRow]) {
        let none: &[&str] = &[];
        let sum = |f: fn(&PeerRow) -> u64| peers.iter().map(f).sum::<u64>();
        self.up
            .with_label_values(none)
            .set(peers.iter().filter(|p| p.up).count() as i64);
        self.relayed
            .with_label_values(none)
            .set(peers.iter().filter(|p| p.via.is_some()).count() as i64);
        self.rx_bytes
            .with_label_values(none)
            .inc_by(sum(|p| p.rx_bytes));
        self.tx_bytes
            .with_label_values(none)
            .inc_by(sum(|p| p.tx_bytes));
        self.rx_packets
            .with_label_values(none)
            .inc_by(sum(|p| p.rx_packets));
        self.tx_packets
            .with_label_values(none)
            .inc_by(sum(|p| p.tx_packets));
        self.handshakes
            .with_label_values(none)
            .inc_by(sum(|p| p.handshakes));
        self.handshake_failures
            .with_label_values(none)
            .inc_by(sum(|p| p.handshake_failures));
        self.endpoint_changes
            .with_label_values(none)
            .inc_by(sum(|p| p.endpoint_changes));
        self.keepalives
            .with_label_values(none)
            .inc_by(sum(|p| p.keepalives_sent));
        self.probes_sent
            .with_label_values(none)
            .inc_by(sum(|p| p.pmtu_probes_sent));
        self.probes_lost
            .with_label_values(none)
            .inc_by(sum(|p| p.pmtu_probes_lost));
        self.pmtu_changes
            .with_label_values(none)
            .inc_by(sum(|p| p.pmtu_changes));
        let fmax = |v: Option<f64>, w: Option<f64>| match (v, w) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(age) = peers.iter().map(|p| p.last_handshake_secs).fold(None, fmax) {
            self.handshake_age.with_label_values(none).set(age);
        }
        if let Some(rtt) = peers.iter().map(|p| p.rtt_secs).fold(None, fmax) {
            self.rtt.with_label_values(none).set(rtt);
        }
        if let Some(k) = peers
            .iter()
            .filter_map(|p| p.keepalive_secs)
            .min_by(f64::total_cmp)
        {
            self.keepalive_interval.with_label_values(none).set(k);
        }
        if let Some(pmtu) = peers.iter().filter_map(|p| p.pmtu).min() {
            self.pmtu.with_label_values(none).set(i64::from(pmtu));
            self.pmtu_confirmed.with_label_values(none).set(i64::from(
                peers.iter().all(|p| p.pmtu.is_none() || p.pmtu_confirmed),
            ));
        }
        if let Some(inner) = peers.iter().map(|p| p.inner_mtu).min() {
            self.inner_mtu.with_label_values(none).set(i64::from(inner));
        }
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_int(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
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
