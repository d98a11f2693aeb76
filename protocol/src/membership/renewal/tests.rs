use super::*;
use crate::membership::fixtures::{self, NOW};
use crate::membership::{Authority, IdentitySecret};

fn request(n: u8) -> RenewalRequest {
    RenewalRequest {
        certificate: fixtures::signed_certificate(n),
    }
}

fn nobody_revoked(_: &IdentityKey) -> bool {
    false
}

#[test]
fn a_members_own_certificate_is_renewed_with_everything_but_serial_and_validity_kept() {
    let network = fixtures::network();
    let me = fixtures::member(3).identity();
    let old = request(3)
        .check(&me, &network, &nobody_revoked, NOW)
        .unwrap();
    let new = renewed_certificate(&old, 600, NOW + 10);
    assert_eq!(new.identity, old.identity);
    assert_eq!(new.noise_key, old.noise_key);
    assert_eq!(
        (new.name.as_str(), new.ipv4, new.ipv6),
        (old.name.as_str(), old.ipv4, old.ipv6)
    );
    assert!(new.serial > old.serial);
    assert!(new.serial >= NOW + 10);
    assert_eq!(new.not_after, NOW + 610);
    assert_eq!(new.not_before, NOW + 10);
    // What the holder signs verifies.
    let signed = Authority::issue(&new, &fixtures::authority());
    assert_eq!(signed.verify(&network, NOW + 10).unwrap(), new);
}

#[test]
fn a_serial_grows_even_when_the_holders_clock_is_behind() {
    let mut old = fixtures::certificate(3);
    old.serial = NOW + 1000;
    assert_eq!(renewed_certificate(&old, 600, NOW).serial, NOW + 1001);
}

#[test]
fn a_request_for_another_members_certificate_is_refused() {
    let network = fixtures::network();
    let other = fixtures::member(4).identity();
    assert_eq!(
        request(3).check(&other, &network, &nobody_revoked, NOW),
        Err(RenewalRefusal::WrongIdentity)
    );
}

#[test]
fn a_revoked_member_is_refused() {
    let network = fixtures::network();
    let me = fixtures::member(3).identity();
    assert_eq!(
        request(3).check(&me, &network, &|k| *k == me, NOW),
        Err(RenewalRefusal::Revoked)
    );
}

#[test]
fn a_certificate_no_trusted_key_signed_is_refused() {
    let network = fixtures::network();
    let me = fixtures::member(3).identity();
    let forged = RenewalRequest {
        certificate: Authority::issue(
            &fixtures::certificate(3),
            &IdentitySecret::from_bytes([9; 32]),
        ),
    };
    assert_eq!(
        forged.check(&me, &network, &nobody_revoked, NOW),
        Err(RenewalRefusal::NotAMember)
    );
}

#[test]
fn an_expired_certificate_is_renewed_within_the_grace_and_refused_after() {
    let network = fixtures::network();
    let me = fixtures::member(3).identity();
    let not_after = fixtures::certificate(3).not_after;
    assert!(request(3)
        .check(&me, &network, &nobody_revoked, not_after + 3600)
        .is_ok());
    assert!(request(3)
        .check(
            &me,
            &network,
            &nobody_revoked,
            not_after + RENEWAL_GRACE_SECS
        )
        .is_ok());
    assert_eq!(
        request(3).check(
            &me,
            &network,
            &nobody_revoked,
            not_after + RENEWAL_GRACE_SECS + 1
        ),
        Err(RenewalRefusal::ExpiredTooLong)
    );
}

#[test]
fn messages_round_trip_and_garbage_is_refused() {
    let req = request(3);
    assert_eq!(
        RenewalRequest::from_bytes(&req.to_bytes()),
        Some(req.clone())
    );
    for resp in [
        RenewalResponse::Renewed(fixtures::signed_certificate(4)),
        RenewalResponse::Refused(RenewalRefusal::Busy),
    ] {
        assert_eq!(RenewalResponse::from_bytes(&resp.to_bytes()), Some(resp));
    }
    assert_eq!(RenewalRequest::from_bytes(&[]), None);
    assert_eq!(RenewalRequest::from_bytes(&[2]), None);
    let mut long = req.to_bytes();
    long.push(0);
    assert_eq!(RenewalRequest::from_bytes(&long), None);
    assert_eq!(
        RenewalRequest::from_bytes(&vec![1; MAX_RENEWAL_MESSAGE_LEN + 1]),
        None
    );
    assert_eq!(RenewalResponse::from_bytes(&[1, 9]), None);
}

#[test]
fn renewal_starts_when_a_third_of_the_lifetime_remains_spread_by_a_twelfth() {
    assert_eq!(renew_at(0, 60, 0.0), 40);
    assert_eq!(renew_at(0, 60, 1.0), 35);
    assert_eq!(renew_at(1000, 1000 + 30 * 86_400, 0.0), 1000 + 20 * 86_400);
    // Out-of-range jitter and backwards certificates stay sane.
    assert_eq!(renew_at(0, 60, 7.0), 35);
    assert_eq!(renew_at(100, 50, 0.5), 100);
}

#[test]
fn retries_back_off_exponentially_to_a_cap() {
    let month = 30 * 86_400;
    let delays: Vec<u64> = (1..=10).map(|f| retry_delay(f, month)).collect();
    assert_eq!(delays[..4], [5, 10, 20, 40]);
    assert_eq!(*delays.last().unwrap(), RETRY_CAP_SECS);
    // A one-minute certificate retries every second, then every three.
    assert_eq!(retry_delay(1, 60), 1);
    assert_eq!(retry_delay(2, 60), 2);
    assert_eq!(retry_delay(9, 60), 3);
    assert_eq!(retry_delay(u32::MAX, 60), 3);
}
