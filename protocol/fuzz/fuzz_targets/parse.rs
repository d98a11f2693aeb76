//! The parsers alone (data-plane messages, inner packets, and every control
//! message as a transport plaintext), with everything they return read and
//! re-emitted: cheap, so it runs many more inputs than `decapsulate`. Its
//! seeds (`fuzz/seeds/parse`) are one of each control message.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_protocol::fuzzing::parse(data);
});
