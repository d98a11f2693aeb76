//! The watchdog: a last resort against a main loop that stops turning.
//!
//! The main task beats a [`Heartbeat`] once per turn of its loop, and turns
//! at least every [`BEAT_EVERY`] even when there is nothing to do. A thread
//! of its own checks the beat; if the loop has not turned for
//! [`STALL_LIMIT`], it logs at ERROR how long the loop has been stuck and
//! the state of every queue it was given, then ends the process with a
//! non-zero status, so that its supervisor (systemd's `Restart=`, a
//! Kubernetes restart policy) starts it again. By design nothing can stall
//! the loop (it never waits for another task); the watchdog is there for
//! the bug that proves the design wrong. It never touches protocol state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::error;

/// How long the main loop may go without turning.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);
/// The main loop turns at least this often, even when idle, so that a
/// quiet node is never taken for a stalled one.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Exit status of a process the watchdog ended (EX_SOFTWARE).
pub const STALL_EXIT_CODE: i32 = 70;

/// Beaten by the main loop once per turn.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The loop turned.
    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last beat was.
    pub fn silent_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

/// A named queue whose length the watchdog reports.
pub type Probe = (&'static str, Box<dyn Fn() -> u64 + Send>);

/// The length of the tokio channel behind `tx`, for a [`Probe`]: held
/// weakly, so the watchdog never keeps a channel open.
pub fn channel_probe<T: Send + 'static>(
    name: &'static str,
    tx: &tokio::sync::mpsc::Sender<T>,
) -> Probe {
    let weak = tx.downgrade();
    (
        name,
        Box::new(move || {
            weak.upgrade()
                .map_or(0, |t| (t.max_capacity() - t.capacity()) as u64)
        }),
    )
}

/// Watches `heartbeat` from a thread of its own: once it has been silent
/// for `limit`, logs the stall with every probe's value and calls
/// `on_stall` (the daemon's ends the process). Checks every `limit / 10`.
pub fn spawn(
    heartbeat: Heartbeat,
    limit: Duration,
    probes: Vec<Probe>,
    on_stall: impl FnOnce(Duration) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("weft-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(limit / 10);
            let silent = heartbeat.silent_for();
            if silent >= limit {
                let queues: Vec<String> = probes
                    .iter()
                    .map(|(name, probe)| format!("{name}={}", probe()))
                    .collect();
                error!(
                    stalled_ms = silent.as_millis() as u64,
                    queues = %queues.join(" "),
                    "watchdog: the main loop has not turned; exiting so that the supervisor restarts the node"
                );
                on_stall(silent);
                return;
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_loop_that_keeps_turning_is_left_alone_and_a_stalled_one_is_reported() {
        let heartbeat = Heartbeat::new();
        let (tx, rx) = mpsc::channel();
        let (queue_tx, _queue_rx) = tokio::sync::mpsc::channel::<u8>(8);
        queue_tx.try_send(1).unwrap();
        queue_tx.try_send(2).unwrap();
        let probes = vec![channel_probe("control_events", &queue_tx)];
        let limit = Duration::from_millis(300);
        spawn(heartbeat.clone(), limit, probes, move |silent| {
            tx.send(silent).unwrap();
        })
        .unwrap();
        // Turning every 50 ms for a second: no stall.
        for _ in 0..20 {
            heartbeat.beat();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(rx.try_recv().is_err(), "fired while the loop was turning");
        // Stop turning: it fires, after the limit and not much later.
        let stopped = Instant::now();
        let silent = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("no stall reported");
        assert!(silent >= limit, "fired after {silent:?}");
        assert!(
            stopped.elapsed() < limit * 3,
            "fired only after {:?}",
            stopped.elapsed()
        );
    }

    #[test]
    fn a_channel_probe_reports_what_waits_and_does_not_keep_the_channel() {
        let (tx, rx) = tokio::sync::mpsc::channel::<u8>(4);
        let (_, probe) = channel_probe("admin", &tx);
        assert_eq!(probe(), 0);
        tx.try_send(7).unwrap();
        assert_eq!(probe(), 1);
        drop(tx);
        drop(rx);
        assert_eq!(probe(), 0);
    }
}
