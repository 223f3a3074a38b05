//! Fuzz target: detached OpenPGP signatures (and key files) against the embedded HashiCorp key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::openpgp(data);
});
