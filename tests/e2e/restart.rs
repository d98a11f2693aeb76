//! Restarts: a member restarted with its store resumes its paths where they were (the stored
//! path MTU is confirmed by one probe instead of searched again), and a member killed with
//! SIGKILL over and over while it serves joins, gossip and path writes never loses a member,
//! an address allocation or a used invite from its store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_store::Store;

use crate::harness::{
    elapsed_between, ping_in_background, poll, wait_reachable, weft_bin, Lab, Netns, Node,
    RoutedHosts, RouterPath, XorShift64,
};
use crate::mesh::{addresses, build_mesh, invite, v4, wait_pairs, weft};

/// The router–B link's MTU: the path MTU between the members.
const BOTTLENECK: u16 = 1400;
/// Outer overhead of a tunnel packet over an IPv4 underlay.
const OVERHEAD_V4: u16 = 60;
/// The name the joined member gets, and so the peer name in the first member's log.
const JOINED: &str = "beta";

/// `weft init` in `ns` as member `name` into `lab/dir`; returns the config file.
fn init(lab: &Lab, ns: &Netns, name: &str, dir: &str) -> PathBuf {
    let dir = lab.dir().join(dir);
    let (ok, _, err) = weft(
        ns,
        &[
            "init",
            "--name",
            name,
            "--network",
            "100.64.0.0/16",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(ok, "weft init failed: {err}");
    dir.join("weft.toml")
}

/// `weft join TOKEN` in `ns` into `lab/dir`; returns the config file.
fn join(lab: &Lab, ns: &Netns, token: &str, dir: &str) -> PathBuf {
    let dir = lab.dir().join(dir);
    let (ok, _, err) = weft(ns, &["join", token, "--dir", dir.to_str().unwrap()]);
    assert!(ok, "weft join failed: {err}");
    dir.join("weft.toml")
}

/// The value of `key=value` on a log line.
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

/// The UTC time of day a log line starts with (`2025-01-01T12:34:56.789012Z`).
fn time_of_day(line: &str) -> Option<Duration> {
    let clock = line.split_whitespace().next()?.split_once('T')?.1;
    let mut parts = clock.strip_suffix('Z')?.splitn(3, ':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(Duration::from_secs(h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

/// What a log (from some offset on) says about one run's edge toward `peer`: when the
/// handshake completed, and the first line confirming `pmtu` with its probe count.
#[derive(Debug)]
struct EdgeRun {
    handshake: Duration,
    confirmed: Duration,
    probes: u64,
}

impl EdgeRun {
    fn read(text: &str, peer: &str, pmtu: u16) -> Option<EdgeRun> {
        let ours = |l: &&str| field(l, "peer") == Some(peer);
        let handshake = text
            .lines()
            .filter(ours)
            .find(|l| l.contains("handshake completed"))
            .and_then(time_of_day)?;
        let line = text.lines().filter(ours).find(|l| {
            l.contains("path MTU changed")
                && field(l, "pmtu") == Some(&pmtu.to_string())
                && field(l, "confirmed") == Some("true")
        })?;
        Some(EdgeRun {
            handshake,
            confirmed: time_of_day(line)?,
            probes: field(line, "probes")?.parse().ok()?,
        })
    }

    fn after_handshake(&self) -> Duration {
        elapsed_between(self.handshake, self.confirmed)
    }
}

/// Pings `addr` from `ns` `count` times with DF set and `payload` bytes of ICMP data; returns
/// the replies.
fn df_ping(ns: &Netns, addr: IpAddr, count: u32, payload: u16) -> (u32, String) {
    let (count, payload, addr) = (count.to_string(), payload.to_string(), addr.to_string());
    let out = ns.exec_output(&[
        "ping", "-M", "do", "-s", &payload, "-c", &count, "-i", "0.2", "-W", "1", &addr,
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let replies = text.lines().filter(|l| l.contains(" bytes from ")).count() as u32;
    (replies, text)
}

#[test]
fn a_restarted_member_resumes_its_stored_path_mtu_with_one_probe_across_a_black_hole() {
    let lab = Lab::new("restart-warm");
    let net = RouterPath::new(&lab, "", BOTTLENECK);
    net.drop_icmp_too_big();
    let a_config = init(&lab, &net.a, "alpha", "a");
    let (a4, _) = addresses(&a_config);
    let mut a = Node::start_file(&lab, &net.a, "a", &a_config, v4(a4));
    let token = invite(&net.a, &a_config, JOINED, "1h");
    let b_config = join(&lab, &net.b, &token, "b");
    let (b4, _) = addresses(&b_config);
    let _b = Node::start_file(&lab, &net.b, "b", &b_config, v4(b4));

    // The first run searches: ~66 probes on a black hole.
    wait_reachable(&net.a, b4, Duration::from_secs(20));
    let log = a.log();
    log.wait_pmtu(JOINED, BOTTLENECK, Duration::from_secs(10));
    let cold = EdgeRun::read(&log.text(), JOINED, BOTTLENECK).expect("first run's edge");
    assert!(a.stop().success(), "a did not stop cleanly");
    assert!(
        log.text().contains("store flushed"),
        "a clean shutdown did not flush the store"
    );
    drop(a);

    let offset = log.text().len();
    let _a = Node::start_file(&lab, &net.a, "a", &a_config, v4(a4));
    let since = || log.text()[offset..].to_owned();
    let warm_line = since()
        .lines()
        .find(|l| l.contains("warm start") && field(l, "peer") == Some(JOINED))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no warm start line for {JOINED}:\n{}", since()));
    println!("restart-warm: {}", warm_line.trim());
    assert_eq!(field(&warm_line, "pmtu"), Some("1400"), "{warm_line}");
    assert_eq!(field(&warm_line, "own"), Some("true"), "{warm_line}");

    // A small ping starts the handshake; the edge resumes at the stored size at once.
    wait_reachable(&net.a, b4, Duration::from_secs(20));
    let warm = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        EdgeRun::read(&since(), JOINED, BOTTLENECK)
    })
    .unwrap_or_else(|| {
        panic!(
            "after the restart the edge never confirmed {BOTTLENECK}:\n{}",
            since()
        )
    });
    let inner = BOTTLENECK - OVERHEAD_V4;
    let (replies, out) = df_ping(&net.a, b4, 3, inner - 28);
    println!(
        "restart-warm: first run {} probes, {} ms after the handshake; after the restart {} \
         probes, {} ms after the handshake; {replies}/3 full-size ({inner}-byte) DF pings \
         answered right after",
        cold.probes,
        cold.after_handshake().as_millis(),
        warm.probes,
        warm.after_handshake().as_millis(),
    );
    assert!(
        (1..=2).contains(&warm.probes),
        "the restarted edge searched again: {} probes\n{}",
        warm.probes,
        since()
    );
    assert!(cold.probes > 10 * warm.probes, "{cold:?} vs {warm:?}");
    assert_eq!(replies, 3, "full-size packets did not pass:\n{out}");
    assert!(
        !since().lines().any(|l| l.contains("path MTU changed")
            && field(l, "peer") == Some(JOINED)
            && field(l, "pmtu").is_some_and(|p| p != "1400")),
        "the restarted edge used another size:\n{}",
        since()
    );
}

/// The store directory a config weft wrote names (relative to the config's directory).
fn state_dir(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).expect("read config");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("state = "))
        .expect("a state line")
        .trim_matches('"');
    config.parent().unwrap().join(value)
}

/// The records the crash test requires to survive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Durable {
    /// Identity → name.
    members: BTreeMap<[u8; 32], String>,
    /// (address, identity).
    allocations: BTreeSet<(std::net::Ipv4Addr, [u8; 32])>,
    /// Invite hash → who redeemed it (`None`: not yet).
    invites: BTreeMap<[u8; 32], Option<[u8; 32]>>,
}

impl Durable {
    /// Opens a copy of the store in `dir` (the original stays exactly as the crash left it,
    /// for the next start to open) and reads what it holds.
    fn read(dir: &Path, scratch: &Path) -> Durable {
        let _ = std::fs::remove_dir_all(scratch);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir)
            .arg(scratch)
            .status()
            .expect("run cp");
        assert!(status.success(), "cannot copy {}", dir.display());
        let store = Store::open(scratch)
            .unwrap_or_else(|e| panic!("the store does not open after a crash: {e}"));
        assert_eq!(store.corrupt_records(), 0, "corrupt records after a crash");
        let members = store.members().list().expect("members");
        let allocations = store.allocations().list().expect("allocations");
        let invites = store.invites().list().expect("invites");
        let durable = Durable {
            members: members.into_iter().map(|(id, r)| (id, r.name)).collect(),
            allocations: allocations
                .into_iter()
                .map(|r| (r.address, r.identity))
                .collect(),
            invites: invites.into_iter().map(|(h, r)| (h, r.used_by)).collect(),
        };
        drop(store);
        let _ = std::fs::remove_dir_all(scratch);
        durable
    }

    /// What of `before` is missing or changed here.
    fn lost_from(&self, before: &Durable) -> Vec<String> {
        let mut lost = Vec::new();
        for (id, name) in &before.members {
            if self.members.get(id) != Some(name) {
                lost.push(format!("member {name}"));
            }
        }
        for a in before.allocations.difference(&self.allocations) {
            lost.push(format!("allocation {}", a.0));
        }
        for (hash, used) in &before.invites {
            match self.invites.get(hash) {
                None => lost.push(format!("invite {:02x}{:02x}…", hash[0], hash[1])),
                Some(now) if used.is_some() && now != used => {
                    lost.push(format!("used invite {:02x}{:02x}…", hash[0], hash[1]))
                }
                _ => {}
            }
        }
        lost
    }

    fn used_invites(&self) -> usize {
        self.invites.values().filter(|u| u.is_some()).count()
    }
}

/// A `weft join` running in the background.
struct Joiner {
    name: String,
    child: Child,
}

impl Joiner {
    fn start(ns: &Netns, lab: &Lab, token: &str, name: &str) -> Joiner {
        let dir = lab.dir().join(name);
        let child = ns
            .command(&weft_bin())
            .args(["join", token, "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft join");
        Joiner {
            name: name.to_owned(),
            child,
        }
    }

    /// Whether the join finished successfully, waiting up to `limit` for it.
    fn succeeded(&mut self, limit: Duration) -> bool {
        let status = poll(limit, Duration::from_millis(20), || {
            self.child.try_wait().ok().flatten()
        });
        status.is_some_and(|s| s.success())
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills of the inviter.
const KILLS: usize = 20;
/// How long before a kill a join is started: a join takes some tens of milliseconds here,
/// so most end shortly before the kill, within the store's flush interval (500 ms).
const JOIN_LEAD: Duration = Duration::from_millis(150);

#[test]
fn an_inviter_killed_20_times_while_serving_joins_and_gossip_keeps_every_member_allocation_and_used_invite(
) {
    let lab = Lab::new("restart-crash");
    let seed = std::env::var("WEFT_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("restart-crash: seed {seed} (WEFT_E2E_SEED={seed} replays the kill times)");
    let mut rng = XorShift64::new(seed);
    // m0 is the inviter, m1 a member gossiping and sending data, host 2 runs the joins.
    let hosts = RoutedHosts::new(&lab, "", 3);
    let (mut nodes, addrs) = build_mesh(&lab, &hosts, 2);
    let m0 = addrs[0].0;
    assert!(
        wait_pairs(&hosts, &[(1, 0, m0)], Duration::from_secs(10)).is_empty(),
        "the mesh did not form"
    );
    let config0 = lab.dir().join("m0").join("weft.toml");
    let state = state_dir(&config0);
    let scratch = lab.dir().join("store-copy");
    // m1 keeps traffic going to m0, so every restart handshakes, confirms a path MTU and
    // writes paths.
    let _traffic = ping_in_background(&hosts.hosts[1], m0, 100_000);

    // A clean stop first: it stores the path to m1 (its confirmed size, or at least that a
    // session ran over it, when the stop comes before the size is confirmed) and flushes, so
    // every run in the loop starts warm, contacts m1 at once and rewrites that path.
    let mut inviter = nodes.remove(0);
    assert!(inviter.stop().success(), "m0 did not stop cleanly");
    let log = inviter.log();
    let mut before = Durable::read(&state, &scratch);
    println!(
        "restart-crash: before the first kill {} members, {} allocations, {} invites",
        before.members.len(),
        before.allocations.len(),
        before.invites.len()
    );
    drop(inviter);
    // m1 joined before the loop: it must stay a member too.
    let (mut joins_tried, mut joined) = (0, vec!["m1".to_owned()]);
    let (mut delays, mut paths_written) = (Vec::new(), 0);
    for kill in 0..KILLS {
        let offset = log.text().len();
        let node = Node::start_file(&lab, &hosts.hosts[0], "m0", &config0, v4(m0));
        let started = std::time::Instant::now();
        let delay = Duration::from_millis(200 + rng.below(1800) as u64);
        delays.push(delay.as_millis());
        // Every fourth run serves a join, timed to end just before the kill, while the
        // inviter's writes of the new member are fresh: the token is issued (and flushed) by
        // the running inviter, then redeemed.
        let mut joiner = (kill % 4 == 1).then(|| {
            std::thread::sleep(delay.saturating_sub(JOIN_LEAD));
            joins_tried += 1;
            let name = format!("j{kill}");
            let token = invite(&hosts.hosts[0], &config0, &name, "1h");
            Joiner::start(&hosts.hosts[2], &lab, &token, &name)
        });
        if kill == KILLS - 3 && joined.len() == 1 {
            // So at least one join completes within the loop, whatever the seed.
            if let Some(j) = joiner.as_mut() {
                j.succeeded(Duration::from_secs(20));
            }
        }
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        let mut node = node;
        let status = node.kill();
        assert!(
            !status.success(),
            "m0 exited on its own before the kill: {status}"
        );
        drop(node);
        let run = log.text()[offset..].to_owned();
        if run
            .lines()
            .any(|l| l.contains("path MTU changed") && field(l, "peer") == Some("m1"))
        {
            paths_written += 1;
        }
        if let Some(mut j) = joiner.take() {
            if j.succeeded(Duration::from_secs(25)) {
                joined.push(j.name.clone());
            }
        }
        let after = Durable::read(&state, &scratch);
        let lost = after.lost_from(&before);
        assert!(
            lost.is_empty(),
            "kill {kill} after {delay:?} lost {lost:?}\nbefore: {before:?}\nafter: {after:?}"
        );
        for name in &joined {
            let id = after
                .members
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(id, _)| *id)
                .unwrap_or_else(|| panic!("kill {kill}: {name} joined but is not a member"));
            assert!(
                after.allocations.iter().any(|(_, a)| *a == id),
                "kill {kill}: {name} joined but holds no allocation"
            );
            assert!(
                after.invites.values().any(|u| *u == Some(id)),
                "kill {kill}: {name} joined but no invite is recorded as used by it"
            );
        }
        before = after;
    }
    println!(
        "restart-crash: {KILLS} kills after {delays:?} ms; {paths_written} runs confirmed and \
         stored the path to m1 before their kill; {joins_tried} joins tried, {} completed \
         ({joined:?}); the store then held {} members, {} allocations, {} invites ({} used)",
        joined.len(),
        before.members.len(),
        before.allocations.len(),
        before.invites.len(),
        before.used_invites()
    );
    assert!(joined.len() > 1, "no join completed during the kill loop");
    assert!(
        paths_written >= KILLS / 2,
        "path data was written in only {paths_written} of {KILLS} runs"
    );
    // The inviter still runs from its store and the mesh still works.
    let _m0 = Node::start_file(&lab, &hosts.hosts[0], "m0", &config0, v4(m0));
    wait_reachable(&hosts.hosts[1], m0, Duration::from_secs(20));
}
