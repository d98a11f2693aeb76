//! The node: the protocol device, on mesh members the mesh logic that
//! changes it, the data path and the edges, driven one [`Input`] at a time.
//!
//! [`Node::handle`] serves an input, then does what follows every input:
//! fires due timers, sends what the device queued, and takes the device's
//! events. Events are taken here and nowhere else, and each goes to
//! everything that follows it ([`Node::fan_out`]): the logs, the edges (MTU
//! hints and routes), and on mesh members the mesh (confirmed path MTUs,
//! failed handshakes, NAT changes).
//!
//! When the data path finds the TUN device gone (the interface deleted
//! under the node), [`Node::handle`] logs it at ERROR and creates the
//! interface again with its addresses and MTU, hands the new one to the
//! data path and the routes to a route task of the new interface
//! ([`Node::recreate_tun`]); if it cannot, the error ends the node, so its
//! supervisor restarts it.
//!
//! This file owns no I/O handle: it awaits only the TUN device and the
//! sockets it is lent ([`Io`]), and never another task, the store or a
//! remote peer. What another task must do goes into a bounded queue without
//! waiting: route changes (`routes.rs`), control commands and store writes
//! (`mesh/`); admin requests that wait on the disk are answered by the task
//! that does the work.

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};
use weft_protocol::{Device, Event};

use super::datapath::DataPath;
use super::io::{Input, Io};
use crate::admin::{Request, Response};
use crate::config::Interface;
use crate::edges::Edges;
use crate::mesh::node::MeshNode;
use crate::nat::ProbeSockets;
use crate::routes::RouteQueue;
use crate::status::{NodeInfo, Snapshot};
use crate::tun::{self, Tun};
use crate::watchdog;

/// Times the TUN interface may be created again within
/// [`RECREATE_WINDOW`]: past that something keeps removing it, and the
/// node exits for its supervisor rather than fight it.
const MAX_RECREATIONS: usize = 5;
/// The window [`MAX_RECREATIONS`] counts in.
const RECREATE_WINDOW: Duration = Duration::from_secs(60);

/// The state the main task owns. See the module documentation.
pub struct Node {
    device: Device,
    mesh: Option<MeshNode>,
    path: DataPath,
    edges: Edges,
    /// The interface as configured, to create it again.
    iface: Interface,
    /// When the interface was created again, within [`RECREATE_WINDOW`].
    recreations: VecDeque<Instant>,
    /// Times the interface was created again since start.
    recreated_total: u64,
    /// This node as status shows it, but for the uptime.
    info: NodeInfo,
    started: Instant,
}

/// A route task for the interface of `tun`, or none (with a warning) if
/// the route socket cannot be opened: the node goes on without routes to
/// peers' prefixes outside the interface addresses.
pub fn route_queue(tun: &Tun) -> Option<RouteQueue> {
    let index = tun.dev.if_index().ok()?;
    match RouteQueue::spawn(index) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "cannot program routes; peers' prefixes outside the interface addresses will not be routed");
            None
        }
    }
}

impl Node {
    /// A node over `device`, on the interface configured as `iface`,
    /// started at `started`.
    pub fn new(
        device: Device,
        mesh: Option<MeshNode>,
        path: DataPath,
        edges: Edges,
        iface: Interface,
        info: NodeInfo,
        started: Instant,
    ) -> Self {
        Self {
            device,
            mesh,
            path,
            edges,
            iface,
            recreations: VecDeque::with_capacity(MAX_RECREATIONS),
            recreated_total: 0,
            info,
            started,
        }
    }

    /// The device, for start-up logs.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// When the node next needs a turn with nothing else to wake it: the
    /// device's next timer, the mesh's, and at the latest
    /// [`watchdog::BEAT_EVERY`] from now, since a turn is what the watchdog
    /// watches for.
    pub fn deadline(&self) -> Instant {
        let beat = Instant::now() + watchdog::BEAT_EVERY;
        [
            self.device.poll_timeout(),
            self.mesh.as_ref().map(MeshNode::next_deadline),
        ]
        .into_iter()
        .flatten()
        .fold(beat, Instant::min)
    }

    /// Serves `input`, then [`Node::poll`]s. Breaks on a signal; fails if
    /// the TUN interface was removed and cannot be created again.
    pub async fn handle(&mut self, input: Input, io: &mut Io) -> anyhow::Result<ControlFlow<()>> {
        let now = Instant::now();
        match input {
            Input::Signal(name) => {
                info!("{name}: shutting down");
                return Ok(ControlFlow::Break(()));
            }
            Input::TunReadable => self.path.pump_tun(&mut self.device, &io.tun, &io.udp).await,
            Input::UdpReadable => self.path.pump_udp(&mut self.device, &io.tun, &io.udp).await,
            Input::Timeout => {}
            Input::ProbeDatagram(socket, datagram) => {
                ProbeSockets::deliver(&mut self.device, socket, datagram)
            }
            Input::Admin(request, reply) => self.admin(request, reply),
            Input::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Input::Admitted(admitted) => {
                let added = self
                    .mesh
                    .as_mut()
                    .and_then(|m| m.admit(admitted, &mut self.device));
                if let Some(peer) = added {
                    self.edges.peer_added(&mut self.device, peer, now);
                }
            }
            Input::Nominated(n) => {
                if let Some(m) = self.mesh.as_mut() {
                    m.nominated(n);
                }
            }
            Input::Control(events) => {
                if let Some(m) = self.mesh.as_mut() {
                    for event in events {
                        for peer in m.on_control(event, &mut self.device) {
                            self.edges.peer_added(&mut self.device, peer, now);
                        }
                    }
                }
            }
        }
        if let Some(gone) = self.path.take_tun_gone() {
            self.recreate_tun(gone, io).await?;
        }
        self.poll(io).await;
        Ok(ControlFlow::Continue(()))
    }

    /// The TUN device failed with `gone`: the interface was removed under
    /// the node. Creates it again as configured (name, MTU, addresses),
    /// gives it to the data path, and has every peer's routes programmed
    /// through it by a route task of its own (the kernel removed the old
    /// routes with the old interface). Fails, ending the node, if the
    /// interface cannot be created (e.g. its name was taken by another kind
    /// of link) or was removed too often in a short time.
    async fn recreate_tun(&mut self, gone: io::Error, io: &mut Io) -> anyhow::Result<()> {
        let name = self.iface.name.clone();
        error!(interface = %name, error = %gone, "TUN interface removed under the node: creating it again");
        let now = Instant::now();
        while self
            .recreations
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RECREATE_WINDOW)
        {
            self.recreations.pop_front();
        }
        if self.recreations.len() >= MAX_RECREATIONS {
            anyhow::bail!(
                "TUN interface {name} was removed {} times within {} s: giving up",
                MAX_RECREATIONS + 1,
                RECREATE_WINDOW.as_secs()
            );
        }
        self.recreations.push_back(now);
        let tun = tun::recreate(&self.iface).with_context(|| {
            format!("TUN interface {name} was removed under the node and cannot be created again")
        })?;
        self.path.tun_replaced(tun.offload);
        self.edges
            .interface_recreated(route_queue(&tun), &self.device, now);
        // The old device (its descriptor) closes here.
        io.tun = tun;
        self.recreated_total += 1;
        info!(interface = %name, "TUN interface created again; routes reprogrammed");
        Ok(())
    }

    /// What follows every input (and start-up): fires the device's due
    /// timers, sends what it queued and fans its events out, serves the
    /// NAT probe sockets, runs the mesh's timers when due (and drains what
    /// they caused), and hands the turn's route changes to the route task.
    pub async fn poll(&mut self, io: &mut Io) {
        let now = Instant::now();
        if self.device.poll_timeout().is_some_and(|t| t <= now) {
            self.device.handle_timeout(now);
        }
        self.drain(io).await;
        io.probes.drain(&mut self.device).await;
        if let Some(m) = self.mesh.as_mut() {
            if Instant::now() >= m.next_deadline() {
                m.tick(&mut self.device);
                self.drain(io).await;
            }
        }
        self.edges.flush();
    }

    /// Sends what the device queued, fans out every event it reported (and
    /// any event that following them caused), then sends what following
    /// them queued.
    async fn drain(&mut self, io: &mut Io) {
        self.path.send_queued(&mut self.device, &io.udp).await;
        let now = Instant::now();
        let mut fanned = false;
        while let Some(event) = self.device.poll_event() {
            self.fan_out(event, now);
            fanned = true;
        }
        if fanned {
            self.path.send_queued(&mut self.device, &io.udp).await;
        }
    }

    /// Hands one protocol event to everything that follows it: the one
    /// place events go.
    fn fan_out(&mut self, event: Event, now: Instant) {
        let device = &mut self.device;
        self.edges.on_event(device, &event, now);
        match event {
            Event::HandshakeFailed { peer } => {
                warn!(
                    peer = device.peer_name(peer),
                    "peer unreachable: handshake gave up"
                );
                if let Some(m) = self.mesh.as_mut() {
                    m.handshake_gave_up(peer);
                }
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
            Event::PmtuChanged {
                peer,
                endpoint,
                pmtu,
                ..
            } => {
                debug!(other = ?event, "protocol event");
                // Only a size this node confirmed is worth telling others.
                let confirmed = device.path_mtu(peer).is_some_and(|(_, c)| c);
                if let (Some(m), true) = (self.mesh.as_mut(), confirmed) {
                    m.observe(device, peer, endpoint, pmtu);
                }
            }
            Event::NatChanged(_) => {
                debug!(other = ?event, "protocol event");
                if let Some(m) = self.mesh.as_mut() {
                    m.nat_changed(device);
                }
            }
            other => debug!(?other, "protocol event"),
        }
    }

    /// Answers an admin request: status here, the mesh's requests by the
    /// mesh (which hands work that waits on the disk to another task).
    fn admin(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        match (request, self.mesh.as_mut()) {
            (Request::Status, _) => {
                let _ = reply.send(Response::Status(Box::new(self.snapshot())));
            }
            (request, Some(m)) => m.handle_admin(request, &mut self.device, reply),
            (_, None) => {
                let _ = reply.send(Response::Error(
                    "this node is not a mesh member (its configuration has no [mesh] table)".into(),
                ));
            }
        }
    }

    /// What `weft status` and `/metrics` show, from the state this task
    /// owns, in one pass.
    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let node = NodeInfo {
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            ..self.info.clone()
        };
        let mut s = Snapshot::collect(&self.device, node, now);
        s.drops.extend(self.path.tun_drops().by_reason());
        s.tun_recreated = self.recreated_total;
        s.mesh = self.mesh.as_ref().map(MeshNode::stats);
        if let Some(mesh) = s.mesh.as_mut() {
            mesh.queue_dropped
                .push(("routes".to_string(), self.edges.routes_dropped()));
        }
        s
    }

    /// A clean shutdown: the mesh stores the current paths.
    pub fn shutdown(self) {
        if let Some(m) = self.mesh {
            m.shutdown(&self.device);
        }
    }
}
