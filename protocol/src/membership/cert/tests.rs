use super::super::authority::Authority;
use super::super::fixtures::{self, NOW};
use super::super::identity::IdentitySecret;
use super::*;

fn issue(cert: &Certificate) -> SignedCertificate {
    Authority::issue(cert, &fixtures::authority())
}

#[test]
fn an_issued_certificate_verifies_and_round_trips() {
    let cert = fixtures::certificate(3);
    let signed = issue(&cert);
    assert_eq!(signed.verify(&fixtures::network(), NOW), Ok(cert.clone()));
    let again = SignedCertificate::from_bytes(&signed.to_bytes()).unwrap();
    assert_eq!(again, signed);
    assert_eq!(again.verify(&fixtures::network(), NOW), Ok(cert));
}

#[test]
fn a_typical_certificate_is_well_under_the_size_limit() {
    let mut cert = fixtures::certificate(3);
    cert.name = "x".repeat(63);
    cert.serial = u64::MAX;
    cert.not_after = u64::MAX;
    let signed = issue(&cert);
    assert!(signed.bytes.len() < 200, "{}", signed.bytes.len());
    assert!(signed.to_bytes().len() < 300);
}

#[test]
fn every_tampered_byte_is_refused_without_panicking() {
    let signed = issue(&fixtures::certificate(3));
    let wire = signed.to_bytes();
    for i in 0..wire.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = wire.clone();
            bad[i] ^= flip;
            let verdict = SignedCertificate::from_bytes(&bad)
                .and_then(|c| c.verify(&fixtures::network(), NOW));
            assert!(
                matches!(
                    verdict,
                    Err(CertError::BadSignature
                        | CertError::Malformed
                        | CertError::UnsupportedVersion(_))
                ),
                "byte {i} ^ {flip:#x}: {verdict:?}"
            );
        }
    }
}

#[test]
fn a_certificate_signed_by_another_key_is_refused() {
    let other = IdentitySecret::from_bytes([0x99; 32]);
    let signed = Authority::issue(&fixtures::certificate(3), &other);
    assert_eq!(
        signed.verify(&fixtures::network(), NOW),
        Err(CertError::BadSignature)
    );
}

#[test]
fn a_signature_from_another_context_is_refused() {
    let cert = fixtures::certificate(3);
    let mut signed = issue(&cert);
    signed.signature = fixtures::authority().sign(SigningContext::Record, &signed.bytes);
    assert_eq!(
        signed.verify(&fixtures::network(), NOW),
        Err(CertError::BadSignature)
    );
}

#[test]
fn a_certificate_for_another_network_is_refused() {
    let mut cert = fixtures::certificate(3);
    cert.network = NetworkId([0xee; 16]);
    assert_eq!(
        issue(&cert).verify(&fixtures::network(), NOW),
        Err(CertError::WrongNetwork {
            network: NetworkId([0xee; 16])
        })
    );
}

#[test]
fn validity_starts_five_minutes_before_not_before_and_ends_at_not_after() {
    let cert = fixtures::certificate(3);
    let signed = issue(&cert);
    let net = fixtures::network();
    assert!(signed.verify(&net, cert.not_before).is_ok());
    // A verifier whose clock is up to five minutes behind the issuer's.
    assert!(signed
        .verify(&net, cert.not_before - CLOCK_SKEW_SECS)
        .is_ok());
    assert_eq!(
        signed.verify(&net, cert.not_before - CLOCK_SKEW_SECS - 1),
        Err(CertError::NotYetValid {
            not_before: cert.not_before
        })
    );
    assert!(signed.verify(&net, cert.not_after - 1).is_ok());
    assert_eq!(
        signed.verify(&net, cert.not_after),
        Err(CertError::Expired {
            not_after: cert.not_after
        })
    );
}

#[test]
fn invalid_names_are_refused() {
    for name in ["", "-db", "db-", "DB", "d b", &"x".repeat(64)] {
        let mut cert = fixtures::certificate(3);
        cert.name = name.into();
        assert_eq!(
            issue(&cert).verify(&fixtures::network(), NOW),
            Err(CertError::BadName),
            "{name:?}"
        );
    }
}

#[test]
fn addresses_outside_the_network_or_not_hosts_are_refused() {
    let net = fixtures::network();
    for v4 in [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(100, 64, 0, 0),
        Ipv4Addr::new(100, 64, 255, 255),
    ] {
        let mut cert = fixtures::certificate(3);
        cert.ipv4 = v4;
        cert.ipv6 = net.allocate_v6(v4);
        assert_eq!(
            issue(&cert).verify(&net, NOW),
            Err(CertError::AddressOutsideNetwork { ipv4: v4 })
        );
    }
}

#[test]
fn an_ipv6_address_not_derived_from_the_ipv4_address_is_refused() {
    let net = fixtures::network();
    let mut cert = fixtures::certificate(3);
    cert.ipv6 = net.allocate_v6(Ipv4Addr::new(100, 64, 0, 4));
    assert_eq!(
        issue(&cert).verify(&net, NOW),
        Err(CertError::Ipv6Mismatch { ipv6: cert.ipv6 })
    );
}

#[test]
fn oversized_certificates_are_refused_before_any_work() {
    let signed = SignedCertificate {
        bytes: vec![0; MAX_CERTIFICATE_LEN + 1],
        signature: [0; 64],
    };
    assert_eq!(
        signed.verify(&fixtures::network(), NOW),
        Err(CertError::TooLarge {
            len: MAX_CERTIFICATE_LEN + 1
        })
    );
    let wire = vec![SIGNED_CERTIFICATE_VERSION; MAX_SIGNED_CERTIFICATE_LEN + 1];
    assert!(matches!(
        SignedCertificate::from_bytes(&wire),
        Err(CertError::TooLarge { .. })
    ));
}

#[test]
fn framing_errors_are_told_apart() {
    let wire = issue(&fixtures::certificate(3)).to_bytes();
    assert_eq!(
        SignedCertificate::from_bytes(&[]),
        Err(CertError::Malformed)
    );
    let mut v2 = wire.clone();
    v2[0] = 2;
    assert_eq!(
        SignedCertificate::from_bytes(&v2),
        Err(CertError::UnsupportedVersion(2))
    );
    for len in 1..wire.len() {
        assert_eq!(
            SignedCertificate::from_bytes(&wire[..len]),
            Err(CertError::Malformed),
            "truncated to {len}"
        );
    }
    let mut long = wire.clone();
    long.push(0);
    assert_eq!(
        SignedCertificate::from_bytes(&long),
        Err(CertError::Malformed)
    );
}

#[test]
fn validly_signed_garbage_is_malformed_not_a_panic() {
    let auth = fixtures::authority();
    for bytes in [
        vec![],
        vec![0xff; 40],
        fixtures::certificate(3).name.into_bytes(),
    ] {
        let signature = auth.sign(SigningContext::Certificate, &bytes);
        let signed = SignedCertificate { bytes, signature };
        assert_eq!(
            signed.verify(&fixtures::network(), NOW),
            Err(CertError::Malformed)
        );
    }
}

#[test]
fn error_names_are_distinct_snake_case() {
    let all = [
        CertError::TooLarge { len: 0 },
        CertError::UnsupportedVersion(0),
        CertError::Malformed,
        CertError::BadSignature,
        CertError::WrongNetwork {
            network: NetworkId([0; 16]),
        },
        CertError::BadName,
        CertError::AddressOutsideNetwork {
            ipv4: Ipv4Addr::UNSPECIFIED,
        },
        CertError::Ipv6Mismatch {
            ipv6: Ipv6Addr::UNSPECIFIED,
        },
        CertError::NotYetValid { not_before: 0 },
        CertError::Expired { not_after: 0 },
    ];
    let names: std::collections::HashSet<_> = all.iter().map(|e| e.as_str()).collect();
    assert_eq!(names.len(), all.len());
    assert!(names.iter().all(|n| n
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')));
}
