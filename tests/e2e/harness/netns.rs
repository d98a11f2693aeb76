//! [`Netns`]: a named network namespace owned by one test. Its `Drop` kills every process still
//! inside it and deletes it, also during a panic, so nothing a test started outlives it. It runs
//! commands there (`ip -n`, `ip netns exec`) and Rust closures too, on a dedicated thread that
//! joined the namespace: that is how tests make sockets inside it, since a socket stays in the
//! namespace it was created in. [`veth`] links two namespaces; the pair is created directly
//! inside them, so it never exists in the root namespace.

use super::cmd;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

/// A network namespace that exists for as long as this guard does.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with loopback up and IPv6 enabled.
    pub(super) fn create(name: String) -> Netns {
        // Only a crashed run of this harness whose pid has been reused can own this name.
        if Self::path_of(&name).exists() {
            let _ = cmd::try_run(&["ip", "netns", "del", &name]);
        }
        cmd::run(&["ip", "netns", "add", &name]);
        // From here on the guard exists, so a failure below still deletes the namespace.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl(&[
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
        ]);
        ns
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS…`; panics if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip -n NS ARGS…`, failure as `Err`.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        cmd::try_run(&argv)
    }

    /// `ip netns exec NS ARGV…`; panics if it fails.
    pub fn exec(&self, argv: &[&str]) -> String {
        cmd::run(&self.exec_argv(argv))
    }

    /// `ip netns exec NS ARGV…` run to completion whatever its exit status.
    pub fn exec_output(&self, argv: &[&str]) -> std::process::Output {
        cmd::output(&self.exec_argv(argv))
    }

    fn exec_argv<'a>(&'a self, argv: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        full
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it, so the
    /// child's pid is the program's own and signals reach it directly).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `sysctl -w` for each `key=value` inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) {
        let mut argv = vec!["sysctl", "-q", "-w"];
        argv.extend_from_slice(settings);
        self.exec(&argv);
    }

    /// Runs `f` on a thread that has joined this namespace and returns its result (a panic in
    /// `f` is re-raised here). Sockets `f` creates live in this namespace and may be used from
    /// any thread afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Self::path_of(&self.name);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let file = File::open(&path)
                    .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever still runs in here was started by this test (a node, a ping): end it.
        if let Ok(pids) = cmd::try_run(&["ip", "netns", "pids", &self.name]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Err(e) = cmd::try_run(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace: {e}");
        }
    }
}

/// Links `a` and `b` with a veth pair named `a_if` in `a` and `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    cmd::run(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}
