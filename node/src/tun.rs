//! The TUN device: created with its addresses and MTU, with virtio-net
//! offload (TSO/GRO) when the kernel has it.
//!
//! With offload, one read from the device can return a TCP super-packet of
//! up to 64 KiB, which tun-rs splits into MTU-sized packets; on the way back,
//! tun-rs coalesces consecutive TCP segments into one write. That moves the
//! per-packet system-call cost off the data path, which is the main lever a
//! userspace tunnel has. The device disappears when the process exits.

use std::io;
use std::net::IpAddr;

use tracing::{debug, info};
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::config::{Interface, IpNetworkWithHost};
use crate::host::{self, Ipv6, Step, StepError};

/// An open TUN device.
pub struct Tun {
    /// The async device.
    pub dev: AsyncDevice,
    /// Whether TSO/GRO offload is active.
    pub offload: bool,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("offload", &self.offload)
            .finish_non_exhaustive()
    }
}

/// Whether creating the device without offload is worth a try after
/// `error` with it: not when the refusal has nothing to do with offload.
fn retry_without_offload(error: &io::Error) -> bool {
    !matches!(
        error.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EBUSY | libc::ENOENT | libc::ENODEV)
    )
}

/// Creates the interface, assigns the addresses and brings it up. Must be
/// called inside a tokio runtime. IPv6 addresses are left out on a host
/// without IPv6 ([`host::ipv6`]); the daemon says so once at start.
pub fn create(iface: &Interface) -> anyhow::Result<Tun> {
    create_for(iface, host::ipv6())
}

/// [`create`] for a host whose IPv6 is `ipv6`. Each step is its own call,
/// so a refusal names the step it stopped ([`StepError`]); a device that
/// fails half-way is closed, and with it gone, on return.
pub(crate) fn create_for(iface: &Interface, ipv6: Ipv6) -> anyhow::Result<Tun> {
    let name = || iface.name.clone();
    // The device is brought up last, once it has its MTU and addresses.
    let build = |offload: bool| {
        DeviceBuilder::new()
            .name(&iface.name)
            .offload(offload)
            .inherit_enable_state()
            .build_async()
    };
    let created = |e| StepError::new(Step::CreateTun { name: name() }, e);
    let (dev, offload) = match build(true) {
        Ok(dev) => (dev, true),
        Err(e) if !retry_without_offload(&e) => return Err(created(e).into()),
        // Kernels without virtio-net headers on TUN still get a device.
        Err(_) => (build(false).map_err(created)?, false),
    };
    dev.set_mtu(iface.mtu).map_err(|e| {
        StepError::new(
            Step::SetMtu {
                name: name(),
                mtu: iface.mtu,
            },
            e,
        )
    })?;
    let address = |a: &IpNetworkWithHost, e| {
        StepError::new(
            Step::SetAddress {
                name: name(),
                addr: a.addr,
                prefix: a.prefix,
            },
            e,
        )
    };
    let mut v4 = iface.address.iter().filter(|a| a.addr.is_ipv4());
    if let Some(
        a @ IpNetworkWithHost {
            addr: IpAddr::V4(ip),
            prefix,
        },
    ) = v4.next()
    {
        dev.set_network_address(*ip, *prefix, None)
            .map_err(|e| address(a, e))?;
    }
    // Further IPv4 addresses beyond the first.
    for a in v4 {
        if let IpAddr::V4(ip) = a.addr {
            dev.add_address_v4(ip, a.prefix)
                .map_err(|e| address(a, e))?;
        }
    }
    for a in iface.address.iter().filter(|a| a.addr.is_ipv6()) {
        if let (IpAddr::V6(ip), true) = (a.addr, ipv6.usable()) {
            dev.add_address_v6(ip, a.prefix)
                .map_err(|e| address(a, e))?;
        } else {
            debug!(name = %iface.name, address = %a.addr, "IPv6 overlay address not set: no IPv6 on this host");
        }
    }
    dev.enabled(true)
        .map_err(|e| StepError::new(Step::BringUp { name: name() }, e))?;
    let offload = offload && dev.tcp_gso();
    info!(
        name = %iface.name,
        mtu = iface.mtu,
        offload,
        "TUN device up"
    );
    Ok(Tun { dev, offload })
}

/// Creates the interface again, as [`create`] did at start, after it was
/// removed under the running node (an operator's `ip link del`, a network
/// manager). The caller still holds the old device, whose descriptor the
/// kernel has cut off from any interface, and closes it once the new one
/// is in place. Fails when the interface cannot be made, e.g. because a
/// link of another kind took its name in the meantime.
pub fn recreate(iface: &Interface) -> anyhow::Result<Tun> {
    create(iface).map_err(|e| {
        if link_exists(&iface.name) {
            e.context(format!(
                "a link named {} exists and is not a TUN device weft can open",
                iface.name
            ))
        } else {
            e
        }
    })
}

/// Whether a network interface is named `name` in this namespace.
fn link_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}
