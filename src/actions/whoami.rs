//! `whoami`: the caller's subject, how they authenticated, their roles and the
//! permissions those roles grant.

use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::auth::{Caller, CallerKind};
use crate::problem::Problem;

/// Answers `whoami` with the caller's subject, kind, roles and permissions.
pub fn whoami(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Problem> {
    let ext = req.extensions();
    // whoami routes are never public, so authentication always set a caller.
    let caller = ext.get::<Caller>().ok_or_else(Problem::internal)?;
    let roles: Vec<&str> = caller.roles.iter().map(|r| r.0.as_str()).collect();
    let mut body = json!({
        "subject": caller.subject,
        "kind": caller.kind.name(),
        "roles": roles,
        "permissions": state.authz.effective_permissions(&caller.roles),
    });
    if let (CallerKind::ApiKey(name), Some(map)) = (&caller.kind, body.as_object_mut()) {
        map.insert("api_key".into(), json!(name));
    }
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(body))
}
