//! `jointscore bench proofs`: what strict mode costs each role, in one
//! process, one step at a time (nothing else running).

use std::time::{Duration, Instant};

use clap::Args;
use jointscore_circuits::fhe::{Contribution, KeySet};
use jointscore_circuits::proof::{Crs, DEFAULT_PROOF_BLOCKS};
use jointscore_circuits::{Plan, PlanKind, Record, reference};
use serde_json::json;

use jointscore_testkit::sample;

use crate::bench::median;
use crate::{CliError, generate_keys, load_model, spinner};

/// Options of `bench proofs`.
#[derive(Args)]
pub(crate) struct ProofsArgs {
    /// Model file, or `cross_border_seller`.
    #[arg(long, default_value = "cross_border_seller")]
    model: String,
    /// Decisions timed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Blocks one proof covers.
    #[arg(long, default_value_t = DEFAULT_PROOF_BLOCKS)]
    proof_blocks: usize,
    /// Seed of the sample subjects.
    #[arg(long, default_value_t = 3)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One party's costs over the runs.
#[derive(Default)]
struct PartyCosts {
    encrypt: Vec<Duration>,
    prove: Vec<Duration>,
    verify: Vec<Duration>,
    plain_bytes: usize,
    proven_bytes: usize,
}

pub(crate) fn proofs(args: ProofsArgs) -> Result<(), CliError> {
    if args.runs == 0 {
        return Err(CliError::Usage("--runs must be at least 1".into()));
    }
    let m = load_model(&args.model)?;
    let plan = Plan::new(&m, PlanKind::Pushdown)?;
    let keys: KeySet = generate_keys()?;
    let bar = spinner(&format!("generating a CRS for {} blocks a proof", args.proof_blocks));
    let start = Instant::now();
    let generated = Crs::generate(args.proof_blocks);
    let crs_generate = start.elapsed();
    bar.finish_and_clear();
    let (crs, crs_bytes) = generated?;
    let start = Instant::now();
    let crs = Crs::from_bytes(&crs_bytes, crs.sha256())?;
    let crs_load = start.elapsed();

    let subjects = sample::subjects(&m, args.runs + 1, args.seed)
        .into_iter()
        .map(|(_, v)| Record::from_json(&m, &v))
        .collect::<Result<Vec<_>, _>>()?;
    let parties = plan.parties().len();
    let mut costs: Vec<PartyCosts> = (0..parties).map(|_| PartyCosts::default()).collect();
    let (mut expand_plain, mut expand_proven, mut circuit) = (Vec::new(), Vec::new(), Vec::new());
    let mut exact = 0;
    let bar = indicatif::ProgressBar::new(subjects.len() as u64);
    // The first subject warms caches and is not counted.
    for (i, record) in subjects.iter().enumerate() {
        let mut plain = Vec::new();
        let mut proven = Vec::new();
        for (p, cost) in costs.iter_mut().enumerate() {
            let metadata = format!("bench/{i}/{p}").into_bytes();
            let digits = plan.contribution(p, record)?;
            let start = Instant::now();
            let c = Contribution::encrypt(&plan, p, &digits, &keys.public)?;
            let encrypt = start.elapsed();
            let bytes = c.to_bytes()?;
            plain.push(Contribution::from_bytes(&bytes, &plan, p, &keys.public)?);
            let start = Instant::now();
            let c = Contribution::encrypt_proven(&plan, p, &digits, &keys.public, &crs, &metadata)?;
            let prove = start.elapsed();
            let proven_bytes = c.to_bytes()?;
            let start = Instant::now();
            proven.push(Contribution::from_proven_bytes(&proven_bytes, &plan, p, &keys.public, &crs, &metadata)?);
            let verify = start.elapsed();
            if i > 0 {
                cost.encrypt.push(encrypt);
                cost.prove.push(prove);
                cost.verify.push(verify);
            }
            cost.plain_bytes = bytes.len();
            cost.proven_bytes = proven_bytes.len();
        }
        let (_, plain_report) = keys.evaluation.evaluate(&plan, &plain)?;
        let (result, proven_report) = keys.evaluation.evaluate(&plan, &proven)?;
        exact += usize::from(keys.lender.decrypt(&plan, &result)? == reference::evaluate(&m, record).restricted(&m));
        if i > 0 {
            expand_plain.push(plain_report.expand);
            expand_proven.push(proven_report.expand);
            circuit.push(proven_report.circuit);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slowest = |f: fn(&PartyCosts) -> &Vec<Duration>| costs.iter().map(|c| median(f(c).clone())).fold(0.0, f64::max);
    let verify_sum: f64 = costs.iter().map(|c| median(c.verify.clone())).sum();
    // Parties prove on their own machines at once; the coordinator verifies
    // every party's proofs and casts every block.
    let added = slowest(|c| &c.prove) - slowest(|c| &c.encrypt) + verify_sum + median(expand_proven.clone())
        - median(expand_plain.clone());
    if args.json {
        let per_party: Vec<_> = costs
            .iter()
            .enumerate()
            .map(|(p, c)| {
                json!({
                    "party": m.parties()[p],
                    "blocks": plan.parties()[p].blocks(),
                    "encrypt_s": median(c.encrypt.clone()),
                    "prove_s": median(c.prove.clone()),
                    "verify_s": median(c.verify.clone()),
                    "plain_bytes": c.plain_bytes,
                    "proven_bytes": c.proven_bytes,
                })
            })
            .collect();
        let v = json!({
            "model": m.name(),
            "runs": args.runs,
            "proof_blocks": args.proof_blocks,
            "crs_bytes": crs_bytes.len(),
            "crs_generate_s": crs_generate.as_secs_f64(),
            "crs_load_s": crs_load.as_secs_f64(),
            "parties": per_party,
            "expand_plain_s": median(expand_plain),
            "expand_proven_s": median(expand_proven),
            "circuit_s": median(circuit),
            "added_latency_s": added,
            "exact": exact,
            "decisions": subjects.len(),
            "threads": threads,
        });
        println!("{v}");
    } else {
        println!(
            "strict mode, {} ({} runs, medians; {threads} threads; CRS for {} blocks a proof: {:.1} MB, generated in \
             {:.1} s, loaded in {:.2} s)",
            m.name(),
            args.runs,
            args.proof_blocks,
            crs_bytes.len() as f64 / 1e6,
            crs_generate.as_secs_f64(),
            crs_load.as_secs_f64()
        );
        println!(
            "{:<10} {:>6} {:>11} {:>14} {:>11} {:>11} {:>12}",
            "party", "blocks", "encrypt s", "encrypt+prove", "verify s", "plain KB", "proven KB"
        );
        for (p, c) in costs.iter().enumerate() {
            println!(
                "{:<10} {:>6} {:>11.3} {:>14.3} {:>11.3} {:>11.1} {:>12.1}",
                m.parties()[p],
                plan.parties()[p].blocks(),
                median(c.encrypt.clone()),
                median(c.prove.clone()),
                median(c.verify.clone()),
                c.plain_bytes as f64 / 1e3,
                c.proven_bytes as f64 / 1e3
            );
        }
        println!(
            "coordinator: expand {:.3} s plain, {:.3} s proven (key switch + one bootstrap a block); circuit {:.3} s",
            median(expand_plain),
            median(expand_proven),
            median(circuit)
        );
        println!(
            "added to a decision: {added:.2} s (slowest prove − slowest plain encrypt + every verify + casting); \
             encrypted == reference {exact}/{}",
            subjects.len()
        );
    }
    if exact != subjects.len() {
        return Err(CliError::Usage("a proven decision differs from the reference".into()));
    }
    Ok(())
}
