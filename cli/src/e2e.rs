//! `jointscore bench e2e`: decisions over loopback gRPC through the whole
//! system, timed by phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jointscore_coordinator::{Evaluation, TestDatabase};
use jointscore_lender::{Decision, LenderKeys};
use jointscore_testkit::cluster::{Cluster, ClusterOptions, LENDER};
use serde_json::{Map, Value, json};

use crate::{CliError, plan_kind, spinner};

#[derive(Args)]
pub(crate) struct E2eArgs {
    /// Sequential decisions timed (also the number run concurrently).
    #[arg(long, default_value_t = 20)]
    decisions: usize,
    /// Lenders deciding at once in the throughput run.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Coordinator evaluation workers.
    #[arg(long, default_value_t = 1)]
    eval_workers: usize,
    /// Use the coordinator-side plan.
    #[arg(long)]
    coordinator_side: bool,
    /// Seed of the sample book.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Which protections the system runs: `plain` (no identities),
    /// `signed` (signed contributions and the audit ledger, plaintext
    /// transport), `mtls` (both, and mutual TLS on every connection: what
    /// the quickstart runs) or `strict` (mtls, and every contribution
    /// proven with zero-knowledge proofs).
    #[arg(long, value_enum, default_value_t = Security::Mtls)]
    security: Security,
    /// Blocks one proof covers, under `--security strict`.
    #[arg(long, default_value_t = jointscore_circuits::proof::DEFAULT_PROOF_BLOCKS)]
    proof_blocks: usize,
    /// The coordinator's store: `sqlite` (a file in the cluster's
    /// directory), `postgres` (a fresh schema on `JOINTSCORE_TEST_POSTGRES`,
    /// default postgres://postgres@127.0.0.1:5432/test, dropped after) or a
    /// `postgres://` URL to make that schema on.
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// Evaluation worker processes (`jointscore coordinator worker`, each
    /// evaluating on one thread) on the PostgreSQL store; 0 evaluates in
    /// the coordinator. A list (`1,2`) runs the benchmark once per count,
    /// one after another in this process, and prints each count's
    /// throughput against the first's.
    #[arg(long, default_value = "0", value_delimiter = ',')]
    workers: Vec<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Worker processes, killed when dropped.
struct Workers(Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` worker processes of this binary on the cluster's configuration,
/// each on one evaluation thread.
fn spawn_workers(config: &std::path::Path, count: usize) -> Result<Workers, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Usage(format!("cannot find this program: {e}")))?;
    let mut workers = Workers(Vec::new());
    for k in 0..count {
        let child = std::process::Command::new(&exe)
            .args(["coordinator", "worker", "--name", &format!("bench-{k}"), "--config"])
            .arg(config)
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| CliError::Usage(format!("cannot start worker {k}: {e}")))?;
        workers.0.push(child);
    }
    Ok(workers)
}

/// The protections a benchmark cluster runs, to measure what each costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Security {
    /// No identities: plaintext, unsigned.
    Plain,
    /// Signed contributions and the ledger; plaintext transport.
    Signed,
    /// Signed, and mutual TLS on every connection.
    Mtls,
    /// Mutual TLS, and every contribution proven (strict mode).
    Strict,
}

impl Security {
    fn as_str(self) -> &'static str {
        match self {
            Security::Plain => "plain",
            Security::Signed => "signed",
            Security::Mtls => "mtls",
            Security::Strict => "strict",
        }
    }
}

/// The PostgreSQL server `--store postgres` uses without
/// `JOINTSCORE_TEST_POSTGRES` (the project machines' own).
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Nearest-rank percentile, in seconds.
fn percentile(values: &[Duration], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1].as_secs_f64()
}

/// One reported phase: its name and how to read it off a decision.
type Phase = (&'static str, fn(&Decision) -> Duration);

/// The phases reported.
fn phases() -> Vec<Phase> {
    vec![
        ("party encrypt", |d| d.phases.party_encrypt),
        ("verify proofs", |d| d.phases.verify),
        ("transfer + decode", |d| d.phases.collect.saturating_sub(d.phases.party_encrypt + d.phases.verify)),
        ("evaluate", |d| d.phases.evaluate),
        ("queue + job store", |d| d.phases.remote.saturating_sub(d.phases.collect + d.phases.evaluate)),
        ("fetch result", |d| d.phases.fetch),
        ("decrypt", |d| d.phases.decrypt),
        // Everything but the circuit: what mutual TLS, signatures, the
        // ledger, the job store and the transfers cost a decision.
        ("outside evaluation", |d| d.phases.total.saturating_sub(d.phases.evaluate)),
        ("end to end", |d| d.phases.total),
    ]
}

pub(crate) fn e2e(args: E2eArgs) -> Result<(), CliError> {
    if args.decisions == 0 || args.concurrency == 0 {
        return Err(CliError::Usage("--decisions and --concurrency must be at least 1".into()));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?
        .block_on(async {
            let mut rates = Vec::new();
            for &workers in &args.workers {
                rates.push((workers, run(&args, workers).await?));
            }
            if let [(first, base), ..] = rates[..]
                && rates.len() > 1
            {
                let ratios: Vec<f64> = rates.iter().map(|(_, r)| r / base).collect();
                if args.json {
                    let out = json!({
                        "workers": rates.iter().map(|(w, _)| w).collect::<Vec<_>>(),
                        "throughput_per_s": rates.iter().map(|(_, r)| r).collect::<Vec<_>>(),
                        "ratio_to_first": ratios,
                    });
                    println!("{out}");
                } else {
                    for ((w, r), ratio) in rates.iter().zip(&ratios) {
                        println!("{w} worker(s): {r:.3} decisions/s, {ratio:.2}× of {first}");
                    }
                }
            }
            Ok(())
        })
}

async fn run(args: &E2eArgs, workers: usize) -> Result<f64, CliError> {
    let kind = plan_kind(args.coordinator_side);
    let database = match args.store.as_str() {
        "sqlite" => None,
        "postgres" => Some(std::env::var("JOINTSCORE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into())),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url.to_string()),
        other => return Err(CliError::Usage(format!("--store `{other}`: `sqlite`, `postgres` or a postgres:// URL"))),
    };
    if workers > 0 && database.is_none() {
        return Err(CliError::Usage("--workers needs the PostgreSQL store (--store postgres)".into()));
    }
    let schema = database
        .as_deref()
        .map(|url| {
            TestDatabase::create_at(url, "bench_e2e")
                .ok_or_else(|| CliError::Usage(format!("no PostgreSQL server answers at {url}")))
        })
        .transpose()?;
    let options = ClusterOptions {
        store: schema.as_ref().map(|db| db.url().to_string()),
        evaluation: if workers > 0 { Evaluation::Workers } else { Evaluation::Local },
        sellers: args.decisions + 1,
        seed: args.seed,
        eval_workers: args.eval_workers,
        signed: args.security != Security::Plain,
        tls: matches!(args.security, Security::Mtls | Security::Strict),
        proof_blocks: (args.security == Security::Strict).then_some(args.proof_blocks),
        ..ClusterOptions::default()
    };
    let bar = spinner("starting the cluster and generating the lender's keys");
    let cluster = Cluster::start(&options).await?;
    let _workers = spawn_workers(cluster.config_file(), workers)?;
    let keys = tokio::task::spawn_blocking(LenderKeys::generate)
        .await
        .map_err(|e| CliError::Usage(format!("key generation task failed: {e}")))?;
    let keys = Arc::new(keys?);
    let mut lender = cluster.lender(keys.clone(), kind).await?;
    lender.register(LENDER).await?;
    bar.finish_and_clear();

    // Request ids need only be unique within this cluster's fresh store.
    // The first decision fetches the public key at every party: warm up.
    let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
    lender.decide(&subjects[0], "e2e-warm").await?;

    let bar = ProgressBar::new(args.decisions as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} sequential decisions")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sequential = Vec::new();
    let mut correct = 0;
    for (i, subject) in subjects.iter().skip(1).enumerate() {
        let d = lender.decide(subject, &format!("e2e-seq-{i}")).await?;
        correct += usize::from(d.bundle == cluster.reference(subject)?);
        sequential.push(d);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let bar = spinner(&format!("{} decisions with {} lenders at once", args.decisions, args.concurrency));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let mut lender = cluster.lender(keys.clone(), kind).await?;
        let mine: Vec<(usize, String)> = subjects
            .iter()
            .skip(1)
            .enumerate()
            .filter(|(i, _)| i % args.concurrency == worker)
            .map(|(i, s)| (i, s.clone()))
            .collect();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for (i, subject) in mine {
                out.push((subject.clone(), lender.decide(&subject, &format!("e2e-par-{i}")).await?));
            }
            Ok::<_, jointscore_lender::LenderError>(out)
        });
    }
    let mut concurrent = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let batch = done.map_err(|e| CliError::Usage(format!("a lender task failed: {e}")))??;
        for (subject, d) in batch {
            correct += usize::from(d.bundle == cluster.reference(&subject)?);
            concurrent.push(d);
        }
    }
    let wall = start.elapsed();
    bar.finish_and_clear();
    let throughput = concurrent.len() as f64 / wall.as_secs_f64();
    let total = sequential.len() + concurrent.len();
    let pbs = sequential.first().map_or(0, |d| d.pbs);
    let result_bytes = sequential.first().map_or(0, |d| d.result_bytes);
    cluster.stop().await?;

    if args.json {
        let mut by_phase = Map::new();
        for (name, f) in phases() {
            let v: Vec<Duration> = sequential.iter().map(f).collect();
            by_phase.insert(name.into(), json!({ "p50_s": percentile(&v, 50.0), "p95_s": percentile(&v, 95.0) }));
        }
        let totals: Vec<Duration> = sequential.iter().map(|d| d.phases.total).collect();
        let concurrent_totals: Vec<Duration> = concurrent.iter().map(|d| d.phases.total).collect();
        let out = json!({
            "plan": kind,
            "security": args.security.as_str(),
            "decisions": sequential.len(),
            "p50_s": percentile(&totals, 50.0),
            "p95_s": percentile(&totals, 95.0),
            "phases": Value::Object(by_phase),
            "concurrency": args.concurrency,
            "concurrent_decisions": concurrent.len(),
            "concurrent_wall_s": wall.as_secs_f64(),
            "throughput_per_s": throughput,
            "concurrent_p50_s": percentile(&concurrent_totals, 50.0),
            "eval_workers": args.eval_workers,
            "store": if schema.is_some() { "postgres" } else { "sqlite" },
            "workers": workers,
            "pbs": pbs,
            "result_bytes": result_bytes,
            "correct": correct,
            "total": total,
        });
        println!("{out}");
    } else {
        println!(
            "{} sequential decisions over loopback gRPC ({kind:?} plan, {pbs} PBS each, security {}):",
            sequential.len(),
            args.security.as_str()
        );
        println!("  {:<20} {:>9} {:>9}", "phase", "p50 s", "p95 s");
        for (name, f) in phases() {
            let v: Vec<Duration> = sequential.iter().map(f).collect();
            println!("  {:<20} {:>9.3} {:>9.3}", name, percentile(&v, 50.0), percentile(&v, 95.0));
        }
        let concurrent_totals: Vec<Duration> = concurrent.iter().map(|d| d.phases.total).collect();
        println!(
            "\n{} decisions by {} concurrent lenders ({}): {:.2} decisions/s, wall {:.2} s, p50 latency {:.3} s",
            concurrent.len(),
            args.concurrency,
            if workers > 0 {
                format!("{workers} worker process(es) on PostgreSQL, one thread each")
            } else {
                format!("{} evaluation worker(s) in the coordinator, {} store", args.eval_workers, args.store)
            },
            throughput,
            wall.as_secs_f64(),
            percentile(&concurrent_totals, 50.0)
        );
        println!("encrypted == reference: {correct}/{total}");
    }
    if correct != total {
        return Err(CliError::Usage("some encrypted decisions differ from the reference".into()));
    }
    Ok(throughput)
}
