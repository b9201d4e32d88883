//! `nestflux explain METHOD PATH`: the decision a request would get, step by step, from the
//! compiled plan and the same code `serve` runs — the route table in Actix's registration
//! order and Actix's own path matcher, the `Authenticator` (tokens and API keys verified
//! exactly as served), the `Authorizer`'s table, the field rules of the resource actions and
//! the compiled body validators. Nothing is written: rate-limit buckets are described, not
//! counted; a development token is checked against the key read from a read-only database
//! connection; a provider's token needs the provider's keys, which are fetched once.

use std::fmt::Write as _;

use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::auth::{Authenticator, Caller, CallerKind};
use crate::authz::{Authorizer, Decision};
use crate::plan::Plan;
use crate::plan::ratelimit::{LimitKey, RatePolicy};
use crate::plan::roles::{Permission, RoleId};
use crate::plan::routes::{Access, Action, RoutePlan, registration_order};
use crate::validate::Mode;

/// Who the request comes from.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// A subject and roles as a token would carry them, not verified (`--sub`, `--role`).
    Claimed {
        /// The subject.
        sub: String,
        /// The role names.
        roles: Vec<String>,
    },
    /// A bearer token, verified as served (`--token`).
    Token(String),
    /// An API key, looked up as served (`--api-key`).
    ApiKey(String),
}

/// The request to explain.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// A JSON body to validate, if given.
    pub body: Option<Value>,
    /// The caller.
    pub identity: Identity,
}

/// The decision, with each step that led to it.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// `(step, what happens)`, in pipeline order.
    pub steps: Vec<(String, String)>,
    /// The status the request would get (200 family for an allowed request).
    pub status: u16,
    /// One line saying why.
    pub verdict: String,
}

impl Explanation {
    /// Whether the request would reach its action.
    pub fn allowed(&self) -> bool {
        self.status < 400
    }

    /// The steps and the verdict as text.
    pub fn render(&self) -> String {
        let width = self.steps.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (i, (step, what)) in self.steps.iter().enumerate() {
            let mut lines = what.lines();
            let _ = writeln!(
                out,
                "{:>2}. {step:<width$}  {}",
                i + 1,
                lines.next().unwrap_or("")
            );
            for more in lines {
                let _ = writeln!(out, "    {:<width$}  {more}", "");
            }
        }
        let _ = writeln!(out, "decision: {} {}", self.status, self.verdict);
        out
    }
}

struct Steps {
    steps: Vec<(String, String)>,
}

impl Steps {
    fn push(&mut self, step: &str, what: impl Into<String>) {
        self.steps.push((step.to_string(), what.into()));
    }

    fn end(self, status: u16, verdict: impl Into<String>) -> Explanation {
        Explanation {
            steps: self.steps,
            status,
            verdict: verdict.into(),
        }
    }
}

fn describe_policy(p: &RatePolicy) -> String {
    let per = match p.window.as_secs() {
        1 => "second",
        60 => "minute",
        _ => "hour",
    };
    let key = match p.key {
        LimitKey::Ip => "client address",
        LimitKey::User => "subject (anonymous callers by address)",
        LimitKey::ApiKey => "API key (other callers by address)",
    };
    format!(
        "rate_limits.{}: {} per {per}, burst {}, counted by {key}",
        p.name.0, p.quota, p.burst
    )
}

fn roles_text(roles: &[RoleId]) -> String {
    if roles.is_empty() {
        "no roles".to_string()
    } else {
        roles
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Explains `req` against `plan`. `auth` is the authenticator `serve` would build
/// (with the development key attached when there is one).
pub async fn explain(plan: &Plan, auth: &Authenticator, req: &Request) -> Explanation {
    let mut s = Steps { steps: Vec::new() };

    // 1. Routing, as Actix does it: the first registered path pattern that matches.
    let order = registration_order(&plan.routes);
    let matched = order
        .iter()
        .find(|(pattern, _)| ResourceDef::new(*pattern).is_match(&req.path));
    let Some((pattern, routes)) = matched else {
        s.push("route", format!("no route's path matches {}", req.path));
        return s.end(404, "not found (problem+json, secure headers)");
    };
    let Some(route) = routes.iter().find(|r| r.method == req.method) else {
        let allow: Vec<String> = routes.iter().map(|r| r.method.to_string()).collect();
        s.push(
            "route",
            format!(
                "{} matches the path {pattern} first, which serves {} only",
                req.path,
                allow.join(", ")
            ),
        );
        return s.end(
            405,
            format!("method not allowed (Allow: {})", allow.join(", ")),
        );
    };
    let route: &RoutePlan = route;
    let what = match &route.resource {
        Some(res) => format!("{} {}", route.action.name(), res.0),
        None => route.action.name().to_string(),
    };
    s.push(
        "route",
        format!(
            "routes[{}]: {} {} → {what}",
            route.index, route.method, route.path
        ),
    );

    // 2. The global limit, before authentication.
    s.push(
        "global limit",
        match plan.rate_limits.global() {
            Some(p) => format!("{} (not counted by explain)", describe_policy(p)),
            None => "none declared (no [rate_limits.global])".to_string(),
        },
    );

    // 3. Authentication.
    let caller = match authenticate(plan, auth, route, &req.identity, &mut s).await {
        Ok(caller) => caller,
        Err(done) => return done(s),
    };

    // 4. The route's own limit, after authentication.
    s.push(
        "route limit",
        match route
            .rate_limit
            .as_ref()
            .and_then(|n| plan.rate_limits.policies.get(n))
        {
            Some(p) => format!("{} (not counted by explain)", describe_policy(p)),
            None => "none".to_string(),
        },
    );

    // 5. Authorization.
    let authz = Authorizer::build(plan);
    let decision = match &route.access {
        Access::Public => {
            s.push("authorization", "public: anyone may call");
            Decision::Any
        }
        Access::Authenticated => {
            s.push(
                "authorization",
                "authenticated: any verified caller may call",
            );
            Decision::Any
        }
        Access::Permission(need) => {
            let roles = caller.as_ref().map(|c| c.roles.as_slice()).unwrap_or(&[]);
            let decision = authz.decide(roles, need);
            s.push("authorization", why(plan, roles, need, decision));
            if decision == Decision::Denied {
                return s.end(
                    403,
                    format!(
                        "forbidden: needs {need}, which {} does not grant",
                        roles_text(roles)
                    ),
                );
            }
            decision
        }
    };

    let Some(resource) = route.resource.as_ref().and_then(|r| plan.resources.get(r)) else {
        s.push("action", action_note(route.action));
        return s.end(200, "allowed");
    };

    // 6. Own rows.
    let subject = caller
        .as_ref()
        .map(|c| c.subject.clone())
        .unwrap_or_default();
    match decision {
        Decision::OwnOnly if !resource.owner => {
            s.push(
                "own rows",
                format!("only a :own permission applies, but resources.{} records no owner", resource.name.0),
            );
            return s.end(403, "forbidden: this resource has no owners, so :own permits nothing");
        }
        Decision::OwnOnly => s.push(
            "own rows",
            match route.action {
                Action::List => format!("only rows owned by \"{subject}\" are listed"),
                Action::Create => format!("the new row is owned by \"{subject}\""),
                _ => format!(
                    "only a row owned by \"{subject}\": another's row answers 404 (never 403, which would confirm it exists)"
                ),
            },
        ),
        _ => s.push(
            "own rows",
            if resource.owner && route.action == Action::Create {
                format!("any row; the new row is owned by \"{subject}\"")
            } else {
                "any row".to_string()
            },
        ),
    }

    // 7. Field rules.
    let roles = caller.as_ref().map(|c| c.roles.as_slice()).unwrap_or(&[]);
    let mut lines = Vec::new();
    let mut forbidden_write: Option<String> = None;
    let sent: Vec<String> = req
        .body
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for (field, need) in resource.guarded() {
        let d = match &caller {
            Some(_) => authz.decide(roles, need),
            None => Decision::Denied,
        };
        let text = match d {
            Decision::Any => {
                format!("{field}: needs {need}: granted, read and written on every row")
            }
            Decision::OwnOnly => format!(
                "{field}: needs {need}: granted on own rows only: shown and writable on rows owned by \"{subject}\", hidden on others"
            ),
            Decision::Denied => {
                if route.action.takes_body() && sent.iter().any(|f| f == field) {
                    forbidden_write.get_or_insert_with(|| {
                        format!("writing `{field}` needs the permission {need}")
                    });
                }
                format!(
                    "{field}: needs {need}: not granted: hidden from every response, and a body that sets it is refused with 403"
                )
            }
        };
        lines.push(text);
    }
    if lines.is_empty() {
        lines.push("no field permissions: every field is visible".to_string());
    }
    s.push("fields", lines.join("\n"));

    // 8. Body and query.
    let status = match route.action {
        Action::Create => 201,
        Action::Delete => 204,
        _ => 200,
    };
    match route.action {
        Action::List => {
            let filters: Vec<&str> = resource
                .fields
                .iter()
                .filter(|f| f.filterable)
                .map(|f| f.name.as_str())
                .collect();
            s.push(
                "query",
                format!(
                    "?limit= (default {}, at most {}), cursor, sort= one of {}, equality filters on {}",
                    resource.list.default_limit,
                    resource.list.max_limit,
                    resource.list.sortable.join(", "),
                    if filters.is_empty() { "nothing".to_string() } else { filters.join(", ") }
                ),
            );
        }
        Action::Get | Action::Update | Action::Delete => {
            // These routes end in /{id} (checked when compiling); the action reads it so.
            let id = req.path.rsplit('/').next().unwrap_or("");
            if uuid::Uuid::parse_str(id).is_err() {
                s.push("row", format!("`{id}` is not a UUID, so it names no row"));
                return s.end(404, "not found");
            }
        }
        _ => {}
    }
    if route.action.takes_body() {
        let mode = if route.action == Action::Create {
            Mode::Create
        } else {
            Mode::Patch
        };
        match (plan.schemas.get(&resource.schema), &req.body) {
            (Some(schema), None) => {
                let required: Vec<&str> = schema
                    .fields()
                    .iter()
                    .filter(|f| mode == Mode::Create && f.is_required())
                    .map(|f| f.name())
                    .collect();
                s.push(
                    "body",
                    format!(
                        "JSON validated against schemas.{} ({}); unknown fields refused; {} (pass --body to check one)",
                        resource.schema,
                        if mode == Mode::Create { "every required field, defaults filled in" } else { "every field optional" },
                        if required.is_empty() { "nothing required".to_string() } else { format!("required: {}", required.join(", ")) }
                    ),
                );
            }
            (Some(schema), Some(body)) => match schema.validate(body, mode) {
                Ok(_) => {
                    s.push("body", format!("valid against schemas.{}", resource.schema));
                    if let Some(why) = forbidden_write {
                        return s.end(403, format!("forbidden: {why}"));
                    }
                }
                Err(violations) => {
                    let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
                    s.push(
                        "body",
                        format!(
                            "refused by schemas.{}:\n{}",
                            resource.schema,
                            list.join("\n")
                        ),
                    );
                    return s.end(422, format!("{} validation error(s)", violations.len()));
                }
            },
            (None, _) => {}
        }
    }
    if resource.has_encrypted() && plan.encryption.ring.is_none() {
        match &plan.encryption.dev_key {
            Some(file) => s.push(
                "keys",
                format!("NESTFLUX_ENCRYPTION__KEYS is not set: encrypted fields use the development key in {}", file.display()),
            ),
            None => {
                s.push("keys", "encrypted fields, but NESTFLUX_ENCRYPTION__KEYS is not set");
                return s.end(503, "encryption keys are not configured");
            }
        }
    }
    s.push("action", action_note(route.action));
    s.end(status, "allowed")
}

/// Why the permission is granted or refused: through which role and inheritance chain.
fn why(plan: &Plan, roles: &[RoleId], need: &Permission, decision: Decision) -> String {
    let mut lines = Vec::new();
    for role in roles {
        match plan.roles.grant(role, need) {
            Some(g) => {
                let chain: Vec<&str> = g.chain.iter().map(|r| r.0.as_str()).collect();
                let via = if chain.len() > 1 {
                    format!(" (inherited: {})", chain.join(" → "))
                } else {
                    String::new()
                };
                let scope = if g.held.own { " on own rows only" } else { "" };
                lines.push(format!(
                    "needs {need}: granted{scope} to {} by `{}` declared on roles.{}{via}",
                    role.0,
                    g.held,
                    chain.last().copied().unwrap_or(&role.0)
                ));
            }
            None => lines.push(format!("needs {need}: roles.{} does not grant it", role.0)),
        }
    }
    if decision == Decision::Denied {
        if roles.is_empty() {
            lines.push(format!("needs {need}: the caller has no declared role"));
        }
        let granters: Vec<String> = plan
            .roles
            .closures
            .keys()
            .filter_map(|r| {
                plan.roles
                    .grant(r, need)
                    .map(|g| format!("{} (`{}`)", r.0, g.held))
            })
            .collect();
        lines.push(if granters.is_empty() {
            "no declared role grants it".to_string()
        } else {
            format!("granted by: {}", granters.join(", "))
        });
    }
    lines.join("\n")
}

fn action_note(action: Action) -> String {
    match action {
        Action::Health => "health: status of the service".into(),
        Action::Whoami => "whoami: the caller's subject, roles and effective permissions".into(),
        Action::Audit => {
            "audit: a page of the audit log, newest first (explain reads nothing)".into()
        }
        Action::OpenApi => "openapi: the OpenAPI 3.1 document of this file".into(),
        Action::Metrics => "metrics: the server's counters in the Prometheus text format".into(),
        other => format!(
            "{}: runs against the database (explain writes nothing)",
            other.name()
        ),
    }
}

type Done = Box<dyn FnOnce(Steps) -> Explanation>;

async fn authenticate(
    plan: &Plan,
    auth: &Authenticator,
    route: &RoutePlan,
    identity: &Identity,
    s: &mut Steps,
) -> Result<Option<Caller>, Done> {
    if route.access == Access::Public {
        s.push("authentication", "public route: credentials are ignored");
        return Ok(None);
    }
    let mut headers = HeaderMap::new();
    match identity {
        Identity::Anonymous => {
            s.push(
                "authentication",
                "no credentials (give --sub/--role, --token or --api-key)",
            );
            return Err(Box::new(|s: Steps| {
                s.end(401, "unauthorized (WWW-Authenticate: Bearer)")
            }));
        }
        Identity::Claimed { sub, roles } => {
            let known: Vec<RoleId> = roles
                .iter()
                .map(|r| RoleId(r.clone()))
                .filter(|r| plan.roles.closures.contains_key(r))
                .collect();
            let dropped: Vec<&str> = roles
                .iter()
                .filter(|r| !plan.roles.closures.contains_key(&RoleId((*r).clone())))
                .map(String::as_str)
                .collect();
            let mut text = format!(
                "--sub {sub} with roles {} (claimed, not verified: a token from `nestflux token` or the provider would carry these)",
                roles_text(&known)
            );
            if !dropped.is_empty() {
                let _ = write!(
                    text,
                    "\nignored: {} (not declared in [roles]; a token's unknown roles are dropped the same way)",
                    dropped.join(", ")
                );
            }
            s.push("authentication", text);
            return Ok(Some(Caller {
                subject: sub.clone(),
                roles: known,
                kind: CallerKind::Dev,
            }));
        }
        Identity::Token(token) => {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                headers.insert(header::AUTHORIZATION, v);
            }
        }
        Identity::ApiKey(key) => {
            if let Ok(v) = HeaderValue::from_str(key) {
                headers.insert(HeaderName::from_static(crate::auth::API_KEY_HEADER), v);
            }
        }
    }
    match auth.authenticate(&headers, &crate::auth::Unlimited).await {
        Ok(caller) => {
            let how = match &caller.kind {
                CallerKind::Bearer => "bearer token of auth.issuer, verified".to_string(),
                CallerKind::Dev => "development token, verified against the stored key".to_string(),
                CallerKind::ApiKey(name) => format!("API key auth.api_keys.{name}"),
                CallerKind::Session => "browser session cookie".to_string(),
            };
            s.push(
                "authentication",
                format!(
                    "{how}: subject \"{}\", roles {}",
                    caller.subject,
                    roles_text(&caller.roles)
                ),
            );
            Ok(Some(Caller::clone(&caller)))
        }
        Err(e) => {
            s.push("authentication", format!("refused: {e}"));
            Err(Box::new(|s: Steps| {
                s.end(
                    401,
                    "unauthorized (WWW-Authenticate: Bearer error=\"invalid_token\")",
                )
            }))
        }
    }
}
