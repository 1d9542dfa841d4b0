//! [`JobStore`] in one SQLite file: one coordinator process.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Inserted, JobStore, KeptContribution, RawJob, RawStatsJob, Write, evaluation, job_id_for, json, migrations, now_ms,
    plan_name, stats_job_id_for,
};
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, NewJob, NewStatsJob, StatsJobRecord, StatsOutcome};
use crate::keys::SignedRegistration;

/// [`JobStore`] in one SQLite file (WAL mode; every call one transaction).
pub struct SqliteStore {
    /// `None` once closed.
    conn: Mutex<Option<Connection>>,
}

/// The open connection, held for one call.
struct Conn<'a>(MutexGuard<'a, Option<Connection>>);

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // `SqliteStore::conn` hands out only guards over an open connection.
        self.0.as_ref().unwrap_or_else(|| unreachable!("a closed store handed out its connection"))
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.0.as_mut().unwrap_or_else(|| unreachable!("a closed store handed out its connection"))
    }
}

const JOB_COLUMNS: &str = "job_id, request_id, key_id, model_id, subject, plan, state, code, reason, timings, COALESCE(LENGTH(result), 0), absent, contributions, attestation";

const STATS_COLUMNS: &str = "job_id, request_id, spec_id, spec_toml, state, code, reason, outcome, owner";

fn row_to_job(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        job_id: row.get(0)?,
        request_id: row.get(1)?,
        key_id: row.get(2)?,
        model_id: row.get(3)?,
        subject: row.get(4)?,
        plan: row.get(5)?,
        state: row.get(6)?,
        code: row.get(7)?,
        reason: row.get(8)?,
        timings: row.get(9)?,
        result_bytes: row.get(10)?,
        absent: row.get(11)?,
        contributions: row.get(12)?,
        attestation: row.get(13)?,
    })
}

fn row_to_stats_job(row: &Row<'_>) -> rusqlite::Result<RawStatsJob> {
    Ok(RawStatsJob {
        job_id: row.get(0)?,
        request_id: row.get(1)?,
        spec_id: row.get(2)?,
        spec_toml: row.get(3)?,
        state: row.get(4)?,
        code: row.get(5)?,
        reason: row.get(6)?,
        outcome: row.get(7)?,
        owner: row.get(8)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed, readable by its owner only) the store at
    /// `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        create_private(path).map_err(|e| CoordinatorError::Store(format!("{}: {e}", path.display())))?;
        let mut conn =
            Connection::open(path).map_err(|e| CoordinatorError::Store(format!("{}: {e}", path.display())))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'", [], |r| {
                r.get(0)
            })?;
        if tables > 0 && version < migrations::OLDEST {
            return Err(CoordinatorError::Store(format!(
                "{} was written by an earlier version of jointscore (store version {version}, this one reads \
                 {} to {}): its key sets are not signed by their lenders and its ledger names subjects in \
                 the clear. Keep it for its ledger (`jointscore audit show` against the old version), start this \
                 coordinator on a new store file, and have each lender run `jointscore lender keygen --force` and \
                 `jointscore lender register` again",
                path.display(),
                migrations::OLDEST,
                migrations::latest(),
            )));
        }
        migrations::check_not_newer(version, &path.display().to_string())?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        migrate(&mut conn, if tables > 0 { version } else { 0 })?;
        Ok(SqliteStore { conn: Mutex::new(Some(conn)) })
    }

    fn conn(&self) -> Result<Conn<'_>> {
        let guard =
            self.conn.lock().map_err(|_| CoordinatorError::Store("store lock poisoned by an earlier panic".into()))?;
        if guard.is_none() {
            return Err(CoordinatorError::ShuttingDown);
        }
        Ok(Conn(guard))
    }

    fn read_job(conn: &Connection, job_id: &str) -> Result<Option<JobRecord>> {
        conn.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?1"), [job_id], row_to_job)
            .optional()?
            .map(RawJob::checked)
            .transpose()
    }
}

/// Creates the database file owner-only before SQLite opens it; SQLite
/// gives its journal files the database file's permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Applies the migrations after `from` (0: a new store), each in one
/// transaction with its record; an existing version-2 store gets the
/// record of version 2 first.
fn migrate(conn: &mut Connection, from: i64) -> Result<()> {
    // Immediate: the write lock is taken (waiting out other connections'
    // writes) before the first read, never upgraded midway.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(migrations::RECORD_TABLE_SQLITE)?;
    if from >= migrations::OLDEST {
        for m in migrations::MIGRATIONS.iter().filter(|m| m.version <= from) {
            tx.execute(
                "INSERT OR IGNORE INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                params![m.version, m.name, now_ms()],
            )?;
        }
    }
    tx.commit()?;
    for m in migrations::MIGRATIONS.iter().filter(|m| m.version > from) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(m.sqlite)
            .map_err(|e| CoordinatorError::Store(format!("migration {} ({}): {e}", m.version, m.name)))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_ms()],
        )?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))?;
        tx.commit()?;
    }
    Ok(())
}

/// A ledger append the database refused because the entry does not
/// continue the chain (its sequence number is taken, or the previous
/// entry is not the one it was sealed after).
fn ledger_refusal(e: rusqlite::Error, seq: i64) -> CoordinatorError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            CoordinatorError::LedgerRace(format!("ledger entry {seq}: {e}"))
        }
        _ => e.into(),
    }
}

/// One write, inside the caller's transaction. Statements are cached: the
/// same few run for every decision.
fn apply(tx: &rusqlite::Transaction<'_>, write: &Write, now: i64) -> Result<()> {
    match write {
        Write::Model { model_id, toml } => {
            tx.prepare_cached("INSERT OR IGNORE INTO models (model_id, toml) VALUES (?1, ?2)")?
                .execute(params![model_id, toml])?;
        }
        Write::InsertJob { job_id, job } => {
            tx.prepare_cached(
                "INSERT INTO jobs (job_id, request_id, key_id, model_id, subject, plan, absent, state, created_ms,
                     updated_ms, attestation, evaluation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'accepted', ?8, ?8, ?9, ?10)",
            )?
            .execute(params![
                job_id,
                job.request_id,
                job.key_id,
                job.model_id,
                job.subject,
                plan_name(job.plan),
                json(&job.absent)?,
                now,
                json(&job.attestation)?,
                evaluation(),
            ])?;
        }
        Write::State { job_id, state } => {
            if state.is_terminal() {
                return Err(CoordinatorError::Store(format!("a state write cannot end job {job_id}")));
            }
            // A terminal job never moves again, even if a stale worker asks.
            tx.prepare_cached(
                "UPDATE jobs SET state = ?2, updated_ms = ?3 WHERE job_id = ?1 AND state NOT IN ('done', 'failed')",
            )?
            .execute(params![job_id, state.as_str(), now])?;
        }
        Write::Contribution { job_id, party, bytes, signed } => {
            let signed = signed.as_ref().map(json).transpose()?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO kept_contributions (job_id, party, bytes, signed) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![job_id, party, bytes, signed])?;
        }
        Write::Complete { job_id, result, timings, contributions } => {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'done', result = ?2, timings = ?3, contributions = ?4, updated_ms = ?5
                 WHERE job_id = ?1 AND state NOT IN ('done', 'failed')",
            )?
            .execute(params![job_id, result, json(timings)?, json(contributions)?, now])?;
            tx.prepare_cached("DELETE FROM kept_contributions WHERE job_id = ?1")?.execute([job_id])?;
        }
        Write::Fail { job_id, code, reason, timings } => {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'failed', code = ?2, reason = ?3, timings = ?4, updated_ms = ?5
                 WHERE job_id = ?1 AND state NOT IN ('done', 'failed')",
            )?
            .execute(params![job_id, code, reason, json(timings)?, now])?;
            tx.prepare_cached("DELETE FROM kept_contributions WHERE job_id = ?1")?.execute([job_id])?;
        }
        Write::Fence { job_id, worker } => {
            let held = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM jobs WHERE job_id = ?1 AND lease_owner = ?2 AND state NOT IN ('done', 'failed')",
                )?
                .query_row(params![job_id, worker], |r| r.get::<_, i64>(0))?;
            if held == 0 {
                return Err(CoordinatorError::LeaseLost(job_id.clone()));
            }
        }
        Write::Ledger { seq, prev, hash, entry } => {
            let seq = i64::try_from(*seq).map_err(|_| CoordinatorError::Store("ledger sequence overflow".into()))?;
            tx.prepare_cached("INSERT INTO ledger (seq, hash, prev, entry) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![seq, hash, prev, entry])
                .map_err(|e| ledger_refusal(e, seq))?;
        }
    }
    Ok(())
}

impl JobStore for SqliteStore {
    fn put_party(&self, name: &str, address: &str) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO parties (name, address, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET address = excluded.address, updated_ms = excluded.updated_ms",
            params![name, address, now_ms()],
        )?;
        Ok(())
    }

    fn party_address(&self, name: &str) -> Result<Option<String>> {
        Ok(self.conn()?.query_row("SELECT address FROM parties WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    }

    fn put_key_set(
        &self,
        key_id: &str,
        lender: &str,
        signed: &SignedRegistration,
        public: &[u8],
        evaluation: &[u8],
    ) -> Result<()> {
        let signed = serde_json::to_string(signed).map_err(|e| CoordinatorError::Store(e.to_string()))?;
        self.conn()?.execute(
            "INSERT INTO key_sets (key_id, lender, public, evaluation, created_ms, registration)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(key_id) DO UPDATE SET lender = excluded.lender, public = excluded.public,
                 evaluation = excluded.evaluation, registration = excluded.registration",
            params![key_id, lender, public, evaluation, now_ms(), signed],
        )?;
        Ok(())
    }

    fn key_registration(&self, key_id: &str) -> Result<Option<(String, SignedRegistration)>> {
        let row: Option<(String, String)> = self
            .conn()?
            .query_row("SELECT lender, registration FROM key_sets WHERE key_id = ?1", [key_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(lender, signed)| {
            let signed = serde_json::from_str(&signed)
                .map_err(|e| CoordinatorError::Store(format!("key set {key_id}: unreadable registration: {e}")))?;
            Ok((lender, signed))
        })
        .transpose()
    }

    fn public_key(&self, key_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()?
            .query_row("SELECT public FROM key_sets WHERE key_id = ?1", [key_id], |r| r.get(0))
            .optional()?)
    }

    fn evaluation_key(&self, key_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()?
            .query_row("SELECT evaluation FROM key_sets WHERE key_id = ?1", [key_id], |r| r.get(0))
            .optional()?)
    }

    fn put_model(&self, model_id: &str, toml: &str) -> Result<()> {
        self.conn()?
            .execute("INSERT OR IGNORE INTO models (model_id, toml) VALUES (?1, ?2)", params![model_id, toml])?;
        Ok(())
    }

    fn model(&self, model_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()?
            .query_row("SELECT toml FROM models WHERE model_id = ?1", [model_id], |r| r.get(0))
            .optional()?)
    }

    fn insert_job(&self, job: &NewJob) -> Result<Inserted> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let existing: Option<String> = tx
            .query_row("SELECT job_id FROM jobs WHERE request_id = ?1", [&job.request_id], |r| r.get(0))
            .optional()?;
        if let Some(job_id) = existing {
            let found = SqliteStore::read_job(&tx, &job_id)?
                .ok_or_else(|| CoordinatorError::Store(format!("job {job_id} vanished")))?;
            return Ok(Inserted::Existing(found));
        }
        let job_id = job_id_for(&job.request_id);
        apply(&tx, &Write::InsertJob { job_id: job_id.clone(), job: job.clone() }, now_ms())?;
        let created = SqliteStore::read_job(&tx, &job_id)?
            .ok_or_else(|| CoordinatorError::Store(format!("job {job_id} vanished")))?;
        tx.commit()?;
        Ok(Inserted::New(created))
    }

    fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        SqliteStore::read_job(&*self.conn()?, job_id)
    }

    fn job_by_request(&self, request_id: &str) -> Result<Option<JobRecord>> {
        let conn = self.conn()?;
        conn.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE request_id = ?1"), [request_id], row_to_job)
            .optional()?
            .map(RawJob::checked)
            .transpose()
    }

    fn commit(&self, writes: &[&Write]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now = now_ms();
        for write in writes {
            apply(&tx, write, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn kept_contributions(&self, job_id: &str) -> Result<Vec<KeptContribution>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT party, bytes, signed FROM kept_contributions WHERE job_id = ?1")?;
        let rows = stmt
            .query_map([job_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Option<String>>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        super::parse_kept(job_id, rows)
    }

    fn result(&self, job_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()?
            .query_row("SELECT result FROM jobs WHERE job_id = ?1 AND state = 'done'", [job_id], |r| r.get(0))
            .optional()?)
    }

    fn unfinished(&self) -> Result<Vec<JobRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state NOT IN ('done', 'failed') ORDER BY seq"))?;
        let rows = stmt.query_map([], row_to_job)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(RawJob::checked).collect()
    }

    fn claim_job(&self, worker: &str, lease_ms: u64) -> Result<Option<JobRecord>> {
        let mut conn = self.conn()?;
        // SQLite has one writer at a time: the transaction is the lock.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let job_id: Option<String> = tx
            .query_row(
                "SELECT job_id FROM jobs WHERE state NOT IN ('done', 'failed') AND lease_until_ms < ?1
                     AND evaluation IN ('', ?2)
                 ORDER BY seq LIMIT 1",
                params![now, evaluation()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(job_id) = job_id else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET lease_owner = ?2, lease_until_ms = ?3, attempts = attempts + 1 WHERE job_id = ?1",
            params![job_id, worker, now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX))],
        )?;
        let job = SqliteStore::read_job(&tx, &job_id)?;
        tx.commit()?;
        Ok(job)
    }

    fn renew_lease(&self, job_id: &str, worker: &str, lease_ms: u64) -> Result<bool> {
        let until = now_ms().saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        let n = self.conn()?.execute(
            "UPDATE jobs SET lease_until_ms = ?3
             WHERE job_id = ?1 AND lease_owner = ?2 AND state NOT IN ('done', 'failed')",
            params![job_id, worker, until],
        )?;
        Ok(n == 1)
    }

    fn unclaimable(&self, limit: usize) -> Result<Vec<(String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT job_id, evaluation FROM jobs WHERE state NOT IN ('done', 'failed') AND evaluation NOT IN ('', ?1)
             ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![evaluation(), limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn key_owner(&self, key_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()?
            .query_row("SELECT lender FROM key_sets WHERE key_id = ?1", [key_id], |r| r.get(0))
            .optional()?)
    }

    fn ledger(&self, from_seq: u64, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT entry FROM ledger WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![from, limit], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn last_ledger(&self) -> Result<Option<String>> {
        Ok(self.conn()?.query_row("SELECT entry FROM ledger ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).optional()?)
    }

    fn parties(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT name, address FROM parties ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn insert_stats_job(&self, job: &NewStatsJob) -> Result<Inserted<StatsJobRecord>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let read = |job_id: &str| -> Result<StatsJobRecord> {
            tx.query_row(
                &format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE job_id = ?1"),
                [job_id],
                row_to_stats_job,
            )
            .optional()?
            .map(RawStatsJob::checked)
            .transpose()?
            .ok_or_else(|| CoordinatorError::Store(format!("stats job {job_id} vanished")))
        };
        let existing: Option<String> = tx
            .query_row("SELECT job_id FROM stats_jobs WHERE request_id = ?1", [&job.request_id], |r| r.get(0))
            .optional()?;
        if let Some(job_id) = existing {
            return Ok(Inserted::Existing(read(&job_id)?));
        }
        let job_id = stats_job_id_for(&job.request_id);
        tx.execute(
            "INSERT INTO stats_jobs (job_id, request_id, spec_id, spec_toml, state, created_ms, updated_ms, owner)
             VALUES (?1, ?2, ?3, ?4, 'accepted', ?5, ?5, ?6)",
            params![job_id, job.request_id, job.spec_id, job.spec_toml, now_ms(), job.owner],
        )?;
        let created = read(&job_id)?;
        tx.commit()?;
        Ok(Inserted::New(created))
    }

    fn stats_job(&self, job_id: &str) -> Result<Option<StatsJobRecord>> {
        self.conn()?
            .query_row(&format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE job_id = ?1"), [job_id], row_to_stats_job)
            .optional()?
            .map(RawStatsJob::checked)
            .transpose()
    }

    fn stats_job_by_request(&self, request_id: &str) -> Result<Option<StatsJobRecord>> {
        self.conn()?
            .query_row(
                &format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE request_id = ?1"),
                [request_id],
                row_to_stats_job,
            )
            .optional()?
            .map(RawStatsJob::checked)
            .transpose()
    }

    fn start_stats_job(&self, job_id: &str) -> Result<()> {
        self.conn()?.execute(
            "UPDATE stats_jobs SET state = 'collecting', updated_ms = ?2
             WHERE job_id = ?1 AND state NOT IN ('done', 'failed')",
            params![job_id, now_ms()],
        )?;
        Ok(())
    }

    fn end_stats_job(&self, job_id: &str, outcome: &StatsOutcome, failure: Option<(i32, &str)>) -> Result<()> {
        let outcome = serde_json::to_string(outcome).map_err(|e| CoordinatorError::Store(e.to_string()))?;
        let (state, code, reason) = match failure {
            None => ("done", 0, ""),
            Some((code, reason)) => ("failed", code, reason),
        };
        self.conn()?.execute(
            "UPDATE stats_jobs SET state = ?2, code = ?3, reason = ?4, outcome = ?5, updated_ms = ?6
             WHERE job_id = ?1 AND state NOT IN ('done', 'failed')",
            params![job_id, state, code, reason, outcome, now_ms()],
        )?;
        Ok(())
    }

    fn unfinished_stats(&self) -> Result<Vec<StatsJobRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {STATS_COLUMNS} FROM stats_jobs WHERE state NOT IN ('done', 'failed') ORDER BY seq"
        ))?;
        let rows = stmt.query_map([], row_to_stats_job)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(RawStatsJob::checked).collect()
    }

    fn close(&self) -> Result<()> {
        let mut guard =
            self.conn.lock().map_err(|_| CoordinatorError::Store("store lock poisoned by an earlier panic".into()))?;
        match guard.take() {
            Some(conn) => conn.close().map_err(|(_, e)| CoordinatorError::Store(format!("closing the store: {e}"))),
            None => Ok(()),
        }
    }
}
