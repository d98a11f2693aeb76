//! The node's TOML configuration, in the shape operators know from wg-quick.
//!
//! Parsing happens in two steps: serde reads the raw file (unknown keys are
//! errors, so a typo is caught), then [`Config::from_raw`] turns strings into
//! typed values and names the offending field in every error, e.g.
//! `peer[1].allowed_ips[0]: "100.64.0.300/32" is not an IP prefix`.
//! Relative paths are resolved against the config file's directory, so
//! several nodes can run on one machine from self-contained directories.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ip_network::IpNetwork;
use serde::Deserialize;
use weft_protocol::addr::{self, Loopback};
use weft_protocol::{Keepalive, PublicKey};

use crate::keys;

/// Default interface MTU: 1500 minus the IPv6 (40), UDP (8) and transport
/// (32) overheads, as WireGuard chooses.
pub const DEFAULT_MTU: u16 = 1420;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 51820;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: RawInterface,
    #[serde(default)]
    peer: Vec<RawPeer>,
    mesh: Option<RawMesh>,
    metrics: Option<RawMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<String>,
    per_peer_labels: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    network: String,
    network_name: String,
    ipv4: String,
    authority: String,
    name: String,
    identity_key_file: PathBuf,
    authority_key_file: Option<PathBuf>,
    certificate_file: PathBuf,
    state: PathBuf,
    join_port: Option<u16>,
    admin_socket: Option<PathBuf>,
    #[serde(default)]
    advertise: Vec<String>,
    relay_bytes_per_second: Option<u64>,
    certificate_lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<String>,
    private_key_file: PathBuf,
    listen_port: Option<u16>,
    #[serde(default)]
    address: Vec<String>,
    mtu: Option<u16>,
    pmtu_discovery: Option<bool>,
    mss_clamp: Option<bool>,
    admin_socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Option<String>,
    public_key: String,
    preshared_key_file: Option<PathBuf>,
    endpoint: Option<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    persistent_keepalive: Option<RawKeepalive>,
}

/// `persistent_keepalive`: a number of seconds or a word.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawKeepalive {
    Seconds(i64),
    Word(String),
}

/// The `[interface]` table.
#[derive(Debug, Clone)]
pub struct Interface {
    /// TUN device name.
    pub name: String,
    /// Where the private key lives.
    pub private_key_file: PathBuf,
    /// UDP port, IPv4 and IPv6.
    pub listen_port: u16,
    /// Overlay addresses with their prefix lengths.
    pub address: Vec<IpNetworkWithHost>,
    /// Interface MTU.
    pub mtu: u16,
    /// Whether each edge discovers its path MTU by probing.
    pub pmtu_discovery: bool,
    /// Whether TCP MSS in SYN and SYN-ACK packets is clamped to the edge.
    pub mss_clamp: bool,
}

/// An interface address: the host address and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetworkWithHost {
    /// The host address.
    pub addr: std::net::IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// One `[[peer]]` table.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Name for logs.
    pub name: String,
    /// Static public key.
    pub public_key: PublicKey,
    /// Optional pre-shared key file.
    pub preshared_key_file: Option<PathBuf>,
    /// Initial endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Routed and accepted inner prefixes.
    pub allowed_ips: Vec<IpNetwork>,
    /// Persistent keepalive: `"auto"` (the default) chooses it from the
    /// measured NAT mapping lifetime; a number of seconds fixes it; 0 is off.
    pub keepalive: Keepalive,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interface settings.
    pub interface: Interface,
    /// Peers.
    pub peers: Vec<Peer>,
    /// Membership of a mesh, if this node is a member.
    pub mesh: Option<crate::mesh::MeshConfig>,
    /// The local admin socket `weft status` (and `invite`, `revoke`) use.
    pub admin_socket: PathBuf,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
}

/// Default address of the Prometheus endpoint.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9820";

/// The `[metrics]` table.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where `/metrics` is served; none when disabled.
    pub listen: Option<SocketAddr>,
    /// Whether per-peer series carry a `peer` label (off for very large
    /// meshes: the series are then folded over all peers).
    pub per_peer_labels: bool,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        // The default admin socket is named after the file, so nodes whose
        // configs share a directory get sockets of their own.
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("weft");
        Self::parse(&text, base, stem).with_context(|| format!("config {}", path.display()))
    }

    /// Parses `text` of a file named `stem` (without extension) in `base`:
    /// relative paths are taken relative to `base`, and the admin socket
    /// defaults to `stem.sock` there.
    pub fn parse(text: &str, base: &Path, stem: &str) -> anyhow::Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a source excerpt;
            // the first line names the key and the problem.
            anyhow!("{}", e.message().lines().next().unwrap_or("invalid TOML")).context(
                match e.span() {
                    Some(span) => format!(
                        "at line {}",
                        text[..span.start.min(text.len())].lines().count().max(1)
                    ),
                    None => "invalid TOML".to_string(),
                },
            )
        })?;
        Self::from_raw(raw, base, stem)
    }

    fn from_raw(raw: RawConfig, base: &Path, stem: &str) -> anyhow::Result<Self> {
        let i = raw.interface;
        let name = i.name.unwrap_or_else(|| "weft0".to_string());
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            bail!("interface.name: {name:?} is not a valid interface name (1-15 characters, no '/' or spaces)");
        }
        let mtu = i.mtu.unwrap_or(DEFAULT_MTU);
        if !(1280..=9000).contains(&mtu) {
            bail!("interface.mtu: {mtu} is outside 1280..=9000");
        }
        let mut address = Vec::new();
        for (n, a) in i.address.iter().enumerate() {
            address.push(
                parse_interface_address(a).with_context(|| format!("interface.address[{n}]"))?,
            );
        }
        let interface = Interface {
            name,
            private_key_file: base.join(i.private_key_file),
            listen_port: i.listen_port.unwrap_or(DEFAULT_PORT),
            address,
            mtu,
            pmtu_discovery: i.pmtu_discovery.unwrap_or(true),
            mss_clamp: i.mss_clamp.unwrap_or(true),
        };
        let mut peers = Vec::new();
        for (n, p) in raw.peer.into_iter().enumerate() {
            let field = |f: &str| format!("peer[{n}].{f}");
            let public_key = keys::parse_public_key(&p.public_key).context(field("public_key"))?;
            let endpoint = p
                .endpoint
                .as_deref()
                .map(|e| parse_peer_endpoint(e, interface.listen_port))
                .transpose()
                .context(field("endpoint"))?;
            let mut allowed_ips = Vec::new();
            for (k, a) in p.allowed_ips.iter().enumerate() {
                let net: IpNetwork = a
                    .parse()
                    .map_err(|_| {
                        anyhow!(
                            "{a:?} is not an IP prefix in canonical form (e.g. \"100.64.0.2/32\")"
                        )
                    })
                    .with_context(|| field(&format!("allowed_ips[{k}]")))?;
                allowed_ips.push(net);
            }
            let keepalive = match p.persistent_keepalive {
                None => Keepalive::Auto,
                Some(RawKeepalive::Word(w)) if w == "auto" => Keepalive::Auto,
                Some(RawKeepalive::Word(w)) => {
                    return Err(anyhow!("{w:?} is neither \"auto\" nor a number of seconds"))
                        .context(field("persistent_keepalive"));
                }
                Some(RawKeepalive::Seconds(0)) => Keepalive::Off,
                Some(RawKeepalive::Seconds(s)) if !(1..=3600).contains(&s) => {
                    return Err(anyhow!("{s} seconds is not between 0 and an hour"))
                        .context(field("persistent_keepalive"));
                }
                Some(RawKeepalive::Seconds(s)) => {
                    Keepalive::Fixed(Duration::from_secs(s.unsigned_abs()))
                }
            };
            peers.push(Peer {
                name: p.name.unwrap_or_else(|| format!("peer{n}")),
                public_key,
                preshared_key_file: p.preshared_key_file.map(|f| base.join(f)),
                endpoint,
                allowed_ips,
                keepalive,
            });
        }
        let mesh_socket = raw.mesh.as_ref().and_then(|m| m.admin_socket.clone());
        let admin_socket = base.join(
            i.admin_socket
                .or(mesh_socket)
                .unwrap_or_else(|| PathBuf::from(format!("{stem}.sock"))),
        );
        let mesh = raw.mesh.map(|m| parse_mesh(m, base)).transpose()?;
        let metrics = parse_metrics(raw.metrics)?;
        Ok(Self {
            interface,
            peers,
            mesh,
            admin_socket,
            metrics,
        })
    }
}

fn parse_metrics(raw: Option<RawMetrics>) -> anyhow::Result<Metrics> {
    let raw = raw.unwrap_or(RawMetrics {
        enabled: None,
        listen: None,
        per_peer_labels: None,
    });
    let listen = raw.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
    let listen: SocketAddr = listen.parse().map_err(|_| {
        anyhow!(
            "metrics.listen: {listen:?} is not an IP address and port (e.g. \"127.0.0.1:9820\")"
        )
    })?;
    Ok(Metrics {
        listen: raw.enabled.unwrap_or(true).then_some(listen),
        per_peer_labels: raw.per_peer_labels.unwrap_or(true),
    })
}

fn parse_mesh(m: RawMesh, base: &Path) -> anyhow::Result<crate::mesh::MeshConfig> {
    let network = m.network.parse().map_err(|_| {
        anyhow!(
            "mesh.network: {:?} is not a network id (32 hex digits)",
            m.network
        )
    })?;
    let authority = m.authority.parse().map_err(|_| {
        anyhow!(
            "mesh.authority: {:?} is not an identity key (64 hex digits)",
            m.authority
        )
    })?;
    let ipv4 = m
        .ipv4
        .parse()
        .map_err(|_| anyhow!("mesh.ipv4: {:?} is not an IPv4 prefix", m.ipv4))?;
    let mut advertise = Vec::new();
    for (k, a) in m.advertise.iter().enumerate() {
        advertise.push(parse_advertised(a).with_context(|| format!("mesh.advertise[{k}]"))?);
    }
    let certificate_lifetime = m
        .certificate_lifetime
        .as_deref()
        .map(parse_certificate_lifetime)
        .transpose()
        .context("mesh.certificate_lifetime")?;
    Ok(crate::mesh::MeshConfig {
        network,
        network_name: m.network_name,
        ipv4,
        authority,
        name: m.name,
        identity_key_file: base.join(m.identity_key_file),
        authority_key_file: m.authority_key_file.map(|f| base.join(f)),
        certificate_file: base.join(m.certificate_file),
        state: base.join(m.state),
        join_port: m.join_port.unwrap_or(crate::mesh::DEFAULT_JOIN_PORT),
        advertise,
        relay_bytes_per_second: m
            .relay_bytes_per_second
            .unwrap_or(weft_protocol::device::DEFAULT_RELAY_BYTES_PER_SECOND),
        certificate_lifetime,
    })
}

/// `mesh.certificate_lifetime`: a duration such as "30d", "12h" or "90s"
/// (humantime's syntax), from 60 s to a year.
pub(crate) fn parse_certificate_lifetime(text: &str) -> anyhow::Result<std::time::Duration> {
    use weft_protocol::membership::authority_set::{
        MAX_CERTIFICATE_LIFETIME_SECS, MIN_CERTIFICATE_LIFETIME_SECS,
    };
    let d = humantime::parse_duration(text.trim()).map_err(|e| anyhow!("{text:?}: {e}"))?;
    if !(MIN_CERTIFICATE_LIFETIME_SECS..=MAX_CERTIFICATE_LIFETIME_SECS).contains(&d.as_secs()) {
        bail!("{text:?} is outside 60s..=365d");
    }
    Ok(d)
}

/// A static peer's endpoint: an IP address and port that
/// [`addr::usable`] accepts, IPv4-mapped forms written as IPv4 (so
/// `[::ffff:127.0.0.1]:51820` is the loopback address it is). Loopback
/// is allowed, for nodes sharing one host, but not at the node's own
/// `listen_port`: the node would send its handshakes to itself.
fn parse_peer_endpoint(e: &str, listen_port: u16) -> anyhow::Result<SocketAddr> {
    let given: SocketAddr = e.parse().map_err(|_| {
        anyhow!("{e:?} is not an IP address and port (e.g. \"192.0.2.1:51820\" or \"[2001:db8::1]:51820\")")
    })?;
    let endpoint = addr::usable(given, Loopback::Allowed).map_err(|why| anyhow!("{e:?}: {why}"))?;
    if endpoint.ip().is_loopback() && endpoint.port() == listen_port {
        bail!("{e:?} is this node's own listen port on loopback: it would send its handshakes to itself");
    }
    Ok(endpoint)
}

/// A `mesh.advertise` address: announced to every member, so one no remote
/// host could reach is refused here rather than by each of them;
/// IPv4-mapped forms are written as IPv4.
fn parse_advertised(a: &str) -> anyhow::Result<IpAddr> {
    let ip: IpAddr = a
        .parse()
        .map_err(|_| anyhow!("{a:?} is not an IP address"))?;
    addr::usable_ip(ip, Loopback::Allowed).map_err(|why| anyhow!("{a:?}: {why}"))
}

fn parse_interface_address(s: &str) -> anyhow::Result<IpNetworkWithHost> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("{s:?} needs a prefix length, e.g. \"100.64.0.1/24\""))?;
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| anyhow!("{addr:?} is not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| anyhow!("{prefix:?} is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        bail!("prefix length {prefix} is longer than {max}");
    }
    Ok(IpNetworkWithHost { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("/etc/weft"), "weft")
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn a_wg_quick_shaped_config_parses_with_defaults() {
        let c = parse(&format!(
            r#"
            [interface]
            private_key_file = "private.key"
            address = ["100.64.0.1/24", "fd00:77::1/64"]
            [[peer]]
            public_key = "{KEY}"
            endpoint = "192.0.2.2:51820"
            allowed_ips = ["100.64.0.2/32", "fd00:77::2/128"]
            persistent_keepalive = 10
            "#
        ))
        .unwrap();
        assert_eq!(c.interface.name, "weft0");
        assert_eq!(c.interface.mtu, DEFAULT_MTU);
        assert_eq!(c.interface.listen_port, DEFAULT_PORT);
        assert_eq!(
            c.interface.private_key_file,
            Path::new("/etc/weft/private.key")
        );
        assert_eq!(
            c.peers[0].keepalive,
            Keepalive::Fixed(Duration::from_secs(10))
        );
        assert_eq!(c.peers[0].allowed_ips.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let base = "[interface]\nprivate_key_file = \"k\"\n";
        assert!(err(&format!("{base}mtu = 100\n")).contains("interface.mtu"));
        assert!(
            err(&format!("{base}address = [\"100.64.0.1\"]\n")).contains("interface.address[0]")
        );
        let peer = format!("{base}[[peer]]\npublic_key = \"{KEY}\"\n");
        assert!(err(&format!("{peer}allowed_ips = [\"100.64.0.300/32\"]\n"))
            .contains("peer[0].allowed_ips[0]"));
        assert!(err(&format!("{peer}endpoint = \"nowhere\"\n")).contains("peer[0].endpoint"));
        assert!(
            err(&format!("{base}[[peer]]\npublic_key = \"abc\"\n")).contains("peer[0].public_key")
        );
        assert!(err(&format!("{base}colour = 1\n")).contains("colour"));
        assert!(err("[interface]\n").contains("private_key_file"));
        let bad = err(&format!("{peer}persistent_keepalive = \"often\"\n"));
        assert!(bad.contains("peer[0].persistent_keepalive") && bad.contains("auto"));
        assert!(err(&format!("{peer}persistent_keepalive = 7200\n"))
            .contains("peer[0].persistent_keepalive"));
    }

    #[test]
    fn persistent_keepalive_is_auto_by_default_a_number_fixes_it_and_zero_is_off() {
        let base =
            format!("[interface]\nprivate_key_file = \"k\"\n[[peer]]\npublic_key = \"{KEY}\"\n");
        let k = |extra: &str| parse(&format!("{base}{extra}")).unwrap().peers[0].keepalive;
        assert_eq!(k(""), Keepalive::Auto);
        assert_eq!(k("persistent_keepalive = \"auto\"\n"), Keepalive::Auto);
        assert_eq!(
            k("persistent_keepalive = 25\n"),
            Keepalive::Fixed(Duration::from_secs(25))
        );
        assert_eq!(k("persistent_keepalive = 0\n"), Keepalive::Off);
    }

    #[test]
    fn a_static_peer_endpoint_is_judged_as_the_ipv4_address_a_mapped_form_stands_for() {
        let peer =
            format!("[interface]\nprivate_key_file = \"k\"\n[[peer]]\npublic_key = \"{KEY}\"\n");
        let endpoint = |e: &str| parse(&format!("{peer}endpoint = \"{e}\"\n"));
        // The node's own loopback at its own port: it would handshake with
        // itself.
        for own in ["[::ffff:127.0.0.1]:51820", "127.0.0.1:51820"] {
            let bad = format!("{:#}", endpoint(own).unwrap_err());
            assert!(
                bad.contains("peer[0].endpoint") && bad.contains("itself"),
                "{bad}"
            );
        }
        for (e, why) in [
            ("[::ffff:224.0.0.1]:51820", "multicast"),
            ("[::ffff:0.0.0.0]:51820", "unspecified"),
            ("0.0.0.0:51820", "unspecified"),
            ("[::ffff:255.255.255.255]:51820", "broadcast"),
            ("192.0.2.2:0", "port is 0"),
        ] {
            let bad = format!("{:#}", endpoint(e).unwrap_err());
            assert!(
                bad.contains("peer[0].endpoint") && bad.contains(why),
                "{e}: {bad}"
            );
        }
        let at = |e: &str| endpoint(e).unwrap().peers[0].endpoint;
        assert_eq!(
            at("[::ffff:192.0.2.2]:51820"),
            Some("192.0.2.2:51820".parse().unwrap())
        );
        // Another node on the same host.
        assert_eq!(
            at("[::ffff:127.0.0.1]:51821"),
            Some("127.0.0.1:51821".parse().unwrap())
        );
    }

    #[test]
    fn an_advertised_address_no_member_could_reach_is_refused_and_a_mapped_one_written_as_ipv4() {
        let mesh = |advertise: &str| {
            parse(&format!(
                r#"
                [interface]
                private_key_file = "k"
                [mesh]
                network = "{}"
                network_name = "test"
                ipv4 = "100.64.0.0/16"
                authority = "{}"
                name = "a"
                identity_key_file = "identity.key"
                certificate_file = "a.cert"
                state = "state"
                advertise = ["{advertise}"]
                "#,
                "ab".repeat(16),
                "cd".repeat(32),
            ))
        };
        let advertised = mesh("::ffff:192.0.2.1").unwrap().mesh.unwrap().advertise;
        assert_eq!(advertised, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        for (a, why) in [
            ("::ffff:224.0.0.1", "multicast"),
            ("::ffff:0.0.0.0", "unspecified"),
        ] {
            let bad = format!("{:#}", mesh(a).unwrap_err());
            assert!(
                bad.contains("mesh.advertise[0]") && bad.contains(why),
                "{a}: {bad}"
            );
        }
    }
}
