//! Compiles `[cors]`: origins parsed here so actix-cors can never fail at worker start, and
//! `*` with credentials refused. Enforced by `cors`.

use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::HeaderName;

use super::diag::{Code, Diagnostics};
use super::{Profile, is_loopback_host, units};
use crate::config::RawCors;

/// `[cors]`, checked: origins parsed so actix-cors can never fail at worker start.
#[derive(Debug, Clone)]
pub struct CorsPlan {
    /// `*` was listed: any origin (never with credentials).
    pub any_origin: bool,
    /// Allowed origins, serialized as browsers send them.
    pub origins: Vec<String>,
    /// Methods allowed cross-origin.
    pub methods: Vec<Method>,
    /// Request headers allowed cross-origin.
    pub headers: Vec<HeaderName>,
    /// Response headers the browser may read.
    pub expose_headers: Vec<HeaderName>,
    /// Whether cookies and `Authorization` may be sent.
    pub credentials: bool,
    /// How long a preflight answer may be cached.
    pub max_age: Option<Duration>,
}

/// Checks `[cors]`.
pub fn compile_cors(raw: &RawCors, profile: Profile, d: &mut Diagnostics) -> CorsPlan {
    let mut any_origin = false;
    let mut origins = Vec::new();
    for (i, origin) in raw.origins.iter().enumerate() {
        let path = format!("cors.origins[{i}]");
        if origin == "*" {
            any_origin = true;
            continue;
        }
        match url::Url::parse(origin) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
                    && u.query().is_none()
                    && u.username().is_empty() =>
            {
                if u.scheme() == "http" && profile == Profile::Production && !is_loopback_host(&u) {
                    d.warn(path, format!("`{origin}` is plain HTTP"));
                }
                origins.push(u.origin().ascii_serialization());
            }
            _ => d.error(
                path,
                format!("`{origin}` is not an origin such as https://app.example.com (scheme, host, optional port; no path)"),
            ),
        }
    }
    if any_origin && raw.credentials {
        d.error_with(
            Code::Insecure,
            "cors.origins",
            "\"*\" together with credentials = true would let any site act with your users' credentials; list the origins",
        );
    }
    if any_origin && !origins.is_empty() {
        d.warn(
            "cors.origins",
            "\"*\" makes the other listed origins redundant",
        );
    }
    let mut methods = Vec::new();
    for (i, m) in raw.methods.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if m.chars().all(|c| c.is_ascii_alphabetic()) => methods.push(method),
            _ => d.error(
                format!("cors.methods[{i}]"),
                format!("`{m}` is not an HTTP method"),
            ),
        }
    }
    let headers = header_names(&raw.headers, "cors.headers", d);
    let expose_headers = header_names(&raw.expose_headers, "cors.expose_headers", d);
    let max_age = raw.max_age.as_ref().and_then(|t| {
        units::duration(t)
            .map_err(|e| d.error("cors.max_age", e))
            .ok()
    });
    if let Some(age) = max_age
        && age > Duration::from_secs(86_400)
    {
        d.warn(
            "cors.max_age",
            "browsers cap preflight caching at 2h (Chromium) or 24h (Firefox)",
        );
    }
    CorsPlan {
        any_origin,
        origins,
        methods,
        headers,
        expose_headers,
        credentials: raw.credentials,
        max_age,
    }
}

fn header_names(names: &[String], path: &str, d: &mut Diagnostics) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, h) in names.iter().enumerate() {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => out.push(name),
            Err(_) => d.error(
                format!("{path}[{i}]"),
                format!("`{h}` is not a header name"),
            ),
        }
    }
    out
}
