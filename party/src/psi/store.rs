//! What the party remembers of PSI requesters, in its store: the nonces of
//! the opens it answered (so a signed open is answered once) and the ids
//! each requester had it answer per UTC day (its budget).

use rusqlite::{OptionalExtension, params};

use crate::error::Result;
use crate::log::{LogKind, append};
use crate::store::RecordStore;

/// Milliseconds in a day.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// How long a nonce is remembered, in milliseconds: the longest
/// `request_max_age_s` allows, so an open that is still fresh under any
/// window is never forgotten (an open is fresh only within the window of
/// its signed time, and a nonce is pruned by that time).
pub(crate) const NONCE_RETENTION_MS: u64 = DAY_MS;

/// The tables.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS psi_nonces (
    requester TEXT NOT NULL, nonce TEXT NOT NULL, signed_ms INTEGER NOT NULL,
    PRIMARY KEY (requester, nonce));
CREATE INDEX IF NOT EXISTS psi_nonces_time ON psi_nonces (signed_ms);
CREATE TABLE IF NOT EXISTS psi_budget (
    requester TEXT NOT NULL, day INTEGER NOT NULL, queried INTEGER NOT NULL,
    PRIMARY KEY (requester, day));
";

/// A query counted against its requester's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counted {
    /// Ids answered for the requester that day, this query included.
    pub(crate) used: u64,
    /// What the budget leaves that day.
    pub(crate) left: u64,
}

/// The UTC day `ms` (since the unix epoch) falls on, as days since the
/// epoch.
pub(crate) fn utc_day(ms: u64) -> u64 {
    ms / DAY_MS
}

/// A day since the epoch as `YYYY-MM-DD` (proleptic Gregorian, UTC).
pub fn date(day: u64) -> String {
    jointscore_monitor::Day::from_number(i64::try_from(day).unwrap_or(i64::MAX)).to_string()
}

impl RecordStore {
    /// Records `nonce` of `requester`'s open signed at `signed_ms`; `false`
    /// if it was recorded before (a replay). Nonces signed more than
    /// [`NONCE_RETENTION_MS`] before `now_ms` are forgotten first.
    pub(crate) fn claim_psi_nonce(&self, requester: &str, nonce: &str, signed_ms: u64, now_ms: u64) -> Result<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let horizon = now_ms.saturating_sub(NONCE_RETENTION_MS);
        tx.execute("DELETE FROM psi_nonces WHERE signed_ms < ?1", [sql(horizon)])?;
        let added = tx.execute(
            "INSERT INTO psi_nonces (requester, nonce, signed_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![requester, nonce, sql(signed_ms)],
        )?;
        tx.commit()?;
        Ok(added == 1)
    }

    /// Ids answered for `requester` on `day`.
    pub(crate) fn psi_budget_used(&self, requester: &str, day: u64) -> Result<u64> {
        let used: Option<i64> = self
            .conn()?
            .query_row(
                "SELECT queried FROM psi_budget WHERE requester = ?1 AND day = ?2",
                params![requester, sql(day)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
    }

    /// Counts `points` ids against `requester`'s `budget` for `day` and
    /// appends `body` (with `used`, `left` and `budget` added) to the
    /// party's log, in one transaction: concurrent queries cannot pass the
    /// budget together, and a query counted is a query logged. `None`, with
    /// nothing counted or logged, when the query would pass the budget.
    pub(crate) fn count_psi_query(
        &self,
        requester: &str,
        day: u64,
        points: u64,
        budget: u64,
        mut body: serde_json::Value,
    ) -> Result<Option<Counted>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let before: i64 = tx
            .query_row(
                "SELECT queried FROM psi_budget WHERE requester = ?1 AND day = ?2",
                params![requester, sql(day)],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let used = u64::try_from(before).unwrap_or(0).saturating_add(points);
        if used > budget {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO psi_budget (requester, day, queried) VALUES (?1, ?2, ?3)
             ON CONFLICT(requester, day) DO UPDATE SET queried = excluded.queried",
            params![requester, sql(day), sql(used)],
        )?;
        let counted = Counted { used, left: budget - used };
        body["used"] = used.into();
        body["left"] = counted.left.into();
        body["budget"] = budget.into();
        append(&tx, LogKind::Psi, body)?;
        tx.commit()?;
        Ok(Some(counted))
    }
}

fn sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_per_requester_and_per_day_and_never_passed() {
        let store = RecordStore::in_memory().expect("store");
        let count = |who: &str, day, n| store.count_psi_query(who, day, n, 10, serde_json::json!({})).expect("count");
        assert_eq!(count("l", 7, 8), Some(Counted { used: 8, left: 2 }));
        assert_eq!(count("l", 7, 3), None, "8 + 3 is over 10: refused whole");
        assert_eq!(store.psi_budget_used("l", 7).expect("used"), 8, "nothing counted for a refusal");
        assert_eq!(count("l", 7, 2), Some(Counted { used: 10, left: 0 }), "up to the budget exactly");
        assert_eq!(count("l", 7, 1), None);
        assert_eq!(count("l", 7, 0), Some(Counted { used: 10, left: 0 }), "an empty batch costs nothing");
        // Another requester, and the next day, start afresh.
        assert_eq!(count("m", 7, 10), Some(Counted { used: 10, left: 0 }));
        assert_eq!(count("l", 8, 9), Some(Counted { used: 9, left: 1 }));
        assert_eq!(store.psi_budget_used("l", 7).expect("used"), 10);
        assert_eq!(store.psi_budget_used("nobody", 7).expect("used"), 0);
        // Every counted query is in the log, with what it left.
        let log = store.log_entries(0).expect("log");
        assert_eq!(log.len(), 5);
        assert!(log.iter().all(|e| e.kind == LogKind::Psi));
        assert_eq!((log[1].body["used"].as_u64(), log[1].body["left"].as_u64()), (Some(10), Some(0)));
        assert_eq!(log[4].body["budget"], 10);
    }

    #[test]
    fn a_nonce_is_claimed_once_and_forgotten_a_day_after_its_time() {
        let store = RecordStore::in_memory().expect("store");
        let now = 10 * DAY_MS;
        assert!(store.claim_psi_nonce("l", "n1", now, now).expect("claim"));
        assert!(!store.claim_psi_nonce("l", "n1", now, now + 1000).expect("claim"), "a replay");
        assert!(store.claim_psi_nonce("m", "n1", now, now).expect("claim"), "another requester's nonce");
        // Pruned only once its time is a retention period past: by then
        // no window accepts it as fresh.
        assert!(!store.claim_psi_nonce("l", "n1", now, now + NONCE_RETENTION_MS).expect("claim"));
        assert!(store.claim_psi_nonce("l", "n2", now, now + NONCE_RETENTION_MS + 1).expect("claim"));
        assert!(store.claim_psi_nonce("l", "n1", now, now + NONCE_RETENTION_MS + 1).expect("forgotten"));
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(utc_day(951_782_400_000)), "2000-02-29");
        assert_eq!(date(utc_day(1_798_761_599_999)), "2026-12-31");
        assert_eq!(date(utc_day(1_798_761_600_000)), "2027-01-01");
    }
}
