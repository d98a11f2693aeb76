//! The toolkit the scenarios are written with: a per-test [`Lab`] (root check, unique names, a
//! temp dir for keys, configs and logs), namespace guards and topologies, node processes and
//! what they log, ping, and TCP transfers through the tunnel. Everything it creates is owned by
//! a guard whose `Drop` removes it, also while a failed assertion unwinds. It never touches an
//! interface, address or route outside the namespaces a test made, and never sends to an
//! address outside them.

mod bridge;
mod cmd;
mod intruder;
mod log;
mod metrics;
mod netns;
mod node;
mod ping;
mod poll;
mod rng;
mod topology;
mod transfer;
mod twonat;

pub use bridge::{cpu_ticks, Bridge, Check, Fleet, Usage, MAX_MEMBERS};
pub use intruder::{Intrusion, IntrusionReport, MemberFlood, Redial};
pub use log::{elapsed_between, NodeLog};
pub use metrics::Metrics;
pub use netns::Netns;
pub use node::{weft_bin, Keypair, Node, NodeConfig, PeerConfig, DEFAULT_PORT};
pub use ping::{ping, ping_in_background, ping_sized, wait_reachable};
pub use poll::poll;
pub use rng::XorShift64;
pub use topology::{overlay, DfPing, NatSetup, OneLink, RoutedHosts, RouterPath};
pub use transfer::{tcp_transfer, tcp_transfer_while, try_tcp_transfer, Limits, Progress, MIB};
pub use twonat::{Mapping, TwoNat};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Numbers every [`Lab`] (and so every namespace name) in this process uniquely.
static LABS: AtomicU32 = AtomicU32::new(0);

/// One test's workspace: its unique name prefix and its temp dir.
///
/// Declare it first in a test so it is dropped last: nodes print their logs from it when the
/// test fails, and the dir is kept (and its path printed) in that case, or when the
/// environment has `WEFT_E2E_KEEP` set.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
}

impl Lab {
    /// Starts a test's workspace; panics with instructions when not running as root.
    pub fn new(test: &str) -> Lab {
        require_root();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("weft-e2e-{pid}-{n}"));
        // A crashed run whose pid was reused may have left the same dir behind.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        eprintln!("[{test}] workspace {}", dir.display());
        Lab {
            prefix: format!("wft{pid}x{n}"),
            dir,
        }
    }

    /// A fresh namespace named `wft{pid}x{lab}{role}`, deleted again when the guard drops.
    pub fn netns(&self, role: &str) -> Netns {
        Netns::create(format!("{}{role}", self.prefix))
    }

    /// The temp dir holding this test's keys, configs and node logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: keys, configs and logs kept in {}",
                self.dir.display()
            );
        } else if std::env::var_os("WEFT_E2E_KEEP").is_some() {
            eprintln!("keys, configs and logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Namespaces, veths, TUN devices and iptables all need root: say so instead of skipping.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the e2e tests need root (network namespaces, TUN devices, iptables); \
         run them as root, e.g. `sudo tests/run.sh`"
    );
}
