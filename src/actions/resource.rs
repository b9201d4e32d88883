//! `list`, `get`, `create`, `update`, `delete` over a declared resource: validation, own-row
//! limits and field permissions applied around the store's SQL, every database step bounded
//! by the request's deadline.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::auth::Caller;
use crate::authz::Decision;
use crate::deadline::Deadline;
use crate::plan::data::ResourcePlan;
use crate::plan::routes::{Action, RoutePlan};
use crate::problem::Problem;
use crate::store::StoreError;
use crate::store::crud::{FieldRule, ListQuery, ReadMask, Resource, Row};
use crate::store::cursor::Cursor;
use crate::validate::{Mode, Violation, coerce_param};

/// What the pipeline learnt about the caller, as one value.
struct Ctx<'a> {
    state: &'a AppState,
    plan: &'a ResourcePlan,
    resource: Arc<Resource>,
    caller: Option<Caller>,
    /// `Some(subject)` when the route's permission is only `:own`.
    only_owner: Option<String>,
    /// By when the request must be answered.
    deadline: Deadline,
    /// The request's id and client address, for audit events.
    request_id: String,
    client_ip: String,
}

/// Runs a resource action for a caller the pipeline has authenticated and authorized.
pub async fn run(
    action: Action,
    route: &RoutePlan,
    req: &HttpRequest,
    body: Option<Value>,
    state: &AppState,
) -> Result<HttpResponse, Problem> {
    let name = route.resource.as_ref().ok_or_else(Problem::internal)?;
    let resource = state
        .resources
        .get(name)
        .cloned()
        .ok_or_else(Problem::internal)?;
    let plan = state
        .plan
        .resources
        .get(name)
        .ok_or_else(Problem::internal)?;
    if resource.keys_missing() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "encryption-keys-missing",
            "encryption keys are not configured",
        ));
    }
    let caller = req.extensions().get::<Caller>().cloned();
    // The authorization stage always sets a decision; without one, refuse.
    let decision = req
        .extensions()
        .get::<Decision>()
        .copied()
        .unwrap_or(Decision::Denied);
    let only_owner = match decision {
        Decision::Any => None,
        // `:own` means nothing on a resource that records no owner: refuse, never widen.
        Decision::OwnOnly if !plan.owner => {
            return Err(Problem::forbidden(
                "this resource has no owners, so :own permits nothing",
            ));
        }
        Decision::OwnOnly => Some(
            caller
                .as_ref()
                .ok_or_else(Problem::no_record)?
                .subject
                .clone(),
        ),
        Decision::Denied => return Err(Problem::forbidden("not permitted")),
    };
    let cx = Ctx {
        state,
        plan,
        resource,
        caller,
        only_owner,
        deadline: Deadline::of(req, state.plan.server.request_timeout),
        request_id: crate::request_id::of(req),
        client_ip: crate::ratelimit::middleware::client_ip_of(&state.limits, req).to_string(),
    };
    match action {
        Action::List => list(&cx, req).await,
        Action::Get => get(&cx, req).await,
        Action::Create => create(&cx, req, body).await,
        Action::Update => update(&cx, req, body).await,
        Action::Delete => delete(&cx, req).await,
        _ => Err(Problem::internal()),
    }
}

/// The `{id}` of the path; anything that is not a UUID cannot name a row.
fn path_id(req: &HttpRequest) -> Result<String, Problem> {
    let id = req.match_info().get("id").unwrap_or_default();
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| Problem::no_record())
}

impl Ctx<'_> {
    /// The audit event of a change to `record_id` writing `fields` (names only).
    fn event<F: AsRef<str>>(
        &self,
        action: &str,
        record_id: &str,
        fields: impl IntoIterator<Item = F>,
    ) -> crate::audit::Event {
        crate::audit::mutation(
            self.caller.as_ref().map(|c| c.subject.as_str()),
            action,
            &self.resource.table.name,
            record_id,
            fields,
        )
        .request(&self.request_id, &self.client_ip)
    }

    /// Whether the caller may read or write `field` of a row owned by `owner`.
    fn may_use(&self, field: &str, owner: Option<&str>) -> bool {
        let Some(need) = self.plan.permission(field) else {
            return true;
        };
        let Some(caller) = &self.caller else {
            return false;
        };
        match self.state.authz.decide(&caller.roles, need) {
            Decision::Any => true,
            Decision::OwnOnly => owner.is_some_and(|o| o == caller.subject),
            Decision::Denied => false,
        }
    }

    /// The guarded fields the caller may not read (anywhere, or outside their rows): the
    /// store never decrypts them and leaves them out of every row.
    fn read_mask(&self) -> ReadMask {
        self.plan
            .guarded()
            .fold(ReadMask::all(), |mask, (field, need)| match &self.caller {
                None => mask.hide(field, FieldRule::Never),
                Some(caller) => match self.state.authz.decide(&caller.roles, need) {
                    Decision::Any => mask,
                    Decision::OwnOnly => {
                        mask.hide(field, FieldRule::OwnRows(caller.subject.clone()))
                    }
                    Decision::Denied => mask.hide(field, FieldRule::Never),
                },
            })
    }

    /// 403 if the client sent a field the caller may not write (defaults filled in by the
    /// server do not count).
    fn check_writes<'k>(
        &self,
        sent: impl IntoIterator<Item = &'k String>,
        owner: Option<&str>,
    ) -> Result<(), Problem> {
        for field in sent {
            if !self.may_use(field, owner) {
                let need = self
                    .plan
                    .permission(field)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Err(Problem::forbidden(format!(
                    "writing `{field}` needs the permission {need}"
                )));
            }
        }
        Ok(())
    }

    fn validate(&self, body: Option<Value>, mode: Mode) -> Result<Map<String, Value>, Problem> {
        let doc = body.unwrap_or(Value::Null);
        match self.resource.table.schema.validate(&doc, mode) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(Problem::internal()),
            Err(violations) => Err(unprocessable(&violations)),
        }
    }
}

/// 422 with every violation.
pub fn unprocessable(violations: &[Violation]) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        format!(
            "{} validation error{}",
            violations.len(),
            if violations.len() == 1 { "" } else { "s" }
        ),
    );
    p.errors = Some(
        violations
            .iter()
            .map(|v| json!({ "pointer": v.pointer, "code": v.code, "message": v.message }))
            .collect(),
    );
    p
}

/// The store's failures as problems; internals go to the log only.
fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::NotFound => Problem::no_record(),
        StoreError::Unavailable(reason) => {
            tracing::warn!(%reason, "database unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry shortly",
            )
            .header(header::RETRY_AFTER, HeaderValue::from_static("2"))
        }
        StoreError::Timeout => Problem::timeout(),
        StoreError::Overloaded => {
            tracing::warn!("write queue full: write refused");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many writes are waiting; nothing was changed, retry shortly",
            )
            .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        }
        other => {
            tracing::error!(error = %other, "database error");
            Problem::internal()
        }
    }
}

/// 503 for a single row whose readable field needs a key the ring lacks: retrying after
/// the key is restored will succeed, unlike a value that can never decrypt.
fn key_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "key-unavailable",
        "a field of this record is encrypted with a key this server does not hold",
    )
    .header(header::RETRY_AFTER, HeaderValue::from_static("60"))
}

/// One row the caller may address (own rows only under an `:own` permission).
async fn fetch(cx: &Ctx<'_>, id: String) -> Result<Row, Problem> {
    let (res, owner, mask) = (cx.resource.clone(), cx.only_owner.clone(), cx.read_mask());
    cx.state
        .store
        .read(cx.deadline, move |c| {
            res.get(c, &id, owner.as_deref(), &mask)
        })
        .await
        .map_err(store_problem)
}

/// A JSON response whose body was rendered by the store.
fn json_body(mut res: actix_web::HttpResponseBuilder, body: String) -> HttpResponse {
    res.content_type("application/json").body(body)
}

async fn get(cx: &Ctx<'_>, req: &HttpRequest) -> Result<HttpResponse, Problem> {
    let row = fetch(cx, path_id(req)?).await?;
    // One row whose readable field needs a missing key: 503 (it reads again once the key
    // is back), not a row with a hole.
    if row.needs_missing_key() {
        return Err(key_unavailable());
    }
    Ok(json_body(HttpResponse::Ok(), row.into_json()))
}

async fn create(
    cx: &Ctx<'_>,
    req: &HttpRequest,
    body: Option<Value>,
) -> Result<HttpResponse, Problem> {
    let sent: Vec<String> = body
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let doc = cx.validate(body, Mode::Create)?;
    let owner = cx
        .caller
        .as_ref()
        .map(|c| c.subject.clone())
        .filter(|_| cx.plan.owner);
    cx.check_writes(&sent, owner.as_deref())?;
    // Encryption before, decryption after: the one writer only writes.
    let insert = cx
        .resource
        .prepare_insert(owner.as_deref(), &doc)
        .map_err(store_problem)?;
    let res = cx.resource.clone();
    let event = cx.event("create", insert.id(), doc.keys());
    // The change and its audit row commit together or not at all.
    let (text, audited) = cx
        .state
        .store
        .write(cx.deadline, move |c| {
            let text = res.insert(c, &insert)?;
            Ok((
                text,
                crate::store::audit::append(c, std::slice::from_ref(&event))?,
            ))
        })
        .await
        .map_err(store_problem)?;
    crate::audit::sink::trace(&audited);
    let row = cx
        .resource
        .reveal(&text, &cx.read_mask(), None)
        .map_err(store_problem)?;
    let location = format!("{}/{}", req.path().trim_end_matches('/'), row.id());
    let mut out = HttpResponse::Created();
    if let Ok(v) = HeaderValue::from_str(&location) {
        out.insert_header((header::LOCATION, v));
    }
    // The write committed: answer 201 even if a field cannot be shown.
    Ok(json_body(out, row.into_json()))
}

async fn update(
    cx: &Ctx<'_>,
    req: &HttpRequest,
    body: Option<Value>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(req)?;
    let patch = cx.validate(body, Mode::Patch)?;
    let guarded = patch.keys().any(|k| cx.plan.permission(k).is_some());
    let only_owner = cx.only_owner.clone();
    if guarded {
        // Field rules may depend on whose row it is: look before writing (the owner of a
        // row never changes).
        let row = fetch(cx, id.clone()).await?;
        cx.check_writes(patch.keys(), row.owner())?;
    }
    let update = cx
        .resource
        .prepare_update(&id, only_owner.as_deref(), &patch)
        .map_err(store_problem)?;
    let res = cx.resource.clone();
    let event = cx.event("update", &id, patch.keys());
    let (text, audited) = cx
        .state
        .store
        .write(cx.deadline, move |c| {
            let text = res.run_update(c, &update)?;
            Ok((
                text,
                crate::store::audit::append(c, std::slice::from_ref(&event))?,
            ))
        })
        .await
        .map_err(store_problem)?;
    crate::audit::sink::trace(&audited);
    let row = cx
        .resource
        .reveal(&text, &cx.read_mask(), None)
        .map_err(store_problem)?;
    Ok(json_body(HttpResponse::Ok(), row.into_json()))
}

async fn delete(cx: &Ctx<'_>, req: &HttpRequest) -> Result<HttpResponse, Problem> {
    let id = path_id(req)?;
    let (res, owner) = (cx.resource.clone(), cx.only_owner.clone());
    let event = cx.event("delete", &id, std::iter::empty::<&str>());
    let audited = cx
        .state
        .store
        .write(cx.deadline, move |c| {
            res.delete(c, &id, owner.as_deref())?;
            crate::store::audit::append(c, std::slice::from_ref(&event))
        })
        .await
        .map_err(store_problem)?;
    crate::audit::sink::trace(&audited);
    Ok(HttpResponse::NoContent().finish())
}

async fn list(cx: &Ctx<'_>, req: &HttpRequest) -> Result<HttpResponse, Problem> {
    let q = list_query(cx, req.query_string())?;
    let (res, mask) = (cx.resource.clone(), cx.read_mask());
    let (items, next) = cx
        .state
        .store
        .read(cx.deadline, move |c| res.list(c, &q, &mask))
        .await
        .map_err(store_problem)?;
    // The page is assembled from the rows' JSON text: no tree is built and walked again.
    let mut body =
        String::with_capacity(items.iter().map(|r| r.json().len() + 1).sum::<usize>() + 64);
    body.push_str("{\"items\":[");
    for (i, row) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row.json());
    }
    body.push_str("],\"next_cursor\":");
    body.push_str(&Value::from(next).to_string());
    body.push('}');
    Ok(json_body(HttpResponse::Ok(), body))
}

/// Parses `?limit=&cursor=&sort=&field=value`, reporting every bad parameter at once.
fn list_query(cx: &Ctx<'_>, query: &str) -> Result<ListQuery, Problem> {
    let mut q = ListQuery {
        owner: cx.only_owner.clone(),
        sort: "id".into(),
        limit: cx.plan.list.default_limit,
        ..Default::default()
    };
    let mut errors = Vec::new();
    let mut cursor = None;
    let bad = super::query::violation;
    for (name, value) in super::query::params(query, &mut errors) {
        match name.as_ref() {
            "limit" => match super::query::limit(&value, cx.plan.list.max_limit) {
                Ok(n) => q.limit = n,
                Err(v) => errors.push(v),
            },
            // An empty cursor is the first page, like no cursor.
            "cursor" if value.is_empty() => {}
            "cursor" => cursor = Some(value.to_string()),
            "sort" => {
                let (desc, field) = match value.strip_prefix('-') {
                    Some(f) => (true, f),
                    None => (false, value.as_ref()),
                };
                if cx.plan.list.can_sort(field) {
                    q.sort = field.to_string();
                    q.desc = desc;
                } else {
                    let why = cx
                        .plan
                        .field(field)
                        .and_then(|f| f.sort_refusal)
                        .map(|why| format!("; `{field}` is not sortable: {why}"))
                        .unwrap_or_default();
                    errors.push(bad(
                        "sort",
                        "enum",
                        format!(
                            "sort by one of: {} (prefix - for descending){why}",
                            cx.plan.list.sortable.join(", ")
                        ),
                    ));
                }
            }
            field => {
                let filterable = cx.plan.field(field).is_some_and(|f| f.filterable);
                match cx.resource.table.schema.field(field) {
                    Some(spec) if filterable => {
                        if cx.plan.permission(field).is_some() && !cx.may_use(field, None) {
                            errors.push(bad(
                                field,
                                "forbidden",
                                "you may not filter on this field".into(),
                            ));
                            continue;
                        }
                        match coerce_param(spec, &value) {
                            Ok(v) => q.filters.push((field.to_string(), v)),
                            Err(mut v) => {
                                v.pointer = super::query::pointer(field);
                                errors.push(v);
                            }
                        }
                    }
                    _ => errors.push(match cx.plan.field(field).and_then(|f| f.filter_refusal) {
                        Some(why) => bad(
                            field,
                            "not_filterable",
                            format!("this field cannot filter a list: {why}"),
                        ),
                        None => bad(
                            field,
                            "unknown_parameter",
                            "not a filterable field, limit, cursor or sort".into(),
                        ),
                    }),
                }
            }
        }
    }
    if !errors.is_empty() {
        errors.truncate(crate::validate::MAX_VIOLATIONS);
        return Err(unprocessable(&errors));
    }
    if let Some(text) = cursor {
        match cx.resource.decode_cursor(&text) {
            Some(c) if c.sort == q.sort && c.desc == q.desc && cursor_value_fits(cx, &c) => {
                q.after = Some(c)
            }
            _ => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-cursor",
                    "invalid cursor: it must be the next_cursor of a page of this list with the same sort, unchanged",
                ));
            }
        }
    }
    Ok(q)
}

/// A cursor's value must have the sort column's type, or the keyset comparison is
/// meaningless.
fn cursor_value_fits(cx: &Ctx<'_>, c: &Cursor) -> bool {
    if uuid::Uuid::parse_str(&c.id).is_err() {
        return false;
    }
    match c.sort.as_str() {
        "id" | "created_at" | "updated_at" => c.value.is_string(),
        field => cx
            .resource
            .table
            .schema
            .field(field)
            .is_some_and(|f| f.validate(&c.value).is_ok()),
    }
}
