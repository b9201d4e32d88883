//! `health`: liveness, plus the readiness of each dependency once there are any.

use actix_web::HttpResponse;
use serde_json::json;

use crate::server::AppState;

pub fn health(_state: &AppState) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}
