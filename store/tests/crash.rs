//! A child process redeems invites and allocates addresses in a loop,
//! printing each one after its call returns, and is killed with SIGKILL at
//! a random moment; after each kill, every operation it reported must be in
//! the reopened store. Ten rounds on one store, so recovery from a kill is
//! itself killed and recovered from.
//!
//! The child is this test binary again (`std::env::current_exe`), switched
//! by an environment variable, hence `harness = false` and this `main`.
//! Set `WEFT_STORE_CRASH_SEED` to replay the kill times of a failed run.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{invite, TempDir};
use weft_store::{Identity, Store};

const NAME: &str = "a_child_killed_at_random_moments_loses_no_reported_redeem_or_allocation";
const CHILD_DIR: &str = "WEFT_STORE_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "WEFT_STORE_CRASH_CHILD_ROUND";
const ROUNDS: u32 = 10;
/// Upper bound of the random delay between the child's first operation and
/// its kill.
const MAX_KILL_DELAY_MS: u64 = 400;
const NET: u32 = u32::from_be_bytes([10, 77, 0, 0]);
const PREFIX_LEN: u8 = 16;
const NOW: u64 = 1_700_000_000;

fn main() {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) {
        child(Path::new(&dir), round.parse().expect("a round number"));
        return;
    }
    // Enough of libtest's command line for `cargo test` to treat us as a
    // test: `--list`, and a name filter.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-')) {
        if !NAME.contains(filter.as_str()) {
            println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out\n");
            return;
        }
    }
    println!("\nrunning 1 test");
    let started = Instant::now();
    parent();
    println!("test {NAME} ... ok");
    println!(
        "\ntest result: ok. 1 passed; 0 failed; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
}

/// The identity of operation `i` of round `round`, doubling as its invite's
/// hash with a different last byte.
fn identity(round: u32, i: u32) -> Identity {
    let mut id = [0xc7; 32];
    id[..4].copy_from_slice(&round.to_be_bytes());
    id[4..8].copy_from_slice(&i.to_be_bytes());
    id
}

fn invite_hash(round: u32, i: u32) -> [u8; 32] {
    let mut hash = identity(round, i);
    hash[31] = 0x1a;
    hash
}

/// Adds, redeems and allocates until killed, reporting each call that
/// returned `Ok` on its own line.
fn child(dir: &Path, round: u32) {
    let store = Store::open(dir).expect("the child opens the store");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("stdout");
    for i in 0.. {
        let hash = invite_hash(round, i);
        let id = identity(round, i);
        store
            .invites()
            .add(&hash, &invite(NOW + 3_600))
            .expect("add");
        writeln!(out, "added {i}")
            .and_then(|()| out.flush())
            .expect("stdout");
        store
            .invites()
            .redeem(&hash, &id, NOW + u64::from(i))
            .expect("redeem");
        writeln!(out, "redeemed {i}")
            .and_then(|()| out.flush())
            .expect("stdout");
        let address = store
            .allocations()
            .allocate(NET, PREFIX_LEN, &id, &[])
            .expect("allocate");
        writeln!(out, "allocated {i} {address}")
            .and_then(|()| out.flush())
            .expect("stdout");
    }
}

/// splitmix64, for the kill delays.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn parent() {
    let seed = std::env::var("WEFT_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{NAME}: WEFT_STORE_CRASH_SEED={seed}");
    let mut rng = seed;
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut reported_total = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(next(&mut rng) % (MAX_KILL_DELAY_MS + 1));
        let mut child = Command::new(&exe)
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("read the child's stdout");
        assert_eq!(
            first, "ready\n",
            "round {round}: the child did not open the store"
        );
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        let mut rest = String::new();
        stdout
            .read_to_string(&mut rest)
            .expect("read the child's stdout");
        // A line cut short by the kill was not reported.
        let complete = &rest[..rest.rfind('\n').map_or(0, |i| i + 1)];
        let reported = check(dir.path(), round, complete);
        reported_total += reported;
        println!(
            "  round {round}: killed after {} ms ({status}), {reported} reported operations present",
            delay.as_millis()
        );
    }
    assert!(
        reported_total > 0,
        "the children never got to report anything"
    );
}

/// Reopens the store and checks that every operation in `report` is there;
/// returns how many there were.
fn check(dir: &Path, round: u32, report: &str) -> usize {
    let store = Store::open(dir)
        .unwrap_or_else(|e| panic!("round {round}: the store does not reopen after a kill: {e}"));
    assert_eq!(store.corrupt_records(), 0, "round {round}");
    let mut n = 0;
    for line in report.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let i: u32 = words[1].parse().expect("an operation number");
        let id = identity(round, i);
        match words[0] {
            "added" => {
                assert!(
                    store
                        .invites()
                        .get(&invite_hash(round, i))
                        .unwrap()
                        .is_some(),
                    "round {round}: added invite {i} is gone"
                );
            }
            "redeemed" => {
                let record = store.invites().get(&invite_hash(round, i)).unwrap();
                let used = record.and_then(|r| Some((r.used_unix?, r.used_by?)));
                assert_eq!(
                    used,
                    Some((NOW + u64::from(i), id)),
                    "round {round}: redeem {i}"
                );
            }
            "allocated" => {
                let address: Ipv4Addr = words[2].parse().expect("an address");
                assert_eq!(
                    store.allocations().lookup(&id).unwrap(),
                    Some(address),
                    "round {round}: allocation {i} is gone"
                );
                assert_eq!(store.allocations().owner(address).unwrap(), Some(id));
            }
            other => panic!("round {round}: unexpected report {other:?}"),
        }
        n += 1;
    }
    // Whatever the kill interrupted, the two allocation trees agree and no
    // address is held twice.
    let all = store.allocations().list().unwrap();
    let addresses: HashSet<Ipv4Addr> = all.iter().map(|r| r.address).collect();
    assert_eq!(addresses.len(), all.len(), "round {round}");
    for record in &all {
        assert_eq!(
            store.allocations().lookup(&record.identity).unwrap(),
            Some(record.address)
        );
    }
    store.close().expect("a clean close");
    n
}
