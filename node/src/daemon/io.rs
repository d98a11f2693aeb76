//! Everything the main task waits on, as one source of [`Input`]s: the TUN
//! device, the UDP socket, the NAT probe sockets, SIGINT and SIGTERM, the
//! queues from the admin socket, the metrics server, the join listener and
//! the control plane, and the deadline of the next timer.
//!
//! [`Io::next`] waits for whichever is ready first and says which; it reads
//! a message from a queue (and, for the control plane, what else is already
//! waiting, up to a batch), but never a packet: the data path reads the
//! TUN device and the socket itself, in batches, when told they are
//! readable. This file owns the handles and the waiting; it never decides
//! anything, never touches the device, and waits for nothing but these.

use std::time::Instant;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use weft_protocol::ProbeSocket;

use crate::admin::{Pending, Request, Response};
use crate::control::ControlEvent;
use crate::mesh::join::Admitted;
use crate::mesh::node::MeshInbox;
use crate::metrics::SnapshotRequest;
use crate::nat::ProbeSockets;
use crate::tun::Tun;
use crate::udp::UdpIo;

/// Control-plane events handed over in one [`Input::Control`], at most:
/// the data path gets a turn between batches however busy gossip is.
const CONTROL_EVENTS_PER_TURN: usize = 64;

/// What woke the main task.
#[derive(Debug)]
pub enum Input {
    /// SIGINT or SIGTERM (its name): the node shuts down.
    Signal(&'static str),
    /// The TUN device has packets to read.
    TunReadable,
    /// The UDP socket has datagrams to read.
    UdpReadable,
    /// The deadline given to [`Io::next`] passed.
    Timeout,
    /// A datagram arrived on a NAT probe socket.
    ProbeDatagram(ProbeSocket, Vec<u8>),
    /// A request on the admin socket, and where to answer it.
    Admin(Request, tokio::sync::oneshot::Sender<Response>),
    /// A status snapshot asked for by the metrics server.
    Snapshot(SnapshotRequest),
    /// A member the join listener admitted (mesh members only).
    Admitted(Admitted),
    /// A member answered this holder's nomination (mesh members only).
    Nominated(crate::mesh::authorities::Nominated),
    /// Control-plane events, the one that woke the task first, and up to
    /// [`CONTROL_EVENTS_PER_TURN`] in all (mesh members only).
    Control(Vec<ControlEvent>),
}

/// The main task's I/O handles. See the module documentation.
pub struct Io {
    /// The TUN device.
    pub tun: Tun,
    /// The data-plane socket.
    pub udp: UdpIo,
    /// The sockets of NAT trials.
    pub probes: ProbeSockets,
    sigterm: Signal,
    sigint: Signal,
    admin: mpsc::Receiver<Pending>,
    snapshots: mpsc::Receiver<SnapshotRequest>,
    mesh: Option<MeshInbox>,
}

impl Io {
    /// Watches SIGTERM and SIGINT and gathers the rest.
    pub fn new(
        tun: Tun,
        udp: UdpIo,
        probes: ProbeSockets,
        admin: mpsc::Receiver<Pending>,
        snapshots: mpsc::Receiver<SnapshotRequest>,
        mesh: Option<MeshInbox>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            tun,
            udp,
            probes,
            sigterm: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            sigint: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            admin,
            snapshots,
            mesh,
        })
    }

    /// Waits until something is ready or `deadline` passes. A failed TUN
    /// device or socket is an error: the node cannot go on without it.
    pub async fn next(&mut self, deadline: Instant) -> anyhow::Result<Input> {
        let (admitted, control, nominated) = match self.mesh.as_mut() {
            Some(m) => (
                Some(&mut m.admitted),
                Some(&mut m.control),
                Some(&mut m.nominated),
            ),
            None => (None, None, None),
        };
        let input = tokio::select! {
            _ = self.sigterm.recv() => Input::Signal("SIGTERM"),
            _ = self.sigint.recv() => Input::Signal("SIGINT"),
            r = self.tun.dev.readable() => {
                r.context("TUN device failed")?;
                Input::TunReadable
            }
            r = self.udp.readable() => {
                r.context("UDP socket failed")?;
                Input::UdpReadable
            }
            _ = tokio::time::sleep_until(deadline.into()) => Input::Timeout,
            Some((socket, datagram)) = self.probes.recv() => {
                Input::ProbeDatagram(socket, datagram)
            }
            Some((request, reply)) = self.admin.recv() => Input::Admin(request, reply),
            Some(reply) = self.snapshots.recv() => Input::Snapshot(reply),
            Some(admitted) = recv(admitted) => Input::Admitted(admitted),
            Some(nominated) = recv(nominated) => Input::Nominated(nominated),
            Some(batch) = recv_batch(control) => Input::Control(batch),
        };
        Ok(input)
    }
}

/// Receives from `rx`, or waits forever when there is none (no mesh).
async fn recv<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Receives what waits in `rx`, at least one and at most
/// [`CONTROL_EVENTS_PER_TURN`], or waits forever when there is none (no
/// mesh); `None` once the queue is closed.
async fn recv_batch<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<Vec<T>> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    let mut batch = Vec::new();
    match rx.recv_many(&mut batch, CONTROL_EVENTS_PER_TURN).await {
        0 => None,
        _ => Some(batch),
    }
}
