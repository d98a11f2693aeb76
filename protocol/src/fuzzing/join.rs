//! Fuzzing harness for the join exchange ([`crate::join`]), shared by the
//! cargo-fuzz target `join` in `protocol/fuzz` and the stable test below.
//!
//! An input is a flags byte and a payload; the flags' low two bits pick
//! whose decoder the payload reaches, and how:
//! - [`RAW_REQUEST`]: the payload is what a stranger writes to the join
//!   port: frames are split off it ([`take_frame`]) and each goes to
//!   [`JoinResponder::accept`], unauthenticated;
//! - [`SEALED_REQUEST`]: the payload is a request's plaintext, which a real
//!   joiner seals in the first Noise message (pinning the inviter's key,
//!   as a token does), so every byte reaches the request decoder;
//! - [`SEALED_RESPONSE`]: a real [`JoinInitiator`] starts, a real inviter
//!   reads its request and seals the payload as the response, so every
//!   byte reaches the response decoder and the grant's checks;
//! - [`RAW_RESPONSE`]: the payload is the inviter's frame as a stranger
//!   answering at the token's address would send it.
//!
//! Besides "no panic": a request is accepted only with the key that ran
//! the handshake, a grant keeps only usable member hints, each once and
//! IPv4-mapped ones as IPv4, and what the joiner then decodes from the
//! grant (certificates, bootstrap records) is decoded without panicking.
//! Not part of the API: compiled only with the `fuzzing` feature or for
//! tests.

use std::net::SocketAddr;
use std::sync::OnceLock;

use rand_chacha::rand_core::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

use crate::addr::{self, Loopback};
use crate::join::{
    take_frame, JoinError, JoinGrant, JoinInitiator, JoinRefusal, JoinRequest, JoinResponder,
    JoinResponse, JOIN_PROLOGUE, MAX_FRAME,
};
use crate::membership::cert::SignedCertificate;
use crate::membership::records::SignedRecord;
use crate::noise::{seeded_builder, PublicKey, StaticSecret, NOISE_PARAMS};

/// Mode: raw bytes to the inviter's request decoder.
pub const RAW_REQUEST: u8 = 0;
/// Mode: a request plaintext sealed by a real joiner.
pub const SEALED_REQUEST: u8 = 1;
/// Mode: a response plaintext sealed by a real inviter.
pub const SEALED_RESPONSE: u8 = 2;
/// Mode: raw bytes to the joiner's response decoder.
pub const RAW_RESPONSE: u8 = 3;

/// The invite secret both sides hold.
const SECRET: [u8; 32] = [0x33; 32];

struct Keys {
    inviter: StaticSecret,
    inviter_public: PublicKey,
    joiner: StaticSecret,
    joiner_public: PublicKey,
}

/// Public keys cost a scalar multiplication each; derive them once.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let inviter = StaticSecret::from_bytes([0x31; 32]);
        let joiner = StaticSecret::from_bytes([0x32; 32]);
        Keys {
            inviter_public: inviter.public_key(),
            joiner_public: joiner.public_key(),
            inviter,
            joiner,
        }
    })
}

/// The request a real joiner sends in [`SEALED_RESPONSE`] mode.
fn request() -> JoinRequest {
    JoinRequest {
        network: [0x5e; 16],
        secret: SECRET,
        name: Some("db1".into()),
        identity: [0x44; 32],
        noise_key: keys().joiner_public.0,
    }
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed([0x35; 32])
}

/// What one input came to, for tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The inviter accepted a request.
    Request,
    /// The joiner read a grant.
    Accepted,
    /// The joiner read a refusal.
    Refused,
    /// A decoder refused the input.
    Error(JoinErrorKind),
    /// The payload held no complete frame.
    Incomplete,
}

/// [`JoinError`]'s variants, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinErrorKind {
    /// [`JoinError::Handshake`].
    Handshake,
    /// [`JoinError::Malformed`].
    Malformed,
    /// [`JoinError::TooLarge`].
    TooLarge,
}

impl From<JoinError> for Outcome {
    fn from(e: JoinError) -> Self {
        Outcome::Error(match e {
            JoinError::Handshake => JoinErrorKind::Handshake,
            JoinError::Malformed => JoinErrorKind::Malformed,
            JoinError::TooLarge => JoinErrorKind::TooLarge,
        })
    }
}

/// The `join` fuzz target's body.
pub fn join(data: &[u8]) -> Outcome {
    let (flags, payload) = match data.split_first() {
        Some((f, p)) => (*f, p),
        None => (0, data),
    };
    match flags & 0b11 {
        RAW_REQUEST => raw_request(payload),
        SEALED_REQUEST => sealed_request(payload),
        SEALED_RESPONSE => sealed_response(payload),
        _ => raw_response(payload),
    }
}

/// Splits frames off `stream` as the join listener does, and hands each to
/// the inviter; the outcome of the last.
fn raw_request(mut stream: &[u8]) -> Outcome {
    let mut outcome = Outcome::Incomplete;
    loop {
        match take_frame(stream) {
            Ok(Some((frame, used))) => {
                assert!(frame.len() <= MAX_FRAME && used == frame.len() + 2);
                outcome = accept(frame);
                stream = &stream[used..];
            }
            Ok(None) => return outcome,
            Err(e) => {
                assert!(stream.len() >= 2, "a length was read");
                return e.into();
            }
        }
    }
}

/// The inviter reads `frame`; what it accepts it can answer.
fn accept(frame: &[u8]) -> Outcome {
    let k = keys();
    match JoinResponder::accept(&k.inviter, frame, &mut rng()) {
        Ok(responder) => {
            let answer = responder.respond(&JoinResponse::Refused(JoinRefusal::Unknown));
            assert!(answer.is_ok(), "a refusal always fits a frame");
            Outcome::Request
        }
        Err(e) => e.into(),
    }
}

/// A real joiner seals `plain` as its request, as [`JoinInitiator::start`]
/// would seal an encoded [`JoinRequest`].
fn sealed_request(plain: &[u8]) -> Outcome {
    let k = keys();
    let secret = k.joiner.to_bytes();
    let Ok(mut hs) = seeded_builder(NOISE_PARAMS, [0x36; 32])
        .local_private_key(&secret)
        .and_then(|b| b.remote_public_key(&k.inviter_public.0))
        .and_then(|b| b.prologue(JOIN_PROLOGUE))
        .and_then(|b| b.psk(2, &SECRET))
        .and_then(|b| b.build_initiator())
    else {
        unreachable!("fixed, valid keys and parameters");
    };
    let mut message = vec![0u8; plain.len() + 128];
    match hs.write_message(plain, &mut message) {
        Ok(n) => {
            message.truncate(n);
            let outcome = accept(&message);
            // A certificate is issued only for a key its holder proved: a
            // request naming any key but the one the handshake ran with
            // is refused.
            let names_another = postcard::from_bytes::<JoinRequest>(plain)
                .is_ok_and(|r| r.noise_key != k.joiner_public.0);
            if names_another {
                assert_ne!(outcome, Outcome::Request, "a request for an unproved key");
            }
            outcome
        }
        // Longer than a Noise message can be: nothing to send.
        Err(_) => Outcome::Incomplete,
    }
}

/// A real inviter answers a real joiner with `plain` as the response.
fn sealed_response(plain: &[u8]) -> Outcome {
    let k = keys();
    let (initiator, first) =
        JoinInitiator::start(&k.joiner, &k.inviter_public, &request(), &mut rng())
            .expect("a valid request");
    let secret = k.inviter.to_bytes();
    let Ok(mut hs) = seeded_builder(NOISE_PARAMS, [0x37; 32])
        .local_private_key(&secret)
        .and_then(|b| b.prologue(JOIN_PROLOGUE))
        .and_then(|b| b.build_responder())
    else {
        unreachable!("fixed, valid keys and parameters");
    };
    let mut scratch = vec![0u8; first.len()];
    hs.read_message(&first[2..], &mut scratch)
        .expect("the joiner's own request");
    hs.set_psk(2, &SECRET).expect("psk slot 2");
    let mut message = vec![0u8; plain.len() + 128];
    match hs.write_message(plain, &mut message) {
        Ok(n) => {
            message.truncate(n);
            finish(initiator, &message)
        }
        Err(_) => Outcome::Incomplete,
    }
}

/// A stranger's answer to a real joiner.
fn raw_response(frame: &[u8]) -> Outcome {
    let k = keys();
    let (initiator, _) = JoinInitiator::start(&k.joiner, &k.inviter_public, &request(), &mut rng())
        .expect("a valid request");
    finish(initiator, frame)
}

fn finish(initiator: JoinInitiator, message: &[u8]) -> Outcome {
    match initiator.finish(message) {
        Ok(JoinResponse::Accepted(grant)) => {
            check_grant(&grant);
            Outcome::Accepted
        }
        Ok(JoinResponse::Refused(reason)) => {
            let _ = reason.as_str();
            Outcome::Refused
        }
        Err(e) => e.into(),
    }
}

/// What the joiner keeps of a grant is what the rules allow, and what it
/// decodes from it next decodes without panicking.
fn check_grant(grant: &JoinGrant) {
    for (certificate, endpoints) in &grant.members {
        for (i, e) in endpoints.iter().enumerate() {
            assert_eq!(
                addr::usable(*e, Loopback::Allowed),
                Ok(*e),
                "hint {e} kept unusable or unnormalised"
            );
            assert!(!endpoints[..i].contains(e), "hint {e} kept twice");
        }
        let _ = SignedCertificate::from_bytes(certificate);
    }
    let _ = SignedCertificate::from_bytes(&grant.certificate);
    for record in &grant.bootstrap {
        let _ = SignedRecord::from_bytes(record);
    }
}

/// Inputs for each mode, named for the seed files: real frames and
/// plaintexts (a request, a grant with hints to clean, each refusal).
pub fn seed_corpus() -> Vec<(String, Vec<u8>)> {
    let k = keys();
    let input = |mode: u8, payload: &[u8]| [&[mode][..], payload].concat();
    let (_, first) = JoinInitiator::start(&k.joiner, &k.inviter_public, &request(), &mut rng())
        .expect("a valid request");
    let request = postcard::to_stdvec(&request()).expect("encodable");
    let hint = |s: &str| s.parse::<SocketAddr>().expect("a socket address");
    let grant = JoinResponse::Accepted(JoinGrant {
        certificate: vec![0xc0; 40],
        network: vec![0x5e; 20],
        bootstrap: vec![vec![0xb0; 12]],
        control_addresses: vec!["/ip4/192.0.2.1/udp/51822/quic-v1".into()],
        members: vec![
            (
                vec![0xc1; 40],
                vec![
                    hint("192.0.2.7:51820"),
                    hint("[::ffff:192.0.2.7]:51820"),
                    hint("127.0.0.1:51820"),
                    hint("0.0.0.0:51820"),
                    hint("[2001:db8::7]:4000"),
                ],
            ),
            (vec![0xc2; 40], Vec::new()),
        ],
    });
    let mut seeds = vec![
        ("raw-request".to_owned(), input(RAW_REQUEST, &first)),
        ("sealed-request".to_owned(), input(SEALED_REQUEST, &request)),
        (
            "sealed-grant".to_owned(),
            input(
                SEALED_RESPONSE,
                &postcard::to_stdvec(&grant).expect("encodable"),
            ),
        ),
        ("raw-response".to_owned(), input(RAW_RESPONSE, &first[2..])),
    ];
    for refusal in [
        JoinRefusal::AlreadyUsed,
        JoinRefusal::Expired,
        JoinRefusal::Unknown,
        JoinRefusal::WrongNetwork,
        JoinRefusal::BadName,
        JoinRefusal::NoAddress,
        JoinRefusal::Revoked,
    ] {
        let refused = postcard::to_stdvec(&JoinResponse::Refused(refusal)).expect("encodable");
        seeds.push((
            format!("sealed-refused-{}", refusal.as_str()),
            input(SEALED_RESPONSE, &refused),
        ));
    }
    seeds
}

#[cfg(test)]
mod tests;
