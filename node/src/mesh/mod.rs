//! Membership on the running node: the files a member keeps (identity,
//! certificate, the authority key on authority holders), its store, and the
//! daemon's mesh services: gossip, the member table, control-plane
//! neighbours, relays, warm start, the store writer, invite issuance and
//! the join listener (`node.rs` ties them together for the main task).
//!
//! The formats and every check live in `weft_protocol::membership` and
//! `weft_protocol::join`; this module does the file and socket work around
//! them. Keys are written with mode 0600 and never logged. The one-shot
//! commands (`weft init`, `join`, `invite`, `revoke`) live in `cli/` and
//! nothing here imports them.

pub mod authorities;
pub mod expiry;
pub mod gossip;
pub mod invite;
pub mod join;
pub mod members;
pub mod neighbours;
pub mod node;
pub mod relay;
pub mod renewal;
pub mod revocation;
pub mod warm;
pub mod writer;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use ip_network::Ipv4Network;
use serde::{Deserialize, Serialize};
use weft_protocol::membership::{
    Announcement, AuthorityChain, CertError, IdentityKey, IdentitySecret, NetworkId, NetworkInfo,
    RecordBody, SignedCertificate, SignedRecord,
};
use weft_store::Store;

use crate::keys;

/// Default TCP port of the join listener (beside the data-plane UDP port).
pub const DEFAULT_JOIN_PORT: u16 = 51821;

/// How long certificates are valid unless `mesh.certificate_lifetime`
/// says otherwise: members renew when a third of it remains.
pub const DEFAULT_CERTIFICATE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(
    weft_protocol::membership::authority_set::DEFAULT_CERTIFICATE_LIFETIME_SECS,
);

/// Seconds since 1970, for certificate and token times.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `[mesh]` table of a member's configuration.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The network.
    pub network: NetworkId,
    /// Its name.
    pub network_name: String,
    /// Its IPv4 prefix.
    pub ipv4: Ipv4Network,
    /// Its authority's public key.
    pub authority: IdentityKey,
    /// This member's name.
    pub name: String,
    /// This member's Ed25519 identity key file.
    pub identity_key_file: PathBuf,
    /// The authority key file, on authority holders.
    pub authority_key_file: Option<PathBuf>,
    /// This member's certificate.
    pub certificate_file: PathBuf,
    /// The store directory.
    pub state: PathBuf,
    /// TCP port of the join listener.
    pub join_port: u16,
    /// Addresses to put in invite tokens and announcements instead of the
    /// host's own (e.g. a public address in front of a NAT).
    pub advertise: Vec<IpAddr>,
    /// Bytes per second this member relays for each other member (0: it
    /// relays for nobody).
    pub relay_bytes_per_second: u64,
    /// How long the certificates this member issues (as an authority
    /// holder) are valid; [`DEFAULT_CERTIFICATE_LIFETIME`] if unset.
    pub certificate_lifetime: Option<std::time::Duration>,
}

impl MeshConfig {
    /// Where this member's authority key is, or goes when a holder
    /// nominates it: `mesh.authority_key_file`, or `authority.key` beside
    /// the identity key.
    pub fn authority_key_path(&self) -> PathBuf {
        self.authority_key_file.clone().unwrap_or_else(|| {
            self.identity_key_file
                .parent()
                .unwrap_or(Path::new("."))
                .join("authority.key")
        })
    }

    /// The lifetime `weft init` gave the network's certificates, in
    /// seconds (what a network without an authority chain yet starts its
    /// chain with).
    pub fn certificate_lifetime_secs(&self) -> u64 {
        self.certificate_lifetime
            .map_or(DEFAULT_CERTIFICATE_LIFETIME.as_secs(), |d| d.as_secs())
    }
}

impl MeshConfig {
    /// The network description.
    pub fn network_info(&self) -> anyhow::Result<NetworkInfo> {
        NetworkInfo::new(
            self.network,
            self.network_name.clone(),
            self.ipv4,
            self.authority,
        )
        .map_err(|e| anyhow!("mesh: {e}"))
    }
}

/// The network description as the join exchange carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkWire {
    /// Network id.
    pub id: [u8; 16],
    /// Name.
    pub name: String,
    /// IPv4 prefix, e.g. "100.64.0.0/16".
    pub ipv4: String,
    /// The anchor: the key of the first authority set.
    pub authority: [u8; 32],
    /// The authority chain's encoding (empty for a network without one):
    /// which keys sign certificates now.
    pub authorities: Vec<u8>,
}

impl NetworkWire {
    /// From a network description and its authority chain, if any.
    pub fn from_info(info: &NetworkInfo, chain: Option<&AuthorityChain>) -> Self {
        Self {
            id: info.id().0,
            name: info.name().to_string(),
            ipv4: info.ipv4().to_string(),
            authority: info.authority().0,
            authorities: chain.map(AuthorityChain::to_bytes).unwrap_or_default(),
        }
    }

    /// Back to a checked network description, trusting the keys of its
    /// authority chain once the chain verifies from the anchor.
    pub fn to_info(&self) -> anyhow::Result<NetworkInfo> {
        let ipv4: Ipv4Network = self
            .ipv4
            .parse()
            .map_err(|_| anyhow!("the inviter sent an invalid network prefix"))?;
        let mut info = NetworkInfo::new(
            NetworkId(self.id),
            self.name.clone(),
            ipv4,
            IdentityKey(self.authority),
        )
        .map_err(|e| anyhow!("the inviter sent an invalid network: {e}"))?;
        if let Some(chain) = self.chain()? {
            let verified = chain
                .verify(info.id(), info.authority())
                .map_err(|e| anyhow!("the inviter sent an invalid authority set: {e}"))?;
            info.set_issuers(verified.issuers());
        }
        Ok(info)
    }

    /// The authority chain, if the inviter sent one (not verified here).
    pub fn chain(&self) -> anyhow::Result<Option<AuthorityChain>> {
        if self.authorities.is_empty() {
            return Ok(None);
        }
        AuthorityChain::from_bytes(&self.authorities)
            .map(Some)
            .map_err(|e| anyhow!("the inviter sent an invalid authority set: {e}"))
    }
}

/// What a running member holds: its network, keys, certificate and store.
pub struct Membership {
    /// The network, with the keys trusted to sign certificates: replaced
    /// when a new authority set is adopted (read it with
    /// [`Membership::info`]). Shared with the control plane's gate.
    network: Arc<RwLock<NetworkInfo>>,
    /// This member's identity.
    pub identity: IdentitySecret,
    /// This member's authority key, if it has one: it signs only while
    /// the key is in the current set ([`Membership::authority`]).
    authority_key: RwLock<Option<IdentitySecret>>,
    /// The authority chain adopted (`authorities.rs`).
    authorities: RwLock<authorities::Held>,
    /// This member's certificate: replaced when it is renewed (read it
    /// with [`Membership::certificate`]).
    certificate: std::sync::RwLock<SignedCertificate>,
    /// The store.
    pub store: Store,
    /// The mesh settings.
    pub config: MeshConfig,
    /// Counters shared by the tasks that use the membership, for metrics.
    pub counters: MeshCounters,
}

/// Invite and store counters, bumped by the join listener (its own task) and
/// the main task alike.
#[derive(Debug, Default)]
pub struct MeshCounters {
    /// Invite tokens issued by this node.
    pub invites_issued: AtomicU64,
    /// Invite tokens redeemed here.
    pub invites_used: AtomicU64,
    /// Joins refused, by reason.
    pub invites_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Store writes that failed.
    pub store_write_errors: AtomicU64,
}

impl MeshCounters {
    /// Counts a failed store write and passes the result on.
    pub fn store<T, E: std::fmt::Display>(&self, what: &str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.store_write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(what, error = %e, "state store write failed");
                None
            }
        }
    }

    /// Counts a refused join.
    pub fn refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.invites_refused.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("network", &self.info().id())
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Loads keys, the authority chain and the certificate, and opens the
    /// store.
    pub fn open(config: &MeshConfig) -> anyhow::Result<Self> {
        let mut info = config.network_info()?;
        let identity = read_identity(&config.identity_key_file, "identity key")?;
        // A configured key file must be there; the default one is there
        // only once a holder nominated this member.
        let key_path = config.authority_key_path();
        let authority_key = if config.authority_key_file.is_some() || key_path.exists() {
            Some(read_identity(&key_path, "authority key")?)
        } else {
            None
        };
        let store = Store::open(&config.state)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("mesh.state {}", config.state.display()))?;
        let held = authorities::load(&store, &info, config, authority_key.as_ref())?;
        info.set_issuers(held.verified.issuers());
        if let Some(key) = &authority_key {
            if held.verified.current().holder(&key.identity()).is_none() {
                tracing::warn!(
                    key_file = %key_path.display(),
                    "this member's authority key is not in the network's current authority set: \
                     it signs nothing until a holder adds it"
                );
            }
        }
        let certificate = read_certificate(&config.certificate_file)?;
        // An expired certificate is no reason not to start: the member
        // renews it (within the renewal grace) and is back by itself. A
        // forged or foreign one is.
        let cert = certificate
            .verify_signed(&info)
            .map_err(|e| anyhow!("certificate {}: {e}", config.certificate_file.display()))?;
        match cert.check(&info, now_unix()) {
            Ok(()) => {}
            Err(e @ (CertError::Expired { .. } | CertError::NotYetValid { .. })) => {
                tracing::warn!(
                    certificate = %config.certificate_file.display(),
                    error = %e,
                    "starting with a certificate that is not valid now; renewing it"
                );
            }
            Err(e) => anyhow::bail!("certificate {}: {e}", config.certificate_file.display()),
        }
        Ok(Self {
            network: Arc::new(RwLock::new(info)),
            identity,
            authority_key: RwLock::new(authority_key),
            authorities: RwLock::new(held),
            certificate: std::sync::RwLock::new(certificate),
            store,
            config: config.clone(),
            counters: MeshCounters::default(),
        })
    }

    /// The network as this member knows it now, with the keys it trusts.
    pub fn info(&self) -> NetworkInfo {
        match self.network.read() {
            Ok(n) => n.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The shared network description, for the control plane's gate,
    /// which must see a newly adopted authority set at once.
    pub fn network(&self) -> Arc<RwLock<NetworkInfo>> {
        self.network.clone()
    }

    /// This member's certificate in force.
    pub fn certificate(&self) -> SignedCertificate {
        match self.certificate.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a renewed certificate in force (the file is already written).
    pub fn set_certificate(&self, certificate: SignedCertificate) {
        match self.certificate.write() {
            Ok(mut c) => *c = certificate,
            Err(poisoned) => *poisoned.into_inner() = certificate,
        }
    }

    /// A signed announcement of this member at `endpoints`, with sequence
    /// number `seq`.
    pub fn announcement(&self, seq: u64, endpoints: Vec<SocketAddr>) -> SignedRecord {
        SignedRecord::sign(
            &self.identity,
            seq,
            RecordBody::Announcement(Announcement {
                certificate: self.certificate(),
                endpoints,
            }),
        )
    }

    /// The certificate in `record`, if it still verifies for this network.
    pub fn verified(
        &self,
        record: &weft_store::MemberRecord,
    ) -> Option<weft_protocol::membership::Certificate> {
        SignedCertificate::from_bytes(&record.certificate)
            .ok()?
            .verify(&self.info(), now_unix())
            .ok()
    }

    /// This member's endpoints on `port`: `mesh.advertise` if set, else the
    /// host's own addresses outside the overlay.
    pub fn endpoint_source(&self, port: u16) -> EndpointSource {
        EndpointSource {
            advertise: self.config.advertise.clone(),
            exclude: vec![
                ip_network::IpNetwork::V4(self.info().ipv4()),
                ip_network::IpNetwork::V6(self.info().ipv6()),
            ],
            port,
        }
    }
}

/// Where a member's endpoints come from: a fixed list, or the host's
/// addresses (re-read on every call) and a port.
#[derive(Debug, Clone)]
pub struct EndpointSource {
    /// Configured addresses (`mesh.advertise`); empty: the host's own.
    pub advertise: Vec<IpAddr>,
    /// Prefixes never used (the overlay itself).
    pub exclude: Vec<ip_network::IpNetwork>,
    /// The port.
    pub port: u16,
}

impl EndpointSource {
    /// At most `max` endpoints, now.
    pub fn current(&self, max: usize) -> Vec<SocketAddr> {
        let ips = if self.advertise.is_empty() {
            local_addresses(&self.exclude)
        } else {
            self.advertise.clone()
        };
        ips.into_iter()
            .take(max)
            .map(|ip| SocketAddr::new(ip, self.port))
            .collect()
    }
}

/// Reads an Ed25519 key file (base64, mode 0600 required).
pub fn read_identity(path: &Path, what: &str) -> anyhow::Result<IdentitySecret> {
    let bytes = keys::read_secret_bytes(path, what)?;
    Ok(IdentitySecret::from_bytes(*bytes))
}

/// Writes an Ed25519 key file with mode 0600.
pub fn write_identity(path: &Path, key: &IdentitySecret) -> anyhow::Result<()> {
    keys::write_secret_bytes(path, &zeroize::Zeroizing::new(key.to_bytes()))
}

/// Reads a certificate file (base64 of its encoding).
pub fn read_certificate(path: &Path) -> anyhow::Result<SignedCertificate> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read certificate {}", path.display()))?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .map_err(|_| anyhow!("certificate {} is not base64", path.display()))?;
    SignedCertificate::from_bytes(&bytes)
        .map_err(|e| anyhow!("certificate {}: {e}", path.display()))
}

/// Replaces `path` so that a crash leaves the old file or the new one,
/// never a torn one: `write` creates and fsyncs a temporary file beside it
/// (the path it is given), which is renamed over `path`, then the directory
/// is fsynced. The temporary file is removed if any step fails.
pub fn replace_file(
    path: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let replaced = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path)
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .with_context(|| format!("cannot replace {}", path.display()))
    });
    if replaced.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    replaced
}

/// Writes a certificate file atomically ([`replace_file`]).
pub fn write_certificate(path: &Path, cert: &SignedCertificate) -> anyhow::Result<()> {
    use std::io::Write;
    let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.to_bytes());
    replace_file(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(format!("{text}\n").as_bytes())?;
        f.sync_all()?;
        Ok(())
    })
    .with_context(|| format!("cannot write certificate {}", path.display()))
}

/// The host's own addresses a peer could reach: every configured unicast
/// address except loopback, link-local and the overlay's own prefixes.
pub fn local_addresses(exclude: &[ip_network::IpNetwork]) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let ip: IpAddr = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let unusable = ip.is_loopback()
            || ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
            || exclude.iter().any(|n| n.contains(ip));
        if !unusable && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
