//! RFC 9457 problem details: the one shape of every error response.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use serde_json::Value;

/// The media type of every error body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error answer. Its `detail` is written for the caller and never carries internals.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable slug, published as `type: "urn:nestflux:problem:<slug>"`.
    pub slug: &'static str,
    /// What went wrong, for the caller.
    pub detail: String,
    /// Validation errors: `[{pointer, code, message}]`.
    pub errors: Option<Vec<Value>>,
    /// Headers sent with the problem (`WWW-Authenticate`, `Retry-After`, `Allow`, …).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with `status`, the `slug` of its type and a `detail` for the caller.
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            errors: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the response.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 404: nothing is served at this path.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "no resource at this path",
        )
    }

    /// A row that does not exist, or that the caller may only see if it were theirs: the
    /// same answer, so a 404 never confirms another's row exists.
    pub fn no_record() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "no record with this id")
    }

    /// A known caller without the permission.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 400 with the given detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 503: the request's deadline (`server.request_timeout`) passed; nothing was written.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the server allows; nothing was changed",
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// 500 that says nothing about the cause (the log has it).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; the request id identifies it in the logs",
        )
    }

    /// A generic problem for a status produced outside NestFlux's own handlers.
    pub fn for_status(status: StatusCode) -> Self {
        let (slug, detail) = match status.as_u16() {
            400 => ("bad-request", "the request is malformed"),
            401 => ("unauthorized", "missing or invalid credentials"),
            403 => ("forbidden", "not permitted"),
            404 => ("not-found", "no resource at this path"),
            405 => ("method-not-allowed", "method not allowed on this path"),
            408 => ("timeout", "the request took too long to arrive"),
            413 => ("payload-too-large", "the request body is too large"),
            415 => (
                "unsupported-media-type",
                "the request body must be application/json",
            ),
            429 => ("rate-limited", "too many requests"),
            503 => ("unavailable", "the service is temporarily unavailable"),
            s if s >= 500 => (
                "internal",
                "the server failed to answer; the request id identifies it in the logs",
            ),
            _ => ("error", "the request failed"),
        };
        Self::new(status, slug, detail)
    }

    /// The problem+json response, with `request_id` in the body.
    pub fn to_response(&self, request_id: &str) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, CONTENT_TYPE));
        for (name, value) in &self.headers {
            res.insert_header((name.clone(), value.clone()));
        }
        res.body(self.body(request_id))
    }

    /// The JSON body, written straight into one string: every refused request (a flood of
    /// bad tokens included) is answered with one, and a `serde_json::Value` tree cost more
    /// than the rest of a 401. The members are in the order serde_json's map gives them.
    fn body(&self, request_id: &str) -> String {
        use crate::json_string::push;
        let title = self.status.canonical_reason().unwrap_or("Error");
        let mut out = String::with_capacity(96 + self.detail.len() + request_id.len());
        out.push_str("{\"detail\":");
        push(&mut out, &self.detail);
        if let Some(errors) = &self.errors {
            out.push_str(",\"errors\":");
            match serde_json::to_string(errors) {
                Ok(errors) => out.push_str(&errors),
                Err(_) => out.push_str("[]"),
            }
        }
        out.push_str(",\"request_id\":");
        push(&mut out, request_id);
        out.push_str(",\"status\":");
        out.push_str(itoa::Buffer::new().format(self.status.as_u16()));
        out.push_str(",\"title\":");
        push(&mut out, title);
        out.push_str(",\"type\":");
        push(&mut out, &format!("urn:nestflux:problem:{}", self.slug));
        out.push('}');
        out
    }
}

/// Whether a response already is a problem document.
pub fn is_problem(res: &HttpResponse) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CONTENT_TYPE))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    /// The body as a `serde_json::Value` tree renders it (how it was built before).
    fn rendered_by_serde(p: &Problem, request_id: &str) -> String {
        let mut body = json!({
            "type": format!("urn:nestflux:problem:{}", p.slug),
            "title": p.status.canonical_reason().unwrap_or("Error"),
            "status": p.status.as_u16(),
            "detail": p.detail,
            "request_id": request_id,
        });
        if let (Some(errors), Some(map)) = (&p.errors, body.as_object_mut()) {
            map.insert("errors".into(), Value::Array(errors.clone()));
        }
        body.to_string()
    }

    #[test]
    fn the_body_is_what_serde_json_writes() {
        let mut invalid = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "the body \"failed\"\nvalidation \\ é",
        );
        invalid.errors = Some(vec![
            json!({"pointer": "/title", "code": "required", "message": "is \"required\""}),
            json!({"pointer": "/a~1b", "code": "x", "message": "\u{1}"}),
        ]);
        let unusual = Problem::new(StatusCode::from_u16(599).unwrap(), "error", "");
        for (p, rid) in [
            (Problem::not_found(), "01a23039-9c41-71ff-9366-4a1f19571b12"),
            (Problem::timeout(), "-"),
            (Problem::for_status(StatusCode::UNAUTHORIZED), "a\"b\\c"),
            (invalid, "rid"),
            (unusual, ""),
        ] {
            let body = p.body(rid);
            assert_eq!(body, rendered_by_serde(&p, rid));
            let parsed: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(parsed["request_id"], rid);
            assert_eq!(parsed["status"], p.status.as_u16());
        }
    }
}
