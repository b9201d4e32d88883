//! Assembles Actix from a [`Plan`]: the pipeline order, the route table, 404 and 405.
//!
//! Outermost first: envelope (pins the plan's [`live::Generation`], request id, timeout,
//! problem+json, secure headers, access log) → CORS preflights counted by the global limit
//! → CORS → global rate limit → route ([`router`]) → route rate limit → body → action.
//! Every layer reads the pinned generation, so a reload ([`reload`]) changes all of them
//! at once for the requests that arrive after it.

pub mod body;
pub mod envelope;
pub mod json;
pub mod live;
pub mod reload;
pub mod router;
pub mod state;
pub mod tls;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse, fn_service};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::FutureExt;

use crate::audit::sink::AuditSink;
use crate::deadline::Deadline;
use crate::plan::Plan;
use crate::problem::Problem;
use crate::request_id;

pub use state::StartError;

use crate::actions::AppState;

/// Runs the server until SIGINT/SIGTERM, then drains in-flight requests. With `reloading`,
/// SIGHUP (and, when watched, a change to the file) reloads the plan while serving.
pub async fn run(plan: Plan, reloading: Option<reload::Reloading>) -> Result<(), StartError> {
    let plan = Arc::new(plan);
    let state = Arc::new(state::build(plan.clone())?);
    if let Some(redis) = state.limits.backend().redis() {
        // A Redis that is down at startup is not fatal: the declared fallback decides and
        // the backend keeps trying.
        redis.connect(std::time::Duration::from_secs(2)).await;
    }
    let audit = state.audit.clone();
    let live = Arc::new(live::Live::new(state));
    let cert = plan.server.tls.as_ref().map(tls::LiveCert::new);
    let app_live = web::Data::from(live.clone());
    let redirect_live = app_live.clone();
    // Routing, CORS and every limit follow the generation the envelope pins: the App
    // itself is the same for every plan.
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_live.clone())
            .default_service(fn_service(dispatch))
            .wrap(from_fn(global_limit))
            .wrap(live::LiveCors)
            .wrap(from_fn(preflight_limit))
            .wrap(from_fn(envelope::envelope))
    })
    .shutdown_timeout(plan.server.shutdown_timeout.as_secs())
    .client_request_timeout(plan.server.request_timeout)
    .client_disconnect_timeout(std::time::Duration::from_secs(2));
    if plan.server.workers > 0 {
        server = server.workers(plan.server.workers);
    }
    let (server, scheme) = match (&plan.server.tls, &cert) {
        (Some(tls), Some(cert)) => (
            server.bind_rustls_0_23(plan.server.bind, tls::server_config(tls, cert.clone()))?,
            "https",
        ),
        _ => (server.bind(plan.server.bind)?, "http"),
    };
    let mut _pid_claim = None;
    if let Some(reloading) = reloading {
        if let Some(file) = &reloading.pid_file {
            _pid_claim = crate::pidfile::claim(file).map_err(|e| {
                std::io::Error::new(e.kind(), format!("pid file {}: {e}", file.display()))
            })?;
        }
        reload::start(reloading, live.clone(), cert.clone());
    }
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
            .app_data(redirect_live.clone())
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

/// The global rate limit, with the limits of the request's generation.
async fn global_limit(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limits = live::of(req.request()).map(|g| g.state.limits.clone());
    crate::ratelimit::middleware::global(limits, req, next).await
}

/// CORS preflights counted by the global limit, with the limits of the request's generation.
async fn preflight_limit(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limits = live::of(req.request()).map(|g| g.state.limits.clone());
    crate::ratelimit::middleware::preflight(limits, req, next).await
}

/// Routes a request through the router of its generation: the route's pipeline, 405 with
/// `Allow` for a method the matched path does not serve, or 404.
async fn dispatch(mut req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error> {
    let Some(generation) = live::of(req.request()) else {
        let res = Problem::internal().to_response(&request_id::of(req.request()));
        return Ok(req.into_response(res));
    };
    let path = req.match_info().as_str().to_string();
    let Some(matched) = generation.router.find(&path) else {
        let res = Problem::not_found().to_response(&request_id::of(req.request()));
        return Ok(req.into_response(res));
    };
    req.extensions_mut()
        .insert(live::RouteTemplate(matched.path.template.clone()));
    let Some((route, counted)) = matched.path.route(req.method()) else {
        // A method the path does not serve: counted under the path's template.
        req.extensions_mut().insert(crate::metrics::Matched(
            generation
                .state
                .metrics
                .route(&matched.path.template, req.method()),
        ));
        let p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} is not allowed on this path", req.method()),
        )
        .header(header::ALLOW, matched.path.allow.clone());
        let res = p.to_response(&request_id::of(req.request()));
        return Ok(req.into_response(res));
    };
    // Resolved once per plan: the envelope counts the request on it.
    req.extensions_mut().insert(counted.clone());
    let route = route.clone();
    for (name, value) in matched.params {
        req.match_info_mut()
            .add_static(name.to_string(), value.to_string());
    }
    let (req, mut payload) = req.into_parts();
    let payload = web::Payload::from_request(&req, &mut payload).await?;
    let res = handle(route, req.clone(), payload, &generation.state).await;
    Ok(ServiceResponse::new(req, res))
}

/// Runs one route: body, then the action; a panic becomes a 500 problem, never a dropped
/// connection or a leaked message.
async fn handle(
    route: Arc<crate::plan::routes::RoutePlan>,
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
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
        crate::authz::authorize(&state.authz, &route, &req).inspect_err(|p| {
            crate::metrics::denied(&req, p.status.as_u16());
            audit_denial(&state.audit, &route, &req, p, &ip);
        })?;
        let limit = state.plan.server.body_limit;
        let body = deadline
            .within(body::read(&req, payload, limit, route.action.takes_body()))
            .await
            .map_err(late)??;
        // A field the caller may not write, `:own` on a resource without owners: 403 too.
        crate::actions::run(&route, &req, body, state)
            .await
            .inspect_err(|p| {
                crate::metrics::denied(&req, p.status.as_u16());
                audit_denial(&state.audit, &route, &req, p, &ip);
            })
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
/// panic message goes to the log only). A combinator, not an `async fn`, for the reason
/// given at [`Deadline::within`].
fn guarded<'a>(
    work: impl std::future::Future<Output = Result<HttpResponse, Problem>> + 'a,
    rid: &'a str,
    route: &'a str,
) -> impl std::future::Future<Output = HttpResponse> + 'a {
    AssertUnwindSafe(work)
        .catch_unwind()
        .map(move |done| match done {
            Ok(Ok(res)) => res,
            Ok(Err(problem)) => problem.to_response(rid),
            Err(_) => {
                tracing::error!(request_id = %rid, route = %route, "handler panicked");
                Problem::internal().to_response(rid)
            }
        })
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

    /// Actix copies each request's dispatch future into a box: a future passed by value to
    /// an `async fn`, or a rarely taken path awaited inline, grows it for every request (it
    /// was 20.9 KB in the release build before 74ee24d, 1.9 KB after).
    #[test]
    fn a_request_future_stays_small() {
        let req = actix_web::test::TestRequest::default().to_srv_request();
        let size = std::mem::size_of_val(&dispatch(req));
        println!("dispatch future: {size} bytes");
        assert!(size <= 4096, "the dispatch future is {size} bytes");
    }
}
