//! The coordinator's audit ledger (`jointscore-audit`): every event sealed
//! with the coordinator's identity key and appended to the job store.
//!
//! Appends are serialized, so sequence numbers and the hash chain never
//! fork. Entries are written after the event they record: a key
//! registration whose entry cannot be written is answered with an error;
//! other events log the failure, and a crash between an event and its entry
//! loses the entry (writing both in one transaction is not done yet).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_audit::{ENTRY_LIMIT, Entry, Event, Head};
use jointscore_identity::NodeKey;

use crate::error::{CoordinatorError, Result};
use crate::store::JobStore;

/// Entries read from the store per page when the log is streamed.
pub(crate) const PAGE: usize = 512;

/// The ledger: the signing key and the last entry, over the store.
pub(crate) struct Ledger {
    key: NodeKey,
    store: Arc<dyn JobStore>,
    last: Mutex<Option<Entry>>,
}

/// Milliseconds since the unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Ledger {
    /// Opens the ledger the store holds, continuing after its last entry.
    pub(crate) fn open(key: NodeKey, store: Arc<dyn JobStore>) -> Result<Ledger> {
        let last = store
            .last_ledger()?
            .map(|json| Entry::from_json(&json))
            .transpose()
            .map_err(|e| CoordinatorError::Store(format!("the ledger's last entry: {e}")))?;
        Ok(Ledger { key, store, last: Mutex::new(last) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Option<Entry>>> {
        self.last.lock().map_err(|_| CoordinatorError::Store("ledger lock poisoned by an earlier panic".into()))
    }

    /// Seals `record` after the last entry and stores it. An entry too
    /// large for members to read back (`ENTRY_LIMIT`) is refused, so the
    /// log always verifies.
    pub(crate) fn append(&self, mut record: Event) -> Result<()> {
        if record.time_ms == 0 {
            record.time_ms = now_ms();
        }
        let mut last = self.lock()?;
        let entry = Entry::seal(record, last.as_ref(), &self.key);
        let json = entry.to_json();
        if json.len() > ENTRY_LIMIT {
            return Err(CoordinatorError::Invalid(format!(
                "an audit entry of {} bytes exceeds the {ENTRY_LIMIT}-byte limit",
                json.len()
            )));
        }
        self.store.append_ledger(entry.seq, &json)?;
        *last = Some(entry);
        Ok(())
    }

    /// Appends, logging instead of failing (for events after the fact).
    pub(crate) fn record(&self, record: Event) {
        if let Err(e) = self.append(record) {
            tracing::error!(error = %e, "cannot append to the audit ledger");
        }
    }

    /// The entries from `from_seq` on (as stored JSON, in pages through
    /// `page`) and the signed head they end at. The head is taken first and
    /// the lock released before reading: entries below it never change, so
    /// a slow reader holds up no append.
    pub(crate) fn read(&self, from_seq: u64, mut page: impl FnMut(Vec<String>) -> Result<()>) -> Result<Head> {
        let head = match self.lock()?.as_ref() {
            Some(entry) => Head::signed(entry.seq + 1, &entry.hash, &self.key),
            None => Head::of(&[], &self.key),
        };
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
