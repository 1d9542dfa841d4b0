//! `jointscore bench monitor`: one monitoring round over a portfolio of
//! sample loans, over loopback gRPC with mutual TLS, every alert checked
//! against the plaintext reference.

use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jointscore_circuits::PlanKind;
use jointscore_lender::{LenderKeys, LoanResult, MonitorBook, Schedule, run_round};
use jointscore_monitor::{Day, MonitorPlan, SELLER_WATCH, Spec};
use jointscore_testkit::cluster::{Cluster, ClusterOptions, LENDER};
use jointscore_testkit::history::{FLOW_DAYS, expected_alerts};
use serde_json::json;

use crate::{CliError, spinner};

#[derive(Args)]
pub(crate) struct MonitorBenchArgs {
    /// Loans in the portfolio (one sample seller each).
    #[arg(long, default_value_t = 1000)]
    loans: usize,
    /// Monitoring requests in flight at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seed of the sample book and its flows.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn monitor(args: MonitorBenchArgs) -> Result<(), CliError> {
    if args.loans == 0 || args.window == 0 {
        return Err(CliError::Usage("--loans and --window must be at least 1".into()));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?
        .block_on(run(args))
}

async fn run(args: MonitorBenchArgs) -> Result<(), CliError> {
    let watch = MonitorPlan::new(&Spec::from_toml(SELLER_WATCH)?)?;
    let day = Day::parse("2026-11-30")?;
    let options = ClusterOptions {
        sellers: args.loans,
        seed: args.seed,
        // The whole window may wait for evaluation at once.
        queue_capacity: args.window.max(64) * 2,
        tls: true,
        approved_monitors: vec![watch.id().to_string()],
        history_until: Some(day),
        ..ClusterOptions::default()
    };
    let bar = spinner(&format!(
        "starting a coordinator and three parties over mutual TLS, each with {FLOW_DAYS} days of flows for {} loans",
        args.loans
    ));
    let cluster = Cluster::start(&options).await;
    bar.finish_and_clear();
    let cluster = cluster?;
    let keys = tokio::task::spawn_blocking(LenderKeys::generate)
        .await
        .map_err(|e| CliError::Usage(format!("key generation task failed: {e}")))??;
    let keys = Arc::new(keys);
    let mut lender = cluster.lender_for(keys.clone(), SELLER_WATCH.to_string(), PlanKind::Monitor).await?;
    lender.register(LENDER).await?;
    let book = MonitorBook::open(&cluster.dir().join("bench-monitor.sqlite"))?;
    let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
    let portfolio = book.add("bench", SELLER_WATCH, &subjects, Schedule::Daily)?;
    let bar = ProgressBar::new(args.loans as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} loans {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = run_round(&mut lender, &book, &portfolio, day, args.window, |_| bar.inc(1)).await;
    bar.finish_and_clear();
    let report = report?;
    let expected = expected_alerts(&watch, &cluster.book, args.seed, day);
    let (mut exact, mut failed, mut alerted) = (0, 0, 0);
    for (loan, want) in report.loans.iter().zip(&expected) {
        match &loan.result {
            LoanResult::Evaluated { raised, .. } => {
                exact += usize::from(raised == want);
                alerted += usize::from(!raised.is_empty());
            }
            LoanResult::Failed(_) => failed += 1,
        }
    }
    cluster.stop().await?;
    let out = json!({
        "loans": args.loans,
        "seconds": report.seconds,
        "loans_per_s": args.loans as f64 / report.seconds,
        "exact": exact == args.loans,
        "equal_to_reference": exact,
        "failed": failed,
        "alerted": alerted,
        "pbs_per_loan": watch.stats().lookups,
        "window": args.window,
        "spec": watch.spec().name,
        "spec_id": watch.id(),
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "monitoring round of {} loans under `{}` ({} PBS per loan), mutual TLS on loopback, window {}:\n  \
             {:.1} s, {:.1} loans/s; {} loans with alerts, {} not evaluated; encrypted == reference: {}/{}",
            args.loans,
            watch.spec().name,
            watch.stats().lookups,
            args.window,
            report.seconds,
            args.loans as f64 / report.seconds,
            alerted,
            failed,
            exact,
            args.loans
        );
    }
    if exact != args.loans {
        return Err(CliError::Usage(format!("{} loans differ from the reference or failed", args.loans - exact)));
    }
    Ok(())
}
