//! Cross-site request forgery: a request authenticated by the session cookie with an unsafe
//! method (anything but GET, HEAD, OPTIONS, TRACE) passes when its `Origin` is the server's
//! own origin or one listed in `[cors]`, or when the browser says `Sec-Fetch-Site:
//! same-origin` (or `none`: typed by the user). Anything else — a foreign `Origin`,
//! `Sec-Fetch-Site: cross-site` or `same-site`, or neither header — is a 403, before the
//! session is even looked up. Bearer and API-key requests never get here: a site cannot make
//! a browser attach those.
//!
//! `Sec-Fetch-Site` is set by the browser and cannot be set by a page's scripts; it matters
//! because a same-origin form POST from a page with `Referrer-Policy: no-referrer` (Helmet's
//! default) carries `Origin: null`.

use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap};

/// Why a cookie-authenticated request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `Origin` names a site that is neither this server nor a listed CORS origin.
    #[error("cross-origin request from an origin that is not allowed")]
    ForeignOrigin,
    /// Neither `Origin` nor `Sec-Fetch-Site` says this site.
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
    let origin = match (origins.next(), origins.next()) {
        (Some(o), None) => o.to_str().ok(),
        _ => None,
    };
    // "null" (sandboxed frames, no-referrer pages, some redirects) is no origin we can trust.
    if origin.is_some_and(|o| o == own_origin || allowed.iter().any(|a| a == o)) {
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") | Some("none") => Ok(()),
        _ if origin.is_some() => Err(Refused::ForeignOrigin),
        _ => Err(Refused::NoOrigin),
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
            Err(Refused::NoOrigin)
        );
        // A cross-site request says so in Sec-Fetch-Site as well.
        assert_eq!(
            check(&[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site")
            ]),
            Err(Refused::ForeignOrigin)
        );
        // A same-origin form POST from a no-referrer page: Origin null, Sec-Fetch-Site tells.
        assert_eq!(
            check(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            Ok(())
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
