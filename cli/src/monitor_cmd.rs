//! `jointscore monitor check|plan|lint`: monitor spec files.

use clap::Subcommand;
use jointscore_monitor::{MonitorPlan, Right, SELLER_WATCH, Spec};

use crate::CliError;

/// Monitor spec files (`jointscore.monitor.v1`).
#[derive(Subcommand)]
pub(crate) enum MonitorCommand {
    /// Validate a monitor spec and print its id (what parties approve), its
    /// windows per party and which alerts are one party's or joint.
    Check {
        /// Spec file (TOML), or `seller_watch` for the built-in example.
        file: String,
    },
    /// Compile a spec: what each party computes in the clear and sends
    /// (verdicts, comparison codes), and the alert circuit's bootstraps.
    Plan {
        /// Spec file (TOML), or `seller_watch`.
        file: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Report what the alert bits tell the lender about a party's values:
    /// a window compared with `--limit` or more distinct constants is read
    /// almost exactly, round after round (exit status 1 if any).
    Lint {
        /// Spec file (TOML), or `seller_watch`.
        file: String,
        /// Distinct thresholds on one window that fail the lint.
        #[arg(long, default_value_t = 3)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn load(file: &str) -> Result<Spec, CliError> {
    Ok(Spec::from_toml(&source(file)?)?)
}

/// A spec file's text, or the built-in example's by name.
pub(crate) fn source(file: &str) -> Result<String, CliError> {
    Ok(if file == "seller_watch" {
        SELLER_WATCH.to_string()
    } else {
        std::fs::read_to_string(file).map_err(|source| CliError::Read { path: file.into(), source })?
    })
}

/// An enum as the spec file spells it.
fn snake(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

pub(crate) fn monitor(cmd: MonitorCommand) -> Result<(), CliError> {
    match cmd {
        MonitorCommand::Check { file } => {
            let spec = load(&file)?;
            println!("monitor spec {} version {} ({})", spec.name, spec.version, spec.id());
            for party in &spec.parties {
                let windows: Vec<String> = spec
                    .windows
                    .iter()
                    .filter(|w| &w.party == party)
                    .map(|w| format!("{} ({} of `{}`)", w.name, snake(&w.window.aggregate), w.window.field))
                    .collect();
                println!("  {party}: {}", if windows.is_empty() { "no window".into() } else { windows.join(", ") });
            }
            for (alert, parties) in spec.alert_parties() {
                let severity =
                    spec.alerts.iter().find(|a| a.name == alert).map_or(String::new(), |a| snake(&a.severity));
                let kind = if parties.len() == 1 { "one party's" } else { "joint" };
                let parties: Vec<&str> = parties.iter().map(String::as_str).collect();
                println!("  alert {alert} ({severity}): {kind}, reads {}", parties.join(", "));
            }
            Ok(())
        }
        MonitorCommand::Plan { file, json } => {
            let plan = MonitorPlan::new(&load(&file)?)?;
            let stats = plan.stats();
            if json {
                let out = serde_json::json!({
                    "spec_id": plan.id(),
                    "parties": plan.parties(),
                    "alerts": plan.alert_plan().alerts(),
                    "circuit": stats,
                });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                return Ok(());
            }
            println!("monitor spec {} ({})", plan.spec().name, plan.id());
            for party in plan.parties() {
                println!("  {} sends {} blocks:", party.name, party.blocks());
                for slot in &party.slots {
                    println!("    {:<48} {} digit(s)", slot.what, slot.digits);
                }
            }
            println!(
                "  alert circuit: {} PBS per loan (depth {}), {} output blocks; the lender decrypts one bit per alert",
                stats.lookups, stats.depth, stats.output_blocks
            );
            Ok(())
        }
        MonitorCommand::Lint { file, limit, json } => {
            let spec = load(&file)?;
            let findings = spec.lint(limit.max(1));
            let compared: usize = spec
                .alerts
                .iter()
                .flat_map(|a| &a.conditions)
                .filter(|c| matches!(c.right, Right::Window { .. }))
                .count();
            if json {
                let out = serde_json::json!({
                    "spec_id": spec.id(),
                    "passes": findings.is_empty(),
                    "window_comparisons": compared,
                    "findings": findings.iter().map(|(party, window, thresholds)| serde_json::json!({
                        "party": party, "window": window, "thresholds": thresholds,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                println!("monitor spec {} ({})", spec.name, spec.id());
                println!("  outputs: one bit and a severity per alert and loan; never a value");
                println!("  {compared} conditions compare two windows (one bit of their ratio per round)");
                for (party, window, thresholds) in &findings {
                    println!(
                        "  REVEALS {party}'s `{window}`: compared with {} constants {thresholds:?}",
                        thresholds.len()
                    );
                }
                println!("{}", if findings.is_empty() { "lint: ok" } else { "lint: fails" });
            }
            if !findings.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
