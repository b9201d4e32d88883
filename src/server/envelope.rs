//! The envelope around every request: request id, deadline, problem+json for every error
//! (including ones produced by actix or actix-cors), secure headers, one access-log line.
//!
//! The deadline (start + `server.request_timeout`) goes into the request extensions, and
//! every stage that may wait answers 503 by it on its own. The envelope's timer is only a
//! backstop, [`BACKSTOP_MARGIN`] later: writes are answered by the database writer shortly
//! after their deadline at the latest, so cutting them off at the deadline itself could tell
//! a client 503 for a write that commits. If the backstop ever fires, it logs an error.

use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse, ResponseError};

use crate::actions::AppState;
use crate::auth::Caller;
use crate::deadline::Deadline;
use crate::problem::{Problem, is_problem};
use crate::request_id;

/// How long after its deadline a request is cut off if a stage failed to answer by it.
pub const BACKSTOP_MARGIN: Duration = Duration::from_secs(5);

/// The outermost middleware: request id, timeout, problem+json for every error, secure headers and one access-log line.
pub async fn envelope<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    // The plan this request runs on, start to end, whatever a reload does meanwhile.
    let state = super::live::pin(&req).map(|g| g.state.clone());
    let rid = request_id::assign(&req);
    // Whether this listener speaks TLS (the redirect listener does not).
    let secure = req.app_config().secure();
    let method = req.method().clone();
    let preflight =
        method == Method::OPTIONS && req.headers().contains_key("access-control-request-method");
    // Held to the end of the request: the writer waits for the write requests in
    // flight before it commits a batch (`store::writer::linger`).
    let _write = match method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            state.as_ref().and_then(|s| s.store.expect_write())
        }
        _ => None,
    };
    let timeout = state.as_ref().map(|s| s.plan.server.request_timeout);
    if let Some(t) = timeout {
        req.extensions_mut().insert(Deadline::at(started + t));
    }
    // No clone of the request may live across `next.call`: routing needs it unshared.
    let outcome = match timeout {
        Some(t) => tokio::time::timeout(t + BACKSTOP_MARGIN, next.call(req))
            .await
            .map_err(|_| ()),
        None => Ok(next.call(req).await),
    };
    let problem = match outcome {
        Ok(Ok(res)) => Ok(res.map_into_boxed_body()),
        Ok(Err(err)) => Err(Problem::for_status(err.as_response_error().status_code())),
        Err(()) => {
            tracing::error!(
                request_id = %rid,
                method = %method,
                "a request outlived its deadline by {}s: a stage did not honour it",
                BACKSTOP_MARGIN.as_secs()
            );
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took longer than the server allows",
            ))
        }
    };
    let mut res = match problem {
        Ok(res) => res,
        Err(problem) => {
            log(&method, "-", problem.status.as_u16(), started, &rid, None);
            // The request went with the error: counted as served by no route.
            if let Some(state) = &state {
                unrouted(state, &method, secure)
                    .observe(problem.status.as_u16(), started.elapsed());
            }
            return Err(Escaped {
                problem,
                rid,
                state,
                secure,
            }
            .into());
        }
    };

    // Errors made outside NestFlux's handlers (actix, actix-cors) become problem+json too.
    if res.status().as_u16() >= 400 && !is_problem(res.response()) {
        let status = res.status();
        let keep: Vec<_> = res
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str() == "allow" || n.as_str().starts_with("www-authenticate"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut problem = Problem::for_status(status);
        if preflight {
            problem = Problem::new(
                status,
                "cors-refused",
                "cross-origin request refused: origin, method or headers not allowed",
            );
        }
        let mut fresh = problem.to_response(&rid);
        for (n, v) in keep {
            fresh.headers_mut().insert(n, v);
        }
        res = ServiceResponse::new(res.request().clone(), fresh);
    }

    if let Some(state) = &state {
        crate::headers::apply(&state.plan.headers, res.headers_mut(), secure);
    }
    if let Ok(value) = HeaderValue::from_str(&rid) {
        res.headers_mut()
            .insert(HeaderName::from_static(request_id::HEADER), value);
    }

    if let Some(state) = &state {
        let (status, elapsed) = (res.status().as_u16(), started.elapsed());
        match res.request().extensions().get::<crate::metrics::Matched>() {
            Some(m) => m.0.observe(status, elapsed),
            None => unrouted(state, &method, secure).observe(status, elapsed),
        }
    }

    let route = super::live::route_template(res.request())
        .map_or_else(|| "-".to_string(), |t| t.to_string());
    let subject = res
        .request()
        .extensions()
        .get::<Caller>()
        .map(|c| c.subject.clone());
    log(
        &method,
        &route,
        res.status().as_u16(),
        started,
        &rid,
        subject.as_deref(),
    );
    Ok(res)
}

/// The metrics of a request no route served: the HTTP→HTTPS redirect listener's (plain
/// HTTP while the plan serves TLS), or unmatched.
fn unrouted<'a>(
    state: &'a AppState,
    method: &Method,
    secure: bool,
) -> &'a crate::metrics::RouteMetrics {
    if !secure && state.plan.server.tls.is_some() {
        state.metrics.redirected(method)
    } else {
        state.metrics.unmatched(method)
    }
}

fn log(
    method: &Method,
    route: &str,
    status: u16,
    started: Instant,
    rid: &str,
    subject: Option<&str>,
) {
    tracing::info!(
        target: "nestflux::request",
        method = method.as_str(),
        route,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = rid,
        subject = subject.unwrap_or("-"),
    );
}

/// A problem that escaped as an error (timeouts, errors from inner layers): actix renders
/// it outside the middleware stack, so it carries the secure headers itself.
struct Escaped {
    problem: Problem,
    rid: String,
    state: Option<std::sync::Arc<AppState>>,
    secure: bool,
}

impl std::fmt::Debug for Escaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.problem.status, self.problem.slug)
    }
}

impl std::fmt::Display for Escaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem.detail)
    }
}

impl ResponseError for Escaped {
    fn status_code(&self) -> StatusCode {
        self.problem.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = self.problem.to_response(&self.rid);
        if let Some(state) = &self.state {
            crate::headers::apply(&state.plan.headers, res.headers_mut(), self.secure);
        }
        if let Ok(value) = HeaderValue::from_str(&self.rid) {
            res.headers_mut()
                .insert(HeaderName::from_static(request_id::HEADER), value);
        }
        res
    }
}
