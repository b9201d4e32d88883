//! May they: a route's required permission decided against the caller's roles, from a
//! table computed once from the plan, so a request costs one lookup per role it holds.
//!
//! The [`Decision`] goes into the request extensions: `OwnOnly` tells resource actions to
//! restrict the caller to the rows they own.

use std::collections::{BTreeSet, HashMap};

use actix_web::{HttpMessage, HttpRequest};

use crate::auth::Caller;
use crate::plan::Plan;
use crate::plan::roles::{Permission, RoleId, RolesPlan};
use crate::plan::routes::{Access, RoutePlan};
use crate::problem::Problem;

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    /// Not permitted.
    Denied,
    /// Permitted on the caller's own rows only (a `:own` permission).
    OwnOnly,
    /// Permitted on every row.
    Any,
}

/// Decisions for every (permission, role) pair the plan can ask about.
#[derive(Debug, Default)]
pub struct Authorizer {
    /// Needed permission → role → decision (roles absent from the map are denied).
    table: HashMap<Permission, HashMap<RoleId, Decision>>,
    closures: HashMap<RoleId, BTreeSet<Permission>>,
}

impl Authorizer {
    /// Precomputes the decisions for every permission named by a route or a
    /// `field_permissions` entry.
    pub fn build(plan: &Plan) -> Self {
        let needs = plan
            .routes
            .iter()
            .filter_map(|r| match &r.access {
                Access::Permission(p) => Some(p.clone()),
                _ => None,
            })
            .chain(
                plan.resources
                    .values()
                    .flat_map(|r| r.guarded().map(|(_, p)| p.clone())),
            );
        Self::for_roles(&plan.roles, needs)
    }

    /// The table for the given roles and needed permissions.
    pub fn for_roles(roles: &RolesPlan, needs: impl IntoIterator<Item = Permission>) -> Self {
        let closures: HashMap<RoleId, BTreeSet<Permission>> = roles
            .closures
            .iter()
            .map(|(r, c)| (r.clone(), c.clone()))
            .collect();
        let mut table = HashMap::new();
        for need in needs {
            let need = Permission { own: false, ..need };
            let row: HashMap<RoleId, Decision> = closures
                .iter()
                .map(|(role, closure)| (role.clone(), decide_closure(closure, &need)))
                .filter(|(_, d)| *d != Decision::Denied)
                .collect();
            table.insert(need, row);
        }
        Self { table, closures }
    }

    /// The best decision any of `roles` gets for `need` (whose `:own` flag is ignored).
    pub fn decide(&self, roles: &[RoleId], need: &Permission) -> Decision {
        let best = |decide: &dyn Fn(&RoleId) -> Decision| {
            let mut best = Decision::Denied;
            for role in roles {
                best = best.max(decide(role));
                if best == Decision::Any {
                    break;
                }
            }
            best
        };
        match self.table.get(need) {
            Some(row) => best(&|r| row.get(r).copied().unwrap_or(Decision::Denied)),
            // Not named in the plan: computed on the spot (never on the request path today).
            None => {
                let need = Permission {
                    own: false,
                    ..need.clone()
                };
                best(&|r| {
                    self.closures
                        .get(r)
                        .map_or(Decision::Denied, |c| decide_closure(c, &need))
                })
            }
        }
    }

    /// Every permission the roles grant, as written in the file (`notes:update:own`), sorted.
    pub fn effective_permissions(&self, roles: &[RoleId]) -> Vec<String> {
        let set: BTreeSet<&Permission> = roles
            .iter()
            .filter_map(|r| self.closures.get(r))
            .flatten()
            .collect();
        set.into_iter().map(Permission::to_string).collect()
    }
}

fn decide_closure(closure: &BTreeSet<Permission>, need: &Permission) -> Decision {
    let mut best = Decision::Denied;
    for held in closure {
        match held.grants(need) {
            Some(false) => return Decision::Any,
            Some(true) => best = Decision::OwnOnly,
            None => {}
        }
    }
    best
}

/// The authorization stage of the pipeline: puts the route's [`Decision`] into the request
/// extensions, or answers 403 for a known caller without the permission.
pub fn authorize(authz: &Authorizer, route: &RoutePlan, req: &HttpRequest) -> Result<(), Problem> {
    let decision = match &route.access {
        Access::Public | Access::Authenticated => Decision::Any,
        Access::Permission(need) => match req.extensions().get::<Caller>() {
            Some(caller) => authz.decide(&caller.roles, need),
            // Authentication runs first and always sets a caller on non-public routes.
            None => Decision::Denied,
        },
    };
    if decision == Decision::Denied {
        return Err(Problem::forbidden("your roles do not permit this request"));
    }
    req.extensions_mut().insert(decision);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawRole;
    use crate::plan::Diagnostics;
    use crate::plan::roles::compile_roles;
    use std::collections::BTreeMap;

    /// The roles of reference/nestflux.toml.
    fn reference() -> RolesPlan {
        let role = |inherits: &[&str], perms: &[&str]| RawRole {
            inherits: inherits.iter().map(|s| s.to_string()).collect(),
            permissions: perms.iter().map(|s| s.to_string()).collect(),
        };
        let raw = BTreeMap::from([
            ("viewer".to_string(), role(&[], &["notes:read"])),
            (
                "editor".to_string(),
                role(
                    &["viewer"],
                    &[
                        "notes:create",
                        "notes:update:own",
                        "notes:delete:own",
                        "notes:secret:own",
                    ],
                ),
            ),
            (
                "admin".to_string(),
                role(&["editor"], &["notes:*", "audit:read"]),
            ),
        ]);
        let mut d = Diagnostics::default();
        let plan = compile_roles(&raw, &mut d);
        assert!(!d.has_errors());
        plan
    }

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    fn r(names: &[&str]) -> Vec<RoleId> {
        names.iter().map(|n| RoleId(n.to_string())).collect()
    }

    const NEEDS: &[&str] = &[
        "notes:read",
        "notes:create",
        "notes:update",
        "notes:delete",
        "notes:secret",
        "audit:read",
    ];

    #[test]
    fn reference_roles_table() {
        use Decision::*;
        let authz = Authorizer::for_roles(&reference(), NEEDS.iter().map(|n| p(n)));
        // need → (nobody, viewer, editor, admin)
        let expected = [
            ("notes:read", [Denied, Any, Any, Any]),
            ("notes:create", [Denied, Denied, Any, Any]),
            ("notes:update", [Denied, Denied, OwnOnly, Any]),
            ("notes:delete", [Denied, Denied, OwnOnly, Any]),
            ("notes:secret", [Denied, Denied, OwnOnly, Any]),
            ("audit:read", [Denied, Denied, Denied, Any]),
        ];
        for (need, decisions) in expected {
            for (roles, want) in [
                (r(&[]), decisions[0]),
                (r(&["viewer"]), decisions[1]),
                (r(&["editor"]), decisions[2]),
                (r(&["admin"]), decisions[3]),
            ] {
                assert_eq!(authz.decide(&roles, &p(need)), want, "{need} for {roles:?}");
                // The precomputed table and the on-the-spot computation agree.
                let fresh = Authorizer::for_roles(&reference(), []);
                assert_eq!(fresh.decide(&roles, &p(need)), want, "{need} for {roles:?}");
            }
        }
    }

    #[test]
    fn several_roles_take_the_best_and_unknown_roles_grant_nothing() {
        let authz = Authorizer::for_roles(&reference(), NEEDS.iter().map(|n| p(n)));
        assert_eq!(
            authz.decide(&r(&["viewer", "editor"]), &p("notes:update")),
            Decision::OwnOnly
        );
        assert_eq!(
            authz.decide(&r(&["editor", "admin"]), &p("notes:update")),
            Decision::Any
        );
        assert_eq!(
            authz.decide(&r(&["root", "superuser"]), &p("notes:read")),
            Decision::Denied
        );
        assert_eq!(
            authz.decide(&r(&["viewer"]), &p("billing:read")),
            Decision::Denied
        );
    }

    #[test]
    fn effective_permissions_follow_inheritance() {
        let authz = Authorizer::for_roles(&reference(), []);
        assert_eq!(authz.effective_permissions(&r(&["viewer"])), ["notes:read"]);
        assert_eq!(
            authz.effective_permissions(&r(&["editor"])),
            [
                "notes:create",
                "notes:delete:own",
                "notes:read",
                "notes:secret:own",
                "notes:update:own"
            ]
        );
        let admin = authz.effective_permissions(&r(&["admin", "viewer"]));
        assert!(
            admin.contains(&"notes:*".to_string()) && admin.contains(&"audit:read".to_string())
        );
        assert!(authz.effective_permissions(&r(&["nobody"])).is_empty());
    }
}
