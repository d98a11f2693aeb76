//! `weft revoke NAME`: asks the running daemon to revoke a member.
//!
//! The daemon signs the revocation with the authority key, stores it
//! (flushed) and gossips it (`mesh::node`); this command only carries the
//! request over the admin socket and prints the answer. Without a running
//! daemon it refuses, since nothing would gossip the revocation.
//!
//! It fails (non-zero exit) only if the revocation was neither stored nor
//! published; if one of the two failed, it succeeds and prints the
//! daemon's warning naming that one on stderr (`mesh::revocation`).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::admin::{self, CallError, Request, Response};
use crate::mesh::revocation::WARNING;

/// `weft revoke NAME [--config FILE]`: the running daemon signs a
/// revocation with the authority key, stores it and gossips it.
pub fn run(config_path: &Path, name: String) -> anyhow::Result<()> {
    let (config, _) = super::member_config(config_path)?;
    match admin::call(
        &config.admin_socket,
        &Request::Revoke { name },
        Duration::from_secs(10),
    ) {
        Ok(Response::Done(text)) => {
            let (done, warnings) = split_warnings(&text);
            println!("{done}");
            for w in warnings {
                eprintln!("WARN {w}");
            }
            Ok(())
        }
        Ok(Response::Error(e)) => bail!("{e}"),
        Ok(Response::Token(_) | Response::Status(_) | Response::Authorities(_)) => {
            bail!("unexpected answer from the daemon")
        }
        Err(CallError::NotRunning) => {
            bail!("the weft daemon is not running: start it so the revocation reaches the mesh")
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// The lines of a daemon's answer, and apart from them its warning lines
/// (without their prefix).
fn split_warnings(text: &str) -> (String, Vec<&str>) {
    let (warnings, done): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.starts_with(WARNING));
    let warnings = warnings
        .into_iter()
        .map(|w| w.trim_start_matches(WARNING))
        .collect();
    (done.join("\n"), warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_line_of_the_answer_is_set_apart_for_stderr() {
        let text = format!(
            "revoked m3 and stored the revocation\n{WARNING}the revocation was not published"
        );
        let (done, warnings) = split_warnings(&text);
        assert_eq!(done, "revoked m3 and stored the revocation");
        assert_eq!(warnings, vec!["the revocation was not published"]);
        let (done, warnings) = split_warnings("revoked m3; the mesh drops it within seconds");
        assert_eq!(done, "revoked m3; the mesh drops it within seconds");
        assert!(warnings.is_empty());
    }
}
