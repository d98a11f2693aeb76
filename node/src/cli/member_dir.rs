//! A member's directory, as `weft init` and `weft join` write it: keys
//! (mode 0600), certificate, configuration and store, built under a
//! temporary name and renamed into place only when complete, so a failed
//! command leaves nothing behind.
//!
//! It owns the layout of that directory and the configuration file written
//! into it; it never writes into a directory that already holds anything.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use weft_protocol::membership::{IdentitySecret, NetworkInfo};
use weft_protocol::StaticSecret;

use crate::config::DEFAULT_PORT;
use crate::keys;
use crate::mesh::{write_certificate, write_identity, DEFAULT_JOIN_PORT};

/// What `weft init` and `weft join` write for a member.
pub struct MemberFiles<'a> {
    /// Where the files are written (a staging directory).
    pub dir: &'a Path,
    /// Where they end up once complete: the path the configuration names.
    pub final_dir: &'a Path,
    pub name: &'a str,
    pub info: &'a NetworkInfo,
    pub noise: &'a StaticSecret,
    pub identity: &'a IdentitySecret,
    pub authority: Option<&'a IdentitySecret>,
    pub certificate: &'a weft_protocol::membership::SignedCertificate,
    pub ipv4: Ipv4Addr,
    /// On authority holders: the lifetime of the certificates it issues
    /// (`mesh.certificate_lifetime`).
    pub certificate_lifetime: Option<std::time::Duration>,
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
        path = std::path::absolute(f.final_dir.join("weft.toml"))
            .unwrap_or_else(|_| f.final_dir.join("weft.toml"))
            .display(),
        port = DEFAULT_PORT,
        ipv4 = f.ipv4,
        v4len = f.info.ipv4().netmask(),
        ipv6 = ipv6,
        v6len = f.info.ipv6().netmask(),
        network = f.info.id(),
        prefix = f.info.ipv4(),
        authority = f.info.authority().to_hex(),
        authority_line = match (f.authority, f.certificate_lifetime) {
            (Some(_), Some(lifetime)) => format!(
                "authority_key_file = \"authority.key\"\ncertificate_lifetime = \"{}\"\n",
                humantime::format_duration(lifetime)
            ),
            (Some(_), None) => "authority_key_file = \"authority.key\"\n".to_string(),
            (None, _) => String::new(),
        },
        join_port = DEFAULT_JOIN_PORT,
    );
    fs::write(f.dir.join("weft.toml"), config).context("cannot write weft.toml")
}
