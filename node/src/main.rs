//! `weft`: the mesh VPN node's command line. This file parses the command
//! line and dispatches to `cli`; it does nothing else.
//!
//! Every failure ends in one line on stderr (`weft: error: …` with its
//! causes joined by `: `) and exit status 1; never a panic or a backtrace.

mod admin;
mod bucket;
mod cli;
mod config;
mod control;
mod daemon;
mod edges;
mod host;
mod inner;
mod keys;
mod mesh;
mod metrics;
mod nat;
mod routes;
mod status;
mod tun;
mod udp;
mod watchdog;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// weft: a mesh VPN node.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key (base64), or write it to a 0600 file.
    Genkey {
        /// Write the key to this new file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Run the node in the foreground.
    Up {
        /// The node's configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create a network with this node as its first member and authority.
    Init {
        /// This node's name in the network.
        #[arg(long)]
        name: String,
        /// The network's IPv4 prefix, e.g. 100.64.0.0/16.
        #[arg(long)]
        network: String,
        /// The network's name.
        #[arg(long, default_value = "weft")]
        network_name: String,
        /// How long the certificates this node issues are valid (60s to
        /// 365d); members renew when a third of it remains.
        #[arg(long, default_value = "30d")]
        certificate_lifetime: String,
        /// Directory for keys, certificate, configuration and state.
        #[arg(long, default_value = "/etc/weft")]
        dir: PathBuf,
    },
    /// Print a one-time invite token for a new server (authority holders).
    Invite {
        /// The name the new server will get.
        #[arg(long)]
        name: Option<String>,
        /// How long the token stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        expires: String,
        /// This node's configuration file.
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
    },
    /// Renew this node's certificate now through the running daemon
    /// (it renews by itself when a third of the lifetime remains).
    Renew {
        /// This node's configuration file.
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
    },
    /// Revoke a member (authority holders): the mesh drops it within seconds.
    Revoke {
        /// The member's name.
        name: String,
        /// This node's configuration file.
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
    },
    /// Show or change the network's authority set (who may sign
    /// certificates), through the running daemon.
    Authority {
        #[command(subcommand)]
        command: AuthorityCommand,
    },
    /// Show this node and every peer: endpoint, path MTU, RTT, handshake,
    /// traffic, keepalive, NAT.
    Status {
        /// The node's configuration file (names its admin socket).
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
        /// Ask the daemon on this admin socket instead.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Join a network with an invite token.
    Join {
        /// The token `weft invite` printed.
        token: String,
        /// This server's name, if the token does not fix one.
        #[arg(long)]
        name: Option<String>,
        /// Directory for keys, certificate, configuration and state.
        #[arg(long, default_value = "/etc/weft")]
        dir: PathBuf,
    },
}

/// `weft authority` subcommands.
#[derive(Debug, Subcommand)]
enum AuthorityCommand {
    /// Make member NAME an authority holder (run on a holder): NAME
    /// generates its own authority key and the new set is gossiped.
    Add {
        /// The member's name.
        name: String,
        /// This node's configuration file.
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
    },
    /// Take holder NAME's key out of the set (run on a holder; also for a
    /// lost holder). Certificates it signed stay valid until they renew.
    Remove {
        /// The holder's name.
        name: String,
        /// This node's configuration file.
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
    },
    /// Print the set: version, lifetime, and each holder's name, key
    /// fingerprint and since when it holds.
    List {
        /// This node's configuration file.
        #[arg(long, short, default_value = "/etc/weft/weft.toml")]
        config: PathBuf,
        /// Print JSON (with the signed chain) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Genkey { out } => cli::keys::genkey(out.as_deref()),
        Command::Pubkey => cli::keys::pubkey(),
        Command::Init {
            name,
            network,
            network_name,
            certificate_lifetime,
            dir,
        } => cli::init::run(&name, &network, &network_name, &certificate_lifetime, &dir),
        Command::Invite {
            name,
            expires,
            config,
        } => cli::invite::run(&config, name, &expires),
        Command::Join { token, name, dir } => cli::join::run(&token, name, &dir),
        Command::Revoke { name, config } => cli::revoke::run(&config, name),
        Command::Renew { config } => cli::renew::run(&config),
        Command::Authority { command } => match command {
            AuthorityCommand::Add { name, config } => {
                cli::authority::change(&config, admin::Request::AuthorityAdd { name })
            }
            AuthorityCommand::Remove { name, config } => {
                cli::authority::change(&config, admin::Request::AuthorityRemove { name })
            }
            AuthorityCommand::List { config, json } => cli::authority::list(&config, json),
        },
        Command::Status {
            config,
            socket,
            json,
        } => cli::status::run(&config, socket.as_deref(), json),
        Command::Up { config } => cli::up(&config),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
