//! Events that are not a change of data (denials, failed authentications, rate limiting,
//! sessions, configuration) go through a bounded, lossy queue to a thread of their own that
//! appends them in batches: a request never waits for them. Failed authentications and
//! rate-limit refusals are counted per source and written once a minute as one row per
//! source, so a flood adds a handful of rows. What is lost under overload is logged and
//! counted (`lost` in the next `audit.lost` row); mutation events never come here (they are
//! written in the transaction of their change).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::chain::{Event, Row};
use crate::deadline::Deadline;
use crate::store::Store;

/// Events that may wait for the sink thread.
const QUEUE: usize = 4096;
/// Events appended per transaction.
const BATCH: usize = 256;
/// How long counts accumulate before they are written.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most distinct (action, source, detail) counters per window; more fold into source `*`.
const MAX_COUNTERS: usize = 10_000;
/// How long one batch may take (lock wait included).
const WRITE_WITHIN: Duration = Duration::from_secs(5);

enum Msg {
    Event(Box<Event>),
    /// Write the counters now and answer (shutdown).
    Flush(std::sync::mpsc::Sender<()>),
}

/// Counted refusals of the current window: (action, source, detail) → count.
#[derive(Default)]
struct Counters {
    started: String,
    counts: HashMap<(&'static str, String, String), u64>,
}

/// The sink: a bounded queue and the counters, written by one thread.
struct Sink {
    tx: SyncSender<Msg>,
    counters: Mutex<Counters>,
    lost: AtomicU64,
}

/// A handle on the sink, handed down to what records events (the request pipeline, the
/// rate limiter, browser sessions) so no layer reaches for a global: cloned freely; the
/// [`Default`] handle (tools, a rate limiter or sessions built without a server) records
/// nothing.
#[derive(Clone, Default)]
pub struct AuditSink(Option<Arc<Sink>>);

/// Starts the sink thread of a serving process; events reach it through the handle.
pub fn start(store: Store) -> std::io::Result<AuditSink> {
    let (tx, rx) = sync_channel(QUEUE);
    let sink = Arc::new(Sink {
        tx,
        counters: Mutex::new(Counters {
            started: crate::store::now(),
            ..Counters::default()
        }),
        lost: AtomicU64::new(0),
    });
    let thread_sink = sink.clone();
    std::thread::Builder::new()
        .name("nestflux-audit".into())
        .spawn(move || thread_sink.run(&store, &rx))?;
    Ok(AuditSink(Some(sink)))
}

impl AuditSink {
    /// Queues a non-mutation event, never waiting; dropped (and counted) when the queue is
    /// full.
    pub fn offer(&self, event: Event) {
        if let Some(sink) = &self.0 {
            sink.offer(event);
        }
    }

    /// Counts one failed authentication from `source` (written once per window).
    pub fn auth_failed(&self, source: &str, why: &str) {
        if let Some(sink) = &self.0 {
            sink.count("auth.failures", source, why);
        }
    }

    /// Counts one rate-limit refusal from `source` under `policy` (written once per window).
    pub fn rate_limited(&self, source: &str, policy: &str) {
        if let Some(sink) = &self.0 {
            sink.count("ratelimit.exceeded", source, policy);
        }
    }

    /// Writes the counters now and waits (at most `wait`) until they are written: at
    /// shutdown, so the last window is not lost.
    pub fn flush(&self, wait: Duration) {
        if let Some(sink) = &self.0 {
            sink.flush(wait);
        }
    }
}

impl Sink {
    /// Queues `event`, never waiting.
    fn offer(&self, event: Event) {
        match self.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let n = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(target: "nestflux::audit", lost = n, "audit queue full: non-mutation audit events dropped");
                }
            }
        }
    }

    fn count(&self, action: &'static str, source: &str, detail: &str) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        let key = (action, source.to_string(), detail.to_string());
        if let Some(n) = c.counts.get_mut(&key) {
            *n += 1;
        } else if c.counts.len() < MAX_COUNTERS {
            c.counts.insert(key, 1);
        } else {
            *c.counts
                .entry((action, "*".into(), detail.to_string()))
                .or_insert(0) += 1;
        }
    }

    fn flush(&self, wait: Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(wait);
        }
    }

    /// The counters of the window that ends now, as events.
    fn take_counters(&self) -> Vec<Event> {
        let Ok(mut c) = self.counters.lock() else {
            return Vec::new();
        };
        let started = std::mem::replace(&mut c.started, crate::store::now());
        let mut out: Vec<Event> = c
            .counts
            .drain()
            .map(|((action, source, detail), count)| {
                let key = if action == "auth.failures" {
                    "reason"
                } else {
                    "policy"
                };
                let mut e = Event::now("-", action, "refused").details(&json!({
                    "count": count,
                    "since": started,
                    key: detail,
                }));
                e.client_ip = source;
                e
            })
            .collect();
        out.sort_by(|a, b| (&a.action, &a.client_ip).cmp(&(&b.action, &b.client_ip)));
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            out.push(
                Event::now("-", "audit.lost", "lost")
                    .details(&json!({ "count": lost, "since": started })),
            );
        }
        out
    }

    fn run(&self, store: &Store, rx: &Receiver<Msg>) {
        let mut window_end = Instant::now() + WINDOW;
        loop {
            let mut batch = Vec::new();
            let mut flushed = None;
            let tick = window_end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(tick.max(Duration::from_millis(10))) {
                Ok(Msg::Event(e)) => batch.push(*e),
                Ok(Msg::Flush(done)) => flushed = Some(done),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < BATCH && flushed.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Event(e)) => batch.push(*e),
                    Ok(Msg::Flush(done)) => flushed = Some(done),
                    Err(_) => break,
                }
            }
            if flushed.is_some() || Instant::now() >= window_end {
                batch.extend(self.take_counters());
                window_end = Instant::now() + WINDOW;
            }
            if !batch.is_empty() {
                write(store, batch);
            }
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }
}

/// Appends a batch in one transaction; a failure is logged with how many events it lost.
fn write(store: &Store, batch: Vec<Event>) {
    let n = batch.len();
    match store.write_blocking(Deadline::after(WRITE_WITHIN), move |c| {
        crate::store::audit::append(c, &batch)
    }) {
        Ok(rows) => trace(&rows),
        Err(e) => {
            tracing::error!(target: "nestflux::audit", error = %e, lost = n, "audit events not written");
        }
    }
}

/// Emits each written row under the target `audit`: with `NESTFLUX_LOG_FORMAT=json`, one
/// JSON line whose fields are the row's columns (and `message: "audit"`).
pub fn trace(rows: &[Row]) {
    for row in rows {
        let e = &row.event;
        tracing::info!(
            target: "audit",
            seq = row.seq,
            at = e.at.as_str(),
            actor = e.actor.as_str(),
            action = e.action.as_str(),
            resource = e.resource.as_str(),
            record_id = e.record_id.as_str(),
            outcome = e.outcome.as_str(),
            details = e.details.as_str(),
            request_id = e.request_id.as_str(),
            client_ip = e.client_ip.as_str(),
            prev_hash = row.prev_hash.as_str(),
            hash = row.hash.as_str(),
            "audit"
        );
    }
}
