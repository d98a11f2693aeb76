//! What an operator watches: `/metrics` scraped by a real Prometheus server, `promtool check
//! metrics` on weft's output, and `weft status` (table, JSON, and a clear message when no
//! daemon runs). The metrics scenario crosses the ICMP black hole of the PMTU tests, so the
//! value Prometheus answers (exactly 1400) is one only weft's own probing can know.

use crate::harness::{
    overlay, poll, tcp_transfer, wait_reachable, weft_bin, Keypair, Lab, Netns, Node, NodeConfig,
    OneLink, PeerConfig, RouterPath, DEFAULT_PORT, MIB,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The router–B link's MTU: the edge's path MTU.
const BOTTLENECK: u16 = 1400;
/// Where weft serves metrics by default (inside each node's namespace).
const METRICS: &str = "127.0.0.1:9820";
/// Where the test's Prometheus server listens, in A's namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// GETs `path` from `addr` inside `ns` over plain HTTP/1.0; returns (status, body).
fn http_get(ns: &Netns, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr = addr.to_owned();
    let path = path.to_owned();
    ns.run(move || {
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_owned()))
    })
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the single sample an instant query returns, if exactly one.
fn query_value(ns: &Netns, promql: &str) -> Option<f64> {
    let (status, body) = http_get(
        ns,
        PROMETHEUS,
        &format!("/api/v1/query?query={}", encode(promql)),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_a_node_and_answers_the_path_mtu_of_its_edge_across_a_black_hole() {
    let lab = Lab::new("prom");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    net.drop_icmp_too_big();
    let (key_a, key_b) = (Keypair::generate(&lab, "a"), Keypair::generate(&lab, "b"));
    let config_a = NodeConfig::new("a", &key_a, 1).peer(
        PeerConfig::new("b", &key_b, 2).endpoint(format!("{}:{DEFAULT_PORT}", RouterPath::B)),
    );
    let config_b = NodeConfig::new("b", &key_b, 2).peer(
        PeerConfig::new("a", &key_a, 1).endpoint(format!("{}:{DEFAULT_PORT}", RouterPath::A)),
    );
    let node_a = Node::start(&lab, &net.a, &config_a);
    let _node_b = Node::start(&lab, &net.b, &config_b);
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    node_a
        .log()
        .wait_pmtu("b", BOTTLENECK, Duration::from_secs(10));
    tcp_transfer(&net.a, &net.b, b4.into(), 5201, MIB, 0x5eed_0901);

    // weft's own output passes Prometheus' linter with nothing to say.
    let (status, text) = http_get(&net.a, METRICS, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("weft_path_mtu_bytes{peer=\"b\"} 1400"),
        "{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: tests/run.sh does it");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics complained:\n{said}"
    );
    println!(
        "metrics: {} series, {} bytes; promtool check metrics: clean",
        text.lines().filter(|l| !l.starts_with('#')).count(),
        text.len()
    );

    // A real Prometheus server in A's namespace scrapes the node every second.
    let config = lab.dir().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: weft\n    static_configs:\n      - targets: [\"{METRICS}\"]\n"
        ),
    )
    .expect("write prometheus.yml");
    let storage = lab.dir().join("prometheus-data");
    let log = std::fs::File::create(lab.dir().join("prometheus.log")).expect("prometheus log");
    let mut server = net
        .a
        .command("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian package prometheus) must be installed: tests/run.sh does it");
    let started = Instant::now();
    let answered = poll(Duration::from_secs(60), Duration::from_millis(250), || {
        query_value(&net.a, "weft_path_mtu_bytes{job=\"weft\",peer=\"b\"}")
    });
    let inner = query_value(&net.a, "weft_path_inner_mtu_bytes{peer=\"b\"}");
    let up = query_value(&net.a, "weft_peer_up{peer=\"b\"}");
    let tx = query_value(&net.a, "weft_peer_tx_bytes_total{peer=\"b\"}");
    let _ = server.kill();
    let _ = server.wait();
    let tail = std::fs::read_to_string(lab.dir().join("prometheus.log")).unwrap_or_default();
    let pmtu = answered.unwrap_or_else(|| {
        panic!("Prometheus never answered weft_path_mtu_bytes; its log:\n{tail}")
    });
    println!(
        "prometheus: answered weft_path_mtu_bytes{{peer=\"b\"}} = {pmtu} after {} ms; inner {inner:?}, up {up:?}, tx bytes {tx:?}",
        started.elapsed().as_millis()
    );
    assert_eq!(pmtu, f64::from(BOTTLENECK));
    assert_eq!(inner, Some(f64::from(BOTTLENECK - 60)));
    assert_eq!(up, Some(1.0));
    assert!(
        tx.is_some_and(|b| b >= MIB as f64),
        "tx bytes {tx:?} after a 1 MiB transfer"
    );
}

/// Runs `weft status ARGS` on the host (the admin socket is a file, whatever the namespace).
fn weft_status(args: &[&str]) -> std::process::Output {
    Command::new(weft_bin())
        .arg("status")
        .args(args)
        .output()
        .expect("run weft status")
}

#[test]
fn weft_status_shows_each_peer_as_a_table_and_as_json_and_says_when_the_daemon_is_not_running() {
    let lab = Lab::new("status");
    let net = OneLink::new(&lab);
    let (config_a, config_b) = OneLink::configs(&lab);
    let mut node_a = Node::start(&lab, &net.a, &config_a);
    let _node_b = Node::start(&lab, &net.b, &config_b);
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));
    tcp_transfer(&net.a, &net.b, b4.into(), 5201, MIB, 0x5eed_0901);
    let config_file = lab.dir().join("a.toml");
    let config = config_file.to_str().expect("utf-8 path");

    // Both nodes' configs share a directory; each has its own socket, named after its file.
    assert!(lab.dir().join("a.sock").exists() && lab.dir().join("b.sock").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(lab.dir().join("a.sock"))
            .expect("socket")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the admin socket is for its owner only"
    );

    let out = weft_status(&["--config", config]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("weft status:\n{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("b "))
        .unwrap_or_else(|| panic!("no row for peer b:\n{table}"));
    for cell in [
        b4.to_string(),
        format!("{}:{DEFAULT_PORT}", OneLink::B),
        "up".into(),
        "ago".into(),
    ] {
        assert!(row.contains(&cell), "{cell:?} missing in {row:?}");
    }

    let out = weft_status(&["--config", config, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let peer = &json["peers"][0];
    assert_eq!(peer["name"], "b");
    assert_eq!(peer["up"], true);
    assert!(
        peer["tx_bytes"].as_u64().unwrap_or(0) >= MIB as u64,
        "{peer}"
    );
    assert!(peer["pmtu"].as_u64().is_some(), "{peer}");
    assert_eq!(json["node"]["interface"], "weft0");

    node_a.stop();
    let out = weft_status(&["--config", config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("weft: error: the weft daemon is not running") && err.lines().count() == 1,
        "{err}"
    );
}

/// The watchdog is the last resort against a main loop that stops turning: it must end the
/// process with a non-zero status (so a supervisor restarts it) and say why, with the queue
/// lengths. The daemon's test hook stops its loop 2 s after start.
#[test]
fn a_node_whose_main_loop_stalls_is_ended_by_the_watchdog_with_its_queue_states() {
    let lab = Lab::new("watchdog");
    let net = OneLink::new(&lab);
    let (a, _) = OneLink::configs(&lab);
    let config = lab.dir().join("a.toml");
    std::fs::write(&config, a.to_toml()).expect("write config");
    let log = lab.dir().join("a.log");
    let log_file = std::fs::File::create(&log).expect("create log");
    let started = Instant::now();
    let mut child = net
        .a
        .command(&weft_bin())
        .args(["up", "--config"])
        .arg(&config)
        .env("WEFT_TEST_STALL_MAIN_LOOP_AFTER_SECS", "2")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn weft up");
    // Stall at 2 s, fired 5 s later: give it 20 s in all.
    let status = poll(Duration::from_secs(20), Duration::from_millis(100), || {
        child.try_wait().ok().flatten()
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the stalled node was still running after 20 s:\n{text}");
    };
    let after = started.elapsed();
    println!(
        "watchdog: the stalled node exited with {status} {:.1} s after start",
        after.as_secs_f64()
    );
    assert_eq!(status.code(), Some(70), "exit status; log:\n{text}");
    assert!(
        after >= Duration::from_secs(7),
        "exited after {after:?}, before the loop had been stalled 5 s"
    );
    let line = text
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("watchdog"))
        .unwrap_or_else(|| panic!("no watchdog ERROR line in the log:\n{text}"));
    for queue in ["admin=", "metrics="] {
        assert!(line.contains(queue), "{queue} missing from {line:?}");
    }
    // The stall is a wait (the test parks the main thread), and the report
    // says so: asleep, and next to no CPU spent since the last turn.
    assert!(
        line.contains("main_thread_state=S"),
        "no sleeping main thread in {line:?}"
    );
    let cpu_ms: u64 = line
        .split("main_thread_cpu_ms_since_turn=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no main-thread CPU time in {line:?}"));
    assert!(cpu_ms < 500, "a parked thread spent {cpu_ms} ms");
}
