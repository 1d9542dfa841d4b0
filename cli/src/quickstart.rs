//! `jointscore quickstart`: the whole system on loopback, deciding for
//! sample sellers and checking every decision against the plaintext
//! reference.

use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jointscore::cluster::{Cluster, ClusterOptions};
use jointscore_circuits::{Plan, PlanKind};
use jointscore_lender::LenderKeys;
use serde_json::Value;

use crate::{CliError, spinner};

#[derive(Args)]
pub(crate) struct QuickstartArgs {
    /// Number of sample sellers.
    #[arg(long, default_value_t = 10)]
    sellers: usize,
    /// Seed of the sample book.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub(crate) fn quickstart(args: QuickstartArgs) -> Result<(), CliError> {
    if args.sellers == 0 {
        return Err(CliError::Usage("--sellers must be at least 1".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(args))
}

async fn run(args: QuickstartArgs) -> Result<(), CliError> {
    let options = ClusterOptions { sellers: args.sellers, seed: args.seed, ..ClusterOptions::default() };
    let bar = spinner("starting the coordinator and three party nodes on loopback");
    let cluster = Cluster::start(&options).await;
    bar.finish_and_clear();
    let cluster = cluster?;
    let m = cluster.model.clone();
    println!("coordinator  {}  (SQLite store in {})", cluster.coordinator_url(), cluster.dir().display());
    for p in &cluster.parties {
        println!("party        {:<10} {} sample sellers, approves model {}", p.name, p.store.len()?, &m.id()[..16]);
    }
    let plan = Plan::new(&m, PlanKind::Pushdown)?;
    println!("model        {} ({} PBS per decision, pushdown plan)", m.name, plan.stats().lookups);

    let bar = spinner("lender: generating a TFHE key set (a few seconds)");
    let keys = tokio::task::spawn_blocking(LenderKeys::generate)
        .await
        .map_err(|e| CliError::Usage(format!("key generation task failed: {e}")))?;
    bar.finish_and_clear();
    let keys = Arc::new(keys?);
    let mut lender = cluster.lender(keys.clone(), PlanKind::Pushdown).await?;
    let bar = spinner(&format!(
        "lender: registering key set {} ({:.0} MB compressed evaluation key; the coordinator decompresses it)",
        keys.id(),
        keys.evaluation.len() as f64 / 1e6
    ));
    let registered = lender.register("quickstart-lender").await;
    bar.finish_and_clear();
    println!("lender       key set {} registered; the secret key stays with the lender", registered?);

    let bar = ProgressBar::new(cluster.book.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} decisions over gRPC {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let mut agree = 0;
    for (i, (subject, _)) in cluster.book.iter().enumerate() {
        let decision = lender.decide(subject, &format!("quickstart-{}-{i}", keys.id())).await?;
        agree += usize::from(decision.bundle == cluster.reference(subject)?);
        rows.push((subject.clone(), decision));
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "\n{:<12} {:<9} {:<5} {:<12} {:>9} {:>8}  reasons",
        "seller", "decision", "band", "rate tier", "line k$", "latency"
    );
    for (subject, d) in &rows {
        let shown = d.bundle.describe(&m);
        let text = |k: &str| shown.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let reasons: Vec<String> = shown
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        println!(
            "{:<12} {:<9} {:<5} {:<12} {:>9} {:>7.2}s  {}",
            subject,
            text("decision"),
            text("band"),
            text("rate_tier"),
            shown.get("credit_line").and_then(Value::as_u64).map_or("-".into(), |l| l.to_string()),
            d.phases.total.as_secs_f64(),
            reasons.join("; ")
        );
    }
    cluster.stop().await?;
    println!("\nencrypted == reference: {agree}/{}", rows.len());
    if agree != rows.len() {
        return Err(CliError::Usage("some encrypted decisions differ from the reference".into()));
    }
    Ok(())
}
