//! Node processes under test: key pairs made by the binary itself (`weft genkey`, `weft
//! pubkey`), config files written from [`NodeConfig`], and the [`Node`] guard that runs `weft
//! up` inside a namespace, waits until its overlay address is up, and on drop stops it (SIGTERM,
//! then SIGKILL after 3 s). When the test is failing, every node prints the tail of its log.

use super::{cmd, overlay, poll, Lab, Netns, NodeLog};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

/// The binary under test: the `weft` cargo built for this test run, unless `WEFT_E2E_BIN`
/// names another (e.g. a release build: `WEFT_E2E_BIN=target/release/weft`).
pub fn weft_bin() -> String {
    std::env::var("WEFT_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft").to_owned())
}

/// The UDP port every test node listens on (each is alone in its namespace).
pub const DEFAULT_PORT: u16 = 51820;

/// How many log lines a node prints when the test fails.
const LOG_TAIL_LINES: usize = 80;

/// A private key file written by `weft genkey` and its public key from `weft pubkey`.
#[derive(Debug, Clone)]
pub struct Keypair {
    pub private_key_file: PathBuf,
    pub public_key: String,
}

impl Keypair {
    /// Generates `NAME.key` in the lab's dir with the binary under test.
    pub fn generate(lab: &Lab, name: &str) -> Keypair {
        let private_key_file = lab.dir().join(format!("{name}.key"));
        let path = private_key_file.to_str().expect("temp dir path is UTF-8");
        let weft = weft_bin();
        cmd::run(&[&weft, "genkey", "--out", path]);
        let out = std::process::Command::new(&weft)
            .arg("pubkey")
            .stdin(File::open(&private_key_file).expect("genkey wrote the key file"))
            .output()
            .expect("run weft pubkey");
        assert!(
            out.status.success(),
            "weft pubkey failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let public_key = String::from_utf8(out.stdout)
            .expect("public key is UTF-8")
            .trim()
            .to_owned();
        assert!(!public_key.is_empty(), "weft pubkey printed nothing");
        Keypair {
            private_key_file,
            public_key,
        }
    }
}

/// One `[[peer]]` section.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// Peer `name` owning the overlay addresses of host number `host` (see [`overlay`]), with
    /// no endpoint and no keepalive.
    pub fn new(name: &str, key: &Keypair, host: u8) -> PeerConfig {
        let (v4, v6) = overlay(host);
        PeerConfig {
            name: name.to_owned(),
            public_key: key.public_key.clone(),
            endpoint: None,
            allowed_ips: vec![format!("{v4}/32"), format!("{v6}/128")],
            persistent_keepalive: None,
        }
    }

    /// Sets the peer's underlay endpoint, e.g. `"192.0.2.2:51820"`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> PeerConfig {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets `persistent_keepalive` in seconds.
    pub fn keepalive(mut self, seconds: u16) -> PeerConfig {
        self.persistent_keepalive = Some(seconds);
        self
    }
}

/// A node's whole config file.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Names the config and log files; not part of the file itself.
    pub name: String,
    pub private_key_file: PathBuf,
    pub listen_port: u16,
    pub address: Vec<String>,
    /// `pmtu_discovery`; `None` leaves weft's default (on).
    pub pmtu_discovery: Option<bool>,
    pub peers: Vec<PeerConfig>,
}

impl NodeConfig {
    /// Node `name` with the overlay addresses of host number `host` on [`DEFAULT_PORT`].
    pub fn new(name: &str, key: &Keypair, host: u8) -> NodeConfig {
        let (v4, v6) = overlay(host);
        NodeConfig {
            name: name.to_owned(),
            private_key_file: key.private_key_file.clone(),
            listen_port: DEFAULT_PORT,
            address: vec![format!("{v4}/24"), format!("{v6}/64")],
            pmtu_discovery: None,
            peers: Vec::new(),
        }
    }

    /// Sets `pmtu_discovery` (path-MTU discovery per edge).
    pub fn pmtu_discovery(mut self, on: bool) -> NodeConfig {
        self.pmtu_discovery = Some(on);
        self
    }

    /// Adds a `[[peer]]`.
    pub fn peer(mut self, peer: PeerConfig) -> NodeConfig {
        self.peers.push(peer);
        self
    }

    /// The overlay IPv4 address the node's readiness is judged by.
    pub fn overlay_v4(&self) -> Ipv4Addr {
        self.address
            .iter()
            .find_map(|a| a.split('/').next()?.parse().ok())
            .expect("a node config has an IPv4 overlay address")
    }

    /// The config as TOML. Key files are named relative to the config's dir, which is where
    /// they are, so the relative-path rule gets exercised too.
    pub fn to_toml(&self) -> String {
        let key = self
            .private_key_file
            .file_name()
            .expect("key file has a name")
            .to_string_lossy();
        let mut s = String::new();
        let _ = writeln!(s, "[interface]\nname = \"weft0\"");
        let _ = writeln!(s, "private_key_file = {key:?}");
        let _ = writeln!(s, "listen_port = {}", self.listen_port);
        let _ = writeln!(s, "address = {:?}", self.address);
        if let Some(on) = self.pmtu_discovery {
            let _ = writeln!(s, "pmtu_discovery = {on}");
        }
        for p in &self.peers {
            let _ = writeln!(s, "\n[[peer]]\nname = {:?}", p.name);
            let _ = writeln!(s, "public_key = {:?}", p.public_key);
            if let Some(endpoint) = &p.endpoint {
                let _ = writeln!(s, "endpoint = {endpoint:?}");
            }
            let _ = writeln!(s, "allowed_ips = {:?}", p.allowed_ips);
            if let Some(seconds) = p.persistent_keepalive {
                let _ = writeln!(s, "persistent_keepalive = {seconds}");
            }
        }
        s
    }
}

/// A running `weft up`, stopped when dropped. Borrows its namespace so it cannot outlive it.
#[derive(Debug)]
pub struct Node<'a> {
    name: String,
    ns: &'a Netns,
    child: Child,
    /// Set once the process has been seen to exit.
    status: Option<ExitStatus>,
    log: PathBuf,
}

impl<'a> Node<'a> {
    /// Writes the config, starts `weft up` in `ns` with `WEFT_LOG=debug` and stderr to
    /// `NAME.log`, and waits (up to 10 s) until weft0 carries the overlay IPv4 address.
    pub fn start(lab: &Lab, ns: &'a Netns, config: &NodeConfig) -> Node<'a> {
        let config_file = lab.dir().join(format!("{}.toml", config.name));
        std::fs::write(&config_file, config.to_toml()).expect("write node config");
        assert_eq!(
            config.private_key_file.parent(),
            Some(lab.dir()),
            "key files live beside the configs"
        );
        Self::start_file(lab, ns, &config.name, &config_file, config.overlay_v4())
    }

    /// Starts `weft up --config CONFIG_FILE` (a config weft wrote itself, e.g. by `weft init`
    /// or `weft join`) as node `name`, and waits until weft0 carries `overlay_v4`.
    pub fn start_file(
        lab: &Lab,
        ns: &'a Netns,
        name: &str,
        config_file: &std::path::Path,
        overlay_v4: Ipv4Addr,
    ) -> Node<'a> {
        let log = lab.dir().join(format!("{name}.log"));
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create node log");
        let child = ns
            .command(&weft_bin())
            .args(["up", "--config"])
            .arg(config_file)
            .env("WEFT_LOG", log_level())
            // The log is a file that CI output quotes: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup node log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn ip netns exec weft up");
        let mut node = Node {
            name: name.to_owned(),
            ns,
            child,
            status: None,
            log,
        };
        node.wait_ready(overlay_v4);
        node
    }

    fn wait_ready(&mut self, v4: Ipv4Addr) {
        let needle = format!("inet {v4}/");
        let ready = poll(Duration::from_secs(10), Duration::from_millis(50), || {
            if let Some(status) = self.exited() {
                // Dropping the guard while unwinding prints the log.
                panic!("node {} exited during startup ({status})", self.name);
            }
            let addrs = self
                .ns
                .try_ip(&["-o", "addr", "show", "dev", "weft0"])
                .ok()?;
            addrs.contains(&needle).then_some(())
        });
        if ready.is_none() {
            panic!(
                "node {} did not bring weft0 up with {v4} within 10 s",
                self.name
            );
        }
    }

    /// The exit status if the process has ended (never panics: also used from `Drop`).
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether the process is still running.
    /// The daemon's process id (`ip netns exec` replaces itself with weft).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// The node's name from its config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the node as an operator would (SIGTERM; SIGKILL after 3 s) and returns how it
    /// exited; a status from SIGKILL means it ignored SIGTERM. The guard stays, so its log is
    /// still printed if an assertion about the exit fails.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate()
            .unwrap_or_else(|| panic!("cannot tell how node {} exited", self.name))
    }

    /// Kills the node with SIGKILL, as a crash would: no shutdown code runs. Returns how it
    /// exited.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for a killed node");
        self.status = Some(status);
        status
    }

    /// Runs from `Drop`, maybe while unwinding: no panics in here.
    fn terminate(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        // The pid is weft's own: `ip netns exec` execs the program rather than forking.
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        if let Some(status) = poll(Duration::from_secs(3), Duration::from_millis(20), || {
            self.exited()
        }) {
            return Some(status);
        }
        eprintln!("node {} ignored SIGTERM for 3 s: killing it", self.name);
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }

    /// The node's log, to read what it reported while it runs.
    pub fn log(&self) -> NodeLog {
        NodeLog::new(self.log.clone())
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        let status = self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "----- node {} ({}; {}), last {LOG_TAIL_LINES} log lines -----\n{}\n----- end of node {} log -----",
                self.name,
                status.map_or("exit status unknown".to_owned(), |s| s.to_string()),
                self.log.display(),
                self.log_tail(),
                self.name,
            );
        }
    }
}

/// The daemons' log filter: `$WEFT_E2E_LOG` (e.g. `info` for a benchmark, where debug logging
/// of many daemons would cost more CPU than weft itself), else `debug`.
pub fn log_level() -> String {
    std::env::var("WEFT_E2E_LOG").unwrap_or_else(|_| "debug".to_owned())
}
