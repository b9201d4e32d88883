//! Assembles Actix from a [`Plan`]: the pipeline order, the route table, 404 and 405.
//!
//! Outermost first: envelope (request id, timeout, problem+json, secure headers, access
//! log) → CORS preflights counted by the global limit → CORS → global rate limit → route →
//! route rate limit → body → action.

pub mod body;
pub mod envelope;
pub mod json;
pub mod state;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::FutureExt;

use crate::audit::sink::AuditSink;
use crate::deadline::Deadline;
use crate::plan::Plan;
use crate::problem::Problem;
use crate::request_id;

pub use state::StartError;

use crate::actions::AppState;

/// Runs the server until SIGINT/SIGTERM, then drains in-flight requests.
pub async fn run(plan: Plan) -> Result<(), StartError> {
    let plan = Arc::new(plan);
    let state = web::Data::new(state::build(plan.clone())?);
    if let Some(redis) = state.limits.backend().redis() {
        // A Redis that is down at startup is not fatal: the declared fallback decides and
        // the backend keeps trying.
        redis.connect(std::time::Duration::from_secs(2)).await;
    }
    let app_plan = plan.clone();
    // The global rate limit reads only its own state.
    let limits = web::Data::from(state.limits.clone());
    let redirect_state = state.clone();
    let audit = state.audit.clone();
    let mut server = HttpServer::new(move || {
        let cors = app_plan.cors.as_ref();
        App::new()
            .app_data(state.clone())
            .app_data(limits.clone())
            .configure(|cfg| routes(cfg, &app_plan))
            .default_service(web::to(not_found))
            .wrap(from_fn(crate::ratelimit::middleware::global))
            .wrap(Condition::new(
                cors.is_some(),
                cors.map(crate::cors::build).unwrap_or_default(),
            ))
            .wrap(from_fn(crate::ratelimit::middleware::preflight))
            .wrap(from_fn(envelope::envelope))
    })
    .shutdown_timeout(plan.server.shutdown_timeout.as_secs())
    .client_request_timeout(plan.server.request_timeout)
    .client_disconnect_timeout(std::time::Duration::from_secs(2));
    if plan.server.workers > 0 {
        server = server.workers(plan.server.workers);
    }
    let (server, scheme) = match &plan.server.tls {
        Some(tls) => (
            server.bind_rustls_0_23(plan.server.bind, (*tls.config).clone())?,
            "https",
        ),
        None => (server.bind(plan.server.bind)?, "http"),
    };
    for addr in server.addrs() {
        tracing::info!(addr = %addr, profile = plan.profile.name(), "nestflux listening on {scheme}://{addr}");
    }
    let Some(redirect) = plan.server.tls.as_ref().and_then(|t| t.redirect.clone()) else {
        let ran = server.run().await;
        // The counters of the last window, written before the process ends.
        audit.flush(std::time::Duration::from_secs(5));
        return Ok(ran?);
    };
    let origin = Arc::new(redirect.origin);
    let redirector = HttpServer::new(move || {
        let origin = origin.clone();
        App::new()
            .app_data(redirect_state.clone())
            .default_service(web::to(move |req: HttpRequest| {
                let origin = origin.clone();
                async move { to_https(&origin, &req) }
            }))
            .wrap(from_fn(envelope::envelope))
    })
    .workers(1)
    .shutdown_timeout(plan.server.shutdown_timeout.as_secs())
    .client_request_timeout(plan.server.request_timeout)
    .bind(redirect.bind)?;
    for addr in redirector.addrs() {
        tracing::info!(addr = %addr, to = %origin_of(&plan), "nestflux redirecting http://{addr} to https");
    }
    let ran = futures_util::future::try_join(server.run(), redirector.run()).await;
    audit.flush(std::time::Duration::from_secs(5));
    ran?;
    Ok(())
}

fn origin_of(plan: &Plan) -> String {
    plan.server
        .tls
        .as_ref()
        .and_then(|t| t.redirect.as_ref())
        .map_or_else(String::new, |r| r.origin.clone())
}

/// 308 to the configured HTTPS origin with the same path and query. The Host header is
/// never read, so a client cannot choose where it is sent.
fn to_https(origin: &str, req: &HttpRequest) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = if path.starts_with('/') { path } else { "/" };
    match HeaderValue::from_str(&format!("{origin}{path}")) {
        Ok(location) => HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, location))
            .finish(),
        Err(_) => Problem::bad_request("the request path cannot be redirected")
            .to_response(&request_id::of(req)),
    }
}

/// Registers one Actix resource per path, each answering 405 with `Allow` for other methods.
fn routes(cfg: &mut web::ServiceConfig, plan: &Plan) {
    // The order `check` lints overlaps against and `explain` matches with.
    for (path, routes) in crate::plan::routes::registration_order(&plan.routes) {
        let mut allow: Vec<String> = routes.iter().map(|r| r.method.to_string()).collect();
        // HEAD is answered wherever GET is declared (RFC 9110 §9.3.2): the same pipeline and
        // headers, and actix sends no body.
        let head = routes
            .iter()
            .find(|r| r.method == Method::GET && r.action.answers_head())
            .copied();
        let head = head.filter(|_| !routes.iter().any(|r| r.method == Method::HEAD));
        if head.is_some() {
            allow.push(Method::HEAD.to_string());
        }
        let allow =
            HeaderValue::from_str(&allow.join(", ")).unwrap_or(HeaderValue::from_static("GET"));
        let mut resource = web::resource(path);
        let get_as_head = head.map(|r| (Method::HEAD, r));
        for (method, r) in routes
            .iter()
            .map(|r| (r.method.clone(), *r))
            .chain(get_as_head)
        {
            let route = Arc::new(r.clone());
            resource = resource.route(web::method(method).to(
                move |req: HttpRequest, payload: web::Payload, state: web::Data<AppState>| {
                    handle(route.clone(), req, payload, state)
                },
            ));
        }
        resource = resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move {
                let p = Problem::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method-not-allowed",
                    format!("{} is not allowed on this path", req.method()),
                )
                .header(header::ALLOW, allow);
                p.to_response(&request_id::of(&req))
            }
        }));
        cfg.service(resource);
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    Problem::not_found().to_response(&request_id::of(&req))
}

/// Runs one route: body, then the action; a panic becomes a 500 problem, never a dropped
/// connection or a leaked message.
async fn handle(
    route: Arc<crate::plan::routes::RoutePlan>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let rid = request_id::of(&req);
    let deadline = Deadline::of(&req, state.plan.server.request_timeout);
    let late = |_| Problem::timeout();
    // Pipeline after routing, in the order of BRIEF §3: authentication → route rate limit →
    // authorization → validation of path, query and body → action. Each stage that may wait
    // stops at the deadline; none of them writes a request's data, so stopping is safe. The action bounds its
    // own database work (a write is answered by the writer, never abandoned).
    let work = async {
        // Authentication: the `Caller` into the extensions, or 401. May wait for a JWKS
        // refetch (unknown kid) or a browser session's refresh (claimed in the database
        // under a lease, so one abandoned at the deadline is taken over once the lease ends).
        let ip = crate::ratelimit::middleware::client_ip_of(&state.limits, &req);
        let budget = ClientBudget {
            limits: &state.limits,
            ip,
        };
        deadline
            .within(crate::auth::authenticate(
                &state.auth,
                &route,
                &req,
                &budget,
            ))
            .await
            .map_err(late)?
            .inspect_err(|p| audit_auth_refusal(&state.audit, p, &ip))?;
        // Route rate limit: after authentication, which puts the `Caller` it keys by.
        deadline
            .within(crate::ratelimit::middleware::route(
                &state.limits,
                &route,
                &req,
            ))
            .await
            .map_err(late)?
            .inspect_err(|p| {
                if p.status == StatusCode::TOO_MANY_REQUESTS {
                    let policy = route.rate_limit.as_ref().map_or("-", |n| n.0.as_str());
                    state.audit.rate_limited(&ip.to_string(), policy);
                }
            })?;
        // Authorization: the `Decision` into the extensions, or 403.
        crate::authz::authorize(&state.authz, &route, &req)
            .inspect_err(|p| audit_denial(&state.audit, &route, &req, p, &ip))?;
        let limit = state.plan.server.body_limit;
        let body = deadline
            .within(body::read(&req, payload, limit, route.action.takes_body()))
            .await
            .map_err(late)??;
        // A field the caller may not write, `:own` on a resource without owners: 403 too.
        crate::actions::run(&route, &req, body, &state)
            .await
            .inspect_err(|p| audit_denial(&state.audit, &route, &req, p, &ip))
    };
    guarded(work, &rid, &route.path).await
}

/// Counts a refused authentication (a credential that did not prove anything, or a client
/// over its `auth_failures` budget) for the audit log's per-source, per-minute row. A request
/// without credentials is not a failure.
fn audit_auth_refusal(audit: &AuditSink, p: &Problem, ip: &std::net::IpAddr) {
    let presented = p
        .headers
        .iter()
        .any(|(name, value)| name == header::WWW_AUTHENTICATE && value.as_bytes() != b"Bearer");
    let why = match p.status {
        StatusCode::UNAUTHORIZED if presented => "invalid-credentials",
        StatusCode::TOO_MANY_REQUESTS => "over-budget",
        _ => return,
    };
    audit.auth_failed(&ip.to_string(), why);
}

/// Records a 403 of the authorization stage: who, which route, which permission.
fn audit_denial(
    audit: &AuditSink,
    route: &crate::plan::routes::RoutePlan,
    req: &HttpRequest,
    p: &Problem,
    ip: &std::net::IpAddr,
) {
    if p.status != StatusCode::FORBIDDEN {
        return;
    }
    use actix_web::HttpMessage;
    let actor = req
        .extensions()
        .get::<crate::auth::Caller>()
        .map(|c| c.subject.clone())
        .unwrap_or_else(|| "-".into());
    let permission = match &route.access {
        crate::plan::routes::Access::Permission(p) => p.to_string(),
        _ => String::new(),
    };
    let event = crate::audit::Event::now(&actor, "authz.denied", "denied")
        .on(
            route.resource.as_ref().map_or("", |r| r.0.as_str()),
            req.match_info().get("id").unwrap_or_default(),
        )
        .details(&serde_json::json!({
            "method": route.method.as_str(),
            "route": route.path,
            "permission": permission,
        }))
        .request(&request_id::of(req), &ip.to_string());
    audit.offer(event);
}

/// The `auth_failures` budget of the client making a request.
struct ClientBudget<'a> {
    limits: &'a crate::ratelimit::RateLimits,
    ip: std::net::IpAddr,
}

impl crate::auth::FailureBudget for ClientBudget<'_> {
    fn exhausted(&self) -> Option<std::time::Duration> {
        self.limits.auth_blocked(self.ip)
    }

    fn charge(&self) -> impl std::future::Future<Output = ()> + Send {
        self.limits.charge_auth_failure(self.ip)
    }
}

/// Runs a handler future; a problem becomes its response, a panic a bare 500 problem (the
/// panic message goes to the log only).
async fn guarded(
    work: impl std::future::Future<Output = Result<HttpResponse, Problem>>,
    rid: &str,
    route: &str,
) -> HttpResponse {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(Ok(res)) => res,
        Ok(Err(problem)) => problem.to_response(rid),
        Err(_) => {
            tracing::error!(request_id = %rid, route = %route, "handler panicked");
            Problem::internal().to_response(rid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_panicking_handler_becomes_a_500_problem() {
        let work = async {
            if rid_len() > 0 {
                panic!("secret internals: /etc/passwd");
            }
            Ok(HttpResponse::Ok().finish())
        };
        let res = guarded(work, "rid-1", "/x").await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(crate::problem::is_problem(&res));
        let body = actix_web::body::to_bytes(res.into_body())
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"request_id\":\"rid-1\""), "{text}");
        assert!(
            !text.contains("secret") && !text.contains("passwd"),
            "{text}"
        );
    }

    fn rid_len() -> usize {
        5
    }
}
