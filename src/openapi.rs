//! OpenAPI 3.1 of a compiled [`Plan`]: every route with its parameters, body, success and
//! problem+json responses, security requirement and needed permission — and never a secret.
//!
//! ```text
//! Plan ─ document(&plan) → serde_json::Value ─ render(&plan) → pretty JSON text
//!                                                ├─ `nestflux openapi` prints it
//!                                                └─ the `openapi` action serves the same text
//! ```
//!
//! Request bodies come from the same compiled validators that check requests
//! ([`crate::validate::Schema::json_schema`]), so the document promises what the server
//! enforces. Only what a client may know goes in: no issuer secrets, keys, key hashes or
//! database URL, and no bind address (the document is the same wherever it is served).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::plan::Plan;
use crate::plan::data::ResourcePlan;
use crate::plan::roles::Permission;
use crate::plan::routes::{Access, Action, RoutePlan};
use crate::validate::{CompiledField, Mode, Schema};

/// The `openapi` field of every document.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Name of the browser-session cookie, published when `[auth.session]` is declared.
pub const SESSION_COOKIE: &str = "nestflux_session";

/// Where `$ref`s into `components` point.
const SCHEMAS: &str = "#/components/schemas/";
const RESPONSES: &str = "#/components/responses/";
const HEADERS: &str = "#/components/headers/";

/// The OpenAPI 3.1 document of `plan`.
pub fn document(plan: &Plan) -> Value {
    Builder::new(plan).build()
}

/// The document as the pretty-printed JSON text that is both printed and served.
pub fn render(plan: &Plan) -> String {
    format!("{:#}", document(plan))
}

/// Which security schemes a plan declares.
struct Schemes {
    bearer: bool,
    api_key: bool,
    session: bool,
}

impl Schemes {
    fn of(plan: &Plan) -> Self {
        let auth = plan.auth.as_ref();
        let api_key = auth.is_some_and(|a| !a.api_keys.is_empty());
        Self {
            // API keys may also be sent as `Authorization: Bearer nfk_…`.
            bearer: auth.is_some_and(|a| a.issuer.is_some() || a.dev_issuer) || api_key,
            api_key,
            session: auth.is_some_and(|a| a.session.is_some()),
        }
    }

    fn components(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if self.bearer {
            out.insert(
                "bearer".into(),
                json!({
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <token>`: a JWT from the configured issuer (or, when API keys are declared, an API key `nfk_…`).",
                }),
            );
        }
        if self.api_key {
            out.insert(
                "apiKey".into(),
                json!({
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "A declared API key `nfk_…`; its roles come from the configuration.",
                }),
            );
        }
        if self.session {
            out.insert(
                "session".into(),
                json!({
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "The browser session made by the OIDC login.",
                }),
            );
        }
        out
    }

    /// The `security` of a route that needs an identity: any one declared scheme.
    fn requirement(&self) -> Value {
        let names = [
            (self.bearer, "bearer"),
            (self.api_key, "apiKey"),
            (self.session, "session"),
        ];
        Value::Array(
            names
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| json!({ *name: [] }))
                .collect(),
        )
    }
}

struct Builder<'a> {
    plan: &'a Plan,
    schemes: Schemes,
    /// `components.schemas`, starting with every declared schema's `Create` form.
    schemas: Map<String, Value>,
    /// The `Problem` component's name (renamed if a declared schema took it).
    problem: String,
    paths: Map<String, Value>,
    operation_ids: BTreeSet<String>,
}

impl<'a> Builder<'a> {
    fn new(plan: &'a Plan) -> Self {
        let mut schemas = plan.schemas.components();
        let problem = fresh_name(&schemas, "Problem");
        schemas.insert(problem.clone(), problem_schema());
        Self {
            plan,
            schemes: Schemes::of(plan),
            schemas,
            problem,
            paths: Map::new(),
            operation_ids: BTreeSet::new(),
        }
    }

    fn build(mut self) -> Value {
        for route in &self.plan.routes {
            let op = self.operation(route);
            let item = self
                .paths
                .entry(route.path.clone())
                .or_insert_with(|| json!({}));
            if let Value::Object(item) = item {
                item.insert(route.method.as_str().to_ascii_lowercase(), op);
            }
        }
        let mut components = Map::new();
        components.insert("schemas".into(), Value::Object(self.schemas.clone()));
        components.insert(
            "responses".into(),
            Value::Object(problem_responses(&self.problem)),
        );
        components.insert("headers".into(), Value::Object(header_components()));
        let schemes = self.schemes.components();
        if !schemes.is_empty() {
            components.insert("securitySchemes".into(), Value::Object(schemes));
        }
        json!({
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": env!("CARGO_PKG_NAME"),
                "version": env!("CARGO_PKG_VERSION"),
                "description": env!("CARGO_PKG_DESCRIPTION"),
            },
            "paths": Value::Object(self.paths),
            "components": Value::Object(components),
        })
    }

    /// The resource a route acts on and its schema, when both are declared.
    fn target(&self, route: &RoutePlan) -> Option<(&'a ResourcePlan, &'a Schema)> {
        let res = self.plan.resources.get(route.resource.as_ref()?)?;
        let schema = self.plan.schemas.get(&res.schema)?;
        Some((res, schema))
    }

    fn operation(&mut self, route: &RoutePlan) -> Value {
        let target = self.target(route);
        let mut op = Map::new();
        op.insert("operationId".into(), json!(self.operation_id(route)));
        op.insert(
            "tags".into(),
            json!([route.resource.as_ref().map_or("service", |r| r.0.as_str())]),
        );
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

    /// The `<Schema>Record` component of a resource (what get, list, create and update
    /// return), added on first use; its name.
    fn record_component(
        &mut self,
        route: &RoutePlan,
        res: &ResourcePlan,
        schema: &Schema,
    ) -> String {
        // A public create on an owned resource stores no owner.
        let anonymous_owner = self.plan.routes.iter().any(|r| {
            r.action == Action::Create
                && r.access == Access::Public
                && r.resource.as_ref() == Some(&res.name)
        });
        let shape = record_schema(res, schema, anonymous_owner);
        let base = format!("{}Record", schema.name());
        let mut name = base.clone();
        let mut n = 2;
        loop {
            match self.schemas.get(&name) {
                None => {
                    self.schemas.insert(name.clone(), shape);
                    return name;
                }
                Some(existing) if *existing == shape => return name,
                // Another resource with the same schema but a different record (owner).
                Some(_) => {
                    name = if n == 2 {
                        format!(
                            "{base}_{}",
                            route.resource.as_ref().map_or("x", |r| r.0.as_str())
                        )
                    } else {
                        format!("{base}_{n}")
                    };
                    n += 1;
                }
            }
        }
    }

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
        let validated = body || route.action == Action::List;
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
        if route.access != Access::Public {
            refer("401", "Unauthorized");
            if matches!(route.access, Access::Permission(_)) || field_guarded {
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
        if route.action.needs_resource() {
            refer("503", "ServiceUnavailable");
        }
        out
    }
}

/// `Problem`, or `Problem_2`… when a declared schema already has the name.
fn fresh_name(taken: &Map<String, Value>, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while taken.contains_key(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

fn default_summary(route: &RoutePlan) -> String {
    let res = route.resource.as_ref().map_or("", |r| r.0.as_str());
    match route.action {
        Action::Health => "Liveness of the service".into(),
        Action::Whoami => "The caller's identity, roles and permissions".into(),
        Action::Audit => "The audit log".into(),
        Action::OpenApi => "This OpenAPI document".into(),
        Action::List => format!("List {res}"),
        Action::Get => format!("Get one of {res}"),
        Action::Create => format!("Create one of {res}"),
        Action::Update => format!("Update one of {res}"),
        Action::Delete => format!("Delete one of {res}"),
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

fn own_form(p: &Permission) -> Permission {
    Permission {
        own: true,
        ..p.clone()
    }
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
            "description": "The `next_cursor` of the previous page, as given.",
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

/// Appends a field permission to a property's description, and names it as an extension.
fn guard_note(prop: &mut Value, p: &Permission) {
    let Value::Object(map) = prop else { return };
    let note = format!(
        "Needs `{p}` (or `{}` on the caller's own rows) to read or write; hidden from other callers.",
        own_form(p)
    );
    let text = match map.get("description").and_then(Value::as_str) {
        Some(d) => format!("{d} {note}"),
        None => note,
    };
    map.insert("description".into(), json!(text));
    map.insert("x-nestflux-field-permission".into(), json!(p.to_string()));
}

/// A stored row: the schema's `Create` form (defaults filled, so fields with one are always
/// present) plus the server-set fields. Optional fields may come back as `null`; guarded
/// fields may be absent.
fn record_schema(res: &ResourcePlan, schema: &Schema, anonymous_owner: bool) -> Value {
    let mut props = Map::new();
    let mut required = vec![json!("id")];
    props.insert(
        "id".into(),
        json!({ "type": "string", "format": "uuid", "description": "Set by the server (UUIDv7)." }),
    );
    if res.owner {
        let ty = if anonymous_owner {
            json!(["string", "null"])
        } else {
            json!("string")
        };
        props.insert(
            "owner".into(),
            json!({ "type": ty, "description": "Set by the server: the subject who created the row." }),
        );
        required.push(json!("owner"));
    }
    for f in schema.fields() {
        let mut s = f.json_schema();
        if let Value::Object(map) = &mut s {
            map.remove("default");
        }
        let absent_allowed = f.is_optional() && f.default().is_none();
        if absent_allowed && !f.is_nullable() {
            make_nullable(&mut s);
        }
        if res.field(f.name()).is_some_and(|p| p.encrypted)
            && let Value::Object(map) = &mut s
        {
            let text = match map.get("description").and_then(Value::as_str) {
                Some(d) => format!("{d} Encrypted at rest."),
                None => "Encrypted at rest.".to_string(),
            };
            map.insert("description".into(), json!(text));
        }
        let guarded = res.permission(f.name());
        if let Some(p) = guarded {
            guard_note(&mut s, p);
        }
        if !absent_allowed && guarded.is_none() {
            required.push(json!(f.name()));
        }
        props.insert(f.name().to_string(), s);
    }
    for stamp in ["created_at", "updated_at"] {
        props.insert(
            stamp.into(),
            json!({ "type": "string", "format": "date-time", "description": "Set by the server (RFC 3339, UTC)." }),
        );
        required.push(json!(stamp));
    }
    json!({
        "type": "object",
        "description": format!("A stored {}, with the fields the server sets.", schema.name()),
        "properties": Value::Object(props),
        "required": required,
    })
}

/// Lets `null` through a field schema: a type list, an enum value, or `anyOf` around a `$ref`.
fn make_nullable(s: &mut Value) {
    let Value::Object(map) = s else { return };
    if let Some(reference) = map.remove("$ref") {
        map.insert(
            "anyOf".into(),
            json!([{ "$ref": reference }, { "type": "null" }]),
        );
        return;
    }
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = t.clone();
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => {
            types.push(json!("null"));
        }
        _ => {}
    }
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.iter().any(Value::is_null)
    {
        values.push(Value::Null);
    }
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
        Action::Health => (
            "200",
            json_body(
                "The service is up.",
                json!({
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": { "type": "string", "enum": ["ok", "degraded"] },
                        "checks": {
                            "type": "object",
                            "additionalProperties": { "type": "string", "enum": ["ok", "unavailable"] },
                        },
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
                        "kind": { "type": "string", "enum": ["bearer", "dev", "api_key"] },
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
        Action::Audit => (
            "200",
            json_body("Audit log entries.", json!({ "type": "object" })),
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
    }
}

fn rate_limit_headers(headers: &mut Map<String, Value>) {
    for name in ["RateLimit", "RateLimit-Policy"] {
        headers.insert(name.into(), json!({ "$ref": format!("{HEADERS}{name}") }));
    }
}

/// RFC 9457 problem details, as every error is answered.
fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": {
                "type": "string",
                "format": "uri",
                "description": "A stable URN naming the problem, e.g. `urn:nestflux:problem:validation`.",
            },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "request_id": {
                "type": "string",
                "description": "Also in the `X-Request-Id` header; identifies the request in the logs.",
            },
            "errors": {
                "type": "array",
                "description": "Every validation error found (422).",
                "items": {
                    "type": "object",
                    "required": ["pointer", "message"],
                    "properties": {
                        "pointer": {
                            "type": "string",
                            "description": "RFC 6901 JSON pointer into the request: into the body, or `/query/NAME` for a query parameter.",
                        },
                        "code": {
                            "type": "string",
                            "description": "Stable machine code, e.g. `required`, `too_long`, `format`.",
                        },
                        "message": { "type": "string" },
                    },
                },
            },
        },
    })
}

/// The error responses operations refer to.
fn problem_responses(problem: &str) -> Map<String, Value> {
    let content = json!({
        "application/problem+json": { "schema": { "$ref": format!("{SCHEMAS}{problem}") } }
    });
    let header = |name: &str| json!({ "$ref": format!("{HEADERS}{name}") });
    let entries = [
        ("BadRequest", "Malformed JSON or query.", json!(null)),
        (
            "Unauthorized",
            "Missing or invalid credentials.",
            json!({ "WWW-Authenticate": header("WWW-Authenticate") }),
        ),
        ("Forbidden", "Authenticated but not permitted.", json!(null)),
        (
            "NotFound",
            "No such record, or one the caller may not see.",
            json!(null),
        ),
        (
            "PayloadTooLarge",
            "The request body is larger than the server accepts.",
            json!(null),
        ),
        (
            "UnsupportedMediaType",
            "The request body is not application/json.",
            json!(null),
        ),
        (
            "ValidationFailed",
            "The request is well-formed but invalid; `errors` lists every violation.",
            json!(null),
        ),
        (
            "TooManyRequests",
            "Rate limited.",
            json!({
                "Retry-After": header("Retry-After"),
                "RateLimit": header("RateLimit"),
                "RateLimit-Policy": header("RateLimit-Policy"),
            }),
        ),
        (
            "ServiceUnavailable",
            "The database is unavailable; nothing was written.",
            json!({ "Retry-After": header("Retry-After") }),
        ),
    ];
    entries
        .into_iter()
        .map(|(name, description, headers)| {
            let mut res = json!({ "description": description, "content": content.clone() });
            if let (Value::Object(map), false) = (&mut res, headers.is_null()) {
                map.insert("headers".into(), headers);
            }
            (name.to_string(), res)
        })
        .collect()
}

fn header_components() -> Map<String, Value> {
    let entries = [
        (
            "WWW-Authenticate",
            "RFC 6750 challenge, e.g. `Bearer error=\"invalid_token\"`.",
            json!({ "type": "string" }),
        ),
        (
            "Retry-After",
            "Whole seconds to wait before the request would be admitted.",
            json!({ "type": "integer", "minimum": 1 }),
        ),
        (
            "RateLimit",
            "Remaining quota per applied policy (draft-ietf-httpapi-ratelimit-headers), e.g. `\"writes\";r=9;t=6`.",
            json!({ "type": "string" }),
        ),
        (
            "RateLimit-Policy",
            "The applied policies' quota and window, e.g. `\"writes\";q=60;w=60`.",
            json!({ "type": "string" }),
        ),
    ];
    entries
        .into_iter()
        .map(|(name, description, schema)| {
            (
                name.to_string(),
                json!({ "description": description, "schema": schema }),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml: &str) -> Plan {
        let raw: crate::config::RawConfig = toml::from_str(toml).expect("config parses");
        match crate::plan::compile(&raw, crate::plan::Profile::Development) {
            Ok(plan) => plan,
            Err(e) => panic!("config compiles: {:?}", e.errors),
        }
    }

    #[test]
    fn query_parameters_drop_null_and_default() {
        let p = plan(
            r#"
[schemas.T]
state = { type = "enum", values = ["a", "b"], nullable = true, default = "a" }
n = { type = "integer", optional = true, nullable = true }

[resources.t]
schema = "T"

[[routes]]
method = "GET"
path = "/t"
action = "list"
resource = "t"
public = true
"#,
        );
        let doc = document(&p);
        let params = doc["paths"]["/t"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let state = params
            .iter()
            .find(|p| p["name"] == "state")
            .expect("state filter");
        assert_eq!(state["schema"]["enum"], json!(["a", "b"]));
        assert_eq!(state["schema"]["type"], json!("string"));
        assert!(state["schema"].get("default").is_none());
        let n = params.iter().find(|p| p["name"] == "n").expect("n filter");
        assert_eq!(n["schema"]["type"], json!("integer"));
        let sort = params.iter().find(|p| p["name"] == "sort").expect("sort");
        // Nullable and optional fields cannot be sorted on.
        assert!(
            !sort["schema"]["enum"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("n")))
        );
        assert!(
            !sort["schema"]["enum"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("state")))
        );
        // The record lets optional fields come back as null but keeps nullable ones nullable.
        let record = &doc["components"]["schemas"]["TRecord"];
        assert_eq!(
            record["properties"]["n"]["type"],
            json!(["integer", "null"])
        );
        assert_eq!(
            record["properties"]["state"]["enum"],
            json!(["a", "b", null])
        );
        assert!(record["properties"]["state"].get("default").is_none());
    }

    #[test]
    fn a_declared_problem_schema_keeps_its_name() {
        let p = plan(
            r#"
[schemas.Problem]
x = { type = "string" }

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
"#,
        );
        let doc = document(&p);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Problem"]["properties"]["x"]["type"], "string");
        assert!(schemas["Problem_2"]["properties"]["request_id"].is_object());
        assert_eq!(
            doc["components"]["responses"]["BadRequest"]["content"]["application/problem+json"]["schema"]
                ["$ref"],
            "#/components/schemas/Problem_2"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let p = plan(
            r#"
[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true

[[routes]]
method = "GET"
path = "/ready"
action = "health"
public = true
"#,
        );
        let doc = document(&p);
        assert_eq!(doc["paths"]["/health"]["get"]["operationId"], "health");
        assert_eq!(doc["paths"]["/ready"]["get"]["operationId"], "health_2");
        assert_eq!(doc["paths"]["/ready"]["get"]["security"], json!([]));
        assert!(doc["components"].get("securitySchemes").is_none());
    }
}
