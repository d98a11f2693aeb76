//! The wire, inner-packet and punch-offer parsers alone, with every accessor of what
//! they return: cheap, so it runs many more inputs than `decapsulate`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_protocol::fuzzing::parse(data);
});
