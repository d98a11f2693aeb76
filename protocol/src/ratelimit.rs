//! When the device is under load, and how many handshakes one source may
//! then have processed: the checks between mac1 and Diffie-Hellman.
//!
//! [`LoadMeter`] counts the handshake messages whose mac1 is valid (junk,
//! which fails mac1, is never counted) per one-second window. More than
//! the device's threshold in a window puts it under load, and it stays so
//! for [`LOAD_HOLD`] after the last message over the threshold: with a
//! bare window, the first `threshold` messages of every new second would
//! reach Diffie-Hellman without a cookie, all through a sustained flood.
//!
//! Under load a handshake message must already carry a valid mac2, which
//! proves its sender receives at its source address; [`HandshakeLimiter`]
//! then limits how many such messages one source may have processed: a
//! burst of [`HANDSHAKE_BURST`], then [`HANDSHAKES_PER_SECOND`]. A source
//! is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64,
//! so counting by full IPv6 address would multiply its budget), never a
//! port. The table holds at most [`MAX_SOURCES`] sources; a source idle
//! for [`SOURCE_IDLE`] has a full bucket again and is forgotten at the
//! next sweep (at most one a second). When the table is full, a new source
//! is refused until a sweep makes room: the sources in the table proved
//! their addresses with cookies, so filling it takes that many real
//! addresses.
//!
//! The numbers are those of the Linux WireGuard implementation's
//! ratelimiter and its one second of load after the queue drains. This
//! module decides nothing else: it never reads the clock (every call takes
//! `now`), counts no drops and sends nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshakes per second one source may have processed under load, once
/// its burst is spent.
pub const HANDSHAKES_PER_SECOND: u32 = 20;
/// Handshakes one source may have processed at once under load.
pub const HANDSHAKE_BURST: u32 = 5;
/// Sources the table tracks at most.
pub const MAX_SOURCES: usize = 4096;
/// A source unseen this long is forgotten (its bucket has long been full).
pub const SOURCE_IDLE: Duration = Duration::from_secs(1);

/// How long a device stays under load after the last handshake message
/// that found more than its threshold in the current window.
pub const LOAD_HOLD: Duration = Duration::from_secs(1);
/// The window handshake messages are counted in.
const LOAD_WINDOW: Duration = Duration::from_secs(1);

/// The time one handshake costs, in nanoseconds of refill.
const COST_NANOS: u64 = 1_000_000_000 / HANDSHAKES_PER_SECOND as u64;
/// A full bucket, in nanoseconds of refill.
const CAPACITY_NANOS: u64 = COST_NANOS * HANDSHAKE_BURST as u64;

/// What a source is counted as: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source::V6(prefix)
            }
        }
    }
}

/// Whether the device is under load. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct LoadMeter {
    /// The current window's start and the messages counted in it.
    window: Option<(Instant, u32)>,
    /// Until when the device stays under load.
    hold_until: Option<Instant>,
}

impl LoadMeter {
    /// Counts one handshake message whose mac1 is valid, arriving at
    /// `now`, and says whether the device is under load: more than
    /// `threshold` such messages in the current window, or that was so
    /// less than [`LOAD_HOLD`] ago.
    pub fn count(&mut self, now: Instant, threshold: u32) -> bool {
        let (start, n) = match self.window {
            Some((start, n)) if now.saturating_duration_since(start) < LOAD_WINDOW => {
                (start, n.saturating_add(1))
            }
            _ => (now, 1),
        };
        self.window = Some((start, n));
        if n > threshold {
            self.hold_until = Some(now + LOAD_HOLD);
            return true;
        }
        self.hold_until.is_some_and(|until| now < until)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Refill held, in nanoseconds: one handshake costs [`COST_NANOS`].
    tokens: u64,
    last: Instant,
}

/// The table of buckets. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct HandshakeLimiter {
    sources: HashMap<Source, Bucket>,
    last_sweep: Option<Instant>,
}

impl HandshakeLimiter {
    /// Whether a handshake from `ip` may be processed at `now`; takes one
    /// handshake from its bucket if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.sweep(now);
        let source = Source::of(ip);
        if let Some(bucket) = self.sources.get_mut(&source) {
            let refill = now.saturating_duration_since(bucket.last).as_nanos();
            let refill = u64::try_from(refill).unwrap_or(u64::MAX);
            bucket.tokens = bucket.tokens.saturating_add(refill).min(CAPACITY_NANOS);
            bucket.last = now;
            if bucket.tokens < COST_NANOS {
                return false;
            }
            bucket.tokens -= COST_NANOS;
            return true;
        }
        if self.sources.len() >= MAX_SOURCES {
            return false;
        }
        self.sources.insert(
            source,
            Bucket {
                tokens: CAPACITY_NANOS - COST_NANOS,
                last: now,
            },
        );
        true
    }

    /// Forgets the sources idle for [`SOURCE_IDLE`], at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SOURCE_IDLE)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.sources
            .retain(|_, b| now.saturating_duration_since(b.last) < SOURCE_IDLE);
    }

    /// How many sources the table holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn load_starts_above_the_threshold_and_holds_a_second_past_the_last_excess() {
        let t0 = Instant::now();
        let mut load = LoadMeter::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!((0..3).all(|_| !load.count(t0, 3)));
        assert!(load.count(at(10), 3));
        // A new window starts with few messages, but the excess was recent.
        assert!(load.count(at(1000), 3));
        assert!(load.count(at(1009), 3));
        // A second after the last excess, a quiet window is not under load.
        assert!(!load.count(at(1010), 3));
        assert!(!load.count(at(2100), 3));
    }

    #[test]
    fn a_source_gets_its_burst_then_the_steady_rate() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::default();
        let src = ip("192.0.2.7");
        let burst = (0..100).filter(|_| limiter.allow(src, t0)).count();
        assert_eq!(burst, HANDSHAKE_BURST as usize);
        // Then one per 50 ms: a second of tries every millisecond gets 20.
        let steady = (1..=1000)
            .filter(|ms| limiter.allow(src, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(steady, HANDSHAKES_PER_SECOND as usize);
    }

    #[test]
    fn sources_are_counted_apart_but_ports_and_an_ipv6_64_are_one_source() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::default();
        for _ in 0..HANDSHAKE_BURST {
            assert!(limiter.allow(ip("192.0.2.7"), t0));
        }
        assert!(!limiter.allow(ip("192.0.2.7"), t0));
        assert!(limiter.allow(ip("192.0.2.8"), t0));
        // The same IPv4 host reached over a dual-stack socket.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert!(!limiter.allow(mapped, t0));
        for host in 1..=HANDSHAKE_BURST {
            let addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host as u16);
            assert!(limiter.allow(IpAddr::V6(addr), t0));
        }
        assert!(!limiter.allow(ip("2001:db8:0:1::ffff"), t0));
        assert!(limiter.allow(ip("2001:db8:0:2::1"), t0));
    }

    #[test]
    fn the_table_is_bounded_and_idle_sources_make_room_again() {
        let t0 = Instant::now();
        let mut limiter = HandshakeLimiter::default();
        for i in 0..MAX_SOURCES as u32 {
            assert!(limiter.allow(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), t0));
        }
        assert_eq!(limiter.len(), MAX_SOURCES);
        let newcomer = ip("198.51.100.1");
        assert!(!limiter.allow(newcomer, t0 + Duration::from_millis(500)));
        assert_eq!(limiter.len(), MAX_SOURCES);
        // A second later every old source is idle and swept.
        assert!(limiter.allow(newcomer, t0 + SOURCE_IDLE));
        assert_eq!(limiter.len(), 1);
    }
}
