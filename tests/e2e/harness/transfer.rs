//! Bulk TCP transfers between two namespaces, through the tunnel when the destination is an
//! overlay address. The sender streams deterministic pseudo-random bytes; both ends hash what
//! they saw with SHA-256, so corruption, loss or truncation shows as a mismatch. Every socket
//! operation has a timeout, so a stalled tunnel fails the test instead of hanging it.

use super::{Netns, XorShift64};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// How long one read, write or connect may block before the transfer counts as stalled.
const STALL: Duration = Duration::from_secs(15);

/// What both ends of a transfer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    pub sent: usize,
    pub received: usize,
    pub sent_sha256: [u8; 32],
    pub received_sha256: [u8; 32],
    pub elapsed: Duration,
}

impl TransferReport {
    /// Goodput in Mbit/s, as seen by the receiver.
    pub fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }

    /// A one-line human summary.
    pub fn summary(&self) -> String {
        format!(
            "{} MiB in {:.2} s = {:.0} Mbit/s",
            self.received / MIB,
            self.elapsed.as_secs_f64(),
            self.mbit_per_s()
        )
    }
}

/// Sends `bytes` pseudo-random bytes (from `seed`) over TCP from namespace `from` to `to_addr`
/// port `port`, which must be an address of namespace `to`.
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_addr: IpAddr,
    port: u16,
    bytes: usize,
    seed: u64,
) -> TransferReport {
    tcp_transfer_while(from, to, to_addr, port, bytes, seed, |_| ()).0
}

/// How long a transfer may go on before it counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a read, write or the connect may block.
    pub stall: Duration,
    /// Longest the whole transfer may take, counted from the connection being up.
    pub deadline: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            stall: STALL,
            deadline: None,
        }
    }
}

/// Why a transfer did not finish: what the receiver had when it gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub received: usize,
    pub elapsed: Duration,
    pub reason: String,
}

/// Like [`tcp_transfer`] within `limits`, but a transfer that stalls or runs past its deadline
/// is an `Err` instead of a panic, for scenarios that expect it not to get through. The
/// connection itself must come up.
pub fn try_tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_addr: IpAddr,
    port: u16,
    bytes: usize,
    seed: u64,
    limits: Limits,
) -> Result<TransferReport, Unfinished> {
    transfer(from, to, to_addr, port, bytes, seed, limits, |_| ()).0
}

/// Tells a side task of [`tcp_transfer_while`] how far the transfer has got.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicBool,
    received: AtomicUsize,
}

impl Progress {
    /// True once the receiver has seen the end of the stream (or failed).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Bytes the receiver has read so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }
}

/// Marks the transfer done when dropped, also if the receiver panics, so a side task waiting
/// for the end never waits forever.
struct MarkDone<'a>(&'a Progress);

impl Drop for MarkDone<'_> {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
    }
}

/// Like [`tcp_transfer`], and runs `during` on its own thread once the connection is up, while
/// the bytes flow; returns its result too. `during` can watch [`Progress`] to keep going for
/// as long as the transfer does.
pub fn tcp_transfer_while<R: Send>(
    from: &Netns,
    to: &Netns,
    to_addr: IpAddr,
    port: u16,
    bytes: usize,
    seed: u64,
    during: impl FnOnce(&Progress) -> R + Send,
) -> (TransferReport, R) {
    let (report, side) = transfer(
        from,
        to,
        to_addr,
        port,
        bytes,
        seed,
        Limits::default(),
        during,
    );
    let report = report.unwrap_or_else(|u| {
        panic!(
            "receiving stalled or failed after {} bytes ({:.1} s): {}",
            u.received,
            u.elapsed.as_secs_f64(),
            u.reason
        )
    });
    (report, side)
}

#[allow(clippy::too_many_arguments)] // the public wrappers keep their callers short
fn transfer<R: Send>(
    from: &Netns,
    to: &Netns,
    to_addr: IpAddr,
    port: u16,
    bytes: usize,
    seed: u64,
    limits: Limits,
    during: impl FnOnce(&Progress) -> R + Send,
) -> (Result<TransferReport, Unfinished>, R) {
    let dest = SocketAddr::new(to_addr, port);
    let listener = to
        .run(|| TcpListener::bind(dest))
        .unwrap_or_else(|e| panic!("bind {dest} in {}: {e}", to.name()));
    let client = from
        .run(|| TcpStream::connect_timeout(&dest, limits.stall))
        .unwrap_or_else(|e| panic!("connect to {dest} from {}: {e}", from.name()));
    // The connection is established, so it already waits in the accept queue.
    let (server, _) = listener.accept().expect("accept the transfer connection");
    for s in [&client, &server] {
        s.set_read_timeout(Some(limits.stall))
            .expect("set read timeout");
        s.set_write_timeout(Some(limits.stall))
            .expect("set write timeout");
    }

    let progress = Progress::default();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| send(client, bytes, seed));
        let side = scope.spawn(|| during(&progress));
        let received = {
            let _done = MarkDone(&progress);
            receive(server, start, limits, &progress)
        };
        let elapsed = start.elapsed();
        let sent = sender
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let side = side
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let report = match received {
            Ok((received, received_sha256)) => {
                // The receiver saw the end of the stream, so the sender got everything out.
                let sent_sha256 = sent.unwrap_or_else(|e| panic!("{e}"));
                Ok(TransferReport {
                    sent: bytes,
                    received,
                    sent_sha256,
                    received_sha256,
                    elapsed,
                })
            }
            Err(reason) => Err(Unfinished {
                received: progress.received(),
                elapsed,
                reason,
            }),
        };
        (report, side)
    })
}

fn send(mut stream: TcpStream, bytes: usize, seed: u64) -> Result<[u8; 32], String> {
    let mut rng = XorShift64::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let chunk = &mut buf[..left.min(64 * 1024)];
        rng.fill(chunk);
        hash.update(&chunk[..]);
        if let Err(e) = stream.write_all(chunk) {
            return Err(format!(
                "sending stalled or failed after {} bytes: {e}",
                bytes - left
            ));
        }
        left -= chunk.len();
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutting down the sending side: {e}"))?;
    Ok(hash.finalize().into())
}

/// Reads to the end of the stream; on a stall, an error or the deadline, shuts the connection
/// down (so the sender fails at once instead of at its own timeout) and says why.
fn receive(
    mut stream: TcpStream,
    start: Instant,
    limits: Limits,
    progress: &Progress,
) -> Result<(usize, [u8; 32]), String> {
    let Limits { stall, deadline } = limits;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let failure = loop {
        if let Some(deadline) = deadline {
            let Some(left) = deadline
                .checked_sub(start.elapsed())
                .filter(|l| !l.is_zero())
            else {
                break format!("not finished within {deadline:?}");
            };
            // The socket's own timeout stays the stall limit; a read must not outlast the
            // deadline either.
            if left < stall {
                stream
                    .set_read_timeout(Some(left))
                    .expect("set read timeout");
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok((total, hash.finalize().into())),
            Ok(n) => {
                hash.update(&buf[..n]);
                total += n;
                progress.received.store(total, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if deadline.is_some_and(|d| start.elapsed() >= d) => {
                break format!("not finished within {:?}", deadline.unwrap_or_default());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break format!("nothing arrived for {stall:?}");
            }
            Err(e) => break e.to_string(),
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    Err(failure)
}
