//! The store writer: a thread of its own that performs the store writes
//! the main task asks for, so that no write, flush or fsync ever runs on
//! the task that moves packets.
//!
//! The main task hands over a write as a closure with
//! [`StoreWriter::submit`], which never waits: the queue is bounded
//! ([`QUEUE`]), and a write that does not fit is dropped and counted
//! (`weft_queue_dropped_total{queue="store"}`). Everything written through
//! here is either learned again (members, paths, NAT lifetimes) or retried
//! by its caller (the sequence reservation); writes that must be durable
//! before a caller hears "done" (a revocation) send their answer from the
//! closure, after the flush. Writes run in the order they were submitted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::Membership;

/// Writes waiting at most.
pub const QUEUE: usize = 4096;

/// One write: runs on the writer thread with the membership (and so the
/// store).
pub type Write = Box<dyn FnOnce(&Membership) + Send>;

/// Counters of the writer, read for metrics.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Writes dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Writes waiting now.
    pub queued: AtomicU64,
}

/// The handle the main task submits writes through.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    tx: SyncSender<Write>,
    counters: Arc<WriterCounters>,
}

/// Owns the writer thread; dropping every [`StoreWriter`] and then calling
/// [`WriterThread::finish`] drains the queue.
#[derive(Debug)]
pub struct WriterThread {
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Starts the writer thread for `membership`.
    pub fn start(membership: Arc<Membership>) -> std::io::Result<(StoreWriter, WriterThread)> {
        let (tx, rx) = mpsc::sync_channel::<Write>(QUEUE);
        let counters = Arc::new(WriterCounters::default());
        let seen = counters.clone();
        let thread = std::thread::Builder::new()
            .name("weft-store".into())
            .spawn(move || {
                for write in rx {
                    seen.queued.fetch_sub(1, Ordering::Relaxed);
                    let started = Instant::now();
                    write(&membership);
                    let took = started.elapsed();
                    if took > Duration::from_millis(500) {
                        warn!(took_ms = took.as_millis() as u64, "slow store write");
                    }
                }
                debug!("store writer stopped");
            })?;
        Ok((
            StoreWriter { tx, counters },
            WriterThread {
                thread: Some(thread),
            },
        ))
    }

    /// Queues `write`; never waits. Returns whether it was queued (a full
    /// queue drops it and counts it).
    pub fn submit(&self, write: impl FnOnce(&Membership) + Send + 'static) -> bool {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Box::new(write)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The length of the queue, for the watchdog.
    pub fn probe(&self) -> crate::watchdog::Probe {
        let counters = self.counters.clone();
        (
            "store",
            Box::new(move || counters.queued.load(Ordering::Relaxed)),
        )
    }

    /// The writer's counters.
    pub fn counters(&self) -> &WriterCounters {
        &self.counters
    }
}

impl WriterThread {
    /// Waits until every write queued before the last [`StoreWriter`] was
    /// dropped has run.
    pub fn finish(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
