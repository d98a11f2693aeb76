//! Waiting for a condition instead of sleeping a fixed time: [`poll`] re-checks at a short
//! interval and gives up at a deadline, leaving the caller to fail with the context it has.

use std::time::{Duration, Instant};

/// Calls `check` every `interval` until it returns `Some`, or returns `None` once `timeout` has
/// passed (`check` always runs at least once, and once more at the deadline).
pub fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}
