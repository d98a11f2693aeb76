//! The value encoding every tree shares: one record-version byte, then the
//! record in postcard, with nothing after it. Decoding never panics and
//! accepts only the exact version a record type declares.
//!
//! To evolve a record, keep the old struct (renamed, private), give the new
//! one the next [`Record::VERSION`], and make that type's decoding accept the
//! old version byte and convert. Values are rewritten in the new version
//! only when they are next written, so a build must keep reading every
//! version it may find on disk.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::DecodeError;

/// A type stored as a versioned postcard value.
pub trait Record: Serialize + DeserializeOwned {
    /// The version byte written before this record's postcard encoding.
    const VERSION: u8;
}

/// Encodes `record` as its version byte followed by its postcard form.
pub fn encode<R: Record>(record: &R) -> Vec<u8> {
    // Invariant: postcard serialises plain structs of integers, strings,
    // byte vectors, arrays, options and socket addresses into a growable
    // Vec; its only failure modes (unknown sequence lengths, a full fixed
    // buffer) cannot occur for the records in this crate.
    postcard::to_extend(record, vec![R::VERSION]).expect("postcard encodes a record into a Vec")
}

/// Decodes a value written by [`encode`]. Never panics, whatever `bytes` is.
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != R::VERSION {
        return Err(DecodeError::UnknownVersion {
            found: version,
            supported: R::VERSION,
        });
    }
    let (record, rest) = postcard::take_from_bytes(body).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(record)
}

/// Reads a 32-byte identity (or hash) key.
pub(crate) fn key32(key: &[u8]) -> Result<[u8; 32], DecodeError> {
    key.try_into().map_err(|_| DecodeError::KeyLength {
        found: key.len(),
        expected: 32,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        n: u64,
    }

    impl Record for Sample {
        const VERSION: u8 = 3;
    }

    fn sample() -> Sample {
        Sample {
            name: "alpha".into(),
            n: 300,
        }
    }

    #[test]
    fn a_record_round_trips_behind_its_version_byte() {
        let bytes = encode(&sample());
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(&bytes), Ok(sample()));
    }

    #[test]
    fn an_empty_value_is_refused() {
        assert_eq!(decode::<Sample>(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn another_record_version_is_refused() {
        let mut bytes = encode(&sample());
        bytes[0] = 4;
        assert_eq!(
            decode::<Sample>(&bytes),
            Err(DecodeError::UnknownVersion {
                found: 4,
                supported: 3
            })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert_eq!(decode::<Sample>(&bytes), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn a_truncated_record_is_refused() {
        let bytes = encode(&sample());
        for len in 1..bytes.len() {
            assert!(
                matches!(
                    decode::<Sample>(&bytes[..len]),
                    Err(DecodeError::Malformed(_))
                ),
                "{len}"
            );
        }
    }

    #[test]
    fn a_huge_length_prefix_is_refused_without_allocating_it() {
        // Version, then a string length of u64::MAX as a varint.
        let bytes = [
            3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert_eq!(key32(&[1; 32]), Ok([1; 32]));
        assert_eq!(
            key32(&[1; 31]),
            Err(DecodeError::KeyLength {
                found: 31,
                expected: 32
            })
        );
    }
}
