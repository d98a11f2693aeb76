//! `weft init`: creates a network with this node as its first member and
//! authority holder, and writes everything `weft up` needs into one
//! directory (`member_dir`): keys, the certificate, the configuration and
//! the store.
//!
//! It runs before any daemon exists and never talks to one.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail};
use ip_network::Ipv4Network;
use rand_core::OsRng;
use weft_protocol::membership::{
    Authority, AuthorityChain, Certificate, IdentitySecret, NetworkId, NetworkInfo,
};
use weft_store::{MemberRecord, Store};

use super::member_dir::{finish, staging_dir, write_member_files, MemberFiles};
use crate::keys;
use crate::mesh::now_unix;

/// `weft init --name NAME --network PREFIX [--network-name N]
/// [--certificate-lifetime D] --dir DIR`.
pub fn run(
    name: &str,
    prefix: &str,
    network_name: &str,
    certificate_lifetime: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let lifetime = crate::config::parse_certificate_lifetime(certificate_lifetime)
        .map_err(|e| anyhow!("--certificate-lifetime: {e:#}"))?;
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
            // Verifiers allow five minutes of clock skew on the start.
            not_before: now,
            not_after: now + lifetime.as_secs(),
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
        // Version 1 of the authority set: the anchor alone, with the
        // network's certificate lifetime.
        let chain = AuthorityChain::genesis(*info.id(), name, &authority, lifetime.as_secs(), now)
            .map_err(|e| anyhow!("{e}"))?;
        store
            .authorities()
            .put(&chain.to_bytes())
            .map_err(|e| anyhow!("{e}"))?;
        store.close().map_err(|e| anyhow!("{e}"))?;
        write_member_files(&MemberFiles {
            dir: &staging,
            final_dir: dir,
            name,
            info: &info,
            noise: &noise,
            identity: &identity,
            authority: Some(&authority),
            certificate: &signed,
            ipv4,
            certificate_lifetime: Some(lifetime),
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
    super::note_ipv4_only();
    Ok(())
}
