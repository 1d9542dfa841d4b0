//! Monitoring at the lender: portfolios of loans under a monitor spec,
//! rounds over them, and the alerts they raise.
//!
//! A round asks, for every loan of a portfolio, one monitoring request
//! ([`PlanKind::Monitor`](jointscore_circuits::PlanKind::Monitor)) through
//! the coordinator's durable, batched job path: each party decides its own
//! conditions on its history up to the round's day, the coordinator runs
//! the alert circuit under this lender's key, and the lender decrypts one
//! bit per alert. The book ([`MonitorBook`], a SQLite file) records each
//! loan's outcome as it arrives, so a round interrupted anywhere is
//! resumed by running it again: loans already settled are not asked again,
//! loans that failed are asked again under a new request id.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jointscore_monitor::{Compiled, Day, Severity, Spec};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::Lender;
use crate::error::{LenderError, Result};

/// How often a portfolio is due a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Every day.
    Daily,
    /// Every seven days.
    Weekly,
}

impl Schedule {
    /// The schedule named `name` (`daily`, `weekly`).
    pub fn parse(name: &str) -> Option<Schedule> {
        match name {
            "daily" => Some(Schedule::Daily),
            "weekly" => Some(Schedule::Weekly),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Daily => "daily",
            Schedule::Weekly => "weekly",
        }
    }

    fn days(self) -> i64 {
        match self {
            Schedule::Daily => 1,
            Schedule::Weekly => 7,
        }
    }
}

/// A registered portfolio.
#[derive(Clone, Debug, Serialize)]
pub struct Portfolio {
    /// Its name.
    pub name: String,
    /// The monitor spec file.
    pub spec_toml: String,
    /// The spec's id (what the parties approve).
    pub spec_id: String,
    /// The loans' subjects.
    pub subjects: Vec<String>,
    /// How often it is due a round.
    pub schedule: Schedule,
}

/// What a round said about one loan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum LoanResult {
    /// Evaluated: the alerts raised (possibly none) and the highest
    /// severity.
    Evaluated {
        /// Alert names, in spec order.
        raised: Vec<String>,
        /// The highest severity among them.
        severity: Option<Severity>,
    },
    /// Not evaluated this round; the reason names the party or step at
    /// fault. The next run of the round, or the next round, asks again.
    Failed(String),
}

/// One loan in a round.
#[derive(Clone, Debug, Serialize)]
pub struct LoanOutcome {
    /// The loan's subject.
    pub subject: String,
    /// What the round said.
    pub result: LoanResult,
}

/// A round's report.
#[derive(Clone, Debug, Serialize)]
pub struct RoundReport {
    /// The portfolio.
    pub portfolio: String,
    /// The day the windows end.
    pub day: String,
    /// Every loan of the portfolio, in portfolio order: settled in an
    /// earlier run of the round or in this one.
    pub loans: Vec<LoanOutcome>,
    /// Loans asked in this run.
    pub asked: usize,
    /// Loans whose alerts could not be recorded in the coordinator's ledger
    /// in this run (the next run records them).
    pub unreported: usize,
    /// Wall time of this run, in seconds.
    pub seconds: f64,
}

impl RoundReport {
    /// Loans with at least one alert raised.
    pub fn alerted(&self) -> usize {
        self.loans
            .iter()
            .filter(|l| matches!(&l.result, LoanResult::Evaluated { raised, .. } if !raised.is_empty()))
            .count()
    }

    /// Loans not evaluated.
    pub fn failed(&self) -> usize {
        self.loans.iter().filter(|l| matches!(l.result, LoanResult::Failed(_))).count()
    }
}

/// An alert raised and recorded in the book.
#[derive(Clone, Debug, Serialize)]
pub struct RaisedAlert {
    /// The portfolio.
    pub portfolio: String,
    /// The round's day.
    pub day: String,
    /// The loan's subject.
    pub subject: String,
    /// The alert.
    pub alert: String,
    /// Its severity.
    pub severity: Severity,
    /// Whether it was acknowledged.
    pub acknowledged: bool,
}

/// The lender's monitoring book: portfolios, every loan's outcome per
/// round, and alerts with their acknowledgement. One SQLite file.
pub struct MonitorBook {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portfolios (
    name TEXT PRIMARY KEY, spec_id TEXT NOT NULL, spec_toml TEXT NOT NULL, schedule TEXT NOT NULL,
    subjects TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS loans (
    portfolio TEXT NOT NULL, day TEXT NOT NULL, subject TEXT NOT NULL, attempt INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('evaluated', 'failed')), raised TEXT NOT NULL, reason TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '', reported INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL, PRIMARY KEY (portfolio, day, subject));
CREATE TABLE IF NOT EXISTS alerts (
    portfolio TEXT NOT NULL, day TEXT NOT NULL, subject TEXT NOT NULL, alert TEXT NOT NULL,
    severity TEXT NOT NULL, acknowledged INTEGER NOT NULL DEFAULT 0, raised_ms INTEGER NOT NULL,
    PRIMARY KEY (portfolio, day, subject, alert));
";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn store_err(e: impl std::fmt::Display) -> LenderError {
    LenderError::Monitor(e.to_string())
}

impl MonitorBook {
    /// Opens (or creates) the book at `path`.
    pub fn open(path: &Path) -> Result<MonitorBook> {
        let conn = Connection::open(path).map_err(|e| LenderError::Monitor(format!("{}: {e}", path.display())))?;
        conn.execute_batch(SCHEMA).map_err(store_err)?;
        Ok(MonitorBook { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| LenderError::Monitor("the book's lock is poisoned".into()))
    }

    /// Registers a portfolio: the spec must validate, the subjects be
    /// non-empty, distinct and free of control characters. Registering the
    /// same name again with the same spec replaces its loans and schedule;
    /// with another spec it is refused (its rounds would mean something
    /// else).
    pub fn add(&self, name: &str, spec_toml: &str, subjects: &[String], schedule: Schedule) -> Result<Portfolio> {
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(LenderError::Monitor(format!("`{name}` is not a portfolio name")));
        }
        let spec = Spec::from_toml(spec_toml).map_err(|e| LenderError::Spec(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for s in subjects {
            if s.is_empty() || s.chars().any(char::is_control) || s.len() > 256 {
                return Err(LenderError::Monitor(format!("`{s}` is not a subject id")));
            }
            if !seen.insert(s) {
                return Err(LenderError::Monitor(format!("subject `{s}` is listed twice")));
            }
        }
        if subjects.is_empty() {
            return Err(LenderError::Monitor("a portfolio needs at least one loan".into()));
        }
        let portfolio = Portfolio {
            name: name.into(),
            spec_toml: spec_toml.into(),
            spec_id: spec.id(),
            subjects: subjects.to_vec(),
            schedule,
        };
        let conn = self.conn()?;
        if let Some(existing) = conn
            .query_row("SELECT spec_id FROM portfolios WHERE name = ?1", params![name], |r| r.get::<_, String>(0))
            .optional()
            .map_err(store_err)?
            && existing != portfolio.spec_id
        {
            return Err(LenderError::Monitor(format!(
                "portfolio `{name}` watches spec {existing}; register the new spec under another name"
            )));
        }
        let subjects_json = serde_json::to_string(subjects).map_err(store_err)?;
        conn.execute(
            "INSERT INTO portfolios (name, spec_id, spec_toml, schedule, subjects, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET spec_toml = excluded.spec_toml, schedule = excluded.schedule,
                 subjects = excluded.subjects",
            params![name, portfolio.spec_id, spec_toml, schedule.name(), subjects_json, now_ms()],
        )
        .map_err(store_err)?;
        Ok(portfolio)
    }

    /// The portfolio named `name`.
    pub fn portfolio(&self, name: &str) -> Result<Portfolio> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT spec_id, spec_toml, schedule, subjects FROM portfolios WHERE name = ?1",
                params![name],
                |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
                },
            )
            .optional()
            .map_err(store_err)?
            .ok_or_else(|| {
                LenderError::Monitor(format!("no portfolio `{name}`; `lender monitor add` registers one"))
            })?;
        let (spec_id, spec_toml, schedule, subjects) = row;
        Ok(Portfolio {
            name: name.into(),
            spec_id,
            spec_toml,
            schedule: Schedule::parse(&schedule)
                .ok_or_else(|| LenderError::Monitor(format!("portfolio `{name}` has schedule `{schedule}`")))?,
            subjects: serde_json::from_str(&subjects).map_err(store_err)?,
        })
    }

    /// Every portfolio's name.
    pub fn portfolios(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT name FROM portfolios ORDER BY name").map_err(store_err)?;
        let names = statement.query_map([], |r| r.get::<_, String>(0)).map_err(store_err)?;
        names.collect::<std::result::Result<_, _>>().map_err(store_err)
    }

    /// The days a round is due, oldest first, up to `today`: the day after
    /// the last round's plus each period; `today` alone before any round.
    pub fn due(&self, portfolio: &Portfolio, today: Day) -> Result<Vec<Day>> {
        let conn = self.conn()?;
        let last: Option<String> = conn
            .query_row("SELECT MAX(day) FROM loans WHERE portfolio = ?1", params![portfolio.name], |r| r.get(0))
            .map_err(store_err)?;
        let Some(last) = last else { return Ok(vec![today]) };
        let last = Day::parse(&last).map_err(store_err)?;
        let mut days = Vec::new();
        let mut day = last;
        loop {
            day = Day::from_number(day.number() + portfolio.schedule.days());
            if day > today {
                break;
            }
            days.push(day);
        }
        // A round of the last day with loans still failed is due again.
        let unsettled: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM loans WHERE portfolio = ?1 AND day = ?2 AND state = 'failed'",
                params![portfolio.name, last.to_string()],
                |r| r.get(0),
            )
            .map_err(store_err)?;
        // `settled` takes the connection itself.
        drop(conn);
        if unsettled > 0 || self.settled(portfolio, last)?.len() < portfolio.subjects.len() {
            days.insert(0, last);
        }
        Ok(days)
    }

    /// Loans settled (evaluated) in the round of `day`, with their results.
    fn settled(&self, portfolio: &Portfolio, day: Day) -> Result<Vec<(String, LoanResult)>> {
        let conn = self.conn()?;
        let mut statement = conn
            .prepare("SELECT subject, raised FROM loans WHERE portfolio = ?1 AND day = ?2 AND state = 'evaluated'")
            .map_err(store_err)?;
        let rows = statement
            .query_map(params![portfolio.name, day.to_string()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(store_err)?;
        let spec = Spec::from_toml(&portfolio.spec_toml).map_err(|e| LenderError::Spec(e.to_string()))?;
        rows.map(|row| {
            let (subject, raised) = row.map_err(store_err)?;
            let raised: Vec<String> = serde_json::from_str(&raised).map_err(store_err)?;
            let severity = spec.alerts.iter().filter(|a| raised.contains(&a.name)).map(|a| a.severity).max();
            Ok((subject, LoanResult::Evaluated { raised, severity }))
        })
        .collect()
    }

    /// The attempt a new run of the round of `day` is.
    fn next_attempt(&self, portfolio: &str, day: Day) -> Result<i64> {
        let conn = self.conn()?;
        let last: Option<i64> = conn
            .query_row(
                "SELECT MAX(attempt) FROM loans WHERE portfolio = ?1 AND day = ?2",
                params![portfolio, day.to_string()],
                |r| r.get(0),
            )
            .map_err(store_err)?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Records one loan's outcome, and its alerts, in one transaction.
    fn record(
        &self,
        portfolio: &Portfolio,
        spec: &Spec,
        day: Day,
        attempt: i64,
        outcome: &LoanOutcome,
        job_id: &str,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(store_err)?;
        let (state, raised, reason) = match &outcome.result {
            LoanResult::Evaluated { raised, .. } => ("evaluated", raised.clone(), String::new()),
            LoanResult::Failed(reason) => ("failed", Vec::new(), reason.clone()),
        };
        tx.execute(
            "INSERT INTO loans (portfolio, day, subject, attempt, state, raised, reason, job_id, reported, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (portfolio, day, subject) DO UPDATE SET attempt = excluded.attempt, state = excluded.state,
                 raised = excluded.raised, reason = excluded.reason, job_id = excluded.job_id,
                 reported = excluded.reported, updated_ms = excluded.updated_ms",
            params![
                portfolio.name,
                day.to_string(),
                outcome.subject,
                attempt,
                state,
                serde_json::to_string(&raised).map_err(store_err)?,
                reason,
                job_id,
                // Nothing to report for a loan without alerts.
                raised.is_empty(),
                now_ms()
            ],
        )
        .map_err(store_err)?;
        for alert in spec.alerts.iter().filter(|a| raised.contains(&a.name)) {
            tx.execute(
                "INSERT INTO alerts (portfolio, day, subject, alert, severity, raised_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO NOTHING",
                params![
                    portfolio.name,
                    day.to_string(),
                    outcome.subject,
                    alert.name,
                    serde_json::to_value(alert.severity).map_err(store_err)?.as_str().unwrap_or_default(),
                    now_ms()
                ],
            )
            .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    /// Evaluated loans whose alerts are not yet in the coordinator's
    /// ledger: (subject, job, alerts).
    fn unreported(&self, portfolio: &str, day: Day) -> Result<Vec<(String, String, Vec<String>)>> {
        let conn = self.conn()?;
        let mut statement = conn
            .prepare(
                "SELECT subject, job_id, raised FROM loans
                 WHERE portfolio = ?1 AND day = ?2 AND state = 'evaluated' AND reported = 0 ORDER BY subject",
            )
            .map_err(store_err)?;
        let rows = statement
            .query_map(params![portfolio, day.to_string()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(store_err)?;
        rows.map(|row| {
            let (subject, job, raised) = row.map_err(store_err)?;
            Ok((subject, job, serde_json::from_str(&raised).map_err(store_err)?))
        })
        .collect()
    }

    fn mark_reported(&self, portfolio: &str, day: Day, subject: &str) -> Result<()> {
        self.conn()?
            .execute(
                "UPDATE loans SET reported = 1 WHERE portfolio = ?1 AND day = ?2 AND subject = ?3",
                params![portfolio, day.to_string(), subject],
            )
            .map_err(store_err)?;
        Ok(())
    }

    /// Alerts recorded, oldest round first; only those not acknowledged
    /// unless `all`; of one portfolio or every one.
    pub fn alerts(&self, portfolio: Option<&str>, all: bool) -> Result<Vec<RaisedAlert>> {
        let conn = self.conn()?;
        let mut statement = conn
            .prepare(
                "SELECT portfolio, day, subject, alert, severity, acknowledged FROM alerts
                 WHERE (?1 IS NULL OR portfolio = ?1) AND (?2 OR acknowledged = 0)
                 ORDER BY portfolio, day, subject, alert",
            )
            .map_err(store_err)?;
        let rows = statement
            .query_map(params![portfolio, all], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })
            .map_err(store_err)?;
        rows.map(|row| {
            let (portfolio, day, subject, alert, severity, acknowledged) = row.map_err(store_err)?;
            let severity = serde_json::from_value(serde_json::Value::String(severity)).map_err(store_err)?;
            Ok(RaisedAlert { portfolio, day, subject, alert, severity, acknowledged })
        })
        .collect()
    }

    /// Acknowledges the alerts of `portfolio` (every one when `None`) from
    /// rounds up to `through` (all when `None`); returns how many.
    pub fn acknowledge(&self, portfolio: Option<&str>, through: Option<Day>) -> Result<usize> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE alerts SET acknowledged = 1
             WHERE acknowledged = 0 AND (?1 IS NULL OR portfolio = ?1) AND (?2 IS NULL OR day <= ?2)",
            params![portfolio, through.map(|d| d.to_string())],
        )
        .map_err(store_err)
    }
}

/// The request id of one loan's monitoring request in one run of a round:
/// the same for a retry of the same run, new for each run.
pub(crate) fn request_id(portfolio: &Portfolio, day: Day, subject: &str, attempt: i64) -> String {
    let mut h = Sha256::new();
    for part in ["jointscore/monitor-request/v1", &portfolio.name, &portfolio.spec_id, &day.to_string(), subject] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(attempt.to_le_bytes());
    format!("mon-{}", &hex::encode(h.finalize())[..32])
}

/// Most monitoring requests in flight at once: the coordinator batches
/// those that are ready together, and its queue stays below its capacity.
pub const DEFAULT_WINDOW: usize = 64;

/// Runs (or resumes) the round of `day` for `portfolio` with `lender` (a
/// client built for the portfolio's spec, [`Lender::connect`] with
/// [`jointscore_circuits::PlanKind::Monitor`]): loans settled in an
/// earlier run are kept, the others asked, at most `window` at a time.
/// Each outcome is in the book as soon as it is known; `progress` is
/// called after each.
pub async fn run_round(
    lender: &mut Lender,
    book: &MonitorBook,
    portfolio: &Portfolio,
    day: Day,
    window: usize,
    mut progress: impl FnMut(&LoanOutcome),
) -> Result<RoundReport> {
    let start = Instant::now();
    match lender.compiled() {
        Compiled::Monitor(plan) if plan.id() == portfolio.spec_id => {}
        _ => {
            return Err(LenderError::Usage(format!(
                "the client is not built for spec {} of portfolio `{}`",
                portfolio.spec_id, portfolio.name
            )));
        }
    }
    let spec = Spec::from_toml(&portfolio.spec_toml).map_err(|e| LenderError::Spec(e.to_string()))?;
    let settled: std::collections::BTreeMap<String, LoanResult> = book.settled(portfolio, day)?.into_iter().collect();
    let attempt = book.next_attempt(&portfolio.name, day)?;
    let todo: Vec<&String> = portfolio.subjects.iter().filter(|s| !settled.contains_key(*s)).collect();
    let mut outcomes: std::collections::BTreeMap<String, LoanResult> = settled;
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = todo.iter();
    loop {
        while in_flight.len() < window.max(1) {
            let Some(subject) = next.next() else { break };
            let asked = format!("{subject}@{day}");
            let id = request_id(portfolio, day, subject, attempt);
            let submitted = Instant::now();
            let accepted = lender.submit(&asked, &id).await;
            in_flight.push_back((subject.to_string(), asked, id, submitted, accepted));
        }
        let Some((subject, asked, id, submitted, accepted)) = in_flight.pop_front() else { break };
        let (result, job_id) = match accepted {
            Ok(accepted) => match lender.complete_alerts(&accepted, &asked, &id, submitted).await {
                Ok(bits) => {
                    let o = jointscore_monitor::outcome(&spec, &bits);
                    (LoanResult::Evaluated { raised: o.raised, severity: o.severity }, accepted.job_id)
                }
                Err(e) => (LoanResult::Failed(e.to_string()), accepted.job_id),
            },
            Err(e) => (LoanResult::Failed(e.to_string()), String::new()),
        };
        let outcome = LoanOutcome { subject: subject.clone(), result };
        book.record(portfolio, &spec, day, attempt, &outcome, &job_id)?;
        progress(&outcome);
        outcomes.insert(subject, outcome.result);
    }
    // Every alert raised goes into the coordinator's ledger, signed by the
    // lender; one not yet recorded (the coordinator was unreachable, the
    // lender stopped) is recorded by the next run of the round.
    let mut unreported = 0;
    for (subject, job, alerts) in book.unreported(&portfolio.name, day)? {
        match lender.report_alerts(&job, &alerts).await {
            Ok(()) => book.mark_reported(&portfolio.name, day, &subject)?,
            Err(e) => {
                tracing::warn!(subject = %subject, job = %job, error = %e, "alerts not recorded in the ledger yet");
                unreported += 1;
            }
        }
    }
    let loans = portfolio
        .subjects
        .iter()
        .map(|s| LoanOutcome {
            subject: s.clone(),
            result: outcomes.remove(s).unwrap_or_else(|| LoanResult::Failed("not asked".into())),
        })
        .collect();
    Ok(RoundReport {
        portfolio: portfolio.name.clone(),
        day: day.to_string(),
        loans,
        asked: todo.len(),
        unreported,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (tempfile::TempDir, MonitorBook) {
        let dir = tempfile::tempdir().expect("dir");
        let book = MonitorBook::open(&dir.path().join("monitor.sqlite")).expect("book");
        (dir, book)
    }

    fn subjects(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("S{i}")).collect()
    }

    #[test]
    fn portfolios_are_checked_and_kept_to_their_spec() {
        let (_dir, book) = book();
        let spec = jointscore_monitor::SELLER_WATCH;
        let p = book.add("book", spec, &subjects(3), Schedule::Daily).expect("add");
        assert_eq!(book.portfolio("book").expect("read").subjects, p.subjects);
        assert!(book.add("book", spec, &["a".into(), "a".into()], Schedule::Daily).is_err(), "twice");
        assert!(book.add("book", spec, &[], Schedule::Daily).is_err(), "empty");
        assert!(book.add("book", "format = 1", &subjects(1), Schedule::Daily).is_err(), "bad spec");
        let other = spec.replacen("percent = 70", "percent = 60", 1);
        let err = book.add("book", &other, &subjects(1), Schedule::Daily).expect_err("another spec");
        assert!(err.to_string().contains("another name"), "{err}");
        assert!(book.portfolio("none").expect_err("unknown").to_string().contains("lender monitor add"));
    }

    #[test]
    fn rounds_are_due_per_schedule_and_failed_loans_keep_a_round_due() {
        let (_dir, book) = book();
        let p = book.add("book", jointscore_monitor::SELLER_WATCH, &subjects(2), Schedule::Weekly).expect("add");
        let spec = Spec::from_toml(&p.spec_toml).expect("spec");
        let day = |s: &str| Day::parse(s).expect("day");
        assert_eq!(book.due(&p, day("2026-12-01")).expect("due"), vec![day("2026-12-01")]);
        let ok = |s: &str| LoanOutcome {
            subject: s.into(),
            result: LoanResult::Evaluated { raised: vec!["gmv_collapse".into()], severity: Some(Severity::High) },
        };
        book.record(&p, &spec, day("2026-12-01"), 1, &ok("S0"), "j0").expect("record");
        book.record(
            &p,
            &spec,
            day("2026-12-01"),
            1,
            &LoanOutcome { subject: "S1".into(), result: LoanResult::Failed("party `bank` is unreachable".into()) },
            "j1",
        )
        .expect("record");
        // S1 failed: the round of the 1st is due again, then the 8th.
        assert_eq!(book.due(&p, day("2026-12-09")).expect("due"), vec![day("2026-12-01"), day("2026-12-08")]);
        assert_eq!(book.next_attempt("book", day("2026-12-01")).expect("attempt"), 2);
        book.record(&p, &spec, day("2026-12-01"), 2, &ok("S1"), "j2").expect("record");
        assert_eq!(book.unreported("book", day("2026-12-01")).expect("unreported").len(), 2);
        book.mark_reported("book", day("2026-12-01"), "S0").expect("reported");
        assert_eq!(book.unreported("book", day("2026-12-01")).expect("unreported")[0].0, "S1");
        assert_eq!(book.due(&p, day("2026-12-07")).expect("due"), Vec::<Day>::new());
        // New alerts until acknowledged; recording the same one twice keeps one.
        book.record(&p, &spec, day("2026-12-01"), 2, &ok("S1"), "j2").expect("again");
        assert_eq!(book.alerts(Some("book"), false).expect("alerts").len(), 2);
        assert_eq!(book.acknowledge(Some("book"), None).expect("ack"), 2);
        assert!(book.alerts(None, false).expect("alerts").is_empty());
        assert_eq!(book.alerts(None, true).expect("all").len(), 2);
        let p = book.portfolio("book").expect("p");
        assert_ne!(request_id(&p, day("2026-12-01"), "S1", 1), request_id(&p, day("2026-12-01"), "S1", 2));
    }
}
