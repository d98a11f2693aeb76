//! The deploy kit under `deploy/` checked with the tools operators run it with: promtool checks
//! the scrape config, the alert rules and their unit tests; the Grafana dashboard is parsed and
//! every metric it and the alerts name must be one of weft's exported metrics ([`METRICS`], the
//! contract the operator's guide documents); `install.sh` installs into a temp `DESTDIR` and
//! adopts a directory `weft init` wrote; `systemd-analyze verify` reads the unit; PyYAML reads
//! the DaemonSet; the Dockerfile is held to what the guide says of it (no image can be built
//! here); and a node runs as an unprivileged user holding only CAP_NET_ADMIN, as the unit runs
//! it. A test skips, saying why, only when the tool it drives is not installed.

use crate::harness::{overlay, ping, wait_reachable, weft_bin, Lab, Node, OneLink};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Every metric weft exports (without the `_bucket`-style suffixes, which it has none of). The
/// alerts, the dashboard and the operator's guide may name these and no others.
const METRICS: &[&str] = &[
    "weft_peer_up",
    "weft_peer_rx_bytes_total",
    "weft_peer_tx_bytes_total",
    "weft_peer_rx_packets_total",
    "weft_peer_tx_packets_total",
    "weft_peer_handshakes_total",
    "weft_peer_handshake_failures_total",
    "weft_peer_last_handshake_age_seconds",
    "weft_peer_endpoint_changes_total",
    "weft_peer_keepalives_sent_total",
    "weft_peer_keepalive_interval_seconds",
    "weft_peer_relayed",
    "weft_path_mtu_bytes",
    "weft_path_inner_mtu_bytes",
    "weft_path_mtu_confirmed",
    "weft_path_rtt_seconds",
    "weft_pmtu_probes_sent_total",
    "weft_pmtu_probes_lost_total",
    "weft_pmtu_changes_total",
    "weft_pmtu_hints_total",
    "weft_pmtu_hints_refuted_total",
    "weft_build_info",
    "weft_peers",
    "weft_members",
    "weft_datagrams_dropped_total",
    "weft_cookie_replies_sent_total",
    "weft_handshake_dh_total",
    "weft_gossip_published_total",
    "weft_gossip_received_total",
    "weft_gossip_rejected_total",
    "weft_gossip_publish_failed_total",
    "weft_control_connections_refused_total",
    "weft_queue_dropped_total",
    "weft_control_connections",
    "weft_control_neighbours_wanted",
    "weft_invites_issued_total",
    "weft_invites_used_total",
    "weft_invites_refused_total",
    "weft_store_write_errors_total",
    "weft_store_corrupt_records",
    "weft_certificate_expiry_timestamp_seconds",
    "weft_certificate_lifetime_seconds",
    "weft_certificate_renewals_total",
    "weft_certificate_renewals_answered_total",
    "weft_members_expired_total",
    "weft_authorities",
    "weft_nat_behind",
    "weft_nat_mapping_lifetime_seconds",
    "weft_nat_mapping_losses_total",
    "weft_relay_forwarded_packets_total",
    "weft_relay_forwarded_bytes_total",
];

/// The alerts operators are promised (docs/operations.md lists them).
const ALERTS: &[&str] = &[
    "WeftNodeDown",
    "WeftPeerUnreachable",
    "WeftHandshakeFailures",
    "WeftPathMtuBelowIPv6Minimum",
    "WeftGossipRejections",
    "WeftStoreWriteErrors",
    "WeftRelayInUse",
    "WeftQueueDrops",
    "WeftControlPlaneIsolated",
    "WeftCertificateRenewalFailing",
    "WeftCertificateExpiresSoon",
];

/// The repository checkout the test binary was built from.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the node crate sits in the repository root")
        .to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Whether `tool` is on PATH; if not, says which test skips and why.
fn tool_present(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        println!("SKIPPED {test}: `{tool}` is not installed");
    }
    found
}

/// Runs `cmd`, panicking with its output unless it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every `weft_…` word in `text`: metric names, and nothing else in the files checked here
/// except the crate names a log filter may mention.
fn weft_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("weft_") {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        if !preceded_by_word {
            names.insert(word);
        }
    }
    names
}

fn unknown_metrics(names: &BTreeSet<String>) -> Vec<&String> {
    names
        .iter()
        .filter(|n| !METRICS.contains(&n.as_str()))
        .collect()
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules() {
    if !tool_present("promtool", "promtool checks") {
        return;
    }
    run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(deploy("prometheus/alerts.yml")),
    );
    // The config names alerts.yml relative to itself, so promtool reads the rules from there.
    run_ok(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(deploy("prometheus/prometheus.yml")),
    );
}

#[test]
fn every_alert_fires_and_stays_quiet_as_its_promtool_unit_tests_expect() {
    let rules = read(&deploy("prometheus/alerts.yml"));
    let tests = read(&deploy("prometheus/alerts_test.yml"));
    let defined: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::trim)
        .collect();
    for alert in ALERTS {
        assert!(defined.contains(alert), "alerts.yml has no {alert}");
    }
    // Each test step is `alertname: X` followed by `exp_alerts: []` (must stay quiet) or
    // `exp_alerts:` and a list (must fire).
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for pair in lines.windows(2) {
        if let Some(name) = pair[0].strip_prefix("alertname: ") {
            match pair[1] {
                "exp_alerts: []" => quiet.insert(name.trim()),
                "exp_alerts:" => fires.insert(name.trim()),
                other => panic!("alertname {name} followed by {other:?}"),
            };
        }
    }
    for alert in &defined {
        assert!(fires.contains(alert), "no unit test where {alert} fires");
        assert!(
            quiet.contains(alert),
            "no unit test where {alert} stays quiet"
        );
    }
    let named = weft_names(&rules);
    let unknown = unknown_metrics(&named);
    assert!(
        unknown.is_empty(),
        "alerts.yml names metrics weft does not export: {unknown:?}"
    );

    if !tool_present("promtool", "promtool test rules") {
        return;
    }
    let out = run_ok(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(deploy("prometheus/alerts_test.yml")),
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn the_dashboard_is_grafana_json_whose_queries_name_only_exported_metrics() {
    let text = read(&deploy("grafana/weft-dashboard.json"));
    let dash = json::parse(&text).unwrap_or_else(|e| panic!("weft-dashboard.json: {e}"));
    let schema = dash.get("schemaVersion").and_then(json::Value::as_f64);
    assert!(
        schema.is_some_and(|v| v >= 36.0),
        "schemaVersion {schema:?} is older than 36"
    );
    let variables: BTreeMap<&str, &str> = dash
        .get("templating")
        .and_then(|t| t.get("list"))
        .and_then(json::Value::as_array)
        .expect("templating.list")
        .iter()
        .filter_map(|v| Some((v.get("name")?.as_str()?, v.get("type")?.as_str()?)))
        .collect();
    assert_eq!(
        variables.get("datasource"),
        Some(&"datasource"),
        "{variables:?}"
    );
    assert_eq!(variables.get("instance"), Some(&"query"), "{variables:?}");
    assert_eq!(variables.get("peer"), Some(&"query"), "{variables:?}");

    let panels = dash
        .get("panels")
        .and_then(json::Value::as_array)
        .expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel
            .get("title")
            .and_then(json::Value::as_str)
            .unwrap_or("?");
        let id = panel
            .get("id")
            .and_then(json::Value::as_f64)
            .expect("panel id");
        assert!(ids.insert(id as i64), "panel id {id} used twice");
        if panel.get("type").and_then(json::Value::as_str) == Some("row") {
            continue;
        }
        let uid = panel
            .get("datasource")
            .and_then(|d| d.get("uid"))
            .and_then(json::Value::as_str);
        assert_eq!(
            uid,
            Some("${datasource}"),
            "panel {title:?} ignores the datasource variable"
        );
        let targets = panel
            .get("targets")
            .and_then(json::Value::as_array)
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no queries");
        for t in targets {
            let expr = t
                .get("expr")
                .and_then(json::Value::as_str)
                .unwrap_or_else(|| panic!("a query of panel {title:?} has no expr"));
            exprs.push(expr.to_owned());
        }
    }
    let used = weft_names(&exprs.join("\n"));
    let unknown = unknown_metrics(&used);
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics weft does not export: {unknown:?}"
    );
    let unused: Vec<_> = METRICS.iter().filter(|m| !used.contains(**m)).collect();
    assert!(
        unused.is_empty(),
        "the dashboard shows nothing of {unused:?}"
    );
    println!(
        "dashboard: {} panels, {} queries, {} metrics",
        panels.len(),
        exprs.len(),
        used.len()
    );
}

#[test]
fn the_operations_guide_explains_every_metric_and_alert_and_names_no_other_metric() {
    let guide = read(&repo().join("docs/operations.md"));
    let named = weft_names(&guide);
    for metric in METRICS {
        assert!(
            named.contains(*metric),
            "docs/operations.md does not explain {metric}"
        );
    }
    // Log filters name the crates (weft_protocol, weft_node, weft_store); those are no metrics.
    let unknown: Vec<_> = unknown_metrics(&named)
        .into_iter()
        .filter(|n| !["weft_protocol", "weft_node", "weft_store"].contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/operations.md names metrics weft does not export: {unknown:?}"
    );
    for alert in ALERTS {
        assert!(
            guide.contains(alert),
            "docs/operations.md does not explain {alert}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} was not installed: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `deploy/install.sh ARGS`, with `DESTDIR` in its environment if given.
fn install_sh(args: &[&str], destdir_env: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(deploy("install.sh"))
        .args(args)
        .env_remove("DESTDIR");
    if let Some(dir) = destdir_env {
        cmd.env("DESTDIR", dir);
    }
    run_ok(&mut cmd)
}

#[test]
fn install_sh_installs_into_a_destdir_twice_and_adopts_what_weft_init_wrote() {
    let lab = Lab::new("install");
    let root = lab.dir().join("root");
    let dummy = lab.dir().join("weft-dummy");
    std::fs::write(&dummy, "#!/bin/sh\necho dummy weft\n").expect("write dummy binary");

    let help = run_ok(Command::new("bash").arg(deploy("install.sh")).arg("--help"));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--binary", "--prefix", "--destdir", "--adopt"] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    let bad = Command::new("bash")
        .arg(deploy("install.sh"))
        .arg("--frobnicate")
        .output()
        .expect("run install.sh");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown flag must be refused"
    );

    let args = [
        "--binary",
        dummy.to_str().expect("UTF-8 path"),
        "--prefix",
        "/usr",
    ];
    let first = install_sh(&args, Some(&root));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("weft init --name") && stdout.contains("weft join"),
        "install.sh does not print the next steps:\n{stdout}"
    );
    // Idempotent: a second run over the first succeeds and leaves the same tree.
    install_sh(&args, Some(&root));

    let bin = root.join("usr/bin/weft");
    assert_eq!(mode(&bin), 0o755, "binary mode");
    assert_eq!(
        read(&bin),
        read(&dummy),
        "the installed binary is not the one given"
    );
    let unit = root.join("etc/systemd/system/weft.service");
    assert_eq!(mode(&unit), 0o644, "unit mode");
    let unit_text = read(&unit);
    assert!(
        unit_text.contains("ExecStart=/usr/bin/weft up --config /etc/weft/weft.toml"),
        "the unit does not run the installed binary:\n{unit_text}"
    );
    assert!(unit_text.contains("Documentation=file:/usr/share/doc/weft/operations.md"));
    assert_eq!(mode(&root.join("usr/share/doc/weft/operations.md")), 0o644);
    let etc = root.join("etc/weft");
    assert_eq!(mode(&etc), 0o700, "/etc/weft mode");
    assert_eq!(
        mode(&root.join("var/lib/weft")),
        0o700,
        "/var/lib/weft mode"
    );
    assert!(
        std::fs::read_dir(&etc)
            .expect("read /etc/weft")
            .next()
            .is_none(),
        "/etc/weft must stay empty for `weft init` and `weft join`"
    );

    // `weft init` fills the empty /etc/weft; --adopt moves its store and admin socket to
    // where the unit keeps them.
    run_ok(
        Command::new(weft_bin())
            .args([
                "init",
                "--name",
                "db1",
                "--network",
                "100.64.0.0/24",
                "--dir",
            ])
            .arg(&etc),
    );
    assert!(etc.join("state").is_dir(), "weft init wrote no store");
    let adopt = ["--adopt", "--destdir", root.to_str().expect("UTF-8 path")];
    install_sh(&adopt, None);
    let config = read(&etc.join("weft.toml"));
    assert!(
        config.contains("\nstate = \"/var/lib/weft/state\"\n"),
        "{config}"
    );
    assert!(
        config.contains("\nadmin_socket = \"/run/weft/weft.sock\"\n"),
        "{config}"
    );
    assert!(!etc.join("state").exists(), "the store stayed in /etc/weft");
    let store = root.join("var/lib/weft/state");
    assert!(
        std::fs::read_dir(&store)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "the store did not arrive in /var/lib/weft/state"
    );
    assert_eq!(mode(&etc), 0o700, "/etc/weft mode after adopting");
    assert_eq!(
        mode(&etc.join("private.key")),
        0o600,
        "key mode after adopting"
    );
    // Adopting again changes nothing.
    install_sh(&adopt, None);
    assert_eq!(
        read(&etc.join("weft.toml")),
        config,
        "a second --adopt changed the config"
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !tool_present("systemd-analyze", "systemd unit check") {
        return;
    }
    let lab = Lab::new("unit");
    // verify checks that ExecStart names an executable: point it at the binary under test.
    let unit = read(&deploy("systemd/weft.service"));
    assert!(unit.contains("ExecStart=/usr/local/bin/weft up --config /etc/weft/weft.toml"));
    let file = lab.dir().join("weft.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/weft", &weft_bin())).expect("write unit");
    let out = run_ok(Command::new("systemd-analyze").arg("verify").arg(&file));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify warns:\n{warnings}"
    );
    for line in [
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "DeviceAllow=/dev/net/tun rw",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallFilter=@system-service",
        "ProtectSystem=strict",
        "StateDirectory=weft",
        "StateDirectoryMode=0700",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}

/// Checks the DaemonSet with PyYAML: what it must hold, as a Python program that exits 1 with
/// the reason.
const DAEMONSET_CHECK: &str = r#"
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
ds = next(d for d in docs if d["kind"] == "DaemonSet")
pod = ds["spec"]["template"]
spec = pod["spec"]
def fail(why):
    print(why); sys.exit(1)
if not spec.get("hostNetwork"): fail("not hostNetwork")
ann = pod["metadata"]["annotations"]
if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "9820":
    fail("scrape annotations: %r" % ann)
main = next(c for c in spec["containers"] if c["name"] == "weft")
caps = main["securityContext"]["capabilities"]
if caps.get("add") != ["NET_ADMIN"] or caps.get("drop") != ["ALL"]: fail("capabilities: %r" % caps)
if main["securityContext"].get("privileged"): fail("privileged")
if main["args"][:1] != ["up"]: fail("args: %r" % main["args"])
probe = main["livenessProbe"]["exec"]["command"]
if probe[:2] != ["weft", "status"]: fail("liveness probe: %r" % probe)
res = main["resources"]
if not res.get("requests") or not res.get("limits"): fail("resources: %r" % res)
mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
vols = {v["name"]: v for v in spec["volumes"]}
if mounts.get("tun") != "/dev/net/tun" or vols["tun"]["hostPath"]["path"] != "/dev/net/tun":
    fail("no /dev/net/tun")
if "hostPath" not in vols[[n for n, p in mounts.items() if p == "/var/lib/weft"][0]]:
    fail("state is not on a hostPath")
if not any(v.get("secret") for v in vols.values()): fail("no Secret")
if not any(e.get("configMapRef") for e in main.get("envFrom", [])): fail("no ConfigMap")
config = main["args"][main["args"].index("--config") + 1]
if config not in probe: fail("the probe asks another node than %s" % config)
print("daemonset: %d documents, hostNetwork, NET_ADMIN only" % len(docs))
"#;

#[test]
fn the_kubernetes_manifest_is_yaml_with_a_host_network_net_admin_only_daemonset() {
    if !tool_present("python3", "Kubernetes manifest check") {
        return;
    }
    let has_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_yaml {
        println!(
            "SKIPPED Kubernetes manifest check: PyYAML is not installed (Debian: python3-yaml)"
        );
        return;
    }
    let out = run_ok(
        Command::new("python3")
            .args(["-c", DAEMONSET_CHECK])
            .arg(deploy("kubernetes/daemonset.yaml")),
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_weft_up_with_a_status_health_check() {
    // No image can be built here (no registry); this holds the Dockerfile to what the guide
    // says about it.
    let text = read(&deploy("container/Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let from: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "two stages: {from:?}");
    assert!(
        from[0].contains("rust:") && from[0].contains("bookworm AS build"),
        "{from:?}"
    );
    assert_eq!(*from[1], "FROM debian:bookworm-slim");
    assert!(text.contains("--no-install-recommends iproute2 ca-certificates"));
    assert!(lines.contains(&r#"ENTRYPOINT ["weft"]"#));
    assert!(lines.contains(&r#"CMD ["up", "--config", "/var/lib/weft/node/weft.toml"]"#));
    assert!(lines.contains(&r#"VOLUME ["/var/lib/weft"]"#));
    assert!(text.contains(r#"CMD ["weft", "status", "--config", "/var/lib/weft/node/weft.toml"]"#));
    let expose = lines
        .iter()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("EXPOSE");
    for port in ["51820/udp", "51821/udp", "51821/tcp", "9820/tcp"] {
        assert!(
            expose.split_whitespace().any(|p| p == port),
            "{expose} lacks {port}"
        );
    }
    // Files copied from the build context exist in it.
    for l in &lines {
        if let Some(rest) = l.strip_prefix("COPY ") {
            if rest.starts_with("--from") || rest.starts_with(". ") {
                continue;
            }
            let src = rest.split_whitespace().next().expect("COPY source");
            assert!(
                repo().join(src).exists(),
                "COPY {src}: no such file in the checkout"
            );
        }
    }
}

/// A `weft up` started by the test itself, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn stop(&mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        for _ in 0..150 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait for weft")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

#[test]
fn a_node_running_as_an_unprivileged_user_with_only_cap_net_admin_tunnels_and_stops_cleanly() {
    if !tool_present("setpriv", "unprivileged node")
        || !tool_present("unshare", "unprivileged node")
    {
        return;
    }
    let lab = Lab::new("unprivileged");
    let net = OneLink::new(&lab);
    let (config_a, config_b) = OneLink::configs(&lab);

    // Node a as the unit runs it: another user than root (nobody, 65534), CAP_NET_ADMIN as its
    // only capability (ambient, bounding set of one), no_new_privs. It owns its key file.
    // Its admin socket lives in a directory it owns, as the unit's RuntimeDirectory gives it.
    let run_dir = lab.dir().join("run-a");
    std::fs::create_dir(&run_dir).expect("create run dir");
    nix::unistd::chown(&run_dir, Some(nix::unistd::Uid::from_raw(65534)), None)
        .expect("chown run dir to nobody");
    let config_file = lab.dir().join("a.toml");
    let toml = config_a.to_toml().replacen(
        "[interface]\n",
        &format!(
            "[interface]\nadmin_socket = \"{}/weft.sock\"\n",
            run_dir.display()
        ),
        1,
    );
    assert!(
        toml.contains("admin_socket"),
        "no [interface] table in\n{toml}"
    );
    std::fs::write(&config_file, toml).expect("write config");
    nix::unistd::chown(
        &config_a.private_key_file,
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
    )
    .expect("chown key to nobody");
    let log = lab.dir().join("a.log");
    let log_file = std::fs::File::create(&log).expect("create log");
    // Distributions give /dev/net/tun mode 0666 (udev; the driver itself checks
    // CAP_NET_ADMIN), minimal containers often 0600. The node gets the distributions' node in a
    // mount namespace of its own, so the host's /dev stays as it is.
    let script = format!(
        "mount -t tmpfs -o mode=0755 weft-dev /dev/net && mknod -m 0666 /dev/net/tun c 10 200 \\
         && exec setpriv --reuid=65534 --regid=65534 --clear-groups \\
         --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin \\
         --bounding-set=-all,+net_admin --no-new-privs {} up --config {}",
        weft_bin(),
        config_file.display()
    );
    let child = net
        .a
        .command("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("WEFT_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn unshare setpriv weft up");
    let mut node_a = Daemon { child };
    let _node_b = Node::start(&lab, &net.b, &config_b);

    let (a4, a6) = overlay(1);
    let (b4, _) = overlay(2);
    let up = crate::harness::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        net.a
            .try_ip(&["-o", "addr", "show", "dev", "weft0"])
            .ok()
            .filter(|a| a.contains(&format!("inet {a4}/")))
    });
    assert!(
        up.is_some(),
        "the unprivileged node did not bring weft0 up; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let caps = read(Path::new(&format!("/proc/{}/status", node_a.child.id())));
    let field = |name: &str| {
        caps.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    // CAP_NET_ADMIN is capability 12: the mask 0x1000 and nothing else.
    assert_eq!(
        field("CapEff:"),
        "0000000000001000",
        "effective capabilities"
    );
    assert_eq!(field("CapBnd:"), "0000000000001000", "bounding set");
    assert!(field("Uid:").starts_with("65534"), "uid {}", field("Uid:"));

    for (from, to) in [
        (&net.b, IpAddr::from(a4)),
        (&net.a, IpAddr::from(b4)),
        (&net.b, IpAddr::from(a6)),
    ] {
        wait_reachable(from, to, Duration::from_secs(10));
        let stats = ping(from, to, 3);
        assert_eq!(stats.received, stats.transmitted, "ping {to}: {stats:?}");
    }
    let status = node_a.stop();
    assert!(
        status.success(),
        "the unprivileged node exited with {status} after SIGTERM; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        net.a.try_ip(&["link", "show", "dev", "weft0"]).is_err(),
        "the unprivileged node left weft0 behind"
    );
}

/// A small JSON reader, enough to walk a Grafana dashboard (the test crate has no JSON library).
mod json {
    use std::collections::BTreeMap;

    /// A parsed JSON value.
    #[derive(Debug)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(BTreeMap<String, Value>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(map) => map.get(key),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Number(n) => Some(*n),
                _ => None,
            }
        }
        pub fn as_array(&self) -> Option<&Vec<Value>> {
            match self {
                Value::Array(a) => Some(a),
                _ => None,
            }
        }
    }

    /// Parses a whole document; the error names the byte offset.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("trailing characters"));
        }
        Ok(v)
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn err(&self, what: &str) -> String {
            format!("{what} at byte {}", self.i)
        }
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> Result<(), String> {
            self.ws();
            if self.s.get(self.i) == Some(&c) {
                self.i += 1;
                Ok(())
            } else {
                Err(self.err(&format!("expected {:?}", c as char)))
            }
        }
        fn literal(&mut self, word: &str, v: Value) -> Result<Value, String> {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(v)
            } else {
                Err(self.err("unknown literal"))
            }
        }
        fn value(&mut self) -> Result<Value, String> {
            self.ws();
            match self.s.get(self.i) {
                Some(b'{') => {
                    self.i += 1;
                    let mut map = BTreeMap::new();
                    self.ws();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Object(map));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.eat(b':')?;
                        let v = self.value()?;
                        if map.insert(key, v).is_some() {
                            return Err(self.err("duplicate key"));
                        }
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Object(map));
                            }
                            _ => return Err(self.err("expected ',' or '}'")),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value()?);
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Array(items));
                            }
                            _ => return Err(self.err("expected ',' or ']'")),
                        }
                    }
                }
                Some(b'"') => Ok(Value::String(self.string()?)),
                Some(b't') => self.literal("true", Value::Bool(true)),
                Some(b'f') => self.literal("false", Value::Bool(false)),
                Some(b'n') => self.literal("null", Value::Null),
                Some(c) if *c == b'-' || c.is_ascii_digit() => {
                    let start = self.i;
                    while self
                        .s
                        .get(self.i)
                        .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                    {
                        self.i += 1;
                    }
                    std::str::from_utf8(&self.s[start..self.i])
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .map(Value::Number)
                        .ok_or_else(|| self.err("bad number"))
                }
                _ => Err(self.err("expected a value")),
            }
        }
        fn string(&mut self) -> Result<String, String> {
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a string"));
            }
            self.i += 1;
            let mut out = Vec::new();
            loop {
                match self.s.get(self.i) {
                    None => return Err(self.err("unterminated string")),
                    Some(b'"') => {
                        self.i += 1;
                        return String::from_utf8(out).map_err(|_| self.err("invalid UTF-8"));
                    }
                    Some(b'\\') => {
                        let esc = *self
                            .s
                            .get(self.i + 1)
                            .ok_or_else(|| self.err("bad escape"))?;
                        self.i += 2;
                        let c = match esc {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hex = self
                                    .s
                                    .get(self.i..self.i + 4)
                                    .and_then(|h| std::str::from_utf8(h).ok())
                                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                                    .ok_or_else(|| self.err("bad \\u escape"))?;
                                self.i += 4;
                                // Surrogate pairs do not occur in the dashboard; refuse them.
                                char::from_u32(hex).ok_or_else(|| self.err("surrogate escape"))?
                            }
                            _ => return Err(self.err("bad escape")),
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    Some(c) if *c < 0x20 => return Err(self.err("control character in string")),
                    Some(c) => {
                        out.push(*c);
                        self.i += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn the_json_reader_parses_nesting_escapes_and_numbers_and_refuses_broken_documents() {
        let v = parse(r#"{"a": [1, -2.5e1, true, null, {"b": "x\"\u00e9\n"}], "c": {}}"#).unwrap();
        let a = v.get("a").and_then(Value::as_array).unwrap();
        assert_eq!(a[1].as_f64(), Some(-25.0));
        assert!(matches!(a[2], Value::Bool(true)) && matches!(a[3], Value::Null));
        assert_eq!(a[4].get("b").and_then(Value::as_str), Some("x\"é\n"));
        for broken in [
            r#"{"a": 1,}"#,
            r#"{"a" 1}"#,
            "[1, 2",
            r#"{"a": 1} x"#,
            r#"{"a":1,"a":2}"#,
            r#""\q""#,
        ] {
            assert!(parse(broken).is_err(), "accepted {broken}");
        }
    }
}
