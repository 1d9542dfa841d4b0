//! [`JobStore`] on PostgreSQL: several coordinator processes (front ends,
//! evaluation workers) on one database.
//!
//! # Why a runtime of its own
//!
//! The trait is synchronous and its callers are of three kinds: the
//! group-commit writer thread (a plain thread), blocking tasks
//! (`spawn_blocking`), and short calls made straight from async handlers
//! on the coordinator's tokio workers. The driver, `tokio-postgres` (with
//! the `deadpool-postgres` pool), is async. A synchronous driver
//! (`postgres`) would start and block on a runtime of its own inside each
//! call, which panics on a tokio worker ("cannot start a runtime from
//! within a runtime"); calling `Handle::block_on` on the caller's runtime
//! panics the same way.
//!
//! So the store owns a small multi-threaded runtime (two threads, named
//! `jointscore-pg`) that runs the pool and every query. A call spawns its
//! query there and waits for the answer on a channel. On a worker of a
//! multi-threaded runtime the wait is wrapped in
//! [`tokio::task::block_in_place`], which hands that worker's other tasks
//! to another thread first, so the coordinator's runtime keeps serving
//! while the database answers; elsewhere (the writer thread, blocking
//! tasks, a current-thread runtime in tests) the wait simply blocks that
//! thread. No runtime is ever nested, and the queries never run on the
//! caller's runtime, so a caller that blocks cannot starve them. Dropping
//! the store shuts its runtime down in the background, which is allowed
//! from any context.
//!
//! # What the database enforces
//!
//! Request ids and job ids are unique (two front ends accepting the same
//! request id concurrently: one insert wins, the other's transaction fails
//! and it answers the existing job). The ledger's chain: a unique sequence
//! number, and a foreign key from each entry's `(seq - 1, prev)` to the
//! previous entry's `(seq, hash)`, appended in the same transaction as the
//! job write it records; two writers sealing after the same entry cannot
//! both commit ([`CoordinatorError::LedgerRace`] for the second, which
//! reseals after the new head and retries; `commit.rs`). Entries are
//! append-only (a trigger refuses updates and deletes).
//!
//! Evaluation keys (tens of MB) are stored once per key set, in 1 MiB rows
//! of `key_chunks`, and read back row by row.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::RuntimeFlavor;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{
    Inserted, JobStore, KeptContribution, RawJob, RawStatsJob, Write, evaluation, job_id_for, json, migrations, now_ms,
    plan_name, stats_job_id_for,
};
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, NewJob, NewStatsJob, StatsJobRecord, StatsOutcome};
use crate::keys::SignedRegistration;

/// Rows of `key_chunks`: an evaluation key is written and read 1 MiB at a
/// time.
const KEY_CHUNK: usize = 1 << 20;

/// Connections the pool keeps open, at most.
const POOL_SIZE: usize = 16;

const JOB_COLUMNS: &str = "job_id, request_id, key_id, model_id, subject, plan, state, code, reason, timings, \
                           COALESCE(octet_length(result), 0)::BIGINT, absent, contributions, attestation";

const STATS_COLUMNS: &str = "job_id, request_id, spec_id, spec_toml, state, code, reason, outcome, owner";

/// [`JobStore`] on a PostgreSQL database (`store = "postgres://…"`).
pub struct PgStore {
    /// The runtime the driver runs on; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    closed: AtomicBool,
    /// Where, for messages (no password).
    place: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A database error as the coordinator reports it: PostgreSQL's message
/// and code when the server answered, the driver's otherwise.
fn pg(e: tokio_postgres::Error) -> CoordinatorError {
    match e.as_db_error() {
        Some(db) => CoordinatorError::Store(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        None => CoordinatorError::Store(format!("PostgreSQL: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> CoordinatorError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => CoordinatorError::Store(format!("PostgreSQL: {other}")),
    }
}

fn row_to_job(row: &tokio_postgres::Row) -> Result<RawJob> {
    Ok(RawJob {
        job_id: row.try_get(0).map_err(pg)?,
        request_id: row.try_get(1).map_err(pg)?,
        key_id: row.try_get(2).map_err(pg)?,
        model_id: row.try_get(3).map_err(pg)?,
        subject: row.try_get(4).map_err(pg)?,
        plan: row.try_get(5).map_err(pg)?,
        state: row.try_get(6).map_err(pg)?,
        code: row.try_get(7).map_err(pg)?,
        reason: row.try_get(8).map_err(pg)?,
        timings: row.try_get(9).map_err(pg)?,
        result_bytes: row.try_get(10).map_err(pg)?,
        absent: row.try_get(11).map_err(pg)?,
        contributions: row.try_get(12).map_err(pg)?,
        attestation: row.try_get(13).map_err(pg)?,
    })
}

fn row_to_stats_job(row: &tokio_postgres::Row) -> Result<RawStatsJob> {
    Ok(RawStatsJob {
        job_id: row.try_get(0).map_err(pg)?,
        request_id: row.try_get(1).map_err(pg)?,
        spec_id: row.try_get(2).map_err(pg)?,
        spec_toml: row.try_get(3).map_err(pg)?,
        state: row.try_get(4).map_err(pg)?,
        code: row.try_get(5).map_err(pg)?,
        reason: row.try_get(6).map_err(pg)?,
        outcome: row.try_get(7).map_err(pg)?,
        owner: row.try_get(8).map_err(pg)?,
    })
}

fn seq_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| CoordinatorError::Store("ledger sequence overflow".into()))
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user@host:port/db`,
    /// with libpq's parameters, e.g. `?options=-csearch_path%3Dschema`) and
    /// applies the migrations it lacks.
    pub fn open(url: &str) -> Result<PgStore> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| CoordinatorError::Config(format!("store `{}`: {e}", redact(url))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("jointscore-coordinator");
        let place = redact(url);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("jointscore-pg")
            .enable_all()
            .build()
            .map_err(|e| CoordinatorError::Store(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Verified });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| CoordinatorError::Store(format!("{place}: {e}")))?;
        let handle = runtime.handle().clone();
        let store = PgStore { runtime: Some(runtime), handle, pool, closed: AtomicBool::new(false), place };
        store.migrate().map_err(|e| CoordinatorError::Store(format!("{}: {e}", store.place)))?;
        Ok(store)
    }

    /// Runs `query` on the store's runtime and waits for it (see the
    /// module's doc for why, and why this does not stall the caller's
    /// runtime).
    fn run<T, F>(&self, query: impl FnOnce(Pool) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CoordinatorError::ShuttingDown);
        }
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let query = query(self.pool.clone());
        self.handle.spawn(async move {
            let _ = answer.send(query.await);
        });
        let wait = move || {
            answered.recv().map_err(|_| CoordinatorError::Store("the PostgreSQL runtime stopped mid-query".into()))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(caller) if caller.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait)?,
            _ => wait()?,
        }
    }

    /// Applies the migrations the database lacks, each in one transaction
    /// with its record, under a transaction-scoped advisory lock so that
    /// processes starting together migrate once.
    fn migrate(&self) -> Result<()> {
        self.run(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.jointscore_migrations'))", &[])
                .await
                .map_err(pg)?;
            tx.batch_execute(migrations::RECORD_TABLE_POSTGRES).await.map_err(pg)?;
            let found: i64 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(pg)?;
            migrations::check_not_newer(found, "the database")?;
            for m in migrations::MIGRATIONS.iter().filter(|m| m.version > found) {
                tx.batch_execute(m.postgres)
                    .await
                    .map_err(|e| CoordinatorError::Store(format!("migration {} ({}): {}", m.version, m.name, pg(e))))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &now_ms()],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        })
    }

    /// The store version the database is at.
    pub fn version(&self) -> Result<i64> {
        self.run(|pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            client
                .query_one("SELECT MAX(version) FROM schema_migrations", &[])
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(pg)
        })
    }

    /// One statement, on a pooled connection.
    fn execute(&self, sql: &'static str, params: Vec<Box<dyn ToSql + Send + Sync>>) -> Result<u64> {
        self.run(|pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let stmt = client.prepare_cached(sql).await.map_err(pg)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            client.execute(&stmt, &refs).await.map_err(pg)
        })
    }

    /// The rows of one query, each mapped by `map`.
    fn query<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&tokio_postgres::Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.run(|pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let stmt = client.prepare_cached(&sql).await.map_err(pg)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            client.query(&stmt, &refs).await.map_err(pg)?.iter().map(map).collect()
        })
    }

    /// The one row of a query, if any.
    fn query_opt<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&tokio_postgres::Row) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.query(sql, params, map)?.into_iter().next())
    }
}

fn text(row: &tokio_postgres::Row) -> Result<String> {
    row.try_get(0).map_err(pg)
}

fn bytes(row: &tokio_postgres::Row) -> Result<Vec<u8>> {
    row.try_get(0).map_err(pg)
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Boxes query parameters.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$(Box::new($p) as Box<dyn ToSql + Send + Sync>),*]
    };
}

/// One write, inside the caller's transaction.
async fn apply(tx: &deadpool_postgres::Transaction<'_>, write: &Write, now: i64) -> Result<()> {
    match write {
        Write::Model { model_id, toml } => {
            let stmt = tx
                .prepare_cached("INSERT INTO models (model_id, toml) VALUES ($1, $2) ON CONFLICT (model_id) DO NOTHING")
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[model_id, toml]).await.map_err(pg)?;
        }
        Write::InsertJob { job_id, job } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO jobs (job_id, request_id, key_id, model_id, subject, plan, absent, state, created_ms,
                         updated_ms, attestation, evaluation)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'accepted', $8, $8, $9, $10)",
                )
                .await
                .map_err(pg)?;
            let (plan, absent, attestation) = (plan_name(job.plan), json(&job.absent)?, json(&job.attestation)?);
            tx.execute(
                &stmt,
                &[
                    job_id,
                    &job.request_id,
                    &job.key_id,
                    &job.model_id,
                    &job.subject,
                    &plan,
                    &absent,
                    &now,
                    &attestation,
                    &evaluation(),
                ],
            )
            .await
            .map_err(pg)?;
        }
        Write::State { job_id, state } => {
            if state.is_terminal() {
                return Err(CoordinatorError::Store(format!("a state write cannot end job {job_id}")));
            }
            // A terminal job never moves again, even if a stale worker asks.
            let stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET state = $2, updated_ms = $3 WHERE job_id = $1 AND state NOT IN ('done', 'failed')",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[job_id, &state.as_str(), &now]).await.map_err(pg)?;
        }
        Write::Contribution { job_id, party, bytes, signed } => {
            let signed = signed.as_ref().map(json).transpose()?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO kept_contributions (job_id, party, bytes, signed) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (job_id, party) DO UPDATE SET bytes = excluded.bytes, signed = excluded.signed",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[job_id, party, bytes, &signed]).await.map_err(pg)?;
        }
        Write::Complete { job_id, result, timings, contributions } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'done', result = $2, timings = $3, contributions = $4, updated_ms = $5
                     WHERE job_id = $1 AND state NOT IN ('done', 'failed')",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[job_id, result, &json(timings)?, &json(contributions)?, &now]).await.map_err(pg)?;
            let stmt = tx.prepare_cached("DELETE FROM kept_contributions WHERE job_id = $1").await.map_err(pg)?;
            tx.execute(&stmt, &[job_id]).await.map_err(pg)?;
        }
        Write::Fail { job_id, code, reason, timings } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'failed', code = $2, reason = $3, timings = $4, updated_ms = $5
                     WHERE job_id = $1 AND state NOT IN ('done', 'failed')",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[job_id, code, reason, &json(timings)?, &now]).await.map_err(pg)?;
            let stmt = tx.prepare_cached("DELETE FROM kept_contributions WHERE job_id = $1").await.map_err(pg)?;
            tx.execute(&stmt, &[job_id]).await.map_err(pg)?;
        }
        Write::Fence { job_id, worker } => {
            // FOR UPDATE: a claim by another worker waits for this
            // transaction, and this one sees a claim committed before it.
            let stmt = tx
                .prepare_cached(
                    "SELECT 1 FROM jobs WHERE job_id = $1 AND lease_owner = $2 AND state NOT IN ('done', 'failed')
                     FOR UPDATE",
                )
                .await
                .map_err(pg)?;
            if tx.query_opt(&stmt, &[job_id, worker]).await.map_err(pg)?.is_none() {
                return Err(CoordinatorError::LeaseLost(job_id.clone()));
            }
        }
        Write::Ledger { seq, prev, hash, entry } => {
            let seq = seq_i64(*seq)?;
            let stmt = tx
                .prepare_cached("INSERT INTO ledger (seq, hash, prev, entry) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&seq, hash, prev, entry]).await.map_err(|e| {
                let code = e.code();
                let chain = [SqlState::UNIQUE_VIOLATION, SqlState::FOREIGN_KEY_VIOLATION, SqlState::CHECK_VIOLATION];
                if code.is_some_and(|c| chain.contains(c)) {
                    CoordinatorError::LedgerRace(format!("ledger entry {seq}: {}", pg(e)))
                } else {
                    pg(e)
                }
            })?;
        }
    }
    Ok(())
}

impl JobStore for PgStore {
    fn put_party(&self, name: &str, address: &str) -> Result<()> {
        self.execute(
            "INSERT INTO parties (name, address, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, updated_ms = excluded.updated_ms",
            params![name.to_string(), address.to_string(), now_ms()],
        )
        .map(drop)
    }

    fn party_address(&self, name: &str) -> Result<Option<String>> {
        self.query_opt("SELECT address FROM parties WHERE name = $1".into(), params![name.to_string()], text)
    }

    fn put_key_set(
        &self,
        key_id: &str,
        lender: &str,
        signed: &SignedRegistration,
        public: &[u8],
        evaluation: &[u8],
    ) -> Result<()> {
        let signed = json(signed)?;
        let (key_id, lender, public) = (key_id.to_string(), lender.to_string(), public.to_vec());
        let total = i64::try_from(evaluation.len()).unwrap_or(i64::MAX);
        // The chunks are copied once, to cross to the store's runtime.
        let chunks: Vec<Vec<u8>> = evaluation.chunks(KEY_CHUNK).map(<[u8]>::to_vec).collect();
        self.run(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute(
                "INSERT INTO key_sets (key_id, lender, public, evaluation_bytes, created_ms, registration)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (key_id) DO UPDATE SET lender = excluded.lender, public = excluded.public,
                     evaluation_bytes = excluded.evaluation_bytes, registration = excluded.registration",
                &[&key_id, &lender, &public, &total, &now_ms(), &signed],
            )
            .await
            .map_err(pg)?;
            tx.execute("DELETE FROM key_chunks WHERE key_id = $1", &[&key_id]).await.map_err(pg)?;
            let insert =
                tx.prepare("INSERT INTO key_chunks (key_id, idx, bytes) VALUES ($1, $2, $3)").await.map_err(pg)?;
            for (idx, chunk) in chunks.iter().enumerate() {
                let idx = i32::try_from(idx).map_err(|_| CoordinatorError::Store("evaluation key too large".into()))?;
                tx.execute(&insert, &[&key_id, &idx, chunk]).await.map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        })
    }

    fn key_registration(&self, key_id: &str) -> Result<Option<(String, SignedRegistration)>> {
        let row = self.query_opt(
            "SELECT lender, registration FROM key_sets WHERE key_id = $1".into(),
            params![key_id.to_string()],
            |r| Ok((r.try_get::<_, String>(0).map_err(pg)?, r.try_get::<_, String>(1).map_err(pg)?)),
        )?;
        row.map(|(lender, signed)| {
            let signed = serde_json::from_str(&signed)
                .map_err(|e| CoordinatorError::Store(format!("key set {key_id}: unreadable registration: {e}")))?;
            Ok((lender, signed))
        })
        .transpose()
    }

    fn public_key(&self, key_id: &str) -> Result<Option<Vec<u8>>> {
        self.query_opt("SELECT public FROM key_sets WHERE key_id = $1".into(), params![key_id.to_string()], bytes)
    }

    fn evaluation_key(&self, key_id: &str) -> Result<Option<Vec<u8>>> {
        let key_id = key_id.to_string();
        self.run(|pool| async move {
            use tokio_stream::StreamExt;
            let client = pool.get().await.map_err(pool_err)?;
            let Some(total) = client
                .query_opt("SELECT evaluation_bytes FROM key_sets WHERE key_id = $1", &[&key_id])
                .await
                .map_err(pg)?
            else {
                return Ok(None);
            };
            let total: i64 = total.try_get(0).map_err(pg)?;
            let mut key = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            // Row by row: the driver holds one 1 MiB chunk at a time.
            let rows = client
                .query_raw("SELECT bytes FROM key_chunks WHERE key_id = $1 ORDER BY idx", [&key_id])
                .await
                .map_err(pg)?;
            let mut rows = std::pin::pin!(rows);
            while let Some(row) = rows.next().await {
                let row = row.map_err(pg)?;
                let chunk: &[u8] = row.try_get(0).map_err(pg)?;
                key.extend_from_slice(chunk);
            }
            if i64::try_from(key.len()).ok() != Some(total) {
                return Err(CoordinatorError::Store(format!(
                    "key set {key_id}: evaluation key is {} bytes in the store, {total} registered",
                    key.len()
                )));
            }
            Ok(Some(key))
        })
    }

    fn put_model(&self, model_id: &str, toml: &str) -> Result<()> {
        self.execute(
            "INSERT INTO models (model_id, toml) VALUES ($1, $2) ON CONFLICT (model_id) DO NOTHING",
            params![model_id.to_string(), toml.to_string()],
        )
        .map(drop)
    }

    fn model(&self, model_id: &str) -> Result<Option<String>> {
        self.query_opt("SELECT toml FROM models WHERE model_id = $1".into(), params![model_id.to_string()], text)
    }

    fn insert_job(&self, job: &NewJob) -> Result<Inserted> {
        let job = job.clone();
        let inserted = self.run(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            let job_id = job_id_for(&job.request_id);
            // Two front ends inserting the same request id at once: the
            // second waits for the first's transaction, then inserts
            // nothing and reads the job the first made.
            let new = tx
                .execute(
                    "INSERT INTO jobs (job_id, request_id, key_id, model_id, subject, plan, absent, state,
                         created_ms, updated_ms, attestation, evaluation)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'accepted', $8, $8, $9, $10)
                     ON CONFLICT (request_id) DO NOTHING",
                    &[
                        &job_id,
                        &job.request_id,
                        &job.key_id,
                        &job.model_id,
                        &job.subject,
                        &plan_name(job.plan),
                        &json(&job.absent)?,
                        &now_ms(),
                        &json(&job.attestation)?,
                        &evaluation(),
                    ],
                )
                .await
                .map_err(pg)?
                == 1;
            let row = tx
                .query_one(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE request_id = $1"), &[&job.request_id])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok((new, row_to_job(&row)?))
        })?;
        match inserted {
            (true, raw) => Ok(Inserted::New(raw.checked()?)),
            (false, raw) => Ok(Inserted::Existing(raw.checked()?)),
        }
    }

    fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        self.query_opt(
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1"),
            params![job_id.to_string()],
            row_to_job,
        )?
        .map(RawJob::checked)
        .transpose()
    }

    fn job_by_request(&self, request_id: &str) -> Result<Option<JobRecord>> {
        self.query_opt(
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE request_id = $1"),
            params![request_id.to_string()],
            row_to_job,
        )?
        .map(RawJob::checked)
        .transpose()
    }

    fn commit(&self, writes: &[&Write]) -> Result<()> {
        let writes: Vec<Write> = writes.iter().map(|w| (*w).clone()).collect();
        self.run(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            let now = now_ms();
            for write in &writes {
                apply(&tx, write, now).await?;
            }
            tx.commit().await.map_err(pg)
        })
    }

    fn kept_contributions(&self, job_id: &str) -> Result<Vec<KeptContribution>> {
        let rows = self.query(
            "SELECT party, bytes, signed FROM kept_contributions WHERE job_id = $1 ORDER BY party".into(),
            params![job_id.to_string()],
            |r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(pg)?,
                    r.try_get::<_, Vec<u8>>(1).map_err(pg)?,
                    r.try_get::<_, Option<String>>(2).map_err(pg)?,
                ))
            },
        )?;
        super::parse_kept(job_id, rows)
    }

    fn result(&self, job_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "SELECT result FROM jobs WHERE job_id = $1 AND state = 'done'".into(),
                params![job_id.to_string()],
                |r| r.try_get::<_, Option<Vec<u8>>>(0).map_err(pg),
            )?
            .flatten())
    }

    fn unfinished(&self) -> Result<Vec<JobRecord>> {
        self.query(
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state NOT IN ('done', 'failed') ORDER BY seq"),
            params![],
            row_to_job,
        )?
        .into_iter()
        .map(RawJob::checked)
        .collect()
    }

    fn claim_job(&self, worker: &str, lease_ms: u64) -> Result<Option<JobRecord>> {
        let worker = worker.to_string();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        let raw = self.run(|pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let now = now_ms();
            // One statement: the oldest claimable job, skipping rows other
            // claimers hold locked, leased in the same statement.
            let stmt = client
                .prepare_cached(&format!(
                    "UPDATE jobs SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1
                     WHERE seq = (
                         SELECT seq FROM jobs WHERE state NOT IN ('done', 'failed') AND lease_until_ms < $3
                             AND evaluation IN ('', $4)
                         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ))
                .await
                .map_err(pg)?;
            let row = client
                .query_opt(&stmt, &[&worker, &now.saturating_add(lease), &now, &evaluation()])
                .await
                .map_err(pg)?;
            row.as_ref().map(row_to_job).transpose()
        })?;
        raw.map(RawJob::checked).transpose()
    }

    fn renew_lease(&self, job_id: &str, worker: &str, lease_ms: u64) -> Result<bool> {
        let until = now_ms().saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        let n = self.execute(
            "UPDATE jobs SET lease_until_ms = $3
             WHERE job_id = $1 AND lease_owner = $2 AND state NOT IN ('done', 'failed')",
            params![job_id.to_string(), worker.to_string(), until],
        )?;
        Ok(n == 1)
    }

    fn unclaimable(&self, limit: usize) -> Result<Vec<(String, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "SELECT job_id, evaluation FROM jobs WHERE state NOT IN ('done', 'failed') AND evaluation NOT IN ('', $1)
             ORDER BY seq LIMIT $2"
                .into(),
            params![evaluation().to_string(), limit],
            |r| Ok((r.try_get(0).map_err(pg)?, r.try_get(1).map_err(pg)?)),
        )
    }

    fn parties(&self) -> Result<Vec<(String, String)>> {
        self.query("SELECT name, address FROM parties ORDER BY name".into(), params![], |r| {
            Ok((r.try_get(0).map_err(pg)?, r.try_get(1).map_err(pg)?))
        })
    }

    fn key_owner(&self, key_id: &str) -> Result<Option<String>> {
        self.query_opt("SELECT lender FROM key_sets WHERE key_id = $1".into(), params![key_id.to_string()], text)
    }

    fn ledger(&self, from_seq: u64, limit: usize) -> Result<Vec<String>> {
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query("SELECT entry FROM ledger WHERE seq >= $1 ORDER BY seq LIMIT $2".into(), params![from, limit], text)
    }

    fn last_ledger(&self) -> Result<Option<String>> {
        self.query_opt("SELECT entry FROM ledger ORDER BY seq DESC LIMIT 1".into(), params![], text)
    }

    fn insert_stats_job(&self, job: &NewStatsJob) -> Result<Inserted<StatsJobRecord>> {
        let job = job.clone();
        let (new, raw) = self.run(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            let new = tx
                .execute(
                    "INSERT INTO stats_jobs (job_id, request_id, spec_id, spec_toml, state, created_ms, updated_ms,
                         owner)
                     VALUES ($1, $2, $3, $4, 'accepted', $5, $5, $6)
                     ON CONFLICT (request_id) DO NOTHING",
                    &[
                        &stats_job_id_for(&job.request_id),
                        &job.request_id,
                        &job.spec_id,
                        &job.spec_toml,
                        &now_ms(),
                        &job.owner,
                    ],
                )
                .await
                .map_err(pg)?
                == 1;
            let row = tx
                .query_one(&format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE request_id = $1"), &[&job.request_id])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok((new, row_to_stats_job(&row)?))
        })?;
        let job = raw.checked()?;
        Ok(if new { Inserted::New(job) } else { Inserted::Existing(job) })
    }

    fn stats_job(&self, job_id: &str) -> Result<Option<StatsJobRecord>> {
        self.query_opt(
            format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE job_id = $1"),
            params![job_id.to_string()],
            row_to_stats_job,
        )?
        .map(RawStatsJob::checked)
        .transpose()
    }

    fn stats_job_by_request(&self, request_id: &str) -> Result<Option<StatsJobRecord>> {
        self.query_opt(
            format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE request_id = $1"),
            params![request_id.to_string()],
            row_to_stats_job,
        )?
        .map(RawStatsJob::checked)
        .transpose()
    }

    fn start_stats_job(&self, job_id: &str) -> Result<()> {
        self.execute(
            "UPDATE stats_jobs SET state = 'collecting', updated_ms = $2
             WHERE job_id = $1 AND state NOT IN ('done', 'failed')",
            params![job_id.to_string(), now_ms()],
        )
        .map(drop)
    }

    fn end_stats_job(&self, job_id: &str, outcome: &StatsOutcome, failure: Option<(i32, &str)>) -> Result<()> {
        let outcome = json(outcome)?;
        let (state, code, reason) = match failure {
            None => (JobState::Done, 0, String::new()),
            Some((code, reason)) => (JobState::Failed, code, reason.to_string()),
        };
        self.execute(
            "UPDATE stats_jobs SET state = $2, code = $3, reason = $4, outcome = $5, updated_ms = $6
             WHERE job_id = $1 AND state NOT IN ('done', 'failed')",
            params![job_id.to_string(), state.as_str(), code, reason, outcome, now_ms()],
        )
        .map(drop)
    }

    fn unfinished_stats(&self) -> Result<Vec<StatsJobRecord>> {
        self.query(
            format!("SELECT {STATS_COLUMNS} FROM stats_jobs WHERE state NOT IN ('done', 'failed') ORDER BY seq"),
            params![],
            row_to_stats_job,
        )?
        .into_iter()
        .map(RawStatsJob::checked)
        .collect()
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        self.pool.close();
        Ok(())
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary
/// directory, on a free port), so that restarting it disturbs nobody
/// else. Needs the server's binaries and, as root, the `postgres` user
/// to run it; `None` (after one line saying so) otherwise.
pub struct PrivateServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateServer {
    fn run(args: &[&str]) -> std::io::Result<std::process::Output> {
        let as_root = std::process::Command::new("id").arg("-u").output()?.stdout == b"0\n";
        let mut command = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            std::process::Command::new(args[0])
        };
        if as_root {
            command.arg(args[0]);
        }
        command.args(&args[1..]).output()
    }

    /// Starts one: `None`, after one line on stderr, where the server's
    /// binaries are missing.
    pub fn start() -> Option<PrivateServer> {
        let skip = |why: String| {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "PostgreSQL restart test skipped: {why}");
            None
        };
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let _ = std::process::Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).output();
        let data = dir.path().join("data");
        let data = data.to_str()?.to_string();
        match Self::run(&["initdb", "-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => return skip(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => return skip(format!("no initdb ({e})")),
        }
        let server = PrivateServer { dir, port };
        if let Err(e) = server.ctl("start") {
            return skip(e);
        }
        Some(server)
    }

    /// `pg_ctl` `what` (`start`, `stop`, `restart`), waiting for it.
    pub fn ctl(&self, what: &str) -> std::result::Result<(), String> {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let (data, log) = (data.to_str().unwrap_or_default(), log.to_str().unwrap_or_default());
        match Self::run(&["pg_ctl", "-D", data, "-l", log, "-o", &options, "-m", "fast", "-w", what]) {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("pg_ctl {what}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => Err(format!("pg_ctl {what}: {e}")),
        }
    }

    /// Its URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.ctl("stop");
    }
}

/// The PostgreSQL server tests use: `JOINTSCORE_TEST_POSTGRES`, by default
/// the machines' local server.
const DEFAULT_TEST_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh schema on the test PostgreSQL server, for one test; dropped
/// (with everything in it) when this goes out of scope.
///
/// [`TestDatabase::create`] answers `None`, after one line on stderr
/// saying so, when no server answers, so the test skips; with `CI=true` a
/// missing server is a failure instead (it panics), so a broken setup
/// cannot pass silently.
pub struct TestDatabase {
    admin: String,
    schema: String,
    url: String,
}

impl TestDatabase {
    /// A new schema for the test `name`, on `JOINTSCORE_TEST_POSTGRES`.
    pub fn create(name: &str) -> Option<TestDatabase> {
        let admin = std::env::var("JOINTSCORE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.into());
        TestDatabase::create_at(&admin, name)
    }

    /// A new schema for `name` on the server `admin` names.
    pub fn create_at(admin: &str, name: &str) -> Option<TestDatabase> {
        let admin = admin.to_string();
        let tag: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(24)
            .collect();
        let nonce = u64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng));
        let schema = format!("js_{tag}_{}_{nonce:x}", std::process::id());
        match admin_sql(&admin, format!("CREATE SCHEMA {schema}")) {
            Ok(()) => {}
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "CI=true and no PostgreSQL answers at {} ({e}): the PostgreSQL store's tests need it \
                     (set JOINTSCORE_TEST_POSTGRES, or start the server)",
                    redact(&admin)
                );
                // Once per process, past the test harness's capture: the
                // run's output says why these tests did not run.
                static SAID: AtomicBool = AtomicBool::new(false);
                if !SAID.swap(true, Ordering::SeqCst) {
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "PostgreSQL store tests skipped: no server at {} ({e}); set JOINTSCORE_TEST_POSTGRES",
                        redact(&admin)
                    );
                }
                return None;
            }
        }
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-csearch_path%3D{schema}");
        Some(TestDatabase { admin, schema, url })
    }

    /// The URL of the schema (a `store` value).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs SQL on the schema, outside any store (a test's checks).
    pub fn sql(&self, sql: &str) -> Result<()> {
        admin_sql(&self.url, sql.to_string())
    }

    /// The one number a query on the schema answers (a test's checks),
    /// e.g. `SELECT COUNT(*) FROM jobs`.
    pub fn scalar(&self, sql: &str) -> Result<i64> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        on_own_runtime(move || async move {
            let client = connect(&url).await?;
            let row = client.query_one(&sql, &[]).await.map_err(pg)?;
            row.try_get::<_, i64>(0).map_err(pg)
        })
    }

    /// A store on the schema (migrated on first open).
    pub fn open(&self) -> Result<PgStore> {
        PgStore::open(&self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) = admin_sql(&self.admin, format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)) {
            eprintln!("cannot drop test schema {}: {e}", self.schema);
        }
    }
}

/// Runs `sql` on a connection of its own, on a thread and runtime of its
/// own (callable from any context, async or not).
fn admin_sql(url: &str, sql: String) -> Result<()> {
    let url = url.to_string();
    on_own_runtime(move || async move { connect(&url).await?.batch_execute(&sql).await.map_err(pg) })
}

/// A connection of its own, its driver task on the current runtime.
async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| CoordinatorError::Config(e.to_string()))?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `work` to its end on a new thread with a current-thread runtime.
fn on_own_runtime<T, F>(work: impl FnOnce() -> F + Send + 'static) -> Result<T>
where
    F: Future<Output = Result<T>>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CoordinatorError::Store(e.to_string()))?;
        runtime.block_on(work())
    })
    .join()
    .map_err(|_| CoordinatorError::Store("the PostgreSQL admin thread panicked".into()))?
}
