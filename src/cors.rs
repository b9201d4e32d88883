//! CORS from `[cors]` with actix-cors. Origins were validated in the plan, so building the
//! middleware cannot fail at worker start.

use actix_cors::Cors;

use crate::plan::cors::CorsPlan;
use actix_web::http::header::HeaderName;

/// Response headers a browser client needs to read on every API: the request id to report
/// problems, and the rate-limit fields to back off politely.
const ALWAYS_EXPOSED: [&str; 5] = [
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "location",
];

/// Builds the CORS middleware for one worker (it is stateless, so per-worker is correct).
pub fn build(plan: &CorsPlan) -> Cors {
    let mut cors = Cors::default().block_on_origin_mismatch(false);
    if plan.any_origin {
        cors = cors.allow_any_origin().send_wildcard();
    } else {
        for origin in &plan.origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors = cors
        .allowed_methods(plan.methods.iter().cloned())
        .allowed_headers(plan.headers.iter().cloned())
        .expose_headers(
            plan.expose_headers
                .iter()
                .cloned()
                .chain(ALWAYS_EXPOSED.map(HeaderName::from_static)),
        );
    if let Some(age) = plan.max_age {
        cors = cors.max_age(usize::try_from(age.as_secs()).unwrap_or(usize::MAX));
    }
    if plan.credentials {
        cors = cors.supports_credentials();
    }
    cors
}
