//! problem+json in the document: the `Problem` schema, the error responses operations
//! refer to, and the headers those responses carry.

use serde_json::{Map, Value, json};

use super::{HEADERS, SCHEMAS};

/// RFC 9457 problem details, as every error is answered.
pub(super) fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": {
                "type": "string",
                "format": "uri",
                "description": "A stable URN naming the problem, e.g. `urn:nestflux:problem:validation`.",
            },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "request_id": {
                "type": "string",
                "description": "Also in the `X-Request-Id` header; identifies the request in the logs.",
            },
            "errors": {
                "type": "array",
                "description": "Every validation error found (422).",
                "items": {
                    "type": "object",
                    "required": ["pointer", "message"],
                    "properties": {
                        "pointer": {
                            "type": "string",
                            "description": "RFC 6901 JSON pointer into the request: into the body, or `/query/NAME` for a query parameter.",
                        },
                        "code": {
                            "type": "string",
                            "description": "Stable machine code, e.g. `required`, `too_long`, `format`.",
                        },
                        "message": { "type": "string" },
                    },
                },
            },
        },
    })
}

/// The error responses operations refer to.
pub(super) fn problem_responses(problem: &str) -> Map<String, Value> {
    let content = json!({
        "application/problem+json": { "schema": { "$ref": format!("{SCHEMAS}{problem}") } }
    });
    let header = |name: &str| json!({ "$ref": format!("{HEADERS}{name}") });
    let entries = [
        (
            "BadRequest",
            "Malformed JSON or query, or a list `cursor` that is not an unchanged `next_cursor` of the same list and sort (`urn:nestflux:problem:invalid-cursor`).",
            json!(null),
        ),
        (
            "Unauthorized",
            "Missing or invalid credentials.",
            json!({ "WWW-Authenticate": header("WWW-Authenticate") }),
        ),
        ("Forbidden", "Authenticated but not permitted.", json!(null)),
        (
            "NotFound",
            "No such record, or one the caller may not see.",
            json!(null),
        ),
        (
            "PayloadTooLarge",
            "The request body is larger than the server accepts.",
            json!(null),
        ),
        (
            "UnsupportedMediaType",
            "The request body is not application/json.",
            json!(null),
        ),
        (
            "ValidationFailed",
            "The request is well-formed but invalid; `errors` lists every violation.",
            json!(null),
        ),
        (
            "TooManyRequests",
            "Rate limited.",
            json!({
                "Retry-After": header("Retry-After"),
                "RateLimit": header("RateLimit"),
                "RateLimit-Policy": header("RateLimit-Policy"),
            }),
        ),
        (
            "ServiceUnavailable",
            "Nothing was written: the database is unavailable (`unavailable`), the write queue is full (`overloaded`), or the request ran out of time (`timeout`); or a requested record needs an encryption key the server does not hold (`key-unavailable`). Retry after `Retry-After` seconds.",
            json!({ "Retry-After": header("Retry-After") }),
        ),
    ];
    entries
        .into_iter()
        .map(|(name, description, headers)| {
            let mut res = json!({ "description": description, "content": content.clone() });
            if let (Value::Object(map), false) = (&mut res, headers.is_null()) {
                map.insert("headers".into(), headers);
            }
            (name.to_string(), res)
        })
        .collect()
}

pub(super) fn header_components() -> Map<String, Value> {
    let entries = [
        (
            "WWW-Authenticate",
            "RFC 6750 challenge, e.g. `Bearer error=\"invalid_token\"`.",
            json!({ "type": "string" }),
        ),
        (
            "Retry-After",
            "Whole seconds to wait before the request would be admitted.",
            json!({ "type": "integer", "minimum": 1 }),
        ),
        (
            "RateLimit",
            "Remaining quota per applied policy (draft-ietf-httpapi-ratelimit-headers), e.g. `\"writes\";r=9;t=6`.",
            json!({ "type": "string" }),
        ),
        (
            "RateLimit-Policy",
            "The applied policies' quota and window, e.g. `\"writes\";q=60;w=60`.",
            json!({ "type": "string" }),
        ),
    ];
    entries
        .into_iter()
        .map(|(name, description, schema)| {
            (
                name.to_string(),
                json!({ "description": description, "schema": schema }),
            )
        })
        .collect()
}
