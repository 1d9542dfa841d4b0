//! TFHE byte forms from untrusted peers or files: public keys (parties
//! read them), contributions and proven contributions (the coordinator
//! reads them), results (the lender reads them), compressed evaluation keys
//! (the coordinator), secret key files (the lender) and CRS files (every
//! node in strict mode). Each is bounded and conformance-checked against
//! the parameters and the plan, or refused.
#![no_main]

use std::sync::LazyLock;

use jointscore_circuits::fhe::{Contribution, EncryptedResult, EvaluationKey, KeySet, LenderKey, PublicKey};
use jointscore_circuits::proof::{Crs, sha256_hex};
use jointscore_circuits::{Model, Plan, PlanKind};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    plan: Plan,
    public: PublicKey,
    crs: Crs,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let model = Model::cross_border_seller();
    let plan = Plan::new(&model, PlanKind::Pushdown).expect("plan");
    let keys = KeySet::generate().expect("keys");
    let public = PublicKey::from_bytes(&keys.public.to_bytes().expect("bytes")).expect("public key");
    let (crs, _) = Crs::generate(16).expect("crs");
    Fixture { plan, public, crs }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    // The first byte picks the decoder, so one corpus covers all seven.
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 7 {
        0 => {
            let _ = PublicKey::from_bytes(bytes);
        }
        1 => {
            let parties = f.plan.model().parties().len();
            let _ = Contribution::from_bytes(bytes, &f.plan, usize::from(which) % parties, &f.public);
        }
        2 => {
            let _ = EncryptedResult::from_bytes(bytes, &f.plan, f.public.id());
        }
        3 => {
            let _ = EvaluationKey::from_compressed_bytes(bytes, &f.public);
        }
        5 => {
            let parties = f.plan.model().parties().len();
            let _ = Contribution::from_proven_bytes(
                bytes,
                &f.plan,
                usize::from(which) % parties,
                &f.public,
                &f.crs,
                b"fuzz",
            );
        }
        6 => {
            // Under its own hash, so the decoder past the pin is reached.
            let _ = Crs::from_bytes(bytes, &sha256_hex(bytes));
        }
        _ => {
            let _ = LenderKey::from_bytes(bytes, &f.public);
        }
    }
});
