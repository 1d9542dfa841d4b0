//! The coordinator's audit ledger (`jointscore-audit`): every event sealed
//! with the coordinator's identity key and appended to the job store.
//!
//! Entries are sealed by the store's writer (`commit.rs`) as it commits
//! them, so sequence numbers and the hash chain follow the order entries
//! reach the disk and never fork; many entries share one transaction. An
//! event is written in the same transaction as the job write it records
//! where there is one (a decision accepted, a job's contributions and its
//! result or refusal): a crash keeps both or neither. A key registration
//! whose entry cannot be written is answered with an error; other events
//! recorded in passing (refusals, PSI sessions, statistics rounds) log a
//! failure.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_audit::{ENTRY_LIMIT, Entry, Event, Head};
use jointscore_identity::NodeKey;

use crate::commit::{Committer, Group};
use crate::error::{CoordinatorError, Result};
use crate::store::{JobStore, Write};

/// Entries read from the store per page when the log is streamed.
pub(crate) const PAGE: usize = 512;

/// Milliseconds since the unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The chain: the signing key and the last entry committed.
pub(crate) struct Chain {
    key: NodeKey,
    last: Mutex<Option<Entry>>,
}

impl Chain {
    /// The chain the store holds, continuing after its last entry.
    pub(crate) fn open(key: NodeKey, store: &dyn JobStore) -> Result<Chain> {
        let last = store
            .last_ledger()?
            .map(|json| Entry::from_json(&json))
            .transpose()
            .map_err(|e| CoordinatorError::Store(format!("the ledger's last entry: {e}")))?;
        Ok(Chain { key, last: Mutex::new(last) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Option<Entry>>> {
        self.last.lock().map_err(|_| CoordinatorError::Store("ledger lock poisoned by an earlier panic".into()))
    }

    /// Seals `events`, in order, after the last committed entry, without
    /// moving it: the writes that append them, and the new last entry
    /// (`None` for no events). An entry too large for members to read back
    /// (`ENTRY_LIMIT`) is refused, so the log always verifies. Only the
    /// store's writer calls this and [`Chain::advance`].
    pub(crate) fn seal<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Result<(Vec<Write>, Option<Entry>)> {
        let mut last = self.lock()?.clone();
        let mut writes = Vec::new();
        let mut sealed = None;
        for event in events {
            let entry = Entry::seal(event.clone(), last.as_ref(), &self.key);
            let json = entry.to_json();
            if json.len() > ENTRY_LIMIT {
                return Err(CoordinatorError::Invalid(format!(
                    "an audit entry of {} bytes exceeds the {ENTRY_LIMIT}-byte limit",
                    json.len()
                )));
            }
            writes.push(Write::Ledger {
                seq: entry.seq,
                prev: entry.prev.clone(),
                hash: entry.hash.clone(),
                entry: json,
            });
            last = Some(entry);
            sealed = last.clone();
        }
        Ok((writes, sealed))
    }

    /// Catches up with the store: another writer on the same database
    /// (another front end) appended after the entry this one last
    /// committed. Only forward: an entry the store lacks below the head
    /// held here was removed by someone, and the signed head keeps showing
    /// it (`audit verify` reports the truncation).
    pub(crate) fn catch_up(&self, store: &dyn JobStore) -> Result<()> {
        let Some(last) = store
            .last_ledger()?
            .map(|json| Entry::from_json(&json))
            .transpose()
            .map_err(|e| CoordinatorError::Store(format!("the ledger's last entry: {e}")))?
        else {
            return Ok(());
        };
        let mut held = self.lock()?;
        if held.as_ref().is_none_or(|h| h.seq < last.seq) {
            *held = Some(last);
        }
        Ok(())
    }

    /// Moves the head to `last`, once its transaction has committed.
    pub(crate) fn advance(&self, last: Entry) {
        match self.lock() {
            Ok(mut held) => *held = Some(last),
            Err(e) => tracing::error!(error = %e, "cannot move the ledger's head"),
        }
    }

    /// The signed head over every committed entry.
    fn head(&self) -> Result<Head> {
        Ok(match self.lock()?.as_ref() {
            Some(entry) => Head::signed(entry.seq + 1, &entry.hash, &self.key),
            None => Head::of(&[], &self.key),
        })
    }
}

/// The ledger: the chain, appended to through the store's writer.
pub(crate) struct Ledger {
    chain: Arc<Chain>,
    commits: Committer,
    store: Arc<dyn JobStore>,
}

impl Ledger {
    /// The ledger over `chain`, whose events `commits` (the writer sealing
    /// into the same chain) appends to `store`.
    pub(crate) fn new(chain: Arc<Chain>, commits: Committer, store: Arc<dyn JobStore>) -> Ledger {
        Ledger { chain, commits, store }
    }

    /// Appends `record` and waits until it is durable.
    pub(crate) async fn append(&self, record: Event) -> Result<()> {
        self.commits.commit(Group::default().event(record)).await
    }

    /// Appends in passing, without waiting (for events after the fact); a
    /// failure is logged by the writer.
    pub(crate) fn record(&self, record: Event) {
        drop(self.commits.submit(Group::default().event(record)));
    }

    /// Waits until every entry recorded so far is committed, so a reader
    /// that asks after an event finds its entry.
    pub(crate) async fn settle(&self) -> Result<()> {
        self.commits.flush().await
    }

    /// The entries from `from_seq` on (as stored JSON, in pages through
    /// `page`) and the signed head they end at. The head is taken first:
    /// entries below it are committed and never change, so a slow reader
    /// holds up no append.
    pub(crate) fn read(&self, from_seq: u64, mut page: impl FnMut(Vec<String>) -> Result<()>) -> Result<Head> {
        // Other front ends on the same database append too: the head is
        // the store's, not only what this process committed.
        self.chain.catch_up(&*self.store)?;
        let head = self.chain.head()?;
        let mut next = from_seq;
        while next < head.len {
            let want = usize::try_from(head.len - next).unwrap_or(usize::MAX).min(PAGE);
            let rows = self.store.ledger(next, want)?;
            if rows.is_empty() {
                break;
            }
            next += rows.len() as u64;
            page(rows)?;
        }
        Ok(head)
    }
}
