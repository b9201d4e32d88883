//! `health`: liveness (the process answers) plus the readiness of each dependency. Always
//! 200 while the process lives, so a load balancer's liveness probe never flaps on a
//! database blip; `status` says `degraded` and `checks` names what is down.

use actix_web::HttpResponse;
use serde_json::json;

use crate::server::AppState;

pub async fn health(state: &AppState) -> HttpResponse {
    let database = state.store.ping().await;
    let status = if database { "ok" } else { "degraded" };
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "status": status,
            "checks": { "database": if database { "ok" } else { "unavailable" } },
        }))
}
