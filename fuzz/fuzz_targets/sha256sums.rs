//! Fuzz target: the SHA256SUMS parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::sha256sums(data);
});
