//! The control mode of the device harness (see `weft_protocol::fuzzing`):
//! every record is a plaintext the peer seals in its live session before
//! the device receives it, so the fuzzer writes authenticated control
//! messages (and inner packets) directly and every control message's
//! parser and handler is reached, not only what a mutated ciphertext
//! happens to decrypt to. Same checks as `decapsulate`.
//!
//!   cd protocol && cargo +nightly fuzz run control fuzz/corpus/control fuzz/seeds/control

#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// The protocol crate never reads the clock: one origin for the whole run.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let origin = *ORIGIN.get_or_init(Instant::now);
    weft_protocol::fuzzing::control_sealed(origin, data);
});
