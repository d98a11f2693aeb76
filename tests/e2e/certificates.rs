//! Certificates over time: members renew their own certificates from an authority holder
//! while traffic flows, a member that cannot renew is dropped from everyone's data plane when
//! its certificate runs out and comes back once it renews, and a member restarted with a
//! certificate that expired while it was down renews and rejoins without a new token. The
//! networks here issue certificates for 60 s, so several renewals fit in minutes.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_protocol::membership::{Certificate, SignedCertificate};

use crate::harness::{ping, ping_in_background, poll, Bridge, Fleet, Lab};

/// The certificate lifetime of the networks in this file.
const LIFETIME: &str = "60s";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The certificate in force for the member whose config is `config` (its `node.cert`).
fn certificate(config: &Path) -> Certificate {
    let path = config.with_file_name("node.cert");
    let text = std::fs::read_to_string(&path).expect("read node.cert");
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .expect("node.cert is base64");
    let signed = SignedCertificate::from_bytes(&bytes).expect("node.cert decodes");
    postcard::from_bytes(&signed.bytes).expect("certificate decodes")
}

fn count(log: &str, message: &str) -> usize {
    log.lines().filter(|l| l.contains(message)).count()
}

#[test]
fn three_members_renew_every_minute_under_traffic_without_dropping_a_session() {
    let lab = Lab::new("cert-renew");
    let bridge = Bridge::new(&lab, "", 3);
    let fleet = Fleet::enroll_with(&lab, &bridge, &["--certificate-lifetime", LIFETIME]);
    let (n02, n03) = (1, 2);
    let target = fleet.members()[n03].overlay_v4;
    crate::harness::wait_reachable(bridge.ns(n02), target.into(), Duration::from_secs(20));
    let serials: Vec<u64> = fleet
        .members()
        .iter()
        .map(|m| certificate(&m.config).serial)
        .collect();
    // 4 minutes, one ping every 100 ms.
    let pings = ping_in_background(bridge.ns(n02), target.into(), 2400);
    let stats = pings.finish(Duration::from_secs(300));
    let mut renewals = Vec::new();
    for (i, m) in fleet.members().iter().enumerate() {
        let log = fleet.log(i);
        let renewed = count(&log, "certificate renewed");
        let cert = certificate(&m.config);
        println!(
            "certificates: {} renewed {renewed} times (serial {} -> {}), expired peers dropped: {}",
            m.name,
            serials[i],
            cert.serial,
            count(&log, "certificate expired; removed")
        );
        assert!(cert.serial > serials[i], "{}: serial never changed", m.name);
        assert_eq!(
            count(&log, "certificate expired; removed"),
            0,
            "{}: a member's certificate ran out although it renews",
            m.name
        );
        renewals.push(renewed);
    }
    println!(
        "certificates: {} pings, {} lost, renewals per member {renewals:?}",
        stats.transmitted,
        stats.lost()
    );
    assert!(
        renewals.iter().all(|&r| r >= 3),
        "every member renews at least 3 times in 4 minutes: {renewals:?}"
    );
    assert!(stats.lost() <= 1, "{} pings lost", stats.lost());
}

#[test]
fn a_member_cut_off_from_every_authority_is_dropped_at_expiry_and_back_once_it_renews() {
    let lab = Lab::new("cert-expiry");
    let bridge = Bridge::new(&lab, "", 3);
    let fleet = Fleet::enroll_with(&lab, &bridge, &["--certificate-lifetime", LIFETIME]);
    let (n01, n02, n03) = (0, 1, 2);
    let target = fleet.members()[n02].overlay_v4;
    crate::harness::wait_reachable(bridge.ns(n03), target.into(), Duration::from_secs(20));
    // n02 can no longer speak to the only authority holder's control plane, either way.
    let holder = &fleet.members()[n01];
    let rules = [
        vec![
            "OUTPUT".to_string(),
            "-p".into(),
            "udp".into(),
            "-d".into(),
            holder.underlay.to_string(),
            "--dport".into(),
            holder.control_port.to_string(),
            "-j".into(),
            "DROP".into(),
        ],
        vec![
            "INPUT".to_string(),
            "-p".into(),
            "udp".into(),
            "-s".into(),
            holder.underlay.to_string(),
            "--sport".into(),
            holder.control_port.to_string(),
            "-j".into(),
            "DROP".into(),
        ],
    ];
    let iptables = |op: &str, rule: &[String]| {
        let mut argv = vec!["iptables", op];
        argv.extend(rule.iter().map(String::as_str));
        bridge.ns(n02).exec(&argv);
    };
    for r in &rules {
        iptables("-A", r);
    }
    // A renewal already on its way may still land: read the certificate once it cannot.
    std::thread::sleep(Duration::from_secs(2));
    let expires = certificate(&fleet.members()[n02].config).not_after;
    let wait = expires.saturating_sub(now_unix()) + 8;
    println!("expiry: n02's certificate runs out in {} s", wait - 8);
    let pings = ping_in_background(bridge.ns(n03), target.into(), (wait * 10) as u32);
    // When the last reply arrived, to within the 50 ms of this loop.
    let until = Instant::now() + Duration::from_secs(wait);
    let (mut last, mut last_reply_unix) = (None, 0.0);
    while Instant::now() < until {
        let now = pings.last_replied();
        if now != last {
            last = now;
            last_reply_unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = pings.finish(Duration::from_secs(10));
    let after_expiry = last_reply_unix - expires as f64;
    println!(
        "expiry: last reply {after_expiry:+.1} s from expiry ({} of {} answered)",
        stats.received, stats.transmitted
    );
    assert!(
        last.is_some(),
        "n02 never answered before its certificate ran out"
    );
    assert!(
        after_expiry <= 5.0,
        "n02 was still reachable {after_expiry:.1} s after its certificate expired"
    );
    assert!(
        after_expiry >= -1.0,
        "n02 stopped answering {:.1} s before its certificate expired",
        -after_expiry
    );
    // The authority is reachable again: n02 renews and is back.
    for r in &rules {
        iptables("-D", r);
    }
    let lifted = Instant::now();
    let back = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        (ping(bridge.ns(n03), target.into(), 1).received == 1).then_some(())
    });
    let took = lifted.elapsed();
    println!(
        "expiry: n02 reachable again {:.1} s after the drop rule was lifted",
        took.as_secs_f64()
    );
    assert!(
        back.is_some(),
        "n02 not reachable 30 s after it could renew again"
    );
    assert!(
        took <= Duration::from_secs(10),
        "n02 took {took:?} to come back"
    );
    assert!(count(&fleet.log(n02), "certificate renewed") >= 1);
}

#[test]
fn a_member_restarted_with_an_expired_certificate_renews_and_rejoins_without_a_token() {
    let lab = Lab::new("cert-restart");
    let bridge = Bridge::new(&lab, "", 3);
    let mut fleet = Fleet::enroll_with(&lab, &bridge, &["--certificate-lifetime", LIFETIME]);
    let (n02, n03) = (1, 2);
    let target = fleet.members()[n03].overlay_v4;
    crate::harness::wait_reachable(bridge.ns(n02), target.into(), Duration::from_secs(20));
    assert_eq!(fleet.stop_one(n03), None, "n03 stops cleanly");
    let expires = certificate(&fleet.members()[n03].config).not_after;
    let wait = expires.saturating_sub(now_unix()) + 3;
    println!("restart: n03 down until {wait} s from now, past its certificate's end");
    std::thread::sleep(Duration::from_secs(wait));
    assert!(now_unix() > expires);
    let renewed_before = count(&fleet.log(n03), "certificate renewed");
    let started = Instant::now();
    fleet.start_one(n03);
    let back = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        (ping(bridge.ns(n02), target.into(), 1).received == 1).then_some(())
    });
    let took = started.elapsed();
    println!(
        "restart: n03 renewed and reachable {:.1} s after its start",
        took.as_secs_f64()
    );
    assert!(back.is_some(), "n03 not reachable 30 s after it started");
    assert!(count(&fleet.log(n03), "certificate renewed") > renewed_before);
    assert!(certificate(&fleet.members()[n03].config).not_after > now_unix());
}

/// The by-hand benchmark behind `tests/bench/renewal.sh`: 20 renewals forced with `weft renew`
/// on a member of a two-member network; prints the latency from request to certificate in use
/// (the daemon's own measure, and `weft renew` end to end) and the control-plane bytes each
/// renewal adds over the idle traffic (IP packets on the control port, both ways, at the
/// member that renews).
#[test]
#[ignore = "benchmark: run by tests/bench/renewal.sh"]
fn renewal_bench() {
    const RENEWALS: usize = 20;
    let lab = Lab::new("cert-bench");
    let bridge = Bridge::new(&lab, "", 2);
    // An hour: no renewal of its own during the run.
    let fleet = Fleet::enroll_with(&lab, &bridge, &["--certificate-lifetime", "1h"]);
    let n02 = 1;
    let m = &fleet.members()[n02];
    crate::harness::wait_reachable(
        bridge.ns(n02),
        fleet.members()[0].overlay_v4.into(),
        Duration::from_secs(20),
    );
    let bytes = || crate::harness::TwoNat::counter(bridge.ns(n02), "weft-scale-control").1;
    // The idle control traffic, to subtract.
    let idle = Duration::from_secs(10);
    let b0 = bytes();
    std::thread::sleep(idle);
    let idle_rate = (bytes() - b0) as f64 / idle.as_secs_f64();
    let config = m.config.to_str().expect("utf-8 path");
    let mut wall = Vec::new();
    let b1 = bytes();
    let started = Instant::now();
    for _ in 0..RENEWALS {
        let t = Instant::now();
        let (ok, out, err) = crate::mesh::weft(bridge.ns(n02), &["renew", "--config", config]);
        assert!(ok, "weft renew failed: {err}");
        assert!(out.contains("renewed by n01"), "{out}");
        wall.push(t.elapsed());
    }
    let spent = started.elapsed();
    let added = (bytes() - b1) as f64 - idle_rate * spent.as_secs_f64();
    let mut took: Vec<u64> = fleet
        .log(n02)
        .lines()
        .filter(|l| l.contains("certificate renewed"))
        .filter_map(|l| {
            l.split("took_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(took.len(), RENEWALS, "one renewal logged per request");
    took.sort_unstable();
    wall.sort_unstable();
    println!(
        "ROW renewals={RENEWALS} daemon_ms_median={} daemon_ms_max={} cli_ms_median={} \
         cli_ms_max={} bytes_per_renewal={:.0}",
        took[RENEWALS / 2],
        took[RENEWALS - 1],
        wall[RENEWALS / 2].as_millis(),
        wall[RENEWALS - 1].as_millis(),
        added / RENEWALS as f64
    );
}
