//! Request bodies: JSON only (415), within `server.body_limit` (413), well-formed (400).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use crate::problem::Problem;

/// Reads and parses the body. `Ok(None)` when the request has none.
///
/// Whether a body exists is decided by the payload stream, not by `Content-Length` or
/// `Transfer-Encoding` (an HTTP/2 request may carry a body with neither). A route that
/// takes no body refuses one before reading or parsing it.
pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    takes_body: bool,
) -> Result<Option<Value>, Problem> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !takes_body {
        let refuse = || Problem::bad_request("this route takes no request body");
        if declared.is_some_and(|n| n > 0) {
            return Err(refuse());
        }
        // No length (chunked, or HTTP/2): the first data byte is the answer.
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(c) if c.is_empty() => continue,
                _ => return Err(refuse()),
            }
        }
        return Ok(None);
    }
    let unsupported = || {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the request body must be application/json",
        )
    };
    if declared.is_some_and(|n| n > 0) && !is_json(req) {
        return Err(unsupported());
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut bytes = web::BytesMut::with_capacity(declared.map_or(1024, |n| n as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| Problem::bad_request("the request body could not be read"))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    if !is_json(req) {
        return Err(unsupported());
    }
    let value: Value = super::json::parse(&bytes).map_err(|e| {
        // Position and category only: the message never echoes the body.
        let what = match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of input",
            serde_json::error::Category::Syntax => "syntax error",
            // Only the strict parser's own messages land here: never the body's text.
            serde_json::error::Category::Data => "duplicate key or number out of range",
            serde_json::error::Category::Io => "unreadable input",
        };
        Problem::bad_request(format!(
            "malformed JSON: {what} at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    Ok(Some(value))
}

/// `application/json` or `application/<something>+json`, any parameters.
fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
