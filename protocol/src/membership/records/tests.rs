use super::super::fixtures::{self, NOW};
use super::*;

fn observation() -> RecordBody {
    RecordBody::PathObservation(PathObservation {
        to: fixtures::member(2).identity(),
        endpoint: fixtures::endpoint(2),
        pmtu: 1420,
        rtt_us: 12_000,
        measured_unix: NOW,
    })
}

fn bodies() -> Vec<RecordBody> {
    vec![
        RecordBody::Announcement(Announcement {
            certificate: fixtures::signed_certificate(1),
            endpoints: vec![
                fixtures::endpoint(1),
                "[2001:db8::1]:51820".parse().unwrap(),
            ],
        }),
        observation(),
        RecordBody::Revocation(Revocation::sign(
            &fixtures::NETWORK_ID,
            fixtures::member(3).identity(),
            3,
            NOW,
            &fixtures::authority(),
        )),
    ]
}

#[test]
fn every_kind_of_record_round_trips_and_verifies() {
    for body in bodies() {
        let r = SignedRecord::sign(&fixtures::member(1), 7, body);
        let again = SignedRecord::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(again, r);
        assert_eq!(again.verify_signature(), Ok(()));
    }
}

#[test]
fn every_tampered_byte_is_refused_without_panicking() {
    for body in bodies() {
        let wire = SignedRecord::sign(&fixtures::member(1), 7, body).to_bytes();
        for i in 0..wire.len() {
            for flip in [0x01, 0x40, 0xff] {
                let mut bad = wire.clone();
                bad[i] ^= flip;
                let verdict = SignedRecord::from_bytes(&bad).and_then(|r| r.verify_signature());
                assert!(
                    matches!(
                        verdict,
                        Err(RecordError::BadSignature
                            | RecordError::Malformed
                            | RecordError::UnsupportedVersion(_))
                    ),
                    "byte {i} ^ {flip:#x}: {verdict:?}"
                );
            }
        }
    }
}

#[test]
fn truncated_or_extended_records_are_malformed() {
    let wire = SignedRecord::sign(&fixtures::member(1), 7, observation()).to_bytes();
    assert_eq!(SignedRecord::from_bytes(&[]), Err(RecordError::Malformed));
    for len in 1..wire.len() {
        assert_eq!(
            SignedRecord::from_bytes(&wire[..len]),
            Err(RecordError::Malformed)
        );
    }
    let mut long = wire;
    long.push(0);
    assert_eq!(SignedRecord::from_bytes(&long), Err(RecordError::Malformed));
}

#[test]
fn an_unknown_version_or_an_oversized_record_is_refused_first() {
    let mut wire = SignedRecord::sign(&fixtures::member(1), 7, observation()).to_bytes();
    wire[0] = 9;
    assert_eq!(
        SignedRecord::from_bytes(&wire),
        Err(RecordError::UnsupportedVersion(9))
    );
    assert_eq!(
        SignedRecord::from_bytes(&[RECORD_VERSION; MAX_AUTHORITY_RECORD_LEN + 1]),
        Err(RecordError::TooLarge {
            len: MAX_AUTHORITY_RECORD_LEN + 1
        })
    );
}

#[test]
fn the_signature_covers_origin_and_sequence() {
    let r = SignedRecord::sign(&fixtures::member(1), 7, observation());
    let mut other_seq = r.clone();
    other_seq.seq = 8;
    assert_eq!(other_seq.verify_signature(), Err(RecordError::BadSignature));
    let mut other_origin = r;
    other_origin.origin = fixtures::member(2).identity();
    assert_eq!(
        other_origin.verify_signature(),
        Err(RecordError::BadSignature)
    );
}

#[test]
fn a_revocation_verifies_only_for_its_network_and_authority() {
    let net = fixtures::network();
    let rev = Revocation::sign(
        net.id(),
        fixtures::member(3).identity(),
        3,
        NOW,
        &fixtures::authority(),
    );
    assert_eq!(rev.verify(&net), Ok(()));
    let forged = Revocation::sign(
        net.id(),
        fixtures::member(3).identity(),
        3,
        NOW,
        &fixtures::member(1),
    );
    assert!(forged.verify(&net).is_err());
    let elsewhere = Revocation::sign(
        &NetworkId([1; 16]),
        fixtures::member(3).identity(),
        3,
        NOW,
        &fixtures::authority(),
    );
    assert!(elsewhere.verify(&net).is_err());
    let mut later = rev.clone();
    later.serial = 4;
    assert!(later.verify(&net).is_err());
}

#[test]
fn a_revocation_covers_its_serial_and_earlier_ones() {
    let rev = Revocation::sign(
        &fixtures::NETWORK_ID,
        fixtures::member(3).identity(),
        3,
        NOW,
        &fixtures::authority(),
    );
    let mut cert = fixtures::certificate(3);
    assert!(rev.revokes(&cert));
    cert.serial = 2;
    assert!(rev.revokes(&cert));
    cert.serial = 4;
    assert!(!rev.revokes(&cert));
    assert!(!rev.revokes(&fixtures::certificate(2)));
}

#[test]
fn an_announcement_with_eight_endpoints_fits_easily() {
    let body = RecordBody::Announcement(Announcement {
        certificate: fixtures::signed_certificate(1),
        endpoints: (0..8)
            .map(|i| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 65535)))
            .collect(),
    });
    let wire = SignedRecord::sign(&fixtures::member(1), u64::MAX, body).to_bytes();
    assert!(wire.len() < MAX_RECORD_LEN / 4, "{}", wire.len());
}

#[test]
fn reasons_list_every_name_once() {
    let all = [
        RecordError::TooLarge { len: 0 },
        RecordError::UnsupportedVersion(0),
        RecordError::Malformed,
        RecordError::BadSignature,
        RecordError::NotAMember,
        RecordError::BadCertificate(CertError::Malformed),
        RecordError::CertificateMismatch,
        RecordError::Revoked { serial: 0 },
        RecordError::BadRevocation,
        RecordError::BadAuthoritySet(crate::membership::SetError::Empty),
        RecordError::StaleSequence { last: 0, got: 0 },
        RecordError::Implausible(""),
    ];
    let names: Vec<_> = all.iter().map(|e| e.as_str()).collect();
    assert_eq!(names, RecordError::REASONS);
    let kinds: Vec<_> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "announcement",
            "path_observation",
            "revocation",
            "nat",
            "authority_set"
        ]
    );
}
