//! Party and coordinator configuration files (TOML).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = jointscore_party::PartyConfig::from_toml(text);
    let _ = jointscore_coordinator::CoordinatorConfig::from_toml(text);
});
