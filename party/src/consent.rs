//! The sellers' consent: which subject allowed which lender to use this
//! party's data, for what purpose, and when.
//!
//! In the lending workflow the seller authorizes the lender to use its
//! marketplace, payment and logistics data. A party that requires consent
//! (`require_consent` in `party.toml`) contributes to a decision only for a
//! subject holding a consent to that lender for `decision`, valid at the
//! time the lender signed its request and not revoked; the id of the
//! consent it relied on goes into its signed envelope, and from there into
//! the coordinator's ledger and the party's own log.
//!
//! Consents are imported from CSV (`jointscore party consent import`),
//! columns `subject,lender,purpose,valid_from,valid_until,revoked`:
//!
//! - `purpose` is `decision` or `monitoring`;
//! - `valid_from` (required), `valid_until` and `revoked` (optional) are
//!   dates, `YYYY-MM-DD` (UTC), or RFC 3339 times
//!   (`2025-01-31T12:00:00Z`, `…+02:00`). A consent is valid from the
//!   start of its `valid_from` up to the end of its `valid_until` day (a
//!   date) or up to that instant (a time), excluded; without `valid_until`
//!   it has no end;
//! - a row with `revoked` set revokes the consent recorded (earlier in the
//!   file or in an earlier import) under the same subject, lender, purpose
//!   and `valid_from`: from the import on it is never used again, whatever
//!   date `revoked` names (the date is kept as written). A revocation that
//!   names no recorded consent is refused (a typo must not leave the
//!   consent it meant in force).
//!
//! A consent's id is the SHA-256 (hex) of its canonical row, the JSON array
//! `["jointscore-consent-v1", subject, lender, purpose, valid_from_ms,
//! valid_until_ms or null]` (milliseconds since the unix epoch, the
//! exclusive end), so the same grant has the same id however its dates are
//! spelled. Subject, lender, purpose and `valid_from` name one grant: the
//! same grant imported again is left as it is (a revoked one stays
//! revoked); another `valid_until` for it is refused (a new grant needs
//! another `valid_from`).

use std::io::Read;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use jointscore_monitor::{days_from_civil, days_in_month};

use crate::error::{PartyError, Result};
use crate::store::{RecordStore, check_subject};

/// The table of consents, created with the store.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS consents (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    lender TEXT NOT NULL,
    purpose TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_from_ms INTEGER NOT NULL,
    valid_until TEXT,
    valid_until_ms INTEGER,
    revoked_at TEXT,
    imported_ms INTEGER NOT NULL,
    UNIQUE (subject, lender, purpose, valid_from_ms));";

/// The columns of a consent file.
const COLUMNS: [&str; 6] = ["subject", "lender", "purpose", "valid_from", "valid_until", "revoked"];

/// Longest lender name accepted.
const LENDER_LIMIT: usize = 256;

/// What a consent allows its lender to do with this party's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A credit decision (the only purpose a contribution asks for today).
    Decision,
    /// Monitoring an existing loan.
    Monitoring,
}

impl Purpose {
    /// The name used in consent files.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Decision => "decision",
            Purpose::Monitoring => "monitoring",
        }
    }

    /// The purpose named `name`, if any.
    pub fn parse(name: &str) -> Option<Purpose> {
        match name {
            "decision" => Some(Purpose::Decision),
            "monitoring" => Some(Purpose::Monitoring),
            _ => None,
        }
    }
}

/// One consent record, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consent {
    /// SHA-256 (hex) of the canonical row.
    pub id: String,
    /// The seller.
    pub subject: String,
    /// The lender it authorizes.
    pub lender: String,
    /// What for.
    pub purpose: String,
    /// From when, as written.
    pub valid_from: String,
    /// Until when, as written (none: no end).
    pub valid_until: Option<String>,
    /// When revoked, as written (none: in force).
    pub revoked_at: Option<String>,
    /// When it was first imported, in milliseconds since the unix epoch.
    pub imported_ms: i64,
}

/// What a consent import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConsentReport {
    /// Consents not held before.
    pub added: usize,
    /// Consents revoked by this import.
    pub revoked: usize,
    /// Rows that changed nothing: a grant already held, a revocation of a
    /// consent already revoked.
    pub unchanged: usize,
}

/// One checked row of a consent file.
struct Row {
    subject: String,
    lender: String,
    purpose: Purpose,
    valid_from: String,
    from_ms: i64,
    valid_until: Option<String>,
    until_ms: Option<i64>,
    revoked: Option<String>,
}

impl Row {
    /// The consent's id: SHA-256 of its canonical row.
    fn id(&self) -> String {
        let canonical = serde_json::json!([
            "jointscore-consent-v1",
            self.subject,
            self.lender,
            self.purpose.name(),
            self.from_ms,
            self.until_ms
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

impl RecordStore {
    /// Imports consents from a CSV file (see [`RecordStore::import_consents_csv`]).
    pub fn import_consents_file(&self, path: &std::path::Path) -> Result<ConsentReport> {
        let file = std::fs::File::open(path).map_err(|e| PartyError::Import(format!("{}: {e}", path.display())))?;
        self.import_consents_csv(file)
    }

    /// Imports consents and revocations from CSV (columns
    /// `subject,lender,purpose,valid_from,valid_until,revoked`; the module
    /// documentation has the rules). The whole file is one transaction: a
    /// bad row stores nothing and is named by its line.
    pub fn import_consents_csv(&self, reader: impl Read) -> Result<ConsentReport> {
        let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
        let headers = csv.headers().map_err(|e| PartyError::Import(e.to_string()))?.clone();
        if let Some(unknown) = headers.iter().find(|h| !COLUMNS.contains(h)) {
            return Err(PartyError::Import(format!(
                "the consent file has a column `{unknown}`; its columns are {}",
                COLUMNS.join(",")
            )));
        }
        let mut position = [0; COLUMNS.len()];
        for (slot, column) in position.iter_mut().zip(COLUMNS) {
            *slot = headers.iter().position(|h| h == column).ok_or_else(|| {
                PartyError::Import(format!(
                    "the consent file has no `{column}` column; its columns are {}",
                    COLUMNS.join(",")
                ))
            })?;
        }
        let mut rows = Vec::new();
        for (i, record) in csv.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| PartyError::Import(format!("line {line}: {e}")))?;
            let cell = |k: usize| record.get(position[k]).unwrap_or_default();
            let row = check_row([cell(0), cell(1), cell(2), cell(3), cell(4), cell(5)])
                .map_err(|m| PartyError::Import(format!("line {line}: {m}")))?;
            rows.push((line, row));
        }

        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now = crate::store::now_ms();
        let mut report = ConsentReport::default();
        for (line, row) in rows {
            let held: Option<(String, Option<i64>, Option<String>)> = tx
                .query_row(
                    "SELECT id, valid_until_ms, revoked_at FROM consents
                     WHERE subject = ?1 AND lender = ?2 AND purpose = ?3 AND valid_from_ms = ?4",
                    params![row.subject, row.lender, row.purpose.name(), row.from_ms],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let refuse = |m: String| PartyError::Import(format!("line {line}: {m}"));
            let grant = format!(
                "the `{}` consent of subject `{}` for lender `{}` from {}",
                row.purpose.name(),
                row.subject,
                row.lender,
                row.valid_from
            );
            match (held, &row.revoked) {
                (None, None) => {
                    tx.execute(
                        "INSERT INTO consents (id, subject, lender, purpose, valid_from, valid_from_ms, valid_until,
                         valid_until_ms, revoked_at, imported_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9)",
                        params![
                            row.id(),
                            row.subject,
                            row.lender,
                            row.purpose.name(),
                            row.valid_from,
                            row.from_ms,
                            row.valid_until,
                            row.until_ms,
                            now
                        ],
                    )?;
                    report.added += 1;
                }
                (Some((_, until_ms, _)), None) if until_ms != row.until_ms => {
                    return Err(refuse(format!(
                        "{grant} is already recorded with another `valid_until`; a changed grant needs another \
                         `valid_from`"
                    )));
                }
                (Some(_), None) | (Some((_, _, Some(_))), Some(_)) => report.unchanged += 1,
                (Some((id, _, None)), Some(revoked)) => {
                    tx.execute("UPDATE consents SET revoked_at = ?1 WHERE id = ?2", params![revoked, id])?;
                    report.revoked += 1;
                }
                (None, Some(_)) => {
                    return Err(refuse(format!(
                        "revokes {grant}, which is not recorded (a revocation names the subject, lender, purpose \
                         and valid_from of a consent imported before it)"
                    )));
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// The id of a consent of `subject` to `lender` for `purpose`, valid at
    /// `at_ms` (milliseconds since the unix epoch) and not revoked; the one
    /// that began last if several are.
    pub fn consent(&self, subject: &str, lender: &str, purpose: Purpose, at_ms: u64) -> Result<Option<String>> {
        let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
        let id = self
            .conn()?
            .query_row(
                "SELECT id FROM consents
                 WHERE subject = ?1 AND lender = ?2 AND purpose = ?3 AND revoked_at IS NULL
                   AND valid_from_ms <= ?4 AND (valid_until_ms IS NULL OR valid_until_ms > ?4)
                 ORDER BY valid_from_ms DESC LIMIT 1",
                params![subject, lender, purpose.name(), at],
                |r| r.get(0),
            )
            .optional()?;
        Ok(id)
    }

    /// Every consent held (of `subject` only, if given), by subject, lender,
    /// purpose and start.
    pub fn consents(&self, subject: Option<&str>) -> Result<Vec<Consent>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare(
            "SELECT id, subject, lender, purpose, valid_from, valid_until, revoked_at, imported_ms FROM consents
             WHERE ?1 IS NULL OR subject = ?1
             ORDER BY subject, lender, purpose, valid_from_ms",
        )?;
        let consents = statement
            .query_map([subject], |r| {
                Ok(Consent {
                    id: r.get(0)?,
                    subject: r.get(1)?,
                    lender: r.get(2)?,
                    purpose: r.get(3)?,
                    valid_from: r.get(4)?,
                    valid_until: r.get(5)?,
                    revoked_at: r.get(6)?,
                    imported_ms: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(consents)
    }
}

/// Checks one row's cells, in [`COLUMNS`] order.
fn check_row([subject, lender, purpose, from, until, revoked]: [&str; 6]) -> std::result::Result<Row, String> {
    check_subject(subject)?;
    if lender.is_empty() {
        return Err("`lender` is empty".into());
    }
    if lender.len() > LENDER_LIMIT || lender.chars().any(char::is_control) {
        return Err(format!("`lender` must be printable and at most {LENDER_LIMIT} bytes"));
    }
    let purpose =
        Purpose::parse(purpose).ok_or_else(|| format!("purpose `{purpose}` is not `decision` or `monitoring`"))?;
    if from.is_empty() {
        return Err("`valid_from` is empty".into());
    }
    let from_ms = parse_time(from, false).map_err(|m| format!("`valid_from` {m}"))?;
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_string());
    let until_ms =
        optional(until).map(|u| parse_time(&u, true)).transpose().map_err(|m| format!("`valid_until` {m}"))?;
    if until_ms.is_some_and(|u| u <= from_ms) {
        return Err(format!("`valid_until` {until} is not after `valid_from` {from}"));
    }
    if let Some(r) = optional(revoked) {
        parse_time(&r, false).map_err(|m| format!("`revoked` {m}"))?;
    }
    Ok(Row {
        subject: subject.into(),
        lender: lender.into(),
        purpose,
        valid_from: from.into(),
        from_ms,
        valid_until: optional(until),
        until_ms,
        revoked: optional(revoked),
    })
}

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the unix epoch of a date `YYYY-MM-DD` (UTC; its
/// start, or with `end_of_day` the start of the next day) or of an RFC 3339
/// time. `Err` says what is wrong, for "`column` …".
fn parse_time(text: &str, end_of_day: bool) -> std::result::Result<i64, String> {
    let bad = || format!("`{text}` is not a date (YYYY-MM-DD) or an RFC 3339 time (YYYY-MM-DDTHH:MM:SSZ)");
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4).ok_or_else(bad)?, num(5..7).ok_or_else(bad)?, num(8..10).ok_or_else(bad)?);
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("`{text}` is not a calendar date"));
    }
    let midnight = days_from_civil(year, month, day) * DAY_MS;
    if b.len() == 10 {
        return Ok(if end_of_day { midnight + DAY_MS } else { midnight });
    }
    // RFC 3339: date "T" HH:MM:SS [.fraction] ("Z" / ("+" / "-") HH:MM).
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (hour, minute, second) =
        (num(11..13).ok_or_else(bad)?, num(14..16).ok_or_else(bad)?, num(17..19).ok_or_else(bad)?);
    // Second 60: a leap second.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!("`{text}` is not a time of day"));
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        // Milliseconds: the first three digits, padded; finer ones dropped.
        millis = rest[1..=digits].iter().chain(b"000").take(3).fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        rest = &rest[1 + digits..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + b - b'0'))
            };
            let (h, m) = (two(*h1, *h2).ok_or_else(bad)?, two(*m1, *m2).ok_or_else(bad)?);
            if h > 23 || m > 59 {
                return Err(format!("`{text}` has no valid UTC offset"));
            }
            if *sign == b'+' { h * 60 + m } else { -(h * 60 + m) }
        }
        _ => return Err(bad()),
    };
    Ok(midnight + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "subject,lender,purpose,valid_from,valid_until,revoked\n";

    fn store(rows: &str) -> RecordStore {
        let store = RecordStore::in_memory().expect("store");
        store.import_consents_csv(format!("{HEADER}{rows}").as_bytes()).expect("import");
        store
    }

    fn ms(text: &str) -> u64 {
        u64::try_from(parse_time(text, false).expect("time")).expect("after 1970")
    }

    #[test]
    fn dates_and_times_are_read_in_utc() {
        assert_eq!(parse_time("1970-01-01", false), Ok(0));
        assert_eq!(parse_time("1970-01-01", true), Ok(DAY_MS));
        assert_eq!(parse_time("2000-03-01", false), Ok(951_868_800_000));
        assert_eq!(parse_time("2024-02-29T12:30:00Z", false), Ok(1_709_209_800_000));
        assert_eq!(parse_time("2024-02-29T14:30:00.250+02:00", false), Ok(1_709_209_800_250));
        assert_eq!(parse_time("2024-02-29T10:00:00-02:30", false), Ok(1_709_209_800_000));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "01/02/2024",
            "2024-02-29T25:00:00Z",
            "2024-02-29T12:00:00",
            "2024-02-29T12:00Z",
            "2024-02-29T12:00:00+2:00",
            "2024-02-29 x",
            "tomorrow",
            "",
        ] {
            assert!(parse_time(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_good_file_is_imported_and_its_ids_do_not_depend_on_how_dates_are_spelled() {
        let store = RecordStore::in_memory().expect("store");
        let report = store
            .import_consents_csv(
                format!(
                    "{HEADER}s1,lender,decision,2025-01-01,2025-12-31,\ns1,lender,monitoring,2025-01-01,,\n\
                     s2,other,decision,2025-06-01T08:00:00Z,,\n"
                )
                .as_bytes(),
            )
            .expect("import");
        assert_eq!(report, ConsentReport { added: 3, revoked: 0, unchanged: 0 });
        let all = store.consents(None).expect("list");
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|c| c.id.len() == 64 && c.revoked_at.is_none()));
        assert_eq!(store.consents(Some("s2")).expect("list")[0].valid_from, "2025-06-01T08:00:00Z");

        // The same grants again, one spelled as times: nothing changes.
        let again = store
            .import_consents_csv(
                format!("{HEADER}s1,lender,decision,2025-01-01T00:00:00Z,2026-01-01T00:00:00Z,\n").as_bytes(),
            )
            .expect("import");
        assert_eq!(again, ConsentReport { added: 0, revoked: 0, unchanged: 1 });
        let other = RecordStore::in_memory().expect("store");
        other
            .import_consents_csv(
                format!("{HEADER}s1,lender,decision,2025-01-01T02:00:00+02:00,2026-01-01T00:00:00Z,\n").as_bytes(),
            )
            .expect("import");
        assert_eq!(other.consents(None).expect("list")[0].id, store.consents(Some("s1")).expect("list")[0].id);
    }

    #[test]
    fn bad_rows_are_refused_by_line_and_nothing_is_stored() {
        let store = store("s0,lender,decision,2025-01-01,,\n");
        for (rows, says) in [
            ("s1,lender,decision,2025-01-01,,\ns2,lender,marketing,2025-01-01,,\n", "line 3: purpose `marketing`"),
            ("s1,lender,decision,2025-02-30,,\n", "line 2: `valid_from` `2025-02-30` is not a calendar date"),
            ("s1,lender,decision,2025-01-01,next year,\n", "line 2: `valid_until` `next year` is not a date"),
            ("s1,lender,decision,2025-01-01,2024-12-31,\n", "line 2: `valid_until` 2024-12-31 is not after"),
            ("s1,lender,decision,,,\n", "line 2: `valid_from` is empty"),
            ("s1,,decision,2025-01-01,,\n", "line 2: `lender` is empty"),
            ("s1,lender,decision,2025-01-01,,yes\n", "line 2: `revoked` `yes` is not a date"),
            ("s1,lender,decision,2025-01-01,,\ns1,lender,decision,2025-01-02,,2025-03-01\n", "line 3: revokes"),
            ("s1,lender,decision,2025-01-01\n", "line 2:"),
            ("s0,lender,decision,2025-01-01,2025-12-31,\n", "line 2: the `decision` consent of subject `s0`"),
        ] {
            let err = store.import_consents_csv(format!("{HEADER}{rows}").as_bytes()).expect_err(rows);
            assert!(matches!(err, PartyError::Import(_)), "{err}");
            assert!(err.to_string().contains(says), "{err} should say {says}");
            assert_eq!(store.consents(None).expect("list").len(), 1, "{rows}: nothing stored");
        }
        let err = store.import_consents_csv("subject,lender,purpose,valid_from,valid_until\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no `revoked` column"), "{err}");
        let err = store.import_consents_csv(format!("{}x\n", HEADER.trim_end()).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("column `revokedx`"), "{err}");
    }

    #[test]
    fn a_revocation_row_revokes_its_consent_for_good() {
        let store = store("s1,lender,decision,2025-01-01,,\ns1,lender,monitoring,2025-01-01,,\n");
        let at = ms("2025-06-01");
        let id = store.consent("s1", "lender", Purpose::Decision, at).expect("lookup").expect("valid");
        let report = store
            .import_consents_csv(format!("{HEADER}s1,lender,decision,2025-01-01,,2025-05-01\n").as_bytes())
            .expect("revocation");
        assert_eq!(report, ConsentReport { added: 0, revoked: 1, unchanged: 0 });
        assert_eq!(store.consent("s1", "lender", Purpose::Decision, at).expect("lookup"), None);
        // Even before the revocation's date: a revoked consent is not used.
        assert_eq!(store.consent("s1", "lender", Purpose::Decision, ms("2025-02-01")).expect("lookup"), None);
        assert!(store.consent("s1", "lender", Purpose::Monitoring, at).expect("lookup").is_some());
        let listed = store.consents(Some("s1")).expect("list");
        let revoked = listed.iter().find(|c| c.id == id).expect("kept");
        assert_eq!(revoked.revoked_at.as_deref(), Some("2025-05-01"));

        // Importing the grant, or the revocation, again changes nothing.
        let report = store
            .import_consents_csv(
                format!("{HEADER}s1,lender,decision,2025-01-01,,\ns1,lender,decision,2025-01-01,,2025-05-02\n")
                    .as_bytes(),
            )
            .expect("again");
        assert_eq!(report, ConsentReport { added: 0, revoked: 0, unchanged: 2 });
        assert_eq!(store.consent("s1", "lender", Purpose::Decision, at).expect("lookup"), None);

        // A grant and its revocation in one file.
        let report = store
            .import_consents_csv(
                format!("{HEADER}s2,lender,decision,2025-01-01,,\ns2,lender,decision,2025-01-01,,2025-01-02\n")
                    .as_bytes(),
            )
            .expect("both");
        assert_eq!(report, ConsentReport { added: 1, revoked: 1, unchanged: 0 });
        assert_eq!(store.consent("s2", "lender", Purpose::Decision, at).expect("lookup"), None);
    }

    #[test]
    fn a_consent_is_found_only_in_its_window_for_its_lender_and_purpose() {
        let store = store("s1,lender,decision,2025-01-01,2025-12-31,\ns1,lender,decision,2026-03-01T12:00:00Z,,\n");
        let found =
            |lender: &str, purpose: Purpose, at: &str| store.consent("s1", lender, purpose, ms(at)).expect("lookup");
        let first = found("lender", Purpose::Decision, "2025-01-01").expect("from its first day");
        assert_eq!(found("lender", Purpose::Decision, "2025-12-31T23:59:59.999Z"), Some(first.clone()));
        assert_eq!(found("lender", Purpose::Decision, "2024-12-31T23:59:59Z"), None, "before valid_from");
        assert_eq!(found("lender", Purpose::Decision, "2026-01-01"), None, "after valid_until");
        assert_eq!(found("lender", Purpose::Decision, "2026-03-01T11:59:59Z"), None, "before the second");
        let second = found("lender", Purpose::Decision, "2026-03-01T12:00:00Z").expect("the open-ended one");
        assert_ne!(first, second);
        assert_eq!(found("lender", Purpose::Decision, "2099-01-01"), Some(second));
        assert_eq!(found("other", Purpose::Decision, "2025-06-01"), None, "another lender");
        assert_eq!(found("lender", Purpose::Monitoring, "2025-06-01"), None, "another purpose");
        assert_eq!(store.consent("s2", "lender", Purpose::Decision, ms("2025-06-01")).expect("lookup"), None);
    }
}
