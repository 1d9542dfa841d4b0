//! A researcher comparing plans and output policies of a credit model.
//!
//! ```sh
//! cargo run --release --example research_plans                      # the shipped model
//! cargo run --release --example research_plans -- MODEL.toml        # your model
//! cargo run --release --example research_plans -- --inputs examples/seller.json --encrypted
//! ```
//!
//! For each output policy (what the lender may decrypt) and each plan —
//! **pushdown** (each party computes its separable terms in the clear and
//! sends encrypted partial results) and **coordinator-side** (parties send
//! encrypted raw features; everything runs under TFHE) — it prints the joint
//! circuit's static cost: bootstraps (PBS), bootstrap depth, encrypted blocks
//! the parties send. Then it evaluates one record with the plaintext
//! reference and with each plan run in the clear, and with `--encrypted`
//! under TFHE (one key generation, one evaluation per plan; the
//! coordinator-side one takes seconds).

use jointscore_circuits::fhe::{self, KeySet};
use jointscore_circuits::{Model, Output, Plan, PlanKind, Record, reference};

type Error = Box<dyn std::error::Error + Send + Sync>;

const PLANS: [(&str, PlanKind); 2] =
    [("pushdown", PlanKind::Pushdown), ("coordinator-side", PlanKind::CoordinatorSide)];

fn main() -> Result<(), Error> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let encrypted = take_flag(&mut args, "--encrypted");
    let inputs = take_value(&mut args, "--inputs")?;
    let model = match args.first() {
        Some(path) => Model::from_toml(&std::fs::read_to_string(path)?)?,
        None => Model::cross_border_seller(),
    };
    println!(
        "model {} v{} ({}), parties: {}",
        model.name(),
        model.version(),
        &model.id()[..16],
        model.parties().join(", ")
    );

    // 1. Output policies. A policy is part of the model (its id changes);
    //    `with_reveal` validates the variant (a credit line needs a
    //    `[credit_line]`, reasons need `reasons.count` > 0).
    let policies: Vec<(&str, Vec<Output>)> = vec![
        ("score only", vec![Output::Score]),
        ("band only", vec![Output::Band]),
        ("decision only", vec![Output::Decision]),
        ("decision, band, rate tier", vec![Output::Decision, Output::Band, Output::RateTier]),
        ("credit line only", vec![Output::CreditLine]),
        ("reasons only", vec![Output::Reasons]),
        ("the model's own", model.reveal().iter().copied().collect()),
        ("everything", Output::ALL.to_vec()),
    ];
    println!("\n{:<28} {:>27}   {:>27}", "", "pushdown", "coordinator-side");
    println!(
        "{:<28} {:>6} {:>6} {:>6} {:>6}   {:>6} {:>6} {:>6} {:>6}",
        "policy", "PBS", "depth", "blocks", "radix", "PBS", "depth", "blocks", "radix"
    );
    for (label, outputs) in &policies {
        let variant = match model.with_reveal(outputs.iter().copied()) {
            Ok(m) => m,
            Err(e) => {
                println!("{label:<28} not valid for this model: {e}");
                continue;
            }
        };
        let mut row = format!("{label:<28}");
        for (_, kind) in PLANS {
            let plan = Plan::new(&variant, kind)?;
            let s = plan.stats();
            let blocks: usize = plan.parties().iter().map(|p| p.blocks()).sum();
            row += &format!(" {:>6} {:>6} {:>6} {:>6}  ", s.lookups, s.depth, blocks, s.radix_groups);
        }
        println!("{}", row.trim_end());
    }
    println!("PBS: lookups in the circuit, counted statically; `radix`: tfhe integer operations, whose");
    println!("bootstraps are counted only when run (--encrypted). Blocks: encrypted 2-bit digits, all parties.");

    // 2. One record: from --inputs (a JSON object {feature: value}), else a
    //    synthetic sample subject of this model.
    let record = match inputs {
        Some(path) => Record::from_json(&model, &serde_json::from_str(&std::fs::read_to_string(path)?)?)?,
        None => jointscore_benches::decision::subjects(&model, 1, 1)?.remove(0),
    };
    let expected = reference::evaluate(&model, &record).restricted(&model);
    println!("\nreference evaluation (the model's own policy): {}", expected.describe(&model));
    for (name, kind) in PLANS {
        let plan = Plan::new(&model, kind)?;
        let plain = plan.eval_plain(&record)?;
        println!("{name:<17} in the clear equals the reference: {}", plain == expected);
    }

    // 3. Optionally, under TFHE: every role in this process (parties encrypt,
    //    the coordinator evaluates, the lender decrypts).
    if encrypted {
        let keys = KeySet::generate()?;
        for (name, kind) in PLANS {
            let plan = Plan::new(&model, kind)?;
            let run = fhe::decide_locally(&plan, &keys, &record)?;
            println!(
                "{name:<17} encrypted: {:.3} s at the coordinator, {} PBS, {} bytes sent, equals the reference: {}",
                (run.eval.expand + run.eval.circuit).as_secs_f64(),
                run.eval.pbs,
                run.wire_bytes,
                run.bundle == expected
            );
        }
    }
    Ok(())
}

fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    let found = args.iter().any(|a| a == name);
    args.retain(|a| a != name);
    found
}

fn take_value(args: &mut Vec<String>, name: &str) -> Result<Option<String>, Error> {
    match args.iter().position(|a| a == name) {
        Some(i) if i + 1 < args.len() => Ok(args.drain(i..=i + 1).nth(1)),
        Some(_) => Err(format!("{name} needs a value").into()),
        None => Ok(None),
    }
}
