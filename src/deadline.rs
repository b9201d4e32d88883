//! One deadline per request: set once by the envelope (request start +
//! `server.request_timeout`) and read by every stage that may wait — the body read, a JWKS
//! refetch, database reads and the write queue — so no stage can outlive the request.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::{HttpMessage, HttpRequest};
use futures_util::FutureExt;

/// The instant by which a request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

/// The deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request deadline passed")]
pub struct Expired;

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        Self(now.checked_add(timeout).unwrap_or(now))
    }

    /// The deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn passed(self) -> bool {
        Instant::now() >= self.0
    }

    /// The deadline of a request being handled. The envelope always sets one; a request
    /// that somehow has none gets `fallback` from now.
    pub fn of(req: &HttpRequest, fallback: Duration) -> Self {
        req.extensions()
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Self::after(fallback))
    }

    /// Runs `work` until the deadline: its output, or [`Expired`] (the future is dropped).
    /// Only for work that may be abandoned safely: reads, waits, verification.
    ///
    /// A combinator rather than an `async fn`: an `async fn` would keep `work` both as its
    /// argument and as the future it awaits, doubling the size of every request's future
    /// (which actix copies into a box per request). Unlike the `async fn`, it sets tokio's
    /// timer when called, not when first polled: call it inside the runtime, as every
    /// caller (a request's or a store call's async body) does.
    pub fn within<F: Future>(self, work: F) -> impl Future<Output = Result<F::Output, Expired>> {
        tokio::time::timeout_at(tokio::time::Instant::from_std(self.0), work)
            .map(|done| done.map_err(|_| Expired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_never_goes_negative() {
        let d = Deadline::at(Instant::now());
        assert!(d.passed());
        assert_eq!(d.remaining(), Duration::ZERO);
        let later = Deadline::after(Duration::from_secs(60));
        assert!(!later.passed());
        assert!(later.remaining() > Duration::from_secs(59));
        assert!(d < later);
    }

    #[actix_web::test]
    async fn within_abandons_work_at_the_deadline() {
        let d = Deadline::after(Duration::from_millis(20));
        let slow = tokio::time::sleep(Duration::from_secs(30));
        assert_eq!(d.within(slow).await, Err(Expired));
        let fast = Deadline::after(Duration::from_secs(30));
        assert_eq!(fast.within(async { 7 }).await, Ok(7));
    }
}
