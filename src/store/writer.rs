//! The one writer of a serving process: a dedicated thread commits every write queued
//! meanwhile as one transaction (group commit: one fsync for the batch, SQLite's
//! `synchronous = FULL` kept). A failing write fails only its own request; a request is
//! answered only after its batch commits, so an acknowledged write is durable.
//!
//! ```text
//! request ─try_send─▶ bounded queue ─▶ writer: take one, drain up to MAX_BATCH more,
//!   (full: 503 at once)                   yielding to the request threads while they
//!                                         handle write requests not in the batch
//!                                       drop (answer 503) the jobs whose deadline passed
//!                                       wait = earliest remaining deadline
//!                                         (at most database.busy_timeout)
//!                                       BEGIN             (times out: every job 503, nothing written)
//!                                       fast pass: each job's work, no savepoint
//!                                         a job fails having changed no row: skip it, go on
//!                                         a job fails having changed rows (on PostgreSQL:
//!                                           any job fails): ROLLBACK, drop the jobs now
//!                                           late, BEGIN, and run the batch again with
//!                                           SAVEPOINT job; work; RELEASE | ROLLBACK TO
//!                                       user sightings, coalesced, one savepoint each
//!                                       COMMIT            (one fsync)
//!                                       SQLite: signal the WAL checkpointer (see `checkpoint`)
//!                                       answer every job
//! ```
//!
//! On SQLite the thread owns the write connection, `BEGIN` is `BEGIN IMMEDIATE` (the write
//! lock, waited for at most `wait`), and the audit chain's head is kept between batches. On
//! PostgreSQL it borrows a pooled connection for each batch (one the server ended fails the
//! `BEGIN`, which then runs once more on a checked one: `store::lend_once_more`). `BEGIN`
//! also bounds every statement and lock wait of the batch by `wait` and takes the audit
//! chain's advisory lock, which every write needs for its audit row. Held for the batch
//! instead of for each write, that lock no longer makes writes wait for each other's
//! commits: POST a note on PostgreSQL went from 664 to 2,258 a second (bench/RESULTS.md).
//! Taken before any row, it also keeps the writers of several instances from a deadlock
//! (one holding a row the other's batch needs, while waiting for the chain).
//!
//! The fast pass exists because a savepoint per write is not free: SQLite copies every page
//! a write touches into the savepoint journal first (one page per table and index, so about
//! sixteen 4 KiB copies for a row with its audit row): about 7 % of a POST's CPU in perf. A
//! failing statement is undone by SQLite itself, so a job that fails without having changed
//! a row (told by `total_changes()`) leaves nothing behind; only one that fails after a
//! change costs the batch a second run. That is why a job's work must be safe to run twice:
//! its closure is `FnMut`, and nothing it does outside the transaction may depend on how
//! often it ran. Nor may it swallow a database error and carry on: if SQLite rolled the
//! whole transaction back (disk full, I/O error), only a job that reports its failure lets
//! the writer see it before the next job would run in autocommit mode.
//!
//! The lock wait is bounded by the batch's earliest deadline and the work after it holds
//! the lock, so every job is answered shortly after its deadline at the latest: the
//! handler never has to give up on a write whose outcome it does not know.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use tokio::sync::oneshot;

use super::users::{self, Sighting};
use super::{Conn, StoreError};
use crate::deadline::Deadline;

/// Most writes committed together.
pub const MAX_BATCH: usize = 256;
/// Most times the writer lets the request threads run before it commits a batch (see
/// [`linger`]).
const LINGER_ROUNDS: usize = 64;
/// The longest the writer holds a batch back for writes still coming (see [`linger`]).
const LINGER_MAX: Duration = Duration::from_millis(2);
/// With no write request in flight outside the batch, how many yields in a row that brought
/// no write the writer still waits for a batch as large as the last.
const IDLE_ROUNDS: usize = 2;
/// Most user sightings written per batch (the rest wait for the next one).
const MAX_SIGHTINGS: usize = 512;
/// How long the writer sleeps when idle before looking at the sightings again.
const IDLE_WAKE: Duration = Duration::from_millis(250);
/// How long a batch holding only sightings waits for the lock: they are lossy.
const SIGHTING_LOCK_WAIT: Duration = Duration::from_millis(100);
/// A batch that takes this long from `BEGIN` to the end of `COMMIT` is logged with the
/// time of each phase (at most ten lines a second, since batches are sequential).
const SLOW_BATCH: Duration = Duration::from_millis(100);

/// A queued write: run inside the batch's transaction, answered after the commit.
trait Job: Send {
    fn deadline(&self) -> Deadline;
    /// Runs the work in the open transaction; keeps its outcome until the batch ends (a
    /// second run, after the batch was rolled back, replaces it). Returns whether it
    /// succeeded.
    fn run(&mut self, conn: &mut Conn) -> bool;
    /// Answers the request: the work's own failure, else `batch` (the batch did not
    /// commit), else the work's result.
    fn answer(self: Box<Self>, batch: Option<StoreError>);
}

struct Typed<T, F> {
    deadline: Deadline,
    work: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send,
    F: FnMut(&mut Conn) -> Result<T, StoreError> + Send,
{
    fn deadline(&self) -> Deadline {
        self.deadline
    }

    fn run(&mut self, conn: &mut Conn) -> bool {
        let work = &mut self.work;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Database("a write panicked".into())));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, batch: Option<StoreError>) {
        let result = match (self.outcome, batch) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(batch)) => Err(batch),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::Database("a write never ran".into())),
        };
        // The request may have gone (client disconnected): nothing to tell.
        let _ = self.reply.send(result);
    }
}

/// The queue into the writer thread.
pub struct Writer {
    jobs: SyncSender<Box<dyn Job>>,
    /// Writes queued and not yet taken by the thread.
    depth: prometheus_client::metrics::gauge::Gauge,
    /// Write requests (POST, PUT, PATCH, DELETE) the server is handling now: see [`Expected`].
    expected: Arc<AtomicUsize>,
}

/// A write request being handled, from its start to its answer, whether or not it reaches
/// the writer: the writer holds a batch back while there are more of these than jobs in the
/// batch ([`linger`]). Dropped when the request ends (or is cancelled). A request counts
/// while its body arrives too, so a slow upload can hold batches back, each by
/// [`LINGER_MAX`] at most.
pub struct Expected(Arc<AtomicUsize>);

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the writer's connection comes from.
pub enum Link {
    /// SQLite: the writer's own connection for the life of the thread (it keeps the audit
    /// chain's head between batches), and the WAL checkpointer told of every commit.
    Own(Conn, super::checkpoint::Committed),
    /// PostgreSQL: a connection from the store's pool for each batch, so one the server
    /// ended is replaced by the pool like any other (a clone of the store made before its
    /// writer was set: no cycle).
    Pooled(super::Store),
}

/// What the writer thread owns.
struct Thread {
    link: Link,
    /// The longest wait for the lock (`database.busy_timeout`).
    busy_timeout: Duration,
    metrics: crate::metrics::StoreMetrics,
    /// Write requests being handled ([`Writer::expect`]).
    expected: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer thread on `link`, with room for `queue` waiting writes, waiting at
    /// most `busy_timeout` for the lock; it also writes the user sightings from
    /// `sightings`; its queue and commits are counted in `metrics`.
    pub fn start(
        link: Link,
        queue: usize,
        busy_timeout: Duration,
        sightings: Receiver<Sighting>,
        metrics: crate::metrics::StoreMetrics,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel::<Box<dyn Job>>(queue.max(1));
        let depth = metrics.queue_depth.clone();
        let expected = Arc::new(AtomicUsize::new(0));
        let mut thread = Thread {
            link,
            busy_timeout,
            metrics,
            expected: expected.clone(),
        };
        std::thread::Builder::new()
            .name("nestflux-writer".into())
            .spawn(move || thread.run(&rx, &sightings))?;
        Ok(Self {
            jobs,
            depth,
            expected,
        })
    }

    /// Counts a write request from now until the guard is dropped.
    pub fn expect(&self) -> Expected {
        self.expected.fetch_add(1, Ordering::Relaxed);
        Expected(self.expected.clone())
    }

    /// Queues `work`; the receiver gets its result once its batch has committed (or
    /// failed). A full queue is refused at once with [`StoreError::Overloaded`]. `work` may
    /// run twice (see the module documentation); only the last run's outcome counts.
    pub fn submit<T, F>(
        &self,
        deadline: Deadline,
        work: F,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Typed {
            deadline,
            work,
            outcome: None,
            reply,
        });
        // Counted before the send: the thread may take the job before `try_send` returns.
        self.depth.inc();
        match self.jobs.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                self.depth.dec();
                Err(StoreError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.dec();
                Err(StoreError::Unavailable(
                    "the database writer stopped".into(),
                ))
            }
        }
    }
}

impl Thread {
    /// Until every sender is gone: take a batch and commit it.
    fn run(&mut self, jobs: &Receiver<Box<dyn Job>>, sightings: &Receiver<Sighting>) {
        // The size of the last batch: while the load holds, the next is as large.
        let mut last = 0;
        loop {
            let mut batch: Vec<Box<dyn Job>> = Vec::new();
            match jobs.recv_timeout(IDLE_WAKE) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit(Vec::new(), drain(sightings));
                    return;
                }
            }
            linger(jobs, &mut batch, &self.expected, last);
            last = batch.len();
            self.metrics.queue_depth.dec_by(batch.len() as i64);
            let seen = drain(sightings);
            if !batch.is_empty() || !seen.is_empty() {
                self.commit(batch, seen);
            }
        }
    }
}

/// Adds the jobs queued meanwhile to `batch`, up to [`MAX_BATCH`], and holds the batch back
/// while more writes are coming: it lets the request threads run (`yield_now`) and takes
/// what they queued, for as long as the server is handling write requests that are not in
/// the batch (being read, prepared, or answered from the last batch), and, once none is,
/// until the batch is as large as the last one (`last`) or [`IDLE_ROUNDS`] yields in a row
/// brought nothing; never more than [`LINGER_ROUNDS`] yields or [`LINGER_MAX`].
///
/// On a core the writer shares with the request threads, a batch taken without waiting
/// holds only the writes queued while the last one committed: writes then settle into two
/// groups that alternate, and one that just misses its batch waits a whole commit more.
/// Waiting gives one batch per round of requests, fewer commits and a narrower spread of
/// latencies (bench/RESULTS.md). A lone write (nothing else in flight, a batch as large as
/// the last) is committed at once, without a yield, so the writer never hands its core to
/// unrelated processes for nothing; where the request threads run on other cores the
/// yields return at once and the wait is short.
fn linger(
    jobs: &Receiver<Box<dyn Job>>,
    batch: &mut Vec<Box<dyn Job>>,
    expected: &AtomicUsize,
    last: usize,
) {
    let started = std::time::Instant::now();
    let mut idle = 0;
    for round in 0..=LINGER_ROUNDS {
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.is_empty()
            || batch.len() >= MAX_BATCH
            || round == LINGER_ROUNDS
            || started.elapsed() >= LINGER_MAX
        {
            return;
        }
        let in_flight = expected.load(Ordering::Relaxed) > batch.len();
        if !in_flight {
            idle = if batch.len() > before { 0 } else { idle + 1 };
            if batch.len() >= last || idle > IDLE_ROUNDS {
                return;
            }
        }
        std::thread::yield_now();
    }
}

/// The sightings waiting now, one per (issuer, subject), the latest winning.
fn drain(sightings: &Receiver<Sighting>) -> Vec<Sighting> {
    let mut by_subject = BTreeMap::new();
    for _ in 0..MAX_SIGHTINGS {
        match sightings.try_recv() {
            Ok(s) => {
                by_subject.insert((s.issuer.clone(), s.subject.clone()), s);
            }
            Err(_) => break,
        }
    }
    by_subject.into_values().collect()
}

impl Thread {
    /// One transaction for the batch; every job is answered before this returns.
    fn commit(&mut self, batch: Vec<Box<dyn Job>>, seen: Vec<Sighting>) {
        // A job whose deadline passed while it waited in the queue never runs.
        let mut live = without_late(batch);
        if live.is_empty() && seen.is_empty() {
            return;
        }
        let began = std::time::Instant::now();
        let wait = lock_wait(&live, self.busy_timeout);
        let chain = !live.is_empty();
        let mut pooled;
        let begun = match &mut self.link {
            Link::Own(conn, checkpointer) => {
                begin(conn, wait, chain).map(|()| (conn, Some(&*checkpointer)))
            }
            Link::Pooled(store) => match begin_pooled(store, began, wait, chain) {
                Ok(conn) => {
                    pooled = conn;
                    Ok((&mut pooled, None))
                }
                Err(e) => Err(e),
            },
        };
        let (conn, checkpointer) = match begun {
            Ok(begun) => begun,
            Err(e) => {
                let e = match e {
                    StoreError::Database(m) => StoreError::Unavailable(m),
                    other => other,
                };
                if !seen.is_empty() {
                    tracing::debug!(dropped = seen.len(), "user sightings not recorded: {e}");
                }
                for job in live {
                    job.answer(Some(e.clone()));
                }
                return;
            }
        };
        let locked = began.elapsed();
        // Under the write lock: the audit chain head the writer keeps is checked once here.
        super::audit::batch_began(conn);
        let broken = match fast_pass(conn, &mut live) {
            Pass::Done => None,
            Pass::Broken(e) => Some(e),
            Pass::Again => {
                tracing::debug!(target: "nestflux::writer", jobs = live.len(), "a write failed after changing rows: the batch runs again with savepoints");
                super::audit::forget_head(conn);
                // The first pass may have waited (on PostgreSQL, for a row or table lock):
                // the second runs only the jobs still in time, and waits no longer.
                live = without_late(live);
                let wait = lock_wait(&live, self.busy_timeout);
                match conn
                    .control("ROLLBACK")
                    .and_then(|()| begin(conn, wait, !live.is_empty()))
                {
                    Ok(()) => {
                        super::audit::batch_began(conn);
                        savepoint_pass(conn, &mut live)
                    }
                    Err(e) => Some(e),
                }
            }
        };
        if broken.is_none() {
            record_sightings(conn, &seen);
        }
        let worked = began.elapsed();
        if broken.is_some() {
            super::audit::forget_head(conn);
        }
        let failure = match broken {
            Some(e) => {
                tracing::error!(error = %e, jobs = live.len(), "write batch abandoned");
                let _ = conn.batch("ROLLBACK");
                Some(StoreError::Unavailable(e.to_string()))
            }
            None => match finish(conn, &live) {
                Ok(()) => {
                    if let Some(checkpointer) = checkpointer {
                        checkpointer.signal();
                    }
                    let total = began.elapsed();
                    if total >= SLOW_BATCH {
                        // Lock: another process held it. Work: the statements, and the time
                        // the request threads had the core. Commit: the WAL write and fsync.
                        tracing::warn!(
                            target: "nestflux::writer",
                            writes = live.len(),
                            lock_ms = locked.as_millis() as u64,
                            work_ms = worked.saturating_sub(locked).as_millis() as u64,
                            commit_ms = total.saturating_sub(worked).as_millis() as u64,
                            "slow write batch: {} ms",
                            total.as_millis()
                        );
                    }
                    tracing::trace!(target: "nestflux::writer", writes = live.len(), sightings = seen.len(), "batch committed");
                    if !live.is_empty() {
                        self.metrics.batch_size.observe(live.len() as f64);
                        self.metrics.commit_seconds.observe(total.as_secs_f64());
                    }
                    None
                }
                Err(e) => {
                    super::audit::forget_head(conn);
                    tracing::error!(error = %e, jobs = live.len(), "write batch did not commit");
                    let _ = conn.batch("ROLLBACK");
                    Some(StoreError::Unavailable(e.to_string()))
                }
            },
        };
        for job in live {
            job.answer(failure.clone());
        }
    }
}

/// Answers the jobs whose deadline passed (their clients are being told 503, so nothing may
/// be written for them) and returns the others.
fn without_late(batch: Vec<Box<dyn Job>>) -> Vec<Box<dyn Job>> {
    let (live, late): (Vec<_>, Vec<_>) = batch.into_iter().partition(|j| !j.deadline().passed());
    for job in late {
        job.answer(Some(StoreError::Timeout));
    }
    live
}

/// How long a batch may wait for a lock (an outside writer such as `nestflux keys rotate`
/// may hold it): until the earliest deadline of its jobs, and never longer than
/// `database.busy_timeout`.
fn lock_wait(live: &[Box<dyn Job>], busy_timeout: Duration) -> Duration {
    live.iter()
        .map(|j| j.deadline().remaining())
        .min()
        .unwrap_or(SIGHTING_LOCK_WAIT)
        .min(busy_timeout)
}

/// Opens the batch's transaction, waiting at most `wait` for the write lock. SQLite takes
/// its write lock at `BEGIN IMMEDIATE`. PostgreSQL bounds every statement and lock wait of
/// the batch by `wait` (until [`finish`]), and with `chain` takes the audit chain's lock
/// first (one round trip for all of it): every write appends to the chain, and taking it
/// before any row keeps writers of several instances from holding rows while they wait for
/// it (a deadlock).
fn begin(conn: &mut Conn, wait: Duration, chain: bool) -> Result<(), StoreError> {
    let ms = wait.as_millis();
    if !conn.is_postgres() {
        return conn
            .batch(&format!("PRAGMA busy_timeout = {ms}"))
            .and_then(|()| conn.control("BEGIN IMMEDIATE"));
    }
    // `0` would mean "no limit".
    let ms = ms.max(1);
    let lock = if chain {
        format!(
            "; SELECT pg_advisory_xact_lock({})",
            super::audit::PG_CHAIN_LOCK
        )
    } else {
        String::new()
    };
    let begun = conn.batch(&format!(
        "BEGIN; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}{lock}"
    ));
    if begun.is_err() {
        // The transaction may be open (the lock wait timed out): the pool must get the
        // connection back without it.
        let _ = conn.batch("ROLLBACK");
    }
    begun
}

/// A pooled connection (PostgreSQL) with the batch's transaction begun; `wait` counts from
/// `began`, the wait for a connection included. A connection PostgreSQL had ended fails the
/// `BEGIN` before anything of the batch ran, so it may run once more.
fn begin_pooled(
    store: &super::Store,
    began: std::time::Instant,
    wait: Duration,
    chain: bool,
) -> Result<Conn, StoreError> {
    let left = || wait.saturating_sub(began.elapsed());
    super::lend_once_more(
        |check| store.batch_conn_within(left(), check),
        |conn| begin(conn, left(), chain),
    )
    .map(|(conn, ())| conn)
}

/// Commits the batch. On PostgreSQL its statements were held to the earliest deadline of
/// its writes, which a `COMMIT` that waits for the disk could pass: the commit may take until
/// the latest one, so that one write close to its deadline does not fail all the others
/// (if every deadline has passed, it fails and nothing is written).
fn finish(conn: &mut Conn, live: &[Box<dyn Job>]) -> Result<(), StoreError> {
    if !conn.is_postgres() {
        return conn.control("COMMIT");
    }
    let latest = live
        .iter()
        .map(|j| j.deadline().remaining())
        .max()
        .unwrap_or(SIGHTING_LOCK_WAIT);
    // `0` would mean "no limit".
    let ms = latest.as_millis().max(1);
    conn.batch(&format!("SET LOCAL statement_timeout = {ms}; COMMIT"))
}

/// How [`fast_pass`] ended.
enum Pass {
    /// Every job ran; the failed ones changed nothing.
    Done,
    /// A job failed after changing rows: the batch must be rolled back and run again.
    Again,
    /// The transaction is gone (SQLite rolled it back: I/O error, disk full): every job
    /// before lost its writes too.
    Broken(StoreError),
}

/// Runs every job in the open transaction without savepoints. A failing statement is
/// undone by SQLite, so a job that fails without having changed a row leaves nothing behind
/// and the pass goes on; one that fails after a change asks for [`Pass::Again`].
fn fast_pass(conn: &mut Conn, live: &mut [Box<dyn Job>]) -> Pass {
    if conn.is_postgres() {
        // A failed statement aborts a PostgreSQL transaction: whatever failed, the batch
        // runs again with savepoints.
        return if live.iter_mut().all(|job| job.run(conn)) {
            Pass::Done
        } else {
            Pass::Again
        };
    }
    let mut before = match total_changes(conn) {
        Ok(n) => n,
        Err(e) => return Pass::Broken(e),
    };
    for job in live.iter_mut() {
        if job.run(conn) {
            match total_changes(conn) {
                Ok(n) => before = n,
                Err(e) => return Pass::Broken(e),
            }
            continue;
        }
        // What the failed job knew of the audit chain's head may not hold.
        super::audit::forget_head(conn);
        // `BEGIN` fails inside a transaction: if it succeeds, SQLite had rolled ours back.
        if conn.control("BEGIN").is_ok() {
            let _ = conn.control("ROLLBACK");
            return Pass::Broken(StoreError::Database(
                "the transaction was rolled back by the database".into(),
            ));
        }
        match total_changes(conn) {
            Ok(n) if n == before => {}
            Ok(_) => return Pass::Again,
            Err(e) => return Pass::Broken(e),
        }
    }
    Pass::Done
}

/// Runs every job in its own savepoint: a failing job's changes are rolled back alone.
/// Returns the error that broke the transaction, if one did.
fn savepoint_pass(conn: &mut Conn, live: &mut [Box<dyn Job>]) -> Option<StoreError> {
    for job in live.iter_mut() {
        if let Err(e) = conn.control("SAVEPOINT nf_write") {
            return Some(e);
        }
        let end = if job.run(conn) {
            conn.control("RELEASE nf_write")
        } else {
            // What the write appended to the audit chain is rolled back with it.
            super::audit::forget_head(conn);
            conn.control("ROLLBACK TO nf_write")
                .and_then(|()| conn.control("RELEASE nf_write"))
        };
        // The savepoint is gone: SQLite rolled the whole transaction back (I/O error, disk
        // full). The jobs before this one lost their writes too.
        if let Err(e) = end {
            return Some(e);
        }
    }
    None
}

/// Rows changed on this connection since it opened (`total_changes()`).
fn total_changes(conn: &mut Conn) -> Result<String, StoreError> {
    conn.query_json_cached("SELECT CAST(total_changes() AS TEXT) AS j", &[])?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Database("total_changes() returned no row".into()))
}

/// Each sighting in its own savepoint: one that fails is skipped, never the batch.
fn record_sightings(conn: &mut Conn, seen: &[Sighting]) {
    for s in seen {
        let done = conn
            .control("SAVEPOINT nf_seen")
            .and_then(|()| users::record(conn, s));
        let end = match done {
            Ok(()) => conn.control("RELEASE nf_seen"),
            Err(e) => {
                tracing::warn!(error = %e, "could not record a user sighting");
                conn.control("ROLLBACK TO nf_seen")
                    .and_then(|()| conn.control("RELEASE nf_seen"))
            }
        };
        if end.is_err() {
            return;
        }
    }
}
