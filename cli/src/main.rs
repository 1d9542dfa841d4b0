//! `jointscore`: credit models, plans, evaluation and benchmarks from the
//! command line.

mod audit_cmd;
mod bench;
mod claims_bench;
mod e2e;
mod fit_cmd;
mod lender_monitor;
mod monitor_bench;
mod monitor_cmd;
mod nodes;
mod party_log;
mod proofs_bench;
mod psi_cmd;
mod quickstart;
mod reconcile_cmd;
mod stats_cmd;
mod study;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::ProgressBar;
use jointscore_circuits::fhe::{self, KeySet};
use jointscore_circuits::{Model, Plan, PlanKind, Record, reference};
use jointscore_testkit::cluster::ClusterError;
use jointscore_testkit::sample;
use serde_json::{Value, json};
use thiserror::Error;

/// The name that selects the model shipped inside the binary.
const BUILTIN: &str = "cross_border_seller";

#[derive(Parser)]
#[command(name = "jointscore", version, about = "Privacy-preserving joint credit decisions over TFHE.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with credit model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Fit a scorecard on vertically split CSV data through the binning
    /// protocol, score the test rows under TFHE, compare with a plaintext
    /// logistic regression.
    Study(study::StudyArgs),
    /// Run the whole system on loopback (coordinator, three party nodes,
    /// a lender, over gRPC with SQLite stores in a temp dir), decide for
    /// sample sellers and check every decision against the plaintext
    /// reference.
    Quickstart(quickstart::QuickstartArgs),
    /// A party node: import records, serve contributions.
    #[command(subcommand)]
    Party(nodes::PartyCommand),
    /// The coordinator service.
    #[command(subcommand)]
    Coordinator(nodes::CoordinatorCommand),
    /// Node identities: keys and the consortium file.
    #[command(subcommand)]
    Consortium(audit_cmd::ConsortiumCommand),
    /// The coordinator's audit ledger: verify it, show who used whose data.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// The lender: keys, registration, decisions.
    #[command(subcommand)]
    Lender(nodes::LenderCommand),
    /// Consortium statistics: sums over every party's book by secure
    /// aggregation, no party's own numbers seen by anyone.
    #[command(subcommand)]
    Stats(stats_cmd::StatsCommand),
    /// Post-loan monitor specs: validate them, lint what their alerts reveal.
    #[command(subcommand)]
    Monitor(monitor_cmd::MonitorCommand),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Validate a model file and print its id.
    Check {
        /// Model file (TOML), or `cross_border_seller` for the built-in model.
        file: String,
    },
    /// Report, per revealed output, how many values it takes, whose
    /// features it depends on, and whether one party's single feature
    /// determines it exactly over a wide range (exit status 1 if so).
    Lint {
        /// Model file (TOML), or `cross_border_seller`.
        file: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what each party computes and sends, the joint circuit, integer
    /// widths and bootstrap counts (measured under TFHE unless --static).
    Plan {
        /// Model file (TOML), or `cross_border_seller`.
        file: String,
        /// Plan with raw features at the coordinator instead of pushdown.
        #[arg(long)]
        coordinator_side: bool,
        /// Skip key generation and the measured run; print static counts only.
        #[arg(long = "static")]
        static_only: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model on one subject's inputs.
    Eval {
        /// Model file (TOML), or `cross_border_seller`.
        file: String,
        /// Inputs as a JSON object `{feature: value}` (null = missing), or a
        /// path to a file holding one.
        #[arg(long)]
        inputs: String,
        /// Also run the encrypted path and compare it with the reference.
        #[arg(long)]
        encrypted: bool,
        /// Use the coordinator-side plan for the encrypted path.
        #[arg(long)]
        coordinator_side: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Joint-circuit latency and bootstraps, pushdown vs coordinator-side.
    Decision(bench::DecisionArgs),
    /// ECDH PSI on ristretto255: both sides in one process.
    Psi(bench::PsiArgs),
    /// tfhe's 2-bit parameter sets side by side: lookup latency and
    /// throughput on this machine.
    Params(bench::ParamsArgs),
    /// Vertical binning round (encrypted labels summed per bin), in process.
    Binning(bench::BinningArgs),
    /// A joint scorecard fit (binning, Gram round, weights) with bytes per
    /// role, in process.
    Fit(bench::FitArgs),
    /// Secure aggregation round (Bonawitz et al.), every party in process.
    Secagg(bench::SecaggArgs),
    /// Strict mode's cost: proving at each party, verifying and casting at
    /// the coordinator, in process.
    Proofs(proofs_bench::ProofsArgs),
    /// End-to-end decisions over loopback gRPC: latency percentiles by
    /// phase, and throughput with concurrent lenders.
    E2e(e2e::E2eArgs),
    /// The PostgreSQL store's cost per decision and its claim rate, with
    /// no-op jobs and 1, 4 and 16 claimers.
    Claims(claims_bench::ClaimsArgs),
    /// One monitoring round over a portfolio of sample loans, over loopback
    /// gRPC with mutual TLS, every alert checked against the reference.
    Monitor(monitor_bench::MonitorBenchArgs),
}

/// Errors of the command line; each names what to fix.
#[derive(Debug, Error)]
enum CliError {
    #[error(transparent)]
    Circuits(#[from] jointscore_circuits::Error),
    #[error(transparent)]
    Learn(#[from] jointscore_learn::Error),
    #[error(transparent)]
    Monitor(#[from] jointscore_monitor::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("inputs are not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Party(#[from] jointscore_party::PartyError),
    #[error(transparent)]
    Coordinator(#[from] jointscore_coordinator::CoordinatorError),
    #[error(transparent)]
    Lender(#[from] jointscore_lender::LenderError),
    /// Not a failure: an outcome scripts read from the exit status (see
    /// `lender monitor`).
    #[error("{message}")]
    Outcome { code: u8, message: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Model(cmd) => model(cmd),
        Command::Monitor(cmd) => monitor_cmd::monitor(cmd),
        Command::Bench(BenchCommand::Decision(args)) => bench::decision(args),
        Command::Bench(BenchCommand::Psi(args)) => bench::psi(args),
        Command::Bench(BenchCommand::Params(args)) => bench::params(args),
        Command::Bench(BenchCommand::Binning(args)) => bench::binning(args),
        Command::Bench(BenchCommand::Fit(args)) => bench::fit(args),
        Command::Bench(BenchCommand::E2e(args)) => e2e::e2e(args),
        Command::Bench(BenchCommand::Claims(args)) => claims_bench::claims(args),
        Command::Bench(BenchCommand::Monitor(args)) => monitor_bench::monitor(args),
        Command::Bench(BenchCommand::Secagg(args)) => bench::secagg(args),
        Command::Bench(BenchCommand::Proofs(args)) => proofs_bench::proofs(args),
        Command::Quickstart(args) => quickstart::quickstart(args),
        Command::Party(cmd) => nodes::party(cmd),
        Command::Coordinator(cmd) => nodes::coordinator(cmd),
        Command::Lender(cmd) => nodes::lender(cmd),
        Command::Consortium(cmd) => audit_cmd::consortium(cmd),
        Command::Audit(cmd) => audit_cmd::audit(cmd),
        Command::Stats(cmd) => stats_cmd::stats(cmd),
        Command::Study(args) => study::study(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Outcome { code, message }) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a model file, or the built-in model by name.
fn load_model(file: &str) -> Result<Model, CliError> {
    if file == BUILTIN && !Path::new(file).exists() {
        return Ok(Model::cross_border_seller());
    }
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read { path: file.into(), source })?;
    Ok(Model::from_toml(&text)?)
}

fn read_inputs(arg: &str) -> Result<Value, CliError> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).map_err(|source| CliError::Read { path: arg.into(), source })?
    };
    serde_json::from_str(&text).map_err(|e| CliError::Json(e.to_string()))
}

/// A spinner on stderr showing `message` until cleared.
fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Generates a key set behind a spinner.
fn generate_keys() -> Result<KeySet, CliError> {
    let bar = spinner("generating TFHE keys (a few seconds)");
    let keys = KeySet::generate();
    bar.finish_and_clear();
    Ok(keys?)
}

fn plan_kind(coordinator_side: bool) -> PlanKind {
    if coordinator_side { PlanKind::CoordinatorSide } else { PlanKind::Pushdown }
}

fn model(cmd: ModelCommand) -> Result<(), CliError> {
    match cmd {
        ModelCommand::Lint { file, json } => {
            let m = load_model(&file)?;
            let lint = jointscore_circuits::lint::lint(&m);
            if json {
                let outputs: Vec<serde_json::Value> = lint
                    .outputs
                    .iter()
                    .map(|o| {
                        serde_json::json!({
                            "output": o.output.name(),
                            "values": o.values,
                            "parties": o.parties,
                            "features": o.features,
                            "revealing": o.revealing.as_ref().map(|r| serde_json::json!({
                                "feature": r.feature, "party": r.party, "values": r.values, "detail": r.detail,
                            })),
                        })
                    })
                    .collect();
                let out = serde_json::json!({ "model_id": m.id(), "passes": lint.passes(), "outputs": outputs });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                println!("model {} ({})", m.name(), m.id());
                for o in &lint.outputs {
                    println!(
                        "{:<12} at most {:>6} values; depends on {} ({})",
                        o.output.name(),
                        o.values,
                        o.parties.join(", "),
                        o.features.join(", ")
                    );
                    if let Some(r) = &o.revealing {
                        println!("  REVEALS {}'s `{}`: {}", r.party, r.feature, r.detail);
                    }
                }
                println!("{}", if lint.passes() { "lint: ok" } else { "lint: fails" });
            }
            if !lint.passes() {
                std::process::exit(1);
            }
            Ok(())
        }
        ModelCommand::Check { file } => {
            let m = load_model(&file)?;
            println!(
                "ok: {} v{} ({} parties, {} features, {} knock-outs, {} bands)",
                m.name(),
                m.version(),
                m.parties().len(),
                m.features().len(),
                m.knockouts().len(),
                m.bands().len()
            );
            println!("model id: {}", m.id());
            let reveal: Vec<&str> = m.reveal().iter().map(|o| o.name()).collect();
            println!("reveals: {}", reveal.join(", "));
            Ok(())
        }
        ModelCommand::Plan { file, coordinator_side, static_only, json } => {
            let m = load_model(&file)?;
            let plan = Plan::new(&m, plan_kind(coordinator_side))?;
            let measured = if static_only {
                None
            } else {
                let keys = generate_keys()?;
                let (_, record) = sample::subjects(&m, 1, 7).remove(0);
                let record = Record::from_json(&m, &record)?;
                Some(fhe::decide_locally(&plan, &keys, &record)?)
            };
            print_plan(&plan, measured.as_ref(), json);
            Ok(())
        }
        ModelCommand::Eval { file, inputs, encrypted, coordinator_side } => {
            let m = load_model(&file)?;
            let record = Record::from_json(&m, &read_inputs(&inputs)?)?;
            let want = reference::evaluate(&m, &record).restricted(&m);
            let mut out = json!({ "model_id": m.id(), "reference": want.describe(&m) });
            if encrypted {
                let plan = Plan::new(&m, plan_kind(coordinator_side))?;
                let keys = generate_keys()?;
                let run = fhe::decide_locally(&plan, &keys, &record)?;
                out["encrypted"] = run.bundle.describe(&m);
                out["agree"] = json!(run.bundle == want);
                out["plan"] = json!(plan.kind());
                out["coordinator_seconds"] = json!((run.eval.expand + run.eval.circuit).as_secs_f64());
                out["pbs"] = json!(run.eval.pbs);
                out["party_encrypt_seconds"] = json!(run.encrypt.as_secs_f64());
                out["wire_bytes"] = json!(run.wire_bytes);
                if run.bundle != want {
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    return Err(CliError::Usage("the encrypted result differs from the reference".into()));
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
    }
}

fn print_plan(plan: &Plan, measured: Option<&fhe::LocalRun>, as_json: bool) {
    let m = plan.model();
    let stats = plan.stats();
    if as_json {
        let v = json!({
            "model_id": m.id(),
            "plan": plan.kind(),
            "points_unit": plan.points_unit(),
            "parties": plan.parties(),
            "circuit": stats,
            "measured_pbs": measured.map(|r| r.eval.pbs),
            "measured_seconds": measured.map(|r| (r.eval.expand + r.eval.circuit).as_secs_f64()),
            "wire_bytes": measured.map(|r| r.wire_bytes),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!("model {} ({}), plan: {:?}", m.name(), &m.id()[..16], plan.kind());
    println!("points counted in units of {}", plan.points_unit());
    for p in plan.parties() {
        println!("\nparty {} sends {} encrypted blocks (base-4 digits):", p.name, p.blocks());
        for s in &p.slots {
            println!("  {:>2} digit(s)  max {:>5}  {}", s.digits, s.max, s.what);
        }
    }
    println!("\njoint circuit at the coordinator:");
    println!("  lookups (PBS)    {:>6}", stats.lookups);
    println!("  linear ops       {:>6}  (no bootstrap)", stats.linear);
    println!("  radix groups     {:>6}  (tfhe integer ops; PBS counted when run)", stats.radix_groups);
    println!("  PBS depth        {:>6}", stats.depth);
    println!("  input blocks     {:>6}", stats.inputs);
    println!("  output blocks    {:>6}", stats.output_blocks);
    println!("\nlookups by part (a lookup shared by two parts counts where first built):");
    let mut merged: Vec<(String, usize)> = Vec::new();
    for (name, n) in &stats.phases {
        match merged.iter_mut().find(|(m, _)| m == name) {
            Some(entry) => entry.1 += n,
            None => merged.push((name.clone(), *n)),
        }
    }
    for (name, n) in merged.iter().filter(|(_, n)| *n > 0) {
        println!("  {name:<48} {n:>4}");
    }
    if let Some(r) = measured {
        println!("\nmeasured on one sample subject (tfhe pbs-stats):");
        println!("  PBS              {:>6}", r.eval.pbs);
        println!(
            "  coordinator      {:>9.3} s  (expand {:.3} s, circuit {:.3} s)",
            (r.eval.expand + r.eval.circuit).as_secs_f64(),
            r.eval.expand.as_secs_f64(),
            r.eval.circuit.as_secs_f64()
        );
        println!("  wire bytes       {:>6}  (all contributions)", r.wire_bytes);
    }
}
