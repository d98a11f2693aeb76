//! The encodings every membership format shares: hexadecimal text,
//! canonical postcard bytes, the serde forms of 64-byte signatures and of
//! the data plane's keys, and the one spelling of an endpoint.
//!
//! A leaf of the membership module: the formats (`identity`, `network`,
//! `cert`, `invite`, `records`) and the validator import it, and it imports
//! none of them. It never decides what a value means, only how it is
//! written, and nothing in it panics on input from the network or disk.

use core::fmt;
use std::net::SocketAddr;

use crate::addr::{self, Loopback};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Writes `bytes` as lowercase hexadecimal.
pub(super) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses exactly `2 * N` hexadecimal digits (either case).
pub(super) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        // to_digit(16) is at most 15, so both fit a byte.
        *o = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// Encodes `value` with postcard. Every type encoded here is made of
/// integers, arrays, strings, vectors, options and enums, none of which can
/// fail to serialise into a growable vector.
pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard cannot fail to encode plain data into a Vec")
}

/// Decodes `bytes` as exactly one `T` in its canonical encoding: trailing
/// bytes, and encodings postcard would not have produced (overlong
/// varints, for instance), are refused. So every accepted value has one
/// byte representation, which signatures cover and gossip deduplicates on.
pub(super) fn decode_canonical<'a, T>(bytes: &'a [u8]) -> Option<T>
where
    T: serde::Deserialize<'a> + serde::Serialize,
{
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).ok()?;
    if !rest.is_empty() || encode(&value) != bytes {
        return None;
    }
    Some(value)
}

/// A message of the control-plane exchanges: its version byte, then
/// postcard of `value`.
pub(super) fn encode_versioned<T: serde::Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    out.extend_from_slice(&encode(value));
    out
}

/// Decodes what [`encode_versioned`] wrote with `version`; `None` for
/// anything longer than `max_len`, of another version, or not canonical.
pub(super) fn decode_versioned<T>(version: u8, max_len: usize, data: &[u8]) -> Option<T>
where
    T: for<'a> serde::Deserialize<'a> + serde::Serialize,
{
    if data.len() > max_len {
        return None;
    }
    match data.split_first() {
        Some((&v, rest)) if v == version => decode_canonical(rest),
        _ => None,
    }
}

/// Why an endpoint a member wrote into a record or a token cannot be
/// right, if it cannot: a reason of [`addr::usable`], which judges an
/// IPv4-mapped IPv6 address as the IPv4 address it stands for, or, for a
/// usable one, the mapped spelling itself. These encodings are signed or
/// checksummed as written and members compare the endpoints in them, so an
/// IPv4 endpoint has one spelling, `a.b.c.d:port`. Loopback is refused
/// unless `loopback` allows it (single-host test setups).
pub(super) fn endpoint_problem(endpoint: &SocketAddr, loopback: Loopback) -> Option<&'static str> {
    match addr::usable(*endpoint, loopback) {
        Err(why) => Some(why.as_str()),
        Ok(canonical) if canonical != *endpoint => {
            Some("endpoint address is IPv4-mapped IPv6 (an IPv4 endpoint is written as IPv4)")
        }
        Ok(_) => None,
    }
}

/// serde for 64-byte arrays (serde derives stop at 32): a tuple of 64
/// bytes, which postcard writes as the raw bytes with no length prefix.
pub(super) mod sig64 {
    use core::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    use super::SIGNATURE_LEN;

    pub(in crate::membership) fn serialize<S: Serializer>(
        sig: &[u8; SIGNATURE_LEN],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(SIGNATURE_LEN)?;
        for b in sig {
            t.serialize_element(b)?;
        }
        t.end()
    }

    pub(in crate::membership) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; SIGNATURE_LEN], D::Error> {
        struct Sig;
        impl<'de> Visitor<'de> for Sig {
            type Value = [u8; SIGNATURE_LEN];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{SIGNATURE_LEN} bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = [0u8; SIGNATURE_LEN];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_tuple(SIGNATURE_LEN, Sig)
    }
}

/// serde for the data plane's X25519 [`crate::PublicKey`], which has no
/// serde implementation of its own: its 32 raw bytes.
pub(super) mod noise_key {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::wire::KEY_LEN;
    use crate::PublicKey;

    pub(in crate::membership) fn serialize<S: Serializer>(
        key: &PublicKey,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        key.as_bytes().serialize(s)
    }

    pub(in crate::membership) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<PublicKey, D::Error> {
        <[u8; KEY_LEN]>::deserialize(d).map(PublicKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_bad_digits_or_lengths() {
        assert_eq!(parse_hex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(parse_hex::<2>("0aF"), None);
        assert_eq!(parse_hex::<2>("0aFg"), None);
        assert_eq!(parse_hex::<1>("+1"), None);
    }

    #[test]
    fn decoding_refuses_trailing_bytes_and_overlong_varints() {
        assert_eq!(decode_canonical::<u64>(&[5]), Some(5));
        assert_eq!(decode_canonical::<u64>(&[5, 0]), None);
        // 5 as a two-byte varint: postcard may accept it, weft does not.
        assert_eq!(decode_canonical::<u64>(&[0x85, 0x00]), None);
    }

    #[test]
    fn implausible_endpoints_are_named() {
        let bad = [
            "0.0.0.0:1",
            "1.2.3.4:0",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "127.0.0.1:1",
            "[::]:1",
            "[ff02::1]:1",
            "[fe80::1]:1",
            "[::1]:1",
        ];
        for a in bad {
            assert!(
                endpoint_problem(&a.parse().unwrap(), Loopback::Refused).is_some(),
                "{a}"
            );
        }
        for a in ["192.0.2.1:51820", "[2001:db8::1]:443", "10.0.0.1:1"] {
            assert_eq!(
                endpoint_problem(&a.parse().unwrap(), Loopback::Refused),
                None,
                "{a}"
            );
        }
        assert_eq!(
            endpoint_problem(&"127.0.0.1:1".parse().unwrap(), Loopback::Allowed),
            None
        );
    }

    #[test]
    fn a_mapped_endpoint_is_judged_as_its_ipv4_address_and_never_taken_as_written() {
        let problem = |a: &str, l| endpoint_problem(&a.parse().unwrap(), l);
        assert_eq!(
            problem("[::ffff:127.0.0.1]:51820", Loopback::Refused),
            Some("endpoint address is loopback")
        );
        assert_eq!(
            problem("[::ffff:224.0.0.1]:51820", Loopback::Allowed),
            Some("endpoint address is multicast")
        );
        assert_eq!(
            problem("[::ffff:0.0.0.0]:51820", Loopback::Allowed),
            Some("endpoint address is unspecified")
        );
        for l in [Loopback::Refused, Loopback::Allowed] {
            let why = problem("[::ffff:192.0.2.1]:51820", l).unwrap();
            assert!(why.contains("IPv4-mapped"), "{why}");
        }
    }
}
