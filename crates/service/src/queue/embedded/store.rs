//! The embedded queue's storage: one SQLite table in WAL mode with `synchronous=FULL`, so a
//! committed insert is on disk (fsync'd) before the receiver answers 204.
//!
//! Every call is blocking; callers run them on tokio's blocking pool.

use std::{collections::BTreeMap, path::Path, sync::Mutex};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use crate::queue::Message;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    timestamp    INTEGER NOT NULL,
    headers      TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    available_at INTEGER NOT NULL,  -- Unix milliseconds: retries wait until then
    leased       INTEGER NOT NULL DEFAULT 0,
    deliveries   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (leased, available_at, seq);
-- The conversations the relay knows: an event was accepted for each, or a record published.
CREATE TABLE IF NOT EXISTS ledger (
    conversation_id TEXT    PRIMARY KEY,
    seen_at         INTEGER NOT NULL   -- Unix milliseconds, last seen; old entries are pruned
);
CREATE INDEX IF NOT EXISTS ledger_seen ON ledger (seen_at);
";

/// The bytes a message takes in the store: body, ids and headers as written. [`Store::stored_bytes`]
/// sums the same over the table.
pub fn stored_size(message: &Message) -> u64 {
    (message.body.len() + message.message_id.len() + message.event_type.len() + headers_json(message).len()) as u64
}

fn headers_json(message: &Message) -> String {
    serde_json::to_string(&message.headers).unwrap_or_else(|_| "{}".into())
}

/// Columns 1 to 5 of a `SELECT seq, message_id, event_type, timestamp, headers, body …` row.
fn read_message(row: &rusqlite::Row<'_>) -> StoreResult<Message> {
    let headers: String = row.get(4)?;
    let body: Vec<u8> = row.get(5)?;
    Ok(Message {
        body: Bytes::from(body),
        message_id: row.get(1)?,
        event_type: row.get(2)?,
        timestamp: row.get::<_, i64>(3)?.max(0) as u64,
        headers: serde_json::from_str::<BTreeMap<String, String>>(&headers).unwrap_or_default(),
    })
}

/// A message read without leasing it, with its place in the queue.
pub struct Stored {
    pub seq: i64,
    pub message: Message,
}

/// A message handed to a consumer, not yet settled.
pub struct Leased {
    pub seq: i64,
    pub message: Message,
    /// Deliveries including this one: the crash-loop backstop counts them.
    pub deliveries: u32,
}

pub struct Store {
    connection: Mutex<Connection>,
}

type StoreResult<T> = Result<T, rusqlite::Error>;

/// Makes the names of the files just created in `dir`, and `dir`'s own in its parent, durable:
/// SQLite syncs the directory when it creates the WAL, not the files created before it (the
/// database, the JSON Lines files). Best effort: some network and FUSE filesystems cannot sync a
/// directory, and refusing to start on them would be worse than the power-cut window this closes.
pub fn sync_dir(dir: &Path) {
    let parent = dir.parent().map(|parent| if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
    for dir in std::iter::once(dir).chain(parent) {
        if let Err(error) = std::fs::File::open(dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(dir = %dir.display(), %error, "cannot sync the directory: the files just created in it are durable once the filesystem writes its entries");
        }
    }
}

/// The database file in the data directory; SQLite adds `-wal` and `-shm` beside it.
pub const FILE: &str = "queue.sqlite3";

/// Makes the database owner-only before SQLite opens it: SQLite gives its `-wal` and `-shm`
/// files the database file's mode, and one written by an older version is restricted too.
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    for suffix in ["-wal", "-shm"] {
        crate::owner_only::restrict_if_present(&dir.join(format!("{FILE}{suffix}")))?;
    }
    crate::owner_only::open_file(&dir.join(FILE)).map(drop)
}

impl Store {
    /// Opens (or creates) `queue.sqlite3` in `dir`. Leases left by a process that died are
    /// released: in one process, nothing else can hold them.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let connection = Connection::open(dir.join(FILE))?;
        // WAL: readers never block the writer. FULL: the WAL is fsync'd at every commit, which
        // is what makes a 204 durable across a power cut, not only a process crash.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        connection.execute("UPDATE messages SET leased = 0 WHERE leased = 1", [])?;
        Ok(Self { connection: Mutex::new(connection) })
    }

    /// Opens the store only to count what it holds, leaving leases alone (for tools and tests
    /// that look at a queue another process runs).
    pub fn open_to_inspect(dir: &Path) -> StoreResult<Self> {
        let connection = Connection::open(dir.join("queue.sqlite3"))?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { connection: Mutex::new(connection) })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deliveries counted so far, of every message.
    #[cfg(test)]
    pub fn deliveries(&self) -> StoreResult<Vec<u32>> {
        let connection = self.connection();
        let mut statement = connection.prepare("SELECT deliveries FROM messages ORDER BY seq")?;
        let counts = statement.query_map([], |row| row.get(0))?.collect();
        counts
    }

    /// Holds the store as a long write would: a test makes a look wait on it.
    #[cfg(test)]
    pub fn busy(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection()
    }

    pub fn insert(&self, message: &Message, available_at_ms: i64) -> StoreResult<()> {
        insert_message(&self.connection(), message, available_at_ms)
    }

    /// Inserts `message` and remembers that the relay knows `conversation_id`, in one transaction
    /// (one fsync): apart, a crash between the two would leave a queued event whose call
    /// reconciliation does not know, and would send a second time.
    pub fn insert_known(
        &self,
        message: &Message,
        available_at_ms: i64,
        conversation_id: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        insert_message(&transaction, message, available_at_ms)?;
        remember(&transaction, conversation_id, now_ms)?;
        transaction.commit()
    }

    /// Remembers that the relay knows `conversation_id`.
    pub fn note_known(&self, conversation_id: &str, now_ms: i64) -> StoreResult<()> {
        remember(&self.connection(), conversation_id, now_ms)
    }

    /// Conversations seen at or after `since_ms`.
    pub fn known_since(&self, since_ms: i64) -> StoreResult<std::collections::HashSet<String>> {
        let connection = self.connection();
        let mut statement = connection.prepare("SELECT conversation_id FROM ledger WHERE seen_at >= ?1")?;
        let ids = statement.query_map([since_ms], |row| row.get(0))?.collect();
        ids
    }

    /// Forgets conversations last seen before `before_ms` (the log's retention).
    pub fn forget_known_before(&self, before_ms: i64) -> StoreResult<()> {
        self.connection().execute("DELETE FROM ledger WHERE seen_at < ?1", [before_ms]).map(|_| ())
    }

    /// Leases the oldest message that is due, counting the delivery.
    pub fn lease_next(&self, now_ms: i64) -> StoreResult<Option<Leased>> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        let row = transaction
            .query_row(
                "SELECT seq, message_id, event_type, timestamp, headers, body, deliveries FROM messages
                 WHERE leased = 0 AND available_at <= ?1 ORDER BY available_at, seq LIMIT 1",
                [now_ms],
                |row| {
                    Ok(Leased { seq: row.get(0)?, message: read_message(row)?, deliveries: row.get::<_, u32>(6)? + 1 })
                },
            )
            .optional()?;
        if let Some(leased) = &row {
            transaction.execute(
                "UPDATE messages SET leased = 1, deliveries = ?2 WHERE seq = ?1",
                params![leased.seq, leased.deliveries],
            )?;
        }
        transaction.commit()?;
        Ok(row)
    }

    /// When the next unleased message falls due, if any.
    pub fn next_due(&self) -> StoreResult<Option<i64>> {
        self.connection().query_row("SELECT MIN(available_at) FROM messages WHERE leased = 0", [], |row| row.get(0))
    }

    /// Done with the message: it leaves the queue.
    pub fn remove(&self, seq: i64) -> StoreResult<()> {
        self.connection().execute("DELETE FROM messages WHERE seq = ?1", [seq]).map(|_| ())
    }

    /// Gives a leased message back for another delivery.
    pub fn release(&self, seq: i64) -> StoreResult<()> {
        self.connection().execute("UPDATE messages SET leased = 0 WHERE seq = ?1", [seq]).map(|_| ())
    }

    /// Event ids of the messages in the queue, oldest first.
    pub fn message_ids(&self) -> StoreResult<Vec<String>> {
        let connection = self.connection();
        let mut statement = connection.prepare("SELECT message_id FROM messages ORDER BY seq")?;
        let ids = statement.query_map([], |row| row.get(0))?.collect();
        ids
    }

    /// Messages in the queue, leased or not.
    pub fn len(&self) -> StoreResult<u64> {
        self.connection().query_row("SELECT COUNT(*) FROM messages", [], |row| row.get::<_, i64>(0)).map(|n| n as u64)
    }

    /// The oldest messages inserted after `after_seq` (0: from the start), in the order they were
    /// inserted, without leasing them (for a single reader that removes what it is done with, such
    /// as the spool's drainer): at most `limit`, and no more once they hold `max_bytes` (always at
    /// least one).
    pub fn oldest(&self, after_seq: i64, limit: usize, max_bytes: u64) -> StoreResult<Vec<Stored>> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT seq, message_id, event_type, timestamp, headers, body FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement
            .query_map([after_seq, limit as i64], |row| Ok(Stored { seq: row.get(0)?, message: read_message(row)? }))?;
        let (mut oldest, mut bytes) = (Vec::new(), 0);
        for row in rows {
            let stored = row?;
            bytes += stored_size(&stored.message);
            oldest.push(stored);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(oldest)
    }

    /// Removes these messages in one transaction: one fsync for all of them.
    pub fn remove_all(&self, seqs: &[i64]) -> StoreResult<()> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        {
            let mut statement = transaction.prepare_cached("DELETE FROM messages WHERE seq = ?1")?;
            for seq in seqs {
                statement.execute([seq])?;
            }
        }
        transaction.commit()
    }

    /// [`stored_size`] summed over every message in the queue.
    pub fn stored_bytes(&self) -> StoreResult<u64> {
        self.connection()
            .query_row(
                "SELECT COALESCE(SUM(length(body) + length(CAST(message_id AS BLOB))
                     + length(CAST(event_type AS BLOB)) + length(CAST(headers AS BLOB))), 0) FROM messages",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
    }
}

fn insert_message(connection: &Connection, message: &Message, available_at_ms: i64) -> StoreResult<()> {
    connection.execute(
        "INSERT INTO messages (message_id, event_type, timestamp, headers, body, available_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            message.message_id,
            message.event_type,
            message.timestamp as i64,
            headers_json(message),
            message.body.as_ref(),
            available_at_ms
        ],
    )?;
    Ok(())
}

fn remember(connection: &Connection, conversation_id: &str, now_ms: i64) -> StoreResult<()> {
    connection
        .execute(
            "INSERT INTO ledger (conversation_id, seen_at) VALUES (?1, ?2)
             ON CONFLICT (conversation_id) DO UPDATE SET seen_at = excluded.seen_at",
            params![conversation_id, now_ms],
        )
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_and_its_conversation_are_stored_together_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("relay-store-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).unwrap();
        let message = Message::sample();
        store.insert_known(&message, 0, "CA1", 1).unwrap();
        assert_eq!((store.len().unwrap(), store.known_since(0).unwrap().len()), (1, 1));

        // The ledger's write fails (a full disk, say): the event is not stored without it.
        store
            .connection()
            .execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'full'); END")
            .unwrap();
        assert!(store.insert_known(&message, 0, "CA2", 1).is_err());
        assert_eq!(store.len().unwrap(), 1, "the event whose conversation could not be noted is not queued");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
