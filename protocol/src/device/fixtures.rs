//! Fixtures the device's unit tests share: two devices wired back to back
//! by hand, their peers and their underlay addresses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::noise::StaticSecret;
use crate::peer::PeerConfig;
use crate::{Device, DeviceConfig, Keepalive};

/// Device A's underlay address.
pub(crate) const A_ADDR: &str = "198.51.100.2:51820";
/// Device B's underlay address.
pub(crate) const B_ADDR: &str = "192.0.2.1:51820";

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Device `n` (key and seed `[n; 32]`), path-MTU discovery off.
pub(crate) fn device(n: u8, now: Instant) -> Device {
    let mut config = DeviceConfig::new(StaticSecret::from_bytes([n; 32]));
    config.pmtu_discovery = false;
    Device::new(config, now, Duration::from_secs(1_700_000_000), [n; 32])
}

/// Device `n` as a peer, at `endpoint`, routed `ip`, no keepalives.
pub(crate) fn peer(n: u8, endpoint: Option<&str>, ip: &str) -> PeerConfig {
    PeerConfig {
        name: format!("n{n}"),
        public_key: StaticSecret::from_bytes([n; 32]).public_key(),
        preshared_key: None,
        endpoint: endpoint.map(addr),
        allowed_ips: vec![ip.parse().unwrap()],
        keepalive: Keepalive::Off,
    }
}
