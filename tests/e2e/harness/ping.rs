//! Reachability checks with iputils `ping` run inside a namespace: a counted ping with parsed
//! results, a poll-until-reachable for right after startup, and a background ping whose replies
//! are watched as they arrive (roaming). Pings go only to overlay or underlay addresses of the
//! test's own namespaces.

use super::{poll, Netns};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one `ping` run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Sequence numbers (1-based) that got a reply.
    pub replied: BTreeSet<u32>,
}

impl PingStats {
    /// Requests that got no reply.
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }

    /// Parses iputils ping output; `None` if it has no statistics line.
    fn parse(output: &str) -> Option<PingStats> {
        let replied = output.lines().filter_map(reply_seq).collect();
        // "5 packets transmitted, 4 received, +1 errors, 20% packet loss, time 404ms"
        let summary = output.lines().find(|l| l.contains("packets transmitted"))?;
        let mut fields = summary.split(", ");
        let transmitted = fields.next()?.split(' ').next()?.parse().ok()?;
        let received = fields.next()?.split(' ').next()?.parse().ok()?;
        Some(PingStats {
            transmitted,
            received,
            replied,
        })
    }
}

/// The sequence number of a reply line ("64 bytes from …: icmp_seq=3 ttl=64 time=0.1 ms").
fn reply_seq(line: &str) -> Option<u32> {
    if !line.contains(" bytes from ") {
        return None;
    }
    let rest = line.split("icmp_seq=").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

fn ping_argv(addr: IpAddr, count: u32) -> Vec<String> {
    [
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.1",
        "-W",
        "1",
        &addr.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Pings `addr` from `ns` `count` times, 100 ms apart, waiting up to 1 s for each reply.
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> PingStats {
    try_ping(ns, addr, count).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`ping`], but a run without statistics (e.g. "Network is unreachable") is an `Err`.
fn try_ping(ns: &Netns, addr: IpAddr, count: u32) -> Result<PingStats, String> {
    let argv = ping_argv(addr, count);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = ns.exec_output(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    PingStats::parse(&stdout).ok_or_else(|| {
        format!(
            "`{}` in {} gave no statistics ({}):\n{stdout}{}",
            argv.join(" "),
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Pings `addr` from `ns` `count` times with `payload` bytes of ICMP data (so IPv6 packets of
/// `payload + 48` bytes), 100 ms apart.
pub fn ping_sized(ns: &Netns, addr: IpAddr, count: u32, payload: u16) -> PingStats {
    let mut argv = ping_argv(addr, count);
    argv.splice(1..1, ["-s".to_owned(), payload.to_string()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = ns.exec_output(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    PingStats::parse(&stdout).unwrap_or_else(|| {
        panic!(
            "`{}` in {} gave no statistics:\n{stdout}{}",
            argv.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Pings `addr` from `ns` once at a time until a reply comes; panics after `timeout`. Used once
/// nodes are up, since a handshake or IPv6 address setup may still be under way.
pub fn wait_reachable(ns: &Netns, addr: IpAddr, timeout: Duration) {
    let mut last = String::from("no ping ran");
    let reached = poll(timeout, Duration::from_millis(50), || {
        match try_ping(ns, addr, 1) {
            Ok(stats) if stats.received > 0 => Some(()),
            Ok(stats) => {
                last = format!("last try: {stats:?}");
                None
            }
            Err(e) => {
                last = e;
                None
            }
        }
    });
    assert!(
        reached.is_some(),
        "{addr} not reachable from {} within {timeout:?} ({last})",
        ns.name()
    );
}

/// A `ping` running in the background; its reply lines are collected as they arrive.
#[derive(Debug)]
pub struct BackgroundPing {
    child: Child,
    output: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

/// Starts pinging `addr` from `ns` `count` times, 100 ms apart.
pub fn ping_in_background(ns: &Netns, addr: IpAddr, count: u32) -> BackgroundPing {
    let argv = ping_argv(addr, count);
    let mut child = ns
        .command(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn background ping");
    let stdout = child.stdout.take().expect("stdout is piped");
    let output = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&output);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut all = sink.lock().expect("ping output lock");
            all.push_str(&line);
            all.push('\n');
        }
    });
    BackgroundPing {
        child,
        output,
        reader: Some(reader),
    }
}

impl BackgroundPing {
    /// How many replies have arrived so far.
    pub fn replies(&self) -> usize {
        let all = self.output.lock().expect("ping output lock");
        all.lines().filter_map(reply_seq).count()
    }

    /// The highest sequence number answered so far.
    pub fn last_replied(&self) -> Option<u32> {
        let all = self.output.lock().expect("ping output lock");
        all.lines().filter_map(reply_seq).max()
    }

    /// Waits for ping to finish (up to `timeout`) and returns what it saw.
    pub fn finish(mut self, timeout: Duration) -> PingStats {
        let exited = poll(timeout, Duration::from_millis(50), || {
            self.child.try_wait().expect("wait on ping")
        });
        assert!(
            exited.is_some(),
            "background ping still running after {timeout:?}"
        );
        if let Some(reader) = self.reader.take() {
            reader.join().expect("ping reader thread");
        }
        let all = self.output.lock().expect("ping output lock");
        PingStats::parse(&all).unwrap_or_else(|| panic!("ping gave no statistics:\n{all}"))
    }
}

impl Drop for BackgroundPing {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_counts_and_replied_sequence_numbers() {
        let out = "PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.\n\
                   64 bytes from 100.64.0.2: icmp_seq=1 ttl=64 time=0.5 ms\n\
                   From 100.64.0.1 icmp_seq=2 Destination Host Unreachable\n\
                   64 bytes from 100.64.0.2: icmp_seq=3 ttl=64 time=0.4 ms\n\n\
                   --- 100.64.0.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, +1 errors, 33.3333% packet loss, time 204ms\n";
        let stats = PingStats::parse(out).expect("parses");
        assert_eq!((stats.transmitted, stats.received, stats.lost()), (3, 2, 1));
        assert_eq!(stats.replied, BTreeSet::from([1, 3]));
    }
}
