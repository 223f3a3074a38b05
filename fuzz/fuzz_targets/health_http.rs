//! Fuzz target: raw HTTP bytes into the health server over loopback.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::health_http(data);
});
