//! The authority-set chain and the renewal messages (see
//! `weft_protocol::membership::authority_fuzzing`): no panic, and whatever is
//! accepted obeys the rules.
//!
//!   cd protocol && cargo +nightly fuzz run authority fuzz/corpus/authority fuzz/seeds/authority

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_protocol::membership::authority_fuzzing::authority(data);
});
