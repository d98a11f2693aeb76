//! Rogue peers on the control plane. A plain libp2p node that knows the network id (and so the
//! records topic) and the members' addresses, but holds no certificate, dials a member's
//! control-plane port and publishes records: random bytes, an announcement under a certificate
//! it issued itself, and an announcement of a real member's certificate signed with its own
//! key. It never presents a credential. The member must hang up on it once the credential
//! deadline passes, refuse it straight away when it comes back, log the rejection, and let
//! nothing it sent change any member's view: no member learned, the mesh still up.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ip_network::Ipv4Network;
use rand_core::OsRng;
use weft_protocol::membership::{
    Announcement, Authority, Certificate, IdentitySecret, NetworkId, NetworkInfo, RecordBody,
    SignedCertificate, SignedRecord,
};
use weft_protocol::PublicKey;

use crate::harness::{
    ping, poll, Intrusion, IntrusionReport, Lab, Redial, RoutedHosts, XorShift64, DEFAULT_PORT,
};
use crate::mesh::{build_mesh, wait_pairs};

/// The names `build_mesh` gives the members.
const MEMBERS: [&str; 2] = ["m0", "m1"];
/// The host the intruder runs on (no weft there).
const INTRUDER_HOST: usize = 2;
/// How long the intruder waits to be hung up on: weft's credential deadline (10 s) and margin.
const HANG_UP_WITHIN: Duration = Duration::from_secs(15);
/// A refused re-dial must end well inside the credential deadline, or it was not refused but
/// merely timed out again.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// What the intruder publishes, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Random bytes of random length.
    Random,
    /// A well-formed announcement of the intruder itself, with a certificate for this network
    /// issued by an authority of its own.
    SelfIssued,
    /// An announcement of member m1's real certificate, signed by the intruder, pointing at
    /// the intruder's address.
    Stolen,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Random, Kind::SelfIssued, Kind::Stolen];

    fn of(index: usize) -> Kind {
        Self::ALL[index % Self::ALL.len()]
    }
}

/// Makes the intruder's payloads.
#[derive(Debug)]
struct Payloads {
    rng: XorShift64,
    identity: IdentitySecret,
    self_issued: SignedCertificate,
    stolen: SignedCertificate,
    endpoint: SocketAddr,
}

impl Payloads {
    fn next(&mut self, index: usize) -> Vec<u8> {
        let announce = |certificate: &SignedCertificate| {
            RecordBody::Announcement(Announcement {
                certificate: certificate.clone(),
                endpoints: vec![self.endpoint],
            })
        };
        // Each record is new: a fresh sequence number, so none is a duplicate or stale.
        let seq = index as u64 + 1;
        let body = match Kind::of(index) {
            Kind::Random => {
                let mut bytes = vec![0; 1 + self.rng.below(1024)];
                self.rng.fill(&mut bytes);
                return bytes;
            }
            Kind::SelfIssued => announce(&self.self_issued),
            Kind::Stolen => announce(&self.stolen),
        };
        SignedRecord::sign(&self.identity, seq, body).to_bytes()
    }
}

/// The `[mesh]` section of a config weft wrote.
fn mesh_section(config: &Path) -> toml::Table {
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display()));
    let mut table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    match table.remove("mesh") {
        Some(toml::Value::Table(mesh)) => mesh,
        _ => panic!("{} has no [mesh] section", config.display()),
    }
}

fn string<'t>(mesh: &'t toml::Table, key: &str) -> &'t str {
    mesh.get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("[mesh] has no string {key}"))
}

/// A certificate for network `network` (prefix `prefix`) naming `identity` "intruder", signed
/// by an authority nobody else knows.
fn self_issued_certificate(
    network: NetworkId,
    prefix: Ipv4Network,
    identity: &IdentitySecret,
) -> SignedCertificate {
    let authority = IdentitySecret::generate(&mut OsRng);
    let info = NetworkInfo::new(network, "rogue".to_owned(), prefix, authority.identity())
        .expect("a valid network description");
    let ipv4 = Ipv4Addr::from(u32::from(prefix.network_address()) + 200);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let certificate = Certificate {
        network,
        name: "intruder".to_owned(),
        identity: identity.identity(),
        noise_key: PublicKey([7; 32]),
        ipv4,
        ipv6: info.allocate_v6(ipv4),
        serial: 1,
        not_before: now - 60,
        not_after: now + 3600,
    };
    certificate
        .check(&info, now)
        .expect("the forged certificate breaks no rule but its signer");
    Authority::issue(&certificate, &authority)
}

/// A certificate file weft wrote (base64 of the signed certificate).
fn read_certificate(path: &Path) -> SignedCertificate {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .unwrap_or_else(|e| panic!("{} is not base64: {e}", path.display()));
    SignedCertificate::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How many publishes of `kind` gossipsub sent to the member.
fn sent(report: &IntrusionReport, kind: Kind) -> usize {
    report
        .publishes
        .iter()
        .enumerate()
        .filter(|&(i, outcome)| Kind::of(i) == kind && outcome.is_ok())
        .count()
}

#[test]
fn a_libp2p_node_without_a_certificate_changes_no_view_and_is_disconnected() {
    let lab = Lab::new("rogue-nocert");
    let hosts = RoutedHosts::new(&lab, "", 3);
    let (mut nodes, addrs) = build_mesh(&lab, &hosts, MEMBERS.len());
    let both_ways = [(0, 1, addrs[1].0), (1, 0, addrs[0].0)];
    assert!(
        wait_pairs(&hosts, &both_ways, Duration::from_secs(10)).is_empty(),
        "the mesh did not form before the intruder came"
    );

    let mesh = mesh_section(&lab.dir().join("m0").join("weft.toml"));
    let network = string(&mesh, "network");
    let network_id = NetworkId::from_str(network).expect("[mesh] network is a network id");
    let prefix = Ipv4Network::from_str(string(&mesh, "ipv4")).expect("[mesh] ipv4 is a prefix");
    let join_port = mesh
        .get("join_port")
        .and_then(toml::Value::as_integer)
        .expect("[mesh] join_port");

    let identity = IdentitySecret::generate(&mut OsRng);
    let intrusion = Intrusion {
        target: format!("/ip4/{}/udp/{join_port}/quic-v1", RoutedHosts::address(0))
            .parse()
            .expect("a multiaddr"),
        topic: format!("weft/{network}/records"),
        identity_secret: identity.to_bytes(),
        publish_every: Duration::from_millis(100),
        patience: HANG_UP_WITHIN,
        redial_patience: Duration::from_secs(3),
    };
    let mut payloads = Payloads {
        rng: XorShift64::new(0x0B4D_5EED_0000_0001),
        self_issued: self_issued_certificate(network_id, prefix, &identity),
        stolen: read_certificate(&lab.dir().join("m1").join("node.cert")),
        identity,
        endpoint: SocketAddr::from((RoutedHosts::address(INTRUDER_HOST), DEFAULT_PORT)),
    };
    let report = intrusion.run(&hosts.hosts[INTRUDER_HOST], |i| payloads.next(i));
    let intruder = report.peer_id.to_string();
    println!(
        "rogue: intruder {intruder} connected in {} ms; m0's subscription after {:?}; \
         {} publishes, sent: {} random, {} self-issued, {} stolen; closed: {:?}",
        report.connect_took.as_millis(),
        report.target_subscribed,
        report.publishes.len(),
        sent(&report, Kind::Random),
        sent(&report, Kind::SelfIssued),
        sent(&report, Kind::Stolen),
        report.closed,
    );

    // The intruder did get its records out to m0 before it was hung up on.
    for kind in Kind::ALL {
        assert!(
            sent(&report, kind) > 0,
            "no {kind:?} record reached m0: the scenario proves nothing ({:?})",
            report.publishes
        );
    }
    let Some((closed_after, _)) = &report.closed else {
        panic!("m0 did not close the intruder's connection within {HANG_UP_WITHIN:?}");
    };
    assert!(*closed_after <= HANG_UP_WITHIN);
    match &report.redial {
        Redial::Refused {
            after,
            established,
            how,
        } => {
            println!(
                "rogue: re-dial {} and closed after {} ms: {how}",
                if *established { "connected" } else { "failed" },
                after.as_millis()
            );
            assert!(
                *after <= REFUSED_WITHIN,
                "the re-dial ended only after {after:?}: m0 did not block the rejected peer"
            );
        }
        other => panic!("the rejected intruder was let back in: {other:?}"),
    }

    // m0 says why. Its gossip task logs that once the control task has closed the
    // connection, so it may trail the intruder's view by a moment.
    let log0 = nodes[0].log();
    let rejected = poll(Duration::from_secs(2), Duration::from_millis(50), || {
        log0.field_values("control-plane peer rejected", "peer")
            .contains(&intruder)
            .then_some(())
    });
    assert!(
        rejected.is_some(),
        "m0 never logged \"control-plane peer rejected\" for {intruder}"
    );
    assert!(
        !log0
            .field_values("control plane: member connected", "peer")
            .contains(&intruder),
        "m0 admitted the intruder as a member"
    );

    // No member's view changed: no record of the intruder's was even judged (real members'
    // records are at worst stale), nobody learned a member that is not one or an endpoint at
    // the intruder's address, m1 never heard of the intruder, and the mesh is as it was.
    let intruder_ip = RoutedHosts::address(INTRUDER_HOST).to_string();
    for node in &nodes {
        let log = node.log();
        let judged: Vec<String> = log
            .field_values("gossip record rejected", "reason")
            .into_iter()
            .filter(|reason| reason != "stale_sequence")
            .collect();
        assert!(
            judged.is_empty(),
            "{} judged records it should have dropped unread: {judged:?}",
            node.name()
        );
        let mut learned = log.field_values("member learned from gossip", "name");
        learned.extend(log.field_values("endpoint learned from gossip", "peer"));
        assert!(
            learned.iter().all(|name| MEMBERS.contains(&name.as_str())),
            "{} learned from gossip of a member that is none: {learned:?}",
            node.name()
        );
        let mut endpoints = log.field_values("member learned from gossip", "endpoint");
        endpoints.extend(log.field_values("endpoint learned from gossip", "to"));
        assert!(
            !endpoints.iter().any(|e| e.contains(&intruder_ip)),
            "{} took the intruder's address for a member's endpoint: {endpoints:?}",
            node.name()
        );
    }
    assert!(
        !nodes[1].log().text().contains(&intruder),
        "the intruder's peer id reached m1"
    );
    for node in &mut nodes {
        assert!(node.is_running(), "{} stopped", node.name());
    }
    assert_eq!(ping(&hosts.hosts[0], addrs[1].0, 3).received, 3, "m0 -> m1");
    assert_eq!(ping(&hosts.hosts[1], addrs[0].0, 3).received, 3, "m1 -> m0");
}
