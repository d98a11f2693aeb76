//! Arbitrary bytes read as the store's state file (`weft-store.state`):
//! nothing may panic, and what reads must be written back to text that
//! reads the same.
//!
//!   cd store && cargo +nightly fuzz run manifest fuzz/corpus/manifest fuzz/seeds/manifest

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_store::fuzzing::manifest(data);
});
