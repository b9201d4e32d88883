//! Cross-site request forgery: a request authenticated by the session cookie with an unsafe
//! method (anything but GET, HEAD, OPTIONS, TRACE) must come from the server's own origin or
//! an origin listed in `[cors]`, as `Origin` says; without `Origin`, `Sec-Fetch-Site` must
//! be `same-origin` (or `none`: typed by the user). Otherwise 403, before the session is
//! even looked up. Bearer and API-key requests never get here: a site cannot make a browser
//! attach those.

use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap};

/// Why a cookie-authenticated request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `Origin` names a site that is neither this server nor a listed CORS origin.
    #[error("cross-origin request from an origin that is not allowed")]
    ForeignOrigin,
    /// No `Origin`, and `Sec-Fetch-Site` does not say same-origin.
    #[error("no Origin, and Sec-Fetch-Site is not same-origin")]
    NoOrigin,
}

/// Whether a method changes nothing (RFC 9110 §9.2.1): those need no origin check.
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Checks a request that the session cookie would authenticate.
pub fn check(req: &HttpRequest, own_origin: &str, allowed: &[String]) -> Result<(), Refused> {
    if is_safe(req.method()) {
        return Ok(());
    }
    check_headers(req.headers(), own_origin, allowed)
}

fn check_headers(headers: &HeaderMap, own_origin: &str, allowed: &[String]) -> Result<(), Refused> {
    let mut origins = headers.get_all(header::ORIGIN);
    match (origins.next(), origins.next()) {
        (Some(origin), None) => {
            let origin = origin.to_str().map_err(|_| Refused::ForeignOrigin)?;
            // "null" (sandboxed frames, some redirects) is no origin we can trust.
            if origin == own_origin || allowed.iter().any(|a| a == origin) {
                Ok(())
            } else {
                Err(Refused::ForeignOrigin)
            }
        }
        (Some(_), Some(_)) => Err(Refused::ForeignOrigin),
        (None, _) => match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            Some("same-origin") | Some("none") => Ok(()),
            _ => Err(Refused::NoOrigin),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_static(n),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const OWN: &str = "https://api.example.com";

    fn check(pairs: &[(&'static str, &str)]) -> Result<(), Refused> {
        check_headers(
            &headers(pairs),
            OWN,
            &["https://app.example.com".to_string()],
        )
    }

    #[test]
    fn origins() {
        assert_eq!(check(&[("origin", OWN)]), Ok(()));
        assert_eq!(check(&[("origin", "https://app.example.com")]), Ok(()));
        for bad in [
            "https://evil.example",
            "null",
            "https://api.example.com.evil.example",
            "http://api.example.com",
            "https://api.example.com:8443",
        ] {
            assert_eq!(
                check(&[("origin", bad)]),
                Err(Refused::ForeignOrigin),
                "{bad}"
            );
        }
        assert_eq!(
            check(&[("origin", OWN), ("origin", "https://evil.example")]),
            Err(Refused::ForeignOrigin)
        );
        // Origin decides even when Sec-Fetch-Site claims otherwise.
        assert_eq!(
            check(&[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "same-origin")
            ]),
            Err(Refused::ForeignOrigin)
        );
    }

    #[test]
    fn without_origin_sec_fetch_site_decides() {
        assert_eq!(check(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(check(&[("sec-fetch-site", "none")]), Ok(()));
        for bad in ["same-site", "cross-site", "whatever"] {
            assert_eq!(check(&[("sec-fetch-site", bad)]), Err(Refused::NoOrigin));
        }
        assert_eq!(check(&[]), Err(Refused::NoOrigin));
    }

    #[test]
    fn safe_methods_pass() {
        assert!(is_safe(&Method::GET) && is_safe(&Method::HEAD));
        assert!(!is_safe(&Method::POST) && !is_safe(&Method::DELETE) && !is_safe(&Method::PATCH));
    }
}
