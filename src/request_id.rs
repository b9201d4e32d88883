//! Request ids: a sane incoming `X-Request-Id` is kept, anything else replaced by a UUIDv7.

use actix_web::HttpMessage;
use actix_web::dev::ServiceRequest;

/// The header that carries the id, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// The request's id, stored in the request extensions for every later stage.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Accepts 1–128 characters of `[A-Za-z0-9._:-]`: enough for UUIDs and tracing ids, and
/// nothing that could forge a log line or a header.
pub fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Takes the incoming id if sane, else generates one; stores and returns it.
pub fn assign(req: &ServiceRequest) -> String {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// The id of a request being handled (set by the envelope before any handler runs).
pub fn of(req: &actix_web::HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::is_sane;

    #[test]
    fn sanity() {
        assert!(is_sane("0192f0c5-7b1e-7cc1-9f5e-1b2a3c4d5e6f"));
        assert!(is_sane("trace:abc.def_1"));
        assert!(!is_sane(""));
        assert!(!is_sane("a b"));
        assert!(!is_sane("evil\r\nx-admin: 1"));
        assert!(!is_sane(&"a".repeat(129)));
    }
}
