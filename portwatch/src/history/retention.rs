//! Retention while recording: closed sockets older than `--retain`, then the
//! oldest closed sockets while the database holds more than `--max-size` bytes.
//! Open sockets and listeners still listening are never dropped; processes no
//! socket names any more go with them.
use std::time::Duration;

use rusqlite::{params, Connection};

use super::schema::SPAN_OPEN;

/// Default `--retain`: 30 days.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(30 * 86_400);
/// Default `--max-size`: 1 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// Rows deleted per step while over the size cap.
const SIZE_STEP: i64 = 10_000;

#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub retain: Duration,
    pub max_size: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            retain: DEFAULT_RETAIN,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// Bytes the database's live pages take (free pages are reused, not counted).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

impl Retention {
    /// Apply both limits at `now` (ns since the epoch). Only closed sockets go:
    /// open ones (and listeners still listening) have no `closed` time.
    pub fn enforce(&self, conn: &Connection, now: i64) -> rusqlite::Result<()> {
        let cutoff = now.saturating_sub(self.retain.as_nanos().min(i64::MAX as u128) as i64);
        let tx = conn.unchecked_transaction()?;
        // Per span (schema::span), through the (span, seen) index: a socket that
        // closed before the cutoff was first seen before it too.
        let mut old =
            tx.prepare("DELETE FROM sockets WHERE span = ?1 AND seen < ?2 AND closed < ?2")?;
        for span in 0..SPAN_OPEN {
            old.execute(params![span, cutoff])?;
        }
        drop(old);
        while used_bytes(&tx)? > self.max_size {
            // The oldest closed sockets: first seen first (rows go in in that
            // order, so the rowid order is close to it and needs no index).
            let deleted = tx.execute(
                "DELETE FROM sockets WHERE id IN (SELECT id FROM sockets WHERE span < ?2 ORDER BY id LIMIT ?1)",
                params![SIZE_STEP, SPAN_OPEN],
            )?;
            if deleted == 0 {
                break;
            }
        }
        tx.execute(
            "DELETE FROM processes WHERE NOT EXISTS (SELECT 1 FROM sockets WHERE sockets.process_id = processes.id)
               AND run_id <> (SELECT max(id) FROM runs)",
            [],
        )?;
        tx.commit()
    }
}
