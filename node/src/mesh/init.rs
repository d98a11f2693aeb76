//! `weft init`: creates a network with this node as its first member and
//! authority holder, and writes everything `weft up` needs into one
//! directory: keys (0600), the certificate, the configuration and the store.
//!
//! The directory is built under a temporary name and renamed into place only
//! when complete, so a failed `weft init` leaves nothing behind.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use ip_network::Ipv4Network;
use rand_core::OsRng;
use weft_protocol::membership::{Authority, Certificate, IdentitySecret, NetworkId, NetworkInfo};
use weft_protocol::StaticSecret;
use weft_store::{MemberRecord, Store};

use super::{now_unix, write_certificate, write_identity, DEFAULT_JOIN_PORT};
use crate::config::DEFAULT_PORT;
use crate::keys;

/// Certificates are valid for a year; renewal comes with certificate
/// rotation.
pub const CERT_LIFETIME_SECS: u64 = 365 * 24 * 3600;
/// Backdating of `not_before`, for members whose clocks run a little slow.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// What `weft init` and `weft join` write for a member.
pub struct MemberFiles<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub info: &'a NetworkInfo,
    pub noise: &'a StaticSecret,
    pub identity: &'a IdentitySecret,
    pub authority: Option<&'a IdentitySecret>,
    pub certificate: &'a weft_protocol::membership::SignedCertificate,
    pub ipv4: Ipv4Addr,
}

/// Refuses a `dir` that exists with anything in it: weft never writes over
/// another member's files.
pub fn refuse_non_empty(dir: &Path) -> anyhow::Result<()> {
    let non_empty = dir.exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
    if non_empty {
        bail!("{} already exists and is not empty", dir.display());
    }
    Ok(())
}

/// Creates `dir` (mode 0700) from a temporary sibling renamed at the end by
/// `finish`; refuses an existing non-empty `dir`.
pub fn staging_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    refuse_non_empty(dir)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a directory name", dir.display()))?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    Ok(staging)
}

/// Moves a complete staging directory into place.
pub fn finish(staging: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    fs::rename(staging, dir)
        .with_context(|| format!("cannot move the new files to {}", dir.display()))
}

/// Writes keys, certificate and configuration of a member into `f.dir`.
pub fn write_member_files(f: &MemberFiles<'_>) -> anyhow::Result<()> {
    keys::write_private_key(&f.dir.join("private.key"), f.noise)?;
    write_identity(&f.dir.join("identity.key"), f.identity)?;
    if let Some(a) = f.authority {
        write_identity(&f.dir.join("authority.key"), a)?;
    }
    write_certificate(&f.dir.join("node.cert"), f.certificate)?;
    let ipv6 = f.info.allocate_v6(f.ipv4);
    let config = format!(
        r#"# weft node "{name}", member of network "{network_name}".
# Written by weft; run it with: weft up --config {path}

[interface]
name = "weft0"
private_key_file = "private.key"
listen_port = {port}
address = ["{ipv4}/{v4len}", "{ipv6}/{v6len}"]
admin_socket = "weft.sock"

[mesh]
network = "{network}"
network_name = "{network_name}"
ipv4 = "{prefix}"
authority = "{authority}"
name = "{name}"
identity_key_file = "identity.key"
{authority_line}certificate_file = "node.cert"
state = "state"
join_port = {join_port}

[metrics]
listen = "127.0.0.1:9820"
per_peer_labels = true
"#,
        name = f.name,
        network_name = f.info.name(),
        path = f.dir.join("weft.toml").display(),
        port = DEFAULT_PORT,
        ipv4 = f.ipv4,
        v4len = f.info.ipv4().netmask(),
        ipv6 = ipv6,
        v6len = f.info.ipv6().netmask(),
        network = f.info.id(),
        prefix = f.info.ipv4(),
        authority = f.info.authority().to_hex(),
        authority_line = if f.authority.is_some() {
            "authority_key_file = \"authority.key\"\n"
        } else {
            ""
        },
        join_port = DEFAULT_JOIN_PORT,
    );
    fs::write(f.dir.join("weft.toml"), config).context("cannot write weft.toml")
}

/// `weft init --name NAME --network PREFIX [--network-name N] --dir DIR`.
pub fn run(name: &str, prefix: &str, network_name: &str, dir: &Path) -> anyhow::Result<()> {
    let prefix: Ipv4Network = prefix
        .parse()
        .map_err(|_| anyhow!("--network: {prefix:?} is not an IPv4 prefix like 100.64.0.0/16"))?;
    if !weft_protocol::membership::is_valid_name(name) {
        bail!("--name: {name:?} is not a valid member name (1-63 of a-z, 0-9 and '-', not at the ends)");
    }
    let authority = IdentitySecret::generate(&mut OsRng);
    let info = NetworkInfo::new(
        NetworkId::generate(&mut OsRng),
        network_name.to_string(),
        prefix,
        authority.identity(),
    )
    .map_err(|e| anyhow!("--network: {e}"))?;
    let staging = staging_dir(dir)?;
    let result = (|| {
        let noise = keys::generate()?;
        let identity = IdentitySecret::generate(&mut OsRng);
        let store = Store::open(&staging.join("state")).map_err(|e| anyhow!("{e}"))?;
        let ipv4 = store
            .allocations()
            .allocate(
                u32::from(prefix.network_address()),
                prefix.netmask(),
                identity.identity().as_bytes(),
                &[],
            )
            .map_err(|e| anyhow!("{e}"))?;
        let now = now_unix();
        let cert = Certificate {
            network: *info.id(),
            name: name.to_string(),
            identity: identity.identity(),
            noise_key: noise.public_key(),
            ipv4,
            ipv6: info.allocate_v6(ipv4),
            serial: 1,
            not_before: now.saturating_sub(CLOCK_SKEW_SECS),
            not_after: now + CERT_LIFETIME_SECS,
        };
        let signed = Authority::issue(&cert, &authority);
        store
            .members()
            .put(
                identity.identity().as_bytes(),
                &MemberRecord {
                    name: name.to_string(),
                    certificate: signed.to_bytes(),
                    serial: cert.serial,
                    expires_unix: cert.not_after,
                    updated_unix: now,
                },
            )
            .map_err(|e| anyhow!("{e}"))?;
        store.close().map_err(|e| anyhow!("{e}"))?;
        write_member_files(&MemberFiles {
            dir: &staging,
            name,
            info: &info,
            noise: &noise,
            identity: &identity,
            authority: Some(&authority),
            certificate: &signed,
            ipv4,
        })?;
        Ok::<_, anyhow::Error>((ipv4, info.allocate_v6(ipv4)))
    })();
    let (ipv4, ipv6) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    finish(&staging, dir)?;
    println!(
        "created network {} ({}) with {name} as its first member at {ipv4} and {ipv6}",
        info.name(),
        info.id()
    );
    println!(
        "run it with: weft up --config {}",
        dir.join("weft.toml").display()
    );
    println!(
        "then invite servers with: weft invite --config {} --name NAME",
        dir.join("weft.toml").display()
    );
    Ok(())
}
