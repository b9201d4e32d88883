//! Compiles `[server]`: listening socket, body and time limits, trusted proxies and the TLS
//! material (loaded here, so `check` reports a bad certificate). Enforced by `server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::diag::{Code, Diagnostics};
use super::units;
use crate::config::{RawServer, RawTls};

/// `[server]`, checked.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Socket address to listen on.
    pub bind: SocketAddr,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Time to read a request and answer it.
    pub request_timeout: Duration,
    /// Time in-flight requests get on shutdown.
    pub shutdown_timeout: Duration,
    /// 0: one worker per core.
    pub workers: usize,
    /// Proxies whose forwarded headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// HTTPS, when `[server.tls]` is declared.
    pub tls: Option<TlsPlan>,
}

/// TLS material, loaded and parsed at compile time so `check` reports a bad certificate.
#[derive(Clone)]
pub struct TlsPlan {
    /// The certificate file, for messages.
    pub cert: PathBuf,
    /// The rustls configuration (certificate chain and key loaded).
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate chain and signing key, for the server's reloadable resolver.
    pub certified: Arc<rustls::sign::CertifiedKey>,
    /// The optional plain-HTTP listener that redirects to HTTPS.
    pub redirect: Option<RedirectPlan>,
}

/// `server.tls.redirect_http`: where to listen for plain HTTP and the fixed HTTPS origin
/// every request there is sent to with 308.
#[derive(Debug, Clone)]
pub struct RedirectPlan {
    /// Where the plain-HTTP listener binds.
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

/// Checks `[server]`, loading the TLS material.
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
            Ok(net) if net.prefix_len() == 0 => d.error_with(
                Code::Insecure,
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
        d.error_with(
            Code::Conflict,
            "server.tls.redirect_http",
            "must differ from server.bind",
        );
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
            d.error_with(
                Code::MissingKey,
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
            d.error_with(
                Code::Unreadable,
                "server.tls.cert",
                format!("{}: {e}", raw.cert),
            );
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
            d.error_with(
                Code::Unreadable,
                "server.tls.key",
                format!("{}: {e}", raw.key),
            );
            None
        }
    };
    let (certs, key) = (certs?, key?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rustls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider)
        .map_err(|e| {
            d.error(
                "server.tls",
                format!("certificate and key do not fit together: {e}"),
            )
        })
        .ok()?;
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
        certified: Arc::new(certified),
        redirect: None,
    })
}
