//! Compiles `[headers]`: Helmet's secure header set with the file's overrides, HSTS only
//! over TLS. Enforced by `headers`.

use actix_web::http::header::{HeaderName, HeaderValue};

use super::diag::Diagnostics;
use crate::config::RawHeaders;

/// The secure header set added to every response, errors and 404s included.
#[derive(Debug, Clone, Default)]
pub struct HeadersPlan {
    /// Sent on every response.
    pub always: Vec<(HeaderName, HeaderValue)>,
    /// `Strict-Transport-Security`, sent only when the server speaks TLS.
    pub hsts: Option<HeaderValue>,
}

/// Helmet 8's defaults, header by header, keyed by the `[headers]` key that overrides each.
pub const HELMET_DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "content_security_policy",
        "content-security-policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    (
        "cross_origin_opener_policy",
        "cross-origin-opener-policy",
        "same-origin",
    ),
    (
        "cross_origin_resource_policy",
        "cross-origin-resource-policy",
        "same-origin",
    ),
    (
        "cross_origin_embedder_policy",
        "cross-origin-embedder-policy",
        "",
    ),
    ("origin_agent_cluster", "origin-agent-cluster", "?1"),
    ("referrer_policy", "referrer-policy", "no-referrer"),
    (
        "strict_transport_security",
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    (
        "x_content_type_options",
        "x-content-type-options",
        "nosniff",
    ),
    ("x_dns_prefetch_control", "x-dns-prefetch-control", "off"),
    ("x_download_options", "x-download-options", "noopen"),
    ("x_frame_options", "x-frame-options", "SAMEORIGIN"),
    (
        "x_permitted_cross_domain_policies",
        "x-permitted-cross-domain-policies",
        "none",
    ),
    ("x_xss_protection", "x-xss-protection", "0"),
];

/// Checks `[headers]`: Helmet's defaults with the file's overrides; HSTS only with TLS.
pub fn compile_headers(raw: &RawHeaders, tls: bool, d: &mut Diagnostics) -> HeadersPlan {
    let overrides = [
        &raw.content_security_policy,
        &raw.cross_origin_opener_policy,
        &raw.cross_origin_resource_policy,
        &raw.cross_origin_embedder_policy,
        &raw.origin_agent_cluster,
        &raw.referrer_policy,
        &raw.strict_transport_security,
        &raw.x_content_type_options,
        &raw.x_dns_prefetch_control,
        &raw.x_download_options,
        &raw.x_frame_options,
        &raw.x_permitted_cross_domain_policies,
        &raw.x_xss_protection,
    ];
    let mut plan = HeadersPlan::default();
    for ((key, name, default), over) in HELMET_DEFAULTS.iter().zip(overrides) {
        let value = over.as_deref().unwrap_or(default);
        if value.is_empty() {
            continue;
        }
        let Ok(value) = HeaderValue::from_str(value) else {
            d.error(
                format!("headers.{key}"),
                "not a valid header value (control characters?)",
            );
            continue;
        };
        let name = HeaderName::from_static(name);
        if name == actix_web::http::header::STRICT_TRANSPORT_SECURITY {
            if tls {
                plan.hsts = Some(value);
            }
        } else {
            plan.always.push((name, value));
        }
    }
    plan
}
