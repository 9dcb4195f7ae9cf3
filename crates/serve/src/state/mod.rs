//! The embedded database (SQLite, WAL) in `--state DIR`: the engine's snapshots and the journal
//! of what came after them, input positions, every alert, the per-bin series, and the outbox of
//! notifications with each sink's cursor.
//!
//! # Durability
//!
//! Every batch of input is journaled, as the partial aggregates it produced (its effect, not
//! its bytes: a fraction of the size), in the same transaction as the alerts and notifications
//! it caused and the input position it reached. A restart loads the newest snapshot and
//! re-applies the journal after it; the alerts and notifications this re-creates are already
//! stored under the same stable ids and are not stored twice. `synchronous=NORMAL` in WAL
//! mode: a committed transaction survives the process being killed (the OS holds it); add
//! `fsync = true` under `[serve]` to survive a power loss too, at one fsync per commit.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use floodwatch_core::time::Nanos;
use floodwatch_pipeline::Partial;

/// Schema version this build writes; older databases are migrated in [`open`].
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    journal_seq INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS positions (input TEXT PRIMARY KEY, position TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    bin INTEGER NOT NULL,
    time_generated INTEGER NOT NULL,
    stage TEXT NOT NULL,
    suppressed INTEGER NOT NULL,
    carpet INTEGER NOT NULL,
    incident_id TEXT,
    detected_at INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (time_generated);
CREATE INDEX IF NOT EXISTS alerts_by_device ON alerts (device, time_generated);
CREATE TABLE IF NOT EXISTS series (
    device TEXT NOT NULL,
    bin INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (device, bin)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_cursor (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ingest_keys (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    answer TEXT NOT NULL
);
";

/// Idempotency keys remembered (the newest); a client resends within minutes, not days.
const KEYS_KEPT: i64 = 100_000;

/// What the journal holds, in order.
// Entries are moved from source to journal once and never kept in numbers, so the size of
// the big variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Entry {
    /// A batch of input: its effect, and where its input stands after it.
    Batch {
        input: String,
        partial: Partial,
        diag: InputDelta,
        position: Option<String>,
    },
    /// Event time moved on while the stream was quiet (see `Engine::advance`).
    Advance { to: Nanos },
    /// These inputs are idle now (no batch for `idle_close`): they no longer hold bins open.
    Idle { inputs: Vec<String> },
}

/// The journal's encoding: a format byte, then postcard (compact, and several times faster to
/// write than JSON: the journal is on the ingest path). Entries only live until the next
/// snapshot; a clean stop (SIGTERM) leaves none, which is how to upgrade across a change of
/// layout.
const JOURNAL_POSTCARD: u8 = 1;

pub fn encode_entry(e: &Entry) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![JOURNAL_POSTCARD];
    postcard::to_io(e, &mut out)?;
    Ok(out)
}

pub fn decode_entry(b: &[u8]) -> Result<Entry, String> {
    match b.split_first() {
        Some((&JOURNAL_POSTCARD, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((b'{', _)) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!("unknown journal format {f}")),
        None => Err("empty journal entry".into()),
    }
}

/// What a batch adds to its input's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputDelta {
    pub records: u64,
    pub bytes: u64,
    pub events: u64,
    pub duplicates: u64,
    /// Skipped records by reason.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// The first few skip examples, with where they were.
    pub examples: Vec<String>,
}

/// A stored alert row.
#[derive(Clone, Debug, Serialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub stage: String,
    pub json: serde_json::Value,
}

/// One outbox row.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub seq: i64,
    pub key: String,
    pub kind: String,
    pub payload: String,
}

/// Opens (creating or migrating) the database in `dir`.
pub fn open(dir: &Path, fsync: bool) -> rusqlite::Result<Connection> {
    std::fs::create_dir_all(dir).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            )),
        )
    })?;
    let conn = Connection::open(dir.join("floodwatch.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .and_then(|s| s.parse().ok());
    match v {
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!(
                    "state database schema {v} is newer than this build's {SCHEMA_VERSION}: run the newer floodwatch, or start with a new --state"
                )),
            ));
        }
        Some(_) => {}
    }
    Ok(conn)
}

/// A read-only connection for the API (WAL lets it read while the engine writes).
pub fn open_reader(dir: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        dir.join("floodwatch.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// The newest snapshot: (journal sequence it covers, state blob).
pub fn load_snapshot(conn: &Connection) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    conn.query_row(
        "SELECT journal_seq, state FROM snapshot WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Replaces the snapshot and drops the journal it covers.
pub fn save_snapshot(conn: &Connection, seq: i64, state: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO snapshot (id, journal_seq, state) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET journal_seq = excluded.journal_seq, state = excluded.state",
        params![seq, state],
    )?;
    conn.execute("DELETE FROM journal WHERE seq <= ?1", params![seq])?;
    Ok(())
}

/// Journal entries after `seq`, in order.
pub fn journal_after(conn: &Connection, seq: i64) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
    let mut st = conn.prepare("SELECT seq, entry FROM journal WHERE seq > ?1 ORDER BY seq")?;
    let rows = st.query_map(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub fn append_journal(conn: &Connection, entry: &[u8]) -> rusqlite::Result<i64> {
    conn.execute("INSERT INTO journal (entry) VALUES (?1)", params![entry])?;
    Ok(conn.last_insert_rowid())
}

pub fn set_position(conn: &Connection, input: &str, position: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO positions (input, position) VALUES (?1, ?2)
         ON CONFLICT (input) DO UPDATE SET position = excluded.position",
        params![input, position],
    )?;
    Ok(())
}

pub fn positions(
    conn: &Connection,
) -> rusqlite::Result<std::collections::BTreeMap<String, String>> {
    let mut st = conn.prepare("SELECT input, position FROM positions")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Stores an alert once (a replay re-creates it under the same id). Returns whether it was new.
#[allow(clippy::too_many_arguments)]
pub fn insert_alert(
    conn: &Connection,
    alert_id: &str,
    device: &str,
    bin: i64,
    time_generated: Nanos,
    stage: &str,
    suppressed: bool,
    carpet: bool,
    incident_id: Option<&str>,
    detected_at: Nanos,
    json: &str,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO alerts (alert_id, device, bin, time_generated, stage, suppressed, carpet, incident_id, detected_at, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![alert_id, device, bin, time_generated, stage, suppressed, carpet, incident_id, detected_at, json],
    )?;
    Ok(n > 0)
}

/// Queues a notification once (by key).
pub fn enqueue(
    conn: &Connection,
    key: &str,
    kind: &str,
    event_time: Nanos,
    payload: &str,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO outbox (key, kind, event_time, payload) VALUES (?1, ?2, ?3, ?4)",
        params![key, kind, event_time, payload],
    )?;
    Ok(n > 0)
}

pub fn upsert_series(
    conn: &Connection,
    device: &str,
    bin: i64,
    json: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO series (device, bin, json) VALUES (?1, ?2, ?3)
         ON CONFLICT (device, bin) DO UPDATE SET json = excluded.json",
        params![device, bin, json],
    )?;
    Ok(())
}

/// Outbox rows after `seq` of the given kinds, oldest first.
pub fn outbox_after(
    conn: &Connection,
    seq: i64,
    kinds: &[&str],
    limit: usize,
) -> rusqlite::Result<Vec<OutboxRow>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, key, kind, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = st.query_map(params![seq, limit as i64 * 4], |r| {
        Ok(OutboxRow {
            seq: r.get(0)?,
            key: r.get(1)?,
            kind: r.get(2)?,
            payload: r.get(3)?,
        })
    })?;
    let mut out = Vec::new();
    for r in rows {
        let r = r?;
        if kinds.contains(&r.kind.as_str()) {
            out.push(r);
        } else if out.is_empty() {
            // Rows of other kinds still move the cursor on, so keep one marker.
            out.push(OutboxRow {
                kind: String::new(),
                ..r
            });
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

pub fn outbox_seq_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT seq FROM outbox WHERE key = ?1", params![key], |r| {
        r.get(0)
    })
    .optional()
}

/// Where `sink` stands in the outbox. A sink seen for the first time starts at the outbox's
/// end: a channel added today gets today's notifications, not a month of old ones.
pub fn cursor(conn: &Connection, sink: &str) -> rusqlite::Result<i64> {
    if let Some(seq) = conn
        .query_row(
            "SELECT seq FROM sink_cursor WHERE sink = ?1",
            params![sink],
            |r| r.get(0),
        )
        .optional()?
    {
        return Ok(seq);
    }
    let end: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM outbox", [], |r| r.get(0))?;
    conn.execute(
        "INSERT OR IGNORE INTO sink_cursor (sink, seq) VALUES (?1, ?2)",
        params![sink, end],
    )?;
    Ok(end)
}

/// Forgets the cursors of sinks no longer configured, so they neither hold the outbox's
/// retention back nor resume a month late if added again.
pub fn forget_other_sinks(conn: &Connection, keep: &[String]) -> rusqlite::Result<()> {
    let mut st = conn.prepare("SELECT sink FROM sink_cursor")?;
    let all: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for s in all.iter().filter(|s| !keep.contains(s)) {
        conn.execute("DELETE FROM sink_cursor WHERE sink = ?1", params![s])?;
    }
    Ok(())
}

pub fn set_cursor(conn: &Connection, sink: &str, seq: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sink_cursor (sink, seq) VALUES (?1, ?2)
         ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq)",
        params![sink, seq],
    )?;
    Ok(())
}

/// The answer first given to the batch with idempotency key `key`, if any.
pub fn answer_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT answer FROM ingest_keys WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()
}

pub fn remember_answer(conn: &Connection, key: &str, answer: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO ingest_keys (key, answer) VALUES (?1, ?2)")?
        .execute(params![key, answer])?;
    Ok(())
}

/// Drops what is older than the retention horizon (event time): alerts, series, and outbox
/// rows every sink is past.
pub fn retain(conn: &Connection, before: Nanos, width: Nanos) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM alerts WHERE time_generated < ?1",
        params![before],
    )?;
    conn.execute(
        "DELETE FROM ingest_keys WHERE n <= (SELECT max(n) FROM ingest_keys) - ?1",
        params![KEYS_KEPT],
    )?;
    conn.execute(
        "DELETE FROM series WHERE bin < ?1",
        params![before / width.max(1)],
    )?;
    conn.execute(
        "DELETE FROM outbox WHERE event_time < ?1 AND seq <= (SELECT coalesce(min(seq), 0) FROM sink_cursor)",
        params![before],
    )?;
    Ok(())
}
