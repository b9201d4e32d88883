//! The limiter interface: where buckets live (this process's memory, or Redis shared by a
//! fleet), and what a backend answers when it cannot decide.

use std::future::Future;
use std::time::Duration;

use super::key::BucketKey;

/// A policy's position in the compiled policy list; backends keep one keyed limiter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyId(pub usize);

/// The outcome of counting one request against one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Requests the bucket admits right now after this one (0 when refused).
    pub remaining: u32,
    /// Time until the bucket is full again; never less than the exact time.
    pub reset: Duration,
    /// When refused: the time until one request would be admitted. Zero when allowed.
    pub retry_after: Duration,
}

/// A backend that could not decide (a lost Redis connection, …).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The policy id is not one of the backend's.
    #[error("no rate-limit policy #{0}")]
    UnknownPolicy(usize),
    /// The shared backend could not decide and `on_backend_error = "deny"`: 503.
    #[error("the rate-limit backend is unavailable")]
    Unavailable,
    /// The shared backend could not decide and `on_backend_error = "allow"`: the request
    /// passes uncounted, without `RateLimit` fields.
    #[error("the rate-limit backend is unavailable (request allowed)")]
    Undecided,
}

/// Where the buckets of every policy live.
pub trait Backend: Send + Sync + 'static {
    /// Counts one request against `policy`'s bucket for `key`; the count is kept only when
    /// the request is allowed.
    fn check<'a>(
        &'a self,
        policy: PolicyId,
        key: &'a BucketKey,
    ) -> impl Future<Output = Result<Verdict, BackendError>> + Send + 'a;
}
