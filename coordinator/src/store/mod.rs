//! Durable state: the [`JobStore`] trait and its two implementations,
//! SQLite ([`SqliteStore`], one coordinator process) and PostgreSQL
//! ([`PgStore`], several coordinator front ends and workers on one
//! database), with the versioned migrations both apply at start
//! (`migrations.rs`) and one test suite that runs against both
//! (`tests.rs`).

use jointscore_circuits::PlanKind;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, NewJob, NewStatsJob, SignedContribution, StatsJobRecord, StatsOutcome, Timings};
use crate::keys::SignedRegistration;

mod migrations;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

pub use postgres::{PgStore, PrivateServer, TestDatabase};
pub use sqlite::SqliteStore;

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
    /// Fails the whole transaction ([`CoordinatorError::LeaseLost`])
    /// unless `worker` still holds the lease on the unfinished job
    /// `job_id`: a worker whose lease ran out, and whose job another
    /// worker claimed, writes nothing (neither the job's end nor its
    /// ledger entries), so a job's end is written exactly once.
    Fence {
        /// The job.
        job_id: String,
        /// The worker that claimed it.
        worker: String,
    },
    /// Appends a sealed audit ledger entry (JSON) at `seq`. The database
    /// refuses it unless it continues the chain: `seq` must be free, and
    /// entry `seq - 1` must exist with hash `prev` (for `seq` 0, `prev` is
    /// the genesis hash), so two writers that sealed after the same entry
    /// cannot both append: one fails with [`CoordinatorError::LedgerRace`].
    Ledger {
        /// Its sequence number.
        seq: u64,
        /// The previous entry's hash.
        prev: String,
        /// This entry's hash.
        hash: String,
        /// The entry, as JSON.
        entry: String,
    },
}

/// Everything the coordinator must not lose across a restart.
///
/// Implementations must make each call atomic and durable when it returns;
/// [`JobStore::commit`] makes a whole batch of writes one transaction.
/// SQLite ([`SqliteStore`]) backs a single coordinator; PostgreSQL
/// ([`PgStore`]) backs several on one database, with `insert_job`'s
/// uniqueness on the request id and the ledger's chain enforced by the
/// database.
///
/// The trait is synchronous: its callers are the group-commit writer
/// thread, blocking tasks, and short calls on the async workers. How each
/// implementation keeps those from stalling the async runtime is told on
/// the implementation ([`PgStore`] runs its async driver on a runtime of
/// its own).
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
    /// Claims for `worker` the oldest unfinished job that no live lease
    /// holds (never claimed, or its holder's lease ran out) and that this
    /// process can evaluate (accepted under its [`evaluation`] fingerprint,
    /// or before fingerprints were kept), leasing it for `lease_ms`; `None`
    /// when there is none. Concurrent claimers never get the same job
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    fn claim_job(&self, worker: &str, lease_ms: u64) -> Result<Option<JobRecord>>;
    /// Extends `worker`'s lease on `job_id` by `lease_ms` from now; `false`
    /// when it no longer holds it (the job ended, or its lease ran out and
    /// another worker claimed it).
    fn renew_lease(&self, job_id: &str, worker: &str, lease_ms: u64) -> Result<bool>;
    /// Up to `limit` unfinished jobs this process cannot evaluate: `(job
    /// id, the fingerprint it needs)`, oldest first.
    fn unclaimable(&self, limit: usize) -> Result<Vec<(String, String)>>;
    /// Every registered party, `(name, address)`, by name.
    fn parties(&self) -> Result<Vec<(String, String)>>;
    /// The lender that registered a key set.
    fn key_owner(&self, key_id: &str) -> Result<Option<String>>;
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

/// Kept contributions as both stores read them: (party, bytes, the signed
/// envelope as JSON), the envelope parsed.
pub(crate) fn parse_kept(job_id: &str, rows: Vec<(String, Vec<u8>, Option<String>)>) -> Result<Vec<KeptContribution>> {
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

/// Opens the store a configuration names: `postgres://…` (or
/// `postgresql://…`) is a PostgreSQL database, anything else a SQLite file.
pub fn open_store(store: &std::path::Path) -> Result<std::sync::Arc<dyn JobStore>> {
    match postgres_url(store) {
        Some(url) => Ok(std::sync::Arc::new(PgStore::open(url)?)),
        None => Ok(std::sync::Arc::new(SqliteStore::open(store)?)),
    }
}

/// The URL, when `store` names a PostgreSQL database.
pub fn postgres_url(store: &std::path::Path) -> Option<&str> {
    store.to_str().filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn plan_name(kind: PlanKind) -> &'static str {
    match kind {
        PlanKind::Pushdown => "pushdown",
        PlanKind::CoordinatorSide => "coordinator_side",
        PlanKind::Monitor => "monitor",
    }
}

/// A job's id: derived from its request id, so the same request always
/// names the same job.
pub(crate) fn job_id_for(request_id: &str) -> String {
    format!("job-{}", &hex::encode(Sha256::digest(request_id.as_bytes()))[..16])
}

/// A statistics job's id, derived from its request id.
pub(crate) fn stats_job_id_for(request_id: &str) -> String {
    format!("stats-{}", &hex::encode(Sha256::digest(request_id.as_bytes()))[..16])
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| CoordinatorError::Store(e.to_string()))
}

/// A job row as either database returns it, before it is checked.
pub(crate) struct RawJob {
    pub(crate) job_id: String,
    pub(crate) request_id: String,
    pub(crate) key_id: String,
    pub(crate) model_id: String,
    pub(crate) subject: String,
    pub(crate) plan: String,
    pub(crate) state: String,
    pub(crate) code: i32,
    pub(crate) reason: String,
    pub(crate) timings: String,
    pub(crate) result_bytes: i64,
    pub(crate) absent: String,
    pub(crate) contributions: String,
    pub(crate) attestation: String,
}

impl RawJob {
    /// Refuses rows this code did not write (a state or plan it does not
    /// know, an unreadable list of absent parties) rather than guessing.
    pub(crate) fn checked(self) -> Result<JobRecord> {
        let id = &self.job_id;
        let state = JobState::parse(&self.state)
            .ok_or_else(|| CoordinatorError::Store(format!("job {id} has unknown state `{}`", self.state)))?;
        let plan = match self.plan.as_str() {
            "pushdown" => PlanKind::Pushdown,
            "coordinator_side" => PlanKind::CoordinatorSide,
            "monitor" => PlanKind::Monitor,
            other => return Err(CoordinatorError::Store(format!("job {id} has unknown plan `{other}`"))),
        };
        // Unreadable, it must not read as "every party asked": that would
        // tell absent parties the subject.
        let absent = serde_json::from_str(&self.absent)
            .map_err(|e| CoordinatorError::Store(format!("job {id}: unreadable absent parties: {e}")))?;
        Ok(JobRecord {
            request: NewJob {
                request_id: self.request_id,
                key_id: self.key_id,
                model_id: self.model_id,
                subject: self.subject,
                plan,
                absent,
                // Unreadable, parties refuse the request's missing signature.
                attestation: serde_json::from_str(&self.attestation).unwrap_or_default(),
            },
            state,
            code: self.code,
            reason: self.reason,
            timings: serde_json::from_str(&self.timings).unwrap_or_default(),
            result_bytes: self.result_bytes.try_into().unwrap_or(0),
            contributions: serde_json::from_str(&self.contributions).unwrap_or_default(),
            job_id: self.job_id,
        })
    }
}

/// A statistics job row as either database returns it.
pub(crate) struct RawStatsJob {
    pub(crate) job_id: String,
    pub(crate) request_id: String,
    pub(crate) spec_id: String,
    pub(crate) spec_toml: String,
    pub(crate) state: String,
    pub(crate) code: i32,
    pub(crate) reason: String,
    pub(crate) outcome: String,
    pub(crate) owner: Option<String>,
}

impl RawStatsJob {
    /// Refuses rows this code did not write rather than guessing.
    pub(crate) fn checked(self) -> Result<StatsJobRecord> {
        let id = &self.job_id;
        let state = JobState::parse(&self.state)
            .filter(|s| *s != JobState::Evaluating)
            .ok_or_else(|| CoordinatorError::Store(format!("stats job {id} has unknown state `{}`", self.state)))?;
        let outcome = serde_json::from_str(&self.outcome)
            .map_err(|e| CoordinatorError::Store(format!("stats job {id}: outcome: {e}")))?;
        Ok(StatsJobRecord {
            request: NewStatsJob {
                request_id: self.request_id,
                spec_id: self.spec_id,
                spec_toml: self.spec_toml,
                owner: self.owner,
            },
            state,
            code: self.code,
            reason: self.reason,
            outcome,
            job_id: self.job_id,
        })
    }
}

/// What evaluating a job needs of this process ([`jointscore_circuits::params::evaluation_fingerprint`]):
/// recorded with each job accepted here, compared by workers at each claim.
pub(crate) fn evaluation() -> &'static str {
    static FINGERPRINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FINGERPRINT.get_or_init(jointscore_circuits::params::evaluation_fingerprint)
}
