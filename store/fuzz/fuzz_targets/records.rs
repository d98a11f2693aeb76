//! Arbitrary bytes decoded as every stored record type and as an entry of
//! every tree: nothing may panic, and what decodes must round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_store::fuzzing::records(data);
});
