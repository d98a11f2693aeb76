//! `weft up`: start-up, the main loop and shutdown.
//!
//! The main task owns the protocol [`Device`] and everything that changes
//! it; nothing else touches protocol state. It is split in two: [`Io`]
//! (`io.rs`) owns what the task waits on and turns readiness into one
//! [`Input`](io::Input) at a time; [`Node`] (`node.rs`) owns the device, the mesh
//! logic and the data path (`datapath.rs`) and handles each input. The
//! loop only beats the watchdog, waits for the next input and hands it
//! over.
//!
//! The main task runs alone on the main thread's runtime and never waits
//! for another task: the control plane, the join listener, the admin
//! socket and the metrics server run on a second runtime (the *services*
//! runtime), store writes on a thread of their own and route programming
//! in a task of its own; everything between them goes through bounded
//! queues that drop and count when full (docs/ARCHITECTURE.md, "Tasks and
//! queues"). A watchdog thread ends the process if the loop ever stops
//! turning; a TUN interface removed under the node and not created again
//! (`node.rs`) ends it with an error. This file never handles an input
//! itself.

mod datapath;
mod io;
mod node;
mod tun_read;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tracing::{error, info, warn};
use weft_protocol::{Device, DeviceConfig, PeerConfig, PresharedKey, StaticSecret};

use self::datapath::DataPath;
use self::io::Io;
use self::node::Node;
use crate::admin;
use crate::config::Config;
use crate::edges::Edges;
use crate::host;
use crate::keys;
use crate::mesh::node::MeshNode;
use crate::metrics;
use crate::nat::ProbeSockets;
use crate::status::NodeInfo;
use crate::tun;
use crate::udp::UdpIo;
use crate::watchdog::{self, Heartbeat};

/// A test hook: with this variable set to a number of seconds, the main
/// loop stops turning that long after start, so the tests can prove that
/// the watchdog ends the process.
const TEST_STALL_VAR: &str = "WEFT_TEST_STALL_MAIN_LOOP_AFTER_SECS";

/// Runs the node until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Everything but the data plane: control plane, join listener, admin
    // socket, metrics, blocking admin work.
    let services = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name("weft-services")
        .enable_all()
        .build()
        .context("cannot start the services runtime")?;
    let result = runtime.block_on(run_async(config, services.handle().clone()));
    services.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

fn build_device(config: &Config, secret: StaticSecret) -> anyhow::Result<Device> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let mut dc = DeviceConfig::new(secret);
    dc.mtu = usize::from(config.interface.mtu);
    dc.pmtu_discovery = config.interface.pmtu_discovery;
    if let Some(m) = &config.mesh {
        dc.relay_bytes_per_second = m.relay_bytes_per_second;
    }
    // Mesh members handshake on demand, not all with all at start.
    dc.auto_handshake_at_start = config.mesh.is_none();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let now = Instant::now();
    let mut device = Device::new(dc, now, unix, seed);
    for (n, p) in config.peers.iter().enumerate() {
        let preshared_key: Option<PresharedKey> = p
            .preshared_key_file
            .as_deref()
            .map(keys::read_preshared_key)
            .transpose()
            .with_context(|| format!("peer[{n}].preshared_key_file"))?;
        device
            .add_peer(
                PeerConfig {
                    name: p.name.clone(),
                    public_key: p.public_key,
                    preshared_key,
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips.clone(),
                    keepalive: p.keepalive,
                },
                now,
            )
            .with_context(|| format!("peer[{n}]"))?;
    }
    Ok(device)
}

async fn run_async(config: Config, services: tokio::runtime::Handle) -> anyhow::Result<()> {
    // Everything that can fail on bad input is checked before the
    // interface exists, so a failed start leaves nothing behind.
    if let Some(ipv4_only) = host::ipv4_only_warning(host::ipv6(), &config)? {
        warn!("{ipv4_only}");
    }
    let secret = keys::read_private_key(&config.interface.private_key_file)?;
    let mut device = build_device(&config, secret.clone())?;
    let udp = UdpIo::bind(config.interface.listen_port)?;
    let own = crate::mesh::local_addresses(&[]);
    device.set_local_addresses(own, config.interface.listen_port);
    let (mesh, inbox) = match &config.mesh {
        Some(mc) => {
            let (node, inbox) = MeshNode::start(
                mc,
                &mut device,
                secret,
                config.interface.listen_port,
                services.clone(),
            )
            .await?;
            (Some(node), Some(inbox))
        }
        None => (None, None),
    };
    let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(8);
    let (snapshot_tx, snapshot_rx) = tokio::sync::mpsc::channel(4);
    let mut probes = vec![
        watchdog::channel_probe("admin", &admin_tx),
        watchdog::channel_probe("metrics", &snapshot_tx),
    ];
    if let Some(m) = &mesh {
        probes.extend(m.queue_probes());
    }
    let _admin = {
        let _services = services.enter();
        admin::bind(&config.admin_socket, admin_tx)?
    };
    let _metrics = match config.metrics.listen {
        Some(listen) => Some(
            services
                .spawn(metrics::serve(
                    listen,
                    config.metrics.per_peer_labels,
                    snapshot_tx,
                ))
                .await
                .context("metrics server")??,
        ),
        None => None,
    };
    let started = Instant::now();
    let tun = tun::create(&config.interface)?;
    let routes = node::route_queue(&tun);
    if let Some(r) = &routes {
        probes.push(r.probe());
    }
    let mut edges = Edges::new(routes, config.interface.pmtu_discovery);
    edges.start(&mut device, Instant::now());
    let path = DataPath::new(
        usize::from(config.interface.mtu),
        tun.offload,
        config.interface.mss_clamp,
        &udp,
    );
    let info = node_info(&config, &device, mesh.as_ref(), &udp);
    let listen = udp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let (gso_segments, gro_segments) = (udp.max_gso_segments(), udp.gro_segments());
    let mut io = Io::new(
        tun,
        udp,
        ProbeSockets::default(),
        admin_rx,
        snapshot_rx,
        inbox,
    )?;
    let mut node = Node::new(
        device,
        mesh,
        path,
        edges,
        config.interface.clone(),
        info,
        started,
    );
    let heartbeat = Heartbeat::new();
    watchdog::spawn(heartbeat.clone(), watchdog::STALL_LIMIT, probes, |_| {
        std::process::exit(watchdog::STALL_EXIT_CODE)
    })
    .context("cannot start the watchdog thread")?;
    let stall_at = std::env::var(TEST_STALL_VAR)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|secs| Instant::now() + std::time::Duration::from_secs(secs));
    info!(
        public_key = %keys::encode(node.device().public_key().as_bytes()),
        listen = %listen,
        peers = config.peers.len(),
        gso_segments,
        gro_segments,
        "weft node running"
    );
    // What start-up queued (handshakes, routes) goes out before the first
    // wait.
    node.poll(&mut io).await;
    loop {
        heartbeat.beat();
        if stall_at.is_some_and(|t| Instant::now() >= t) {
            warn!("{TEST_STALL_VAR} is set: the main loop stops turning now");
            loop {
                std::thread::park();
            }
        }
        let input = io.next(node.deadline()).await?;
        match node.handle(input, &mut io).await {
            Ok(flow) if flow.is_break() => break,
            Ok(_) => {}
            Err(e) => {
                error!(error = %format!("{e:#}"), "the node cannot go on: exiting");
                node.shutdown();
                return Err(e);
            }
        }
    }
    node.shutdown();
    drop(io);
    info!(name = %config.interface.name, "interface removed");
    Ok(())
}

/// This node as `weft status` names it; the uptime is filled in per
/// snapshot.
fn node_info(config: &Config, device: &Device, mesh: Option<&MeshNode>, udp: &UdpIo) -> NodeInfo {
    NodeInfo {
        name: mesh.map_or_else(|| config.interface.name.clone(), |m| m.name().to_string()),
        interface: config.interface.name.clone(),
        public_key: keys::encode(device.public_key().as_bytes()),
        listen_port: udp
            .local_addr()
            .map_or(config.interface.listen_port, |a| a.port()),
        addresses: config
            .interface
            .address
            .iter()
            // The addresses the interface has: none of IPv6 on a host
            // without it.
            .filter(|a| a.addr.is_ipv4() || host::ipv6().usable())
            .map(|a| format!("{}/{}", a.addr, a.prefix))
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: 0,
    }
}
