//! The store's tests, one suite run against both implementations: each
//! test below is a function of a [`Harness`] (a store that can be opened,
//! closed and opened again), and [`both!`] makes it a test on SQLite and a
//! test on PostgreSQL. The PostgreSQL ones run against
//! `JOINTSCORE_TEST_POSTGRES` (default: the local server), each on a fresh
//! schema that is dropped after it; without a server they say so in one
//! line and pass, unless `CI=true`, where they fail.

use std::sync::Arc;

use jointscore_circuits::PlanKind;
use rusqlite::Connection;

use super::*;
use crate::job::{Attestation, JobState, NewJob, NewStatsJob, SignedContribution, StatsOutcome, Timings};
use crate::keys::SignedRegistration;

/// A store that can be opened (again): its data outlives each handle.
pub(crate) trait Harness {
    /// A new handle on the store.
    fn open(&self) -> Arc<dyn JobStore>;
    /// Runs SQL on the store's database directly (a test's tampering).
    fn sql(&self, sql: &str) -> Result<()>;
    /// Which store.
    fn is_sqlite(&self) -> bool;
}

/// A SQLite file in a temporary directory.
pub(crate) struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub(crate) fn new() -> Sqlite {
        Sqlite { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("c.sqlite")
    }
}

impl Harness for Sqlite {
    fn open(&self) -> Arc<dyn JobStore> {
        Arc::new(SqliteStore::open(&self.path()).expect("open"))
    }
    fn sql(&self, sql: &str) -> Result<()> {
        Ok(Connection::open(self.path())?.execute_batch(sql)?)
    }
    fn is_sqlite(&self) -> bool {
        true
    }
}

/// A fresh schema on the test PostgreSQL server.
pub(crate) struct Postgres {
    db: TestDatabase,
}

impl Postgres {
    /// `None` (after one line saying so) when no server answers.
    pub(crate) fn new(test: &str) -> Option<Postgres> {
        TestDatabase::create(test).map(|db| Postgres { db })
    }
}

impl Harness for Postgres {
    fn open(&self) -> Arc<dyn JobStore> {
        Arc::new(self.db.open().expect("open"))
    }
    fn sql(&self, sql: &str) -> Result<()> {
        self.db.sql(sql)
    }
    fn is_sqlite(&self) -> bool {
        false
    }
}

/// Each named test function, once on SQLite and once on PostgreSQL.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(&super::Sqlite::new()); })*
        }
        mod on_postgres {
            $(#[test] fn $name() {
                if let Some(h) = super::Postgres::new(stringify!($name)) { super::$name(&h); }
            })*
        }
    };
}

both! {
    contributions_are_kept_while_a_job_runs_and_dropped_when_it_ends,
    a_closed_store_refuses_every_call_and_keeps_what_it_held,
    jobs_are_idempotent_durable_and_end_once,
    registry_round_trips,
    stats_jobs_are_idempotent_durable_and_end_once,
    migrations_are_recorded_and_reopening_is_a_no_op,
    a_store_from_a_newer_version_is_refused,
    the_database_refuses_a_ledger_entry_that_forks_or_rewrites_the_chain,
    a_lease_that_runs_out_is_claimed_again_and_the_stale_worker_writes_nothing,
    concurrent_claimers_never_get_the_same_job,
    a_worker_refuses_a_job_accepted_under_another_tfhe_build_naming_it,
}

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

fn contributions_are_kept_while_a_job_runs_and_dropped_when_it_ends(h: &dyn Harness) {
    let store = h.open();
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

fn a_closed_store_refuses_every_call_and_keeps_what_it_held(h: &dyn Harness) {
    let store = h.open();
    let Inserted::New(job) = store.insert_job(&new_job("r1")).expect("insert") else { panic!("new") };
    store.set_state(&job.job_id, JobState::Evaluating).expect("state");
    store.close().expect("close");
    store.close().expect("closing twice is a no-op");
    let refused = store.set_state(&job.job_id, JobState::Collecting).expect_err("closed");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    // An interrupted job is still unfinished, for the next start.
    let store = h.open();
    let unfinished = store.unfinished().expect("unfinished");
    assert_eq!(
        unfinished.iter().map(|j| (&j.job_id, j.state)).collect::<Vec<_>>(),
        [(&job.job_id, JobState::Evaluating)]
    );
}

fn jobs_are_idempotent_durable_and_end_once(h: &dyn Harness) {
    let store = h.open();
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

    let store = h.open();
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

fn registry_round_trips(h: &dyn Harness) {
    let store = h.open();
    store.put_party("bank", "http://a").expect("put");
    store.put_party("bank", "http://b").expect("move");
    assert_eq!(store.party_address("bank").expect("read").as_deref(), Some("http://b"));
    assert_eq!(store.party_address("platform").expect("read"), None);
    store.put_key_set("k1", "lender", &SignedRegistration::default(), b"pk", b"ek").expect("put");
    assert_eq!(store.public_key("k1").expect("read").as_deref(), Some(&b"pk"[..]));
    assert_eq!(store.evaluation_key("k1").expect("read").as_deref(), Some(&b"ek"[..]));
    // A key of several chunks (PostgreSQL keeps 1 MiB a row), registered
    // again: stored once, read back whole.
    let big: Vec<u8> = (0..(5 << 19) + 7).map(|i: u32| (i % 251) as u8).collect();
    store.put_key_set("k1", "lender", &SignedRegistration::default(), b"pk", &big).expect("put");
    store.put_key_set("k1", "lender", &SignedRegistration::default(), b"pk", &big).expect("again");
    assert_eq!(store.evaluation_key("k1").expect("read").as_deref(), Some(&big[..]));
    assert_eq!(store.evaluation_key("k2").expect("read"), None);
    assert_eq!(store.key_owner("k1").expect("read").as_deref(), Some("lender"));
    assert_eq!(store.public_key("k2").expect("read"), None);
    store.put_model("m", "toml").expect("put");
    assert_eq!(store.model("m").expect("read").as_deref(), Some("toml"));
    store.put_party("aardvark", "http://c").expect("put");
    assert_eq!(
        store.parties().expect("read"),
        [("aardvark".to_string(), "http://c".to_string()), ("bank".into(), "http://b".into())]
    );
}

fn stats_jobs_are_idempotent_durable_and_end_once(h: &dyn Harness) {
    use crate::job::{DroppedParty, StatsEntry};
    let store = h.open();
    let new = NewStatsJob {
        request_id: "q1".into(),
        spec_id: "s".into(),
        spec_toml: "name = \"x\"".into(),
        owner: Some("lender".into()),
    };
    let Inserted::New(a) = store.insert_stats_job(&new).expect("insert") else { panic!("expected new") };
    assert_eq!((a.state, a.outcome.clone()), (JobState::Accepted, StatsOutcome::default()));
    let Inserted::Existing(again) = store.insert_stats_job(&new).expect("insert") else { panic!("expected existing") };
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
        dropped: vec![DroppedParty { party: "logistics".into(), step: "masked_input".into(), reason: "gone".into() }],
        round_us: 12,
    };
    store.end_stats_job(&a.job_id, &outcome, None).expect("end");
    // A finished job never moves again.
    store.end_stats_job(&a.job_id, &StatsOutcome::default(), Some((14, "late"))).expect("no-op");
    store.start_stats_job(&a.job_id).expect("no-op");
    drop(store);

    let store = h.open();
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

fn migrations_are_recorded_and_reopening_is_a_no_op(h: &dyn Harness) {
    let store = h.open();
    store.put_party("bank", "http://a").expect("put");
    drop(store);
    let store = h.open();
    assert_eq!(store.party_address("bank").expect("read").as_deref(), Some("http://a"));
    // Every version is recorded once: count them through a table only a
    // migration writes.
    let versions: Vec<i64> = migrations::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(versions, (migrations::OLDEST..=migrations::latest()).collect::<Vec<_>>(), "consecutive");
    let listed = versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    // A version row missing or doubled makes this insert-select differ.
    h.sql(&format!(
        "CREATE TABLE migration_check AS SELECT COUNT(*) AS n, COUNT(DISTINCT version) AS d FROM schema_migrations \
         WHERE version IN ({listed})"
    ))
    .expect("check");
    h.sql(
        "INSERT INTO parties (name, address, updated_ms) SELECT 'versions', CAST(n AS TEXT) || '/' || CAST(d AS TEXT), 0 \
         FROM migration_check",
    )
    .expect("count");
    let n = versions.len();
    assert_eq!(store.party_address("versions").expect("read"), Some(format!("{n}/{n}")));
}

fn a_store_from_a_newer_version_is_refused(h: &dyn Harness) {
    drop(h.open());
    let newer = migrations::latest() + 1;
    h.sql(&format!("INSERT INTO schema_migrations (version, name, applied_ms) VALUES ({newer}, 'from the future', 0)"))
        .expect("newer");
    if h.is_sqlite() {
        h.sql(&format!("PRAGMA user_version = {newer}")).expect("newer");
    }
    let refused = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.open())) {
        Ok(_) => panic!("a newer store opened"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_default(),
    };
    assert!(refused.contains("newer jointscore") && refused.contains(&newer.to_string()), "{refused}");
}

/// Seals `n` test entries after `after` (or genesis), as the coordinator does.
fn sealed(after: Option<&jointscore_audit::Entry>, n: usize) -> Vec<jointscore_audit::Entry> {
    let key = jointscore_identity::NodeKey::generate();
    let mut last = after.cloned();
    (0..n)
        .map(|i| {
            let event = jointscore_audit::Event {
                kind: jointscore_audit::EntryKind::Refusal,
                detail: format!("entry {i}"),
                time_ms: 1,
                ..jointscore_audit::Event::default()
            };
            let entry = jointscore_audit::Entry::seal(event, last.as_ref(), &key);
            last = Some(entry.clone());
            entry
        })
        .collect()
}

fn ledger_write(entry: &jointscore_audit::Entry) -> Write {
    Write::Ledger { seq: entry.seq, prev: entry.prev.clone(), hash: entry.hash.clone(), entry: entry.to_json() }
}

fn the_database_refuses_a_ledger_entry_that_forks_or_rewrites_the_chain(h: &dyn Harness) {
    let store = h.open();
    let first = sealed(None, 2);
    // An entry 0 that does not start at genesis, and an entry 1 with no
    // entry 0 before it, are refused.
    let mut orphan = first[1].clone();
    orphan.seq = 0;
    assert!(matches!(store.commit(&[&ledger_write(&orphan)]), Err(CoordinatorError::LedgerRace(_))));
    assert!(matches!(store.commit(&[&ledger_write(&first[1])]), Err(CoordinatorError::LedgerRace(_))));
    store.commit(&[&ledger_write(&first[0]), &ledger_write(&first[1])]).expect("a chain");
    // Two writers that sealed after the same entry: the second fails, and
    // nothing of its transaction is written.
    let ours = sealed(Some(&first[1]), 1);
    let theirs = sealed(Some(&first[1]), 1);
    store.commit(&[&ledger_write(&ours[0])]).expect("first writer");
    let job = Write::InsertJob { job_id: job_id_for("r-race"), job: new_job("r-race") };
    let refused = store.commit(&[&job, &ledger_write(&theirs[0])]).expect_err("a fork");
    assert!(matches!(refused, CoordinatorError::LedgerRace(_)), "{refused}");
    assert!(store.job_by_request("r-race").expect("read").is_none(), "the job write went with it");
    // An entry after the wrong previous hash is refused too.
    let mut skewed = sealed(Some(&ours[0]), 1).remove(0);
    skewed.prev = first[0].hash.clone();
    assert!(matches!(store.commit(&[&ledger_write(&skewed)]), Err(CoordinatorError::LedgerRace(_))));
    // Entries are never rewritten or deleted.
    assert!(h.sql("UPDATE ledger SET entry = 'x' WHERE seq = 0").is_err(), "append-only");
    assert!(h.sql("DELETE FROM ledger WHERE seq = 2").is_err(), "append-only");
    let held: Vec<String> = store.ledger(0, 10).expect("read");
    assert_eq!(held, [first[0].to_json(), first[1].to_json(), ours[0].to_json()]);
    assert_eq!(store.last_ledger().expect("read"), Some(ours[0].to_json()));
}

#[test]
fn a_version_2_sqlite_store_is_migrated_in_place_and_its_ledger_chained() {
    let h = Sqlite::new();
    let entries = sealed(None, 3);
    {
        // The schema as the previous release left it: version 2, no
        // record of migrations, ledger entries without their hashes.
        let conn = Connection::open(h.path()).expect("open");
        conn.execute_batch(migrations::MIGRATIONS[0].sqlite).expect("v2");
        conn.execute_batch("PRAGMA user_version = 2").expect("v2");
        for e in &entries {
            conn.execute(
                "INSERT INTO ledger (seq, entry) VALUES (?1, ?2)",
                rusqlite::params![e.seq as i64, e.to_json()],
            )
            .expect("entry");
        }
    }
    let store = h.open();
    assert_eq!(store.last_ledger().expect("read"), Some(entries[2].to_json()));
    // The chain continues after the old entries, and only there.
    let next = sealed(Some(&entries[2]), 1);
    let fork = sealed(Some(&entries[1]), 1);
    assert!(matches!(store.commit(&[&ledger_write(&fork[0])]), Err(CoordinatorError::LedgerRace(_))));
    store.commit(&[&ledger_write(&next[0])]).expect("continues");
    let conn = Connection::open(h.path()).expect("open");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    let recorded: i64 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).expect("record");
    assert_eq!((version, recorded), (migrations::latest(), migrations::latest() - 1));
}

fn a_lease_that_runs_out_is_claimed_again_and_the_stale_worker_writes_nothing(h: &dyn Harness) {
    let store = h.open();
    let ids: Vec<String> = (1..=3)
        .map(|i| match store.insert_job(&new_job(&format!("r{i}"))).expect("insert") {
            Inserted::New(j) => j.job_id,
            Inserted::Existing(_) => panic!("new"),
        })
        .collect();
    // Oldest first, never one that a live lease holds.
    let a = store.claim_job("worker-a", 60_000).expect("claim").expect("a job");
    let b = store.claim_job("worker-b", 60_000).expect("claim").expect("a job");
    assert_eq!((a.job_id.as_str(), b.job_id.as_str()), (ids[0].as_str(), ids[1].as_str()));
    assert!(store.renew_lease(&a.job_id, "worker-a", 60_000).expect("renew"), "a holds its job");
    assert!(!store.renew_lease(&a.job_id, "worker-b", 60_000).expect("renew"), "b does not hold a's job");
    // Worker c stops heartbeating (it was killed): its lease runs out and
    // worker d claims the job.
    let c = store.claim_job("worker-c", 1).expect("claim").expect("a job");
    assert_eq!(c.job_id, ids[2]);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let d = store.claim_job("worker-d", 60_000).expect("claim").expect("the job c let go");
    assert_eq!(d.job_id, ids[2]);
    assert!(store.claim_job("worker-e", 60_000).expect("claim").is_none(), "every job is leased");
    assert!(!store.renew_lease(&c.job_id, "worker-c", 60_000).expect("renew"), "c has lost it");
    // d writes the end, with its ledger entry; c, late, writes nothing.
    let entry = sealed(None, 1).remove(0);
    let end = |worker: &str, entry: &jointscore_audit::Entry| {
        store.commit(&[
            &Write::Fence { job_id: ids[2].clone(), worker: worker.into() },
            &Write::Complete {
                job_id: ids[2].clone(),
                result: worker.as_bytes().to_vec(),
                timings: Timings::default(),
                contributions: Vec::new(),
            },
            &ledger_write(entry),
        ])
    };
    let late = end("worker-c", &entry).expect_err("c is fenced off");
    assert!(matches!(late, CoordinatorError::LeaseLost(_)), "{late}");
    end("worker-d", &entry).expect("d ends the job");
    let again = end("worker-d", &sealed(Some(&entry), 1).remove(0)).expect_err("ended once");
    assert!(matches!(again, CoordinatorError::LeaseLost(_)), "{again}");
    assert_eq!(store.result(&ids[2]).expect("read").as_deref(), Some(&b"worker-d"[..]));
    assert_eq!(store.ledger(0, 10).expect("read").len(), 1, "one ledger entry");
    assert!(!store.renew_lease(&ids[2], "worker-d", 60_000).expect("renew"), "an ended job holds no lease");
}

fn concurrent_claimers_never_get_the_same_job(h: &dyn Harness) {
    let store = h.open();
    for i in 0..40 {
        store.insert_job(&new_job(&format!("r{i}"))).expect("insert");
    }
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let store = h.open();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(job) = store.claim_job(&format!("worker-{w}"), 60_000).expect("claim") {
                    got.push(job.job_id);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<String> = claimers.into_iter().flat_map(|t| t.join().expect("claimer")).collect();
    assert_eq!(all.len(), 40, "every job claimed once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "no job claimed twice");
}

fn a_worker_refuses_a_job_accepted_under_another_tfhe_build_naming_it(h: &dyn Harness) {
    let store = h.open();
    let Inserted::New(ours) = store.insert_job(&new_job("r-ours")).expect("insert") else { panic!("new") };
    let Inserted::New(theirs) = store.insert_job(&new_job("r-theirs")).expect("insert") else { panic!("new") };
    // Accepted by a front end of another build, and one from before
    // builds were recorded (any worker takes it).
    h.sql(&format!("UPDATE jobs SET evaluation = 'tfhe 9.9.9; OTHER_PARAMS 0123' WHERE job_id = '{}'", theirs.job_id))
        .expect("foreign");
    let Inserted::New(old) = store.insert_job(&new_job("r-old")).expect("insert") else { panic!("new") };
    h.sql(&format!("UPDATE jobs SET evaluation = '' WHERE job_id = '{}'", old.job_id)).expect("old");
    let mine = evaluation();
    assert!(mine.starts_with("tfhe ") && mine.contains("PARAM_MESSAGE_2_CARRY_2_KS_PBS"), "{mine}");
    let first = store.claim_job("w", 60_000).expect("claim").expect("ours");
    let second = store.claim_job("w", 60_000).expect("claim").expect("the old one");
    assert_eq!((first.job_id.as_str(), second.job_id.as_str()), (ours.job_id.as_str(), old.job_id.as_str()));
    assert!(store.claim_job("w", 60_000).expect("claim").is_none(), "the foreign job is not claimed");
    assert_eq!(
        store.unclaimable(10).expect("read"),
        [(theirs.job_id.clone(), "tfhe 9.9.9; OTHER_PARAMS 0123".to_string())],
        "and it is named with what it needs"
    );
}
