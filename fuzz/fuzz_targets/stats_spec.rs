//! Statistics specs (TOML): parsed and laid out, or refused naming the
//! field.
#![no_main]

use jointscore_stats::StatsSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = StatsSpec::from_toml(text) {
        let _ = spec.id();
        assert_eq!(spec.labels().len(), spec.dim());
    }
});
