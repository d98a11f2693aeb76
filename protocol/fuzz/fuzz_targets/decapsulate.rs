//! A device with one configured peer and a live session takes the input as
//! a sequence of datagrams, or of plaintexts the peer seals first (see
//! `weft_protocol::fuzzing`): no panic, every drop counted once, every
//! delivered packet within bounds and allowed.

#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// The protocol crate never reads the clock; the harness gets one origin
/// for the whole run and keeps its own virtual time from there.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let origin = *ORIGIN.get_or_init(Instant::now);
    weft_protocol::fuzzing::decapsulate(origin, data);
});
