//! Compiles `[[routes]]` into the route table: method, path, action, who may call, limit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use actix_web::http::Method;

use super::auth::AuthPlan;
use super::data::{ResourceName, ResourcePlan};
use super::diag::{Code, Diagnostic, Diagnostics};
use super::ratelimit::{PolicyName, RateLimitsPlan};
use super::roles::{Permission, RolesPlan};
use crate::config::RawRoute;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Liveness and readiness.
    Health,
    /// The caller's identity.
    Whoami,
    /// The audit log.
    Audit,
    /// A page of a resource's records.
    List,
    /// One record.
    Get,
    /// A new record.
    Create,
    /// Changes to one record.
    Update,
    /// Removes one record.
    Delete,
    /// Serves the OpenAPI document of the plan.
    OpenApi,
    /// Browser login: redirects to the provider (built in with `[auth.session]`).
    Login,
    /// The provider's redirect back: code exchange, then the session cookie (built in).
    Callback,
    /// Ends the browser session here and at the provider (built in).
    Logout,
    /// The browser session's state, for front ends (built in).
    Session,
    /// Serves the server's metrics in the Prometheus text format.
    Metrics,
}

impl Action {
    /// Every action, in the order the file's documentation lists them.
    pub const ALL: &'static [Action] = &[
        Self::Health,
        Self::Whoami,
        Self::Audit,
        Self::List,
        Self::Get,
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::OpenApi,
        Self::Metrics,
    ];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "health" => Self::Health,
            "whoami" => Self::Whoami,
            "audit" => Self::Audit,
            "list" => Self::List,
            "get" => Self::Get,
            "create" => Self::Create,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "openapi" => Self::OpenApi,
            "metrics" => Self::Metrics,
            _ => return None,
        })
    }

    /// The action's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Whoami => "whoami",
            Self::Audit => "audit",
            Self::List => "list",
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::OpenApi => "openapi",
            Self::Login => "login",
            Self::Callback => "callback",
            Self::Logout => "logout",
            Self::Session => "session",
            Self::Metrics => "metrics",
        }
    }

    /// Actions over a declared resource.
    pub fn needs_resource(self) -> bool {
        matches!(
            self,
            Self::List | Self::Get | Self::Create | Self::Update | Self::Delete
        )
    }

    /// The browser-login routes `[auth.session]` brings.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Self::Login | Self::Callback | Self::Logout | Self::Session
        )
    }

    /// GET actions that change nothing, so `HEAD` may run them too. The login and callback
    /// steps store and consume one-time login state: a prefetching `HEAD` must not.
    pub fn answers_head(self) -> bool {
        !matches!(self, Self::Login | Self::Callback)
    }

    /// Actions that read a JSON request body.
    pub fn takes_body(self) -> bool {
        matches!(self, Self::Create | Self::Update)
    }

    fn method(self) -> Method {
        match self {
            Self::Create => Method::POST,
            Self::Update => Method::PATCH,
            Self::Delete => Method::DELETE,
            Self::Logout => Method::POST,
            _ => Method::GET,
        }
    }

    /// Actions addressing one row by `{id}`.
    fn needs_id(self) -> bool {
        matches!(self, Self::Get | Self::Update | Self::Delete)
    }
}

/// Who may call a route: exactly one, declared; there is no default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone; credentials are ignored.
    Public,
    /// Any authenticated caller.
    Authenticated,
    /// Callers whose roles grant this permission.
    Permission(Permission),
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Public => f.write_str("public"),
            Access::Authenticated => f.write_str("authenticated"),
            Access::Permission(p) => write!(f, "{p}"),
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// Position in the file, for messages: `routes[3]` ([`BUILT_IN`] for routes that come
    /// with a feature, such as the browser login's).
    pub index: usize,
    /// The HTTP method.
    pub method: Method,
    /// Actix path pattern, e.g. `/api/notes/{id}`.
    pub path: String,
    /// What the route does.
    pub action: Action,
    /// The resource it works on, for resource actions.
    pub resource: Option<ResourceName>,
    /// Who may call it.
    pub access: Access,
    /// The policy counted after authentication, if any.
    pub rate_limit: Option<PolicyName>,
    /// Schema of the JSON body, for create and update.
    pub body_schema: Option<String>,
    /// Summary for the OpenAPI document.
    pub summary: Option<String>,
    /// `health` with `detail = true`: the checks behind the status, not only the status.
    pub detail: bool,
}

/// The `index` of routes no `[[routes]]` entry declares.
pub const BUILT_IN: usize = usize::MAX;

/// Where the browser login starts (`?return_to=`).
pub const LOGIN_PATH: &str = "/auth/login";
/// Where the browser session ends (POST).
pub const LOGOUT_PATH: &str = "/auth/logout";
/// Where front ends read the browser session's state.
pub const SESSION_PATH: &str = "/auth/session";

/// Adds the routes `[auth.session]` brings: `GET /auth/login`, `GET <redirect_url path>`,
/// `POST /auth/logout`, `GET /auth/session`, all public (they read the session cookie
/// themselves). A declared route in one of their places is an error.
pub fn add_session_routes(
    routes: &mut Vec<RoutePlan>,
    session: &super::auth::SessionPlan,
    d: &mut Diagnostics,
) {
    let callback = session.redirect_url.path().to_string();
    match check_path(&callback, "auth.session.redirect_url", d) {
        Some(params) if params.is_empty() => {}
        Some(_) => {
            d.error(
                "auth.session.redirect_url",
                "the callback path cannot have {parameters}",
            );
            return;
        }
        None => return,
    }
    let built_in = [
        (Action::Login, LOGIN_PATH.to_string()),
        (Action::Callback, callback),
        (Action::Logout, LOGOUT_PATH.to_string()),
        (Action::Session, SESSION_PATH.to_string()),
    ];
    let mut added: Vec<RoutePlan> = Vec::new();
    for (action, path) in built_in {
        let method = action.method();
        let shape = normalise(&path);
        let taken = routes
            .iter()
            .chain(&added)
            .find(|r| r.method == method && normalise(&r.path) == shape);
        if let Some(r) = taken {
            let at = if r.index == BUILT_IN {
                "auth.session.redirect_url".to_string()
            } else {
                format!("routes[{}]", r.index)
            };
            d.error(
                at,
                format!(
                    "{method} {path} is the browser login's {} route ([auth.session])",
                    action.name()
                ),
            );
            continue;
        }
        added.push(RoutePlan {
            index: BUILT_IN,
            method,
            path,
            action,
            resource: None,
            access: Access::Public,
            rate_limit: None,
            body_schema: None,
            summary: None,
            detail: false,
        });
    }
    routes.extend(added);
}

/// What routes are checked against.
pub struct RouteContext<'a> {
    /// Declared resources.
    pub resources: &'a BTreeMap<ResourceName, ResourcePlan>,
    /// Rate-limit policies.
    pub limits: &'a RateLimitsPlan,
    /// Identity sources, when `[auth]` is declared.
    pub auth: Option<&'a AuthPlan>,
    /// Roles, to warn about permissions no role grants.
    pub roles: &'a RolesPlan,
    /// The profile: some choices are warnings in development and errors in production.
    pub profile: super::Profile,
}

/// Checks `[[routes]]`: method, path, action, resource, access and policy, and that no two routes collide.
pub fn compile_routes(
    raw: &[RawRoute],
    cx: &RouteContext<'_>,
    d: &mut Diagnostics,
) -> Vec<RoutePlan> {
    let mut out = Vec::new();
    let mut shapes: BTreeMap<(String, String), usize> = BTreeMap::new();
    let has_identity = cx
        .auth
        .is_some_and(|a| a.issuer.is_some() || a.dev_issuer || !a.api_keys.is_empty());
    for (index, r) in raw.iter().enumerate() {
        let at = format!("routes[{index}]");
        let method = match Method::from_bytes(r.method.as_bytes()) {
            Ok(m) if !r.method.is_empty() && r.method.chars().all(|c| c.is_ascii_uppercase()) => {
                Some(m)
            }
            _ => {
                d.error(
                    format!("{at}.method"),
                    format!("`{}` is not an uppercase HTTP method such as GET", r.method),
                );
                None
            }
        };
        let params = check_path(&r.path, &format!("{at}.path"), d);

        let action = Action::parse(&r.action);
        if action.is_none() {
            d.push_error(
                Diagnostic::new(
                    format!("{at}.action"),
                    format!("unknown action `{}`; expected health, whoami, audit, list, get, create, update, delete, openapi or metrics", r.action),
                )
                .with_code(Code::UnknownAction)
                .with_suggestion(crate::suggest::closest(&r.action, Action::ALL.iter().map(|a| a.name()))),
            );
        }
        if let Some(action) = action {
            if let Some(m) = &method
                && *m != action.method()
            {
                d.error(
                    format!("{at}.method"),
                    format!(
                        "action {} is served with {}",
                        action.name(),
                        action.method()
                    ),
                );
            }
            if let Some(params) = &params {
                if action.needs_id() {
                    if params.as_slice() != ["id"] || !r.path.ends_with("/{id}") {
                        d.error(
                            format!("{at}.path"),
                            format!(
                                "action {} needs a path ending in /{{id}} and no other parameter",
                                action.name()
                            ),
                        );
                    }
                } else if !params.is_empty() {
                    d.error(
                        format!("{at}.path"),
                        format!("action {} takes no path parameters", action.name()),
                    );
                }
            }
            match (&r.resource, action.needs_resource()) {
                (None, true) => d.error_with(
                    Code::MissingKey,
                    format!("{at}.resource"),
                    format!("action {} needs a resource", action.name()),
                ),
                (Some(_), false) => d.error_with(
                    Code::Conflict,
                    format!("{at}.resource"),
                    format!("action {} takes no resource", action.name()),
                ),
                (Some(name), true) if !cx.resources.contains_key(&ResourceName(name.clone())) => d
                    .unknown(
                        Code::UnknownResource,
                        format!("{at}.resource"),
                        "resource",
                        name,
                        cx.resources.keys().map(|k| k.0.as_str()),
                    ),
                _ => {}
            }
        }

        let declared = [r.public, r.authenticated, r.permission.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        let access = match declared {
            0 => {
                d.error_with(Code::NoAccessRule, &at, "declares none of public = true, authenticated = true or permission = \"…\": every route must say who may call it");
                None
            }
            1 if r.public => Some(Access::Public),
            1 if r.authenticated => Some(Access::Authenticated),
            1 => match r.permission.as_deref().map(Permission::parse) {
                Some(Ok(p)) if p.own => {
                    d.error(format!("{at}.permission"), "name the permission without :own; roles holding its :own form are limited to their own rows");
                    None
                }
                Some(Ok(p)) => Some(Access::Permission(p)),
                Some(Err(e)) => {
                    d.error(format!("{at}.permission"), e);
                    None
                }
                None => None,
            },
            _ => {
                d.error_with(
                    Code::Conflict,
                    &at,
                    "declare exactly one of public, authenticated or permission",
                );
                None
            }
        };
        if let Some(access) = &access {
            if *access != Access::Public && !has_identity {
                d.error_with(
                    Code::MissingKey,
                    &at,
                    "needs a caller identity, but [auth] declares no issuer, dev issuer or API key",
                );
            }
            if action == Some(Action::Whoami) && *access == Access::Public {
                d.error(
                    format!("{at}.public"),
                    "whoami describes the caller: declare authenticated = true",
                );
            }
            if let Access::Permission(need) = access
                && !cx.roles.all_granted().any(|g| g.grants(need).is_some())
            {
                let granted: BTreeSet<String> = cx
                    .roles
                    .all_granted()
                    .map(|p| {
                        Permission {
                            own: false,
                            ..p.clone()
                        }
                        .to_string()
                    })
                    .filter(|p| !p.contains('*'))
                    .collect();
                d.push_warning(
                    Diagnostic::new(
                        format!("{at}.permission"),
                        format!(
                            "no role grants \"{need}\": only API keys or nobody can call this route"
                        ),
                    )
                    .with_code(Code::UnknownPermission)
                    .with_suggestion(crate::suggest::closest(&need.to_string(), &granted)),
                );
            }
        }

        if action == Some(Action::Metrics) {
            match &access {
                // No separate admin bind exists yet: a public metrics route would be public
                // on the API's own listener.
                Some(Access::Public) => d.refuse_in_production(
                    cx.profile,
                    Diagnostic::new(
                        format!("{at}.public"),
                        "a public metrics route tells anyone the traffic per route, the authentication failures and the config hash, and NestFlux has no separate admin bind yet: protect it with permission = \"…\" (granted to a role an API key holds)",
                    )
                    .with_code(Code::PublicMetrics),
                    Diagnostic::new(
                        format!("{at}.public"),
                        "a public metrics route tells anyone the traffic per route, the authentication failures and the config hash; refused under NESTFLUX_PROFILE=production: protect it with permission = \"…\"",
                    )
                    .with_code(Code::PublicMetrics),
                ),
                Some(Access::Authenticated) => d.warn_with(
                    Code::PublicMetrics,
                    format!("{at}.authenticated"),
                    "every signed-in user can read the metrics route: name a permission only operators (or their API key) hold",
                ),
                _ => {}
            }
        }

        if r.detail {
            match (action, &access) {
                (Some(a), _) if a != Action::Health => d.error_with(
                    Code::Conflict,
                    format!("{at}.detail"),
                    format!(
                        "only a health route has detail; action {} has none",
                        a.name()
                    ),
                ),
                (Some(_), Some(Access::Public)) => d.refuse_in_production(
                    cx.profile,
                    Diagnostic::new(
                        format!("{at}.detail"),
                        "a public health route with detail = true tells anyone the database state, each issuer's key freshness and the config hash: protect it with permission = \"…\" (or authenticated = true)",
                    ),
                    Diagnostic::new(
                        format!("{at}.detail"),
                        "a public health route with detail = true tells anyone the database state, each issuer's key freshness and the config hash; refused under NESTFLUX_PROFILE=production: protect it with permission = \"…\"",
                    ),
                ),
                _ => {}
            }
        }

        let rate_limit = r.rate_limit.as_ref().and_then(|name| {
            let name = PolicyName(name.clone());
            if name.0 == super::ratelimit::AUTH_FAILURES {
                d.error(
                    format!("{at}.rate_limit"),
                    "auth_failures counts failed authentications only; a route cannot use it",
                );
                None
            } else if cx.limits.policies.contains_key(&name) {
                Some(name)
            } else {
                d.unknown(
                    Code::UnknownPolicy,
                    format!("{at}.rate_limit"),
                    "policy",
                    &name.0,
                    cx.limits.policies.keys().map(|p| p.0.as_str()),
                );
                None
            }
        });

        if let (Some(method), Some(_)) = (&method, &params) {
            let shape = normalise(&r.path);
            if let Some(first) = shapes.insert((method.to_string(), shape), index) {
                d.error_with(
                    Code::RouteDuplicate,
                    &at,
                    format!("{method} {} is already declared by routes[{first}]", r.path),
                );
            }
        }

        let (Some(method), Some(_), Some(action), Some(access)) = (method, params, action, access)
        else {
            continue;
        };
        let resource = r.resource.clone().map(ResourceName);
        let body_schema = match (&resource, action.takes_body()) {
            (Some(res), true) => cx.resources.get(res).map(|p| p.schema.clone()),
            _ => None,
        };
        out.push(RoutePlan {
            index,
            method,
            path: r.path.clone(),
            action,
            resource,
            access,
            rate_limit,
            body_schema,
            summary: r.summary.clone(),
            detail: r.detail,
        });
    }
    out
}

/// The route table as Actix gets it: one resource per distinct path pattern, registered in
/// this order (by pattern text), each serving the methods of its routes. Actix sends a
/// request to the first resource whose pattern matches its path, whatever the method, and
/// that resource answers 405 for a method it does not serve. The server and
/// [`lint_overlaps`] (and `explain`) all read this one order.
pub fn registration_order(routes: &[RoutePlan]) -> Vec<(&str, Vec<&RoutePlan>)> {
    let mut by_path: BTreeMap<&str, Vec<&RoutePlan>> = BTreeMap::new();
    for r in routes {
        by_path.entry(r.path.as_str()).or_default().push(r);
    }
    by_path.into_iter().collect()
}

/// A request path both patterns match, if any (`/a/{id}` and `/a/search` → `/a/search`).
fn common_path(a: &str, b: &str) -> Option<String> {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    if x.len() != y.len() {
        return None;
    }
    let mut out = Vec::with_capacity(x.len());
    for (s, t) in x.iter().zip(&y) {
        match (s.starts_with('{'), t.starts_with('{')) {
            (true, true) | (false, true) => out.push(*s),
            (true, false) => out.push(*t),
            (false, false) if s == t => out.push(*s),
            (false, false) => return None,
        }
    }
    Some(out.join("/"))
}

/// Whether every request path `inner` matches is matched by `outer` too.
fn covers(outer: &str, inner: &str) -> bool {
    let (x, y): (Vec<&str>, Vec<&str>) = (outer.split('/').collect(), inner.split('/').collect());
    x.len() == y.len() && x.iter().zip(&y).all(|(o, i)| o.starts_with('{') || o == i)
}

/// Refuses routes that can match the same request under Actix's rules: two routes with
/// the same method whose different patterns overlap (which one serves depends on the order
/// of registration, not on the file), and routes shadowed by another path that Actix
/// tries first and that answers 405 for their method. Identical patterns with the same
/// method are reported as duplicates while compiling.
pub fn lint_overlaps(routes: &[RoutePlan], d: &mut Diagnostics) {
    let order = registration_order(routes);
    let rank = |path: &str| order.iter().position(|(p, _)| *p == path).unwrap_or(0);
    // Split once: a file of hundreds of routes compares every pair.
    let segments: Vec<Vec<&str>> = routes.iter().map(|r| r.path.split('/').collect()).collect();
    let param = |s: &str| s.starts_with('{');
    for (i, a) in routes.iter().enumerate() {
        for (j, b) in routes.iter().enumerate().skip(i + 1) {
            let (x, y) = (&segments[i], &segments[j]);
            // Most pairs differ in length or in a static segment: no request matches both.
            if a.path == b.path
                || x.len() != y.len()
                || !x.iter().zip(y).all(|(s, t)| param(s) || param(t) || s == t)
            {
                continue;
            }
            let same_shape = x.iter().zip(y).all(|(s, t)| s == t || param(s) && param(t));
            if same_shape && a.method == b.method {
                continue; // a duplicate, reported while compiling
            }
            let Some(both) = common_path(&a.path, &b.path) else {
                continue;
            };
            let name = |r: &RoutePlan| format!("routes[{}] ({} {})", r.index, r.method, r.path);
            if a.method == b.method {
                d.error_with(
                    Code::RouteOverlap,
                    format!("routes[{}].path", b.index),
                    format!(
                        "{} {both} matches both {} and {}: Actix would serve it with whichever path it registers first, not the one the file means; make the paths distinct",
                        b.method,
                        name(a),
                        name(b)
                    ),
                );
                continue;
            }
            // Different methods: the request goes to the path registered first; if that is
            // not the route's own path, it answers 405.
            let (first, later) = if rank(&a.path) <= rank(&b.path) {
                (a, b)
            } else {
                (b, a)
            };
            if routes
                .iter()
                .any(|r| r.path == first.path && r.method == later.method)
            {
                // The first path serves this method too: that pair is an overlap, reported
                // on its own.
                continue;
            }
            let how = if covers(&first.path, &later.path) {
                "never reaches it".to_string()
            } else {
                format!("does not reach it for paths such as {both}")
            };
            d.error_with(
                Code::RouteShadowed,
                format!("routes[{}].path", later.index),
                format!(
                    "{} is shadowed by {}: {} {both} matches both paths, Actix tries {} first and answers 405, so {} {how}; give both routes the same path pattern or make the paths distinct",
                    name(later),
                    name(first),
                    later.method,
                    first.path,
                    later.method,
                ),
            );
        }
    }
}

/// Checks a path pattern and returns its parameter names.
fn check_path(path: &str, at: &str, d: &mut Diagnostics) -> Option<Vec<String>> {
    if !path.starts_with('/') {
        d.error(at, format!("`{path}` must start with /"));
        return None;
    }
    if path == "/" {
        return Some(Vec::new());
    }
    let mut params = Vec::new();
    let mut seen = BTreeSet::new();
    for seg in path[1..].split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                d.error_with(
                    Code::InvalidName,
                    at,
                    format!("`{{{name}}}` is not a parameter name (lowercase, digits, _)"),
                );
                return None;
            }
            if !seen.insert(name) {
                d.error_with(
                    Code::Duplicate,
                    at,
                    format!("parameter `{name}` appears twice"),
                );
                return None;
            }
            params.push(name.to_string());
        } else if seg.is_empty()
            || !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        {
            d.error(at, format!("`{path}`: segments are letters, digits, - _ . ~ or a {{param}}; no empty segment or trailing /"));
            return None;
        }
    }
    Some(params)
}

/// `/a/{id}/b` → `/a/{}/b`, so two patterns that match the same requests collide.
fn normalise(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::dev::ResourceDef;

    #[test]
    fn overlaps_are_judged_as_actix_matches() {
        for (a, b, both) in [
            ("/a/{id}", "/a/b", Some("/a/b")),
            ("/a/{id}", "/a/{x}", Some("/a/{id}")),
            ("/{x}/b", "/a/{y}", Some("/a/b")),
            ("/a/{id}", "/a/{id}/b", None),
            ("/a/b", "/a/c", None),
            ("/", "/a", None),
        ] {
            let found = common_path(a, b);
            assert_eq!(found.as_deref(), both, "{a} {b}");
            // The witness really is a request path Actix sends to both patterns.
            if let Some(p) = found {
                let concrete = p.replace("{id}", "1");
                assert!(ResourceDef::new(a).is_match(&concrete), "{a} {concrete}");
                assert!(ResourceDef::new(b).is_match(&concrete), "{b} {concrete}");
            }
        }
        assert!(covers("/a/{id}", "/a/b") && covers("/a/{id}", "/a/{x}"));
        assert!(!covers("/a/b", "/a/{id}"));
    }
}
