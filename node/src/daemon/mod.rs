//! `weft up`: the event loop that drives the protocol device between the
//! TUN device and the UDP socket.
//!
//! One task owns the [`Device`]; nothing else touches protocol state. Each
//! turn of the loop fires due timers, sends what the device has queued,
//! then waits for the TUN device, the socket, the next timer or a signal.
//! The loop runs alone on the main thread's runtime and never waits for
//! another task: the control plane, the join listener, the admin socket and
//! the metrics server run on a second runtime (the *services* runtime) and
//! store writes on a thread of their own; everything between them goes
//! through bounded queues that drop and count when full
//! (docs/ARCHITECTURE.md, "Tasks and queues"). A watchdog thread ends the
//! process if the loop ever stops turning.
//! Packets move in batches through buffers allocated once at start-up:
//! TUN reads land at offset 16 of fixed-stride slots of one contiguous
//! buffer, are sealed in place, and consecutive full-size datagrams to one
//! peer leave in a single GSO send; received datagrams (GRO) are opened in
//! place and the inner packets are written back to the TUN device with
//! TCP coalescing.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use quinn_udp::RecvMeta;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, trace, warn};
use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};
use weft_protocol::wire::{TAG_LEN, TRANSPORT_HEADER_LEN};
use weft_protocol::{
    Decapsulated, Device, DeviceConfig, Encapsulated, Event, PeerConfig, PeerId, PresharedKey,
    StaticSecret,
};

use crate::admin::{self, Request, Response};
use crate::config::Config;
use crate::edges::Edges;
use crate::inner::icmp::{self, IcmpRateLimiter};
use crate::inner::{self, fragment, mss, Fit};
use crate::keys;
use crate::mesh::node::MeshNode;
use crate::metrics;
use crate::status::{NodeInfo, Snapshot};
use crate::tun::{self, Tun};
use crate::udp::UdpIo;
use crate::watchdog::{self, Heartbeat};

/// TUN packets handled per batch (tun-rs's IDEAL_BATCH_SIZE).
const BATCH: usize = 128;
/// Room one offloaded TUN read may need: a 64 KiB super-packet of
/// 1280-byte segments.
const MAX_SPLIT: usize = 64;
/// Datagram buffers per receive call.
const RX_BATCH: usize = 16;
/// Inner packets gathered before one coalescing TUN write.
const TUN_OUT: usize = 256;
/// Batches handled per wake-up before yielding to the other direction.
const ROUNDS: usize = 8;
/// Largest UDP payload one GSO send may carry.
const MAX_GSO_BYTES: usize = 65_000;
/// Fragments one oversized IPv4 packet may become (64 KiB at a 1280-byte
/// inner MTU needs 52).
const MAX_FRAGMENTS: usize = 64;
/// Room for an ICMP "too big" written back into the TUN device, and for an
/// IPv6 packet reassembled from pieces (both at most 1280 bytes).
const ICMP_ROOM: usize = 1280;
/// Control-plane events handled per turn of the loop, at most: the data
/// path gets a turn between batches however busy gossip is.
const CONTROL_EVENTS_PER_TURN: usize = 64;
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
    let secret = keys::read_private_key(&config.interface.private_key_file)?;
    let mut device = build_device(&config, secret.clone())?;
    let udp = UdpIo::bind(config.interface.listen_port)?;
    let mut nat_probes = crate::nat::ProbeSockets::default();
    let own = crate::mesh::local_addresses(&[]);
    device.set_local_addresses(own, config.interface.listen_port);
    let (mut mesh, inbox) = match &config.mesh {
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
    let (mut admitted_rx, mut control_rx) = match inbox {
        Some(i) => (Some(i.admitted), Some(i.control)),
        None => (None, None),
    };
    let (admin_tx, mut admin_rx) = tokio::sync::mpsc::channel(8);
    let (snapshot_tx, mut snapshot_rx) = tokio::sync::mpsc::channel(4);
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
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let edges = Edges::new(tun.dev.if_index().ok(), config.interface.pmtu_discovery);
    let mut path = DataPath::new(usize::from(config.interface.mtu), &udp, edges);
    path.mss_clamp = config.interface.mss_clamp;
    path.edges.start(&mut device, Instant::now()).await;
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
        public_key = %keys::encode(device.public_key().as_bytes()),
        listen = %udp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        peers = config.peers.len(),
        gso_segments = udp.max_gso_segments(),
        gro_segments = udp.gro_segments(),
        "weft node running"
    );
    loop {
        heartbeat.beat();
        let now = Instant::now();
        if stall_at.is_some_and(|t| now >= t) {
            warn!("{TEST_STALL_VAR} is set: the main loop stops turning now");
            loop {
                std::thread::park();
            }
        }
        if device.poll_timeout().is_some_and(|t| t <= now) {
            device.handle_timeout(now);
        }
        path.drain_protocol(&mut device, &udp).await;
        nat_probes.drain(&mut device).await;
        if let Some(m) = mesh.as_mut() {
            m.nat_changed(&mut device);
            for (peer, endpoint, pmtu) in std::mem::take(&mut path.observations) {
                m.observe(&device, peer, endpoint, pmtu);
            }
            for peer in std::mem::take(&mut path.gave_up) {
                m.handshake_gave_up(peer);
            }
            if Instant::now() >= m.next_deadline() {
                m.tick(&mut device);
            }
        } else {
            path.observations.clear();
            path.gave_up.clear();
        }
        // The loop turns at least once a second, idle or not: a turn is
        // what the watchdog watches for.
        let beat = tokio::time::Instant::now() + watchdog::BEAT_EVERY;
        let deadline = device
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .map_or(beat, |t| t.min(beat));
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            r = tun.dev.readable() => {
                r.context("TUN device failed")?;
                path.pump_tun(&mut device, &tun, &udp).await;
            }
            r = udp.readable() => {
                r.context("UDP socket failed")?;
                path.pump_udp(&mut device, &tun, &udp).await;
            }
            _ = tokio::time::sleep_until(deadline) => {}
            Some((socket, datagram)) = nat_probes.recv() => {
                crate::nat::ProbeSockets::deliver(&mut device, socket, datagram);
            }
            Some((request, reply)) = admin_rx.recv() => {
                match (request, mesh.as_mut()) {
                    (Request::Status, m) => {
                        let status = snapshot(&config, &device, m.as_deref(), &udp, started);
                        let _ = reply.send(Response::Status(Box::new(status)));
                    }
                    (request, Some(m)) => m.handle_admin(request, &mut device, reply),
                    (_, None) => {
                        let _ = reply.send(Response::Error(
                            "this node is not a mesh member (its configuration has no [mesh] table)"
                                .into(),
                        ));
                    }
                }
            }
            Some(reply) = snapshot_rx.recv() => {
                let _ = reply.send(snapshot(&config, &device, mesh.as_ref(), &udp, started));
            }
            Some(admitted) = recv(admitted_rx.as_mut()) => {
                if let Some(peer) = mesh.as_mut().and_then(|m| m.admit(admitted, &mut device)) {
                    path.edges.peer_added(&mut device, peer, Instant::now()).await;
                }
            }
            Some(event) = recv(control_rx.as_mut()) => {
                if let (Some(m), Some(rx)) = (mesh.as_mut(), control_rx.as_mut()) {
                    // This one and what else is waiting, up to a batch.
                    let mut next = Some(event);
                    let mut handled = 0;
                    while let Some(event) = next.take() {
                        for peer in m.on_control(event, &mut device) {
                            path.edges.peer_added(&mut device, peer, Instant::now()).await;
                        }
                        handled += 1;
                        if handled < CONTROL_EVENTS_PER_TURN {
                            next = rx.try_recv().ok();
                        }
                    }
                }
            }
            _ = mesh_due(mesh.as_ref().map(|m| m.next_deadline())) => {}
        }
    }
    if let Some(m) = mesh.take() {
        m.shutdown(&device);
    }
    drop(tun);
    info!(name = %config.interface.name, "interface removed");
    Ok(())
}

/// What `weft status` and `/metrics` show, from the state this task owns.
fn snapshot(
    config: &Config,
    device: &Device,
    mesh: Option<&MeshNode>,
    udp: &UdpIo,
    started: Instant,
) -> Snapshot {
    let now = Instant::now();
    let node = NodeInfo {
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
            .map(|a| format!("{}/{}", a.addr, a.prefix))
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: now.saturating_duration_since(started).as_secs(),
    };
    let mut s = Snapshot::collect(device, node, now);
    s.mesh = mesh.map(MeshNode::stats);
    s
}

/// Sleeps until `at`, or forever when there is none (no mesh).
async fn mesh_due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Receives from `rx`, or waits forever when there is none (no mesh).
async fn recv<T>(rx: Option<&mut tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Buffers and batching of the data path; allocated once.
struct DataPath {
    /// Slot size: header, the largest inner packet, tag.
    stride: usize,
    max_gso_segments: usize,
    tun_original: Vec<u8>,
    tx: Vec<u8>,
    tx_sizes: [usize; BATCH],
    tx_out: [Option<(SocketAddr, usize)>; BATCH],
    rx: Vec<Vec<u8>>,
    rx_meta: [RecvMeta; RX_BATCH],
    tun_out: Vec<Vec<u8>>,
    tun_out_len: usize,
    gro: GROTable,
    control: Vec<u8>,
    /// Slots for the sealed fragments of one oversized IPv4 packet.
    frag: Vec<u8>,
    frag_out: Vec<(SocketAddr, usize)>,
    icmp_limit: IcmpRateLimiter,
    mss_clamp: bool,
    edges: Edges,
    /// Confirmed path MTUs to tell the mesh about.
    observations: Vec<(PeerId, SocketAddr, u16)>,
    /// Peers whose handshake gave up, to tell the mesh about.
    gave_up: Vec<PeerId>,
}

impl DataPath {
    fn new(mtu: usize, udp: &UdpIo, edges: Edges) -> Self {
        let stride = TRANSPORT_HEADER_LEN + mtu + TAG_LEN;
        let rx_len = (stride * udp.gro_segments().max(1)).max(u16::MAX as usize + 1);
        Self {
            stride,
            max_gso_segments: udp.max_gso_segments().max(1),
            tun_original: vec![0; VIRTIO_NET_HDR_LEN + u16::MAX as usize],
            tx: vec![0; BATCH * stride],
            tx_sizes: [0; BATCH],
            tx_out: [None; BATCH],
            rx: (0..RX_BATCH).map(|_| vec![0; rx_len]).collect(),
            rx_meta: [RecvMeta::default(); RX_BATCH],
            tun_out: (0..TUN_OUT)
                .map(|_| Vec::with_capacity(TRANSPORT_HEADER_LEN + u16::MAX as usize))
                .collect(),
            tun_out_len: 0,
            gro: GROTable::default(),
            // Control messages include PMTU probes up to the largest
            // datagram, whatever the interface MTU.
            control: vec![0; u16::MAX as usize + 1],
            frag: vec![0; MAX_FRAGMENTS * stride],
            frag_out: Vec::with_capacity(MAX_FRAGMENTS),
            icmp_limit: IcmpRateLimiter::default(),
            mss_clamp: true,
            edges,
            observations: Vec::new(),
            gave_up: Vec::new(),
        }
    }

    /// Sends everything the protocol queued and logs its events.
    async fn drain_protocol(&mut self, device: &mut Device, udp: &UdpIo) {
        let now = Instant::now();
        self.edges.on_socket_errors(device, udp, now);
        while let Some(t) = device.poll_transmit(now, &mut self.control) {
            if let Err(e) = udp.send(t.destination, &self.control[..t.len], None).await {
                self.send_failed(device, t.destination, &e, now);
            }
        }
        while let Some(event) = device.poll_event() {
            self.edges.on_event(device, &event, now).await;
            if let Event::PmtuChanged {
                peer,
                endpoint,
                pmtu,
                ..
            } = event
            {
                if device
                    .path_mtu(peer)
                    .is_some_and(|(_, confirmed)| confirmed)
                {
                    self.observations.push((peer, endpoint, pmtu));
                }
            }
            match event {
                Event::HandshakeFailed { peer } => {
                    warn!(
                        peer = device.peer_name(peer),
                        "peer unreachable: handshake gave up"
                    );
                    self.gave_up.push(peer);
                }
                Event::PathChanged {
                    peer,
                    via: Some(relay),
                    ..
                } => info!(
                    peer = device.peer_name(peer),
                    relay = device.peer_name(relay),
                    "peer reached via relay"
                ),
                Event::PathChanged {
                    peer,
                    via: None,
                    punched,
                } => info!(
                    peer = device.peer_name(peer),
                    endpoint = ?device.peer_status(peer, now).and_then(|s| s.endpoint),
                    punched,
                    "direct path established"
                ),
                other => debug!(?other, "protocol event"),
            }
        }
    }

    fn send_failed(
        &mut self,
        device: &mut Device,
        destination: SocketAddr,
        e: &io::Error,
        now: Instant,
    ) {
        if e.raw_os_error() == Some(libc::EMSGSIZE) {
            // Larger than the local MTU toward it: the kernel says how large.
            self.edges.refresh_hints(device, now);
        } else {
            debug!(%destination, error = %e, "send failed");
        }
    }

    /// Reads batches from the TUN device, seals them and sends them.
    async fn pump_tun(&mut self, device: &mut Device, tun: &Tun, udp: &UdpIo) {
        for _ in 0..ROUNDS {
            let filled = self.read_tun_batch(tun);
            if filled == 0 {
                break;
            }
            let now = Instant::now();
            let stride = self.stride;
            self.frag_out.clear();
            for i in 0..filled {
                let len = self.tx_sizes[i];
                let slot = &mut self.tx[i * stride..(i + 1) * stride];
                if self.mss_clamp {
                    clamp_mss(
                        device,
                        &mut slot[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len],
                        None,
                    );
                }
                self.tx_out[i] = match device.encapsulate(now, slot, len) {
                    Encapsulated::Send {
                        destination, len, ..
                    } => Some((destination, len)),
                    Encapsulated::Queued { .. } => None,
                    Encapsulated::TooBig { mtu, .. } => {
                        self.fit(device, now, i, mtu);
                        None
                    }
                    Encapsulated::Dropped(reason) => {
                        trace!(reason = reason.as_str(), "outgoing packet dropped");
                        None
                    }
                };
            }
            self.send_batch(filled, device, udp).await;
            for k in 0..self.frag_out.len() {
                let (destination, len) = self.frag_out[k];
                let contents = &self.frag[k * stride..k * stride + len];
                if let Err(e) = udp.send(destination, contents, None).await {
                    self.send_failed(device, destination, &e, now);
                }
            }
            self.flush_tun(tun).await;
            self.drain_protocol(device, udp).await;
            if filled < BATCH - MAX_SPLIT {
                break;
            }
        }
    }

    /// Makes the inner packet in slot `i` fit an edge of inner MTU `mtu`:
    /// an ICMP "too big" back to its sender, or IPv4 fragments.
    fn fit(&mut self, device: &mut Device, now: Instant, i: usize, mtu: u16) {
        let stride = self.stride;
        let len = self.tx_sizes[i];
        let start = i * stride + TRANSPORT_HEADER_LEN;
        let packet = &self.tx[start..start + len];
        match inner::needs_fitting(packet, usize::from(mtu)) {
            Fit::TooBigDf => {
                if self.tun_out_len == TUN_OUT || !self.icmp_limit.allow(now) {
                    return;
                }
                let out = &mut self.tun_out[self.tun_out_len];
                out.clear();
                out.resize(TRANSPORT_HEADER_LEN + ICMP_ROOM, 0);
                match icmp::too_big_reply(packet, mtu, &mut out[TRANSPORT_HEADER_LEN..]) {
                    Some(n) => {
                        out.truncate(TRANSPORT_HEADER_LEN + n);
                        self.tun_out_len += 1;
                        trace!(mtu, "packet too big for the edge: ICMP written back");
                    }
                    None => out.clear(),
                }
            }
            Fit::TooBigFragmentable => {
                let (frag, out) = (&mut self.frag, &mut self.frag_out);
                let done = fragment::fragment_ipv4(packet, usize::from(mtu), |piece| {
                    let k = out.len();
                    if k == MAX_FRAGMENTS {
                        return;
                    }
                    let slot = &mut frag[k * stride..(k + 1) * stride];
                    slot[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + piece.len()]
                        .copy_from_slice(piece);
                    if let Encapsulated::Send {
                        destination, len, ..
                    } = device.encapsulate(now, slot, piece.len())
                    {
                        out.push((destination, len));
                    }
                });
                if !done {
                    trace!("oversized packet could not be fragmented");
                }
            }
            Fit::Fits | Fit::Malformed => {}
        }
    }

    /// Fills TUN slots until the device is drained or the batch is full.
    fn read_tun_batch(&mut self, tun: &Tun) -> usize {
        let stride = self.stride;
        let mut slots: [&mut [u8]; BATCH] = {
            let mut it = self.tx.chunks_exact_mut(stride);
            // `tx` holds exactly BATCH slots of `stride` bytes.
            std::array::from_fn(|_| it.next().expect("BATCH slots"))
        };
        let mut filled = 0;
        while BATCH - filled >= MAX_SPLIT {
            match tun.dev.try_recv_multiple(
                &mut self.tun_original,
                &mut slots[filled..],
                &mut self.tx_sizes[filled..],
                TRANSPORT_HEADER_LEN,
            ) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "TUN read failed");
                    break;
                }
            }
        }
        filled
    }

    /// Sends sealed slots, runs of full-size datagrams to one peer as one
    /// GSO send.
    async fn send_batch(&mut self, filled: usize, device: &mut Device, udp: &UdpIo) {
        let stride = self.stride;
        let max_run = self.max_gso_segments.min(MAX_GSO_BYTES / stride).max(1);
        let mut i = 0;
        while i < filled {
            let Some((destination, len)) = self.tx_out[i] else {
                i += 1;
                continue;
            };
            let mut last = (i, len);
            while last.0 + 1 < filled && last.0 + 1 - i < max_run && last.1 == stride {
                match self.tx_out[last.0 + 1] {
                    Some((d, l)) if d == destination => last = (last.0 + 1, l),
                    _ => break,
                }
            }
            let contents = &self.tx[i * stride..last.0 * stride + last.1];
            let segment = (last.0 > i).then_some(stride);
            if let Err(e) = udp.send(destination, contents, segment).await {
                self.send_failed(device, destination, &e, Instant::now());
            }
            i = last.0 + 1;
        }
    }

    /// Receives datagram batches, opens them and writes inner packets to
    /// the TUN device.
    async fn pump_udp(&mut self, device: &mut Device, tun: &Tun, udp: &UdpIo) {
        for _ in 0..ROUNDS {
            let n = {
                let mut slices: [IoSliceMut<'_>; RX_BATCH] = {
                    let mut it = self.rx.iter_mut();
                    // `rx` holds exactly RX_BATCH buffers.
                    std::array::from_fn(|_| IoSliceMut::new(it.next().expect("RX_BATCH buffers")))
                };
                match udp.try_recv(&mut slices, &mut self.rx_meta) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "UDP receive failed");
                        break;
                    }
                }
            };
            let now = Instant::now();
            for i in 0..n {
                let meta = self.rx_meta[i];
                let stride = meta.stride.max(1);
                let mut start = 0;
                while start < meta.len {
                    let end = (start + stride).min(meta.len);
                    let datagram = &mut self.rx[i][start..end];
                    start = end;
                    match device.decapsulate(now, meta.addr, datagram) {
                        Decapsulated::Tun { offset, len, peer } => {
                            let packet = &mut datagram[offset..offset + len];
                            if self.mss_clamp {
                                clamp_mss(device, packet, Some(peer));
                            }
                            let out = &mut self.tun_out[self.tun_out_len];
                            out.clear();
                            out.extend_from_slice(&[0; TRANSPORT_HEADER_LEN]);
                            out.extend_from_slice(packet);
                            self.tun_out_len += 1;
                            if self.tun_out_len == TUN_OUT {
                                self.flush_tun(tun).await;
                            }
                        }
                        Decapsulated::Consumed => {}
                        Decapsulated::Dropped(reason) => {
                            trace!(from = %meta.addr, reason = reason.as_str(), "datagram dropped");
                        }
                    }
                }
            }
            self.take_reassembled(device, tun).await;
            self.flush_tun(tun).await;
            self.drain_protocol(device, udp).await;
            if n < RX_BATCH {
                break;
            }
        }
    }

    /// Queues inner packets the device reassembled from pieces.
    async fn take_reassembled(&mut self, device: &mut Device, tun: &Tun) {
        loop {
            if self.tun_out_len == TUN_OUT {
                self.flush_tun(tun).await;
            }
            let out = &mut self.tun_out[self.tun_out_len];
            out.clear();
            out.resize(TRANSPORT_HEADER_LEN + ICMP_ROOM, 0);
            match device.poll_reassembled(&mut out[TRANSPORT_HEADER_LEN..]) {
                Some((peer, len)) => {
                    out.truncate(TRANSPORT_HEADER_LEN + len);
                    if self.mss_clamp {
                        clamp_mss(device, &mut out[TRANSPORT_HEADER_LEN..], Some(peer));
                    }
                    self.tun_out_len += 1;
                }
                None => {
                    out.clear();
                    return;
                }
            }
        }
    }

    async fn flush_tun(&mut self, tun: &Tun) {
        if self.tun_out_len == 0 {
            return;
        }
        let n = self.tun_out_len;
        self.tun_out_len = 0;
        if let Err(e) = tun
            .dev
            .send_multiple(&mut self.gro, &mut self.tun_out[..n], TRANSPORT_HEADER_LEN)
            .await
        {
            debug!(error = %e, "TUN write failed");
        }
    }
}

/// Clamps the MSS of a SYN or SYN-ACK crossing the tunnel to what the edge
/// carries: toward the peer its destination routes to (outgoing), or from
/// `peer` (incoming). The packet is read once; only a SYN is routed.
fn clamp_mss(device: &Device, packet: &mut [u8], peer: Option<PeerId>) {
    let Some(syn) = mss::find_syn(packet) else {
        return;
    };
    let Some(peer) = peer.or_else(|| device.route(syn.destination)) else {
        return;
    };
    mss::clamp(packet, syn, syn.mss_for(device.inner_mtu(peer)));
}
