//! The keys a table accepts, read from the file's JSON Schema (the same types serde reads),
//! so an unknown key can be answered with the nearest valid one.

use serde_json::Value;

/// The keys the table at `path` (`routes[2]`, `schemas.Note.title.items`) accepts; empty
/// where any name goes (`[roles]`, `[schemas.NAME]`) or the path is not a table.
pub fn expected(schema: &Value, path: &str) -> Vec<String> {
    let mut node = schema;
    for seg in segments(path) {
        let next = match seg {
            Seg::Key(k) => {
                let obj = pick(node, schema, true);
                obj.get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| obj.get("additionalProperties").filter(|a| a.is_object()))
            }
            Seg::Index => pick(node, schema, false).get("items"),
        };
        match next {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    let obj = pick(node, schema, true);
    let mut keys: Vec<String> = obj
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

enum Seg<'a> {
    Key(&'a str),
    Index,
}

/// `routes[2].permission` → `routes`, `[2]`, `permission`.
fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        out.extend(rest.matches('[').map(|_| Seg::Index));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_keys_follow_the_schema() {
        let schema = serde_json::to_value(schemars::schema_for!(crate::config::RawConfig)).unwrap();
        let routes = expected(&schema, "routes[3]");
        assert!(routes.contains(&"permission".to_string()), "{routes:?}");
        assert!(expected(&schema, "server").contains(&"bind".to_string()));
        assert!(expected(&schema, "auth.session").contains(&"redirect_url".to_string()));
        let items = expected(&schema, "schemas.Note.tags.items");
        assert!(items.contains(&"max_length".to_string()), "{items:?}");
        assert!(expected(&schema, "rate_limits.writes").contains(&"per_minute".to_string()));
        assert!(expected(&schema, "roles").is_empty());
        assert!(expected(&schema, "").contains(&"routes".to_string()));
    }
}
