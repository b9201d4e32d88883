//! The two cookies of browser login, read strictly and written with one set of attributes:
//! `HttpOnly; SameSite=Lax; Path=/` and, unless `dangerous_insecure_cookie`, `Secure` with
//! the `__Host-` prefix (so no subdomain can set or shadow them).
//!
//! Values are 256-bit random ids in base64url (43 characters); anything else is not ours.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderValue};

/// Length of a random id in base64url without padding (32 bytes).
pub const ID_LEN: usize = 43;

/// What the request carries under a cookie name.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// No cookie of that name.
    Absent,
    /// Exactly one, well-formed.
    One(String),
    /// Malformed, or several of that name (a cookie planted beside ours).
    Bad,
}

/// Reads the cookie `name`, tolerating unrelated malformed cookies of other applications.
pub fn read(req: &HttpRequest, name: &str) -> Read {
    let mut found: Option<&str> = None;
    for value in req.headers().get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n.trim() != name {
                continue;
            }
            if found.is_some() {
                return Read::Bad;
            }
            found = Some(v.trim());
        }
    }
    match found {
        None => Read::Absent,
        Some(v) if is_id(v) => Read::One(v.to_string()),
        Some(_) => Read::Bad,
    }
}

/// Whether `v` has the shape of an id this server issues.
pub fn is_id(v: &str) -> bool {
    v.len() == ID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Set-Cookie` giving `name` the `value` for `max_age`.
pub fn set(name: &str, value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    // Names are constants and values are base64url: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

/// `Set-Cookie` removing `name`.
pub fn clear(name: &str, secure: bool) -> HeaderValue {
    set(name, "", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const ID: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNO12";

    #[test]
    fn reads_exactly_one_well_formed_value() {
        let req = |cookie: &str| {
            TestRequest::default()
                .insert_header((header::COOKIE, cookie))
                .to_http_request()
        };
        assert_eq!(
            read(&TestRequest::default().to_http_request(), "s"),
            Read::Absent
        );
        assert_eq!(read(&req(&format!("s={ID}")), "s"), Read::One(ID.into()));
        assert_eq!(
            read(&req(&format!("other=%%bad; s={ID}; x")), "s"),
            Read::One(ID.into())
        );
        assert_eq!(read(&req(&format!("s={ID}; s={ID}")), "s"), Read::Bad);
        assert_eq!(read(&req("s=short"), "s"), Read::Bad);
        assert_eq!(read(&req(&format!("s={}", &ID[1..])), "s"), Read::Bad);
        assert_eq!(read(&req(&format!("xs={ID}")), "s"), Read::Absent);
    }

    #[test]
    fn attributes() {
        let v = set("__Host-x", ID, Duration::from_secs(60), true);
        assert_eq!(
            v.to_str().unwrap(),
            format!("__Host-x={ID}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure")
        );
        let v = clear("x", false);
        assert_eq!(
            v.to_str().unwrap(),
            "x=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }
}
