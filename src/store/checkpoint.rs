//! The WAL checkpointer of an SQLite database: a thread with a connection of its own copies
//! committed pages from the write-ahead log back into the database file, so that the
//! writer's `COMMIT` does not have to.
//!
//! Left to itself, SQLite checkpoints inside the commit that takes the log past 1,000 pages:
//! that batch waits for the page copy and two more fsyncs, and so does every write queued
//! behind it (about one batch in fifteen under a steady POST load). Here the writer only
//! signals after each commit (`try_send` into a channel of one: it never waits), and this
//! thread runs a `PASSIVE` checkpoint, which blocks neither the writer nor the readers, at
//! most every [`INTERVAL`].
//!
//! The writer keeps SQLite's own checkpoint as a backstop at [`BACKSTOP_PAGES`], so the log
//! stays bounded if this thread falls behind or stops.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;

/// The shortest time between two checkpoints: the writes of this time are copied together
/// (a page written many times is copied once).
///
/// Short on purpose. A checkpoint that catches up with the log ends with an `fdatasync` of
/// the database file, which carries every page copied since the last one; a commit whose
/// own sync of the log overlaps it waits for it (one virtual disk, one flush). Under a
/// steady POST load, checkpoints every 100 ms made such syncs take 7 ms at the median and
/// about 20 batches in 900 took over 10 ms; every 25 ms, 4 ms and about 3 in 900, with a
/// POST p99 of 15.0 ms instead of 18.7 (medians of six alternating rounds), the same
/// throughput and 8 % more bytes written (bench/RESULTS.md). 500 ms was worse still.
pub const INTERVAL: Duration = Duration::from_millis(25);

/// The log size, in pages, at which the writer's commit checkpoints by itself (SQLite's
/// `wal_autocheckpoint`; its default is 1,000).
pub const BACKSTOP_PAGES: u32 = 4_000;

/// What the writer holds: tells the checkpointer that a commit happened.
#[derive(Debug)]
pub struct Committed(SyncSender<()>);

impl Committed {
    /// After a commit: never waits (a signal already pending covers this one too).
    pub fn signal(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the checkpointer thread on `conn`; it ends once the returned [`Committed`] is
/// dropped (with the writer).
pub fn start(mut conn: SqliteConnection) -> std::io::Result<Committed> {
    let (tx, rx) = sync_channel(1);
    std::thread::Builder::new()
        .name("nestflux-checkpoint".into())
        .spawn(move || run(&mut conn, &rx))?;
    Ok(Committed(tx))
}

fn run(conn: &mut SqliteConnection, commits: &Receiver<()>) {
    while commits.recv().is_ok() {
        if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(target: "nestflux::checkpoint", error = %e, "WAL checkpoint failed");
        }
        std::thread::sleep(INTERVAL);
    }
}
