//! Membership end to end: a network created with `weft init`, a server invited with
//! `weft invite` (through the running daemon's admin socket) and joined with `weft join`, both
//! nodes then running from nothing but the files weft wrote. Also: the ways a token is refused,
//! each with its own message and no partial directory left behind, and a restart that keeps
//! its membership from the store.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{ping, wait_reachable, weft_bin, Lab, Netns, Node, OneLink, RoutedHosts};

/// Runs `weft ARGS…` in `ns`; returns (success, stdout, stderr).
pub(crate) fn weft(ns: &Netns, args: &[&str]) -> (bool, String, String) {
    let bin = weft_bin();
    let mut argv = vec![bin.as_str()];
    argv.extend_from_slice(args);
    let out = ns.exec_output(&argv);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// The overlay addresses a config weft wrote gives its interface.
pub(crate) fn addresses(config: &Path) -> (IpAddr, IpAddr) {
    let text = std::fs::read_to_string(config).expect("read config");
    let line = text
        .lines()
        .find(|l| l.starts_with("address = "))
        .expect("an address line");
    let mut addrs = line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|a| a.split('/').next().unwrap().parse::<IpAddr>().unwrap());
    (addrs.next().unwrap(), addrs.next().unwrap())
}

pub(crate) fn v4(ip: IpAddr) -> std::net::Ipv4Addr {
    match ip {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => panic!("not IPv4"),
    }
}

/// `weft init` in `ns` of network 100.64.0.0/16 with first member "alpha" into `dir`; returns
/// what it printed.
pub(crate) fn init_alpha(ns: &Netns, dir: &Path) -> String {
    let args = [
        "init",
        "--name",
        "alpha",
        "--network",
        "100.64.0.0/16",
        "--dir",
        dir.to_str().unwrap(),
    ];
    let (ok, out, err) = weft(ns, &args);
    assert!(ok, "weft init failed: {err}");
    out
}

/// `weft init` in `net.a` into `lab/a`, and the running node.
fn first_member<'n>(lab: &Lab, net: &'n OneLink) -> (Node<'n>, PathBuf) {
    let dir = lab.dir().join("a");
    println!("mesh: {}", init_alpha(&net.a, &dir));
    let config = dir.join("weft.toml");
    let (a4, _) = addresses(&config);
    (Node::start_file(lab, &net.a, "a", &config, v4(a4)), config)
}

pub(crate) fn invite(ns: &Netns, config: &Path, name: &str, expires: &str) -> String {
    let (ok, token, err) = weft(
        ns,
        &[
            "invite",
            "--config",
            config.to_str().unwrap(),
            "--name",
            name,
            "--expires",
            expires,
        ],
    );
    assert!(ok, "weft invite failed: {err}");
    assert!(
        token.starts_with("weft1.") && !token.contains(char::is_whitespace),
        "not a one-line token: {token:?}"
    );
    token
}

#[test]
fn a_server_joins_with_an_invite_token_and_both_reach_each_other_over_ipv4_and_ipv6() {
    let lab = Lab::new("mesh-join");
    let net = OneLink::new(&lab);
    let (_a, a_config) = first_member(&lab, &net);
    let token = invite(&net.a, &a_config, "beta", "1h");
    println!("mesh: token of {} characters", token.len());

    let b_dir = lab.dir().join("b");
    let (ok, out, err) = weft(&net.b, &["join", &token, "--dir", b_dir.to_str().unwrap()]);
    assert!(ok, "weft join failed: {err}");
    println!("mesh: {out}");
    for key in ["private.key", "identity.key"] {
        let mode = std::fs::metadata(b_dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }
    assert!(
        !b_dir.join("authority.key").exists(),
        "a joiner got the authority key"
    );

    let b_config = b_dir.join("weft.toml");
    let text = std::fs::read_to_string(&b_config).unwrap();
    assert!(
        text.contains(&format!("weft up --config {}\n", b_config.display())),
        "the configuration names where it is, not where it was written:\n{text}"
    );
    let (b4, b6) = addresses(&b_config);
    let (a4, a6) = addresses(&a_config);
    let _b = Node::start_file(&lab, &net.b, "b", &b_config, v4(b4));
    wait_reachable(&net.b, a4, Duration::from_secs(10));
    assert_eq!(ping(&net.b, a4, 5).received, 5, "b -> a over IPv4");
    assert_eq!(ping(&net.a, b4, 5).received, 5, "a -> b over IPv4");
    wait_reachable(&net.a, b6, Duration::from_secs(10));
    assert_eq!(ping(&net.a, b6, 5).received, 5, "a -> b over IPv6");
    assert_eq!(ping(&net.b, a6, 5).received, 5, "b -> a over IPv6");
}

#[test]
fn a_used_an_expired_and_a_corrupted_token_are_each_refused_with_their_message() {
    let lab = Lab::new("mesh-tokens");
    let net = OneLink::new(&lab);
    let (_a, a_config) = first_member(&lab, &net);
    let join = |token: &str, dir: &str| {
        let dir = lab.dir().join(dir);
        let result = weft(&net.b, &["join", token, "--dir", dir.to_str().unwrap()]);
        (result, dir)
    };

    let used = invite(&net.a, &a_config, "beta", "1h");
    let ((ok, _, err), _) = join(&used, "b1");
    assert!(ok, "first use failed: {err}");
    let ((ok, _, err), dir) = join(&used, "b2");
    assert!(!ok && err.contains("already used"), "reused token: {err}");
    assert!(
        !dir.exists(),
        "a refused join left {} behind",
        dir.display()
    );

    let expiring = invite(&net.a, &a_config, "gamma", "1s");
    // Let the token's one second of validity pass.
    std::thread::sleep(Duration::from_millis(2100));
    let ((ok, _, err), dir) = join(&expiring, "b3");
    assert!(!ok && err.contains("expired"), "expired token: {err}");
    assert!(!dir.exists());

    let fresh = invite(&net.a, &a_config, "delta", "1h");
    let mut corrupted: Vec<char> = fresh.chars().collect();
    let i = corrupted.len() / 2;
    corrupted[i] = if corrupted[i] == 'A' { 'B' } else { 'A' };
    let corrupted: String = corrupted.into_iter().collect();
    let ((ok, _, err), dir) = join(&corrupted, "b4");
    assert!(!ok && err.contains("damaged"), "corrupted token: {err}");
    assert!(!dir.exists());
    assert_eq!(err.lines().count(), 1, "not a one-line error: {err}");
    // The fresh token itself was never spent by the failures.
    let ((ok, _, err), _) = join(&fresh, "b5");
    assert!(ok, "the intact token was refused: {err}");
}

#[test]
fn a_node_restarted_with_its_store_keeps_its_membership() {
    let lab = Lab::new("mesh-restart");
    let net = OneLink::new(&lab);
    let (mut a, a_config) = first_member(&lab, &net);
    let token = invite(&net.a, &a_config, "beta", "1h");
    let b_dir = lab.dir().join("b");
    let (ok, _, err) = weft(&net.b, &["join", &token, "--dir", b_dir.to_str().unwrap()]);
    assert!(ok, "weft join failed: {err}");
    let b_config = b_dir.join("weft.toml");
    let (b4, _) = addresses(&b_config);
    let (a4, _) = addresses(&a_config);
    let mut b = Node::start_file(&lab, &net.b, "b", &b_config, v4(b4));
    wait_reachable(&net.b, a4, Duration::from_secs(10));

    // Both restart from their stores; no token is needed again.
    assert!(b.stop().success(), "b did not stop cleanly");
    assert!(a.stop().success(), "a did not stop cleanly");
    let _a = Node::start_file(&lab, &net.a, "a", &a_config, v4(a4));
    let _b = Node::start_file(&lab, &net.b, "b", &b_config, v4(b4));
    wait_reachable(&net.b, a4, Duration::from_secs(10));
    assert_eq!(
        ping(&net.a, b4, 5).received,
        5,
        "a -> b after both restarted"
    );
}

/// A mesh of `n` members on a routed underlay: member 0 runs `weft init`, the others join
/// with tokens from it, one after the other, and all run. Returns the nodes and each member's
/// overlay addresses.
pub(crate) fn build_mesh<'n>(
    lab: &Lab,
    hosts: &'n RoutedHosts,
    n: usize,
) -> (Vec<Node<'n>>, Vec<(IpAddr, IpAddr)>) {
    let dir0 = lab.dir().join("m0");
    let (ok, _, err) = weft(
        &hosts.hosts[0],
        &[
            "init",
            "--name",
            "m0",
            "--network",
            "100.64.0.0/16",
            "--dir",
            dir0.to_str().unwrap(),
        ],
    );
    assert!(ok, "weft init failed: {err}");
    let config0 = dir0.join("weft.toml");
    let mut nodes = Vec::new();
    let mut addrs = vec![addresses(&config0)];
    nodes.push(Node::start_file(
        lab,
        &hosts.hosts[0],
        "m0",
        &config0,
        v4(addrs[0].0),
    ));
    for i in 1..n {
        let name = format!("m{i}");
        let token = invite(&hosts.hosts[0], &config0, &name, "1h");
        let dir = lab.dir().join(&name);
        let (ok, _, err) = weft(
            &hosts.hosts[i],
            &["join", &token, "--dir", dir.to_str().unwrap()],
        );
        assert!(ok, "{name}: weft join failed: {err}");
        let config = dir.join("weft.toml");
        addrs.push(addresses(&config));
        nodes.push(Node::start_file(
            lab,
            &hosts.hosts[i],
            &name,
            &config,
            v4(addrs[i].0),
        ));
    }
    (nodes, addrs)
}

/// Whether one ping from `ns` to `addr` is answered within a second.
fn answers(ns: &Netns, addr: IpAddr) -> bool {
    ping(ns, addr, 1).received == 1
}

/// Polls until every pair in `pairs` has answered once, up to `limit`; returns the pairs that
/// never did.
pub(crate) fn wait_pairs(
    hosts: &RoutedHosts,
    pairs: &[(usize, usize, IpAddr)],
    limit: Duration,
) -> Vec<(usize, usize, IpAddr)> {
    let start = std::time::Instant::now();
    let mut left: Vec<_> = pairs.to_vec();
    while !left.is_empty() && start.elapsed() < limit {
        left.retain(|&(from, _, addr)| !answers(&hosts.hosts[from], addr));
    }
    left
}

#[test]
fn five_nodes_joined_with_tokens_reach_every_other_over_ipv4_and_ipv6_within_10s() {
    let lab = Lab::new("mesh-five");
    let hosts = RoutedHosts::new(&lab, "", 5);
    let (_nodes, addrs) = build_mesh(&lab, &hosts, 5);
    let joined = std::time::Instant::now();
    let mut pairs = Vec::new();
    for from in 0..5 {
        for (to, addr) in addrs.iter().enumerate() {
            if from != to {
                pairs.push((from, to, addr.0));
                pairs.push((from, to, addr.1));
            }
        }
    }
    let missing = wait_pairs(&hosts, &pairs, Duration::from_secs(10));
    println!(
        "mesh-five: {} of {} ordered pairs (IPv4 and IPv6) answered, {:.1} s after the last join",
        pairs.len() - missing.len(),
        pairs.len(),
        joined.elapsed().as_secs_f64()
    );
    assert!(
        missing.is_empty(),
        "never answered within 10 s: {missing:?}"
    );
}

#[test]
fn revoking_a_node_cuts_it_off_from_all_others_within_10s() {
    let lab = Lab::new("mesh-revoke");
    let hosts = RoutedHosts::new(&lab, "", 4);
    let (_nodes, addrs) = build_mesh(&lab, &hosts, 4);
    let victim = 3;
    let before: Vec<_> = (0..3).map(|i| (i, victim, addrs[victim].0)).collect();
    assert!(
        wait_pairs(&hosts, &before, Duration::from_secs(10)).is_empty(),
        "the mesh did not form before the revocation"
    );
    let config0 = lab.dir().join("m0").join("weft.toml");
    let (ok, out, err) = weft(
        &hosts.hosts[0],
        &["revoke", "m3", "--config", config0.to_str().unwrap()],
    );
    assert!(ok, "weft revoke failed: {err}");
    println!("mesh-revoke: {out}");
    let revoked = std::time::Instant::now();
    // Within 10 s nobody reaches the revoked node and it reaches nobody.
    let cut = |limit: Duration| {
        let start = std::time::Instant::now();
        loop {
            let reachable: Vec<usize> = (0..3)
                .filter(|&i| {
                    answers(&hosts.hosts[i], addrs[victim].0)
                        || answers(&hosts.hosts[victim], addrs[i].0)
                })
                .collect();
            if reachable.is_empty() || start.elapsed() > limit {
                return reachable;
            }
        }
    };
    let still = cut(Duration::from_secs(10));
    println!(
        "mesh-revoke: cut off after {:.1} s",
        revoked.elapsed().as_secs_f64()
    );
    assert!(
        still.is_empty(),
        "still reachable after 10 s with members {still:?}"
    );
    // And the others still reach each other.
    assert!(
        answers(&hosts.hosts[1], addrs[2].0),
        "revocation broke the rest of the mesh"
    );
}

#[test]
fn a_node_that_moves_is_reached_by_a_member_that_never_talked_to_it() {
    let lab = Lab::new("mesh-move");
    let hosts = RoutedHosts::new(&lab, "", 4);
    let (_nodes, addrs) = build_mesh(&lab, &hosts, 4);
    // m2 and m3 never exchange a packet before m3 moves.
    let warm: Vec<_> = [(0, 3), (3, 0), (1, 3), (0, 2)]
        .iter()
        .map(|&(f, t)| (f, t, addrs[t].0))
        .collect();
    assert!(wait_pairs(&hosts, &warm, Duration::from_secs(10)).is_empty());
    hosts.move_host(3);
    let moved = std::time::Instant::now();
    let missing = wait_pairs(&hosts, &[(2, 3, addrs[3].0)], Duration::from_secs(15));
    println!(
        "mesh-move: m2 reached the moved m3 {:.1} s after the move",
        moved.elapsed().as_secs_f64()
    );
    assert!(missing.is_empty(), "m2 never reached m3 at its new address");
}

/// The `probes=` count on the last confirmed `path MTU changed … pmtu=PMTU` line of `log`
/// for peer `peer`.
fn probes_to(log: &Path, peer: &str, pmtu: u16) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter(|l| l.contains("path MTU changed"))
        .filter(|l| l.contains(&format!("peer={peer} ")))
        .filter(|l| l.contains(&format!("pmtu={pmtu} ")) && l.contains("confirmed=true"))
        .filter_map(|l| l.split("probes=").nth(1)?.split(' ').next()?.parse().ok())
        .next()
}

#[test]
fn a_path_mtu_observed_by_one_member_is_the_prior_of_another_and_is_confirmed_before_use() {
    let lab = Lab::new("mesh-prior");
    let hosts = RoutedHosts::new(&lab, "", 3);
    // m1 sits behind a 1400-byte black hole.
    hosts.narrow(1, 1400);
    let (_nodes, addrs) = build_mesh(&lab, &hosts, 3);
    // m0 finds the path to m1 by its own search and tells the mesh.
    assert!(wait_pairs(&hosts, &[(0, 1, addrs[1].0)], Duration::from_secs(10)).is_empty());
    let log0 = lab.dir().join("m0.log");
    let searched =
        crate::harness::poll(Duration::from_secs(10), Duration::from_millis(100), || {
            probes_to(&log0, "m1", 1400)
        })
        .expect("m0 never confirmed 1400 toward m1");
    // Give the observation a moment to spread, then m2 talks to m1 for the first time.
    std::thread::sleep(Duration::from_millis(500));
    assert!(wait_pairs(&hosts, &[(2, 1, addrs[1].0)], Duration::from_secs(10)).is_empty());
    let log2 = lab.dir().join("m2.log");
    let primed = crate::harness::poll(Duration::from_secs(10), Duration::from_millis(100), || {
        probes_to(&log2, "m1", 1400)
    })
    .expect("m2 never confirmed 1400 toward m1");
    println!(
        "mesh-prior: m0 searched with {searched} probes, m2 started from the prior with {primed}"
    );
    assert!(
        primed * 3 <= searched,
        "the prior did not shorten m2's search: {primed} vs {searched} probes"
    );
}
