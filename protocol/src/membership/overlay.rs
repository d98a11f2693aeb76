//! The control-plane overlay: which members a member keeps control
//! connections to, so that gossip reaches everyone without any member being
//! connected to all the others.
//!
//! Members are placed on a ring ordered by identity key (keys are random,
//! so positions are uniform). A member's *fingers* are the members 1, 2, 4,
//! 8, … places after it on the ring: it dials those. It is itself a finger
//! of the members 1, 2, 4, … places before it, which dial it. Every member
//! so keeps about `2 log2 N` connections, the graph has a diameter of about
//! `log2 N`, and because every member links to the next two on the ring, it
//! stays connected when any single member is down. Every member computes
//! the same ring from the same membership view, so both ends of an edge
//! agree that it is wanted; a member leaves out members it currently cannot
//! reach, and the ring closes over them.
//!
//! Pure functions over identity keys: no I/O, no clock, no randomness.

use super::identity::IdentityKey;

/// Most fingers a member dials (2^24 members would need 24).
pub const MAX_FINGERS: usize = 24;

/// The ring of `members` (deduplicated, `me` included) in order, and the
/// index of `me` in it.
fn ring(me: &IdentityKey, members: &[IdentityKey]) -> (Vec<IdentityKey>, usize) {
    let mut ring: Vec<IdentityKey> = members.to_vec();
    ring.push(*me);
    ring.sort_unstable();
    ring.dedup();
    // `me` was pushed, so it is in the ring.
    let at = ring.binary_search(me).unwrap_or(0);
    (ring, at)
}

/// The members `me` dials: those 1, 2, 4, … places after it on the ring of
/// `members` (which may or may not contain `me`; duplicates are ignored).
/// Nearest first, at most [`MAX_FINGERS`].
pub fn fingers(me: &IdentityKey, members: &[IdentityKey]) -> Vec<IdentityKey> {
    let (ring, at) = ring(me, members);
    let n = ring.len();
    let mut out = Vec::new();
    let mut step = 1usize;
    while step < n && out.len() < MAX_FINGERS {
        let k = ring[(at + step) % n];
        if !out.contains(&k) {
            out.push(k);
        }
        step *= 2;
    }
    out
}

/// Every member `me` should be connected to: its fingers, and the members
/// whose finger it is (those 1, 2, 4, … places before it). Both ends of a
/// wanted edge compute it as wanted from the same view.
pub fn wanted(me: &IdentityKey, members: &[IdentityKey]) -> Vec<IdentityKey> {
    let (ring, at) = ring(me, members);
    let n = ring.len();
    let mut out = fingers(me, members);
    let mut step = 1usize;
    let mut back = 0;
    while step < n && back < MAX_FINGERS {
        let k = ring[(at + n - step % n) % n];
        if !out.contains(&k) {
            out.push(k);
        }
        back += 1;
        step *= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn keys(n: usize) -> Vec<IdentityKey> {
        // Spread like random keys: a multiplicative hash of the index.
        (0..n as u64)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                k[8..16].copy_from_slice(&i.to_be_bytes());
                IdentityKey(k)
            })
            .collect()
    }

    /// Undirected edges when every member in `alive` dials its fingers over
    /// the view `view`.
    fn edges(
        alive: &[IdentityKey],
        view: &[IdentityKey],
    ) -> HashMap<IdentityKey, BTreeSet<IdentityKey>> {
        let mut adj: HashMap<IdentityKey, BTreeSet<IdentityKey>> = HashMap::new();
        for me in alive {
            for f in fingers(me, view) {
                if alive.contains(&f) {
                    adj.entry(*me).or_default().insert(f);
                    adj.entry(f).or_default().insert(*me);
                }
            }
        }
        adj
    }

    fn connected(alive: &[IdentityKey], adj: &HashMap<IdentityKey, BTreeSet<IdentityKey>>) -> bool {
        let mut seen = BTreeSet::from([alive[0]]);
        let mut todo = vec![alive[0]];
        while let Some(k) = todo.pop() {
            for n in adj.get(&k).into_iter().flatten() {
                if seen.insert(*n) {
                    todo.push(*n);
                }
            }
        }
        seen.len() == alive.len()
    }

    #[test]
    fn fingers_grow_with_the_log_of_the_membership() {
        for (n, expected) in [
            (1, 0),
            (2, 1),
            (3, 2),
            (16, 4),
            (17, 5),
            (64, 6),
            (1000, 10),
        ] {
            let all = keys(n);
            assert_eq!(fingers(&all[0], &all).len(), expected, "n = {n}");
        }
    }

    #[test]
    fn every_wanted_edge_is_wanted_by_both_ends() {
        let all = keys(50);
        for a in &all {
            for b in wanted(a, &all) {
                assert!(wanted(&b, &all).contains(a), "{a} wants {b} but not back");
            }
        }
    }

    #[test]
    fn the_overlay_is_connected_and_survives_any_single_member_down() {
        for n in [2, 3, 5, 16, 33, 64] {
            let all = keys(n);
            assert!(connected(&all, &edges(&all, &all)), "n = {n}");
            for down in 0..n {
                let alive: Vec<_> = all.iter().copied().filter(|k| *k != all[down]).collect();
                if alive.is_empty() {
                    continue;
                }
                // Before anyone notices: the old view, the dead member's edges gone.
                assert!(
                    connected(&alive, &edges(&alive, &all)),
                    "n = {n}, member {down} down, views not updated"
                );
            }
        }
    }

    #[test]
    fn no_member_carries_much_more_than_its_share_of_connections() {
        let all = keys(256);
        let adj = edges(&all, &all);
        let max = adj.values().map(BTreeSet::len).max().unwrap();
        // 8 fingers out and about 8 in.
        assert!(max <= 24, "max degree {max} at n = 256");
    }

    #[test]
    fn a_member_outside_the_view_still_gets_fingers() {
        let all = keys(8);
        let outsider = keys(9)[8];
        assert_eq!(fingers(&outsider, &all).len(), 4);
        assert!(!fingers(&outsider, &all).contains(&outsider));
    }
}
