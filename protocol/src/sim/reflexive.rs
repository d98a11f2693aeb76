//! Scenarios of reflexive endpoints across members: what one member says
//! it sees another at must not decide where a third member sends that
//! member's traffic. Gossip is modelled as `node/src/mesh/gossip.rs` does
//! it: a member announces [`Device::own_endpoints`]' `announced` list, and
//! the others take its first entry with [`Device::suggest_endpoint`].
//!
//! [`Device::own_endpoints`]: crate::Device::own_endpoints
//! [`Device::suggest_endpoint`]: crate::Device::suggest_endpoint

use std::net::SocketAddr;
use std::time::Duration;

use super::{Link, Sim};
use crate::peer::path::GOSSIP_ENDPOINT_GRACE;
use crate::timers::KEEPALIVE_TIMEOUT;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// An address no simulated node has.
const EVIL: &str = "203.0.113.66:51820";

/// Three members, every pair configured, each knowing its own address.
fn three_members(seed: u64) -> (Sim, usize, usize, usize) {
    let mut sim = Sim::new(seed);
    let (x, y, m) = (sim.add_node(), sim.add_node(), sim.add_node());
    sim.connect(x, y);
    sim.connect(x, m);
    sim.connect(y, m);
    sim.set_default_link(Link::latency(ms(5)));
    for n in [x, y, m] {
        let own = sim.node(n).addr;
        sim.with_device(n, |d, _| d.set_local_addresses(vec![own.ip()], own.port()));
    }
    (sim, x, y, m)
}

/// `from` announces itself and `to` takes the first endpoint announced, as
/// gossip does. Returns the announced list.
fn announce(sim: &mut Sim, from: usize, to: usize) -> Vec<SocketAddr> {
    let own = sim.node(from).addr;
    let announced = sim.with_device(from, |d, now| d.own_endpoints(&[own], now).announced);
    let peer = sim.peer(to, from);
    if let Some(first) = announced.first().copied() {
        sim.with_device(to, |d, now| d.suggest_endpoint(peer, first, now));
    }
    announced
}

#[test]
fn a_member_lying_about_anothers_endpoint_does_not_redirect_a_third_members_traffic() {
    let (mut sim, x, y, m) = three_members(21);
    let x_addr = sim.node(x).addr;
    // X and Y talk, then stay silent (passive keepalives included) longer
    // than gossip needs to move an endpoint: from then on, what X announces
    // is what Y uses.
    let talked = sim.at(secs(2));
    sim.stream(&[(x, y), (y, x)], ms(100), talked, 200);
    sim.run_until(talked + KEEPALIVE_TIMEOUT + GOSSIP_ENDPOINT_GRACE + secs(1));
    // M, a member with a session to X, says it sees X at an address nobody
    // has (its signed path observation of X, as gossip hands it to X).
    let m_key = sim.node(m).public;
    let evil: SocketAddr = EVIL.parse().unwrap();
    sim.with_device(x, |d, now| d.note_reflexive(&m_key, evil, now));
    let announced = announce(&mut sim, x, y);
    // Y pings X ten times a second for 5 s.
    let before = sim.delivered_seqs(y, x).len();
    let end = sim.now() + secs(5);
    sim.stream(&[(y, x)], ms(100), end, 200);
    sim.run_for(ms(100));
    let lost = 50 - (sim.delivered_seqs(y, x).len() - before);
    let seen = sim.status(y, x).endpoint;
    println!(
        "sim reflexive lie: X announced {announced:?}; Y sends to X at {seen:?}; \
         {lost} of 50 pings lost"
    );
    assert_eq!(announced, vec![x_addr], "X announced what M made up");
    assert_eq!(seen, Some(x_addr));
    assert_eq!(lost, 0);
}

#[test]
fn two_members_agreeing_on_an_address_get_it_announced_first() {
    let (mut sim, x, y, m) = three_members(22);
    let x_addr = sim.node(x).addr;
    let mapped: SocketAddr = "198.51.100.40:40001".parse().unwrap();
    let (y_key, m_key) = (sim.node(y).public, sim.node(m).public);
    sim.with_device(x, |d, now| d.note_reflexive(&m_key, mapped, now));
    sim.with_device(x, |d, now| d.note_reflexive(&y_key, mapped, now));
    let own = sim.with_device(x, |d, now| d.own_endpoints(&[x_addr], now));
    assert_eq!(own.announced, vec![mapped, x_addr]);
    assert_eq!(own.candidates, vec![mapped, x_addr]);
}
