//! Durable state: the [`JobStore`] trait and its SQLite implementation.
//!
//! Why one file of ~750 lines: the trait, the SQLite schema and its
//! migrations, and each query beside the trait method it implements read
//! best together (a change to a table shows every query it touches). A
//! second implementation (PostgreSQL, planned) would get a module of its
//! own, and this one would move to `store/sqlite.rs`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_circuits::PlanKind;
use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, NewJob, NewStatsJob, SignedContribution, StatsJobRecord, StatsOutcome, Timings};
use crate::keys::SignedRegistration;

/// What [`JobStore::insert_job`] (or [`JobStore::insert_stats_job`]) did.
#[derive(Debug)]
pub enum Inserted<J = JobRecord> {
    /// A new job was recorded in state `accepted`.
    New(J),
    /// The request id already named this job; nothing was written.
    Existing(J),
}

/// One write of a [`JobStore::commit`]: the coordinator's group commit
/// (`commit.rs`) gathers the writes of every caller waiting into one
/// transaction.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Write {
    /// Records a model by id; nothing if the id is held.
    Model {
        /// The model's id.
        model_id: String,
        /// Its TOML.
        toml: String,
    },
    /// Records a new job in state `accepted`. Fails if the request id (or
    /// the job id) is taken.
    InsertJob {
        /// The job's id (derived from its request id).
        job_id: String,
        /// The request.
        job: NewJob,
    },
    /// Moves a job to a non-terminal state; nothing for a job that ended.
    State {
        /// The job.
        job_id: String,
        /// Its new state, not terminal.
        state: JobState,
    },
    /// Keeps a party's verified contribution to a running job (its bytes
    /// and signed envelope), so a job recovered after a restart does not
    /// ask that party again. Dropped when the job ends.
    Contribution {
        /// The job.
        job_id: String,
        /// The party.
        party: String,
        /// The ciphertext list as received.
        bytes: Vec<u8>,
        /// The party's signed envelope, when it sent one.
        signed: Option<SignedContribution>,
    },
    /// Stores a job's encrypted result and marks it done, dropping its
    /// kept contributions; nothing for a job that ended.
    Complete {
        /// The job.
        job_id: String,
        /// The encrypted result.
        result: Vec<u8>,
        /// Where its time went.
        timings: Timings,
        /// The parties' signed envelopes.
        contributions: Vec<SignedContribution>,
    },
    /// Marks a job failed with a gRPC status code and a reason, dropping
    /// its kept contributions; nothing for a job that ended.
    Fail {
        /// The job.
        job_id: String,
        /// The gRPC status code, as its integer.
        code: i32,
        /// Why, for a person.
        reason: String,
        /// Where its time went.
        timings: Timings,
    },
    /// Appends a sealed audit ledger entry (JSON) at `seq`. Fails if `seq`
    /// is taken, so two writers cannot both append one.
    Ledger {
        /// Its sequence number.
        seq: u64,
        /// The entry, as JSON.
        entry: String,
    },
}

/// Everything the coordinator must not lose across a restart.
///
/// Implementations must make each call atomic and durable when it returns;
/// [`JobStore::commit`] makes a whole batch of writes one transaction.
/// SQLite ([`SqliteStore`]) backs a single coordinator; a scaled-out
/// coordinator would implement this over PostgreSQL, with `insert_job`'s
/// uniqueness on the request id enforced by the database.
pub trait JobStore: Send + Sync + 'static {
    /// Records (or moves) a party's address.
    fn put_party(&self, name: &str, address: &str) -> Result<()>;
    /// A party's address.
    fn party_address(&self, name: &str) -> Result<Option<String>>;
    /// Records a lender key set: its public key and compressed evaluation
    /// key, as received. Registering the same id again replaces it (the
    /// service only lets identical bytes through).
    fn put_key_set(
        &self,
        key_id: &str,
        lender: &str,
        signed: &SignedRegistration,
        public: &[u8],
        evaluation: &[u8],
    ) -> Result<()>;
    /// Who registered a key set, and its signed registration.
    fn key_registration(&self, key_id: &str) -> Result<Option<(String, SignedRegistration)>>;
    /// A key set's public key bytes.
    fn public_key(&self, key_id: &str) -> Result<Option<Vec<u8>>>;
    /// A key set's compressed evaluation key bytes.
    fn evaluation_key(&self, key_id: &str) -> Result<Option<Vec<u8>>>;
    /// Records a model by id.
    fn put_model(&self, model_id: &str, toml: &str) -> Result<()>;
    /// A model's TOML.
    fn model(&self, model_id: &str) -> Result<Option<String>>;
    /// Records a job unless its request id is taken, atomically.
    fn insert_job(&self, job: &NewJob) -> Result<Inserted>;
    /// A job.
    fn job(&self, job_id: &str) -> Result<Option<JobRecord>>;
    /// The job a request id names.
    fn job_by_request(&self, request_id: &str) -> Result<Option<JobRecord>>;
    /// Applies `writes` in one transaction, in order: all of them or none,
    /// durable when it returns. The coordinator's writes to jobs and ledger
    /// go through here, a batch of callers at a time (`commit.rs`).
    fn commit(&self, writes: &[&Write]) -> Result<()>;
    /// Moves a job to a non-terminal state (one [`Write::State`] alone).
    fn set_state(&self, job_id: &str, state: JobState) -> Result<()> {
        self.commit(&[&Write::State { job_id: job_id.into(), state }])
    }
    /// Stores a job's encrypted result and marks it done (one
    /// [`Write::Complete`] alone).
    fn complete(
        &self,
        job_id: &str,
        result: &[u8],
        timings: &Timings,
        contributions: &[SignedContribution],
    ) -> Result<()> {
        self.commit(&[&Write::Complete {
            job_id: job_id.into(),
            result: result.to_vec(),
            timings: timings.clone(),
            contributions: contributions.to_vec(),
        }])
    }
    /// Marks a job failed with a gRPC status code and a reason (one
    /// [`Write::Fail`] alone).
    fn fail(&self, job_id: &str, code: i32, reason: &str, timings: &Timings) -> Result<()> {
        self.commit(&[&Write::Fail { job_id: job_id.into(), code, reason: reason.into(), timings: timings.clone() }])
    }
    /// Keeps one party's verified contribution to a running job (one
    /// [`Write::Contribution`] alone).
    fn put_contribution(
        &self,
        job_id: &str,
        party: &str,
        bytes: &[u8],
        signed: Option<&SignedContribution>,
    ) -> Result<()> {
        self.commit(&[&Write::Contribution {
            job_id: job_id.into(),
            party: party.into(),
            bytes: bytes.to_vec(),
            signed: signed.cloned(),
        }])
    }
    /// The contributions kept for a running job, `(party, bytes, signed)`.
    fn kept_contributions(&self, job_id: &str) -> Result<Vec<KeptContribution>>;
    /// A done job's encrypted result.
    fn result(&self, job_id: &str) -> Result<Option<Vec<u8>>>;
    /// Every job not in a terminal state, oldest first.
    fn unfinished(&self) -> Result<Vec<JobRecord>>;
    /// Every registered party, `(name, address)`, by name.
    fn parties(&self) -> Result<Vec<(String, String)>>;
    /// The lender that registered a key set.
    fn key_owner(&self, key_id: &str) -> Result<Option<String>>;
    /// Appends an audit ledger entry (JSON) at `seq` (one
    /// [`Write::Ledger`] alone).
    fn append_ledger(&self, seq: u64, entry: &str) -> Result<()> {
        self.commit(&[&Write::Ledger { seq, entry: entry.into() }])
    }
    /// Up to `limit` ledger entries from `from_seq` on, in order.
    fn ledger(&self, from_seq: u64, limit: usize) -> Result<Vec<String>>;
    /// The last ledger entry.
    fn last_ledger(&self) -> Result<Option<String>>;
    /// Records a statistics job unless its request id is taken, atomically.
    fn insert_stats_job(&self, job: &NewStatsJob) -> Result<Inserted<StatsJobRecord>>;
    /// A statistics job.
    fn stats_job(&self, job_id: &str) -> Result<Option<StatsJobRecord>>;
    /// The statistics job a request id names.
    fn stats_job_by_request(&self, request_id: &str) -> Result<Option<StatsJobRecord>>;
    /// Marks a statistics job's round as running (unless it has ended).
    fn start_stats_job(&self, job_id: &str) -> Result<()>;
    /// Ends a statistics job: done with its outcome when `failure` is
    /// `None`, else failed with `(code, reason)` and the outcome so far.
    fn end_stats_job(&self, job_id: &str, outcome: &StatsOutcome, failure: Option<(i32, &str)>) -> Result<()>;
    /// Every statistics job not in a terminal state, oldest first.
    fn unfinished_stats(&self) -> Result<Vec<StatsJobRecord>>;
    /// Closes the store at shutdown, once nothing writes to it any more;
    /// every later call fails. (SQLite checkpoints its write-ahead log.)
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A contribution kept for a running job: the party, the bytes it sent,
/// its signed envelope.
pub type KeptContribution = (String, Vec<u8>, Option<SignedContribution>);

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

/// The store's format version (SQLite's `user_version`). Version 2: key
/// sets carry their lender's signed registration, jobs the lender's
/// attestation, and the ledger commitments instead of subjects. Stores of
/// other versions are refused with how to migrate.
const STORE_VERSION: i64 = 2;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS parties (
    name TEXT PRIMARY KEY, address TEXT NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS key_sets (
    key_id TEXT PRIMARY KEY, lender TEXT NOT NULL, public BLOB NOT NULL, evaluation BLOB NOT NULL,
    created_ms INTEGER NOT NULL, registration TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS models (model_id TEXT PRIMARY KEY, toml TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL UNIQUE,
    key_id TEXT NOT NULL, model_id TEXT NOT NULL, subject TEXT NOT NULL, plan TEXT NOT NULL,
    state TEXT NOT NULL, code INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
    timings TEXT NOT NULL DEFAULT '{}', result BLOB,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    absent TEXT NOT NULL DEFAULT '[]', contributions TEXT NOT NULL DEFAULT '[]',
    attestation TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS stats_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL UNIQUE,
    spec_id TEXT NOT NULL, spec_toml TEXT NOT NULL,
    state TEXT NOT NULL, code INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '{}',
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, owner TEXT);
CREATE INDEX IF NOT EXISTS stats_jobs_state ON stats_jobs (state);
CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kept_contributions (
    job_id TEXT NOT NULL, party TEXT NOT NULL, bytes BLOB NOT NULL, signed TEXT,
    PRIMARY KEY (job_id, party));
";

const STATS_COLUMNS: &str = "job_id, request_id, spec_id, spec_toml, state, code, reason, outcome, owner";

fn row_to_stats_job(row: &Row<'_>) -> rusqlite::Result<(StatsJobRecord, String, String)> {
    let job = StatsJobRecord {
        job_id: row.get(0)?,
        request: NewStatsJob {
            request_id: row.get(1)?,
            spec_id: row.get(2)?,
            spec_toml: row.get(3)?,
            owner: row.get(8)?,
        },
        state: JobState::Failed,
        code: row.get(5)?,
        reason: row.get(6)?,
        outcome: StatsOutcome::default(),
    };
    Ok((job, row.get(4)?, row.get(7)?))
}

/// Refuses rows this code did not write rather than guessing.
fn checked_stats_job((mut job, state, outcome): (StatsJobRecord, String, String)) -> Result<StatsJobRecord> {
    job.state = JobState::parse(&state)
        .filter(|s| *s != JobState::Evaluating)
        .ok_or_else(|| CoordinatorError::Store(format!("stats job {} has unknown state `{state}`", job.job_id)))?;
    job.outcome = serde_json::from_str(&outcome)
        .map_err(|e| CoordinatorError::Store(format!("stats job {}: outcome: {e}", job.job_id)))?;
    Ok(job)
}

const JOB_COLUMNS: &str = "job_id, request_id, key_id, model_id, subject, plan, state, code, reason, timings, COALESCE(LENGTH(result), 0), absent, contributions, attestation";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn plan_name(kind: PlanKind) -> &'static str {
    match kind {
        PlanKind::Pushdown => "pushdown",
        PlanKind::CoordinatorSide => "coordinator_side",
    }
}

/// A job's id: derived from its request id, so the same request always
/// names the same job.
pub(crate) fn job_id_for(request_id: &str) -> String {
    format!("job-{}", &hex::encode(Sha256::digest(request_id.as_bytes()))[..16])
}

fn row_to_job(row: &Row<'_>) -> rusqlite::Result<(JobRecord, String, String)> {
    let plan: String = row.get(5)?;
    let state: String = row.get(6)?;
    let timings: String = row.get(9)?;
    let job = JobRecord {
        job_id: row.get(0)?,
        request: NewJob {
            request_id: row.get(1)?,
            key_id: row.get(2)?,
            model_id: row.get(3)?,
            subject: row.get(4)?,
            plan: if plan == "coordinator_side" { PlanKind::CoordinatorSide } else { PlanKind::Pushdown },
            // Unreadable, it must not read as "every party asked": that
            // would tell absent parties the subject.
            absent: serde_json::from_str(&row.get::<_, String>(11)?)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, Box::new(e)))?,
            // Unreadable, parties refuse the request's missing signature.
            attestation: serde_json::from_str(&row.get::<_, String>(13)?).unwrap_or_default(),
        },
        state: JobState::Failed,
        code: row.get(7)?,
        reason: row.get(8)?,
        timings: serde_json::from_str(&timings).unwrap_or_default(),
        result_bytes: row.get::<_, i64>(10)?.try_into().unwrap_or(0),
        contributions: serde_json::from_str(&row.get::<_, String>(12)?).unwrap_or_default(),
    };
    Ok((job, state, plan))
}

impl SqliteStore {
    /// Opens (creating if needed, readable by its owner only) the store at
    /// `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        create_private(path).map_err(|e| CoordinatorError::Store(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(|e| CoordinatorError::Store(format!("{}: {e}", path.display())))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'", [], |r| {
                r.get(0)
            })?;
        if tables > 0 && version != STORE_VERSION {
            return Err(CoordinatorError::Store(format!(
                "{} was written by an earlier version of jointscore (store version {version}, this one reads \
                 {STORE_VERSION}): its key sets are not signed by their lenders and its ledger names subjects in \
                 the clear. Keep it for its ledger (`jointscore audit show` against the old version), start this \
                 coordinator on a new store file, and have each lender run `jointscore lender keygen --force` and \
                 `jointscore lender register` again",
                path.display()
            )));
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {STORE_VERSION}"))?;
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
            .map(checked_job)
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

/// Refuses rows this code did not write (a state or plan it does not know)
/// rather than guessing.
fn checked_job((mut job, state, plan): (JobRecord, String, String)) -> Result<JobRecord> {
    job.state = JobState::parse(&state)
        .ok_or_else(|| CoordinatorError::Store(format!("job {} has unknown state `{state}`", job.job_id)))?;
    if plan != "pushdown" && plan != "coordinator_side" {
        return Err(CoordinatorError::Store(format!("job {} has unknown plan `{plan}`", job.job_id)));
    }
    Ok(job)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| CoordinatorError::Store(e.to_string()))
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
                     updated_ms, attestation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'accepted', ?8, ?8, ?9)",
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
        Write::Ledger { seq, entry } => {
            let seq = i64::try_from(*seq).map_err(|_| CoordinatorError::Store("ledger sequence overflow".into()))?;
            tx.prepare_cached("INSERT INTO ledger (seq, entry) VALUES (?1, ?2)")?.execute(params![seq, entry])?;
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
            .map(checked_job)
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
        rows.into_iter()
            .map(|(party, bytes, signed)| {
                let signed = signed
                    .map(|s| serde_json::from_str(&s))
                    .transpose()
                    .map_err(|e| CoordinatorError::Store(format!("job {job_id}: a kept contribution: {e}")))?;
                Ok((party, bytes, signed))
            })
            .collect()
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
        rows.into_iter().map(checked_job).collect()
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
            .map(checked_stats_job)
            .transpose()?
            .ok_or_else(|| CoordinatorError::Store(format!("stats job {job_id} vanished")))
        };
        let existing: Option<String> = tx
            .query_row("SELECT job_id FROM stats_jobs WHERE request_id = ?1", [&job.request_id], |r| r.get(0))
            .optional()?;
        if let Some(job_id) = existing {
            return Ok(Inserted::Existing(read(&job_id)?));
        }
        let job_id = format!("stats-{}", &hex::encode(Sha256::digest(job.request_id.as_bytes()))[..16]);
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
            .map(checked_stats_job)
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
            .map(checked_stats_job)
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
        rows.into_iter().map(checked_stats_job).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Attestation;

    fn new_job(request_id: &str) -> NewJob {
        NewJob {
            request_id: request_id.into(),
            key_id: "k".into(),
            model_id: "m".into(),
            subject: "s".into(),
            plan: PlanKind::Pushdown,
            absent: vec!["bank".into()],
            attestation: Attestation {
                lender: "lender".into(),
                time_ms: 1,
                salt: "ab".repeat(32),
                signature: String::new(),
            },
        }
    }

    #[test]
    fn a_store_from_an_earlier_version_is_refused_with_how_to_migrate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.sqlite");
        {
            // The jobs table as an earlier version left it (user_version 0).
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE jobs (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE,
                    request_id TEXT NOT NULL UNIQUE, key_id TEXT NOT NULL, model_id TEXT NOT NULL,
                    subject TEXT NOT NULL, plan TEXT NOT NULL, state TEXT NOT NULL,
                    code INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
                    timings TEXT NOT NULL DEFAULT '{}', result BLOB,
                    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
                 INSERT INTO jobs (job_id, request_id, key_id, model_id, subject, plan, state, created_ms, updated_ms)
                    VALUES ('job-old', 'r-old', 'k', 'm', 's', 'pushdown', 'accepted', 1, 1);",
            )
            .expect("old schema");
        }
        let e = SqliteStore::open(&path).err().expect("refused");
        let message = e.to_string();
        assert!(message.contains("earlier version") && message.contains("lender keygen --force"), "{message}");
        // Nothing was changed: the old job is still there, untouched.
        let conn = Connection::open(&path).expect("open");
        let subject: String = conn.query_row("SELECT subject FROM jobs", [], |r| r.get(0)).expect("kept");
        assert_eq!(subject, "s");
        drop(conn);
        // A new store opens, and opens again.
        let fresh = dir.path().join("new.sqlite");
        let store = SqliteStore::open(&fresh).expect("new");
        let Inserted::New(new) = store.insert_job(&new_job("r-new")).expect("insert") else { panic!("new") };
        assert_eq!(new.request.attestation.lender, "lender");
        drop(store);
        SqliteStore::open(&fresh).expect("reopening is a no-op");
    }

    #[test]
    fn contributions_are_kept_while_a_job_runs_and_dropped_when_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.sqlite")).expect("open");
        let Inserted::New(a) = store.insert_job(&new_job("r1")).expect("insert") else { panic!("new") };
        let Inserted::New(b) = store.insert_job(&new_job("r2")).expect("insert") else { panic!("new") };
        let signed = SignedContribution {
            party: "bank".into(),
            ciphertext_sha256: "ab".repeat(32),
            signed_ms: 7,
            signature: "cd".repeat(64),
            consent: String::new(),
        };
        store.put_contribution(&a.job_id, "bank", b"ct-bank", Some(&signed)).expect("keep");
        store.put_contribution(&a.job_id, "platform", b"ct-platform", None).expect("keep");
        store.put_contribution(&b.job_id, "bank", b"ct-other", None).expect("keep");
        let mut kept = store.kept_contributions(&a.job_id).expect("read");
        kept.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(kept.len(), 2);
        assert_eq!(
            (kept[0].0.as_str(), kept[0].1.as_slice(), kept[0].2.as_ref()),
            ("bank", &b"ct-bank"[..], Some(&signed))
        );
        assert_eq!((kept[1].0.as_str(), kept[1].2.as_ref()), ("platform", None));
        store.complete(&a.job_id, b"result", &Timings::default(), &[signed]).expect("complete");
        assert!(store.kept_contributions(&a.job_id).expect("read").is_empty(), "dropped once done");
        store.fail(&b.job_id, 14, "gone", &Timings::default()).expect("fail");
        assert!(store.kept_contributions(&b.job_id).expect("read").is_empty(), "dropped once failed");
    }

    #[test]
    fn a_closed_store_refuses_every_call_and_keeps_what_it_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        let Inserted::New(job) = store.insert_job(&new_job("r1")).expect("insert") else { panic!("new") };
        store.set_state(&job.job_id, JobState::Evaluating).expect("state");
        store.close().expect("close");
        store.close().expect("closing twice is a no-op");
        let refused = store.set_state(&job.job_id, JobState::Collecting).expect_err("closed");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
        assert!(!dir.path().join("c.sqlite-wal").exists(), "closing checkpoints the write-ahead log");
        // An interrupted job is still unfinished, for the next start.
        let store = SqliteStore::open(&path).expect("reopen");
        let unfinished = store.unfinished().expect("unfinished");
        assert_eq!(
            unfinished.iter().map(|j| (&j.job_id, j.state)).collect::<Vec<_>>(),
            [(&job.job_id, JobState::Evaluating)]
        );
    }

    #[test]
    fn jobs_are_idempotent_durable_and_end_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        let Inserted::New(a) = store.insert_job(&new_job("r1")).expect("insert") else { panic!("expected new") };
        assert_eq!(a.state, JobState::Accepted);
        let Inserted::Existing(again) = store.insert_job(&new_job("r1")).expect("insert") else {
            panic!("expected existing")
        };
        assert_eq!(again.job_id, a.job_id);
        assert_eq!(store.job_by_request("r1").expect("read").map(|j| j.job_id), Some(a.job_id.clone()));
        assert!(store.job_by_request("r9").expect("read").is_none());
        let Inserted::New(b) = store.insert_job(&new_job("r2")).expect("insert") else { panic!("expected new") };
        store.set_state(&a.job_id, JobState::Collecting).expect("state");
        let t = Timings { pbs: 59, ..Timings::default() };
        let signed = SignedContribution {
            party: "bank".into(),
            ciphertext_sha256: "ab".repeat(32),
            signed_ms: 7,
            signature: "cd".repeat(64),
            consent: "consent-1".into(),
        };
        store.complete(&a.job_id, b"ct", &t, std::slice::from_ref(&signed)).expect("complete");
        // A stale worker cannot move a finished job.
        store.fail(&a.job_id, 14, "late", &t).expect("no-op");
        store.set_state(&a.job_id, JobState::Evaluating).expect("no-op");
        drop(store);

        let store = SqliteStore::open(&path).expect("reopen");
        let a = store.job(&a.job_id).expect("read").expect("held");
        assert_eq!((a.state, a.timings.pbs, a.result_bytes), (JobState::Done, 59, 2));
        assert_eq!(a.contributions, [signed]);
        assert_eq!(store.result(&a.job_id).expect("read").as_deref(), Some(&b"ct"[..]));
        let open: Vec<String> = store.unfinished().expect("read").into_iter().map(|j| j.job_id).collect();
        assert_eq!(open, vec![b.job_id.clone()]);
        store.fail(&b.job_id, 14, "party `bank` is unreachable", &Timings::default()).expect("fail");
        let b = store.job(&b.job_id).expect("read").expect("held");
        assert_eq!((b.state, b.code, b.reason.as_str()), (JobState::Failed, 14, "party `bank` is unreachable"));
        assert_eq!(store.result(&b.job_id).expect("read"), None);
        assert!(store.unfinished().expect("read").is_empty());
        assert!(store.job("job-nope").expect("read").is_none());
    }

    #[test]
    fn registry_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.sqlite")).expect("open");
        store.put_party("bank", "http://a").expect("put");
        store.put_party("bank", "http://b").expect("move");
        assert_eq!(store.party_address("bank").expect("read").as_deref(), Some("http://b"));
        assert_eq!(store.party_address("platform").expect("read"), None);
        store.put_key_set("k1", "lender", &SignedRegistration::default(), b"pk", b"ek").expect("put");
        assert_eq!(store.public_key("k1").expect("read").as_deref(), Some(&b"pk"[..]));
        assert_eq!(store.evaluation_key("k1").expect("read").as_deref(), Some(&b"ek"[..]));
        assert_eq!(store.public_key("k2").expect("read"), None);
        store.put_model("m", "toml").expect("put");
        assert_eq!(store.model("m").expect("read").as_deref(), Some("toml"));
        store.put_party("aardvark", "http://c").expect("put");
        assert_eq!(
            store.parties().expect("read"),
            [("aardvark".to_string(), "http://c".to_string()), ("bank".into(), "http://b".into())]
        );
    }

    #[test]
    fn stats_jobs_are_idempotent_durable_and_end_once() {
        use crate::job::{DroppedParty, StatsEntry};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        let new = NewStatsJob {
            request_id: "q1".into(),
            spec_id: "s".into(),
            spec_toml: "name = \"x\"".into(),
            owner: Some("lender".into()),
        };
        let Inserted::New(a) = store.insert_stats_job(&new).expect("insert") else { panic!("expected new") };
        assert_eq!((a.state, a.outcome.clone()), (JobState::Accepted, StatsOutcome::default()));
        let Inserted::Existing(again) = store.insert_stats_job(&new).expect("insert") else {
            panic!("expected existing")
        };
        assert_eq!((again.job_id.as_str(), again.request.spec_toml.as_str()), (a.job_id.as_str(), "name = \"x\""));
        let Inserted::New(b) =
            store.insert_stats_job(&NewStatsJob { request_id: "q2".into(), ..new.clone() }).expect("insert")
        else {
            panic!("expected new")
        };
        store.start_stats_job(&a.job_id).expect("start");
        let outcome = StatsOutcome {
            entries: vec![StatsEntry { label: "records".into(), value: 7 }],
            included: vec!["bank".into(), "platform".into()],
            dropped: vec![DroppedParty {
                party: "logistics".into(),
                step: "masked_input".into(),
                reason: "gone".into(),
            }],
            round_us: 12,
        };
        store.end_stats_job(&a.job_id, &outcome, None).expect("end");
        // A finished job never moves again.
        store.end_stats_job(&a.job_id, &StatsOutcome::default(), Some((14, "late"))).expect("no-op");
        store.start_stats_job(&a.job_id).expect("no-op");
        drop(store);

        let store = SqliteStore::open(&path).expect("reopen");
        let a = store.stats_job(&a.job_id).expect("read").expect("held");
        assert_eq!((a.state, a.outcome), (JobState::Done, outcome));
        let open: Vec<String> = store.unfinished_stats().expect("read").into_iter().map(|j| j.job_id).collect();
        assert_eq!(open, std::slice::from_ref(&b.job_id));
        store.end_stats_job(&b.job_id, &StatsOutcome::default(), Some((14, "too few"))).expect("fail");
        let b = store.stats_job(&b.job_id).expect("read").expect("held");
        assert_eq!((b.state, b.code, b.reason.as_str()), (JobState::Failed, 14, "too few"));
        assert!(store.unfinished_stats().expect("read").is_empty());
        assert!(store.stats_job("stats-nope").expect("read").is_none());
        assert_eq!(store.stats_job_by_request("q2").expect("read").map(|j| j.job_id), Some(b.job_id));
        assert!(store.stats_job_by_request("q3").expect("read").is_none());
    }
}
