//! Request bodies: JSON only (415), within `server.body_limit` (413), well-formed (400).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use crate::problem::Problem;

/// Reads and parses the body. `Ok(None)` when the request has none.
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
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return Ok(None);
    }
    if !is_json(req) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the request body must be application/json",
        ));
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
    if !takes_body {
        return Err(Problem::bad_request("this route takes no request body"));
    }
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
