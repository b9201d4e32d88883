//! `audit`: pages of the audit log, newest first, filtered by actor, action, resource,
//! record id and time range; the cursor is MAC'd like a resource list's, so a client cannot
//! forge a position.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use super::AppState;
use crate::audit::time::Bound;
use crate::deadline::Deadline;
use crate::problem::Problem;
use crate::store::audit::Filter;
use crate::store::cursor::Cursor;

/// The name cursors of the audit log are MAC'd under: never a resource name (those are
/// identifiers), so a resource's cursor is refused here and the reverse.
const CURSOR_SCOPE: &str = "audit log";
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// The longest filter value accepted (subjects, names and ids are far shorter).
const MAX_VALUE: usize = 512;

/// `GET` the audit log.
pub async fn audit(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Problem> {
    let (filter, limit) = query(req.query_string(), state)?;
    let deadline = Deadline::of(req, state.plan.server.request_timeout);
    let probe = filter.clone();
    let mut rows = state
        .store
        .read(deadline, move |c| {
            crate::store::audit::page(c, &probe, limit + 1)
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "audit log read failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry shortly",
            )
        })?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| {
            state.cursors.encode(
                CURSOR_SCOPE,
                &Cursor {
                    sort: "seq".into(),
                    desc: true,
                    value: json!(r.seq),
                    id: String::new(),
                },
            )
        })
    } else {
        None
    };
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            // `details` is stored as JSON text (hashed as such); served as the object.
            if let Some(d) = v.get_mut("details")
                && let Some(text) = d.as_str()
            {
                *d = serde_json::from_str(text).unwrap_or(Value::Null);
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json!({ "items": items, "next_cursor": next }).to_string()))
}

/// The filters, limit and cursor of the query string, every mistake reported at once (422).
fn query(text: &str, state: &AppState) -> Result<(Filter, usize), Problem> {
    let mut f = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    let mut errors = Vec::new();
    let bad = super::query::violation;
    for (name, value) in super::query::params(text, &mut errors) {
        if value.len() > MAX_VALUE {
            errors.push(bad(
                &name,
                "too_long",
                format!("at most {MAX_VALUE} characters"),
            ));
            continue;
        }
        let v = Some(value.to_string());
        match name.as_ref() {
            "actor" => f.actor = v,
            "action" => f.action = v,
            "resource" => f.resource = v,
            "record_id" => f.record_id = v,
            "since" | "until" => match crate::audit::time::parse(&value) {
                // A bound no stored time can meet: `at >= after-all` or `at < before-all`.
                Some(Bound::AfterAll) if name == "since" => f.matches_nothing = true,
                Some(Bound::BeforeAll) if name == "until" => f.matches_nothing = true,
                // A bound every stored time meets: no bound.
                Some(Bound::BeforeAll | Bound::AfterAll) => {}
                Some(Bound::At(t)) => {
                    if name == "since" { f.since = Some(t) } else { f.until = Some(t) }
                }
                None => errors.push(bad(
                    &name,
                    "format",
                    "an RFC 3339 date-time, e.g. 2026-11-30T00:00:00Z or 2026-11-30T01:00:00.5+01:00".into(),
                )),
            },
            "limit" => match super::query::limit(&value, MAX_LIMIT) {
                Ok(n) => limit = n,
                Err(v) => errors.push(v),
            },
            "cursor" if value.is_empty() => {}
            "cursor" => match state.cursors.decode(CURSOR_SCOPE, &value) {
                Some(c) if c.sort == "seq" && c.desc => match c.value.as_i64() {
                    Some(seq) => f.before_seq = Some(seq),
                    None => return Err(invalid_cursor()),
                },
                _ => return Err(invalid_cursor()),
            },
            other => errors.push(bad(
                other,
                "unknown_parameter",
                "filter by actor, action, resource, record_id, since or until; page with limit and cursor".into(),
            )),
        }
    }
    if errors.is_empty() {
        Ok((f, limit))
    } else {
        errors.truncate(crate::validate::MAX_VIOLATIONS);
        Err(super::resource::unprocessable(&errors))
    }
}

fn invalid_cursor() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-cursor",
        "invalid cursor: it must be the next_cursor of a page of the audit log, unchanged",
    )
}
