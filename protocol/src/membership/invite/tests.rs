use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::super::fixtures::{NETWORK_ID, NOW};
use super::*;
use crate::StaticSecret;

fn endpoints_v6() -> Vec<SocketAddr> {
    (1..=4u16)
        .map(|i| {
            SocketAddr::from((
                [0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, i],
                65535,
            ))
        })
        .collect()
}

fn token(endpoints: Vec<SocketAddr>, name: Option<&str>) -> InviteToken {
    InviteToken::generate(
        NETWORK_ID,
        StaticSecret::from_bytes([3; 32]).public_key(),
        endpoints,
        name.map(Into::into),
        3600,
        NOW,
        &mut ChaCha20Rng::seed_from_u64(7),
    )
    .unwrap()
}

fn simple() -> InviteToken {
    token(vec!["192.0.2.1:51820".parse().unwrap()], Some("db-1"))
}

#[test]
fn a_token_round_trips_through_its_text() {
    for t in [simple(), token(endpoints_v6(), None)] {
        let text = t.to_text();
        assert!(text.starts_with("weft1."));
        assert_eq!(InviteToken::parse(&text, NOW).unwrap(), t);
    }
}

#[test]
fn the_text_is_url_safe_and_has_no_spaces() {
    let text = token(endpoints_v6(), Some("a")).to_text();
    assert!(text
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)));
}

#[test]
fn a_token_with_four_ipv6_endpoints_is_shorter_than_250_characters() {
    let text = token(endpoints_v6(), None).to_text();
    assert!(text.len() < 250, "{} characters", text.len());
    let named = token(endpoints_v6(), Some("web-01")).to_text();
    assert!(named.len() < 250, "{} characters", named.len());
}

#[test]
fn whitespace_around_and_inside_the_token_is_ignored() {
    let t = simple();
    let text = t.to_text();
    let mut mangled = String::from("  \n\t");
    for (i, c) in text.chars().enumerate() {
        mangled.push(c);
        if i % 20 == 19 {
            mangled.push_str(if i % 40 == 39 { "\r\n" } else { "\n " });
        }
    }
    mangled.push_str(" \n");
    assert_eq!(InviteToken::parse(&mangled, NOW).unwrap(), t);
}

#[test]
fn any_one_changed_character_is_reported_as_corruption() {
    let text = simple().to_text();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in INVITE_PREFIX.len()..text.len() {
        let old = text.as_bytes()[i];
        for new in alphabet.bytes().filter(|c| *c != old).step_by(7) {
            let mut bad = text.clone().into_bytes();
            bad[i] = new;
            let bad = String::from_utf8(bad).unwrap();
            assert_eq!(
                InviteToken::parse(&bad, NOW),
                Err(InviteError::Corrupted),
                "position {i}"
            );
        }
    }
}

#[test]
fn a_truncated_token_is_corrupted_or_malformed() {
    let text = simple().to_text();
    for len in 0..text.len() {
        let err = InviteToken::parse(&text[..len], NOW).unwrap_err();
        if len < INVITE_PREFIX.len() {
            assert_eq!(err, InviteError::Malformed, "{len}");
        } else {
            assert_eq!(err, InviteError::Corrupted, "{len}");
        }
    }
}

#[test]
fn text_that_is_not_a_token_is_malformed() {
    for text in [
        "",
        "hello",
        "weft.abc",
        "weftx.abc",
        "weft01.abc",
        "wg1.abc",
        "weft1",
    ] {
        assert_eq!(
            InviteToken::parse(text, NOW),
            Err(InviteError::Malformed),
            "{text:?}"
        );
    }
    let huge = "a".repeat(MAX_INVITE_TEXT_LEN + 1);
    assert_eq!(InviteToken::parse(&huge, NOW), Err(InviteError::Malformed));
}

#[test]
fn a_newer_version_is_reported_as_such() {
    let text = simple().to_text().replacen("weft1.", "weft2.", 1);
    let err = InviteToken::parse(&text, NOW).unwrap_err();
    assert_eq!(err, InviteError::UnsupportedVersion(2));
    assert!(err.to_string().contains("newer"));
}

#[test]
fn an_expired_token_says_when_it_expired() {
    let t = simple();
    let text = t.to_text();
    assert!(InviteToken::parse(&text, t.expires_unix - 1).is_ok());
    let err = InviteToken::parse(&text, t.expires_unix).unwrap_err();
    assert_eq!(err, InviteError::Expired { at: NOW + 3600 });
    assert_eq!(
        err.to_string(),
        "this invite expired at 2023-11-14 23:13:20 UTC"
    );
}

#[test]
fn unix_times_print_as_utc_dates() {
    assert_eq!(Utc(0).to_string(), "1970-01-01 00:00:00 UTC");
    assert_eq!(Utc(951_782_400).to_string(), "2000-02-29 00:00:00 UTC");
    assert_eq!(Utc(1_700_000_000).to_string(), "2023-11-14 22:13:20 UTC");
    assert_eq!(Utc(4_102_444_799).to_string(), "2099-12-31 23:59:59 UTC");
    // Far-future times print something rather than panic.
    assert!(Utc(u64::MAX).to_string().ends_with("UTC"));
}

#[test]
fn the_messages_are_the_documented_ones() {
    assert_eq!(
        InviteError::Malformed.to_string(),
        "not a weft invite token"
    );
    assert_eq!(
        InviteError::Corrupted.to_string(),
        "the token was damaged in copying (checksum mismatch)"
    );
}

#[test]
fn generating_refuses_bad_arguments() {
    let key = StaticSecret::from_bytes([3; 32]).public_key();
    let ep: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let rng = &mut ChaCha20Rng::seed_from_u64(1);
    let cases: [(Vec<SocketAddr>, Option<String>, u64); 5] = [
        (vec![], None, 60),
        (vec![ep; 5], None, 60),
        (vec!["0.0.0.0:1".parse().unwrap()], None, 60),
        (vec![ep], Some("Bad Name".into()), 60),
        (vec![ep], None, 0),
    ];
    for (endpoints, name, ttl) in cases {
        let got = InviteToken::generate(NETWORK_ID, key, endpoints, name, ttl, NOW, rng);
        assert!(matches!(got, Err(InviteError::Invalid(_))), "{got:?}");
    }
}

#[test]
fn contents_that_break_the_rules_are_refused_even_with_a_good_checksum() {
    let mut t = simple();
    t.inviter_endpoints.clear();
    assert!(matches!(
        InviteToken::parse(&t.to_text(), NOW),
        Err(InviteError::Invalid(_))
    ));
    let text = encode_text(&mut b"not postcard".to_vec());
    assert_eq!(InviteToken::parse(&text, NOW), Err(InviteError::Malformed));
}

#[test]
fn secrets_differ_between_tokens_and_only_the_hash_is_kept() {
    let rng = &mut ChaCha20Rng::seed_from_u64(9);
    let key = StaticSecret::from_bytes([3; 32]).public_key();
    let ep = vec!["192.0.2.1:1".parse().unwrap()];
    let a = InviteToken::generate(NETWORK_ID, key, ep.clone(), None, 60, NOW, rng).unwrap();
    let b = InviteToken::generate(NETWORK_ID, key, ep, None, 60, NOW, rng).unwrap();
    assert_ne!(a.secret, b.secret);
    assert_ne!(a.secret_hash(), a.secret);
    assert!(InviteToken::secret_matches(&a.secret, &a.secret_hash()));
    assert!(!InviteToken::secret_matches(&b.secret, &a.secret_hash()));
    let mut h = Blake2s256::new();
    h.update(b"weft-invite");
    h.update(a.secret);
    assert_eq!(a.secret_hash(), <[u8; 32]>::from(h.finalize()));
}

#[test]
fn the_secret_is_redacted_in_debug() {
    let t = simple();
    let debug = format!("{t:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(&format!("{:?}", t.secret)));
}

#[test]
fn a_token_naming_a_mapped_multicast_or_unspecified_inviter_is_refused() {
    let key = StaticSecret::from_bytes([3; 32]).public_key();
    let rng = &mut ChaCha20Rng::seed_from_u64(1);
    for bad in ["[::ffff:224.0.0.1]:51820", "[::ffff:0.0.0.0]:51820"] {
        let endpoints = vec![bad.parse().unwrap()];
        let got = InviteToken::generate(NETWORK_ID, key, endpoints, None, 60, NOW, rng);
        assert!(
            matches!(got, Err(InviteError::Invalid(_))),
            "{bad}: {got:?}"
        );
        // Written by hand past `generate`, with a good checksum.
        let mut t = simple();
        t.inviter_endpoints = vec![bad.parse().unwrap()];
        let parsed = InviteToken::parse(&t.to_text(), NOW);
        assert!(
            matches!(parsed, Err(InviteError::Invalid(_))),
            "{bad}: {parsed:?}"
        );
    }
}

#[test]
fn a_mapped_inviter_endpoint_is_generated_as_ipv4_and_refused_as_written() {
    let t = token(vec!["[::ffff:192.0.2.1]:51820".parse().unwrap()], None);
    assert_eq!(
        t.inviter_endpoints,
        vec!["192.0.2.1:51820".parse::<SocketAddr>().unwrap()]
    );
    let mut mapped = simple();
    mapped.inviter_endpoints = vec!["[::ffff:192.0.2.1]:51820".parse().unwrap()];
    assert!(matches!(
        InviteToken::parse(&mapped.to_text(), NOW),
        Err(InviteError::Invalid(_))
    ));
}
