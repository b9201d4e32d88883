//! Compiles `[server]`, `[headers]` and `[cors]`: listening socket, limits, TLS material,
//! the secure header set and the CORS policy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::Profile;
use super::diag::Diagnostics;
use super::units;
use crate::config::{RawCors, RawHeaders, RawServer, RawTls};

/// `[server]`, checked.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    pub bind: SocketAddr,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// 0: one worker per core.
    pub workers: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub tls: Option<TlsPlan>,
}

/// TLS material, loaded and parsed at compile time so `check` reports a bad certificate.
#[derive(Clone)]
pub struct TlsPlan {
    pub cert: PathBuf,
    pub config: Arc<rustls::ServerConfig>,
    /// The optional plain-HTTP listener that redirects to HTTPS.
    pub redirect: Option<RedirectPlan>,
}

/// `server.tls.redirect_http`: where to listen for plain HTTP and the fixed HTTPS origin
/// every request there is sent to with 308.
#[derive(Debug, Clone)]
pub struct RedirectPlan {
    pub bind: SocketAddr,
    /// `https://host[:port]`, without a trailing slash.
    pub origin: String,
}

impl std::fmt::Debug for TlsPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPlan")
            .field("cert", &self.cert)
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

const MAX_BODY_LIMIT: u64 = 1 << 30;

pub fn compile_server(raw: &RawServer, d: &mut Diagnostics) -> ServerPlan {
    let bind = raw.bind.parse().unwrap_or_else(|_| {
        d.error(
            "server.bind",
            format!(
                "`{}` is not a socket address such as 127.0.0.1:8080",
                raw.bind
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let body_limit = match units::size(&raw.body_limit) {
        Ok(0) => {
            d.error("server.body_limit", "must be greater than zero");
            0
        }
        Ok(n) if n > MAX_BODY_LIMIT => {
            d.error("server.body_limit", "must be at most 1GiB");
            0
        }
        Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Err(e) => {
            d.error("server.body_limit", e);
            0
        }
    };
    let request_timeout = positive_duration(&raw.request_timeout, "server.request_timeout", d);
    let shutdown_timeout = units::duration(&raw.shutdown_timeout).unwrap_or_else(|e| {
        d.error("server.shutdown_timeout", e);
        Duration::ZERO
    });
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
        let path = format!("server.trusted_proxies[{i}]");
        let parsed = cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) if net.prefix_len() == 0 => d.error(
                path,
                format!("`{cidr}` would trust every address; list your proxies' addresses instead"),
            ),
            Ok(net) => trusted_proxies.push(net.trunc()),
            Err(_) => d.error(
                path,
                format!("`{cidr}` is not an IP address or CIDR such as 10.0.0.0/8"),
            ),
        }
    }
    let mut tls = raw.tls.as_ref().and_then(|tls| compile_tls(tls, d));
    if let (Some(raw_tls), Some(plan)) = (raw.tls.as_ref(), tls.as_mut()) {
        plan.redirect = compile_redirect(raw_tls, bind, d);
    }
    ServerPlan {
        bind,
        body_limit,
        request_timeout,
        shutdown_timeout,
        workers: raw.workers,
        trusted_proxies,
        tls,
    }
}

fn positive_duration(text: &str, path: &str, d: &mut Diagnostics) -> Duration {
    match units::duration(text) {
        Ok(t) if t.is_zero() => {
            d.error(path, "must be greater than zero");
            Duration::from_secs(1)
        }
        Ok(t) => t,
        Err(e) => {
            d.error(path, e);
            Duration::from_secs(1)
        }
    }
}

/// `server.tls.redirect_http` and `public_host`: the redirect target is fixed here, so a
/// request's Host header can never choose where a client is sent.
fn compile_redirect(raw: &RawTls, bind: SocketAddr, d: &mut Diagnostics) -> Option<RedirectPlan> {
    let listen = raw.redirect_http.as_deref()?;
    let Ok(listen) = listen.parse::<SocketAddr>() else {
        d.error(
            "server.tls.redirect_http",
            format!("`{listen}` is not a socket address such as 0.0.0.0:80"),
        );
        return None;
    };
    if listen == bind {
        d.error("server.tls.redirect_http", "must differ from server.bind");
        return None;
    }
    let origin = match raw.public_host.as_deref() {
        Some(host) => match url::Url::parse(&format!("https://{host}")) {
            Ok(u)
                if u.host_str().is_some_and(|h| !h.is_empty())
                    && u.path() == "/"
                    && u.username().is_empty()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && !host.contains('/') =>
            {
                u.as_str().trim_end_matches('/').to_string()
            }
            _ => {
                d.error(
                    "server.tls.public_host",
                    format!("`{host}` is not a host[:port] such as api.example.com"),
                );
                return None;
            }
        },
        None if bind.ip().is_unspecified() || bind.port() == 0 => {
            d.error(
                "server.tls.public_host",
                "required with redirect_http when server.bind listens on every address: name the host clients use",
            );
            return None;
        }
        None if bind.port() == 443 => match bind.ip() {
            std::net::IpAddr::V6(ip) => format!("https://[{ip}]"),
            ip => format!("https://{ip}"),
        },
        None => format!("https://{bind}"),
    };
    Some(RedirectPlan {
        bind: listen,
        origin,
    })
}

fn compile_tls(raw: &RawTls, d: &mut Diagnostics) -> Option<TlsPlan> {
    let certs = match std::fs::read(&raw.cert) {
        Ok(pem) => {
            let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
            match certs {
                Ok(c) if !c.is_empty() => Some(c),
                Ok(_) => {
                    d.error(
                        "server.tls.cert",
                        format!("{}: no PEM certificate found", raw.cert),
                    );
                    None
                }
                Err(e) => {
                    d.error("server.tls.cert", format!("{}: {e}", raw.cert));
                    None
                }
            }
        }
        Err(e) => {
            d.error("server.tls.cert", format!("{}: {e}", raw.cert));
            None
        }
    };
    let key = match std::fs::read(&raw.key) {
        // The key's bytes never appear in a message.
        Ok(pem) => match rustls_pemfile::private_key(&mut pem.as_slice()) {
            Ok(Some(k)) => Some(k),
            Ok(None) => {
                d.error(
                    "server.tls.key",
                    format!("{}: no PEM private key found", raw.key),
                );
                None
            }
            Err(_) => {
                d.error(
                    "server.tls.key",
                    format!("{}: not a readable PEM private key", raw.key),
                );
                None
            }
        },
        Err(e) => {
            d.error("server.tls.key", format!("{}: {e}", raw.key));
            None
        }
    };
    let (certs, key) = (certs?, key?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| d.error("server.tls", e.to_string()))
        .ok()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            d.error(
                "server.tls",
                format!("certificate and key do not fit together: {e}"),
            )
        })
        .ok()?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(TlsPlan {
        cert: raw.cert.clone().into(),
        config: Arc::new(config),
        redirect: None,
    })
}

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

/// `[cors]`, checked: origins parsed so actix-cors can never fail at worker start.
#[derive(Debug, Clone)]
pub struct CorsPlan {
    pub any_origin: bool,
    pub origins: Vec<String>,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

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
        d.error(
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

/// True for `localhost` and loopback IP literals.
pub fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
