//! `health`: liveness (the process answers) plus the readiness of each dependency. Always
//! 200 while the process lives, so a load balancer's liveness probe never flaps on a
//! database blip; `status` says `degraded` when the database is down. A route declared with
//! `detail = true` (protected like any route) also answers `checks` (each dependency, each
//! issuer's signing keys) and the config hash; without it only `status` is told.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use serde_json::json;

use super::AppState;

/// How long one database check answers for: a public route must not be a way to take
/// pool connections away from the API.
const CHECK_TTL: Duration = Duration::from_secs(1);

/// The last database check, shared by every worker.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    async fn database(&self, state: &AppState) -> bool {
        let cached = match self.last.lock() {
            Ok(last) => *last,
            Err(poisoned) => *poisoned.into_inner(),
        };
        if let Some((at, ok)) = cached
            && at.elapsed() < CHECK_TTL
        {
            return ok;
        }
        let ok = state.store.ping().await;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), ok));
        }
        ok
    }
}

/// Answers `health`: 200 with `ok` or `degraded`; with `detail`, the checks behind it too.
/// With `backend = "redis"`, `checks.rate_limits` says whether Redis decides right now (read
/// from the backend's circuit: no extra round trip).
pub async fn health(state: &AppState, detail: bool) -> HttpResponse {
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let database = state.readiness.database(state).await;
    let mut checks = serde_json::Map::new();
    checks.insert("database".into(), json!(word(database)));
    let mut healthy = database;
    if let Some(redis) = state.limits.backend().redis() {
        let up = redis.is_healthy();
        checks.insert("rate_limits".into(), json!(word(up)));
        healthy &= up;
    }
    let status = if healthy { "ok" } else { "degraded" };
    let mut out = HttpResponse::Ok();
    out.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    if !detail {
        return out.json(json!({ "status": status }));
    }
    // Informational: a stale or empty key set refuses tokens (401) but does not make the
    // service `degraded`, which would take a healthy instance out of a load balancer.
    // `checks` maps each dependency to `ok` or `unavailable`; other facts (such as a queue's
    // depth) go beside it as their own keys.
    out.json(json!({
        "status": status,
        "checks": checks,
        "issuers": state.auth.key_freshness(),
        "config_hash": state.plan.config_hash,
    }))
}
