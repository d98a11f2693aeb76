//! `weft revoke NAME`: asks the running daemon to revoke a member.
//!
//! The daemon signs the revocation with the authority key, stores it
//! (flushed) and gossips it (`mesh::node`); this command only carries the
//! request over the admin socket and prints the answer. Without a running
//! daemon it refuses, since nothing would gossip the revocation.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::admin::{self, CallError, Request, Response};

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
            println!("{text}");
            Ok(())
        }
        Ok(Response::Error(e)) => bail!("{e}"),
        Ok(Response::Token(_) | Response::Status(_)) => {
            bail!("unexpected answer from the daemon")
        }
        Err(CallError::NotRunning) => {
            bail!("the weft daemon is not running: start it so the revocation reaches the mesh")
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}
