use super::*;
use crate::membership::fixtures::{self, NETWORK_ID, NOW};

fn anchor() -> IdentitySecret {
    fixtures::authority()
}

fn key(n: u8) -> IdentitySecret {
    IdentitySecret::from_bytes([0xb0 + n; 32])
}

fn genesis() -> AuthorityChain {
    AuthorityChain::genesis(NETWORK_ID, "first", &anchor(), 3600, NOW).unwrap()
}

fn verify(chain: &AuthorityChain) -> Result<Authorities, SetError> {
    chain.verify(&NETWORK_ID, &anchor().identity())
}

fn add(
    chain: &AuthorityChain,
    name: &str,
    k: &IdentitySecret,
    signer: &IdentitySecret,
    at: u64,
) -> AuthorityChain {
    let current = verify(chain).unwrap();
    chain
        .extend(
            &current,
            SetChange::Add {
                name: name.into(),
                key: k.identity(),
            },
            signer,
            at,
        )
        .unwrap()
}

fn remove(chain: &AuthorityChain, name: &str, signer: &IdentitySecret, at: u64) -> AuthorityChain {
    let current = verify(chain).unwrap();
    chain
        .extend(
            &current,
            SetChange::Remove { name: name.into() },
            signer,
            at,
        )
        .unwrap()
}

#[test]
fn the_first_set_holds_the_anchor_alone_and_verifies_from_it() {
    let chain = genesis();
    let a = verify(&chain).unwrap();
    assert_eq!(a.version(), 1);
    assert_eq!(a.current().holders.len(), 1);
    assert_eq!(a.current().holders[0].key, anchor().identity());
    assert_eq!(a.current().certificate_lifetime_secs, 3600);
    // Another anchor, another network: refused.
    assert_eq!(
        chain.verify(&NETWORK_ID, &key(1).identity()),
        Err(SetError::SignerNotInPreviousVersion)
    );
    assert_eq!(
        chain.verify(&NetworkId([1; 16]), &anchor().identity()),
        Err(SetError::WrongNetwork)
    );
}

#[test]
fn a_holder_is_added_and_the_first_removed_and_the_chain_still_verifies() {
    let b = key(1);
    let chain = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let chain = remove(&chain, "first", &b, NOW + 20);
    let a = verify(&chain).unwrap();
    assert_eq!(a.version(), 3);
    let keys: Vec<_> = a.current().holders.iter().map(|h| h.key).collect();
    assert_eq!(keys, vec![b.identity()]);
    let issuers = a.issuers();
    let first = issuers
        .iter()
        .find(|i| i.key == anchor().identity())
        .unwrap();
    assert_eq!(first.retired_unix, Some(NOW + 20));
    assert_eq!(first.lifetime_secs, 3600);
    let second = issuers.iter().find(|i| i.key == b.identity()).unwrap();
    assert_eq!(second.retired_unix, None);
    // The encoding round-trips.
    let bytes = chain.to_bytes();
    assert_eq!(AuthorityChain::from_bytes(&bytes).unwrap(), chain);
}

#[test]
fn a_set_can_never_become_empty() {
    let current = verify(&genesis()).unwrap();
    assert_eq!(
        genesis().extend(
            &current,
            SetChange::Remove {
                name: "first".into()
            },
            &anchor(),
            NOW
        ),
        Err(SetError::Empty)
    );
}

#[test]
fn only_a_key_of_the_current_set_may_sign_the_next_version() {
    let current = verify(&genesis()).unwrap();
    let outsider = key(7);
    assert_eq!(
        genesis().extend(
            &current,
            SetChange::Add {
                name: "x".into(),
                key: outsider.identity()
            },
            &outsider,
            NOW
        ),
        Err(SetError::SignerNotInPreviousVersion)
    );
}

/// Re-signs link `i` of `chain` after `edit` changed its set.
fn forge(
    chain: &AuthorityChain,
    i: usize,
    signer: &IdentitySecret,
    edit: impl FnOnce(&mut AuthoritySet),
) -> AuthorityChain {
    let mut forged = chain.clone();
    let mut set: AuthoritySet = decode_canonical(&forged.links[i].bytes).unwrap();
    edit(&mut set);
    forged.links[i] = SignedAuthoritySet::sign(&set, signer);
    forged
}

#[test]
fn a_version_signed_outside_the_previous_set_is_refused() {
    let b = key(1);
    let chain = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    // Version 2 re-signed by a key that was not in version 1.
    let forged = forge(&chain, 1, &key(9), |_| {});
    assert_eq!(verify(&forged), Err(SetError::SignerNotInPreviousVersion));
    // A signer field naming the anchor over another key's signature.
    let mut forged = forge(&chain, 1, &key(9), |_| {});
    forged.links[1].signer = anchor().identity();
    assert_eq!(verify(&forged), Err(SetError::BadSignature));
}

#[test]
fn a_removed_key_cannot_sign_later_versions() {
    let b = key(1);
    let chain = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let chain = remove(&chain, "first", &b, NOW + 20);
    // The removed anchor signs a version 4 that puts itself back.
    let mut links = chain.links.clone();
    let set = AuthoritySet {
        network: NETWORK_ID,
        version: 4,
        previous: links[2].hash(),
        issued_unix: NOW + 30,
        certificate_lifetime_secs: 3600,
        holders: vec![AuthorityHolder {
            name: "first".into(),
            key: anchor().identity(),
            since_unix: NOW + 30,
        }],
    };
    links.push(SignedAuthoritySet::sign(&set, &anchor()));
    assert_eq!(
        verify(&AuthorityChain { links }),
        Err(SetError::SignerNotInPreviousVersion)
    );
}

#[test]
fn versions_that_skip_or_do_not_name_their_predecessor_are_refused() {
    let b = key(1);
    let chain = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let skipped = forge(&chain, 1, &anchor(), |s| s.version = 3);
    assert_eq!(verify(&skipped), Err(SetError::BrokenChain));
    let unlinked = forge(&chain, 1, &anchor(), |s| s.previous = [7; 32]);
    assert_eq!(verify(&unlinked), Err(SetError::BrokenChain));
    let mut truncated = chain.clone();
    truncated.links.remove(0);
    assert!(verify(&truncated).is_err());
}

#[test]
fn a_replayed_older_chain_is_not_preferred() {
    let b = key(1);
    let v2 = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let v3 = remove(&v2, "first", &b, NOW + 20);
    let new = verify(&v3).unwrap();
    let old = verify(&v2).unwrap();
    assert!(!new.prefers(&old));
    assert!(old.prefers(&new));
    assert!(!new.prefers(&new.clone()));
}

#[test]
fn of_two_forks_of_equal_length_every_node_keeps_the_same_one() {
    let v1 = genesis();
    let x = verify(&add(&v1, "x", &key(1), &anchor(), NOW + 10)).unwrap();
    let y = verify(&add(&v1, "y", &key(2), &anchor(), NOW + 10)).unwrap();
    assert_ne!(x.head(), y.head());
    // Exactly one direction prefers a change, whichever is seen first.
    assert!(x.prefers(&y) != y.prefers(&x));
}

#[test]
fn limits_on_size_names_and_lifetime_are_enforced() {
    let mut chain = genesis();
    for n in 1..MAX_AUTHORITIES as u8 {
        chain = add(
            &chain,
            &format!("h{n}"),
            &key(n),
            &anchor(),
            NOW + u64::from(n),
        );
    }
    let current = verify(&chain).unwrap();
    assert_eq!(current.current().holders.len(), MAX_AUTHORITIES);
    assert_eq!(
        chain.extend(
            &current,
            SetChange::Add {
                name: "one-more".into(),
                key: key(40).identity()
            },
            &anchor(),
            NOW
        ),
        Err(SetError::TooManyAuthorities)
    );
    assert_eq!(
        genesis().extend(
            &verify(&genesis()).unwrap(),
            SetChange::Add {
                name: "Bad Name".into(),
                key: key(41).identity()
            },
            &anchor(),
            NOW
        ),
        Err(SetError::BadName)
    );
    for bad in [59, MAX_CERTIFICATE_LIFETIME_SECS + 1] {
        assert_eq!(
            chain.extend(&current, SetChange::Lifetime { secs: bad }, &anchor(), NOW),
            Err(SetError::BadLifetime)
        );
    }
    assert_eq!(
        chain
            .extend(
                &current,
                SetChange::Remove { name: "h1".into() },
                &anchor(),
                NOW
            )
            .map(|c| c.len()),
        Ok(MAX_AUTHORITIES + 1)
    );
}

#[test]
fn garbage_and_oversized_encodings_are_refused_without_panicking() {
    assert_eq!(AuthorityChain::from_bytes(&[]), Err(SetError::Malformed));
    assert_eq!(
        AuthorityChain::from_bytes(&[9, 1, 2]),
        Err(SetError::UnsupportedVersion(9))
    );
    assert_eq!(
        AuthorityChain::from_bytes(&[1, 0xff, 0xff]),
        Err(SetError::Malformed)
    );
    assert_eq!(
        AuthorityChain::from_bytes(&vec![1; MAX_CHAIN_LEN + 1]),
        Err(SetError::TooLarge)
    );
    let mut bytes = genesis().to_bytes();
    bytes.push(0);
    assert_eq!(AuthorityChain::from_bytes(&bytes), Err(SetError::Malformed));
}

#[test]
fn a_retired_key_keeps_its_old_certificates_valid_but_cannot_mint_new_ones() {
    let b = key(1);
    let chain = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let chain = remove(&chain, "first", &b, NOW + 20);
    let mut network = fixtures::network();
    network.set_issuers(verify(&chain).unwrap().issuers());
    let issue = |secret: &IdentitySecret, not_before: u64, not_after: u64| {
        let mut cert = fixtures::certificate(3);
        cert.not_before = not_before;
        cert.not_after = not_after;
        crate::membership::Authority::issue(&cert, secret)
    };
    // Issued by the anchor before it left: valid until it expires.
    let old = issue(&anchor(), NOW - 100, NOW + 3000);
    assert!(old.verify(&network, NOW + 100).is_ok());
    assert_eq!(old.issuer(&network), Some(anchor().identity()));
    // Minted by the retired key after it left, or longer than a lifetime.
    let late = issue(&anchor(), NOW + 50, NOW + 3000);
    assert_eq!(
        late.verify(&network, NOW + 100),
        Err(CertErrorKind::IssuerRetired)
    );
    let long = issue(&anchor(), NOW - 100, NOW + 20 + 3601);
    assert_eq!(
        long.verify(&network, NOW + 100),
        Err(CertErrorKind::IssuerRetired)
    );
    // The current key's certificates are valid; an outsider's are not.
    assert!(issue(&b, NOW, NOW + 3000)
        .verify(&network, NOW + 100)
        .is_ok());
    assert_eq!(
        issue(&key(5), NOW, NOW + 3000).verify(&network, NOW + 100),
        Err(CertErrorKind::BadSignature)
    );
}

use crate::membership::cert::CertError as CertErrorKind;

#[test]
fn a_node_takes_a_continuation_and_refuses_an_older_version() {
    let b = key(1);
    let v2 = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let v3 = remove(&v2, "first", &b, NOW + 20);
    let (old, new) = (verify(&v2).unwrap(), verify(&v3).unwrap());
    assert_eq!(old.compare(&new), Adoption::Extends);
    assert_eq!(new.compare(&old), Adoption::Older);
    assert_eq!(new.compare(&verify(&v3).unwrap()), Adoption::Same);
    // Before any chain, the anchor alone: every verified chain continues it.
    let none = Authorities::anchor_only(NETWORK_ID, anchor().identity());
    assert_eq!(
        none.compare(&verify(&genesis()).unwrap()),
        Adoption::Extends
    );
    assert_eq!(v3.prefix(2), Some(v2.clone()));
    assert_eq!(v3.prefix(0), None);
    assert_eq!(v3.prefix(4), None);
}

#[test]
fn concurrent_changes_by_two_current_holders_converge_on_the_same_fork() {
    let b = key(1);
    let v2 = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let x = verify(&add(&v2, "x", &key(2), &anchor(), NOW + 20)).unwrap();
    let y = verify(&add(&v2, "y", &key(3), &b, NOW + 20)).unwrap();
    let (on_x, on_y) = (x.compare(&y), y.compare(&x));
    // Whichever a node saw first, both end on the same branch.
    assert!(
        (on_x == Adoption::WinningFork && on_y == Adoption::LosingFork)
            || (on_x == Adoption::LosingFork && on_y == Adoption::WinningFork),
        "{on_x:?} {on_y:?}"
    );
}

#[test]
fn a_removed_key_cannot_win_back_the_network_with_a_longer_fork() {
    // "first" (the anchor) adds "second", which then removes "first".
    let b = key(1);
    let v2 = add(&genesis(), "second", &b, &anchor(), NOW + 10);
    let v3 = remove(&v2, "first", &b, NOW + 20);
    let held = verify(&v3).unwrap();
    // Whoever has the removed key forks from version 2, where it was still
    // a holder, and makes the fork longer: every link verifies.
    let f3 = remove(&v2, "second", &anchor(), NOW + 30);
    let f4 = add(&f3, "mallory", &key(9), &anchor(), NOW + 40);
    let forged = verify(&f4).unwrap();
    assert!(held.prefers(&forged), "the fork rule alone would take it");
    assert_eq!(held.compare(&forged), Adoption::RetiredSigner);
    // A node that never saw version 3 cannot know better, and takes it.
    assert_eq!(verify(&v2).unwrap().compare(&forged), Adoption::Extends);
}
