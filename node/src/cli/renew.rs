//! `weft renew`: asks the running daemon to renew this node's certificate
//! now, instead of when a third of its lifetime remains.
//!
//! The daemon does the renewal (`mesh::renewal`): it asks an authority
//! holder over the control plane (or, on a holder, signs it itself),
//! writes the new certificate and puts it in force. This command only
//! carries the request over the admin socket and prints the outcome.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::admin::{self, CallError, Request, Response};

/// How long to wait for the daemon: an attempt asks up to three
/// unreachable holders, each for the renewal timeout.
const WAIT: Duration = Duration::from_secs(45);

/// `weft renew [--config FILE]`.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let (config, _) = super::member_config(config_path)?;
    match admin::call(&config.admin_socket, &Request::Renew, WAIT) {
        Ok(Response::Done(text)) => {
            println!("{text}");
            Ok(())
        }
        Ok(Response::Error(e)) => bail!("{e}"),
        Ok(Response::Token(_) | Response::Status(_) | Response::Authorities(_)) => {
            bail!("unexpected answer from the daemon")
        }
        Err(CallError::NotRunning) => {
            bail!(
                "the weft daemon is not running: `weft up` renews an expired certificate by itself"
            )
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}
