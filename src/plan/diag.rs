//! Compile diagnostics: every error and warning, each with the path of the key it is about,
//! a stable [`Code`] and, where a name was mistyped, the name meant.
//!
//! ```
//! use nestflux::plan::diag::{Code, Diagnostics};
//! let mut d = Diagnostics::default();
//! d.unknown(Code::UnknownPolicy, "routes[3].rate_limit", "policy", "write", ["writes", "global"]);
//! let e = &d.errors[0];
//! assert_eq!(e.to_string(), "routes[3].rate_limit: no policy named \"write\" (did you mean `writes`?)");
//! assert_eq!((e.code.as_str(), e.suggestion.as_deref()), ("unknown-policy", Some("writes")));
//! ```

use std::fmt;

use super::Profile;

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal,)*) => {
        /// The stable code of a diagnostic, for editors, CI and documentation
        /// (`docs/diagnostics.md` lists every one; a test keeps the list complete).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $name,)*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as printed: `unknown-policy`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }

            /// One line saying what the code is about.
            pub fn summary(self) -> &'static str {
                match self {
                    $(Code::$name => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

codes! {
    /// The file is not valid TOML.
    Syntax = "syntax",
    /// The file, or the file a `NESTFLUX_…_FILE` variable names, cannot be read.
    Unreadable = "unreadable",
    /// `NESTFLUX_PROFILE` is neither `development` nor `production`.
    InvalidProfile = "invalid-profile",
    /// A key no section knows (in the file or as a `NESTFLUX_*` variable); a typo must never silently change what is enforced.
    UnknownKey = "unknown-key",
    /// A value of the wrong type (a string where a number belongs, …); the key keeps its default while the rest is checked.
    WrongType = "wrong-type",
    /// A required key is missing.
    MissingKey = "missing-key",
    /// A value out of range or malformed (a duration, a size, an address, a URL, …).
    InvalidValue = "invalid-value",
    /// A role, policy, resource, schema, field, parameter or API-key name breaks the naming rules.
    InvalidName = "invalid-name",
    /// `inherits`, `api_keys.*.roles` or the like names a role that is not declared.
    UnknownRole = "unknown-role",
    /// `rate_limit` names a policy that is not declared.
    UnknownPolicy = "unknown-policy",
    /// `schema` or a field's `ref` names a schema that is not declared.
    UnknownSchema = "unknown-schema",
    /// A route's `resource` names a resource that is not declared.
    UnknownResource = "unknown-resource",
    /// `encrypted`, `blind_index` or `field_permissions` names a field the schema does not have.
    UnknownField = "unknown-field",
    /// A route's `action` is not one NestFlux knows.
    UnknownAction = "unknown-action",
    /// A permission no role grants, or a permission segment that matches nothing declared (a likely typo).
    UnknownPermission = "unknown-permission",
    /// Roles that inherit each other, or schemas that contain each other.
    Cycle = "cycle",
    /// The same entry twice in a list that must not repeat (`encrypted`, `blind_index`, key ids, path parameters).
    Duplicate = "duplicate",
    /// Keys that contradict each other (`busy_timeout` not shorter than `request_timeout`, several rates in one policy, …).
    Conflict = "conflict",
    /// A route declares none of `public`, `authenticated` or `permission`: deny by default.
    NoAccessRule = "no-access-rule",
    /// A choice that is refused everywhere because it is unsafe (`"*"` origins with credentials, HS256, `none`, trusting every proxy, …).
    Insecure = "insecure",
    /// A development-only choice (`dangerous_*`, the development issuer, plain HTTP), refused under `NESTFLUX_PROFILE=production`.
    RefusedInProduction = "refused-in-production",
    /// A secret written in the file (OIDC client secret, API key, encryption key, database or Redis password): use the variable named instead. Warning in development, error in production (the OIDC client secret and `redis_password` are errors everywhere).
    SecretInFile = "secret-in-file",
    /// Encrypted fields without `NESTFLUX_ENCRYPTION__KEYS`: a development key file is used outside production; production refuses to start.
    EncryptionKeys = "encryption-keys",
    /// Two routes with the same method can match the same request path.
    RouteOverlap = "route-overlap",
    /// A route that requests reach only partly or never: another route's path takes them first and answers 405 for this method.
    RouteShadowed = "route-shadowed",
    /// Two routes with the same method and the same path pattern.
    RouteDuplicate = "route-duplicate",
    /// Something declared that nothing uses (a role granting nothing, a schema without fields, no routes).
    Unused = "unused",
    /// A metrics route anyone (or any signed-in user) can read: `public = true` is a warning in development and an error in production while there is no separate admin bind; `authenticated = true` is a warning.
    PublicMetrics = "public-metrics",
    /// Declared, parsed and checked, but not enforced by this build: `serve` refuses it.
    NotEnforced = "not-enforced",
    /// Any other warning worth a look.
    Advice = "advice",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about the configuration, e.g. `routes[3].rate_limit: no policy named "write"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path of the key in the file, e.g. `routes[3].rate_limit` or `schemas.Note.title.max_length`.
    pub path: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
    /// The stable code.
    pub code: Code,
    /// The name or value meant (`writes` for `write`), when one is close.
    pub suggestion: Option<String>,
}

impl Diagnostic {
    /// A finding about the key at `path` (code `invalid-value` until [`Diagnostic::with_code`]).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            code: Code::InvalidValue,
            suggestion: None,
        }
    }

    /// The same finding with `code`.
    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    /// The same finding suggesting `meant`.
    pub fn with_suggestion(mut self, meant: Option<String>) -> Self {
        self.suggestion = meant;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        Ok(())
    }
}

/// Collects errors and warnings while compiling; compilation never stops at the first one.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// Findings that refuse the file.
    pub errors: Vec<Diagnostic>,
    /// Findings worth a look that do not refuse the file.
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records an error about the key at `path` (code `invalid-value`).
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(path, message));
    }

    /// Records a warning about the key at `path` (code `advice`).
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(Diagnostic::new(path, message).with_code(Code::Advice));
    }

    /// Records an error with its code.
    pub fn error_with(&mut self, code: Code, path: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(path, message).with_code(code));
    }

    /// Records a warning with its code.
    pub fn warn_with(&mut self, code: Code, path: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(Diagnostic::new(path, message).with_code(code));
    }

    /// Records a finished error.
    pub fn push_error(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }

    /// Records a finished warning.
    pub fn push_warning(&mut self, d: Diagnostic) {
        self.warnings.push(d);
    }

    /// Records ``no {what} named "{name}"`` at `path`, suggesting the nearest of `known`.
    pub fn unknown<I, S>(
        &mut self,
        code: Code,
        path: impl Into<String>,
        what: &str,
        name: &str,
        known: I,
    ) where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let meant = crate::suggest::closest(name, known);
        self.errors.push(
            Diagnostic::new(path, format!("no {what} named \"{name}\""))
                .with_code(code)
                .with_suggestion(meant),
        );
    }

    /// The one rule for insecure choices: `refused` is an error under
    /// `NESTFLUX_PROFILE=production`, `tolerated` a warning in development. Each carries its
    /// own path and message, since the production error names what to fix. Findings left
    /// with the default code get `refused-in-production`.
    pub fn refuse_in_production(
        &mut self,
        profile: Profile,
        refused: Diagnostic,
        tolerated: Diagnostic,
    ) {
        let coded = |d: Diagnostic| match d.code {
            Code::InvalidValue | Code::Advice => d.with_code(Code::RefusedInProduction),
            _ => d,
        };
        match profile {
            Profile::Production => self.errors.push(coded(refused)),
            Profile::Development => self.warnings.push(coded(tolerated)),
        }
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_kebab_case_and_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{s}");
            assert!(!c.summary().is_empty(), "{s}");
        }
        let doc = include_str!("../../docs/diagnostics.md");
        for c in Code::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", c.as_str())),
                "docs/diagnostics.md does not list `{c}`"
            );
        }
    }
}
