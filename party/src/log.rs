//! The party's own record of what it did: a hash-chained log in its store,
//! and the table of lender requests it has answered.
//!
//! The coordinator keeps the consortium's ledger, but a party need not
//! trust it: every contribution this node makes is appended here with the
//! lender's signed request and this node's own signed envelope, so `jointscore
//! audit reconcile` can hold the coordinator's ledger against it and find an
//! entry the coordinator left out or rewrote. Refusals (with their full
//! detail, which the lender is not told) and alignment sessions are logged
//! too.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    /// A contribution: the lender's signed request and this party's signed
    /// envelope.
    Contribution,
    /// A request refused, with the reason in full.
    Refusal,
    /// A PSI session (alignment or asset check) opened or refused, and
    /// each query answered or refused: the requester, the purpose, the size
    /// of the set sent, the ids queried and the requester's budget.
    Psi,
    /// A fit session (`crate::fit`): the lender's signed request (fit id,
    /// spec id, rows and their digest, signature), the features binned,
    /// whether this party joined the Gram round, and how it ended.
    Fit,
}

/// One entry of the party's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Its position, from 0.
    pub seq: u64,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// When it was appended, in milliseconds since the unix epoch.
    pub time_ms: u64,
    /// What it records.
    pub kind: LogKind,
    /// The record itself (see [`LogKind`]).
    pub body: serde_json::Value,
    /// SHA-256 (hex) over `seq`, `prev`, `time_ms`, `kind` and `body` in
    /// their canonical JSON form.
    pub hash: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    prev: &'a str,
    time_ms: u64,
    kind: LogKind,
    body: &'a serde_json::Value,
}

impl LogEntry {
    /// The hash this entry must carry.
    pub fn expected_hash(&self) -> String {
        let canonical =
            Canonical { seq: self.seq, prev: &self.prev, time_ms: self.time_ms, kind: self.kind, body: &self.body };
        hex::encode(Sha256::digest(serde_json::to_vec(&canonical).unwrap_or_default()))
    }
}

impl LogEntry {
    /// The contribution a [`LogKind::Contribution`] entry records (`None`
    /// for other kinds; an error names the entry when its body is not a
    /// [`ContributionRecord`]).
    pub fn contribution(&self) -> Option<Result<ContributionRecord>> {
        (self.kind == LogKind::Contribution).then(|| {
            serde_json::from_value(self.body.clone()).map_err(|e| {
                PartyError::Store(format!("party log entry {} is not a contribution record: {e}", self.seq))
            })
        })
    }
}

/// A contribution as the party logs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionRecord {
    /// The lender's request as it signed it.
    pub request: jointscore_identity::LenderRequest,
    /// The lender's signature over it, hex (empty without a consortium).
    pub request_signature: String,
    /// This party's envelope.
    pub envelope: jointscore_identity::ContributionEnvelope,
    /// This party's signature over the envelope, hex (empty without an
    /// identity key).
    pub signature: String,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The log's tables.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS party_log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answered (
    lender TEXT NOT NULL, request_id TEXT NOT NULL, subject TEXT NOT NULL, time_ms INTEGER NOT NULL,
    job_id TEXT NOT NULL DEFAULT '', answer BLOB, header TEXT,
    PRIMARY KEY (lender, request_id));
CREATE INDEX IF NOT EXISTS answered_subject ON answered (lender, subject, time_ms);
";

/// The limits a claim is held to.
#[derive(Clone, Copy, Debug)]
pub struct ClaimLimits {
    /// Most requests about one subject from one lender per window.
    pub per_subject: u32,
    /// That window, in milliseconds.
    pub window_ms: u64,
    /// How long an answer is kept to send again, in milliseconds.
    pub keep_ms: u64,
}

/// A row of `answered`: when, for which job, the answer and its header.
type Answered = (i64, String, Option<Vec<u8>>, Option<String>);

/// What claiming a request found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not answered before: answer it.
    New,
    /// Answered before for the same job: the very bytes and header sent
    /// then, to send again unchanged (a coordinator that lost the answer in
    /// a restart gets nothing it did not have).
    Resend(Vec<u8>, String),
    /// Claimed by the same job, its answer not made yet (still under way,
    /// or cut short by a crash): ask again shortly.
    Pending,
    /// Answered before for another job: a replay.
    Replayed(String),
    /// The lender asked about this subject too often in the window.
    Limited,
}

/// Appends an entry inside the caller's transaction.
pub(crate) fn append(conn: &Connection, kind: LogKind, body: serde_json::Value) -> Result<LogEntry> {
    let last: Option<String> =
        conn.query_row("SELECT entry FROM party_log ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).optional()?;
    let (seq, prev) = match last {
        Some(text) => {
            let last: LogEntry =
                serde_json::from_str(&text).map_err(|e| PartyError::Store(format!("party log: {e}")))?;
            (last.seq + 1, last.hash)
        }
        None => (0, GENESIS.to_string()),
    };
    let mut entry = LogEntry { seq, prev, time_ms: now_ms(), kind, body, hash: String::new() };
    entry.hash = entry.expected_hash();
    let text = serde_json::to_string(&entry).map_err(|e| PartyError::Store(e.to_string()))?;
    conn.execute("INSERT INTO party_log (seq, entry) VALUES (?1, ?2)", params![seq as i64, text])?;
    Ok(entry)
}

/// Why the log does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("party log entry {seq}: {reason}")]
pub struct LogBroken {
    /// The first entry at fault.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a run of entries from seq 0: consecutive, each naming its
/// predecessor's hash, each hash right. Answers how many entries verified.
pub fn verify_entries(entries: &[LogEntry]) -> std::result::Result<usize, LogBroken> {
    let mut prev = GENESIS.to_string();
    for (i, entry) in entries.iter().enumerate() {
        let broken = |reason: String| LogBroken { seq: i as u64, reason };
        if entry.seq != i as u64 {
            return Err(broken(format!("holds seq {} (an entry is missing or moved)", entry.seq)));
        }
        if entry.prev != prev {
            return Err(broken("does not name the previous entry's hash (the chain is broken)".into()));
        }
        if entry.hash != entry.expected_hash() {
            return Err(broken("its hash does not match its content (it was edited)".into()));
        }
        prev = entry.hash.clone();
    }
    Ok(entries.len())
}

impl RecordStore {
    /// Appends an entry to the party's log.
    pub fn log(&self, kind: LogKind, body: serde_json::Value) -> Result<LogEntry> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let entry = append(&tx, kind, body)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Every log entry from `from_seq` on, in order (none from a store
    /// made before the log, opened read-only).
    pub fn log_entries(&self, from_seq: u64) -> Result<Vec<LogEntry>> {
        let conn = self.conn()?;
        let exists: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'party_log')",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare("SELECT seq, entry FROM party_log WHERE seq >= ?1 ORDER BY seq")?;
        let rows = stmt
            .query_map([from_seq as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(seq, text)| {
                serde_json::from_str(&text)
                    .map_err(|e| PartyError::Store(format!("party log entry {seq} is unreadable: {e}")))
            })
            .collect()
    }

    /// Claims a lender's request for answering, atomically. A request id
    /// this lender used before is a replay, unless it is the same job
    /// asking again for an answer already made ([`Claim::Resend`]); a
    /// lender that asked about `subject` `limit` times in the last
    /// `window_ms` is refused (an oracle). Answers older than `keep_ms` are
    /// forgotten (their requests are stale by then anyway).
    pub fn claim_request(
        &self,
        lender: &str,
        request_id: &str,
        job_id: &str,
        subject: &str,
        limits: &ClaimLimits,
    ) -> Result<Claim> {
        let mut conn = self.conn()?;
        // The claim does not wait for the disk: the answer it guards leaves
        // only after `log_and_keep` commits with a full sync, which makes
        // the claim durable too (the write-ahead log is written in order),
        // and a claim lost in a crash guarded nothing that had left.
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let claim = claim_in(&mut conn, lender, request_id, job_id, subject, limits);
        conn.pragma_update(None, "synchronous", sync)?;
        claim
    }

    /// Forgets a claim whose answer could not be made (the work after the
    /// claim failed), so the same request may be answered once the cause is
    /// fixed. A claim with an answer kept is never forgotten this way.
    pub fn release_request(&self, lender: &str, request_id: &str) -> Result<()> {
        self.conn()?.execute(
            "DELETE FROM answered WHERE lender = ?1 AND request_id = ?2 AND answer IS NULL",
            params![lender, request_id],
        )?;
        Ok(())
    }

    /// Keeps the answer made to a claimed request (the ciphertext bytes and
    /// the header sent with them), for [`Claim::Resend`].
    pub fn keep_answer(&self, lender: &str, request_id: &str, answer: &[u8], header: &str) -> Result<()> {
        self.conn()?.execute(
            "UPDATE answered SET answer = ?3, header = ?4 WHERE lender = ?1 AND request_id = ?2",
            params![lender, request_id, answer, header],
        )?;
        Ok(())
    }

    /// Appends a contribution to the log and keeps it as the answer to its
    /// claimed request ([`RecordStore::log`] and
    /// [`RecordStore::keep_answer`]) in one transaction: one wait for the
    /// disk before the answer leaves instead of two, and a kept answer is
    /// never missing from the log.
    pub fn log_and_keep(
        &self,
        body: serde_json::Value,
        lender: &str,
        request_id: &str,
        answer: &[u8],
        header: &str,
    ) -> Result<LogEntry> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let entry = append(&tx, LogKind::Contribution, body)?;
        tx.execute(
            "UPDATE answered SET answer = ?3, header = ?4 WHERE lender = ?1 AND request_id = ?2",
            params![lender, request_id, answer, header],
        )?;
        tx.commit()?;
        Ok(entry)
    }
}

/// [`RecordStore::claim_request`] in one transaction on `conn`.
fn claim_in(
    conn: &mut Connection,
    lender: &str,
    request_id: &str,
    job_id: &str,
    subject: &str,
    limits: &ClaimLimits,
) -> Result<Claim> {
    let ClaimLimits { per_subject: limit, window_ms, keep_ms } = *limits;
    let tx = conn.transaction()?;
    let now = now_ms();
    tx.execute(
        "UPDATE answered SET answer = NULL, header = 'forgotten' WHERE answer IS NOT NULL AND time_ms < ?1",
        [now.saturating_sub(keep_ms) as i64],
    )?;
    let seen: Option<Answered> = tx
        .query_row(
            "SELECT time_ms, job_id, answer, header FROM answered WHERE lender = ?1 AND request_id = ?2",
            params![lender, request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    if let Some((at, job, answer, header)) = seen {
        return Ok(match (answer, header) {
            (Some(answer), Some(header)) if job == job_id => Claim::Resend(answer, header),
            (None, None) if job == job_id => Claim::Pending,
            _ => Claim::Replayed(format!("it was answered already (at {at} ms, job `{job}`): a replayed request")),
        });
    }
    let since = now.saturating_sub(window_ms) as i64;
    let recent: i64 = tx.query_row(
        "SELECT COUNT(*) FROM answered WHERE lender = ?1 AND subject = ?2 AND time_ms >= ?3",
        params![lender, subject, since],
        |r| r.get(0),
    )?;
    if recent >= i64::from(limit) {
        return Ok(Claim::Limited);
    }
    tx.execute(
        "INSERT INTO answered (lender, request_id, subject, time_ms, job_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![lender, request_id, subject, now as i64, job_id],
    )?;
    tx.commit()?;
    Ok(Claim::New)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_chains_and_any_edit_breaks_it() {
        let store = RecordStore::in_memory().expect("store");
        for i in 0..4 {
            store.log(LogKind::Refusal, serde_json::json!({ "reason": format!("r{i}") })).expect("append");
        }
        let entries = store.log_entries(0).expect("read");
        assert_eq!(verify_entries(&entries), Ok(4));
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[2].prev, entries[1].hash);

        let mut edited = entries.clone();
        edited[2].body = serde_json::json!({ "reason": "other" });
        assert_eq!(verify_entries(&edited).unwrap_err().seq, 2);
        let mut dropped = entries.clone();
        dropped.remove(1);
        let e = verify_entries(&dropped).unwrap_err();
        assert_eq!(e.seq, 1);
        assert!(e.reason.contains("missing"), "{e}");
        let mut rehashed = entries.clone();
        rehashed[1].body = serde_json::json!({ "reason": "forged" });
        rehashed[1].hash = rehashed[1].expected_hash();
        assert!(verify_entries(&rehashed).unwrap_err().reason.contains("chain is broken"));
    }

    #[test]
    fn a_read_only_store_reads_the_log_while_the_node_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite");
        assert!(RecordStore::open_read_only(&path).is_err(), "no store there, and none is made");
        assert!(!path.exists());
        let node = RecordStore::open(&path).expect("open");
        node.log(LogKind::Refusal, serde_json::json!({ "reason": "r0" })).expect("append");
        let reader = RecordStore::open_read_only(&path).expect("open read-only");
        assert_eq!(reader.log_entries(0).expect("read").len(), 1);
        node.log(LogKind::Contribution, serde_json::json!({ "request": 1 })).expect("the node still writes");
        let entries = reader.log_entries(0).expect("read");
        assert_eq!(verify_entries(&entries), Ok(2));
        assert!(reader.log(LogKind::Refusal, serde_json::json!({})).is_err(), "read-only");
        assert!(entries[0].contribution().is_none(), "a refusal");
        let e = entries[1].contribution().expect("a contribution entry").unwrap_err();
        assert!(e.to_string().contains("entry 1 is not a contribution record"), "{e}");
        // And once the node has stopped.
        drop((node, reader));
        assert_eq!(RecordStore::open_read_only(&path).expect("reopen").log_entries(0).expect("read"), entries);
    }

    #[test]
    fn a_request_is_answered_once_and_a_subject_only_so_often() {
        let store = RecordStore::in_memory().expect("store");
        let claim = |lender: &str, request: &str, job: &str, subject: &str| {
            let limits = ClaimLimits { per_subject: 2, window_ms: 60_000, keep_ms: 60_000 };
            store.claim_request(lender, request, job, subject, &limits).expect("claim")
        };
        assert_eq!(claim("l", "r1", "j1", "s"), Claim::New);
        // Under way (no answer kept yet): ask again shortly; for another
        // job: a replay.
        assert_eq!(claim("l", "r1", "j1", "s"), Claim::Pending);
        assert!(matches!(claim("l", "r1", "j9", "s"), Claim::Replayed(why) if why.contains("replayed")));
        // A claim whose work failed is released, and may be claimed again.
        store.release_request("l", "r1").expect("release");
        assert_eq!(claim("l", "r1", "j1", "s"), Claim::New);
        store.keep_answer("l", "r1", b"ct", "{}").expect("keep");
        store.release_request("l", "r1").expect("a kept answer is not released");
        assert!(matches!(claim("l", "r1", "j2", "s"), Claim::Replayed(_)), "another job");
        // The same job asking again gets the very answer made.
        assert_eq!(claim("l", "r1", "j1", "s"), Claim::Resend(b"ct".to_vec(), "{}".into()));
        // Another lender's request id is its own.
        assert_eq!(claim("m", "r1", "j3", "s"), Claim::New);
        assert_eq!(claim("l", "r2", "j4", "s"), Claim::New);
        assert_eq!(claim("l", "r3", "j5", "s"), Claim::Limited, "the third decision on `s` for `l`");
        assert_eq!(claim("l", "r4", "j6", "t"), Claim::New, "another subject");
        // An answer older than kept is forgotten: the same job is then refused.
        std::thread::sleep(std::time::Duration::from_millis(3));
        let limits = ClaimLimits { per_subject: 9, window_ms: 60_000, keep_ms: 0 };
        let forgotten = store.claim_request("l", "r1", "j1", "s", &limits).expect("claim");
        assert!(matches!(forgotten, Claim::Replayed(_)), "{forgotten:?}");
    }
}
