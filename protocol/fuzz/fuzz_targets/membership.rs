//! The membership parsers: signed certificates, invite tokens and gossip
//! records through the validator (see `weft_protocol::membership::fuzzing`):
//! no panic, and whatever is accepted obeys the rules.
//!
//!   cd protocol && cargo +nightly fuzz run membership fuzz/corpus/membership fuzz/seeds/membership

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_protocol::membership::fuzzing::membership(data);
});
