//! Group commit: every write the coordinator makes to its jobs and every
//! entry it appends to its ledger goes through one writer thread, which
//! takes all the groups waiting and commits them in one SQLite transaction,
//! so one `fsync` serves them all. Each caller's group is atomic (a job's
//! end and the ledger entries that record it are written together or not
//! at all), and each caller learns when its own group is durable.
//!
//! Why a thread of its own: SQLite blocks, and a commit waits for the disk
//! (`synchronous = FULL`: a few milliseconds). While it waits, the next
//! groups queue, and go together in the next transaction: the busier the
//! coordinator, the more groups share one `fsync`. A group is acknowledged
//! only once its transaction has committed, so durability is as before.
//!
//! Ledger entries are sealed here, in commit order, after the last entry
//! committed: sequence numbers and the hash chain follow the order in which
//! entries reach the disk. The chain's head in memory moves only once a
//! transaction has committed. A batch whose transaction fails is retried
//! one group at a time, each sealed afresh after the last committed entry,
//! so a group that cannot be written fails alone, leaves no gap in the
//! chain, and loses no other caller's write.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use jointscore_audit::Event;
use tokio::sync::oneshot;

use crate::error::{CoordinatorError, Result};
use crate::ledger::{Chain, now_ms};
use crate::store::{JobStore, Write};

/// Most groups committed in one transaction: bounds a transaction's size
/// (a decision's end carries its encrypted result, ~180 KB).
const BATCH_LIMIT: usize = 64;

/// Writes and ledger events that are committed together, or not at all.
#[derive(Clone, Debug, Default)]
pub(crate) struct Group {
    writes: Vec<Write>,
    events: Vec<Event>,
}

impl Group {
    /// Adds a write.
    pub(crate) fn write(mut self, write: Write) -> Group {
        self.writes.push(write);
        self
    }

    /// Adds writes.
    pub(crate) fn writes(mut self, writes: impl IntoIterator<Item = Write>) -> Group {
        self.writes.extend(writes);
        self
    }

    /// Adds a ledger event, dated now unless it carries its time. (Without
    /// a ledger, events are dropped.)
    pub(crate) fn event(mut self, mut event: Event) -> Group {
        if event.time_ms == 0 {
            event.time_ms = now_ms();
        }
        self.events.push(event);
        self
    }

    /// This group's writes and events, then `other`'s.
    pub(crate) fn merge(mut self, other: Group) -> Group {
        self.writes.extend(other.writes);
        self.events.extend(other.events);
        self
    }

    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty()
    }
}

/// A group submitted, to await its commit.
#[must_use = "a ticket says when (and whether) the group was committed"]
pub(crate) struct Ticket(oneshot::Receiver<Result<()>>);

impl Ticket {
    /// Waits until the group is durable, or has failed.
    pub(crate) async fn wait(self) -> Result<()> {
        self.0.await.unwrap_or(Err(CoordinatorError::ShuttingDown))
    }
}

/// A group waiting for the writer, and who waits for it.
struct Pending {
    group: Group,
    done: oneshot::Sender<Result<()>>,
}

impl Pending {
    fn answer(self, outcome: Result<()>) {
        // Nobody waits for a write made in passing (a state announced, a
        // refusal recorded): its failure is logged here, once.
        if let Err(Err(e)) = self.done.send(outcome) {
            tracing::error!(error = %e, "a write to the job store or the ledger failed");
        }
    }
}

/// The handle to the writer thread; clones share it.
#[derive(Clone)]
pub(crate) struct Committer {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    /// Starts the writer over `store`, sealing ledger events into `chain`
    /// (dropping them without one). It runs until [`Committer::close`] or
    /// until every handle is dropped, committing what was queued first.
    pub(crate) fn start(store: Arc<dyn JobStore>, chain: Option<Arc<Chain>>) -> Result<Committer> {
        let (queue, pending) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("jointscore-commit".into())
            .spawn(move || write_loop(&*store, chain.as_deref(), &pending))
            .map_err(|e| CoordinatorError::Store(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Committer { inner: Arc::new(Inner { queue: Mutex::new(Some(queue)), writer: Mutex::new(Some(writer)) }) })
    }

    /// Queues `group` for the next transaction and returns at once. A
    /// ticket dropped unread still has its group committed (a failure is
    /// then logged).
    pub(crate) fn submit(&self, group: Group) -> Ticket {
        let (done, ticket) = oneshot::channel();
        let pending = Pending { group, done };
        let queue = self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = match queue.as_ref() {
            Some(queue) => queue.send(pending).err().map(|mpsc::SendError(p)| p),
            None => Some(pending),
        };
        if let Some(pending) = refused {
            let _ = pending.done.send(Err(CoordinatorError::ShuttingDown));
        }
        Ticket(ticket)
    }

    /// Queues `group` and waits until it is durable.
    pub(crate) async fn commit(&self, group: Group) -> Result<()> {
        self.submit(group).wait().await
    }

    /// Waits until every group submitted before is committed (or failed).
    pub(crate) async fn flush(&self) -> Result<()> {
        self.commit(Group::default()).await
    }

    /// Takes no group any more, commits those queued, and waits for the
    /// writer to end (blocking: at most one transaction). Later submissions
    /// fail `ShuttingDown`.
    pub(crate) fn close(&self) {
        drop(self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner).take());
        let writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

/// The writer: each turn takes every group waiting (up to [`BATCH_LIMIT`])
/// and commits them in one transaction.
fn write_loop(store: &dyn JobStore, chain: Option<&Chain>, pending: &mpsc::Receiver<Pending>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(std::iter::from_fn(|| pending.try_recv().ok()).take(BATCH_LIMIT - 1));
        let groups: Vec<&Group> = batch.iter().map(|p| &p.group).collect();
        match commit_groups(store, chain, &groups) {
            Ok(()) => batch.into_iter().for_each(|p| p.answer(Ok(()))),
            Err(e) if batch.len() == 1 => {
                if let Some(p) = batch.pop() {
                    p.answer(Err(e));
                }
            }
            Err(e) => {
                // Nothing of the batch was written: each group on its own,
                // so one that cannot be written does not fail the others.
                tracing::warn!(groups = batch.len(), error = %e, "a group commit failed; committing its groups one by one");
                for p in batch {
                    let outcome = commit_groups(store, chain, &[&p.group]);
                    p.answer(outcome);
                }
            }
        }
    }
}

/// How many times a transaction is resealed after another writer appended
/// to the ledger first, before its callers are told.
const LEDGER_RACES: usize = 16;

/// Seals the groups' events after the last committed entry and writes
/// everything in one transaction; moves the chain's head only once it has
/// committed. When the database refuses the entries because another
/// writer on the same database appended first (several front ends on one
/// PostgreSQL), the head is read back from the store and the groups are
/// sealed again after it: the chain never forks, and no group is lost.
fn commit_groups(store: &dyn JobStore, chain: Option<&Chain>, groups: &[&Group]) -> Result<()> {
    if groups.iter().all(|g| g.is_empty()) {
        return Ok(());
    }
    let mut races = 0;
    loop {
        let (entries, last) = match chain {
            Some(chain) => chain.seal(groups.iter().flat_map(|g| &g.events))?,
            None => (Vec::new(), None),
        };
        let writes: Vec<&Write> = groups.iter().flat_map(|g| &g.writes).chain(&entries).collect();
        match store.commit(&writes) {
            Ok(()) => {
                if let (Some(chain), Some(last)) = (chain, last) {
                    chain.advance(last);
                }
                return Ok(());
            }
            Err(CoordinatorError::LedgerRace(why)) if races < LEDGER_RACES => {
                races += 1;
                // A moment's pause, growing, so the writers that collided
                // do not collide again at once.
                std::thread::sleep(std::time::Duration::from_micros(250 * races as u64));
                tracing::debug!(%why, races, "another writer appended to the ledger first; resealing");
                if let Some(chain) = chain {
                    chain.catch_up(store)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jointscore_audit::{Entry, EntryKind, verify_chain, verify_with_head};
    use jointscore_circuits::PlanKind;
    use jointscore_identity::{Consortium, NodeKey};

    use super::*;
    use crate::job::{Attestation, NewJob};
    use crate::ledger::Ledger;
    use crate::store::{Inserted, SqliteStore};

    /// A store whose first commit waits until the test opens the gate, so
    /// everything submitted meanwhile queues into the next batch; it counts
    /// commits.
    struct Gated {
        inner: SqliteStore,
        open: Mutex<bool>,
        opened: Condvar,
        commits: AtomicUsize,
    }

    impl Gated {
        fn new(inner: SqliteStore) -> Arc<Gated> {
            Arc::new(Gated { inner, open: Mutex::new(false), opened: Condvar::new(), commits: AtomicUsize::new(0) })
        }

        fn open(&self) {
            *self.open.lock().expect("gate") = true;
            self.opened.notify_all();
        }
    }

    /// Every call but `commit` goes straight to the SQLite store.
    macro_rules! forward {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
            $(fn $name(&self, $($arg: $ty),*) -> $ret { self.inner.$name($($arg),*) })*
        };
    }

    impl JobStore for Gated {
        fn commit(&self, writes: &[&Write]) -> Result<()> {
            let mut open = self.open.lock().expect("gate");
            while !*open {
                open = self.opened.wait(open).expect("gate");
            }
            drop(open);
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.inner.commit(writes)
        }
        forward! {
            put_party(name: &str, address: &str) -> Result<()>;
            party_address(name: &str) -> Result<Option<String>>;
            key_registration(key_id: &str) -> Result<Option<(String, crate::keys::SignedRegistration)>>;
            public_key(key_id: &str) -> Result<Option<Vec<u8>>>;
            evaluation_key(key_id: &str) -> Result<Option<Vec<u8>>>;
            put_model(model_id: &str, toml: &str) -> Result<()>;
            model(model_id: &str) -> Result<Option<String>>;
            insert_job(job: &NewJob) -> Result<Inserted>;
            job(job_id: &str) -> Result<Option<crate::job::JobRecord>>;
            job_by_request(request_id: &str) -> Result<Option<crate::job::JobRecord>>;
            kept_contributions(job_id: &str) -> Result<Vec<crate::store::KeptContribution>>;
            result(job_id: &str) -> Result<Option<Vec<u8>>>;
            unfinished() -> Result<Vec<crate::job::JobRecord>>;
            claim_job(worker: &str, lease_ms: u64) -> Result<Option<crate::job::JobRecord>>;
            renew_lease(job_id: &str, worker: &str, lease_ms: u64) -> Result<bool>;
            unclaimable(limit: usize) -> Result<Vec<(String, String)>>;
            parties() -> Result<Vec<(String, String)>>;
            key_owner(key_id: &str) -> Result<Option<String>>;
            ledger(from_seq: u64, limit: usize) -> Result<Vec<String>>;
            last_ledger() -> Result<Option<String>>;
            insert_stats_job(job: &crate::job::NewStatsJob) -> Result<Inserted<crate::job::StatsJobRecord>>;
            stats_job(job_id: &str) -> Result<Option<crate::job::StatsJobRecord>>;
            stats_job_by_request(request_id: &str) -> Result<Option<crate::job::StatsJobRecord>>;
            start_stats_job(job_id: &str) -> Result<()>;
            unfinished_stats() -> Result<Vec<crate::job::StatsJobRecord>>;
        }
        fn put_key_set(
            &self,
            key_id: &str,
            lender: &str,
            signed: &crate::keys::SignedRegistration,
            public: &[u8],
            evaluation: &[u8],
        ) -> Result<()> {
            self.inner.put_key_set(key_id, lender, signed, public, evaluation)
        }
        fn end_stats_job(
            &self,
            job_id: &str,
            outcome: &crate::job::StatsOutcome,
            failure: Option<(i32, &str)>,
        ) -> Result<()> {
            self.inner.end_stats_job(job_id, outcome, failure)
        }
    }

    /// A coordinator key and the consortium that lists it, as `audit
    /// verify` reads it.
    fn coordinator() -> (NodeKey, Consortium) {
        let key = NodeKey::generate();
        let text = format!(
            "name = \"commit-test\"\n[[member]]\nname = \"coordinator\"\nrole = \"coordinator\"\npublic_key = \"{}\"\n",
            key.public_hex()
        );
        (key, Consortium::from_toml(&text).expect("consortium"))
    }

    fn new_job(request_id: &str) -> NewJob {
        NewJob {
            request_id: request_id.into(),
            key_id: "k".into(),
            model_id: "m".into(),
            subject: "s".into(),
            plan: PlanKind::Pushdown,
            absent: Vec::new(),
            attestation: Attestation::default(),
        }
    }

    /// A decision accepted: the job and its ledger entry, as `decide`
    /// commits them.
    fn accepted(request_id: &str) -> Group {
        let job_id = crate::store::job_id_for(request_id);
        Group::default().write(Write::InsertJob { job_id: job_id.clone(), job: new_job(request_id) }).event(Event {
            kind: EntryKind::DecisionRequest,
            job_id: Some(job_id),
            detail: format!("request {request_id}"),
            ..Event::default()
        })
    }

    fn ledger_of(store: &dyn JobStore) -> Vec<Entry> {
        store.ledger(0, 10_000).expect("read").iter().map(|j| Entry::from_json(j).expect("entry")).collect()
    }

    fn start(store: Arc<dyn JobStore>, key: NodeKey) -> (Committer, Ledger) {
        let chain = Arc::new(Chain::open(key, &*store).expect("chain"));
        let commits = Committer::start(store.clone(), Some(chain.clone())).expect("writer");
        (commits.clone(), Ledger::new(chain, commits, store))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_groups_share_one_transaction_and_the_chain_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gated = Gated::new(SqliteStore::open(&dir.path().join("c.sqlite")).expect("open"));
        let (key, consortium) = coordinator();
        let (commits, ledger) = start(gated.clone(), key);
        // The first group holds the writer at the gate; 63 callers on other
        // tasks submit theirs meanwhile, each with two entries.
        let first = commits.submit(accepted("r-0"));
        let (ready, mut submitted) = tokio::sync::mpsc::unbounded_channel();
        let tasks: Vec<_> = (1..64)
            .map(|i| {
                let (commits, ready) = (commits.clone(), ready.clone());
                tokio::spawn(async move {
                    let job_id = crate::store::job_id_for(&format!("r-{i}"));
                    let group = accepted(&format!("r-{i}")).event(Event {
                        kind: EntryKind::Refusal,
                        job_id: Some(job_id),
                        detail: "the group's second entry".into(),
                        ..Event::default()
                    });
                    let ticket = commits.submit(group);
                    ready.send(()).expect("test alive");
                    ticket.wait().await
                })
            })
            .collect();
        for _ in 1..64 {
            submitted.recv().await.expect("submitted");
        }
        gated.open();
        first.wait().await.expect("first group");
        for task in tasks {
            task.await.expect("task").expect("each caller's own commit");
        }
        assert!(gated.commits.load(Ordering::SeqCst) <= 2, "64 groups in at most two transactions");
        let entries = ledger_of(&*gated);
        assert_eq!(entries.len(), 1 + 63 * 2);
        verify_chain(&entries, &consortium).expect("audit verify accepts the chain");
        let head = ledger.read(0, |_| Ok(())).expect("head");
        verify_with_head(&entries, &head, &consortium).expect("the head covers every entry");
        // Each group's entries are together, in the order it gave them.
        for pair in entries[1..].chunks(2) {
            assert_eq!((pair[0].record.kind, pair[1].record.kind), (EntryKind::DecisionRequest, EntryKind::Refusal));
            assert_eq!(pair[0].record.job_id, pair[1].record.job_id);
        }
        for i in 0..64 {
            assert!(gated.job_by_request(&format!("r-{i}")).expect("read").is_some(), "job r-{i} stored");
        }
        commits.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_fails_one_group_and_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gated = Gated::new(SqliteStore::open(&dir.path().join("c.sqlite")).expect("open"));
        let (key, consortium) = coordinator();
        let (commits, ledger) = start(gated.clone(), key);
        let held = commits.submit(accepted("r-0"));
        // In the next batch: two good groups around one whose insert breaks
        // the store's rule (a request id taken), which fails the batch's
        // transaction.
        let a = commits.submit(accepted("r-1"));
        let bad = commits.submit(accepted("r-0"));
        let b = commits.submit(accepted("r-2"));
        gated.open();
        held.wait().await.expect("held");
        a.wait().await.expect("a good group is committed");
        let e = bad.wait().await.expect_err("the bad group fails");
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        b.wait().await.expect("a good group is committed");
        ledger
            .append(Event { kind: EntryKind::Refusal, detail: "after".into(), ..Event::default() })
            .await
            .expect("append");
        let entries = ledger_of(&*gated);
        // r-0, r-1, r-2 and the last: no entry of the failed group, no gap.
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(
            entries.iter().map(|e| e.record.detail.as_str()).collect::<Vec<_>>(),
            ["request r-0", "request r-1", "request r-2", "after"]
        );
        verify_chain(&entries, &consortium).expect("audit verify accepts the chain");
        let head = ledger.read(0, |_| Ok(())).expect("head");
        verify_with_head(&entries, &head, &consortium).expect("the head is the committed chain's");
        commits.close();
        let refused = commits.commit(accepted("r-9")).await.expect_err("closed");
        assert!(matches!(refused, CoordinatorError::ShuttingDown), "{refused}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_keeps_every_acknowledged_group_and_a_chain_that_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        let store: Arc<dyn JobStore> = Arc::new(SqliteStore::open(&path).expect("open"));
        let (key, consortium) = coordinator();
        let key_path = dir.path().join("coordinator.key");
        key.write(&key_path, false).expect("key");
        let (commits, _ledger) = start(store.clone(), key);
        let acknowledged: Vec<String> = (0..20).map(|i| format!("r-{i}")).collect();
        for chunk in acknowledged.chunks(5) {
            let tickets: Vec<_> = chunk.iter().map(|r| commits.submit(accepted(r))).collect();
            for ticket in tickets {
                ticket.wait().await.expect("acknowledged");
            }
        }
        // More groups in flight when the machine stops: the files as they
        // are on disk at that moment (the database and its write-ahead log,
        // a transaction perhaps half written) are all a restart finds.
        let in_flight: Vec<_> = (20..40).map(|i| commits.submit(accepted(&format!("r-{i}")))).collect();
        let crashed = dir.path().join("crashed.sqlite");
        for suffix in ["", "-wal"] {
            let from = format!("{}{suffix}", path.display());
            if std::path::Path::new(&from).exists() {
                std::fs::copy(&from, format!("{}{suffix}", crashed.display())).expect("copy");
            }
        }
        drop(in_flight);

        let restarted = SqliteStore::open(&crashed).expect("reopen");
        for r in &acknowledged {
            assert!(restarted.job_by_request(r).expect("read").is_some(), "acknowledged {r} survived");
        }
        let entries = ledger_of(&restarted);
        assert!(entries.len() >= acknowledged.len());
        verify_chain(&entries, &consortium).expect("audit verify accepts what survived");
        // Every surviving entry's job survived with it (one transaction).
        for entry in &entries {
            let job_id = entry.record.job_id.as_deref().expect("job");
            assert!(restarted.job(job_id).expect("read").is_some(), "{job_id}: entry and job together");
        }
        commits.close();
        // The ledger goes on after what survived, under the same key.
        let restarted: Arc<dyn JobStore> = Arc::new(restarted);
        let (commits, ledger) = start(restarted.clone(), NodeKey::read(&key_path).expect("key"));
        ledger
            .append(Event { kind: EntryKind::Refusal, detail: "after".into(), ..Event::default() })
            .await
            .expect("append");
        let after = ledger_of(&*restarted);
        assert_eq!(after.len(), entries.len() + 1);
        verify_chain(&after, &consortium).expect("the chain goes on unbroken");
        commits.close();
    }

    /// One front end: its store, writer and ledger.
    type FrontEnd = (Arc<dyn JobStore>, Committer, Ledger);

    /// Front ends on one PostgreSQL database: each its own store, chain
    /// (under the coordinators' one identity key) and writer. `None` when
    /// no server answers (the test then skips, saying so).
    fn front_ends(test: &str, n: usize) -> Option<(crate::store::TestDatabase, Vec<FrontEnd>, Consortium)> {
        let db = crate::store::TestDatabase::create(test)?;
        let (key, consortium) = coordinator();
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("coordinator.key");
        key.write(&key_path, false).expect("key");
        let nodes = (0..n)
            .map(|_| {
                let store: Arc<dyn JobStore> = Arc::new(db.open().expect("open"));
                let (commits, ledger) = start(store.clone(), NodeKey::read(&key_path).expect("key"));
                (store, commits, ledger)
            })
            .collect();
        Some((db, nodes, consortium))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_front_ends_accepting_the_same_request_ids_at_once_make_one_job_each() {
        let Some((_db, nodes, consortium)) = front_ends("same_request_id", 2) else { return };
        // Both front ends accept the same 40 request ids at the same time,
        // as two replicas behind a load balancer would when a lender
        // retries through the other one.
        let requests: Vec<String> = (0..40).map(|i| format!("r-{i}")).collect();
        let mut tasks = Vec::new();
        for (_, commits, _) in &nodes {
            for r in &requests {
                let (commits, r) = (commits.clone(), r.clone());
                tasks.push(tokio::spawn(async move { (r.clone(), commits.commit(accepted(&r)).await.is_ok()) }));
            }
        }
        let mut accepted_by = std::collections::HashMap::<String, usize>::new();
        for task in tasks {
            let (r, ok) = task.await.expect("task");
            *accepted_by.entry(r).or_default() += usize::from(ok);
        }
        // The one that lost its insert finds the winner's job.
        for r in &requests {
            assert_eq!(accepted_by.get(r), Some(&1), "{r}: exactly one front end's insert won");
            assert!(nodes[1].0.job_by_request(r).expect("read").is_some());
        }
        // Through the store's own insert too: eight callers on two front
        // ends, one request id, one new job.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = nodes[i % 2].0.clone();
                std::thread::spawn(move || matches!(store.insert_job(&new_job("r-insert")), Ok(Inserted::New(_))))
            })
            .collect();
        let new = racers.into_iter().map(|t| usize::from(t.join().expect("thread"))).sum::<usize>();
        assert_eq!(new, 1, "one caller made the job, the others found it");
        // One ledger entry per request, in one chain that verifies.
        let entries = ledger_of(&*nodes[0].0);
        assert_eq!(entries.len(), requests.len());
        let mut recorded: Vec<String> = entries.iter().map(|e| e.record.detail.clone()).collect();
        recorded.sort();
        recorded.dedup();
        assert_eq!(recorded.len(), requests.len(), "no request recorded twice");
        verify_chain(&entries, &consortium).expect("audit verify accepts the chain");
        for (_, commits, _) in &nodes {
            commits.close();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn front_ends_on_one_database_append_to_one_ledger_that_never_forks() {
        let Some((_db, nodes, consortium)) = front_ends("ledger_no_fork", 3) else { return };
        // Three writers, each sealing after the head it last saw, append
        // 3 x 60 entries at once; the database refuses every fork and the
        // writer that lost reseals after the new head.
        let mut tasks = Vec::new();
        for (n, (_, commits, _)) in nodes.iter().enumerate() {
            for i in 0..60 {
                let commits = commits.clone();
                tasks.push(tokio::spawn(async move {
                    let event = Event {
                        kind: EntryKind::Refusal,
                        detail: format!("front end {n}, entry {i}"),
                        ..Event::default()
                    };
                    commits.commit(Group::default().event(event)).await
                }));
            }
        }
        for task in tasks {
            task.await.expect("task").expect("every append is committed");
        }
        let entries = ledger_of(&*nodes[2].0);
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (0..180).collect::<Vec<u64>>());
        let mut details: Vec<&str> = entries.iter().map(|e| e.record.detail.as_str()).collect();
        details.sort_unstable();
        details.dedup();
        assert_eq!(details.len(), 180, "each entry once");
        verify_chain(&entries, &consortium).expect("one chain that verifies");
        // Every front end's head is the database's, and covers every entry.
        for (_, _, ledger) in &nodes {
            let head = ledger.read(0, |_| Ok(())).expect("head");
            verify_with_head(&entries, &head, &consortium).expect("the head covers every entry");
        }
        for (_, commits, _) in &nodes {
            commits.close();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_postgres_restart_mid_round_loses_nothing_acknowledged_and_records_each_request_once() {
        let Some(server) = crate::store::PrivateServer::start() else { return };
        let store: Arc<dyn JobStore> = Arc::new(crate::store::PgStore::open(&server.url()).expect("open"));
        let (key, consortium) = coordinator();
        let (commits, _ledger) = start(store.clone(), key);
        // Four lenders submit 40 requests each, one after another, retrying
        // a failed one with the same request id (as a lender does) until it
        // is stored; a front end that finds the job after a failed commit
        // answers it (`decide`). The server restarts meanwhile.
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let lenders: Vec<_> = (0..4)
            .map(|l| {
                let (commits, store, done, failures) = (commits.clone(), store.clone(), done.clone(), failures.clone());
                tokio::spawn(async move {
                    for i in 0..40 {
                        let r = format!("r-{l}-{i}");
                        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
                        loop {
                            if commits.commit(accepted(&r)).await.is_ok() {
                                break;
                            }
                            failures.fetch_add(1, Ordering::SeqCst);
                            let found = {
                                let (store, r) = (store.clone(), r.clone());
                                tokio::task::spawn_blocking(move || store.job_by_request(&r)).await.expect("read")
                            };
                            if matches!(found, Ok(Some(_))) {
                                break;
                            }
                            assert!(tokio::time::Instant::now() < deadline, "{r} never stored");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        while done.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let restarted = tokio::task::spawn_blocking(move || {
            let outcome = server.ctl("restart");
            (server, outcome)
        });
        let (server, outcome) = restarted.await.expect("restart");
        outcome.expect("the server restarted");
        for lender in lenders {
            lender.await.expect("every request stored");
        }
        assert_eq!(done.load(Ordering::SeqCst), 160);
        // One job and one ledger entry per request, one chain.
        let entries = ledger_of(&*store);
        let mut requests: Vec<&str> = entries.iter().map(|e| e.record.detail.as_str()).collect();
        requests.sort_unstable();
        requests.dedup();
        assert_eq!((entries.len(), requests.len()), (160, 160), "each request recorded once");
        verify_chain(&entries, &consortium).expect("one chain that verifies");
        for l in 0..4 {
            for i in 0..40 {
                assert!(store.job_by_request(&format!("r-{l}-{i}")).expect("read").is_some());
            }
        }
        assert_eq!(store.unfinished().expect("read").len(), 160, "every job accepted, none lost");
        eprintln!("commits that failed while the server restarted: {}", failures.load(Ordering::SeqCst));
        commits.close();
        drop(server);
    }
}
