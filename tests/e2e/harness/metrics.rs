//! One node's Prometheus metrics, read over HTTP from inside its namespace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::Netns;

/// weft's counters and gauges of the node in a namespace: `name{label="value"}` → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics(pub BTreeMap<String, u64>);

impl Metrics {
    /// A GET of /metrics on 127.0.0.1:9820 (the default listener) in `ns`; panics if the
    /// node does not answer within 2 s to connect and 5 s to read.
    pub fn scrape(ns: &Netns) -> Metrics {
        let body = ns.run(|| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9820));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("connect to /metrics");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("a read timeout");
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .expect("send the /metrics request");
            let mut body = String::new();
            s.read_to_string(&mut body).expect("read /metrics");
            body
        });
        Metrics(
            body.lines()
                .filter(|l| l.starts_with("weft_"))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse::<f64>().ok()? as u64))
                })
                .collect(),
        )
    }

    /// The series `name` (with its labels, as exposed), 0 if absent.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}
