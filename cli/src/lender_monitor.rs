//! `jointscore lender monitor add|run|alerts|ack`: portfolios, rounds and
//! alerts at the lender (`jointscore_lender::monitor`).
//!
//! Exit status, for scripts: 0 when nothing new needs a look, 2 when
//! alerts are waiting (new ones after `run`, unacknowledged ones for
//! `alerts`), 3 when a round left loans unevaluated (named in the output;
//! running it again asks them again), 1 on an error.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use jointscore_circuits::PlanKind;
use jointscore_lender::{LoanResult, MonitorBook, Schedule, run_round};
use jointscore_monitor::Day;
use jointscore_stats::StatsSpec;

use crate::CliError;
use crate::nodes::{Connection, connect_for, runtime, subjects_from_csv};

/// Where the lender's monitoring book is, by default.
const DEFAULT_BOOK: &str = "lender-monitor.sqlite";

/// Exit status when alerts are waiting.
const ALERTS: u8 = 2;
/// Exit status when a round left loans unevaluated.
const PARTIAL: u8 = 3;

#[derive(Args)]
pub(crate) struct BookArg {
    /// The monitoring book (SQLite), created on first use.
    #[arg(long, default_value = DEFAULT_BOOK)]
    book: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum MonitorCommand {
    /// Register (or update) a portfolio: its loans, the monitor spec
    /// watching them, and how often a round is due.
    Add {
        #[command(flatten)]
        book: BookArg,
        /// The portfolio's name.
        #[arg(long)]
        portfolio: String,
        /// Monitor spec file, or `seller_watch` for the built-in example.
        #[arg(long, default_value = "seller_watch")]
        spec: String,
        /// A CSV file whose `subject` (or first) column lists the loans.
        #[arg(long)]
        subjects: PathBuf,
        /// `daily` or `weekly`.
        #[arg(long, default_value = "daily")]
        schedule: String,
    },
    /// Run the rounds due (or the round of `--day`) over mutual TLS through
    /// the coordinator; prints each loan's alerts. Exit 2 when alerts were
    /// raised, 3 when loans could not be evaluated.
    Run {
        #[command(flatten)]
        book: BookArg,
        #[command(flatten)]
        connection: Connection,
        /// Directory of the key files.
        #[arg(long, default_value = "lender-keys")]
        keys: PathBuf,
        /// The portfolio.
        #[arg(long)]
        portfolio: String,
        /// The day the windows end (default: the rounds due up to today,
        /// UTC).
        #[arg(long)]
        day: Option<String>,
        /// Most requests in flight at once.
        #[arg(long, default_value_t = jointscore_lender::DEFAULT_WINDOW)]
        window: usize,
        /// One JSON report per round instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Alerts not yet acknowledged (all with `--all`). Exit 2 when any is
    /// waiting.
    Alerts {
        #[command(flatten)]
        book: BookArg,
        /// One portfolio (default: every one).
        #[arg(long)]
        portfolio: Option<String>,
        /// Acknowledged ones too.
        #[arg(long)]
        all: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Portfolio drift by secure aggregation: one round of a statistics
    /// spec with binned counters (e.g. `monitors/drift.toml`), compared
    /// with a baseline as population stability indices. Exit 2 when a
    /// counter shifted significantly (PSI ≥ 0.25).
    Drift {
        #[command(flatten)]
        connection: Connection,
        /// The statistics spec (TOML); parties approve its id in
        /// `approved_stats`.
        #[arg(long)]
        stats: PathBuf,
        /// A baseline an earlier `--save` wrote.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Write this round's counts as a baseline.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Longest to wait for the round, in seconds.
        #[arg(long, default_value_t = 300)]
        wait_s: u64,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge alerts: a portfolio's (or every one's), from rounds up
    /// to `--through` (default: all).
    Ack {
        #[command(flatten)]
        book: BookArg,
        /// One portfolio (default: every one).
        #[arg(long)]
        portfolio: Option<String>,
        /// Only rounds up to this day.
        #[arg(long)]
        through: Option<String>,
    },
}

fn day(text: &str) -> Result<Day, CliError> {
    Day::parse(text).map_err(|e| CliError::Usage(e.to_string()))
}

/// Today, UTC.
fn today() -> Day {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Day::from_number((s / 86_400) as i64)
}

pub(crate) fn monitor(cmd: MonitorCommand) -> Result<(), CliError> {
    match cmd {
        MonitorCommand::Add { book, portfolio, spec, subjects, schedule } => {
            let schedule = Schedule::parse(&schedule)
                .ok_or_else(|| CliError::Usage(format!("schedule `{schedule}`: `daily` or `weekly`")))?;
            let subjects = subjects_from_csv(&subjects)?;
            let book = MonitorBook::open(&book.book)?;
            let p = book.add(&portfolio, &crate::monitor_cmd::source(&spec)?, &subjects, schedule)?;
            println!(
                "portfolio `{}`: {} loans under spec {} ({}), {}; parties approve the spec id in `approved_monitors`",
                p.name,
                p.subjects.len(),
                p.spec_id,
                spec,
                p.schedule.name()
            );
            Ok(())
        }
        MonitorCommand::Run { book, connection, keys, portfolio, day: asked, window, json } => {
            let book = MonitorBook::open(&book.book)?;
            let p = book.portfolio(&portfolio)?;
            let days = match asked {
                Some(d) => vec![day(&d)?],
                None => book.due(&p, today())?,
            };
            if days.is_empty() {
                println!("portfolio `{portfolio}`: no round is due");
                return Ok(());
            }
            runtime()?.block_on(async {
                let mut lender = connect_for(&connection, &keys, p.spec_toml.clone(), PlanKind::Monitor).await?;
                let (mut alerted, mut failed) = (0, 0);
                for d in days {
                    let report = run_round(&mut lender, &book, &p, d, window, |_| {}).await?;
                    alerted += report.alerted();
                    failed += report.failed();
                    if json {
                        println!("{}", serde_json::to_string(&report).map_err(|e| CliError::Json(e.to_string()))?);
                        continue;
                    }
                    println!(
                        "round {} of `{}`: {} loans ({} asked now) in {:.1} s; {} with alerts, {} not evaluated",
                        report.day,
                        report.portfolio,
                        report.loans.len(),
                        report.asked,
                        report.seconds,
                        report.alerted(),
                        report.failed()
                    );
                    for loan in &report.loans {
                        match &loan.result {
                            LoanResult::Evaluated { raised, severity: Some(s) } => {
                                println!("  {}  {:?}  {}", loan.subject, s, raised.join(", "));
                            }
                            LoanResult::Evaluated { .. } => {}
                            LoanResult::Failed(reason) => println!("  {}  NOT EVALUATED  {reason}", loan.subject),
                        }
                    }
                }
                if failed > 0 {
                    return Err(CliError::Outcome {
                        code: PARTIAL,
                        message: format!("{failed} loans not evaluated; run the round again to ask them again"),
                    });
                }
                if alerted > 0 {
                    return Err(CliError::Outcome {
                        code: ALERTS,
                        message: format!("{alerted} loans with alerts; `lender monitor alerts` lists them"),
                    });
                }
                Ok(())
            })
        }
        MonitorCommand::Alerts { book, portfolio, all, json } => {
            let book = MonitorBook::open(&book.book)?;
            let alerts = book.alerts(portfolio.as_deref(), all)?;
            for a in &alerts {
                if json {
                    println!("{}", serde_json::to_string(a).map_err(|e| CliError::Json(e.to_string()))?);
                } else {
                    println!(
                        "{}  {}  {}  {}  {:?}{}",
                        a.portfolio,
                        a.day,
                        a.subject,
                        a.alert,
                        a.severity,
                        if a.acknowledged { "  (acknowledged)" } else { "" }
                    );
                }
            }
            let waiting = alerts.iter().filter(|a| !a.acknowledged).count();
            if waiting > 0 {
                return Err(CliError::Outcome {
                    code: ALERTS,
                    message: format!("{waiting} alerts not acknowledged (`lender monitor ack`)"),
                });
            }
            Ok(())
        }
        MonitorCommand::Drift { connection, stats, baseline, save, wait_s, json } => {
            drift(&connection, &stats, baseline.as_deref(), save.as_deref(), wait_s, json)
        }
        MonitorCommand::Ack { book, portfolio, through } => {
            let book = MonitorBook::open(&book.book)?;
            let through = through.as_deref().map(day).transpose()?;
            let n = book.acknowledge(portfolio.as_deref(), through)?;
            println!("{n} alerts acknowledged");
            Ok(())
        }
    }
}

/// A baseline file: the spec it was counted under and its entries.
#[derive(serde::Serialize, serde::Deserialize)]
struct Baseline {
    spec_id: String,
    entries: Vec<(String, u64)>,
}

fn drift(
    connection: &Connection,
    stats: &std::path::Path,
    baseline: Option<&std::path::Path>,
    save: Option<&std::path::Path>,
    wait_s: u64,
    json: bool,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(stats).map_err(|source| CliError::Read { path: stats.into(), source })?;
    let spec = StatsSpec::from_toml(&text).map_err(|e| CliError::Usage(format!("{}: {e}", stats.display())))?;
    let before: Option<Baseline> = baseline
        .map(|path| {
            let raw = std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.into(), source })?;
            let b: Baseline = serde_json::from_str(&raw)
                .map_err(|e| CliError::Usage(format!("{}: not a baseline file: {e}", path.display())))?;
            if b.spec_id != spec.id() {
                return Err(CliError::Usage(format!(
                    "{} was counted under spec {}, not {} ({})",
                    path.display(),
                    b.spec_id,
                    spec.id(),
                    stats.display()
                )));
            }
            Ok(b)
        })
        .transpose()?;
    let target = connection.target()?;
    let request_id = format!("drift-{}-{}", spec.name, crate::nodes::now_id());
    let result = runtime()?.block_on(async {
        let mut requester = jointscore_lender::StatsRequester::connect(target).await?;
        requester.run(&text, &request_id, std::time::Duration::from_secs(wait_s)).await
    })?;
    if let Some(path) = save {
        let b = Baseline { spec_id: spec.id(), entries: result.entries.clone() };
        let body = serde_json::to_string_pretty(&b).map_err(|e| CliError::Json(e.to_string()))?;
        std::fs::write(path, body).map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let Some(before) = before else {
        println!(
            "round of `{}` over {}: {} entries{}",
            spec.name,
            result.included.join(", "),
            result.entries.len(),
            save.map_or(String::new(), |p| format!("; baseline written to {}", p.display()))
        );
        return Ok(());
    };
    let drifts = jointscore_monitor::drift::drift(&before.entries, &result.entries)?;
    if json {
        println!("{}", serde_json::to_string(&drifts).map_err(|e| CliError::Json(e.to_string()))?);
    } else {
        println!(
            "drift of `{}` against the baseline, secure aggregation over {}:",
            spec.name,
            result.included.join(", ")
        );
        for d in &drifts {
            println!("  {:<32} PSI {:.3}  {}", d.counter, d.psi, d.reading);
        }
    }
    let significant: Vec<&str> =
        drifts.iter().filter(|d| d.psi >= jointscore_monitor::drift::SIGNIFICANT).map(|d| d.counter.as_str()).collect();
    if !significant.is_empty() {
        return Err(CliError::Outcome {
            code: ALERTS,
            message: format!("significant drift in {}", significant.join(", ")),
        });
    }
    Ok(())
}
