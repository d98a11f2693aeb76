//! Roaming: a node whose underlay address changes under a running tunnel keeps its sessions.
//! The peer learns the new endpoint from authenticated traffic alone; neither node restarts and
//! neither config mentions the new address.

use crate::harness::{overlay, ping_in_background, poll, wait_reachable, Lab, Node, OneLink};
use std::time::Duration;

/// Pings sent in total, 100 ms apart.
const PINGS: u32 = 80;
/// Pings answered before the address changes.
const ANSWERED_BEFORE_MOVE: usize = 15;
/// At most this many pings may go unanswered across the move.
const MAX_LOST: u32 = 10;

#[test]
fn pings_resume_within_a_second_after_the_underlay_address_changes_mid_stream() {
    let lab = Lab::new("roaming");
    let net = OneLink::new(&lab);
    // B knows only A's old address.
    let (config_a, config_b) = OneLink::configs(&lab);
    let _node_a = Node::start(&lab, &net.a, &config_a);
    let _node_b = Node::start(&lab, &net.b, &config_b);
    let (b4, _) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));

    let pinger = ping_in_background(&net.a, b4.into(), PINGS);
    let flowing = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (pinger.replies() >= ANSWERED_BEFORE_MOVE).then_some(())
    });
    assert!(
        flowing.is_some(),
        "pings through the tunnel did not flow before the move"
    );

    let new_a = "192.0.2.11";
    net.a
        .ip(&["addr", "del", &format!("{}/24", OneLink::A), "dev", "eth0"]);
    net.a
        .ip(&["addr", "add", &format!("{new_a}/24"), "dev", "eth0"]);
    let moved_after = pinger.last_replied().unwrap_or(0);
    println!(
        "roaming: a moved from {} to {new_a} after ping #{moved_after}",
        OneLink::A
    );

    let stats = pinger.finish(Duration::from_secs(PINGS as u64 / 10 + 10));
    let final_second = (PINGS - 9..=PINGS)
        .filter(|seq| stats.replied.contains(seq))
        .count();
    let first_after_move = stats.replied.range(moved_after + 1..).next();
    println!(
        "roaming: {} of {} pings lost; first reply after the move: #{first_after_move:?}; \
         final second {final_second}/10",
        stats.lost(),
        stats.transmitted
    );
    assert!(
        final_second >= 9,
        "traffic did not resume after the move: only {final_second} of the last 10 pings \
         answered ({stats:?})"
    );
    assert!(
        stats.lost() <= MAX_LOST,
        "{} pings lost across the move, more than {MAX_LOST}",
        stats.lost()
    );
}
