//! Probe sockets for NAT binding-lifetime trials.
//!
//! The protocol names probe sockets by number ([`ProbeSocket`]); this module
//! owns the real sockets: each is bound to an ephemeral port (`0.0.0.0:0` or
//! `[::]:0`, whichever family its first destination needs) when the device
//! first sends from it, and closed as soon as the device no longer lists it,
//! so at most a few exist, and only while trials run. A small task per
//! socket forwards what arrives to the event loop over one channel; the
//! device alone decides what the datagrams mean.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, trace};
use weft_protocol::{Device, ProbeSocket};

/// Datagrams queued from all probe sockets before the loop takes them.
const QUEUE: usize = 64;
/// Largest datagram a probe socket expects (binding messages are small).
const MAX_DATAGRAM: usize = 256;

struct Probe {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The node's probe sockets. See the module documentation.
pub struct ProbeSockets {
    open: BTreeMap<ProbeSocket, Probe>,
    tx: mpsc::Sender<(ProbeSocket, Vec<u8>)>,
    rx: mpsc::Receiver<(ProbeSocket, Vec<u8>)>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for ProbeSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeSockets")
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for ProbeSockets {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            open: BTreeMap::new(),
            tx,
            rx,
            buf: vec![0; 2048],
        }
    }
}

impl ProbeSockets {
    /// Sends what the device queued for probe sockets, opening new ones,
    /// and closes the ones no trial uses any more.
    pub async fn drain(&mut self, device: &mut Device) {
        let now = Instant::now();
        while let Some(t) = device.poll_probe_transmit(now, &mut self.buf) {
            let Some(socket) = self.socket(t.socket, t.destination).await else {
                continue;
            };
            if let Err(e) = socket.send_to(&self.buf[..t.len], t.destination).await {
                debug!(destination = %t.destination, error = %e, "probe send failed");
            }
        }
        let live: Vec<ProbeSocket> = device.probe_sockets().collect();
        self.open.retain(|s, _| live.contains(s));
    }

    /// Waits for a datagram on any probe socket.
    pub async fn recv(&mut self) -> Option<(ProbeSocket, Vec<u8>)> {
        self.rx.recv().await
    }

    /// Hands a received datagram to the device.
    pub fn deliver(device: &mut Device, socket: ProbeSocket, mut datagram: Vec<u8>) {
        let outcome = device.handle_probe_datagram(Instant::now(), socket, &mut datagram);
        trace!(?socket, ?outcome, "probe datagram");
    }

    async fn socket(&mut self, id: ProbeSocket, to: SocketAddr) -> Option<Arc<UdpSocket>> {
        if !self.open.contains_key(&id) {
            let bind: SocketAddr = if to.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = match UdpSocket::bind(bind).await {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    debug!(error = %e, "cannot open a probe socket");
                    return None;
                }
            };
            trace!(?id, local = ?socket.local_addr().ok(), "probe socket opened");
            let (reader_socket, tx) = (socket.clone(), self.tx.clone());
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while let Ok((n, _)) = reader_socket.recv_from(&mut buf).await {
                    if tx.send((id, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            });
            self.open.insert(id, Probe { socket, reader });
        }
        self.open.get(&id).map(|p| p.socket.clone())
    }
}
