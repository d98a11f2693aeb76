//! Hostile input: garbage on a node's UDP port must neither crash it nor disturb an established
//! tunnel. While a 64 MiB transfer runs, a socket in the sender's namespace (not the node's own
//! port, so none of it is authentic) throws at least 10,000 malformed datagrams at the
//! receiving node, and keeps throwing them until the transfer is over: random bytes of random
//! length, and datagrams that look like each message type (1 initiation, 2 response, 3 cookie
//! reply, 4 transport data) with random contents at right and wrong lengths. The transfer must
//! arrive intact and the node must still be running and answering.

use crate::harness::{
    overlay, ping, tcp_transfer_while, wait_reachable, Lab, Node, OneLink, Progress, XorShift64,
    DEFAULT_PORT, MIB,
};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Datagrams thrown at the node, at least.
const DATAGRAMS: usize = 10_000;
/// The largest datagram sent.
const MAX_LEN: usize = 1500;

/// The exact length of each handshake message type, and the least for transport data.
fn proper_len(kind: u8) -> usize {
    match kind {
        1 => 148,
        2 => 92,
        3 => 64,
        _ => 32,
    }
}

/// Writes the next datagram of the hostile stream into `buf` and returns its length.
fn hostile_datagram(rng: &mut XorShift64, buf: &mut [u8; MAX_LEN]) -> usize {
    let flavour = rng.below(4);
    if flavour == 0 {
        // Anything at all, including empty datagrams.
        let len = rng.below(MAX_LEN + 1);
        rng.fill(&mut buf[..len]);
        return len;
    }
    let kind = 1 + rng.below(4) as u8;
    let proper = proper_len(kind);
    let len = match flavour {
        // Right length; transport data in 16-byte steps up to the MTU.
        1 if kind == 4 => proper + 16 * rng.below((MAX_LEN - proper) / 16 + 1),
        1 => proper,
        // Truncated: shorter than the message can be.
        2 => rng.below(proper),
        // Off by a little, or any length.
        _ => match rng.below(3) {
            0 => (proper + 1 + rng.below(3)).min(MAX_LEN),
            1 => proper.saturating_sub(1 + rng.below(3)),
            _ => rng.below(MAX_LEN + 1),
        },
    };
    rng.fill(&mut buf[..len]);
    if len > 0 {
        buf[0] = kind;
    }
    // Mostly with the three reserved bytes zero, as a real message has them.
    if len >= 4 && rng.below(4) != 0 {
        buf[1..4].fill(0);
    }
    len
}

/// How many hostile datagrams went out, and how many of them before the transfer ended.
#[derive(Debug)]
struct Thrown {
    sent: usize,
    during_transfer: usize,
}

/// Sends the hostile stream from `socket` to `target` as fast as it goes, at least
/// [`DATAGRAMS`] of them and for as long as the transfer runs.
fn throw_garbage(socket: &UdpSocket, target: SocketAddr, seed: u64, transfer: &Progress) -> Thrown {
    let mut rng = XorShift64::new(seed);
    let mut buf = [0u8; MAX_LEN];
    let mut thrown = Thrown {
        sent: 0,
        during_transfer: 0,
    };
    for i in 0.. {
        let running = !transfer.is_done();
        if i >= DATAGRAMS && !running {
            break;
        }
        let len = hostile_datagram(&mut rng, &mut buf);
        // A send the local stack refuses (e.g. ENOBUFS in a burst) is only counted: the
        // test asserts that nearly all went out.
        if socket.send_to(&buf[..len], target).is_ok() {
            thrown.sent += 1;
            thrown.during_transfer += usize::from(running);
        }
    }
    thrown
}

#[test]
fn transfer_arrives_intact_and_node_survives_10000_malformed_datagrams_on_its_port() {
    let lab = Lab::new("hostile");
    let net = OneLink::new(&lab);
    let (config_a, config_b) = OneLink::configs(&lab);
    let mut node_a = Node::start(&lab, &net.a, &config_a);
    let mut node_b = Node::start(&lab, &net.b, &config_b);
    let (b4, b6) = overlay(2);
    wait_reachable(&net.a, b4.into(), Duration::from_secs(10));

    let target: SocketAddr = format!("{}:{DEFAULT_PORT}", OneLink::B)
        .parse()
        .expect("valid socket address");
    let attacker = net
        .a
        .run(|| UdpSocket::bind(format!("{}:0", OneLink::A)))
        .expect("bind the attacker's socket in a's namespace");
    let (report, thrown) = tcp_transfer_while(
        &net.a,
        &net.b,
        b4.into(),
        5202,
        64 * MIB,
        0x5eed_0002,
        |transfer| throw_garbage(&attacker, target, 0xbad_da7a, transfer),
    );
    println!(
        "hostile: {} malformed datagrams, {} of them during the transfer of {}",
        thrown.sent,
        thrown.during_transfer,
        report.summary()
    );
    assert!(
        thrown.sent >= DATAGRAMS * 9 / 10,
        "only {} hostile datagrams went out",
        thrown.sent
    );
    assert_eq!(report.received, report.sent, "bytes lost in the tunnel");
    assert_eq!(
        report.received_sha256, report.sent_sha256,
        "the data arrived corrupted"
    );
    assert!(node_b.is_running(), "node b died under hostile input");
    assert!(node_a.is_running(), "node a died");
    // Still answering, over both address families.
    let stats = ping(&net.a, b4.into(), 3);
    assert_eq!(
        stats.received, 3,
        "b stopped answering over IPv4: {stats:?}"
    );
    wait_reachable(&net.a, b6.into(), Duration::from_secs(5));
}
