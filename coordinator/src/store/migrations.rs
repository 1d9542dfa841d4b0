//! Versioned schema migrations, the same list for both stores.
//!
//! Each migration has a version, a name and its SQL in each dialect; a
//! store records the versions applied (`schema_migrations`, and SQLite's
//! `user_version` as before) and applies the missing ones at start, each
//! in one transaction with its record, in order. A store at a version this
//! build does not know (a newer jointscore wrote it) is refused rather
//! than guessed at, and so is a SQLite store from before version 2 (it is
//! refused with how to migrate, by `sqlite.rs`). Migrations only add:
//! processes of the previous version keep working on a store the next one
//! migrated, which is what lets front ends and workers be upgraded one at
//! a time ([docs/scale.md](../../../docs/scale.md)).
//!
//! Version 2 is the schema SQLite stores already had (they carry
//! `user_version = 2` and no `schema_migrations` table; opening one
//! records version 2 as applied and goes on from there).

/// One schema change.
pub(crate) struct Migration {
    /// Its version; versions increase by one.
    pub(crate) version: i64,
    /// What it does, for a person.
    pub(crate) name: &'static str,
    /// Its SQL for SQLite.
    pub(crate) sqlite: &'static str,
    /// Its SQL for PostgreSQL.
    pub(crate) postgres: &'static str,
}

/// The oldest store version this build reads.
pub(crate) const OLDEST: i64 = 2;

/// The store version this build writes: the last migration's.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Where the versions applied are recorded (both dialects).
pub(crate) const RECORD_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)";
pub(crate) const RECORD_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)";

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 2,
        name: "parties, signed key sets, models, jobs, statistics jobs, the ledger, kept contributions",
        sqlite: "
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
",
        // The evaluation key (tens of MB) is kept once, in 1 MiB rows of
        // `key_chunks`, and read back row by row: no single message or
        // value holds all of it. It is compressed already, so PostgreSQL
        // does not try to compress it again (STORAGE EXTERNAL).
        postgres: "
CREATE TABLE parties (name TEXT PRIMARY KEY, address TEXT NOT NULL, updated_ms BIGINT NOT NULL);
CREATE TABLE key_sets (
    key_id TEXT PRIMARY KEY, lender TEXT NOT NULL, public BYTEA NOT NULL, evaluation_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL, registration TEXT NOT NULL DEFAULT '{}');
CREATE TABLE key_chunks (
    key_id TEXT NOT NULL REFERENCES key_sets (key_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, bytes BYTEA NOT NULL, PRIMARY KEY (key_id, idx));
ALTER TABLE key_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE TABLE models (model_id TEXT PRIMARY KEY, toml TEXT NOT NULL);
CREATE TABLE jobs (
    seq BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL UNIQUE,
    key_id TEXT NOT NULL, model_id TEXT NOT NULL, subject TEXT NOT NULL, plan TEXT NOT NULL,
    state TEXT NOT NULL, code INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
    timings TEXT NOT NULL DEFAULT '{}', result BYTEA,
    created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
    absent TEXT NOT NULL DEFAULT '[]', contributions TEXT NOT NULL DEFAULT '[]',
    attestation TEXT NOT NULL DEFAULT '{}');
CREATE INDEX jobs_unfinished ON jobs (seq) WHERE state NOT IN ('done', 'failed');
CREATE TABLE stats_jobs (
    seq BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL UNIQUE,
    spec_id TEXT NOT NULL, spec_toml TEXT NOT NULL,
    state TEXT NOT NULL, code INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '{}',
    created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, owner TEXT);
CREATE INDEX stats_jobs_unfinished ON stats_jobs (seq) WHERE state NOT IN ('done', 'failed');
CREATE TABLE ledger (seq BIGINT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE kept_contributions (
    job_id TEXT NOT NULL, party TEXT NOT NULL, bytes BYTEA NOT NULL, signed TEXT,
    PRIMARY KEY (job_id, party));
",
    },
    Migration {
        version: 3,
        name: "the ledger's chain enforced by the database: consecutive sequence numbers, each entry after the \
               previous one's hash, append-only",
        // Existing entries get their hash and previous hash from their
        // JSON; from then on an entry that does not continue the chain (a
        // second writer sealing after the same entry) is refused.
        sqlite: "
ALTER TABLE ledger ADD COLUMN hash TEXT;
ALTER TABLE ledger ADD COLUMN prev TEXT;
UPDATE ledger SET hash = json_extract(entry, '$.hash'), prev = json_extract(entry, '$.prev');
CREATE UNIQUE INDEX ledger_seq_hash ON ledger (seq, hash);
CREATE TRIGGER ledger_chain BEFORE INSERT ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger_chain: the entry does not continue the chain')
    WHERE NEW.hash IS NULL OR NEW.prev IS NULL OR NEW.seq < 0
       OR (NEW.seq = 0 AND NEW.prev <> '0000000000000000000000000000000000000000000000000000000000000000')
       OR (NEW.seq > 0 AND NOT EXISTS (SELECT 1 FROM ledger WHERE seq = NEW.seq - 1 AND hash = NEW.prev));
END;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger_append_only: ledger entries never change');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger_append_only: ledger entries are never deleted');
END;
",
        postgres: "
ALTER TABLE ledger ADD COLUMN hash TEXT, ADD COLUMN prev TEXT;
UPDATE ledger SET hash = entry::jsonb ->> 'hash', prev = entry::jsonb ->> 'prev';
ALTER TABLE ledger
    ALTER COLUMN hash SET NOT NULL,
    ALTER COLUMN prev SET NOT NULL,
    ADD COLUMN prev_seq BIGINT GENERATED ALWAYS AS (CASE WHEN seq = 0 THEN NULL ELSE seq - 1 END) STORED,
    ADD CONSTRAINT ledger_seq_hash UNIQUE (seq, hash),
    ADD CONSTRAINT ledger_genesis CHECK (seq > 0 OR (seq = 0 AND prev = '0000000000000000000000000000000000000000000000000000000000000000')),
    ADD CONSTRAINT ledger_chain FOREIGN KEY (prev_seq, prev) REFERENCES ledger (seq, hash);
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_append_only: ledger entries never change';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
",
    },
    Migration {
        version: 4,
        name: "evaluation leases: a job's lease holder, until when, and how many times it was claimed",
        // `lease_until_ms` 0: nobody holds it. A worker claims the oldest
        // unfinished job whose lease has run out, renews its lease while
        // it works, and writes the job's end only while it still holds it
        // (`Write::Fence`).
        sqlite: "
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
",
        postgres: "
ALTER TABLE jobs
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 5,
        name: "what evaluating a job needs: the tfhe release and parameter set of the front end that accepted it",
        // '' (jobs accepted before): any worker may take them.
        sqlite: "ALTER TABLE jobs ADD COLUMN evaluation TEXT NOT NULL DEFAULT '';",
        postgres: "ALTER TABLE jobs ADD COLUMN evaluation TEXT NOT NULL DEFAULT '';",
    },
];

/// Refuses a store written by a newer build.
pub(crate) fn check_not_newer(found: i64, place: &str) -> crate::error::Result<()> {
    if found > latest() {
        return Err(crate::error::CoordinatorError::Store(format!(
            "{place} is at store version {found}, written by a newer jointscore; this one reads versions {OLDEST} to \
             {}: run the newer version (upgrade this process), never an older one, on this store",
            latest()
        )));
    }
    Ok(())
}
