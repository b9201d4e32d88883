//! One operation per route: its id, summary, who may call it, parameters, request body,
//! success and problem responses.

use actix_web::http::Method;
use serde_json::{Map, Value, json};

use super::schemas::{guard_note, own_form};
use super::{Builder, HEADERS, RESPONSES, SCHEMAS};
use crate::plan::data::ResourcePlan;
use crate::plan::routes::{Access, Action, RoutePlan};
use crate::validate::{CompiledField, Mode, Schema};

impl Builder<'_> {
    pub(super) fn operation(&mut self, route: &RoutePlan) -> Value {
        let target = self.target(route);
        let mut op = Map::new();
        op.insert("operationId".into(), json!(self.operation_id(route)));
        let tag = match &route.resource {
            Some(r) => r.0.as_str(),
            None if route.action.is_session() => "session",
            None => "service",
        };
        op.insert("tags".into(), json!([tag]));
        op.insert(
            "summary".into(),
            json!(
                route
                    .summary
                    .clone()
                    .unwrap_or_else(|| default_summary(route))
            ),
        );
        if let Some(text) = access_description(route, target.map(|(res, _)| res)) {
            op.insert("description".into(), json!(text));
        }

        let mut parameters = Vec::new();
        if matches!(route.action, Action::Get | Action::Update | Action::Delete) {
            parameters.push(json!({
                "name": "id",
                "in": "path",
                "required": true,
                "description": "The record's id (UUIDv7).",
                "schema": { "type": "string", "format": "uuid" },
            }));
        }
        if let (Action::List, Some((res, schema))) = (route.action, target) {
            parameters.extend(list_parameters(res, schema));
        }
        parameters.extend(session_parameters(route.action));
        if route.action == Action::Audit {
            parameters.extend(audit_parameters());
        }
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }

        if let Some(body) = target.and_then(|(res, schema)| request_body(route, res, schema)) {
            op.insert("requestBody".into(), body);
        }

        let record = target.map(|(res, schema)| self.record_component(route, res, schema));
        op.insert(
            "responses".into(),
            Value::Object(self.responses(route, record.as_deref())),
        );

        op.insert(
            "security".into(),
            match route.access {
                Access::Public => json!([]),
                _ => self.schemes.requirement(),
            },
        );
        op.insert(
            "x-nestflux-access".into(),
            json!(access_kind(&route.access)),
        );
        if let Access::Permission(p) = &route.access {
            op.insert("x-nestflux-permission".into(), json!(p.to_string()));
        }
        if let Some(policy) = &route.rate_limit {
            op.insert("x-nestflux-rate-limit".into(), json!(policy.0));
        }
        Value::Object(op)
    }

    /// `{action}_{resource}` (or the action), made unique with a numeric suffix.
    fn operation_id(&mut self, route: &RoutePlan) -> String {
        let base = match &route.resource {
            Some(res) => format!("{}_{}", route.action.name(), res.0),
            None => route.action.name().to_string(),
        };
        let mut id = base.clone();
        let mut n = 2;
        while self.operation_ids.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        self.operation_ids.insert(id.clone());
        id
    }

    /// The success response of a route and the problem responses it may answer.
    fn responses(&self, route: &RoutePlan, record: Option<&str>) -> Map<String, Value> {
        let limited = route.rate_limit.is_some() || self.plan.rate_limits.global().is_some();
        let mut out = Map::new();
        let (status, mut success) = success_response(route, record);
        if limited
            && let Value::Object(map) = &mut success
            && let Value::Object(headers) = map.entry("headers").or_insert_with(|| json!({}))
        {
            rate_limit_headers(headers);
        }
        out.insert(status.into(), success);

        let body = route.action.takes_body();
        let by_id = matches!(route.action, Action::Get | Action::Update | Action::Delete);
        // A malformed `{id}` is a 404 (it cannot name a row), so only bodies and list
        // queries are validated into a 422.
        let validated = body || matches!(route.action, Action::List | Action::Audit);
        let field_guarded = body
            && self
                .target(route)
                .is_some_and(|(res, _)| res.guarded().next().is_some());
        let mut refer = |status: &str, name: &str| {
            out.insert(
                status.into(),
                json!({ "$ref": format!("{RESPONSES}{name}") }),
            );
        };
        refer("400", "BadRequest");
        // A write authenticated by the session cookie from a foreign origin is a 403 too.
        let cookie_write = self.schemes.has_session()
            && !matches!(route.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if route.access != Access::Public {
            refer("401", "Unauthorized");
            if matches!(route.access, Access::Permission(_)) || field_guarded || cookie_write {
                refer("403", "Forbidden");
            }
        }
        if by_id {
            refer("404", "NotFound");
        }
        if body {
            refer("413", "PayloadTooLarge");
            refer("415", "UnsupportedMediaType");
        }
        if validated {
            refer("422", "ValidationFailed");
        }
        if limited {
            refer("429", "TooManyRequests");
        }
        if route.action == Action::Logout {
            refer("403", "Forbidden");
        }
        if route.action == Action::Callback {
            refer("404", "NotFound");
        }
        // With Redis and `on_backend_error = "deny"`, a rate-limited route answers 503 while
        // Redis cannot decide.
        let limiter_may_refuse = limited
            && matches!(
                &self.plan.rate_limits.backend,
                crate::plan::ratelimit::LimitBackend::Redis(r)
                    if r.on_error == crate::plan::ratelimit::OnBackendError::Deny
            );
        if route.action.needs_resource()
            || matches!(
                route.action,
                Action::Login | Action::Callback | Action::Audit
            )
            || limiter_may_refuse
        {
            refer("503", "ServiceUnavailable");
        }
        out
    }
}

fn default_summary(route: &RoutePlan) -> String {
    let res = route.resource.as_ref().map_or("", |r| r.0.as_str());
    match route.action {
        Action::Health if route.detail => "Health of the service with its checks".into(),
        Action::Health => "Liveness of the service".into(),
        Action::Whoami => "The caller's identity, roles and permissions".into(),
        Action::Audit => "The audit log".into(),
        Action::OpenApi => "This OpenAPI document".into(),
        Action::Metrics => "Metrics in the Prometheus text format".into(),
        Action::List => format!("List {res}"),
        Action::Get => format!("Get one of {res}"),
        Action::Create => format!("Create one of {res}"),
        Action::Update => format!("Update one of {res}"),
        Action::Delete => format!("Delete one of {res}"),
        Action::Login => "Start the browser login at the OpenID provider".into(),
        Action::Callback => "The provider's redirect back after login".into(),
        Action::Logout => "End the browser session, here and at the provider".into(),
        Action::Session => "The browser session, for front ends".into(),
    }
}

/// The query parameters of the audit log.
fn audit_parameters() -> Vec<Value> {
    let query = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "query", "description": description, "schema": schema });
    let text = || json!({ "type": "string", "maxLength": 512 });
    let time = || json!({ "type": "string", "format": "date-time" });
    vec![
        query(
            "actor",
            "Only events of this subject (`dev:alice`, `apikey:ci`, a provider's `sub`; `-` for none).",
            text(),
        ),
        query(
            "action",
            "Only this action: `create`, `update`, `delete`, `authz.denied`, `auth.failures`, `ratelimit.exceeded`, `session.login`, `session.logout`, `session.refresh_failed`, `keys.rotate`, `config.loaded`, `audit.prune`, `audit.lost`.",
            text(),
        ),
        query("resource", "Only events about this resource.", text()),
        query("record_id", "Only events about this record.", text()),
        query(
            "since",
            "Only events at or after this time (RFC 3339).",
            time(),
        ),
        query("until", "Only events before this time (RFC 3339).", time()),
        query(
            "limit",
            "Events per page.",
            json!({ "type": "integer", "minimum": 1, "maximum": 200, "default": 50 }),
        ),
        query(
            "cursor",
            "The `next_cursor` of the previous page, unchanged (it is authenticated: an edited or foreign cursor is a 400). Empty or absent: the first page.",
            text(),
        ),
    ]
}

/// The query parameters of the browser-login routes.
fn session_parameters(action: Action) -> Vec<Value> {
    let query = |name: &str, description: &str| {
        json!({
            "name": name,
            "in": "query",
            "description": description,
            "schema": { "type": "string" },
        })
    };
    match action {
        Action::Login => vec![query(
            "return_to",
            "Where to go after login: a path on this server (`/app`), or a URL on an origin listed in `[cors]`. Anything else is replaced by `/`.",
        )],
        Action::Callback => vec![
            query("code", "The authorization code (from the provider)."),
            json!({
                "name": "state",
                "in": "query",
                "required": true,
                "description": "The login's state (from the provider). Without it: 400. One that names no pending login (unknown, already used, or swept after it expired): 404.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": crate::auth::session::MAX_STATE_LEN,
                },
            }),
            query("iss", "The provider's issuer identifier (RFC 9207)."),
            query("error", "Why the provider did not log the user in."),
            query(
                "error_description",
                "The provider's explanation (never shown).",
            ),
        ],
        _ => Vec::new(),
    }
}

fn access_kind(access: &Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Authenticated => "authenticated",
        Access::Permission(_) => "permission",
    }
}

/// Who may call, in words: the permission, its `:own` form, and guarded fields.
fn access_description(route: &RoutePlan, res: Option<&ResourcePlan>) -> Option<String> {
    let mut lines = Vec::new();
    match &route.access {
        Access::Public => lines.push("Public: no credentials needed.".to_string()),
        Access::Authenticated => lines.push("Any authenticated caller.".to_string()),
        Access::Permission(p) => {
            lines.push(format!("Needs the permission `{p}`."));
            if res.is_some_and(|r| r.owner) && route.action != Action::Create {
                let own = own_form(p);
                lines.push(if route.action == Action::List {
                    format!("Callers holding only `{own}` see only the rows they own.")
                } else {
                    format!("Callers holding only `{own}` may act only on rows they own.")
                });
            }
        }
    }
    if let Some(res) = res.filter(|_| route.action != Action::Delete) {
        for (field, p) in res.guarded() {
            lines.push(format!(
                "The field `{field}` is hidden from callers without `{p}` (or `{}` on their own rows), and writing it needs the same.",
                own_form(p)
            ));
        }
    }
    (!lines.is_empty()).then(|| lines.join(" "))
}

/// `limit`, `cursor`, `sort` and one equality filter per plain scalar field.
fn list_parameters(res: &ResourcePlan, schema: &Schema) -> Vec<Value> {
    let sort: Vec<Value> = res
        .list
        .sortable
        .iter()
        .flat_map(|name| [json!(name), json!(format!("-{name}"))])
        .collect();
    let mut out = vec![
        json!({
            "name": "limit",
            "in": "query",
            "description": "Most items in the page.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": res.list.max_limit,
                "default": res.list.default_limit,
            },
        }),
        json!({
            "name": "cursor",
            "in": "query",
            "description": "The `next_cursor` of the previous page, unchanged (it is authenticated: an edited or foreign cursor is a 400). Empty or absent: the first page.",
            "schema": { "type": "string" },
        }),
        json!({
            "name": "sort",
            "in": "query",
            "description": "The field to sort by; a leading `-` sorts descending. Default `id` (creation order).",
            "schema": { "type": "string", "enum": sort, "default": "id" },
        }),
    ];
    for f in schema
        .fields()
        .iter()
        .filter(|f| res.field(f.name()).is_some_and(|p| p.filterable))
    {
        let mut description = format!("Only items whose `{}` equals this value.", f.name());
        if let Some(p) = res.permission(f.name()) {
            description.push_str(&format!(" The field needs `{p}`."));
        }
        out.push(json!({
            "name": f.name(),
            "in": "query",
            "description": description,
            "schema": parameter_schema(f),
        }));
    }
    out
}

/// A field's schema as a query parameter: one value, never `null`, no default.
fn parameter_schema(f: &CompiledField) -> Value {
    let mut s = f.json_schema();
    if let Value::Object(map) = &mut s {
        map.remove("default");
        map.remove("description");
        if let Some(Value::Array(types)) = map.get("type") {
            let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            let ty = match kept.as_slice() {
                [one] => one.clone(),
                _ => Value::Array(kept),
            };
            map.insert("type".into(), ty);
        }
        if let Some(Value::Array(values)) = map.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
    }
    s
}

fn request_body(route: &RoutePlan, res: &ResourcePlan, schema: &Schema) -> Option<Value> {
    let body_schema = match route.action {
        Action::Create => json!({ "$ref": format!("{SCHEMAS}{}", schema.name()) }),
        Action::Update => {
            let mut patch = schema.json_schema(Mode::Patch);
            if let Some(Value::Object(props)) = patch.get_mut("properties") {
                for (field, p) in res.guarded() {
                    if let Some(prop) = props.get_mut(field) {
                        guard_note(prop, p);
                    }
                }
            }
            patch
        }
        _ => return None,
    };
    let mut description = match route.action {
        Action::Create => format!(
            "A new {}: unknown fields are refused and declared defaults are applied.",
            schema.name()
        ),
        _ => format!(
            "The fields of {} to change; absent fields are kept, `null` clears a nullable or optional one. Unknown fields are refused.",
            schema.name()
        ),
    };
    for (field, p) in res.guarded() {
        description.push_str(&format!(" Writing `{field}` needs `{p}`."));
    }
    Some(json!({
        "required": true,
        "description": description,
        "content": { "application/json": { "schema": body_schema } },
    }))
}

/// The success status and response of a route.
fn success_response(route: &RoutePlan, record: Option<&str>) -> (&'static str, Value) {
    let json_body = |description: &str, schema: Value| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": schema } },
        })
    };
    let record_ref = |name: Option<&str>| match name {
        Some(name) => json!({ "$ref": format!("{SCHEMAS}{name}") }),
        None => json!({ "type": "object" }),
    };
    match route.action {
        Action::Health if !route.detail => (
            "200",
            json_body(
                "The service is up (always 200 while the process lives); `degraded` when the database is unavailable. Only the status: the checks behind it are on a health route declared with `detail = true`.",
                json!({
                    "type": "object",
                    "required": ["status"],
                    "additionalProperties": false,
                    "properties": {
                        "status": { "type": "string", "enum": ["ok", "degraded"] },
                    },
                }),
            ),
        ),
        Action::Health => (
            "200",
            json_body(
                "The service is up (always 200 while the process lives), with the checks behind the status: each dependency, each issuer's signing keys, and the SHA-256 of the effective configuration with secrets left out.",
                json!({
                    "type": "object",
                    "required": ["status", "checks", "issuers", "config_hash"],
                    "properties": {
                        "status": { "type": "string", "enum": ["ok", "degraded"] },
                        "checks": {
                            "type": "object",
                            "description": "Each dependency: `ok` or `unavailable`.",
                            "required": ["database"],
                            "additionalProperties": { "type": "string", "enum": ["ok", "unavailable"] },
                        },
                        "issuers": {
                            "type": "array",
                            "description": "The signing keys of each issuer: `fixed` (development issuer), `fresh`, `stale` (fetches failing; the last good keys serve until auth.jwks_max_stale) or `none` (no usable key: tokens of this issuer are refused).",
                            "items": {
                                "type": "object",
                                "required": ["issuer", "state", "keys"],
                                "properties": {
                                    "issuer": { "type": "string" },
                                    "state": { "type": "string", "enum": ["fixed", "fresh", "stale", "none"] },
                                    "keys": { "type": "integer", "minimum": 0 },
                                    "age_s": { "type": ["integer", "null"], "minimum": 0, "description": "Seconds since the last valid answer." },
                                    "max_stale_s": { "type": ["integer", "null"], "minimum": 0 },
                                },
                            },
                        },
                        "config_hash": { "type": "string", "pattern": "^sha256:[0-9a-f]{64}$" },
                    },
                }),
            ),
        ),
        Action::Whoami => (
            "200",
            json_body(
                "Who the caller is.",
                json!({
                    "type": "object",
                    "required": ["subject", "kind", "roles", "permissions"],
                    "properties": {
                        "subject": { "type": "string" },
                        "kind": { "type": "string", "enum": ["bearer", "dev", "api_key", "session"] },
                        "roles": { "type": "array", "items": { "type": "string" } },
                        "permissions": { "type": "array", "items": { "type": "string" } },
                        "api_key": { "type": "string", "description": "The key's name, for API-key callers." },
                    },
                }),
            ),
        ),
        Action::OpenApi => (
            "200",
            json_body("This OpenAPI 3.1 document.", json!({ "type": "object" })),
        ),
        Action::Metrics => (
            "200",
            json!({
                "description": "The server's metrics in the Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`): requests by route template, method and status with latency histograms, authentication and authorization outcomes, rate-limit decisions, database pool, writer queue and commits, key refreshes, token cache, decryption failures, reloads and the config hash.",
                "content": { "text/plain": { "schema": { "type": "string" } } },
            }),
        ),
        Action::Audit => (
            "200",
            json_body(
                "A page of audit events, newest first.",
                json!({
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": { "type": "array", "items": {
                            "type": "object",
                            "required": ["seq", "at", "actor", "action", "resource", "record_id", "outcome", "details", "request_id", "client_ip", "prev_hash", "hash"],
                            "properties": {
                                "seq": { "type": "integer", "minimum": 1 },
                                "at": { "type": "string", "format": "date-time" },
                                "actor": { "type": "string" },
                                "action": { "type": "string" },
                                "resource": { "type": "string" },
                                "record_id": { "type": "string" },
                                "outcome": { "type": "string" },
                                "details": { "type": ["object", "null"], "description": "Field names, counts, hashes: never a field's value. Hashed as the stored JSON text (see `nestflux audit export`)." },
                                "request_id": { "type": "string" },
                                "client_ip": { "type": "string" },
                                "prev_hash": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                                "hash": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                            },
                        } },
                        "next_cursor": {
                            "type": ["string", "null"],
                            "description": "Pass as `cursor` for the next page; `null` on the last page.",
                        },
                    },
                }),
            ),
        ),
        Action::List => (
            "200",
            json_body(
                "One page of records.",
                json!({
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": { "type": "array", "items": record_ref(record) },
                        "next_cursor": {
                            "type": ["string", "null"],
                            "description": "Pass as `cursor` for the next page; `null` on the last page.",
                        },
                    },
                }),
            ),
        ),
        Action::Get => ("200", json_body("The record.", record_ref(record))),
        Action::Update => ("200", json_body("The updated record.", record_ref(record))),
        Action::Create => {
            let mut res = json_body("The created record.", record_ref(record));
            if let Value::Object(map) = &mut res {
                map.insert(
                    "headers".into(),
                    json!({
                        "Location": {
                            "description": "The path of the new record.",
                            "required": true,
                            "schema": { "type": "string", "format": "uri-reference" },
                        },
                    }),
                );
            }
            ("201", res)
        }
        Action::Delete => ("204", json!({ "description": "Deleted." })),
        Action::Login => (
            "302",
            redirect(
                "To the provider's authorization endpoint, with `state`, `nonce` and a PKCE S256 challenge; sets the short-lived login cookie that binds the login to this browser.",
            ),
        ),
        Action::Callback => (
            "303",
            redirect("To `return_to`, with the new session cookie (a fresh id at every login)."),
        ),
        Action::Logout => (
            "303",
            redirect(
                "To the provider's `end_session_endpoint` (with `id_token_hint` and `post_logout_redirect_uri`), or to the post-logout URL; the session is deleted and its cookie cleared.",
            ),
        ),
        Action::Session => (
            "200",
            json_body(
                "The browser session, or `authenticated: false`.",
                json!({
                    "type": "object",
                    "required": ["authenticated"],
                    "properties": {
                        "authenticated": { "type": "boolean" },
                        "subject": { "type": "string" },
                        "roles": { "type": "array", "items": { "type": "string" } },
                        "expires_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the session ends if unused (idle timeout), never later than its absolute timeout.",
                        },
                    },
                }),
            ),
        ),
    }
}

/// A redirect response with its `Location`.
fn redirect(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {
            "Location": {
                "description": "Where the browser goes next.",
                "required": true,
                "schema": { "type": "string", "format": "uri-reference" },
            },
        },
    })
}

fn rate_limit_headers(headers: &mut Map<String, Value>) {
    for name in ["RateLimit", "RateLimit-Policy"] {
        headers.insert(name.into(), json!({ "$ref": format!("{HEADERS}{name}") }));
    }
}
