//! Kernel routes through the TUN device, each with its own MTU.
//!
//! Path-MTU discovery finds, per peer, how large an inner packet may be; the
//! routes toward that peer's prefixes carry that MTU (`RTAX_MTU`) so the
//! kernel sizes locally sent packets and TCP segments to fit before they
//! ever reach weft. This module owns one rtnetlink socket, opened in the
//! network namespace of the thread that calls [`Routes::new`], and the shape
//! of weft's routes: unicast, main table, `proto static`, through one
//! interface, no gateway. It never shells out to `ip`, never touches routes
//! through any other interface, and never sees a packet.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ip_network::IpNetwork;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteMetric, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};

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
            .map_err(netlink_error)
            .with_context(|| format!("setting the route to {prefix} (mtu {mtu:?})"))
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
                .map_err(netlink_error)
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

/// The kernel's errno as an `io::Error` ("File exists (os error 17)")
/// rather than rtnetlink's wrapper around it.
fn netlink_error(error: rtnetlink::Error) -> anyhow::Error {
    match error {
        rtnetlink::Error::NetlinkError(e) => anyhow::Error::new(io::Error::from(e)),
        other => anyhow::Error::new(other),
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
