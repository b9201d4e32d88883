//! The two enforcement points: [`global`] wraps routing (every request, before
//! authentication); [`route`] runs in the route handler after authentication.
//!
//! Both record the policies that counted a request in its extensions; [`global`] writes
//! the `RateLimit` fields from that record onto whatever response comes back (success,
//! 404, 429 or any other problem).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest};

use super::{Applied, BucketKey, ClientIp, RateLimits};
use crate::auth::Caller;
use crate::plan::routes::RoutePlan;
use crate::problem::Problem;
use crate::request_id;

/// The policies that counted this request, in order.
#[derive(Debug, Default)]
struct AppliedLimits(Vec<Applied>);

/// Counts every request against the `global` policy by client ip, and writes the
/// `RateLimit` fields of every policy that counted it onto the response. `limits` are those
/// of the plan the request runs on (the server passes them: they change with a reload).
pub async fn global<B: MessageBody + 'static>(
    limits: Option<Arc<RateLimits>>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(limits) = limits else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if limits.is_empty() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    if let Err(refused) = count_global(&limits, req.request()).await {
        return Ok(req.into_response(refused));
    }
    let mut res = next.call(req).await?;
    let applied = res
        .request()
        .extensions_mut()
        .remove::<AppliedLimits>()
        .unwrap_or_default();
    limits.write_headers(&applied.0, res.headers_mut());
    Ok(res.map_into_boxed_body())
}

/// Counts CORS preflights against the `global` policy. It runs outside CORS, because
/// actix-cors answers a preflight itself and [`global`] never sees it; a refused preflight
/// gets its 429 without CORS headers, so the browser does not send the request.
pub async fn preflight<B: MessageBody + 'static>(
    limits: Option<Arc<RateLimits>>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let is_preflight = req.method() == actix_web::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(actix_web::http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight && let Some(limits) = limits {
        match count_global(&limits, req.request()).await {
            Ok(()) => {
                let mut res = next.call(req).await?;
                let applied = res
                    .request()
                    .extensions_mut()
                    .remove::<AppliedLimits>()
                    .unwrap_or_default();
                limits.write_headers(&applied.0, res.headers_mut());
                return Ok(res.map_into_boxed_body());
            }
            Err(refused) => return Ok(req.into_response(refused)),
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Counts one request against the `global` policy by client ip: `Err` is the 429 response.
async fn count_global(
    limits: &RateLimits,
    req: &HttpRequest,
) -> Result<(), actix_web::HttpResponse> {
    let Some(policy) = limits.global() else {
        return Ok(());
    };
    let ip = client_ip_of(limits, req);
    match limits.check(policy, &BucketKey::ip(ip)).await {
        Ok(applied) => {
            if let Some(applied) = applied {
                record(req, applied);
            }
            Ok(())
        }
        Err(refusal) => {
            limits.audit_refusal(&ip.to_string(), "global");
            let mut res = refusal.problem.to_response(&request_id::of(req));
            if let Some(applied) = refusal.applied {
                limits.write_headers(&[applied], res.headers_mut());
            }
            Err(res)
        }
    }
}

/// Counts a request against its route's policy, keyed as the policy says (user and API
/// key fall back to the client ip for callers without that identity). A route whose
/// policy is `global` was already counted before routing and is not counted twice.
pub async fn route(
    limits: &RateLimits,
    route: &RoutePlan,
    req: &HttpRequest,
) -> Result<(), Problem> {
    let Some(policy) = route.rate_limit.as_ref().and_then(|n| limits.policy(n)) else {
        return Ok(());
    };
    if Some(policy) == limits.global() {
        return Ok(());
    }
    let Some(kind) = limits.key_kind(policy) else {
        return Ok(());
    };
    let ip = client_ip_of(limits, req);
    let key = BucketKey::for_request(kind, ip, req.extensions().get::<Caller>());
    match limits.check(policy, &key).await {
        Ok(applied) => {
            if let Some(applied) = applied {
                record(req, applied);
            }
            Ok(())
        }
        Err(refusal) => {
            if let Some(applied) = refusal.applied {
                record(req, applied);
            }
            Err(refusal.problem)
        }
    }
}

/// The request's client address, resolved once and kept in its extensions.
pub fn client_ip_of(limits: &RateLimits, req: &HttpRequest) -> IpAddr {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>() {
        return *ip;
    }
    // No peer address only happens outside a real socket (tests): one shared bucket.
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
    let ip = limits.client_ip(peer, req.headers());
    req.extensions_mut().insert(ClientIp(ip));
    ip
}

fn record(req: &HttpRequest, applied: Applied) {
    let mut ext = req.extensions_mut();
    match ext.get_mut::<AppliedLimits>() {
        Some(list) => list.0.push(applied),
        None => {
            ext.insert(AppliedLimits(vec![applied]));
        }
    }
}
