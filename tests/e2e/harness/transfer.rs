//! Bulk TCP transfers between two namespaces, through the tunnel when the destination is an
//! overlay address. The sender streams deterministic pseudo-random bytes; both ends hash what
//! they saw with SHA-256, so corruption, loss or truncation shows as a mismatch. Every socket
//! operation has a timeout, so a stalled tunnel fails the test instead of hanging it.

use super::{Netns, XorShift64};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Tells a side task of [`tcp_transfer_while`] whether the transfer is still running.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicBool,
}

impl Progress {
    /// True once the receiver has seen the end of the stream (or failed).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
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
    let dest = SocketAddr::new(to_addr, port);
    let listener = to
        .run(|| TcpListener::bind(dest))
        .unwrap_or_else(|e| panic!("bind {dest} in {}: {e}", to.name()));
    let client = from
        .run(|| TcpStream::connect_timeout(&dest, STALL))
        .unwrap_or_else(|e| panic!("connect to {dest} from {}: {e}", from.name()));
    // The connection is established, so it already waits in the accept queue.
    let (server, _) = listener.accept().expect("accept the transfer connection");
    for s in [&client, &server] {
        s.set_read_timeout(Some(STALL)).expect("set read timeout");
        s.set_write_timeout(Some(STALL)).expect("set write timeout");
    }

    let progress = Progress::default();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| send(client, bytes, seed));
        let side = scope.spawn(|| during(&progress));
        let (received, received_sha256) = {
            let _done = MarkDone(&progress);
            receive(server)
        };
        let elapsed = start.elapsed();
        let sent_sha256 = sender
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let side = side
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let report = TransferReport {
            sent: bytes,
            received,
            sent_sha256,
            received_sha256,
            elapsed,
        };
        (report, side)
    })
}

fn send(mut stream: TcpStream, bytes: usize, seed: u64) -> [u8; 32] {
    let mut rng = XorShift64::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let chunk = &mut buf[..left.min(64 * 1024)];
        rng.fill(chunk);
        hash.update(&chunk[..]);
        if let Err(e) = stream.write_all(chunk) {
            panic!(
                "sending stalled or failed after {} bytes: {e}",
                bytes - left
            );
        }
        left -= chunk.len();
    }
    stream
        .shutdown(Shutdown::Write)
        .expect("shut down the sending side");
    hash.finalize().into()
}

fn receive(mut stream: TcpStream) -> (usize, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("receiving stalled or failed after {total} bytes: {e}"),
        }
    }
    (total, hash.finalize().into())
}
