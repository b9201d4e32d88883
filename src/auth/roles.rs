//! Roles from a token: the claim at `roles_claim` (a dotted path such as
//! `realm_access.roles`), a string or an array of strings, kept only when `[roles]` declares it.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::plan::roles::RoleId;

/// Most role names read from one token; a token listing more is not a person.
const MAX_ROLES_READ: usize = 256;

/// Maps a token's claims to the plan's roles.
#[derive(Debug, Clone)]
pub struct RoleMapper {
    path: Vec<String>,
    known: HashMap<String, RoleId>,
}

impl RoleMapper {
    /// Reads roles at the dotted claim `path`, keeping only the `known` ones.
    pub fn new(path: Vec<String>, known: impl IntoIterator<Item = RoleId>) -> Self {
        Self {
            path,
            known: known.into_iter().map(|r| (r.0.clone(), r)).collect(),
        }
    }

    /// The declared roles named at the claim path, deduplicated and sorted; unknown names
    /// and non-string entries are ignored.
    pub fn roles(&self, claims: &Map<String, Value>) -> Vec<RoleId> {
        let Some((first, rest)) = self.path.split_first() else {
            return Vec::new();
        };
        let mut at = claims.get(first);
        for segment in rest {
            at = at.and_then(|v| v.as_object()).and_then(|o| o.get(segment));
        }
        let names: Vec<&str> = match at {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .take(MAX_ROLES_READ)
                .filter_map(Value::as_str)
                .collect(),
            _ => Vec::new(),
        };
        let set: BTreeSet<&RoleId> = names.iter().filter_map(|n| self.known.get(*n)).collect();
        set.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapper(path: &str) -> RoleMapper {
        RoleMapper::new(
            path.split('.').map(String::from).collect(),
            ["viewer", "editor", "admin"].map(|r| RoleId(r.into())),
        )
    }

    fn names(m: &RoleMapper, claims: Value) -> Vec<String> {
        let Value::Object(map) = claims else {
            panic!("claims must be an object")
        };
        m.roles(&map).into_iter().map(|r| r.0).collect()
    }

    #[test]
    fn top_level_array_and_string() {
        let m = mapper("roles");
        assert_eq!(
            names(&m, json!({"roles": ["editor", "viewer", "editor"]})),
            ["editor", "viewer"]
        );
        assert_eq!(names(&m, json!({"roles": "admin"})), ["admin"]);
        assert!(names(&m, json!({"roles": 7})).is_empty());
        assert!(names(&m, json!({"other": ["admin"]})).is_empty());
    }

    #[test]
    fn keycloak_realm_and_client_roles() {
        let claims = json!({
            "realm_access": { "roles": ["offline_access", "viewer"] },
            "resource_access": {
                "nestflux": { "roles": ["admin", "uma_authorization"] },
                "other-app": { "roles": ["editor"] }
            }
        });
        assert_eq!(
            names(&mapper("realm_access.roles"), claims.clone()),
            ["viewer"]
        );
        assert_eq!(
            names(&mapper("resource_access.nestflux.roles"), claims.clone()),
            ["admin"]
        );
        assert!(names(&mapper("resource_access.missing.roles"), claims).is_empty());
    }

    #[test]
    fn authentik_groups_ignore_unknown_and_non_strings() {
        let m = mapper("groups");
        assert_eq!(
            names(
                &m,
                json!({"groups": ["authentik Admins", "admin", 3, null, {"x": 1}, "viewer"]})
            ),
            ["admin", "viewer"]
        );
    }

    #[test]
    fn a_path_through_a_non_object_finds_nothing() {
        assert!(names(&mapper("roles.inner"), json!({"roles": ["admin"]})).is_empty());
        assert!(names(&mapper("a.b"), json!({"a": "b"})).is_empty());
    }
}
