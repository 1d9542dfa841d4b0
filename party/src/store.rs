//! The party's own records, in SQLite.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use jointscore_psi::AssetId;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::error::{PartyError, Result};

/// Longest subject id accepted.
const SUBJECT_LIMIT: usize = 256;

/// A party's records, one JSON object per subject, in a SQLite file.
///
/// Values are whatever the party's book holds; the model decides which
/// columns it reads, so a book may carry columns no model uses.
pub struct RecordStore {
    conn: Mutex<Connection>,
}

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Subjects not held before.
    pub added: usize,
    /// Subjects whose record was replaced.
    pub replaced: usize,
}

impl RecordStore {
    /// Opens (creating if needed, readable by its owner only: it holds the
    /// party's plaintext records) the store at `path`.
    pub fn open(path: &Path) -> Result<RecordStore> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        // SQLite gives its journal files the database file's permissions.
        options.open(path).map_err(|e| PartyError::Store(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(|e| PartyError::Store(format!("{}: {e}", path.display())))?;
        RecordStore::init(conn)
    }

    /// Opens the store at `path` for reading only, while its node may be
    /// serving from it (SQLite's write-ahead log lets readers and the one
    /// writer work side by side): nothing is created or migrated, and a
    /// path that holds no store is an error.
    pub fn open_read_only(path: &Path) -> Result<RecordStore> {
        use rusqlite::OpenFlags;
        let unreadable = |e: rusqlite::Error| PartyError::Store(format!("{}: {e}", path.display()));
        if !path.is_file() {
            return Err(PartyError::Store(format!("{}: no store there", path.display())));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(unreadable)?;
        // The node may hold the write lock for a moment.
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unreadable)?;
        Ok(RecordStore { conn: Mutex::new(conn) })
    }

    /// A store that lives in memory only (tests, demonstrations).
    pub fn in_memory() -> Result<RecordStore> {
        RecordStore::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<RecordStore> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS records (subject TEXT PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS assets (
                 key BLOB PRIMARY KEY, asset TEXT NOT NULL, reference TEXT NOT NULL, financed_ms INTEGER NOT NULL);",
        )?;
        conn.execute_batch(crate::log::SCHEMA)?;
        conn.execute_batch(crate::consent::SCHEMA)?;
        conn.execute_batch(crate::psi::SCHEMA)?;
        conn.execute_batch(crate::history::SCHEMA)?;
        Ok(RecordStore { conn: Mutex::new(conn) })
    }

    pub(crate) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| PartyError::Store("store lock poisoned by an earlier panic".into()))
    }

    /// Imports a CSV file (see [`RecordStore::import_csv`]).
    pub fn import_file(&self, path: &Path) -> Result<ImportReport> {
        let file = std::fs::File::open(path).map_err(|e| PartyError::Import(format!("{}: {e}", path.display())))?;
        self.import_csv(file)
    }

    /// Imports records from CSV: a `subject` column and one column per
    /// feature. A cell that parses as an integer is stored as one, an empty
    /// cell as missing, anything else as text (category names). The whole
    /// file is one transaction: a bad row stores nothing.
    pub fn import_csv(&self, reader: impl Read) -> Result<ImportReport> {
        self.put_all(&read_csv(reader)?)
    }

    /// Stores (or replaces) records, all or none.
    pub fn put_all(&self, rows: &[(String, Value)]) -> Result<ImportReport> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut report = ImportReport { added: 0, replaced: 0 };
        for (subject, record) in rows {
            check_subject(subject).map_err(PartyError::Import)?;
            if !record.is_object() {
                return Err(PartyError::Import(format!("record of `{subject}` is not a JSON object")));
            }
            let existed: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM records WHERE subject = ?1)", [subject], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO records (subject, record) VALUES (?1, ?2)
                 ON CONFLICT(subject) DO UPDATE SET record = excluded.record",
                params![subject, record.to_string()],
            )?;
            if existed {
                report.replaced += 1;
            } else {
                report.added += 1;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// The record of `subject`, if this party holds one.
    pub fn get(&self, subject: &str) -> Result<Option<Value>> {
        let text: Option<String> = self
            .conn()?
            .query_row("SELECT record FROM records WHERE subject = ?1", [subject], |r| r.get(0))
            .optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| PartyError::Store(format!("record of `{subject}`: {e}"))))
            .transpose()
    }

    /// Calls `f` with every record, in subject order, without holding the
    /// whole book in memory; stops at `f`'s first error.
    pub fn scan(&self, mut f: impl FnMut(&Value) -> Result<()>) -> Result<()> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT subject, record FROM records ORDER BY subject")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(1)?;
            let record: Value = serde_json::from_str(&text).map_err(|e| {
                let subject: String = row.get(0).unwrap_or_default();
                PartyError::Store(format!("record of `{subject}`: {e}"))
            })?;
            f(&record)?;
        }
        Ok(())
    }

    /// Number of subjects held.
    pub fn len(&self) -> Result<usize> {
        let n: i64 = self.conn()?.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Whether the store holds no subject.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every subject id held, in order (the set a lender aligns against).
    pub fn subjects(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT subject FROM records ORDER BY subject")?;
        let subjects = statement.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(subjects)
    }

    /// Records financings in the asset registry, all or none: an asset
    /// already registered keeps its first record (`reference` is the
    /// lender's own loan or contract number, kept for its operator).
    pub fn register_assets(&self, assets: &[(AssetId, String)]) -> Result<AssetReport> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now = now_ms();
        let mut report = AssetReport::default();
        for (asset, reference) in assets {
            let added = tx.execute(
                "INSERT INTO assets (key, asset, reference, financed_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO NOTHING",
                params![asset.key(), asset.to_string(), reference, now],
            )?;
            if added == 1 {
                report.added += 1;
            } else {
                report.already += 1;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// The registry's hashed keys (`AssetId::key`), the set a
    /// duplicate-financing check matches against.
    pub fn asset_keys(&self) -> Result<Vec<Vec<u8>>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT key FROM assets")?;
        let keys = statement.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(keys)
    }

    /// Number of assets in the registry.
    pub fn asset_count(&self) -> Result<usize> {
        let n: i64 = self.conn()?.query_row("SELECT COUNT(*) FROM assets", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// What a registration did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AssetReport {
    /// Assets newly recorded.
    pub added: usize,
    /// Assets the registry already held (left as they were).
    pub already: usize,
}

pub(crate) fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Subject ids are opaque to jointscore but must be printable and bounded.
pub(crate) fn check_subject(subject: &str) -> std::result::Result<(), String> {
    if subject.is_empty() {
        return Err("subject id is empty".into());
    }
    if subject.len() > SUBJECT_LIMIT {
        return Err(format!("subject id is longer than {SUBJECT_LIMIT} bytes"));
    }
    if subject.chars().any(char::is_control) {
        return Err("subject id holds control characters".into());
    }
    Ok(())
}

/// Reads records from CSV: a `subject` column and one column per feature.
/// A cell that parses as an integer is read as one, an empty cell as
/// missing, anything else as text (category names). A subject twice, or a
/// malformed row, is an error naming its line.
pub(crate) fn read_csv(reader: impl Read) -> Result<Vec<(String, Value)>> {
    let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
    let headers = csv.headers().map_err(|e| PartyError::Import(e.to_string()))?.clone();
    let subject_col = headers
        .iter()
        .position(|h| h == "subject")
        .ok_or_else(|| PartyError::Import("the CSV has no `subject` column".into()))?;
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for (i, row) in csv.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| PartyError::Import(format!("line {line}: {e}")))?;
        let subject = row.get(subject_col).unwrap_or_default().to_string();
        check_subject(&subject).map_err(|m| PartyError::Import(format!("line {line}: {m}")))?;
        if !seen.insert(subject.clone()) {
            return Err(PartyError::Import(format!("line {line}: subject `{subject}` appears twice")));
        }
        let mut record = Map::new();
        for (col, cell) in headers.iter().zip(row.iter()).filter(|(h, _)| *h != "subject") {
            let value = if cell.is_empty() {
                Value::Null
            } else if let Ok(n) = cell.parse::<i64>() {
                Value::from(n)
            } else {
                Value::from(cell)
            };
            record.insert(col.to_string(), value);
        }
        rows.push((subject, Value::Object(record)));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_typed_values_and_replaces() {
        let store = RecordStore::in_memory().expect("store");
        let csv = "subject,gmv_12m_k,country,rating\ns1,120,DE,\ns2,-5,FR,44\n";
        assert_eq!(store.import_csv(csv.as_bytes()).expect("import"), ImportReport { added: 2, replaced: 0 });
        let s1 = store.get("s1").expect("read").expect("held");
        assert_eq!(s1["gmv_12m_k"], 120);
        assert_eq!(s1["country"], "DE");
        assert!(s1["rating"].is_null());
        assert_eq!(store.get("s2").expect("read").expect("held")["gmv_12m_k"], -5);
        let again = "subject,gmv_12m_k\ns2,7\ns3,1\n";
        assert_eq!(store.import_csv(again.as_bytes()).expect("import"), ImportReport { added: 1, replaced: 1 });
        assert_eq!(store.len().expect("count"), 3);
        assert_eq!(store.get("nobody").expect("read"), None);
        let mut seen = Vec::new();
        store
            .scan(|r| {
                seen.push(r["gmv_12m_k"].clone());
                Ok(())
            })
            .expect("scan");
        assert_eq!(seen, [serde_json::json!(120), serde_json::json!(7), serde_json::json!(1)]);
    }

    #[test]
    fn a_bad_file_stores_nothing() {
        let store = RecordStore::in_memory().expect("store");
        for (csv, want) in [
            ("id,x\na,1\n", "no `subject` column"),
            ("subject,x\na,1\na,2\n", "line 3: subject `a` appears twice"),
            ("subject,x\na,1\n,2\n", "line 3: subject id is empty"),
            ("subject,x\na,1\nb,2,3\n", "line 3"),
        ] {
            let e = store.import_csv(csv.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{e} should say {want}");
            assert!(e.to_string().contains("nothing stored"), "{e}");
        }
        assert!(store.is_empty().expect("count"));
    }

    #[test]
    fn registers_assets_once_under_their_normal_form() {
        let store = RecordStore::in_memory().expect("store");
        let id = |s: &str| AssetId::parse(s).expect("asset id");
        let first = [(id("invoice:ACME Trading:INV-0001"), "loan-1".to_string()), (id("po:acme:77"), "loan-2".into())];
        assert_eq!(store.register_assets(&first).expect("register"), AssetReport { added: 2, already: 0 });
        // A trivial variant of the first invoice is the same asset.
        let again = [(id("inv: acme  trading. :inv 0001"), "loan-3".to_string()), (id("wr:depot:9"), "loan-4".into())];
        assert_eq!(store.register_assets(&again).expect("register"), AssetReport { added: 1, already: 1 });
        assert_eq!(store.asset_count().expect("count"), 3);
        let keys = store.asset_keys().expect("keys");
        assert!(keys.contains(&id("invoice:acme trading:inv0001").key()));
        assert!(store.subjects().expect("subjects").is_empty());
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite");
        RecordStore::open(&path).expect("open").import_csv("subject,x\na,1\n".as_bytes()).expect("import");
        assert_eq!(RecordStore::open(&path).expect("reopen").get("a").expect("read").expect("held")["x"], 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the record store is private to its owner");
        }
    }
}
