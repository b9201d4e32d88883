//! Compiles `[roles]`: permissions as types, and each role's closure over inheritance
//! (cycles refused). Enforced by `authz`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::diag::{Code, Diagnostic, Diagnostics};
use super::is_name;
use crate::config::RawRole;

/// One segment of a permission: a name or `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// `*`: any name.
    Any,
    /// One name.
    Name(String),
}

impl Segment {
    fn covers(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Any, _) => true,
            (Segment::Name(a), Segment::Name(b)) => a == b,
            (Segment::Name(_), Segment::Any) => false,
        }
    }
}

/// `resource:action[:own]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// The resource segment.
    pub resource: Segment,
    /// The action segment.
    pub action: Segment,
    /// Limited to rows the caller owns.
    pub own: bool,
}

impl Permission {
    /// Parses `notes:read`, `notes:update:own`, `notes:*`, `*:*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let seg = |s: &str| -> Result<Segment, String> {
            if s == "*" {
                Ok(Segment::Any)
            } else if is_name(s) {
                Ok(Segment::Name(s.to_string()))
            } else {
                Err(format!(
                    "`{text}` is not a permission: segments are lowercase names or `*` (resource:action[:own])"
                ))
            }
        };
        match parts.as_slice() {
            [r, a] => Ok(Self {
                resource: seg(r)?,
                action: seg(a)?,
                own: false,
            }),
            [r, a, "own"] => Ok(Self {
                resource: seg(r)?,
                action: seg(a)?,
                own: true,
            }),
            _ => Err(format!(
                "`{text}` is not a permission of the form resource:action[:own]"
            )),
        }
    }

    /// Whether holding `self` satisfies a route that requires `need` (which has no `:own`).
    /// Returns `Some(true)` when only the caller's own rows are covered.
    pub fn grants(&self, need: &Permission) -> Option<bool> {
        (self.resource.covers(&need.resource) && self.action.covers(&need.action))
            .then_some(self.own)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seg = |s: &Segment| match s {
            Segment::Any => "*".to_string(),
            Segment::Name(n) => n.clone(),
        };
        write!(f, "{}:{}", seg(&self.resource), seg(&self.action))?;
        if self.own {
            f.write_str(":own")?;
        }
        Ok(())
    }
}

/// A role name from the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleId(pub String);

/// Every role with the full set of permissions it grants, inheritance resolved.
#[derive(Debug, Clone, Default)]
pub struct RolesPlan {
    /// Each role's permissions, its own and inherited.
    pub closures: BTreeMap<RoleId, BTreeSet<Permission>>,
    /// Each role's own permissions, as declared (for explaining a decision).
    pub direct: BTreeMap<RoleId, BTreeSet<Permission>>,
    /// Each role's declared parents, in file order (for explaining a decision).
    pub inherits: BTreeMap<RoleId, Vec<RoleId>>,
}

/// How a role comes to grant a permission: the inheritance chain from the role to the
/// role that declares it, and the permission as declared there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `editor → viewer`: the role asked about first, the declaring role last.
    pub chain: Vec<RoleId>,
    /// The declared permission that satisfies the need (`notes:*`, `notes:update:own`).
    pub held: Permission,
}

impl RolesPlan {
    /// Every permission granted by any role.
    pub fn all_granted(&self) -> impl Iterator<Item = &Permission> {
        self.closures.values().flatten()
    }

    /// The shortest inheritance chain by which `role` grants `need`, preferring a grant on
    /// every row to one limited to the caller's own rows.
    pub fn grant(&self, role: &RoleId, need: &Permission) -> Option<Grant> {
        let mut best: Option<Grant> = None;
        let mut seen = BTreeSet::new();
        let mut queue = std::collections::VecDeque::from([vec![role.clone()]]);
        while let Some(chain) = queue.pop_front() {
            let Some(at) = chain.last() else { continue };
            if !seen.insert(at.clone()) {
                continue;
            }
            for held in self.direct.get(at).into_iter().flatten() {
                match held.grants(need) {
                    Some(false) => {
                        return Some(Grant {
                            chain,
                            held: held.clone(),
                        });
                    }
                    Some(true) if best.is_none() => {
                        best = Some(Grant {
                            chain: chain.clone(),
                            held: held.clone(),
                        });
                    }
                    _ => {}
                }
            }
            for parent in self.inherits.get(at).into_iter().flatten() {
                let mut next = chain.clone();
                next.push(parent.clone());
                queue.push_back(next);
            }
        }
        best
    }
}

/// Checks `[roles]` and resolves inheritance; a cycle is an error naming it.
pub fn compile_roles(raw: &BTreeMap<String, RawRole>, d: &mut Diagnostics) -> RolesPlan {
    let mut direct: BTreeMap<&str, BTreeSet<Permission>> = BTreeMap::new();
    for (name, role) in raw {
        let path = format!("roles.{name}");
        if !is_name(name) {
            d.error_with(
                Code::InvalidName,
                &path,
                "role names are lowercase letters, digits, `_` or `-`, starting with a letter",
            );
        }
        let mut set = BTreeSet::new();
        for (i, p) in role.permissions.iter().enumerate() {
            match Permission::parse(p) {
                Ok(p) => {
                    set.insert(p);
                }
                Err(e) => d.error(format!("{path}.permissions[{i}]"), e),
            }
        }
        for (i, parent) in role.inherits.iter().enumerate() {
            if !raw.contains_key(parent) {
                d.unknown(
                    Code::UnknownRole,
                    format!("{path}.inherits[{i}]"),
                    "role",
                    parent,
                    raw.keys().filter(|k| *k != name),
                );
            } else if parent == name {
                d.error_with(
                    Code::Cycle,
                    format!("{path}.inherits[{i}]"),
                    "a role cannot inherit itself",
                );
            }
        }
        if role.permissions.is_empty() && role.inherits.is_empty() {
            d.warn_with(Code::Unused, &path, "grants no permission");
        }
        direct.insert(name, set);
    }

    // Inheritance cycles: depth-first search reporting each cycle once.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 = on stack, 2 = done
    let mut reported = BTreeSet::new();
    for name in raw.keys() {
        let mut stack = Vec::new();
        find_cycles(name, raw, &mut state, &mut stack, &mut reported, d);
    }

    let mut closures = BTreeMap::new();
    for name in raw.keys() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.as_str()];
        let mut perms = BTreeSet::new();
        while let Some(r) = todo.pop() {
            if !seen.insert(r) {
                continue;
            }
            if let Some(set) = direct.get(r) {
                perms.extend(set.iter().cloned());
            }
            if let Some(role) = raw.get(r) {
                todo.extend(role.inherits.iter().map(String::as_str));
            }
        }
        closures.insert(RoleId(name.clone()), perms);
    }
    let inherits = raw
        .iter()
        .map(|(name, role)| {
            let parents = role
                .inherits
                .iter()
                .filter(|p| raw.contains_key(*p) && *p != name)
                .cloned()
                .map(RoleId)
                .collect();
            (RoleId(name.clone()), parents)
        })
        .collect();
    let direct = direct
        .into_iter()
        .map(|(name, set)| (RoleId(name.to_string()), set))
        .collect();
    RolesPlan {
        closures,
        direct,
        inherits,
    }
}

/// Warns about a segment of a role's permission that matches nothing the file declares
/// or needs, when it is close to one that does (`notse:read` → `notes:read`): such a
/// permission grants nothing and hides the one meant.
pub fn lint_segments(
    raw: &BTreeMap<String, RawRole>,
    resources: &BTreeSet<String>,
    needed: &[Permission],
    d: &mut Diagnostics,
) {
    let name_of = |s: &Segment| match s {
        Segment::Name(n) => Some(n.clone()),
        Segment::Any => None,
    };
    let mut known_resources: BTreeSet<String> = resources.clone();
    known_resources.extend(needed.iter().filter_map(|p| name_of(&p.resource)));
    for (role, r) in raw {
        for (i, text) in r.permissions.iter().enumerate() {
            let Ok(p) = Permission::parse(text) else {
                continue;
            };
            let path = format!("roles.{role}.permissions[{i}]");
            if let Some(res) = name_of(&p.resource) {
                if !known_resources.contains(&res) {
                    if let Some(meant) = crate::suggest::closest(&res, &known_resources) {
                        let fixed = Permission {
                            resource: Segment::Name(meant),
                            ..p.clone()
                        };
                        d.push_warning(
                            Diagnostic::new(
                                path,
                                format!("`{res}` is not a resource any route or field names"),
                            )
                            .with_code(Code::UnknownPermission)
                            .with_suggestion(Some(fixed.to_string())),
                        );
                    }
                    continue;
                }
                let Some(action) = name_of(&p.action) else {
                    continue;
                };
                let actions: BTreeSet<String> = needed
                    .iter()
                    .filter(|n| n.resource == p.resource || n.resource == Segment::Any)
                    .filter_map(|n| name_of(&n.action))
                    .collect();
                if !actions.is_empty()
                    && !actions.contains(&action)
                    && let Some(meant) = crate::suggest::closest(&action, &actions)
                {
                    let fixed = Permission {
                        action: Segment::Name(meant),
                        ..p.clone()
                    };
                    d.push_warning(
                        Diagnostic::new(
                            path,
                            format!("no route or field of `{res}` needs the action `{action}`"),
                        )
                        .with_code(Code::UnknownPermission)
                        .with_suggestion(Some(fixed.to_string())),
                    );
                }
            }
        }
    }
}

fn find_cycles<'a>(
    name: &'a str,
    raw: &'a BTreeMap<String, RawRole>,
    state: &mut BTreeMap<&'a str, u8>,
    stack: &mut Vec<&'a str>,
    reported: &mut BTreeSet<Vec<&'a str>>,
    d: &mut Diagnostics,
) {
    match state.get(name) {
        Some(2) => return,
        Some(1) => {
            if let Some(start) = stack.iter().position(|r| *r == name) {
                let mut cycle: Vec<&str> = stack[start..].to_vec();
                let mut key = cycle.clone();
                key.sort();
                if cycle.len() > 1 && reported.insert(key) {
                    cycle.push(name);
                    d.error_with(
                        Code::Cycle,
                        format!("roles.{}.inherits", cycle[0]),
                        format!("inheritance cycle: {}", cycle.join(" → ")),
                    );
                }
            }
            return;
        }
        _ => {}
    }
    state.insert(name, 1);
    stack.push(name);
    if let Some(role) = raw.get(name) {
        for parent in &role.inherits {
            if let Some((k, _)) = raw.get_key_value(parent) {
                find_cycles(k, raw, state, stack, reported, d);
            }
        }
    }
    stack.pop();
    state.insert(name, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn permission_matching() {
        assert_eq!(p("notes:*").grants(&p("notes:read")), Some(false));
        assert_eq!(p("notes:update:own").grants(&p("notes:update")), Some(true));
        assert_eq!(p("*:*").grants(&p("audit:read")), Some(false));
        assert_eq!(p("notes:read").grants(&p("notes:update")), None);
        assert_eq!(p("notes:read").grants(&p("audit:read")), None);
        assert!(Permission::parse("notes").is_err());
        assert!(Permission::parse("notes:read:mine").is_err());
        assert!(Permission::parse("Notes:read").is_err());
        assert!(Permission::parse("notes::read").is_err());
        assert_eq!(p("notes:update:own").to_string(), "notes:update:own");
    }
}
