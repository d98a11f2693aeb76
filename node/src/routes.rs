//! Kernel routes through the TUN device, each with its own MTU, and the
//! task that programs them.
//!
//! Path-MTU discovery finds, per peer, how large an inner packet may be; the
//! routes toward that peer's prefixes carry that MTU (`RTAX_MTU`) so the
//! kernel sizes locally sent packets and TCP segments to fit before they
//! ever reach weft. This module owns one rtnetlink socket, opened in the
//! network namespace of the thread that calls [`Routes::new`], and the shape
//! of weft's routes: unicast, main table, `proto static`, through one
//! interface, no gateway.
//!
//! The main task never waits for netlink: it puts route changes in a
//! [`RouteQueue`], which hands them, once per turn, to a task of their own
//! that owns the socket ([`RouteQueue::spawn`]). The queue is bounded; a
//! turn's changes that do not fit are dropped and counted
//! (`weft_queue_dropped_total{queue="routes"}`), and the route keeps its
//! MTU until the next change for it. The task coalesces what waits: for
//! each prefix only the last MTU asked for is programmed. On a host without
//! IPv6 ([`host::ipv6`]) IPv6 prefixes are left out: the interface has no
//! IPv6 to route through (the daemon says so once at start).
//!
//! It never shells out to `ip`, never touches routes through any other
//! interface, and never sees a packet.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ip_network::IpNetwork;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteMetric, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::sync::mpsc;
use tracing::warn;

use crate::host::{self, Step, StepError};
use crate::watchdog::{self, Probe};

/// Batches of route changes waiting for the route task. The main task
/// sends at most one batch per turn of its loop, so the task falls this
/// far behind only if netlink stops answering.
const QUEUE: usize = 64;

/// One route to program: `prefix` through the interface with path MTU
/// `mtu` (`None`: the interface's), for peer `peer` (named in logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUpdate {
    /// The destination.
    pub prefix: IpNetwork,
    /// The route's MTU.
    pub mtu: Option<u32>,
    /// The peer the prefix belongs to, for logs.
    pub peer: String,
}

/// The main task's side of the route task: collects a turn's route
/// changes and hands them over without waiting.
#[derive(Debug)]
pub struct RouteQueue {
    tx: mpsc::Sender<Vec<RouteUpdate>>,
    pending: Vec<RouteUpdate>,
    dropped: u64,
    /// Whether IPv6 prefixes are programmed (the host has IPv6).
    ipv6: bool,
}

impl RouteQueue {
    /// Opens the route socket for interface `ifindex` and spawns the task
    /// that programs routes through it, both on the current Tokio runtime.
    /// The task ends when the queue is dropped.
    pub fn spawn(ifindex: u32) -> anyhow::Result<Self> {
        let routes = Routes::new(ifindex)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(program(routes, rx));
        Ok(Self::new(tx, host::ipv6().usable()))
    }

    fn new(tx: mpsc::Sender<Vec<RouteUpdate>>, ipv6: bool) -> Self {
        Self {
            tx,
            pending: Vec::new(),
            dropped: 0,
            ipv6,
        }
    }

    /// Asks for the route to `prefix` with `mtu`; handed over by the next
    /// [`RouteQueue::flush`]. An IPv6 prefix on a host without IPv6 is
    /// left out.
    pub fn set(&mut self, prefix: IpNetwork, mtu: Option<u32>, peer: &str) {
        if matches!(prefix, IpNetwork::V6(_)) && !self.ipv6 {
            return;
        }
        self.pending.push(RouteUpdate {
            prefix,
            mtu,
            peer: peer.to_string(),
        });
    }

    /// Hands what was asked since the last flush to the route task, or,
    /// when its queue is full, drops it and counts every route in it.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        if let Err(e) = self.tx.try_send(batch) {
            let (mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch)) =
                e;
            self.dropped += batch.len() as u64;
            warn!(
                routes = batch.len(),
                "route queue full: route changes dropped"
            );
        }
    }

    /// Route changes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The queue's length, for the watchdog.
    pub fn probe(&self) -> Probe {
        watchdog::channel_probe("routes", &self.tx)
    }
}

/// Adds `batch` to the routes to program, replacing what an earlier batch
/// asked for the same prefix.
fn coalesce(latest: &mut BTreeMap<IpNetwork, RouteUpdate>, batch: Vec<RouteUpdate>) {
    for update in batch {
        latest.insert(update.prefix, update);
    }
}

/// The route task: programs each batch, coalesced with every batch already
/// waiting behind it (the last MTU asked for a prefix wins). A route that
/// cannot be set is logged; the node goes on without it (ICMP replies and
/// MSS clamping still make traffic fit).
async fn program(mut routes: Routes, mut rx: mpsc::Receiver<Vec<RouteUpdate>>) {
    while let Some(batch) = rx.recv().await {
        let mut latest = BTreeMap::new();
        let mut next = Some(batch);
        while let Some(batch) = next.take() {
            coalesce(&mut latest, batch);
            next = rx.try_recv().ok();
        }
        for (prefix, update) in latest {
            if let Err(e) = routes.set(prefix, update.mtu).await {
                warn!(peer = %update.peer, mtu = ?update.mtu, error = %format!("{e:#}"), "cannot set route");
            }
        }
    }
}

/// The routes through one interface, programmed over rtnetlink.
///
/// Dropping it closes the netlink socket; the routes stay.
#[derive(Debug)]
pub struct Routes {
    handle: Handle,
    ifindex: u32,
    /// Drives the netlink socket; aborted on drop.
    connection: tokio::task::JoinHandle<()>,
}

impl Routes {
    /// Opens an rtnetlink socket for routes through interface `ifindex`.
    ///
    /// Must be called within a Tokio runtime with I/O enabled, which then
    /// drives the socket. The socket belongs to the caller's network
    /// namespace at the time of this call.
    pub fn new(ifindex: u32) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the route socket needs a Tokio runtime")?;
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        Ok(Routes {
            handle,
            ifindex,
            connection: runtime.spawn(connection),
        })
    }

    /// Adds the route to `prefix` through the interface, or replaces the
    /// one there is (`NLM_F_REPLACE`), with path MTU `mtu` (`None`: the
    /// interface's MTU).
    pub async fn set(&mut self, prefix: IpNetwork, mtu: Option<u32>) -> anyhow::Result<()> {
        let mut message = self.message(prefix);
        if let Some(mtu) = mtu {
            message
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(|e| netlink_error(e, Step::SetRoute { prefix }))
    }

    /// Removes the route to `prefix` through the interface. Removing a
    /// route that is not there is not an error.
    // Used once peers can leave; exercised by the test below until then.
    #[allow(dead_code)]
    pub async fn remove(&mut self, prefix: IpNetwork) -> anyhow::Result<()> {
        match self
            .handle
            .route()
            .del(self.message(prefix))
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ESRCH => Ok(()),
            result => result
                .map_err(|e| netlink_error(e, Step::SetRoute { prefix }))
                .with_context(|| format!("removing the route to {prefix}")),
        }
    }

    /// The route to `prefix` through the interface, without metrics: as a
    /// request to add it, or as the key of the route to delete.
    fn message(&self, prefix: IpNetwork) -> RouteMessage {
        match prefix {
            IpNetwork::V4(net) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.network_address(), net.netmask())
                // As `ip route add … dev X` does for a route without gateway.
                .scope(RouteScope::Link)
                .output_interface(self.ifindex)
                .build(),
            IpNetwork::V6(net) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net.network_address(), net.netmask())
                .output_interface(self.ifindex)
                .build(),
        }
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The kernel's errno, explained for `step` ("setting the route to …:
/// EACCES (Permission denied): …"), rather than rtnetlink's wrapper
/// around it.
fn netlink_error(error: rtnetlink::Error, step: Step) -> anyhow::Error {
    match error {
        rtnetlink::Error::NetlinkError(e) => StepError::new(step, io::Error::from(e)).into(),
        other => anyhow::Error::new(other).context(step.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::File;
    use std::process::Command;

    const LINK: &str = "weft-rt0";
    const PEER: &str = "weft-rt1";

    /// A network namespace made for one test, deleted on drop, even when
    /// the test fails.
    struct Netns {
        name: String,
    }

    impl Netns {
        fn create(name: String) -> Self {
            ip(&["netns", "add", &name]);
            Netns { name }
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    /// Runs `ip ARGS`, failing the test if it fails; returns its stdout.
    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The lines of `ip -n NS [-6] route show` about `prefix`.
    fn routes_to(ns: &str, family: &str, prefix: &str) -> Vec<String> {
        ip(&["-n", ns, family, "route", "show"])
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(prefix))
            .map(str::to_owned)
            .collect()
    }

    fn assert_one_route_with_mtu(ns: &str, family: &str, prefix: &str, mtu: Option<u32>) {
        let routes = routes_to(ns, family, prefix);
        assert_eq!(routes.len(), 1, "one route to {prefix}: {routes:?}");
        let route = &routes[0];
        assert!(route.contains(&format!("dev {LINK}")), "{route}");
        let words: Vec<&str> = route.split_whitespace().collect();
        let shown = words.windows(2).find(|w| w[0] == "mtu").map(|w| w[1]);
        assert_eq!(shown, mtu.map(|m| m.to_string()).as_deref(), "{route}");
    }

    fn update(prefix: &str, mtu: u32) -> RouteUpdate {
        RouteUpdate {
            prefix: prefix.parse().unwrap(),
            mtu: Some(mtu),
            peer: "b".into(),
        }
    }

    #[test]
    fn the_last_mtu_asked_for_a_prefix_wins() {
        let mut latest = BTreeMap::new();
        coalesce(
            &mut latest,
            vec![update("100.64.5.0/24", 1280), update("fd00:5::/64", 1280)],
        );
        coalesce(
            &mut latest,
            vec![update("100.64.5.0/24", 1420), update("100.64.5.0/24", 1400)],
        );
        let programmed: Vec<(String, Option<u32>)> = latest
            .values()
            .map(|u| (u.prefix.to_string(), u.mtu))
            .collect();
        assert_eq!(
            programmed,
            [
                ("100.64.5.0/24".to_string(), Some(1400)),
                ("fd00:5::/64".to_string(), Some(1280)),
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_a_turns_changes_and_counts_each_route() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut queue = RouteQueue::new(tx, true);
        let (_, probe) = queue.probe();
        queue.flush();
        assert_eq!(probe(), 0, "nothing asked, nothing sent");
        queue.set("100.64.5.0/24".parse().unwrap(), Some(1400), "b");
        queue.flush();
        assert_eq!((probe(), queue.dropped()), (1, 0));
        queue.set("100.64.6.0/24".parse().unwrap(), Some(1400), "c");
        queue.set("fd00:6::/64".parse().unwrap(), Some(1400), "c");
        queue.flush();
        assert_eq!((probe(), queue.dropped()), (1, 2));
        assert_eq!(rx.try_recv().unwrap(), vec![update("100.64.5.0/24", 1400)]);
        queue.set("100.64.6.0/24".parse().unwrap(), Some(1400), "c");
        queue.flush();
        assert_eq!((probe(), queue.dropped()), (1, 2), "room again");
    }

    #[test]
    fn a_queue_on_a_host_without_ipv6_hands_over_ipv4_routes_and_leaves_ipv6_ones_out() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut queue = RouteQueue::new(tx, false);
        queue.set("100.64.5.0/24".parse().unwrap(), Some(1400), "b");
        queue.set("fd00:5::/64".parse().unwrap(), Some(1400), "b");
        queue.flush();
        assert_eq!(rx.try_recv().unwrap(), vec![update("100.64.5.0/24", 1400)]);
        queue.set("fd00:6::/64".parse().unwrap(), Some(1400), "c");
        queue.flush();
        assert!(rx.try_recv().is_err(), "nothing to hand over");
        assert_eq!(queue.dropped(), 0, "left out, not dropped");
    }

    #[test]
    fn an_ipv6_route_through_an_interface_without_ipv6_is_reported_as_eacces_for_that_route() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates a network namespace and must run as root (CI does)"
        );
        let ns = Netns::create(format!("weft-routes6-{}", std::process::id()));
        ip(&[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ip(&[
            "-n", &ns.name, "link", "add", LINK, "type", "veth", "peer", "name", PEER,
        ]);
        ip(&["-n", &ns.name, "link", "set", LINK, "up"]);
        let ifindex: u32 = ip(&["-n", &ns.name, "-o", "link", "show", LINK])
            .split(':')
            .next()
            .and_then(|index| index.trim().parse().ok())
            .expect("an interface index");
        let name = ns.name.clone();
        let told = std::thread::spawn(move || {
            let netns = File::open(format!("/run/netns/{name}")).expect("the namespace file");
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut routes = Routes::new(ifindex).expect("a route socket");
                routes
                    .set("100.64.5.0/24".parse().unwrap(), Some(1400))
                    .await
                    .expect("IPv4 routes still work");
                let v6 = routes.set("fd00:5::/64".parse().unwrap(), Some(1400)).await;
                format!("{:#}", v6.unwrap_err())
            })
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        assert!(
            told.starts_with("setting the route to fd00:5::/64: EACCES (Permission denied): ")
                && told.contains("disable_ipv6"),
            "{told}"
        );
    }

    #[test]
    fn routes_are_set_with_an_mtu_changed_and_removed_in_a_namespace() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates a network namespace and must run as root (CI does)"
        );
        let ns = Netns::create(format!("weft-routes-{}", std::process::id()));
        // A veth pair rather than a dummy link: not every kernel CI runs on
        // has the dummy driver.
        ip(&[
            "-n", &ns.name, "link", "add", LINK, "type", "veth", "peer", "name", PEER,
        ]);
        ip(&["-n", &ns.name, "link", "set", PEER, "up"]);
        ip(&["-n", &ns.name, "link", "set", LINK, "up"]);
        // `ip -o link show` prints "INDEX: NAME: …".
        let ifindex: u32 = ip(&["-n", &ns.name, "-o", "link", "show", LINK])
            .split(':')
            .next()
            .and_then(|index| index.trim().parse().ok())
            .expect("an interface index");

        let v4: IpNetwork = "100.64.5.0/24".parse().unwrap();
        let v6: IpNetwork = "fd00:5::/64".parse().unwrap();
        let name = ns.name.clone();
        // setns changes only the calling thread: a thread of its own keeps
        // the test harness's threads in their namespace.
        let thread = std::thread::spawn(move || {
            let netns = File::open(format!("/run/netns/{name}")).expect("the namespace file");
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut routes = Routes::new(ifindex).expect("a route socket");
                for mtu in [Some(1300), Some(1400), None] {
                    routes.set(v4, mtu).await.expect("setting the IPv4 route");
                    routes.set(v6, mtu).await.expect("setting the IPv6 route");
                    assert_one_route_with_mtu(&name, "-4", "100.64.5.0/24", mtu);
                    assert_one_route_with_mtu(&name, "-6", "fd00:5::/64", mtu);
                }
                routes.remove(v4).await.expect("removing the IPv4 route");
                routes.remove(v6).await.expect("removing the IPv6 route");
                assert_eq!(
                    routes_to(&name, "-4", "100.64.5.0/24"),
                    Vec::<String>::new()
                );
                assert_eq!(routes_to(&name, "-6", "fd00:5::/64"), Vec::<String>::new());
                routes
                    .remove(v4)
                    .await
                    .expect("removing a missing route is fine");
            });
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}
