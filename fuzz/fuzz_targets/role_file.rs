//! Fuzz target: the role file loader (TOML text → validated role or file:line:col problems).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::role_file(data);
});
