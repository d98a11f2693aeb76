//! Many mesh members on one switch, for scale scenarios. [`Bridge`] is the underlay: a switch
//! namespace holding bridge `br0` and one member namespace per member, member `i` at
//! 192.0.2.(i+1)/24 on `eth0` (192.0.2.(101+i) once it moved). [`Fleet`] is the mesh on it, built
//! the way an operator builds one: `weft init` in member 0, a token from its running daemon
//! (`weft invite`) and `weft join` for every other member, then all of them started at once from
//! the files weft wrote. The fleet restarts, crashes, moves and retires members, and measures
//! what a scale scenario asserts or a benchmark prints: ordered-pair reachability over the
//! overlay, `weft status` latency and peer count, idle RSS, CPU and packet rates.
//!
//! Only one bridge exists at a time in a test process (a fleet of many daemons is heavy, and
//! its timings mean nothing while another one runs). Probes go only to the overlay addresses of
//! the fleet's own members, at most one echo request per pair and second.

use super::netns::veth;
use super::{cmd, poll, weft_bin, Lab, Netns, Node, TwoNat};
use crate::mesh::{addresses, invite, v4, weft};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The kernel keeps one IPv4 neighbour (ARP) table for all network namespaces, sized by the
/// initial namespace's `net.ipv4.neigh.default.gc_thresh1..3` (128, 512 and 1024 by default).
/// A fleet of 64 members on one switch needs about 64 x 63 entries: past `gc_thresh3` the
/// kernel refuses new entries and sends fail with ENOBUFS ("neighbor table overflow"), which a
/// test would misread as weft losing packets. A server has one kernel per host and never meets
/// this; the harness raises the thresholds for the bridge's life and puts back what it found.
#[derive(Debug)]
struct NeighbourRoom {
    /// Each threshold's setting and the value it had, for the ones this guard raised.
    raised: Vec<(&'static str, String)>,
}

impl NeighbourRoom {
    const THRESHOLDS: [(&'static str, usize); 3] = [
        ("net.ipv4.neigh.default.gc_thresh1", 1),
        ("net.ipv4.neigh.default.gc_thresh2", 2),
        ("net.ipv4.neigh.default.gc_thresh3", 4),
    ];

    /// Makes room for `entries` more neighbours besides the host's own: gc_thresh3 at least
    /// `4 x entries`, gc_thresh2 at `2 x`, gc_thresh1 at `1 x` (never lowered).
    fn make(entries: usize) -> NeighbourRoom {
        let mut raised = Vec::new();
        for (setting, factor) in Self::THRESHOLDS {
            let path = format!("/proc/sys/{}", setting.replace('.', "/"));
            let Ok(old) = std::fs::read_to_string(&path) else {
                continue;
            };
            let old = old.trim().to_owned();
            let want = entries * factor;
            if old.parse::<usize>().is_ok_and(|v| v < want) {
                std::fs::write(&path, want.to_string())
                    .unwrap_or_else(|e| panic!("raising {setting} to {want}: {e}"));
                raised.push((setting, old));
            }
        }
        NeighbourRoom { raised }
    }
}

impl Drop for NeighbourRoom {
    fn drop(&mut self) {
        for (setting, old) in &self.raised {
            let path = format!("/proc/sys/{}", setting.replace('.', "/"));
            if let Err(e) = std::fs::write(&path, old) {
                eprintln!("could not restore {setting} to {old}: {e}");
            }
        }
    }
}

/// Most members a bridge holds: their home and moved addresses share 192.0.2.0/24.
pub const MAX_MEMBERS: usize = 64;

/// How fast a member's `weft status` must answer; slower counts as frozen.
pub const STATUS_WITHIN: Duration = Duration::from_secs(1);

/// When a `weft status` that has not answered is killed.
const STATUS_GIVE_UP: Duration = Duration::from_secs(3);

/// How long stopped daemons get to exit on SIGTERM before SIGKILL (as [`Node::stop`] does).
const SIGTERM_GRACE: Duration = Duration::from_secs(3);

/// iptables comments of the per-member counting rules.
const DATA_RULE: &str = "weft-scale-data";
const CONTROL_RULE: &str = "weft-scale-control";

/// Held by the one [`Bridge`] that may exist at a time in this process.
static ONE_BRIDGE: Mutex<()> = Mutex::new(());

/// The underlay: `n` member namespaces, each with `eth0` plugged into bridge `br0` of a switch
/// namespace. No namespace has a route beyond 192.0.2.0/24.
#[derive(Debug)]
pub struct Bridge {
    tag: String,
    _switch: Netns,
    members: Vec<Netns>,
    /// Dropped after the namespaces, whose neighbour entries it made room for.
    _neighbours: NeighbourRoom,
    /// Dropped last (fields drop in order), once the namespaces are gone.
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Bridge {
    /// Builds the switch (role `{tag}sw`) and `n` members (roles `{tag}m{i}`); waits while
    /// another bridge of this process exists.
    pub fn new(lab: &Lab, tag: &str, n: usize) -> Bridge {
        assert!(
            (2..=MAX_MEMBERS).contains(&n),
            "a bridge holds 2 to {MAX_MEMBERS} members, not {n}"
        );
        let one_at_a_time = ONE_BRIDGE.lock().unwrap_or_else(PoisonError::into_inner);
        // Every member resolves every other member's home and away address.
        let neighbours = NeighbourRoom::make(2 * n * (n - 1));
        let switch = lab.netns(&format!("{tag}sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let ns = lab.netns(&format!("{tag}m{i}"));
            let port = format!("p{i}");
            veth(&switch, &port, &ns, "eth0");
            switch.ip(&["link", "set", &port, "master", "br0"]);
            // Without this, deleting the old address of a move also deletes the new one.
            ns.sysctl(&["net.ipv4.conf.eth0.promote_secondaries=1"]);
            let home = format!("{}/24", Self::home_address(i));
            ns.ip(&["addr", "add", &home, "dev", "eth0"]);
            members.push(ns);
        }
        Bridge {
            tag: tag.to_owned(),
            _switch: switch,
            members,
            _neighbours: neighbours,
            _one_at_a_time: one_at_a_time,
        }
    }

    /// Member `i`'s first underlay address, 192.0.2.(i+1).
    pub fn home_address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, (i + 1) as u8)
    }

    /// Member `i`'s address after a move, 192.0.2.(101+i).
    pub fn away_address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, (101 + i) as u8)
    }

    /// How many members it holds.
    pub fn count(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s namespace.
    pub fn ns(&self, i: usize) -> &Netns {
        &self.members[i]
    }

    /// Counts, in member `i`'s namespace, every packet to or from the data-plane UDP port and
    /// the control-plane port (QUIC over UDP, joins over TCP).
    fn count_traffic(&self, i: usize, data_port: u16, control_port: u16) {
        let ns = self.ns(i);
        let (data, control) = (data_port.to_string(), control_port.to_string());
        for chain in ["INPUT", "OUTPUT"] {
            for (proto, port, comment) in [
                ("udp", &data, DATA_RULE),
                ("udp", &control, CONTROL_RULE),
                ("tcp", &control, CONTROL_RULE),
            ] {
                ns.exec(&[
                    "iptables",
                    "-w",
                    "-A",
                    chain,
                    "-p",
                    proto,
                    "-m",
                    "multiport",
                    "--ports",
                    port,
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                ]);
            }
        }
    }
}

/// One member: what weft wrote for it and where it is.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its member name, `n01` to `n64`.
    pub name: String,
    /// The config `weft init` or `weft join` wrote.
    pub config: PathBuf,
    pub overlay_v4: Ipv4Addr,
    /// The data-plane UDP port (`listen_port`).
    pub data_port: u16,
    /// The control-plane port (`join_port`: QUIC over UDP and joins over TCP).
    pub control_port: u16,
    /// Its underlay address now.
    pub underlay: Ipv4Addr,
}

impl Member {
    fn from_config(name: String, config: PathBuf, underlay: Ipv4Addr) -> Member {
        let text = std::fs::read_to_string(&config)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display()));
        let port = |key: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_prefix('=')?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| panic!("{} has no `{key} = PORT` line", config.display()))
        };
        Member {
            overlay_v4: v4(addresses(&config).0),
            data_port: port("listen_port"),
            control_port: port("join_port"),
            name,
            config,
            underlay,
        }
    }
}

/// The mesh running on a [`Bridge`]: one `weft up` per member, each from the files weft wrote
/// for it. Dropping it stops every daemon at once (SIGTERM, SIGKILL after 3 s).
#[derive(Debug)]
pub struct Fleet<'b> {
    lab: &'b Lab,
    bridge: &'b Bridge,
    members: Vec<Member>,
    nodes: Vec<Option<Node<'b>>>,
    /// Members stopped for good: never started again, not expected to answer.
    retired: Vec<bool>,
    started: Instant,
}

impl<'b> Fleet<'b> {
    /// Builds the mesh as an operator would: `weft init --network 100.64.0.0/16` in member 0,
    /// which is started; for every other member a token from it (`weft invite --expires 1h`)
    /// and `weft join`; then all the joined members started at once.
    pub fn enroll(lab: &'b Lab, bridge: &'b Bridge) -> Fleet<'b> {
        Fleet::enroll_with(lab, bridge, &[])
    }

    /// [`Fleet::enroll`] with more arguments for `weft init` (e.g.
    /// `--certificate-lifetime 60s`).
    pub fn enroll_with(lab: &'b Lab, bridge: &'b Bridge, init_args: &[&str]) -> Fleet<'b> {
        let n = bridge.count();
        let name = |i: usize| format!("n{:02}", i + 1);
        let dir = |i: usize| lab.dir().join(format!("{}{}", bridge.tag, name(i)));
        let dir0 = dir(0);
        let first = name(0);
        let mut args = vec![
            "init",
            "--name",
            &first,
            "--network",
            "100.64.0.0/16",
            "--dir",
            path_str(&dir0),
        ];
        args.extend_from_slice(init_args);
        let (ok, _, err) = weft(bridge.ns(0), &args);
        assert!(ok, "{}: weft init failed: {err}", name(0));
        let mut fleet = Fleet {
            lab,
            bridge,
            members: Vec::with_capacity(n),
            nodes: Vec::with_capacity(n),
            retired: vec![false; n],
            started: Instant::now(),
        };
        fleet.add(name(0), dir0.join("weft.toml"));
        fleet.start(&[0]);
        let inviter = fleet.members[0].config.clone();
        let enrolled = Instant::now();
        for i in 1..n {
            let token = invite(bridge.ns(0), &inviter, &name(i), "1h");
            let dir = dir(i);
            let (ok, _, err) = weft(bridge.ns(i), &["join", &token, "--dir", path_str(&dir)]);
            assert!(ok, "{}: weft join failed: {err}", name(i));
            fleet.add(name(i), dir.join("weft.toml"));
        }
        eprintln!(
            "[fleet] {} members invited and joined in {:.1} s",
            n - 1,
            enrolled.elapsed().as_secs_f64()
        );
        fleet.start_all();
        fleet
    }

    fn add(&mut self, name: String, config: PathBuf) {
        let i = self.members.len();
        let member = Member::from_config(name, config, Bridge::home_address(i));
        self.bridge
            .count_traffic(i, member.data_port, member.control_port);
        self.members.push(member);
        self.nodes.push(None);
    }

    /// Every member, by index.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Indexes of the members not retired.
    pub fn active(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| !self.retired[i])
            .collect()
    }

    /// When the last [`Fleet::start_all`] spawned its daemons.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The file name (without `.log`) of member `i`'s log in the lab's dir.
    fn log_name(&self, i: usize) -> String {
        format!("{}{}", self.bridge.tag, self.members[i].name)
    }

    /// What member `i` has logged so far (every run of it).
    pub fn log(&self, i: usize) -> String {
        let path = self.lab.dir().join(format!("{}.log", self.log_name(i)));
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    /// Stops member `i` (SIGTERM; SIGKILL after 3 s) so it can be started again with
    /// [`Fleet::start_one`]; returns what went wrong, as [`Fleet::stop_all`] does.
    pub fn stop_one(&mut self, i: usize) -> Option<String> {
        let node = self.nodes[i].as_mut()?;
        let was_running = node.is_running();
        let status = node.stop();
        exit_problem(&self.members[i].name, was_running, status)
    }

    /// Starts member `i` again and waits for its overlay address.
    pub fn start_one(&mut self, i: usize) -> Duration {
        self.start(&[i])
    }

    /// Starts every member that is not running and not retired, all at once, and waits until
    /// each has its overlay address (10 s each, in parallel); returns how long that took.
    /// Panics naming every member that did not come up.
    pub fn start_all(&mut self) -> Duration {
        let which: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.retired[i])
            .filter(|&i| !self.nodes[i].as_mut().is_some_and(Node::is_running))
            .collect();
        self.start(&which)
    }

    fn start(&mut self, which: &[usize]) -> Duration {
        let (lab, bridge) = (self.lab, self.bridge);
        let started = Instant::now();
        let outcomes: Vec<(usize, std::thread::Result<Node<'b>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = which
                .iter()
                .map(|&i| {
                    let (m, log) = (&self.members[i], self.log_name(i));
                    let start =
                        move || Node::start_file(lab, bridge.ns(i), &log, &m.config, m.overlay_v4);
                    (i, s.spawn(start))
                })
                .collect();
            handles.into_iter().map(|(i, h)| (i, h.join())).collect()
        });
        let took = started.elapsed();
        self.started = started;
        let mut failed = Vec::new();
        for (i, outcome) in outcomes {
            match outcome {
                Ok(node) => self.nodes[i] = Some(node),
                Err(panic) => failed.push(format!(
                    "{}: {}",
                    self.members[i].name,
                    panic_message(panic.as_ref())
                )),
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {} members did not start: {}",
            failed.len(),
            which.len(),
            failed.join("; ")
        );
        took
    }

    /// Stops every running member at once with SIGTERM (SIGKILL after 3 s) and returns what
    /// went wrong: members that ignored SIGTERM, exited uncleanly, or had exited before.
    pub fn stop_all(&mut self) -> Vec<String> {
        let retired = &self.retired;
        let members = &self.members;
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| !retired[*i])
                .filter_map(|(i, node)| Some((i, node.as_mut()?)))
                .map(|(i, node)| {
                    let stop = move || {
                        let before = node.is_running();
                        (before, node.stop())
                    };
                    (i, s.spawn(stop))
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|(i, h)| {
                    let (was_running, status) = h.join().expect("stopping a node does not panic");
                    exit_problem(&members[i].name, was_running, status)
                })
                .collect()
        })
    }

    /// Kills every running member with SIGKILL, as a power cut would; returns the members
    /// that had already exited on their own.
    pub fn crash_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(node) = node.as_mut().filter(|_| !self.retired[i]) else {
                continue;
            };
            if !node.is_running() {
                let status = node.kill();
                problems.push(format!("{} had exited ({status})", self.members[i].name));
            } else {
                node.kill();
            }
        }
        problems
    }

    /// Moves member `i` to its other underlay address (home ↔ away): the new address is added,
    /// then the old one deleted; the subnet route stays. Returns the new address.
    pub fn move_member(&mut self, i: usize) -> Ipv4Addr {
        let ns = self.bridge.ns(i);
        let old = self.members[i].underlay;
        let new = if old == Bridge::home_address(i) {
            Bridge::away_address(i)
        } else {
            Bridge::home_address(i)
        };
        ns.ip(&["addr", "add", &format!("{new}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "del", &format!("{old}/24"), "dev", "eth0"]);
        self.members[i].underlay = new;
        new
    }

    /// Stops member `i` for good (SIGTERM; SIGKILL after 3 s); returns what went wrong, if
    /// anything, as [`Fleet::stop_all`] does.
    pub fn retire(&mut self, i: usize) -> Option<String> {
        self.retired[i] = true;
        let node = self.nodes[i].as_mut()?;
        let was_running = node.is_running();
        let status = node.stop();
        exit_problem(&self.members[i].name, was_running, status)
    }

    /// Members (of `among`) whose daemon has exited, with how.
    pub fn exited(&mut self, among: &[usize]) -> Vec<String> {
        among
            .iter()
            .filter_map(|&i| {
                let node = self.nodes[i].as_mut()?;
                (!node.is_running()).then(|| format!("{} ({})", self.members[i].name, node.stop()))
            })
            .collect()
    }

    /// Pings, from every member of `among`, every other member of `among` on its overlay IPv4
    /// address: one echo request per pair and round, a round a second (a reply may take up to
    /// 1 s), until every pair answered or `since + limit` passed. One thread per source.
    pub fn reachability(&self, among: &[usize], since: Instant, limit: Duration) -> Reach {
        let until = since + limit;
        let mut answered = Vec::new();
        let mut missing = Vec::new();
        let walks: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = among
                .iter()
                .map(|&from| {
                    let targets: Vec<(usize, Ipv4Addr)> = among
                        .iter()
                        .filter(|&&to| to != from)
                        .map(|&to| (to, self.members[to].overlay_v4))
                        .collect();
                    let ns = self.bridge.ns(from);
                    let walk = move || ns.run(|| echo_walk(from, targets, since, until));
                    (from, s.spawn(walk))
                })
                .collect();
            handles
                .into_iter()
                .map(|(from, h)| (from, h.join().expect("an echo walk does not panic")))
                .collect()
        });
        for (from, (got, left)) in walks {
            answered.extend(got.into_iter().map(|(to, t)| (from, to, t)));
            missing.extend(left.into_iter().map(|to| (from, to)));
        }
        Reach {
            pairs: among.len() * among.len().saturating_sub(1),
            answered,
            missing,
            limit,
        }
    }

    /// Asks every member of `among` for `weft status --json`, one at a time, each in its own
    /// namespace; a status unanswered after 3 s is killed.
    pub fn status(&self, among: &[usize]) -> Vec<StatusProbe> {
        // One after the other: a latency is the daemon's answer plus one `weft status` start,
        // not sixteen process starts fighting over two cores.
        among
            .iter()
            .map(|&i| {
                let (ns, m) = (self.bridge.ns(i), &self.members[i]);
                let out = self
                    .lab
                    .dir()
                    .join(format!("{}.status.json", self.log_name(i)));
                ns.run(|| probe_status(i, &m.config, &out))
            })
            .collect()
    }

    /// Reachability within `limit` of `since` among `among`, then everyone's status, then which
    /// daemons exited: what one step of a scale scenario checks. Each member should list
    /// `expect_peers` peers.
    pub fn check(
        &mut self,
        step: &str,
        among: &[usize],
        since: Instant,
        limit: Duration,
        expect_peers: usize,
    ) -> Check {
        let reach = self.reachability(among, since, limit);
        let status = self.status(among);
        let exited = self.exited(among);
        Check {
            step: step.to_owned(),
            names: self.members.iter().map(|m| m.name.clone()).collect(),
            reach,
            status,
            exited,
            expect_peers,
        }
    }

    /// What each daemon of `among` costs over `window` while nobody sends through the mesh:
    /// RSS at the end, CPU share, and packets per second on its data and control ports.
    pub fn idle_usage(&self, among: &[usize], window: Duration) -> Vec<Usage> {
        let ticks_per_sec: f64 = cmd::run(&["getconf", "CLK_TCK"])
            .trim()
            .parse()
            .unwrap_or(100.0);
        let sample = |i: usize| {
            let ns = self.bridge.ns(i);
            let pid = daemon_pid(ns)
                .unwrap_or_else(|| panic!("{} has no running weft up", self.members[i].name));
            (
                pid,
                cpu_ticks(pid),
                TwoNat::counter(ns, DATA_RULE).0,
                TwoNat::counter(ns, CONTROL_RULE).0,
            )
        };
        let before: Vec<_> = among.iter().map(|&i| sample(i)).collect();
        let t0 = Instant::now();
        std::thread::sleep(window);
        let after: Vec<_> = among.iter().map(|&i| sample(i)).collect();
        let secs = t0.elapsed().as_secs_f64();
        among
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(&i, (b, a))| {
                assert_eq!(b.0, a.0, "{} restarted while idle", self.members[i].name);
                Usage {
                    member: i,
                    rss_kib: rss_kib(a.0),
                    cpu_percent: (a.1 - b.1) as f64 / ticks_per_sec / secs * 100.0,
                    data_pps: (a.2 - b.2) as f64 / secs,
                    control_pps: (a.3 - b.3) as f64 / secs,
                }
            })
            .collect()
    }
}

impl Drop for Fleet<'_> {
    /// Stops every daemon at once, so a fleet of frozen ones takes 3 s to end, not 3 s each.
    /// The [`Node`] guards then find their process gone and print their logs if the test failed.
    fn drop(&mut self) {
        let pids: Vec<Pid> = self.bridge.members.iter().filter_map(daemon_pid).collect();
        for &pid in &pids {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let _ = poll(SIGTERM_GRACE, Duration::from_millis(20), || {
            pids.iter().all(|&p| !alive(p)).then_some(())
        });
        for &pid in pids.iter().filter(|&&p| alive(p)) {
            eprintln!("[fleet] pid {pid} ignored SIGTERM for 3 s: killing it");
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Which ordered pairs answered an echo request over the overlay, and when.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Ordered pairs probed.
    pub pairs: usize,
    /// (from, to, time of the first reply after `since`).
    pub answered: Vec<(usize, usize, Duration)>,
    /// (from, to) that never answered.
    pub missing: Vec<(usize, usize)>,
    pub limit: Duration,
}

impl Reach {
    /// The pair that answered last, and when; `None` if none answered.
    pub fn slowest(&self) -> Option<(usize, usize, Duration)> {
        self.answered.iter().copied().max_by_key(|a| a.2)
    }

    /// When the last pair answered, if every pair did.
    pub fn full_mesh_after(&self) -> Option<Duration> {
        self.missing
            .is_empty()
            .then(|| self.slowest().map_or(Duration::ZERO, |s| s.2))
    }
}

/// One member's `weft status --json`.
#[derive(Debug, Clone)]
pub struct StatusProbe {
    pub member: usize,
    /// From starting `weft status` until it exited (or was killed).
    pub latency: Duration,
    /// Why it gave no snapshot: no answer, an error exit, unreadable JSON.
    pub error: Option<String>,
    /// Peers listed in the snapshot.
    pub peers: usize,
    /// Of which `up`.
    pub peers_up: usize,
}

/// What a daemon costs while idle.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub member: usize,
    pub rss_kib: u64,
    pub cpu_percent: f64,
    pub data_pps: f64,
    pub control_pps: f64,
}

/// The outcome of [`Fleet::check`].
#[derive(Debug)]
pub struct Check {
    pub step: String,
    names: Vec<String>,
    pub reach: Reach,
    pub status: Vec<StatusProbe>,
    /// Members whose daemon exited, with how.
    pub exited: Vec<String>,
    pub expect_peers: usize,
}

impl Check {
    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Members whose status did not answer in time: they count as frozen.
    pub fn frozen(&self) -> Vec<String> {
        self.status
            .iter()
            .filter(|p| p.latency > STATUS_WITHIN || p.error.as_deref() == Some(NO_ANSWER))
            .map(|p| {
                let how = p
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("answered after {:.2} s", p.latency.as_secs_f64()));
                format!("{} ({how})", self.name(p.member))
            })
            .collect()
    }

    /// Everything that failed, each naming the members or pairs concerned; empty if the step
    /// passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let r = &self.reach;
        if !r.missing.is_empty() {
            problems.push(format!(
                "{} of {} ordered pairs never answered within {} s: {}",
                r.missing.len(),
                r.pairs,
                r.limit.as_secs(),
                self.pairs(&r.missing)
            ));
        }
        if !self.exited.is_empty() {
            problems.push(format!("daemons exited: {}", self.exited.join(", ")));
        }
        let frozen = self.frozen();
        if !frozen.is_empty() {
            problems.push(format!(
                "frozen (weft status not answered within {} s): {}",
                STATUS_WITHIN.as_secs(),
                frozen.join(", ")
            ));
        }
        let failed: Vec<String> = self
            .status
            .iter()
            .filter_map(|p| Some((p, p.error.as_deref()?)))
            .filter(|(_, e)| *e != NO_ANSWER)
            .map(|(p, e)| format!("{}: {e}", self.name(p.member)))
            .collect();
        if !failed.is_empty() {
            problems.push(format!("weft status failed: {}", failed.join("; ")));
        }
        let short: Vec<String> = self
            .status
            .iter()
            .filter(|p| p.error.is_none() && p.peers < self.expect_peers)
            .map(|p| format!("{} lists {}", self.name(p.member), p.peers))
            .collect();
        if !short.is_empty() {
            problems.push(format!(
                "fewer than {} peers listed: {}",
                self.expect_peers,
                short.join(", ")
            ));
        }
        problems
    }

    /// Pairs grouped by source: `n01->{n05,n07}, n02->{n03}`.
    fn pairs(&self, pairs: &[(usize, usize)]) -> String {
        let mut by_source: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(from, to) in pairs {
            by_source.entry(from).or_default().push(to);
        }
        let mut s = String::new();
        for (from, mut tos) in by_source {
            tos.sort_unstable();
            let tos: Vec<&str> = tos.iter().map(|&t| self.name(t)).collect();
            let sep = if s.is_empty() { "" } else { ", " };
            let _ = write!(s, "{sep}{}->{{{}}}", self.name(from), tos.join(","));
        }
        s
    }

    /// The step's figures on one line: time to full mesh, slowest pair, status latency, peers.
    pub fn figures(&self) -> String {
        let r = &self.reach;
        let mut s = format!("{}: ", self.step);
        match r.full_mesh_after() {
            Some(t) => {
                let _ = write!(
                    s,
                    "full mesh ({} pairs) after {:.1} s",
                    r.pairs,
                    t.as_secs_f64()
                );
            }
            None => {
                let _ = write!(
                    s,
                    "NO full mesh: {} of {} pairs answered within {} s",
                    r.pairs - r.missing.len(),
                    r.pairs,
                    r.limit.as_secs()
                );
            }
        }
        if let Some((from, to, t)) = r.slowest() {
            let (from, to) = (self.name(from), self.name(to));
            let _ = write!(s, ", slowest {from}->{to} {:.1} s", t.as_secs_f64());
        }
        let answered: Vec<&StatusProbe> =
            self.status.iter().filter(|p| p.error.is_none()).collect();
        let max_latency = self.status.iter().map(|p| p.latency).max();
        let _ = write!(
            s,
            "; status answered {}/{}, max {:.0} ms, peers listed min {} (up min {})",
            answered.len(),
            self.status.len(),
            max_latency.map_or(0.0, |l| l.as_secs_f64() * 1000.0),
            answered.iter().map(|p| p.peers).min().unwrap_or(0),
            answered.iter().map(|p| p.peers_up).min().unwrap_or(0),
        );
        let frozen = self.frozen().len();
        if frozen + self.exited.len() > 0 {
            let _ = write!(s, "; {frozen} frozen, {} exited", self.exited.len());
        }
        s
    }
}

/// The error of a status probe that was killed unanswered.
const NO_ANSWER: &str = "no answer within 3 s";

/// Runs `weft status --json --config CONFIG` (in the calling thread's namespace), its output
/// in `out` (a pipe could fill up and stall it); kills it after [`STATUS_GIVE_UP`].
fn probe_status(member: usize, config: &Path, out: &Path) -> StatusProbe {
    let file = std::fs::File::create(out).expect("create status output file");
    let started = Instant::now();
    let mut child = std::process::Command::new(weft_bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft status");
    let status = poll(STATUS_GIVE_UP, Duration::from_millis(2), || {
        child.try_wait().expect("wait on weft status")
    });
    let latency = started.elapsed();
    let mut probe = StatusProbe {
        member,
        latency,
        error: None,
        peers: 0,
        peers_up: 0,
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        probe.error = Some(NO_ANSWER.to_owned());
        return probe;
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        probe.error = Some(format!("{status}: {}", err.trim()));
        return probe;
    }
    let text = std::fs::read_to_string(out).unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(snapshot) => {
            let peers = snapshot["peers"].as_array().map_or(&[][..], Vec::as_slice);
            probe.peers = peers.len();
            probe.peers_up = peers.iter().filter(|p| p["up"] == true).count();
        }
        Err(e) => probe.error = Some(format!("status --json is not JSON: {e}")),
    }
    probe
}

/// What went wrong when a member was stopped: it had exited before, ignored SIGTERM, or
/// exited uncleanly.
fn exit_problem(name: &str, was_running: bool, status: ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt as _;
    if !was_running {
        Some(format!(
            "{name} had exited before it was stopped ({status})"
        ))
    } else if status.signal() == Some(Signal::SIGKILL as i32) {
        Some(format!(
            "{name} ignored SIGTERM for 3 s (frozen) and was killed"
        ))
    } else if !status.success() {
        Some(format!("{name} exited uncleanly on SIGTERM ({status})"))
    } else {
        None
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp dir paths are UTF-8")
}

/// The pid of the `weft up` running in `ns`, if any.
fn daemon_pid(ns: &Netns) -> Option<Pid> {
    let pids = cmd::try_run(&["ip", "netns", "pids", ns.name()]).ok()?;
    pids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = argv.split(|&b| b == 0);
            // Any build of weft (`WEFT_E2E_BIN` may name one called otherwise) running `up`.
            let program = args.next().unwrap_or_default();
            let file = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
            file.starts_with(b"weft") && args.next() == Some(b"up") && alive(Pid::from_raw(*pid))
        })
        .map(Pid::from_raw)
}

/// Whether `pid` runs (exists and is not a zombie awaiting its parent's wait).
fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.chars().next()? != 'Z'))
        .unwrap_or(false)
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: Pid) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The ICMP identifier of member `from`'s echo requests.
fn echo_id(from: usize) -> u16 {
    0x5700 | from as u16
}

/// From the calling thread's namespace (member `from`'s), sends an echo request to each target
/// not yet heard from, then waits up to 1 s for replies, and repeats until all answered or
/// `until` passed. Returns (target, time of its first reply after `since`) for those that
/// answered and the targets that never did.
fn echo_walk(
    from: usize,
    targets: Vec<(usize, Ipv4Addr)>,
    since: Instant,
    until: Instant,
) -> (Vec<(usize, Duration)>, Vec<usize>) {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .expect("raw ICMP socket (needs root)");
    let id = echo_id(from);
    let mut left: BTreeMap<Ipv4Addr, usize> = targets.into_iter().map(|(i, a)| (a, i)).collect();
    let mut answered = Vec::new();
    let mut buf = [0u8; 1500];
    let mut seq = 0u16;
    while !left.is_empty() && Instant::now() < until {
        seq = seq.wrapping_add(1);
        let request = echo_request(id, seq);
        let round_end = Instant::now() + Duration::from_secs(1);
        for &addr in left.keys() {
            // Unreachable now (no overlay route while a daemon restarts): the next round retries.
            let _ = socket.send_to(&request, &SockAddr::from(SocketAddrV4::new(addr, 0)));
        }
        while !left.is_empty() {
            let Some(wait) = round_end.checked_duration_since(Instant::now()) else {
                break;
            };
            // A sub-microsecond timeout would become 0, which means "block forever".
            let _ = socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
            let Ok(len) = (&socket).read(&mut buf) else {
                break;
            };
            if let Some(to) = echo_reply_from(&buf[..len], id).and_then(|a| left.remove(&a)) {
                answered.push((to, since.elapsed()));
            }
        }
    }
    (answered, left.into_values().collect())
}

/// An ICMP echo request with 16 bytes of payload.
fn echo_request(id: u16, seq: u16) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0] = 8;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"weft-scale-probe");
    let sum = internet_checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The source of an IPv4 packet (as a raw socket reads it) that is an echo reply with `id`.
fn echo_reply_from(packet: &[u8], id: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let is_reply = icmp.first() == Some(&0) && icmp.get(4..6)? == id.to_be_bytes();
    is_reply.then_some(Ipv4Addr::from(src))
}

/// RFC 1071 checksum.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_checksums_to_zero_and_its_reply_is_recognised_by_id() {
        let request = echo_request(0x5703, 9);
        assert_eq!(internet_checksum(&request), 0);
        let mut reply = vec![
            0x45, 0, 0, 44, 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 0, 7, 100, 64, 0, 1,
        ];
        reply.extend_from_slice(&request);
        reply[20] = 0;
        assert_eq!(
            echo_reply_from(&reply, 0x5703),
            Some(Ipv4Addr::new(100, 64, 0, 7))
        );
        assert_eq!(echo_reply_from(&reply, 0x5704), None);
        reply[20] = 8;
        assert_eq!(
            echo_reply_from(&reply, 0x5703),
            None,
            "a request is no reply"
        );
    }
}
