//! `weft authority add|remove|list`: changes and shows the network's
//! authority set through the running daemon.
//!
//! The daemon does the work (`mesh::authorities`): `add` asks the member
//! to generate its own authority key over the control plane and signs the
//! next version with it, `remove` signs a version without a holder, and
//! both store and gossip the new version. This command only carries the
//! request over the admin socket and prints the outcome.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::admin::{self, CallError, Request, Response};
use crate::mesh::authorities::AuthorityList;

/// How long to wait for the daemon: a nomination's round trip, a key
/// written on the member, and the new version stored here.
const WAIT: Duration = Duration::from_secs(30);

/// `weft authority add|remove NAME`.
pub fn change(config_path: &Path, request: Request) -> anyhow::Result<()> {
    match call(config_path, &request)? {
        Response::Done(text) => {
            println!("{text}");
            Ok(())
        }
        Response::Error(e) => bail!("{e}"),
        _ => bail!("unexpected answer from the daemon"),
    }
}

/// `weft authority list [--json]`.
pub fn list(config_path: &Path, json: bool) -> anyhow::Result<()> {
    let list = match call(config_path, &Request::AuthorityList)? {
        Response::Authorities(list) => list,
        Response::Error(e) => bail!("{e}"),
        _ => bail!("unexpected answer from the daemon"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", render(&list));
    }
    Ok(())
}

fn call(config_path: &Path, request: &Request) -> anyhow::Result<Response> {
    let (config, _) = super::member_config(config_path)?;
    match admin::call(&config.admin_socket, request, WAIT) {
        Ok(r) => Ok(r),
        Err(CallError::NotRunning) => bail!("the weft daemon is not running"),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// The text form: the version and lifetime, then a line per holder with
/// its name, the first 16 hex digits of its key and when it joined the
/// set.
fn render(list: &AuthorityList) -> String {
    let mut out = if list.version == 0 {
        "authority set: the anchor key alone (no authority chain yet)\n".to_string()
    } else {
        format!(
            "authority set version {}, certificates valid for {}\n",
            list.version,
            humantime::format_duration(Duration::from_secs(list.certificate_lifetime_secs))
        )
    };
    out.push_str(&format!("{:<24} {:<18} {}\n", "NAME", "KEY", "SINCE"));
    for h in &list.holders {
        let since = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(h.since_unix),
        );
        let fingerprint: String = h.key.chars().take(16).collect();
        out.push_str(&format!("{:<24} {:<18} {since}\n", h.name, fingerprint));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::authorities::HolderEntry;

    #[test]
    fn the_list_shows_version_lifetime_and_each_holder_with_its_fingerprint() {
        let list = AuthorityList {
            version: 3,
            head: "00".repeat(32),
            certificate_lifetime_secs: 30 * 24 * 3600,
            holders: vec![HolderEntry {
                name: "db-1".into(),
                key: "ab".repeat(32),
                since_unix: 1_800_000_000,
            }],
            chain: String::new(),
        };
        let text = render(&list);
        assert!(text.starts_with("authority set version 3, certificates valid for 30days\n"));
        assert!(text.contains("db-1"));
        assert!(text.contains("abababababababab "));
        assert!(text.contains("2027-01-15T08:00:00Z"), "{text}");
    }
}
