//! The collector's SQLite database: one row per accepted report (the JSON
//! as received, its NAT class and when it came), and the [`Summary`] over
//! all of them. No peer ids are stored.
//!
//! Order: [`ReportStore::open`], then [`insert`](ReportStore::insert) per
//! accepted report, [`summary`](ReportStore::summary) whenever asked.

use std::path::Path;

use rusqlite::{Connection, params};

use super::collect::Summary;
use super::report::Submission;

/// A database error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("report database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row is not a valid report (the database was edited).
    #[error("stored report {0} is not valid: {1}")]
    Corrupt(i64, serde_json::Error),
}

/// The reports database.
#[derive(Debug)]
pub struct ReportStore {
    db: Connection,
}

impl ReportStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        // WAL with NORMAL sync: durable across a process crash, and
        // thousands of inserts per second without batching.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS reports (
                id INTEGER PRIMARY KEY,
                received_unix INTEGER NOT NULL,
                nat_class TEXT NOT NULL,
                json TEXT NOT NULL
            );",
        )?;
        Ok(ReportStore { db })
    }

    /// Stores an accepted report; returns its id.
    pub fn insert(&self, received_unix: i64, report: &Submission) -> Result<u64, StoreError> {
        let json = serde_json::to_string(report).map_err(|e| StoreError::Corrupt(0, e))?;
        self.db
            .prepare_cached(
                "INSERT INTO reports (received_unix, nat_class, json) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![received_unix, report.findings.nat_class(), json])?;
        Ok(u64::try_from(self.db.last_insert_rowid()).unwrap_or_default())
    }

    /// How many reports are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .db
            .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Every stored report.
    pub fn all(&self) -> Result<Vec<Submission>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT id, json FROM reports ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            out.push(serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(id, e))?);
        }
        Ok(out)
    }

    /// The summary of every stored report.
    pub fn summary(&self) -> Result<Summary, StoreError> {
        Ok(Summary::of(&self.all()?))
    }
}
