//! Membership end to end: a network created with `weft init`, a server invited with
//! `weft invite` (through the running daemon's admin socket) and joined with `weft join`, both
//! nodes then running from nothing but the files weft wrote. Also: the ways a token is refused,
//! each with its own message and no partial directory left behind, and a restart that keeps
//! its membership from the store.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{ping, wait_reachable, weft_bin, Lab, Netns, Node, OneLink};

/// Runs `weft ARGS…` in `ns`; returns (success, stdout, stderr).
fn weft(ns: &Netns, args: &[&str]) -> (bool, String, String) {
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
fn addresses(config: &Path) -> (IpAddr, IpAddr) {
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

fn v4(ip: IpAddr) -> std::net::Ipv4Addr {
    match ip {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => panic!("not IPv4"),
    }
}

/// `weft init` in `net.a` into `lab/a`, and the running node.
fn first_member<'n>(lab: &Lab, net: &'n OneLink) -> (Node<'n>, PathBuf) {
    let dir = lab.dir().join("a");
    let (ok, out, err) = weft(
        &net.a,
        &[
            "init",
            "--name",
            "alpha",
            "--network",
            "100.64.0.0/16",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(ok, "weft init failed: {err}");
    println!("mesh: {out}");
    let config = dir.join("weft.toml");
    let (a4, _) = addresses(&config);
    (Node::start_file(lab, &net.a, "a", &config, v4(a4)), config)
}

fn invite(ns: &Netns, config: &Path, name: &str, expires: &str) -> String {
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
