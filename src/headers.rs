//! Secure response headers: Helmet 8's defaults (or the `[headers]` overrides) on every
//! response, errors and 404s included; `Strict-Transport-Security` only over TLS.

use actix_web::http::header::HeaderMap;

use crate::plan::headers::HeadersPlan;

/// Sets every planned header, replacing any value a handler set, and strips banners.
/// `Strict-Transport-Security` only when the response goes out over TLS (`secure`): RFC 6797
/// §7.2 forbids it over plain HTTP, e.g. on the HTTP→HTTPS redirect listener.
pub fn apply(plan: &HeadersPlan, headers: &mut HeaderMap, secure: bool) {
    for (name, value) in &plan.always {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(hsts) = plan.hsts.as_ref().filter(|_| secure) {
        headers.insert(
            actix_web::http::header::STRICT_TRANSPORT_SECURITY,
            hsts.clone(),
        );
    }
    headers.remove(actix_web::http::header::SERVER);
    headers.remove("x-powered-by");
}
