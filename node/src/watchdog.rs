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
//!
//! To tell which bug, the report also says what the main thread was doing
//! while the loop stood still, from `/proc/self/task/<tid>`: its scheduler
//! state and kernel wait channel, and the CPU time it spent since the last
//! turn (a busy loop spends all of it; a wait on a lock or another task
//! spends none; state `D` is a wait on the disk).
//!
//! One stall is not a bug: a main thread that is runnable (`R`) but was
//! given almost no CPU since its last turn is starved by an overloaded
//! host (seen with 64 nodes restarting at once on two cores: 60 ms of CPU
//! in 5 s). Ending it would only add a restart to the overload, so the
//! watchdog warns and waits, up to [`STARVED_LIMIT`].

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

/// How long the main loop may go without turning.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);
/// How long a main thread starved of CPU (runnable, given next to none)
/// may go without turning.
pub const STARVED_LIMIT: Duration = Duration::from_secs(60);
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
    /// The beating thread's id (0 until the first beat).
    tid: Arc<AtomicI32>,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            tid: Arc::new(AtomicI32::new(0)),
        }
    }

    /// The loop turned.
    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
        if self.tid.load(Ordering::Relaxed) == 0 {
            self.tid
                .store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
        }
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
        .spawn(move || {
            // The beat last seen, and the main thread's CPU time then.
            let mut seen = (u64::MAX, 0);
            // A starved loop was warned about (once per stall).
            let mut warned = false;
            loop {
                std::thread::sleep(limit / 10);
                let tid = heartbeat.tid.load(Ordering::Relaxed);
                let last = heartbeat.last.load(Ordering::Relaxed);
                if last != seen.0 {
                    seen = (last, MainThread::read(tid).cpu_ms);
                }
                let silent = heartbeat.silent_for();
                if silent < limit {
                    warned = false;
                    continue;
                }
                let main = MainThread::read(tid);
                let cpu = Duration::from_millis(main.cpu_ms.saturating_sub(seen.1));
                let queues: Vec<String> = probes
                    .iter()
                    .map(|(name, probe)| format!("{name}={}", probe()))
                    .collect();
                match judge(silent, limit, &main.state, cpu) {
                    Stall::Starved => {
                        if !warned {
                            warned = true;
                            warn!(
                                stalled_ms = silent.as_millis() as u64,
                                queues = %queues.join(" "),
                                main_thread_cpu_ms_since_turn = cpu.as_millis() as u64,
                                "watchdog: the main loop is starved of CPU (runnable, given next to none); waiting"
                            );
                        }
                    }
                    Stall::Stuck => {
                        error!(
                            stalled_ms = silent.as_millis() as u64,
                            queues = %queues.join(" "),
                            main_thread_state = %main.state,
                            main_thread_wchan = %main.wchan,
                            main_thread_cpu_ms_since_turn = cpu.as_millis() as u64,
                            "watchdog: the main loop has not turned; exiting so that the supervisor restarts the node"
                        );
                        on_stall(silent);
                        return;
                    }
                }
            }
        })
        .map(drop)
}

/// What a loop that has not turned for `silent` (at least `limit`) is.
#[derive(Debug, PartialEq, Eq)]
enum Stall {
    /// Runnable but given almost no CPU: an overloaded host, not a bug
    /// (until [`STARVED_LIMIT`]).
    Starved,
    /// Waiting on something that does not come, or busy without turning.
    Stuck,
}

/// Judges a stall from the main thread's scheduler `state` and the `cpu`
/// time it spent since its last turn.
fn judge(silent: Duration, limit: Duration, state: &str, cpu: Duration) -> Stall {
    let starved = state == "R" && cpu < limit / 5;
    if starved && silent < STARVED_LIMIT.max(limit) {
        Stall::Starved
    } else {
        Stall::Stuck
    }
}

/// What `/proc/self/task/<tid>` says of the main thread.
struct MainThread {
    /// Scheduler state: R running, S sleeping, D waiting on the disk, ...
    state: String,
    /// The kernel function it waits in (`0` when running).
    wchan: String,
    /// User and system CPU time it has used, in milliseconds.
    cpu_ms: u64,
}

impl MainThread {
    fn read(tid: i32) -> MainThread {
        let dir = format!("/proc/self/task/{tid}");
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        // After the command name (which may hold spaces): state, then utime
        // and stime as the 12th and 13th fields.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|hz| *hz > 0)
            .unwrap_or(100) as u64;
        MainThread {
            state: fields.first().unwrap_or(&"?").to_string(),
            wchan: std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_else(|_| "?".into()),
            cpu_ms: (ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0)) * 1000 / hz,
        }
    }
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
    fn a_starved_loop_is_given_time_and_a_waiting_or_busy_one_is_not() {
        let (limit, s) = (STALL_LIMIT, Duration::from_secs);
        let ms = Duration::from_millis;
        assert_eq!(judge(s(5), limit, "R", ms(70)), Stall::Starved);
        assert_eq!(judge(s(59), limit, "R", ms(70)), Stall::Starved);
        assert_eq!(judge(STARVED_LIMIT, limit, "R", ms(70)), Stall::Stuck);
        assert_eq!(judge(s(5), limit, "R", ms(4900)), Stall::Stuck, "busy");
        assert_eq!(judge(s(5), limit, "S", ms(0)), Stall::Stuck, "waiting");
        assert_eq!(judge(s(5), limit, "D", ms(10)), Stall::Stuck, "disk");
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
