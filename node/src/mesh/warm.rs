//! Warm start: what this member stored about its paths to other members
//! (endpoint, confirmed path MTU, RTT, NAT seen) is where its edges start
//! after a restart, and a clean shutdown stores the paths as they are then.
//!
//! Only this node's own paths (`from` = this node) are loaded, and the
//! members reached over them are contacted first, at once. Paths older
//! than [`MAX_PATH_AGE`] are deleted rather than used. A stored path is a
//! hint, never trusted as such: the device confirms a stored path MTU with a
//! probe before it carries full-size packets, and the handshake proves the
//! endpoint. Path writes are best-effort (a path lost in a crash is measured
//! again); [`save`] flushes the store, so a clean shutdown loses nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info};
use weft_protocol::{Device, PathHint, PeerId};
use weft_store::{Identity, PathRecord, Store};

use super::members::MemberTable;
use super::{now_unix, Membership};

/// Paths measured longer ago than this are deleted at start. A week covers
/// a node that was off over a weekend or a holiday; beyond that, the
/// network between two hosts (addresses, NAT mappings, tunnels on the way)
/// has often changed, and a stale size costs a failed probe and a search,
/// while a search from nothing costs less than a second.
pub const MAX_PATH_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletes stale paths, then returns this node's own remaining paths by
/// destination identity.
pub fn load(m: &Membership) -> HashMap<Identity, PathRecord> {
    load_from(&m.store, &m.identity.identity().0, now_unix())
}

fn load_from(store: &Store, me: &Identity, now_unix: u64) -> HashMap<Identity, PathRecord> {
    let paths = store.paths();
    let cutoff = now_unix.saturating_sub(MAX_PATH_AGE.as_secs());
    match paths.expire(cutoff) {
        Ok(0) => {}
        Ok(n) => info!(
            removed = n,
            max_age_days = MAX_PATH_AGE.as_secs() / 86_400,
            "stale paths deleted"
        ),
        Err(e) => debug!(error = %e, "stale paths not expired"),
    }
    match paths.list_from(me) {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            debug!(error = %e, "stored paths not read");
            HashMap::new()
        }
    }
}

/// Gives the device what was stored about the path to `peer` (its endpoint
/// was given when the peer was added): the path MTU, to be confirmed by
/// one probe, and the RTT; and contacts the peer at once if this node
/// measured the path or held a session over it (its endpoint was last known
/// good, and the peer may still hold a session with our previous run).
pub fn hint(device: &mut Device, peer: PeerId, name: &str, path: Option<&PathRecord>) {
    let Some(path) = path else {
        return;
    };
    let pmtu = (path.pmtu != 0).then_some(path.pmtu);
    let rtt = (path.rtt_us != 0).then(|| Duration::from_micros(u64::from(path.rtt_us)));
    device.set_path_hint(
        peer,
        PathHint {
            endpoint: Some(path.endpoint),
            pmtu,
            rtt,
            confirmed_by_self: path.own,
        },
    );
    if pmtu.is_some() || path.own {
        // This node exchanged data over the path: contact the peer at once,
        // so it drops its session with our previous run now.
        device.connect(peer, Instant::now());
    }
    let age = now_unix().saturating_sub(path.measured_unix);
    info!(
        peer = %name,
        endpoint = %path.endpoint,
        pmtu = path.pmtu,
        rtt_us = path.rtt_us,
        nat = path.nat.as_deref().unwrap_or("unknown"),
        own = path.own,
        age = %format_args!("{age}s"),
        "warm start"
    );
}

/// Stores the path to every member as it is now, then flushes the store:
/// its endpoint, and the confirmed path MTU and RTT where there is one (an
/// earlier measurement of the same endpoint is kept otherwise), or that a
/// session ran over it. Called on a
/// clean shutdown, so the next start resumes from the latest state.
pub fn save(m: &Membership, members: &MemberTable, device: &Device) {
    let me = m.identity.identity();
    let now = Instant::now();
    let mut saved = 0;
    for peer in device.peer_ids() {
        let Some(status) = device.peer_status(peer, now) else {
            continue;
        };
        let (Some(endpoint), Some(cert)) = (
            status.endpoint,
            members.by_noise_key(&status.public_key).map(|x| &x.cert),
        ) else {
            continue;
        };
        let previous = m.store.paths().get(&me.0, &cert.identity.0).ok().flatten();
        let record = match device.path_mtu(peer) {
            Some((pmtu, true)) => PathRecord {
                endpoint,
                pmtu,
                rtt_us: rtt_us(device, peer),
                nat: previous.and_then(|p| p.nat),
                measured_unix: now_unix(),
                own: true,
            },
            // An earlier record of this endpoint says as much or more.
            _ if previous
                .as_ref()
                .is_some_and(|p| p.endpoint == endpoint && (p.own || !status.has_session)) =>
            {
                continue
            }
            // No size confirmed yet (a stop right after the handshake), but
            // a session over the endpoint: the next run contacts the peer at
            // once all the same.
            _ => PathRecord {
                own: status.has_session,
                ..PathRecord::unmeasured(endpoint, now_unix())
            },
        };
        let put = m.store.paths().put(&me.0, &cert.identity.0, &record);
        if m.counters.store("paths", put).is_some() {
            saved += 1;
        }
    }
    if m.counters.store("flush", m.store.flush()).is_some() {
        info!(paths = saved, "store flushed");
    }
}

/// The RTT discovery measured toward `peer`, in microseconds (0: none).
pub fn rtt_us(device: &Device, peer: PeerId) -> u32 {
    device
        .path_rtt(peer)
        .map(|r| u32::try_from(r.as_micros()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh store in a directory of its own, removed when dropped.
    struct TempStore {
        store: Option<Store>,
        dir: std::path::PathBuf,
    }

    impl TempStore {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("weft-warm-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = Store::open(&dir).expect("open a new store");
            TempStore {
                store: Some(store),
                dir,
            }
        }

        fn store(&self) -> &Store {
            self.store.as_ref().expect("open until dropped")
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            drop(self.store.take());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const NOW: u64 = 1_800_000_000;

    /// A mesh member's device (no handshakes at start) with one peer at
    /// the endpoint of [`path`]; how many datagrams it sends to it at once
    /// after [`hint`] with `stored`.
    fn sent_after_hint(stored: &PathRecord) -> usize {
        let now = Instant::now();
        let mut config =
            weft_protocol::DeviceConfig::new(weft_protocol::StaticSecret::from_bytes([1; 32]));
        config.auto_handshake_at_start = false;
        let mut device = Device::new(config, now, Duration::from_secs(NOW), [7; 32]);
        let peer = device
            .add_peer(
                weft_protocol::PeerConfig {
                    name: "m1".into(),
                    public_key: weft_protocol::StaticSecret::from_bytes([2; 32]).public_key(),
                    preshared_key: None,
                    endpoint: Some(stored.endpoint),
                    allowed_ips: Vec::new(),
                    keepalive: weft_protocol::Keepalive::Off,
                },
                now,
            )
            .unwrap();
        hint(&mut device, peer, "m1", Some(stored));
        let mut buf = vec![0; 2048];
        std::iter::from_fn(|| device.poll_transmit(now, &mut buf))
            .filter(|t| t.destination == stored.endpoint)
            .count()
    }

    #[test]
    fn a_restart_contacts_at_once_a_peer_it_held_a_session_with_even_before_a_size_was_confirmed() {
        assert!(sent_after_hint(&path(1400, NOW)) > 0, "a measured path");
        let session_only = PathRecord {
            rtt_us: 0,
            ..path(0, NOW)
        };
        assert!(
            sent_after_hint(&session_only) > 0,
            "stopped right after the handshake, before the size was confirmed"
        );
        let heard_of = PathRecord::unmeasured(session_only.endpoint, NOW);
        assert_eq!(sent_after_hint(&heard_of), 0, "an endpoint only heard of");
    }

    fn path(pmtu: u16, measured_unix: u64) -> PathRecord {
        PathRecord {
            endpoint: "192.0.2.7:51820".parse().unwrap(),
            pmtu,
            rtt_us: 800,
            nat: None,
            measured_unix,
            own: true,
        }
    }

    #[test]
    fn paths_older_than_the_maximum_age_are_deleted_and_not_loaded() {
        let t = TempStore::new("expiry");
        let paths = t.store().paths();
        let week = MAX_PATH_AGE.as_secs();
        paths
            .put(&[1; 32], &[2; 32], &path(1400, NOW - week - 1))
            .unwrap();
        paths
            .put(&[1; 32], &[3; 32], &path(1420, NOW - week + 60))
            .unwrap();
        let loaded = load_from(t.store(), &[1; 32], NOW);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[&[3; 32]].pmtu, 1420);
        assert_eq!(paths.get(&[1; 32], &[2; 32]).unwrap(), None, "not deleted");
    }

    #[test]
    fn only_this_nodes_own_paths_are_loaded() {
        let t = TempStore::new("own");
        let paths = t.store().paths();
        paths.put(&[1; 32], &[2; 32], &path(1400, NOW)).unwrap();
        paths.put(&[2; 32], &[1; 32], &path(1300, NOW)).unwrap();
        let loaded = load_from(t.store(), &[1; 32], NOW);
        assert_eq!(loaded.keys().collect::<Vec<_>>(), [&[2; 32]]);
        // Another node's path is kept for the gossip that reported it.
        assert!(paths.get(&[2; 32], &[1; 32]).unwrap().is_some());
    }
}
