//! `weft invite`: an authority holder issues a one-time token for a new
//! server.
//!
//! The token carries this member's join endpoints, its data-plane key (which
//! the joiner pins), the network id, a fresh 32-byte secret and the expiry;
//! the store keeps only a hash of the secret, flushed before the token is
//! printed. With the daemon running the request goes through its admin
//! socket (the daemon holds the store); otherwise the store is opened here.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use rand_core::OsRng;
use weft_protocol::membership::InviteToken;
use weft_store::InviteRecord;

use super::{now_unix, Membership};
use crate::config::Config;

/// Parses a lifetime like `24h`, `30m`, `7d` or `3600` (seconds).
pub fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow!("--expires: {text:?} is not a duration like 24h, 30m or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--expires: unknown unit in {text:?} (use s, m, h or d)"),
    };
    match n.checked_mul(unit) {
        Some(0) | None => bail!("--expires: {text:?} is not a usable lifetime"),
        Some(s) => Ok(s),
    }
}

/// Issues a token: records the hash of its secret (flushed) and returns
/// its text.
pub fn issue(
    m: &Membership,
    name: Option<String>,
    ttl_secs: u64,
    noise_key: weft_protocol::PublicKey,
) -> anyhow::Result<String> {
    if m.authority.is_none() {
        bail!("this member does not hold the network's authority key, so it cannot invite");
    }
    if let Some(n) = &name {
        if !weft_protocol::membership::is_valid_name(n) {
            bail!("--name: {n:?} is not a valid member name (1-63 of a-z, 0-9 and '-')");
        }
    }
    let endpoints = m
        .endpoint_source(m.config.join_port)
        .current(weft_protocol::membership::invite::MAX_INVITE_ENDPOINTS);
    if endpoints.is_empty() {
        bail!("this host has no address a new server could reach; set mesh.advertise");
    }
    let now = now_unix();
    let token = InviteToken::generate(
        *m.info.id(),
        noise_key,
        endpoints,
        name.clone(),
        ttl_secs,
        now,
        &mut OsRng,
    )
    .map_err(|e| anyhow!("{e}"))?;
    m.store
        .invites()
        .add(
            &token.secret_hash(),
            &InviteRecord {
                name,
                expires_unix: token.expires_unix,
                used_unix: None,
                used_by: None,
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
    Ok(token.to_text())
}

/// `weft invite --config FILE [--name NAME] [--expires 24h]`.
pub fn run(config_path: &Path, name: Option<String>, expires: &str) -> anyhow::Result<()> {
    let ttl = parse_ttl(expires)?;
    let config = Config::load(config_path)?;
    let mesh = config.mesh.as_ref().ok_or_else(|| {
        anyhow!(
            "{} has no [mesh] table: this node is not a mesh member",
            config_path.display()
        )
    })?;
    let request = super::admin::Request::Invite {
        name: name.clone(),
        ttl_secs: ttl,
    };
    let token = match super::admin::call(&config.admin_socket, &request, Duration::from_secs(10)) {
        Ok(super::admin::Response::Token(t)) => t,
        Ok(super::admin::Response::Error(e)) => bail!("{e}"),
        Ok(super::admin::Response::Done(text)) => {
            bail!("unexpected answer from the daemon: {text}")
        }
        Ok(super::admin::Response::Status(_)) => bail!("unexpected answer from the daemon"),
        Err(super::admin::CallError::NotRunning) => {
            // No daemon: the store is ours to open.
            let m = Membership::open(mesh)?;
            let secret = crate::keys::read_private_key(&config.interface.private_key_file)?;
            let t = issue(&m, name, ttl, secret.public_key())?;
            m.store.close().map_err(|e| anyhow!("{e}"))?;
            t
        }
        Err(e) => return Err(anyhow!("{e}")),
    };
    println!("{token}");
    Ok(())
}

/// `weft revoke NAME [--config FILE]`: the running daemon signs a
/// revocation with the authority key, stores it and gossips it.
pub fn run_revoke(config_path: &Path, name: String) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    config.mesh.as_ref().ok_or_else(|| {
        anyhow!(
            "{} has no [mesh] table: this node is not a mesh member",
            config_path.display()
        )
    })?;
    match super::admin::call(
        &config.admin_socket,
        &super::admin::Request::Revoke { name },
        Duration::from_secs(10),
    ) {
        Ok(super::admin::Response::Done(text)) => {
            println!("{text}");
            Ok(())
        }
        Ok(super::admin::Response::Error(e)) => bail!("{e}"),
        Ok(super::admin::Response::Token(_) | super::admin::Response::Status(_)) => {
            bail!("unexpected answer from the daemon")
        }
        Err(super::admin::CallError::NotRunning) => {
            bail!("the weft daemon is not running: start it so the revocation reaches the mesh")
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_ttl("24h").unwrap(), 86_400);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        for bad in ["", "0h", "h", "5w", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
