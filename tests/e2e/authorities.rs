//! The network's authority set end to end: `weft authority add` and `remove` hand the right to
//! sign certificates from the member that created the network to another, which then invites,
//! renews everyone and revokes, alone after the first is gone for good; authority sets forged
//! by a key outside the set, signed by a removed key, or replayed from an older version change
//! no node's view and are counted; and a member that was down while the set changed learns the
//! current set when it comes back. Every node reads its view with `weft authority list --json`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use weft_protocol::membership::{
    Adoption, Announcement, AuthorityChain, IdentityKey, IdentitySecret, NetworkId, RecordBody,
    SetChange, SetError, SignedCertificate, SignedRecord,
};

use crate::harness::{
    ping, ping_in_background, poll, wait_reachable, Lab, MemberFlood, Metrics, Netns, Node,
    RoutedHosts, DEFAULT_PORT,
};
use crate::mesh::{addresses, invite, v4, weft};

/// The certificate lifetime of the rotation scenario: renewals come a minute apart.
const SHORT_LIFETIME: &str = "60s";

/// `weft_gossip_rejected_total` for an authority chain that does not verify from the anchor.
const REJECTED_BAD_SET: &str = "weft_gossip_rejected_total{reason=\"bad_authority_set\"}";
/// ... for a fork with a version signed by a key the current set no longer holds.
const REJECTED_RETIRED: &str = "weft_gossip_rejected_total{reason=\"authority_retired_signer\"}";
/// ... for an older version of the chain held.
const REJECTED_OLDER: &str = "weft_gossip_rejected_total{reason=\"authority_older\"}";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A member's directory, config and running daemon.
struct Member<'n> {
    name: &'static str,
    ns: &'n Netns,
    dir: PathBuf,
    config: PathBuf,
    overlay: IpAddr,
    node: Option<Node<'n>>,
}

impl<'n> Member<'n> {
    fn at(lab: &Lab, name: &'static str, ns: &'n Netns) -> Member<'n> {
        let dir = lab.dir().join(name);
        let config = dir.join("weft.toml");
        Member {
            name,
            ns,
            dir,
            config,
            overlay: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            node: None,
        }
    }

    /// `weft init --name NAME --network 100.64.0.0/16 [ARGS…]` into its dir.
    fn init(mut self, args: &[&str]) -> Member<'n> {
        let mut argv = vec![
            "init",
            "--name",
            self.name,
            "--network",
            "100.64.0.0/16",
            "--dir",
            path_str(&self.dir),
        ];
        argv.extend_from_slice(args);
        let (ok, _, err) = weft(self.ns, &argv);
        assert!(ok, "{}: weft init failed: {err}", self.name);
        self.overlay = addresses(&self.config).0;
        self
    }

    /// `weft join` with a token `weft invite` made on `inviter`.
    fn join(mut self, inviter: &Member<'_>) -> Member<'n> {
        let token = invite(inviter.ns, &inviter.config, self.name, "1h");
        let (ok, _, err) = weft(self.ns, &["join", &token, "--dir", path_str(&self.dir)]);
        assert!(
            ok,
            "{}: weft join with {}'s token failed: {err}",
            self.name, inviter.name
        );
        self.overlay = addresses(&self.config).0;
        self
    }

    fn start(&mut self, lab: &Lab) {
        self.node = Some(Node::start_file(
            lab,
            self.ns,
            self.name,
            &self.config,
            v4(self.overlay),
        ));
    }

    fn stop(&mut self) {
        if let Some(node) = self.node.as_mut() {
            let status = node.stop();
            assert!(status.success(), "{} exited with {status}", self.name);
        }
        self.node = None;
    }

    /// `weft ARGS… --config CONFIG` in its namespace; panics with stderr on failure.
    fn weft(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_weft(args);
        assert!(ok, "{}: weft {} failed: {err}", self.name, args.join(" "));
        out
    }

    fn try_weft(&self, args: &[&str]) -> (bool, String, String) {
        let mut argv = args.to_vec();
        argv.extend_from_slice(&["--config", path_str(&self.config)]);
        weft(self.ns, &argv)
    }

    /// `weft authority list --json`; `Err` with what went wrong while the daemon cannot say.
    fn authorities(&self) -> Result<SetView, String> {
        let (ok, out, err) = self.try_weft(&["authority", "list", "--json"]);
        if !ok {
            return Err(format!("{}: weft authority list failed: {err}", self.name));
        }
        SetView::parse(&out).map_err(|e| format!("{}: {e}: {out}", self.name))
    }

    /// [`Member::authorities`] once it is the set whose holders are `names`, polled up to
    /// `limit`; panics with the last view otherwise.
    fn wait_holders(&self, names: &[&str], limit: Duration) -> SetView {
        let mut last = Err("never asked".to_owned());
        let found = poll(limit, Duration::from_millis(200), || {
            last = self.authorities();
            last.as_ref().ok().filter(|v| v.names() == names).cloned()
        });
        found.unwrap_or_else(|| {
            panic!(
                "{}: the authority set did not become {names:?} within {limit:?}: {last:?}",
                self.name
            )
        })
    }

    /// This node's certificate in force, from `weft status --json`: (serial, issuer).
    fn certificate(&self) -> Option<(u64, String)> {
        let (ok, out, _) = self.try_weft(&["status", "--json"]);
        if !ok {
            return None;
        }
        let status: serde_json::Value = serde_json::from_str(&out).ok()?;
        let c = &status["mesh"]["certificate"];
        Some((c["serial"].as_u64()?, c["issuer"].as_str()?.to_owned()))
    }

    /// A field of the `[mesh]` table of its config.
    fn mesh_field(&self, key: &str) -> toml::Value {
        let text = std::fs::read_to_string(&self.config)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.config.display()));
        let table: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", self.config.display()));
        table["mesh"][key].clone()
    }

    fn network(&self) -> NetworkId {
        let text = self.mesh_field("network");
        NetworkId::from_str(text.as_str().expect("[mesh] network is text"))
            .expect("[mesh] network is a network id")
    }

    /// The network's trust anchor, `[mesh] authority`.
    fn anchor(&self) -> IdentityKey {
        let text = self.mesh_field("authority");
        IdentityKey::from_str(text.as_str().expect("[mesh] authority is text"))
            .expect("[mesh] authority is 64 hex digits")
    }

    /// The bytes of a base64 file weft wrote into its dir (a key or a certificate).
    fn base64_file(&self, file: &str) -> Vec<u8> {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap_or_else(|e| panic!("{} is not base64: {e}", path.display()))
    }

    fn secret(&self, file: &str) -> IdentitySecret {
        let bytes: [u8; 32] = self
            .base64_file(file)
            .try_into()
            .unwrap_or_else(|_| panic!("{}: {file} is not a 32-byte key", self.name));
        IdentitySecret::from_bytes(bytes)
    }
}

/// One node's view of the authority set, as `weft authority list --json` prints it.
#[derive(Debug, Clone, PartialEq)]
struct SetView {
    version: u64,
    head: String,
    lifetime_secs: u64,
    /// (name, key as 64 hex digits), in the set's order.
    holders: Vec<(String, String)>,
    chain: Vec<u8>,
}

impl SetView {
    fn parse(text: &str) -> Result<SetView, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let field = |k: &str| v.get(k).ok_or(format!("no `{k}`"));
        let holders = field("holders")?
            .as_array()
            .ok_or("`holders` is not a list")?
            .iter()
            .map(|h| {
                let name = h["name"].as_str().ok_or("a holder without `name`")?;
                let key = h["key"].as_str().ok_or("a holder without `key`")?;
                h["since_unix"]
                    .as_u64()
                    .ok_or("a holder without `since_unix`")?;
                Ok((name.to_owned(), key.to_owned()))
            })
            .collect::<Result<_, &str>>()?;
        let chain = field("chain")?.as_str().ok_or("`chain` is not text")?;
        Ok(SetView {
            version: field("version")?.as_u64().ok_or("`version`")?,
            head: field("head")?.as_str().ok_or("`head`")?.to_owned(),
            lifetime_secs: field("certificate_lifetime_secs")?
                .as_u64()
                .ok_or("`certificate_lifetime_secs`")?,
            holders,
            chain: base64::engine::general_purpose::STANDARD
                .decode(chain)
                .map_err(|e| format!("`chain` is not base64: {e}"))?,
        })
    }

    fn names(&self) -> Vec<&str> {
        self.holders.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The key of holder `name`, 64 hex digits.
    fn key(&self, name: &str) -> &str {
        self.holders
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
            .unwrap_or_else(|| panic!("no holder {name} in {self:?}"))
    }
}

/// Whether `shown` (an issuer in `weft status`: the whole key or its fingerprint, a prefix of
/// at least 16 hex digits) names `key` (64 hex digits).
fn names_key(shown: &str, key: &str) -> bool {
    shown.len() >= 16 && key.starts_with(&shown.to_ascii_lowercase())
}

#[test]
fn the_first_authority_retired_and_gone_leaves_a_mesh_that_invites_and_renews_through_the_second() {
    let lab = Lab::new("auth-rotate");
    let hosts = RoutedHosts::new(&lab, "ar", 4);
    let mut a =
        Member::at(&lab, "a", &hosts.hosts[0]).init(&["--certificate-lifetime", SHORT_LIFETIME]);
    a.start(&lab);
    let mut b = Member::at(&lab, "b", &hosts.hosts[1]).join(&a);
    b.start(&lab);

    // a makes b a holder: b generates its own key. Asked the moment b starts, before b's
    // announcement reached a: the command waits for b to connect.
    let asked = Instant::now();
    let added = a.weft(&["authority", "add", "b"]);
    println!(
        "rotation: `weft authority add b` took {:?}",
        asked.elapsed()
    );
    wait_reachable(b.ns, a.overlay, Duration::from_secs(20));
    println!("rotation: a: {added}");
    let key_file = b.dir.join("authority.key");
    let mode = std::fs::metadata(&key_file)
        .unwrap_or_else(|e| panic!("b has no {}: {e}", key_file.display()))
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "b's authority.key has mode {mode:o}");
    assert_eq!(b.base64_file("authority.key").len(), 32, "a 32-byte key");
    let both = b.wait_holders(&["a", "b"], Duration::from_secs(10));
    let version = both.version.to_string();
    assert!(
        words(&added).any(|w| w == "b") && words(&added).any(|w| w == version),
        "`weft authority add b` named neither b nor version {version}: {added}"
    );
    assert_eq!(a.wait_holders(&["a", "b"], Duration::from_secs(10)), both);
    let b_key = both.key("b").to_owned();
    assert_eq!(
        b_key,
        b.secret("authority.key").identity().to_hex(),
        "the key in the set is the one b wrote"
    );
    assert_ne!(both.key("a"), b_key);

    // Both holders invite at the same moment, before either hears of the other's new member
    // (x and y join and never start): each hands out an address from its own share.
    let x = Member::at(&lab, "x", &hosts.hosts[2]).join(&a);
    let y = Member::at(&lab, "y", &hosts.hosts[3]).join(&b);
    println!(
        "rotation: a gave x {}, b gave y {} (a holds {}, b {})",
        x.overlay, y.overlay, a.overlay, b.overlay
    );
    let held = [a.overlay, b.overlay, x.overlay];
    assert!(
        !held.contains(&y.overlay) && x.overlay != a.overlay && x.overlay != b.overlay,
        "two holders gave out one address: a {}, b {}, x {}, y {}",
        a.overlay,
        b.overlay,
        x.overlay,
        y.overlay
    );

    // b retires a; a is then lost for good.
    let removed = b.weft(&["authority", "remove", "a"]);
    println!("rotation: b: {removed}");
    let only_b = b.wait_holders(&["b"], Duration::from_secs(10));
    assert!(only_b.version > both.version, "{only_b:?} after {both:?}");
    assert_eq!(only_b.key("b"), b_key);
    assert_eq!(only_b.lifetime_secs, 60);
    a.wait_holders(&["b"], Duration::from_secs(10));
    a.stop();
    std::fs::remove_dir_all(&a.dir).expect("delete a's directory");
    let retired = Instant::now();
    let (b_serial, b_issuer) = b.certificate().expect("b's certificate in weft status");
    println!("rotation: a gone; b's certificate serial {b_serial}, issuer {b_issuer}");

    // c joins with b's token; its first certificate is b's.
    let mut c = Member::at(&lab, "c", &hosts.hosts[2]).join(&b);
    c.start(&lab);
    let c_view = c.wait_holders(&["b"], Duration::from_secs(10));
    assert_eq!(
        (c_view.version, &c_view.head),
        (only_b.version, &only_b.head)
    );
    let (c_serial, c_issuer) = c.certificate().expect("c's certificate in weft status");
    assert!(
        names_key(&c_issuer, &b_key),
        "c's first certificate was not issued by b's key {b_key}: issuer {c_issuer:?}"
    );
    wait_reachable(c.ns, b.overlay, Duration::from_secs(20));
    wait_reachable(b.ns, c.overlay, Duration::from_secs(20));

    // Every member renews through b while b pings c every 100 ms.
    let pings = ping_in_background(b.ns, c.overlay, 750);
    let renewed = poll(Duration::from_secs(90), Duration::from_millis(500), || {
        let (bs, bi) = b.certificate()?;
        let (cs, ci) = c.certificate()?;
        (bs > b_serial && names_key(&bi, &b_key) && cs > c_serial && names_key(&ci, &b_key))
            .then(|| (retired.elapsed(), bs, cs))
    });
    let stats = pings.finish(Duration::from_secs(90));
    println!(
        "rotation: renewed through b {:?} after a was gone; {} of {} pings b->c lost",
        renewed.map(|r| r.0),
        stats.lost(),
        stats.transmitted
    );
    let (took, b_now, c_now) = renewed.unwrap_or_else(|| {
        panic!(
            "b and c did not both renew through b within 90 s: b {:?}, c {:?} (b's key {b_key})",
            b.certificate(),
            c.certificate()
        )
    });
    println!(
        "rotation: b serial {b_serial} -> {b_now}, c serial {c_serial} -> {c_now} in {took:?}"
    );
    assert!(stats.lost() <= 1, "{} pings b->c lost", stats.lost());
    assert_eq!(ping(b.ns, c.overlay, 5).received, 5, "b -> c after renewal");
    assert_eq!(ping(c.ns, b.overlay, 5).received, 5, "c -> b after renewal");
    for m in [&b, &c] {
        let view = m.authorities().expect("the set after renewal");
        assert_eq!(view.names(), ["b"], "{}: {view:?}", m.name);
        assert_eq!(view.head, only_b.head, "{}'s set changed", m.name);
    }

    // b also revokes: d joins with b's token, b revokes it, and c (which verifies the
    // revocation against b's key, not the network's first) cuts it off.
    let mut d = Member::at(&lab, "d", &hosts.hosts[3]).join(&b);
    d.start(&lab);
    wait_reachable(c.ns, d.overlay, Duration::from_secs(20));
    let revoked = b.weft(&["revoke", "d"]);
    println!("rotation: b: {revoked}");
    let since = Instant::now();
    let cut = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        (ping(c.ns, d.overlay, 1).received == 0 && ping(d.ns, c.overlay, 1).received == 0)
            .then(|| since.elapsed())
    });
    println!("rotation: d revoked by b, cut off from c after {cut:?}");
    assert!(cut.is_some(), "c still reaches d 10 s after b revoked it");
    assert_eq!(
        ping(b.ns, c.overlay, 3).received,
        3,
        "b -> c after the revocation"
    );
    assert!(!a.dir.exists(), "a came back");
}

/// The three authority chains a member gone bad publishes, each checked here first.
struct Forgeries {
    /// A chain from a genesis signed by a key that is not the anchor, longer than the real one.
    foreign: AuthorityChain,
    /// The real chain up to version 2 (a and b), extended twice by the removed key a: longer
    /// than the real chain, so only the retired-signer rule keeps it out.
    retired: AuthorityChain,
    /// The real chain's version 2: a replay of an older version.
    older: AuthorityChain,
}

impl Forgeries {
    fn make(
        real: &AuthorityChain,
        network: &NetworkId,
        anchor: &IdentityKey,
        a_authority: &IdentitySecret,
        lifetime_secs: u64,
    ) -> Forgeries {
        let now = now_unix();
        let held = real
            .verify(network, anchor)
            .expect("the real chain verifies");
        assert_eq!(held.version(), 3, "the real chain: a, a+b, b");

        let outsider = IdentitySecret::generate(&mut rand_core::OsRng);
        let mut foreign = AuthorityChain::genesis(*network, "a", &outsider, lifetime_secs, now)
            .expect("a genesis by any key");
        for name in ["x1", "x2", "x3", "x4"] {
            let own = foreign
                .verify(network, &outsider.identity())
                .expect("the foreign chain verifies from its own key");
            let key = IdentitySecret::generate(&mut rand_core::OsRng).identity();
            let change = SetChange::Add {
                name: name.into(),
                key,
            };
            foreign = foreign
                .extend(&own, change, &outsider, now)
                .expect("the outsider extends its own chain");
        }
        assert_eq!(
            foreign.verify(network, anchor),
            Err(SetError::SignerNotInPreviousVersion),
            "a chain from a foreign genesis must not verify from the anchor"
        );
        assert!(foreign.len() > real.len());

        let older = real.prefix(2).expect("the real chain has version 2");
        let two = older.verify(network, anchor).expect("version 2 verifies");
        assert_eq!(
            two.current()
                .holders
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(held.compare(&two), Adoption::Older);
        let without_b = older
            .extend(
                &two,
                SetChange::Remove { name: "b".into() },
                a_authority,
                now,
            )
            .expect("a's key signs version 3'");
        let three = without_b.verify(network, anchor).expect("3' verifies");
        let made_up = IdentitySecret::generate(&mut rand_core::OsRng).identity();
        let retired = without_b
            .extend(
                &three,
                SetChange::Add {
                    name: "z".into(),
                    key: made_up,
                },
                a_authority,
                now,
            )
            .expect("a's key signs version 4'");
        let forked = retired
            .verify(network, anchor)
            .expect("the fork verifies link by link from the anchor");
        assert_eq!(forked.version(), 4);
        assert!(
            held.prefers(&forked),
            "the fork is longer: by length alone it would win"
        );
        assert_eq!(held.compare(&forked), Adoption::RetiredSigner);
        Forgeries {
            foreign,
            retired,
            older,
        }
    }
}

#[test]
fn authority_sets_forged_by_an_outside_key_a_removed_key_or_replayed_change_no_nodes_view() {
    let lab = Lab::new("auth-forged");
    let hosts = RoutedHosts::new(&lab, "af", 4);
    let mut a = Member::at(&lab, "a", &hosts.hosts[0]).init(&[]);
    a.start(&lab);
    let mut b = Member::at(&lab, "b", &hosts.hosts[1]).join(&a);
    let mut c = Member::at(&lab, "c", &hosts.hosts[2]).join(&a);
    // The forger is a real member with no daemon: its identity and certificate go to a
    // control-plane peer the test drives.
    let x = Member::at(&lab, "x", &hosts.hosts[3]).join(&a);
    b.start(&lab);
    c.start(&lab);
    wait_reachable(b.ns, a.overlay, Duration::from_secs(20));
    wait_reachable(c.ns, a.overlay, Duration::from_secs(20));

    a.weft(&["authority", "add", "b"]);
    b.wait_holders(&["a", "b"], Duration::from_secs(10));
    let a_authority = a.secret("authority.key");
    b.weft(&["authority", "remove", "a"]);
    let members = [&a, &b, &c];
    let views: Vec<SetView> = members
        .iter()
        .map(|m| m.wait_holders(&["b"], Duration::from_secs(10)))
        .collect();
    for (m, v) in members.iter().zip(&views) {
        assert_eq!(
            (v.version, &v.head),
            (views[1].version, &views[1].head),
            "{}",
            m.name
        );
    }

    let network = a.network();
    let anchor = a.anchor();
    let real = AuthorityChain::from_bytes(&views[1].chain).expect("the chain b lists decodes");
    let held = real.verify(&network, &anchor).expect("b's chain verifies");
    assert_eq!(
        hex(&held.head()),
        views[1].head,
        "the listed head is the chain's"
    );
    let forged = Forgeries::make(
        &real,
        &network,
        &anchor,
        &a_authority,
        views[1].lifetime_secs,
    );

    // Published by x, a member in good standing, straight to each node over one connection
    // (a node drops what it rejects rather than pass it on): its announcement, so the node
    // knows x as a member, then the three forgeries in turn, twice. gossipsub stops listening
    // to x after its third invalid record; whichever three arrive first are one of each kind.
    // Sequence numbers rise over every run.
    let x_secret: [u8; 32] = x
        .base64_file("identity.key")
        .try_into()
        .expect("a 32-byte identity key");
    let x_identity = IdentitySecret::from_bytes(x_secret);
    let credential = x.base64_file("node.cert");
    let certificate = SignedCertificate::from_bytes(&credential).expect("x's certificate");
    let topic = format!("weft/{network}/records");
    let join_port = a
        .mesh_field("join_port")
        .as_integer()
        .expect("[mesh] join_port");
    let announcement = [RecordBody::Announcement(Announcement {
        certificate,
        endpoints: vec![SocketAddr::from((RoutedHosts::address(3), DEFAULT_PORT))],
    })];
    let forgeries = [
        RecordBody::AuthoritySet(forged.foreign.clone()),
        RecordBody::AuthoritySet(forged.retired.clone()),
        RecordBody::AuthoritySet(forged.older.clone()),
    ];
    let mut seq = 0u64;
    let before: Vec<_> = members.iter().map(|m| Metrics::scrape(m.ns)).collect();
    for (i, m) in members.iter().enumerate() {
        let bodies: Vec<&RecordBody> = announcement
            .iter()
            .chain(&forgeries)
            .chain(&forgeries)
            .collect();
        let flood = MemberFlood {
            target: format!("/ip4/{}/udp/{join_port}/quic-v1", RoutedHosts::address(i))
                .parse()
                .expect("a multiaddr"),
            topic: topic.clone(),
            identity_secret: x_secret,
            credential: credential.clone(),
            per_second: 2,
            duration: Duration::from_millis(500 * bodies.len() as u64),
            patience: Duration::from_secs(15),
        };
        let first = seq;
        seq += bodies.len() as u64;
        let report = flood.run(x.ns, |k| {
            let body = bodies[k % bodies.len()].clone();
            SignedRecord::sign(&x_identity, first + k as u64 + 1, body).to_bytes()
        });
        println!(
            "forged sets: to {}: {} of {} published, refused {:?}, closed {:?}",
            m.name, report.sent, report.attempted, report.refused, report.closed
        );
        // The announcement went first, and every forgery after it.
        assert_eq!(
            (report.attempted, report.sent),
            (bodies.len(), bodies.len()),
            "x's records to {} did not all go out in order: the scenario proves nothing",
            m.name
        );
    }

    // Each node judged them: its counters rose, its view stayed.
    let rejected = [REJECTED_BAD_SET, REJECTED_RETIRED, REJECTED_OLDER];
    for (i, m) in members.iter().enumerate() {
        let counted = poll(Duration::from_secs(10), Duration::from_millis(250), || {
            let now = Metrics::scrape(m.ns);
            rejected
                .iter()
                .all(|r| now.get(r) > before[i].get(r))
                .then_some(now)
        });
        let after = counted.unwrap_or_else(|| Metrics::scrape(m.ns));
        let delta = |name: &str| after.get(name) as i64 - before[i].get(name) as i64;
        println!(
            "forged sets: {}: rejected {} foreign, {} by the retired key, {} older; \
             weft_authorities {} -> {}",
            m.name,
            delta(REJECTED_BAD_SET),
            delta(REJECTED_RETIRED),
            delta(REJECTED_OLDER),
            before[i].get("weft_authorities"),
            after.get("weft_authorities"),
        );
        let view = m.authorities().expect("the set after the forgeries");
        assert_eq!(view, views[i], "{}'s authority set changed", m.name);
        assert_eq!(
            after.get("weft_authorities"),
            before[i].get("weft_authorities"),
            "{}: weft_authorities changed",
            m.name
        );
        for r in rejected {
            assert!(delta(r) > 0, "{}: {r} did not rise", m.name);
        }
    }
    for m in [&mut a, &mut b, &mut c] {
        let node = m.node.as_mut().expect("running");
        assert!(node.is_running(), "{} stopped", m.name);
    }
}

#[test]
fn a_member_down_while_the_authority_set_changed_learns_the_current_set_when_it_returns() {
    let lab = Lab::new("auth-late");
    let hosts = RoutedHosts::new(&lab, "al", 3);
    let mut a = Member::at(&lab, "a", &hosts.hosts[0]).init(&[]);
    a.start(&lab);
    let mut b = Member::at(&lab, "b", &hosts.hosts[1]).join(&a);
    let mut c = Member::at(&lab, "c", &hosts.hosts[2]).join(&a);
    b.start(&lab);
    c.start(&lab);
    wait_reachable(c.ns, b.overlay, Duration::from_secs(20));
    let first = c.wait_holders(&["a"], Duration::from_secs(10));

    c.stop();
    a.weft(&["authority", "add", "b"]);
    b.wait_holders(&["a", "b"], Duration::from_secs(10));
    b.weft(&["authority", "remove", "a"]);
    let current = b.wait_holders(&["b"], Duration::from_secs(10));
    assert!(current.version > first.version);

    let started = Instant::now();
    c.start(&lab);
    let learned = c.wait_holders(&["b"], Duration::from_secs(20));
    println!(
        "late member: c learned version {} (it had {}) {:.1} s after its start",
        learned.version,
        first.version,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (learned.version, &learned.head),
        (current.version, &current.head)
    );
    assert_eq!(
        ping(c.ns, b.overlay, 3).received,
        3,
        "c -> b after its return"
    );
}

/// The words of `text` (runs of letters, digits and '-').
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
