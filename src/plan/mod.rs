//! Compile step: raw config → a typed, checked [`Plan`].
//!
//! Every error is gathered with the path of its key before anything runs; warnings are
//! returned beside the plan. The server is only ever assembled from a `Plan`.

pub mod auth;
pub mod cors;
pub mod data;
pub mod diag;
pub mod headers;
pub mod ratelimit;
pub mod roles;
pub mod routes;
pub mod server;
pub mod units;

use std::collections::BTreeMap;

pub use diag::{Diagnostic, Diagnostics};

use crate::config::RawConfig;
use auth::AuthPlan;
use cors::CorsPlan;
use data::{DatabasePlan, EncryptionPlan, ResourceName, ResourcePlan};
use headers::HeadersPlan;
use ratelimit::RateLimitsPlan;
use roles::RolesPlan;
use routes::{Action, RoutePlan};
use server::ServerPlan;

/// `NESTFLUX_PROFILE`: production turns warnings about insecure choices into errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Insecure choices are warnings (the default).
    #[default]
    Development,
    /// Insecure choices are errors.
    Production,
}

impl Profile {
    /// Reads `NESTFLUX_PROFILE` (`development` when unset).
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("development") | Some("dev") => Ok(Self::Development),
            Some("production") | Some("prod") => Ok(Self::Production),
            Some(other) => Err(format!(
                "NESTFLUX_PROFILE: `{other}` is neither \"development\" nor \"production\""
            )),
        }
    }

    /// `development` or `production`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// The checked, typed configuration the server is built from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The profile the plan was compiled under.
    pub profile: Profile,
    /// Listening socket, limits and TLS.
    pub server: ServerPlan,
    /// Where data lives.
    pub database: DatabasePlan,
    /// The secure header set.
    pub headers: HeadersPlan,
    /// The CORS policy, when `[cors]` is declared.
    pub cors: Option<CorsPlan>,
    /// Identity: issuer, dev issuer, sessions, API keys.
    pub auth: Option<AuthPlan>,
    /// Each role's permissions, inheritance resolved.
    pub roles: RolesPlan,
    /// Rate-limit policies and their backend.
    pub rate_limits: RateLimitsPlan,
    /// The key ring for encrypted fields.
    pub encryption: EncryptionPlan,
    /// Compiled validators, by schema name.
    pub schemas: crate::validate::Schemas,
    /// Declared resources and their per-field facts.
    pub resources: BTreeMap<ResourceName, ResourcePlan>,
    /// The route table, in file order.
    pub routes: Vec<RoutePlan>,
    /// Warnings found while compiling.
    pub warnings: Vec<Diagnostic>,
}

/// Compilation failed: every error, plus the warnings found on the way.
#[derive(Debug)]
pub struct CompileErrors {
    /// Every error.
    pub errors: Vec<Diagnostic>,
    /// Every warning.
    pub warnings: Vec<Diagnostic>,
}

/// Compiles the raw configuration, gathering every error.
pub fn compile(raw: &RawConfig, profile: Profile) -> Result<Plan, CompileErrors> {
    let mut d = Diagnostics::default();
    let server = server::compile_server(&raw.server, &mut d);
    let headers = headers::compile_headers(&raw.headers, server.tls.is_some(), &mut d);
    let cors = raw
        .cors
        .as_ref()
        .map(|c| cors::compile_cors(c, profile, &mut d));
    let database = data::compile_database(&raw.database, &mut d);
    if database.busy_timeout >= server.request_timeout {
        d.error(
            "database.busy_timeout",
            "must be shorter than server.request_timeout: a write still waiting for the database when the request times out could commit after the client was told 503",
        );
    }
    let auth = raw
        .auth
        .as_ref()
        .map(|a| auth::compile_auth(a, &raw.roles, profile, &mut d));
    let roles = roles::compile_roles(&raw.roles, &mut d);
    let rate_limits = ratelimit::compile_rate_limits(&raw.rate_limits, profile, &mut d);
    let encryption = data::compile_encryption(raw.encryption.as_ref(), &mut d);
    let schemas = crate::validate::compile_schemas(&raw.schemas, &mut d);
    let resources = data::compile_resources(
        &raw.resources,
        &raw.schemas,
        &schemas,
        &encryption,
        profile,
        &mut d,
    );
    let cx = routes::RouteContext {
        resources: &resources,
        limits: &rate_limits,
        auth: auth.as_ref(),
        roles: &roles,
    };
    let mut routes = routes::compile_routes(&raw.routes, &cx, &mut d);
    if let Some(session) = auth.as_ref().and_then(|a| a.session.as_ref()) {
        routes::add_session_routes(&mut routes, session, &mut d);
        if encryption.key_ids.is_empty() {
            d.refuse_in_production(
                profile,
                Diagnostic::new(
                    "auth.session",
                    "browser sessions keep their tokens encrypted, but NESTFLUX_ENCRYPTION__KEYS is not set",
                ),
                Diagnostic::new(
                    "auth.session",
                    "NESTFLUX_ENCRYPTION__KEYS is not set: /auth/login answers 503 until it is",
                ),
            );
        }
    }
    if raw.routes.is_empty() {
        d.warn("routes", "no routes declared: every request will get 404");
    }
    if d.has_errors() {
        return Err(CompileErrors {
            errors: d.errors,
            warnings: d.warnings,
        });
    }
    Ok(Plan {
        profile,
        server,
        database,
        headers,
        cors,
        auth,
        roles,
        rate_limits,
        encryption,
        schemas,
        resources,
        routes,
        warnings: d.warnings,
    })
}

impl Plan {
    /// Declared features this build of NestFlux cannot enforce yet. `serve` refuses to start
    /// while any is declared: nothing may run "declared but unprotected".
    pub fn unenforced(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut note = |path: String, what: &str| {
            out.push(Diagnostic {
                path,
                message: format!("{what} is not enforced by this build of nestflux"),
            })
        };
        for r in &self.routes {
            // Authentication and authorization are enforced for every route; what remains
            // is whether the action itself exists yet.
            if matches!(r.action, Action::Audit) {
                note(
                    format!("routes[{}].action", r.index),
                    &format!("action {}", r.action.name()),
                );
            }
        }
        out
    }
}

/// Lowercase identifier used for role, policy, resource and permission segment names.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// True for `localhost` and loopback IP literals.
pub fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
