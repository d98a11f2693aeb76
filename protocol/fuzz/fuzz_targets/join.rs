//! The join exchange's decoders (see `weft_protocol::fuzzing::join`): raw
//! frames to the inviter and to the joiner, and plaintexts a real joiner
//! or inviter seals, so every byte reaches the request and response
//! decoders and the grant's checks.
//!
//!   cd protocol && cargo +nightly fuzz run join fuzz/corpus/join fuzz/seeds/join

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_protocol::fuzzing::join::join(data);
});
