//! Many threads on one store: an invite is redeemed exactly once, and no
//! address is given to two identities.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Barrier;
use std::thread;

use common::{id, invite, TempDir};
use weft_store::{AllocError, InviteError, Store};

const THREADS: u32 = 8;

#[test]
fn each_invite_is_redeemed_exactly_once_across_eight_threads() {
    let dir = TempDir::new("redeem-race");
    let store = Store::open(dir.path()).unwrap();
    let invites = 25;
    for n in 0..invites {
        store.invites().add(&id(n), &invite(10_000)).unwrap();
    }
    let barrier = Barrier::new(THREADS as usize);
    let winners: Vec<Vec<u32>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    let mut won = Vec::new();
                    for n in 0..invites {
                        barrier.wait();
                        match store
                            .invites()
                            .redeem(&id(n), &id(1_000 + t), 500 + u64::from(t))
                        {
                            Ok(_) => won.push(n),
                            Err(InviteError::AlreadyUsed { .. }) => {}
                            Err(e) => panic!("thread {t}, invite {n}: {e}"),
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut by_invite: HashMap<u32, Vec<u32>> = HashMap::new();
    for (t, won) in winners.iter().enumerate() {
        for &n in won {
            by_invite.entry(n).or_default().push(t as u32);
        }
    }
    for n in 0..invites {
        let won_by = by_invite.get(&n).cloned().unwrap_or_default();
        assert_eq!(won_by.len(), 1, "invite {n} redeemed by threads {won_by:?}");
        // The stored record names the winner.
        let record = store.invites().get(&id(n)).unwrap().unwrap();
        assert_eq!(record.used_by, Some(id(1_000 + won_by[0])));
        assert_eq!(record.used_unix, Some(500 + u64::from(won_by[0])));
    }
}

#[test]
fn an_expired_invite_is_refused_and_stays_unused() {
    let dir = TempDir::new("expired");
    let store = Store::open(dir.path()).unwrap();
    store.invites().add(&id(1), &invite(1_000)).unwrap();
    let err = store.invites().redeem(&id(1), &id(2), 1_500).unwrap_err();
    assert!(matches!(err, InviteError::Expired { at: 1_000 }), "{err}");
    assert_eq!(err.to_string(), "invite expired at unix time 1000");
    assert_eq!(store.invites().get(&id(1)).unwrap(), Some(invite(1_000)));
}

#[test]
fn allocations_from_eight_threads_are_unique_and_dense() {
    let dir = TempDir::new("alloc-race");
    let store = Store::open(dir.path()).unwrap();
    let net = u32::from(Ipv4Addr::new(10, 50, 0, 0));
    let per_thread = 30;
    let results: Vec<(u32, Ipv4Addr)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let n = t * per_thread + i;
                            (
                                n,
                                store.allocations().allocate(net, 24, &id(n), &[]).unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let addresses: HashSet<Ipv4Addr> = results.iter().map(|(_, a)| *a).collect();
    assert_eq!(addresses.len(), results.len(), "no address given twice");
    // Lowest-first from every thread: exactly .1 to .240 are used.
    let expected: HashSet<Ipv4Addr> = (1..=THREADS * per_thread)
        .map(|h| Ipv4Addr::from(net + h))
        .collect();
    assert_eq!(addresses, expected);
    for (n, address) in &results {
        assert_eq!(store.allocations().lookup(&id(*n)).unwrap(), Some(*address));
        assert_eq!(store.allocations().owner(*address).unwrap(), Some(id(*n)));
    }
    // 254 hosts, 240 used: 14 more, then none.
    for n in 0..14 {
        store
            .allocations()
            .allocate(net, 24, &id(10_000 + n), &[])
            .unwrap();
    }
    let err = store
        .allocations()
        .allocate(net, 24, &id(20_000), &[])
        .unwrap_err();
    assert!(matches!(err, AllocError::Exhausted), "{err}");
}

#[test]
fn one_identity_allocating_from_eight_threads_gets_one_address() {
    let dir = TempDir::new("alloc-same");
    let store = Store::open(dir.path()).unwrap();
    let net = u32::from(Ipv4Addr::new(10, 51, 0, 0));
    let barrier = Barrier::new(THREADS as usize);
    let got: HashSet<Ipv4Addr> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store.allocations().allocate(net, 24, &id(7), &[]).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got, HashSet::from([Ipv4Addr::new(10, 51, 0, 1)]));
    assert_eq!(store.allocations().list().unwrap().len(), 1);
}

#[test]
fn allocation_skips_the_network_broadcast_and_reserved_addresses() {
    let dir = TempDir::new("alloc-skip");
    let store = Store::open(dir.path()).unwrap();
    let net = u32::from(Ipv4Addr::new(10, 52, 0, 0));
    // A /29: hosts .1 to .6; reserve .1 (a gateway) and .4.
    let reserved = [net + 1, net + 4];
    let got: Vec<Ipv4Addr> = (0..4)
        .map(|n| {
            store
                .allocations()
                .allocate(net, 29, &id(n), &reserved)
                .unwrap()
        })
        .collect();
    let expected: Vec<Ipv4Addr> = [2, 3, 5, 6]
        .iter()
        .map(|h| Ipv4Addr::from(net + h))
        .collect();
    assert_eq!(got, expected);
    assert!(matches!(
        store.allocations().allocate(net, 29, &id(99), &reserved),
        Err(AllocError::Exhausted)
    ));
    // Idempotent per identity, even once the prefix is full.
    assert_eq!(
        store
            .allocations()
            .allocate(net, 29, &id(2), &reserved)
            .unwrap(),
        expected[2]
    );
}

#[test]
fn paths_measured_before_the_cutoff_expire_across_a_reopen() {
    let dir = TempDir::new("paths-expire");
    let store = Store::open(dir.path()).unwrap();
    for n in 0..20u32 {
        store
            .paths()
            .put(
                &id(0),
                &id(n),
                &common::path_record(n as u16, 1_000 + u64::from(n)),
            )
            .unwrap();
    }
    store.close().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.paths().expire(1_010).unwrap(), 10);
    let left: Vec<u64> = store
        .paths()
        .list_from(&id(0))
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.measured_unix)
        .collect();
    assert_eq!(left, (1_010..1_020).collect::<Vec<_>>());
    store.close().unwrap();
    assert_eq!(
        Store::open(dir.path())
            .unwrap()
            .paths()
            .list_from(&id(0))
            .unwrap()
            .len(),
        10
    );
}
