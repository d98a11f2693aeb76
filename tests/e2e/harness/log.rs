//! Reading what a node reported in its log while it runs: the `path MTU changed` lines
//! path-MTU discovery writes at INFO, and when a handshake completed. The log is the node's
//! stderr without colour codes, one event per line, each starting with an RFC 3339 UTC
//! timestamp. Lines are parsed by their `key=value` fields, not by position, so a field added
//! or moved does not break a scenario. Nothing here writes to the log or talks to the node.

use super::poll;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The message of the line discovery logs when an edge's size in use changes.
const PMTU_CHANGED: &str = "path MTU changed";
/// The message (up to the role in parentheses) of a completed handshake.
const HANDSHAKE_COMPLETED: &str = "handshake completed";

/// One `path MTU changed` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtuChange {
    /// UTC time of day of the line.
    pub at: Option<Duration>,
    pub peer: String,
    pub endpoint: String,
    /// Outer IP packet size now in use on the edge.
    pub pmtu: u16,
    pub inner_mtu: Option<u16>,
    /// Whether `pmtu` was confirmed by an acknowledged probe (not the size used meanwhile).
    pub confirmed: bool,
    /// Probes sent on the edge so far.
    pub probes: Option<u64>,
    /// Bytes of probes sent so far (outer IP sizes).
    pub probe_bytes: Option<u64>,
}

impl PmtuChange {
    /// Parses a `path MTU changed` line; `None` for any other line.
    fn parse(line: &str) -> Option<PmtuChange> {
        if !line.contains(PMTU_CHANGED) {
            return None;
        }
        Some(PmtuChange {
            at: time_of_day(line),
            peer: field(line, "peer")?.to_owned(),
            endpoint: field(line, "endpoint").unwrap_or_default().to_owned(),
            pmtu: number(line, "pmtu")?,
            inner_mtu: number(line, "inner_mtu"),
            confirmed: field(line, "confirmed")? == "true",
            probes: number(line, "probes"),
            probe_bytes: number(line, "probe_bytes"),
        })
    }
}

/// The value of `key=value` in `line` (quotes around it removed), also inside a span's
/// `name{key=value}` prefix.
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split(|c: char| c.is_whitespace() || c == '{' || c == '}')
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim_matches('"'))
}

/// The value of `key=value` in `line` as a number.
fn number<T: FromStr>(line: &str, key: &str) -> Option<T> {
    field(line, key)?.parse().ok()
}

/// The value of `key` on every line of `text` that carries `message`.
fn field_values(text: &str, message: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.contains(message))
        .filter_map(|line| field(line, key))
        .map(str::to_owned)
        .collect()
}

/// The UTC time of day of a line starting `2025-01-01T12:34:56.789012Z`.
fn time_of_day(line: &str) -> Option<Duration> {
    let stamp = line.split_whitespace().next()?;
    let clock = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = clock.splitn(3, ':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(Duration::from_secs(hours * 3600 + minutes * 60) + Duration::from_secs_f64(seconds))
}

/// `later - earlier` for two times of day, across midnight if need be.
pub fn elapsed_between(earlier: Duration, later: Duration) -> Duration {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    if later >= earlier {
        later - earlier
    } else {
        later + DAY - earlier
    }
}

/// A running node's log file.
#[derive(Debug, Clone)]
pub struct NodeLog {
    path: PathBuf,
}

impl NodeLog {
    pub(super) fn new(path: PathBuf) -> NodeLog {
        NodeLog { path }
    }

    /// The whole log so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// The value of `key` on every line so far that carries `message`, oldest first (lines
    /// without the field are skipped).
    pub fn field_values(&self, message: &str, key: &str) -> Vec<String> {
        field_values(&self.text(), message, key)
    }

    /// Every `path MTU changed` line about peer `peer` so far, oldest first.
    pub fn pmtu_changes(&self, peer: &str) -> Vec<PmtuChange> {
        self.text()
            .lines()
            .filter_map(PmtuChange::parse)
            .filter(|change| change.peer == peer)
            .collect()
    }

    /// The PMTU the node reports toward `peer`: its last confirmed size, if any.
    pub fn reported_pmtu(&self, peer: &str) -> Option<u16> {
        self.pmtu_changes(peer)
            .into_iter()
            .rev()
            .find(|change| change.confirmed)
            .map(|change| change.pmtu)
    }

    /// When the first handshake with `peer` completed (UTC time of day), if one has.
    pub fn first_handshake(&self, peer: &str) -> Option<Duration> {
        self.text()
            .lines()
            .filter(|line| line.contains(HANDSHAKE_COMPLETED) && field(line, "peer") == Some(peer))
            .find_map(time_of_day)
    }

    /// Waits until the PMTU reported toward `peer` is exactly `pmtu` and returns that line;
    /// panics after `timeout`, quoting every change the node reported.
    pub fn wait_pmtu(&self, peer: &str, pmtu: u16, timeout: Duration) -> PmtuChange {
        let start = Instant::now();
        let found = poll(timeout, Duration::from_millis(50), || {
            self.pmtu_changes(peer)
                .into_iter()
                .rev()
                .find(|change| change.confirmed)
                .filter(|change| change.pmtu == pmtu)
        });
        let Some(change) = found else {
            panic!(
                "the PMTU toward {peer} did not become exactly {pmtu} within {timeout:?} \
                 (reported: {:?}); every change so far:\n{}",
                self.reported_pmtu(peer),
                self.describe_changes(peer)
            )
        };
        println!(
            "pmtu: toward {peer} {pmtu} confirmed after {:.1} s of waiting",
            start.elapsed().as_secs_f64()
        );
        change
    }

    /// The `path MTU changed` lines about `peer`, one per line, for failure messages.
    pub fn describe_changes(&self, peer: &str) -> String {
        let text = self.text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| PmtuChange::parse(line).is_some_and(|change| change.peer == peer))
            .collect();
        if lines.is_empty() {
            "(none)".to_owned()
        } else {
            lines.join("\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_the_fields_of_a_pmtu_line_wherever_they_are() {
        let line = "2025-11-25T10:00:01.500000Z  INFO weft_protocol::device::path: path MTU \
                    changed peer=b endpoint=203.0.113.2:51820 pmtu=1400 inner_mtu=1340 \
                    confirmed=true probes=48 probe_bytes=65721";
        let change = PmtuChange::parse(line).expect("parses");
        assert_eq!(
            change,
            PmtuChange {
                at: Some(Duration::from_secs(36001) + Duration::from_millis(500)),
                peer: "b".to_owned(),
                endpoint: "203.0.113.2:51820".to_owned(),
                pmtu: 1400,
                inner_mtu: Some(1340),
                confirmed: true,
                probes: Some(48),
                probe_bytes: Some(65721),
            }
        );
        let in_span = "2025-11-25T10:00:01.5Z INFO edge{peer=\"b\"}: path MTU changed pmtu=1340 \
                       confirmed=false";
        let change = PmtuChange::parse(in_span).expect("parses");
        assert_eq!(
            (change.peer.as_str(), change.pmtu, change.confirmed),
            ("b", 1340, false)
        );
        assert_eq!(
            PmtuChange::parse("2025-11-25T10:00:01Z INFO handshake completed"),
            None
        );
    }

    #[test]
    fn field_values_reads_one_field_of_the_lines_with_a_message() {
        let text = "2025-11-25T10:00:01Z  INFO weft_node::mesh::gossip: member learned from \
                    gossip name=m1 endpoint=Some(192.0.2.34:51820)\n\
                    2025-11-25T10:00:02Z  WARN weft_node::mesh::gossip: control-plane peer \
                    rejected peer=12D3KooWabc reason=no credential presented in time\n\
                    2025-11-25T10:00:03Z  INFO weft_node::mesh::gossip: member learned from \
                    gossip endpoint=None\n";
        assert_eq!(
            field_values(text, "member learned from gossip", "name"),
            ["m1"]
        );
        assert_eq!(
            field_values(text, "control-plane peer rejected", "peer"),
            ["12D3KooWabc"]
        );
    }

    #[test]
    fn elapsed_between_crosses_midnight() {
        let before = Duration::from_secs(24 * 3600 - 1);
        assert_eq!(
            elapsed_between(before, Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
