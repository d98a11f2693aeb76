use std::net::SocketAddr;

use super::super::authority::Authority;
use super::super::authority_set::{AuthorityChain, SetError};
use super::super::cert::CertError;
use super::super::fixtures::{self, NETWORK_ID, NOW};
use super::super::identity::IdentitySecret;
use super::super::records::MAX_RECORD_LEN;
use super::super::records::{Announcement, PathObservation, Revocation};
use super::*;

/// Members 1 to 4 are current.
fn members(id: &IdentityKey) -> bool {
    (1..=4).any(|n| fixtures::member(n).identity() == *id)
}

fn nobody(_: &IdentityKey) -> bool {
    false
}

fn observation(to: u8) -> PathObservation {
    PathObservation {
        to: fixtures::member(to).identity(),
        endpoint: fixtures::endpoint(to),
        pmtu: 1420,
        rtt_us: 12_000,
        measured_unix: NOW - 5,
    }
}

fn observed(from: u8, seq: u64, p: PathObservation) -> Vec<u8> {
    SignedRecord::sign(&fixtures::member(from), seq, RecordBody::PathObservation(p)).to_bytes()
}

fn announcement(n: u8) -> Announcement {
    Announcement {
        certificate: fixtures::signed_certificate(n),
        endpoints: vec![fixtures::endpoint(n), "10.1.2.3:51820".parse().unwrap()],
    }
}

fn announced(from: u8, seq: u64, a: Announcement) -> Vec<u8> {
    SignedRecord::sign(&fixtures::member(from), seq, RecordBody::Announcement(a)).to_bytes()
}

fn revocation(of: u8, signer: &IdentitySecret) -> Revocation {
    Revocation::sign(
        &fixtures::NETWORK_ID,
        fixtures::member(of).identity(),
        u64::from(of),
        NOW,
        signer,
    )
}

fn relayed(from: u8, seq: u64, r: Revocation) -> Vec<u8> {
    SignedRecord::sign(&fixtures::member(from), seq, RecordBody::Revocation(r)).to_bytes()
}

fn check(v: &mut Validator, bytes: &[u8]) -> Result<SignedRecord, RecordError> {
    v.validate(bytes, &fixtures::network(), &members, NOW)
}

#[test]
fn a_members_observation_is_accepted_and_its_replay_refused() {
    let mut v = Validator::new();
    let bytes = observed(1, 7, observation(2));
    let r = check(&mut v, &bytes).unwrap();
    assert_eq!(r.seq, 7);
    assert_eq!(v.last_seq(&r.origin, RecordKind::PathObservation), Some(7));
    assert_eq!(
        check(&mut v, &bytes),
        Err(RecordError::StaleSequence { last: 7, got: 7 })
    );
    assert_eq!(
        check(&mut v, &observed(1, 6, observation(3))),
        Err(RecordError::StaleSequence { last: 7, got: 6 })
    );
    assert!(check(&mut v, &observed(1, 8, observation(3))).is_ok());
}

#[test]
fn a_non_members_observation_is_refused() {
    let mut v = Validator::new();
    assert_eq!(
        check(&mut v, &observed(9, 1, observation(2))),
        Err(RecordError::NotAMember)
    );
    assert_eq!(v.origins(), 0);
}

#[test]
fn an_announcement_with_a_valid_certificate_from_an_unknown_origin_is_accepted() {
    let mut v = Validator::new();
    let r = v
        .validate(
            &announced(7, 1, announcement(7)),
            &fixtures::network(),
            &nobody,
            NOW,
        )
        .unwrap();
    assert_eq!(r.origin, fixtures::member(7).identity());
}

#[test]
fn an_announcement_of_someone_elses_certificate_is_refused() {
    let mut v = Validator::new();
    assert_eq!(
        check(&mut v, &announced(1, 1, announcement(2))),
        Err(RecordError::CertificateMismatch)
    );
}

#[test]
fn an_announcement_with_a_bad_certificate_says_why() {
    let mut v = Validator::new();
    let bytes = announced(1, 1, announcement(1));
    let late = fixtures::certificate(1).not_after;
    assert_eq!(
        v.validate(&bytes, &fixtures::network(), &members, late),
        Err(RecordError::BadCertificate(CertError::Expired {
            not_after: late
        }))
    );
    let mut forged = announcement(1);
    forged.certificate = Authority::issue(&fixtures::certificate(1), &fixtures::member(1));
    assert_eq!(
        check(&mut v, &announced(1, 1, forged)),
        Err(RecordError::BadCertificate(CertError::BadSignature))
    );
}

#[test]
fn a_revocation_not_signed_by_the_authority_is_refused() {
    let mut v = Validator::new();
    let forged = revocation(3, &fixtures::member(1));
    assert_eq!(
        check(&mut v, &relayed(1, 1, forged)),
        Err(RecordError::BadRevocation)
    );
    assert!(!v.is_revoked(&fixtures::member(3).identity(), 3));
}

#[test]
fn a_revocation_relayed_by_a_non_member_is_refused() {
    let mut v = Validator::new();
    let genuine = revocation(3, &fixtures::authority());
    assert_eq!(
        check(&mut v, &relayed(9, 1, genuine)),
        Err(RecordError::NotAMember)
    );
}

#[test]
fn a_revoked_certificate_cannot_announce_its_way_back() {
    let mut v = Validator::new();
    let genuine = revocation(3, &fixtures::authority());
    check(&mut v, &relayed(1, 1, genuine)).unwrap();
    assert!(v.is_revoked(&fixtures::member(3).identity(), 3));
    assert_eq!(
        v.validate(
            &announced(3, 1, announcement(3)),
            &fixtures::network(),
            &nobody,
            NOW
        ),
        Err(RecordError::Revoked { serial: 3 })
    );
    // A new certificate (higher serial) for the same identity is fine.
    let mut renewed = fixtures::certificate(3);
    renewed.serial = 4;
    let a = Announcement {
        certificate: Authority::issue(&renewed, &fixtures::authority()),
        endpoints: vec![],
    };
    assert!(check(&mut v, &announced(3, 2, a)).is_ok());
}

#[test]
fn revocations_loaded_at_start_up_count_too() {
    let mut v = Validator::new();
    v.note_revocation(fixtures::member(2).identity(), 5);
    v.note_revocation(fixtures::member(2).identity(), 1);
    assert!(v.is_revoked(&fixtures::member(2).identity(), 5));
    assert_eq!(
        check(&mut v, &announced(2, 1, announcement(2))),
        Err(RecordError::Revoked { serial: 2 })
    );
}

#[test]
fn sequence_numbers_are_kept_per_kind() {
    let mut v = Validator::new();
    check(&mut v, &announced(1, 10, announcement(1))).unwrap();
    check(&mut v, &observed(1, 5, observation(2))).unwrap();
    assert_eq!(
        check(&mut v, &announced(1, 9, announcement(1))),
        Err(RecordError::StaleSequence { last: 10, got: 9 })
    );
}

#[test]
fn a_refused_record_changes_nothing() {
    let mut v = Validator::new();
    let mut bad = observation(2);
    bad.pmtu = 100;
    assert!(check(&mut v, &observed(1, 9, bad)).is_err());
    assert_eq!(v.origins(), 0);
    assert!(check(&mut v, &observed(1, 8, observation(2))).is_ok());
}

fn nat_lifetime(from: u8, seq: u64, lifetime_ms: u32, measured_unix: u64) -> Vec<u8> {
    let n = super::super::records::NatLifetime {
        public: "203.0.113.1:40001".parse().unwrap(),
        lifetime_ms,
        measured_unix,
    };
    SignedRecord::sign(&fixtures::member(from), seq, RecordBody::NatLifetime(n)).to_bytes()
}

#[test]
fn a_members_nat_lifetime_is_accepted_within_bounds_and_refused_outside() {
    let mut v = Validator::new();
    assert!(check(&mut v, &nat_lifetime(1, 1, 25_000, NOW - 5)).is_ok());
    assert_eq!(
        v.last_seq(&fixtures::member(1).identity(), RecordKind::NatLifetime),
        Some(1)
    );
    for (ms, at, reason) in [
        (999, NOW, "NAT lifetime outside 1 s..=1 h"),
        (3_600_001, NOW, "NAT lifetime outside 1 s..=1 h"),
        (25_000, NOW + 301, "measured in the future"),
        (25_000, NOW - 86_401, "measured more than a day ago"),
    ] {
        assert_eq!(
            check(&mut Validator::new(), &nat_lifetime(1, 1, ms, at)),
            Err(RecordError::Implausible(reason))
        );
    }
    let stranger = nat_lifetime(9, 1, 25_000, NOW);
    assert_eq!(
        Validator::new().validate(&stranger, &fixtures::network(), &members, NOW),
        Err(RecordError::NotAMember)
    );
}

#[test]
fn tampered_or_oversized_records_are_refused() {
    let mut v = Validator::new();
    let mut bytes = observed(1, 1, observation(2));
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(check(&mut v, &bytes), Err(RecordError::BadSignature));
    // Up to the authority chain's limit, junk is refused as junk.
    assert_eq!(check(&mut v, &vec![1; 5000]), Err(RecordError::Malformed));
    assert_eq!(check(&mut v, &[]), Err(RecordError::Malformed));
}

#[test]
fn implausible_observations_are_refused_with_a_reason() {
    type Mutation = fn(&mut PathObservation);
    let cases: Vec<(Mutation, &str)> = vec![
        (|p| p.pmtu = 575, "path MTU outside 576..=9000"),
        (|p| p.pmtu = 9001, "path MTU outside 576..=9000"),
        (|p| p.rtt_us = MAX_RTT_US + 1, "round-trip time above 60 s"),
        (|p| p.measured_unix = NOW + 301, "measured in the future"),
        (
            |p| p.measured_unix = NOW - 86_401,
            "measured more than a day ago",
        ),
        (
            |p| p.endpoint = "0.0.0.0:1".parse().unwrap(),
            "endpoint address is unspecified",
        ),
        (
            |p| p.endpoint = "[ff02::1]:1".parse().unwrap(),
            "endpoint address is multicast",
        ),
        (
            |p| p.endpoint = "192.0.2.1:0".parse().unwrap(),
            "endpoint port is 0",
        ),
        (
            |p| p.endpoint = "127.0.0.1:1".parse().unwrap(),
            "endpoint address is loopback",
        ),
        (
            |p| p.to = fixtures::member(1).identity(),
            "path to the origin itself",
        ),
    ];
    for (mutate, reason) in cases {
        let mut p = observation(2);
        mutate(&mut p);
        assert_eq!(
            check(&mut Validator::new(), &observed(1, 1, p)),
            Err(RecordError::Implausible(reason))
        );
    }
    let mut edge = observation(2);
    (edge.pmtu, edge.rtt_us) = (MIN_PMTU, MAX_RTT_US);
    edge.measured_unix = NOW + MAX_CLOCK_SKEW_SECS;
    assert!(check(&mut Validator::new(), &observed(1, 1, edge)).is_ok());
}

#[test]
fn announcements_with_too_many_or_bad_endpoints_are_refused() {
    let mut a = announcement(1);
    a.endpoints = (1..=9)
        .map(|i| SocketAddr::from(([192, 0, 2, i], 1)))
        .collect();
    assert_eq!(
        check(&mut Validator::new(), &announced(1, 1, a.clone())),
        Err(RecordError::Implausible("more than 8 endpoints"))
    );
    a.endpoints.truncate(8);
    assert!(check(&mut Validator::new(), &announced(1, 1, a.clone())).is_ok());
    a.endpoints[3] = "224.0.0.1:5".parse().unwrap();
    assert_eq!(
        check(&mut Validator::new(), &announced(1, 1, a)),
        Err(RecordError::Implausible("endpoint address is multicast"))
    );
}

#[test]
fn loopback_endpoints_are_accepted_only_when_allowed() {
    let mut a = announcement(1);
    a.endpoints = vec!["127.0.0.1:51820".parse().unwrap()];
    let bytes = announced(1, 1, a);
    let mut v = Validator::new();
    assert!(check(&mut v, &bytes).is_err());
    v.set_allow_loopback(true);
    assert!(check(&mut v, &bytes).is_ok());
}

#[test]
fn a_full_validator_forgets_non_members_then_the_longest_silent() {
    let net = fixtures::network();
    let mut v = Validator::with_max_origins(2);
    let id = |n| fixtures::member(n).identity();
    // 7 is known only through its announcement, so not a member.
    v.validate(&announced(7, 1, announcement(7)), &net, &members, NOW)
        .unwrap();
    v.validate(&observed(1, 1, observation(2)), &net, &members, NOW + 1)
        .unwrap();
    v.validate(&observed(2, 1, observation(1)), &net, &members, NOW + 2)
        .unwrap();
    assert_eq!(v.origins(), 2);
    assert_eq!(v.last_seq(&id(7), RecordKind::Announcement), None);
    v.validate(&observed(3, 1, observation(1)), &net, &members, NOW + 3)
        .unwrap();
    assert_eq!(v.origins(), 2);
    assert_eq!(v.last_seq(&id(1), RecordKind::PathObservation), None);
    assert_eq!(v.last_seq(&id(2), RecordKind::PathObservation), Some(1));
    assert_eq!(v.last_seq(&id(3), RecordKind::PathObservation), Some(1));
}

#[test]
fn mapped_endpoints_in_records_are_judged_as_ipv4_and_never_taken_as_written() {
    let mapped = |e: &str| -> SocketAddr { e.parse().unwrap() };
    let mut allowing = Validator::new();
    allowing.set_allow_loopback(true);
    // Announcements: a mapped loopback is loopback, a mapped multicast is
    // multicast even where loopback is allowed.
    for (endpoint, loopback_allowed, why) in [
        (
            "[::ffff:127.0.0.1]:51820",
            false,
            "endpoint address is loopback",
        ),
        (
            "[::ffff:224.0.0.1]:51820",
            true,
            "endpoint address is multicast",
        ),
        (
            "[::ffff:0.0.0.0]:51820",
            true,
            "endpoint address is unspecified",
        ),
    ] {
        let mut a = announcement(1);
        a.endpoints[1] = mapped(endpoint);
        let v = if loopback_allowed {
            &mut allowing
        } else {
            &mut Validator::new()
        };
        assert_eq!(
            check(v, &announced(1, 1, a)),
            Err(RecordError::Implausible(why)),
            "{endpoint}"
        );
    }
    // Observations and NAT lifetimes likewise.
    let mut p = observation(2);
    p.endpoint = mapped("[::ffff:127.0.0.1]:51820");
    assert_eq!(
        check(&mut Validator::new(), &observed(1, 1, p)),
        Err(RecordError::Implausible("endpoint address is loopback"))
    );
    let n = super::super::records::NatLifetime {
        public: mapped("[::ffff:224.0.0.1]:40001"),
        lifetime_ms: 25_000,
        measured_unix: NOW,
    };
    let n = SignedRecord::sign(&fixtures::member(1), 1, RecordBody::NatLifetime(n)).to_bytes();
    assert_eq!(
        check(&mut Validator::new(), &n),
        Err(RecordError::Implausible("endpoint address is multicast"))
    );
    // A usable address spelt mapped is refused too: members compare the
    // endpoints of records, and the signature covers the spelling.
    let mut a = announcement(1);
    a.endpoints[1] = mapped("[::ffff:192.0.2.9]:51820");
    assert!(matches!(
        check(&mut Validator::new(), &announced(1, 1, a)),
        Err(RecordError::Implausible(why)) if why.contains("IPv4-mapped")
    ));
}

fn chain_record(from: &IdentitySecret, seq: u64, chain: AuthorityChain) -> Vec<u8> {
    SignedRecord::sign(from, seq, RecordBody::AuthoritySet(chain)).to_bytes()
}

#[test]
fn an_authority_chain_from_the_anchor_is_taken_from_any_member_and_a_forged_one_refused() {
    let net = fixtures::network();
    let genesis =
        AuthorityChain::genesis(NETWORK_ID, "first", &fixtures::authority(), 3600, NOW).unwrap();
    let mut v = Validator::new();
    let ok = v.validate(
        &chain_record(&fixtures::member(1), 1, genesis.clone()),
        &net,
        &members,
        NOW,
    );
    assert!(matches!(ok.map(|r| r.body), Ok(RecordBody::AuthoritySet(c)) if c == genesis));
    // From someone who is not a member: not its business.
    assert_eq!(
        v.validate(
            &chain_record(&fixtures::member(9), 1, genesis.clone()),
            &net,
            &members,
            NOW
        )
        .unwrap_err(),
        RecordError::NotAMember
    );
    // A chain that starts from another key than the anchor.
    let outsider = IdentitySecret::from_bytes([0x77; 32]);
    let forged = AuthorityChain::genesis(NETWORK_ID, "first", &outsider, 3600, NOW).unwrap();
    assert_eq!(
        v.validate(
            &chain_record(&fixtures::member(2), 1, forged),
            &net,
            &members,
            NOW
        )
        .unwrap_err(),
        RecordError::BadAuthoritySet(SetError::SignerNotInPreviousVersion)
    );
}

#[test]
fn only_an_authority_chain_may_be_longer_than_an_ordinary_record() {
    let mut a = announcement(1);
    a.endpoints = vec![fixtures::endpoint(2); 1000];
    let bytes = announced(1, 1, a);
    assert!(bytes.len() > MAX_RECORD_LEN);
    assert_eq!(
        SignedRecord::from_bytes(&bytes).unwrap_err(),
        RecordError::TooLarge { len: bytes.len() }
    );
    let big = vec![0u8; super::super::records::MAX_AUTHORITY_RECORD_LEN + 1];
    assert_eq!(
        SignedRecord::from_bytes(&big).unwrap_err(),
        RecordError::TooLarge { len: big.len() }
    );
}
