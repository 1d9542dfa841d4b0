//! Model files (TOML) as a party, the coordinator and a lender read them:
//! parsed, checked and planned both ways, or refused; never a panic.
#![no_main]

use jointscore_circuits::{Model, Plan, PlanKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.len() > 64 << 10 {
        return;
    }
    if let Ok(model) = Model::from_toml(text) {
        let _ = model.id();
        for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
            let _ = Plan::new(&model, kind);
        }
    }
});
