//! Scenarios for one edge's discovery against a scripted path: a path MTU
//! that can change, random loss both ways, a fixed round-trip time, and no
//! ICMP unless a test sends one.

use super::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const LIMITS: PmtuLimits = PmtuLimits {
    floor: 576,
    base: 1340,
    max: 1500,
};

struct Path {
    mtu: u16,
    loss: f64,
    rtt: Duration,
    rng: ChaCha20Rng,
}

impl Path {
    fn lost(&mut self) -> bool {
        (self.rng.next_u32() as f64 / u32::MAX as f64) < self.loss
    }
}

struct Run {
    edge: Pmtud,
    path: Path,
    now: Instant,
    acks: Vec<(Instant, u32)>,
    active: bool,
}

impl Run {
    fn new(mtu: u16, loss: f64, seed: u64) -> Self {
        // Tests alone take a real instant, as the origin of virtual time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let path = Path {
            mtu,
            loss,
            rtt: Duration::from_micros(400),
            rng: ChaCha20Rng::seed_from_u64(seed),
        };
        Self {
            edge: Pmtud::new(LIMITS, Some(path.rtt), None, now),
            path,
            now,
            acks: Vec::new(),
            active: true,
        }
    }

    /// Runs for `d` of virtual time; returns the last change seen.
    fn run_for(&mut self, d: Duration) -> Option<u16> {
        let end = self.now + d;
        let mut last = None;
        loop {
            if self.active {
                self.edge.on_active(self.now);
            }
            while let Some(probe) = self.edge.poll_probe() {
                self.edge.probe_sent(probe, self.now);
                if probe.size <= self.path.mtu && !self.path.lost() && !self.path.lost() {
                    self.acks.push((self.now + self.path.rtt, probe.id));
                }
            }
            if let Some(c) = self.edge.poll_change() {
                last = Some(c);
            }
            let next_ack = self.acks.iter().map(|a| a.0).min();
            let next = [next_ack, self.edge.poll_timeout(), Some(end)]
                .into_iter()
                .flatten()
                .min()
                .expect("end is always there");
            self.now = next.max(self.now);
            if self.now >= end {
                return last;
            }
            let due: Vec<u32> = self
                .acks
                .iter()
                .filter(|a| a.0 <= self.now)
                .map(|a| a.1)
                .collect();
            self.acks.retain(|a| a.0 > self.now);
            for id in due {
                self.edge.on_ack(id, self.now);
            }
            self.edge.handle_timeout(self.now);
        }
    }

    /// Virtual time until the edge uses exactly `mtu`, within `limit`.
    fn time_to(&mut self, mtu: u16, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now.saturating_duration_since(start) < limit {
            self.run_for(Duration::from_millis(5));
            if self.edge.current() == mtu && self.edge.confirmed() == Some(mtu) {
                return Some(self.now - start);
            }
        }
        None
    }
}

#[test]
fn converges_exactly_on_black_hole_paths_of_several_mtus() {
    for mtu in [600, 1280, 1300, 1337, 1400, 1420, 1492, 1500] {
        let mut run = Run::new(mtu, 0.0, u64::from(mtu));
        let t = run
            .time_to(mtu, Duration::from_secs(1))
            .unwrap_or_else(|| panic!("mtu {mtu}: got {} after 1 s", run.edge.current()));
        assert!(t < Duration::from_millis(300), "mtu {mtu} took {t:?}");
        run.run_for(Duration::from_secs(1));
        assert!(run.edge.is_complete(), "mtu {mtu} not complete");
        assert_eq!(run.edge.current(), mtu);
    }
}

#[test]
fn until_a_size_is_confirmed_the_base_is_used() {
    let run = Run::new(1400, 0.0, 1);
    assert_eq!(run.edge.current(), LIMITS.base);
    assert_eq!(run.edge.confirmed(), None);
}

#[test]
fn twenty_percent_random_loss_converges_to_the_exact_value_not_lower() {
    for seed in 0..2000 {
        let mut run = Run::new(1400, 0.2, seed);
        let t = run.time_to(1400, Duration::from_secs(5));
        assert!(
            t.is_some(),
            "seed {seed}: stuck at {} (confirmed {:?})",
            run.edge.current(),
            run.edge.confirmed()
        );
        run.run_for(Duration::from_secs(3));
        assert_eq!(run.edge.current(), 1400, "seed {seed} drifted");
    }
}

#[test]
fn a_true_icmp_hint_lowers_the_edge_to_the_exact_size_within_a_few_probe_timeouts() {
    let mut run = Run::new(1500, 0.0, 3);
    run.time_to(1500, Duration::from_secs(1)).unwrap();
    // Idle between validations: only the hint can start probing now.
    run.run_for(Duration::from_millis(100));
    run.path.mtu = 1380;
    let now = run.now;
    assert!(run.edge.on_too_big(1380, now));
    assert_eq!(run.edge.current(), 1500, "a hint alone changes nothing");
    assert_eq!(
        run.edge.poll_probe().map(|p| p.size),
        Some(1500),
        "the size in use is probed at once"
    );
    let t = run
        .time_to(1380, Duration::from_secs(1))
        .expect("converged after the hint");
    // Without the hint the next validation would start up to 1 s later.
    assert!(t < Duration::from_millis(100), "took {t:?}");
    let s = run.edge.stats();
    assert_eq!((s.hints, s.hints_refuted), (1, 0), "{s:?}");
}

#[test]
fn a_forged_hint_below_the_confirmed_size_does_not_lower_it_while_its_probes_pass() {
    let mut run = Run::new(1400, 0.0, 21);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    run.run_for(Duration::from_millis(300));
    while run.edge.poll_change().is_some() {}
    let sent = run.edge.stats().probes_sent;
    let now = run.now;
    // The forged "fragmentation needed" announces the IPv4 floor.
    assert!(run.edge.on_too_big(576, now), "the hint starts probing");
    assert_eq!(run.edge.current(), 1400);
    let mut probed = Vec::new();
    while let Some(p) = run.edge.poll_probe() {
        probed.push(p.size);
        run.edge.probe_sent(p, now);
        run.acks.push((now + run.path.rtt, p.id));
    }
    probed.sort_unstable();
    assert_eq!(probed, [576, 1400], "the hinted size and the size in use");
    let lost = run.edge.stats().probes_lost;
    let change = run.run_for(Duration::from_secs(5));
    assert_eq!(change, None, "the size in use never changed");
    assert_eq!(run.edge.current(), 1400);
    assert_eq!(run.edge.confirmed(), Some(1400));
    let s = run.edge.stats();
    assert_eq!((s.hints, s.hints_refuted), (1, 1), "{s:?}");
    // Only the raise attempt's sizes above 1400 were lost since.
    assert!(
        run.edge.probes.lost.iter().all(|&(_, size)| size > 1400),
        "{s:?}"
    );
    assert!(s.probes_lost > lost, "the raise was tried: {s:?}");
    eprintln!(
        "forged hint: {} probes in 5 s after it, edge stays at {}",
        s.probes_sent - sent,
        run.edge.current()
    );
}

#[test]
fn a_forged_hint_every_5s_for_a_minute_never_lowers_the_edge() {
    let mut run = Run::new(1400, 0.1, 22);
    run.time_to(1400, Duration::from_secs(5)).unwrap();
    run.run_for(Duration::from_secs(3));
    while run.edge.poll_change().is_some() {}
    for _ in 0..12 {
        let now = run.now;
        run.edge.on_too_big(576, now);
        let change = run.run_for(Duration::from_secs(5));
        assert_eq!(change, None, "lowered to {}", run.edge.current());
    }
    let s = run.edge.stats();
    assert_eq!(s.hints, 12, "{s:?}");
    assert!(s.hints_refuted >= 11, "{s:?}");
    assert_eq!(run.edge.current(), 1400);
}

#[test]
fn a_flood_of_forged_hints_starts_at_most_one_round_per_holdoff() {
    let mut run = Run::new(1400, 0.0, 23);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    // Past the first raise attempt, which probes above 1400.
    run.run_for(FIRST_RAISE + Duration::from_secs(1));
    let before = run.edge.stats().probes_sent;
    let start = run.now;
    // 10,000 hints over one second.
    for i in 0..10_000u32 {
        run.edge.on_too_big(576 + (i % 800) as u16, run.now);
        run.run_for(Duration::from_micros(100));
    }
    let elapsed = run.now - start;
    let s = run.edge.stats();
    let rounds = elapsed.as_millis() / HINT_HOLDOFF.as_millis() + 1;
    assert!(u128::from(s.hints) <= rounds, "{s:?} in {elapsed:?}");
    // Each hint round costs its two sizes and the control; validations go on.
    let probes = s.probes_sent - before;
    assert!(
        u128::from(probes) <= rounds * 3 + 2 * (elapsed.as_secs() as u128 + 1),
        "{probes} probes in {elapsed:?}"
    );
    assert_eq!(run.edge.current(), 1400);
}

#[test]
fn a_hint_followed_by_real_loss_lowers_the_edge_within_the_decrease_budget() {
    let mut run = Run::new(1400, 0.0, 24);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    run.run_for(Duration::from_secs(2));
    // A forged hint first: refuted, and the holdoff starts.
    let now = run.now;
    assert!(run.edge.on_too_big(576, now));
    run.run_for(Duration::from_millis(50));
    assert_eq!(run.edge.current(), 1400);
    // Then the path really narrows, and the router's hint falls in the
    // holdoff: validation alone must find it in time, exactly.
    run.path.mtu = 1300;
    let now = run.now;
    assert!(!run.edge.on_too_big(1300, now), "within the holdoff");
    let t = run
        .time_to(1300, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still {} after 3 s", run.edge.current()));
    assert!(t <= Duration::from_millis(2100), "took {t:?}");
}

#[test]
fn a_hint_during_a_search_joins_that_search_and_the_exact_size_is_still_found() {
    let mut run = Run::new(1300, 0.0, 25);
    // The first round is in flight; the hint arrives before any answer.
    let now = run.now;
    while let Some(p) = run.edge.poll_probe() {
        run.edge.probe_sent(p, now);
        if p.size <= run.path.mtu {
            run.acks.push((now + run.path.rtt, p.id));
        }
    }
    assert!(run.edge.on_too_big(700, now));
    let probed = run.edge.poll_probe().map(|p| p.size);
    assert!(
        matches!(probed, Some(700) | Some(1340)),
        "the hint and the base join the round: {probed:?}"
    );
    run.time_to(1300, Duration::from_secs(1))
        .unwrap_or_else(|| panic!("stuck at {}", run.edge.current()));
}

#[test]
fn a_hint_at_or_above_the_size_in_use_or_on_a_silent_path_is_ignored() {
    let mut run = Run::new(1400, 0.0, 26);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    run.run_for(Duration::from_millis(100));
    let now = run.now;
    assert!(!run.edge.on_too_big(1400, now));
    assert!(!run.edge.on_too_big(9000, now));
    assert_eq!(run.edge.poll_probe(), None);
    let mut silent = Run::new(1400, 1.0, 27);
    silent.run_for(Duration::from_secs(1));
    let now = silent.now;
    assert!(!silent.edge.on_too_big(576, now));
    assert_eq!(silent.edge.current(), LIMITS.base);
}

#[test]
fn a_lower_local_mtu_is_not_a_hint_and_is_used_at_once() {
    let mut run = Run::new(1400, 0.0, 28);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    let now = run.now;
    run.edge.set_max(1350, now);
    assert!(run.edge.current() <= 1350, "{}", run.edge.current());
    run.time_to(1350, Duration::from_secs(1)).unwrap();
}

#[test]
fn a_decrease_mid_run_is_found_within_3s_without_icmp() {
    let mut run = Run::new(1400, 0.0, 4);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    run.run_for(Duration::from_secs(5));
    run.path.mtu = 1300;
    let t = run
        .time_to(1300, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still {} after 3 s", run.edge.current()));
    assert!(t <= Duration::from_millis(2100), "took {t:?}");
}

#[test]
fn an_increase_is_found_within_the_raise_interval() {
    let mut run = Run::new(1300, 0.0, 5);
    run.time_to(1300, Duration::from_secs(1)).unwrap();
    run.path.mtu = 1400;
    let t = run
        .time_to(1400, RAISE_INTERVAL + Duration::from_secs(1))
        .unwrap_or_else(|| panic!("still {}", run.edge.current()));
    assert!(
        t <= RAISE_INTERVAL + Duration::from_millis(200),
        "took {t:?}"
    );
}

#[test]
fn a_silent_peer_changes_nothing() {
    let mut run = Run::new(1400, 1.0, 6);
    run.run_for(Duration::from_secs(10));
    assert_eq!(run.edge.current(), LIMITS.base);
    assert_eq!(run.edge.confirmed(), None);
    // And it keeps trying, at a modest rate.
    let sent = run.edge.stats().probes_sent;
    assert!(sent > 0 && sent < 400, "{sent} probes in 10 s");
}

#[test]
fn a_path_smaller_than_the_base_is_used_once_the_base_fails() {
    let mut run = Run::new(1300, 0.0, 7);
    run.time_to(1300, Duration::from_secs(1))
        .expect("converged below the base");
}

#[test]
fn a_late_acknowledgement_still_confirms_its_size() {
    let mut run = Run::new(1400, 0.0, 8);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    let lost = run.edge.probes.lost.len();
    assert!(lost > 0, "a black-hole search declares probes lost");
    let (id, _) = (1..u32::MAX)
        .map(|i| (i, run.edge.probe_size(i)))
        .find(|(_, s)| s.is_some_and(|s| s > 1400))
        .map(|(i, s)| (i, s.unwrap()))
        .unwrap();
    let now = run.now;
    run.edge.on_ack(id, now);
    assert!(run.edge.confirmed().unwrap() > 1400);
}

#[test]
fn probes_are_spent_sparingly_on_a_clean_path() {
    let mut run = Run::new(1500, 0.0, 9);
    run.time_to(1500, Duration::from_secs(1)).unwrap();
    assert!(run.edge.stats().probes_sent <= 30, "{:?}", run.edge.stats());
    // Validation while active: one probe pair per second.
    let before = run.edge.stats().probes_sent;
    run.run_for(Duration::from_secs(10));
    let per_s = (run.edge.stats().probes_sent - before) / 10;
    assert!(per_s <= 3, "{per_s} probes per second while converged");
}

#[test]
fn figures_for_the_record() {
    for (mtu, loss) in [(1400u16, 0.0), (1400, 0.2), (1300, 0.0), (1500, 0.0)] {
        let mut run = Run::new(mtu, loss, 11);
        let t = run.time_to(mtu, Duration::from_secs(5)).unwrap();
        let s = run.edge.stats();
        eprintln!(
            "mtu {mtu} loss {loss}: exact after {t:?}, {} probes, {} bytes, {} lost",
            s.probes_sent, s.probe_bytes, s.probes_lost
        );
    }
}

#[test]
fn a_right_prior_converges_in_one_round_with_few_probes() {
    let mut plain = Run::new(1400, 0.0, 12);
    plain.time_to(1400, Duration::from_secs(1)).unwrap();
    let mut primed = Run::new(1400, 0.0, 12);
    primed.edge = Pmtud::new(LIMITS, Some(primed.path.rtt), Some(1400), primed.now);
    let t = primed.time_to(1400, Duration::from_secs(1)).unwrap();
    let (a, b) = (plain.edge.stats(), primed.edge.stats());
    eprintln!(
        "without prior: {} probes; with: {} probes in {t:?}",
        a.probes_sent, b.probes_sent
    );
    assert!(b.probes_sent * 3 < a.probes_sent, "{a:?} vs {b:?}");
}

#[test]
fn a_wrong_prior_is_never_used_and_the_search_still_finds_the_mtu() {
    for prior in [1300u16, 1450, 1500] {
        let mut run = Run::new(1400, 0.0, 13);
        run.edge = Pmtud::new(LIMITS, Some(run.path.rtt), Some(prior), run.now);
        run.time_to(1400, Duration::from_secs(1))
            .unwrap_or_else(|| panic!("prior {prior}: stuck at {}", run.edge.current()));
    }
}

#[test]
fn a_stored_size_is_in_use_after_one_probe_and_its_control() {
    let mut run = Run::new(1400, 0.0, 14);
    run.edge = Pmtud::resume(LIMITS, Some(run.path.rtt), 1400, run.now);
    assert_eq!(run.edge.current(), LIMITS.base, "not used before its ack");
    let t = run.time_to(1400, Duration::from_secs(1)).unwrap();
    assert!(t <= Duration::from_millis(5), "took {t:?}");
    assert!(run.edge.is_complete());
    assert_eq!(run.edge.stats().probes_sent, 2, "{:?}", run.edge.stats());
    assert_eq!(run.edge.stats().changes, 1);
}

#[test]
fn a_stored_size_is_not_searched_above_until_the_raise_interval() {
    let mut run = Run::new(1400, 0.0, 15);
    run.edge = Pmtud::resume(LIMITS, Some(run.path.rtt), 1400, run.now);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    let start = run.now;
    // Only validations (the size and the floor, once a second) until the
    // raise is due.
    run.run_for(RAISE_INTERVAL - Duration::from_millis(500));
    let validations = (RAISE_INTERVAL.as_secs() - 1) * 2;
    let sent = run.edge.stats().probes_sent - 2;
    assert!(
        sent <= validations,
        "{sent} probes in {:?}",
        run.now - start
    );
    assert_eq!(
        run.edge.stats().probes_lost,
        0,
        "nothing above 1400 was sent"
    );
    // A path that grew is still found by the raise.
    run.path.mtu = 1500;
    run.time_to(1500, Duration::from_secs(2))
        .expect("the raise finds the larger size");
}

#[test]
fn a_stored_size_that_no_longer_passes_falls_back_to_a_search_below_it() {
    let mut run = Run::new(1300, 0.0, 16);
    run.edge = Pmtud::resume(LIMITS, Some(run.path.rtt), 1400, run.now);
    run.time_to(1300, Duration::from_secs(1))
        .unwrap_or_else(|| panic!("stuck at {}", run.edge.current()));
    let s = run.edge.stats();
    assert!(s.probes_lost >= u64::from(MIN_LOSSES), "{s:?}");
    run.run_for(Duration::from_secs(1));
    assert_eq!(run.edge.current(), 1300);
}

#[test]
fn a_stored_size_survives_a_lost_first_probe() {
    // Every probe of the stored size is lost once; the next copy passes.
    let mut run = Run::new(1400, 0.0, 17);
    run.edge = Pmtud::resume(LIMITS, Some(run.path.rtt), 1400, run.now);
    let first = run.edge.poll_probe().unwrap();
    run.edge.probe_sent(first, run.now);
    assert_eq!(first.size, 1400, "the stored size goes first");
    let t = run.time_to(1400, Duration::from_secs(1)).unwrap();
    let s = run.edge.stats();
    assert_eq!(s.probes_lost, 1, "{s:?}");
    // The lost one, the control, then one escalation of a few copies at once.
    assert!(s.probes_sent <= 2 + u64::from(MAX_COPIES), "{s:?}");
    assert!(t < Duration::from_millis(100), "took {t:?}");
}

#[test]
fn a_stored_size_is_retried_after_a_silent_round() {
    let mut run = Run::new(1400, 1.0, 18);
    run.edge = Pmtud::resume(LIMITS, Some(run.path.rtt), 1400, run.now);
    run.run_for(Duration::from_secs(2));
    assert_eq!(run.edge.confirmed(), None);
    run.path.loss = 0.0;
    let before = run.edge.stats().probes_sent;
    run.time_to(1400, Duration::from_secs(5)).unwrap();
    let after = run.edge.stats().probes_sent - before;
    assert!(after <= 2, "{after} probes once the peer answered");
}

#[test]
fn a_stored_size_above_the_local_mtu_starts_a_normal_search() {
    let mut run = Run::new(1400, 0.0, 19);
    run.edge = Pmtud::resume(LIMITS, Some(run.path.rtt), 9000, run.now);
    run.time_to(1400, Duration::from_secs(1)).unwrap();
    assert!(run.edge.stats().probes_sent > 8, "{:?}", run.edge.stats());
}

#[test]
fn a_probe_named_but_not_sent_is_named_again_and_never_counted() {
    let mut run = Run::new(1400, 0.0, 20);
    let first = run.edge.poll_probe().expect("a round is due");
    assert_eq!(
        run.edge.poll_probe(),
        Some(first),
        "naming it changes nothing"
    );
    // Long past any probe timeout, nothing is in flight, so nothing is lost.
    run.now += Duration::from_secs(5);
    run.edge.handle_timeout(run.now);
    assert_eq!(run.edge.stats(), PmtuStats::default());
    assert_eq!(run.edge.poll_probe(), Some(first));
    // A probe other than the one named is not taken as sent.
    let other = NextProbe {
        id: first.id + 1,
        size: first.size,
    };
    run.edge.probe_sent(other, run.now);
    assert_eq!(run.edge.stats().probes_sent, 0);
    run.edge.probe_sent(first, run.now);
    assert_eq!(run.edge.stats().probes_sent, 1);
    assert_ne!(run.edge.poll_probe(), Some(first));
    assert_eq!(run.edge.probe_size(first.id), Some(first.size));
}
