//! `weft up`: the event loop that drives the protocol device between the
//! TUN device and the UDP socket.
//!
//! One task owns the [`Device`]; nothing else touches protocol state. Each
//! turn of the loop fires due timers, sends what the device has queued,
//! then waits for the TUN device, the socket, the next timer or a signal.
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
    Decapsulated, Device, DeviceConfig, Encapsulated, Event, PeerConfig, PresharedKey,
};

use crate::config::Config;
use crate::keys;
use crate::tun::{self, Tun};
use crate::udp::UdpIo;

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

/// Runs the node until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(config))
}

fn build_device(config: &Config) -> anyhow::Result<Device> {
    let secret = keys::read_private_key(&config.interface.private_key_file)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let mut dc = DeviceConfig::new(secret);
    dc.mtu = usize::from(config.interface.mtu);
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
                    persistent_keepalive: p.persistent_keepalive,
                },
                now,
            )
            .with_context(|| format!("peer[{n}]"))?;
    }
    Ok(device)
}

async fn run_async(config: Config) -> anyhow::Result<()> {
    // Everything that can fail on bad input is checked before the
    // interface exists, so a failed start leaves nothing behind.
    let mut device = build_device(&config)?;
    let udp = UdpIo::bind(config.interface.listen_port)?;
    let tun = tun::create(&config.interface)?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut path = DataPath::new(usize::from(config.interface.mtu), &udp);
    info!(
        public_key = %keys::encode(device.public_key().as_bytes()),
        listen = %udp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        peers = config.peers.len(),
        gso_segments = udp.max_gso_segments(),
        gro_segments = udp.gro_segments(),
        "weft node running"
    );
    loop {
        let now = Instant::now();
        if device.poll_timeout().is_some_and(|t| t <= now) {
            device.handle_timeout(now);
        }
        path.drain_protocol(&mut device, &udp).await;
        let deadline = device
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
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
        }
    }
    drop(tun);
    info!(name = %config.interface.name, "interface removed");
    Ok(())
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
}

impl DataPath {
    fn new(mtu: usize, udp: &UdpIo) -> Self {
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
            control: vec![0; stride.max(256)],
        }
    }

    /// Sends everything the protocol queued and logs its events.
    async fn drain_protocol(&mut self, device: &mut Device, udp: &UdpIo) {
        let now = Instant::now();
        while let Some(t) = device.poll_transmit(now, &mut self.control) {
            if let Err(e) = udp.send(t.destination, &self.control[..t.len], None).await {
                debug!(destination = %t.destination, error = %e, "send failed");
            }
        }
        while let Some(event) = device.poll_event() {
            match event {
                Event::HandshakeFailed { peer } => {
                    warn!(
                        peer = device.peer_name(peer),
                        "peer unreachable: handshake gave up"
                    )
                }
                other => debug!(?other, "protocol event"),
            }
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
            for i in 0..filled {
                let slot = &mut self.tx[i * stride..(i + 1) * stride];
                self.tx_out[i] = match device.encapsulate(now, slot, self.tx_sizes[i]) {
                    Encapsulated::Send {
                        destination, len, ..
                    } => Some((destination, len)),
                    Encapsulated::Queued { .. } => None,
                    Encapsulated::Dropped(reason) => {
                        trace!(reason = reason.as_str(), "outgoing packet dropped");
                        None
                    }
                };
            }
            self.send_batch(filled, udp).await;
            self.drain_protocol(device, udp).await;
            if filled < BATCH - MAX_SPLIT {
                break;
            }
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
    async fn send_batch(&mut self, filled: usize, udp: &UdpIo) {
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
                debug!(%destination, error = %e, "send failed");
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
                        Decapsulated::Tun { offset, len, .. } => {
                            let out = &mut self.tun_out[self.tun_out_len];
                            out.clear();
                            out.extend_from_slice(&[0; TRANSPORT_HEADER_LEN]);
                            out.extend_from_slice(&datagram[offset..offset + len]);
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
            self.flush_tun(tun).await;
            self.drain_protocol(device, udp).await;
            if n < RX_BATCH {
                break;
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
