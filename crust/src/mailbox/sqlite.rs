//! The mailbox in SQLite (`crust-node --hold`): one row per held blob.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Backend, Item, Refusal, page};
use crate::id::PeerId;

pub(super) struct Sqlite {
    db: Connection,
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS mail (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                recipient BLOB NOT NULL,
                sender BLOB NOT NULL,
                deposited INTEGER NOT NULL,
                blob BLOB NOT NULL
            );
            CREATE INDEX IF NOT EXISTS mail_recipient ON mail (recipient, id);
            CREATE INDEX IF NOT EXISTS mail_sender ON mail (sender);",
        )?;
        Ok(Self { db })
    }

    fn sum(&self, sql: &str, key: &[u8]) -> (usize, usize) {
        self.db
            .query_row(sql, params![key], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
            })
            .optional()
            .ok()
            .flatten()
            .map(|(n, b)| (to_usize(n), to_usize(b.unwrap_or(0))))
            .unwrap_or((usize::MAX, usize::MAX))
    }
}

/// A count from SQLite; an error counts as full (so nothing more is taken).
fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Backend for Sqlite {
    fn insert(
        &mut self,
        from: &PeerId,
        recipient: &PeerId,
        at: u64,
        blob: &[u8],
    ) -> Result<u64, Refusal> {
        let at = i64::try_from(at).unwrap_or(i64::MAX);
        self.db
            .prepare_cached(
                "INSERT INTO mail (recipient, sender, deposited, blob) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    recipient.as_bytes().as_slice(),
                    from.as_bytes().as_slice(),
                    at,
                    blob
                ])
            })
            .map_err(|e| {
                tracing::error!(error = %e, "mailbox: cannot store");
                Refusal::Storage
            })?;
        Ok(u64::try_from(self.db.last_insert_rowid()).unwrap_or_default())
    }

    fn recipient_usage(&self, recipient: &PeerId) -> (usize, usize) {
        self.sum(
            "SELECT COUNT(*), SUM(LENGTH(blob)) FROM mail WHERE recipient = ?1",
            recipient.as_bytes(),
        )
    }

    fn depositor_bytes(&self, from: &PeerId) -> usize {
        self.sum(
            "SELECT COUNT(*), SUM(LENGTH(blob)) FROM mail WHERE sender = ?1",
            from.as_bytes(),
        )
        .1
    }

    fn total_bytes(&self) -> usize {
        self.db
            .query_row("SELECT SUM(LENGTH(blob)) FROM mail", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map(|b| to_usize(b.unwrap_or(0)))
            .unwrap_or(usize::MAX)
    }

    fn list(&self, recipient: &PeerId, max_bytes: usize) -> (Vec<Item>, bool) {
        let Ok(mut statement) = self.db.prepare_cached(
            "SELECT id, sender, deposited, blob FROM mail WHERE recipient = ?1 ORDER BY id",
        ) else {
            return (Vec::new(), false);
        };
        let Ok(rows) = statement.query_map(params![recipient.as_bytes().as_slice()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        }) else {
            return (Vec::new(), false);
        };
        let items = rows.flatten().filter_map(|(id, sender, deposited, blob)| {
            let from = <[u8; 32]>::try_from(sender.as_slice())
                .ok()
                .and_then(|b| PeerId::from_bytes(b).ok())?;
            Some(Item {
                id: u64::try_from(id).unwrap_or_default(),
                from,
                deposited_at: u64::try_from(deposited).unwrap_or_default(),
                blob,
            })
        });
        page(items, max_bytes)
    }

    fn remove(&mut self, recipient: &PeerId, ids: &[u64]) -> usize {
        let mut removed = 0;
        for &id in ids {
            let Ok(id) = i64::try_from(id) else { continue };
            removed += self
                .db
                .prepare_cached("DELETE FROM mail WHERE id = ?1 AND recipient = ?2")
                .and_then(|mut s| s.execute(params![id, recipient.as_bytes().as_slice()]))
                .unwrap_or(0);
        }
        removed
    }

    fn expire(&mut self, before: u64) -> usize {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        self.db
            .execute("DELETE FROM mail WHERE deposited < ?1", params![before])
            .unwrap_or(0)
    }
}
