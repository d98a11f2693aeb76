//! `weft status`: asks the running daemon for its [`Snapshot`] over the
//! admin socket and prints it, as a table for people or as JSON for
//! scripts.
//!
//! This module owns the table's layout and units; the snapshot itself is
//! built by the daemon (`status.rs`). It only reads and formats.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::admin::{self, CallError, Request, Response};
use crate::status::Snapshot;

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
        print!("{}", table(&snapshot));
    }
    Ok(())
}

/// The table `weft status` prints.
pub fn table(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let n = &snapshot.node;
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
    let nat = match (snapshot.nat.behind, &snapshot.nat.reflexive) {
        (Some(true), Some(r)) => format!("behind NAT, seen as {r}"),
        (Some(true), None) => "behind NAT".to_string(),
        (Some(false), _) => "no NAT".to_string(),
        (None, _) => "not measured yet".to_string(),
    };
    let mut lifetime = String::new();
    if let Some(s) = snapshot.nat.lifetime_secs {
        let _ = write!(lifetime, ", idle mapping lasts >= {s:.1}s");
        if let Some(b) = snapshot.nat.lifetime_below_secs {
            let _ = write!(lifetime, " (< {b:.1}s)");
        }
    }
    if snapshot.nat.searching {
        lifetime.push_str(", measuring");
    }
    if snapshot.nat.mapping_losses > 0 {
        let _ = write!(lifetime, ", {} mappings lost", snapshot.nat.mapping_losses);
    }
    if snapshot.nat.behind == Some(true) {
        match snapshot.nat.keepalive_secs {
            Some(k) => {
                let _ = write!(lifetime, "; keepalive every {k:.1}s");
            }
            None => lifetime.push_str("; keepalive off"),
        }
    }
    let _ = writeln!(out, "  NAT: {nat}{lifetime}");
    if let Some(m) = &snapshot.mesh {
        let rejected: u64 = m.gossip_rejected.iter().map(|(_, v)| v).sum();
        let _ = writeln!(
            out,
            "  network {}: {} members; gossip {} rejected; invites {} issued, {} used",
            m.network, m.members, rejected, m.invites_issued, m.invites_used
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let until = |t: u64| match t.checked_sub(now) {
            Some(left) => format!("expires in {}", human_duration(Duration::from_secs(left))),
            None => format!(
                "EXPIRED {} ago",
                human_duration(Duration::from_secs(now - t))
            ),
        };
        if let Some(c) = &m.certificate {
            let renewed = m
                .certificate_renewals
                .iter()
                .find(|(k, _)| k == "ok")
                .map_or(0, |(_, n)| *n);
            let failed: u64 = m
                .certificate_renewals
                .iter()
                .filter(|(k, _)| k != "ok")
                .map(|(_, n)| n)
                .sum();
            let _ = writeln!(
                out,
                "  certificate: serial {}, issuer {}, {} (renewed {renewed}, failed {failed})",
                c.serial,
                if c.issuer.is_empty() {
                    "unknown"
                } else {
                    &c.issuer
                },
                until(c.not_after)
            );
        }
        // The first entry is this node's own.
        for (name, t) in m.certificate_expiry.iter().skip(1) {
            let _ = writeln!(out, "    {name}: certificate {}", until(*t));
        }
    }
    if snapshot.relay.forwarded_packets > 0 {
        let _ = writeln!(
            out,
            "  relayed for others: {} packets, {}",
            snapshot.relay.forwarded_packets,
            human_bytes(snapshot.relay.forwarded_bytes)
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
    for p in &snapshot.peers {
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
    if snapshot.peers.is_empty() {
        let _ = writeln!(out, "(no peers yet)");
    }
    out
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
    use crate::status::PeerRow;

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
        let t = table(&s);
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
    fn table_shows_this_nodes_certificate_and_each_members_time_left() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let s = Snapshot {
            mesh: Some(crate::status::MeshStats {
                members: 3,
                certificate: Some(crate::status::CertificateInfo {
                    serial: 7,
                    issuer: "a1b2c3d4e5f60718".into(),
                    not_before: now - 100,
                    not_after: now + 2 * 86_400 + 30,
                    expired: false,
                }),
                certificate_expiry: vec![
                    ("alpha".into(), now + 2 * 86_400 + 30),
                    ("beta".into(), now + 3600 + 30),
                    ("gamma".into(), now - 90),
                ],
                certificate_renewals: vec![("ok".into(), 4), ("unreachable".into(), 2)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = table(&s);
        let own = t
            .lines()
            .find(|l| l.contains("certificate: serial 7"))
            .expect(&t);
        assert!(own.contains("issuer a1b2c3d4e5f60718"), "{own}");
        assert!(own.contains("expires in 2d 0h"), "{own}");
        assert!(own.contains("renewed 4, failed 2"), "{own}");
        assert!(t.contains("beta: certificate expires in 1h 0m"), "{t}");
        assert!(t.contains("gamma: certificate EXPIRED 1m 30s ago"), "{t}");
        // This node's own entry is not listed again among the members.
        assert!(!t.contains("alpha: certificate"), "{t}");
    }

    #[test]
    fn table_says_so_when_there_are_no_peers() {
        assert!(table(&Snapshot::default()).contains("(no peers yet)"));
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
