//! What the lender learned from aligning: per party, which subjects of its
//! lists the party holds. Kept in a SQLite file next to the lender's keys
//! (owner-only: it tells which customers each partner also serves).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{LenderError, Result};

/// The lender's alignment results.
pub struct AlignmentStore {
    conn: Mutex<Connection>,
}

fn store_error(e: rusqlite::Error) -> LenderError {
    LenderError::Alignment(e.to_string())
}

impl AlignmentStore {
    /// Opens (creating if needed, readable by its owner only) the store at
    /// `path`.
    pub fn open(path: &Path) -> Result<AlignmentStore> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| LenderError::Alignment(format!("{}: {e}", path.display())))?;
        // A file made by another tool keeps its mode on open: tighten it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| LenderError::Alignment(format!("{}: {e}", path.display())))?;
        }
        drop(file);
        let conn = Connection::open(path).map_err(|e| LenderError::Alignment(format!("{}: {e}", path.display())))?;
        AlignmentStore::init(conn)
    }

    /// A store in memory only (tests, the quickstart).
    pub fn in_memory() -> Result<AlignmentStore> {
        AlignmentStore::init(Connection::open_in_memory().map_err(store_error)?)
    }

    fn init(conn: Connection) -> Result<AlignmentStore> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS alignment (
                 party TEXT NOT NULL, subject TEXT NOT NULL, held INTEGER NOT NULL, aligned_ms INTEGER NOT NULL,
                 PRIMARY KEY (party, subject));",
        )
        .map_err(store_error)?;
        Ok(AlignmentStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| LenderError::Alignment("store lock poisoned by an earlier panic".into()))
    }

    /// Records one alignment: for each subject, whether `party` holds it.
    /// A later alignment of the same subject replaces the earlier answer.
    pub fn record(&self, party: &str, subjects: &[String], held: &[bool]) -> Result<()> {
        if subjects.len() != held.len() {
            return Err(LenderError::Alignment(format!("{} answers for {} subjects", held.len(), subjects.len())));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(store_error)?;
        for (subject, &held) in subjects.iter().zip(held) {
            tx.execute(
                "INSERT INTO alignment (party, subject, held, aligned_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(party, subject) DO UPDATE SET held = excluded.held, aligned_ms = excluded.aligned_ms",
                params![party, subject, held, now],
            )
            .map_err(store_error)?;
        }
        tx.commit().map_err(store_error)
    }

    /// Whether `party` holds `subject`, if the lender has aligned it.
    pub fn holds(&self, party: &str, subject: &str) -> Result<Option<bool>> {
        self.conn()?
            .query_row("SELECT held FROM alignment WHERE party = ?1 AND subject = ?2", [party, subject], |r| r.get(0))
            .optional()
            .map_err(store_error)
    }

    /// The parties among `parties` that do not hold `subject`, to name as
    /// absent in a decision request; refuses a subject not aligned with
    /// every one of them.
    pub fn absent(&self, subject: &str, parties: &[String]) -> Result<Vec<String>> {
        let mut absent = Vec::new();
        for party in parties {
            match self.holds(party, subject)? {
                Some(true) => {}
                Some(false) => absent.push(party.clone()),
                None => return Err(LenderError::NotAligned { subject: subject.into(), party: party.clone() }),
            }
        }
        Ok(absent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replaces_and_names_absent_parties() {
        let store = AlignmentStore::in_memory().expect("store");
        let subjects: Vec<String> = ["s1", "s2", "s3"].map(String::from).into();
        store.record("platform", &subjects, &[true, false, true]).expect("record");
        store.record("bank", &subjects[..2], &[true, true]).expect("record");
        let parties: Vec<String> = vec!["platform".into(), "bank".into()];
        assert_eq!(store.absent("s1", &parties).expect("aligned"), Vec::<String>::new());
        assert_eq!(store.absent("s2", &parties).expect("aligned"), ["platform"]);
        let e = store.absent("s3", &parties).unwrap_err();
        assert!(e.to_string().contains("`s3` is not aligned with party `bank`"), "{e}");
        store.record("platform", &subjects[1..2], &[true]).expect("re-align");
        assert_eq!(store.holds("platform", "s2").expect("read"), Some(true));
        assert!(store.record("bank", &subjects, &[true]).is_err(), "answers must match subjects");
    }

    #[test]
    fn the_file_is_private_and_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alignment.sqlite");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, b"").expect("create");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        AlignmentStore::open(&path).expect("open").record("bank", &["s".into()], &[false]).expect("record");
        assert_eq!(AlignmentStore::open(&path).expect("reopen").holds("bank", "s").expect("read"), Some(false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o077, 0);
        }
    }
}
