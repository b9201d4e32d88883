//! Every unknown key in one pass. serde stops at the first unknown field; this walks the
//! merged values alongside the file's JSON Schema so `check` lists them all, each with its
//! path (`routes[2].permision: unknown key`).

use serde_json::Value;

/// Keys kept out of the published schema (secrets belong in the environment) but accepted.
const HIDDEN_KEYS: &[&str] = &["client_secret", "keys", "redis_password"];

/// Paths of every key the schema does not know.
pub fn unknown(value: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(value, schema, schema, "", &mut out);
    out
}

fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/"))
    {
        Some(path) => path
            .split('/')
            .fold(root, |n, seg| n.get(seg).unwrap_or(&Value::Null)),
        None => node,
    }
}

/// The alternative of an `anyOf` that describes objects (or arrays), if any.
fn pick<'a>(node: &'a Value, root: &'a Value, want_object: bool) -> &'a Value {
    let node = resolve(node, root);
    match node.get("anyOf").and_then(Value::as_array) {
        Some(alts) => alts
            .iter()
            .map(|a| resolve(a, root))
            .find(|a| {
                if want_object {
                    a.get("properties").is_some() || a.get("additionalProperties").is_some()
                } else {
                    a.get("items").is_some()
                }
            })
            .unwrap_or(&Value::Null),
        None => node,
    }
}

fn walk(value: &Value, node: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let node = pick(node, root, true);
            let props = node.get("properties").and_then(Value::as_object);
            let extra = node.get("additionalProperties");
            for (key, v) in map {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (props.and_then(|p| p.get(key)), extra) {
                    (Some(child), _) => walk(v, child, root, &here, out),
                    (None, Some(Value::Bool(false))) if HIDDEN_KEYS.contains(&key.as_str()) => {}
                    (None, Some(Value::Bool(false))) => {
                        let mut expected: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        expected.sort_unstable();
                        out.push(format!(
                            "{here}: unknown key (expected one of: {})",
                            expected.join(", ")
                        ));
                    }
                    (None, Some(child)) if child.is_object() => walk(v, child, root, &here, out),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = pick(node, root, false).get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, item, root, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}
