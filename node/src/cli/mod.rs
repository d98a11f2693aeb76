//! The commands of `weft` behind `main.rs`'s parser: the one-shot commands
//! that run, print and exit (`genkey`, `pubkey`, `init`, `join`, `invite`,
//! `revoke`, `renew`, `authority`, `status`), and [`up`], the way into the
//! daemon.
//!
//! A one-shot command never runs a daemon service: it talks to a running
//! daemon only through the admin socket (`crate::admin`), and touches the
//! store itself only when no daemon holds it (`weft invite` without a
//! daemon, `weft init`, `weft join` before the node first starts). Every
//! failure is returned to `main`, which prints it on one line.

pub mod authority;
pub mod init;
pub mod invite;
pub mod join;
pub mod keys;
pub mod member_dir;
pub mod renew;
pub mod revoke;
pub mod status;

use std::path::Path;

use anyhow::anyhow;

use crate::config::Config;
use crate::mesh::MeshConfig;

/// `weft up --config FILE`: logs to stderr and runs the node in the
/// foreground until SIGINT or SIGTERM.
pub fn up(config: &Path) -> anyhow::Result<()> {
    init_logging();
    let config = Config::load(config)?;
    crate::daemon::run(config)
}

/// After `weft init` or `weft join` on a host without IPv6: the node will
/// run IPv4-only. The configuration keeps the member's IPv6 address, which
/// its certificate holds, for the day the host enables IPv6.
fn note_ipv4_only() {
    if let Some(why) = crate::host::ipv6().why_not() {
        println!(
            "note: {why}: weft up will run IPv4-only; the IPv6 overlay address stays in the configuration for when IPv6 is enabled"
        );
    }
}

/// Log lines on stderr, filtered by `WEFT_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The configuration at `path` and its `[mesh]` table, for the commands
/// only mesh members have.
fn member_config(path: &Path) -> anyhow::Result<(Config, MeshConfig)> {
    let config = Config::load(path)?;
    let mesh = config.mesh.clone().ok_or_else(|| {
        anyhow!(
            "{} has no [mesh] table: this node is not a mesh member",
            path.display()
        )
    })?;
    Ok((config, mesh))
}
