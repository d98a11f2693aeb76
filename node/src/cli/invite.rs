//! `weft invite`: prints a one-time invite token for a new server.
//!
//! With the daemon running the request goes through its admin socket (the
//! daemon holds the store); otherwise the store is opened here and the
//! token issued by `mesh::invite::issue`, the same code the daemon runs.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::admin::{self, CallError, Request, Response};
use crate::mesh::invite::issue;
use crate::mesh::Membership;

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

/// `weft invite --config FILE [--name NAME] [--expires 24h]`.
pub fn run(config_path: &Path, name: Option<String>, expires: &str) -> anyhow::Result<()> {
    let ttl = parse_ttl(expires)?;
    let (config, mesh) = super::member_config(config_path)?;
    let request = Request::Invite {
        name: name.clone(),
        ttl_secs: ttl,
    };
    let token = match admin::call(&config.admin_socket, &request, Duration::from_secs(10)) {
        Ok(Response::Token(t)) => t,
        Ok(Response::Error(e)) => bail!("{e}"),
        Ok(Response::Done(text)) => {
            bail!("unexpected answer from the daemon: {text}")
        }
        Ok(Response::Status(_) | Response::Authorities(_)) => {
            bail!("unexpected answer from the daemon")
        }
        Err(CallError::NotRunning) => {
            // No daemon: the store is ours to open.
            let m = Membership::open(&mesh)?;
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
