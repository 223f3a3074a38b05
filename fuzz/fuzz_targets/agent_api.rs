//! Fuzz target: the Consul and Nomad API answer parsers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashi_supervisor::fuzzing::agent_api(data);
});
