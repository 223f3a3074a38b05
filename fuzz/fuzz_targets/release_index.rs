//! Fuzz target: the releases index.json parser and version resolution.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::release_index(data);
});
