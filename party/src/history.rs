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
//! A [`jointscore_monitor::Window`] turns a subject's history into one integer the way a
//! monitoring or scoring input needs it — the sum of sales over the last
//! 30 days, the mean of the 90 days before that, days since the last
//! collection — computed by the party, in the clear, from its own history.

use std::io::Read;

use jointscore_monitor::{Day, Snapshot};
use rusqlite::params;

use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// The dated-snapshot table, created with the store.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS history (
    subject TEXT NOT NULL,
    day INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (subject, day));";

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
        self.import_snapshots(&crate::store::read_csv(reader)?, day)
    }

    /// Keeps `rows` (subject, record) as their snapshots on `day`, as
    /// [`RecordStore::import_snapshot_csv`] does, in one transaction.
    pub fn import_snapshots(&self, rows: &[(String, serde_json::Value)], day: Day) -> Result<SnapshotReport> {
        for (subject, _) in rows {
            crate::store::check_subject(subject).map_err(PartyError::BadRequest)?;
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut report = SnapshotReport::default();
        for (subject, record) in rows {
            let text = record.to_string();
            let before: Option<String> = tx
                .query_row(
                    "SELECT record FROM history WHERE subject = ?1 AND day = ?2",
                    params![subject, day.number()],
                    |r| r.get(0),
                )
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
                params![subject, day.number(), text],
            )?;
            let newest: i64 =
                tx.query_row("SELECT MAX(day) FROM history WHERE subject = ?1", [subject], |r| r.get(0))?;
            if newest == day.number() {
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
        let rows = statement.query_map(params![subject, until.map_or(i64::MAX, Day::number)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (day, text) = row?;
            let record = serde_json::from_str(&text)
                .map_err(|e| PartyError::Store(format!("snapshot of `{subject}` on {}: {e}", Day::from_number(day))))?;
            Ok(Snapshot { day: Day::from_number(day), record })
        })
        .collect()
    }

    /// The days on which any snapshot was imported, oldest first.
    pub fn snapshot_days(&self) -> Result<Vec<Day>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT DISTINCT day FROM history ORDER BY day")?;
        let days = statement.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(days.into_iter().map(Day::from_number).collect())
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
}
