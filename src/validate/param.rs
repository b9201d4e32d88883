//! Path and query parameters: a string coerced to a field's type and checked against its
//! rules, so `?priority=3` filters on the integer 3.

use std::num::IntErrorKind;

use serde_json::Value;

use super::{CompiledField, Kind, Violation, instance};

/// Parses `raw` as a value of the scalar `field` and validates it. The violation's pointer is
/// `/NAME` (the field's name); a caller reporting a query parameter may rewrite it.
pub fn coerce_param(field: &CompiledField, raw: &str) -> Result<Value, Violation> {
    let mut pointer = String::new();
    instance::push_segment(&mut pointer, &field.name);
    let refuse = |code: &'static str, message: String| Violation {
        pointer: pointer.clone(),
        code,
        message,
    };
    let value = match &field.kind {
        Kind::String(_) | Kind::Enum(_) => Value::String(raw.to_owned()),
        Kind::Integer(_) => match raw.parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(e) => {
                let positive = match e.kind() {
                    IntErrorKind::PosOverflow => true,
                    IntErrorKind::NegOverflow => false,
                    _ => return Err(refuse("type", "must be an integer".into())),
                };
                // The schema's own bound first (`max = 5` says "at most 5"), else the
                // storage limit.
                let beyond = raw
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64);
                if let Some(Err(found)) = beyond.map(|n| field.validate(&Value::Number(n)))
                    && let Some(v) = found.into_iter().next()
                {
                    return Err(refuse(v.code, v.message));
                }
                let (code, message) = instance::storage_limit(positive);
                return Err(refuse(code, message));
            }
        },
        Kind::Number(_) => {
            if let Ok(i) = raw.parse::<i64>() {
                Value::from(i)
            } else {
                // Rust also parses "inf" and "NaN"; those are not JSON numbers.
                match raw
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Value::Number(n),
                    None => return Err(refuse("type", "must be a finite number".into())),
                }
            }
        }
        Kind::Boolean => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(refuse("type", "must be true or false".into())),
        },
        Kind::Array(_) | Kind::Object(_) | Kind::Ref { .. } => {
            return Err(refuse(
                "type",
                "only scalar fields can be parameters".into(),
            ));
        }
    };
    instance::validate_value(field, &value).map_err(|violations| {
        let first = violations.into_iter().next();
        match first {
            Some(v) => Violation {
                pointer: format!("{pointer}{}", v.pointer),
                ..v
            },
            None => refuse("type", "invalid value".into()),
        }
    })
}
