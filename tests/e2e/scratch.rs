//! Throwaway checks of the harness over the underlay only.
use crate::harness::*;
use std::net::IpAddr;
use std::time::Duration;

#[test]
fn scratch_one_link_underlay() {
    let lab = Lab::new("scratch1");
    let net = OneLink::new(&lab);
    let b: IpAddr = OneLink::B.parse().unwrap();
    wait_reachable(&net.a, b, Duration::from_secs(5));
    let s = ping(&net.a, b, 5);
    println!("{s:?}");
    let bg = ping_in_background(&net.a, b, 20);
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (bg.replies() >= 5).then_some(())
    })
    .unwrap();
    println!("last {:?}", bg.last_replied());
    let st = bg.finish(Duration::from_secs(10));
    println!("{st:?}");
    let r = tcp_transfer(&net.a, &net.b, b, 5201, 64 * MIB, 1);
    println!("raw: {}", r.summary());
    assert_eq!(r.sent_sha256, r.received_sha256);
}

#[test]
fn scratch_nat_underlay() {
    let lab = Lab::new("scratch2");
    let net = NatSetup::new(&lab, "k", 5);
    let b: IpAddr = NatSetup::B.parse().unwrap();
    let s = ping(&net.a, b, 2);
    println!("{s:?}");
    let sock = net
        .a
        .run(|| std::net::UdpSocket::bind("198.51.100.2:51820"))
        .unwrap();
    sock.send_to(b"hi", "203.0.113.2:51820").unwrap();
    println!("udp mappings {}", net.udp_mappings());
    assert_eq!(net.udp_mappings(), 1);
    let a: IpAddr = NatSetup::A.parse().unwrap();
    let s = ping(&net.b, a, 2);
    assert_eq!(s.received, 0);
}
