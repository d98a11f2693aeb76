//! The join exchange: how a new server, holding an invite token, gets its
//! certificate from the member that issued the token.
//!
//! Two messages over a reliable stream, each a 2-byte big-endian length and
//! a Noise message (`Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`, prologue
//! `"weft join v1"`):
//!
//! 1. joiner → inviter: `e, es, s, ss` with the [`JoinRequest`] as payload.
//!    The joiner knows the inviter's static key from the token (`IK`), so
//!    only the real inviter can read the request, and a server that merely
//!    answers at the token's address learns nothing.
//! 2. inviter → joiner: `e, ee, se, psk` with the [`JoinResponse`]. The
//!    pre-shared key is the invite secret, which the request carried
//!    (encrypted to the inviter); the inviter stores only a hash of it and
//!    checks the secret against that hash. Because the secret is mixed into
//!    the second message, a joiner without the secret cannot read the
//!    response, and the response proves the inviter knew the secret too.
//!
//! The inviter answers even a refused request (used, expired, unknown,
//! foreign network) with a response the joiner can read, so the joiner can
//! say which. This module owns the message formats and the two state
//! machines; it performs no I/O and reads no clock.

use core::fmt;

use rand_chacha::rand_core::RngCore;
use serde::{Deserialize, Serialize};
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use crate::addr::{self, Loopback};
use crate::noise::{PublicKey, StaticSecret, NOISE_PARAMS};

/// Prologue of every join handshake.
pub const JOIN_PROLOGUE: &[u8] = b"weft join v1";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 60 * 1024;
/// Largest request payload.
const MAX_REQUEST: usize = 1024;

/// What the joiner asks for.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinRequest {
    /// The network the token names.
    pub network: [u8; 16],
    /// The invite secret from the token.
    pub secret: [u8; 32],
    /// The name the joiner wants, if the token did not fix one.
    pub name: Option<String>,
    /// The joiner's Ed25519 identity key.
    pub identity: [u8; 32],
    /// The joiner's X25519 data-plane key.
    pub noise_key: [u8; 32],
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why an inviter refused a join.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinRefusal {
    /// The token was already used.
    #[error("this invite token was already used")]
    AlreadyUsed,
    /// The token expired.
    #[error("this invite token has expired")]
    Expired,
    /// The inviter does not know this token.
    #[error("the inviter does not know this invite token")]
    Unknown,
    /// The token is for another network.
    #[error("this invite token is for another network")]
    WrongNetwork,
    /// The requested name is invalid or taken.
    #[error("the requested name is invalid or already taken")]
    BadName,
    /// The network has no free address left.
    #[error("the network has no free address left")]
    NoAddress,
    /// The joining identity was revoked: it never comes back, whatever
    /// token it presents.
    #[error("this server's identity was revoked from the network")]
    Revoked,
}

impl JoinRefusal {
    /// A short snake_case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::AlreadyUsed => "already_used",
            JoinRefusal::Expired => "expired",
            JoinRefusal::Unknown => "unknown",
            JoinRefusal::WrongNetwork => "wrong_network",
            JoinRefusal::BadName => "bad_name",
            JoinRefusal::NoAddress => "no_address",
            JoinRefusal::Revoked => "revoked",
        }
    }
}

/// What the inviter answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum JoinResponse {
    /// Welcome: everything the new member needs to start.
    Accepted(JoinGrant),
    /// Refused, and why.
    Refused(JoinRefusal),
}

/// The data a new member receives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinGrant {
    /// The new member's signed certificate (encoded).
    pub certificate: Vec<u8>,
    /// The network's public description (encoded).
    pub network: Vec<u8>,
    /// Signed announcements of members to contact first (encoded records).
    pub bootstrap: Vec<Vec<u8>>,
    /// Control-plane addresses of the inviter (multiaddr strings).
    pub control_addresses: Vec<String>,
    /// Every other member the inviter knows: its certificate (encoded,
    /// signed by the authority, so the joiner checks it) and the endpoints
    /// the inviter last saw it at (hints: the data plane authenticates).
    /// [`JoinInitiator::finish`] keeps only the hints [`addr::usable`]
    /// accepts, IPv4-mapped ones written as IPv4, loopback allowed as in
    /// the token.
    pub members: Vec<(Vec<u8>, Vec<std::net::SocketAddr>)>,
}

impl JoinGrant {
    /// Drops the member hints no remote host could be reached at, and
    /// writes IPv4-mapped ones as IPv4.
    fn keep_usable_hints(&mut self) {
        for (_, endpoints) in &mut self.members {
            let mut kept = Vec::with_capacity(endpoints.len());
            for e in endpoints.drain(..) {
                match addr::usable(e, Loopback::Allowed) {
                    Ok(e) if !kept.contains(&e) => kept.push(e),
                    _ => {}
                }
            }
            *endpoints = kept;
        }
    }
}

/// Why a join exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// A message was not a valid Noise message for this exchange: the peer
    /// does not hold the key the token pins, or the secret did not match.
    #[error("the handshake failed: the inviter's key or the invite secret does not match")]
    Handshake,
    /// A payload did not decode.
    #[error("malformed join message")]
    Malformed,
    /// A frame exceeded [`MAX_FRAME`].
    #[error("join message too large")]
    TooLarge,
}

fn builder<'a>(seed: [u8; 32]) -> Builder<'a> {
    crate::noise::seeded_builder(NOISE_PARAMS, seed)
}

/// Writes `payload` behind a 2-byte length.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Splits a complete frame off the front of `buf`: `Ok(None)` when more
/// bytes are needed.
pub fn take_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, JoinError> {
    let Some(len) = buf.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > MAX_FRAME {
        return Err(JoinError::TooLarge);
    }
    Ok(buf.get(2..2 + len).map(|m| (m, 2 + len)))
}

/// The joiner's side.
pub struct JoinInitiator {
    hs: HandshakeState,
}

impl fmt::Debug for JoinInitiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinInitiator")
    }
}

impl JoinInitiator {
    /// Builds the first frame. `local` is the joiner's new data-plane key,
    /// `inviter` the key the token pins.
    pub fn start(
        local: &StaticSecret,
        inviter: &PublicKey,
        request: &JoinRequest,
        rng: &mut dyn RngCore,
    ) -> Result<(Self, Vec<u8>), JoinError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let local_bytes = Zeroizing::new(local.to_bytes());
        let mut hs = builder(*seed)
            .local_private_key(local_bytes.as_ref())
            .and_then(|b| b.remote_public_key(inviter.as_bytes()))
            .and_then(|b| b.prologue(JOIN_PROLOGUE))
            .and_then(|b| b.psk(2, &request.secret))
            .and_then(|b| b.build_initiator())
            .map_err(|_| JoinError::Handshake)?;
        let payload =
            Zeroizing::new(postcard::to_stdvec(request).map_err(|_| JoinError::Malformed)?);
        let mut msg = vec![0u8; payload.len() + 128];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|_| JoinError::Handshake)?;
        msg.truncate(n);
        Ok((Self { hs }, frame(&msg)))
    }

    /// Reads the inviter's frame (without its length prefix). The member
    /// hints of a grant are checked on the way ([`JoinGrant::members`]).
    pub fn finish(mut self, message: &[u8]) -> Result<JoinResponse, JoinError> {
        let mut payload = vec![0u8; message.len()];
        let n = self
            .hs
            .read_message(message, &mut payload)
            .map_err(|_| JoinError::Handshake)?;
        let mut response: JoinResponse =
            postcard::from_bytes(&payload[..n]).map_err(|_| JoinError::Malformed)?;
        if let JoinResponse::Accepted(grant) = &mut response {
            grant.keep_usable_hints();
        }
        Ok(response)
    }
}

/// The inviter's side, after reading the first frame.
pub struct JoinResponder {
    hs: HandshakeState,
    /// The request, authenticated as coming from the holder of
    /// `request.noise_key`.
    pub request: JoinRequest,
}

impl fmt::Debug for JoinResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinResponder")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl JoinResponder {
    /// Reads the joiner's first frame (without its length prefix).
    pub fn accept(
        local: &StaticSecret,
        message: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Self, JoinError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let local_bytes = Zeroizing::new(local.to_bytes());
        let mut hs = builder(*seed)
            .local_private_key(local_bytes.as_ref())
            .and_then(|b| b.prologue(JOIN_PROLOGUE))
            .and_then(|b| b.build_responder())
            .map_err(|_| JoinError::Handshake)?;
        if message.len() > MAX_REQUEST + 128 {
            return Err(JoinError::TooLarge);
        }
        let mut payload = Zeroizing::new(vec![0u8; message.len()]);
        let n = hs
            .read_message(message, &mut payload)
            .map_err(|_| JoinError::Handshake)?;
        let request: JoinRequest =
            postcard::from_bytes(&payload[..n]).map_err(|_| JoinError::Malformed)?;
        // The request's data-plane key must be the key that ran the
        // handshake, so a certificate is issued only for a key its holder
        // proved.
        if hs.get_remote_static() != Some(&request.noise_key[..]) {
            return Err(JoinError::Handshake);
        }
        Ok(Self { hs, request })
    }

    /// Writes the response frame, keyed by the secret the request carried.
    pub fn respond(mut self, response: &JoinResponse) -> Result<Vec<u8>, JoinError> {
        self.hs
            .set_psk(2, &self.request.secret)
            .map_err(|_| JoinError::Handshake)?;
        let payload = postcard::to_stdvec(response).map_err(|_| JoinError::Malformed)?;
        if payload.len() + 64 > MAX_FRAME {
            return Err(JoinError::TooLarge);
        }
        let mut msg = vec![0u8; payload.len() + 128];
        let n = self
            .hs
            .write_message(&payload, &mut msg)
            .map_err(|_| JoinError::Handshake)?;
        msg.truncate(n);
        Ok(frame(&msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn request(joiner: &StaticSecret, secret: [u8; 32]) -> JoinRequest {
        JoinRequest {
            network: [7; 16],
            secret,
            name: Some("db1".into()),
            identity: [9; 32],
            noise_key: joiner.public_key().0,
        }
    }

    fn grant() -> JoinResponse {
        JoinResponse::Accepted(JoinGrant {
            certificate: vec![1; 200],
            network: vec![2; 80],
            bootstrap: vec![vec![3; 300]; 3],
            control_addresses: vec!["/ip4/192.0.2.1/udp/51821/quic-v1".into()],
            members: vec![(vec![4; 200], vec!["192.0.2.7:51820".parse().unwrap()])],
        })
    }

    #[test]
    fn a_joiner_with_the_secret_gets_the_grant() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (inviter, joiner) = (
            StaticSecret::from_bytes([1; 32]),
            StaticSecret::from_bytes([2; 32]),
        );
        let req = request(&joiner, [5; 32]);
        let (init, f1) =
            JoinInitiator::start(&joiner, &inviter.public_key(), &req, &mut rng).unwrap();
        let (m1, used) = take_frame(&f1).unwrap().unwrap();
        assert_eq!(used, f1.len());
        let resp = JoinResponder::accept(&inviter, m1, &mut rng).unwrap();
        assert_eq!(resp.request, req);
        let f2 = resp.respond(&grant()).unwrap();
        let (m2, _) = take_frame(&f2).unwrap().unwrap();
        assert_eq!(init.finish(m2).unwrap(), grant());
    }

    #[test]
    fn a_server_without_the_pinned_key_cannot_read_the_request() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (inviter, impostor, joiner) = (
            StaticSecret::from_bytes([1; 32]),
            StaticSecret::from_bytes([3; 32]),
            StaticSecret::from_bytes([2; 32]),
        );
        let req = request(&joiner, [5; 32]);
        let (_, f1) = JoinInitiator::start(&joiner, &inviter.public_key(), &req, &mut rng).unwrap();
        let (m1, _) = take_frame(&f1).unwrap().unwrap();
        assert_eq!(
            JoinResponder::accept(&impostor, m1, &mut rng).unwrap_err(),
            JoinError::Handshake
        );
    }

    #[test]
    fn a_response_keyed_by_another_secret_fails_the_joiner() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (inviter, joiner) = (
            StaticSecret::from_bytes([1; 32]),
            StaticSecret::from_bytes([2; 32]),
        );
        let req = request(&joiner, [5; 32]);
        let (init, f1) =
            JoinInitiator::start(&joiner, &inviter.public_key(), &req, &mut rng).unwrap();
        let (m1, _) = take_frame(&f1).unwrap().unwrap();
        let mut resp = JoinResponder::accept(&inviter, m1, &mut rng).unwrap();
        resp.request.secret = [6; 32];
        let f2 = resp.respond(&grant()).unwrap();
        let (m2, _) = take_frame(&f2).unwrap().unwrap();
        assert_eq!(init.finish(m2).unwrap_err(), JoinError::Handshake);
    }

    #[test]
    fn a_refusal_reaches_the_joiner_readably() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (inviter, joiner) = (
            StaticSecret::from_bytes([1; 32]),
            StaticSecret::from_bytes([2; 32]),
        );
        let req = request(&joiner, [5; 32]);
        let (init, f1) =
            JoinInitiator::start(&joiner, &inviter.public_key(), &req, &mut rng).unwrap();
        let (m1, _) = take_frame(&f1).unwrap().unwrap();
        let resp = JoinResponder::accept(&inviter, m1, &mut rng).unwrap();
        let f2 = resp
            .respond(&JoinResponse::Refused(JoinRefusal::AlreadyUsed))
            .unwrap();
        let (m2, _) = take_frame(&f2).unwrap().unwrap();
        assert_eq!(
            init.finish(m2).unwrap(),
            JoinResponse::Refused(JoinRefusal::AlreadyUsed)
        );
    }

    #[test]
    fn member_hints_no_one_could_be_reached_at_are_dropped_and_mapped_ones_written_as_ipv4() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (inviter, joiner) = (
            StaticSecret::from_bytes([1; 32]),
            StaticSecret::from_bytes([2; 32]),
        );
        let hints: Vec<std::net::SocketAddr> = [
            "[::ffff:224.0.0.1]:51820",
            "[::ffff:0.0.0.0]:51820",
            "[::ffff:255.255.255.255]:51820",
            "[::ffff:192.0.2.7]:51820",
            "192.0.2.7:51820",
            "[::ffff:127.0.0.1]:51820",
        ]
        .iter()
        .map(|e| e.parse().unwrap())
        .collect();
        let mut sent = grant();
        let JoinResponse::Accepted(g) = &mut sent else {
            unreachable!("grant() accepts");
        };
        g.members = vec![(vec![4; 200], hints)];
        let req = request(&joiner, [5; 32]);
        let (init, f1) =
            JoinInitiator::start(&joiner, &inviter.public_key(), &req, &mut rng).unwrap();
        let (m1, _) = take_frame(&f1).unwrap().unwrap();
        let f2 = JoinResponder::accept(&inviter, m1, &mut rng)
            .unwrap()
            .respond(&sent)
            .unwrap();
        let (m2, _) = take_frame(&f2).unwrap().unwrap();
        let JoinResponse::Accepted(got) = init.finish(m2).unwrap() else {
            panic!("not accepted");
        };
        let want: Vec<std::net::SocketAddr> = vec![
            "192.0.2.7:51820".parse().unwrap(),
            "127.0.0.1:51820".parse().unwrap(),
        ];
        assert_eq!(got.members, vec![(vec![4; 200], want)]);
    }

    #[test]
    fn garbage_and_oversized_frames_are_refused_without_panicking() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let inviter = StaticSecret::from_bytes([1; 32]);
        assert_eq!(take_frame(&[0xff, 0xff]).unwrap_err(), JoinError::TooLarge);
        assert_eq!(take_frame(&[0, 5, 1]).unwrap(), None);
        for len in 0..300 {
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            assert!(JoinResponder::accept(&inviter, &junk, &mut rng).is_err());
        }
    }

    #[test]
    fn the_secret_is_redacted_in_debug() {
        let joiner = StaticSecret::from_bytes([2; 32]);
        let text = format!("{:?}", request(&joiner, [0xab; 32]));
        assert!(!text.contains("171"), "{text}");
    }
}
