//! Dated snapshots of a party's records, and features windowed over them.
//!
//! `party import --as-of DATE` keeps each row as the subject's snapshot on
//! that date, beside the current record the decision plane reads. A
//! snapshot holds whatever the party's book says on that day: stocks (a
//! balance, a rating) and flows for the period that ends that day (sales,
//! collections, shipments). Importing the same date again replaces that
//! date's snapshots and nothing else, so a re-run of a daily load is
//! harmless; the current record follows the newest snapshot.
//!
//! A [`Window`] turns a subject's history into one integer the way a
//! monitoring or scoring input needs it — the sum of sales over the last
//! 30 days, the mean of the 90 days before that, days since the last
//! collection — computed by the party, in the clear, from its own history.

use std::fmt;
use std::io::Read;

use rusqlite::params;
use serde_json::Value;

use crate::consent::{DAY_MS, parse_time};
use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// The dated-snapshot table, created with the store.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS history (
    subject TEXT NOT NULL,
    day INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (subject, day));";

/// A calendar day (UTC), as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// Reads `YYYY-MM-DD`, refusing anything that is not a calendar date.
    pub fn parse(text: &str) -> Result<Day> {
        if text.len() != 10 {
            return Err(PartyError::Import(format!("`{text}` is not a date (YYYY-MM-DD)")));
        }
        let ms = parse_time(text, false).map_err(PartyError::Import)?;
        Ok(Day(ms.div_euclid(DAY_MS)))
    }

    /// Days since 1970-01-01.
    pub fn number(self) -> i64 {
        self.0
    }

    /// The day `days` before this one.
    pub fn minus(self, days: u32) -> Day {
        Day(self.0 - i64::from(days))
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD` (H. Hinnant's `civil_from_days`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

/// One subject's record on one day.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The day it describes.
    pub day: Day,
    /// The record: a JSON object, as imported.
    pub record: Value,
}

/// What a dated import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Subjects with no snapshot on that day before.
    pub added: usize,
    /// Subjects whose snapshot on that day changed.
    pub replaced: usize,
    /// Subjects whose snapshot on that day was already exactly this.
    pub unchanged: usize,
    /// Subjects whose current record now is this snapshot (it is their
    /// newest).
    pub current: usize,
}

impl RecordStore {
    /// Imports a CSV (as [`RecordStore::import_csv`] reads it) as every
    /// row's snapshot on `day`, in one transaction: a bad row stores
    /// nothing. The current record of a subject becomes this snapshot when
    /// `day` is its newest.
    pub fn import_snapshot_csv(&self, reader: impl Read, day: Day) -> Result<SnapshotReport> {
        let rows = crate::store::read_csv(reader)?;
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut report = SnapshotReport::default();
        for (subject, record) in &rows {
            let text = record.to_string();
            let before: Option<String> = tx
                .query_row("SELECT record FROM history WHERE subject = ?1 AND day = ?2", params![subject, day.0], |r| {
                    r.get(0)
                })
                .map(Some)
                .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
            match before {
                Some(b) if b == text => report.unchanged += 1,
                Some(_) => report.replaced += 1,
                None => report.added += 1,
            }
            tx.execute(
                "INSERT INTO history (subject, day, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT(subject, day) DO UPDATE SET record = excluded.record",
                params![subject, day.0, text],
            )?;
            let newest: i64 =
                tx.query_row("SELECT MAX(day) FROM history WHERE subject = ?1", [subject], |r| r.get(0))?;
            if newest == day.0 {
                tx.execute(
                    "INSERT INTO records (subject, record) VALUES (?1, ?2)
                     ON CONFLICT(subject) DO UPDATE SET record = excluded.record",
                    params![subject, text],
                )?;
                report.current += 1;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// `subject`'s snapshots up to and including `until` (all when `None`),
    /// oldest first.
    pub fn history(&self, subject: &str, until: Option<Day>) -> Result<Vec<Snapshot>> {
        let conn = self.conn()?;
        let mut statement =
            conn.prepare("SELECT day, record FROM history WHERE subject = ?1 AND day <= ?2 ORDER BY day")?;
        let rows = statement.query_map(params![subject, until.map_or(i64::MAX, |d| d.0)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (day, text) = row?;
            let record = serde_json::from_str(&text)
                .map_err(|e| PartyError::Store(format!("snapshot of `{subject}` on {}: {e}", Day(day))))?;
            Ok(Snapshot { day: Day(day), record })
        })
        .collect()
    }

    /// The days on which any snapshot was imported, oldest first.
    pub fn snapshot_days(&self) -> Result<Vec<Day>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT DISTINCT day FROM history ORDER BY day")?;
        let days = statement.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(days.into_iter().map(Day).collect())
    }
}

/// How a [`Window`] reduces the values it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// The sum of present values (0 when none is present).
    Sum,
    /// The mean of present values, rounded half away from zero; none when
    /// no value is present.
    Mean,
    /// The smallest present value.
    Min,
    /// The largest present value.
    Max,
    /// How many snapshots in the window carry a value above 0.
    CountPositive,
    /// The newest present value.
    Last,
    /// Days from the window's end back to the newest snapshot with a value
    /// above 0 (0 when it is on the last day), looking at the whole history
    /// before the end; none when there never was one.
    DaysSincePositive,
}

/// A feature computed from a subject's history: `aggregate` of `field` over
/// the snapshots dated in `(end − days, end]`, where `end` is the
/// evaluation day minus `offset_days`. `days = 30, offset_days = 0` is "the
/// last 30 days"; `days = 90, offset_days = 30` is "the 90 days before
/// that".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The record field it reads.
    pub field: String,
    /// The reduction.
    pub aggregate: Aggregate,
    /// Length of the window in days (at least 1).
    pub days: u32,
    /// How far before the evaluation day the window ends.
    pub offset_days: u32,
}

impl Window {
    /// The window's value on `day` for a subject's `history` (oldest
    /// first, as [`RecordStore::history`] returns it): `None` when the
    /// window holds no value for it. Refuses a field that holds something
    /// other than an integer, naming the field and the day.
    pub fn evaluate(&self, history: &[Snapshot], day: Day) -> Result<Option<i64>> {
        if self.days == 0 {
            return Err(PartyError::Import(format!("window over `{}`: days must be at least 1", self.field)));
        }
        let end = day.minus(self.offset_days);
        let start = end.minus(self.days);
        let value = |s: &Snapshot| -> Result<Option<i64>> {
            match s.record.get(&self.field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| PartyError::Import(format!("`{}` on {} is not an integer", self.field, s.day))),
            }
        };
        if self.aggregate == Aggregate::DaysSincePositive {
            for s in history.iter().rev().filter(|s| s.day <= end) {
                if value(s)?.is_some_and(|v| v > 0) {
                    return Ok(Some(end.0 - s.day.0));
                }
            }
            return Ok(None);
        }
        let mut values = Vec::new();
        for s in history.iter().filter(|s| s.day > start && s.day <= end) {
            if let Some(v) = value(s)? {
                values.push(v);
            }
        }
        let overflow = || PartyError::Import(format!("window over `{}`: the sum does not fit 64 bits", self.field));
        Ok(match self.aggregate {
            Aggregate::Sum => Some(values.iter().try_fold(0i64, |a, v| a.checked_add(*v)).ok_or_else(overflow)?),
            Aggregate::Mean if values.is_empty() => None,
            Aggregate::Mean => {
                let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
                let n = values.len() as i128;
                // Round half away from zero.
                let q = (2 * sum.abs() + n) / (2 * n);
                Some(i64::try_from(if sum < 0 { -q } else { q }).map_err(|_| overflow())?)
            }
            Aggregate::Min => values.iter().min().copied(),
            Aggregate::Max => values.iter().max().copied(),
            Aggregate::CountPositive => Some(values.iter().filter(|v| **v > 0).count() as i64),
            Aggregate::Last => values.last().copied(),
            Aggregate::DaysSincePositive => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        Day::parse(s).expect("date")
    }

    fn load(store: &RecordStore, date: &str, csv: &str) -> SnapshotReport {
        store.import_snapshot_csv(csv.as_bytes(), day(date)).expect("import")
    }

    #[test]
    fn days_parse_print_and_refuse_non_dates() {
        assert_eq!(day("1970-01-01").number(), 0);
        assert_eq!(day("2026-03-01").minus(1).to_string(), "2026-02-28");
        assert_eq!(day("2024-03-01").minus(1).to_string(), "2024-02-29");
        for bad in ["2026-02-30", "2026-13-01", "26-01-01", "2026-01-01T00:00:00Z", "yesterday", ""] {
            assert!(Day::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dated_imports_are_idempotent_per_day_and_the_newest_is_current() {
        let store = RecordStore::in_memory().expect("store");
        let r = load(&store, "2026-11-02", "subject,gmv\ns1,100\ns2,50\n");
        assert_eq!((r.added, r.replaced, r.unchanged, r.current), (2, 0, 0, 2));
        // The same file again changes nothing.
        let r = load(&store, "2026-11-02", "subject,gmv\ns1,100\ns2,50\n");
        assert_eq!((r.added, r.replaced, r.unchanged, r.current), (0, 0, 2, 2));
        // An older day is history only: the current record stays the newest.
        let r = load(&store, "2026-11-01", "subject,gmv\ns1,90\n");
        assert_eq!((r.added, r.current), (1, 0));
        assert_eq!(store.get("s1").expect("get"), Some(serde_json::json!({"gmv": 100})));
        // A corrected newest day replaces that day only.
        let r = load(&store, "2026-11-02", "subject,gmv\ns1,120\n");
        assert_eq!((r.replaced, r.current), (1, 1));
        assert_eq!(store.get("s1").expect("get"), Some(serde_json::json!({"gmv": 120})));
        let h = store.history("s1", None).expect("history");
        assert_eq!(h.iter().map(|s| s.day.to_string()).collect::<Vec<_>>(), ["2026-11-01", "2026-11-02"]);
        assert_eq!(store.history("s1", Some(day("2026-11-01"))).expect("history").len(), 1);
        assert!(store.history("nobody", None).expect("history").is_empty());
        assert_eq!(store.snapshot_days().expect("days"), [day("2026-11-01"), day("2026-11-02")]);
    }

    #[test]
    fn a_bad_row_stores_nothing() {
        let store = RecordStore::in_memory().expect("store");
        load(&store, "2026-11-01", "subject,gmv\ns1,10\n");
        let err = store
            .import_snapshot_csv("subject,gmv\ns1,11\ns1,12\n".as_bytes(), day("2026-11-02"))
            .expect_err("a subject twice");
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(store.history("s1", None).expect("history").len(), 1);
        assert_eq!(store.get("s1").expect("get"), Some(serde_json::json!({"gmv": 10})));
    }

    #[test]
    fn windows_sum_average_count_and_measure_gaps() {
        let store = RecordStore::in_memory().expect("store");
        // Daily sales and collections over ten days; collections stop after day 4.
        for d in 1..=10 {
            let collections = if d <= 4 { "7" } else { "0" };
            let sales = if d == 6 { String::new() } else { (d * 10).to_string() };
            load(&store, &format!("2026-11-{d:02}"), &format!("subject,sales,collections\ns1,{sales},{collections}\n"));
        }
        let h = store.history("s1", None).expect("history");
        let on = day("2026-11-10");
        let w = |field: &str, aggregate, days, offset_days| {
            Window { field: field.into(), aggregate, days, offset_days }.evaluate(&h, on).expect("window")
        };
        // Days 8, 9, 10.
        assert_eq!(w("sales", Aggregate::Sum, 3, 0), Some(270));
        // Days 5..=7 with day 6 missing: mean of 50 and 70.
        assert_eq!(w("sales", Aggregate::Mean, 3, 3), Some(60));
        assert_eq!(w("sales", Aggregate::Min, 10, 0), Some(10));
        assert_eq!(w("sales", Aggregate::Max, 10, 0), Some(100));
        assert_eq!(w("sales", Aggregate::Last, 5, 0), Some(100));
        assert_eq!(w("collections", Aggregate::CountPositive, 10, 0), Some(4));
        assert_eq!(w("collections", Aggregate::DaysSincePositive, 1, 0), Some(6));
        assert_eq!(w("collections", Aggregate::DaysSincePositive, 1, 8), Some(0));
        // Outside the history: nothing to average, a sum of nothing, no gap known.
        assert_eq!(w("sales", Aggregate::Mean, 5, 30), None);
        assert_eq!(w("sales", Aggregate::Sum, 5, 30), Some(0));
        assert_eq!(w("refunds", Aggregate::DaysSincePositive, 1, 0), None);
        // A text field and a zero-day window are refused, naming them.
        load(&store, "2026-11-11", "subject,sales\ns1,lots\n");
        let h = store.history("s1", None).expect("history");
        let err = Window { field: "sales".into(), aggregate: Aggregate::Sum, days: 5, offset_days: 0 }
            .evaluate(&h, day("2026-11-11"))
            .expect_err("text");
        assert!(err.to_string().contains("`sales` on 2026-11-11"), "{err}");
        let err = Window { field: "sales".into(), aggregate: Aggregate::Sum, days: 0, offset_days: 0 }
            .evaluate(&h, on)
            .expect_err("zero days");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}
