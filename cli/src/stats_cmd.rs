//! `jointscore stats`: consortium statistics through secure aggregation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use jointscore_lender::{StatsRequester, StatsResult};
use jointscore_stats::StatsSpec;
use serde_json::json;

use crate::CliError;
use crate::nodes::{Connection, now_id, runtime};

#[derive(Subcommand)]
pub(crate) enum StatsCommand {
    /// Validate a stats spec and print its id (what party operators add to
    /// `approved_stats`) and the entries it makes.
    Check {
        /// The spec file (TOML).
        #[arg(long)]
        spec: PathBuf,
    },
    /// Run one secure-aggregation round over every party registered with
    /// the coordinator and print the labelled sums.
    Run {
        /// The spec file (TOML).
        #[arg(long)]
        spec: PathBuf,
        #[command(flatten)]
        connection: Connection,
        /// Idempotency key: running again with it returns the same job
        /// (default: derived from the time).
        #[arg(long)]
        request_id: Option<String>,
        /// Longest to wait for the round, in seconds.
        #[arg(long, default_value_t = 300)]
        wait_s: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn read_spec(path: &PathBuf) -> Result<(String, StatsSpec), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.clone(), source })?;
    let spec = StatsSpec::from_toml(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    Ok((text, spec))
}

pub(crate) fn stats(cmd: StatsCommand) -> Result<(), CliError> {
    match cmd {
        StatsCommand::Check { spec } => {
            let (_, spec) = read_spec(&spec)?;
            println!("spec `{}` is valid", spec.name);
            println!("id: {}", spec.id());
            println!("entries: {} (deadline {} ms per step)", spec.dim(), spec.deadline_ms);
            for label in spec.labels() {
                println!("  {label}");
            }
            Ok(())
        }
        StatsCommand::Run { spec, connection, request_id, wait_s, json } => {
            let (text, parsed) = read_spec(&spec)?;
            let request_id = request_id.unwrap_or_else(|| format!("stats-{}-{}", parsed.name, now_id()));
            let target = connection.target()?;
            let result = runtime()?.block_on(async {
                let mut requester = StatsRequester::connect(target).await?;
                requester.run(&text, &request_id, Duration::from_secs(wait_s)).await
            })?;
            if json {
                println!("{}", result_json(&parsed, &result));
            } else {
                print_result(&parsed, &result);
            }
            Ok(())
        }
    }
}

fn result_json(spec: &StatsSpec, r: &StatsResult) -> serde_json::Value {
    json!({
        "job_id": r.job_id,
        "spec_id": spec.id(),
        "entries": r.entries.iter().map(|(label, value)| json!({"label": label, "value": value})).collect::<Vec<_>>(),
        "included": r.included,
        "dropped": r.dropped.iter().map(|(party, step, reason)| json!({"party": party, "step": step, "reason": reason})).collect::<Vec<_>>(),
        "round_s": r.round.as_secs_f64(),
    })
}

fn print_result(spec: &StatsSpec, r: &StatsResult) {
    println!("{} ({}), job {}", spec.name, &spec.id()[..12], r.job_id);
    let width = r.entries.iter().map(|(l, _)| l.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:>12}", "entry", "sum");
    for (label, value) in &r.entries {
        println!("{label:<width$}  {value:>12}");
    }
    println!("included: {}", r.included.join(", "));
    for (party, step, reason) in &r.dropped {
        println!("dropped: {party} at {step}: {reason}");
    }
    println!("round: {:.3} s", r.round.as_secs_f64());
}
