//! `history.sqlite`: contacts, friend requests, blocked peers and messages.
//!
//! SQLite (bundled) in WAL mode with `synchronous = NORMAL`: a committed
//! transaction survives the process being killed at any moment (it is in
//! the WAL, which the OS holds); only a power cut can take the last few.
//! The schema is versioned by `PRAGMA user_version`; [`MIGRATIONS`] are
//! applied in order, each in its own transaction, when the file is opened.
//! A file from a newer program, or one that is not a database, is an error
//! and is never written to.
//!
//! Order of calls: [`Store::open`], then any queries; group writes that
//! belong together with [`Store::batch`].

use std::path::{Path, PathBuf};

use crust::{Endpoint, PeerId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::types::{
    Contact, ContactState, Cursor, FriendRequest, HistoryPage, Message, MessageId, MessageState,
    Presence, now_ms,
};

/// Schema versions, oldest first; `MIGRATIONS[i]` takes version `i` to
/// `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the tables.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE contacts (
         peer BLOB PRIMARY KEY,
         name TEXT NOT NULL,
         state INTEGER NOT NULL,
         verified INTEGER NOT NULL DEFAULT 0,
         addrs TEXT NOT NULL DEFAULT '',
         last_seen INTEGER,
         added_at INTEGER NOT NULL,
         request_token BLOB,
         request_message TEXT NOT NULL DEFAULT '',
         replaces BLOB,
         clock INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE requests (
         peer BLOB PRIMARY KEY,
         name TEXT NOT NULL,
         message TEXT NOT NULL,
         addrs TEXT NOT NULL,
         received_at INTEGER NOT NULL,
         replaces BLOB
     );
     CREATE TABLE blocked (peer BLOB PRIMARY KEY, at INTEGER NOT NULL);
     CREATE TABLE messages (
         rowid INTEGER PRIMARY KEY,
         contact BLOB NOT NULL,
         id BLOB NOT NULL,
         outgoing INTEGER NOT NULL,
         seq INTEGER NOT NULL,
         sent_at INTEGER NOT NULL,
         received_at INTEGER,
         body TEXT NOT NULL,
         state INTEGER NOT NULL,
         read_reported INTEGER NOT NULL DEFAULT 0,
         UNIQUE (contact, id)
     );
     CREATE INDEX messages_order ON messages (contact, seq, outgoing, id);
     CREATE INDEX messages_pending ON messages (contact, outgoing, state) WHERE state < 2 OR read_reported = 0;",
    // 2: full-text search over message bodies, filled from what is there.
    "CREATE VIRTUAL TABLE messages_fts USING fts5 (body, content = 'messages', content_rowid = 'rowid');
     INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
     CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
         INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
     END;
     CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
         INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
     END;
     CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
         INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
         INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
     END;",
    // 3: partial indexes matching the outbox, unread and read-receipt
    // queries term for term (SQLite uses a partial index only then), so
    // they cost the same with a million messages as with ten.
    "DROP INDEX messages_pending;
     CREATE INDEX messages_outbox ON messages (contact, seq) WHERE outgoing = 1 AND state < 2;
     CREATE INDEX messages_unread ON messages (contact) WHERE outgoing = 0 AND state < 3;
     CREATE INDEX messages_unreported ON messages (contact) WHERE read_reported = 0;",
    // 4: index message text in batches instead of per insert. An FTS5
    // insert in its own transaction costs more than the message insert
    // itself; `fts_indexed` is the highest rowid indexed so far, and
    // `Store::index_pending` (called before every search) catches up.
    "DROP TRIGGER messages_fts_insert;
     DROP TRIGGER messages_fts_delete;
     DROP TRIGGER messages_fts_update;
     INSERT INTO meta (key, value) VALUES ('fts_indexed', (SELECT coalesce(max(rowid), 0) FROM messages))
         ON CONFLICT (key) DO UPDATE SET value = excluded.value;
     CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
         WHEN old.rowid <= (SELECT value FROM meta WHERE key = 'fts_indexed') BEGIN
         INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
     END;",
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Why the history database could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not a database or is corrupt; it was left untouched.
    #[error(
        "history database {path} is damaged ({message}); it was not modified — restore a backup or move it away"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        message: String,
    },
    /// The file was written by a newer version of the program.
    #[error(
        "history database {path} has schema version {found}, newer than this program's {supported}"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// Any other SQLite failure.
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value is not what this program writes.
    #[error("history database holds an invalid value: {0}")]
    Invalid(&'static str),
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The open database.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Connection,
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// A consistent copy of the database at `src`, written to `dst` (which must
/// not exist), readable while another connection writes.
pub(crate) fn snapshot(src: &Path, dst: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let dst = dst.to_str().ok_or(StoreError::Invalid("non-UTF-8 path"))?;
    conn.execute("VACUUM INTO ?1", [dst])?;
    Ok(())
}

impl Store {
    /// Opens (creating if missing) and migrates the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Self::open_at_version(path, SCHEMA_VERSION)
    }

    /// Opens and migrates only up to `target` (tests build old schemas).
    pub(crate) fn open_at_version(path: &Path, target: u32) -> Result<Self> {
        let damaged = |e: rusqlite::Error| {
            if is_damage(&e) {
                StoreError::Damaged {
                    path: path.to_owned(),
                    message: e.to_string(),
                }
            } else {
                StoreError::Sqlite(e)
            }
        };
        let conn = Connection::open(path).map_err(damaged)?;
        // Read before anything writes: a damaged file must not be touched.
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(damaged)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(damaged)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 8192;")
            .map_err(damaged)?;
        let mut store = Self { conn };
        store.migrate(version, target).map_err(|e| match e {
            StoreError::Sqlite(e) => damaged(e),
            other => other,
        })?;
        Ok(store)
    }

    fn migrate(&mut self, from: u32, to: u32) -> Result<()> {
        for version in from..to {
            let tx = self.conn.transaction()?;
            tx.execute_batch(MIGRATIONS[version as usize])?;
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The schema version of the open file.
    #[cfg(test)]
    pub(crate) fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Runs `f` in one transaction: all of its writes or none. Inside
    /// another batch, `f` simply joins it.
    pub(crate) fn batch<T>(&self, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        let tx = self.conn.unchecked_transaction()?;
        let value = f(self)?;
        tx.commit()?;
        Ok(value)
    }

    // ---- meta ----

    pub(crate) fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub(crate) fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // ---- contacts ----

    /// Adds a contact, or updates name and addresses of an existing one
    /// (whose state is then raised to `state` only if it was `Declined`).
    pub(crate) fn add_contact(
        &self,
        peer: &PeerId,
        name: &str,
        state: ContactState,
        addrs: &[Endpoint],
        request: Option<(&[u8; 4], &str, Option<&PeerId>)>,
    ) -> Result<()> {
        let (token, message, replaces) = match request {
            Some((t, m, r)) => (Some(t.as_slice()), m, r.map(|r| r.as_bytes().as_slice())),
            None => (None, "", None),
        };
        self.conn.execute(
            "INSERT INTO contacts (peer, name, state, addrs, added_at, request_token, request_message, replaces)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (peer) DO UPDATE SET
                 name = excluded.name,
                 addrs = CASE WHEN excluded.addrs = '' THEN addrs ELSE excluded.addrs END,
                 state = CASE WHEN state = 2 THEN excluded.state ELSE state END,
                 request_token = coalesce(excluded.request_token, request_token),
                 request_message = CASE WHEN excluded.request_token IS NULL THEN request_message ELSE excluded.request_message END,
                 replaces = coalesce(excluded.replaces, replaces)",
            params![peer.as_bytes(), name, state.to_db(), join_addrs(addrs), now_ms(), token, message, replaces],
        )?;
        Ok(())
    }

    pub(crate) fn contact_state(&self, peer: &PeerId) -> Result<Option<ContactState>> {
        Ok(self
            .conn
            .prepare_cached("SELECT state FROM contacts WHERE peer = ?1")?
            .query_row([peer.as_bytes()], |r| r.get(0).map(ContactState::from_db))
            .optional()?)
    }

    pub(crate) fn contact(&self, peer: &PeerId) -> Result<Option<ContactRow>> {
        Ok(self
            .conn
            .prepare_cached(&format!("{CONTACT_SELECT} WHERE peer = ?1"))?
            .query_row([peer.as_bytes()], contact_row)
            .optional()?)
    }

    pub(crate) fn contacts(&self) -> Result<Vec<ContactRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{CONTACT_SELECT} ORDER BY name COLLATE NOCASE, peer"
        ))?;
        let rows = stmt.query_map([], contact_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn set_contact_state(&self, peer: &PeerId, state: ContactState) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE contacts SET state = ?2 WHERE peer = ?1 AND state != ?2",
            params![peer.as_bytes(), state.to_db()],
        )? > 0)
    }

    pub(crate) fn rename_contact(&self, peer: &PeerId, name: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE contacts SET name = ?2 WHERE peer = ?1",
            params![peer.as_bytes(), name],
        )? > 0)
    }

    pub(crate) fn set_verified(&self, peer: &PeerId, verified: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE contacts SET verified = ?2 WHERE peer = ?1",
            params![peer.as_bytes(), verified],
        )? > 0)
    }

    pub(crate) fn set_addrs(&self, peer: &PeerId, addrs: &[Endpoint]) -> Result<()> {
        self.conn.execute(
            "UPDATE contacts SET addrs = ?2 WHERE peer = ?1",
            params![peer.as_bytes(), join_addrs(addrs)],
        )?;
        Ok(())
    }

    pub(crate) fn set_last_seen(&self, peer: &PeerId, at: i64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE contacts SET last_seen = ?2 WHERE peer = ?1")?
            .execute(params![peer.as_bytes(), at])?;
        Ok(())
    }

    /// Removes a contact and its conversation.
    pub(crate) fn remove_contact(&self, peer: &PeerId) -> Result<bool> {
        self.batch(|s| {
            s.index_pending()?;
            s.conn.execute("DELETE FROM messages WHERE contact = ?1", [peer.as_bytes()])?;
            // Rowids freed at the end may be reused: they must count as
            // not yet indexed.
            s.conn.execute(
                "UPDATE meta SET value = (SELECT coalesce(max(rowid), 0) FROM messages) WHERE key = 'fts_indexed'",
                [],
            )?;
            Ok(s.conn.execute("DELETE FROM contacts WHERE peer = ?1", [peer.as_bytes()])? > 0)
        })
    }

    /// Adds messages stored since the last call to the full-text index;
    /// returns how many.
    pub(crate) fn index_pending(&self) -> Result<usize> {
        self.batch(|s| {
            let added = s
                .conn
                .prepare_cached(
                    "INSERT INTO messages_fts (rowid, body)
                     SELECT rowid, body FROM messages WHERE rowid > (SELECT value FROM meta WHERE key = 'fts_indexed')",
                )?
                .execute([])?;
            if added > 0 {
                s.conn
                    .prepare_cached(
                        "UPDATE meta SET value = (SELECT coalesce(max(rowid), 0) FROM messages) WHERE key = 'fts_indexed'",
                    )?
                    .execute([])?;
            }
            Ok(added)
        })
    }

    // ---- requests and blocking ----

    /// Stores a request; returns whether it is new (not a repeat).
    pub(crate) fn add_request(&self, request: &FriendRequest) -> Result<bool> {
        let fresh = self.conn.execute(
            "INSERT INTO requests (peer, name, message, addrs, received_at, replaces) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (peer) DO NOTHING",
            params![
                request.from.as_bytes(),
                request.name,
                request.message,
                join_addrs(&request.addrs),
                request.received_at_ms,
                request.replaces.as_ref().map(|p| p.as_bytes().as_slice())
            ],
        )? > 0;
        if !fresh {
            self.conn.execute(
                "UPDATE requests SET name = ?2, message = ?3, addrs = ?4 WHERE peer = ?1",
                params![
                    request.from.as_bytes(),
                    request.name,
                    request.message,
                    join_addrs(&request.addrs)
                ],
            )?;
        }
        Ok(fresh)
    }

    pub(crate) fn requests(&self) -> Result<Vec<FriendRequest>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer, name, message, addrs, received_at, replaces FROM requests ORDER BY received_at")?;
        let rows = stmt.query_map([], |r| {
            Ok(FriendRequest {
                from: peer_col(r, 0)?,
                name: r.get(1)?,
                message: r.get(2)?,
                addrs: split_addrs(&r.get::<_, String>(3)?),
                received_at_ms: r.get(4)?,
                replaces: r
                    .get::<_, Option<Vec<u8>>>(5)?
                    .map(|b| peer_from_blob(&b))
                    .transpose()?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn request(&self, peer: &PeerId) -> Result<Option<FriendRequest>> {
        Ok(self.requests()?.into_iter().find(|r| r.from == *peer))
    }

    pub(crate) fn remove_request(&self, peer: &PeerId) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM requests WHERE peer = ?1", [peer.as_bytes()])?
            > 0)
    }

    pub(crate) fn block(&self, peer: &PeerId) -> Result<()> {
        self.batch(|s| {
            s.conn.execute(
                "INSERT OR IGNORE INTO blocked (peer, at) VALUES (?1, ?2)",
                params![peer.as_bytes(), now_ms()],
            )?;
            s.remove_request(peer)?;
            Ok(())
        })
    }

    pub(crate) fn unblock(&self, peer: &PeerId) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM blocked WHERE peer = ?1", [peer.as_bytes()])?
            > 0)
    }

    pub(crate) fn is_blocked(&self, peer: &PeerId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM blocked WHERE peer = ?1")?
            .exists([peer.as_bytes()])?)
    }

    pub(crate) fn blocked(&self) -> Result<Vec<PeerId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer FROM blocked ORDER BY at")?;
        let rows = stmt.query_map([], |r| peer_col(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- messages ----

    /// Writes a new outgoing message to the outbox, queued, with the next
    /// sequence number of the conversation: one past the highest seen from
    /// either side (a Lamport clock), so a reply sorts after what it
    /// answers. One statement, so one implicit transaction.
    pub(crate) fn insert_outgoing(&self, contact: &PeerId, text: &str) -> Result<Message> {
        let id = MessageId::random();
        let sent_at_ms = now_ms();
        let seq: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (contact, id, outgoing, seq, sent_at, body, state, read_reported)
                 SELECT ?1, ?2, 1, coalesce(max(seq), 0) + 1, ?3, ?4, 0, 1 FROM messages WHERE contact = ?1
                 RETURNING seq",
            )?
            .query_row(params![contact.as_bytes(), id.0, sent_at_ms, text], |r| r.get(0))?;
        Ok(Message {
            id,
            contact: *contact,
            outgoing: true,
            seq: seq as u64,
            sent_at_ms,
            received_at_ms: None,
            text: text.to_owned(),
            state: MessageState::Queued,
        })
    }

    /// Stores an incoming message unless one with its id is already there;
    /// returns it if it is new.
    pub(crate) fn insert_incoming(
        &self,
        contact: &PeerId,
        id: MessageId,
        seq: u64,
        sent_at_ms: i64,
        text: &str,
    ) -> Result<Option<Message>> {
        let seq = seq.min(i64::MAX as u64 / 2);
        let received = now_ms();
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (contact, id, outgoing, seq, sent_at, received_at, body, state, read_reported)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, 2, 1) ON CONFLICT (contact, id) DO NOTHING",
            )?
            .execute(params![contact.as_bytes(), id.0, seq as i64, sent_at_ms, received, text])?
            > 0;
        if !inserted {
            return Ok(None);
        }
        Ok(Some(Message {
            id,
            contact: *contact,
            outgoing: false,
            seq,
            sent_at_ms,
            received_at_ms: Some(received),
            text: text.to_owned(),
            state: MessageState::Delivered,
        }))
    }

    /// Outgoing messages not yet acknowledged, in sequence order.
    pub(crate) fn outbox(&self, contact: &PeerId, only_queued: bool) -> Result<Vec<Message>> {
        let max_state = if only_queued { 0 } else { 1 };
        let mut stmt = self.conn.prepare_cached(&format!(
            "{MESSAGE_SELECT} INDEXED BY messages_outbox
             WHERE contact = ?1 AND outgoing = 1 AND state < 2 AND state <= ?2 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params![contact.as_bytes(), max_state], message_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Raises an outgoing message's state; returns whether it changed
    /// (states never go backwards, so repeated acks change nothing).
    pub(crate) fn advance_state(
        &self,
        contact: &PeerId,
        id: &MessageId,
        state: MessageState,
    ) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("UPDATE messages SET state = ?3 WHERE contact = ?1 AND id = ?2 AND outgoing = 1 AND state < ?3")?
            .execute(params![contact.as_bytes(), id.0, state.to_db()])?
            > 0)
    }

    /// Marks every incoming message of the conversation read; returns the
    /// ids newly read.
    pub(crate) fn mark_read(&self, contact: &PeerId) -> Result<Vec<MessageId>> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE messages INDEXED BY messages_unread SET state = 3, read_reported = 0
             WHERE contact = ?1 AND outgoing = 0 AND state < 3 RETURNING id",
        )?;
        let rows = stmt.query_map([contact.as_bytes()], |r| id_col(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ids of messages read here whose read receipt has not been sent.
    pub(crate) fn unreported_reads(&self, contact: &PeerId) -> Result<Vec<MessageId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM messages INDEXED BY messages_unreported WHERE contact = ?1 AND read_reported = 0")?;
        let rows = stmt.query_map([contact.as_bytes()], |r| id_col(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn reads_reported(&self, contact: &PeerId, ids: &[MessageId]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE messages SET read_reported = 1 WHERE contact = ?1 AND id = ?2",
        )?;
        for id in ids {
            stmt.execute(params![contact.as_bytes(), id.0])?;
        }
        Ok(())
    }

    pub(crate) fn unread_count(&self, contact: &PeerId) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) FROM messages INDEXED BY messages_unread WHERE contact = ?1 AND outgoing = 0 AND state < 3")?
            .query_row([contact.as_bytes()], |r| r.get::<_, i64>(0))? as u64)
    }

    pub(crate) fn undelivered_count(&self, contact: &PeerId) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM messages INDEXED BY messages_outbox WHERE contact = ?1 AND outgoing = 1 AND state < 2",
            )?
            .query_row([contact.as_bytes()], |r| r.get::<_, i64>(0))? as u64)
    }

    pub(crate) fn message(&self, contact: &PeerId, id: &MessageId) -> Result<Option<Message>> {
        Ok(self
            .conn
            .prepare_cached(&format!("{MESSAGE_SELECT} WHERE contact = ?1 AND id = ?2"))?
            .query_row(params![contact.as_bytes(), id.0], message_row)
            .optional()?)
    }

    /// Up to `limit` messages before `before` (or the newest), oldest first.
    pub(crate) fn history(
        &self,
        contact: &PeerId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let limit = limit.clamp(1, 10_000);
        let (seq, outgoing, id) = match before {
            Some(c) => (c.seq.min(i64::MAX as u64) as i64, c.outgoing, c.id.0),
            None => (i64::MAX, true, [0xff; 16]),
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "{MESSAGE_SELECT} WHERE contact = ?1 AND (seq, outgoing, id) < (?2, ?3, ?4)
             ORDER BY seq DESC, outgoing DESC, id DESC LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![contact.as_bytes(), seq, outgoing, id, limit as i64 + 1],
            message_row,
        )?;
        let mut messages: Vec<Message> = rows.collect::<Result<_, _>>()?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        messages.reverse();
        let older = if more {
            messages.first().map(Message::cursor)
        } else {
            None
        };
        Ok(HistoryPage { messages, older })
    }

    /// Messages matching every word of `query`, newest first.
    pub(crate) fn search(
        &self,
        query: &str,
        contact: Option<&PeerId>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        // Each word becomes a quoted FTS5 string (prefix-matched), so user
        // text is never parsed as FTS5 syntax.
        let terms: Vec<String> = query
            .split_whitespace()
            .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
            .collect();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        self.index_pending()?;
        let fts = terms.join(" ");
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.contact, m.id, m.outgoing, m.seq, m.sent_at, m.received_at, m.body, m.state
             FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
             WHERE messages_fts MATCH ?1 AND (?2 IS NULL OR m.contact = ?2)
             ORDER BY messages_fts.rowid DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                fts,
                contact.map(|c| c.as_bytes().as_slice()),
                limit.min(10_000) as i64
            ],
            message_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A contact as stored, before presence is added.
#[derive(Debug, Clone)]
pub(crate) struct ContactRow {
    pub(crate) id: PeerId,
    pub(crate) name: String,
    pub(crate) state: ContactState,
    pub(crate) verified: bool,
    pub(crate) addrs: Vec<Endpoint>,
    pub(crate) last_seen: Option<i64>,
    pub(crate) request_token: Option<[u8; 4]>,
    pub(crate) request_message: String,
    pub(crate) replaces: Option<PeerId>,
}

impl ContactRow {
    pub(crate) fn into_contact(
        self,
        presence: Option<crust::ConnectionInfo>,
        unread: u64,
        undelivered: u64,
    ) -> Contact {
        Contact {
            id: self.id,
            name: self.name,
            state: self.state,
            verified: self.verified,
            addrs: self.addrs,
            presence: match presence {
                Some(info) => Presence::Online(info),
                None => Presence::Offline {
                    last_seen_ms: self.last_seen,
                    connecting: false,
                },
            },
            unread,
            undelivered,
        }
    }
}

const CONTACT_SELECT: &str = "SELECT peer, name, state, verified, addrs, last_seen, request_token, request_message, replaces FROM contacts";

fn contact_row(r: &Row<'_>) -> rusqlite::Result<ContactRow> {
    Ok(ContactRow {
        id: peer_col(r, 0)?,
        name: r.get(1)?,
        state: ContactState::from_db(r.get(2)?),
        verified: r.get(3)?,
        addrs: split_addrs(&r.get::<_, String>(4)?),
        last_seen: r.get(5)?,
        request_token: r
            .get::<_, Option<Vec<u8>>>(6)?
            .and_then(|b| b.try_into().ok()),
        request_message: r.get(7)?,
        replaces: r
            .get::<_, Option<Vec<u8>>>(8)?
            .map(|b| peer_from_blob(&b))
            .transpose()?,
    })
}

const MESSAGE_SELECT: &str =
    "SELECT contact, id, outgoing, seq, sent_at, received_at, body, state FROM messages";

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        contact: peer_col(r, 0)?,
        id: id_col(r, 1)?,
        outgoing: r.get(2)?,
        seq: r.get::<_, i64>(3)? as u64,
        sent_at_ms: r.get(4)?,
        received_at_ms: r.get(5)?,
        text: r.get(6)?,
        state: MessageState::from_db(r.get(7)?),
    })
}

fn invalid(what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        Box::new(StoreError::Invalid(what)),
    )
}

fn peer_from_blob(bytes: &[u8]) -> rusqlite::Result<PeerId> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid("peer id length"))?;
    PeerId::from_bytes(bytes).map_err(|_| invalid("peer id"))
}

fn peer_col(r: &Row<'_>, i: usize) -> rusqlite::Result<PeerId> {
    peer_from_blob(&r.get::<_, Vec<u8>>(i)?)
}

fn id_col(r: &Row<'_>, i: usize) -> rusqlite::Result<MessageId> {
    let bytes: [u8; 16] = r
        .get::<_, Vec<u8>>(i)?
        .try_into()
        .map_err(|_| invalid("message id length"))?;
    Ok(MessageId(bytes))
}

fn join_addrs(addrs: &[Endpoint]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn split_addrs(text: &str) -> Vec<Endpoint> {
    text.split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust::SecretId;

    fn peer() -> PeerId {
        SecretId::generate().peer_id()
    }

    fn store_with_friend() -> (tempfile::TempDir, Store, PeerId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.sqlite")).unwrap();
        let bob = peer();
        store
            .add_contact(&bob, "bob", ContactState::Friend, &[], None)
            .unwrap();
        (dir, store, bob)
    }

    #[test]
    fn opens_in_wal_mode_at_the_latest_schema() {
        let (_dir, store, _) = store_with_friend();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn incoming_duplicates_are_dropped_by_id() {
        let (_dir, store, bob) = store_with_friend();
        let id = MessageId::random();
        assert!(
            store
                .insert_incoming(&bob, id, 1, 5, "hi")
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .insert_incoming(&bob, id, 1, 5, "hi")
                .unwrap()
                .is_none()
        );
        assert_eq!(store.history(&bob, None, 10).unwrap().messages.len(), 1);
        // The same id from another contact is a different message.
        let carol = peer();
        store
            .add_contact(&carol, "carol", ContactState::Friend, &[], None)
            .unwrap();
        assert!(
            store
                .insert_incoming(&carol, id, 1, 5, "hi")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn history_is_ordered_by_sender_sequence_not_arrival() {
        let (_dir, store, bob) = store_with_friend();
        let (a, b, c) = (
            MessageId::random(),
            MessageId::random(),
            MessageId::random(),
        );
        store.insert_incoming(&bob, c, 3, 0, "third").unwrap();
        store.insert_incoming(&bob, a, 1, 0, "first").unwrap();
        store.insert_incoming(&bob, b, 2, 0, "second").unwrap();
        let texts: Vec<_> = store
            .history(&bob, None, 10)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["first", "second", "third"]);
        // Our reply comes after what we have seen (Lamport clock).
        let reply = store.insert_outgoing(&bob, "reply").unwrap();
        assert_eq!(reply.seq, 4);
    }

    #[test]
    fn history_paging_is_stable_while_messages_arrive() {
        let (_dir, store, bob) = store_with_friend();
        for i in 0..25 {
            if i % 2 == 0 {
                store.insert_outgoing(&bob, &format!("m{i}")).unwrap();
            } else {
                store
                    .insert_incoming(&bob, MessageId::random(), i + 1, 0, &format!("m{i}"))
                    .unwrap();
            }
        }
        let first = store.history(&bob, None, 10).unwrap();
        assert_eq!(first.messages.len(), 10);
        // New messages arrive between page loads.
        store.insert_outgoing(&bob, "late").unwrap();
        let mut seen: Vec<String> = first.messages.iter().map(|m| m.text.clone()).collect();
        let mut cursor = first.older;
        while let Some(c) = cursor {
            let page = store.history(&bob, Some(c), 10).unwrap();
            let mut texts: Vec<String> = page.messages.iter().map(|m| m.text.clone()).collect();
            texts.extend(seen);
            seen = texts;
            cursor = page.older;
        }
        let expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn states_only_move_forward() {
        let (_dir, store, bob) = store_with_friend();
        let m = store.insert_outgoing(&bob, "x").unwrap();
        assert_eq!(store.outbox(&bob, true).unwrap().len(), 1);
        assert!(
            store
                .advance_state(&bob, &m.id, MessageState::Sent)
                .unwrap()
        );
        assert!(store.outbox(&bob, true).unwrap().is_empty());
        assert_eq!(store.outbox(&bob, false).unwrap().len(), 1);
        assert!(
            store
                .advance_state(&bob, &m.id, MessageState::Read)
                .unwrap()
        );
        assert!(
            !store
                .advance_state(&bob, &m.id, MessageState::Delivered)
                .unwrap()
        );
        assert_eq!(
            store.message(&bob, &m.id).unwrap().unwrap().state,
            MessageState::Read
        );
        assert!(store.outbox(&bob, false).unwrap().is_empty());
    }

    #[test]
    fn hot_queries_use_their_partial_indexes() {
        // `INDEXED BY` makes preparing fail if the index cannot serve the
        // query, so this guards against an index and a query drifting apart.
        let (_dir, store, bob) = store_with_friend();
        store.outbox(&bob, false).unwrap();
        store.outbox(&bob, true).unwrap();
        store.unread_count(&bob).unwrap();
        store.undelivered_count(&bob).unwrap();
        store.unreported_reads(&bob).unwrap();
        store.mark_read(&bob).unwrap();
    }

    #[test]
    fn search_finds_words_and_survives_fts_syntax() {
        let (_dir, store, bob) = store_with_friend();
        store.insert_outgoing(&bob, "the quick brown fox").unwrap();
        store
            .insert_incoming(&bob, MessageId::random(), 9, 0, "lazy dogs sleep")
            .unwrap();
        store.insert_outgoing(&bob, "Grüße aus Köln").unwrap();
        let hits = store.search("quick fox", None, 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].text, "the quick brown fox");
        assert_eq!(store.search("dog", Some(&bob), 10).unwrap().len(), 1);
        assert_eq!(store.search("köln", None, 10).unwrap().len(), 1);
        assert!(store.search("cat", None, 10).unwrap().is_empty());
        assert!(store.search("\"AND OR ( *", None, 10).unwrap().is_empty());
        assert!(store.search("fox", Some(&peer()), 10).unwrap().is_empty());
    }

    #[test]
    fn search_sees_messages_stored_after_the_last_indexing_and_forgets_removed_ones() {
        let (_dir, store, bob) = store_with_friend();
        store.insert_outgoing(&bob, "first apple").unwrap();
        assert_eq!(store.search("apple", None, 10).unwrap().len(), 1);
        store.insert_outgoing(&bob, "second apple").unwrap();
        assert_eq!(store.search("apple", None, 10).unwrap().len(), 2);
        store.remove_contact(&bob).unwrap();
        assert!(store.search("apple", None, 10).unwrap().is_empty());
        // Rowids freed by the removal are reused and still indexed.
        store
            .add_contact(&bob, "bob", ContactState::Friend, &[], None)
            .unwrap();
        store.insert_outgoing(&bob, "third apple").unwrap();
        let hits = store.search("apple", None, 10).unwrap();
        assert_eq!(
            hits.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["third apple"]
        );
        let check: rusqlite::Result<()> = store
            .conn
            .execute_batch("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')");
        check.unwrap();
    }

    #[test]
    fn read_receipts_are_tracked_until_reported() {
        let (_dir, store, bob) = store_with_friend();
        store
            .insert_incoming(&bob, MessageId::random(), 1, 0, "a")
            .unwrap();
        store
            .insert_incoming(&bob, MessageId::random(), 2, 0, "b")
            .unwrap();
        assert_eq!(store.unread_count(&bob).unwrap(), 2);
        let read = store.mark_read(&bob).unwrap();
        assert_eq!(read.len(), 2);
        assert!(store.mark_read(&bob).unwrap().is_empty());
        assert_eq!(store.unread_count(&bob).unwrap(), 0);
        assert_eq!(store.unreported_reads(&bob).unwrap().len(), 2);
        store.reads_reported(&bob, &read).unwrap();
        assert!(store.unreported_reads(&bob).unwrap().is_empty());
    }

    #[test]
    fn migrating_from_schema_1_keeps_messages_and_makes_them_searchable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let bob = peer();
        {
            let old = Store::open_at_version(&path, 1).unwrap();
            assert_eq!(old.schema_version().unwrap(), 1);
            old.add_contact(&bob, "bob", ContactState::Friend, &[], None)
                .unwrap();
            old.insert_incoming(
                &bob,
                MessageId::random(),
                1,
                0,
                "written before search existed",
            )
            .unwrap();
            assert!(
                old.search("written", None, 10).is_err(),
                "schema 1 has no FTS table"
            );
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.history(&bob, None, 10).unwrap().messages.len(), 1);
        assert_eq!(store.search("before search", None, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_and_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("damaged"));
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
        assert!(!dir.path().join("h.sqlite-wal").exists());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn snapshot_copies_a_database_in_use() {
        let (dir, store, bob) = store_with_friend();
        store.insert_outgoing(&bob, "keep me").unwrap();
        let copy = dir.path().join("copy.sqlite");
        snapshot(&dir.path().join("h.sqlite"), &copy).unwrap();
        let copied = Store::open(&copy).unwrap();
        assert_eq!(copied.search("keep", None, 5).unwrap().len(), 1);
    }
}
