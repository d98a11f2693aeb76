use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

const HELPER: PeerId = PeerId(0);

fn behind(now: Instant) -> NatMachine {
    let mut m = NatMachine::new([7; 32]);
    m.set_local_addresses(vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2))], 51820);
    m.on_reflexive(now, SocketAddr::from(([203, 0, 113, 1], 40001)));
    m
}

/// Runs the machine's timers at `now` and returns the actions it queued.
fn step(m: &mut NatMachine, now: Instant) -> Vec<NatAction> {
    m.handle_timeout(now, Some((HELPER, Duration::from_millis(20))));
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn opens(actions: &[NatAction]) -> Vec<(u32, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            NatAction::Open { trial, nonce, .. } => Some((*trial, *nonce)),
            NatAction::Check { .. } => None,
        })
        .collect()
}

#[test]
fn spread_points_lie_strictly_inside_the_bracket_and_grow_geometrically() {
    let p = spread(Duration::from_secs(2), Duration::from_secs(300), 3);
    assert_eq!(p.len(), 3);
    assert!(p[0] > Duration::from_secs(2) && p[2] < Duration::from_secs(300));
    let r1 = p[1].as_secs_f64() / p[0].as_secs_f64();
    let r2 = p[2].as_secs_f64() / p[1].as_secs_f64();
    assert!((r1 - r2).abs() < 0.01, "{p:?}");
}

#[test]
fn a_local_reflexive_address_means_no_nat_and_no_keepalive() {
    let now = Instant::now();
    let mut m = NatMachine::new([1; 32]);
    m.set_local_addresses(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))], 51820);
    m.on_reflexive(now, SocketAddr::from(([192, 0, 2, 1], 51820)));
    assert_eq!(m.status().behind, Some(false));
    assert_eq!(m.keepalive_interval(), None);
    assert!(step(&mut m, now + Duration::from_secs(60)).is_empty());
}

#[test]
fn behind_a_nat_keepalives_start_at_the_conservative_interval_and_trials_open() {
    let now = Instant::now();
    let mut m = behind(now);
    assert_eq!(m.keepalive_interval(), Some(START_INTERVAL));
    let actions = step(&mut m, now);
    assert_eq!(opens(&actions).len(), PARALLEL_TRIALS);
    assert_eq!(m.probe_sockets().count(), PARALLEL_TRIALS);
}

#[test]
fn a_passed_trial_raises_the_keepalive_to_half_its_idle_time() {
    let t0 = Instant::now();
    let mut m = behind(t0);
    let trials = opens(&step(&mut m, t0));
    let (first, nonce) = trials[0];
    assert!(m.on_ack(t0, first, nonce));
    let idle = m.trials.iter().find(|t| t.id == first).unwrap().idle;
    let checks = step(&mut m, t0 + idle);
    assert!(checks.contains(&NatAction::Check {
        helper: HELPER,
        trial: first
    }));
    assert!(m.on_binding_ping(t0 + idle, first, nonce));
    assert_eq!(m.status().lifetime_at_least, Some(idle));
    assert_eq!(m.keepalive_interval(), Some(idle / SAFETY_DIVISOR));
}

#[test]
fn a_failed_trial_cancels_the_longer_ones_and_bounds_the_keepalive() {
    let t0 = Instant::now();
    let mut m = behind(t0);
    let trials = opens(&step(&mut m, t0));
    for &(id, nonce) in &trials {
        m.on_ack(t0, id, nonce);
    }
    let idle = m.trials[0].idle;
    step(&mut m, t0 + idle);
    // No binding ping arrives.
    let later = step(&mut m, t0 + idle + Duration::from_secs(2));
    assert_eq!(m.status().lifetime_below, Some(idle));
    assert!(m.keepalive_interval().unwrap() < idle);
    // The next batch searches below the failure.
    for a in later {
        if let NatAction::Open { trial, .. } = a {
            let t = m.trials.iter().find(|t| t.id == trial).unwrap();
            assert!(t.idle < idle);
        }
    }
}

#[test]
fn an_acknowledgement_with_a_wrong_nonce_is_ignored() {
    let t0 = Instant::now();
    let mut m = behind(t0);
    let (id, nonce) = opens(&step(&mut m, t0))[0];
    assert!(!m.on_ack(t0, id, nonce ^ 1));
    assert!(!m.on_binding_ping(t0, id, nonce));
}

#[test]
fn a_helper_that_never_acknowledges_gets_fewer_and_fewer_batches() {
    let t0 = Instant::now();
    let mut m = behind(t0);
    let mut now = t0;
    let mut batches = Vec::new();
    while now < t0 + Duration::from_secs(600) {
        if !opens(&step(&mut m, now)).is_empty() {
            batches.push(now);
        }
        now += Duration::from_millis(100);
    }
    assert!(batches.len() < 15, "{} batches in 10 min", batches.len());
    assert_eq!(m.status().trials, 0);
}

#[test]
fn a_hint_sets_the_keepalive_until_a_trial_contradicts_it() {
    let t0 = Instant::now();
    let mut m = behind(t0);
    m.set_hint(Duration::from_secs(40));
    assert_eq!(m.keepalive_interval(), Some(Duration::from_secs(20)));
    let trials = opens(&step(&mut m, t0));
    let hint_trial = m
        .trials
        .iter()
        .find(|t| t.idle == Duration::from_secs(40))
        .map(|t| t.id)
        .expect("the hint is tried first");
    let nonce = trials.iter().find(|(id, _)| *id == hint_trial).unwrap().1;
    m.on_ack(t0, hint_trial, nonce);
    step(&mut m, t0 + Duration::from_secs(40));
    step(&mut m, t0 + Duration::from_secs(45));
    assert_eq!(m.keepalive_interval(), Some(START_INTERVAL));
}

#[test]
fn a_lost_mapping_returns_the_keepalive_to_its_proven_basis_and_searches_again() {
    let t0 = Instant::now();
    let mut m = behind(t0);
    m.proven = Some(Duration::from_secs(30));
    m.on_mapping_lost(t0);
    assert_eq!(m.status().lifetime_at_least, None);
    assert_eq!(m.keepalive_interval(), Some(Duration::from_secs(15)));
    assert!(!opens(&step(&mut m, t0)).is_empty());
}
