//! Every control message against its bytes as `docs/protocol.md` lays them
//! out, round trips, and refusals of what is cut short or out of range.

use super::*;

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const KEY: [u8; 32] = [0xab; 32];

/// One of each message, with the exact bytes it is on the wire.
fn golden() -> Vec<(Control<'static>, Vec<u8>)> {
    let list: &'static [SocketAddr] = Box::leak(Box::new([
        v4("203.0.113.7:51820"),
        "[2001:db8::1]:4000".parse().unwrap(),
    ]));
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        (
            Control::Probe(Probe {
                id: 0x0403_0201,
                len: 9,
            }),
            vec![0x01, 1, 2, 3, 4, 0, 0, 0, 0],
        ),
        (
            Control::ProbeAck(ProbeAck {
                id: 7,
                received: 0x0510,
            }),
            vec![0x02, 7, 0, 0, 0, 0x10, 0x05],
        ),
        (
            Control::Fragment(Fragment {
                id: 0x0102_0304,
                index: 1,
                count: 3,
                payload: b"xyz",
            }),
            vec![0x03, 4, 3, 2, 1, 1, 3, b'x', b'y', b'z'],
        ),
        (
            Control::Ping(Ping { id: 0xdead_beef }),
            vec![0x04, 0xef, 0xbe, 0xad, 0xde],
        ),
        (
            Control::Pong(Pong {
                id: 1,
                observed: v4("192.0.2.1:51820"),
            }),
            // 51820 = 0xca6c, little endian.
            vec![0x05, 1, 0, 0, 0, 4, 192, 0, 2, 1, 0x6c, 0xca],
        ),
        (
            Control::BindingOpen(BindingTrial {
                trial: 2,
                nonce: 0x0807_0605_0403_0201,
            }),
            vec![0x06, 2, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        ),
        (
            Control::BindingAck(BindingAck {
                trial: 2,
                nonce: 3,
                probe: v4("203.0.113.1:40100"),
                main: "[2001:db8::2]:1".parse().unwrap(),
            }),
            cat(&[
                &[0x07, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0],
                // 40100 = 0x9ca4.
                &[4, 203, 0, 113, 1, 0xa4, 0x9c],
                &[
                    6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                ],
                &[1, 0],
            ]),
        ),
        (
            Control::BindingCheck(BindingCheck { trial: 9 }),
            vec![0x08, 9, 0, 0, 0],
        ),
        (
            Control::BindingPing(BindingTrial { trial: 9, nonce: 1 }),
            vec![0x09, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            Control::RelayRequest(Relay {
                key: PublicKey(KEY),
                datagram: &[4, 0, 0, 0],
            }),
            cat(&[&[0x10], &KEY, &[4, 0, 0, 0]]),
        ),
        (
            Control::Relayed(Relay {
                key: PublicKey(KEY),
                datagram: &[1],
            }),
            cat(&[&[0x11], &KEY, &[1]]),
        ),
        (
            Control::PunchOffer(PunchOffer {
                answer: true,
                endpoints: Endpoints::from_list(list),
            }),
            cat(&[
                &[0x12, 1, 2],
                &[4, 203, 0, 113, 7, 0x6c, 0xca],
                &[
                    6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ],
                // 4000 = 0x0fa0.
                &[0xa0, 0x0f],
            ]),
        ),
        (Control::Punch, vec![0x13]),
    ]
}

#[test]
fn every_message_is_the_bytes_the_specification_gives() {
    let all = golden();
    let mut kinds: Vec<u8> = all.iter().map(|(c, _)| c.kind()).collect();
    kinds.dedup();
    assert_eq!(kinds.len(), 13, "one of each of the 13 messages");
    for (message, bytes) in all {
        assert_eq!(message.to_vec(), bytes, "{message:?} emits");
        assert_eq!(message.buffer_len(), bytes.len());
        assert_eq!(Control::parse(&bytes), Ok(message), "{bytes:02x?} parses");
    }
}

#[test]
fn padding_after_a_message_is_ignored_except_zeros_after_an_offer() {
    for (message, bytes) in golden() {
        let padded = [&bytes[..], &[0u8; 9]].concat();
        let parsed = Control::parse(&padded).unwrap();
        match (message, parsed) {
            // A probe's length is the whole plaintext's; a piece and a
            // relayed datagram run to the end.
            (Control::Probe(p), Control::Probe(q)) => assert_eq!(q.len, p.len + 9),
            (Control::Fragment(_), Control::Fragment(f)) => assert_eq!(f.payload.len(), 3 + 9),
            (Control::RelayRequest(_), Control::RelayRequest(_))
            | (Control::Relayed(_), Control::Relayed(_)) => {}
            (m, p) => assert_eq!(m, p),
        }
    }
    let offer = Control::PunchOffer(PunchOffer {
        answer: false,
        endpoints: Endpoints::from_list(&[]),
    })
    .to_vec();
    assert_eq!(offer, [0x12, 0, 0]);
    assert!(Control::parse(&[0x12, 0, 0, 0, 0]).is_ok());
    assert_eq!(
        Control::parse(&[0x12, 0, 0, 0, 1]),
        Err(ControlError::BadField {
            kind: TYPE_PUNCH_OFFER,
            field: "padding"
        })
    );
}

#[test]
fn a_message_cut_anywhere_before_its_last_fixed_byte_is_refused() {
    for (message, bytes) in golden() {
        // What may end early: a probe's zeros, nothing after a punch.
        let shortest = match message {
            Control::Probe(_) => PROBE_MIN_LEN,
            Control::RelayRequest(_) => RELAY_HEADER_LEN,
            Control::Relayed(_) | Control::Fragment(_) => {
                bytes.len() - message_payload_len(&message) + 1
            }
            _ => bytes.len(),
        };
        for cut in 0..shortest {
            assert!(
                Control::parse(&bytes[..cut]).is_err(),
                "{message:?} cut at {cut} parses"
            );
        }
    }
}

fn message_payload_len(message: &Control<'_>) -> usize {
    match message {
        Control::Fragment(f) => f.payload.len(),
        Control::Relayed(r) | Control::RelayRequest(r) => r.datagram.len(),
        _ => 0,
    }
}

#[test]
fn out_of_range_fields_and_unassigned_types_are_refused() {
    let piece = |index: u8, count: u8| [0x03, 0, 0, 0, 0, index, count, 0xff];
    assert!(Control::parse(&piece(0, 1)).is_ok());
    assert!(Control::parse(&piece(3, 4)).is_ok());
    for (index, count) in [(0, 0), (2, 2), (0, 5), (4, 4)] {
        assert!(matches!(
            Control::parse(&piece(index, count)),
            Err(ControlError::BadField { kind: 0x03, .. })
        ));
    }
    let mut pong = vec![0x05, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6];
    assert_eq!(
        Control::parse(&pong),
        Err(ControlError::BadEndpoint { kind: 0x05 })
    );
    pong[5] = 6;
    assert_eq!(
        Control::parse(&pong),
        Err(ControlError::BadEndpoint { kind: 0x05 }),
        "an IPv6 family with IPv4 bytes is cut short"
    );
    assert!(Control::parse(&[0x12, 2, 0]).is_err(), "role 2");
    let mut nine = vec![0x12, 0, 9];
    for _ in 0..9 {
        nine.extend_from_slice(&[4, 192, 0, 2, 1, 1, 0]);
    }
    assert!(Control::parse(&nine).is_err(), "more than 8 endpoints");
    for t in [
        0x00, 0x0a, 0x0b, 0x0c, 0x0f, 0x14, 0x1f, 0x20, 0x45, 0x60, 0xff,
    ] {
        assert_eq!(Control::parse(&[t; 40]), Err(ControlError::UnknownType(t)));
    }
    assert_eq!(Control::parse(&[]), Err(ControlError::Empty));
}

#[test]
fn an_offer_sends_at_most_eight_endpoints() {
    let many: Vec<SocketAddr> = (1..=12)
        .map(|i| SocketAddr::from(([192, 0, 2, i], 1000)))
        .collect();
    let bytes = Control::PunchOffer(PunchOffer {
        answer: false,
        endpoints: Endpoints::from_list(&many),
    })
    .to_vec();
    let Ok(Control::PunchOffer(offer)) = Control::parse(&bytes) else {
        panic!("not an offer");
    };
    assert_eq!(offer.endpoints.len(), MAX_CANDIDATES);
    assert!(offer
        .endpoints
        .iter()
        .eq(many[..MAX_CANDIDATES].iter().copied()));
}

#[test]
fn a_relay_request_header_is_written_in_front_of_its_datagram() {
    let datagram = [4u8, 0, 0, 0, 9, 9];
    let mut buf = vec![0u8; RELAY_HEADER_LEN + datagram.len()];
    buf[RELAY_HEADER_LEN..].copy_from_slice(&datagram);
    assert_eq!(
        Relay::emit_request_header(&PublicKey(KEY), &mut buf),
        Some(RELAY_HEADER_LEN)
    );
    let expect = Control::RelayRequest(Relay {
        key: PublicKey(KEY),
        datagram: &datagram,
    });
    assert_eq!(buf, expect.to_vec());
    assert_eq!(
        Relay::emit_request_header(&PublicKey(KEY), &mut [0u8; 32]),
        None
    );
}

#[test]
fn emit_into_a_short_buffer_writes_nothing() {
    for (message, bytes) in golden() {
        let mut short = vec![0x5au8; bytes.len() - 1];
        assert_eq!(message.emit(&mut short), None);
        assert!(short.iter().all(|&b| b == 0x5a));
    }
}

#[test]
fn every_length_of_every_type_parses_or_errors_without_panicking() {
    let mut buf = [0u8; 80];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37);
    }
    for kind in 0..=0x20u8 {
        for family in [4u8, 6, 7] {
            buf[0] = kind;
            // Where endpoints may start: pong, binding ack, offer.
            for at in [3, 5, 13, 20] {
                buf[at] = family;
            }
            buf[1] = 0;
            buf[2] = 2;
            for len in 0..buf.len() {
                if let Ok(c) = Control::parse(&buf[..len]) {
                    assert!(c.buffer_len() <= len.max(PROBE_MIN_LEN));
                    assert_eq!(Control::parse(&c.to_vec()), Ok(c));
                }
            }
        }
    }
}

#[test]
fn an_ipv4_mapped_endpoint_is_sent_as_ipv4_and_refused_as_family_6() {
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:51820".parse().unwrap();
    // Sent: family 4, 7 bytes, wherever an endpoint appears.
    let pong = Control::Pong(Pong {
        id: 1,
        observed: mapped,
    })
    .to_vec();
    assert_eq!(pong[PING_LEN..], [4, 127, 0, 0, 1, 0x6c, 0xca]);
    let list = [mapped];
    let offer = Control::PunchOffer(PunchOffer {
        answer: false,
        endpoints: Endpoints::from_list(&list),
    })
    .to_vec();
    let Ok(Control::PunchOffer(o)) = Control::parse(&offer) else {
        panic!("not an offer");
    };
    assert_eq!(
        o.endpoints.iter().collect::<Vec<_>>(),
        [v4("127.0.0.1:51820")]
    );
    // Received as family 6: the message is malformed, whichever carries it.
    let mut family6 = vec![6];
    family6.extend_from_slice(&[0; 10]);
    family6.extend_from_slice(&[0xff, 0xff, 224, 0, 0, 1]);
    family6.extend_from_slice(&51820u16.to_le_bytes());
    let mut bad_offer = vec![TYPE_PUNCH_OFFER, 0, 1];
    bad_offer.extend_from_slice(&family6);
    let mut bad_pong = vec![TYPE_PONG, 1, 0, 0, 0];
    bad_pong.extend_from_slice(&family6);
    for bad in [bad_offer, bad_pong] {
        assert_eq!(
            Control::parse(&bad),
            Err(ControlError::BadEndpoint { kind: bad[0] }),
            "{bad:02x?}"
        );
    }
    // A real IPv6 endpoint still parses.
    let mut v6 = vec![TYPE_PUNCH_OFFER, 0, 1, 6];
    v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    v6.extend_from_slice(&51820u16.to_le_bytes());
    assert!(Control::parse(&v6).is_ok());
}
