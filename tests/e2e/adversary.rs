//! Attacks on a member, from anyone who can reach its ports and from members themselves. Each
//! scenario is named after what it proves, prints the figure it measures, and fails on a node
//! without the defence it checks. Every flood is bounded in count and time and aimed only at
//! namespaces the test made.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::harness::{
    cpu_ticks, ping_in_background, wait_reachable, Lab, Metrics, Netns, Node, RoutedHosts,
};
use crate::mesh::{addresses, init_alpha, invite, v4, weft};

/// The join listener's TCP port in configs `weft init` writes.
const JOIN_PORT: u16 = 51821;
/// Idle connections the flood holds open to the join port.
const FLOOD_CONNECTIONS: usize = 400;
/// Connections the flood opens in all, re-opening those the node closed.
const FLOOD_MAX_CONNECTS: usize = 4_000;
/// The node's file-descriptor limit during the flood (a common default in containers).
const FD_LIMIT: u64 = 256;

/// `weft join TOKEN --dir DIR` in `ns`; returns (success, stderr, how long it took).
fn join(ns: &Netns, token: &str, dir: &Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let (ok, _, err) = weft(ns, &["join", token, "--dir", dir.to_str().unwrap()]);
    (ok, err, started.elapsed())
}

/// Sets `pid`'s soft and hard limit on open files.
fn limit_open_files(pid: u32, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads `rlimit` and writes nothing (the old-limit pointer is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Holds up to [`FLOOD_CONNECTIONS`] idle TCP connections to `target` from `ns` until `until`,
/// re-opening each one the node closes (once a second), at most [`FLOOD_MAX_CONNECTS`] in all.
/// Returns how many connections it opened.
fn hold_idle_connections(ns: &Netns, target: SocketAddr, until: Instant) -> usize {
    ns.run(|| {
        let mut held: Vec<Option<TcpStream>> = (0..FLOOD_CONNECTIONS).map(|_| None).collect();
        let mut opened = 0;
        while Instant::now() < until {
            for slot in held.iter_mut() {
                let closed = slot.as_mut().is_none_or(|s| {
                    let mut byte = [0u8; 1];
                    !matches!(s.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
                });
                if !closed || opened == FLOOD_MAX_CONNECTS || Instant::now() >= until {
                    continue;
                }
                *slot = TcpStream::connect_timeout(&target, Duration::from_millis(500))
                    .ok()
                    .inspect(|s| s.set_nonblocking(true).expect("non-blocking socket"));
                opened += 1;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        opened
    })
}

/// `weft status` on the node of `config` in `ns`: how long it took, and whether it answered.
fn status_latency(ns: &Netns, config: &Path) -> (Duration, bool) {
    let started = Instant::now();
    let (ok, _, _) = weft(ns, &["status", "--config", config.to_str().unwrap()]);
    (started.elapsed(), ok)
}

/// A GET of /metrics on 127.0.0.1:9820 in `ns` with a 2 s deadline: how long it took, and
/// whether it answered 200 with weft's metrics.
fn scrape_latency(ns: &Netns) -> (Duration, bool) {
    let started = Instant::now();
    let ok = ns.run(|| {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9820));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let request = b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if std::io::Write::write_all(&mut s, request).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        (body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"))
            && body.contains("weft_")
    });
    (started.elapsed(), ok)
}

#[test]
fn a_join_port_flood_at_256_descriptors_stalls_neither_tunnel_nor_status_nor_a_real_join() {
    let lab = Lab::new("adv-joinflood");
    let net = RoutedHosts::new(&lab, "jf", 4);
    let (a_ns, b_ns, attacker, c_ns) = (&net.hosts[0], &net.hosts[1], &net.hosts[2], &net.hosts[3]);

    let a_dir = lab.dir().join("a");
    init_alpha(a_ns, &a_dir);
    let a_config = a_dir.join("weft.toml");
    let (a4, _) = addresses(&a_config);
    let a = Node::start_file(&lab, a_ns, "a", &a_config, v4(a4));
    let b_token = invite(a_ns, &a_config, "beta", "1h");
    let c_token = invite(a_ns, &a_config, "gamma", "1h");
    let b_dir = lab.dir().join("b");
    let (ok, err, _) = join(b_ns, &b_token, &b_dir);
    assert!(ok, "weft join of b failed: {err}");
    let b_config = b_dir.join("weft.toml");
    let (b4, _) = addresses(&b_config);
    let _b = Node::start_file(&lab, b_ns, "b", &b_config, v4(b4));
    wait_reachable(b_ns, a4, Duration::from_secs(15));

    limit_open_files(a.pid(), FD_LIMIT);
    let target = SocketAddr::from((RoutedHosts::address(0), JOIN_PORT));
    let flood_for = Duration::from_secs(25);
    let flood_ends = Instant::now() + flood_for;
    let c_dir = lab.dir().join("c");
    std::thread::scope(|s| {
        let flood = s.spawn(|| hold_idle_connections(attacker, target, flood_ends));
        // Let the flood fill the node's descriptors before measuring.
        std::thread::sleep(Duration::from_secs(3));
        let pings = ping_in_background(b_ns, a4, 150);
        let pid = Pid::from_raw(a.pid() as i32);
        let ticks_before = cpu_ticks(pid);
        let window = Instant::now();
        let c_dir = &c_dir;
        let joiner = s.spawn(move || join(c_ns, &c_token, c_dir));
        let mut statuses = Vec::new();
        let mut scrapes = Vec::new();
        while window.elapsed() < Duration::from_secs(12) {
            statuses.push(status_latency(a_ns, &a_config));
            scrapes.push(scrape_latency(a_ns));
            std::thread::sleep(Duration::from_secs(1));
        }
        let ticks = cpu_ticks(pid) - ticks_before;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let cpu = 100.0 * ticks as f64 / hz / window.elapsed().as_secs_f64();
        let pinged = pings.finish(Duration::from_secs(30));
        let (joined, join_err, join_took) = joiner.join().expect("joiner thread");
        let opened = flood.join().expect("flood thread");

        let slowest_status = statuses.iter().map(|(d, _)| *d).max().unwrap();
        let slowest_scrape = scrapes.iter().map(|(d, _)| *d).max().unwrap();
        println!(
            "join flood: {opened} connections from one address to a node limited to \
             {FD_LIMIT} descriptors; node CPU {cpu:.1}%; pings b->a lost {} of {}; weft status \
             {}/{} answered, slowest {slowest_status:?}; /metrics {}/{} answered, slowest \
             {slowest_scrape:?}; a join from another address {} in {join_took:?}",
            pinged.lost(),
            pinged.transmitted,
            statuses
                .iter()
                .filter(|(d, ok)| *ok && *d < Duration::from_secs(1))
                .count(),
            statuses.len(),
            scrapes
                .iter()
                .filter(|(d, ok)| *ok && *d < Duration::from_secs(1))
                .count(),
            scrapes.len(),
            if joined { "succeeded" } else { "FAILED" },
        );
        assert!(
            opened >= FLOOD_CONNECTIONS,
            "the flood opened only {opened} connections"
        );
        assert!(joined, "a real join failed during the flood: {join_err}");
        assert!(cpu < 10.0, "the node spent {cpu:.1}% CPU under the flood");
        assert!(
            pinged.lost() <= 1,
            "the tunnel lost {} of {} pings under the flood",
            pinged.lost(),
            pinged.transmitted
        );
        for (latency, ok) in &statuses {
            assert!(
                *ok && *latency < Duration::from_secs(1),
                "weft status answered {ok} after {latency:?}"
            );
        }
        for (latency, ok) in &scrapes {
            assert!(
                *ok && *latency < Duration::from_secs(1),
                "/metrics answered {ok} after {latency:?}"
            );
        }
    });
}

/// Junk initiations a second in the handshake-flood scenario.
const JUNK_PER_SECOND: u32 = 300;
/// How long the junk flood lasts.
const JUNK_FOR: Duration = Duration::from_secs(10);
/// When, counted from the flood's start, the honest member starts (twice, with the same key):
/// half a second or more into a one-second load window, when 150 or more junk messages of that
/// window have arrived, more than the 128 a second that once put the member under load.
const HONEST_STARTS: [Duration; 2] = [Duration::from_millis(2_500), Duration::from_millis(5_600)];

/// Sends [`JUNK_PER_SECOND`] 148-byte datagrams shaped as handshake initiations (type 1, reserved
/// bytes zero) with random contents, so mac1 is wrong, from `ns` to `target` until `until`.
/// Returns how many went out: at most `JUNK_PER_SECOND` a second, never more.
fn throw_junk_initiations(ns: &Netns, target: SocketAddr, until: Instant) -> usize {
    use crate::harness::XorShift64;
    use std::net::UdpSocket;

    ns.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the attacker's socket");
        let mut rng = XorShift64::new(0x0dd_1417);
        let every = Duration::from_secs(1) / JUNK_PER_SECOND;
        let mut buf = [0u8; 148];
        let mut sent = 0;
        let mut next = Instant::now();
        while next < until {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            rng.fill(&mut buf);
            buf[..4].copy_from_slice(&[1, 0, 0, 0]);
            // A send the local stack refuses is only counted: the test asserts most went out.
            if socket.send_to(&buf, target).is_ok() {
                sent += 1;
            }
            next += every;
        }
        sent
    })
}

/// The UTC time of day now, as node logs stamp their lines.
fn time_of_day_now() -> Duration {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970");
    Duration::new(since_epoch.as_secs() % 86_400, since_epoch.subsec_nanos())
}

#[test]
fn junk_initiations_at_300_per_second_do_not_delay_an_honest_members_first_handshake() {
    use crate::harness::{elapsed_between, poll, Keypair, NodeConfig, PeerConfig, DEFAULT_PORT};

    let lab = Lab::new("adv-junkinit");
    let net = RoutedHosts::new(&lab, "ji", 3);
    let (a_ns, b_ns, attacker) = (&net.hosts[0], &net.hosts[1], &net.hosts[2]);
    let (key_a, key_b) = (Keypair::generate(&lab, "a"), Keypair::generate(&lab, "b"));
    // a has no endpoint for b: only b's own handshake can bring the tunnel up.
    let a_config = NodeConfig::new("a", &key_a, 1).peer(PeerConfig::new("b", &key_b, 2));
    let a_endpoint = SocketAddr::from((RoutedHosts::address(0), DEFAULT_PORT));
    let _a = Node::start(&lab, a_ns, &a_config);

    let flood_started = Instant::now();
    let flood_ends = flood_started + JUNK_FOR;
    std::thread::scope(|s| {
        let flood = s.spawn(|| throw_junk_initiations(attacker, a_endpoint, flood_ends));
        let mut took = Vec::new();
        for (run, start_at) in HONEST_STARTS.into_iter().enumerate() {
            std::thread::sleep(start_at.saturating_sub(flood_started.elapsed()));
            // A fresh process each time (same key, its own config and log): a first handshake.
            let b_config = NodeConfig::new(&format!("b{run}"), &key_b, 2)
                .peer(PeerConfig::new("a", &key_a, 1).endpoint(a_endpoint.to_string()));
            let started = time_of_day_now();
            let b = Node::start(&lab, b_ns, &b_config);
            let done = poll(Duration::from_secs(8), Duration::from_millis(20), || {
                b.log().first_handshake("a")
            });
            let handshake = done.map(|at| elapsed_between(started, at));
            println!("junk initiations: run {run}: first handshake after {handshake:?}");
            took.push((handshake, flood_started.elapsed() < JUNK_FOR));
        }
        let sent = flood.join().expect("flood thread");
        let expected = JUNK_PER_SECOND as usize * JUNK_FOR.as_secs() as usize;
        println!(
            "junk initiations: {sent} bad-mac1 initiations at {JUNK_PER_SECOND}/s for \
             {JUNK_FOR:?} to a member; an honest member's first handshake took {:?} \
             (starts {HONEST_STARTS:?} into the flood)",
            took.iter().map(|(h, _)| *h).collect::<Vec<_>>()
        );
        assert!(
            sent >= expected * 9 / 10,
            "only {sent} of {expected} junk initiations went out"
        );
        for (run, (handshake, during_flood)) in took.iter().enumerate() {
            let handshake = handshake.unwrap_or_else(|| {
                panic!("run {run}: no handshake within 8 s under the junk flood")
            });
            assert!(
                handshake < Duration::from_secs(1),
                "run {run}: the first handshake took {handshake:?} under the junk flood"
            );
            assert!(
                during_flood,
                "the flood ended before run {run} was measured"
            );
        }
    });
}

/// Records a second the flooding member publishes.
const RECORD_FLOOD_RATE: u32 = 500;
/// How long it floods.
const RECORD_FLOOD_FOR: Duration = Duration::from_secs(30);
/// Public addresses a member's NAT lifetimes may take in a store (weft_store::nat).
const RECORD_FLOOD_NAT_PER_MEMBER: usize = 4;

/// The `[mesh]` table of a config weft wrote.
fn record_flood_mesh_section(config: &Path) -> toml::Table {
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display()));
    let mut table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    match table.remove("mesh") {
        Some(toml::Value::Table(mesh)) => mesh,
        _ => panic!("{} has no [mesh] section", config.display()),
    }
}

/// The bytes of a base64 file weft wrote (a key or a certificate).
fn record_flood_base64_file(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .unwrap_or_else(|e| panic!("{} is not base64: {e}", path.display()))
}

/// Bytes under `dir`, recursively.
fn record_flood_dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => record_flood_dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_member_flooding_500_valid_records_a_second_costs_others_no_ping_no_publish_and_no_store() {
    use std::str::FromStr;

    use weft_protocol::membership::{
        Announcement, IdentityKey, IdentitySecret, NatLifetime, NetworkId, PathObservation,
        RecordBody, SignedCertificate, SignedRecord,
    };

    use crate::harness::{MemberFlood, DEFAULT_PORT};
    use crate::mesh::{build_mesh, wait_pairs};

    let lab = Lab::new("adv-recflood");
    let hosts = RoutedHosts::new(&lab, "rf", 3);
    let (mut nodes, addrs) = build_mesh(&lab, &hosts, 2);
    let both_ways = [(0, 1, addrs[1].0), (1, 0, addrs[0].0)];
    assert!(
        wait_pairs(&hosts, &both_ways, Duration::from_secs(15)).is_empty(),
        "the mesh did not form"
    );

    // The flooder is a real member: `weft join` with m0's invite. It runs no daemon; its
    // identity and certificate go to a control-plane peer that floods.
    let config0 = lab.dir().join("m0").join("weft.toml");
    let token = invite(&hosts.hosts[0], &config0, "flooder", "1h");
    let flooder_dir = lab.dir().join("flooder");
    let (ok, _, err) = weft(
        &hosts.hosts[2],
        &["join", &token, "--dir", flooder_dir.to_str().unwrap()],
    );
    assert!(ok, "weft join of the flooder failed: {err}");
    let secret: [u8; 32] = record_flood_base64_file(&flooder_dir.join("identity.key"))
        .try_into()
        .expect("a 32-byte identity key");
    let identity = IdentitySecret::from_bytes(secret);
    let credential = record_flood_base64_file(&flooder_dir.join("node.cert"));
    let certificate = SignedCertificate::from_bytes(&credential).expect("a certificate");
    let mesh = record_flood_mesh_section(&config0);
    let network = mesh["network"].as_str().expect("[mesh] network");
    NetworkId::from_str(network).expect("[mesh] network is a network id");
    let join_port = mesh["join_port"].as_integer().expect("[mesh] join_port");

    // What it publishes: its own announcement first (so every member knows it as a member and
    // takes its records), then, in turn, NAT lifetimes behind a new public address each and
    // path observations of made-up members; every one signed, fresh and plausible.
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let flooder_endpoint = SocketAddr::from((RoutedHosts::address(2), DEFAULT_PORT));
    let payload = |i: usize| {
        let n = i as u32;
        let body = match i {
            0 => RecordBody::Announcement(Announcement {
                certificate: certificate.clone(),
                endpoints: vec![flooder_endpoint],
            }),
            _ if i % 2 == 1 => RecordBody::NatLifetime(NatLifetime {
                public: SocketAddr::new(
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (n >> 16) as u16, n as u16)
                        .into(),
                    4500,
                ),
                lifetime_ms: 30_000,
                measured_unix: now_unix,
            }),
            _ => {
                let mut made_up = [0x5A; 32];
                made_up[..4].copy_from_slice(&n.to_be_bytes());
                RecordBody::PathObservation(PathObservation {
                    to: IdentityKey(made_up),
                    endpoint: SocketAddr::from(([203, 0, 113, (n % 250) as u8 + 1], 51820)),
                    pmtu: 1420,
                    rtt_us: 1_000,
                    measured_unix: now_unix,
                })
            }
        };
        SignedRecord::sign(&identity, i as u64 + 1, body).to_bytes()
    };
    let flood = MemberFlood {
        target: format!("/ip4/{}/udp/{join_port}/quic-v1", RoutedHosts::address(0))
            .parse()
            .expect("a multiaddr"),
        topic: format!("weft/{network}/records"),
        identity_secret: secret,
        credential: credential.clone(),
        per_second: RECORD_FLOOD_RATE,
        duration: RECORD_FLOOD_FOR,
        patience: Duration::from_secs(15),
    };

    let store_dirs = [
        lab.dir().join("m0").join("state"),
        lab.dir().join("m1").join("state"),
    ];
    let bytes_before: Vec<u64> = store_dirs
        .iter()
        .map(|d| record_flood_dir_bytes(d))
        .collect();
    let before = [
        Metrics::scrape(&hosts.hosts[0]),
        Metrics::scrape(&hosts.hosts[1]),
    ];
    let pings_wanted = (RECORD_FLOOD_FOR.as_millis() / 100) as u32 + 20;
    let pings = ping_in_background(&hosts.hosts[1], addrs[0].0, pings_wanted);
    let report = flood.run(&hosts.hosts[2], payload);
    let pinged = pings.finish(Duration::from_secs(20));
    let after = [
        Metrics::scrape(&hosts.hosts[0]),
        Metrics::scrape(&hosts.hosts[1]),
    ];

    // Afterwards m1's own publishes still reach m0: a new address makes m1 announce.
    let announcements = "weft_gossip_received_total{kind=\"announcement\"}";
    let heard_before = after[0].get(announcements);
    hosts.hosts[1].ip(&[
        "addr",
        "add",
        &format!("{}/28", RoutedHosts::other_address(1)),
        "dev",
        "eth0",
    ]);
    let announced_at = Instant::now();
    let heard = crate::harness::poll(Duration::from_secs(20), Duration::from_millis(200), || {
        let now = Metrics::scrape(&hosts.hosts[0]).get(announcements);
        (now > heard_before).then(|| announced_at.elapsed())
    });
    let ping_after = crate::harness::ping(&hosts.hosts[1], addrs[0].0, 3).received;

    for node in &mut nodes {
        assert!(node.is_running(), "{} stopped under the flood", node.name());
        node.stop();
    }
    let bytes_after: Vec<u64> = store_dirs
        .iter()
        .map(|d| record_flood_dir_bytes(d))
        .collect();
    let flooder_id = identity.identity().0;
    let nat: Vec<(usize, usize)> = store_dirs
        .iter()
        .map(|d| {
            let store = weft_store::Store::open(d).expect("open a member's store");
            let all = store.nat().list().expect("list NAT lifetimes");
            let flooders = all.iter().filter(|((m, _), _)| *m == flooder_id).count();
            (all.len(), flooders)
        })
        .collect();

    let delta = |i: usize, name: &str| after[i].get(name) - before[i].get(name);
    for (i, name) in ["m0", "m1"].iter().enumerate() {
        println!(
            "record flood: {name}: records accepted: {} NAT lifetimes, {} observations; \
             rejected: {} over the origin's budget, {} of unknown members; NAT lifetimes stored \
             {} ({} the flooder's); store {} -> {} bytes",
            delta(i, "weft_gossip_received_total{kind=\"nat\"}"),
            delta(i, "weft_gossip_received_total{kind=\"path_observation\"}"),
            delta(i, "weft_gossip_rejected_total{reason=\"origin_over_rate\"}"),
            delta(i, "weft_gossip_rejected_total{reason=\"unknown_subject\"}"),
            nat[i].0,
            nat[i].1,
            bytes_before[i],
            bytes_after[i],
        );
    }
    println!(
        "record flood: {} records attempted at {RECORD_FLOOD_RATE}/s for {:?} by member {} \
         (admitted after {:?}), {} sent, refused {:?}, closed {:?}; pings m1->m0 every 100 ms \
         lost {} of {}; m1's announcement after the flood reached m0 after {heard:?}; \
         {ping_after}/3 pings after",
        report.attempted,
        report.flooded_for,
        report.peer_id,
        report.admitted_after,
        report.sent,
        report.refused,
        report.closed,
        pinged.lost(),
        pinged.transmitted,
    );

    // The flood ran at its rate for its time; what left the flooder is what its gossipsub
    // queue took (it fills once m0 graylists it), far above the origin's budget either way.
    let wanted = (RECORD_FLOOD_FOR.as_secs() * u64::from(RECORD_FLOOD_RATE)) as usize;
    assert!(
        report.attempted >= wanted * 9 / 10 && report.flooded_for <= RECORD_FLOOD_FOR * 11 / 10,
        "the flood made only {} of {wanted} attempts in {:?}",
        report.attempted,
        report.flooded_for
    );
    assert!(
        report.sent >= 1_000,
        "only {} records went out: the scenario proves nothing",
        report.sent
    );
    let taken = delta(0, "weft_gossip_received_total{kind=\"nat\"}")
        + delta(0, "weft_gossip_received_total{kind=\"path_observation\"}");
    assert!(
        taken >= 200 && delta(0, "weft_gossip_received_total{kind=\"nat\"}") >= 100,
        "m0 judged only {taken} of the flood's records: the scenario proves nothing"
    );
    assert!(
        delta(0, "weft_gossip_rejected_total{reason=\"origin_over_rate\"}") > 0,
        "m0 counted nothing over the flooder's budget"
    );
    assert_eq!(
        pinged.lost(),
        0,
        "pings between two other members were lost under the flood"
    );
    assert!(
        heard.is_some(),
        "m1's announcement after the flood never reached m0"
    );
    assert_eq!(ping_after, 3, "the tunnel m1->m0 after the flood");
    for (i, (all, flooders)) in nat.iter().enumerate() {
        assert!(
            *flooders <= RECORD_FLOOD_NAT_PER_MEMBER && *all <= 3 * RECORD_FLOOD_NAT_PER_MEMBER,
            "m{i}'s store took {all} NAT lifetimes ({flooders} the flooder's) from the flood"
        );
    }
}

/// The bytes of a base64 file `weft join` wrote (a key or a certificate).
fn endpoint_lie_base64_file(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .unwrap_or_else(|e| panic!("{} is not base64: {e}", path.display()))
}

/// One field of the `[mesh]` table of a config weft wrote.
fn endpoint_lie_mesh_field(config: &Path, key: &str) -> toml::Value {
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display()));
    let table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    table["mesh"][key].clone()
}

/// The endpoint the node of `config` in `ns` sends to for its peer `name`, and how long ago it
/// last heard from that peer (`weft status --json`).
fn endpoint_lie_peer_view(ns: &Netns, config: &Path, name: &str) -> (Option<String>, Option<f64>) {
    let (ok, out, err) = weft(
        ns,
        &["status", "--json", "--config", config.to_str().unwrap()],
    );
    assert!(ok, "weft status failed: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    let peer = status["peers"]
        .as_array()
        .expect("a peer list")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no peer {name} in {out}"));
    (
        peer["endpoint"].as_str().map(str::to_owned),
        peer["last_received_secs"].as_f64(),
    )
}

#[test]
fn a_member_lying_about_anothers_endpoint_does_not_redirect_its_traffic() {
    use weft_protocol::device::GOSSIP_ENDPOINT_GRACE;
    use weft_protocol::membership::{IdentitySecret, PathObservation, RecordBody, SignedRecord};

    use crate::harness::{ping, poll, MemberFlood, DEFAULT_PORT};
    use crate::mesh::build_mesh;

    let lab = Lab::new("adv-lie");
    let hosts = RoutedHosts::new(&lab, "el", 4);
    // m0 creates the network; X (m1) and Y (m2) join; the liar M joins from host 3 and runs no
    // daemon: its identity and certificate go to a control-plane peer the test drives.
    let (mut nodes, addrs) = build_mesh(&lab, &hosts, 3);
    let (x, y) = (1, 2);
    let x_endpoint = SocketAddr::from((RoutedHosts::address(x), DEFAULT_PORT)).to_string();
    // An address in the liar's subnet that no host holds: whatever goes there is lost.
    let evil = SocketAddr::from((RoutedHosts::other_address(3), DEFAULT_PORT));
    let config = |i: usize| lab.dir().join(format!("m{i}")).join("weft.toml");
    let config0 = config(0);
    let token = invite(&hosts.hosts[0], &config0, "liar", "1h");
    let liar_dir = lab.dir().join("liar");
    let (ok, _, err) = weft(
        &hosts.hosts[3],
        &["join", &token, "--dir", liar_dir.to_str().unwrap()],
    );
    assert!(ok, "weft join of the liar failed: {err}");

    // X talks to m0 first: the pong after that handshake tells X it is behind no NAT (so the
    // lie cannot be taken as news of one, whose keepalives would reach Y and hide a redirect).
    wait_reachable(&hosts.hosts[x], addrs[0].0, Duration::from_secs(15));
    // Y learned X's endpoint from X's announcement and has not heard from X for longer than
    // gossip needs to move it (X and Y have exchanged no traffic yet): from here on, what X
    // announces is where Y sends.
    let ready = poll(Duration::from_secs(60), Duration::from_millis(500), || {
        let (endpoint, heard) = endpoint_lie_peer_view(&hosts.hosts[y], &config(y), "m1");
        let quiet = heard.is_none_or(|s| s > GOSSIP_ENDPOINT_GRACE.as_secs_f64() + 1.0);
        (endpoint.as_deref() == Some(x_endpoint.as_str()) && quiet).then_some(())
    });
    assert!(
        ready.is_some(),
        "Y never took X's announced endpoint {x_endpoint}: {:?}",
        endpoint_lie_peer_view(&hosts.hosts[y], &config(y), "m1")
    );

    // The lie: M's signed path observation "I reached X at <evil>", published once straight to
    // X with M's real identity and certificate.
    let secret: [u8; 32] = endpoint_lie_base64_file(&liar_dir.join("identity.key"))
        .try_into()
        .expect("a 32-byte identity key");
    let liar = IdentitySecret::from_bytes(secret);
    let x_secret: [u8; 32] =
        endpoint_lie_base64_file(&lab.dir().join(format!("m{x}")).join("identity.key"))
            .try_into()
            .expect("a 32-byte identity key");
    let x_identity = IdentitySecret::from_bytes(x_secret).identity();
    let measured_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lie = |i: usize| {
        let body = RecordBody::PathObservation(PathObservation {
            to: x_identity,
            endpoint: evil,
            pmtu: 1420,
            rtt_us: 1_000,
            measured_unix,
        });
        SignedRecord::sign(&liar, i as u64 + 1, body).to_bytes()
    };
    let network = endpoint_lie_mesh_field(&config0, "network");
    let join_port = endpoint_lie_mesh_field(&config0, "join_port");
    let liar_peer = MemberFlood {
        target: format!(
            "/ip4/{}/udp/{}/quic-v1",
            RoutedHosts::address(x),
            join_port.as_integer().expect("[mesh] join_port")
        )
        .parse()
        .expect("a multiaddr"),
        topic: format!("weft/{}/records", network.as_str().expect("[mesh] network")),
        identity_secret: secret,
        credential: endpoint_lie_base64_file(&liar_dir.join("node.cert")),
        per_second: 1,
        duration: Duration::from_secs(1),
        patience: Duration::from_secs(15),
    };
    let report = liar_peer.run(&hosts.hosts[3], lie);
    assert!(report.sent > 0, "the lie was never published: {report:?}");
    let evil_text = evil.to_string();
    let heard = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        nodes[x]
            .log()
            .text()
            .lines()
            .any(|l| l.contains("reflexive endpoint") && l.contains(&evil_text))
            .then_some(())
    });
    assert!(heard.is_some(), "X never took the liar's observation");
    // Time for X to announce (within a second of a change) and for Y to hear it; then Y pings
    // X at once (a redirected Y would find X again only through a relay, 5 s after its first
    // unanswered handshake).
    std::thread::sleep(Duration::from_millis(1500));

    let (seen, _) = endpoint_lie_peer_view(&hosts.hosts[y], &config(y), "m1");
    let y_to_x = ping(&hosts.hosts[y], addrs[x].0, 50);
    let x_to_y = ping(&hosts.hosts[x], addrs[y].0, 50);
    let x_announced_it = nodes[x]
        .log()
        .text()
        .lines()
        .any(|l| l.contains("announced endpoints") && l.contains(&evil_text));
    let y_took_it = nodes[y]
        .log()
        .text()
        .lines()
        .any(|l| l.contains("endpoint learned from gossip") && l.contains(&evil_text));
    println!(
        "endpoint lie: M said X is at {evil}; X announced it: {x_announced_it}; Y sends to X \
         at {seen:?} (X is at {x_endpoint}); pings lost Y->X {} of 50, X->Y {} of 50",
        y_to_x.lost(),
        x_to_y.lost()
    );
    for node in &mut nodes {
        assert!(node.is_running(), "{} stopped", node.name());
    }
    assert!(!x_announced_it, "X announced the address M made up");
    assert!(!y_took_it, "Y took the address M made up as X's endpoint");
    assert_eq!(seen.as_deref(), Some(x_endpoint.as_str()));
    assert_eq!(y_to_x.lost(), 0, "Y -> X");
    assert_eq!(x_to_y.lost(), 0, "X -> Y");
}

#[test]
fn a_forged_icmp_too_big_does_not_lower_a_working_edge() {
    use std::net::SocketAddrV4;

    use crate::harness::{overlay, RouterPath, DEFAULT_PORT};
    use crate::pmtu::{
        cached_route_mtu, frag_needed, handshake_and_converge, send_icmp, start_nodes,
    };

    /// The real path MTU between A and B: the router–B link's.
    const PATH_MTU: u16 = 1400;
    /// What the forged messages announce: the IPv4 floor.
    const FORGED_MTU: u16 = 576;
    /// Forged messages sent, and the time between them.
    const FORGED: u32 = 3;
    const FORGED_EVERY: Duration = Duration::from_secs(2);

    let lab = Lab::new("adv-forgedicmp");
    let net = RouterPath::new(&lab, "", PATH_MTU);
    // The router itself never says "too big": every one A receives is forged.
    net.drop_icmp_too_big();
    let (node_a, _node_b) = start_nodes(&lab, &net, |c| c);
    handshake_and_converge(&net, &node_a, PATH_MTU);
    let log = node_a.log();
    let (b4, _) = overlay(2);
    // A busy edge: pings keep it carrying traffic (and validating its size) throughout.
    let pinger = ping_in_background(&net.a, b4.into(), 80);
    std::thread::sleep(Duration::from_secs(1));
    let changes_before = log.pmtu_changes("b").len();

    // Fragmentation-needed for 576 bytes quoting the tunnel's real UDP flow A -> B: everything
    // a true one would carry. The forger is a host on B's link (an address no interface holds,
    // sent from B's namespace); A's kernel takes a "too big" from any address.
    let flow = |ip: &str| SocketAddrV4::new(ip.parse().unwrap(), DEFAULT_PORT);
    let forged = frag_needed(flow(RouterPath::A), flow(RouterPath::B), FORGED_MTU);
    let forger = Ipv4Addr::new(203, 0, 113, 77);
    let victim: Ipv4Addr = RouterPath::A.parse().unwrap();
    for _ in 0..FORGED {
        send_icmp(&net.b, forger, victim, &forged);
        std::thread::sleep(FORGED_EVERY);
    }
    let pings = pinger.finish(Duration::from_secs(15));

    // The premise: A's kernel took the forgeries (it caches 576 toward B) and weft read them.
    assert_eq!(
        cached_route_mtu(&net.a, RouterPath::B),
        Some(FORGED_MTU),
        "A's kernel did not take the forged ICMP: the scenario proves nothing"
    );
    let hints = log.field_values("kernel path MTU hint", "mtu");
    assert!(
        hints.iter().any(|m| *m == FORGED_MTU.to_string()),
        "weft never read the forged ICMP from its socket: {hints:?}"
    );
    let changes: Vec<_> = log.pmtu_changes("b").split_off(changes_before);
    let lowest = changes.iter().map(|c| c.pmtu).min();
    let config = lab.dir().join("a.toml");
    let (ok, out, err) = weft(
        &net.a,
        &["status", "--json", "--config", config.to_str().unwrap()],
    );
    assert!(ok, "weft status failed: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    let b = status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == "b"))
        .unwrap_or_else(|| panic!("no peer b in {out}"));
    let status_pmtu = b["pmtu"].as_u64();
    let (probed, refuted) = (b["pmtu_hints"].as_u64(), b["pmtu_hints_refuted"].as_u64());
    println!(
        "adv-forgedicmp: {FORGED} forged fragmentation-needed (MTU {FORGED_MTU}), {} read by \
         weft, {probed:?} probed and {refuted:?} refuted by probes; A's PMTU toward B \
         afterwards {status_pmtu:?} (weft status), lowest in use since the first forgery {}, \
         {} PMTU changes; pings {}/{}",
        hints.len(),
        lowest.map_or(format!("{PATH_MTU} (unchanged)"), |l| l.to_string()),
        changes.len(),
        pings.received,
        pings.transmitted
    );
    assert!(
        changes.is_empty(),
        "a forged ICMP changed A's PMTU toward B:\n{}",
        log.describe_changes("b")
    );
    assert_eq!(status_pmtu, Some(u64::from(PATH_MTU)));
    // Each forgery was acted on (probed at once) and refuted by the probes.
    assert_eq!(probed, Some(u64::from(FORGED)), "hints probed");
    assert_eq!(refuted, probed, "hints refuted");
    assert_eq!(
        pings.lost(),
        0,
        "pings lost across the forgeries: {pings:?}"
    );
}

#[test]
fn weft_revoke_with_no_member_to_publish_to_succeeds_and_warns_that_it_was_not_published() {
    use crate::mesh::{build_mesh, wait_pairs};

    let lab = Lab::new("adv-revokewarn");
    let hosts = RoutedHosts::new(&lab, "rw", 2);
    let (mut nodes, addrs) = build_mesh(&lab, &hosts, 2);
    assert!(
        wait_pairs(&hosts, &[(1, 0, addrs[0].0)], Duration::from_secs(15)).is_empty(),
        "the mesh did not form"
    );
    // m1 stops: m0 still knows it, but has no member to publish to.
    nodes[1].stop();
    let connections = "weft_control_connections";
    let alone = crate::harness::poll(Duration::from_secs(15), Duration::from_millis(200), || {
        (Metrics::scrape(&hosts.hosts[0]).get(connections) == 0).then_some(())
    });
    assert!(
        alone.is_some(),
        "m0 kept a control connection to the stopped m1"
    );
    let config0 = lab.dir().join("m0").join("weft.toml");
    let (ok, out, err) = weft(
        &hosts.hosts[0],
        &["revoke", "m1", "--config", config0.to_str().unwrap()],
    );
    println!("revoke with nobody to publish to: exit ok {ok}; stdout {out:?}; stderr {err:?}");
    assert!(
        ok,
        "weft revoke failed although the revocation was stored: {err}"
    );
    assert!(out.contains("revoked m1"), "{out}");
    assert!(
        err.contains("WARN") && err.contains("not published"),
        "weft revoke did not warn that the revocation was not published: {err:?}"
    );
}
