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

use anyhow::Context;
use tracing::info;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::config::Interface;

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

fn permission_hint(e: io::Error, name: &str) -> anyhow::Error {
    if e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EPERM) {
        anyhow::anyhow!(
            "creating TUN device {name} needs CAP_NET_ADMIN (run as root, or grant the capability to the weft binary)"
        )
    } else if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ENODEV) {
        anyhow::anyhow!(
            "cannot create TUN device {name}: /dev/net/tun is missing (load the tun module)"
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot create TUN device {name}"))
    }
}

/// Creates the interface, assigns the addresses and brings it up. Must be
/// called inside a tokio runtime.
pub fn create(iface: &Interface) -> anyhow::Result<Tun> {
    let build = |offload: bool| {
        let mut b = DeviceBuilder::new()
            .name(&iface.name)
            .mtu(iface.mtu)
            .offload(offload);
        let mut v4 = iface.address.iter().filter(|a| a.addr.is_ipv4());
        if let Some(a) = v4.next() {
            if let IpAddr::V4(ip) = a.addr {
                b = b.ipv4(ip, a.prefix, None);
            }
        }
        for a in &iface.address {
            if let IpAddr::V6(ip) = a.addr {
                b = b.ipv6(ip, a.prefix);
            }
        }
        b.build_async()
    };
    let (dev, offload) = match build(true) {
        Ok(dev) => (dev, true),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(permission_hint(e, &iface.name))
        }
        // Kernels without virtio-net headers on TUN still get a device.
        Err(_) => (
            build(false).map_err(|e| permission_hint(e, &iface.name))?,
            false,
        ),
    };
    // Further IPv4 addresses beyond the first.
    for a in iface.address.iter().filter(|a| a.addr.is_ipv4()).skip(1) {
        if let IpAddr::V4(ip) = a.addr {
            dev.add_address_v4(ip, a.prefix)
                .with_context(|| format!("cannot add address {}/{}", a.addr, a.prefix))?;
        }
    }
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
