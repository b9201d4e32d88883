//! Compile step: raw config → a typed, checked [`Plan`].
//!
//! Every error is gathered with the path of its key before anything runs; warnings are
//! returned beside the plan. The server is only ever assembled from a `Plan`.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod cors;
pub mod data;
pub mod diag;
pub mod fingerprint;
pub mod headers;
pub mod ratelimit;
pub mod report;
pub mod roles;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use diag::{Code, Diagnostic, Diagnostics};

use crate::config::{ConfigSource, IssueKind, Loaded, RawConfig};
use auth::AuthPlan;
use cors::CorsPlan;
use data::{DatabasePlan, EncryptionPlan, ResourceName, ResourcePlan};
use headers::HeadersPlan;
use ratelimit::RateLimitsPlan;
use roles::RolesPlan;
use routes::RoutePlan;
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
    /// Audit log retention and the fingerprint of this configuration.
    pub audit: audit::AuditPlan,
    /// `[backup]`: scheduled backups, when declared.
    pub backup: Option<backup::SchedulePlan>,
    /// The route table, in file order.
    pub routes: Vec<RoutePlan>,
    /// Warnings found while compiling.
    pub warnings: Vec<Diagnostic>,
    /// `sha256:…` of the effective configuration with secrets left out
    /// ([`fingerprint::config_hash`]).
    pub config_hash: String,
}

/// Compilation failed: every error, plus the warnings found on the way.
#[derive(Debug)]
pub struct CompileErrors {
    /// Every error.
    pub errors: Vec<Diagnostic>,
    /// Every warning.
    pub warnings: Vec<Diagnostic>,
}

/// Compiles a configuration given as values (every value counts as written in the file),
/// gathering every error.
pub fn compile(raw: &RawConfig, profile: Profile) -> Result<Plan, CompileErrors> {
    compile_in(raw, profile, None, Diagnostics::default())
}

/// Compiles what [`crate::config::load`] read: its unknown keys and unreadable values come
/// first, then every error and warning of the compile step, with no value that came from a
/// `…_FILE` variable (or a variable whose key can hold a secret) repeated in a message.
pub fn compile_loaded(loaded: &Loaded, profile: Profile) -> Result<Plan, CompileErrors> {
    let mut d = Diagnostics::default();
    for issue in &loaded.issues {
        let code = match issue.kind {
            IssueKind::UnknownKey => Code::UnknownKey,
            IssueKind::WrongType => Code::WrongType,
            IssueKind::MissingKey => Code::MissingKey,
        };
        d.push_error(
            Diagnostic::new(&issue.path, &issue.message)
                .with_code(code)
                .with_suggestion(issue.suggestion.clone()),
        );
    }
    // A key read with the wrong type keeps its default: compile findings about that default
    // would only repeat the problem.
    let unread: Vec<&str> = loaded
        .issues
        .iter()
        .filter(|i| i.kind != IssueKind::UnknownKey)
        .map(|i| i.path.as_str())
        .collect();
    let loaded_errors = d.errors.len();
    let result = compile_in(&loaded.raw, profile, Some(&loaded.source), d);
    let keep = |list: &mut Vec<Diagnostic>, skip: usize| {
        let mut i = 0;
        list.retain(|diag| {
            i += 1;
            i <= skip || !unread.iter().any(|u| within(&diag.path, u))
        });
    };
    match result {
        Ok(mut plan) => {
            keep(&mut plan.warnings, 0);
            secrets::scrub(&mut plan.warnings, &loaded.source);
            Ok(plan)
        }
        Err(mut e) => {
            keep(&mut e.errors, loaded_errors);
            keep(&mut e.warnings, 0);
            secrets::scrub(&mut e.errors, &loaded.source);
            secrets::scrub(&mut e.warnings, &loaded.source);
            Err(e)
        }
    }
}

/// Whether `path` is `at` or a key inside it.
fn within(path: &str, at: &str) -> bool {
    path == at
        || path
            .strip_prefix(at)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn compile_in(
    raw: &RawConfig,
    profile: Profile,
    source: Option<&ConfigSource>,
    mut d: Diagnostics,
) -> Result<Plan, CompileErrors> {
    let server = server::compile_server(&raw.server, &mut d);
    let headers = headers::compile_headers(&raw.headers, server.tls.is_some(), &mut d);
    let cors = raw
        .cors
        .as_ref()
        .map(|c| cors::compile_cors(c, profile, &mut d));
    let database = data::compile_database(&raw.database, &mut d);
    if database.busy_timeout >= server.request_timeout {
        d.error_with(
            Code::Conflict,
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
    let mut encryption = data::compile_encryption(raw.encryption.as_ref(), &mut d);
    // Encrypted fields and browser sessions (their tokens are sealed at rest) need a ring.
    let declares_encrypted = raw.resources.values().any(|r| !r.encrypted.is_empty())
        || raw.auth.as_ref().is_some_and(|a| a.session.is_some());
    if encryption.ring.is_none() && declares_encrypted && profile == Profile::Development {
        let config_dir = source
            .and_then(|s| s.path.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        encryption.dev_key = Some(data::dev_key_path(&database, config_dir));
    }
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
        profile,
    };
    let mut routes = routes::compile_routes(&raw.routes, &cx, &mut d);
    if let Some(session) = auth.as_ref().and_then(|a| a.session.as_ref()) {
        routes::add_session_routes(&mut routes, session, &mut d);
        if encryption.ring.is_none() && encryption.dev_key.is_none() {
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
    routes::lint_overlaps(&routes, &mut d);
    if raw.routes.is_empty() {
        d.warn_with(
            Code::Unused,
            "routes",
            "no routes declared: every request will get 404",
        );
    }
    let needed: Vec<roles::Permission> = routes
        .iter()
        .filter_map(|r| match &r.access {
            routes::Access::Permission(p) => Some(p.clone()),
            _ => None,
        })
        .chain(
            resources
                .values()
                .flat_map(|r| r.guarded().map(|(_, p)| p.clone())),
        )
        .collect();
    let resource_names: BTreeSet<String> = raw.resources.keys().cloned().collect();
    roles::lint_segments(&raw.roles, &resource_names, &needed, &mut d);
    secrets::lint(raw, source, profile, &mut d);
    let audit = audit::compile_audit(raw, profile, &mut d);
    let backup = backup::compile_backup(raw, &database, &mut d);
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
        audit,
        backup,
        warnings: d.warnings,
        config_hash: fingerprint::config_hash(raw, profile),
    })
}

impl Plan {
    /// Declared features this build of NestFlux cannot enforce yet. `serve` refuses to start
    /// while any is declared: nothing may run "declared but unprotected".
    pub fn unenforced(&self) -> Vec<Diagnostic> {
        // Nothing, today: authentication and authorization are enforced for every route,
        // every action exists (the audit log's since issue 14) and every rate-limit backend
        // (Redis since issue 15). A feature parsed before it is built is listed here, each
        // finding with `Code::NotEnforced`.
        Vec::new()
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
