//! Fuzz target: the installer's zip extraction and its limits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::release_zip(data);
});
