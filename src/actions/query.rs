//! What the list actions (`resource` lists, `audit`) share in reading a query string.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::validate::{MAX_VIOLATIONS, Violation};

/// A violation of the query parameter `name`, at `/query/<name>` (RFC 6901 escaping).
pub fn violation(name: &str, code: &'static str, message: String) -> Violation {
    Violation {
        pointer: pointer(name),
        code,
        message,
    }
}

/// `/query/<name>` with RFC 6901 escaping.
pub fn pointer(name: &str) -> String {
    format!("/query/{}", name.replace('~', "~0").replace('/', "~1"))
}

/// The parameters of `text`, each name once: a name given again is left out and reported
/// in `errors` as `duplicate`. Reading stops once `errors` holds [`MAX_VIOLATIONS`].
pub fn params<'a>(text: &'a str, errors: &mut Vec<Violation>) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, value) in url::form_urlencoded::parse(text.as_bytes()) {
        if errors.len() >= MAX_VIOLATIONS {
            break;
        }
        if seen.insert(name.clone()) {
            out.push((name, value));
        } else {
            errors.push(violation(
                &name,
                "duplicate",
                "the parameter is given more than once".into(),
            ));
        }
    }
    out
}

/// `limit=`: an integer from 1 to `max`.
pub fn limit(value: &str, max: usize) -> Result<usize, Violation> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(violation(
            "limit",
            "range",
            format!("must be an integer from 1 to {max}"),
        )),
    }
}
